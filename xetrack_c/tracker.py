"""The Tracker: xetrack's API over the native write path in ``xetrack_c._core``."""

from __future__ import annotations

import _thread
import _weakref
import atexit
import os
import sys
import warnings as _warnings

from xetrack_c import _core

# Annotations only: `typing` (with the re, collections and contextlib it loads) stays out of
# `import xetrack_c` (docs/design.md, "Import cost"; tests/test_import_cost.py).
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Callable, Dict, Iterable, List, Optional, Union

TIMESTAMP_FORMAT = "%Y-%m-%d %H:%M:%S.%f"
_TABLE_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-")
_SQL_TYPES = {"INTEGER": int, "REAL": float, "TEXT": str, "BLOB": bytearray, "BOOLEAN": bool}

# The trackers alive, id -> weak reference (a weakref.WeakSet without weakref's imports).
_open_trackers: "Dict[int, Any]" = {}
_open_lock = _thread.allocate_lock()  # threading.Lock, without threading's imports


def _forget_tracker(key: int) -> Callable[[Any], None]:
    """The callback that drops a dead tracker's entry (runs as it is freed, before its id
    can be reused; dict.pop needs no lock under the GIL)."""
    return lambda _ref: _open_trackers.pop(key, None)


class _AssetHookOnFirstUse:
    """The tracker's asset hook, loading :mod:`xetrack_c.assets` (pickle, base64, typing)
    only when a row first holds an object, so ``Tracker(...)`` and ``log()`` of plain
    values import nothing more."""

    __slots__ = ("compress", "_hook")

    def __init__(self, compress: bool) -> None:
        self.compress = compress
        self._hook: Any = None

    def __call__(self, column: str, value: Any) -> Any:
        hook = self._hook
        if hook is None:
            from xetrack_c.assets import AssetHook

            hook = self._hook = AssetHook(self.compress)
        return hook(column, value)


def _flush_all() -> None:
    """Flush every async tracker (at exit and before fork), so queued rows are written."""
    with _open_lock:
        trackers = [t for t in (ref() for ref in list(_open_trackers.values())) if t is not None]
    for tracker in trackers:
        if tracker.durability == "async" and not tracker.closed:
            try:
                tracker.flush()
            except Exception:  # noqa: BLE001 - at exit, report and go on
                pass


atexit.register(_flush_all)
os.register_at_fork(before=_flush_all)


def _validate_table(table: str) -> str:
    if not isinstance(table, str):
        raise TypeError(f"table must be a str, not {type(table).__name__}")
    if table.startswith("db."):  # xetrack's duckdb-style name for the same table
        table = table[3:]
    valid = 0 < len(table) <= 64 and set(table) <= _TABLE_CHARS and not table[0].isdigit()
    if not valid or table[0] == "-" or table.lower().startswith("sqlite_"):
        raise ValueError(
            f"invalid table name {table!r}: use 1-64 letters, digits, '_' or '-', starting "
            "with a letter or '_' (and not 'sqlite_', which SQLite reserves)"
        )
    return table


def _quote(name: str) -> str:
    return _core.quote_identifier(name)


def _remote_buffer() -> Any:
    """The row buffer of the remote task running in this context, or None.

    A remote task is set up by xetrack_c.run.remote_buffer; until something imports that module no
    task can be running, and ordinary scripts do not pay for importing it."""
    buffers = sys.modules.get("xetrack_c.run.remote_buffer")
    return buffers.active() if buffers is not None else None


