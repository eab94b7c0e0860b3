"""process: how a ``backend="process"`` batch starts, against ProcessPoolExecutor.

Whole-batch wall time of 10, 100 and 1,000 no-op function tasks on 2 worker processes,
pool start-up and shut-down included (what a user pays for one call), specs and inputs
built before the clock starts:

- xetrack_c ``run_multiple(..., backend="process")``: one warm server per interpreter,
  spawned by its first process batch (``posix_spawn``-style: never a fork of the caller)
  and kept for later ones, that loads each batch's task module and forks every worker.
  Two rows: a later batch (the server already runs: what every batch after the first
  pays) and the first batch of a fresh interpreter (timed inside a new ``python``
  process around its first ``run_multiple`` call, the interpreter's own start and
  imports excluded: what a script that runs one batch pays on top of them);
- ``concurrent.futures.ProcessPoolExecutor`` with the "fork" start method (Python's default
  on Linux before 3.14: every worker is a fork of the caller itself), ``map`` at
  chunksize=1 and at several larger chunksizes, the best of which is reported;
- the same pool with the "forkserver" start method at chunksize=1 (the default from 3.14;
  its server is started once per Python process and then kept, so only the first batch of
  a process pays for it);
- the floor of any pool that does not fork its caller: one ``python -S -c pass``.
"""

from __future__ import annotations

import multiprocessing
import os
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from benchmarks.context import Context
from benchmarks.harness import Result, measure, prepare
from benchmarks.peers import xetrack_c_attr
from benchmarks.report import Limit, Row, Table, per_op
from benchmarks.workloads import noop_task

GROUP = "process"
WORKERS = 2
SIZES = (10, 100, 1_000)
Build = Callable[[], Callable[[Path], float]]


