"""run_multiple(executor=...) on the standard library's executors: the driver writes every row.

The Dask tests (tests/test_dask.py) run the same path on a real LocalCluster; these need
nothing beyond the standard library and run in every CI job.
"""

from __future__ import annotations

import os
import sqlite3
import textwrap
import threading
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path

import pytest
from conftest import ROOT, count_rows, read_rows

from xetrack_c import ExperimentSpec, Tracker, get_param, log_metrics, run_multiple


# ------------------------------------------------------------------ tasks
def square(config, seed):
    log_metrics({"value": config["i"] ** 2}, step=config["i"])
    return config["i"] ** 2 + seed % 10


def rows_seen_by_task(db):
    """A task that logs, then reads the file itself: its own row must not be there."""
    def task(config):
        log_metrics({"value": config["i"]})
        with Tracker(db, table="mine", params={"source": "task"}) as tracker:
            tracker.log({"x": config["i"]})
        if not os.path.exists(db):
            return 0
        conn = sqlite3.connect(db)
        try:
            seen = 0
            # The driver may be writing other tasks' rows meanwhile: a table can exist
            # before its columns do, so look for the column, not the table.
            for table, column in (("metrics", "value"), ("mine", "x")):
                columns = {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}
                if column in columns:
                    seen += conn.execute(f"SELECT count(*) FROM {table} WHERE {column} = ?",
                                         (config["i"],)).fetchone()[0]
            return seen
        finally:
            conn.close()
    return task


def fails(config):
    log_metrics({"before_failure": 1})
    raise ValueError(f"bad value {config['i']}")


def flaky(marker_dir):
    """Fails with OSError on its first attempt for each i, then succeeds."""
    def task(config):
        marker = Path(marker_dir) / f"tried-{config['i']}"
        log_metrics({"attempt_of": config["i"]})
        if not marker.exists():
            marker.write_text("1")
            raise OSError("transient")
        return config["i"]
    return task


_RELEASE = threading.Event()


def hangs(config):
    _RELEASE.wait(30)
    return "late"


def write_script(tmp_path: Path, body: str, name: str = "child.py") -> str:
    path = tmp_path / name
    path.write_text(textwrap.dedent(body))
    return str(path)


@pytest.fixture
def child_path(monkeypatch):
    """Let script children import this worktree's xetrack_c."""
    parts = [str(ROOT)] + ([os.environ["PYTHONPATH"]] if os.environ.get("PYTHONPATH") else [])
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(parts))


class CountingExecutor(ThreadPoolExecutor):
    """A ThreadPoolExecutor that counts what it was given."""

    def __init__(self, workers: int = 2) -> None:
        super().__init__(workers)
        self.submitted = 0

    def submit(self, fn, /, *args, **kwargs):
        self.submitted += 1
        return super().submit(fn, *args, **kwargs)


# ------------------------------------------------------------------ tests
def test_functions_and_scripts_rows_written_once_by_driver(tmp_path, db_path, child_path):
    script = write_script(tmp_path, """
        import xetrack_c
        xetrack_c.log_metrics({"value": xetrack_c.get_param("i"), "from_script": 1})
    """)
    specs = [ExperimentSpec(function=rows_seen_by_task(db_path), config={"i": i}, name=f"f{i}")
             for i in range(6)]
    specs.append(ExperimentSpec(script_path=script, config={"i": 100}, name="script"))
    with ThreadPoolExecutor(3) as pool:
        results = run_multiple(specs, executor=pool, db=db_path)
    assert [r.status for r in results] == ["completed"] * 7, [r.error_message for r in results]
    assert [r.name for r in results] == [s.name for s in specs]
    assert [r.result for r in results[:6]] == [0] * 6  # no task saw its own row in the file
    metrics = read_rows(db_path, "metrics")
    assert sorted(row["value"] for row in metrics) == [0, 1, 2, 3, 4, 5, 100]
    by_value = {row["value"]: row for row in metrics}
    ids = {r.name: r.experiment_id for r in results}
    assert by_value[100]["experiment_id"] == ids["script"] and by_value[100]["from_script"] == 1
    assert all(by_value[i]["experiment_id"] == ids[f"f{i}"] for i in range(6))
    mine = read_rows(db_path, "mine")
    assert sorted(row["x"] for row in mine) == list(range(6))
    assert {row["source"] for row in mine} == {"task"}
    experiments = read_rows(db_path, "experiments")
    assert sorted(row["name"] for row in experiments) == sorted(s.name for s in specs)
    assert {row["status"] for row in experiments} == {"completed"}


