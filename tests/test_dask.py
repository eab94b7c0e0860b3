"""run_multiple(executor=...) on a real dask.distributed LocalCluster (2 worker processes).

The cluster is started once for the module and closed after it. Task functions are
shipped by value (cloudpickle), so the workers need not import this test module.
"""

from __future__ import annotations

import os
import signal
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
from conftest import ROOT, count_rows, read_rows

pytest.importorskip("distributed", reason="dask.distributed is not installed (pip install "
                    "'xetrack_c[dask]')")
cloudpickle = pytest.importorskip("cloudpickle", reason="cloudpickle is not installed")

from xetrack_c import ExperimentSpec, Tracker, log_metrics, run_multiple  # noqa: E402

pytestmark = pytest.mark.slow  # left out of the jobs that re-run the suite (.ci/run)

cloudpickle.register_pickle_by_value(sys.modules[__name__])

#: Times the scheduler reruns a task whose worker died before it gives up.
ALLOWED_FAILURES = 1


@pytest.fixture(scope="module")
def client():
    import dask
    from distributed import Client, LocalCluster

    old_path = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join([str(ROOT)] + ([old_path] if old_path else []))
    try:
        with dask.config.set({"distributed.scheduler.allowed-failures": ALLOWED_FAILURES}):
            cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                   dashboard_address=None)
            dask_client = Client(cluster)
        try:
            yield dask_client
        finally:
            dask_client.close()
            cluster.close()
    finally:
        if old_path is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = old_path


# ------------------------------------------------------------------ tasks
def sweep_task(config, seed):
    log_metrics({"loss": config["lr"] * (seed % 97), "pid": os.getpid()}, step=config["step"])
    return {"score": round(config["lr"] * config["step"], 6), "seed_mod": seed % 1000}


def logs_then_checks(db):
    def task(config):
        log_metrics({"value": config["i"]})
        tracker = Tracker(db, table="mine", params={"run": "dask"})
        tracker.log({"x": config["i"]})
        import sqlite3

        if not os.path.exists(db):
            return os.getpid(), 0
        conn = sqlite3.connect(db)
        try:
            # The driver may be writing other tasks' rows meanwhile: a table can exist
            # before its columns do, so look for the column, not the table.
            columns = {row[1] for row in conn.execute("PRAGMA table_info(metrics)")}
            seen = conn.execute("SELECT count(*) FROM metrics WHERE value = ?",
                                (config["i"],)).fetchone()[0] if "value" in columns else 0
        finally:
            conn.close()
        return os.getpid(), seen
    return task


def fails(config):
    log_metrics({"doomed": 1})
    raise RuntimeError("no luck")


def dies(marker_dir, always):
    """Kills its own worker process: every time, or only on the first attempt."""
    def task(config):
        marker = Path(marker_dir) / f"died-{config['i']}"
        log_metrics({"attempt_of": config["i"]})
        if always or not marker.exists():
            marker.write_text("x")
            os._exit(3)
        return "survived"
    return task


def counted(marker_dir):
    def task(config, seed):
        (Path(marker_dir) / f"ran-{config['i']}-{os.getpid()}-{seed}").write_text("")
        log_metrics({"i": config["i"]})
        return config["i"] * 3
    return task


def _script(tmp_path: Path, body: str) -> str:
    path = tmp_path / "child.py"
    path.write_text(textwrap.dedent(body))
    return str(path)


# ------------------------------------------------------------------ tests
def test_functions_and_scripts_driver_writes_everything(client, tmp_path, db_path):
    script = _script(tmp_path, """
        import os, xetrack_c
        xetrack_c.log_metrics({"value": xetrack_c.get_param("i"), "script_pid": os.getpid()})
    """)
    specs = [ExperimentSpec(function=logs_then_checks(db_path), config={"i": i}, name=f"f{i}")
             for i in range(8)]
    specs.append(ExperimentSpec(script_path=script, config={"i": 50}, name="script"))
    results = run_multiple(specs, executor=client, db=db_path)
    assert [r.status for r in results] == ["completed"] * 9, [r.error_message for r in results]
    pids = {r.result[0] for r in results[:8]}
    assert os.getpid() not in pids  # the functions ran in the worker processes
    assert [r.result[1] for r in results[:8]] == [0] * 8  # rows were not in the file yet
    metrics = read_rows(db_path, "metrics")
    assert sorted(row["value"] for row in metrics) == list(range(8)) + [50]
    ids = {r.experiment_id for r in results}
    assert {row["experiment_id"] for row in metrics} == ids
    assert sorted(row["x"] for row in read_rows(db_path, "mine")) == list(range(8))
    assert count_rows(db_path, "experiments") == 9


