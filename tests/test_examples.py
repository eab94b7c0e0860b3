"""Every example under examples/ runs as a script and leaves the rows it promises."""

import os
import sqlite3
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow  # left out of the jobs that re-run the suite (.ci/run)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = {**os.environ, "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")}


def run_example(name, *args, cwd=None):
    return subprocess.run([sys.executable, os.path.join(ROOT, "examples", name), *map(str, args)],
                          capture_output=True, text=True, timeout=120, check=True, env=ENV,
                          cwd=cwd)


def test_two_table_benchmark(tmp_path):
    db = tmp_path / "bench.db"
    out = run_example("two_table_benchmark.py", db)
    with sqlite3.connect(db) as conn:
        predictions = conn.execute(
            'SELECT track_id, template, prediction, label FROM predictions').fetchall()
        metrics = conn.execute('SELECT track_id, template, accuracy, items FROM metrics '
                               'ORDER BY template').fetchall()
    assert len(predictions) == 12
    # one metrics row per run, sharing the run's track_id with its predictions
    assert [(m[1], m[3]) for m in metrics] == [("plain", 6), ("strict", 6)]
    for track_id, template, accuracy, _ in metrics:
        rows = [p for p in predictions if p[0] == track_id]
        assert len(rows) == 6 and {p[1] for p in rows} == {template}
        assert accuracy == sum(p[2] == p[3] for p in rows) / 6
    assert "12 predictions joined" in out.stdout


def _lines(path):
    return path.read_text(encoding="utf-8").splitlines() if path.exists() else []


def test_rerun_safe_benchmark_resumes_from_the_cache(tmp_path):
    db, cache, calls = tmp_path / "bench.db", tmp_path / "cache_dir", tmp_path / "calls.txt"
    script = os.path.join(ROOT, "examples", "rerun_safe_benchmark.py")
    killed = subprocess.run([sys.executable, script, db, cache, "--crash-after", "4",
                             "--calls", calls], capture_output=True, text=True, timeout=120,
                            env=ENV, cwd=tmp_path)
    assert killed.returncode == -9, killed.stderr  # SIGKILL before the 5th item
    assert len(_lines(calls)) == 4
    with sqlite3.connect(db) as conn:
        first = conn.execute("SELECT track_id, cache FROM predictions").fetchall()
    assert len(first) == 4 and {c for _, c in first} == {""}
    (first_run,) = {t for t, _ in first}

    out = run_example("rerun_safe_benchmark.py", db, cache, "--calls", calls, cwd=tmp_path)
    model_calls = _lines(calls)
    # the four items done before the kill were not computed again
    assert len(model_calls) == 8 and len(set(model_calls)) == 8
    with sqlite3.connect(db) as conn:
        second = conn.execute("SELECT track_id, cache, function_time, prediction FROM predictions "
                              "WHERE track_id != ? ORDER BY timestamp", (first_run,)).fetchall()
    assert len(second) == 8
    assert [c for _, c, _, _ in second] == [first_run] * 4 + [""] * 4
    assert all(t == 0.0 for _, _, t, _ in second[:4])
    assert "8 items, 4 computed, 4 from the cache" in out.stdout
    assert f"4 results reused from run {first_run}" in out.stdout
    with sqlite3.connect(cache / "cache.db") as conn:
        lineage = dict(conn.execute("SELECT track_id, count(*) FROM cache GROUP BY track_id"))
    assert lineage == {first_run: 4, second[0][0]: 4}

    # a third run computes nothing
    out = run_example("rerun_safe_benchmark.py", db, cache, "--calls", calls, cwd=tmp_path)
    assert len(_lines(calls)) == 8
    assert "8 items, 0 computed, 8 from the cache" in out.stdout


def test_analysis_walkthrough(tmp_path):
    db = tmp_path / "analysis.db"
    out = run_example("analysis_walkthrough.py", db, cwd=tmp_path).stdout
    with sqlite3.connect(db) as conn:
        n_predictions, n_runs = conn.execute(
            "SELECT count(*), count(DISTINCT track_id) FROM predictions").fetchone()
        metrics = conn.execute("SELECT track_id, model, template, accuracy FROM metrics").fetchall()
        per_run = dict(conn.execute(
            "SELECT track_id, avg(prediction = label) FROM predictions GROUP BY track_id"))
        live = conn.execute("SELECT count(*), count(DISTINCT step) FROM live").fetchone()
    assert (n_predictions, n_runs, len(metrics)) == (144, 12, 12)
    assert {(m, t) for _, m, t, _ in metrics} == {
        (m, t) for m in ("small", "large") for t in ("plain", "few-shot")}
    for track_id, _, _, accuracy in metrics:
        assert abs(per_run[track_id] - accuracy) < 1e-12
    assert live == (300, 300)
    assert "144 predictions, 12 runs" in out
    assert "144 predictions joined to 12 runs" in out
    assert "shape: (4, 4)" in out                      # the polars summary
    assert "columns: track_id, timestamp, model, template, trial, accuracy, latency_ms" in out
    assert "-> 300 rows" in out                        # the last snapshot saw every row


EXAMPLES = os.path.join(ROOT, "examples")
ENTRY_POINTS = sorted(os.path.relpath(os.path.join(folder, name), EXAMPLES)
                      for folder, _, names in os.walk(EXAMPLES)
                      for name in names if name.endswith(".py"))


def test_entry_points_cover_the_examples():
    assert {"quickstart.py", "llm_benchmark.py", "long_batch.py",
            os.path.join("kfold", "orchestrate.py")} <= set(ENTRY_POINTS)


@pytest.mark.parametrize("example", ENTRY_POINTS)
def test_every_example_runs_without_arguments(tmp_path, example):
    # as a new user first runs it: no argument, in an empty directory
    proc = subprocess.run([sys.executable, os.path.join(EXAMPLES, example)], cwd=tmp_path,
                          capture_output=True, text=True, timeout=300, env=ENV)
    assert proc.returncode == 0, f"{example} exited {proc.returncode}:\n{proc.stderr}"
    databases = sorted(tmp_path.glob("*.db"))
    assert databases, f"{example} wrote no database in its working directory"
    rows = 0
    for db in databases:
        with sqlite3.connect(db) as conn:
            tables = [name for (name,) in conn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table'")]
            rows += sum(conn.execute(f'SELECT count(*) FROM "{t}"').fetchone()[0] for t in tables)
    assert rows > 0, f"{example} wrote no rows into {databases}"
