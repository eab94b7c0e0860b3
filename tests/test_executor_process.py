"""run_multiple for long batches: worker processes, retries, rate limits, groups, warm
workers, resume.

Task functions live in tests/helpers/proc_tasks.py so that worker processes import a small
module (they inherit this process's sys.path).
"""

from __future__ import annotations

import os
import sqlite3
import sys
import time

import pytest
from conftest import HELPERS, alive, child_env, read_rows

from xetrack_c import ExperimentSpec, run_multiple

if str(HELPERS) not in sys.path:
    sys.path.insert(0, str(HELPERS))

import proc_tasks  # noqa: E402


def wait_gone(pid: int, seconds: float = 15.0) -> bool:
    deadline = time.monotonic() + seconds
    while alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    return not alive(pid)


def specs_of(function, count, **extra):
    return [ExperimentSpec(function=function, config={"x": i, **extra}, name=f"t{i}")
            for i in range(count)]


# ------------------------------------------------------------------ worker processes
def test_process_backend_runs_functions_in_other_processes_with_the_child_api(tmp_path):
    db = str(tmp_path / "runs.db")
    specs = specs_of(proc_tasks.with_params, 6)
    results = run_multiple(specs, parallel=2, backend="process", db=db)
    assert [r.status for r in results] == ["completed"] * 6, [r.error_message for r in results]
    again = run_multiple(specs, parallel=2, backend="process")
    for i, (result, other) in enumerate(zip(results, again, strict=True)):
        value = result.result
        assert value["param"] == i and value["id"] == result.experiment_id
        assert value["seed"] == value["seed_api"] == result.seed
        assert value["draw"] == other.result["draw"]  # rng follows the seed, not the worker
        assert value["pid"] != os.getpid()
    assert len({r.result["pid"] for r in results}) <= 2
    rows = read_rows(db, "experiments")
    assert [row["status"] for row in rows] == ["completed"] * 6


def test_metrics_logged_in_worker_processes_reach_the_batch_db(tmp_path):
    db = str(tmp_path / "runs.db")
    # The file exists in WAL mode before three processes open it at once: switching a
    # new file to WAL can fail with "database is locked" when another connection races
    # to do the same (a limitation of the store's open, not of the executor).
    sqlite3.connect(db).execute("PRAGMA journal_mode=WAL").close()
    results = run_multiple(specs_of(proc_tasks.log_and_return, 5), parallel=2,
                           backend="process", db=db)
    assert [r.result for r in results] == list(range(5))
    metrics = read_rows(db, "metrics")
    assert sorted(m["x"] for m in metrics) == list(range(5))
    assert {m["experiment_id"] for m in metrics} == {r.experiment_id for r in results}
    assert os.getpid() not in {m["pid"] for m in metrics}


def test_lambdas_and_closures_are_sent_with_cloudpickle():
    offset = 100
    specs = [ExperimentSpec(function=lambda config: config["x"] + offset, config={"x": i})
             for i in range(3)]
    results = run_multiple(specs, backend="process")
    assert [r.result for r in results] == [100, 101, 102]


def test_what_cannot_be_sent_is_refused_before_anything_runs(tmp_path):
    import threading

    log = tmp_path / "log"
    specs = [ExperimentSpec(function=proc_tasks.append_line, config={"x": 0}),
             ExperimentSpec(function=proc_tasks.double, config={"lock": threading.Lock()})]
    with pytest.raises(ValueError, match="Invalid ExperimentSpec at index 1: the config cannot "
                                         "be sent to a worker process"):
        run_multiple(specs, backend="process")
    with pytest.raises(ValueError, match="index 1"):
        run_multiple(specs, backend="process", dry_run=True)
    assert not log.exists()


