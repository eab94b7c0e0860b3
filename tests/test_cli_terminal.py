"""``xt`` at a terminal, run as real processes on a pseudo-terminal: tables fitted to its
width, and ``xt delete`` asking before a large deletion."""

from __future__ import annotations

import sqlite3

import pytest
from conftest import count_rows

ELLIPSIS = "\u2026"
LONG_NOTE = "a note long enough to be cut: " + "x" * 60


@pytest.fixture
def wide_db(tmp_path) -> str:
    """One row of 16 columns: track_id, timestamp, metric_0..metric_12 and a long note."""
    from xetrack_c import Tracker

    path = str(tmp_path / "wide.db")
    tracker = Tracker(path, track_id="wide-run")
    tracker.log({**{f"metric_{i}": i * 1.5 for i in range(13)}, "note": LONG_NOTE})
    tracker.close()
    return path


def _header(out: str) -> list:
    return [cell.strip() for cell in out.splitlines()[0].strip("|").split("|")]


def test_a_wide_table_fits_the_terminal(xt, wide_db):
    result = xt.in_terminal("head", wide_db, columns=80)
    assert result.code == 0, result
    lines = result.out.splitlines()
    assert all(len(line) <= 80 for line in lines), result.out
    assert _header(result.out) == ["track_id", "timestamp", "metric_0", "metric_1"]
    assert lines[-1] == (f"{ELLIPSIS} 12 more columns: metric_2, metric_3, metric_4, "
                         f"metric_5, {ELLIPSIS} (use --columns)")


def test_long_cells_end_in_an_ellipsis_and_wider_terminals_show_more(xt, wide_db):
    result = xt.in_terminal("tail", wide_db, "--columns", "note,metric_12", columns=120)
    assert result.code == 0, result
    row = [cell.strip() for cell in result.out.splitlines()[2].strip("|").split("|")]
    assert row == [LONG_NOTE[:39] + ELLIPSIS, "18"]
    assert len(result.out.splitlines()) == 3  # every column shown: no note
    narrow = xt.in_terminal("tail", wide_db, "--columns", "note,metric_12", columns=30)
    lines = narrow.out.splitlines()
    assert lines[2] == "| " + LONG_NOTE[:25] + ELLIPSIS + " |"
    assert lines[3] == f"{ELLIPSIS} 1 more column: metric_12 (use --columns)"
    assert all(len(line) <= 30 for line in lines[:3])


def test_a_text_column_that_does_not_fit_is_cut_to_the_room_left(xt, wide_db):
    result = xt.in_terminal("head", wide_db, "--columns", "track_id,note,metric_0", columns=40)
    assert result.code == 0, result
    lines = result.out.splitlines()
    assert lines[2] == "| wide-run   | " + LONG_NOTE[:22] + ELLIPSIS + " |"
    assert all(len(line) == 40 for line in lines[:3])
    assert lines[3] == f"{ELLIPSIS} 1 more column: metric_0 (use --columns)"
    # With less than 8 characters of room the column is left out instead.
    lines = xt.in_terminal("head", wide_db, "--columns", "track_id,note", columns=24).out
    assert lines.splitlines()[3] == f"{ELLIPSIS} 1 more column: note (use --columns)"


def test_json_and_pipes_are_never_cut(xt, wide_db):
    records = xt.in_terminal("head", wide_db, "--json", columns=40).json()
    assert records[0]["note"] == LONG_NOTE and len(records[0]) == 16
    piped = xt.ok("head", wide_db)  # stdout is a pipe here
    assert len(_header(piped.out)) == 16 and LONG_NOTE in piped.out
    assert ELLIPSIS not in piped.out


def _add_big_run(db: str, rows: int) -> None:
    with sqlite3.connect(db) as conn:
        conn.executemany('INSERT INTO "default" (track_id, timestamp, n) VALUES (?, ?, ?)',
                         [("big", f"2099-01-01 {i:06}", i) for i in range(rows)])
    conn.close()


@pytest.mark.parametrize("answer", ["n", "", "whatever"])
def test_delete_at_a_terminal_asks_and_keeps_the_rows_unless_told_yes(xt, db, answer):
    _add_big_run(db, 1500)
    result = xt.in_terminal("delete", db, "big", answer=answer)
    assert result.code == 1, result
    assert result.err.startswith(
        "Delete 1,500 rows of track_id 'big' from table 'default' (more than 1,000 rows)? "
        "[y/N] "), result
    assert result.err.strip().endswith("xt: error: not confirmed; nothing deleted")
    assert count_rows(db) == 7 + 1500


@pytest.mark.parametrize("answer", ["y", "YES"])
def test_delete_at_a_terminal_deletes_when_confirmed(xt, db, answer):
    result = xt.in_terminal("delete", db, "run-c", "--table", "other", answer=answer)
    assert result.code == 0, result
    assert "(every row of the table)? [y/N]" in result.err
    assert result.out.strip() == "Deleted 1 rows of track_id 'run-c' from table 'other'"
    assert count_rows(db, "other") == 0 and count_rows(db) == 7


def test_delete_at_a_terminal_asks_nothing_for_a_small_run_or_with_yes(xt, db):
    result = xt.in_terminal("delete", db, "run-a")
    assert result.code == 0 and result.err == "", result
    assert count_rows(db) == 3
    _add_big_run(db, 1001)
    result = xt.in_terminal("delete", db, "big", "--yes")
    assert result.code == 0 and result.err == "", result
    assert result.out.strip() == "Deleted 1001 rows of track_id 'big' from table 'default'"
    assert count_rows(db) == 3
