"""Interleaved timing: every series runs once per repetition, in the same order (A B A B ...).

A *series* is one contender on one workload: a callable that does its own untimed setup in a
fresh directory, times only the region that matters with ``time.perf_counter`` and returns the
elapsed seconds. Running all contenders of a comparison inside the same repetition loop means
that the load other programs put on the machine hits them alike.
"""

from __future__ import annotations

import gc
import re
import shutil
import statistics
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

OK = "ok"
SKIPPED = "skipped"
FAILED = "failed"


class Skip(Exception):
    """A series cannot run here: a peer is not installed or a feature has not landed yet."""


def is_missing_feature(exc: BaseException) -> bool:
    """Whether ``exc`` means "not available (yet)" rather than "broken".

    ImportError, AttributeError and NotImplementedError are what a missing module, class or
    method raises; a TypeError about an unexpected keyword argument is what a constructor that
    does not take an option yet (``durability=``, ``cache=``, ``backend=``) raises.
    """
    if isinstance(exc, (Skip, ImportError, AttributeError, NotImplementedError)):
        return True
    return isinstance(exc, TypeError) and "unexpected keyword argument" in str(exc)


def describe_exception(exc: BaseException) -> str:
    """One line naming the exception type and its message."""
    if isinstance(exc, Skip):
        return str(exc)
    message = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {message}" if message else type(exc).__name__


@dataclass
class Series:
    """One contender on one workload.

    Attributes:
        label: Name shown in the tables, e.g. ``"xetrack 0.7 log()"``.
        run: Called once per repetition with a fresh, empty directory; returns the seconds
            spent in the timed region.
        ops: Operations per run (rows, calls, tasks, runs) used to turn seconds into rates.
    """

    label: str
    run: Callable[[Path], float]
    ops: int


@dataclass
class Result:
    """Timings of one series, or why there are none."""

    label: str
    ops: int
    seconds: list[float] = field(default_factory=list)
    status: str = OK
    reason: str = ""

    @property
    def ok(self) -> bool:
        """True when the series ran at least once."""
        return self.status == OK and bool(self.seconds)

    @property
    def per_op(self) -> list[float]:
        """Seconds per operation, one value per repetition."""
        return [s / self.ops for s in self.seconds]

    @property
    def median_per_op(self) -> float:
        """Median seconds per operation."""
        return statistics.median(self.per_op)

    @property
    def min_per_op(self) -> float:
        """Fastest repetition, seconds per operation."""
        return min(self.per_op)

    @property
    def max_per_op(self) -> float:
        """Slowest repetition, seconds per operation."""
        return max(self.per_op)


def skipped(label: str, reason: str, ops: int = 0) -> Result:
    """A result that says why a series did not run."""
    return Result(label=label, ops=ops, status=SKIPPED, reason=reason)


def derived(label: str, ops: int, seconds: Sequence[float]) -> Result:
    """A result computed from other results (e.g. an overhead: one series minus another)."""
    return Result(label=label, ops=ops, seconds=list(seconds))


def prepare(label: str, ops: int, build: Callable[[], Callable[[Path], float]]) -> Series | Result:
    """A series whose run function comes from ``build()``; if building raises (a peer or a
    feature is missing), a skipped or failed result that says why instead."""
    try:
        run = build()
    except Exception as exc:  # noqa: BLE001 - reported, never raised
        status = SKIPPED if is_missing_feature(exc) else FAILED
        return Result(label=label, ops=ops, status=status, reason=describe_exception(exc))
    return Series(label=label, run=run, ops=ops)


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-")[:40] or "series"


_SEEN_SKIPS: set[tuple[str, str]] = set()


def note(message: str) -> None:
    """Print a line about what runs or is skipped (stdout, so it sits next to the tables)."""
    print(message, flush=True)


def note_skip(group: str, label: str, reason: str) -> None:
    """Print "skip: group: label: reason", once per group and reason (the same missing feature
    would otherwise be reported for every size)."""
    if (group, reason) in _SEEN_SKIPS:
        return
    _SEEN_SKIPS.add((group, reason))
    note(f"skip: {group}: {label}: {reason}")


def progress(message: str) -> None:
    """Progress on stderr, so stdout holds only tables and skip lines."""
    print(f"  .. {message}", file=sys.stderr, flush=True)


@contextmanager
def gc_collected() -> Iterator[None]:
    """Collect garbage before a timed run so one series does not pay for another's."""
    gc.collect()
    yield


def measure(group: str, series: Sequence[Series | Result], reps: int, workdir: Path,
            title: str = "") -> dict[str, Result]:
    """Run the series interleaved, ``reps`` times, and return their results by label.

    Entries that are already a :class:`Result` (a series known to be unavailable) are passed
    through. A series that raises is stopped: a missing feature or peer becomes "skipped",
    anything else "failed"; either way a line says so and the other series go on.
    """
    results: dict[str, Result] = {}
    active: list[Series] = []
    for entry in series:
        if isinstance(entry, Result):
            results[entry.label] = entry
            if entry.status == SKIPPED:
                note_skip(group, entry.label, entry.reason)
            elif entry.status == FAILED:
                note(f"FAILED: {group}: {entry.label}: {entry.reason}")
        else:
            results[entry.label] = Result(label=entry.label, ops=entry.ops)
            active.append(entry)
    for rep in range(reps):
        if title:
            progress(f"{group}: {title}: repetition {rep + 1}/{reps}")
        for entry in list(active):
            result = results[entry.label]
            rundir = workdir / f"{_slug(entry.label)}-{rep}"
            rundir.mkdir(parents=True, exist_ok=True)
            try:
                with gc_collected():
                    elapsed = entry.run(rundir)
                result.seconds.append(float(elapsed))
            except Exception as exc:  # noqa: BLE001 - a benchmark reports, it never crashes
                active.remove(entry)
                result.reason = describe_exception(exc)
                if is_missing_feature(exc):
                    result.status = SKIPPED
                    note_skip(group, entry.label, result.reason)
                else:
                    result.status = FAILED
                    note(f"FAILED: {group}: {entry.label}: {result.reason}")
            finally:
                shutil.rmtree(rundir, ignore_errors=True)
    return results


def timed(func: Callable[[], object]) -> float:
    """Seconds one call of ``func`` takes."""
    start = time.perf_counter()
    func()
    return time.perf_counter() - start
