"""The data types of ``run_multiple``: what to run, what came of it, and the batch's options.

This is the bottom of :mod:`xetrack_c.run`: :class:`ExperimentSpec` (yanex's spec),
:class:`ExperimentResult`, :class:`BatchOptions` and the checks that turn a user's specs and
options into them, each error naming what was wrong. Nothing here imports the runner; the
local batch, the executor path and ``run_multiple`` build on these.
"""

from __future__ import annotations

import dataclasses
import numbers
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Dict, List, Optional, Union

__all__ = ["ExperimentSpec", "ExperimentResult", "BatchOptions", "STATUSES", "check_specs",
           "validate_spec"]

#: Statuses an :class:`ExperimentResult` can have.
STATUSES = ("completed", "failed", "cancelled", "timeout", "skipped")


@dataclasses.dataclass
class ExperimentSpec:
    """What to run: exactly one of ``script_path`` or ``function``.

    Attributes:
        script_path: A Python script, run as ``sys.executable script_path *script_args``
            in a new process (no shell), in the caller's working directory.
        script_args: Extra command-line arguments of the script (list of str).
        function: A callable, called as ``function(config)``, or with the keyword
            arguments its signature names among ``config``, ``seed`` and ``rng``.
        config: The experiment's parameters: ``get_param``/``get_params`` in the task;
            for scripts it must be JSON-serialisable.
        name: A name for the experiment (also part of the default seed).
        tags: Labels recorded with the experiment.
        description: Free text.
        seed: This experiment's seed; derived from ``seed_policy`` (or name and index)
            when None.
        timeout: Seconds this experiment may run; None: ``run_multiple``'s
            ``task_timeout`` (no limit when that is None too). A script, or a function
            with ``backend="process"``, is killed then; a function on a thread gets
            ``TaskTimeout`` raised inside it and, if it has not returned 0.5 s later, is
            reported ``timeout`` and its thread abandoned (a thread cannot be killed).
        group: Group label (used as the study id of a ``SeedPolicy``).
    """

    script_path: Optional[Union[str, "os.PathLike[str]"]] = None
    script_args: List[str] = dataclasses.field(default_factory=list)
    function: Optional[Callable[..., Any]] = None
    config: Dict[str, Any] = dataclasses.field(default_factory=dict)
    name: Optional[str] = None
    tags: List[str] = dataclasses.field(default_factory=list)
    description: Optional[str] = None
    seed: Optional[int] = None
    timeout: Optional[float] = None
    group: Optional[str] = None

    def validate(self) -> None:
        """Raise ValueError (or TypeError) naming what is wrong with this spec."""
        validate_spec(self)


@dataclasses.dataclass
class ExperimentResult:
    """Outcome of one experiment.

    Attributes:
        experiment_id: Unique id (8 hex digits).
        status: ``completed``, ``failed``, ``cancelled``, ``timeout`` or ``skipped``.
        error_message: Why it did not complete: exception type, message and traceback
            tail (functions), or exit code and stderr tail (scripts); None otherwise.
        duration: Seconds it ran (0.0 when it never started).
        name: The spec's name.
        result: What the function returned (None for scripts).
        seed: The seed it ran with.
        metrics: In a batch without ``db``, the rows the task logged with
            ``log_metrics`` (dicts of ``experiment_id``, ``step`` when given, and the
            metrics), which are written to no file; empty with ``db`` (the rows are in
            its ``metrics`` table).
    """

    experiment_id: str
    status: str
    error_message: Optional[str] = None
    duration: Optional[float] = None
    name: Optional[str] = None
    result: Any = None
    seed: Optional[int] = None
    metrics: List[Dict[str, Any]] = dataclasses.field(default_factory=list)


# ------------------------------------------------------------------ checking
def _type_name(value: Any) -> str:
    return type(value).__name__


def validate_spec(spec: ExperimentSpec) -> None:
    """Raise ValueError/TypeError naming what is wrong with ``spec``."""
    has_script = spec.script_path is not None
    has_function = spec.function is not None
    if has_script == has_function:
        which = "both are set" if has_script else "neither is set"
        raise ValueError(f"set exactly one of script_path or function ({which})")
    if has_function and not callable(spec.function):
        raise TypeError(f"function must be callable, not {_type_name(spec.function)}")
    if has_script:
        try:
            path = os.fspath(spec.script_path)
        except TypeError:
            raise TypeError(f"script_path must be a str or path, not "
                            f"{_type_name(spec.script_path)}") from None
        if not isinstance(path, str) or not os.path.isfile(path):
            raise ValueError(f"script_path {path!r} is not a file (relative paths are "
                             f"taken from the working directory {os.getcwd()!r})")
    if isinstance(spec.script_args, (str, bytes)) or not isinstance(spec.script_args, Sequence) \
            or not all(isinstance(arg, str) for arg in spec.script_args):
        raise TypeError("script_args must be a list of str, e.g. ['--epochs', '3']")
    if not isinstance(spec.config, Mapping):
        raise TypeError(f"config must be a dict, not {_type_name(spec.config)}")
    if spec.name is not None and not isinstance(spec.name, str):
        raise TypeError(f"name must be a str or None, not {_type_name(spec.name)}")
    if isinstance(spec.tags, (str, bytes)) or not isinstance(spec.tags, Sequence) \
            or not all(isinstance(tag, str) for tag in spec.tags):
        raise TypeError("tags must be a list of str, e.g. ['kfold']")
    if spec.seed is not None:
        if isinstance(spec.seed, bool) or not isinstance(spec.seed, int):
            raise TypeError(f"seed must be an int or None, not {_type_name(spec.seed)}")
        if not 0 <= spec.seed <= 2**32 - 1:
            raise ValueError(f"seed must be in [0, 2**32 - 1], got {spec.seed}")
    _check_timeout(spec.timeout, "timeout")
    if spec.group is not None and not isinstance(spec.group, str):
        raise TypeError(f"group must be a str or None, not {_type_name(spec.group)}")


