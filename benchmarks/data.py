"""The rows every contender writes, and the SQL of the xetrack layout.

Key ``k<c>`` of row ``r`` holds, by ``c % 3``: an int ``r * 31 + c``, a float
``r * 0.5 + c / 8``, or a str ``"v<c>-<r % 1000>"``. With 10 keys that is 4 ints, 3 floats and
3 strs. benchmarks/c/ceiling.c writes exactly the same values.
"""

from __future__ import annotations

import datetime
import sqlite3
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

TRACK_ID = "bench-python-0001"
TABLE = '"default"'


def value(row: int, col: int) -> Any:
    """The value of key ``k<col>`` in row ``row``."""
    kind = col % 3
    if kind == 0:
        return row * 31 + col
    if kind == 1:
        return row * 0.5 + col / 8.0
    return f"v{col}-{row % 1000}"


def make_row(row: int, ncols: int = 10) -> dict[str, Any]:
    """One row as the dict a user would log."""
    return {f"k{col}": value(row, col) for col in range(ncols)}


def make_rows(nrows: int, ncols: int = 10) -> list[dict[str, Any]]:
    """``nrows`` rows of ``ncols`` keys."""
    return [make_row(row, ncols) for row in range(nrows)]


def sql_type(col: int) -> str:
    """SQLite type of key ``k<col>``, as xetrack assigns it from the first value."""
    return ("INTEGER", "REAL", "TEXT")[col % 3]


def create_sql(ncols: int) -> str:
    """The table xetrack (and xetrack_c) end up with after logging these rows."""
    columns = ", ".join(f'"k{col}" {sql_type(col)}' for col in range(ncols))
    return (f"CREATE TABLE {TABLE} (track_id TEXT, timestamp TEXT, {columns}, "
            "PRIMARY KEY (track_id, timestamp))")


def insert_sql(ncols: int) -> str:
    """A prepared INSERT for track_id, timestamp and the keys."""
    names = ", ".join(f'"k{col}"' for col in range(ncols))
    marks = ", ".join("?" for _ in range(ncols + 2))
    return f"INSERT INTO {TABLE} (track_id, timestamp, {names}) VALUES ({marks})"


def timestamps(count: int, first: int = 0,
               start: datetime.datetime | None = None) -> list[str]:
    """``count`` distinct timestamps one microsecond apart, in xetrack's format."""
    start = start or datetime.datetime.now()
    step = datetime.timedelta(microseconds=1)
    return [(start + step * (first + index)).strftime("%Y-%m-%d %H:%M:%S.%f")
            for index in range(count)]


def open_sqlite(path: Path, synchronous: str = "NORMAL") -> sqlite3.Connection:
    """A connection in autocommit mode (explicit BEGIN/COMMIT), WAL, given synchronous level."""
    conn = sqlite3.connect(str(path), isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute(f"PRAGMA synchronous={synchronous}")
    return conn


def executemany_seconds(path: Path, rows: Sequence[dict[str, Any]], ncols: int) -> float:
    """Python's practical ceiling: one transaction, ``executemany`` over the rows.

    Values are taken from the dicts inside the timed region; the timestamps are made before it.
    """
    conn = open_sqlite(path)
    try:
        conn.execute(create_sql(ncols))
        stamps = timestamps(len(rows))
        sql = insert_sql(ncols)
        start = time.perf_counter()
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany(sql, ((TRACK_ID, stamp, *row.values()) for stamp, row in zip(stamps, rows, strict=True)))
        conn.execute("COMMIT")
        return time.perf_counter() - start
    finally:
        conn.close()


def execute_per_row_seconds(path: Path, rows: Sequence[dict[str, Any]], ncols: int,
                            synchronous: str = "NORMAL") -> float:
    """Python's ceiling for a committed row per call: execute + commit for every row."""
    conn = open_sqlite(path, synchronous)
    try:
        conn.execute(create_sql(ncols))
        stamps = timestamps(len(rows))
        sql = insert_sql(ncols)
        execute = conn.execute
        start = time.perf_counter()
        for stamp, row in zip(stamps, rows, strict=True):
            execute("BEGIN IMMEDIATE")
            execute(sql, (TRACK_ID, stamp, *row.values()))
            execute("COMMIT")
        return time.perf_counter() - start
    finally:
        conn.close()


def fill_database(path: Path, nrows: int, ncols: int = 10, chunk: int = 100_000) -> None:
    """Write ``nrows`` rows in the xetrack layout from Python (when the C ceiling is absent)."""
    conn = open_sqlite(path)
    try:
        conn.execute(create_sql(ncols))
        sql = insert_sql(ncols)
        start = datetime.datetime.now()
        conn.execute("BEGIN IMMEDIATE")
        for first in range(0, nrows, chunk):
            count = min(chunk, nrows - first)
            stamps = timestamps(count, first, start)
            conn.executemany(sql, ((TRACK_ID, stamps[i], *make_row(first + i, ncols).values())
                                   for i in range(count)))
        conn.execute("COMMIT")
    finally:
        conn.close()
