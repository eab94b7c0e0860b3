"""The child API of ``run_multiple``: read the experiment's config, log its metrics.

The same calls work in three places:

* inside a **function task** that ``run_multiple`` runs (in a worker thread or a worker
  process): the executor wraps each call in :func:`task_context`, whose values live in a
  :class:`contextvars.ContextVar`, so tasks running at once in different threads each
  see their own config, id and seed;
* inside a **script task** (a child process): the executor adds the variables of
  :func:`child_environment` to the child's environment;
* **standalone** (a script run by hand): :func:`get_params` is ``{}``,
  :func:`get_param` returns its default, :func:`get_experiment_id` and :func:`get_seed`
  return ``None``, and :func:`log_metrics` writes to ``./xetrack_metrics.db`` (table
  ``metrics``) in the current directory.
In a batch without ``db``, :func:`log_metrics` writes no file (``ExperimentResult.metrics``).

Resolution order: the task context, then the environment, then the standalone defaults.
The experiment id, config, seed and name come from the first of these that is set, as a
whole. The database for :func:`log_metrics` is the context's, else the environment's,
else the standalone file.

Threads a task starts itself begin with an empty context; run their code with
``contextvars.copy_context().run(fn, ...)`` to let them see the task's values.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import os
import sys
import threading
from collections.abc import Iterator, Mapping
from typing import Any, Dict, Optional, Tuple, Union

from xetrack_c.run.task_info import (
    DEFAULT_METRICS_TABLE,
    TaskInfo,
    check_config,
    check_db,
    check_experiment_id,
    check_metrics_table,
    check_optional_str,
    check_seed,
    config_json,
    refuse_if_abandoned,
)

__all__ = [
    "XETRACK_C_EXPERIMENT_ID",
    "XETRACK_C_CONFIG",
    "XETRACK_C_SEED",
    "XETRACK_C_DB",
    "XETRACK_C_EXPERIMENT_NAME",
    "XETRACK_C_METRICS_TABLE",
    "STANDALONE_METRICS_DB",
    "DEFAULT_METRICS_TABLE",
    "child_environment",
    "task_context",
    "get_param",
    "get_params",
    "get_experiment_id",
    "get_experiment_name",
    "get_seed",
    "log_metrics",
]

#: Environment variable: the id of the experiment a script child runs.
XETRACK_C_EXPERIMENT_ID = "XETRACK_C_EXPERIMENT_ID"
#: Environment variable: the experiment's config, a JSON object.
XETRACK_C_CONFIG = "XETRACK_C_CONFIG"
#: Environment variable: the experiment's seed (decimal int; empty when there is none).
XETRACK_C_SEED = "XETRACK_C_SEED"
#: Environment variable: absolute path of the batch's SQLite file (empty when none).
XETRACK_C_DB = "XETRACK_C_DB"
#: Environment variable: the experiment's name (empty when none).
XETRACK_C_EXPERIMENT_NAME = "XETRACK_C_EXPERIMENT_NAME"
#: Environment variable: the table :func:`log_metrics` appends to.
XETRACK_C_METRICS_TABLE = "XETRACK_C_METRICS_TABLE"

#: Where :func:`log_metrics` writes when no database is set anywhere (relative to the
#: current directory at the time of the call).
STANDALONE_METRICS_DB = "xetrack_metrics.db"

# Keys a metrics dict may not use: log_metrics writes them itself.
_RESERVED_METRIC_KEYS = ("experiment_id", "track_id", "timestamp")

#: The task whose code runs in this context: set by the runner around each function task.
current_task: contextvars.ContextVar[Optional[TaskInfo]] = contextvars.ContextVar(
    "xetrack_c_current_task", default=None
)


def _adopt_worker_task() -> None:
    """In a worker process of ``backend="process"``, take over the task that is running
    while this module is first imported (the worker imports xetrack_c only when a task
    does, and keeps the task's values until then)."""
    worker = sys.modules.get("xetrack_c.run.process_worker")
    task = getattr(worker, "current_task", None)
    if task is not None:
        current_task.set(TaskInfo(*task))


_adopt_worker_task()


# ------------------------------------------------------------------ the executor's side
def child_environment(
    experiment_id: str,
    config: Optional[Mapping[str, Any]],
    seed: Optional[int],
    db: Union[str, "os.PathLike[str]", None],
    name: Optional[str],
    metrics_table: str = DEFAULT_METRICS_TABLE,
) -> Dict[str, str]:
    """The environment variables to add to a script child's environment.

    Every variable is always present, so a child's value never leaks in from the
    parent's own environment (nested batches); an unset seed, db or name is ``""``.

    Args:
        experiment_id: Id of the experiment the child runs.
        config: The experiment's config; must be JSON-serialisable.
        seed: The experiment's seed, or None.
        db: The batch's SQLite file, or None; passed on as an absolute path.
        name: The experiment's name, or None.
        metrics_table: Table :func:`log_metrics` appends to in ``db``.

    Returns:
        Variable name -> value.

    Raises:
        ValueError: A config value has no JSON form; the message names its key.
        TypeError: An argument has the wrong type.
    """
    experiment_id = check_experiment_id(experiment_id)
    config = check_config(config)
    seed = check_seed(seed)
    db = check_db(db)
    name = check_optional_str("name", name)
    metrics_table = check_metrics_table(metrics_table)
    return {
        XETRACK_C_EXPERIMENT_ID: experiment_id,
        XETRACK_C_CONFIG: config_json(config),
        XETRACK_C_SEED: "" if seed is None else str(seed),
        XETRACK_C_DB: db or "",
        XETRACK_C_EXPERIMENT_NAME: name or "",
        XETRACK_C_METRICS_TABLE: metrics_table,
    }


@contextlib.contextmanager
def task_context(
    experiment_id: str,
    config: Optional[Mapping[str, Any]],
    seed: Optional[int],
    db: Union[str, "os.PathLike[str]", None],
    name: Optional[str],
    metrics_table: str = DEFAULT_METRICS_TABLE,
) -> Iterator[TaskInfo]:
    """Make the child API see this experiment for the duration of the ``with`` block.

    The values live in a :class:`contextvars.ContextVar`: tasks running at once in
    different threads each see their own, and blocks nest (a task that runs its own
    batch sees the inner experiment inside, its own again after).

    Args:
        experiment_id: Id of the experiment.
        config: Its config (any values: function tasks need no JSON).
        seed: Its seed, or None.
        db: The batch's SQLite file, or None.
        name: Its name, or None.
        metrics_table: Table :func:`log_metrics` appends to in ``db``.

    Yields:
        The :class:`TaskInfo` in effect inside the block.
    """
    info = TaskInfo(
        experiment_id=check_experiment_id(experiment_id),
        config=check_config(config),
        seed=check_seed(seed),
        db=check_db(db),
        name=check_optional_str("name", name),
        metrics_table=check_metrics_table(metrics_table),
    )
    token = current_task.set(info)
    try:
        yield info
    finally:
        current_task.reset(token)


# ------------------------------------------------------------------ reading the environment
_env_lock = threading.Lock()
_env_cache: Tuple[Optional[Tuple[Optional[str], ...]], Optional[TaskInfo]] = (None, None)


def _env_key() -> Tuple[Optional[str], ...]:
    env = os.environ
    return tuple(
        env.get(name)
        for name in (
            XETRACK_C_EXPERIMENT_ID, XETRACK_C_CONFIG, XETRACK_C_SEED,
            XETRACK_C_DB, XETRACK_C_EXPERIMENT_NAME, XETRACK_C_METRICS_TABLE,
        )
    )


def _parse_environment(key: Tuple[Optional[str], ...]) -> Optional[TaskInfo]:
    if not any(key):
        return None
    experiment_id, config_text, seed_text, db, name, table = key
    config: Dict[str, Any] = {}
    if config_text:
        try:
            config = json.loads(config_text)
        except ValueError as exc:
            raise ValueError(
                f"environment variable {XETRACK_C_CONFIG} is not valid JSON ({exc}); "
                "it must hold a JSON object, as run_multiple sets it"
            ) from None
        if not isinstance(config, dict):
            raise ValueError(
                f"environment variable {XETRACK_C_CONFIG} must hold a JSON object, "
                f"not a JSON {type(config).__name__}"
            )
    seed: Optional[int] = None
    if seed_text:
        try:
            seed = int(seed_text)
        except ValueError:
            raise ValueError(
                f"environment variable {XETRACK_C_SEED}={seed_text!r} is not an int; "
                "unset it or set a decimal integer"
            ) from None
    return TaskInfo(
        experiment_id=experiment_id or None,
        config=config,
        seed=seed,
        db=os.path.abspath(db) if db else None,
        name=name or None,
        metrics_table=table or DEFAULT_METRICS_TABLE,
    )


def _environment_task() -> Optional[TaskInfo]:
    """The experiment the environment describes (parsed once per distinct value)."""
    global _env_cache
    key = _env_key()
    cached_key, cached = _env_cache
    if key == cached_key:
        return cached
    info = _parse_environment(key)
    with _env_lock:
        _env_cache = (key, info)
    return info


def _current() -> Optional[TaskInfo]:
    info = current_task.get()
    return info if info is not None else _environment_task()


# ------------------------------------------------------------------ the child's side
def get_params() -> Dict[str, Any]:
    """The current experiment's config (a shallow copy); ``{}`` when standalone."""
    info = _current()
    return dict(info.config) if info is not None else {}


def get_param(name: str, default: Any = None) -> Any:
    """One config value; dotted names (``"model.lr"``) walk nested dicts, as yanex's.

    A key that itself contains dots (``{"model.lr": ...}``) is found first.

    Args:
        name: The key, or a dotted path into nested dicts.
        default: Returned when the key is missing (always, when standalone).

    Returns:
        The value, or ``default``.
    """
    if not isinstance(name, str):
        raise TypeError(f"get_param() takes the parameter name as a str, not {type(name).__name__}")
    info = _current()
    if info is None:
        return default
    config = info.config
    if name in config:
        return config[name]
    current: Any = config
    for part in name.split("."):
        if isinstance(current, Mapping) and part in current:
            current = current[part]
        else:
            return default
    return current


def get_experiment_id() -> Optional[str]:
    """Id of the current experiment, or None when standalone."""
    info = _current()
    return info.experiment_id if info is not None else None


def get_experiment_name() -> Optional[str]:
    """Name of the current experiment, or None."""
    info = _current()
    return info.name if info is not None else None


def get_seed() -> Optional[int]:
    """Seed of the current experiment, or None."""
    info = _current()
    return info.seed if info is not None else None


# ------------------------------------------------------------------ metrics
# One Tracker per (db, table) per process, shared by every thread; rebuilt after fork.
_trackers_lock = threading.Lock()
_trackers: Dict[Tuple[str, str], Any] = {}


def _reset_after_fork() -> None:
    global _trackers_lock, _trackers
    # The lock may have been held by another thread at fork time; the trackers
    # reconnect on their own, but a fresh cache keeps the child independent.
    _trackers_lock = threading.Lock()
    _trackers = {}


os.register_at_fork(after_in_child=_reset_after_fork)


def _metrics_tracker(db: str, table: str) -> Any:
    key = (db, table)
    with _trackers_lock:
        tracker = _trackers.get(key)
        if tracker is None or tracker.closed:
            from xetrack_c.tracker import Tracker

            tracker = Tracker(db, table=table)
            _trackers[key] = tracker
        return tracker


def _metrics_destination() -> Tuple[Optional[str], str, str]:
    """(experiment id, db, table) that log_metrics writes to now."""
    info = current_task.get()
    env = _environment_task()
    source = info if info is not None else env
    db = None
    if info is not None and info.db:
        db = info.db
    elif env is not None and env.db:
        db = env.db
    table = source.metrics_table if source is not None else DEFAULT_METRICS_TABLE
    if db is None:
        db = os.path.abspath(STANDALONE_METRICS_DB)
    return (source.experiment_id if source is not None else None), db, table


def log_metrics(metrics: Dict[str, Any], step: Optional[int] = None) -> Dict[str, Any]:
    """Append one row of metrics for the current experiment.

    The row goes to the metrics table (default ``metrics``) of the batch's database
    through a :class:`xetrack_c.Tracker`, so the file reads like any xetrack file: it
    holds ``experiment_id``, ``step`` (when given), the metric keys, ``timestamp`` and
    ``track_id`` (one per process), committed before the call returns. In a task of a
    batch without ``db`` no file is written: the row comes back in the task's
    ``ExperimentResult.metrics``. Standalone (a script run by hand, no database in the
    environment), it goes to ``./xetrack_metrics.db``, table ``metrics``.

    In a function task that ran past its timeout (or was cancelled) and whose thread
    ``run_multiple`` abandoned, it writes nothing and raises the task's ``TaskTimeout``
    (or ``TaskCancelled``): the task was reported already.

    Args:
        metrics: Metric name -> value.
        step: Step number (e.g. the epoch), or None.

    Returns:
        The row as written.

    Raises:
        TypeError: ``metrics`` is not a dict, or ``step`` is not an int.
        ValueError: ``metrics`` uses a key log_metrics writes itself.
    """
    if not isinstance(metrics, Mapping):
        raise TypeError(
            f"log_metrics() takes a dict of metric name -> value, not {type(metrics).__name__}; "
            "e.g. log_metrics({'accuracy': 0.9})"
        )
    if step is not None and (isinstance(step, bool) or not isinstance(step, int)):
        raise TypeError(f"step must be an int or None, not {type(step).__name__}")
    for key in _RESERVED_METRIC_KEYS:
        if key in metrics:
            raise ValueError(
                f"log_metrics() writes {key!r} itself: rename that metric"
            )
    if step is not None and "step" in metrics:
        raise ValueError("'step' given both as a metric and as step=: pass it once")
    info = current_task.get()
    refuse_if_abandoned(info, "log_metrics")
    sink = info.metrics_sink if info is not None and info.db is None else None
    experiment_id, db, table = (info.experiment_id, "", "") if sink is not None \
        else _metrics_destination()
    row: Dict[str, Any] = {"experiment_id": experiment_id}
    if step is not None:
        row["step"] = step
    row.update(metrics)
    if sink is not None:  # a function task of a batch without db: no file
        sink.append(row)
        return dict(row)
    buffers = sys.modules.get("xetrack_c.run.remote_buffer")  # imported by every remote task
    buffer = buffers.active() if buffers is not None else None
    if buffer is not None:  # a task on an executor: the driver writes the row
        return buffer.metrics_tracker(db, table).log(row)
    return _metrics_tracker(db, table).log(row)
