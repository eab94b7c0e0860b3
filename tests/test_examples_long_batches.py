"""The long-batch guides' examples run end to end: examples/long_batch.py (groups, warm
worker caches, retries, staged rollout and resume on worker processes) and
examples/llm_benchmark.py (trials x conditions, retries on rate limits, a start-rate cap,
the consecutive-failure abort)."""

from __future__ import annotations

import subprocess
import sys

import pytest
from conftest import ROOT, child_env, read_rows

pytestmark = pytest.mark.slow  # left out of the jobs that re-run the suite (.ci/run)


def _run(example: str, *args: str, cwd) -> str:
    try:
        proc = subprocess.run([sys.executable, str(ROOT / "examples" / example), *args],
                              cwd=str(cwd), env=child_env(), capture_output=True, text=True,
                              timeout=300)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"{example} did not finish within 300s\n{exc.stdout}\n{exc.stderr}")
    if proc.returncode != 0:
        pytest.fail(f"{example} exited with {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
    return proc.stdout


def test_long_batch_staged_rollout_then_resume(tmp_path):
    db = str(tmp_path / "runs.db")
    first = _run("long_batch.py", db, "--limit", "6", cwd=tmp_path)
    assert "statuses: {'completed': 6}" in first
    rest = _run("long_batch.py", db, cwd=tmp_path)
    assert "statuses: {'completed': 18, 'skipped': 6}" in rest
    # Groups keep a model on one worker: two workers load at most two models each.
    assert "at most 2 model loads on one worker" in rest
    done = _run("long_batch.py", db, cwd=tmp_path)
    assert "statuses: {'skipped': 24}" in done
    rows = read_rows(db, "experiments")
    assert sorted(row["name"] for row in rows) == sorted(
        f"{model}-{item}" for model in ("small", "medium", "large") for item in range(8))
    assert {row["status"] for row in rows} == {"completed"}
    metrics = read_rows(db, "metrics")
    assert len(metrics) == 24 and {m["experiment_id"] for m in metrics} == \
        {row["experiment_id"] for row in rows}


def test_llm_benchmark_retries_rate_limits_and_stops_on_a_bad_key(tmp_path):
    db = str(tmp_path / "llm.db")
    out = _run("llm_benchmark.py", db, cwd=tmp_path)
    assert "statuses: {'completed': 24}" in out
    assert out.count("accuracy") == 6
    assert len(read_rows(db, "metrics")) == 24
    bad = _run("llm_benchmark.py", str(tmp_path / "bad.db"), "--bad-key", cwd=tmp_path)
    assert "AuthenticationError: 401" in bad
    rows = read_rows(str(tmp_path / "bad.db"), "experiments")
    failed = [row for row in rows if row["status"] == "failed"]
    assert 5 <= len(failed) < 24
    assert len(rows) == 24 and {row["status"] for row in rows} == {"failed", "cancelled"}
