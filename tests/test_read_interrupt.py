"""Ctrl-C stops a long read: ``xt sql`` exits 130, ``Reader.to_df`` raises KeyboardInterrupt.

SQLite steps through a statement with the GIL released, where Python runs no signal
handler; a progress handler looks at pending signals a few times a second and interrupts
the statement.  Each case runs in a child process that starts a query counting to 10**9
(minutes of work), gets SIGINT once it is running, and must be gone within a few seconds.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from typing import List

import pytest
from conftest import child_env

COUNT = ("WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 1000000000) "
         "SELECT count(*) AS n FROM c")
# Seconds the query runs before SIGINT, and how long the child may take to stop after it.
RUNNING = 1.0
STOPS_WITHIN = 5.0


@pytest.fixture
def slow_db(tmp_path) -> str:
    """A tracker file with a view ``slow`` whose rows take minutes to produce."""
    from xetrack_c import Tracker

    path = str(tmp_path / "slow.db")
    with Tracker(path) as tracker:
        tracker.log({"a": 1})
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE VIEW slow AS WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL "
                     "SELECT x + 1 FROM c WHERE x < 1000000000) SELECT x AS n FROM c")
    conn.close()
    return path


def wait_until_open(proc: subprocess.Popen, path: str, timeout: float = 60) -> None:
    """Wait until ``proc`` has ``path`` open (Linux's /proc; elsewhere, just wait a bit)."""
    fds = f"/proc/{proc.pid}/fd"
    if not os.path.isdir(fds):
        time.sleep(2)
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            if any(os.path.realpath(os.path.join(fds, fd)) == os.path.realpath(path)
                   for fd in os.listdir(fds)):
                return
        except OSError:  # a descriptor closed while we looked
            pass
        time.sleep(0.02)
    pytest.fail(f"the child never opened {path}: {proc.poll()}")


def interrupt(command: List[str], cwd, db: str) -> subprocess.CompletedProcess:
    """Run ``command``, wait until it reads ``db`` (or prints "ready") and ran RUNNING
    seconds more, send SIGINT, and return how it ended; fails the test if it is still
    running STOPS_WITHIN seconds later."""
    proc = subprocess.Popen(command, cwd=str(cwd), env=child_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        if "--ready" in command:
            assert proc.stdout.readline().strip() == "ready", proc.stderr.read()
        else:
            wait_until_open(proc, db)
        time.sleep(RUNNING)
        assert proc.poll() is None, f"the query ended before SIGINT: {proc.communicate()}"
        proc.send_signal(signal.SIGINT)
        sent = time.monotonic()
        try:
            out, err = proc.communicate(timeout=STOPS_WITHIN)
        except subprocess.TimeoutExpired:
            pytest.fail(f"{command[-2:]} still running {STOPS_WITHIN} s after SIGINT")
        took = time.monotonic() - sent
        assert took < STOPS_WITHIN
        return subprocess.CompletedProcess(command, proc.returncode, out, err)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_xt_sql_exits_130_on_ctrl_c(slow_db, tmp_path):
    result = interrupt([sys.executable, "-m", "xetrack_c", "sql", slow_db, COUNT], tmp_path,
                       slow_db)
    assert result.returncode == 130, result
    assert "Traceback" not in result.stderr


# Each snippet prints "ready" just before its long read; a KeyboardInterrupt leaving the
# read is reported on stdout, so the exit status shows the read itself ended.
SNIPPET = """
import sys
from xetrack_c import Reader, Tracker, _core
db = sys.argv[1]
read = {{
    "to_df": lambda: Reader(db, table="slow").to_df(),
    "read_rows": lambda: _core.read_rows(db, {count!r}),
    "tracker": lambda: Tracker(db)._read_columns({count!r}),
}}[sys.argv[2]]
import pandas  # imported before "ready", so SIGINT lands inside the read
print("ready", flush=True)
try:
    read()
except KeyboardInterrupt:
    print("KeyboardInterrupt", flush=True)
    sys.exit(3)
"""


@pytest.mark.parametrize("how", ["to_df", "read_rows", "tracker"])
def test_a_long_read_raises_keyboard_interrupt(slow_db, tmp_path, how):
    pytest.importorskip("pandas")
    code = SNIPPET.format(count=COUNT)
    result = interrupt([sys.executable, "-c", code, slow_db, how, "--ready"], tmp_path, slow_db)
    assert result.returncode == 3, result
    assert result.stdout.split() == ["KeyboardInterrupt"], result