def _check_timeout(value: Any, what: str) -> Optional[float]:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{what} must be a number of seconds or None, not {_type_name(value)}")
    if not value > 0:
        raise ValueError(f"{what} must be > 0 seconds (None for no limit), got {value!r}")
    return float(value)


def _as_spec(item: Any) -> ExperimentSpec:
    """Our spec, or one made from a look-alike (e.g. yanex's ExperimentSpec)."""
    if isinstance(item, ExperimentSpec):
        return item
    if hasattr(item, "script_path") and hasattr(item, "function"):
        fields = {f.name: getattr(item, f.name) for f in dataclasses.fields(ExperimentSpec)
                  if hasattr(item, f.name)}
        return ExperimentSpec(**fields)
    raise TypeError(f"expected an ExperimentSpec, got {_type_name(item)}")


def check_specs(specs: Any, limit: Optional[int],
                task_timeout: Optional[float] = None) -> List[ExperimentSpec]:
    """The specs to run (the first ``limit``), each validated; those without a timeout
    of their own get ``task_timeout`` (as copies: the caller's specs are not changed)."""
    if isinstance(specs, (str, bytes, Mapping)) or not isinstance(specs, (Sequence, list)):
        raise TypeError(f"specs must be a list of ExperimentSpec, not {_type_name(specs)}")
    if not specs:
        raise ValueError("run_multiple() needs at least one ExperimentSpec; got an empty list")
    checked = []
    for index, item in enumerate(specs[:limit] if limit is not None else specs):
        try:
            spec = _as_spec(item)
            validate_spec(spec)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"Invalid ExperimentSpec at index {index}: {exc}") from exc
        if spec.timeout is None and task_timeout is not None:
            spec = dataclasses.replace(spec, timeout=task_timeout)
        checked.append(spec)
    return checked


@dataclasses.dataclass
class BatchOptions:
    """run_multiple's options, checked."""

    workers: int
    db: Optional[str]
    table: str
    fail_fast: bool
    max_consecutive_failures: Optional[int]
    timeout: Optional[float]  # the whole batch's limit: run_multiple's batch_timeout
    progress: Optional[bool]
    on_progress: Optional[Callable[..., Any]]
    resume: bool
    limit: Optional[int]
    seed_policy: Any
    retry: Any = None  # a xetrack_c.run.retry.RetryPolicy
    rate_interval: float = 0.0
    worker_init: Optional[Callable[[], Any]] = None
    backend: str = "thread"
    launcher: str = "spawn"
    task_timeout: Optional[float] = None  # for specs without a timeout of their own

    @classmethod
    def check(cls, *, parallel: Any, db: Any, table: Any, fail_fast: Any,
              max_consecutive_failures: Any, timeout: Any, progress: Any, on_progress: Any,
              resume: Any, limit: Any, seed_policy: Any, retries: Any = 0, retry_on: Any = (),
              retry_delay: Any = 1.0, rate_limit: Any = None, worker_init: Any = None,
              backend: Any = "auto", launcher: Any = "spawn",
              task_timeout: Any = None) -> "BatchOptions":
        from xetrack_c.run.retry import RetryPolicy, rate_interval

        if parallel is None:
            workers = 1
        elif isinstance(parallel, bool) or not isinstance(parallel, int):
            raise TypeError(f"parallel must be None, 0 or a positive int, not {_type_name(parallel)}")
        elif parallel < 0:
            raise ValueError(f"parallel must be None, 0 (every CPU) or a positive int, got {parallel}")
        else:
            workers = parallel or (os.cpu_count() or 1)
        if db is not None:
            db = os.path.abspath(os.fspath(db))
        if not isinstance(table, str) or not table:
            raise TypeError(f"table must be a non-empty str, not {table!r}")
        if resume and db is None:
            raise ValueError("resume=True needs db=: the experiments table says what completed")
        for name, value in (("max_consecutive_failures", max_consecutive_failures),
                            ("limit", limit)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                                      or value < 1):
                raise ValueError(f"{name} must be None or a positive int, got {value!r}")
        if progress is not None and not isinstance(progress, bool):
            raise TypeError(f"progress must be None, True or False, not {_type_name(progress)}")
        if on_progress is not None and not callable(on_progress):
            raise TypeError("on_progress must be a callable (done, total, result) or None")
        if seed_policy is not None and not (hasattr(seed_policy, "derive_seed")
                                            or callable(seed_policy)):
            raise TypeError("seed_policy must be a SeedPolicy, a callable (spec, index) -> int, "
                            "or None")
        if backend not in ("auto", "thread", "process"):
            raise ValueError(f"backend must be 'auto', 'thread' or 'process', not {backend!r}")
        if worker_init is not None and not callable(worker_init):
            raise TypeError("worker_init must be a callable taking no arguments, or None")
        if launcher not in ("spawn", "forkserver"):
            raise ValueError(f"launcher must be 'spawn' (a new interpreter per script) or "
                             f"'forkserver' (scripts forked from a warm interpreter), "
                             f"not {launcher!r}")
        return cls(workers, db, table, bool(fail_fast), max_consecutive_failures,
                   _check_timeout(timeout, "batch_timeout"), progress, on_progress,
                   bool(resume), limit, seed_policy, RetryPolicy(retries, retry_on, retry_delay),
                   rate_interval(rate_limit), worker_init,
                   "process" if backend == "process" else "thread", launcher,
                   _check_timeout(task_timeout, "task_timeout"))
