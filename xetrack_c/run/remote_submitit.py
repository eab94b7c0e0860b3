"""What ``run_multiple(executor=...)`` does differently on a submitit executor
(``AutoExecutor``, ``SlurmExecutor``, ``LocalExecutor``): tasks submitted together go in
one job array.

submitit's ``submit`` returns a ``Job``, not a ``concurrent.futures.Future``: it has
``done()``, ``result()`` and ``cancel()`` but no ``add_done_callback``, so the driver
watches it with ``done()`` (:meth:`xetrack_c.run.remote.RemoteBatch._poll`), like any
future without callbacks. Nothing here imports submitit.
"""

from __future__ import annotations

from typing import Any, List, Sequence, Tuple


def is_submitit_executor(executor: Any) -> bool:
    """True for one of submitit's executors or a subclass (they pack submissions with
    ``batch()``)."""
    return callable(getattr(executor, "batch", None)) and any(
        kind.__module__.split(".")[0] == "submitit" for kind in type(executor).__mro__)


def submit(executor: Any, tasks: Sequence[Tuple[Any, Sequence[Any]]]) -> List[Any]:
    """Jobs of ``(function, args)`` tasks, in order.

    Several tasks go in one ``executor.batch()``: on Slurm one ``sbatch`` of a job array
    (at most ``slurm_array_parallelism`` running at once) instead of one ``sbatch`` per
    task; a local executor starts them one by one.
    """
    if len(tasks) <= 1:
        return [executor.submit(function, *args) for function, args in tasks]
    with executor.batch():
        jobs = [executor.submit(function, *args) for function, args in tasks]
    return jobs


def job_done(job: Any) -> bool:
    """``job.done()`` of a job without callbacks; an error there counts as done, and the
    job's ``result()`` then says what is wrong."""
    try:
        return bool(job.done())
    except Exception:  # noqa: BLE001 - e.g. a failed Slurm query: result() reports it
        return True
