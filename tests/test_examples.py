"""Every example under examples/ runs as a script and leaves the rows it promises."""

import os
import sqlite3
import subprocess
import sys

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
