"""Bad keys, values, table names and paths: a clear exception, never a crash, never a
damaged file, never a lost row."""

from __future__ import annotations

import hashlib
import os
import re
import sqlite3

import pytest
from conftest import count_rows, integrity_check, read_rows, table_info, table_names

import xetrack_c
from xetrack_c import Tracker


def xetrack_column(key) -> str:
    """xetrack's rule: str(key), characters outside [A-Za-z0-9_] -> '_', at most 64."""
    return re.sub(r"[^A-Za-z0-9_]", "_", str(key))[:64]


def digest(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


BAD_KEYS = [
    'a"b',
    "'; DROP TABLE \"default\"; --",
    'x") VALUES (1); DROP TABLE "default"; --',
    "select",
    "default",
    "order",
    "track",
    "1abc",
    "a b-c.d/e",
    1,
    2.5,
    "k" * 65,
    "w" * 300,
    "héllo",
    "日本語",
    "emoji🙂",
    "nul\x00key",
]


@pytest.mark.parametrize("key", BAD_KEYS, ids=repr)
def test_bad_key_becomes_a_safe_column(db_path, key):
    tracker = Tracker(db_path)
    tracker.log({"before": 1})
    row = tracker.log({key: 42})
    tracker.log({"after": 1})
    tracker.close()
    column = xetrack_column(key)
    assert row[column] == 42
    assert len(column) <= 64
    assert column in table_info(db_path)
    assert table_names(db_path) == ["default"]  # nothing dropped, nothing created
    rows = read_rows(db_path)
    assert len(rows) == 3
    assert rows[1][column] == 42
    assert integrity_check(db_path) == "ok"


def test_numeric_and_long_keys_columns(db_path):
    tracker = Tracker(db_path)
    row = tracker.log({1: "one", 2.5: "two and a half", "x" * 70: "long"})
    assert row["1"] == "one" and row["2_5"] == "two and a half" and row["x" * 64] == "long"
    tracker.close()
    decl = table_info(db_path)
    assert {"1", "2_5", "x" * 64} <= set(decl)
    stored = read_rows(db_path)[0]
    assert (stored["1"], stored["2_5"], stored["x" * 64]) == ("one", "two and a half", "long")


def test_unicode_keys_map_non_ascii_characters_to_underscore(db_path):
    tracker = Tracker(db_path)
    tracker.log({"précision": 0.5, "Größe": 3})
    tracker.close()
    stored = read_rows(db_path)[0]
    assert stored["pr_cision"] == 0.5 and stored["Gr__e"] == 3


def test_empty_key_raises_value_error_naming_it(db_path):
    tracker = Tracker(db_path)
    tracker.log({"ok": 1})
    with pytest.raises(ValueError, match="''"):
        tracker.log({"": 1})
    with pytest.raises(ValueError):
        tracker.log({"fine": 1, "": 2})
    tracker.close()
    assert [r["ok"] for r in read_rows(db_path)] == [1]


@pytest.mark.parametrize(
    "table,error",
    [('x"; DROP', ValueError), ("sqlite_master", ValueError), ("sqlite_sequence", ValueError),
     ("", ValueError), ("t" * 100, ValueError), ("a.b", ValueError), ("x y", ValueError),
     (5, TypeError), (None, TypeError), (b"bytes", TypeError)],
    ids=repr,
)
def test_bad_table_names_raise(db_path, table, error):
    with Tracker(db_path) as tracker:
        tracker.log({"x": 1})
    with pytest.raises(error):
        Tracker(db_path, table=table)
    assert table_names(db_path) == ["default"]
    assert count_rows(db_path) == 1


def test_duckdb_style_table_prefix_names_the_same_table(db_path):
    with Tracker(db_path, table="db.results") as tracker:
        tracker.log({"x": 1})
        assert tracker.table_name == "results"
    assert table_names(db_path) == ["results"]


@pytest.mark.parametrize("data", [[1, 2], "text", 5, None, [("a", 1)], {"a", "b"}], ids=repr)
def test_log_of_a_non_dict_raises_type_error(db_path, data):
    tracker = Tracker(db_path)
    with pytest.raises(TypeError, match="dict"):
        tracker.log(data)
    tracker.close()
    assert count_rows(db_path) == 0


@pytest.mark.parametrize("data", [[{"a": 1}, 5], [{"a": 1}, None], 5], ids=repr)
def test_log_batch_of_non_dicts_raises_type_error_and_stores_nothing(db_path, data):
    tracker = Tracker(db_path)
    with pytest.raises(TypeError):
        tracker.log_batch(data)
    tracker.close()
    assert count_rows(db_path) == 0


class Unpicklable:
    def __reduce__(self):
        raise RuntimeError("cannot pickle me")


def test_object_whose_pickling_raises_propagates_and_stores_nothing(db_path):
    tracker = Tracker(db_path)
    tracker.log({"i": 0})
    with pytest.raises(RuntimeError, match="cannot pickle me"):
        tracker.log({"i": 1, "bad": Unpicklable()})
    tracker.log({"i": 2})
    tracker.close()
    assert [r["i"] for r in read_rows(db_path)] == [0, 2]
    assert "bad" not in table_info(db_path)


class Unprintable:
    def __str__(self):
        raise RuntimeError("cannot print me")


def test_key_whose_str_raises_propagates_and_stores_nothing(db_path):
    tracker = Tracker(db_path)
    with pytest.raises(RuntimeError, match="cannot print me"):
        tracker.log({Unprintable(): 1})
    tracker.close()
    assert count_rows(db_path) == 0


def test_lone_surrogates_raise_and_store_nothing(db_path):
    tracker = Tracker(db_path)
    tracker.log({"i": 0})
    with pytest.raises(UnicodeEncodeError):
        tracker.log({"i": 1, "s": "\ud800"})
    with pytest.raises(UnicodeEncodeError):
        tracker.log_batch([{"i": 2}, {"s": "ok\udfffok"}])
    with pytest.raises(UnicodeEncodeError):
        Tracker(db_path, track_id="\ud800")
    tracker.log({"i": 3})
    tracker.close()
    assert [r["i"] for r in read_rows(db_path)] == [0, 3]
    assert integrity_check(db_path) == "ok"


def test_surrogate_inside_a_container_is_stored_escaped(db_path):
    tracker = Tracker(db_path)
    tracker.log({"l": ["\ud800"]})  # str(list) escapes it, so the text is valid
    tracker.close()
    assert read_rows(db_path)[0]["l"] == "['\\ud800']"


def test_awkward_values_round_trip(db_path):
    tracker = Tracker(db_path)
    big_text = "é" * 2_000_000
    tracker.log({"nul": "a\x00b", "inf": float("inf"), "ninf": float("-inf"), "empty": "",
                 "big": big_text, "blob": bytes(range(256)) * 100})
    tracker.close()
    stored = read_rows(db_path)[0]
    assert stored["nul"] == "a\x00b"
    assert stored["inf"] == float("inf") and stored["ninf"] == float("-inf")
    assert stored["empty"] == ""
    assert stored["big"] == big_text
    assert stored["blob"] == bytes(range(256)) * 100


def test_mutating_a_bytearray_after_log_does_not_change_the_row(db_path):
    value = bytearray(b"before")
    tracker = Tracker(db_path, durability="async")
    row = tracker.log({"b": value})
    value[:] = b"AFTER!"
    tracker.close()
    assert row["b"] == b"before"
    assert read_rows(db_path)[0]["b"] == b"before"


def test_released_memoryview_raises_and_stores_nothing(db_path):
    view = memoryview(b"abc")
    view.release()
    tracker = Tracker(db_path)
    tracker.log({"i": 1})
    with pytest.raises(ValueError, match="released memoryview"):
        tracker.log({"i": 2, "m": view})
    tracker.close()
    assert [r["i"] for r in read_rows(db_path)] == [1]
    assert "m" not in table_info(db_path)


# ------------------------------------------------------------------ values too long for SQLite
# SQLite refuses a string or blob longer than SQLITE_LIMIT_LENGTH (1,000,000,000 bytes by
# default).  The tests lower the connection's limit with the private hook
# _set_length_limit() instead of building gigabyte values.
LIMIT = 1000


def sqlite_default_length_limit() -> int:
    conn = sqlite3.connect(":memory:")
    try:
        return conn.getlimit(sqlite3.SQLITE_LIMIT_LENGTH)
    finally:
        conn.close()


def test_length_limit_is_read_from_the_connection(db_path):
    tracker = Tracker(db_path)
    assert tracker._set_length_limit(-1) == sqlite_default_length_limit()  # -1: only read it
    assert tracker._set_length_limit(LIMIT) == sqlite_default_length_limit()
    assert tracker._set_length_limit(-1) == LIMIT
    tracker.close()


TOO_LONG = {
    "str": "x" * (LIMIT + 1),
    "str-utf8": "é" * (LIMIT // 2 + 1),  # 501 characters, 1002 bytes in UTF-8
    "bytes": b"\x00" * (LIMIT + 1),
    "bytearray": bytearray(LIMIT + 1),
    "memoryview": memoryview(bytes(LIMIT + 1)),
    "object": [0] * (LIMIT // 3 + 1),  # stored as str(value): over 1000 bytes
}


@pytest.mark.parametrize("durability", ["commit", "async"])
@pytest.mark.parametrize("kind", list(TOO_LONG))
def test_value_longer_than_sqlite_can_hold_is_refused_not_stored_as_null(db_path, durability, kind):
    tracker = Tracker(db_path, durability=durability)
    tracker.log({"i": 1})
    tracker._set_length_limit(LIMIT)
    with pytest.raises(ValueError, match=r"'big' is \d+ bytes.* 1000 bytes.*SQLITE_LIMIT_LENGTH"):
        tracker.log({"i": 2, "big": TOO_LONG[kind]})
    tracker.log({"i": 3, "small": "x" * 500})
    tracker.close()
    rows = read_rows(db_path)
    assert [r["i"] for r in rows] == [1, 3]
    assert "big" not in table_info(db_path)
    assert rows[-1]["small"] == "x" * 500


@pytest.mark.parametrize("durability", ["commit", "async"])
def test_param_longer_than_sqlite_can_hold_is_refused(db_path, durability):
    tracker = Tracker(db_path, durability=durability, params={"p": "x" * (LIMIT + 1)})
    tracker._set_length_limit(LIMIT)
    with pytest.raises(ValueError, match="'p' is 1001 bytes"):
        tracker.log({"i": 1})
    tracker.set_param("p", "short")
    tracker.log({"i": 2})
    tracker.close()
    assert [(r["i"], r["p"]) for r in read_rows(db_path)] == [(2, "short")]


@pytest.mark.parametrize("durability", ["commit", "async"])
def test_row_whose_values_add_up_past_the_limit_is_refused(db_path, durability):
    tracker = Tracker(db_path, durability=durability)
    tracker.log({"i": 1})
    tracker._set_length_limit(LIMIT)
    with pytest.raises(ValueError, match=r"add up to \d+ bytes.* 1000 bytes"):
        tracker.log({"i": 2, "a": "x" * 600, "b": b"y" * 600})
    tracker.close()
    assert [r["i"] for r in read_rows(db_path)] == [1]


@pytest.mark.parametrize("durability", ["commit", "async"])
def test_log_batch_with_a_value_too_long_refuses_the_whole_batch(db_path, durability):
    tracker = Tracker(db_path, durability=durability)
    tracker.log({"i": 0})
    tracker._set_length_limit(LIMIT)
    with pytest.raises(ValueError, match="'big' is 1001 bytes"):
        tracker.log_batch([{"i": 1}, {"i": 2, "big": "x" * (LIMIT + 1)}, {"i": 3}])
    tracker.close()
    assert [r["i"] for r in read_rows(db_path)] == [0]


def test_set_value_longer_than_sqlite_can_hold_is_refused(db_path):
    tracker = Tracker(db_path)
    tracker.log({"note": "short"})
    tracker._set_length_limit(LIMIT)
    with pytest.raises(ValueError, match="1001 bytes.* 1000 bytes"):
        tracker.set_value("note", "x" * (LIMIT + 1))
    tracker.close()
    assert [r["note"] for r in read_rows(db_path)] == ["short"]


@pytest.mark.no_sanitizer  # a 1 GB value: more shadow memory than the sanitizer job should take
def test_value_over_one_gigabyte_is_refused_at_the_default_limit(db_path):
    # bytes(n) is calloc'd: its pages stay untouched (and cost no memory) unless copied.
    big = bytes(1_000_000_001)
    try:
        for durability in ("commit", "async"):
            with Tracker(db_path, durability=durability) as tracker:
                with pytest.raises(ValueError, match="'big' is 1000000001 bytes"):
                    tracker.log({"i": 1, "big": big})
                tracker.log({"i": 2})
    finally:
        del big
    assert [r["i"] for r in read_rows(db_path)] == [2, 2]
    assert "big" not in table_info(db_path)


# ------------------------------------------------------------------ broken files and paths
@pytest.mark.parametrize("content", ["random", "text", "bad-pages"])
def test_corrupt_file_raises_corrupt_database_error_naming_it(tmp_path, content):
    path = tmp_path / "broken.db"
    if content == "random":
        path.write_bytes(os.urandom(8192))
    elif content == "text":
        path.write_text("this is not a database\n" * 200)
    else:
        good = tmp_path / "good.db"
        with Tracker(str(good)) as tracker:
            tracker.log_batch([{"i": i, "s": "x" * 300} for i in range(300)])
        data = good.read_bytes()
        path.write_bytes(data[:100] + os.urandom(len(data) - 100))  # valid header, garbage pages
    before = digest(str(path))
    with pytest.raises(xetrack_c.CorruptDatabaseError) as info:
        Tracker(str(path))
    assert str(path) in str(info.value) or "broken.db" in str(info.value)
    assert isinstance(info.value, xetrack_c.Error)
    assert digest(str(path)) == before  # the file is left exactly as it was


def test_db_path_that_is_a_directory_raises_a_clear_error(tmp_path):
    folder = tmp_path / "folder.db"
    folder.mkdir()
    with pytest.raises(OSError) as info:
        Tracker(str(folder))
    assert "directory" in str(info.value) and "folder.db" in str(info.value)


def test_db_path_under_a_file_raises_a_clear_error(tmp_path):
    (tmp_path / "plain").write_text("x")
    with pytest.raises(OSError) as info:
        Tracker(str(tmp_path / "plain" / "track.db"))
    assert "plain" in str(info.value)


def test_too_many_columns_raises_and_keeps_earlier_rows(db_path):
    tracker = Tracker(db_path)
    tracker.log({"a": 1})
    with pytest.raises(ValueError, match="2000 columns"):
        tracker.log({f"k{i}": i for i in range(2100)})
    tracker.log({"a": 2})
    tracker.close()
    assert [r["a"] for r in read_rows(db_path)] == [1, 2]
    assert integrity_check(db_path) == "ok"


def test_rejected_wide_row_does_not_block_later_new_keys(db_path):
    tracker = Tracker(db_path)
    tracker.log({"a": 1})
    with pytest.raises(ValueError):
        tracker.log({f"k{i}": i for i in range(2100)})
    tracker.log({"fresh": 1})
    tracker.close()
    assert read_rows(db_path)[-1]["fresh"] == 1


def test_a_reader_holding_a_transaction_does_not_block_writes(db_path):
    with Tracker(db_path) as tracker:
        tracker.log({"i": 0})
        reader = sqlite3.connect(db_path)
        reader.execute("BEGIN")
        assert reader.execute('SELECT count(*) FROM "default"').fetchone()[0] == 1
        tracker.log({"i": 1})  # WAL: the open read transaction does not stop the writer
        assert reader.execute('SELECT count(*) FROM "default"').fetchone()[0] == 1
        reader.execute("COMMIT")
        assert reader.execute('SELECT count(*) FROM "default"').fetchone()[0] == 2
        reader.close()


def test_busy_writer_past_the_timeout_raises_storage_error(db_path):
    with Tracker(db_path) as tracker:
        tracker.log({"i": 0})
    blocker = sqlite3.connect(db_path, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    try:
        tracker = Tracker(db_path, busy_timeout=0.05)
    except xetrack_c.StorageError as exc:  # opening already needs the write lock
        assert "busy" in str(exc).lower() or "locked" in str(exc).lower()
    else:
        with pytest.raises(xetrack_c.StorageError, match="(?i)locked|busy"):
            tracker.log({"i": 1})
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    assert count_rows(db_path) == 1
