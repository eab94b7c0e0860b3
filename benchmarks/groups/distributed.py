"""distributed: ``run_multiple(executor=client)`` on a Dask LocalCluster against Dask itself.

Per-task overhead of no-op function tasks through a ``dask.distributed`` LocalCluster (2
worker processes, 1 thread each, started once before the clock), measured in the same run
for:

1. ``run_multiple(specs, executor=client)``: seeds, ids, results in input order;
2. the same with ``db=``: each task logs one metrics row, shipped back and written by the
   driver with its experiment row;
3. Dask's own ``client.map(noop, configs)`` + ``client.gather``, then dropping the futures
   (their release is paid inside the clock, as run_multiple pays it): the floor.

Skipped when dask.distributed is not installed.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks.context import Context
from benchmarks.harness import measure, prepare
from benchmarks.peers import xetrack_c_attr
from benchmarks.report import Limit, Row, Table, per_op
from benchmarks.workloads import noop_task

GROUP = "distributed"
WORKERS = 2
Build = Callable[[], Callable[[Path], float]]


def metrics_task(config: dict[str, Any]) -> None:
    """Log one metrics row (shipped to the driver), return nothing."""
    from xetrack_c import log_metrics

    log_metrics({"i": config["i"]})


class Cluster:
    """A LocalCluster and its client, started on first use."""

    def __init__(self) -> None:
        self.cluster: Any = None
        self.client: Any = None

    def get(self) -> Any:
        if self.client is None:
            from distributed import Client, LocalCluster

            self.cluster = LocalCluster(n_workers=WORKERS, threads_per_worker=1, processes=True,
                                        dashboard_address=None)
            self.client = Client(self.cluster)
        return self.client

    def close(self) -> None:
        if self.client is not None:
            self.client.close()
            self.cluster.close()
            self.client = self.cluster = None


def _check(results: Any, tasks: int, who: str) -> None:
    done = sum(1 for result in results if getattr(result, "status", None) == "completed")
    if done != tasks:
        raise RuntimeError(f"{who}: {done}/{tasks} completed")


def run_multiple_on(cluster: Cluster, tasks: int, with_db: bool) -> Build:
    """Build a run of ``tasks`` function specs through run_multiple(executor=client)."""
    def build() -> Callable[[Path], float]:
        client = cluster.get()
        run_multiple = xetrack_c_attr("run_multiple")
        spec_class = xetrack_c_attr("ExperimentSpec")
        function = metrics_task if with_db else noop_task

        def run(workdir: Path) -> float:
            specs = [spec_class(function=function, config={"i": i}) for i in range(tasks)]
            options = {"db": str(workdir / "sweep.db")} if with_db else {}
            start = time.perf_counter()
            results = run_multiple(specs, executor=client, **options)
            elapsed = time.perf_counter() - start
            _check(results, tasks, "run_multiple(executor=client)")
            return elapsed
        return run
    return build


def dask_map(cluster: Cluster, tasks: int) -> Build:
    """Build a run of ``tasks`` no-op calls through client.map + client.gather."""
    def build() -> Callable[[Path], float]:
        client = cluster.get()

        def run(_: Path) -> float:
            configs = [{"i": i} for i in range(tasks)]
            start = time.perf_counter()
            futures = client.map(noop_task, configs, pure=False)
            client.gather(futures)
            del futures  # releasing the futures is part of the work, as for run_multiple
            return time.perf_counter() - start
        return run
    return build


def run(ctx: Context) -> None:
    """Measure and print the distributed table."""
    cluster = Cluster()
    try:
        _tasks(ctx, cluster)
    finally:
        cluster.close()


def _tasks(ctx: Context, cluster: Cluster) -> None:
    sizes = [ctx.pick(200, 50), ctx.pick(1_000, 200)]
    rows: list[Row] = []
    for tasks in sizes:
        plan = {
            "rm": prepare(f"run_multiple(executor=client), {tasks}", tasks,
                          run_multiple_on(cluster, tasks, False)),
            "rm_db": prepare(f"run_multiple(executor=client, db=...), {tasks}", tasks,
                             run_multiple_on(cluster, tasks, True)),
            "map": prepare(f"client.map + gather, {tasks}", tasks, dask_map(cluster, tasks)),
        }
        labels = {key: entry.label for key, entry in plan.items()}
        results = measure(GROUP, list(plan.values()), ctx.reps, ctx.group_dir(GROUP),
                          f"{tasks:,} tasks on a LocalCluster")
        r = {key: results[label] for key, label in labels.items()}
        floor = Limit(r["map"], "client.map + gather")
        size = f"{tasks:,} tasks"
        rows += [
            Row("run_multiple(executor=client), no-op", size, r["rm"], [r["map"]], floor,
                per_op("task")),
            Row("run_multiple(executor=client, db=), one metrics row per task", size,
                r["rm_db"], [r["map"]], floor, per_op("task")),
        ]
    ctx.emit(Table(
        f"distributed: no-op function tasks on a Dask LocalCluster ({WORKERS} worker processes)",
        mode="the same LocalCluster for both, cluster start-up excluded",
        description=
        "Time per task (whole batch / tasks), median [min–max]; cluster start-up excluded, "
        "specs built before the clock starts.",
        notes=["client.map is Dask's own floor for the same calls (pure=False, as "
               "run_multiple submits); the ratio is below 1 where run_multiple costs more.",
               "Both clocks include releasing the futures (Dask sends one message per "
               "future dropped).",
               "run_multiple adds per task: a seed and an id, the cloudpickled config, a done "
               "callback and the outcome tuple; tasks go out in one client.map per function "
               "and finished outcomes come back in one client.gather per 0.1 s; with db= "
               "also the buffered rows, written by the driver with the experiment row."],
        rows=rows,
    ))
