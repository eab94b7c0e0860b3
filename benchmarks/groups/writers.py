"""writers: ``log()`` from several writers at once, and one writer's latency.

1. Rows/s in all with 1, 2, 4 and 8 threads sharing one Tracker (group commit: waiting
   threads join the transaction that commits next) and 1, 2 and 4 processes each with its
   own Tracker on one file (commits serialise on the WAL write lock), for each durability.
   Every run counts the rows in the file afterwards; a lost row fails the series.
2. One thread, ``durability="commit"``: each ``log()`` timed on its own, median and 99th
   percentile (a WAL checkpoint inside ``log()`` shows as a p99 far above the median),
   against the C floor of one commit per row (SQLite's default automatic checkpoint).

Each run is a fresh interpreter (benchmarks/writers_worker.py) writing a fresh file. With
``XETRACK_C_BASELINE=DIR`` (a directory holding another in-place build of xetrack_c, e.g. an
export of the main branch), every series also runs against that build, interleaved, so a
change is measured before and after in one run.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from benchmarks.context import Context
from benchmarks.env import REPO_ROOT, subprocess_env
from benchmarks.harness import Result, Skip, measure, prepare
from benchmarks.report import Limit, Row, Table, human, human_time, per_op

GROUP = "writers"
WORKER = Path(__file__).resolve().parent.parent / "writers_worker.py"
THREADS = (1, 2, 4, 8)
PROCESSES = (1, 2, 4)
DURABILITIES = ("commit", "fsync", "async")


def _baseline() -> Path | None:
    where = os.environ.get("XETRACK_C_BASELINE")
    return Path(where).resolve() if where else None


def _env(build: Path | None) -> dict[str, str]:
    env = subprocess_env()
    if build is not None:
        env["PYTHONPATH"] = os.pathsep.join([str(build), env["PYTHONPATH"]])
    return env


def _run_worker(build: Path | None, mode: str, writers: int, durability: str, rows: int,
                db: Path) -> dict[str, float]:
    done = subprocess.run(
        [sys.executable, str(WORKER), mode, str(writers), durability, str(rows), str(db)],
        capture_output=True, text=True, env=_env(build), cwd=str(REPO_ROOT), timeout=600)
    if done.returncode != 0:
        raise RuntimeError(f"worker failed: {done.stderr.strip().splitlines()[-1:]}")
    out = json.loads(done.stdout.strip().splitlines()[-1])
    conn = sqlite3.connect(str(db))
    try:
        stored = conn.execute('SELECT count(*) FROM "default"').fetchone()[0]
    finally:
        conn.close()
    expected = (rows // writers) * writers + (1 if mode != "processes" else writers)
    if stored != expected:
        raise RuntimeError(f"{expected - stored} row(s) lost ({stored} of {expected} in the file)")
    return out


def writers_run(build: Path | None, mode: str, writers: int, durability: str,
                rows: int, latencies: list[dict[str, float]] | None = None
                ) -> Callable[[], Callable[[Path], float]]:
    """Build a run of the worker; ``latencies`` collects the per-call figures (latency mode)."""
    def build_run() -> Callable[[Path], float]:
        if build is not None and not (build / "xetrack_c").is_dir():
            raise Skip(f"no xetrack_c build in {build}")

        def run(workdir: Path) -> float:
            out = _run_worker(build, mode, writers, durability, rows, workdir / "w.db")
            if latencies is not None:
                latencies.append(out)
            return out["seconds"]
        return run
    return build_run


def c_floor(ctx: Context, rows: int, synchronous: str, checkpoint: bool = True,
            latencies: list[dict[str, float]] | None = None
            ) -> Callable[[], Callable[[Path], float]]:
    """The C program: one commit per row, SQLite's default automatic checkpoint (or none,
    ``checkpoint=False``); ``latencies`` collects its median and p99 row."""
    def build_run() -> Callable[[Path], float]:
        if ctx.ceiling.binary is None:
            raise Skip(f"C ceiling unavailable: {ctx.ceiling.reason}")

        def run(workdir: Path) -> float:
            out = ctx.ceiling.insert_figures(workdir / "ceiling.db", rows, 10, synchronous,
                                             True, checkpoint)
            if latencies is not None:
                latencies.append(out)
            return float(out["seconds"])
        return run
    return build_run


DURABILITY_MODES = {
    "commit": "WAL, synchronous=NORMAL, commit per row",
    "fsync": "WAL, synchronous=FULL, commit per row",
    "async": "WAL, synchronous=NORMAL, background batches",
}
# The C floors of the latency table: SQLite's default automatic checkpoint (inside the
# commits), and none at all (the machine's own spread of one commit).
FLOORS = {"C commit per row": True, "C commit per row, no checkpoint": False}
SHARING = {"threads": "one Tracker shared", "processes": "one Tracker per process, one file"}


def run(ctx: Context) -> None:
    """Measure and print the writers tables."""
    sizes = {"commit": ctx.pick(16_000, 1_000), "fsync": ctx.pick(800, 100),
             "async": ctx.pick(40_000, 5_000), "latency": ctx.pick(20_000, 3_000)}
    base = _baseline()
    builds: list[tuple[str, Path | None]] = [("xetrack_c", None)]
    if base is not None:
        builds.append(("baseline", base))
    plan = {}
    for name, build in builds:
        for durability in DURABILITIES:
            for mode, counts in (("threads", THREADS), ("processes", PROCESSES)):
                for writers in counts:
                    rows = sizes[durability]
                    label = f"{name} {durability} {writers} {mode}"
                    plan[label] = prepare(label, (rows // writers) * writers,
                                          writers_run(build, mode, writers, durability, rows))
    latencies: dict[str, list[dict[str, float]]] = {name: [] for name, _ in builds}
    for name, build in builds:
        label = f"{name} latency"
        plan[label] = prepare(label, sizes["latency"],
                              writers_run(build, "latency", 1, "commit", sizes["latency"],
                                          latencies[name]))
    for label, checkpoint in FLOORS.items():
        latencies[label] = []
        plan[label] = prepare(label, sizes["latency"],
                              c_floor(ctx, sizes["latency"], "normal", checkpoint,
                                      latencies[label]))
    results = measure(GROUP, list(plan.values()), ctx.reps, ctx.group_dir(GROUP), "writers")
    _emit(ctx, results, builds, sizes, latencies)


def _speedup(results: dict[str, Result], label: str, one: str) -> str:
    a, b = results[label], results[one]
    if not (a.ok and b.ok):
        return ""
    return f"{b.median_per_op / a.median_per_op:.2f}x"


def _emit(ctx: Context, results: dict[str, Result], builds: list[tuple[str, Path | None]],
          sizes: dict[str, int], latencies: dict[str, list[dict[str, float]]]) -> None:
    baseline = len(builds) > 1
    table = Table(
        "writers: log() from several threads and processes, rows/s in all",
        "Rows/s over all writers, median of the repetitions [min–max]; threads share one "
        "Tracker, processes have one each on the same file. The clock runs from a barrier "
        "that every writer reaches with its tracker open to the last writer's close (a "
        "process's close folds the WAL back into the database, so each process adds one)."
        + (" The peer is the baseline build (XETRACK_C_BASELINE), run interleaved." if baseline
           else ""),
    )
    for durability in DURABILITIES:
        for mode, counts in (("threads", THREADS), ("processes", PROCESSES)):
            one = f"xetrack_c {durability} 1 {mode}"
            scaling = []
            for writers in counts:
                label = f"xetrack_c {durability} {writers} {mode}"
                peers = [results[f"baseline {durability} {writers} {mode}"]] if baseline else []
                table.rows.append(Row(f"log(), durability={durability}, {writers} {mode}",
                                      f"{sizes[durability]:,} rows", results[label], peers,
                                      mode=f"{DURABILITY_MODES[durability]}; {SHARING[mode]}"))
                if writers > 1:
                    scaling.append(f"{writers}: {_speedup(results, label, one)}")
                ctx.add_scaling(f"writers: rows/s in all vs {mode}",
                                f"xetrack_c {durability}", writers, results[label])
            table.notes.append(f"{durability}, {mode}: rows/s against 1 writer: "
                               + ", ".join(scaling) + ".")
    table.notes.append("Every run counts the rows in the file afterwards: 0 lost rows in every "
                       "series shown (a lost row would fail the series).")
    ctx.emit(table)

    latency = Table(
        "writers: one thread, durability=commit, per call",
        "Each log() timed on its own (time.perf_counter_ns around the call); the rate row "
        "compares with the C floor of one commit per row, which keeps SQLite's automatic "
        "checkpoint (so it pays for checkpoints inside its commits).",
        notes=["Targets: >= 95% of the C floor; p99 <= 2x the median."],
    )
    floor = results["C commit per row"]
    for name, _ in builds:
        latency.rows.append(Row(f"{name}: log(), commit, rate", f"{sizes['latency']:,} rows",
                                results[f"{name} latency"], [], Limit(floor, "C, commit per row"),
                                mode=DURABILITY_MODES["commit"]))
        _latency_note(latency, f"{name}: median call", latencies[name], sizes["latency"])
    for label in FLOORS:
        latency.rows.append(Row(f"{label} (C floor)", f"{sizes['latency']:,} rows",
                                results[label], [], display=per_op("row"),
                                mode=DURABILITY_MODES["commit"]))
        _latency_note(latency, f"{label}: median row", latencies[label], sizes["latency"])
    latency.notes.append("The C floor without any checkpoint shows this machine's own spread "
                         "of one commit: a p99/median above 2 there is the machine's, not a "
                         "checkpoint's.")
    ctx.emit(latency)


def _latency_note(table: Table, what: str, runs: list[dict[str, float]], calls: int) -> None:
    """One note: median, p99 and their ratio over the runs (median [min–max])."""
    if not runs:
        return
    med = sorted(r["median"] for r in runs)
    p99 = sorted(r["p99"] for r in runs)
    ratios = sorted(r["p99"] / r["median"] for r in runs if r["median"] > 0)
    mid = len(runs) // 2
    largest = (f", largest call {human_time(max(r['max'] for r in runs))}"
               if all("max" in r for r in runs) else "")
    table.notes.append(
        f"{what} {human_time(med[mid])} [{human_time(med[0])}–{human_time(med[-1])}], "
        f"p99 {human_time(p99[mid])} [{human_time(p99[0])}–{human_time(p99[-1])}], "
        f"p99/median {ratios[len(ratios) // 2]:.2f} [{ratios[0]:.2f}–{ratios[-1]:.2f}]"
        f"{largest} over {len(runs)} runs of {human(calls)}.")
