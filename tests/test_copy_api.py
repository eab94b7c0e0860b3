"""copy(source, target, assets=True, tables=None): xetrack's Python merge of databases."""

from __future__ import annotations

import os
import sqlite3

import pytest
from conftest import read_rows, table_info

from xetrack_c import Tracker, copy


def test_copy_into_a_new_file_keeps_rows_and_types(tmp_path):
    source, target = str(tmp_path / "a.db"), str(tmp_path / "b.db")
    tracker = Tracker(source, params={"model": "m"})
    tracker.log({"i": 1, "f": 0.5, "ok": True, "s": "x", "blob": bytearray(b"\x00")})
    tracker.log({"i": 2, "f": 1.5, "ok": False, "s": "y", "blob": bytearray(b"\x01")})
    tracker.close()

    assert copy(source, target) == 2
    assert read_rows(target) == read_rows(source)
    assert table_info(target) == table_info(source)


def test_copying_twice_copies_nothing_new(tmp_path):
    source, target = str(tmp_path / "a.db"), str(tmp_path / "b.db")
    Tracker(source).log({"a": 1})
    assert copy(source=source, target=target) == 1
    assert copy(source=source, target=target) == 0
    assert len(read_rows(target)) == 1


def test_merge_adds_missing_columns_and_keeps_target_rows(tmp_path):
    source, target = str(tmp_path / "a.db"), str(tmp_path / "b.db")
    Tracker(source, track_id="s").log({"a": 1, "only_in_source": "x"})
    Tracker(target, track_id="t").log({"a": 2, "only_in_target": 3.5})
    assert copy(source, target) == 1
    rows = sorted(read_rows(target), key=lambda row: row["track_id"])
    assert [(r["track_id"], r["a"], r["only_in_source"], r["only_in_target"]) for r in rows] == [
        ("s", 1, "x", None), ("t", 2, None, 3.5)]


def test_tables_are_copied_each_and_counted_together(tmp_path):
    source, target = str(tmp_path / "a.db"), str(tmp_path / "b.db")
    Tracker(source, table="train").log_batch([{"loss": 0.5}, {"loss": 0.25}])
    Tracker(source, table="valid").log({"loss": 0.75})
    Tracker(source).log({"left": "behind"})
    assert copy(source, target, tables=["train", "db.valid"]) == 3
    assert [r["loss"] for r in read_rows(target, "train")] == [0.5, 0.25]
    assert [r["loss"] for r in read_rows(target, "valid")] == [0.75]
    names = {n for (n,) in sqlite3.connect(target).execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert "default" not in names


def test_asset_tables_come_along_unless_turned_off(tmp_path):
    source = str(tmp_path / "a.db")
    Tracker(source).log({"model": "hash-1"})
    with sqlite3.connect(source) as conn:  # xetrack's asset tables, as it lays them out
        for name in ("assets", "keys", "counts"):
            conn.execute(f'CREATE TABLE "{name}" (key TEXT PRIMARY KEY, value BLOB)')
        conn.execute("INSERT INTO assets VALUES ('hash-1', x'00ff')")
        conn.execute('INSERT INTO "keys" VALUES (\'model\', \'hash-1\')')
        conn.execute("INSERT INTO counts VALUES ('hash-1', 1)")
    with_assets, without = str(tmp_path / "b.db"), str(tmp_path / "c.db")
    assert copy(source, with_assets) == 1
    assert read_rows(with_assets, "assets") == [{"key": "hash-1", "value": b"\x00\xff"}]
    assert read_rows(with_assets, "keys") == [{"key": "model", "value": "hash-1"}]
    assert copy(source, without, assets=False) == 1
    names = {n for (n,) in sqlite3.connect(without).execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert names == {"default"}


def test_bad_input_is_named_and_leaves_no_file(tmp_path):
    source, target = str(tmp_path / "a.db"), str(tmp_path / "b.db")
    with pytest.raises(FileNotFoundError, match="no source database"):
        copy(str(tmp_path / "missing.db"), target)
    Tracker(source).log({"a": 1})
    with pytest.raises(ValueError, match="no table 'nope'"):
        copy(source, target, tables=["nope"])
    assert not os.path.exists(target)
    with pytest.raises(ValueError, match="same file"):
        copy(source, source)
    with pytest.raises(TypeError, match=r"tables=\['default'\]"):
        copy(source, target, tables="default")
    assert len(read_rows(source)) == 1