class Tracker(_core.TrackerCore):
    """Track experiments, benchmarks and function calls into a SQLite file.

    Mirrors xetrack's ``Tracker``: every ``log()`` writes one row made of the tracker's
    ``params``, the logged keys, ``timestamp`` and ``track_id``.

    Args:
        db: Path of the SQLite file, ``Tracker.IN_MEMORY`` or ``Tracker.SKIP_INSERT``.
        params: Values added to every row.
        reset: Drop the table first.
        raise_on_error: Re-raise exceptions of tracked functions (after logging them).
        track_id: Id of this run; a fresh ``adjective-noun-NNNN`` id by default.
        warnings: Emit warnings (e.g. overridden keys in results).
        git_root: Record the current commit of this repository as ``git_commit_hash``.
        engine: ``"sqlite"`` or ``"duckdb"``; both write the same SQLite file.
        table: Table name (letters, digits, ``_``, ``-``).
        durability: ``"commit"`` (each row committed before ``log()`` returns),
            ``"fsync"`` (also survives power loss) or ``"async"`` (queued, written by a
            background thread; flushed by ``flush()``, ``close()``, reads, exit, fork).
        busy_timeout: Seconds to wait for other writers before giving up.
        logs_stdout: Also print every logged row to stdout (needs loguru:
            ``pip install loguru``, or the `logs` extra).
        logs_path: Also append every logged row to text logs in this directory, as
            xetrack writes them (needs loguru); read back with ``Reader.read_logs``.
        logs_file_format: File name of the text logs (default ``{time:YYYY-MM-DD}.log``).
        jsonl: Also append every logged row to this JSONL file (``Reader.read_jsonl``).
        queue_size: Rows the async queue holds before ``log()`` waits.
        cache: Directory of the result cache (``<cache>/cache.db``, created if needed);
            ``track()`` then returns stored results of calls it has seen (see
            docs/cache.md). ``None`` turns the cache off.
        cache_key: The secret that authenticates cache entries (an entry whose MAC does
            not verify is never unpickled): a ``str`` or ``bytes`` key shared by every
            machine that uses the cache; ``None`` (default) reads ``XETRACK_C_CACHE_KEY``,
            else the per-user key file ``~/.config/xetrack_c/cache.key`` (made on first
            use); ``False`` opts out of authentication (only for a cache directory nobody
            else can write). See "Trust" in docs/cache.md.
        log_environment: Record the host, the Python version, the versions of xetrack_c,
            numpy and pandas (``env_*``) and the git commit of the current directory
            (``git_commit_hash``) as params of every row.
    """

    IN_MEMORY: str = ":memory:"
    SKIP_INSERT: str = "SKIP_INSERT"

    def __init__(
        self,
        db: Union[str, "os.PathLike[str]"] = "track.db",
        params: Optional[Dict[str, Any]] = None,
        reset: bool = False,
        log_system_params: bool = False,
        log_network_params: bool = False,
        raise_on_error: bool = True,
        measurement_interval: float = 1,
        track_id: Optional[str] = None,
        logs_path: Optional[str] = None,
        logs_file_format: Optional[str] = None,
        logs_stdout: bool = False,
        jsonl: Optional[str] = None,
        cache: Optional[str] = None,
        compress: bool = False,
        warnings: bool = True,
        git_root: Optional[str] = None,
        engine: str = "sqlite",
        table: str = "default",
        durability: str = "commit",
        busy_timeout: float = 60.0,
        queue_size: int = 16384,
        cache_key: Union[str, bytes, bool, None] = None,
        log_environment: bool = False,
    ) -> None:
        if engine not in ("sqlite", "duckdb"):
            raise ValueError(f"engine={engine!r} is not supported: use 'sqlite' or 'duckdb'")
        if not isinstance(queue_size, int) or queue_size < 1:
            raise ValueError(f"queue_size must be a positive int, got {queue_size!r}")
        table = _validate_table(table)
        db = os.fspath(db)
        if not isinstance(db, str):
            raise TypeError(f"db must be a str path, not {type(db).__name__}")
        buffer = _remote_buffer()
        if buffer is not None and buffer.redirects(db):
            db, cache = self.IN_MEMORY, None  # a remote task: the rows travel to the driver
        else:
            buffer = None
        skip_insert = db == self.SKIP_INSERT
        if skip_insert:
            db = self.IN_MEMORY
        elif db != self.IN_MEMORY:
            if os.path.isdir(db):
                raise IsADirectoryError(f"db={db!r} is a directory: pass a file path, e.g. {db}/track.db")
            parent = os.path.dirname(db)
            if parent:
                os.makedirs(parent, exist_ok=True)
        git_commit = None
        if git_root:  # before the file is made: a bad git_root leaves nothing behind
            from xetrack_c._git import commit_hash

            git_commit = commit_hash(git_root)
        if log_environment:  # as params, so every row carries them (docs/tracker.md)
            from xetrack_c.environment import environment_params

            params = {**environment_params(), **(params or {})}
        sampler = None
        if log_system_params or log_network_params:
            from xetrack_c.system import SystemSampler

            sampler = SystemSampler(measurement_interval, log_system_params, log_network_params)
        cache_store = _open_cache(cache, cache_key) if cache else None
        experiment_id = _task_experiment_id()
        if experiment_id is not None and "experiment_id" not in (params or {}):
            params = {**(params or {}), "experiment_id": experiment_id}
        super().__init__(
            db,
            table,
            track_id=track_id,
            params=dict(params) if params else None,
            durability=durability,
            reset=reset,
            busy_timeout=busy_timeout,
            queue_size=queue_size,
            skip_insert=skip_insert,
            cache=cache_store,
        )
        self._engine_name = engine
        self.compress = bool(compress)
        # Objects logged go to the assets tables; a tracker that stores nothing shows them
        # as their text instead of the hash of a pickle kept nowhere.
        self._asset_hook = None if skip_insert else _AssetHookOnFirstUse(self.compress)
        self.raise_on_error = bool(raise_on_error)
        self.warnings = bool(warnings)
        self.measurement_interval = measurement_interval
        self.logs_path, self.logs_stdout, self.jsonl_path = logs_path, bool(logs_stdout), jsonl
        self.log_system_params = bool(log_system_params)
        self.log_network_params = bool(log_network_params)
        if sampler is not None:
            import weakref

            sampler.start()
            self._system = sampler
            weakref.finalize(self, sampler.stop)
        self.logs_file_format = logs_file_format
        self.logger = None
        if logs_stdout or logs_path or jsonl:  # logs off: log() stays the C method, untouched
            from xetrack_c.logging import Logger, attach

            attach(self, Logger(stdout=bool(logs_stdout), logs_path=logs_path,
                                file_format=logs_file_format, jsonl=jsonl))
        self.git_root = git_root
        self.cache_path = os.fspath(cache) if cache else None
        # The opt-out travels with a pickled tracker; a key never does (see __reduce__).
        self._cache_unauthenticated = cache_store is not None and not cache_store.authenticated
        if self.params:
            self._ensure_columns(self.params)
            self._record_params(list(self.params))
        if git_commit is not None:
            self.set_param("git_commit_hash", git_commit)
        with _open_lock:
            _open_trackers[id(self)] = _weakref.ref(self, _forget_tracker(id(self)))
        if buffer is not None:
            buffer.adopt(self)

    # ------------------------------------------------------------------ pickling
    def __reduce__(self):
        """A tracker crosses process boundaries as its settings; the child reconnects."""
        if self.db == self.IN_MEMORY:
            raise TypeError("an in-memory Tracker cannot be sent to another process; use a file")
        if self.durability == "async" and not self.closed:
            self.flush()
        settings = {
            "db": self.db,
            "params": dict(self.params),
            "track_id": self.track_id,
            "table": self.table_name,
            "durability": self.durability,
            "raise_on_error": self.raise_on_error,
            "warnings": self.warnings,
            "engine": self._engine_name,
            "cache": self.cache_path,
            "logs_path": self.logs_path,
            "logs_stdout": self.logs_stdout,
            "logs_file_format": self.logs_file_format,
            "jsonl": self.jsonl_path,
            "log_system_params": self.log_system_params,
            "log_network_params": self.log_network_params,
            "measurement_interval": self.measurement_interval,
            "compress": self.compress,
            # Not the key: a pickle may be written to shared storage (submitit does). The
            # clone finds the key where this process did, or in XETRACK_C_CACHE_KEY.
            "cache_key": False if self._cache_unauthenticated else None,
        }
        return (_rebuild_tracker, (settings,))

    @property
    def engine(self) -> Any:
        """SQL on this tracker's table, as xetrack's ``tracker.engine``: ``execute_sql``,
        ``execute``, ``table_name``, ``columns`` (see :mod:`xetrack_c.engine`); its
        ``name`` is ``"sqlite"`` or ``"duckdb"``."""
        engine = self.__dict__.get("_engine")
        if engine is None:
            from xetrack_c.engine import TrackerEngine

            engine = self.__dict__["_engine"] = TrackerEngine(self, self._engine_name)
        return engine

    # ------------------------------------------------------------------ assets
    @property
    def assets(self) -> Any:
        """The database's assets (objects logged by hash): an ``AssetsManager``."""
        from xetrack_c.assets import AssetsManager

        return AssetsManager(self.db, compress=self.compress, tracker=self)

    def get(self, key: str) -> Any:
        """The asset whose hash is ``key``, or the last one logged under column ``key``;
        None when there is none.  Unpickles it: only read files you trust."""
        return self.assets.get(key)

    def remove_asset(self, hash_value: str, column: Optional[str], remove_keys: bool = True) -> bool:
        """Delete asset ``hash_value`` and, given ``column``, set that column to NULL in the
        rows that held it; ``remove_keys`` also drops its count and column keys."""
        from xetrack_c.assets import remove_asset

        return remove_asset(self.assets, self._execute, _quote(self.table_name), hash_value,
                            column, remove_keys)

    # ------------------------------------------------------------------ context manager
    def __enter__(self) -> "Tracker":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.close()

    def close(self) -> None:
        """Flush queued rows, close the database and stop the system-metrics sampler."""
        sampler = self._system
        try:
            super().close()
        finally:
            if sampler is not None:
                sampler.stop()

    # ------------------------------------------------------------------ params
    def set_param(self, key: str, value: Any) -> str:
        """Add ``key: value`` to every later row (the column is created now)."""
        self.params[key] = value
        self._ensure_columns({key: value})
        self._record_params([key])
        return key

    def _record_params(self, keys: List[str]) -> None:
        """Note ``keys`` as this run's params in the file's params table (see
        docs/tracker.md), so readers tell params from metrics."""
        if self.db == self.IN_MEMORY:
            return
        from xetrack_c.param_record import CREATE_TABLE, ID_COLUMNS, RECORD_BATCH, record_sql

        names = [name for name in dict.fromkeys(_core.sanitize_key(key) for key in keys)
                 if name not in ID_COLUMNS]
        for start in range(0, len(names), RECORD_BATCH):
            chunk = names[start:start + RECORD_BATCH]
            sql = record_sql(len(chunk))
            values = tuple(v for name in chunk for v in (self.table_name, self.track_id, name))
            try:
                self._execute(sql, values)
            except _core.Error as exc:
                if "no such table" not in str(exc):
                    raise
                self._execute(CREATE_TABLE)
                self._execute(sql, values)

    def set_params(self, params: Dict[str, Any]) -> None:
        """Add several params at once."""
        for key, value in params.items():
            self.set_param(key, value)

    # ------------------------------------------------------------------ back-filling
    def set_value(self, key: str, value: Any) -> None:
        """Set ``key`` to ``value`` on every row of this run (adding the column if new)."""
        (column,) = self._ensure_columns({key: value})
        self._execute(
            f"UPDATE {_quote(self.table_name)} SET {_quote(column)} = ? WHERE track_id = ?",
            (value, self.track_id),
        )

    def set_where(self, key: str, value: Any, where_key: str, where_value: Any) -> None:
        """Set ``key`` to ``value`` on this run's rows where ``where_key == where_value``."""
        (column,) = self._ensure_columns({key: value})
        where_column = _core.sanitize_key(where_key)
        if where_column.lower() not in {c.lower() for c in self.columns}:
            raise KeyError(f"no column {where_key!r} in table {self.table_name!r}")
        self._execute(
            f"UPDATE {_quote(self.table_name)} SET {_quote(column)} = ? "
            f"WHERE {_quote(where_column)} = ? AND track_id = ?",
            (value, where_value, self.track_id),
        )

    # ------------------------------------------------------------------ schema
    @property
    def _table_info(self) -> List[tuple]:
        return self._query("SELECT name, type FROM pragma_table_info(?)", (self.table_name,))[1]

    @property
    def columns(self) -> set:
        """Column names of the table."""
        return {name for name, _ in self._table_info}

    @property
    def dtypes(self) -> Dict[str, Any]:
        """Column name -> Python type of the column's declared SQL type."""
        return {name: _SQL_TYPES.get(sql_type.upper()) for name, sql_type in self._table_info}

    # ------------------------------------------------------------------ counting
    def __len__(self) -> int:
        return self.count_run()

    def count_run(self) -> int:
        """Rows of this run."""
        sql = f"SELECT count(*) FROM {_quote(self.table_name)} WHERE track_id = ?"
        return self._query(sql, (self.track_id,))[1][0][0]

    def count_all(self) -> int:
        """Rows of every run in the table."""
        return self._query(f"SELECT count(*) FROM {_quote(self.table_name)}")[1][0][0]

    # ------------------------------------------------------------------ reading
    def _frame(self, sql: str, params: Iterable[Any] = ()):
        from xetrack_c._dataframe import frame_from_columns, text_buffers_usable

        columns = self._read_columns(sql, tuple(params), text_buffers=text_buffers_usable())
        return frame_from_columns(columns)

    def to_df(self, all: bool = False):  # noqa: A002 - xetrack's name
        """This run's rows (every run's with ``all=True``) as a DataFrame."""
        table = _quote(self.table_name)
        if all:
            return self._frame(f"SELECT * FROM {table}")
        return self._frame(f"SELECT * FROM {table} WHERE track_id = ?", (self.track_id,))

    def head(self, n: int = 5):
        """The first ``n`` rows of this run."""
        sql = f"SELECT * FROM {_quote(self.table_name)} WHERE track_id = ? ORDER BY timestamp LIMIT ?"
        return self._frame(sql, (self.track_id, int(n)))

    def tail(self, n: int = 5):
        """The last ``n`` rows of this run, newest first (as xetrack)."""
        sql = f"SELECT * FROM {_quote(self.table_name)} WHERE track_id = ? ORDER BY timestamp DESC LIMIT ?"
        return self._frame(sql, (self.track_id, int(n)))

    def __getitem__(self, item: Union[str, int]) -> Any:
        """``tracker["col"]``: that column of this run; ``tracker[i]``: the i-th row (1-based,
        across the table, as xetrack) as a dict, or None."""
        if isinstance(item, str):
            column = _core.sanitize_key(item)
            if column.lower() not in {c.lower() for c in self.columns}:
                raise KeyError(f"no column {item!r} in table {self.table_name!r}")
            sql = f"SELECT {_quote(column)} FROM {_quote(self.table_name)} WHERE track_id = ?"
            return self._frame(sql, (self.track_id,))[column]
        if isinstance(item, int) and not isinstance(item, bool):
            names, rows = self._query(
                f"SELECT * FROM {_quote(self.table_name)} LIMIT 1 OFFSET ?", (max(item - 1, 0),)
            )
            return dict(zip(names, rows[0], strict=True)) if rows else None
        raise TypeError(f"tracker[...] takes a column name or a row number, not {type(item).__name__}")

    def to_csv(self, path: str, all: bool = False) -> None:  # noqa: A002
        """Write this run (or every run) to a CSV file."""
        self.to_df(all).to_csv(path, index=False)

    def to_parquet(self, path: str, all: bool = False) -> None:  # noqa: A002
        """Write this run (or every run) to a Parquet file (needs pyarrow)."""
        self.to_df(all).to_parquet(path, index=False)

    def _repr_html_(self) -> str:
        """Notebook preview: this run's first rows and a summary line."""
        import html

        from xetrack_c._preview import html_preview, numeric_names, numeric_stats

        title = (
            f"<b>Tracker</b> <code>{html.escape(self.db)}</code> table "
            f"<code>{html.escape(self.table_name)}</code> run <code>{html.escape(self.track_id)}</code>"
        )
        if self.closed:
            return f"<p>{title}: closed</p>"
        sql = f"SELECT * FROM {_quote(self.table_name)} WHERE track_id = ? ORDER BY timestamp LIMIT 5"
        columns = self._read_columns(sql, (self.track_id,))
        summary = f"{self.count_run():,} rows in this run, {len(columns)} columns"
        stats = numeric_stats(self._read_columns, _quote(self.table_name), numeric_names(columns),
                              " WHERE track_id = ?", (self.track_id,))
        return html_preview(title, summary, columns, stats)

    def __repr__(self) -> str:
        state = "closed" if self.closed else f"{self.durability}"
        return f"Tracker(db={self.db!r}, table={self.table_name!r}, track_id={self.track_id!r}, {state})"

    # ------------------------------------------------------------------ ids and time
    @staticmethod
    def generate_track_id() -> str:
        """A fresh ``adjective-noun-NNNN`` id."""
        return _core.generate_track_id()

    @staticmethod
    def get_timestamp() -> str:
        """Local time in xetrack's format, ``%Y-%m-%d %H:%M:%S.%f``."""
        from datetime import datetime

        return datetime.now().strftime(TIMESTAMP_FORMAT)

    # ------------------------------------------------------------------ functions
    # track(func, params=None, args=None, kwargs=None, cache_force=False) is implemented
    # in C (TrackerCore.track); it calls back into _unpack and _merge_result only when an
    # argument may be a dataclass/pydantic model or a dict result needs override warnings.

    def _unpack(self, func: Callable[..., Any], args: List[Any], kwargs: Dict[str, Any]) -> Dict[str, Any]:
        from xetrack_c._unpack import unpack_arguments

        return unpack_arguments(func, args, kwargs, self._warn)

    def _merge_result(self, row: Dict[str, Any], result: Dict[str, Any]) -> None:
        if self.warnings:
            for key in ("function_time", "function_result", "function_name"):
                if key in result:
                    self._warn(f"the result's {key!r} overrides the tracked {key!r}")
        row.update(result)

    def wrap(self, params: Optional[Dict[str, Any]] = None) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        """A decorator that tracks every call of the function (keeps its name and docstring)."""

        import functools

        def decorator(func: Callable[..., Any]) -> Callable[..., Any]:
            @functools.wraps(func)
            def tracked(*args: Any, **kwargs: Any) -> Any:
                return self.track(func, params=params, args=list(args), kwargs=kwargs)

            return tracked

        return decorator

    def cache_key(
        self,
        func: Callable[..., Any],
        args: Optional[List[Any]] = None,
        kwargs: Optional[Dict[str, Any]] = None,
        params: Optional[Dict[str, Any]] = None,
    ) -> Optional[str]:
        """The key ``track(func, params, args, kwargs)`` uses in the result cache (a 32-digit
        hex digest, with this tracker's params included), or None if the call cannot be
        cached. Look the entry up with ``Reader.read_cache(cache_dir, key)``."""
        cache = self.cache
        if cache is not None:
            return cache.key(func, args, kwargs, params, self.params)
        return _core.cache_key(func, args, kwargs, params, self.params)

    # xetrack 0.7's name for it, which its scripts and tests call: the same key.
    _generate_cache_key = cache_key

    def _warn(self, message: str) -> None:
        if self.warnings:
            _warnings.warn(message, stacklevel=3)


