"""system: what ``log_system_params=True`` (and ``log_network_params=True``) adds to a
``track(noop)`` and a ``log()``, against the same calls without it, and against xetrack 0.7's
``track()`` with system metrics (which measures inside every call)."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks.context import Context
from benchmarks.groups.track import overhead, xetrack_calls
from benchmarks.harness import measure, prepare
from benchmarks.peers import peer_version, xetrack_c_attr
from benchmarks.report import Row, Table, per_op
from benchmarks.workloads import noop

GROUP = "system"
ROW: dict[str, Any] = {"step": 1, "loss": 0.5, "name": "a"}
METRICS = {"off": {}, "system": {"log_system_params": True},
           "system+network": {"log_system_params": True, "log_network_params": True}}


def xetrack_c_calls(metrics: str, calls: int, use_track: bool,
                    durability: str) -> Callable[[], Callable[[Path], float]]:
    """``calls`` track(noop) calls (or log() calls of a 3-key row) on a tracker with ``metrics``."""
    def build() -> Callable[[Path], float]:
        tracker_class = xetrack_c_attr("Tracker")

        def run(workdir: Path) -> float:
            tracker = tracker_class(str(workdir / "c.db"), durability=durability, **METRICS[metrics])
            try:
                tracker.track(noop, args=[1, 2])  # warm-up: creates the columns
                tracker.log(ROW)
                tracker.flush()
                track, log, args, row = tracker.track, tracker.log, [1, 2], dict(ROW)
                start = time.perf_counter()
                if use_track:
                    for _ in range(calls):
                        track(noop, args=args)
                else:
                    for _ in range(calls):
                        log(row)
                tracker.flush()
                return time.perf_counter() - start
            finally:
                tracker.close()
        return run
    return build


def run(ctx: Context) -> None:
    """Measure and print the system-metrics table."""
    calls = ctx.pick(20_000, 3_000)
    xetrack_n = ctx.pick(5, 2)
    version = peer_version("xetrack")
    plan = {}
    for durability in ("commit", "async"):
        for metrics in METRICS:
            for kind, use_track in (("track", True), ("log", False)):
                plan[(durability, metrics, kind)] = prepare(
                    f"xetrack_c {kind}(), {metrics}, {durability}", calls,
                    xetrack_c_calls(metrics, calls, use_track, durability))
    plan["xetrack"] = prepare(f"xetrack {version} track(), system", xetrack_n,
                              xetrack_calls(xetrack_n, log_system_params=True))
    labels = {key: entry.label for key, entry in plan.items()}
    results = measure(GROUP, list(plan.values()), ctx.reps, ctx.group_dir(GROUP), "system")
    r = {key: results[label] for key, label in labels.items()}
    rows = []
    for durability in ("commit", "async"):
        for metrics in ("system", "system+network"):
            for kind in ("track", "log"):
                on, off = r[(durability, metrics, kind)], r[(durability, "off", kind)]
                peers = [r["xetrack"], off] if kind == "track" else [off]
                rows.append(Row(f"{kind}(), {metrics}, {durability}", f"{calls:,} calls", on,
                                peers, display=per_op("call")))
                rows.append(Row(f"added by {metrics}, {kind}(), {durability}", "per call",
                                overhead(f"{kind}() {metrics} − off, {durability}", on, off),
                                display=per_op("call")))
    ctx.emit(Table(
        "system: track(noop) and log() with log_system_params=True",
        mode="xetrack_c: WAL, the durability named in the row / xetrack 0.7: rollback journal, synchronous=FULL, commit per row",
        description=
        "Time per call, median [min–max], measurement_interval=1 (the default). Each 'added "
        "by' row subtracts the same call without metrics, repetition by repetition, in the "
        "same interleaved run; it includes writing the 4 to 8 extra columns.",
        notes=["Target: track() with log_system_params=True <= 50 µs above a plain track().",
               "xetrack 0.7 measures inside every call (cpu_percent(interval=0.1) and a helper "
               "process per track()); xetrack_c reads samples taken by a background thread.",
               "'async' ends with flush() inside the timed region."],
        rows=rows,
    ))
