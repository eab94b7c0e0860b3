"""What the child API knows about one experiment, and the checks on its parts.

Shared by :mod:`xetrack_c.run.child` (the child API) and the runner.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any, Dict, List, NamedTuple, Optional

#: The table :func:`xetrack_c.log_metrics` appends to unless told otherwise.
DEFAULT_METRICS_TABLE = "metrics"


class TaskInfo(NamedTuple):
    """What the child API knows about the experiment running in this context.

    Immutable. A named tuple rather than a dataclass: worker processes build one per task
    and should not import :mod:`dataclasses` (and :mod:`inspect`) to start.
    """

    experiment_id: Optional[str]
    config: Mapping[str, Any]
    seed: Optional[int]
    db: Optional[str]
    name: Optional[str]
    metrics_table: str = DEFAULT_METRICS_TABLE
    #: Where ``log_metrics`` appends its rows in a batch without ``db`` (None: to a file).
    metrics_sink: Optional[List[Dict[str, Any]]] = None
    #: A function task on a worker thread: one byte the pool sets (2: timeout, 3: cancelled)
    #: when its batch stops waiting for the task (``_core.abandon_flag()``); None elsewhere.
    abandoned: Optional[bytearray] = None


def refuse_if_abandoned(info: Optional[TaskInfo], what: str) -> None:
    """Raise ``TaskTimeout``/``TaskCancelled`` in a task its batch stopped waiting for.

    Its batch reported it already, so a row written now would follow its result.
    """
    if info is None or info.abandoned is None or not info.abandoned[0]:
        return
    from xetrack_c import _core

    timed_out = info.abandoned[0] == 2
    raise (_core.TaskTimeout if timed_out else _core.TaskCancelled)(
        f"{what} refused: experiment {info.experiment_id} was "
        f"{'past its timeout' if timed_out else 'cancelled'} and its batch stopped waiting "
        "for it, so nothing more is recorded for it")


# ------------------------------------------------------------------ validation
def check_experiment_id(experiment_id: Any) -> str:
    if not isinstance(experiment_id, str) or not experiment_id:
        raise TypeError(
            f"experiment_id must be a non-empty str, not {experiment_id!r}"
        )
    return experiment_id


def check_seed(seed: Any) -> Optional[int]:
    if seed is None:
        return None
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed must be an int or None, not {type(seed).__name__}")
    return seed


def check_db(db: Any) -> Optional[str]:
    if db is None:
        return None
    try:
        path = os.fspath(db)
    except TypeError:
        path = None
    if not isinstance(path, str) or not path:
        raise TypeError(f"db must be a non-empty str path or None, not {db!r}")
    # Absolute, so a child with another working directory writes the same file.
    return os.path.abspath(path)


def check_optional_str(what: str, value: Any) -> Optional[str]:
    if value is not None and not isinstance(value, str):
        raise TypeError(f"{what} must be a str or None, not {type(value).__name__}")
    return value


def check_config(config: Any) -> Mapping[str, Any]:
    if config is None:
        return {}
    if not isinstance(config, Mapping):
        raise TypeError(f"config must be a dict, not {type(config).__name__}")
    return config


def check_metrics_table(table: Any) -> str:
    if not isinstance(table, str) or not table:
        raise TypeError(f"metrics_table must be a non-empty str, not {table!r}")
    return table


def first_unserialisable(value: Any, path: str) -> Optional[str]:
    """Dotted path of the first value inside ``value`` JSON cannot encode, or None."""
    if isinstance(value, Mapping):
        for key, item in value.items():
            if not isinstance(key, (str, int, float, bool)) and key is not None:
                return f"{path}.{key!r}" if path else repr(key)
            found = first_unserialisable(item, f"{path}.{key}" if path else str(key))
            if found is not None:
                return found
        return None
    if isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            found = first_unserialisable(item, f"{path}[{index}]")
            if found is not None:
                return found
        return None
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return path or "<config>"
    return None


def config_json(config: Mapping[str, Any]) -> str:
    try:
        return json.dumps(dict(config), separators=(",", ":"))
    except (TypeError, ValueError):
        bad = first_unserialisable(config, "")
        raise ValueError(
            f"config key {bad!r} is not JSON-serialisable: a script task receives its "
            "config as JSON, so pass JSON-compatible values to scripts (str, int, float, "
            "bool, None, and lists and dicts of them), or run the work as a function task"
        ) from None
