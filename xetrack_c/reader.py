"""Reader: read (and lightly edit) a tracking database written by a Tracker or by xetrack.

Every call opens the SQLite file, does its work and closes it again; a Reader holds no
connection, so it is cheap, safe to share between threads, and unaffected by ``fork()``.
Reads open the file read-only and see one consistent snapshot while other processes keep
writing.  Only ``delete_run``, ``set_value`` and ``set_where`` write.
"""

from __future__ import annotations

import html
import os
from typing import TYPE_CHECKING, Any, Dict, Iterator, List, Optional, Tuple, Union

from xetrack_c import _core
from xetrack_c._core import StorageError
from xetrack_c._dataframe import frame_from_columns, text_buffers_usable

if TYPE_CHECKING:  # pragma: no cover
    import numpy

DEFAULT_TABLE = "default"
ENGINES = ("sqlite", "duckdb")
TRACK_ID = "track_id"
TIMESTAMP = "timestamp"
_REPR_ROWS = 5

# Declared SQL types (as xetrack's SQLite and DuckDB engines write them) -> Python types.
_DECLARED_TYPES = {
    "INTEGER": int, "INT": int, "BIGINT": int, "SMALLINT": int, "TINYINT": int,
    "REAL": float, "FLOAT": float, "DOUBLE": float, "DECIMAL": float,
    "TEXT": str, "VARCHAR": str, "CHAR": str, "DATE": str, "TIME": str, "TIMESTAMP": str,
    "INTERVAL": str, "UUID": str, "BLOB": bytearray, "BOOLEAN": bool,
}

PathLike = Union[str, "os.PathLike[str]"]


class TableNotFoundError(StorageError, LookupError):
    """The database has no table of the requested name."""


def _sql_type(value: Any) -> str:
    """SQL type of a new column, fixed by its first value as xetrack does."""
    kind = type(value)
    if kind is bytearray:
        return "BLOB"
    if kind is bool:
        return "BOOLEAN"  # numeric affinity, as INTEGER: the file stores 0/1
    if kind is int:
        return "INTEGER"
    if kind is float:
        return "REAL"
    return "TEXT"


def _sql_value(value: Any) -> Any:
    """The value as SQLite stores it: numpy scalars as their Python value, containers and
    other objects as ``str(value)``."""
    if value is None or type(value) in (int, float, str, bytes):
        return value
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, bytearray):
        return bytes(value)
    if type(value).__module__ == "numpy" and hasattr(value, "item"):
        return _sql_value(value.item())
    if isinstance(value, (int, float, str, bytes)):
        return value
    return str(value)


def _python_type(declared: str) -> Optional[type]:
    declared = declared.upper()
    if declared in _DECLARED_TYPES:
        return _DECLARED_TYPES[declared]
    # SQLite's column affinity rules, for types written by other tools.
    if "INT" in declared:
        return int
    if any(word in declared for word in ("CHAR", "CLOB", "TEXT")):
        return str
    if any(word in declared for word in ("REAL", "FLOA", "DOUB")):
        return float
    if "BLOB" in declared:
        return bytearray
    return None


def _check_limit(name: str, value: Optional[int]) -> Optional[int]:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int or None, not {type(value).__name__}")
    if value < 0:
        raise ValueError(f"{name} must be >= 0, got {value}")
    return value


def _read_threads(threads: Optional[int]) -> int:
    """The threads a whole-table read may use: ``threads``, or the CPUs this process may run
    on when None."""
    if threads is None:
        try:
            return len(os.sched_getaffinity(0))
        except (AttributeError, OSError):  # no sched_getaffinity on this platform
            return os.cpu_count() or 1
    if isinstance(threads, bool) or not isinstance(threads, int):
        raise TypeError(f"threads must be an int or None, not {type(threads).__name__}")
    if threads < 1:
        raise ValueError(f"threads must be 1 or more (or None for every CPU), not {threads}")
    return threads