def test_same_results_and_seeds_as_local_pool(tmp_path):
    specs = [ExperimentSpec(function=square, config={"i": i}, name=f"n{i % 3}")
             for i in range(30)]
    local_db, remote_db = str(tmp_path / "local.db"), str(tmp_path / "remote.db")
    local = run_multiple(specs, 2, db=local_db)
    with ThreadPoolExecutor(2) as pool:
        remote = run_multiple(specs, executor=pool, db=remote_db)
    assert [(r.name, r.status, r.seed, r.result) for r in local] == \
        [(r.name, r.status, r.seed, r.result) for r in remote]

    def metric_rows(db):
        ids = {row["experiment_id"]: row["name"] for row in read_rows(db, "experiments")}
        return sorted((ids[row["experiment_id"]], row["step"], row["value"])
                      for row in read_rows(db, "metrics"))

    assert metric_rows(local_db) == metric_rows(remote_db)


def test_process_pool_ships_closures_with_cloudpickle(db_path):
    offset = 7

    def closure(config, rng):
        log_metrics({"drawn": float(rng.random())})
        return config["i"] + offset

    specs = [ExperimentSpec(function=closure, config={"i": i}) for i in range(4)]
    specs.append(ExperimentSpec(function=lambda config: get_param("i") * 2, config={"i": 21}))
    with ProcessPoolExecutor(2) as pool:
        results = run_multiple(specs, executor=pool, db=db_path)
    assert [r.result for r in results] == [7, 8, 9, 10, 42]
    assert count_rows(db_path, "metrics") == 4


def test_unpicklable_config_fails_that_task_only(db_path):
    specs = [ExperimentSpec(function=square, config={"i": 1, "lock": threading.Lock()}),
             ExperimentSpec(function=square, config={"i": 2})]
    with ThreadPoolExecutor(1) as pool:
        bad, good = run_multiple(specs, executor=pool, db=db_path)
    assert bad.status == "failed" and "cannot be pickled" in bad.error_message
    assert good.status == "completed"


def test_failure_is_recorded_with_its_rows(db_path):
    specs = [ExperimentSpec(function=fails, config={"i": 1}, name="bad"),
             ExperimentSpec(function=square, config={"i": 2}, name="good")]
    with ThreadPoolExecutor(2) as pool:
        bad, good = run_multiple(specs, executor=pool, db=db_path)
    assert bad.status == "failed" and good.status == "completed"
    assert bad.error_message.startswith("ValueError: bad value 1")
    assert "remote_task.py" not in bad.error_message  # the wrapper's frames are cut
    rows = read_rows(db_path, "metrics")
    assert [row["experiment_id"] for row in rows if row.get("before_failure") == 1] == \
        [bad.experiment_id]
    status = {row["name"]: row["status"] for row in read_rows(db_path, "experiments")}
    assert status == {"bad": "failed", "good": "completed"}


def test_retries_keep_only_the_last_attempts_rows(tmp_path, db_path):
    task = flaky(str(tmp_path))
    specs = [ExperimentSpec(function=task, config={"i": i}) for i in range(3)]
    with ThreadPoolExecutor(2) as pool:
        results = run_multiple(specs, executor=pool, db=db_path, retries=2, retry_on=(OSError,))
    assert [r.status for r in results] == ["completed"] * 3
    rows = read_rows(db_path, "metrics")
    assert sorted(row["attempt_of"] for row in rows) == [0, 1, 2]  # the failed attempts' rows dropped
    assert count_rows(db_path, "experiments") == 3


