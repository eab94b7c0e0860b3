"""Source checks for the C core's GIL discipline (STYLE.md)."""

import glob
import os
import re

import pytest

CSRC = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "csrc")
SOURCES = sorted(glob.glob(os.path.join(CSRC, "*.c")))
REGION = re.compile(r"Py_BEGIN_ALLOW_THREADS(.*?)Py_END_ALLOW_THREADS", re.S)


@pytest.mark.parametrize("path", SOURCES, ids=os.path.basename)
def test_no_python_call_or_exit_while_the_gil_is_released(path):
    source = open(path, encoding="utf-8").read()
    for match in REGION.finditer(source):
        body = match.group(1)
        line = source[: match.start()].count("\n") + 1
        assert not re.search(r"\bPy[A-Z_]\w*\s*\(", body), f"{path}:{line}: Py* call without the GIL"
        assert not re.search(r"\b(return|goto)\b", body), f"{path}:{line}: leaves a GIL-released region"


@pytest.mark.parametrize("path", SOURCES, ids=os.path.basename)
def test_gil_state_calls_are_paired(path):
    source = open(path, encoding="utf-8").read()
    assert source.count("PyGILState_Ensure(") == source.count("PyGILState_Release(")
    assert source.count("Py_BEGIN_ALLOW_THREADS") == source.count("Py_END_ALLOW_THREADS")


def test_the_check_sees_the_sources():
    assert any(os.path.basename(p) == "tracker.c" for p in SOURCES)
