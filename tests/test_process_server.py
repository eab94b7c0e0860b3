"""backend="process" starts its workers as forks of a warm server kept for the process.

The server is an interpreter spawned by the first process batch, reused by later ones, that
loads each batch's functions and forks a worker per request. These tests look at real
processes: who each worker's parent is, where the task's module was imported, what is left
running after a batch, how long the server lives (the interpreter's life, and no longer
than its parent), and what happens when a worker or the server itself dies.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
from conftest import HELPERS, alive, child_env

from xetrack_c import ExperimentSpec, run_multiple

if str(HELPERS) not in sys.path:
    sys.path.insert(0, str(HELPERS))

import slow_server_tasks  # noqa: E402
import warm_tasks  # noqa: E402


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


def test_workers_are_forks_of_one_warm_server_kept_for_the_next_batch():
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
    # No worker is left; the server is: this process's child, waiting for the next batch.
    assert not any(alive(pid) for pid in workers)
    assert alive(server) and server in children_of(os.getpid())
    before = set(children_of(os.getpid()))
    fds = sorted(os.listdir("/proc/self/fd"))

    again = run_multiple(specs_of(warm_tasks.where, 6), parallel=2, backend="process")
    assert [r.status for r in again] == ["completed"] * 6
    assert {r.result["ppid"] for r in again} == {server}  # the same server, same pid
    assert {r.result["loaded_in"] for r in again} == {server}
    assert not workers & {r.result["pid"] for r in again}  # new forks
    assert not any(alive(r.result["pid"]) for r in again)
    assert set(children_of(os.getpid())) == before
    assert sorted(os.listdir("/proc/self/fd")) == fds  # pipes and pidfds closed


def test_a_server_killed_between_batches_is_replaced_by_the_next_batch():
    first = run_multiple(specs_of(warm_tasks.where, 2), parallel=1, backend="process")
    server = first[0].result["ppid"]
    os.kill(server, signal.SIGKILL)
    deadline = time.monotonic() + 30
    while alive(server) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not alive(server)
    results = run_multiple(specs_of(warm_tasks.where, 4), parallel=2, backend="process")
    assert [r.status for r in results] == ["completed"] * 4
    servers = {r.result["ppid"] for r in results}
    assert len(servers) == 1 and server not in servers
    assert all(r.result["parent_is_server"] for r in results)
    # The dead one was reaped: no zombie of it is left as this process's child.
    with pytest.raises(ChildProcessError):
        os.waitpid(server, os.WNOHANG)


def test_the_batch_functions_see_the_current_folder_and_environment(tmp_path, monkeypatch):
    # The server was started earlier, elsewhere: each batch hands it the parent's working
    # directory and environment, as a new interpreter started now would have.
    run_multiple(specs_of(warm_tasks.where, 1), parallel=1, backend="process")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("XT_PROC_KEEP_PROBE", "second")
    results = run_multiple(specs_of(warm_tasks.cwd_and_env, 2), parallel=2, backend="process")
    assert [r.result for r in results] == [(str(tmp_path), "second", True)] * 2


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
    assert alive(servers.pop())  # kept for the next batch


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
    # The next batch starts a new server.
    after = run_multiple(specs_of(warm_tasks.where, 2), parallel=1, backend="process")
    assert {r.result["ppid"] for r in after} != {server}
    assert all(r.result["parent_is_server"] for r in after)


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
    assert alive(servers.pop())  # kept for the next batch


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


def test_workers_print_where_this_process_prints_now(capfd):
    # The server was started by an earlier batch, when fds 1 and 2 pointed elsewhere
    # (another test's capture): each batch hands it this process's current ones.
    run_multiple(specs_of(warm_tasks.where, 1), parallel=1, backend="process")
    capfd.readouterr()
    results = run_multiple(specs_of(warm_tasks.shout, 3), parallel=2, backend="process")
    assert all(r.result["parent_is_server"] for r in results)
    out, err = capfd.readouterr()
    assert sorted(out.split("\n")[:-1]) == ["out 0", "out 1", "out 2"]
    assert sorted(line for line in err.split("\n") if line.startswith("err ")) == \
        ["err 0", "err 1", "err 2"]


def test_an_edited_task_module_runs_as_edited(tmp_path, monkeypatch):
    # The server imported the module for the first batch; once its file changes, a batch
    # must not run the old code from the server's forks.
    module = tmp_path / "edited_task.py"
    module.write_text("VERSION = 1\n\ndef task(config):\n    import os\n"
                      "    return VERSION, os.getppid()\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    import importlib

    import edited_task

    def batch():
        results = run_multiple([ExperimentSpec(function=edited_task.task, config={"x": i})
                                for i in range(2)], parallel=2, backend="process")
        assert [r.status for r in results] == ["completed"] * 2
        return {r.result for r in results}

    first = batch()
    assert {version for version, _ in first} == {1}
    module.write_text(module.read_text().replace("VERSION = 1", "VERSION = 2"))
    stamp = os.stat(module).st_mtime + 5
    os.utime(module, (stamp, stamp))
    importlib.reload(edited_task)
    assert {version for version, _ in batch()} == {2}
    third = batch()  # a new server, warm again
    assert {version for version, _ in third} == {2}
    (server,) = {ppid for _, ppid in third}
    assert server != next(iter(first))[1] and warm_tasks.server_marker(server)
    sys.modules.pop("edited_task", None)


def test_two_threads_running_batches_at_once_share_the_server():
    import threading

    run_multiple(specs_of(warm_tasks.where, 1), parallel=1, backend="process")  # started
    barrier = threading.Barrier(2)
    found: dict = {}

    def batch(name):
        barrier.wait()
        found[name] = run_multiple(specs_of(warm_tasks.where, 12), parallel=2,
                                   backend="process")

    threads = [threading.Thread(target=batch, args=(name,)) for name in ("a", "b")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for results in found.values():
        assert [r.status for r in results] == ["completed"] * 12
        assert [r.result["x"] for r in results] == list(range(12))
    servers = {r.result["ppid"] for results in found.values() for r in results}
    assert len(servers) == 1 and warm_tasks.server_marker(servers.pop())
    pids = [r.result["pid"] for results in found.values() for r in results]
    assert not any(alive(pid) for pid in pids)


LIFETIME_CHILD = """
    import os, sys, threading, time
    sys.path.insert(0, {helpers!r})
    import warm_tasks
    from xetrack_c import ExperimentSpec, run_multiple

    def batch():
        results = run_multiple([ExperimentSpec(function=warm_tasks.where, config={{"x": i}})
                                for i in range(2)], parallel=2, backend="process")
        servers.update(r.result["ppid"] for r in results)

    servers = set()
    if {on_thread!r}:
        thread = threading.Thread(target=batch)
        thread.start()
        thread.join()  # the server outlives the thread that started it
    else:
        batch()
    batch()
    assert len(servers) == 1, servers
    print(servers.pop(), flush=True)
    if {wait!r}:
        time.sleep(60)
