"""cache: a cache hit end to end, ``Tracker(db, cache=dir).track(f, args=[...])``, including the
lineage row it logs, against xetrack 0.7 with diskcache; and what authenticating entries
costs a hit: the same hits with and without a key (``cache_key=False``), in the same run.

Each run computes once (untimed), then times repeated calls with the same arguments; the
function counts its real calls, and a run whose "hits" ran the function is reported as failed.
The authentication rows log to ``Tracker.SKIP_INSERT`` so that the MAC is not lost in the
noise of a commit, and are timed in CPU time of the calling thread, which the load of other
programs does not inflate; the difference between the two series, repetition by repetition,
is the cost of verifying the entry's HMAC-SHA256.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks import workloads
from benchmarks.context import Context
from benchmarks.harness import derived, measure, prepare
from benchmarks.peers import peer, peer_version, xetrack_c_attr
from benchmarks.report import Row, Table, per_op

GROUP = "cache"

#: An explicit key, so that the benchmark never makes a key file in the real home.
BENCH_KEY = secrets.token_hex(32)
KIB_VALUE = bytes(range(256)) * 4
KIB_CALLS = {"n": 0}


def counted_kib(x: int) -> bytes:
    """1 KiB of bytes (a pickled value of 1,042 bytes), counting real calls."""
    KIB_CALLS["n"] += 1
    return KIB_VALUE


def _small() -> tuple[Callable[[int], Any], Callable[[], int]]:
    workloads.CALLS["counted_square"] = 0
    return workloads.counted_square, lambda: workloads.CALLS["counted_square"]


def _kib() -> tuple[Callable[[int], Any], Callable[[], int]]:
    KIB_CALLS["n"] = 0
    return counted_kib, lambda: KIB_CALLS["n"]


def _hits(tracker: Any, calls: int, workload: Callable[[], tuple[Callable[[int], Any],
                                                                 Callable[[], int]]] = _small,
          clock: Callable[[], float] = time.perf_counter) -> float:
    """Time ``calls`` cache hits on ``tracker`` after one untimed miss; check they were hits."""
    func, ran = workload()
    tracker.track(func, args=[12])
    track, args = tracker.track, [12]
    start = clock()
    for _ in range(calls):
        track(func, args=args)
    elapsed = clock() - start
    if ran() != 1:
        raise RuntimeError(f"expected cache hits, but the function ran {ran()} times")
    return elapsed


def xetrack_c_hits(calls: int, db: str = "c.db", cache_key: Any = BENCH_KEY,
                   workload: Callable[[], tuple[Callable[[int], Any], Callable[[], int]]] = _small,
                   clock: Callable[[], float] = time.perf_counter,
                   ) -> Callable[[], Callable[[Path], float]]:
    """Build a run of xetrack_c cache hits (default durability; ``db`` may be
    ``"SKIP_INSERT"``), authenticated with ``cache_key`` (False: unauthenticated), timed
    with ``clock``."""
    def build() -> Callable[[Path], float]:
        tracker_class = xetrack_c_attr("Tracker")

        def run(workdir: Path) -> float:
            target = db if db == tracker_class.SKIP_INSERT else str(workdir / db)
            tracker = tracker_class(target, cache=str(workdir / "c-cache"), cache_key=cache_key)
            try:
                if tracker.cache is None or tracker.cache.authenticated != (cache_key is not False):
                    raise RuntimeError("the cache is not in the authentication mode asked for")
                return _hits(tracker, calls, workload, clock)
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


#: Bytes the MAC of an entry covers besides its value: the tag, five lengths, the 32-digit
#: key, a track id, the timestamp and the function name of these benchmarks.
MAC_OVERHEAD = 23 + 5 * 8 + 32 + len("brave-otter-0421") + 26 + len("benchmarks.groups.cache.counted_kib")


def mac_alone(calls: int, message_size: int) -> Callable[[], Callable[[Path], float]]:
    """Build a run of ``calls`` one-shot HMAC-SHA256s of ``message_size`` bytes from Python
    (an upper bound of the MAC a hit verifies: it adds the call and the key's two blocks)."""
    def build() -> Callable[[Path], float]:
        hmac_sha256 = xetrack_c_attr("hmac_sha256", "xetrack_c._core")
        key, message = BENCH_KEY.encode(), bytes(message_size)

        def run(_: Path) -> float:
            start = time.thread_time()
            for _ in range(calls):
                hmac_sha256(key, message)
            return time.thread_time() - start
        return run
    return build


def _trust_rows(ctx: Context) -> tuple[list[Row], list[str]]:
    """Authenticated against unauthenticated hits, small and 1 KiB values, interleaved in one
    measurement (many short repetitions, so that both meet the same load), their difference
    per repetition, and the MAC alone; plus a note per case on the fastest repetitions."""
    calls = ctx.pick(5_000, 2_000)
    cases = [("int result (5-byte pickle)", _small, 5),
             ("1 KiB result (1,042-byte pickle)", _kib, 1042)]
    series = []
    for name, workload, size in cases:
        series.append(prepare(f"authenticated hit, {name}", calls,
                              xetrack_c_hits(calls, "SKIP_INSERT", BENCH_KEY, workload,
                                             time.thread_time)))
        series.append(prepare(f"unauthenticated hit, {name}", calls,
                              xetrack_c_hits(calls, "SKIP_INSERT", False, workload,
                                             time.thread_time)))
        series.append(prepare(f"HMAC-SHA256 of {size + MAC_OVERHEAD:,} bytes", calls * 10,
                              mac_alone(calls * 10, size + MAC_OVERHEAD)))
    results = measure(GROUP, series, max(3 * ctx.reps, 15), ctx.group_dir(GROUP) / "trust",
                      "authenticated vs unauthenticated hits")
    rows, notes = [], []
    for name, _, size in cases:
        signed = results[f"authenticated hit, {name}"]
        unsigned = results[f"unauthenticated hit, {name}"]
        alone = results[f"HMAC-SHA256 of {size + MAC_OVERHEAD:,} bytes"]
        rows.append(Row(f"track() hit, {name}: with a key (peer: cache_key=False)",
                        f"{calls:,} hits", signed, [unsigned], display=per_op("hit")))
        if signed.ok and unsigned.ok:
            added = [a - b for a, b in zip(signed.seconds, unsigned.seconds, strict=False)]
            rows.append(Row(f"added by authentication, {name} (per-repetition difference)",
                            f"{calls:,} hits", derived(f"MAC cost, {name}", calls, added),
                            display=per_op("hit")))
            notes.append(f"{name}, fastest repetitions: {signed.min_per_op * 1e6:.2f} µs "
                         f"authenticated, {unsigned.min_per_op * 1e6:.2f} µs unauthenticated, "
                         f"{(signed.min_per_op - unsigned.min_per_op) * 1e6:.2f} µs added.")
        rows.append(Row(f"HMAC-SHA256 alone over the {size + MAC_OVERHEAD:,} bytes the MAC of "
                        f"this entry covers", f"{alone.ops:,} MACs", alone, display=per_op("MAC")))
    return rows, notes


def run(ctx: Context) -> None:
    """Measure and print the cache tables."""
    calls = ctx.pick(5_000, 1_000)
    peer_calls = ctx.pick(300, 100)
    label = f"xetrack {peer_version('xetrack')} + diskcache {peer_version('diskcache')}"
    series = [prepare("xetrack_c cache hit", calls, xetrack_c_hits(calls)),
              prepare(label, peer_calls, xetrack_hits(peer_calls))]
    results = measure(GROUP, series, ctx.reps, ctx.group_dir(GROUP), "cache hits")
    ctx.emit(Table(
        "cache: track() cache hit, end to end",
        mode="hit only (no cache write); xetrack_c lineage row: WAL, commit / xetrack 0.7 + diskcache: defaults",
        description=
        "Time per hit, median [min–max]: key derivation, lookup, verifying the entry's MAC, "
        "unpickling the result and logging the lineage row (default durability for both).",
        notes=["Target: >= 50x xetrack + diskcache."],
        rows=[Row("track(f, args=[12]) hit", f"{calls:,} hits", results[series[0].label],
                  [results[series[1].label]], display=per_op("hit"))],
    ))
    rows, notes = _trust_rows(ctx)
    ctx.emit(Table(
        "cache: what authenticating entries costs a hit",
        mode="CPU time of the calling thread, hit only",
        description=
        "CPU time of the calling thread per hit (a hit does all its work on that thread, so "
        "other programs' load does not count), median [min–max], with the row going to "
        "Tracker.SKIP_INSERT: the authenticated hit verifies the entry's HMAC-SHA256 (over "
        "key, value and lineage) before unpickling; the unauthenticated one "
        "(cache_key=False, peer column) does not. Both series run interleaved in the same "
        "repetitions.",
        notes=["Target: <= 2 µs added per hit for values up to 1 KiB.",
               "The HMAC-SHA256 rows time the MAC alone, called from Python (one-shot, the "
               "key set up each time, so a little more than a hit pays): the cost of "
               "verifying without the noise of timing whole hits.", *notes],
        rows=rows,
    ))
