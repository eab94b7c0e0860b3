"""Notebook previews (``_repr_html_``) of a Reader and a Tracker, checked on the HTML."""

from __future__ import annotations

import re
from pathlib import Path

from xetrack_c import Reader, Tracker

LONG = 0.02087269700041361


def write_rows(path: str) -> Tracker:
    tracker = Tracker(path, params={"model": "m" * 60})
    tracker.log({"loss": LONG, "step": 1, "note": "x"})
    tracker.log({"loss": None, "step": 2, "note": None})
    for step in range(3, 11):  # more rows than the preview shows
        tracker.log({"loss": step / 10, "step": step})
    return tracker


def footer_cells(page: str) -> list:
    footer = re.search(r"<tfoot>(.*)</tfoot>", page).group(1)
    return re.findall(r"<td[^>]*>(.*?)</td>", footer)


def body_rows(page: str) -> list:
    body = re.search(r"<tbody>(.*)</tbody>", page).group(1)
    return [re.findall(r"<td[^>]*>(.*?)</td>", row) for row in body.split("</tr>") if row]


def test_reader_preview(tmp_path: Path):
    path = str(tmp_path / "t.db")
    write_rows(path).close()
    page = Reader(path)._repr_html_()
    assert repr(LONG) not in page and ">0.0208727<" in page  # 6 significant digits
    assert "NULL" not in page
    names = re.findall(r"<th>(.*?)</th>", page)
    assert names == ["track_id", "timestamp", "model", "loss", "step", "note"]
    rows = body_rows(page)
    assert len(rows) == 5
    second = dict(zip(names, rows[1], strict=True))
    # Missing values read as the DataFrame prints them: NaN, for numbers and text alike.
    frame = Reader(path).to_df()
    assert str(frame["loss"][1]) == "nan" and str(frame["note"][1]) in ("nan", "None")
    assert second["loss"].endswith(">NaN</span>") and second["note"].endswith(">NaN</span>")
    assert second["model"] == "m" * 37 + "..."  # long text is cut
    # A wide table scrolls inside its own box.
    assert re.search(r'<div style="overflow-x:auto;max-width:100%"><table>', page)
    # The footer sums up every row, not only the five shown.
    cells = dict(zip(names, footer_cells(page), strict=True))
    assert cells["step"] == "min 1<br>mean 5.5<br>max 10"
    mean = (LONG + sum(step / 10 for step in range(3, 11))) / 9
    assert cells["loss"] == f"min {LONG:.4g}<br>mean {mean:.4g}<br>max 1"
    assert cells["note"] == "" and cells["model"] == ""


def test_tracker_preview_in_memory_run_only(tmp_path: Path):
    tracker = write_rows(Tracker.IN_MEMORY)
    page = tracker._repr_html_()
    assert ">0.0208727<" in page and "NULL" not in page
    assert "10 rows in this run" in page
    cells = footer_cells(page)
    assert "min 1<br>mean 5.5<br>max 10" in cells
    path = str(tmp_path / "two.db")
    first = Tracker(path)
    first.log({"step": 100})
    first.close()
    second = Tracker(path)
    second.log({"step": 1})
    second.log({"step": 3})
    assert "min 1<br>mean 2<br>max 3" in footer_cells(second._repr_html_())  # this run only
    second.close()
