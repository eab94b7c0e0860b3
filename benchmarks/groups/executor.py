"""executor: ``xetrack_c.run_multiple`` against the standard library's pools and yanex.

1. Per-task overhead of 1,000 no-op function tasks on 2 workers: threads (backend="auto",
   which runs functions on threads) against ThreadPoolExecutor, and backend="process" against
   ProcessPoolExecutor; end to end, pool start-up included, specs built before the clock starts.
2. 50 trivial scripts (``import sys``), sequential and parallel=2, against yanex 0.6's
   ``run_multiple``; the floor is the same scripts run with ``subprocess.run``.
3. Scaling at 10, 100 and 1,000 function tasks.
4. A CPU-bound batch (pure-Python arithmetic): backend="process" with 2 workers against the
   same tasks run one after another in a plain loop (the speed-up), ProcessPoolExecutor with
   2 workers, and run_multiple sequential.
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
from benchmarks.groups.process_start import chunksizes
from benchmarks.harness import Result, measure, prepare
from benchmarks.peers import peer, peer_version, xetrack_c_attr
from benchmarks.report import Limit, Row, Table, growth_note, per_op
from benchmarks.workloads import TRIVIAL_SCRIPT, cpu_task, noop_task

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


def pool_functions(tasks: int, pool: str, chunksize: int = 1) -> Build:
    """Build a run of ``tasks`` no-op calls through a standard-library pool (or a plain loop);
    ``chunksize`` is passed to ``ProcessPoolExecutor.map``."""
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
                    list(executor.map(noop_task, configs, chunksize=chunksize))
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


def xetrack_c_scripts(count: int, parallel: int | None, git: bool,
                      launcher: str = "spawn") -> Build:
    """Build a run of ``count`` trivial scripts through xetrack_c.run_multiple."""
    def build() -> Callable[[Path], float]:
        run_multiple = xetrack_c_attr("run_multiple")
        spec_class = xetrack_c_attr("ExperimentSpec")
        options = {} if launcher == "spawn" else {"launcher": launcher}

        def run(workdir: Path) -> float:
            where = _script_dir(workdir, git)
            specs = [spec_class(script_path=str(where / "trivial.py"), config={"i": i})
                     for i in range(count)]
            with chdir(where):
                start = time.perf_counter()
                results = run_multiple(specs, parallel, **options)
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


def cpu_batch(tasks: int, iterations: int, how: str, chunksize: int = 1) -> Build:
    """Build a run of ``tasks`` CPU-bound tasks: ``how`` is "loop", "ppe", "process" (2
    workers) or "sequential" (run_multiple, one worker process)."""
    def build() -> Callable[[Path], float]:
        run_multiple = xetrack_c_attr("run_multiple")
        spec_class = xetrack_c_attr("ExperimentSpec")

        def run(_: Path) -> float:
            configs = [{"n": iterations, "i": i} for i in range(tasks)]
            specs = [spec_class(function=cpu_task, config=config) for config in configs]
            start = time.perf_counter()
            if how == "loop":
                for config in configs:
                    cpu_task(config)
            elif how == "ppe":
                with ProcessPoolExecutor(max_workers=WORKERS) as executor:
                    list(executor.map(cpu_task, configs, chunksize=chunksize))
            else:
                parallel = WORKERS if how == "process" else None
                results = run_multiple(specs, parallel, backend="process")
            elapsed = time.perf_counter() - start
            if how in ("process", "sequential"):
                _check_completed(results, tasks, "xetrack_c run_multiple")
            return elapsed
        return run
    return build


def _cpu_bound(ctx: Context) -> None:
    tasks = ctx.pick(16, 8)
    iterations = 1_000_000
    plan = {
        "process": prepare(f"xetrack_c backend=process, parallel={WORKERS}", tasks,
                           cpu_batch(tasks, iterations, "process")),
        "sequential": prepare("xetrack_c backend=process, sequential", tasks,
                              cpu_batch(tasks, iterations, "sequential")),
        "loop": prepare("plain loop (sequential)", tasks, cpu_batch(tasks, iterations, "loop")),
        "ppe": prepare(f"ProcessPoolExecutor, {WORKERS} workers, chunksize=1", tasks,
                       cpu_batch(tasks, iterations, "ppe")),
    }
    sizes = chunksizes(tasks)
    for chunk in sizes:
        plan[f"ppe{chunk}"] = prepare(f"ProcessPoolExecutor, {WORKERS} workers, "
                                      f"chunksize={chunk}", tasks,
                                      cpu_batch(tasks, iterations, "ppe", chunk))
    labels = {key: entry.label for key, entry in plan.items()}
    results = measure(GROUP, list(plan.values()), ctx.reps, ctx.group_dir(GROUP),
                      f"{tasks} CPU-bound tasks")
    r = {key: results[label] for key, label in labels.items()}
    size = f"{tasks} tasks"
    ctx.emit(Table(
        f"executor: CPU-bound function tasks, {WORKERS} worker processes",
        f"Time per task ({iterations:,} iterations of pure-Python arithmetic each), median "
        "[min–max], worker start-up included.",
        notes=["Target: >= 1.8x speed-up over sequential (the ratio against the plain loop).",
               "The machine's cores are shared with other work: the speed-up is bounded by "
               "the CPU time the two workers actually get."],
        rows=[Row(f"run_multiple, backend=\"process\", parallel={WORKERS}", size, r["process"],
                  [r["loop"], r["ppe"], *filter(None, [_best_chunksize(r, sizes)])], None,
                  per_op("task"), mode=f"{WORKERS} worker processes each (the loop: one "
                  "process); the pool at chunksize=1 and at its best chunksize"),
              Row("run_multiple, backend=\"process\", sequential", size, r["sequential"],
                  [r["loop"]], None, per_op("task"),
                  mode="one worker process / the loop in the calling process")],
    ))


def run(ctx: Context) -> None:
    """Measure and print the executor tables."""
    _functions(ctx)
    _cpu_bound(ctx)
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
            "ppe": prepare("ProcessPoolExecutor, chunksize=1", tasks,
                           pool_functions(tasks, "process")),
            "loop": prepare("plain loop", tasks, pool_functions(tasks, "loop")),
        }
        sizes = chunksizes(tasks)
        for chunk in sizes:
            plan[f"ppe{chunk}"] = prepare(f"ProcessPoolExecutor, chunksize={chunk}, {tasks}",
                                          tasks, pool_functions(tasks, "process", chunk))
        labels = {key: entry.label for key, entry in plan.items()}
        results = measure(GROUP, list(plan.values()), ctx.reps, ctx.group_dir(GROUP),
                          f"{tasks:,} function tasks")
        r = {key: results[label] for key, label in labels.items()}
        size = f"{tasks:,} tasks"
        loop = Limit(r["loop"], "plain loop")
        process_peers = [r["ppe"]]
        best = _best_chunksize(r, sizes)
        if best is not None:
            process_peers.append(best)
        table.rows += [
            Row("run_multiple, threads", size, r["c_thread"], [r["tpe"]], loop, per_op("task"),
                mode=f"{WORKERS} threads each"),
            Row("run_multiple, backend=\"process\"", size, r["c_process"], process_peers, loop,
                per_op("task"), mode=f"{WORKERS} worker processes each; the pool at "
                "chunksize=1 and at its best chunksize"),
            Row("run_multiple, sequential", size, r["c_seq"], [], loop, per_op("task"),
                mode="in the calling process, one after another"),
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


def _best_chunksize(r: dict[str, Result], sizes: list[int], prefix: str = "ppe") -> Result | None:
    """The fastest ProcessPoolExecutor series among the chunksizes tried above 1, relabelled
    with its chunksize and the ones tried; None when none ran."""
    tried = [(size, r[f"{prefix}{size}"]) for size in sizes if r[f"{prefix}{size}"].ok]
    if not tried:
        return None
    size, best = min(tried, key=lambda pair: pair[1].median_per_op)
    label = (f"ProcessPoolExecutor, best chunksize={size} "
             f"(of {', '.join(str(s) for s in sizes)})")
    return Result(label=label, ops=best.ops, seconds=list(best.seconds), status=best.status,
                  reason=best.reason)


def _as_batch(result: Result) -> Result:
    """The same timings seen as one batch (ops=1), so that the per-op time is the total."""
    return Result(label=result.label, ops=1, seconds=list(result.seconds), status=result.status,
                  reason=result.reason)


def _scripts(ctx: Context) -> None:
    count = ctx.pick(50, 10)
    version = peer_version("yanex")
    fresh = f"xetrack_c: a fresh interpreter per script / yanex {version}: a fresh interpreter"
    forked = (f"xetrack_c: forked from a warm interpreter (fork server) / yanex {version}: "
              "a fresh interpreter")
    rows: list[Row] = []
    for git, where in ((False, "plain directory"), (True, "git checkout")):
        plan = {
            "c_seq": prepare(f"xetrack_c sequential, {where}", count,
                             xetrack_c_scripts(count, None, git)),
            "c_par": prepare(f"xetrack_c parallel={WORKERS}, {where}", count,
                             xetrack_c_scripts(count, WORKERS, git)),
            "f_seq": prepare(f"xetrack_c forkserver sequential, {where}", count,
                             xetrack_c_scripts(count, None, git, "forkserver")),
            "f_par": prepare(f"xetrack_c forkserver parallel={WORKERS}, {where}", count,
                             xetrack_c_scripts(count, WORKERS, git, "forkserver")),
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
                Limit(r["s_seq"], "subprocess.run"), per_op("script"), mode=fresh),
            Row(f"run_multiple, parallel={WORKERS}, {where}", f"{count} scripts", r["c_par"],
                [r["y_par"]], Limit(r["s_par"], f"subprocess.run, {WORKERS} threads"),
                per_op("script"), mode=fresh),
            Row(f"launcher=\"forkserver\", sequential, {where}", f"{count} scripts",
                r["f_seq"], [r["y_seq"]], Limit(r["s_seq"], "subprocess.run"), per_op("script"),
                mode=forked),
            Row(f"launcher=\"forkserver\", parallel={WORKERS}, {where}", f"{count} scripts",
                r["f_par"], [r["y_par"]], Limit(r["s_par"], f"subprocess.run, {WORKERS} threads"),
                per_op("script"), mode=forked),
        ]
    ctx.emit(Table(
        f"executor: {count} trivial scripts (`import sys`)",
        "Time per script, median [min–max]; each script is a new Python process.",
        notes=["Target: >= 10x yanex, sequential and parallel=2.",
               "launcher=\"spawn\" (the default) starts a new interpreter per script, as "
               "yanex does: both sit on the subprocess.run floor. launcher=\"forkserver\" "
               "forks each script from a warm interpreter per worker (its start-up is "
               "inside the measured time).",
               "yanex also records each experiment (metadata, config, output capture) under a "
               "temporary YANEX_EXPERIMENTS_DIR; its console output is discarded.",
               "Every contender runs from the same working directory: a plain temporary "
               "directory, then a one-commit git checkout (where a user's project usually "
               "lives; yanex then also records the repository state).",
               "The subprocess.run limit is the floor of a fresh interpreter per script: "
               "launcher=\"spawn\" rows sit on it (within the spread of the repetitions on a "
               "loaded machine), while launcher=\"forkserver\" rows skip the interpreter "
               "start-up by design, so a share above 100% there is the start-up they save, "
               "not a loose floor."],
        rows=rows,
    ))