class Reader:
    """Read a tracking table as a DataFrame or as NumPy columns.

    Args:
        db: path of an existing SQLite database file.
        engine: ``"sqlite"`` or ``"duckdb"``; both read the SQLite file through the C core.
        table: the table to read (xetrack's default is ``"default"``).

    Raises:
        FileNotFoundError: ``db`` does not exist (nothing is created).
        CorruptDatabaseError: ``db`` is not a SQLite database.
        TableNotFoundError: the file has no table ``table``; the message lists those it has.
        ValueError: an unknown engine.
    """

    def __init__(self, db: PathLike, engine: str = "sqlite", table: str = DEFAULT_TABLE):
        if engine not in ENGINES:
            raise ValueError(
                f"unknown engine {engine!r}; choose one of {', '.join(map(repr, ENGINES))}"
            )
        if not isinstance(table, str):
            raise TypeError(f"table must be a str, not {type(table).__name__}")
        path = os.fspath(db)
        if path == ":memory:" or path == "":
            raise ValueError(
                "a Reader reads a database file; an in-memory database is only visible to "
                "its Tracker (use Tracker.to_df())"
            )
        self.db: str = path
        self.engine: str = engine
        self.table_name: str = table
        self._table_sql: str = _core.quote_identifier(table)
        schema = self._schema()
        names = [name for name, _ in schema]
        self._has_timestamp = TIMESTAMP in names
        self._order = f" ORDER BY {_core.quote_identifier(TIMESTAMP)}" if self._has_timestamp else ""

    # ---------------------------------------------------------------- schema

    def _schema(self) -> List[Tuple[str, str]]:
        """(name, declared type) of every column, in table order."""
        _, rows = _core.read_rows(self.db, "SELECT name, type FROM pragma_table_info(?)",
                                  (self.table_name,))
        if not rows:
            raise self._missing_table()
        return [(name, declared or "") for name, declared in rows]

    def _missing_table(self) -> TableNotFoundError:
        _, rows = _core.read_rows(
            self.db, "SELECT name FROM sqlite_master WHERE type IN ('table', 'view') "
            "AND name NOT LIKE 'sqlite_%' AND name != 'xetrack_params' ORDER BY name")
        present = ", ".join(repr(name) for (name,) in rows) or "none"
        return TableNotFoundError(
            f"no table {self.table_name!r} in database {self.db!r} (tables present: {present}); "
            f"pass table= one of them"
        )

    @property
    def columns(self) -> List[str]:
        """Column names in table order."""
        return [name for name, _ in self._schema()]

    @property
    def dtypes(self) -> Dict[str, Optional[type]]:
        """``{column: Python type}`` from the declared SQL types (None when undeclared)."""
        return {name: _python_type(declared) for name, declared in self._schema()}

    def __len__(self) -> int:
        """Number of rows in the table."""
        return int(self._rows(f"SELECT COUNT(*) FROM {self._table_sql}")[0][0])

    # ------------------------------------------------------------------ reads

    def _rows(self, sql: str, params: Tuple[Any, ...] = ()) -> List[Tuple[Any, ...]]:
        try:
            return _core.read_rows(self.db, sql, params)[1]
        except StorageError as exc:
            raise self._translate(exc) from exc

    def _columns(self, sql: str, params: Tuple[Any, ...] = (), text_buffers: bool = False,
                 sort_by: Optional[str] = None, whole_table: bool = False,
                 threads: Optional[int] = 1) -> Dict[str, Any]:
        # Reading the whole of a table (not a view, which would be computed to find out):
        # its rowid span (two b-tree lookups, bounded by what the file could hold) sizes
        # the read buffers once; a wrong guess costs only speed.
        name = "'" + self.table_name.replace("'", "''") + "'"
        hint = (f"SELECT CASE WHEN (SELECT type FROM sqlite_master WHERE name = {name}) = "
                f"'table' THEN min((SELECT max(rowid) FROM {self._table_sql}) - "
                f"(SELECT min(rowid) FROM {self._table_sql}) + 1, "
                "(SELECT page_count FROM pragma_page_count()) * "
                "(SELECT page_size FROM pragma_page_size()) / 16) END") if whole_table else None
        count = _read_threads(threads) if whole_table else 1
        span = ranges = None
        if count > 1:
            # A big table is read in rowid ranges by several threads, each on a connection
            # of its own, in one snapshot (read_columns). Only a table (a view would be
            # computed to find its span), and _rowid_ is the rowid unless a column has that
            # name: otherwise the span is no row and one thread reads. Each of min and max
            # alone in its subquery: one b-tree lookup each.
            table = self._table_sql
            span = (f"SELECT (SELECT min(_rowid_) FROM {table}), "
                    f"(SELECT max(_rowid_) FROM {table}) "
                    f"WHERE (SELECT type FROM sqlite_master WHERE name = {name}) = 'table' "
                    f"AND NOT EXISTS (SELECT 1 FROM pragma_table_info({name}) "
                    "WHERE name = '_rowid_' COLLATE NOCASE)")
            ranges = f"SELECT * FROM {table} WHERE _rowid_ >= ?1 AND _rowid_ < ?2"
        try:
            return _core.read_columns(self.db, sql, params, text_buffers=text_buffers,
                                      sort_by=sort_by, rows_hint_sql=hint, threads=count,
                                      span_sql=span, range_sql=ranges)
        except StorageError as exc:
            raise self._translate(exc) from exc

    def _translate(self, exc: StorageError) -> Exception:
        if "no such table" in str(exc):
            return self._missing_table()
        return exc

    def _select(self, track_id: Optional[str], head: Optional[int],
                tail: Optional[int]) -> Tuple[str, Tuple[Any, ...], Optional[str]]:
        """(sql, params, sort_by) for to_df's rows: one of track_id, head, tail applies, in
        that order of precedence (as xetrack), and the rows come sorted by timestamp.

        Sorting happens in C after the scan (``sort_by``): tables are appended in time order,
        so checking the order costs far less than SQLite's ORDER BY sorter; rows with equal
        timestamps keep table order.
        """
        head = _check_limit("head", head)
        tail = _check_limit("tail", tail)
        table = self._table_sql
        sort_by = TIMESTAMP if self._has_timestamp else None
        if track_id is not None:
            return (f"SELECT * FROM {table} WHERE {_core.quote_identifier(TRACK_ID)} = ?",
                    (_sql_value(track_id),), sort_by)
        if head is not None:
            # The first rows in table order (xetrack's plain LIMIT), then sorted.
            return f"SELECT * FROM {table} LIMIT ?", (head,), sort_by
        if tail is not None:
            if self._has_timestamp:
                order = self._order
                return (f"WITH tail AS MATERIALIZED (SELECT * FROM {table}{order} DESC LIMIT ?) "
                        f"SELECT * FROM tail{order}", (tail,), None)
            return (f"SELECT * FROM {table} LIMIT ? OFFSET "
                    f"(SELECT MAX(COUNT(*) - ?, 0) FROM {table})", (tail, tail), None)
        return f"SELECT * FROM {table}", (), sort_by

    def to_arrays(self, track_id: Optional[str] = None, head: Optional[int] = None,
                  tail: Optional[int] = None, *,
                  threads: Optional[int] = None) -> Dict[str, "numpy.ndarray"]:
        """The rows of :meth:`to_df` as ``{column: numpy.ndarray}``, without pandas.

        INTEGER columns are int64 (float64 with NaN when NULLs occur), REAL float64, TEXT
        object arrays of str/None, BLOB object arrays of bytes.  BOOLEAN columns (created by
        a first value that was a bool) holding only 0/1 are bool arrays, object arrays of
        True/False/None when NULLs occur; one that also holds other numbers reads as
        numbers.  ``threads`` is as for :meth:`to_df`.
        """
        sql, params, sort_by = self._select(track_id, head, tail)
        whole = track_id is None and head is None and tail is None
        return self._columns(sql, params, sort_by=sort_by, whole_table=whole, threads=threads)

    def to_df(self, track_id: Optional[str] = None, head: Optional[int] = None,
              tail: Optional[int] = None, *, threads: Optional[int] = None) -> Any:
        """The table as a DataFrame sorted by timestamp.

        Args:
            track_id: only this run's rows (takes precedence over head and tail).
            head: the first ``head`` rows written (takes precedence over tail).
            tail: the ``tail`` rows with the latest timestamps.
            threads: the most threads that read a whole table (no track_id, head or tail)
                of at least 131,072 rows, each a range of rows on a connection of its own,
                all in one snapshot; None (the default) for the CPUs this process may use,
                1 for one thread. The result is the same either way.

        Returns:
            A pandas or polars DataFrame (see ``set_backend``) with a fresh RangeIndex.
        """
        sql, params, sort_by = self._select(track_id, head, tail)
        whole = track_id is None and head is None and tail is None
        return frame_from_columns(self._columns(sql, params, text_buffers_usable(), sort_by,
                                                whole, threads))

    def latest(self) -> Any:
        """The rows of the most recent run (the run of the row with the latest timestamp),
        sorted by timestamp; an empty DataFrame with the table's columns when it is empty."""
        table, tid = self._table_sql, _core.quote_identifier(TRACK_ID)
        newest = f"{self._order} DESC" if self._has_timestamp else f" ORDER BY {tid} DESC"
        sql = (f"SELECT * FROM {table} WHERE {tid} = "
               f"(SELECT {tid} FROM {table}{newest} LIMIT 1)")
        sort_by = TIMESTAMP if self._has_timestamp else None
        return frame_from_columns(self._columns(sql, (), text_buffers_usable(), sort_by))

    @classmethod
    def read_db(cls, db: PathLike, engine: str = "sqlite", table: str = DEFAULT_TABLE,
                track_id: Optional[str] = None, head: Optional[int] = None,
                tail: Optional[int] = None) -> Any:
        """``Reader(db, engine, table).to_df(track_id, head, tail)`` in one call."""
        return cls(db, engine=engine, table=table).to_df(track_id=track_id, head=head, tail=tail)

    # ----------------------------------------------------------------- comparing runs

    def tables(self) -> Any:
        """Every table of the file as a DataFrame (``name``, ``kind``): kind is
        ``"tracking"`` (it has a ``track_id`` column), ``"params"``, ``"assets"``,
        ``"experiments"`` (run_multiple's) or ``"other"``."""
        from xetrack_c import summary

        return summary.frame(["name", "kind"], summary.tables(self.db))

    def runs(self) -> Any:
        """One row per run: ``track_id``, ``start``, ``end``, ``rows``, the experiment's
        ``experiment_id`` and ``status`` when run_multiple's experiments table joins, then
        the params (see ``xetrack_c.summary``)."""
        from xetrack_c import summary

        return summary.frame(*self._summary_call(summary.runs_table))

    def summary(self, metrics: Union[str, List[str], None] = None,
                by: Union[str, List[str]] = TRACK_ID,
                agg: Union[str, Tuple[str, ...], List[str]] = ("last", "max", "mean")) -> Any:
        """Each metric (default: every metric of the table) aggregated by each of ``agg``
        (last, first, min, max, mean, count, std) within each group of ``by``: one row per
        group, columns ``<metric>_<agg>``. Raises ValueError naming what exists for an
        unknown metric, column or aggregation."""
        from xetrack_c import summary

        return summary.frame(*self._summary_call(summary.summary_table, metrics, by, agg))

    def compare(self, run_a: str, run_b: str) -> Any:
        """Runs ``run_a`` and ``run_b`` side by side: a ``xetrack_c.summary.Comparison``
        with ``params`` (param, a, b, differs) and ``metrics`` (last and max of each run and
        their deltas b - a) DataFrames."""
        from xetrack_c import summary

        (pnames, prows), (mnames, mrows) = self._summary_call(summary.compare_tables,
                                                              run_a, run_b)
        return summary.Comparison(run_a, run_b, summary.frame(pnames, prows),
                                  summary.frame(mnames, mrows))

    def _summary_call(self, function: Any, *args: Any) -> Any:
        try:
            return function(self.db, self.table_name, *args)
        except StorageError as exc:
            raise self._translate(exc) from exc

    # ----------------------------------------------------------------- logs

    @staticmethod
    def read_logs(path: PathLike, limit: Optional[int] = None) -> Any:
        """The records of the text logs in directory ``path`` (``Tracker(logs_path=...)``,
        by xetrack_c or xetrack) as a DataFrame, newest file first; at most ``limit``
        files. Needs no loguru."""
        from xetrack_c._dataframe import dataframe_from_dicts, df_dropna_all, df_is_empty
        from xetrack_c.logging import read_logs

        frame = dataframe_from_dicts(read_logs(os.fspath(path), limit=limit))
        return frame if df_is_empty(frame) else df_dropna_all(frame)

    @staticmethod
    def read_jsonl(path: PathLike) -> Any:
        """The records of a JSONL log (``Tracker(jsonl=...)``) as a DataFrame: ``timestamp``
        (ISO 8601), ``level``, then the row's fields."""
        from xetrack_c._dataframe import dataframe_from_dicts
        from xetrack_c.logging import read_jsonl

        return dataframe_from_dicts(read_jsonl(os.fspath(path)))

    # ----------------------------------------------------------------- result cache

    @staticmethod
    def read_cache(cache: PathLike, key: str,
                   cache_key: Union[str, bytes, bool, None] = None) -> Optional[Dict[str, Any]]:
        """The result cache entry stored under ``key`` (see ``Tracker.cache_key``) as
        ``{"result", "cache", "created", "function_name"}``, or None. Only an entry whose
        MAC verifies with ``cache_key`` (default: ``XETRACK_C_CACHE_KEY``, else the
        per-user key file; ``False``: no authentication) is unpickled; any other raises
        ``xetrack_c.cache.UntrustedEntryError`` (see "Trust" in docs/cache.md)."""
        from xetrack_c.cache import read_cache

        return read_cache(cache, key, cache_key)

    @staticmethod
    def scan_cache(cache: PathLike,
                   cache_key: Union[str, bytes, bool, None] = None) -> Iterator[Tuple[str, Dict[str, Any]]]:
        """Every result cache entry as ``(key, entry)``; ``cache_key`` as ``read_cache``'s."""
        from xetrack_c.cache import scan_cache

        return scan_cache(cache, cache_key)

    @staticmethod
    def delete_cache_by_track_id(cache: PathLike, track_id: str) -> int:
        """Delete the result cache entries computed by the run ``track_id``; returns how many."""
        from xetrack_c.cache import delete_cache_by_track_id

        return delete_cache_by_track_id(cache, track_id)

    # ----------------------------------------------------------------- assets

    @property
    def assets(self) -> Any:
        """The file's assets (objects logged by hash): an ``xetrack_c.assets.AssetsManager``.
        Its ``get`` unpickles: only read files you trust."""
        from xetrack_c.assets import AssetsManager

        return AssetsManager(self.db)

    def remove_asset(self, hash_value: str, column: Optional[str], remove_keys: bool = True) -> bool:
        """Delete asset ``hash_value`` and, given ``column``, set that column of this table
        to NULL where it held it; ``remove_keys`` also drops its count and column keys."""
        from xetrack_c.assets import remove_asset

        return remove_asset(self.assets, self._execute, self._table_sql, hash_value, column,
                            remove_keys)

    # ----------------------------------------------------------------- writes

    def _execute(self, sql: str, params: Tuple[Any, ...] = ()) -> int:
        try:
            return _core.execute(self.db, sql, params)
        except StorageError as exc:
            raise self._translate(exc) from exc

    def _ensure_column(self, key: str, value: Any) -> None:
        if key in self.columns:
            return
        sql = (f"ALTER TABLE {self._table_sql} ADD COLUMN "
               f"{_core.quote_identifier(key)} {_sql_type(value)}")
        try:
            self._execute(sql)
        except StorageError as exc:
            # Another process added the same column first: that is what we wanted.
            if "duplicate column name" not in str(exc):
                raise

    def delete_run(self, track_id: str) -> bool:
        """Delete every row of the run ``track_id``; returns True (as xetrack)."""
        self._execute(f"DELETE FROM {self._table_sql} WHERE {_core.quote_identifier(TRACK_ID)} = ?",
                      (_sql_value(track_id),))
        return True

    def set_value(self, key: str, value: Any, track_id: Optional[str] = None) -> None:
        """Set column ``key`` to ``value`` in every row, or in the rows of ``track_id``.

        The key is sanitised as xetrack does; a missing column is added, typed from the
        value (bool -> BOOLEAN, int -> INTEGER, float -> REAL, bytearray -> BLOB, else TEXT).
        """
        column = _core.sanitize_key(key)
        self._ensure_column(column, value)
        sql = f"UPDATE {self._table_sql} SET {_core.quote_identifier(column)} = ?"
        params: Tuple[Any, ...] = (_sql_value(value),)
        if track_id is not None:
            sql += f" WHERE {_core.quote_identifier(TRACK_ID)} = ?"
            params += (_sql_value(track_id),)
        self._execute(sql, params)

    def set_where(self, key: str, value: Any, where_key: str, where_value: Any,
                  track_id: Optional[str] = None) -> None:
        """Set column ``key`` to ``value`` in the rows whose ``where_key`` equals
        ``where_value`` (None matches NULL), optionally only within run ``track_id``.

        Raises:
            ValueError: ``where_key`` is not a column of the table.
        """
        column, where_column = _core.sanitize_key(key), _core.sanitize_key(where_key)
        present = self.columns
        if where_column not in present:
            raise ValueError(
                f"where_key {where_key!r} is not a column of table {self.table_name!r}; "
                f"columns: {', '.join(present)}"
            )
        self._ensure_column(column, value)
        sql = (f"UPDATE {self._table_sql} SET {_core.quote_identifier(column)} = ? "
               f"WHERE {_core.quote_identifier(where_column)} IS ?")
        params: Tuple[Any, ...] = (_sql_value(value), _sql_value(where_value))
        if track_id is not None:
            sql += f" AND {_core.quote_identifier(TRACK_ID)} = ?"
            params += (_sql_value(track_id),)
        self._execute(sql, params)

    # ----------------------------------------------------------------- display

    def _summary(self) -> Tuple[int, int, Optional[int]]:
        """(rows, columns, runs); runs is None when the table has no track_id column."""
        names = self.columns
        if TRACK_ID in names:
            tid = _core.quote_identifier(TRACK_ID)
            rows, runs = self._rows(
                f"SELECT COUNT(*), COUNT(DISTINCT {tid}) FROM {self._table_sql}")[0]
        else:
            rows, runs = len(self), None
        return int(rows), len(names), runs

    def _summary_line(self) -> str:
        rows, ncols, runs = self._summary()
        text = f"{rows:,} rows x {ncols} columns"
        if runs is None:
            return text
        return f"{text}, {runs:,} run{'' if runs == 1 else 's'}"

    def report(self, path: PathLike, title: Optional[str] = None) -> str:
        """Write one self-contained HTML report of every table of this file to ``path``
        (tables, runs, metric summaries, learning curves, failures, environment; see
        docs/report.md). Charts need matplotlib (the `report` extra). Returns ``path``."""
        from xetrack_c.report import write_report

        return write_report(self.db, os.fspath(path), lambda table: Reader(
            self.db, engine=self.engine, table=table).to_df(), title=title)

    def __repr__(self) -> str:
        head = f"Reader({self.db!r}, table={self.table_name!r})"
        try:
            columns = self.to_arrays(head=_REPR_ROWS)
            summary = self._summary_line()
        except Exception as exc:  # a repr must not raise: show why it cannot read
            return f"{head}: {type(exc).__name__}: {exc}"
        names = list(columns)
        cells = [[_short(value) for value in values] for values in columns.values()]
        widths = [max([len(name)] + [len(cell) for cell in column])
                  for name, column in zip(names, cells, strict=True)]
        lines = [head + ": " + summary,
                 "  ".join(name.ljust(width) for name, width in zip(names, widths, strict=True))]
        nrows = len(cells[0]) if cells else 0
        for i in range(nrows):
            lines.append("  ".join(column[i].ljust(width) for column, width in zip(cells, widths, strict=True)))
        return "\n".join(line.rstrip() for line in lines)

    def _repr_html_(self) -> str:
        try:
            columns = self.to_arrays(head=_REPR_ROWS)
            summary = self._summary_line()
        except Exception as exc:
            return (f"<p><b>Reader</b> <code>{html.escape(self.db)}</code>: "
                    f"{html.escape(type(exc).__name__)}: {html.escape(str(exc))}</p>")
        from xetrack_c._preview import html_preview, numeric_names, numeric_stats

        title = (f"<b>Reader</b> <code>{html.escape(self.db)}</code> table "
                 f"<code>{html.escape(self.table_name)}</code>")
        try:
            stats = numeric_stats(self._columns, self._table_sql, numeric_names(columns))
        except Exception:  # a repr must not raise: the rows are shown without the footer
            stats = {}
        return html_preview(title, summary, columns, stats)


def _short(value: Any, limit: int = 40) -> str:
    text = "NULL" if value is None else str(value)
    if text == "nan" and isinstance(value, float):
        text = "NULL"  # SQLite has no NaN: a NaN in a read column is a NULL
    return text if len(text) <= limit else text[: limit - 3] + "..."