def test_retry_on_other_exception_does_not_retry(tmp_path):
    task = flaky(str(tmp_path))
    with ThreadPoolExecutor(1) as pool:
        (result,) = run_multiple([ExperimentSpec(function=task, config={"i": 0})],
                                 executor=pool, retries=3, retry_on=(KeyError,))
    assert result.status == "failed" and "OSError: transient" in result.error_message


def test_fail_fast_cancels_the_rest(db_path):
    specs = [ExperimentSpec(function=fails, config={"i": 0})]
    specs += [ExperimentSpec(function=square, config={"i": i}) for i in range(1, 5)]
    with ThreadPoolExecutor(1) as pool:
        results = run_multiple(specs, 1, executor=pool, db=db_path, fail_fast=True)
    assert results[0].status == "failed"
    assert [r.status for r in results[1:]] == ["cancelled"] * 4
    # every spec has its final record, the ones never submitted too
    rows = {row["experiment_id"]: row["status"] for row in read_rows(db_path, "experiments")}
    assert rows == {r.experiment_id: r.status for r in results}


def test_max_consecutive_failures(db_path):
    specs = [ExperimentSpec(function=fails, config={"i": i}) for i in range(5)]
    with ThreadPoolExecutor(1) as pool:
        results = run_multiple(specs, 1, executor=pool, max_consecutive_failures=2)
    assert [r.status for r in results] == ["failed", "failed", "cancelled", "cancelled",
                                           "cancelled"]


def test_timeouts_function_on_driver_script_on_worker(tmp_path, db_path, child_path):
    release = _RELEASE
    release.clear()
    script = write_script(tmp_path, """
        import time
        print("started", flush=True)
        time.sleep(60)
    """)
    specs = [ExperimentSpec(function=hangs, timeout=0.3, name="hangs"),
             ExperimentSpec(script_path=script, timeout=0.5, name="sleeper")]
    try:
        with ThreadPoolExecutor(2) as pool:
            results = run_multiple(specs, executor=pool, db=db_path)
            release.set()
    finally:
        release.set()
    assert [r.status for r in results] == ["timeout", "timeout"]
    assert "counted from its submission" in results[0].error_message
    assert "SIGTERM" in results[1].error_message
    status = {row["name"]: row["status"] for row in read_rows(db_path, "experiments")}
    assert status == {"hangs": "timeout", "sleeper": "timeout"}


def test_resume_skips_completed(db_path):
    specs = [ExperimentSpec(function=square, config={"i": i}) for i in range(4)]
    with ThreadPoolExecutor(2) as pool:
        run_multiple(specs[:2], executor=pool, db=db_path)
        pool2 = CountingExecutor()
        with pool2:
            results = run_multiple(specs, executor=pool2, db=db_path, resume=True)
    assert [r.status for r in results] == ["skipped", "skipped", "completed", "completed"]
    assert pool2.submitted == 2
    assert count_rows(db_path, "metrics") == 4


def test_cache_hits_skip_submission(tmp_path, db_path):
    cache = str(tmp_path / "cache")
    specs = [ExperimentSpec(function=square, config={"i": i}, seed=i) for i in range(5)]
    with CountingExecutor() as first:
        cold = run_multiple(specs[:3], executor=first, db=db_path, cache=cache)
    assert first.submitted == 3
    with CountingExecutor() as second:
        warm = run_multiple(specs, executor=second, db=db_path, cache=cache)
    assert second.submitted == 2
    assert [r.result for r in warm[:3]] == [r.result for r in cold]
    assert [r.status for r in warm] == ["completed"] * 5
    assert [r.duration for r in warm[:3]] == [0.0] * 3
    assert count_rows(db_path, "metrics") == 5  # hits run nothing, log nothing
    assert os.path.isfile(os.path.join(cache, "cache.db"))


def test_metrics_without_db_come_back_in_the_result_and_no_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with ThreadPoolExecutor(1) as pool:
        (result,) = run_multiple([ExperimentSpec(function=square, config={"i": 3})],
                                 executor=pool)
    assert result.status == "completed"
    assert result.metrics == [{"experiment_id": result.experiment_id, "step": 3, "value": 9}]
    assert os.listdir(tmp_path) == []


