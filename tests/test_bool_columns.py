"""Bools read back as bools: a column whose first value is a bool is declared BOOLEAN
(numeric affinity: the file holds 0/1, as xetrack's INTEGER columns do), and the readers
give it back as bools while it holds only 0/1, with or without gaps (NULLs).  A BOOLEAN
column that also receives other numbers reads back as those numbers, unchanged."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from conftest import read_rows, table_info

from xetrack_c import Reader, Tracker
from xetrack_c._dataframe import set_backend


@pytest.fixture(autouse=True)
def pandas_backend():
    set_backend("pandas")
    yield
    set_backend("auto")


def _log(db_path, rows):
    with Tracker(db_path, track_id="r") as tracker:
        for row in rows:
            tracker.log(row)


def test_bool_column_is_declared_boolean_and_sqlite3_reads_0_and_1(db_path):
    _log(db_path, [{"ok": True, "n": np.bool_(False)}, {"ok": False, "n": True}])
    decl = table_info(db_path)
    assert (decl["ok"], decl["n"]) == ("BOOLEAN", "BOOLEAN")
    assert [(r["ok"], r["n"]) for r in read_rows(db_path)] == [(1, 0), (0, 1)]
    assert Reader(db_path).dtypes["ok"] is bool


def test_without_gaps_pandas_reads_bool(db_path):
    _log(db_path, [{"ok": True}, {"ok": False}, {"ok": True}])
    df = Reader(db_path).to_df()
    assert df["ok"].dtype == np.dtype(bool)
    assert df["ok"].tolist() == [True, False, True]
    arrays = Reader(db_path).to_arrays()
    assert arrays["ok"].dtype == np.dtype(bool) and arrays["ok"].tolist() == [True, False, True]


def test_with_gaps_pandas_reads_nullable_boolean(db_path):
    _log(db_path, [{"ok": True, "x": 1}, {"x": 2}, {"ok": False, "x": 3}])
    df = Reader(db_path).to_df()
    assert df["ok"].dtype == pd.BooleanDtype()
    assert df["ok"].tolist() == [True, pd.NA, False]
    assert df["x"].dtype == np.dtype("int64")  # the neighbours keep their types
    # without pandas: an object array of True/False/None
    assert Reader(db_path).to_arrays()["ok"].tolist() == [True, None, False]
    # the same from the Tracker's own read, and for one run or the tail
    with Tracker(db_path, track_id="r") as tracker:
        assert tracker.to_df()["ok"].dtype == pd.BooleanDtype()
    tail = Reader(db_path).to_df(tail=2)
    assert tail["ok"].dtype == pd.BooleanDtype() and tail["ok"].tolist() == [pd.NA, False]
    assert Reader(db_path).to_df(track_id="r")["ok"].dtype == pd.BooleanDtype()


def test_in_memory_tracker_reads_bools():
    tracker = Tracker(Tracker.IN_MEMORY)
    tracker.log({"ok": True})
    tracker.log({"other": 1})
    assert tracker.to_df()["ok"].tolist() == [True, pd.NA]


def test_polars_reads_boolean_with_and_without_gaps(db_path):
    pl = pytest.importorskip("polars")
    set_backend("polars")

    _log(db_path, [{"ok": True, "full": False}, {"full": True}, {"ok": False, "full": True}])
    df = Reader(db_path).to_df()
    assert df.schema["ok"] == pl.Boolean and df.schema["full"] == pl.Boolean
    assert df["ok"].to_list() == [True, None, False]
    assert df["full"].to_list() == [False, True, True]


@pytest.mark.parametrize("gaps", [False, True], ids=["no-gaps", "gaps"])
def test_other_numbers_in_a_boolean_column_read_back_as_numbers(db_path, gaps):
    rows = [{"ok": True}, {"ok": 5}, {"ok": False}]
    if gaps:
        rows.insert(1, {"other": "x"})
    _log(db_path, rows)
    assert table_info(db_path)["ok"] == "BOOLEAN"
    stored = [r["ok"] for r in read_rows(db_path)]
    assert stored == ([1, None, 5, 0] if gaps else [1, 5, 0])
    values = Reader(db_path).to_df()["ok"].tolist()
    if gaps:
        assert values[0] == 1.0 and math.isnan(values[1]) and values[2:] == [5.0, 0.0]
    else:
        assert values == [1, 5, 0] and Reader(db_path).to_df()["ok"].dtype == np.dtype("int64")


def test_a_float_in_a_boolean_column_is_kept(db_path):
    _log(db_path, [{"ok": False}, {"ok": 0.25}, {"ok": True}])
    assert [r["ok"] for r in read_rows(db_path)] == [0, 0.25, 1]
    df = Reader(db_path).to_df()
    assert df["ok"].dtype == np.dtype("float64") and df["ok"].tolist() == [0.0, 0.25, 1.0]


def test_text_in_a_boolean_column_is_kept(db_path):
    _log(db_path, [{"ok": True}, {"ok": "maybe"}])
    assert [r["ok"] for r in read_rows(db_path)] == [1, "maybe"]
    assert Reader(db_path).to_df()["ok"].tolist() == [1, "maybe"]


def test_integer_column_from_xetrack_keeps_reading_as_numbers(db_path):
    # xetrack declares a bool's column INTEGER; such files read as before
    import sqlite3

    with sqlite3.connect(db_path) as conn:
        conn.execute('CREATE TABLE "default" (track_id TEXT, timestamp TEXT, ok INTEGER)')
        conn.executemany('INSERT INTO "default" VALUES (?, ?, ?)',
                         [("r", "2024-01-01 00:00:01", 1), ("r", "2024-01-01 00:00:02", 0)])
    df = Reader(db_path).to_df()
    assert df["ok"].dtype == np.dtype("int64") and df["ok"].tolist() == [1, 0]