def test_failing_task_and_its_rows(client, db_path):
    specs = [ExperimentSpec(function=fails, name="bad"),
             ExperimentSpec(function=sweep_task, config={"lr": 0.1, "step": 1}, name="ok")]
    bad, ok = run_multiple(specs, executor=client.get_executor(), db=db_path)
    assert bad.status == "failed" and bad.error_message.startswith("RuntimeError: no luck")
    assert ok.status == "completed"
    doomed = [row for row in read_rows(db_path, "metrics") if row.get("doomed") == 1]
    assert [row["experiment_id"] for row in doomed] == [bad.experiment_id]


def test_worker_killed_mid_task(client, tmp_path, db_path):
    # Dask reruns a task whose worker died (allowed-failures times): the rerun completes.
    specs = [ExperimentSpec(function=dies(str(tmp_path), always=False), config={"i": 0},
                            name="dies-once")]
    specs += [ExperimentSpec(function=sweep_task, config={"lr": 0.5, "step": s}, name=f"s{s}")
              for s in range(4)]
    once, *rest = run_multiple(specs, executor=client, db=db_path)
    assert once.status == "completed" and once.result == "survived", once.error_message
    assert [r.status for r in rest] == ["completed"] * 4
    client.wait_for_workers(2, timeout=60)
    # One that kills every worker it runs on: Dask gives up, the batch goes on.
    specs = [ExperimentSpec(function=dies(str(tmp_path), always=True), config={"i": 1},
                            name="dies-always"),
             ExperimentSpec(function=sweep_task, config={"lr": 0.5, "step": 9}, name="after")]
    always, after = run_multiple(specs, 1, executor=client, db=db_path)
    assert always.status == "failed"
    assert "KilledWorker" in always.error_message
    assert "worker may have died" in always.error_message
    assert after.status == "completed"
    attempts = [row["attempt_of"] for row in read_rows(db_path, "metrics")
                if row.get("attempt_of") is not None]
    assert attempts == [0]  # rows of the attempts that died were never shipped
    status = {row["name"]: row["status"] for row in read_rows(db_path, "experiments")}
    assert status["dies-always"] == "failed" and status["dies-once"] == "completed"
    client.wait_for_workers(2, timeout=60)


def test_metrics_arrive_exactly_once_with_retries(client, tmp_path, db_path):
    def flaky(config):
        marker = tmp_path / f"tried-{config['i']}"
        log_metrics({"i": config["i"]})
        if not marker.exists():
            marker.write_text("1")
            raise ConnectionError("flaky")
        return config["i"]

    specs = [ExperimentSpec(function=flaky, config={"i": i}) for i in range(6)]
    results = run_multiple(specs, executor=client, db=db_path, retries=1,
                           retry_on=(ConnectionError,))
    assert [r.result for r in results] == list(range(6))
    assert sorted(row["i"] for row in read_rows(db_path, "metrics")) == list(range(6))


def test_cache_hits_skip_submission(client, tmp_path, db_path):
    marks = tmp_path / "marks"
    marks.mkdir()
    cache = str(tmp_path / "cache")
    task = counted(str(marks))
    specs = [ExperimentSpec(function=task, config={"i": i}, seed=100 + i) for i in range(4)]
    first = run_multiple(specs[:2], executor=client, db=db_path, cache=cache)
    assert len(os.listdir(marks)) == 2
    second = run_multiple(specs, executor=client, db=db_path, cache=cache)
    assert len(os.listdir(marks)) == 4  # only the two misses ran
    assert [r.result for r in second] == [0, 3, 6, 9]
    assert [r.result for r in second[:2]] == [r.result for r in first]
    assert count_rows(db_path, "metrics") == 4


def test_timeout_on_the_driver(client, db_path):
    def slow(config):
        import time

        time.sleep(config["sleep"])
        return "done"

    specs = [ExperimentSpec(function=slow, config={"sleep": 2.0}, timeout=0.5, name="slow"),
             ExperimentSpec(function=slow, config={"sleep": 0.0}, timeout=30, name="quick")]
    slow_result, quick = run_multiple(specs, executor=client, db=db_path)
    assert slow_result.status == "timeout" and quick.status == "completed"