def test_progress_callback_and_parallel_window(db_path):
    seen = []
    specs = [ExperimentSpec(function=square, config={"i": i}) for i in range(6)]
    with CountingExecutor(3) as pool:
        results = run_multiple(specs, 2, executor=pool,
                               on_progress=lambda done, total, r: seen.append((done, total)))
    assert [r.status for r in results] == ["completed"] * 6
    assert seen == [(i, 6) for i in range(1, 7)]


class _BrokenFuture(Future):
    pass


class LosingExecutor:
    """An executor whose every task is lost (as if its worker died)."""

    def __init__(self) -> None:
        self.submitted = 0

    def submit(self, fn, *args):
        self.submitted += 1
        future = _BrokenFuture()
        future.set_exception(ConnectionError("worker vanished"))
        return future


def test_lost_task_fails_with_the_executors_error_and_is_retried():
    executor = LosingExecutor()
    (result,) = run_multiple([ExperimentSpec(function=square, config={"i": 1})],
                             executor=executor, retries=1)
    assert result.status == "failed"
    assert "ConnectionError: worker vanished" in result.error_message
    assert "attempt 2 of 2" in result.error_message
    assert executor.submitted == 2


class JobLike:
    """A future with only done(), result() and cancel(), as submitit's Job."""

    def __init__(self, future: Future) -> None:
        self._future = future

    def done(self) -> bool:
        return self._future.done()

    def result(self):
        return self._future.result()

    def cancel(self) -> bool:
        return self._future.cancel()


class JobExecutor:
    def __init__(self) -> None:
        self.pool = ThreadPoolExecutor(2)

    def submit(self, fn, *args):
        return JobLike(self.pool.submit(fn, *args))


def test_futures_without_callbacks_are_watched(db_path):
    executor = JobExecutor()
    try:
        results = run_multiple([ExperimentSpec(function=square, config={"i": i}, seed=0)
                                for i in range(3)], executor=executor, db=db_path)
    finally:
        executor.pool.shutdown()
    assert [r.result for r in results] == [0, 1, 4]
    assert count_rows(db_path, "metrics") == 3


def test_bad_options():
    spec = ExperimentSpec(function=square, config={"i": 1})
    lock = threading.Lock()
    with pytest.raises(ValueError, match="index 1: its function cannot be pickled"):
        run_multiple([spec, ExperimentSpec(function=lambda config: lock)],
                     executor=ThreadPoolExecutor(1))
    with pytest.raises(TypeError, match="submit"):
        run_multiple([spec], executor=object())
    with pytest.raises(ValueError, match="retries"):
        run_multiple([spec], executor=ThreadPoolExecutor(1), retries=-1)
    with pytest.raises(TypeError, match="retry_on"):
        run_multiple([spec], executor=ThreadPoolExecutor(1), retries=1, retry_on=("OSError",))
    with pytest.raises(NotImplementedError, match="cache"):
        run_multiple([spec], cache="somewhere")
    with pytest.raises(ValueError, match="index 0"):
        run_multiple([ExperimentSpec()], executor=ThreadPoolExecutor(1))


def test_nothing_written_without_db(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with ThreadPoolExecutor(1) as pool:
        run_multiple([ExperimentSpec(function=lambda config: 1)], executor=pool)
    assert os.listdir(tmp_path) == []


def test_executor_path_imports_no_dask(run_py):
    proc = run_py("""
        import sys
        from concurrent.futures import ThreadPoolExecutor
        import xetrack_c
        with ThreadPoolExecutor(1) as pool:
            (r,) = xetrack_c.run_multiple([xetrack_c.ExperimentSpec(function=len, config={})],
                                          executor=pool)
        print(r.status, r.result, "dask" in sys.modules, "distributed" in sys.modules)
    """)
    assert proc.stdout.split() == ["completed", "0", "False", "False"]
