"""A results file in a place the reader cannot write (a read-only mount, a directory of
another user) is read as it is when it has no write-ahead log to merge; with one, the
error says what is happening and what to do, on one line.

A WAL-mode file needs its WAL index (``-shm``) even to be read, which SQLite creates next
to it; where it cannot, the reader opens the file immutable.  The tests take away write
access for real: as a normal user the directory is made read-only; as root (which
permissions do not stop) the reader runs in a private mount namespace where the
directory is bind-mounted read-only onto itself.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path
from typing import Callable, List

import pytest
from conftest import child_env

READ = """
import sys
from xetrack_c import Reader
columns = Reader(sys.argv[1]).to_arrays()
print(sorted(columns), [int(v) for v in columns["n"]])
"""


def _can_remount_read_only(directory: Path) -> bool:
    if not (shutil.which("unshare") and shutil.which("mount")):
        return False
    probe = subprocess.run(
        ["unshare", "-m", "sh", "-c",
         'mount --bind -o ro "$0" "$0" && ! touch "$0/.probe" 2>/dev/null', str(directory)],
        capture_output=True, timeout=30)
    return probe.returncode == 0 and not (directory / ".probe").exists()


@pytest.fixture
def unwritable(tmp_path) -> Callable[[List[str]], subprocess.CompletedProcess]:
    """``run(command)``: run ``command`` in tmp_path/ro as a process that cannot write there."""
    directory = tmp_path / "ro"
    directory.mkdir()

    def run(command: List[str]) -> subprocess.CompletedProcess:
        if os.geteuid() != 0:
            os.chmod(directory, stat.S_IRUSR | stat.S_IXUSR)
            try:
                return subprocess.run(command, env=child_env(), capture_output=True, text=True,
                                      timeout=60)
            finally:
                os.chmod(directory, stat.S_IRWXU)
        wrapped = ["unshare", "-m", "sh", "-c", 'mount --bind -o ro "$0" "$0" && exec "$@"',
                   str(directory), *command]
        return subprocess.run(wrapped, env=child_env(), capture_output=True, text=True,
                              timeout=60)

    if os.geteuid() == 0 and not _can_remount_read_only(directory):
        pytest.skip("running as root (permissions do not stop root) and cannot bind-mount a "
                    "directory read-only here (needs unshare and mount with CAP_SYS_ADMIN)")
    run.directory = directory  # type: ignore[attr-defined]
    return run


def write_db(path: Path) -> None:
    from xetrack_c import Tracker

    with Tracker(str(path), track_id="run-a") as tracker:
        for n in range(3):
            tracker.log({"n": n})


def test_reader_and_xt_head_read_a_file_they_cannot_write_next_to(unwritable):
    db = unwritable.directory / "results.db"
    write_db(db)
    assert sorted(os.listdir(unwritable.directory)) == ["results.db"]  # the Tracker closed
    result = unwritable([sys.executable, "-c", READ, str(db)])
    assert result.returncode == 0, result.stderr
    assert result.stdout.split("]")[1].strip() == "[0, 1, 2"
    result = unwritable([sys.executable, "-m", "xetrack_c", "head", str(db), "--json"])
    assert result.returncode == 0, result.stderr
    assert '"n": 2' in result.stdout
    result = unwritable([sys.executable, "-m", "xetrack_c", "sql", str(db),
                         'SELECT count(*) AS c FROM "default"', "--json"])
    assert json.loads(result.stdout) == [{"c": 3}], result.stderr
    assert sorted(os.listdir(unwritable.directory)) == ["results.db"]


def test_an_empty_write_ahead_log_is_nothing_to_merge(unwritable):
    db = unwritable.directory / "results.db"
    write_db(db)
    Path(f"{db}-wal").write_bytes(b"")
    result = unwritable([sys.executable, "-c", READ, str(db)])
    assert result.returncode == 0, result.stderr


def test_a_log_that_needs_merging_is_explained_on_one_line(unwritable):
    db = unwritable.directory / "results.db"
    # A writer killed before it closed leaves its rows in results.db-wal.
    subprocess.run([sys.executable, "-c",
                    "import os, sys\nfrom xetrack_c import Tracker\n"
                    "t = Tracker(sys.argv[1])\nt.log({'n': 1})\nos._exit(0)\n", str(db)],
                   env=child_env(), check=True, timeout=60)
    os.remove(f"{db}-shm")
    assert os.path.getsize(f"{db}-wal") > 0
    result = unwritable([sys.executable, "-m", "xetrack_c", "head", str(db)])
    assert result.returncode == 1, result
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "write-ahead log" in lines[0] and "results.db-wal" in lines[0]
    assert "copy" in lines[0]  # what to do
    result = unwritable([sys.executable, "-c", READ, str(db)])
    assert result.returncode == 1
    assert "StorageError" in result.stderr and "write-ahead log" in result.stderr
    # With write access the same file reads fine, its log merged.
    from xetrack_c import Reader

    assert list(Reader(str(db)).to_arrays()["n"]) == [1]
