"""Optional imports: the peers (xetrack, diskcache, yanex) and xetrack_c features that may not
have landed yet. Each accessor returns the object or raises :class:`Skip` with the reason."""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any

from benchmarks.harness import Skip

INSTALL_HINT = "pip install xetrack diskcache yanex"


def peer(module: str) -> ModuleType:
    """Import a peer package or raise Skip naming the pip command that installs it."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise Skip(f"peer {module!r} not installed ({INSTALL_HINT}): {exc}") from exc


def peer_version(module: str) -> str:
    """The installed version of a peer, for labels."""
    try:
        from importlib.metadata import version

        return version(module)
    except Exception:  # noqa: BLE001 - any failure means it is not installed
        return "(not installed)"


def xetrack_c_module(name: str = "xetrack_c") -> ModuleType:
    """Import xetrack_c or one of its submodules (``xetrack_c.seeding``)."""
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        raise Skip(f"{name} not available yet ({type(exc).__name__}: {exc})") from exc


def xetrack_c_attr(name: str, module: str = "xetrack_c") -> Any:
    """``xetrack_c.<name>`` (e.g. Tracker, Reader, run_multiple) or Skip if it has not landed."""
    mod = xetrack_c_module(module)
    try:
        return getattr(mod, name)
    except AttributeError as exc:
        raise Skip(f"{module}.{name} not available yet (AttributeError)") from exc
