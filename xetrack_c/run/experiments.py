"""The experiments table of ``run_multiple``: one row per experiment, and resume fingerprints.

Each row holds, in this order: ``experiment_id``, ``name``, ``status``, ``duration``
(seconds), ``seed``, ``error`` (the error message, NULL when none), ``tags`` (joined
with commas), ``kind`` (``"function"`` or ``"script"``), ``target`` (the function's
qualified name or the script's path), ``fingerprint``, ``description``, ``script_args``
(a JSON list), ``attempts`` (how many attempts ran), then the config flattened into
columns, then what the function returned (:func:`xetrack_c.run.result_data.result_columns`),
then ``timestamp`` and ``track_id`` (one per table object, i.e. per batch). A table
written by an earlier version, without the newer fixed columns, gets them added on the
first write (its old rows keep NULL there).

With retries, every attempt of every task is also a row of the ``attempts`` table
(:data:`ATTEMPTS_TABLE`): ``experiment_id``, ``attempt`` (1, 2...), ``status``, ``error``,
``duration``, ``timestamp``, ``track_id``. The experiments table holds final records only.

Flattening: nested dict keys are joined with ``_`` (``{"model": {"lr": 0.1}}`` becomes
the column ``model_lr``); other values are stored as the Tracker stores them (lists and
dicts as ``str(value)``). A config key that names a fixed column (or ``timestamp`` /
``track_id``), compared as SQLite compares column names (case-insensitively, after key
sanitisation), is stored with a ``config_`` prefix: ``{"name": "a"}`` becomes the column
``config_name``.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterable, Mapping
from typing import Any, Dict, Optional, Set, Union

from xetrack_c import _core
from xetrack_c.run.result_data import result_columns

__all__ = ["ATTEMPTS_TABLE", "FIXED_COLUMNS", "ExperimentTable", "fingerprint",
           "flatten_config"]

#: The columns every experiment row has, in order, before the config columns. The last
#: three came later: an older table gets them appended when a batch writes to it.
FIXED_COLUMNS = (
    "experiment_id", "name", "status", "duration", "seed", "error",
    "tags", "kind", "target", "fingerprint", "description", "script_args", "attempts",
)
# Typed samples, so a first row with None in them does not fix a TEXT column type.
_COLUMN_SAMPLES = {
    "experiment_id": "", "name": "", "status": "", "duration": 0.0, "seed": 0,
    "error": "", "tags": "", "kind": "", "target": "", "fingerprint": "",
    "description": "", "script_args": "", "attempts": 0,
}
#: The table of every attempt of the tasks of a batch with retries.
ATTEMPTS_TABLE = "attempts"
_ATTEMPT_SAMPLES = {"experiment_id": "", "attempt": 0, "status": "", "error": "",
                    "duration": 0.0}
_TAKEN = {c.lower() for c in FIXED_COLUMNS} | {"timestamp", "track_id"}
#: Prefix of a config column whose name clashes with a fixed column.
CONFIG_PREFIX = "config_"
_MAX_DEPTH = 32


def _fallback(value: Any) -> Any:
    """JSON form of a value JSON has none for, independent of the process.

    Sets are sorted by their members' canonical JSON (their iteration order follows
    the salted ``hash()`` of str members and changes between processes); everything
    else is converted as :func:`xetrack_c.hash_identifier` converts it.
    """
    if isinstance(value, (set, frozenset)):
        encoded = [_core.canonical_json(item, _fallback, True) for item in value]
        return [item for _, item in sorted(zip(encoded, value, strict=True), key=lambda pair: pair[0])]
    from xetrack_c.seeding import _stable_fallback

    return _stable_fallback(value)


def fingerprint(target: str, config: Mapping[str, Any], seed: Optional[int]) -> str:
    """A stable digest of what an experiment runs: same in every process and run.

    It is the SHA-256 (hex) of the canonical, key-sorted JSON of ``{"target",
    "config", "seed"}``; values JSON has no form for are converted as
    :func:`xetrack_c.hash_identifier` converts them (enum members to their value,
    dataclasses to dicts, anything else to ``str``; an object whose ``str`` shows its
    memory address therefore gets a new fingerprint in every process), except that
    sets become *sorted* lists, so their order cannot depend on the hash seed.

    Args:
        target: The script path or the function's qualified name.
        config: The experiment's config.
        seed: The experiment's seed, or None.

    Returns:
        64 hex digits.
    """
    if not isinstance(target, str):
        raise TypeError(f"target must be a str, not {type(target).__name__}")
    if not isinstance(config, Mapping):
        raise TypeError(f"config must be a dict, not {type(config).__name__}")
    payload = {"target": target, "config": dict(config), "seed": seed}
    return _core.canonical_sha256(payload, _fallback, True).hex()


def flatten_config(config: Mapping[str, Any]) -> Dict[str, Any]:
    """The config as experiment-table columns (see the module docstring).

    Raises:
        TypeError: ``config`` is not a dict.
        ValueError: Two keys land in the same column (e.g. ``"a_b"`` and
            ``{"a": {"b": ...}}``, or ``"lr"`` and ``"LR"``); the message names both.
    """
    if not isinstance(config, Mapping):
        raise TypeError(f"config must be a dict, not {type(config).__name__}")
    flat: Dict[str, Any] = {}
    origin: Dict[str, str] = {}
    _flatten_into(config, "", "", flat, origin, 0)
    return flat


def _flatten_into(
    config: Mapping[str, Any], prefix: str, dotted: str,
    flat: Dict[str, Any], origin: Dict[str, str], depth: int,
) -> None:
    if depth > _MAX_DEPTH:
        raise ValueError(f"config is nested more than {_MAX_DEPTH} levels deep at {dotted!r}")
    for key, value in config.items():
        column = f"{prefix}{key}"
        path = f"{dotted}.{key}" if dotted else str(key)
        if isinstance(value, Mapping) and value:
            _flatten_into(value, f"{column}_", path, flat, origin, depth + 1)
            continue
        column = _core.sanitize_key(column)
        if column.lower() in _TAKEN:
            column = CONFIG_PREFIX + column
        folded = column.lower()
        if folded in origin:
            raise ValueError(
                f"config keys {origin[folded]!r} and {path!r} both become the column "
                f"{column!r} of the experiments table: rename one of them"
            )
        origin[folded] = path
        flat[column] = value


class ExperimentTable:
    """Writes experiment rows into ``table`` of the SQLite file ``db``.

    Nothing is created until the first :meth:`record`; :meth:`completed_fingerprints`
    only reads. Safe to use from several threads.

    Args:
        db: Path of the SQLite file.
        table: Table name.
    """

    def __init__(self, db: Union[str, "os.PathLike[str]"], table: str = "experiments") -> None:
        path = os.fspath(db)
        if not isinstance(path, str) or not path:
            raise TypeError(f"db must be a non-empty str path, not {db!r}")
        if path in (":memory:", "SKIP_INSERT"):
            raise ValueError(f"db={path!r} cannot hold an experiments table: pass a file path")
        from xetrack_c.tracker import _validate_table

        self.db = os.path.abspath(path)
        self.table = _validate_table(table)
        if self.table.lower() == ATTEMPTS_TABLE:
            raise ValueError(f"table={table!r} is the name of the attempts table of "
                             "run_multiple: choose another name for the experiments table")
        self._tracker: Any = None
        self._attempts: Any = None
        self._lock = threading.Lock()
        self._closed = False

    # ------------------------------------------------------------------ writing
    def _writer(self) -> Any:
        with self._lock:
            if self._closed:
                raise ValueError(f"ExperimentTable({self.db!r}) is closed")
            if self._tracker is None:
                from xetrack_c.tracker import Tracker

                tracker = Tracker(self.db, table=self.table)
                # Config columns hold str(value) of other objects (docs/run_multiple.md),
                # not assets: a config that cannot be pickled must not fail its record.
                tracker._asset_hook = None
                tracker._ensure_columns(_COLUMN_SAMPLES)
                self._tracker = tracker
            return self._tracker

    def record(
        self,
        *,
        experiment_id: str,
        name: Optional[str],
        status: str,
        duration: Optional[float],
        seed: Optional[int],
        error_message: Optional[str],
        tags: Optional[Iterable[str]],
        config: Optional[Mapping[str, Any]],
        kind: str,
        target: str,
        fingerprint: str,
        description: Optional[str] = None,
        script_args: Optional[Iterable[str]] = None,
        attempts: Optional[int] = None,
        result: Any = None,
    ) -> None:
        """Write one experiment row (committed before the call returns).

        ``script_args`` is stored as a JSON list; ``result`` (what a function returned)
        as columns (see :func:`xetrack_c.run.result_data.result_columns`)."""
        if isinstance(tags, str):
            raise TypeError("tags must be a list of str, not a str")
        tag_list = [str(tag) for tag in (tags or ())]
        row: Dict[str, Any] = {
            "experiment_id": experiment_id,
            "name": name,
            "status": status,
            "duration": None if duration is None else float(duration),
            "seed": seed,
            "error": error_message,
            "tags": ",".join(tag_list),
            "kind": kind,
            "target": target,
            "fingerprint": fingerprint,
            "description": description,
            "script_args": None if script_args is None else json.dumps(list(script_args)),
            "attempts": attempts,
        }
        config_columns = flatten_config(config or {})
        row.update(config_columns)
        if result is not None:
            taken = _TAKEN | {column.lower() for column in config_columns}
            row.update(result_columns(result, taken))
        self._writer().log(row)

    def record_attempt(self, experiment_id: str, attempt: int, status: str,
                       error_message: Optional[str], duration: Optional[float]) -> None:
        """Write one row of the attempts table (committed before the call returns)."""
        with self._lock:
            if self._closed:
                raise ValueError(f"ExperimentTable({self.db!r}) is closed")
            if self._attempts is None:
                from xetrack_c.tracker import Tracker

                tracker = Tracker(self.db, table=ATTEMPTS_TABLE)
                tracker._ensure_columns(_ATTEMPT_SAMPLES)
                self._attempts = tracker
            tracker = self._attempts
        tracker.log({"experiment_id": experiment_id, "attempt": attempt, "status": status,
                     "error": error_message,
                     "duration": None if duration is None else float(duration)})

    # ------------------------------------------------------------------ reading
    def completed_fingerprints(self) -> Set[str]:
        """Fingerprints of the rows whose status is ``"completed"``.

        An empty set when the file, the table or its columns do not exist yet; the file
        is never created by this call.
        """
        if not os.path.isfile(self.db):
            return set()
        tracker = self._tracker
        if tracker is not None and not tracker.closed:
            tracker.flush()
        _, info = _core.read_rows(
            self.db, "SELECT name FROM pragma_table_info(?)", (self.table,)
        )
        present = {name.lower() for (name,) in info}
        if not {"fingerprint", "status"} <= present:
            return set()
        _, rows = _core.read_rows(
            self.db,
            f'SELECT DISTINCT "fingerprint" FROM {_core.quote_identifier(self.table)} '
            'WHERE "status" = ?',
            ("completed",),
        )
        return {value for (value,) in rows if value}

    # ------------------------------------------------------------------ lifetime
    def close(self) -> None:
        """Close the underlying Tracker (idempotent)."""
        with self._lock:
            self._closed = True
            trackers = (self._tracker, self._attempts)
            self._tracker = self._attempts = None
        for tracker in trackers:
            if tracker is not None:
                tracker.close()

    def __enter__(self) -> "ExperimentTable":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"ExperimentTable(db={self.db!r}, table={self.table!r})"
