"""``xt`` editing commands, run as real processes: delete, set, copy.  Every effect is read
back from the file with Python's own sqlite3."""

from __future__ import annotations

import os
import sqlite3

from conftest import count_rows, integrity_check, read_rows, table_info, table_names


def test_delete_removes_one_run(xt, db):
    result = xt.ok("delete", db, "run-a")
    assert "Deleted 4 rows" in result.out
    assert {row["track_id"] for row in read_rows(db)} == {"run-b"}
    assert count_rows(db, "other") == 1


def test_delete_of_a_run_that_is_not_there_fails_and_names_the_runs(xt, db):
    result = xt.fails("delete", db, "no-such-run")
    assert result.err.strip() == ("xt: error: no rows with track_id 'no-such-run' in table "
                                  "'default' (runs: 'run-a', 'run-b'); nothing deleted")
    assert result.out == "" and count_rows(db) == 7


def test_delete_names_the_first_runs_of_many(xt, db):
    with sqlite3.connect(db) as conn:
        conn.executemany('INSERT INTO "default" (track_id, timestamp) VALUES (?, ?)',
                         [(f"extra-{i:02}", f"t{i}") for i in range(10)])
    conn.close()
    err = xt.fails("delete", db, "extra-99").err
    assert ("(runs: 'extra-00', 'extra-01', 'extra-02', 'extra-03', 'extra-04', \u2026 "
            f"(12 in all; xt ls {db} track_id --unique)); nothing deleted") in err
    xt.ok("delete", db, "run-c", "--table", "other", "--yes")
    assert "in table 'other': it holds no runs; nothing deleted" in xt.fails(
        "delete", db, "run-c", "--table", "other").err


def test_deleting_every_row_of_a_table_needs_yes_without_a_terminal(xt, db):
    result = xt.fails("delete", db, "run-c", "--table", "other")
    assert result.err.strip() == (
        "xt: error: not deleting 1 row of track_id 'run-c' from table 'other' without "
        "confirmation (every row of the table): pass --yes to delete them")
    assert count_rows(db, "other") == 1
    assert "Deleted 1 rows" in xt.ok("delete", db, "run-c", "--table", "other", "--yes").out
    assert count_rows(db, "other") == 0 and count_rows(db) == 7


def _add_big_run(db: str, rows: int) -> None:
    with sqlite3.connect(db) as conn:
        conn.executemany('INSERT INTO "default" (track_id, timestamp, n) VALUES (?, ?, ?)',
                         [("big", f"2099-01-01 {i:06}", i) for i in range(rows)])
    conn.close()


def test_deleting_more_than_1000_rows_needs_yes_without_a_terminal(xt, db):
    _add_big_run(db, 1001)
    result = xt.fails("delete", db, "big")
    assert "not deleting 1,001 rows of track_id 'big'" in result.err
    assert "(more than 1,000 rows): pass --yes" in result.err
    assert count_rows(db) == 7 + 1001
    assert "Deleted 1001 rows" in xt.ok("delete", db, "big", "-y").out
    assert count_rows(db) == 7


def test_deleting_1000_rows_needs_no_confirmation(xt, db):
    _add_big_run(db, 1000)
    assert "Deleted 1000 rows" in xt.ok("delete", db, "big").out
    assert count_rows(db) == 7


def test_set_everywhere_adds_a_text_column(xt, db):
    result = xt.ok("set", db, "note", "checked")
    assert "in 7 rows" in result.out
    assert table_info(db)["note"] == "TEXT"
    assert {row["note"] for row in read_rows(db)} == {"checked"}


def test_set_one_run(xt, db):
    xt.ok("set", db, "model", "gamma", "--track-id", "run-b")
    models = [(row["track_id"], row["model"]) for row in read_rows(db)]
    assert models == [("run-a", "alpha")] * 4 + [("run-b", "gamma")] * 3


def test_set_where_matches_numbers_given_as_text(xt, db):
    result = xt.ok("set", db, "flag", "yes", "--where-key", "n", "--where-value", "5")
    assert "in 1 rows" in result.out
    assert [row["n"] for row in read_rows(db) if row["flag"] == "yes"] == [5]
    # --track-id narrows the where-clause further: run-a has no n == 5
    xt.ok("set", db, "flag", "no", "--where-key", "n", "--where-value", "5",
          "--track-id", "run-a")
    assert [row["flag"] for row in read_rows(db) if row["n"] == 5] == ["yes"]