@pytest.mark.parametrize("function, expected", [
    # AddressSanitizer turns a segfault into an abort with a report: left out of that run.
    pytest.param(proc_tasks.segfault, "worker died: signal SIGSEGV",
                 marks=pytest.mark.no_sanitizer),
    (proc_tasks.hard_exit, "worker died: exit code 3"),
    (proc_tasks.killed, "worker died: killed by SIGKILL (out of memory?)"),
])
def test_a_crashing_task_fails_alone_and_its_worker_is_replaced(function, expected):
    specs = specs_of(proc_tasks.identify, 2) + [ExperimentSpec(function=function, name="bad")] \
        + specs_of(proc_tasks.identify, 3)
    results = run_multiple(specs, parallel=None, backend="process")
    statuses = [r.status for r in results]
    assert statuses == ["completed"] * 2 + ["failed"] + ["completed"] * 3, \
        [r.error_message for r in results]
    assert results[2].error_message.startswith(expected), results[2].error_message
    before = {r.result[0] for r in results[:2]}
    after = {r.result[0] for r in results[3:]}
    assert len(before) == len(after) == 1 and before != after  # one worker, then its successor
    for pid in before | after:
        assert wait_gone(pid), f"worker process {pid} outlived its batch"


@pytest.mark.no_sanitizer  # AddressSanitizer's shadow memory does not fit a small RLIMIT_AS
def test_a_task_allocating_under_a_small_rlimit_as_fails_alone():
    specs = [ExperimentSpec(function=proc_tasks.allocate_until_refused, name="hog")] \
        + specs_of(proc_tasks.double, 3)
    results = run_multiple(specs, parallel=None, backend="process")
    assert results[0].status == "failed"
    assert results[0].error_message.startswith(("MemoryError", "worker died")), \
        results[0].error_message
    assert [r.result for r in results[1:]] == [0, 2, 4]


def test_a_hanging_task_times_out_and_the_batch_goes_on():
    specs = [ExperimentSpec(function=proc_tasks.sleep_forever, timeout=0.5, name="hang")] \
        + specs_of(proc_tasks.identify, 2)
    results = run_multiple(specs, parallel=None, backend="process")
    assert [r.status for r in results] == ["timeout", "completed", "completed"]
    assert "its worker process was stopped" in results[0].error_message
    assert results[0].duration < 30


def test_batch_timeout_stops_running_worker_processes():
    specs = [ExperimentSpec(function=proc_tasks.sleep_forever) for _ in range(3)]
    results = run_multiple(specs, parallel=2, backend="process", batch_timeout=0.5)
    assert sorted(r.status for r in results) == ["cancelled", "timeout", "timeout"]


# ------------------------------------------------------------------ retries
@pytest.mark.parametrize("backend", ["thread", "process"])
def test_retries_count_attempts_and_then_succeed(tmp_path, backend):
    log = str(tmp_path / "attempts")
    spec = ExperimentSpec(function=proc_tasks.flaky, name="api",
                          config={"x": 7, "log": log, "failures": 2, "error": "rate"})
    results = run_multiple([spec], backend=backend, retries=3, retry_delay=0.01,
                           retry_on=(proc_tasks.RateLimitError,), db=str(tmp_path / "r.db"))
    assert results[0].status == "completed", results[0].error_message
    assert results[0].result == 3
    with open(log) as f:
        assert f.read().split() == ["7", "7", "7"]
    rows = read_rows(str(tmp_path / "r.db"), "experiments")
    assert [row["status"] for row in rows] == ["completed"]  # one row per experiment


@pytest.mark.parametrize("backend", ["thread", "process"])
def test_retries_give_up_after_the_last_attempt(tmp_path, backend):
    log = str(tmp_path / "attempts")
    spec = ExperimentSpec(function=proc_tasks.flaky,
                          config={"x": 1, "log": log, "failures": 10, "error": "timeout"})
    results = run_multiple([spec], backend=backend, retries=2, retry_delay=0.01,
                           retry_on=(TimeoutError,))
    assert results[0].status == "failed"
    assert results[0].error_message.startswith("TimeoutError: attempt 3")
    assert "(attempt 3 of 3)" in results[0].error_message
    with open(log) as f:
        assert len(f.read().split()) == 3


