"""SQL on one tracking table, at xetrack's public paths ``xetrack.engine`` and
``xetrack.duckdb``: ``SqliteEngine``, ``DuckDBEngine`` and ``tracker.engine``.

These are for the SQL a script writes itself (``engine.execute_sql(f"SELECT * FROM
{engine.table_name}")``). Rows are logged by the Tracker's C write path, not through here.

As in xetrack, the table name may appear bare in a query, even when it is an SQL keyword
such as ``default``: a bare occurrence (outside quotes) is quoted before the query runs.
``DuckDBEngine`` accepts xetrack's ``db.<table>`` names and, like ``Tracker(engine="duckdb")``,
reads and writes the same SQLite file with SQLite.
"""

from __future__ import annotations

import os
import re
import sqlite3
import weakref
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

from xetrack_c import _core
from xetrack_c.config import CONSTANTS, DEFAULTS, SCHEMA_PARAMS, TRACKER_CONSTANTS

__all__ = ["DuckDBEngine", "Rows", "SqliteEngine", "TrackerEngine"]

_SQL_TYPES = {"INTEGER": int, "REAL": float, "TEXT": str, "BLOB": bytearray}
_TYPE_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9 ()]*$")
_READS = ("SELECT", "PRAGMA", "WITH", "EXPLAIN", "VALUES")


def _bare(table: str) -> str:
    """The SQLite name of a table given as xetrack spells it (``db.name`` for DuckDB)."""
    return table.split(".", 1)[1] if table.startswith("db.") else table


def _checked_type(dtype: str) -> str:
    if not isinstance(dtype, str) or not _TYPE_NAME.match(dtype):
        raise ValueError(f"invalid SQL type {dtype!r}: use a type name such as INTEGER, REAL, TEXT or BLOB")
    return dtype


class Rows:
    """The result of ``execute`` on a tracker's engine: a DB-API-like cursor over rows
    already fetched (``description``, ``fetchone``, ``fetchall``, iteration)."""

    def __init__(self, names: Sequence[str], rows: List[Tuple[Any, ...]], rowcount: int = -1) -> None:
        self.description = tuple((name, None, None, None, None, None, None) for name in names) or None
        self.rowcount = rowcount
        self._rows = list(rows)
        self._next = 0

    def fetchone(self) -> Optional[Tuple[Any, ...]]:
        """The next row, or None."""
        if self._next >= len(self._rows):
            return None
        self._next += 1
        return self._rows[self._next - 1]

    def fetchall(self) -> List[Tuple[Any, ...]]:
        """The rows not fetched yet."""
        rest, self._next = self._rows[self._next:], len(self._rows)
        return rest

    def __iter__(self) -> Iterator[Tuple[Any, ...]]:
        return iter(self.fetchall())