def chunksizes(tasks: int) -> list[int]:
    """The chunksizes tried for ProcessPoolExecutor.map above 1: powers of 4 below one
    worker's share, and that share (each worker gets one chunk)."""
    share = -(-tasks // WORKERS)
    sizes = [size for size in (4, 16, 64, 256) if size < share]
    return sorted(set(sizes + [share]))


def xetrack_c_batch(tasks: int) -> Build:
    """Build a run of ``tasks`` no-op specs through run_multiple(backend="process")."""
    def build() -> Callable[[Path], float]:
        run_multiple = xetrack_c_attr("run_multiple")
        spec_class = xetrack_c_attr("ExperimentSpec")

        def run(_: Path) -> float:
            specs = [spec_class(function=noop_task, config={"i": i}) for i in range(tasks)]
            start = time.perf_counter()
            results = run_multiple(specs, WORKERS, backend="process")
            elapsed = time.perf_counter() - start
            done = sum(result.status == "completed" for result in results)
            if done != tasks:
                raise RuntimeError(f"run_multiple: {done}/{tasks} completed")
            return elapsed
        return run
    return build


def xetrack_c_warm_batch(tasks: int) -> Build:
    """As :func:`xetrack_c_batch`, with this interpreter's server started before the
    clock runs: every measured batch is a later batch."""
    def build() -> Callable[[Path], float]:
        run = xetrack_c_batch(tasks)()
        run(Path("."))
        return run
    return build


FIRST_BATCH = """
import sys, time
sys.path[:0] = {path!r}
from benchmarks.workloads import noop_task
from xetrack_c import ExperimentSpec, run_multiple

specs = [ExperimentSpec(function=noop_task, config={{"i": i}}) for i in range({tasks})]
start = time.perf_counter()
results = run_multiple(specs, {workers}, backend="process")
elapsed = time.perf_counter() - start
assert sum(r.status == "completed" for r in results) == {tasks}
print(elapsed)
"""


def xetrack_c_first_batch(tasks: int) -> Build:
    """Build a run of the first process batch of a new interpreter: the batch's own time,
    measured in that interpreter (its start, imports and exit are not counted)."""
    def build() -> Callable[[Path], float]:
        xetrack_c_attr("run_multiple")  # skipped where it has not landed
        root = str(Path(__file__).resolve().parents[2])
        code = FIRST_BATCH.format(path=[root, *sys.path], tasks=tasks, workers=WORKERS)

        def run(_: Path) -> float:
            out = subprocess.run([sys.executable, "-c", code], check=True, text=True,
                                 capture_output=True, env=dict(os.environ))
            return float(out.stdout.split()[-1])
        return run
    return build


def pool_batch(tasks: int, chunksize: int, method: str) -> Build:
    """Build a run of ``tasks`` no-op calls through ProcessPoolExecutor.map."""
    def build() -> Callable[[Path], float]:
        context = multiprocessing.get_context(method)

        def run(_: Path) -> float:
            configs = [{"i": i} for i in range(tasks)]
            start = time.perf_counter()
            with ProcessPoolExecutor(max_workers=WORKERS, mp_context=context) as executor:
                values = list(executor.map(noop_task, configs, chunksize=chunksize))
            elapsed = time.perf_counter() - start
            if len(values) != tasks:
                raise RuntimeError(f"ProcessPoolExecutor: {len(values)}/{tasks} results")
            return elapsed
        return run
    return build


def interpreter_start() -> Build:
    """Build a run of one ``python -S -c pass``: the floor of a spawned server."""
    def build() -> Callable[[Path], float]:
        def run(_: Path) -> float:
            start = time.perf_counter()
            subprocess.run([sys.executable, "-S", "-c", "pass"], check=True)
            return time.perf_counter() - start
        return run
    return build


def _as(result: Result, label: str) -> Result:
    return Result(label=label, ops=result.ops, seconds=list(result.seconds),
                  status=result.status, reason=result.reason)


def run(ctx: Context) -> None:
    """Measure and print the process start-up table."""
    table = Table(
        f"process: start-up of a backend=\"process\" batch, {WORKERS} workers",
        mode="xetrack_c: workers forked from its fork server / the pool: start method and chunksize named in the peer column",
        description=
        "Whole-batch wall time of no-op function tasks, pool start-up and shut-down "
        f"included, median [min–max] of {ctx.reps} runs; every contender runs in the same "
        "interleaved loop.",
        notes=["Targets: ahead of ProcessPoolExecutor at chunksize=1 and at its best "
               "chunksize, at 10 and at 1,000 tasks.",
               "xetrack_c: one warm server per interpreter, spawned by its first process "
               "batch (never a fork of the caller) and kept for later ones; it loads each "
               "batch's task module, then forks each worker; the workers are gone when "
               "run_multiple returns. \"later batch\": the server already runs; \"first "
               "batch\": the first run_multiple of a new interpreter, timed inside it "
               "(its start and imports not counted), which pays the server's start.",
               "ProcessPoolExecutor (fork): each worker is a fork of the benchmark process "
               "itself (Python's default on Linux before 3.14), so no interpreter starts.",
               "ProcessPoolExecutor (forkserver): Python's default from 3.14; its server "
               "outlives the pool (one per Python process), so after the first repetition "
               "its start-up is not in the measured time.",
               "Limit: one `python -S -c pass` — what any pool that does not fork its "
               "caller pays at least once.",
               "A later batch starts no interpreter (its server is warm), so its share of this "
               "limit can exceed 100%: the limit marks what a first batch pays, not a later "
               "one."],
    )
    for tasks in SIZES:
        sizes = chunksizes(tasks)
        plan = {
            "c": prepare(f"xetrack_c backend=process, later batch, {tasks}", 1,
                         xetrack_c_warm_batch(tasks)),
            "c_first": prepare(f"xetrack_c backend=process, first batch, {tasks}", 1,
                               xetrack_c_first_batch(tasks)),
            "ppe1": prepare(f"ProcessPoolExecutor (fork), chunksize=1, {tasks}", 1,
                            pool_batch(tasks, 1, "fork")),
            "fs1": prepare(f"ProcessPoolExecutor (forkserver), chunksize=1, {tasks}", 1,
                           pool_batch(tasks, 1, "forkserver")),
            "floor": prepare("python -S -c pass", 1, interpreter_start()),
        }
        for size in sizes:
            plan[f"ppe{size}"] = prepare(f"ProcessPoolExecutor (fork), chunksize={size}, "
                                         f"{tasks}", 1, pool_batch(tasks, size, "fork"))
        labels = {key: entry.label for key, entry in plan.items()}
        results = measure(GROUP, list(plan.values()), ctx.reps, ctx.group_dir(GROUP),
                          f"{tasks:,} no-op tasks")
        r = {key: results[label] for key, label in labels.items()}
        tried = [r[f"ppe{size}"] for size in sizes if r[f"ppe{size}"].ok]
        best_size = None
        if tried:
            best = min(tried, key=lambda result: result.median_per_op)
            best_size = sizes[[r[f"ppe{size}"] for size in sizes].index(best)]
        peers = [_as(r["ppe1"], "ProcessPoolExecutor (fork), chunksize=1")]
        if best_size is not None:
            tried_text = ", ".join(str(size) for size in sizes)
            peers.append(_as(r[f"ppe{best_size}"],
                             f"ProcessPoolExecutor (fork), best chunksize={best_size} "
                             f"(of {tried_text})"))
        peers.append(_as(r["fs1"], "ProcessPoolExecutor (forkserver), chunksize=1"))
        table.rows.append(Row("run_multiple, backend=\"process\", later batch",
                              f"{tasks:,} tasks", r["c"], peers,
                              Limit(r["floor"], "python -S -c pass"), per_op("batch")))
        table.rows.append(Row("run_multiple, backend=\"process\", first batch",
                              f"{tasks:,} tasks", r["c_first"], peers,
                              Limit(r["floor"], "python -S -c pass"), per_op("batch")))
    ctx.emit(table)
