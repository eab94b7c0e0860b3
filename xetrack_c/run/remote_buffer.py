"""Rows logged inside a task that runs on an executor: kept in memory, shipped back.

Inside :func:`remote_task` (entered by the task wrappers of :mod:`xetrack_c.run.remote_task`),
``log_metrics`` and every ``Tracker`` opened on the batch's database write to in-memory
SQLite databases instead of a file. :meth:`RemoteBuffer.collect` turns what they hold into
:class:`Chunk` tuples that travel back with the task's result; on the driver,
:func:`write_chunks` inserts them, one ``log_batch`` transaction per chunk, so the driver
is the only process that writes the batch's database.
"""

from __future__ import annotations

import contextlib
import contextvars
import os
from typing import Any, Dict, Iterator, List, NamedTuple, Optional, Tuple

#: Chunk destination: the batch's database (``run_multiple(db=...)``).
BATCH = "batch"
#: Chunk destination: no database (a ``log_metrics`` call in a batch without ``db``); the
#: driver puts these rows in the task's ``ExperimentResult.metrics`` and writes no file.
STANDALONE = "standalone"
_SKIPPED_COLUMNS = ("track_id", "timestamp")


class Chunk(NamedTuple):
    """Rows of one table written by one run (``track_id``) inside a remote task."""

    destination: str
    table: str
    track_id: str
    columns: Tuple[str, ...]
    rows: List[tuple]


_active: contextvars.ContextVar[Optional["RemoteBuffer"]] = contextvars.ContextVar(
    "xetrack_c_remote_buffer", default=None
)


class RemoteBuffer:
    """The in-memory trackers of one remote task.

    Args:
        db: The batch's database as the driver named it (an absolute path), or None.
    """

    def __init__(self, db: Optional[str]) -> None:
        self.db = db
        self._trackers: List[Tuple[str, Any]] = []
        self._metrics: Dict[Tuple[str, str], Any] = {}
        self._harvested: List[Chunk] = []

    def redirects(self, db: str) -> bool:
        """True if a Tracker opened on ``db`` must keep its rows in memory."""
        return self.db is not None and db != ":memory:" and os.path.abspath(db) == self.db

    def adopt(self, tracker: Any, destination: str = BATCH) -> None:
        """Ship ``tracker``'s rows with the task's result (also if the task closes it:
        its rows are read just before).  Objects logged as assets are refused: only the
        rows travel back, and a hash without its asset would be a lost value."""
        self._trackers.append((destination, tracker))
        tracker._asset_hook = _refuse_asset
        close = tracker.close
        harvested = self._harvested

        def close_and_keep() -> None:
            if not tracker.closed:
                tracker.flush()
                harvested.extend(_read_chunks(tracker, destination))
            close()

        tracker.close = close_and_keep

    def metrics_tracker(self, db: str, table: str) -> Any:
        """The in-memory tracker ``log_metrics`` appends to for ``db`` and ``table``."""
        destination = BATCH if self.redirects(db) else STANDALONE
        key = (destination, table)
        tracker = self._metrics.get(key)
        if tracker is None:
            from xetrack_c.tracker import Tracker

            tracker = self._metrics[key] = Tracker(":memory:", table=table)
            self.adopt(tracker, destination)
        return tracker

    def collect(self) -> List[Chunk]:
        """Every buffered row, grouped by destination, table and track_id; closes the
        trackers."""
        try:
            for _, tracker in self._trackers:
                tracker.close()  # close_and_keep: reads the rows of an open tracker first
        finally:
            chunks, self._harvested = self._harvested, []
            self._trackers.clear()
        self._metrics.clear()
        return chunks


def _refuse_asset(column: str, value: Any) -> Any:
    """The asset hook of a tracker inside a remote task: a clear error, never a lost value."""
    raise ValueError(
        f"cannot log {column!r} (a {type(value).__name__}) inside a task run on an executor: "
        "objects are stored as assets, which do not travel back with the task's rows yet; "
        "save the object to a file and log its path, or log it from the driver"
    )


