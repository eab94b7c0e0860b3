"""Packaging: the sdist holds what a build needs, a build without a compiler or SQLite's
headers says what is missing, and the process uses one SQLite library.

Why one SQLite matters: POSIX advisory locks belong to the process, so when one copy of
SQLite closes a database file it drops the locks another copy holds on it, and a second
process may then write under a reader or beside a writer. Within one copy SQLite keeps the
file open until no connection holds a lock on it.
"""

from __future__ import annotations

import ctypes
import shutil
import sqlite3
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
from conftest import ROOT, child_env

import xetrack_c
from xetrack_c import Reader, Tracker, _core

pytestmark = pytest.mark.slow  # left out of the jobs that re-run the suite (.ci/run)

SQLITE_OPEN_READONLY = 0x00000001


def _tracked(*folders: str) -> set:
    out = subprocess.run(["git", "ls-files", *folders], cwd=ROOT, capture_output=True,
                         text=True, check=True)
    return set(out.stdout.split())


@pytest.fixture(scope="module")
def sdist_names(tmp_path_factory):
    if not (ROOT / ".git").exists() or shutil.which("git") is None:
        pytest.skip("not a git checkout: the sdist is compared with the tracked files")
    pytest.importorskip("build", reason="the 'build' package is not installed (test extra)")
    out = tmp_path_factory.mktemp("sdist")
    subprocess.run([sys.executable, "-m", "build", "--sdist", "--no-isolation", "--outdir",
                    str(out), str(ROOT)], check=True, capture_output=True, timeout=300)
    (archive,) = out.glob("xetrack_c-*.tar.gz")
    with tarfile.open(archive) as tar:
        names = tar.getnames()
    top = names[0].split("/")[0]
    return {name[len(top) + 1:] for name in names if name.startswith(top + "/")}


def test_sdist_holds_every_source_the_build_and_the_tests_need(sdist_names):
    needed = _tracked("csrc", "xetrack_c", "tests", "docs", "examples")
    needed |= {"LICENSE", "README.md", "pyproject.toml", "setup.py", "MANIFEST.in",
               "CHANGELOG.md", "mkdocs.yml"}
    missing = sorted(needed - sdist_names)
    assert not missing, f"missing from the sdist: {missing}"
    assert "csrc/names_words.inc" in sdist_names  # the include the old sdist lacked
    assert "PKG-INFO" in sdist_names


def test_sdist_holds_nothing_built_or_local(sdist_names):
    bad = sorted(name for name in sdist_names
                 if name.endswith((".so", ".pyc", ".db", ".db-wal", ".db-shm"))
                 or "__pycache__" in name or name.startswith(("build/", "dist/", ".git/")))
    assert not bad, bad


