"""executor: ``xetrack_c.run_multiple`` against the standard library's pools and yanex.

1. Per-task overhead of 1,000 no-op function tasks on 2 workers: threads (backend="auto",
   which runs functions on threads) against ThreadPoolExecutor, and backend="process" against
   ProcessPoolExecutor; end to end, pool start-up included, specs built before the clock starts.
2. 50 trivial scripts (``import sys``), sequential and parallel=2, against yanex 0.6's
   ``run_multiple``; the floor is the same scripts run with ``subprocess.run``.
3. Scaling at 10, 100 and 1,000 function tasks.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from contextlib import chdir, contextmanager
from pathlib import Path
from typing import Any

from benchmarks.context import Context
from benchmarks.env import quiet_output, subprocess_env
from benchmarks.harness import Result, measure, prepare
from benchmarks.peers import peer, peer_version, xetrack_c_attr
from benchmarks.report import Limit, Row, Table, growth_note, per_op
from benchmarks.workloads import TRIVIAL_SCRIPT, noop_task

GROUP = "executor"
WORKERS = 2
Build = Callable[[], Callable[[Path], float]]


def _check_completed(results: Any, expected: int, who: str) -> None:
    statuses = [getattr(result, "status", None) for result in results]
    done = statuses.count("completed")
    if done != expected:
        others = sorted({str(s) for s in statuses if s != "completed"})
        raise RuntimeError(f"{who}: {done}/{expected} completed (others: {', '.join(others)})")


def xetrack_c_functions(tasks: int, parallel: int | None, backend: str | None) -> Build:
    """Build a run of ``tasks`` no-op function specs through xetrack_c.run_multiple."""
    def build() -> Callable[[Path], float]:
        run_multiple = xetrack_c_attr("run_multiple")
        spec_class = xetrack_c_attr("ExperimentSpec")
        options = {} if backend is None else {"backend": backend}

        def run(_: Path) -> float:
            specs = [spec_class(function=noop_task, config={"i": i}) for i in range(tasks)]
            start = time.perf_counter()
            results = run_multiple(specs, parallel, **options)
            elapsed = time.perf_counter() - start
            _check_completed(results, tasks, "xetrack_c run_multiple")
            return elapsed
        return run
    return build


def pool_functions(tasks: int, pool: str) -> Build:
    """Build a run of ``tasks`` no-op calls through a standard-library pool (or a plain loop)."""
    def build() -> Callable[[Path], float]:
        def run(_: Path) -> float:
            configs = [{"i": i} for i in range(tasks)]
            start = time.perf_counter()
            if pool == "loop":
                for config in configs:
                    noop_task(config)
            else:
                executor_class = ThreadPoolExecutor if pool == "thread" else ProcessPoolExecutor
                with executor_class(max_workers=WORKERS) as executor:
                    list(executor.map(noop_task, configs))
            return time.perf_counter() - start
        return run
    return build


def _script_dir(workdir: Path, git: bool) -> Path:
    """A directory holding the trivial script, made a one-commit git checkout when ``git``
    (where a user's own project usually is); every contender runs from it."""
    where = workdir / ("checkout" if git else "plain")
    where.mkdir(exist_ok=True)
    (where / "trivial.py").write_text(TRIVIAL_SCRIPT)
    if git and not (where / ".git").exists():
        quiet = {"check": True, "cwd": where, "stdout": subprocess.DEVNULL,
                 "stderr": subprocess.DEVNULL}
        subprocess.run(["git", "init", "-q"], **quiet)
        subprocess.run(["git", "add", "trivial.py"], **quiet)
        subprocess.run(["git", "-c", "user.name=bench", "-c", "user.email=bench@localhost",
                        "commit", "-q", "-m", "trivial script"], **quiet)
    return where


@contextmanager
def _environ(name: str, value: str) -> Iterator[None]:
    old = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = old


def xetrack_c_scripts(count: int, parallel: int | None, git: bool) -> Build:
    """Build a run of ``count`` trivial scripts through xetrack_c.run_multiple."""
    def build() -> Callable[[Path], float]:
        run_multiple = xetrack_c_attr("run_multiple")
        spec_class = xetrack_c_attr("ExperimentSpec")

        def run(workdir: Path) -> float:
            where = _script_dir(workdir, git)
            specs = [spec_class(script_path=str(where / "trivial.py"), config={"i": i})
                     for i in range(count)]
            with chdir(where):
                start = time.perf_counter()
                results = run_multiple(specs, parallel)
                elapsed = time.perf_counter() - start
            _check_completed(results, count, "xetrack_c run_multiple")
            return elapsed
        return run
    return build


def yanex_scripts(count: int, parallel: int | None, git: bool) -> Build:
    """Build a run of ``count`` trivial scripts through yanex.run_multiple (output silenced,
    experiments stored in the run's directory)."""
    def build() -> Callable[[Path], float]:
        yanex = peer("yanex")

        def run(workdir: Path) -> float:
            where = _script_dir(workdir, git)
            specs = [yanex.ExperimentSpec(script_path=where / "trivial.py", config={"i": i})
                     for i in range(count)]
            # Inside a git checkout yanex also records the repository state of each experiment.
            with _environ("YANEX_EXPERIMENTS_DIR", str(workdir / "yanex")), chdir(where), \
                    quiet_output():
                start = time.perf_counter()
                results = yanex.run_multiple(specs, parallel=parallel)
                elapsed = time.perf_counter() - start
            _check_completed(results, count, "yanex run_multiple")
            return elapsed
        return run
    return build


def subprocess_scripts(count: int, parallel: int | None, git: bool) -> Build:
    """Build a run of ``count`` trivial scripts with subprocess.run: the floor."""
    def build() -> Callable[[Path], float]:
        def run(workdir: Path) -> float:
            where = _script_dir(workdir, git)
            env = subprocess_env()

            def one(_: int) -> None:
                subprocess.run([sys.executable, "trivial.py"], env=env, check=True, cwd=where,
                               stdout=subprocess.DEVNULL)
            start = time.perf_counter()
            if parallel is None:
                for i in range(count):
                    one(i)
            else:
                with ThreadPoolExecutor(max_workers=parallel) as executor:
                    list(executor.map(one, range(count)))
            return time.perf_counter() - start
        return run
    return build


def run(ctx: Context) -> None:
    """Measure and print the executor tables."""
    _functions(ctx)
    _scripts(ctx)


def _functions(ctx: Context) -> None:
    sizes = [10, 100, 1_000]
    table = Table(
        f"executor: no-op function tasks, {WORKERS} workers",
        "Time per task (whole batch / tasks), median [min–max], pool start-up included.",
        notes=["Targets at 1,000 tasks: threads <= ThreadPoolExecutor's per-task overhead; "
               "processes <= 1/2 of ProcessPoolExecutor's.",
               "backend=\"auto\" runs function tasks on threads."],
    )
    curves: dict[str, list[tuple[float, Result]]] = {}
    for tasks in sizes:
        plan = {
            "c_thread": prepare(f"xetrack_c run_multiple threads, {tasks}", tasks,
                                xetrack_c_functions(tasks, WORKERS, None)),
            "c_process": prepare(f"xetrack_c run_multiple process, {tasks}", tasks,
                                 xetrack_c_functions(tasks, WORKERS, "process")),
            "c_seq": prepare(f"xetrack_c run_multiple sequential, {tasks}", tasks,
                             xetrack_c_functions(tasks, None, None)),
            "tpe": prepare("ThreadPoolExecutor", tasks, pool_functions(tasks, "thread")),
            "ppe": prepare("ProcessPoolExecutor", tasks, pool_functions(tasks, "process")),
            "loop": prepare("plain loop", tasks, pool_functions(tasks, "loop")),
        }
        labels = {key: entry.label for key, entry in plan.items()}
        results = measure(GROUP, list(plan.values()), ctx.reps, ctx.group_dir(GROUP),
                          f"{tasks:,} function tasks")
        r = {key: results[label] for key, label in labels.items()}
        size = f"{tasks:,} tasks"
        loop = Limit(r["loop"], "plain loop")
        table.rows += [
            Row("run_multiple, threads", size, r["c_thread"], [r["tpe"]], loop, per_op("task")),
            Row("run_multiple, backend=\"process\"", size, r["c_process"], [r["ppe"]], loop,
                per_op("task")),
            Row("run_multiple, sequential", size, r["c_seq"], [], loop, per_op("task")),
        ]
        for key, name in (("c_thread", "xetrack_c threads"), ("c_process", "xetrack_c processes"),
                          ("tpe", "ThreadPoolExecutor"), ("ppe", "ProcessPoolExecutor")):
            curves.setdefault(name, []).append((tasks, r[key]))
            ctx.add_scaling("executor: cost per task vs tasks", name, tasks, r[key])
    for name, points in curves.items():
        # growth_note divides the batch time by the size itself.
        totals = [(size, _as_batch(result)) for size, result in points]
        table.notes.append(growth_note(name, totals, "tasks"))
    ctx.emit(table)


def _as_batch(result: Result) -> Result:
    """The same timings seen as one batch (ops=1), so that the per-op time is the total."""
    return Result(label=result.label, ops=1, seconds=list(result.seconds), status=result.status,
                  reason=result.reason)


def _scripts(ctx: Context) -> None:
    count = ctx.pick(50, 10)
    version = peer_version("yanex")
    rows: list[Row] = []
    for git, where in ((False, "plain directory"), (True, "git checkout")):
        plan = {
            "c_seq": prepare(f"xetrack_c sequential, {where}", count,
                             xetrack_c_scripts(count, None, git)),
            "c_par": prepare(f"xetrack_c parallel={WORKERS}, {where}", count,
                             xetrack_c_scripts(count, WORKERS, git)),
            "y_seq": prepare(f"yanex {version} sequential, {where}", count,
                             yanex_scripts(count, None, git)),
            "y_par": prepare(f"yanex {version} parallel={WORKERS}, {where}", count,
                             yanex_scripts(count, WORKERS, git)),
            "s_seq": prepare(f"subprocess.run sequential, {where}", count,
                             subprocess_scripts(count, None, git)),
            "s_par": prepare(f"subprocess.run, {WORKERS} threads, {where}", count,
                             subprocess_scripts(count, WORKERS, git)),
        }
        labels = {key: entry.label for key, entry in plan.items()}
        results = measure(GROUP, list(plan.values()), ctx.reps, ctx.group_dir(GROUP),
                          f"{count} scripts, {where}")
        r = {key: results[label] for key, label in labels.items()}
        rows += [
            Row(f"run_multiple, sequential, {where}", f"{count} scripts", r["c_seq"], [r["y_seq"]],
                Limit(r["s_seq"], "subprocess.run"), per_op("script")),
            Row(f"run_multiple, parallel={WORKERS}, {where}", f"{count} scripts", r["c_par"],
                [r["y_par"]], Limit(r["s_par"], f"subprocess.run, {WORKERS} threads"),
                per_op("script")),
        ]
    ctx.emit(Table(
        f"executor: {count} trivial scripts (`import sys`)",
        "Time per script, median [min–max]; each script is a new Python process.",
        notes=["Target: >= 10x yanex, sequential and parallel=2.",
               "yanex also records each experiment (metadata, config, output capture) under a "
               "temporary YANEX_EXPERIMENTS_DIR; its console output is discarded.",
               "Every contender runs from the same working directory: a plain temporary "
               "directory, then a one-commit git checkout (where a user's project usually "
               "lives; yanex then also records the repository state)."],
        rows=rows,
    ))
