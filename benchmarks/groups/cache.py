"""cache: a cache hit end to end, ``Tracker(db, cache=dir).track(f, args=[...])``, including the
lineage row it logs, against xetrack 0.7 with diskcache.

Each run computes once (untimed), then times repeated calls with the same arguments; the
function counts its real calls, and a run whose "hits" ran the function is reported as failed.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks import workloads
from benchmarks.context import Context
from benchmarks.harness import measure, prepare
from benchmarks.peers import peer, peer_version, xetrack_c_attr
from benchmarks.report import Row, Table, per_op

GROUP = "cache"


def _hits(tracker: Any, calls: int) -> float:
    """Time ``calls`` cache hits on ``tracker`` after one untimed miss; check they were hits."""
    workloads.CALLS["counted_square"] = 0
    tracker.track(workloads.counted_square, args=[12])
    track, func, args = tracker.track, workloads.counted_square, [12]
    start = time.perf_counter()
    for _ in range(calls):
        track(func, args=args)
    elapsed = time.perf_counter() - start
    if workloads.CALLS["counted_square"] != 1:
        raise RuntimeError(f"expected cache hits, but the function ran "
                           f"{workloads.CALLS['counted_square']} times")
    return elapsed


def xetrack_c_hits(calls: int) -> Callable[[], Callable[[Path], float]]:
    """Build a run of xetrack_c cache hits (default durability)."""
    def build() -> Callable[[Path], float]:
        tracker_class = xetrack_c_attr("Tracker")

        def run(workdir: Path) -> float:
            tracker = tracker_class(str(workdir / "c.db"), cache=str(workdir / "c-cache"))
            try:
                return _hits(tracker, calls)
            finally:
                tracker.close()
        return run
    return build


def xetrack_hits(calls: int) -> Callable[[], Callable[[Path], float]]:
    """Build a run of xetrack 0.7 + diskcache cache hits."""
    def build() -> Callable[[Path], float]:
        xetrack = peer("xetrack")
        peer("diskcache")

        def run(workdir: Path) -> float:
            tracker = xetrack.Tracker(db=str(workdir / "x.db"), cache=str(workdir / "x-cache"),
                                      warnings=False)
            try:
                return _hits(tracker, calls)
            finally:
                tracker.cache.close()
                tracker.engine.close()
        return run
    return build


def run(ctx: Context) -> None:
    """Measure and print the cache table."""
    calls = ctx.pick(5_000, 1_000)
    peer_calls = ctx.pick(300, 100)
    label = f"xetrack {peer_version('xetrack')} + diskcache {peer_version('diskcache')}"
    series = [prepare("xetrack_c cache hit", calls, xetrack_c_hits(calls)),
              prepare(label, peer_calls, xetrack_hits(peer_calls))]
    results = measure(GROUP, series, ctx.reps, ctx.group_dir(GROUP), "cache hits")
    ctx.emit(Table(
        "cache: track() cache hit, end to end",
        "Time per hit, median [min–max]: key derivation, lookup, unpickling the result and "
        "logging the lineage row (default durability for both).",
        notes=["Target: >= 50x xetrack + diskcache."],
        rows=[Row("track(f, args=[12]) hit", f"{calls:,} hits", results[series[0].label],
                  [results[series[1].label]], display=per_op("hit"))],
    ))
