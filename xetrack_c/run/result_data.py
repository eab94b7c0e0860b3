"""What a task hands back, as data: its return value as columns, its metrics as rows.

* :func:`result_columns` turns a function's return value into columns of its experiments
  row. A dict (or a dataclass / pydantic model) gives one column per key, as
  ``Tracker.track`` merges a dict result into its row; any other value goes to the column
  ``result``. Numbers, strings, bools, bytes and None are stored as themselves; lists,
  tuples and nested dicts whose contents JSON can encode as JSON text; anything else is
  left out with a :class:`RuntimeWarning` naming its type (there is no asset store yet,
  and a truncated ``repr`` is no record). A column that would take the name of one of the
  row's own columns (``status``, a config column...) is prefixed with ``result_``.
* :func:`metric_rows_from_file` and :func:`metric_rows_from_chunks` read back the
  ``log_metrics`` rows of a task in a batch without ``db``, for
  :attr:`ExperimentResult.metrics <xetrack_c.run.types.ExperimentResult.metrics>`.

Imports nothing of the runner: the experiments table and the batches use it.
"""

from __future__ import annotations

import json
import numbers
import os
import warnings
from collections.abc import Iterable, Mapping
from typing import Any, Dict, List, Optional, Set, Tuple

__all__ = ["RESULT_COLUMN", "RESULT_PREFIX", "result_columns", "metric_rows_from_file",
           "metric_rows_from_chunks"]

#: The column of a return value that is not a dict (nor a dataclass / pydantic model).
RESULT_COLUMN = "result"
#: Prefix of a result column whose name is taken by one of the row's own columns.
RESULT_PREFIX = "result_"
# Columns a metrics row read back from SQLite does not report: they are the file's.
_NOT_METRICS = ("track_id", "timestamp")


class _Unstorable(Exception):
    """A value with no column form; ``args[0]`` is the offending object."""


def _json_default(value: Any) -> Any:
    scalar = _numpy_scalar(value)
    if scalar is not value:
        return scalar
    raise _Unstorable(value)


def _numpy_scalar(value: Any) -> Any:
    """The Python value of a NumPy scalar (``numpy.float32(1.5)`` -> 1.5), else ``value``."""
    if type(value).__module__ == "numpy" and getattr(value, "ndim", None) == 0:
        item = getattr(value, "item", None)
        if callable(item):
            return item()
    return value


def _stored(value: Any) -> Any:
    """``value`` as the experiments table stores it; raises _Unstorable."""
    if value is None or isinstance(value, (bool, int, float, str, bytes)):
        return value
    if isinstance(value, bytearray):
        return bytes(value)
    scalar = _numpy_scalar(value)
    if scalar is not value:
        return _stored(scalar)
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        return float(value)
    if isinstance(value, (list, tuple, Mapping)):
        try:
            return json.dumps(value if not isinstance(value, Mapping) else dict(value),
                              ensure_ascii=False, default=_json_default)
        except _Unstorable as exc:
            raise _Unstorable(exc.args[0]) from None
        except (TypeError, ValueError):  # keys JSON cannot encode, circular references
            raise _Unstorable(value) from None
    raise _Unstorable(value)


def _items(value: Any) -> Optional[List[Tuple[str, Any]]]:
    """(key, value) pairs of a dict-like result, models unpacked; None for other values."""
    from xetrack_c._unpack import _fields, _is_model, unpack_model

    if isinstance(value, Mapping):
        pairs = [(str(key), item) for key, item in value.items()]
    elif _is_model(value):
        pairs = list(_fields(value).items())
    else:
        return None

    def warn(message: str) -> None:
        warnings.warn(f"run_multiple result: {message}", RuntimeWarning, stacklevel=2)

    flat = []
    for key, item in pairs:
        if item is not None and _is_model(item):
            flat.extend(unpack_model(item, key, warn).items())
        else:
            flat.append((key, item))
    return flat


def result_columns(value: Any, taken: Set[str]) -> Dict[str, Any]:
    """The columns a function's return value adds to its experiments row.

    Args:
        value: What the function returned.
        taken: The row's own column names, lower-cased (fixed and config columns); a
            result column that would take one of them gets the prefix ``result_``.
            The result's columns are added to it.

    Returns:
        Column name -> stored value; values without a column form are left out, each
        with a :class:`RuntimeWarning` naming its key and type.
    """
    from xetrack_c import _core

    if value is None:
        return {}
    pairs = _items(value)
    single = pairs is None
    if single:
        pairs = [(RESULT_COLUMN, value)]
    columns: Dict[str, Any] = {}
    for key, item in pairs:
        try:
            stored = _stored(item)
        except _Unstorable as exc:
            what = "the return value" if single else f"the result key {key!r}"
            inner = exc.args[0]
            within = "" if inner is item else f" (a {type(item).__name__} holding a " \
                                               f"{type(inner).__name__})"
            warnings.warn(
                f"run_multiple: {what} is a {type(item).__name__}{within}, which the "
                "experiments table does not store (numbers, str, bool, bytes, None and "
                "JSON-serialisable lists and dicts are stored; there is no asset store for "
                "objects yet): return it as a number, a string or a path",
                RuntimeWarning, stacklevel=2)
            continue
        if stored is None:
            continue
        column = _core.sanitize_key(key)
        while column.lower() in taken:
            column = RESULT_PREFIX + column
        taken.add(column.lower())
        columns[column] = stored
    return columns


# ------------------------------------------------------------------ metrics read back
def _row(names: List[str], values: tuple) -> Dict[str, Any]:
    return {name: value for name, value in zip(names, values, strict=True)
            if value is not None and name not in _NOT_METRICS}


def metric_rows_from_file(path: str, table: str) -> List[Dict[str, Any]]:
    """The rows of ``table`` in the SQLite file ``path`` as dicts (NULLs left out), then
    the file is deleted with its WAL; ``[]`` when there is no such file or table.

    A script task of a batch without ``db`` logs its metrics into such a private file.
    """
    from xetrack_c import _core

    if not os.path.isfile(path):
        return []
    try:
        _, tables = _core.read_rows(
            path, "SELECT name FROM sqlite_master WHERE type = 'table' AND name = ?", (table,))
        if not tables:
            return []
        names, rows = _core.read_rows(
            path, f"SELECT * FROM {_core.quote_identifier(table)} ORDER BY rowid", ())
        names = list(names)
        return [_row(names, row) for row in rows]
    finally:
        for suffix in ("", "-wal", "-shm", "-journal"):
            try:
                os.unlink(path + suffix)
            except FileNotFoundError:
                pass


def metric_rows_from_chunks(chunks: Iterable[Any]) -> List[Dict[str, Any]]:
    """The rows of shipped chunks (:class:`xetrack_c.run.remote_buffer.Chunk`) as dicts."""
    rows: List[Dict[str, Any]] = []
    for chunk in chunks:
        names = list(chunk.columns)
        rows.extend(_row(names, row) for row in chunk.rows)
    return rows