def test_errors_not_in_retry_on_are_not_retried(tmp_path):
    log = str(tmp_path / "attempts")
    spec = ExperimentSpec(function=proc_tasks.flaky,
                          config={"x": 1, "log": log, "failures": 1, "error": "value"})
    results = run_multiple([spec], retries=3, retry_delay=0.01, retry_on=(TimeoutError,))
    assert results[0].status == "failed"
    with open(log) as f:
        assert f.read().split() == ["1"]


def test_a_task_timeout_is_retried_as_a_timeout_error():
    specs = [ExperimentSpec(function=proc_tasks.sleep_forever, timeout=0.3)]
    results = run_multiple(specs, backend="process", retries=1, retry_delay=0.0,
                           retry_on=(TimeoutError,))
    assert results[0].status == "timeout"
    assert "(attempt 2 of 2)" in results[0].error_message


def test_retry_waits_hold_no_worker(tmp_path, monkeypatch):
    """A task waiting for its retry does not keep the only worker from the others."""
    from xetrack_c.run.retry import RetryPolicy

    monkeypatch.setattr(RetryPolicy, "delay", lambda self, attempt: 3.0)
    log = str(tmp_path / "attempts")
    specs = [ExperimentSpec(function=proc_tasks.flaky,
                            config={"x": 0, "log": log, "failures": 1, "error": "rate"})]
    specs += [ExperimentSpec(function=proc_tasks.record_start, config={"x": i, "log": log})
              for i in range(1, 4)]
    results = run_multiple(specs, retries=1, retry_on=(Exception,))
    assert [r.status for r in results] == ["completed"] * 4
    with open(log) as f:
        order = [line.split()[0] for line in f.read().splitlines()]
    # One worker: while task 0 waited 3 s for its retry, it ran the three others.
    assert order == ["0", "1", "2", "3", "0"]


@pytest.mark.parametrize("backend", ["thread", "process"])
def test_max_consecutive_failures_aborts_the_batch(tmp_path, backend):
    log = str(tmp_path / "calls")
    specs = [ExperimentSpec(function=proc_tasks.always_fails, config={"x": i, "log": log})
             for i in range(10)]
    results = run_multiple(specs, backend=backend, max_consecutive_failures=3, retries=1,
                           retry_delay=0.0, retry_on=(TimeoutError,))
    assert [r.status for r in results] == ["failed"] * 3 + ["cancelled"] * 7
    assert results[0].error_message.startswith("PermissionError: invalid API key")
    with open(log) as f:
        assert f.read().split() == ["0", "1", "2"]  # not retried: not a TimeoutError


def test_bad_retry_and_rate_options_are_refused():
    spec = specs_of(proc_tasks.double, 1)
    for kwargs, error in [({"retries": -1}, ValueError), ({"retries": 1.5}, ValueError),
                          ({"retry_on": "TimeoutError"}, TypeError),
                          ({"retry_on": (int,)}, TypeError), ({"retry_delay": -1}, ValueError),
                          ({"rate_limit": "fast"}, ValueError),
                          ({"rate_limit": "10/fortnight"}, ValueError),
                          ({"rate_limit": 0}, ValueError), ({"rate_limit": [1]}, TypeError),
                          ({"worker_init": 3}, TypeError), ({"backend": "gpu"}, ValueError)]:
        with pytest.raises(error):
            run_multiple(spec, **kwargs)


def test_rate_limit_spaces_task_starts(tmp_path):
    from xetrack_c.run.retry import rate_interval

    assert rate_interval("50/min") == pytest.approx(1.2)
    assert rate_interval("2/s") == rate_interval(2) == 0.5
    assert rate_interval("3600 / hour") == 1.0
    log = str(tmp_path / "starts")
    specs = [ExperimentSpec(function=proc_tasks.record_start, config={"x": i, "log": log})
             for i in range(5)]
    start = time.monotonic()
    results = run_multiple(specs, parallel=4, rate_limit="20/s")
    elapsed = time.monotonic() - start
    assert [r.status for r in results] == ["completed"] * 5
    # Five starts at least 50 ms apart cannot fit in less than 200 ms.
    assert elapsed >= 0.2