def test_set_into_a_numeric_column_keeps_it_numeric(xt, db):
    xt.ok("set", db, "acc", "0.25", "--track-id", "run-a")
    assert {row["acc"] for row in read_rows(db) if row["track_id"] == "run-a"} == {0.25}


def test_set_sanitises_the_key(xt, db):
    xt.ok("set", db, "my key!", "1")
    assert "my_key_" in table_info(db)


def test_set_where_value_without_where_key(xt, db):
    assert "--where-key" in xt.fails("set", db, "a", "b", "--where-value", "1").err
    assert "a" not in table_info(db)


def _make_target(path: str) -> None:
    """A target sharing run-a's first two rows with the source, plus a row of its own and a
    column the source does not have."""
    conn = sqlite3.connect(path)
    conn.execute('CREATE TABLE "default" (track_id TEXT, timestamp TEXT, extra TEXT, '
                 "PRIMARY KEY (track_id, timestamp))")
    conn.commit()
    conn.close()


def test_copy_into_a_new_file(xt, db, tmp_path):
    target = str(tmp_path / "copy.db")
    result = xt.ok("copy", db, target)
    assert "copied 7 rows, skipped 0" in result.out
    assert "Successfully copied 7 events" in result.out
    assert read_rows(target) == read_rows(db)
    assert table_info(target) == table_info(db)
    assert table_names(target) == ["default"]
    assert integrity_check(target) == "ok"
    conn = sqlite3.connect(target)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    conn.close()


def test_copy_merges_skips_present_rows_and_adds_columns(xt, db, tmp_path):
    target = str(tmp_path / "target.db")
    _make_target(target)
    present = read_rows(db)[:2]
    conn = sqlite3.connect(target)
    for row in present:
        conn.execute('INSERT INTO "default" (track_id, timestamp, extra) VALUES (?, ?, ?)',
                     (row["track_id"], row["timestamp"], "mine"))
    conn.execute('INSERT INTO "default" VALUES (?, ?, ?)', ("run-z", "2000-01-01 00:00:00.0", "z"))
    conn.commit()
    conn.close()
    before = read_rows(db)

    result = xt.ok("copy", db, target, "--json").json()
    assert result["default"] == {"copied": 5, "skipped": 2, "columns_added": 4}
    rows = read_rows(target)
    assert len(rows) == 8
    info = table_info(target)
    assert info["n"] == "INTEGER" and info["acc"] == "REAL" and info["extra"] == "TEXT"
    kept = [row for row in rows if row["extra"] == "mine"]
    assert len(kept) == 2 and all(row["n"] is None for row in kept)  # not overwritten
    assert read_rows(db) == before  # the source is untouched

    again = xt.ok("copy", db, target)
    assert "copied 0 rows, skipped 7" in again.out
    assert count_rows(target) == 8


def test_copy_several_tables(xt, db, tmp_path):
    target = str(tmp_path / "target.db")
    result = xt.ok("copy", db, target, "--table", "default", "--table", "other")
    assert "Successfully copied 8 events" in result.out
    assert table_names(target) == ["default", "other"]
    assert read_rows(target, "other")[0]["score"] == 42


def test_copy_errors_leave_the_target_alone(xt, db, tmp_path):
    target = str(tmp_path / "target.db")
    result = xt.fails("copy", db, target, "--table", "default", "--table", "nope")
    assert "no table 'nope'" in result.err
    assert not os.path.exists(target)  # the whole copy is one transaction

    xt.ok("copy", db, target)
    xt.fails("copy", db, target, "--table", "other", "--table", "nope")
    assert table_names(target) == ["default"]

    assert "same file" in xt.fails("copy", db, db).err
    bad = tmp_path / "bad.db"
    bad.write_bytes(b"garbage" * 1000)
    assert "not a database" in xt.fails("copy", db, str(bad)).err
    assert bad.read_bytes() == b"garbage" * 1000