def _task_experiment_id() -> Optional[str]:
    """The id of the run_multiple experiment this code runs in, else None.

    The run layer sits above the tracker, so it is asked only when loaded: the child API
    (thread tasks, and any task that imported it), a process worker that has not loaded
    it yet (its task's values, as the child API adopts them), or the environment a
    script task starts with.
    """
    child = sys.modules.get("xetrack_c.run.child")
    if child is not None:
        return child.get_experiment_id()
    worker = sys.modules.get("xetrack_c.run.process_worker")
    task = getattr(worker, "current_task", None)
    if task is not None:
        return task[0]  # TaskInfo's first field
    return os.environ.get("XETRACK_C_EXPERIMENT_ID") or None


def _open_cache(cache: Union[str, "os.PathLike[str]"],
                cache_key: Union[str, bytes, bool, None] = None) -> Optional["_core.ResultCache"]:
    """The cache of directory ``cache``, authenticated with the key ``cache_key`` leads to
    (see xetrack_c.cache_auth); None, said once per process, if no key can be had."""
    from xetrack_c.cache_auth import CacheKeyUnavailable, resolve_cache_key, warn_unavailable

    directory = os.fspath(cache)
    if not isinstance(directory, str):
        raise TypeError(f"cache must be a directory path (str), not {type(directory).__name__}")
    if os.path.exists(directory) and not os.path.isdir(directory):
        raise NotADirectoryError(
            f"cache={directory!r} is a file: pass a directory; the cache lives in {directory}/cache.db"
        )
    try:
        auth_key = resolve_cache_key(cache_key)
    except CacheKeyUnavailable as exc:
        warn_unavailable(exc, stacklevel=3)
        return None
    # Private by default: whoever can write the directory can delete or replay entries.
    # An existing directory keeps its mode (a cache shared on purpose).
    os.makedirs(directory, mode=0o700, exist_ok=True)
    return _core.ResultCache(directory, auth_key=auth_key)


def _rebuild_tracker(settings: Dict[str, Any]) -> Tracker:
    return Tracker(**settings)