def _build_ext(tmp_path: Path, cc: str) -> subprocess.CompletedProcess:
    env = child_env()
    env["CC"] = cc
    return subprocess.run(
        [sys.executable, "setup.py", "-q", "build_ext", "--build-temp", str(tmp_path / "t"),
         "--build-lib", str(tmp_path / "l")],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


def test_a_build_without_a_compiler_names_what_to_install(tmp_path):
    out = _build_ext(tmp_path, "no-such-cc")
    assert out.returncode != 0
    text = out.stdout + out.stderr
    assert "needs a C compiler, and 'no-such-cc' is not on PATH" in text
    assert "apt-get install gcc libsqlite3-dev" in text and "dnf install" in text
    assert "Traceback" not in text


@pytest.mark.skipif(shutil.which("gcc") is None, reason="gcc is not installed")
def test_a_build_without_sqlite_headers_names_what_to_install(tmp_path):
    # -nostdinc hides the system's include folders, sqlite3.h among them.
    out = _build_ext(tmp_path, "gcc -nostdinc")
    assert out.returncode != 0
    text = out.stdout + out.stderr
    assert "SQLite's headers (sqlite3.h) or its library (libsqlite3) were not found" in text
    assert "apt-get install gcc libsqlite3-dev" in text
    assert "fatal error" not in text and "Traceback" not in text


# ------------------------------------------------------------------ one SQLite per process
def test_the_module_uses_the_sqlite_that_python_uses():
    info = _core.sqlite_library()
    assert info["version"] == sqlite3.sqlite_version == _core.sqlite_version
    assert info["threadsafe"] != 0 and info["wal"] is True
    assert len(info["mapped"]) <= 1
    if info["mapped"]:  # a shared libsqlite3: the one the module is bound to
        assert Path(info["mapped"][0]).resolve() == Path(info["library"]).resolve()
        assert not Path(info["library"]).resolve().is_relative_to(Path(xetrack_c.__file__).parent)


def _lock_held_elsewhere(db: Path) -> bool:
    """Whether another process is refused the write lock of ``db`` at once."""
    code = ("import sqlite3, sys\n"
            "con = sqlite3.connect(sys.argv[1], timeout=0, isolation_level=None)\n"
            "try:\n    con.execute('BEGIN IMMEDIATE')\nexcept sqlite3.OperationalError as e:\n"
            "    print('locked' if 'locked' in str(e) else e)\nelse:\n    print('free')\n")
    out = subprocess.run([sys.executable, "-c", code, str(db)], capture_output=True, text=True,
                         timeout=60, check=True)
    return out.stdout.strip() == "locked"


def _system_sqlite() -> Path:
    library = _core.sqlite_library()["library"]
    if not library or "libsqlite3" not in Path(library).name:
        pytest.skip("SQLite is not a shared library in this build")
    return Path(library)


def test_closing_a_file_in_xetrack_c_keeps_the_locks_sqlite3_holds(tmp_path):
    db = tmp_path / "shared.db"
    with Tracker(str(db)) as tracker:
        tracker.log({"i": 1})
    writer = sqlite3.connect(db, isolation_level=None)
    writer.execute("BEGIN IMMEDIATE")  # this process holds the write lock
    writer.execute('INSERT INTO "default" (track_id, timestamp, i) VALUES (?, ?, ?)',
                   ("x", "2026-01-01 00:00:00.000000", 2))
    assert _lock_held_elsewhere(db)
    for _ in range(3):  # open and close the same file through xetrack_c
        assert len(Reader(str(db)).to_df()) == 1
        assert _core.read_rows(str(db), 'SELECT count(*) FROM "default"')[1] == [(1,)]
    assert _lock_held_elsewhere(db), "xetrack_c's close dropped sqlite3's lock"
    writer.execute("COMMIT")
    assert not _lock_held_elsewhere(db)
    assert len(Reader(str(db)).to_df()) == 2


def test_a_second_sqlite_copy_would_drop_the_locks(tmp_path):
    """The hazard the single library avoids, shown with a real second copy of SQLite."""
    copy = tmp_path / "copy" / "libsqlite3.so.0"
    copy.parent.mkdir()
    shutil.copy(_system_sqlite(), copy)
    second = ctypes.CDLL(str(copy), mode=ctypes.RTLD_LOCAL)
    db = tmp_path / "shared.db"
    with Tracker(str(db)) as tracker:
        tracker.log({"i": 1})
    writer = sqlite3.connect(db, isolation_level=None)
    writer.execute("BEGIN IMMEDIATE")
    assert _lock_held_elsewhere(db)
    handle = ctypes.c_void_p()
    assert second.sqlite3_open_v2(str(db).encode(), ctypes.byref(handle), SQLITE_OPEN_READONLY,
                                  None) == 0
    assert second.sqlite3_exec(handle, b"SELECT count(*) FROM sqlite_master", None, None,
                               None) == 0
    assert second.sqlite3_close(handle) == 0
    assert not _lock_held_elsewhere(db)  # the other copy's close dropped this copy's lock
    writer.execute("ROLLBACK")


@pytest.mark.skipif(shutil.which("patchelf") is None, reason="patchelf is not installed")
def test_import_refuses_a_second_sqlite_library(tmp_path):
    # A copy under another soname: the loader would reuse a copy with the same soname.
    copy = tmp_path / "libsqlite3.so.9"
    shutil.copy(_system_sqlite(), copy)
    subprocess.run(["patchelf", "--set-soname", copy.name, str(copy)], check=True)
    code = ("import ctypes, sys\nctypes.CDLL(sys.argv[1], mode=ctypes.RTLD_LOCAL)\n"
            "try:\n    import xetrack_c\nexcept ImportError as e:\n    print('refused:', e)\n"
            "else:\n    print('imported')\n")
    out = subprocess.run([sys.executable, "-c", code, str(copy)], capture_output=True,
                         text=True, timeout=60, env=child_env(), check=True)
    assert out.stdout.startswith("refused: two SQLite libraries are loaded"), out.stdout
    assert str(copy) in out.stdout
