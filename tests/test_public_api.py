"""The package's public namespace is the documented API: ``xetrack_c.__all__`` matches the
names docs/reference.md documents as ``xetrack_c.NAME``, and ``dir(xetrack_c)`` (what
tab-completion offers) holds those names and nothing else."""

from __future__ import annotations

import importlib
import json
import re
import subprocess
import sys

import pytest
from conftest import ROOT, child_env

import xetrack_c

REFERENCE = (ROOT / "docs" / "reference.md").read_text(encoding="utf-8")
# "::: xetrack_c.NAME" directives, with the members: list of the block that follows, if any.
DIRECTIVE = re.compile(r"^::: xetrack_c\.([\w.]+)\n((?:    .*\n)*)", re.M)


def _documented() -> tuple:
    """(names documented at the package's top level, {submodule: [members]})."""
    top, modules = set(), {}
    for name, options in DIRECTIVE.findall(REFERENCE):
        members = re.search(r"members: \[(.*)\]", options)
        if members:
            modules[name] = [m.strip() for m in members.group(1).split(",")]
        else:
            top.add(name)
    return top, modules


def test_all_is_the_documented_top_level():
    top, _ = _documented()
    assert top, "docs/reference.md documents no xetrack_c.NAME"
    missing_from_docs = set(xetrack_c.__all__) - top
    assert not missing_from_docs, f"in __all__ but not in docs/reference.md: {missing_from_docs}"
    missing_from_all = top - set(xetrack_c.__all__)
    assert not missing_from_all, f"documented but not in __all__: {missing_from_all}"
    assert len(xetrack_c.__all__) == len(set(xetrack_c.__all__))


def test_every_documented_name_imports():
    top, modules = _documented()
    for name in sorted(top):
        assert getattr(xetrack_c, name) is not None, name
    assert set(modules) == {"cache", "cache_auth", "params", "logging", "engine", "git", "config",
                            "assets", "summary"}
    for module, members in modules.items():
        loaded = importlib.import_module(f"xetrack_c.{module}")
        for member in members:
            assert hasattr(loaded, member), f"xetrack_c.{module}.{member} is documented"


def test_dir_holds_only_the_public_api():
    code = ("import json, xetrack_c; print(json.dumps(dir(xetrack_c))); "
            "import xetrack_c.params, xetrack_c.reader; print(json.dumps(dir(xetrack_c)))")
    proc = subprocess.run([sys.executable, "-c", code], env=child_env(), capture_output=True,
                          text=True, timeout=60, check=True)
    fresh, after_imports = (set(json.loads(line))
                            for line in proc.stdout.splitlines())
    expected = set(xetrack_c.__all__) | {"__version__"}
    # loading submodules adds attributes to the package, but not to what dir() offers
    assert fresh == expected and after_imports == expected
    assert not {"Any", "import_module", "tracker", "_core"} & fresh


def test_helper_names_are_not_attributes():
    for helper in ("import_module", "Any"):
        with pytest.raises(AttributeError, match=f"has no attribute '{helper}'"):
            getattr(xetrack_c, helper)
