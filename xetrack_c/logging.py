"""Text and JSONL logs of tracked rows, in the files and formats xetrack 0.7 writes.

``Tracker(logs_stdout=True, logs_path="logs", jsonl="rows.jsonl")`` sends every row it logs
here as well as to the database. Three sinks, each optional:

- stdout: one line per record, ``<time> | <LEVEL> | <module>:<function>:<line>!📁!<json>``.
- ``logs_path``: the same lines appended to ``<logs_path>/<file_format>``, by default one
  file named after the day the logger was made (``2026-12-07.log``, no rotation). Both text
  sinks are written by loguru (``pip install loguru``, or the `logs` extra).
- ``jsonl``: one JSON object per tracked record (``timestamp`` in ISO 8601 with the UTC
  offset, ``level``, then the row's fields without the tracker's own ``timestamp``); written
  directly, so it needs no loguru.

The text delimiter is ``!📁!`` unless the ``LOGS_DELIMITER`` environment variable says
otherwise (read when a sink is made and when a file is read, as xetrack does). Reading back
needs no loguru either: :func:`read_logs` and :func:`read_jsonl`, or ``Reader.read_logs`` /
``Reader.read_jsonl`` for DataFrames.

Each :class:`Logger` owns its loguru handlers: two trackers with different sinks keep them
apart, and the handlers a program added to loguru's global ``logger`` are left alone.
"""

from __future__ import annotations

import json
import math
import os
import re
import sys
import weakref
from datetime import datetime
from typing import Any, Dict, List, Optional, Tuple

__all__ = [
    "DEFAULT_DELIMITER", "EXPERIMENT", "LOG_FILE_FORMAT", "MONITOR", "TRACKED_LEVELS", "TRACKING",
    "Logger", "attach", "delimiter", "jsonl_record", "line_format", "log_files", "read_jsonl",
    "read_log", "read_logs", "read_structured_log", "to_json",
]

MONITOR = "MONITOR"
TRACKING = "TRACKING"
EXPERIMENT = "EXPERIMENT"
# xetrack's level numbers: between INFO (20) and WARNING (30).
TRACKED_LEVELS = {MONITOR: 26, TRACKING: 27, EXPERIMENT: 28}
DEFAULT_DELIMITER = "!📁!"
LOG_FILE_FORMAT = "{time:YYYY-MM-DD}.log"
_TRACKED_WORD = re.compile(r"\b(MONITOR|EXPERIMENT|TRACKING)\b", re.IGNORECASE)


def delimiter() -> str:
    """The text that separates a log line's header from its JSON payload."""
    return os.getenv("LOGS_DELIMITER", DEFAULT_DELIMITER)


def line_format() -> str:
    """The loguru format of text log lines (stdout and files), as xetrack writes them."""
    header = (
        "<green>{time:YYYY-MM-DD HH:mm:ss.SSS}</green> | <level>{level: <8}</level> | "
        "<cyan>{name}</cyan>:<cyan>{function}</cyan>:<cyan>{line}</cyan>"
    )
    return f"{header}{delimiter()}<level>{{message}}</level>"


