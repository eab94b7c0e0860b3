"""The run_multiple examples run end to end and leave the rows they promise.

``examples/kfold/orchestrate.py`` (script tasks reading ``_fold_idx`` with get_param) and
``examples/parallel_benchmark.py`` (function tasks, trials x conditions) run in child
interpreters; the experiments and metrics tables are read back with sqlite3.
"""

from __future__ import annotations

import subprocess
import sys

import pytest
from conftest import ROOT, child_env, read_rows

import xetrack_c

pytestmark = [pytest.mark.slow, pytest.mark.skipif(
    not hasattr(xetrack_c, "run_multiple"),
    reason="xetrack_c.run_multiple is missing: these examples need the executor",
)]


def _run_example(relative: str, *args: str, cwd) -> subprocess.CompletedProcess:
    try:
        proc = subprocess.run(
            [sys.executable, str(ROOT / "examples" / relative), *args],
            cwd=str(cwd), env=child_env(), capture_output=True, text=True, timeout=300,
        )
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"{relative} did not finish within 300s\n{exc.stdout}\n{exc.stderr}")
    if proc.returncode != 0:
        pytest.fail(f"{relative} exited with {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
    return proc


def test_kfold_orchestration(tmp_path):
    db = str(tmp_path / "kfold.db")
    proc = _run_example("kfold/orchestrate.py", db, "--folds", "3", "--parallel", "2",
                        cwd=tmp_path)
    assert "mean validation MSE over 3 folds" in proc.stdout

    experiments = read_rows(db, "experiments")
    assert len(experiments) == 3
    assert sorted(r["_fold_idx"] for r in experiments) == [0, 1, 2]
    assert {r["status"] for r in experiments} == {"completed"}
    assert {r["kind"] for r in experiments} == {"script"}
    assert sorted(r["name"] for r in experiments) == ["fold-0", "fold-1", "fold-2"]
    assert all(r["tags"] == "kfold,linear" for r in experiments)
    assert all(r["model_lr"] == 0.05 and r["n_folds"] == 3 for r in experiments)
    assert all(r["duration"] is not None and r["duration"] >= 0 for r in experiments)
    assert len({r["experiment_id"] for r in experiments}) == 3

    fold_of = {r["experiment_id"]: r["_fold_idx"] for r in experiments}
    metrics = read_rows(db, "metrics")
    assert {r["experiment_id"] for r in metrics} == set(fold_of)
    for experiment_id, fold in fold_of.items():
        rows = [r for r in metrics if r["experiment_id"] == experiment_id]
        assert sorted(r["step"] for r in rows if r["step"] is not None) == list(range(20))
        (final,) = [r for r in rows if r["val_mse"] is not None]
        assert final["fold"] == fold and final["val_mse"] < 1.0
    # Nothing was written next to the orchestrator: every fold logged into the batch's db.
    assert not (tmp_path / "xetrack_metrics.db").exists()


def test_parallel_benchmark(tmp_path):
    db = str(tmp_path / "bench.db")
    proc = _run_example("parallel_benchmark.py", db, "--trials", "2", "--parallel", "3",
                        cwd=tmp_path)
    assert "heapsort" in proc.stdout

    experiments = read_rows(db, "experiments")
    assert len(experiments) == 3 * 2 * 2  # algorithms x sizes x trials
    assert {r["status"] for r in experiments} == {"completed"}
    assert {r["kind"] for r in experiments} == {"function"}
    conditions = {(r["algorithm"], r["size"], r["trial"]) for r in experiments}
    assert len(conditions) == 12
    seeds = [r["seed"] for r in experiments]
    assert all(isinstance(seed, int) for seed in seeds)

    metrics = read_rows(db, "metrics")
    assert len(metrics) == 12
    assert {r["experiment_id"] for r in metrics} == {r["experiment_id"] for r in experiments}
    by_id = {r["experiment_id"]: r for r in experiments}
    for row in metrics:
        spec = by_id[row["experiment_id"]]
        assert (row["algorithm"], row["size"]) == (spec["algorithm"], spec["size"])
        assert row["seconds"] >= 0 and 0 <= row["first"] < 1