class SqliteEngine:
    """A connection to one tracking table of a SQLite file (created if missing).

    Args:
        db: Path of the SQLite file, or ``":memory:"``.
        compress: Accepted for xetrack's signature (it concerns assets).
        table_name: The table (``db.<name>`` is accepted for the same table).
    """

    def __init__(self, db: str = DEFAULTS.DB, compress: bool = False,
                 table_name: str = SCHEMA_PARAMS.DEFAULT_TABLE) -> None:
        self.db = os.fspath(db)
        self.compress = compress
        self.table_name = table_name
        self.conn: Optional[sqlite3.Connection] = self._init_connection()
        self._ensure_events_table()

    def _init_connection(self) -> Optional[sqlite3.Connection]:
        if self.db != CONSTANTS.IN_MEMORY_DB:
            parent = os.path.dirname(self.db)
            if parent:
                os.makedirs(parent, exist_ok=True)
        conn = sqlite3.connect(self.db, timeout=60.0)
        conn.row_factory = sqlite3.Row
        return conn

    def _ensure_events_table(self) -> None:
        key_columns = {SCHEMA_PARAMS.TRACK_ID: "TEXT", TRACKER_CONSTANTS.TIMESTAMP: "TEXT"}
        self.create_table(self.table_name, key_columns, list(key_columns))

    # ------------------------------------------------------------------ running SQL
    def _quoted_table(self, table: Optional[str] = None) -> str:
        return _core.quote_identifier(_bare(table or self.table_name))

    def _fix_table_name(self, query: str) -> str:
        """``query`` with bare occurrences of the table name quoted (``FROM default``)."""
        bare_name = re.escape(self.table_name)
        pattern = rf"(?<![\w\"'`.\[]){bare_name}(?![\w\"'`\]])"
        return re.sub(pattern, lambda _: self._quoted_table(), query)

    def _run(self, query: str, params: Sequence[Any]) -> Any:
        if self.conn is None:
            raise ValueError(f"the engine of {self.db!r} is closed")
        cursor = self.conn.execute(query, tuple(params))
        self.conn.commit()
        return cursor

    def execute(self, query: str, params: Optional[List[Any]] = None) -> Any:
        """Run one SQL statement (committed) and return its cursor."""
        return self._run(self._fix_table_name(query), params or ())

    def execute_sql(self, query: str, params: Optional[List[Any]] = None) -> Any:
        """Run a query and return its rows as a DataFrame (pandas or polars, see
        ``set_backend``)."""
        from xetrack_c._dataframe import cursor_to_dataframe

        return cursor_to_dataframe(self.execute(query, params))

    # ------------------------------------------------------------------ schema
    @property
    def dtypes(self) -> Dict[str, Any]:
        """Column name -> Python type of its declared SQL type."""
        cursor = self._run("SELECT name, type FROM pragma_table_info(?)", (_bare(self.table_name),))
        return {
            name: _SQL_TYPES.get(sql_type.upper(), CONSTANTS.DTYPES_TO_PYTHON.get(sql_type.upper()))
            for name, sql_type in (tuple(row) for row in cursor.fetchall())
        }

    @property
    def columns(self) -> set:
        """Column names of the table."""
        return set(self.dtypes)

    @staticmethod
    def to_sql_type(value: Any) -> str:
        """The SQL type a first value gives its column: int and bool INTEGER, float REAL,
        bytearray BLOB, anything else TEXT."""
        if isinstance(value, bytearray):
            return "BLOB"
        if isinstance(value, (bool, int)):
            return "INTEGER"
        return "REAL" if isinstance(value, float) else "TEXT"

    def create_table(self, table: str, columns: Dict[str, str],
                     primary_key: Optional[List[str]] = None) -> None:
        """``CREATE TABLE IF NOT EXISTS`` with ``columns`` (name -> SQL type)."""
        quote = _core.quote_identifier
        parts = [f"{quote(name)} {_checked_type(dtype)}" for name, dtype in columns.items()]
        if primary_key:
            parts.append(f"PRIMARY KEY ({', '.join(map(quote, primary_key))})")
        self._run(f"CREATE TABLE IF NOT EXISTS {self._quoted_table(table)} ({', '.join(parts)})", ())

    def add_column(self, table: str, column: str, dtype: str) -> None:
        """Add ``column`` of SQL type ``dtype`` to ``table``."""
        quoted = _core.quote_identifier(column)
        self._run(f"ALTER TABLE {self._quoted_table(table)} ADD COLUMN {quoted} {_checked_type(dtype)}", ())

    # ------------------------------------------------------------------ rows
    def _column_for(self, key: str, value: Any) -> str:
        column = _core.sanitize_key(key)
        if column not in self.columns:
            self.add_column(self.table_name, column, self.to_sql_type(value))
        return _core.quote_identifier(column)

    def set_value(self, key: str, value: Any, track_id: Optional[str] = None) -> None:
        """Set ``key`` to ``value`` on every row (of run ``track_id`` if given), adding the
        column if needed."""
        sql = f"UPDATE {self._quoted_table()} SET {self._column_for(key, value)} = ?"
        params: List[Any] = [value]
        if track_id is not None:
            sql += f" WHERE {SCHEMA_PARAMS.TRACK_ID} = ?"
            params.append(track_id)
        self._run(sql, params)

    def set_where(self, key: str, value: Any, where_key: str, where_value: Any,
                  track_id: Optional[str] = None) -> None:
        """Set ``key`` to ``value`` on the rows where ``where_key == where_value`` (and of
        run ``track_id`` if given)."""
        target = self._column_for(key, value)
        where = _core.quote_identifier(_core.sanitize_key(where_key))
        sql = f"UPDATE {self._quoted_table()} SET {target} = ? WHERE {where} = ?"
        params: List[Any] = [value, where_value]
        if track_id is not None:
            sql += f" AND {SCHEMA_PARAMS.TRACK_ID} = ?"
            params.append(track_id)
        self._run(sql, params)

    def count_records(self, track_id: Optional[str] = None) -> int:
        """Rows in the table (of run ``track_id`` if given)."""
        sql = f"SELECT COUNT(*) FROM {self._quoted_table()}"
        if track_id is None:
            return tuple(self._run(sql, ()).fetchone())[0]
        return tuple(self._run(f"{sql} WHERE {SCHEMA_PARAMS.TRACK_ID} = ?", (track_id,)).fetchone())[0]

    # ------------------------------------------------------------------ lifetime
    def close(self) -> None:
        """Close the connection."""
        if self.conn is not None:
            self.conn.close()
            self.conn = None

    def __enter__(self) -> "SqliteEngine":
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        self.close()


class DuckDBEngine(SqliteEngine):
    """xetrack's DuckDB engine by name: table names read ``db.<table>``; the file is the
    same SQLite file, read and written with SQLite."""

    def __init__(self, db: str = DEFAULTS.DB, compress: bool = False,
                 table_name: str = SCHEMA_PARAMS.DEFAULT_TABLE) -> None:
        super().__init__(db, compress, table_name if "." in table_name else f"db.{table_name}")


class TrackerEngine(SqliteEngine):
    """``tracker.engine``: SQL on the tracker's own connection, so it sees rows the tracker
    has queued (async) and in-memory databases. ``name`` is ``"sqlite"`` or ``"duckdb"``."""

    def __init__(self, tracker: Any, name: str) -> None:
        self.name = name
        self.db = tracker.db
        self.compress = False
        self.table_name = f"db.{tracker.table_name}" if name == "duckdb" else tracker.table_name
        self.conn = None
        self._tracker = weakref.ref(tracker)  # the tracker holds its engine: no cycle

    def _run(self, query: str, params: Sequence[Any]) -> Rows:
        tracker = self._tracker()
        if tracker is None:
            raise ValueError("the tracker of this engine is gone")
        words = query.split(None, 1)
        if words and words[0].upper() in _READS:
            names, rows = tracker._query(query, tuple(params))
            return Rows(names, rows)
        return Rows((), [], tracker._execute(query, tuple(params)))

    def close(self) -> None:
        """Close the tracker (it owns the connection)."""
        tracker = self._tracker()
        if tracker is not None:
            tracker.close()