def _finite(value: Any) -> Any:
    """``value`` with NaN and infinities replaced by None, at any depth (JSON has no NaN)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(item) for item in value]
    return value


def _plain(value: Any) -> Any:
    """JSON fallback for values json cannot write: numpy scalars as their Python value,
    dates and times in ISO 8601 (as orjson writes them), bytes and everything else as
    ``str``."""
    isoformat = getattr(value, "isoformat", None)
    if callable(isoformat) and not isinstance(value, type):
        return isoformat()
    item = getattr(value, "item", None)
    if callable(item):
        try:
            return item()
        except (TypeError, ValueError):
            pass
    return str(value)


def to_json(data: Any, indent: Optional[int] = None) -> str:
    """``data`` as JSON the way xetrack writes it: UTF-8 text, compact unless ``indent``,
    NaN as null, values JSON lacks (bytes, objects) as strings."""
    separators = None if indent else (",", ":")
    options: Dict[str, Any] = {"ensure_ascii": False, "default": _plain, "separators": separators}
    try:
        return json.dumps(data, indent=indent, allow_nan=False, **options)
    except ValueError:  # a NaN or an infinity somewhere: rare, so only then walk the data
        return json.dumps(_finite(data), indent=indent, **options)


def jsonl_record(data: Dict[str, Any], level: str, when: Optional[datetime] = None) -> str:
    """One JSONL line: ``timestamp`` (ISO 8601, local time with offset), ``level``, then
    ``data``'s fields except its own ``timestamp``."""
    moment = when or datetime.now().astimezone()
    record: Dict[str, Any] = {"timestamp": moment.isoformat(), "level": level}
    for key, value in data.items():
        if key != "timestamp":
            record[key] = value
    return to_json(record) + "\n"


def _import_loguru() -> Any:
    try:
        import loguru
    except ImportError as exc:
        raise ImportError(
            "text logs (logs_stdout=, logs_path=, Logger(stdout=True)) need loguru: "
            "pip install loguru (or xetrack_c's `logs` extra, docs/install.md)"
        ) from exc
    return loguru


def _own_loguru_logger() -> Tuple[Any, bool]:
    """A loguru logger with handlers and levels of its own, and False; or loguru's global
    logger and True.

    loguru documents one way to get an independent logger (``copy.deepcopy`` of a logger
    without handlers), which would mean removing the handlers the program set up; so it is
    built as loguru builds its global logger. Should a later loguru change that
    constructor, the global logger is shared instead, its handlers filtered per Logger.
    """
    loguru = _import_loguru()
    from loguru import _logger as internals

    try:
        own = internals.Logger(
            core=internals.Core(), exception=None, depth=0, record=False, lazy=False,
            colors=False, raw=False, capture=True, patchers=[], extra={},
        )
    except (TypeError, AttributeError):
        return loguru.logger, True
    return own, False


class _Sinks:
    """The loguru handlers of one Logger; removed by ``close()`` or when it is freed."""

    def __init__(self, stdout: bool, logs_path: Optional[str], file_format: str,
                 prettify: bool) -> None:
        core, shared = _own_loguru_logger()
        for name, number in TRACKED_LEVELS.items():
            try:
                core.level(name, no=number, color="<blue>")
            except (TypeError, ValueError):  # already defined on the shared logger
                pass
        tag = f"xetrack_c-{id(self)}"
        only_mine = (lambda record: record["extra"].get("xetrack_c_sink") == tag) if shared else None
        self.logger = core.bind(xetrack_c_sink=tag) if shared else core
        handler_ids: List[int] = []
        if stdout:
            handler_ids.append(core.add(sys.stdout, format=line_format(), filter=only_mine))
        if logs_path:
            os.makedirs(logs_path, exist_ok=True)
            handler_ids.append(core.add(
                os.path.join(logs_path, file_format), format=line_format(),
                serialize=not prettify, filter=only_mine, encoding="utf-8",
            ))
        self._finalizer = weakref.finalize(self, _remove_handlers, core, handler_ids)

    def close(self) -> None:
        self._finalizer()


def _open_for_append(path: str) -> int:
    """A descriptor of ``path`` opened for appending (created, with its folder, if missing)."""
    if os.path.isdir(path):
        raise IsADirectoryError(f"jsonl={path!r} is a directory: pass a file path, e.g. {path}/rows.jsonl")
    parent = os.path.dirname(path)
    if parent:
        os.makedirs(parent, exist_ok=True)
    return os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o666)


def _remove_handlers(core: Any, handler_ids: List[int]) -> None:
    for handler_id in handler_ids:
        try:
            core.remove(handler_id)
        except ValueError:  # already removed
            pass


