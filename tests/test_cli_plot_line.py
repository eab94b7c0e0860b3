"""``xt plot line``: learning curves as a PNG and in the terminal, as real processes."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # each test starts xt processes

LOSS = {"small": 1.0, "medium": 1.5, "large": 2.0}


@pytest.fixture
def curves(tmp_path: Path) -> str:
    """Three runs (models) of five epochs each; loss falls as 1 / (epoch * factor)."""
    from xetrack_c import Tracker

    path = str(tmp_path / "curves.db")
    for model, factor in LOSS.items():
        tracker = Tracker(path, params={"model": model})
        for epoch in range(1, 6):
            tracker.log({"epoch": epoch, "loss": 1 / (epoch * factor), "note": "text"})
        tracker.log({"note": "a row without epoch or loss is skipped"})
        tracker.close()
    return path


def png_size(path: Path) -> tuple:
    """(width, height) from a PNG's IHDR chunk."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def test_png_one_line_per_run(xt, curves, tmp_path):
    result = xt.ok("plot", "line", curves, "--x", "epoch", "--y", "loss", "-o", "loss.png")
    assert result.out.strip() == "Wrote loss.png (3 series, 15 points)"
    image = tmp_path / "loss.png"
    assert png_size(image) == (800, 500)  # figsize 8 x 5 at 100 dpi, as hist and scatter
    assert 10_000 < image.stat().st_size < 500_000  # lines were drawn, not an empty canvas
    xt.ok("plot", "line", curves, "--x", "epoch", "--y", "loss", "--by", "model")
    assert png_size(tmp_path / "loss_by_epoch.png") == (800, 500)


def test_terminal_series_by_parameter(xt, curves):
    out = xt.ok("plot", "line", curves, "--x", "epoch", "--y", "loss", "--by", "model",
                "--terminal", "--width", "40", "--height", "10").out
    lines = out.splitlines()
    assert lines[0] == "loss by epoch"
    grid = [line for line in lines if line.rstrip().endswith("|")]
    assert len(grid) == 10 and all(len(line.split("|")[1]) == 40 for line in grid)
    assert "x: epoch, y: loss, 3 series by model:" in out
    assert "  * small: 5 points, last loss = 0.2" in lines
    assert "  + medium: 5 points, last loss = 0.133333" in lines
    assert "  o large: 5 points, last loss = 0.1" in lines
    # Epoch 1 of "small" is the highest point (top row, left end); the lowest is large's
    # epoch 5 (bottom row, right end).
    assert grid[0].split("|")[1].startswith("*")
    assert grid[-1].split("|")[1].endswith("o")
    assert sum(line.count("*") for line in grid) == 5


def test_terminal_by_run_lists_every_track_id(xt, curves):
    from xetrack_c import Reader

    ids = list(dict.fromkeys(Reader(curves).to_df()["track_id"]))
    out = xt.ok("plot", "line", curves, "--x", "epoch", "--y", "loss", "--terminal").out
    for track_id in ids:
        assert f" {track_id}: 5 points" in out


def test_terminal_when_matplotlib_is_missing(xt, curves, tmp_path):
    shadow = tmp_path / "shadow" / "matplotlib"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("raise ImportError('matplotlib is not installed')\n")
    env = {"PYTHONPATH": f"{tmp_path / 'shadow'}:{Path(__file__).resolve().parent.parent}"}
    out = xt.ok("plot", "line", curves, "--x", "epoch", "--y", "loss", "--by", "model",
                env=env).out
    assert out.startswith("loss by epoch") and "3 series by model" in out
    assert not list(tmp_path.glob("*.png"))


def test_errors_name_what_exists(xt, curves):
    result = xt.fails("plot", "line", curves, "--x", "epoch", "--y", "nope")
    assert "no column 'nope' in table 'default'" in result.err
    assert "columns: track_id, timestamp, model, epoch, loss, note" in result.err
    assert "no column 'run'" in xt.fails("plot", "line", curves, "--x", "epoch", "--y",
                                         "loss", "--by", "run").err
    assert "non-numeric" in xt.fails("plot", "line", curves, "--x", "epoch", "--y", "note",
                                     "--terminal").err
    assert "no table 'other'" in xt.fails("plot", "line", curves, "--x", "epoch", "--y",
                                          "loss", "--table", "other").err
    assert "--y" in xt.usage_fails("plot", "line", curves, "--x", "epoch").err