def _read_chunks(tracker: Any, destination: str) -> List[Chunk]:
    from xetrack_c import _core

    if tracker.closed:
        return []  # closed by the task: its in-memory rows are gone with its connection
    table = tracker.table_name
    names, rows = tracker._query(
        f"SELECT * FROM {_core.quote_identifier(table)} ORDER BY rowid"
    )
    return _group(destination, table, names, rows)


def _group(destination: str, table: str, names: Any, rows: List[tuple]) -> List[Chunk]:
    """The rows of one table as chunks, one per track_id, without track_id/timestamp."""
    names = list(names)
    if not rows or "track_id" not in names:
        return []
    track_at = names.index("track_id")
    keep = [i for i, name in enumerate(names) if name not in _SKIPPED_COLUMNS]
    columns = tuple(names[i] for i in keep)
    grouped: Dict[str, List[tuple]] = {}
    for row in rows:
        grouped.setdefault(row[track_at], []).append(tuple(row[i] for i in keep))
    return [Chunk(destination, table, track_id, columns, part)
            for track_id, part in grouped.items()]


def chunks_from_file(path: str, destination: str) -> List[Chunk]:
    """Every row of every table of the SQLite file ``path`` (a script task's buffer)."""
    from xetrack_c import _core

    if not os.path.isfile(path):
        return []
    _, tables = _core.read_rows(
        path, "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY rowid", ()
    )
    chunks: List[Chunk] = []
    for (table,) in tables:
        if table.startswith("sqlite_") or table == "xetrack_params":
            continue  # the params record is not rows (see xetrack_c.summary)
        names, rows = _core.read_rows(
            path, f"SELECT * FROM {_core.quote_identifier(table)} ORDER BY rowid", ()
        )
        chunks.extend(_group(destination, table, names, rows))
    return chunks


def active() -> Optional[RemoteBuffer]:
    """The buffer of the remote task running in this context, or None."""
    return _active.get()


@contextlib.contextmanager
def remote_task(db: Optional[str]) -> Iterator[RemoteBuffer]:
    """Buffer, for the duration of the block, what this context logs to ``db``."""
    buffer = RemoteBuffer(db)
    token = _active.set(buffer)
    try:
        yield buffer
    finally:
        _active.reset(token)


# ------------------------------------------------------------------ the driver's side
class ChunkWriter:
    """Writes shipped chunks on the driver: one Tracker per (file, table), kept open for
    the batch; each chunk is one ``log_batch`` transaction under the chunk's track_id.

    Args:
        db: The batch's database, or None (its chunks then go to the standalone file).
    """

    def __init__(self, db: Optional[str]) -> None:
        self.db = db
        self._trackers: Dict[Tuple[str, str], Any] = {}

    def _path(self, destination: str) -> str:
        if destination == BATCH and self.db is not None:
            return self.db
        from xetrack_c.run.child import STANDALONE_METRICS_DB

        return os.path.abspath(STANDALONE_METRICS_DB)

    def write(self, chunks: List[Chunk]) -> int:
        """Insert ``chunks``; returns the number of rows written."""
        written = 0
        for chunk in chunks:
            key = (self._path(chunk.destination), chunk.table)
            tracker = self._trackers.get(key)
            if tracker is None:
                from xetrack_c.tracker import Tracker

                tracker = self._trackers[key] = Tracker(key[0], table=chunk.table,
                                                        warnings=False)
            tracker.track_id = chunk.track_id
            columns = chunk.columns
            rows = [{name: value for name, value in zip(columns, row, strict=True)
                     if value is not None} for row in chunk.rows]
            rows = [row for row in rows if row]
            if rows:
                tracker.log_batch(rows)
                written += len(rows)
        return written

    def close(self) -> None:
        """Close the trackers (idempotent)."""
        trackers, self._trackers = self._trackers, {}
        for tracker in trackers.values():
            tracker.close()