class Logger:
    """Writes tracked records and messages to stdout, daily text files and a JSONL file.

    Same constructor and methods as ``xetrack.logging.Logger``.

    Args:
        stdout: Print records and messages to standard output (needs loguru).
        logs_path: Directory of text log files (needs loguru); created if missing.
        file_format: File name inside ``logs_path``, a loguru path template
            (default ``"{time:YYYY-MM-DD}.log"``).
        prettify: Text files hold the formatted lines; ``False`` writes loguru's
            serialized JSON records instead (``{"text": ..., "record": ...}``).
        jsonl: Path of a JSONL file that receives MONITOR, TRACKING and EXPERIMENT
            records (not warnings or other messages).
    """

    def __init__(self, stdout: bool = True, logs_path: Optional[str] = None,
                 file_format: Optional[str] = None, prettify: bool = True,
                 jsonl: Optional[str] = None) -> None:
        self.stdout = bool(stdout)
        self.logs_path = os.fspath(logs_path) if logs_path else None
        self.file_format = file_format or LOG_FILE_FORMAT
        self.prettify = prettify
        self.jsonl = os.fspath(jsonl) if jsonl else None
        self._jsonl_fd: Optional[int] = None
        if self.jsonl:
            self._jsonl_fd = _open_for_append(self.jsonl)
            self._jsonl_finalizer = weakref.finalize(self, os.close, self._jsonl_fd)
        self._sinks: Optional[_Sinks] = None
        if self.stdout or self.logs_path:
            self._sinks = _Sinks(self.stdout, self.logs_path, self.file_format, self.prettify)

    @property
    def logger(self) -> Any:
        """The loguru logger behind the text sinks (None when only JSONL is written)."""
        return self._sinks.logger if self._sinks else None

    def close(self) -> None:
        """Remove this logger's loguru handlers and close its files; later records are
        dropped."""
        if self._sinks is not None:
            self._sinks.close()
            self._sinks = None
        if self._jsonl_fd is not None:
            self._jsonl_fd = None
            self._jsonl_finalizer()

    # ------------------------------------------------------------------ records
    def log(self, data: Any, level: str = MONITOR, indent: Optional[int] = None) -> None:
        """Write a record: a dict, a list of dicts or a DataFrame (each row a MONITOR
        record)."""
        if isinstance(data, dict):
            self._write(data, level, indent)
        elif isinstance(data, list):
            for row in data:
                self.monitor(row)
        elif hasattr(data, "to_dict") or hasattr(data, "to_dicts"):
            from xetrack_c._dataframe import df_to_dict_records

            for row in df_to_dict_records(data):
                self.monitor(row)
        else:
            raise TypeError(f"log() takes a dict, a list of dicts or a DataFrame, not {type(data).__name__}")

    def _write(self, data: Dict[str, Any], level: str, indent: Optional[int] = None) -> None:
        if self._sinks is not None:
            self._sinks.logger.opt(depth=2).log(level, to_json(data, indent))
        fd = self._jsonl_fd
        if fd is not None and level in TRACKED_LEVELS:
            # One write() per record to a file opened with O_APPEND: records written by
            # several threads or processes do not interleave.
            line = memoryview(jsonl_record(data, level).encode("utf-8"))
            while line:
                line = line[os.write(fd, line):]

    def monitor(self, data: Any) -> None:
        """Write ``data`` at the MONITOR level."""
        self.log(data, MONITOR)

    def track(self, data: Any) -> None:
        """Write ``data`` at the TRACKING level (what a Tracker writes for each row)."""
        self.log(data, TRACKING)

    def experiment(self, params: Dict[str, Any]) -> None:
        """Write ``params`` at the EXPERIMENT level, indented over several lines."""
        self.log(params, EXPERIMENT, indent=2)

    # ------------------------------------------------------------------ messages
    def _message(self, level: str, msg: str, *args: Any, **kwargs: Any) -> None:
        if self._sinks is not None:
            self._sinks.logger.opt(depth=2).log(level, msg, *args, **kwargs)

    def debug(self, msg: str, *args: Any, **kwargs: Any) -> None:
        """Write a DEBUG message to the text sinks."""
        self._message("DEBUG", msg, *args, **kwargs)

    def info(self, msg: str, *args: Any, **kwargs: Any) -> None:
        """Write an INFO message to the text sinks."""
        self._message("INFO", msg, *args, **kwargs)

    def warning(self, msg: str, *args: Any, **kwargs: Any) -> None:
        """Write a WARNING message to the text sinks."""
        self._message("WARNING", msg, *args, **kwargs)

    def error(self, msg: str, *args: Any, **kwargs: Any) -> None:
        """Write an ERROR message to the text sinks."""
        self._message("ERROR", msg, *args, **kwargs)

    # ------------------------------------------------------------------ reading
    @staticmethod
    def is_tracked_entry(text: str) -> List[str]:
        """The tracked level names (MONITOR, TRACKING, EXPERIMENT) found in ``text``."""
        return _TRACKED_WORD.findall(text)

    def read_structured_logs(self, path: str) -> List[Dict[str, Any]]:
        """The records of a file written with ``prettify=False``."""
        return read_structured_log(path)

    def read_log(self, path: str, level: Optional[str] = None) -> List[Dict[str, Any]]:
        """The records of one text log file, in file order (``level`` is accepted for
        xetrack's signature and, as there, not used)."""
        return read_log(path)

    def read_logs(self, path: Optional[str] = None, limit: Optional[int] = None) -> List[Dict[str, Any]]:
        """The records of every ``.log`` file under ``path`` (default: this logger's
        ``logs_path``), newest file first; at most ``limit`` files."""
        path = path if path is not None else self.logs_path
        if path is None:
            raise ValueError("read_logs needs a directory: pass path= or make the Logger with logs_path=")
        return read_logs(path, limit)


