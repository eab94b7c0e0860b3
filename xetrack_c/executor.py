"""Run many experiments -- functions or scripts -- on the C worker pool.

:func:`run_multiple` takes yanex's ``ExperimentSpec`` list and returns one
:class:`ExperimentResult` per spec, in input order. Function tasks run on native worker
threads that take the GIL only for the call; script tasks are separate Python processes
started with ``posix_spawn`` (no shell) and watched without polling. See
``docs/run_multiple.md`` for the guide and ``docs/design.md`` for the pool's internals.
"""

from __future__ import annotations

import dataclasses
import os
import threading
from collections.abc import Callable, Sequence
from typing import Any, Dict, List, Optional, Union

__all__ = ["ExperimentSpec", "ExperimentResult", "run_multiple", "worker_cache"]

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
        timeout: Seconds this experiment may run; None for no limit.
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
        from xetrack_c._specs import validate_spec

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
    """

    experiment_id: str
    status: str
    error_message: Optional[str] = None
    duration: Optional[float] = None
    name: Optional[str] = None
    result: Any = None
    seed: Optional[int] = None


_worker_local = threading.local()


def worker_cache() -> Dict[str, Any]:
    """A dict private to the worker thread running the current task.

    It survives between the tasks that worker runs in a batch, so a task can keep a
    loaded model there for the next one: ``cache = worker_cache(); model =
    cache.get("model") or cache.setdefault("model", load())``. Outside a task it is
    the calling thread's own dict.
    """
    cache = getattr(_worker_local, "cache", None)
    if cache is None:
        cache = _worker_local.cache = {}
    return cache


def _not_yet(option: str, value: Any) -> NotImplementedError:
    return NotImplementedError(
        f"run_multiple({option}={value!r}) is not available yet; leave {option} at its "
        "default"
    )


def run_multiple(
    specs: Sequence[ExperimentSpec],
    parallel: Optional[int] = None,
    *,
    db: Optional[Union[str, "os.PathLike[str]"]] = None,
    table: str = "experiments",
    fail_fast: bool = False,
    max_consecutive_failures: Optional[int] = None,
    retries: int = 0,
    retry_on: Sequence[type] = (),
    rate_limit: Optional[float] = None,
    timeout: Optional[float] = None,
    progress: Optional[bool] = None,
    on_progress: Optional[Callable[[int, int, ExperimentResult], Any]] = None,
    resume: bool = False,
    dry_run: bool = False,
    limit: Optional[int] = None,
    seed_policy: Any = None,
    worker_init: Optional[Callable[[], Any]] = None,
    backend: str = "auto",
    executor: Any = None,
    launcher: str = "spawn",
) -> List[ExperimentResult]:
    """Run experiments one after another or on a pool of workers.

    Args:
        specs: The experiments; every spec is checked before anything runs.
        parallel: None runs one at a time, 0 uses every CPU, N uses N workers.
        db: SQLite file: each experiment becomes a row of ``table``, and
            ``log_metrics`` in the tasks writes to its ``metrics`` table.
        table: Table of the experiment rows.
        fail_fast: After the first experiment that does not complete, start no new
            one (the rest are ``cancelled``; running ones finish).
        max_consecutive_failures: Start no new experiment after this many
            non-completed ones in a row.
        timeout: Seconds for the whole batch; when it passes, running experiments
            stop with status ``timeout`` and the rest are ``cancelled``.
        progress: Show a progress bar (tqdm when installed, else a stderr line);
            None shows it when stderr is a terminal.
        on_progress: ``on_progress(done, total, result)``, called in completion order.
        resume: With ``db``, skip (status ``skipped``) specs that already completed there
            with the same target, config and seed.
        dry_run: Check the specs and return their results as ``skipped``; run nothing.
        limit: Run only the first ``limit`` specs (results for those only).
        seed_policy: How seeds are derived for specs without one: a
            :class:`xetrack_c.SeedPolicy` (study id = ``group``, condition id = name,
            replicate = index), a callable ``(spec, index) -> int``, or None for
            ``derive_seed("run_multiple", name, index)``.
        backend: ``"auto"`` or ``"thread"``: functions on threads, scripts as processes.
        launcher: How script specs start. ``"spawn"`` (default): a new interpreter per
            script, exactly ``python script args``. ``"forkserver"``: each worker keeps
            one warm interpreter that forks a child per script, which skips interpreter
            start-up (tens of milliseconds) for batches of many short scripts; the child
            runs the script as ``__main__`` with its own argv, environment, working
            directory, process group and output files, but interpreter options read at
            start-up (``PYTHONHASHSEED``, ``-X`` flags, ``PYTHONSTARTUP``) are the
            server's.
        retries, retry_on, rate_limit, worker_init, executor: Reserved; only their
            defaults are accepted for now.

    Returns:
        One :class:`ExperimentResult` per spec, in input order.

    Raises:
        ValueError: An empty list or a bad spec (``"Invalid ExperimentSpec at index i:
            ..."``), or a bad option.
        KeyboardInterrupt: Ctrl-C: running experiments were stopped, and every result
            (finished ones recorded) is on the exception's ``results`` attribute.
    """
    from xetrack_c import _specs
    from xetrack_c._batch import Batch

    if backend not in ("auto", "thread", "process"):
        raise ValueError(f"backend must be 'auto', 'thread' or 'process', not {backend!r}")
    if backend == "process":
        raise NotImplementedError(
            "backend='process' is not available yet; use backend='thread' (functions on "
            "threads, scripts as processes)"
        )
    for option, value, default in (("retries", retries, 0), ("retry_on", retry_on, ()),
                                   ("rate_limit", rate_limit, None),
                                   ("worker_init", worker_init, None),
                                   ("executor", executor, None)):
        if value != default and not (option == "retry_on" and not value):
            raise _not_yet(option, value)
    options = _specs.BatchOptions.check(
        parallel=parallel, db=db, table=table, fail_fast=fail_fast,
        max_consecutive_failures=max_consecutive_failures, timeout=timeout,
        progress=progress, on_progress=on_progress, resume=resume, limit=limit,
        seed_policy=seed_policy, launcher=launcher,
    )
    specs = _specs.check_specs(specs, options.limit)
    batch = Batch(specs, options)
    if dry_run:
        return batch.dry_run()
    return batch.run()
