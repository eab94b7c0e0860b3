"""Database access for the ``xt`` commands, through the C core and without pandas or numpy.

Reads open the file read-only (a missing file is never created); writes run one statement
in its own ``BEGIN IMMEDIATE`` transaction.  Every problem the user can fix comes out as a
:class:`UserError` whose message names what was wrong and what to do.
"""

from __future__ import annotations

import os
import shlex
from typing import Any, List, Optional, Sequence, Tuple

from xetrack_c import _core

TRACK_ID = "track_id"
TIMESTAMP = "timestamp"

Rows = List[Tuple[Any, ...]]


class UserError(Exception):
    """A problem with the command's input: ``xt`` prints its message and exits with 1."""


def check_file(path: str) -> str:
    """``path`` when it is an existing regular file, else a UserError."""
    if path in ("", ":memory:"):
        raise UserError(f"{path!r} is not a database file; pass the path of a .db file")
    if not os.path.exists(path):
        raise UserError(f"no such file: {path!r} (check the database path)")
    if os.path.isdir(path):
        raise UserError(f"{path!r} is a directory, not a database file")
    return path


def one_line(message: str) -> str:
    """``message`` folded onto one line (SQLite messages can quote multi-line SQL)."""
    return " ".join(str(message).split())


def read(db: str, sql: str, params: Sequence[Any] = ()) -> Tuple[List[str], Rows]:
    """Run one read-only statement: (column names, rows)."""
    try:
        names, rows = _core.read_rows(db, sql, tuple(params))
    except FileNotFoundError as exc:
        raise UserError(f"no such file: {db!r} (check the database path)") from exc
    except ValueError as exc:  # empty or multi-statement SQL
        raise UserError(one_line(str(exc))) from exc
    except _core.CorruptDatabaseError as exc:
        raise UserError(f"{db!r} is not a SQLite database or is damaged") from exc
    except _core.Error as exc:
        raise UserError(one_line(str(exc))) from exc
    return list(names), rows


def execute(db: str, sql: str, params: Sequence[Any] = ()) -> int:
    """Run one writing statement in its own transaction: the number of rows it changed."""
    try:
        return int(_core.execute(db, sql, tuple(params)))
    except FileNotFoundError as exc:
        raise UserError(f"no such file: {db!r} (check the database path)") from exc
    except _core.Error as exc:
        raise UserError(one_line(str(exc))) from exc


def quote(name: str) -> str:
    """``name`` as a quoted SQL identifier."""
    return _core.quote_identifier(name)


def table_names(db: str) -> List[str]:
    """Tables and views of ``db``, sorted, without the params record (not a table to read:
    see docs/tracker.md)."""
    _, rows = read(db, "SELECT name FROM sqlite_master WHERE type IN ('table', 'view') "
                       "AND name NOT LIKE 'sqlite_%' AND name != 'xetrack_params' ORDER BY name")
    return [name for (name,) in rows]


def schema(db: str, table: str) -> List[Tuple[str, str]]:
    """(name, declared type) of every column of ``table``; UserError when there is none."""
    check_file(db)
    _, rows = read(db, "SELECT name, type FROM pragma_table_info(?)", (table,))
    if not rows:
        present = ", ".join(repr(name) for name in table_names(db)) or "none"
        raise UserError(f"no table {table!r} in {db!r} (tables: {present}); "
                        f"pass --table with one of them")
    return [(name, declared or "") for name, declared in rows]


def columns(db: str, table: str) -> List[str]:
    """Column names of ``table`` in table order."""
    return [name for name, _ in schema(db, table)]


def require_column(column: str, present: Sequence[str], table: str) -> None:
    """UserError unless ``column`` is one of ``present``."""
    if column not in present:
        raise UserError(f"no column {column!r} in table {table!r} (columns: "
                        f"{', '.join(present)})")


def _order_key(row: Tuple[Any, ...], index: int) -> Tuple[int, Any]:
    """ORDER BY's order for one value: NULL, numbers, text, blobs."""
    value = row[index]
    if value is None:
        return (0, 0)
    if isinstance(value, (int, float)):
        return (1, value)
    if isinstance(value, str):
        return (2, value)
    return (3, value)


def sort_by_timestamp(names: Sequence[str], rows: Rows) -> Rows:
    """Rows sorted by timestamp (stable), as xetrack's Reader returns them."""
    if TIMESTAMP not in names:
        return rows
    index = list(names).index(TIMESTAMP)
    return sorted(rows, key=lambda row: _order_key(row, index))


def head_rows(db: str, table: str, n: int) -> Tuple[List[str], Rows]:
    """The first ``n`` rows written, sorted by timestamp."""
    columns(db, table)
    names, rows = read(db, f"SELECT * FROM {quote(table)} LIMIT ?", (n,))
    return names, sort_by_timestamp(names, rows)


