"""``xt runs`` on an experiments table and ``xt plot`` (PNG and terminal), as real processes."""

from __future__ import annotations

from pathlib import Path

import pytest
from cli_support import parse_markdown

pytestmark = pytest.mark.slow  # left out of the jobs that re-run the suite (.ci/run)

TRACEBACK = ('Traceback (most recent call last):\n  File "task.py", line 3, in run\n'
             '    raise ValueError("boom")\nValueError: boom')


@pytest.fixture
def experiments(tmp_path: Path) -> str:
    """An experiments table as run_multiple writes it; e5 failed once and then completed."""
    from xetrack_c import Tracker

    path = str(tmp_path / "runs.db")
    tracker = Tracker(path, table="experiments", track_id="batch-1")
    rows = [("e1", "a", "completed", 1.0, None), ("e2", "b", "completed", 3.0, None),
            ("e3", "c", "failed", 0.5, TRACEBACK), ("e4", "d", "timeout", 10.0,
                                                     "timed out after 10 s"),
            ("e5", "e", "failed", 0.25, "RuntimeError: flaky"), ("e6", "f", "skipped", None, None),
            ("e5", "e", "completed", 2.0, None)]
    for seed, (experiment_id, name, status, duration, error) in enumerate(rows):
        tracker.log({"experiment_id": experiment_id, "name": name, "status": status,
                     "duration": duration, "seed": seed, "error": error, "tags": "[]",
                     "kind": "function", "target": "task", "fingerprint": "f" * 8,
                     "lr": 0.1 * (seed + 1)})
    tracker.close()
    return path


def test_runs_summary(xt, experiments):
    result = xt.ok("runs", experiments)
    first = result.out.splitlines()[0]
    assert first.startswith(f"Experiments in {experiments} table 'experiments': 6 ")
    tables = result.out.split("\n\n")
    statuses = {row["status"]: row for row in parse_markdown(tables[1])}
    assert {s: row["count"] for s, row in statuses.items()} == {
        "completed": "3", "failed": "1", "timeout": "1", "skipped": "1"}
    assert statuses["completed"]["total_s"] == "6" and statuses["completed"]["max_s"] == "3"
    assert statuses["skipped"]["total_s"] == ""
    assert "Failures (2):" in result.out
    failures = parse_markdown(tables[-1])
    assert [(f["experiment_id"], f["status"], f["error"]) for f in failures] == [
        ("e3", "failed", "ValueError: boom"), ("e4", "timeout", "timed out after 10 s")]


def test_runs_full_prints_whole_errors(xt, experiments):
    out = xt.ok("runs", experiments, "--full").out
    assert TRACEBACK in out


def test_runs_json(xt, experiments):
    data = xt.ok("runs", experiments, "--json").json()
    assert data["experiments"] == 6 and data["table"] == "experiments"
    counts = {s["status"]: s["count"] for s in data["statuses"]}
    assert counts == {"completed": 3, "failed": 1, "timeout": 1, "skipped": 1}
    assert data["durations"]["total_s"] == pytest.approx(16.5)
    assert [f["experiment_id"] for f in data["failures"]] == ["e3", "e4"]
    assert data["failures"][0]["error"] == TRACEBACK
    assert data["failures"][0]["lr"] == pytest.approx(0.3)


def test_runs_needs_no_pandas(xt, experiments):
    assert "PANDAS_IMPORTED=False" in xt.probe("runs", experiments).err


def test_runs_errors(xt, db):
    assert "no table 'experiments'" in xt.fails("runs", db).err
    # a tracking table (with track_id) gets its runs listed instead: tests/test_cli_summary.py


def test_hist_in_the_terminal(xt, db):
    out = xt.ok("plot", "hist", db, "n", "--terminal", "--bins", "7").out
    lines = out.splitlines()
    assert lines[0] == "n histogram"
    bars = [line for line in lines if " | " in line]
    assert len(bars) == 7
    assert sum(int(line.rsplit(" ", 1)[1]) for line in bars) == 7
    assert "observations: 7" in out and "max: 6" in out
    plain = xt.ok("plot", "hist", db, "acc", "--terminal", "--no-summary", "--title", "T").out
    assert plain.splitlines()[0] == "T" and "observations" not in plain


def test_hist_png(xt, db, tmp_path):
    result = xt.ok("plot", "hist", db, "acc", "--output", "acc.png")
    assert "Wrote acc.png" in result.out
    assert (tmp_path / "acc.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    xt.ok("plot", "hist", db, "n")
    assert (tmp_path / "n_hist.png").read_bytes()[:4] == b"\x89PNG"


def test_scatter_png_and_terminal(xt, db, tmp_path):
    xt.ok("plot", "scatter", db, "n", "acc", "-o", "s.png")
    assert (tmp_path / "s.png").read_bytes()[:4] == b"\x89PNG"
    out = xt.ok("plot", "scatter", db, "n", "acc", "--terminal", "--size", "7", "--pch", "*").out
    grid = [line for line in out.splitlines() if line.rstrip().endswith("|")]
    assert len(grid) == 7
    assert sum(line.count("*") for line in grid) == 7  # n and acc rise together: no overlap
    assert "x: n, y: acc, 7 points" in out


def test_terminal_plot_when_matplotlib_is_missing(xt, db, tmp_path):
    shadow = tmp_path / "shadow" / "matplotlib"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("raise ImportError('matplotlib is not installed')\n")
    env = {"PYTHONPATH": f"{tmp_path / 'shadow'}:{Path(__file__).resolve().parent.parent}"}
    out = xt.ok("plot", "hist", db, "n", env=env).out
    assert out.startswith("n histogram") and not list(tmp_path.glob("*.png"))
    out = xt.ok("plot", "scatter", db, "n", "acc", env=env).out
    assert "7 points" in out


def test_plot_errors(xt, db):
    assert "non-numeric" in xt.fails("plot", "hist", db, "name", "--terminal").err
    assert "no column 'nope'" in xt.fails("plot", "scatter", db, "n", "nope").err
    assert "--bins" in xt.usage_fails("plot", "hist", db, "n", "--bins", "0", "--terminal").err
