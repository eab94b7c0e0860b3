"""Skip reasons say what to set or install, never where something lives on one machine."""

from __future__ import annotations

import ast
import os
import re

from conftest import ROOT, child_env
from xetrack_peer import ENV_VAR, find_xetrack_python, skip_reason

ABSOLUTE_PATH = re.compile(r"(?:^|[\s'\"(=])/[\w.-]+/")


def test_xetrack_skip_reason_names_the_variable_not_a_path():
    reason = skip_reason()
    assert f"set {ENV_VAR} to an interpreter that has xetrack 0.7" in reason
    assert not ABSOLUTE_PATH.search(reason), reason


def test_find_xetrack_python_uses_the_variable(tmp_path, monkeypatch):
    monkeypatch.setenv(ENV_VAR, str(tmp_path / "no-such-python"))
    assert find_xetrack_python(child_env()) is None or _has_real_xetrack()
    fake = tmp_path / "site" / "xetrack"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("")
    (fake / "reader.py").write_text("")
    # this interpreter, seeing an importable xetrack, is the one found
    found = find_xetrack_python(child_env(extra_path=[str(tmp_path / "site")]))
    assert found is not None and os.path.exists(found)


def _has_real_xetrack() -> bool:
    import importlib.util

    return importlib.util.find_spec("xetrack") is not None


def _skip_reasons(tree: ast.AST):
    """String literals given as a skip reason: pytest.skip("..."), skipif(..., reason="...")."""
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        name = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(
            node.func, "id", "")
        if name in ("skip", "importorskip") and node.args:
            yield from _literals(node.args[0])
        for keyword in node.keywords:
            if keyword.arg == "reason":
                yield from _literals(keyword.value)


def _literals(node: ast.AST):
    for part in ast.walk(node):
        if isinstance(part, ast.Constant) and isinstance(part.value, str):
            yield part.value


def test_no_skip_reason_in_the_suite_names_an_absolute_path():
    offenders, scanned = [], 0
    for path in sorted((ROOT / "tests").rglob("*.py")):
        for reason in _skip_reasons(ast.parse(path.read_text(encoding="utf-8"))):
            scanned += 1
            if ABSOLUTE_PATH.search(reason):
                offenders.append(f"{path.name}: {reason!r}")
    assert scanned > 10  # the scan finds the suite's skip reasons
    assert not offenders, offenders


def test_the_scan_catches_a_machine_path():
    tree = ast.parse('pytest.skip("no interpreter at /opt/peers/bin/python")\n'
                     'pytest.mark.skipif(True, reason="needs " + "/usr/local/bin/tool")')
    assert [bool(ABSOLUTE_PATH.search(r)) for r in _skip_reasons(tree)] == [True, False, True]
