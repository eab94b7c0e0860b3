"""backend="process" starts its workers as forks of one warm server per batch.

The server is an interpreter spawned once per batch that loads the batch's functions and
forks a worker per request. These tests look at real processes: who each worker's parent
is, where the task's module was imported, what is left running after the batch, and what
happens when a worker or the server itself dies in the middle of a batch.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
from conftest import HELPERS, child_env

from xetrack_c import ExperimentSpec, run_multiple

if str(HELPERS) not in sys.path:
    sys.path.insert(0, str(HELPERS))

import slow_server_tasks  # noqa: E402
import warm_tasks  # noqa: E402


def alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            state = stat.read().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state not in ("Z", "X")


def children_of(pid: int) -> list:
    """Pids of the live processes whose parent is ``pid``."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid and fields[0] not in ("Z", "X"):
            found.append(int(entry))
    return found


def specs_of(function, count, **extra):
    return [ExperimentSpec(function=function, config={"x": i, **extra}) for i in range(count)]


def test_workers_are_forks_of_one_warm_server_that_is_gone_after_the_batch():
    before = set(children_of(os.getpid()))
    fds = sorted(os.listdir("/proc/self/fd"))
    results = run_multiple(specs_of(warm_tasks.where, 8), parallel=2, backend="process")
    assert [r.status for r in results] == ["completed"] * 8
    info = [r.result for r in results]
    assert [i["x"] for i in info] == list(range(8))
    servers = {i["ppid"] for i in info}
    assert len(servers) == 1, info  # one server for the whole batch
    server = servers.pop()
    assert server != os.getpid() and all(i["parent_is_server"] for i in info)
    workers = {i["pid"] for i in info}
    assert 1 <= len(workers) <= 2 and server not in workers
    # Each worker leads a process group of its own (the pool kills a task's whole group).
    assert all(i["pgid"] == i["pid"] for i in info)
    # Warm: the task's module was imported once, in the server, before the fork.
    assert {i["loaded_in"] for i in info} == {server}
    # Nothing is left: not the server, not a worker, no new child of this process.
    assert not alive(server)
    assert not any(alive(pid) for pid in workers)
    assert set(children_of(os.getpid())) <= before
    assert sorted(os.listdir("/proc/self/fd")) == fds  # sockets, pipes and pidfds closed


def test_a_function_too_large_for_the_server_is_loaded_by_each_worker():
    # A closure past the server's 48 KiB of functions travels to each worker instead.
    pytest.importorskip("cloudpickle")
    blob = os.urandom(100_000)

    def task(config):
        return len(blob), blob[config["x"]], warm_tasks.server_marker(os.getppid())

    results = run_multiple([ExperimentSpec(function=task, config={"x": i}) for i in range(4)],
                           parallel=2, backend="process")
    assert [r.status for r in results] == ["completed"] * 4
    assert [r.result for r in results] == [(100_000, blob[i], True) for i in range(4)]


def test_the_server_inherits_no_thread_and_no_database_of_the_parent(tmp_path):
    # The parent has threads (the pool's) and an open SQLite database; the server is a new
    # interpreter, so it and its forks have neither.
    from xetrack_c import Tracker

    db = str(tmp_path / "parent.db")
    tracker = Tracker(db)
    tracker.log({"x": 1})
    try:
        results = run_multiple(specs_of(warm_tasks.inherited, 4), parallel=2,
                               backend="process")
    finally:
        tracker.close()
    assert [r.status for r in results] == ["completed"] * 4
    for result in results:
        assert result.result["parent_is_server"]
        assert result.result["server_threads"] == 1
        assert not [path for path in result.result["fds"] if path.startswith(db)]


def test_a_dead_worker_is_replaced_by_another_fork_and_every_result_comes_back():
    # One worker at a time, so that which worker runs what is certain: tasks 0-2 on the
    # first, 4-5 on its replacement, 7-9 on the next.
    specs = specs_of(warm_tasks.crash_or_where, 10, crash=[3, 6])
    results = run_multiple(specs, parallel=1, backend="process")
    statuses = [r.status for r in results]
    assert statuses == ["failed" if i in (3, 6) else "completed" for i in range(10)]
    assert "killed by SIGKILL" in results[3].error_message
    assert "exit code 3" in results[6].error_message
    info = {r.result["x"]: r.result for r in results if r.status == "completed"}
    assert sorted(info) == [0, 1, 2, 4, 5, 7, 8, 9]
    servers = {i["ppid"] for i in info.values()}
    assert len(servers) == 1 and all(i["parent_is_server"] for i in info.values())
    runs = [{info[x]["pid"] for x in xs} for xs in ((0, 1, 2), (4, 5), (7, 8, 9))]
    assert all(len(pids) == 1 for pids in runs)
    assert len(set.union(*runs)) == 3  # each crash was followed by a new fork
    assert {i["loaded_in"] for i in info.values()} == servers
    assert not alive(servers.pop())