# ------------------------------------------------------------------ groups and warm workers
@pytest.mark.parametrize("backend", ["thread", "process"])
def test_a_group_runs_on_one_worker_in_order_with_a_warm_cache(backend):
    specs = [ExperimentSpec(function=proc_tasks.warm, config={"x": i}, group=f"model-{i % 3}")
             for i in range(12)]
    results = run_multiple(specs, parallel=3, backend=backend)
    assert [r.status for r in results] == ["completed"] * 12, [r.error_message for r in results]
    for g in range(3):
        members = [r.result for i, r in enumerate(results) if i % 3 == g]
        workers = {(pid, ident) for _, _, pid, ident in members}
        assert len(workers) == 1, members  # the same worker process / thread
        loaded_by = {first for first, _, _, _ in members}
        assert loaded_by <= {0, 1, 2}  # loaded once, by the first task of some group
        counts = [count for _, count, _, _ in members]
        assert counts == sorted(counts)  # in order, one after another
    if backend == "process":
        assert os.getpid() not in {r.result[2] for r in results}


@pytest.mark.parametrize("backend", ["thread", "process"])
def test_worker_init_runs_once_per_worker(backend):
    results = run_multiple(specs_of(proc_tasks.read_init, 8), parallel=2, backend=backend,
                           worker_init=proc_tasks.init_worker)
    assert [r.status for r in results] == ["completed"] * 8
    assert {r.result[0] for r in results} == {1}
    if backend == "process":
        assert all(r.result[1] == r.result[2] for r in results)


@pytest.mark.parametrize("backend", ["thread", "process"])
def test_a_failing_worker_init_fails_the_tasks_of_that_worker(backend):
    results = run_multiple(specs_of(proc_tasks.double, 3), backend=backend,
                           worker_init=proc_tasks.failing_init)
    assert [r.status for r in results] == ["failed"] * 3
    assert all("no GPU here" in r.error_message for r in results)
    assert all("worker_init failed" in r.error_message for r in results)


# ------------------------------------------------------------------ resume, limit, dry run
def test_dry_run_and_staged_rollout_with_limit(tmp_path):
    db = str(tmp_path / "runs.db")
    log = str(tmp_path / "log")
    specs = [ExperimentSpec(function=proc_tasks.record_and_maybe_die,
                            config={"x": i, "log": log}) for i in range(8)]
    plan = run_multiple(specs, db=db, dry_run=True, backend="process")
    assert [r.status for r in plan] == ["skipped"] * 8 and not os.path.exists(db)
    first = run_multiple(specs, db=db, limit=2, resume=True)
    second = run_multiple(specs, db=db, limit=5, resume=True)
    rest = run_multiple(specs, db=db, resume=True)
    assert [r.status for r in first] == ["completed"] * 2
    assert [r.status for r in second] == ["skipped"] * 2 + ["completed"] * 3
    assert [r.status for r in rest] == ["skipped"] * 5 + ["completed"] * 3
    with open(log) as f:
        assert [int(line.split()[0]) for line in f] == list(range(8))


@pytest.mark.parametrize("backend", ["thread", "process"])
def test_resume_after_the_orchestrator_is_killed_runs_exactly_the_rest(tmp_path, run_py, backend):
    db = str(tmp_path / "runs.db")
    log = str(tmp_path / "log")
    marker = str(tmp_path / "died")
    code = f"""
        import sys
        sys.path.insert(0, {str(HELPERS)!r})
        import proc_tasks
        from xetrack_c import ExperimentSpec, run_multiple
        specs = [ExperimentSpec(function=proc_tasks.record_and_maybe_die, name=f"s{{i}}",
                                config={{"x": i, "log": {log!r}, "db": {db!r},
                                         "die_once": {marker!r} if i == 5 else None,
                                         "parent": {backend == "process"!r}}})
                 for i in range(10)]
        results = run_multiple(specs, db={db!r}, resume=True, backend={backend!r})
        print(" ".join(r.status for r in results))
    """
    killed = run_py(code, check=False, timeout=120)
    assert killed.returncode == -9, killed.stderr
    done = [row["name"] for row in read_rows(db, "experiments")]
    assert done == [f"s{i}" for i in range(5)]
    with open(log) as f:
        first_lines = f.read().splitlines()
    assert [line.split()[0] for line in first_lines] == [str(i) for i in range(6)]
    if backend == "process":
        for pid in {int(line.split()[1]) for line in first_lines}:
            assert wait_gone(pid), f"worker process {pid} outlived its killed parent"

    again = run_py(code, timeout=120)
    assert again.stdout.split() == ["skipped"] * 5 + ["completed"] * 5
    with open(log) as f:
        lines = f.read().splitlines()[len(first_lines):]
    assert [line.split()[0] for line in lines] == [str(i) for i in range(5, 10)]
    rows = read_rows(db, "experiments")
    assert sorted(row["name"] for row in rows) == sorted(f"s{i}" for i in range(10))


