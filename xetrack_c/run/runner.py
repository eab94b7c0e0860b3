"""``run_multiple``: run many experiments -- functions or scripts -- on the C worker pool.

The top of :mod:`xetrack_c.run`: it checks the specs and options (:mod:`xetrack_c.run.types`)
and hands them to the local batch (:mod:`xetrack_c.run.batch`) or, with ``executor=``, to the
executor path (:mod:`xetrack_c.run.remote`). Function tasks run on native worker threads
that take the GIL only for the call; script tasks are separate Python processes started
without a shell (and killed if this process dies) and watched without polling. See
``docs/run_multiple.md`` for the guide and ``docs/design.md`` for the pool's internals.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Sequence
from typing import Any, List, Optional, Union

from xetrack_c.run.batch import Batch
from xetrack_c.run.interrupts import stopped
from xetrack_c.run.types import BatchOptions, ExperimentResult, ExperimentSpec, check_specs

__all__ = ["run_multiple"]


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
    rate_limit: Union[None, float, str] = None,
    task_timeout: Optional[float] = None,
    batch_timeout: Optional[float] = None,
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
    cache: Optional[Union[str, "os.PathLike[str]"]] = None,
    retry_delay: float = 1.0,
    cache_key: Union[str, bytes, bool, None] = None,
) -> List[ExperimentResult]:
    """Run experiments one after another or on a pool of workers.

    Args:
        specs: The experiments; every spec is checked before anything runs.
        parallel: None runs one at a time, 0 uses every CPU, N uses N workers.
        db: SQLite file: each experiment becomes one final row of ``table``, with what
            its function returned as columns, and ``log_metrics`` in the tasks writes to
            its ``metrics`` table (with retries, every attempt is a row of its
            ``attempts`` table). None writes nothing: the rows tasks log come back in
            ``ExperimentResult.metrics``.
        table: Table of the experiment rows (not ``"attempts"``).
        fail_fast: After the first experiment that does not complete, start no new
            one (the rest are ``cancelled``; running ones finish).
        max_consecutive_failures: Start no new experiment after this many
            non-completed ones in a row (after retries: an experiment that fails and is
            retried counts once, when its last attempt fails).
        retries: Attempts after the first for a function task that raised one of
            ``retry_on``, or for any task that ran past its own ``timeout`` when
            ``TimeoutError`` is one of them. Crashed workers, failed scripts and
            cancelled tasks are not retried.
        retry_on: Exception types worth another attempt (e.g. ``(TimeoutError,
            RateLimitError)``); empty: any ``Exception``.
        rate_limit: At most this many task starts: a number per second, or ``"N/s"``,
            ``"N/min"``, ``"N/h"``; starts are spaced evenly (``"50/min"``: one every
            1.2 s). Retries are starts too.
        task_timeout: Seconds each experiment may run, for the specs that set no
            ``timeout`` of their own. A script, or a function with ``backend="process"``,
            is killed at its timeout. A function on a thread cannot be killed: it gets
            ``TaskTimeout`` raised inside it, which lands when it next runs Python; if it
            has not returned 0.5 s later it is reported ``timeout``, its outcome dropped
            and its thread abandoned (a new thread takes its worker's place, and its
            ``log_metrics`` calls are refused). Once ``parallel`` abandoned threads are
            still running, no further function task starts (those are ``cancelled``).
        batch_timeout: Seconds for the whole batch; when it passes, running experiments
            stop with status ``timeout`` and the rest are ``cancelled``.
        timeout: Deprecated spelling of ``batch_timeout`` (a ``DeprecationWarning``);
            removed in the next release.
        progress: Show progress (tqdm.auto when installed, else stderr lines); None
            shows it when stderr is a terminal or in a Jupyter notebook, True also when
            stderr is redirected (whole lines, no carriage returns).
        on_progress: ``on_progress(done, total, result)``, called in completion order.
            If it raises, the batch stops as on Ctrl-C and the exception propagates
            with the results on its ``results`` attribute.
        resume: With ``db``, skip (status ``skipped``) specs that already completed there
            with the same target, config and seed.
        dry_run: Check the specs and return their results as ``skipped``; run nothing.
        limit: Run only the first ``limit`` specs (results for those only).
        seed_policy: How seeds are derived for specs without one: a
            :class:`xetrack_c.SeedPolicy` (study id = ``group``, condition id = name,
            replicate = index), a callable ``(spec, index) -> int``, or None for
            ``derive_seed("run_multiple", name, index)``.
        worker_init: Called once on each worker before its first task (a worker thread,
            or a worker process with ``backend="process"``): load a model into
            :func:`worker_cache` there. If it raises, every task of that worker fails
            with its error. Local pool only.
        backend: Where function tasks run. ``"auto"`` and ``"thread"``: on the pool's
            threads (I/O-bound work; CPU-bound work on free-threaded Python).
            ``"process"``: on persistent worker processes, one per worker, fed pickled
            calls (cloudpickle for lambdas, closures and ``__main__`` functions): CPU
            parallelism and crash isolation -- a task that segfaults, exits, is killed
            or hangs past its timeout fails alone and its worker process is replaced.
            Scripts always run as their own processes.
        executor: Run the tasks on this ``concurrent.futures.Executor``-like object (a
            ``dask.distributed.Client``, submitit, a ``ProcessPoolExecutor``) instead of
            the local pool; ``parallel`` then caps the tasks in flight (None: all). Rows
            logged in the tasks travel back with their results and this process writes
            them: see ``docs/distributed.md``.
        launcher: How script specs start. ``"spawn"`` (default): a new interpreter per
            script, exactly ``python script args``. ``"forkserver"``: each worker keeps
            one warm interpreter that forks a child per script, which skips interpreter
            start-up (tens of milliseconds) for batches of many short scripts; the child
            runs the script as ``__main__`` with its own argv, environment, working
            directory, process group and output files, but interpreter options read at
            start-up (``PYTHONHASHSEED``, ``-X`` flags, ``PYTHONSTARTUP``) are the
            server's. Local pool only.
        cache: With ``executor``: a result-cache directory; function tasks found there
            are not submitted, and what the others return is stored there by this
            process.
        retry_delay: Base of the retry backoff, in seconds: before attempt ``k + 1`` a
            task waits a random time in ``[0, retry_delay * 2**(k - 1)]``, at most 300 s.
        cache_key: With ``cache``: the secret that authenticates its entries, as
            ``Tracker(cache_key=...)`` takes it (None: ``XETRACK_C_CACHE_KEY``, else the
            per-user key file; False: no authentication). See "Trust" in docs/cache.md.

    Returns:
        One :class:`ExperimentResult` per spec, in input order.

    Raises:
        ValueError: An empty list or a bad spec (``"Invalid ExperimentSpec at index i:
            ..."``), or a bad option.
        KeyboardInterrupt: Ctrl-C: running experiments were stopped (a function on a
            thread is abandoned if it has not returned 0.5 s later), every spec has its
            final record, and every result is on the exception's ``results`` attribute.
            Its message says how many completed, failed and were cancelled, and how to
            resume; left uncaught it prints as that one line (``XETRACK_C_TRACEBACK=1``:
            the full traceback).
    """
    if timeout is not None:
        if batch_timeout is not None:
            raise TypeError("run_multiple() got both timeout= and batch_timeout=; timeout= is "
                            "the deprecated name of batch_timeout=: pass batch_timeout= only")
        warnings.warn("run_multiple(timeout=...) is deprecated: it limits the whole batch, so "
                      "write batch_timeout=...; to limit each task, write task_timeout=... "
                      "(or ExperimentSpec(timeout=...))", DeprecationWarning, stacklevel=2)
        batch_timeout = timeout
    if executor is not None:
        for option, value, default in (("rate_limit", rate_limit, None),
                                       ("worker_init", worker_init, None),
                                       ("launcher", launcher, "spawn")):
            if value != default:
                raise NotImplementedError(
                    f"run_multiple(executor=..., {option}=...) is not supported: {option} "
                    f"applies to the local pool; leave it at {default!r} or drop executor")
    elif cache is not None:
        raise NotImplementedError(
            "run_multiple(cache=...) needs executor=...; on the local pool, track the function "
            "with Tracker(db, cache=dir).track(...) inside the task instead")
    if cache_key is not None and cache is None:
        raise ValueError("run_multiple(cache_key=...) authenticates the result cache: it needs "
                         "cache=... (and executor=...)")
    options = BatchOptions.check(
        parallel=parallel, db=db, table=table, fail_fast=fail_fast,
        max_consecutive_failures=max_consecutive_failures, timeout=batch_timeout,
        progress=progress, on_progress=on_progress, resume=resume, limit=limit,
        seed_policy=seed_policy, retries=retries, retry_on=retry_on, retry_delay=retry_delay,
        rate_limit=rate_limit, worker_init=worker_init, backend=backend, launcher=launcher,
        task_timeout=task_timeout,
    )
    specs = check_specs(specs, options.limit, options.task_timeout)
    try:
        if executor is not None and not dry_run:
            from xetrack_c.run.remote import run_on_executor

            return run_on_executor(specs, options, executor, retries=retries,
                                   retry_on=retry_on, cache=cache, parallel=parallel,
                                   cache_key=cache_key)
        batch = Batch(specs, options)
        if dry_run:
            return batch.dry_run()
        return batch.run()
    except KeyboardInterrupt as interrupt:
        if not hasattr(interrupt, "results"):
            raise
        shown = stopped(interrupt, options.db)  # one line; its traceback starts here
        if shown is interrupt:
            raise
        raise shown from None
