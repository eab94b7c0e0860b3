"""Source and binary checks for the C core's GIL discipline and symbol visibility (STYLE.md).

Every ``csrc/*.c`` is scanned, so a new concern file is covered as soon as it exists:

- between ``Py_BEGIN_ALLOW_THREADS`` and ``Py_END_ALLOW_THREADS`` there is no ``Py*`` call
  (functions or macros) and no ``return``/``goto`` that would leave with the GIL released;
- in every function, each ``PyGILState_Ensure`` is paired with a ``PyGILState_Release`` of
  the same state (and ``PyEval_SaveThread`` with ``PyEval_RestoreThread``), release after
  acquire;
- the built extension exports exactly one symbol, ``PyInit__core`` (``nm``).
"""

from __future__ import annotations

import glob
import os
import re
import shutil
import subprocess
from typing import Iterator, List, Optional, Tuple

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CSRC = os.path.join(ROOT, "csrc")
SOURCES = sorted(glob.glob(os.path.join(CSRC, "*.c")))
REGION = re.compile(r"Py_BEGIN_ALLOW_THREADS(.*?)Py_END_ALLOW_THREADS", re.S)
PY_CALL = re.compile(r"\bPy[A-Z_]\w*\s*\(")
LEAVES = re.compile(r"\b(return|goto|break|continue)\b")


def strip_comments_and_strings(source: str) -> str:
    """``source`` with comments and string/char literals blanked, newlines kept.

    Line numbers stay valid, and braces or keywords inside literals or comments do not
    confuse the checks below.
    """
    out: List[str] = []
    i, n = 0, len(source)
    while i < n:
        ch = source[i]
        two = source[i : i + 2]
        if two == "/*":
            end = source.find("*/", i + 2)
            end = n if end < 0 else end + 2
            out.append(re.sub(r"[^\n]", " ", source[i:end]))
            i = end
        elif two == "//":
            end = source.find("\n", i)
            end = n if end < 0 else end
            out.append(" " * (end - i))
            i = end
        elif ch in "\"'":
            j = i + 1
            while j < n and source[j] != ch:
                j += 2 if source[j] == "\\" else 1
            j = min(j + 1, n)
            out.append(ch + re.sub(r"[^\n]", " ", source[i + 1 : j - 1]) + ch)
            i = j
        else:
            out.append(ch)
            i += 1
    return "".join(out)


def _declared_name(header: str) -> Optional[str]:
    """The function name of a definition header ``... name(params)``, else None."""
    header = header.rstrip()
    if not header.endswith(")"):
        return None
    depth = 0
    for pos in range(len(header) - 1, -1, -1):
        if header[pos] == ")":
            depth += 1
        elif header[pos] == "(":
            depth -= 1
            if depth == 0:
                match = re.search(r"(\w+)\s*$", header[:pos])
                if match is None or match.group(1) in ("if", "for", "while", "switch"):
                    return None
                return match.group(1)
    return None


def functions(code: str) -> Iterator[Tuple[str, int, str]]:
    """(name, first line, body) for each top-level function definition in stripped C code."""
    depth = 0
    start = 0
    header_from = 0
    for pos, ch in enumerate(code):
        if ch == "{":
            if depth == 0:
                start = pos
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth == 0:
                header = re.sub(r"^[ \t]*#.*$", "", code[header_from:start], flags=re.M)
                header_from = pos + 1
                name = _declared_name(header)
                if name is not None:
                    line = code[:start].count("\n") + 1
                    yield name, line, code[start : pos + 1]
        elif ch == ";" and depth == 0:
            header_from = pos + 1


def _read(path: str) -> str:
    with open(path, encoding="utf-8") as handle:
        return strip_comments_and_strings(handle.read())


def test_the_check_sees_every_source():
    names = {os.path.basename(p) for p in SOURCES}
    assert {"module.c", "store.c", "tracker.c", "reader.c", "hash.c", "seed.c"} <= names
    assert names == {os.path.basename(p) for p in os.listdir(CSRC) if p.endswith(".c")}


def test_the_function_splitter_finds_the_functions():
    code = _read(os.path.join(CSRC, "store.c"))
    names = [name for name, _, _ in functions(code)]
    assert "xt_raise_sqlite" in names and "xt_store_write" in names
    code = strip_comments_and_strings(
        'static int f(void) { const char *s = "}"; /* { */ return 0; }\n'
        "static const int table[] = {1, 2};\n"
        "static void g(int a) { if (a) { a++; } }\n"
    )
    assert [(name, line) for name, line, _ in functions(code)] == [("f", 1), ("g", 3)]


