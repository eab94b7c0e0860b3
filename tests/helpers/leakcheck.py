"""Helpers for the leak tests: memory growth of a repeated step, OS threads, open files."""

from __future__ import annotations

import gc
import os
import sys
import time
import tracemalloc
from typing import Callable, Tuple

#: AddressSanitizer keeps freed memory in quarantine, so RSS says nothing under it.
UNDER_ASAN = "asan" in os.environ.get("LD_PRELOAD", "")
RSS_MEANINGFUL = sys.platform.startswith("linux") and not UNDER_ASAN


def rss_kib() -> int:
    """Resident set size of this process now (not the peak), in KiB; 0 where unknown."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def os_threads() -> int:
    """Threads of this process as the kernel sees them (C threads included)."""
    try:
        return len(os.listdir("/proc/self/task"))
    except OSError:
        return 0


def open_fds() -> int:
    try:
        return len(os.listdir("/proc/self/fd"))
    except OSError:
        return 0


def memory_growth(step: Callable[[], object], iterations: int, warmup: int) -> Tuple[int, int]:
    """(bytes tracemalloc still holds, RSS KiB gained) after ``iterations`` calls of ``step``.

    ``warmup`` calls first fill caches (statement caches, SQLite's page cache, interned
    names), so what remains is growth per call.
    """
    for _ in range(warmup):
        step()
    gc.collect()
    tracemalloc.start()
    try:
        rss_before = rss_kib()
        before = tracemalloc.take_snapshot()
        for _ in range(iterations):
            step()
        gc.collect()
        after = tracemalloc.take_snapshot()
        traced = sum(stat.size_diff for stat in after.compare_to(before, "filename"))
        return traced, rss_kib() - rss_before
    finally:
        tracemalloc.stop()


def assert_bounded(step: Callable[[], object], iterations: int, warmup: int,
                   traced_limit: int = 256 * 1024, rss_limit_kib: int = 16 * 1024) -> None:
    traced, rss = memory_growth(step, iterations, warmup)
    assert traced < traced_limit, f"Python allocations grew by {traced} bytes over {iterations} calls"
    if RSS_MEANINGFUL:
        assert rss < rss_limit_kib, f"RSS grew by {rss} KiB over {iterations} calls"


def threads_after(baseline: int, patience: float = 5.0) -> int:
    """OS threads now, given a moment to reach ``baseline``: a thread that was joined can
    still be leaving the kernel's task list when join() returns."""
    deadline = time.monotonic() + patience
    count = os_threads()
    while count > baseline and time.monotonic() < deadline:
        time.sleep(0.05)
        count = os_threads()
    return count