def test_worker_processes_start_without_site_but_with_our_sys_path(run_py):
    proc = run_py(f"""
        import sys
        sys.path.insert(0, {str(HELPERS)!r})
        import proc_tasks
        from xetrack_c import ExperimentSpec, run_multiple
        def where(config):
            import sys
            return sys.path, sys.flags.no_site
        [result] = run_multiple([ExperimentSpec(function=where)], backend="process")
        path, no_site = result.result
        assert path == sys.path, (path, sys.path)
        assert no_site == 1
        print("ok")
    """, env=child_env())
    assert proc.stdout.strip() == "ok"


@pytest.mark.no_sanitizer  # a deliberate segfault: AddressSanitizer reports and aborts
def test_crashes_inside_a_stream_of_small_tasks_fail_alone(tmp_path):
    """Small tasks are sent to a worker process several at a time, the next ones before
    the current reply is back; a crash fails the task it hit, and the tasks sent behind it
    run on the next worker process, as their first attempt."""
    crash = [57, 130, 131]
    specs = [ExperimentSpec(function=proc_tasks.crash_some, config={"x": i, "crash": crash})
             for i in range(300)]
    db = str(tmp_path / "stream.db")
    results = run_multiple(specs, parallel=2, backend="process", db=db)
    rows = read_rows(db, "experiments")
    assert len(rows) == 300 and {row["attempts"] for row in rows} == {1}
    failed = [i for i, r in enumerate(results) if r.status != "completed"]
    assert failed == crash, [(i, results[i].error_message) for i in failed]
    assert results[57].error_message.startswith("worker died: signal SIGSEGV")
    assert results[130].error_message.startswith("worker died: exit code 3")
    assert [r.result[1] for i, r in enumerate(results) if i not in crash] == \
        [i for i in range(300) if i not in crash]
    pids = {r.result[0] for r in results if r.status == "completed"}
    assert len(pids) >= 3  # the crashed workers were replaced
    for pid in pids:
        assert wait_gone(pid)


def test_a_batch_timeout_in_a_stream_of_small_tasks_reports_every_task():
    specs = [ExperimentSpec(function=proc_tasks.crash_some,
                            config={"x": i, "crash": [], "sleep": 0.01}) for i in range(400)]
    results = run_multiple(specs, parallel=2, backend="process", batch_timeout=1.0)
    statuses = [r.status for r in results]
    assert set(statuses) <= {"completed", "timeout", "cancelled"}
    assert statuses.count("timeout") <= 2 and "cancelled" in statuses
    done = [i for i, s in enumerate(statuses) if s == "completed"]
    assert all(results[i].result[1] == i for i in done)


def test_the_child_api_works_when_a_task_is_the_first_to_import_it():
    def task(config):
        import xetrack_c  # a fresh worker process has not imported it before this line

        return xetrack_c.get_param("x"), xetrack_c.get_experiment_id(), xetrack_c.get_seed()

    results = run_multiple([ExperimentSpec(function=task, config={"x": i}) for i in range(3)],
                           backend="process")
    assert [r.result for r in results] == [(i, r.experiment_id, r.seed)
                                           for i, r in enumerate(results)]
