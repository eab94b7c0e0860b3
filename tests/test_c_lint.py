"""Source and binary checks for the C core's GIL discipline and symbol visibility (STYLE.md).

Every ``csrc/*.c`` is scanned, so a new concern file is covered as soon as it exists:

- between ``Py_BEGIN_ALLOW_THREADS`` and ``Py_END_ALLOW_THREADS`` there is no ``Py*`` call
  (functions or macros) and no ``return``/``goto`` that would leave with the GIL released;
- each ``PyGILState_Ensure`` is paired with a ``PyGILState_Release`` of the same state
  (and ``PyEval_SaveThread`` with ``PyEval_RestoreThread``): in the same function, release
  after acquire, for a state in a local variable; somewhere in the file for a state kept
  in a struct member (a worker thread that keeps its thread state across tasks);
- no ``sqlite3_bind_*`` result code is dropped: SQLite leaves a parameter it refuses NULL
  (a value longer than SQLITE_LIMIT_LENGTH, say), so an unchecked bind stores NULL silently;
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


# A bind call as a statement of its own (its result dropped), with or without a (void) cast.
DROPPED_BIND = re.compile(r"(?:^|[;{}])\s*(?:\(\s*void\s*\)\s*)?(sqlite3_bind_\w+)\s*\(", re.M)
BIND_QUERIES = {"sqlite3_bind_parameter_count", "sqlite3_bind_parameter_index", "sqlite3_bind_parameter_name"}


def dropped_binds(source: str) -> List[Tuple[int, str]]:
    return [
        (source[: m.start(1)].count("\n") + 1, m.group(1))
        for m in DROPPED_BIND.finditer(source)
        if m.group(1) not in BIND_QUERIES
    ]


@pytest.mark.parametrize("path", SOURCES, ids=os.path.basename)
def test_every_sqlite_bind_result_is_checked(path):
    dropped = dropped_binds(_read(path))
    assert not dropped, "\n".join(f"{path}:{line}: the result of {name}() is dropped" for line, name in dropped)


def test_the_bind_check_catches_dropped_results():
    code = strip_comments_and_strings(
        "static void f(sqlite3_stmt *s) {\n"
        "    sqlite3_bind_int64(s, 1, 2);\n"
        "    if (x) { (void)sqlite3_bind_null(s, 2); }\n"
        "    int rc = sqlite3_bind_text(s, 3, t, -1, NULL);\n"
        "    if (rc == SQLITE_OK) rc = sqlite3_bind_double(s, 4, 1.0);\n"
        "    int n = sqlite3_bind_parameter_count(s);\n"
        "}\n"
    )
    assert dropped_binds(code) == [(2, "sqlite3_bind_int64"), (3, "sqlite3_bind_null")]


@pytest.mark.parametrize("path", SOURCES, ids=os.path.basename)
def test_gil_release_macros_are_balanced(path):
    source = _read(path)
    assert source.count("Py_BEGIN_ALLOW_THREADS") == source.count("Py_END_ALLOW_THREADS")


LVALUE = r"((?:\w+\s*(?:->|\.)\s*)*\w+)"


def _calls(code: str, acquire: str, release: str):
    got = [(m.start(), re.sub(r"\s", "", m.group(1)))
           for m in re.finditer(LVALUE + r"\s*=\s*" + acquire + r"\s*\(", code)]
    bare = len(re.findall(r"\b" + acquire + r"\s*\(", code)) - len(got)
    put = [(m.start(), re.sub(r"\s", "", m.group(1)))
           for m in re.finditer(r"\b" + release + r"\s*\(\s*" + LVALUE + r"\s*\)", code)]
    return got, bare, put


def _field(state: str) -> Optional[str]:
    """The member name of a state kept in a struct (``w->gil`` -> ``gil``), else None."""
    parts = re.split(r"->|\.", state)
    return parts[-1] if len(parts) > 1 else None


def pairing_problems(code: str, acquire: str, release: str) -> List[str]:
    """Why the ``acquire``/``release`` calls of one stripped C file do not pair up.

    A state kept in a local variable is acquired and released in the same function, in
    that order, once each (one ``done:`` exit). A state kept in a struct member (a worker
    that holds a thread state across tasks) is released somewhere in the same file.
    """
    problems: List[str] = []
    for name, line, body in functions(code):
        got, bare, put = _calls(body, acquire, release)
        where = f"line {line}: {name}()"
        if bare:
            problems.append(f"{where}: the result of {acquire}() must be kept for {release}()")
        got = [(pos, state) for pos, state in got if _field(state) is None]
        put = [(pos, state) for pos, state in put if _field(state) is None]
        if len(got) != len(put):
            problems.append(f"{where}: {len(got)} {acquire}() against {len(put)} {release}()")
            continue
        for (got_pos, state), (put_pos, released) in zip(got, put, strict=True):
            if state != released:
                problems.append(f"{where}: {release}({released}) does not match {state}")
            elif put_pos < got_pos:
                problems.append(f"{where}: {release}({released}) comes before {acquire}()")
    got, _, put = _calls(code, acquire, release)
    kept = {_field(state) for _, state in got} - {None}
    given_back = {_field(state) for _, state in put} - {None}
    for member in sorted(kept - given_back):
        problems.append(f"{acquire}() kept in .{member} is never passed to {release}()")
    for member in sorted(given_back - kept):
        problems.append(f"{release}() of .{member}, which no {acquire}() fills")
    return problems


@pytest.mark.parametrize("path", SOURCES, ids=os.path.basename)
@pytest.mark.parametrize(
    "acquire, release",
    [("PyGILState_Ensure", "PyGILState_Release"), ("PyEval_SaveThread", "PyEval_RestoreThread")],
)
def test_gil_state_calls_are_paired(path, acquire, release):
    assert pairing_problems(_read(path), acquire, release) == [], path


@pytest.mark.parametrize(
    "snippet, ok",
    [
        ("void f(void) { PyGILState_STATE g = PyGILState_Ensure(); x(); PyGILState_Release(g); }", True),
        ("void f(void) { PyGILState_STATE g = PyGILState_Ensure(); x(); }", False),
        ("void f(void) { PyGILState_Ensure(); PyGILState_Release(g); }", False),
        ("void f(void) { PyGILState_STATE g = PyGILState_Ensure(); PyGILState_Release(h); }", False),
        ("void f(void) { PyGILState_STATE g = PyGILState_Ensure(); }\n"
         "void h(PyGILState_STATE g) { PyGILState_Release(g); }", False),
        # A worker keeps its state in a struct across tasks and gives it back when it ends.
        ("static void run(W *w) { if (!w->t) { w->gil = PyGILState_Ensure(); } }\n"
         "static void *main(void *a) { W *w = a; run(w); PyGILState_Release(w->gil); }", True),
        ("static void run(W *w) { w->gil = PyGILState_Ensure(); }\n", False),
        ("static void end(W *w) { PyGILState_Release(w->gil); }\n", False),
    ],
)
def test_the_pairing_check_catches_mistakes(snippet, ok):
    code = strip_comments_and_strings(snippet)
    assert (pairing_problems(code, "PyGILState_Ensure", "PyGILState_Release") == []) is ok


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