def tail_rows(db: str, table: str, n: int) -> Tuple[List[str], Rows]:
    """The ``n`` rows with the latest timestamps, oldest first."""
    present = columns(db, table)
    source = quote(table)
    if TIMESTAMP in present:
        order = f" ORDER BY {quote(TIMESTAMP)}"
        sql = (f"WITH tail AS MATERIALIZED (SELECT * FROM {source}{order} DESC LIMIT ?) "
               f"SELECT * FROM tail{order}")
        return read(db, sql, (n,))
    sql = f"SELECT * FROM {source} LIMIT ? OFFSET (SELECT MAX(COUNT(*) - ?, 0) FROM {source})"
    return read(db, sql, (n, n))


def column_values(db: str, table: str, column: str,
                  track_id: Optional[str] = None) -> List[Any]:
    """The values of ``column`` in timestamp order, optionally of one run only."""
    present = columns(db, table)
    require_column(column, present, table)
    sql = f"SELECT {quote(column)} FROM {quote(table)}"
    params: Tuple[Any, ...] = ()
    if track_id is not None:
        require_column(TRACK_ID, present, table)
        sql += f" WHERE {quote(TRACK_ID)} = ?"
        params = (track_id,)
    if TIMESTAMP in present:
        sql += f" ORDER BY {quote(TIMESTAMP)}"
    return [value for (value,) in read(db, sql, params)[1]]


def run_row_counts(db: str, table: str, track_id: str) -> Tuple[int, int]:
    """(rows of run ``track_id``, rows of the table)."""
    require_column(TRACK_ID, columns(db, table), table)
    _, rows = read(db, f"SELECT coalesce(sum({quote(TRACK_ID)} = ?), 0), count(*) "
                       f"FROM {quote(table)}", (track_id,))
    return int(rows[0][0]), int(rows[0][1])


def run_ids(db: str, table: str, limit: int) -> Tuple[List[str], int]:
    """(the first ``limit`` track ids of ``table`` by name, how many there are)."""
    column, source = quote(TRACK_ID), quote(table)
    _, rows = read(db, f"SELECT {column} FROM {source} WHERE {column} IS NOT NULL "
                       f"GROUP BY {column} ORDER BY {column} LIMIT ?", (limit,))
    _, count = read(db, f"SELECT count(DISTINCT {column}) FROM {source}")
    return [str(track_id) for (track_id,) in rows], int(count[0][0])


def delete_run(db: str, table: str, track_id: str) -> int:
    """Delete the rows of run ``track_id``: how many went."""
    require_column(TRACK_ID, columns(db, table), table)
    return execute(db, f"DELETE FROM {quote(table)} WHERE {quote(TRACK_ID)} = ?", (track_id,))


def set_value(db: str, table: str, key: str, value: str, track_id: Optional[str] = None,
              where_key: Optional[str] = None, where_value: Optional[str] = None) -> int:
    """Set column ``key`` (added as TEXT when missing) to ``value`` in every row, or in the
    rows of ``track_id`` and/or whose ``where_key`` equals ``where_value``: rows changed."""
    present = columns(db, table)
    column = _core.sanitize_key(key)
    conditions: List[str] = []
    params: List[Any] = [value]
    if where_key is not None:
        where_column = _core.sanitize_key(where_key)
        require_column(where_column, present, table)
        conditions.append(f"{quote(where_column)} IS ?")
        params.append(where_value)
    if track_id is not None:
        require_column(TRACK_ID, present, table)
        conditions.append(f"{quote(TRACK_ID)} = ?")
        params.append(track_id)
    if column not in present:
        try:
            execute(db, f"ALTER TABLE {quote(table)} ADD COLUMN {quote(column)} TEXT")
        except UserError as exc:
            if "duplicate column name" not in str(exc):  # another writer added it first
                raise
    sql = f"UPDATE {quote(table)} SET {quote(column)} = ?"
    if conditions:
        sql += " WHERE " + " AND ".join(conditions)
    return execute(db, sql, params)


def run_query(db: str, query: str) -> Tuple[List[str], Rows]:
    """Run a user's SQL statement, which may only read.

    The C core opens the file read-only and refuses, before anything runs, any statement
    that would write (INSERT, CREATE, ATTACH, VACUUM, a PRAGMA that sets a value, ...);
    its error names what it refused (``refused``).
    """
    check_file(db)
    advice = (f"xt sql is read-only; to change the file use the sqlite3 shell "
              f"(sqlite3 {shlex.quote(db)}), or xt set / xt delete")
    try:
        return read(db, query)
    except UserError as exc:
        refused = getattr(exc.__cause__, "refused", None)
        if refused:
            raise UserError(f"refused {refused}: {advice}") from exc
        if "readonly database" in str(exc):
            raise UserError(f"the statement writes: {advice}") from exc
        hint = _quote_hint(db, str(exc))
        if hint:
            raise UserError(f"{exc}; {hint}") from exc
        raise


def _quote_hint(db: str, message: str) -> Optional[str]:
    """For a syntax error near a word that names one of ``db``'s tables (``default`` is an
    SQL keyword, so ``FROM default`` does not parse), the advice to quote that name."""
    import re

    match = re.match(r'near "([^"]+)": syntax error', message)
    if not match:
        return None
    word = match.group(1)
    for table in table_names(db):
        if table.lower() == word.lower():
            return f"to use the table {table!r}, quote its name: {quote(table)}"
    return None
