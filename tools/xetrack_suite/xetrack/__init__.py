"""``xetrack`` as a name for xetrack_c, so that xetrack 0.7's own tests import xetrack_c.

Everything here is a re-export; nothing is implemented. ``xetrack.<module>`` resolves to
``xetrack_c.<module>`` when xetrack_c has a module of that name (an alias installed on
``sys.meta_path``, consulted after the normal path search), so the harness follows
xetrack_c as modules are added and a module xetrack_c lacks fails to import, as it should.
The one adapter is ``cli.py`` (xetrack's tests drive ``typer``'s ``CliRunner``).
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys
from types import ModuleType
from typing import Any, Optional, Sequence

import xetrack_c
from xetrack_c import *  # noqa: F401,F403

__all__ = list(xetrack_c.__all__)


def __getattr__(name: str) -> Any:
    """Any other public name of xetrack_c (``copy``, ``TRACKER_CONSTANTS`` ... once it has them)."""
    return getattr(xetrack_c, name)


class _AliasLoader(importlib.abc.Loader):
    """Hands back the already-imported xetrack_c module under its xetrack name."""

    def __init__(self, target: str) -> None:
        self.target = target

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        module = importlib.import_module(self.target)
        self.own_spec = module.__spec__
        return module

    def exec_module(self, module: ModuleType) -> None:
        """Undo the import system's ``__spec__`` rewrite: the module keeps its own name."""
        module.__spec__ = self.own_spec


class _AliasFinder(importlib.abc.MetaPathFinder):
    """``xetrack.a.b`` -> ``xetrack_c.a.b`` when that module exists."""

    def find_spec(
        self,
        fullname: str,
        path: Optional[Sequence[str]] = None,
        target: Optional[ModuleType] = None,
    ) -> Optional[importlib.machinery.ModuleSpec]:
        if not fullname.startswith(__name__ + "."):
            return None
        aliased = "xetrack_c" + fullname[len(__name__):]
        try:
            found = importlib.util.find_spec(aliased)
        except ModuleNotFoundError:
            return None
        if found is None:
            return None
        return importlib.machinery.ModuleSpec(
            fullname, _AliasLoader(aliased), is_package=found.submodule_search_locations is not None
        )


if not any(isinstance(finder, _AliasFinder) for finder in sys.meta_path):
    sys.meta_path.append(_AliasFinder())
