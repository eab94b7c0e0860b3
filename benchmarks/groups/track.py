"""track: ``tracker.track(noop, args=[1, 2])`` against xetrack's, and the overhead of track()
above a plain ``log()`` of a row of the same shape (function_name, args, kwargs, error,
function_time, function_result)."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks.context import Context
from benchmarks.harness import Result, derived, measure, prepare
from benchmarks.peers import peer, peer_version, xetrack_c_attr
from benchmarks.report import Row, Table, per_op
from benchmarks.workloads import noop

GROUP = "track"
TRACK_ROW: dict[str, Any] = {"function_name": "noop", "args": "[1, 2]", "kwargs": "{}",
                             "error": "", "function_time": 0.0, "function_result": None}
"""The row track(noop, args=[1, 2]) writes, less timestamp and track_id."""


def _tracker(path: Path, durability: str) -> Any:
    tracker_class = xetrack_c_attr("Tracker")
    if durability == "commit":
        return tracker_class(str(path))
    return tracker_class(str(path), durability=durability)


def xetrack_c_calls(durability: str, calls: int, use_track: bool) -> Callable[[], Callable[[Path], float]]:
    """Build a run of ``calls`` track(noop) calls, or of as many log() calls of the same row."""
    def build() -> Callable[[Path], float]:
        xetrack_c_attr("Tracker")

        def run(workdir: Path) -> float:
            tracker = _tracker(workdir / "c.db", durability)
            try:
                tracker.track(noop, args=[1, 2])  # warm-up: creates the columns
                if durability == "async":
                    tracker.flush()
                track, log, args, row = tracker.track, tracker.log, [1, 2], dict(TRACK_ROW)
                start = time.perf_counter()
                if use_track:
                    for _ in range(calls):
                        track(noop, args=args)
                else:
                    for _ in range(calls):
                        log(row)
                if durability == "async":
                    tracker.flush()
                return time.perf_counter() - start
            finally:
                tracker.close()
        return run
    return build


def xetrack_calls(calls: int, **options: Any) -> Callable[[], Callable[[Path], float]]:
    """Build a run of ``calls`` xetrack 0.7 track(noop) calls on a Tracker made with
    ``options`` (e.g. ``log_system_params=True``)."""
    def build() -> Callable[[Path], float]:
        xetrack = peer("xetrack")

        def run(workdir: Path) -> float:
            tracker = xetrack.Tracker(db=str(workdir / "x.db"), warnings=False, **options)
            try:
                tracker.track(noop, args=[1, 2])
                track, args = tracker.track, [1, 2]
                start = time.perf_counter()
                for _ in range(calls):
                    track(noop, args=args)
                return time.perf_counter() - start
            finally:
                tracker.engine.close()
        return run
    return build


def overhead(label: str, tracked: Result, logged: Result) -> Result:
    """track() minus log(), per call, paired repetition by repetition (same interleaved pass)."""
    if not (tracked.ok and logged.ok):
        reason = tracked.reason or logged.reason or "needs both track() and log()"
        return Result(label=label, ops=1, status=tracked.status if not tracked.ok else logged.status,
                      reason=reason)
    pairs = zip(tracked.per_op, logged.per_op, strict=True)
    return derived(label, 1, [t - lg for t, lg in pairs])


def run(ctx: Context) -> None:
    """Measure and print the track table."""
    commit_calls = ctx.pick(5_000, 1_000)
    async_calls = ctx.pick(100_000, 20_000)
    xetrack_calls_n = ctx.pick(300, 100)
    version = peer_version("xetrack")
    plan = {
        "track_commit": prepare("xetrack_c track(), commit", commit_calls,
                                xetrack_c_calls("commit", commit_calls, True)),
        "log_commit": prepare("xetrack_c log() same row, commit", commit_calls,
                              xetrack_c_calls("commit", commit_calls, False)),
        "track_async": prepare("xetrack_c track(), async", async_calls,
                               xetrack_c_calls("async", async_calls, True)),
        "log_async": prepare("xetrack_c log() same row, async", async_calls,
                             xetrack_c_calls("async", async_calls, False)),
        "xetrack": prepare(f"xetrack {version} track()", xetrack_calls_n, xetrack_calls(xetrack_calls_n)),
    }
    labels = {key: entry.label for key, entry in plan.items()}
    results = measure(GROUP, list(plan.values()), ctx.reps, ctx.group_dir(GROUP), "track")
    r = {key: results[label] for key, label in labels.items()}
    over_commit = overhead("track() − log(), commit", r["track_commit"], r["log_commit"])
    over_async = overhead("track() − log(), async", r["track_async"], r["log_async"])
    table = Table(
        "track: tracker.track(noop, args=[1, 2])",
        mode="xetrack_c: WAL, the durability named in the row (commit: no sync) / xetrack 0.7: "
        "rollback journal, synchronous=FULL, commit per row",
        description=
        "Time per call, median [min–max]. The log() rows write the same 6-key row that track() "
        "writes, in the same interleaved run; the overhead rows subtract them repetition by "
        "repetition.",
        notes=["Targets: track() of a no-op >= 50x xetrack; overhead above the row write <= 2 µs.",
               "The ratio against the xetrack_c log() line is track()'s speed relative to a bare "
               "log() of the same row (below 1: track() costs more).",
               "xetrack 0.7 commits each row with a disk sync (rollback journal, "
               "synchronous=FULL); xetrack_c's default commit mode writes to the WAL without one."],
        rows=[
            Row("track(noop), commit", f"{commit_calls:,} calls", r["track_commit"],
                [r["xetrack"], r["log_commit"]], display=per_op("call")),
            Row("track(noop), async (+flush)", f"{async_calls:,} calls", r["track_async"],
                [r["xetrack"], r["log_async"]], display=per_op("call")),
            Row("overhead above log(), commit", "per call", over_commit, display=per_op("call")),
            Row("overhead above log(), async", "per call", over_async, display=per_op("call")),
        ],
    )
    ctx.emit(table)