def test_the_server_dying_mid_batch_fails_its_running_task_and_the_rest_run_cold():
    started = time.monotonic()
    specs = specs_of(warm_tasks.kill_server_or_where, 6, kill=2)
    results = run_multiple(specs, parallel=1, backend="process", batch_timeout=120)
    assert time.monotonic() - started < 120  # reported, not left hanging
    assert [r.status for r in results] == ["completed"] * 2 + ["failed"] + ["completed"] * 3
    assert "worker died" in results[2].error_message
    warm, cold = [r.result for r in results[:2]], [r.result for r in results[3:]]
    server = warm[0]["ppid"]
    assert all(i["parent_is_server"] and i["ppid"] == server for i in warm)
    assert not alive(server)
    # Once the server is gone, workers are new interpreters started by this process.
    assert all(i["ppid"] == os.getpid() and i["loaded_in"] == i["pid"] for i in cold)
    assert not any(alive(i["pid"]) for i in warm + cold)


def test_tasks_that_time_out_waiting_for_a_busy_server_leave_it_serving_the_rest():
    # The server takes 1.5 s to import the task's module: the first tasks (timeout 0.4 s)
    # time out while they wait for their worker; the server's late answers are skipped and
    # the tasks after them run on its forks.
    specs = [ExperimentSpec(function=slow_server_tasks.where, config={"x": i}, timeout=0.4)
             for i in range(8)]
    results = run_multiple(specs, parallel=1, backend="process")
    statuses = [r.status for r in results]
    assert statuses[0] == "timeout" and statuses[-1] == "completed", statuses
    first = statuses.index("completed")
    assert statuses == ["timeout"] * first + ["completed"] * (8 - first)
    servers = {r.result[0] for r in results[first:]}
    assert len(servers) == 1 and os.getpid() not in servers
    assert [r.result[1] for r in results[first:]] == list(range(first, 8))
    assert not alive(servers.pop())


def test_a_function_module_that_starts_threads_gets_workers_started_cold(run_py):
    # A fork copies only the forking thread: the server refuses to fork once importing the
    # batch's functions left it with threads, and the pool starts each worker cold.  (In a
    # child interpreter: importing the module starts a thread in this one too.)
    out = run_py(f"""
        import os, sys
        sys.path.insert(0, {str(HELPERS)!r})
        import threaded_tasks
        from xetrack_c import ExperimentSpec, run_multiple

        results = run_multiple([ExperimentSpec(function=threaded_tasks.where, config={{"x": i}})
                                for i in range(4)], parallel=2, backend="process")
        print([r.status for r in results], [r.result[2] for r in results])
        print(all(r.result[1] == os.getpid() for r in results))
    """)
    assert out.stdout.splitlines() == [
        "['completed', 'completed', 'completed', 'completed'] [0, 1, 2, 3]", "True"]


def test_a_function_defined_in_main_runs_on_forks_of_the_server(run_py):
    # A function of the __main__ script travels by value (cloudpickle): the server rebuilds
    # it once, and its forks run it.
    pytest.importorskip("cloudpickle")
    out = run_py(f"""
        import os, sys
        sys.path.insert(0, {str(HELPERS)!r})
        import warm_tasks
        from xetrack_c import ExperimentSpec, run_multiple

        def task(config):
            return os.getppid(), warm_tasks.server_marker(os.getppid()), config["x"] * 2

        if __name__ == "__main__":
            results = run_multiple([ExperimentSpec(function=task, config={{"x": i}})
                                    for i in range(4)], parallel=2, backend="process")
            print([r.status for r in results])
            print(len({{r.result[0] for r in results}}), all(r.result[1] for r in results),
                  [r.result[2] for r in results])
    """)
    lines = out.stdout.splitlines()
    assert lines == ["['completed', 'completed', 'completed', 'completed']",
                     "1 True [0, 2, 4, 6]"]


CTRL_C_CHILD = """
    import sys
    sys.path.insert(0, {helpers!r})
    import warm_tasks
    from xetrack_c import ExperimentSpec, run_multiple

    specs = [ExperimentSpec(function=warm_tasks.record_and_sleep,
                            config={{"x": i, "folder": {folder!r}, "sleep": 60}})
             for i in range(4)]
    run_multiple(specs, parallel=2, backend="process")
    print("finished", flush=True)
"""


def test_ctrl_c_stops_the_batch_and_leaves_no_worker_or_server(tmp_path):
    folder = tmp_path / "pids"
    folder.mkdir()
    script = tmp_path / "batch.py"
    script.write_text(textwrap.dedent(CTRL_C_CHILD.format(helpers=str(HELPERS),
                                                          folder=str(folder))))
    proc = subprocess.Popen([sys.executable, str(script)], env=child_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    started: dict = {}
    try:
        deadline = time.monotonic() + 60
        while len(started) < 2 and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
            started = {int(p.name): int(p.read_text().split()[1])
                       for p in folder.iterdir() if p.name.isdigit()}
        assert len(started) == 2, (started, proc.poll())
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode in (-signal.SIGINT, 130), (proc.returncode, err)
    assert "finished" not in out
    assert "KeyboardInterrupt: run_multiple stopped by Ctrl-C" in err, err
    servers = set(started.values())
    assert len(servers) == 1 and proc.pid not in servers  # forks of the warm server
    assert not any(alive(pid) for pid in set(started) | servers)
