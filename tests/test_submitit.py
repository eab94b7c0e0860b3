"""run_multiple(executor=...) on submitit's LocalExecutor: the library users run on Slurm,
with its local backend (one process per job, results pickled into the job folder).

submitit's ``submit`` returns ``Job`` objects, not ``concurrent.futures`` futures: the
driver watches them with ``done()``. Task functions are shipped by value (cloudpickle), so
the jobs need not import this test module.
"""

from __future__ import annotations

import contextlib
import os
import sys
import textwrap
import time
from pathlib import Path

import pytest
from conftest import ROOT, read_rows

submitit = pytest.importorskip("submitit", reason="submitit is not installed (pip install "
                               "submitit)")
cloudpickle = pytest.importorskip("cloudpickle", reason="cloudpickle is not installed")

from xetrack_c import ExperimentSpec, log_metrics, run_multiple  # noqa: E402

pytestmark = pytest.mark.slow  # one Python process per job

cloudpickle.register_pickle_by_value(sys.modules[__name__])


class CountingExecutor(submitit.LocalExecutor):
    """A LocalExecutor that keeps its jobs and counts its ``batch()`` contexts."""

    def __init__(self, folder: Path) -> None:
        super().__init__(folder=folder)
        self.jobs: list = []
        self.batches = 0

    @property
    def submitted(self) -> int:
        return len(self.jobs)

    def submit(self, fn, *args, **kwargs):
        job = super().submit(fn, *args, **kwargs)
        self.jobs.append(job)
        return job

    def wait_for_jobs(self, seconds: float) -> bool:
        """True once every job's process has ended (a cancelled one included)."""
        deadline = time.monotonic() + seconds
        while not all(job.done() for job in self.jobs):
            if time.monotonic() > deadline:
                return False
            time.sleep(0.1)
        return True

    @contextlib.contextmanager
    def batch(self, allow_implicit_submissions: bool = False):
        self.batches += 1
        with super().batch(allow_implicit_submissions):
            yield


@pytest.fixture
def executor(tmp_path, monkeypatch):
    """A LocalExecutor whose jobs import this worktree's xetrack_c."""
    parts = [str(ROOT)] + ([os.environ["PYTHONPATH"]] if os.environ.get("PYTHONPATH") else [])
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(parts))
    local = CountingExecutor(tmp_path / "jobs")
    local.update_parameters(timeout_min=5)
    yield local
    local.wait_for_jobs(30)  # a cancelled job's controller reports its SIGINT here


# ------------------------------------------------------------------ tasks
def square(config, seed):
    log_metrics({"value": config["i"] ** 2, "pid": os.getpid()}, step=config["i"])
    return {"square": config["i"] ** 2, "seed": seed}


def fails(config):
    log_metrics({"before_failure": config["i"]})
    raise ValueError(f"bad value {config['i']}")


def sleeps(config):
    time.sleep(config["seconds"])
    return "late"


# ------------------------------------------------------------------ tests
def test_functions_and_a_script_on_local_executor(executor, tmp_path, db_path):
    script = tmp_path / "child.py"
    script.write_text(textwrap.dedent("""
        import xetrack_c
        xetrack_c.log_metrics({"value": xetrack_c.get_param("i"), "from_script": 1})
    """))
    specs = [ExperimentSpec(function=square, config={"i": i}, name=f"sq{i}") for i in range(3)]
    specs.append(ExperimentSpec(function=fails, config={"i": 7}, name="fails"))
    specs.append(ExperimentSpec(script_path=str(script), config={"i": 100}, name="script"))

    results = run_multiple(specs, executor=executor, db=db_path)

    assert [r.status for r in results] == ["completed"] * 3 + ["failed", "completed"], \
        [r.error_message for r in results]
    assert [r.name for r in results] == [s.name for s in specs]
    assert [r.result for r in results[:3]] == [{"square": i * i, "seed": results[i].seed}
                                                for i in range(3)]
    assert "ValueError: bad value 7" in results[3].error_message
    # Submitted together: one batch() (one job array on Slurm), five jobs.
    assert (executor.submitted, executor.batches) == (5, 1)
    # The rows logged inside the jobs, written by the driver under each experiment's id.
    ids = {r.name: r.experiment_id for r in results}
    metrics = read_rows(db_path, "metrics")
    by_id = {row["experiment_id"]: row for row in metrics}
    assert sorted(by_id) == sorted(ids.values())
    assert [by_id[ids[f"sq{i}"]]["value"] for i in range(3)] == [0, 1, 4]
    assert len({by_id[ids[f"sq{i}"]]["pid"] for i in range(3)} | {os.getpid()}) == 4
    assert by_id[ids["fails"]]["before_failure"] == 7
    assert (by_id[ids["script"]]["value"], by_id[ids["script"]]["from_script"]) == (100, 1)
    experiments = {row["name"]: row for row in read_rows(db_path, "experiments")}
    assert {name: row["status"] for name, row in experiments.items()} == \
        {"sq0": "completed", "sq1": "completed", "sq2": "completed", "fails": "failed",
         "script": "completed"}
    assert all(experiments[r.name]["experiment_id"] == r.experiment_id for r in results)
    assert "bad value 7" in experiments["fails"]["error"]
    # submitit keeps each job's logs in its folder.
    assert any(name.endswith("_log.err") for name in os.listdir(tmp_path / "jobs"))


def test_timeout_cancels_the_job_and_the_window_refills(executor, db_path):
    specs = [ExperimentSpec(function=sleeps, config={"seconds": 60}, name="hangs", timeout=3),
             ExperimentSpec(function=square, config={"i": 2}, name="sq2"),
             ExperimentSpec(function=square, config={"i": 3}, name="sq3")]
    start = time.monotonic()
    results = run_multiple(specs, 2, executor=executor, db=db_path)
    assert time.monotonic() - start < 50
    assert [r.status for r in results] == ["timeout", "completed", "completed"], \
        [r.error_message for r in results]
    assert "timed out after 3s" in results[0].error_message
    # two at once (one batch), then one as a slot freed
    assert (executor.submitted, executor.batches) == (3, 1)
    assert executor.wait_for_jobs(15), "the timed-out job was not cancelled"
    assert sorted(row["value"] for row in read_rows(db_path, "metrics")) == [4, 9]
    statuses = {row["name"]: row["status"] for row in read_rows(db_path, "experiments")}
    assert statuses == {"hangs": "timeout", "sq2": "completed", "sq3": "completed"}


class BrokenWatchJob:
    """A job whose done() raises (as a failing cluster query would) and whose result()
    says why."""

    def done(self) -> bool:
        raise RuntimeError("sacct: cannot reach slurmdbd")

    def result(self):
        raise RuntimeError("the job's state is unknown")

    def cancel(self) -> None:
        pass


class BrokenWatchExecutor:
    def submit(self, fn, *args):
        return BrokenWatchJob()


def test_a_failing_done_fails_that_task_not_the_batch():
    (result,) = run_multiple([ExperimentSpec(function=square, config={"i": 1})],
                             executor=BrokenWatchExecutor())
    assert result.status == "failed"
    assert "the job's state is unknown" in result.error_message