# ---------------------------------------------------------------------- reading (no loguru)
def log_files(path: str) -> List[str]:
    """Every ``*.log`` file under directory ``path``, newest name first."""
    found = [
        os.path.join(root, name)
        for root, _, names in os.walk(path)
        for name in names
        if name.endswith(".log")
    ]
    return sorted(found, reverse=True)


def _structured_entry(line: str) -> Optional[Dict[str, Any]]:
    """The record in a serialized (``prettify=False``) line, or None."""
    if not (line.startswith('{"text":') and _TRACKED_WORD.search(line)):
        return None
    text = json.loads(line)["text"]
    _, _, payload = text.partition(delimiter())
    try:
        value = json.loads(payload.strip())
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def read_structured_log(path: str) -> List[Dict[str, Any]]:
    """The records of a file written with ``prettify=False``."""
    with open(path, encoding="utf-8") as lines:
        return [entry for entry in map(_structured_entry, lines) if entry is not None]


def _parse_payload(payload: str, records: List[Dict[str, Any]]) -> None:
    try:
        value = json.loads(payload)
    except ValueError:  # a message, not a record
        return
    if isinstance(value, dict):
        records.append(value)


def read_log(path: str) -> List[Dict[str, Any]]:
    """The records of one text log file, in file order; lines that are not records
    (messages, tracebacks) are skipped. A record indented over several lines (EXPERIMENT)
    is joined back from its continuation lines."""
    mark = delimiter()
    records: List[Dict[str, Any]] = []
    pending: Optional[str] = None
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            entry = _structured_entry(line)
            if entry is not None:
                records.append(entry)
            elif mark in line:
                if pending is not None:
                    _parse_payload(pending, records)
                pending = line.split(mark)[1].strip()
            elif pending is not None:
                pending += line.strip()
    if pending is not None:
        _parse_payload(pending, records)
    return records