@pytest.mark.parametrize("path", SOURCES, ids=os.path.basename)
def test_no_python_call_or_exit_while_the_gil_is_released(path):
    source = _read(path)
    for match in REGION.finditer(source):
        body = match.group(1)
        line = source[: match.start()].count("\n") + 1
        call = PY_CALL.search(body)
        assert call is None, f"{path}:{line}: {call.group(0)!r} without the GIL" if call else ""
        assert "Py_BEGIN_ALLOW_THREADS" not in body, f"{path}:{line}: nested GIL release"
        # break/continue would jump out of a region opened inside a loop body; inside a
        # loop that itself sits in the region they are fine, but no code does that yet.
        leave = LEAVES.search(body)
        assert leave is None, f"{path}:{line}: {leave.group(0)!r} leaves a GIL-released region"


@pytest.mark.parametrize("path", SOURCES, ids=os.path.basename)
def test_gil_release_macros_are_balanced(path):
    source = _read(path)
    assert source.count("Py_BEGIN_ALLOW_THREADS") == source.count("Py_END_ALLOW_THREADS")


def pairing_problem(body: str, acquire: str, release: str) -> Optional[str]:
    """Why the ``acquire``/``release`` calls in one function body do not pair up, or None."""
    got = [(m.start(), m.group(1)) for m in re.finditer(r"(\w+)\s*=\s*" + acquire + r"\s*\(", body)]
    if len(re.findall(r"\b" + acquire + r"\s*\(", body)) != len(got):
        return f"the result of {acquire}() must be kept for {release}()"
    put = [(m.start(), m.group(1)) for m in re.finditer(r"\b" + release + r"\s*\(\s*(\w+)\s*\)", body)]
    if len(got) != len(put):
        return f"{len(got)} {acquire}() against {len(put)} {release}()"
    for (got_pos, state), (put_pos, released) in zip(got, put, strict=True):
        if state != released:
            return f"{release}({released}) does not match {state} = {acquire}()"
        if put_pos < got_pos:
            return f"{release}({released}) comes before {acquire}()"
    return None


@pytest.mark.parametrize("path", SOURCES, ids=os.path.basename)
@pytest.mark.parametrize(
    "acquire, release",
    [("PyGILState_Ensure", "PyGILState_Release"), ("PyEval_SaveThread", "PyEval_RestoreThread")],
)
def test_gil_state_calls_are_paired_in_each_function(path, acquire, release):
    for name, line, body in functions(_read(path)):
        problem = pairing_problem(body, acquire, release)
        assert problem is None, f"{path}:{line}: {name}(): {problem}"


@pytest.mark.parametrize(
    "snippet, ok",
    [
        ("void f(void) { PyGILState_STATE g = PyGILState_Ensure(); x(); PyGILState_Release(g); }", True),
        ("void f(void) { PyGILState_STATE g = PyGILState_Ensure(); x(); }", False),
        ("void f(void) { PyGILState_Ensure(); PyGILState_Release(g); }", False),
        ("void f(void) { PyGILState_STATE g = PyGILState_Ensure(); PyGILState_Release(h); }", False),
        ("void f(void) { PyGILState_STATE g = PyGILState_Ensure(); }\n"
         "void h(PyGILState_STATE g) { PyGILState_Release(g); }", False),
    ],
)
def test_the_pairing_check_catches_mistakes(snippet, ok):
    problems = [
        pairing_problem(body, "PyGILState_Ensure", "PyGILState_Release")
        for _, _, body in functions(strip_comments_and_strings(snippet))
    ]
    assert all(p is None for p in problems) is ok


def test_only_the_module_init_is_exported():
    nm = shutil.which("nm")
    if nm is None:
        pytest.skip("nm (binutils) is not installed")
    from xetrack_c import _core

    out = subprocess.run(
        [nm, "-D", "--defined-only", _core.__file__], capture_output=True, text=True, check=True
    ).stdout
    exported = sorted(
        parts[2]
        for parts in (line.split() for line in out.splitlines())
        if len(parts) == 3 and parts[1] in "TDBRVWGSi"
    )
    # gcov's runtime, linked into a coverage build, brings its own exported helpers.
    exported = [name for name in exported if not name.startswith(("__gcov", "__llvm_gcov"))]
    assert exported == ["PyInit__core"], f"exported symbols other than PyInit__core: {exported}"
