"""Reads run only statements that read: ``xt sql``, ``read_rows`` and ``read_columns``.

The file is opened read-only, and SQLite's authorizer refuses, before anything runs, what
would write anyway or write elsewhere: ``VACUUM INTO`` and ``ATTACH`` create files, a
``PRAGMA journal_mode=...`` rewrites the file's header.  The error names what it refused.
"""

from __future__ import annotations

import hashlib
import sqlite3

import pytest

from xetrack_c import _core

SQLITE_AUTH = 23


def digest(path: str) -> str:
    with open(path, "rb") as handle:
        return hashlib.sha256(handle.read()).hexdigest()


# (statement, a word the refusal names); {tmp} is the test's directory.
REFUSED = [
    ("VACUUM INTO '{tmp}/copy.db'", "VACUUM INTO"),
    ("VACUUM", "VACUUM"),
    ("ATTACH '{tmp}/other.db' AS other", "ATTACH"),
    ("PRAGMA journal_mode=DELETE", "journal_mode"),
    ("PRAGMA user_version = 7", "user_version"),
    ("PRAGMA wal_checkpoint", "wal_checkpoint"),
    ('INSERT INTO "default" (n) VALUES (1)', "INSERT"),
    ('UPDATE "default" SET n = 0', "UPDATE"),
    ('DELETE FROM "default"', "DELETE"),
    ("CREATE TABLE t (a)", "CREATE TABLE"),
    ("CREATE TEMP TABLE t (a)", "CREATE TABLE"),
    ('CREATE INDEX i ON "default" (n)', "CREATE INDEX"),
    ('DROP TABLE "other"', "DROP TABLE"),
    ('ALTER TABLE "default" ADD COLUMN z', "ALTER TABLE"),
    ("ANALYZE", "ANALYZE"),
]


@pytest.mark.parametrize("query, named", REFUSED, ids=[q for q, _ in REFUSED])
def test_xt_sql_refuses_a_writing_statement_naming_it(xt, db, tmp_path, query, named):
    before = digest(db)
    result = xt.fails("sql", db, query.format(tmp=tmp_path))
    assert "xt sql is read-only" in result.err
    assert f"refused {named}" in result.err or (named in result.err and "refused" in result.err)
    assert "sqlite3" in result.err  # where to go for writes
    assert not (tmp_path / "copy.db").exists() and not (tmp_path / "other.db").exists()
    assert digest(db) == before
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


ALLOWED = [
    ('SELECT count(*) AS c FROM "default"', "7"),
    ("WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 10) "
     "SELECT sum(x) AS c FROM c", "55"),
    ("PRAGMA table_info('default')", "track_id"),
    ("SELECT name AS c FROM pragma_table_info('default') WHERE cid = 2", "model"),
    ("SELECT count(*) AS c FROM pragma_index_list('default')", "1"),
    ("PRAGMA journal_mode", "wal"),
    ("PRAGMA user_version", "0"),
    ("PRAGMA integrity_check", "ok"),
    ("SELECT name AS c FROM sqlite_master WHERE name = 'other'", "other"),
    ("SELECT json_extract('{\"a\": 3}', '$.a') AS c", "3"),
]


@pytest.mark.parametrize("query, expected", ALLOWED, ids=[q for q, _ in ALLOWED])
def test_xt_sql_runs_statements_that_read(xt, db, query, expected):
    assert expected in xt.ok("sql", db, query).out


def test_read_functions_raise_storage_error_with_what_was_refused(db, tmp_path):
    target = tmp_path / "copy.db"
    with pytest.raises(_core.StorageError) as info:
        _core.read_rows(db, f"VACUUM INTO '{target}'")
    assert info.value.sqlite_code == SQLITE_AUTH
    assert "VACUUM INTO" in info.value.refused and str(target) in info.value.refused
    assert "read-only" in str(info.value)
    # read_columns runs its statement inside BEGIN, where SQLite refuses VACUUM itself.
    with pytest.raises(_core.StorageError):
        _core.read_columns(db, f"VACUUM INTO '{target}'")
    assert not target.exists()
    for read in (_core.read_rows, _core.read_columns):
        with pytest.raises(_core.StorageError) as info:
            read(db, "PRAGMA journal_mode = DELETE")
        assert info.value.sqlite_code == SQLITE_AUTH
        assert info.value.refused.startswith("PRAGMA journal_mode = DELETE")
        with pytest.raises(_core.StorageError) as info:
            read(db, f"ATTACH '{tmp_path / 'other.db'}' AS other")
        assert "ATTACH" in info.value.refused
    assert not (tmp_path / "other.db").exists()


def test_writes_through_execute_are_not_restricted(db):
    # The authorizer guards connections opened for reading only.
    assert _core.execute(db, 'UPDATE "default" SET n = n + 1 WHERE n = 0') == 1