def read_logs(path: str, limit: Optional[int] = None) -> List[Dict[str, Any]]:
    """The records of every ``.log`` file under ``path``, newest file first; at most
    ``limit`` files."""
    if not os.path.isdir(path):
        raise FileNotFoundError(f"no log directory {path!r}: pass the logs_path the tracker wrote to")
    records: List[Dict[str, Any]] = []
    for file in log_files(path)[:limit]:
        records.extend(read_log(file))
    return records


def read_jsonl(path: str) -> List[Dict[str, Any]]:
    """The records of a JSONL file, one dict per non-blank line."""
    with open(path, encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


# ---------------------------------------------------------------------- a Tracker's logs
def _stored_value(value: Any) -> Any:
    """What a row holds for ``value`` (dicts, lists and tuples as their ``str``)."""
    return str(value) if isinstance(value, (dict, list, tuple)) else value


# tracker class -> its subclass whose log, log_batch, track and close also write the logs
_LOGGED_CLASSES: Dict[type, type] = {}


def _logged_class(cls: type) -> type:
    """``cls`` with ``log``, ``log_batch``, ``track`` and ``close`` that also write to the
    instance's ``logger`` (made once per class; same name, so reprs do not change)."""
    logged = _LOGGED_CLASSES.get(cls)
    if logged is not None:
        return logged
    from xetrack_c._core import sanitize_key

    def record_of(self: Any, data: Dict[Any, Any], row: Dict[str, Any]) -> Dict[str, Any]:
        # As xetrack: a SKIP_INSERT tracker logs the keys given, track_id and timestamp.
        if not self.skip_insert:
            return row
        keys = {sanitize_key(str(key)) for key in data} | {"timestamp", "track_id"}
        return {key: value for key, value in row.items() if key in keys}

    def log(self: Any, data: Dict[Any, Any]) -> Dict[str, Any]:
        row = cls.log(self, data)
        if row:
            self.logger.track(record_of(self, data, row))
        return row

    def log_batch(self: Any, data: List[Dict[Any, Any]]) -> Dict[str, Any]:
        last = cls.log_batch(self, data)
        if last:
            stamp = {"timestamp": last["timestamp"], "track_id": last["track_id"]}
            params = {} if self.skip_insert else dict(self.params)
            for event in data:
                fields = {sanitize_key(str(key)): _stored_value(value) for key, value in event.items()}
                self.logger.track({**params, **fields, **stamp})
        return last

    def track(self: Any, func: Any, params: Optional[Dict[str, Any]] = None,
              args: Optional[List[Any]] = None, kwargs: Optional[Dict[str, Any]] = None,
              cache_force: bool = False) -> Any:
        self.logger.debug(f"Running {getattr(func, '__name__', repr(func))} with {args} and {kwargs}")
        before = self.latest
        try:
            return cls.track(self, func, params, args, kwargs, cache_force)
        finally:
            row = self.latest
            if row is not before and row:
                self.logger.track(row)

    def close(self: Any) -> None:
        try:
            cls.close(self)
        finally:
            self.logger.close()

    methods = {"log": log, "log_batch": log_batch, "track": track, "close": close}
    for name, method in methods.items():
        method.__qualname__ = f"{cls.__qualname__}.{name}"
        method.__doc__ = getattr(cls, name).__doc__
    logged = type(cls.__name__, (cls,), {**methods, "__module__": cls.__module__,
                                          "__qualname__": cls.__qualname__,
                                          "__doc__": cls.__doc__})
    _LOGGED_CLASSES[cls] = logged
    return logged


def attach(tracker: Any, logger: Logger) -> None:
    """Make ``tracker``'s ``log``, ``log_batch``, ``track`` and ``close`` also write to
    ``logger``, and set ``tracker.logger``.

    The tracker's class becomes a subclass of its class (made once per class) whose methods
    call the class's and then write the records, so a tracker without logs keeps the C
    methods and pays nothing, and a logged tracker's bound methods keep it alive as any
    method does (``Tracker(..., jsonl=...).log(row)`` works) without a reference cycle.
    """
    tracker.logger = logger
    tracker.__class__ = _logged_class(type(tracker))