"""


@pytest.mark.parametrize("on_thread", [False, True])
def test_the_server_lives_until_the_interpreter_exits(run_py, on_thread):
    out = run_py(LIFETIME_CHILD.format(helpers=str(HELPERS), on_thread=on_thread, wait=False))
    server = int(out.stdout.split()[0])
    deadline = time.monotonic() + 10
    while alive(server) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not alive(server)  # stopped at exit


@pytest.mark.parametrize("on_thread", [False, True])
def test_the_server_dies_with_its_sigkilled_parent(tmp_path, on_thread):
    # Started on the main thread it has a parent-death signal; started on another thread
    # it sees the end of its control socket.
    script = tmp_path / "parent.py"
    script.write_text(textwrap.dedent(LIFETIME_CHILD.format(
        helpers=str(HELPERS), on_thread=on_thread, wait=True)))
    proc = subprocess.Popen([sys.executable, str(script)], env=child_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        server = int(proc.stdout.readline())
        assert alive(server)
        proc.kill()
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    deadline = time.monotonic() + 10
    while alive(server) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not alive(server)


@pytest.mark.no_sanitizer  # os.fork() of an interpreter that ran a batch's threads
def test_a_fork_of_the_parent_starts_a_server_of_its_own(run_py):
    out = run_py(f"""
        import os, sys
        sys.path.insert(0, {str(HELPERS)!r})
        import warm_tasks
        from xetrack_c import ExperimentSpec, run_multiple

        def servers():
            results = run_multiple([ExperimentSpec(function=warm_tasks.where, config={{"x": i}})
                                    for i in range(2)], parallel=1, backend="process")
            assert [r.status for r in results] == ["completed"] * 2
            return {{(r.result["ppid"], r.result["parent_is_server"]) for r in results}}

        mine = servers()
        child = os.fork()
        if child == 0:
            theirs = servers()
            print("child", theirs != mine, len(theirs), all(s for _, s in theirs), flush=True)
            os._exit(0)
        os.waitpid(child, 0)
        print("parent", servers() == mine, flush=True)
    """)
    assert out.stdout.splitlines() == ["child True 1 True", "parent True"]