def test_same_sweep_locally_and_on_cluster(client, tmp_path):
    specs = [ExperimentSpec(function=sweep_task, config={"lr": lr, "step": step},
                            name=f"lr{lr}-s{step}", tags=["sweep"])
             for lr in (0.001, 0.01, 0.1, 0.3, 1.0) for step in range(40)]
    assert len(specs) == 200
    local_db, dask_db = str(tmp_path / "local.db"), str(tmp_path / "dask.db")
    local = run_multiple(specs, 2, db=local_db)
    remote = run_multiple(specs, executor=client, db=dask_db)
    assert [(r.name, r.status, r.seed, r.result) for r in local] == \
        [(r.name, r.status, r.seed, r.result) for r in remote]
    skip = {"experiment_id", "duration", "timestamp", "track_id"}

    def experiment_rows(db):
        return sorted(tuple(sorted((k, v) for k, v in row.items() if k not in skip))
                      for row in read_rows(db, "experiments"))

    assert experiment_rows(local_db) == experiment_rows(dask_db)

    def metric_rows(db):
        names = {row["experiment_id"]: row["name"] for row in read_rows(db, "experiments")}
        return sorted((names[row["experiment_id"]], row["step"], row["loss"])
                      for row in read_rows(db, "metrics"))

    assert metric_rows(local_db) == metric_rows(dask_db)
    local_pids = {row["pid"] for row in read_rows(local_db, "metrics")}
    dask_pids = {row["pid"] for row in read_rows(dask_db, "metrics")}
    assert local_pids == {os.getpid()} and os.getpid() not in dask_pids


# ------------------------------------------------------------------ gathering outcomes
def waits_for(flag):
    """Returns at once for config {"wait": False}; else once ``flag`` exists (30 s at most)."""
    def task(config):
        import time

        if config["wait"]:
            deadline = time.monotonic() + 30
            while not os.path.exists(flag) and time.monotonic() < deadline:
                time.sleep(0.02)
        else:
            Path(flag + ".fast").write_text("done")
        return config["i"] * 7
    return task


@pytest.fixture
def slow_gather(monkeypatch):
    """Finished outcomes wait 30 s to be gathered with the next ones (instead of 0.1 s)."""
    from xetrack_c.run import remote

    monkeypatch.setattr(remote, "GATHER_DELAY", 30.0)


def test_finished_outcomes_are_gathered_together(client, monkeypatch, slow_gather, db_path):
    from distributed import Client

    calls = []
    real = Client.gather

    def counting(self, futures, *args, **kwargs):
        calls.append(len(futures))
        return real(self, futures, *args, **kwargs)

    monkeypatch.setattr(Client, "gather", counting)
    specs = [ExperimentSpec(function=counted(os.path.dirname(db_path)), config={"i": i})
             for i in range(40)]
    start = time.monotonic()
    results = run_multiple(specs, executor=client, db=db_path)
    assert [r.status for r in results] == ["completed"] * 40
    assert [r.result for r in results] == [i * 3 for i in range(40)]
    assert count_rows(db_path, "metrics") == 40
    # One gather once nothing runs any more, not one per handful of finished tasks, and
    # no wait for the gather delay once the last task is done.
    assert calls == [40]
    assert time.monotonic() - start < 20


def test_a_finished_task_is_not_timed_out_while_its_outcome_waits(client, tmp_path, slow_gather):
    flag = str(tmp_path / "release")
    task = waits_for(flag)
    specs = [ExperimentSpec(function=task, config={"wait": False, "i": 1}, timeout=0.5),
             ExperimentSpec(function=task, config={"wait": True, "i": 2})]
    timer = threading.Timer(2.0, lambda: Path(flag).write_text("go"))
    timer.start()
    try:
        fast, slow = run_multiple(specs, executor=client)
    finally:
        timer.cancel()
    # The first finished at once; its outcome was gathered 2 s later, with the second's,
    # past its 0.5 s timeout, which no longer applied.
    assert (fast.status, fast.result) == ("completed", 7)
    assert (slow.status, slow.result) == ("completed", 14)


def test_ctrl_c_records_the_finished_outcomes_not_yet_gathered(client, tmp_path, slow_gather):
    flag = str(tmp_path / "release")
    task = waits_for(flag)
    specs = [ExperimentSpec(function=task, config={"wait": False, "i": 1}),
             ExperimentSpec(function=task, config={"wait": True, "i": 2})]

    def interrupt():
        deadline = time.monotonic() + 30
        while not os.path.exists(flag + ".fast") and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(0.5)  # its outcome has reached the driver, which holds it to gather later
        os.kill(os.getpid(), signal.SIGINT)

    thread = threading.Thread(target=interrupt)
    thread.start()
    try:
        with pytest.raises(KeyboardInterrupt) as stopped:
            run_multiple(specs, executor=client)
    finally:
        thread.join()
        Path(flag).write_text("go")  # let the second task end on its worker
    fast, slow = stopped.value.results
    assert (fast.status, fast.result) == ("completed", 7)
    assert slow.status == "cancelled" and "Ctrl-C" in slow.error_message
