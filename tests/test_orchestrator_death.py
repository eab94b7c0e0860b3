"""Every process a batch starts dies with the process that runs the batch.

An orchestrator (a child interpreter running ``run_multiple``) is killed with SIGKILL while
its tasks sleep for 1000 s, each having first written its pid (and its parent's: the fork
server's, under ``launcher="forkserver"``, the batch's warm server under
``backend="process"``) into a folder. Nothing it started may outlive it
by more than a few seconds: each recorded process must be gone from /proc or a zombie (the
orchestrator's death hands them to init or a subreaper, which reaps them).
"""

from __future__ import annotations

import functools
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from conftest import HELPERS, alive, child_env

from xetrack_c import ExperimentSpec, run_multiple

if str(HELPERS) not in sys.path:
    sys.path.insert(0, str(HELPERS))

import proc_tasks  # noqa: E402

TASKS = 3
#: Seconds a process may outlive the orchestrator (the mechanism takes well under one; the
#: rest is slack for a loaded machine).
GRACE = 5.0

SLEEPER = """
import os, sys, time
sys.path.insert(0, {helpers!r})
import proc_tasks
proc_tasks.record_pid({folder!r})
time.sleep(1000)
"""

ORCHESTRATOR = """
import sys
sys.path.insert(0, {helpers!r})
import proc_tasks
from xetrack_c import ExperimentSpec, run_multiple
if {script!r}:
    specs = [ExperimentSpec(script_path={script!r}, timeout=600) for _ in range({tasks})]
else:
    specs = [ExperimentSpec(function=proc_tasks.record_pid_and_sleep, timeout=600,
                            config={{"x": i, "folder": {folder!r}, "sleep": 1000}})
             for i in range({tasks})]
run_multiple(specs, parallel={tasks}, backend={backend!r}, launcher={launcher!r})
"""


def recorded(folder: Path) -> dict:
    """{pid: parent pid} of the tasks that started."""
    return {int(p.name): int(p.read_text()) for p in folder.iterdir() if p.name.isdigit()}


@pytest.mark.parametrize("kind", ["process", "spawn", "forkserver"])
def test_every_process_of_a_batch_dies_with_its_killed_orchestrator(tmp_path, kind):
    folder = tmp_path / "pids"
    folder.mkdir()
    script = ""
    if kind != "process":
        script = str(tmp_path / "sleeper.py")
        Path(script).write_text(SLEEPER.format(helpers=str(HELPERS), folder=str(folder)))
    orchestrator = tmp_path / "orchestrator.py"
    orchestrator.write_text(textwrap.dedent(ORCHESTRATOR.format(
        helpers=str(HELPERS), script=script, folder=str(folder), tasks=TASKS,
        backend="process" if kind == "process" else "auto",
        launcher="forkserver" if kind == "forkserver" else "spawn")))
    proc = subprocess.Popen([sys.executable, str(orchestrator)], env=child_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    started: dict = {}
    try:
        deadline = time.monotonic() + 120
        while len(started) < TASKS and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
            started = recorded(folder)
        if len(started) < TASKS:
            error = proc.stderr.read().decode() if proc.poll() is not None else ""
            pytest.fail(f"the tasks did not start ({started}): {error}")
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        killed_at = time.monotonic()
        watched = set(started)
        if kind == "forkserver":
            servers = {parent for parent in started.values() if parent != proc.pid}
            assert len(servers) == TASKS, started  # one fork server per worker
            watched |= servers
        if kind == "process":
            servers = set(started.values())
            assert len(servers) == 1 and proc.pid not in servers, started  # one warm server
            watched |= servers
        while any(alive(pid) for pid in watched) and time.monotonic() < killed_at + GRACE:
            time.sleep(0.02)
        survivors = sorted(pid for pid in watched if alive(pid))
        assert not survivors, (
            f"{len(survivors)} of {len(watched)} processes outlived the killed orchestrator "
            f"by {GRACE} s: {survivors}")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for pid in set(recorded(folder)) | set(recorded(folder).values()):
            if pid != proc.pid and pid != os.getpid() and alive(pid):
                os.kill(pid, signal.SIGKILL)  # what this test started, left over by a failure


def test_worker_processes_still_end_cleanly_at_the_end_of_a_batch(tmp_path):
    # The parent-death signal must not cut short a worker's normal exit: atexit handlers
    # run and open files are flushed once the batch is over.
    specs = [ExperimentSpec(function=proc_tasks.identify, config={"x": i}) for i in range(4)]
    results = run_multiple(specs, parallel=2, backend="process",
                           worker_init=functools.partial(proc_tasks.mark_exit, str(tmp_path)))
    assert [r.status for r in results] == ["completed"] * 4
    workers = {r.result[0] for r in results}
    assert workers and os.getpid() not in workers
    for pid in workers:
        assert (tmp_path / f"{pid}.atexit").exists(), "atexit handlers did not run"
        assert (tmp_path / f"{pid}.open").read_text() == "flushed at exit"
