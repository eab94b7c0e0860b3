"""One run of the writers benchmark, in a fresh interpreter (benchmarks/groups/writers.py).

``python benchmarks/writers_worker.py MODE WRITERS DURABILITY ROWS DB`` with MODE one of
``threads`` (WRITERS threads share one Tracker), ``processes`` (WRITERS processes, each with
its own Tracker on DB) or ``latency`` (one thread; every log() call timed). ROWS is the
total over all writers. Every writer opens its tracker and logs one untimed warm-up row
before a barrier; the clock runs from the barrier to the last writer's close (async:
after its flush). Prints one JSON line: ``seconds`` and, for ``latency``, the median and
99th percentile of one call in seconds.

It is a script, not a module of the package, so that the parent can put another build of
xetrack_c first on PYTHONPATH and compare builds side by side.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import statistics
import sys
import threading
import time
from typing import Any


def make_row(row: int) -> dict[str, Any]:
    """The benchmark suite's 10-key row (benchmarks/data.py): int, float, str by column."""
    out: dict[str, Any] = {}
    for col in range(10):
        kind = col % 3
        out[f"k{col}"] = row * 31 + col if kind == 0 else row * 0.5 + col / 8 if kind == 1 \
            else f"v{col}-{row % 1000}"
    return out


def open_tracker(db: str, durability: str, track_id: str) -> Any:
    """A tracker on ``db`` that has logged its warm-up row."""
    from xetrack_c import Tracker

    tracker = Tracker(db, durability=durability, track_id=track_id)
    tracker.log(make_row(-1))
    if durability == "async":
        tracker.flush()
    return tracker


def finish(tracker: Any, durability: str) -> None:
    """Flush (async) and close, inside the timed region."""
    if durability == "async":
        tracker.flush()
    tracker.close()


def run_threads(writers: int, durability: str, rows: int, db: str) -> dict[str, float]:
    """``writers`` threads log ``rows`` rows in all through one tracker."""
    tracker = open_tracker(db, durability, "w")
    barrier = threading.Barrier(writers + 1)
    share = rows // writers

    def write(w: int) -> None:
        log = tracker.log
        data = [make_row(w * share + i) for i in range(share)]
        barrier.wait()
        for row in data:
            log(row)

    threads = [threading.Thread(target=write, args=(w,)) for w in range(writers)]
    for thread in threads:
        thread.start()
    barrier.wait()
    start = time.perf_counter()
    for thread in threads:
        thread.join()
    finish(tracker, durability)
    return {"seconds": time.perf_counter() - start}


def _process_writer(db: str, durability: str, first: int, share: int, barrier: Any) -> None:
    tracker = open_tracker(db, durability, f"p{first}")
    data = [make_row(first + i) for i in range(share)]
    log = tracker.log
    barrier.wait()
    for row in data:
        log(row)
    finish(tracker, durability)


def run_processes(writers: int, durability: str, rows: int, db: str) -> dict[str, float]:
    """``writers`` processes, each with its own tracker, log ``rows`` rows in all."""
    context = mp.get_context("fork")
    barrier = context.Barrier(writers + 1)
    share = rows // writers
    procs = [context.Process(target=_process_writer, args=(db, durability, w * share, share, barrier))
             for w in range(writers)]
    for proc in procs:
        proc.start()
    barrier.wait()
    start = time.perf_counter()
    for proc in procs:
        proc.join()
    seconds = time.perf_counter() - start
    if any(proc.exitcode != 0 for proc in procs):
        raise SystemExit(f"a writer process failed: {[proc.exitcode for proc in procs]}")
    return {"seconds": seconds}


def run_latency(durability: str, rows: int, db: str) -> dict[str, float]:
    """One thread; each log() call timed on its own."""
    tracker = open_tracker(db, durability, "lat")
    data = [make_row(i) for i in range(rows)]
    log = tracker.log
    clock = time.perf_counter_ns
    took = [0] * rows
    start = time.perf_counter()
    for i, row in enumerate(data):
        t0 = clock()
        log(row)
        took[i] = clock() - t0
    finish(tracker, durability)
    seconds = time.perf_counter() - start
    took.sort()
    return {"seconds": seconds, "median": statistics.median(took) / 1e9,
            "p99": took[int(len(took) * 0.99)] / 1e9, "max": took[-1] / 1e9}


def main(argv: list[str]) -> None:
    """Run one mode and print its JSON line."""
    mode, writers, durability, rows, db = argv[0], int(argv[1]), argv[2], int(argv[3]), argv[4]
    if mode == "threads":
        out = run_threads(writers, durability, rows, db)
    elif mode == "processes":
        out = run_processes(writers, durability, rows, db)
    else:
        out = run_latency(durability, rows, db)
    print(json.dumps(out))


if __name__ == "__main__":
    main(sys.argv[1:])
