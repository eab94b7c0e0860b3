"""Subprocess body of the async-memory benchmark: ``python -m benchmarks.memprobe DB N MARK``.

Logs N rows of 10 keys with ``durability="async"``, reads the resident set size after MARK rows,
every MARK rows after that (to show whether it keeps growing) and at the end, and prints one
JSON line (KiB figures, seconds). The high-water mark (VmHWM) is read at the same points, so a
short spike between samples still shows, and it says in which phase (logging, flush, close) the
peak happened. Runs in its own process so
that ru_maxrss belongs to this workload alone.
"""

from __future__ import annotations

import json
import resource
import sys
import time


def _status_kib(field: str) -> int:
    with open("/proc/self/status", encoding="utf-8") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def current_rss_kib() -> int:
    """Resident set size now, from /proc/self/status."""
    return _status_kib("VmRSS")


def high_water_kib() -> int:
    """Peak resident set size so far (VmHWM): catches spikes between two samples."""
    return _status_kib("VmHWM")


def log_rows(log, first: int, last: int) -> None:
    """Log rows first..last-1, each a new dict shaped like benchmarks/data.py's rows."""
    for r in range(first, last):
        log({"k0": r * 31, "k1": r * 0.5 + 0.125, "k2": "v2-x", "k3": r * 31 + 3,
             "k4": r * 0.5 + 0.5, "k5": "v5-x", "k6": r * 31 + 6, "k7": r * 0.5 + 0.875,
             "k8": "v8-x", "k9": r * 31 + 9})


def main(argv: list[str]) -> int:
    """Run the probe; print the JSON line."""
    db, total, mark = argv[0], int(argv[1]), int(argv[2])
    try:
        from xetrack_c import Tracker
        tracker = Tracker(db, durability="async")
    except (ImportError, AttributeError, NotImplementedError, TypeError) as exc:
        print(json.dumps({"skipped": f"{type(exc).__name__}: {exc}"}))
        return 0
    mark = min(mark, total)
    rss_start = current_rss_kib()
    start = time.perf_counter()
    log_rows(tracker.log, 0, mark)
    rss_mark, hwm_mark = current_rss_kib(), high_water_kib()
    samples = []
    for first in range(mark, total, mark):
        log_rows(tracker.log, first, min(first + mark, total))
        samples.append((min(first + mark, total), current_rss_kib(), high_water_kib()))
    hwm_before_flush = high_water_kib()
    tracker.flush()
    seconds = time.perf_counter() - start
    rss_end = current_rss_kib()
    hwm_after_flush = high_water_kib()
    tracker.close()
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    print(json.dumps({"rows": total, "seconds": seconds, "rss_start_kib": rss_start,
                      "rss_mark_kib": rss_mark, "rss_end_kib": rss_end, "maxrss_kib": maxrss,
                      "hwm_mark_kib": hwm_mark, "hwm_before_flush_kib": hwm_before_flush,
                      "hwm_after_flush_kib": hwm_after_flush, "samples": samples}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
