"""``xt copy SOURCE TARGET``: merge tracking tables of one database into another.

For each table: the target table is created with the source's schema when it is missing,
columns it lacks are added with the source's SQL types, and every source row whose
(track_id, timestamp) is not in the target yet is inserted; rows already there are skipped.
All tables are merged in one transaction, so a failure leaves the target as it was.  The
source is opened read-only.  xetrack's asset tables (``assets``, ``keys``, ``counts``) come
along unless ``--no-assets``.
"""

from __future__ import annotations

import os
import sqlite3
from typing import Dict, List, Sequence
from urllib.parse import quote as url_quote

from xetrack_c.cli.db import TIMESTAMP, TRACK_ID, UserError, check_file, one_line, quote

ASSET_TABLES = ("assets", "keys", "counts")


def _uri(path: str, read_only: bool) -> str:
    return "file:" + url_quote(os.path.abspath(path)) + ("?mode=ro" if read_only else "")


def _table_info(conn: sqlite3.Connection, schema: str, table: str) -> List[tuple]:
    """(name, declared type) of ``schema.table``'s columns; empty when it does not exist."""
    rows = conn.execute(f"PRAGMA {schema}.table_info({quote(table)})").fetchall()
    return [(row[1], row[2] or "") for row in rows]


def _create_sql(conn: sqlite3.Connection, table: str) -> str:
    row = conn.execute("SELECT sql FROM src.sqlite_master WHERE type = 'table' AND name = ?",
                       (table,)).fetchone()
    return row[0]


def _source_tables(conn: sqlite3.Connection) -> List[str]:
    rows = conn.execute("SELECT name FROM src.sqlite_master WHERE type = 'table' "
                        "AND name NOT LIKE 'sqlite_%' ORDER BY name").fetchall()
    return [name for (name,) in rows]


def _merge_table(conn: sqlite3.Connection, source: str, table: str) -> Dict[str, int]:
    source_columns = _table_info(conn, "src", table)
    if not source_columns:
        present = ", ".join(repr(name) for name in _source_tables(conn)) or "none"
        raise UserError(f"no table {table!r} in {source!r} (tables: {present}); "
                        f"pass --table with one of them")
    names = [name for name, _ in source_columns]
    if TRACK_ID not in names or TIMESTAMP not in names:
        raise UserError(f"table {table!r} in {source!r} has no track_id and timestamp columns; "
                        f"xt copy merges tracking tables")
    target_columns = _table_info(conn, "main", table)
    added = 0
    if not target_columns:
        conn.execute(_create_sql(conn, table))
    else:
        have = {name for name, _ in target_columns}
        for name, declared in source_columns:
            if name not in have:
                conn.execute(f"ALTER TABLE main.{quote(table)} ADD COLUMN {quote(name)} {declared}")
                added += 1
    column_list = ", ".join(quote(name) for name in names)
    source_list = ", ".join(f"s.{quote(name)}" for name in names)
    cursor = conn.execute(
        f"INSERT INTO main.{quote(table)} ({column_list}) SELECT {source_list} "
        f"FROM src.{quote(table)} AS s WHERE NOT EXISTS (SELECT 1 FROM main.{quote(table)} AS m "
        f"WHERE m.{quote(TRACK_ID)} IS s.{quote(TRACK_ID)} "
        f"AND m.{quote(TIMESTAMP)} IS s.{quote(TIMESTAMP)})")
    copied = cursor.rowcount
    total = conn.execute(f"SELECT count(*) FROM src.{quote(table)}").fetchone()[0]
    return {"copied": copied, "skipped": total - copied, "columns_added": added}


def _merge_assets(conn: sqlite3.Connection) -> int:
    """Copy xetrack's asset tables: new assets and their counts, and every key mapping."""
    present = set(_source_tables(conn))
    if not all(name in present for name in ASSET_TABLES):
        return 0
    for name in ASSET_TABLES:
        if not _table_info(conn, "main", name):
            conn.execute(_create_sql(conn, name))
    copied = conn.execute("INSERT OR IGNORE INTO main.assets SELECT * FROM src.assets").rowcount
    conn.execute("INSERT OR IGNORE INTO main.counts SELECT * FROM src.counts")
    conn.execute('INSERT OR REPLACE INTO main."keys" SELECT * FROM src."keys"')
    return copied


def copy_databases(source: str, target: str, tables: Sequence[str],
                   assets: bool = True) -> Dict[str, Dict[str, int]]:
    """Merge ``tables`` of ``source`` into ``target`` (created when missing).

    Returns:
        ``{table: {"copied": n, "skipped": n, "columns_added": n}}`` plus ``"assets":
        {"copied": n}`` when asset tables were merged.
    """
    check_file(source)
    if os.path.isdir(target):
        raise UserError(f"{target!r} is a directory, not a database file")
    if os.path.exists(target) and os.path.samefile(source, target):
        raise UserError(f"source and target are the same file: {source!r}")
    report: Dict[str, Dict[str, int]] = {}
    existed = os.path.exists(target)
    try:
        conn = sqlite3.connect(_uri(target, False), uri=True, timeout=60,
                               isolation_level=None)
    except sqlite3.Error as exc:
        raise UserError(f"cannot open target {target!r}: {one_line(str(exc))}") from exc
    done = False
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("ATTACH DATABASE ? AS src", (_uri(source, True),))
        conn.execute("BEGIN IMMEDIATE")
        for table in dict.fromkeys(tables):
            report[table] = _merge_table(conn, source, table)
        if assets:
            copied_assets = _merge_assets(conn)
            if copied_assets:
                report["assets"] = {"copied": copied_assets}
        conn.execute("COMMIT")
        done = True
    except sqlite3.Error as exc:
        raise UserError(f"copying {source!r} into {target!r} failed: {one_line(str(exc))}") from exc
    finally:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        conn.close()
        if not done and not existed:  # leave no empty file behind a failed copy
            for suffix in ("", "-wal", "-shm"):
                if os.path.exists(target + suffix):
                    os.remove(target + suffix)
    return report
