"""Subprocess body of the async-memory benchmark: ``python -m benchmarks.memprobe DB N MARK``.

Logs N rows of 10 keys with ``durability="async"``, reads the resident set size after MARK rows,
every MARK rows after that (to show whether it keeps growing) and at the end, and prints one
JSON line (KiB figures, seconds). Runs in its own process so
that ru_maxrss belongs to this workload alone.
"""

from __future__ import annotations

import json
import resource
import sys
import time


def current_rss_kib() -> int:
    """Resident set size now, from /proc/self/status."""
    with open("/proc/self/status", encoding="utf-8") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


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
    rss_mark = current_rss_kib()
    samples = []
    for first in range(mark, total, mark):
        log_rows(tracker.log, first, min(first + mark, total))
        samples.append((min(first + mark, total), current_rss_kib()))
    tracker.flush()
    seconds = time.perf_counter() - start
    rss_end = current_rss_kib()
    tracker.close()
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    print(json.dumps({"rows": total, "seconds": seconds, "rss_start_kib": rss_start,
                      "rss_mark_kib": rss_mark, "rss_end_kib": rss_end, "maxrss_kib": maxrss,
                      "samples": samples}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
