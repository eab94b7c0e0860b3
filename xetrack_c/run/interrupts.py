"""Ctrl-C during a batch: it lands only where nothing is half-recorded, and says one line.

* :class:`InterruptGuard`: while a batch runs on the main thread with Python's default
  SIGINT handler, Ctrl-C raises :class:`KeyboardInterrupt` only at safe points -- while
  the C pool waits, or the executor path waits for an outcome -- never in the middle of
  recording an experiment. An interrupt that arrives while an outcome is being recorded
  (or ``on_progress`` runs) is raised right after it. Pressed a third time, Ctrl-C raises
  at once, wherever the batch is (a way out of a recording that waits for a locked file).
* :func:`stopped`: the :class:`KeyboardInterrupt` that ``run_multiple`` raises: its
  ``results`` attribute (the contract), and a message saying how many experiments
  completed, failed and were cancelled, and how to resume. Its traceback starts at
  ``run_multiple``; when nobody catches it, the interpreter prints that message as one
  line, without a traceback (a ``sys.excepthook`` that changes nothing else, and
  ``_render_traceback_`` for IPython). ``XETRACK_C_TRACEBACK=1`` keeps the full
  traceback, frames inside the package included.
"""

from __future__ import annotations

import collections
import os
import signal
import sys
import threading
from typing import Any, List, Optional

__all__ = ["InterruptGuard", "stopped", "TRACEBACK_VARIABLE"]

#: Set to 1 to get the full traceback of an interrupted batch.
TRACEBACK_VARIABLE = "XETRACK_C_TRACEBACK"
#: The Ctrl-C that raises even while an outcome is being recorded.
_INSISTING = 3
# Marks the interrupts whose uncaught display is their one-line summary.
_SUMMARY = "_xetrack_c_summary"
_previous_hook: Any = None
_hook_lock = threading.Lock()


class InterruptGuard:
    """Defers SIGINT to safe points while a batch runs (see the module docstring).

    Entering it protects (``depth`` 1); :meth:`allow` opens a safe point; the batch's
    callbacks raise ``depth`` while they run and call :meth:`raise_pending` after. Off
    the main thread, or when the program has its own SIGINT handler, it installs
    nothing and changes nothing.
    """

    def __init__(self) -> None:
        self.depth = 0
        self.pending = False
        self.presses = 0
        self._previous: Any = None
        self._installed = False

    def __enter__(self) -> "InterruptGuard":
        if threading.current_thread() is threading.main_thread() \
                and signal.getsignal(signal.SIGINT) is signal.default_int_handler:
            self._previous = signal.signal(signal.SIGINT, self._handler)
            self._installed = True
        self.depth = 1
        return self

    def __exit__(self, kind: Any, value: Any, trace: Any) -> None:
        if self._installed:
            signal.signal(signal.SIGINT, self._previous)
            self._installed = False
        self.depth = 0
        if kind is None:
            self.raise_pending()

    def _handler(self, signum: int, frame: Any) -> None:
        self.presses += 1
        if self.depth > 0 and self.presses < _INSISTING:
            self.pending = True
            return
        raise KeyboardInterrupt

    def raise_pending(self) -> None:
        """Raise the interrupt that arrived while protected, now that it is safe."""
        if self.pending and self.depth == 0:
            self.pending = False
            raise KeyboardInterrupt

    def allow(self) -> "_Allowed":
        """A ``with`` block in which Ctrl-C raises at once (the pool's waits)."""
        return _Allowed(self)


class _Allowed:
    __slots__ = ("guard", "saved")

    def __init__(self, guard: InterruptGuard) -> None:
        self.guard = guard
        self.saved = 0

    def __enter__(self) -> None:
        self.saved, self.guard.depth = self.guard.depth, 0
        try:
            self.guard.raise_pending()
        except BaseException:
            self.guard.depth = self.saved
            raise

    def __exit__(self, *exc: Any) -> None:
        self.guard.depth = self.saved


def _counts(results: List[Any]) -> str:
    counts = collections.Counter(result.status for result in results)
    parts = [f"{counts[status]} {status}" for status in ("completed", "failed", "cancelled")]
    parts += [f"{counts[status]} {status}" for status in ("timeout", "skipped") if counts[status]]
    return ", ".join(parts)


def message(results: List[Any], db: Optional[str]) -> str:
    """One line: what the interrupted batch did, and how to run the rest."""
    left = sum(result.status not in ("completed", "skipped") for result in results)
    if db is not None:
        how = (f"run_multiple(..., resume=True) with the same db ({db!r}) runs the {left} "
               "that did not complete")
    else:
        how = ("with db=... every experiment is recorded, and run_multiple(..., resume=True) "
               "runs only what did not complete")
    return f"run_multiple stopped by Ctrl-C: {_counts(results)}; {how}"


def stopped(interrupt: KeyboardInterrupt, db: Optional[str]) -> BaseException:
    """The KeyboardInterrupt to raise for ``interrupt`` (which carries ``results``).

    With ``XETRACK_C_TRACEBACK=1``, ``interrupt`` itself with the message (full
    traceback); otherwise a new one, raised from ``run_multiple`` and shown as one line.
    """
    results = interrupt.results  # type: ignore[attr-defined]
    text = message(results, db)
    if os.environ.get(TRACEBACK_VARIABLE, "") not in ("", "0"):
        interrupt.args = (text,)
        return interrupt
    quiet = KeyboardInterrupt(text)
    quiet.results = results  # type: ignore[attr-defined]
    setattr(quiet, _SUMMARY, True)
    quiet._render_traceback_ = lambda: [f"KeyboardInterrupt: {text}"]  # type: ignore[attr-defined]
    _install_hook()
    return quiet


def _excepthook(kind: Any, value: Any, trace: Any) -> None:
    if isinstance(value, KeyboardInterrupt) and getattr(value, _SUMMARY, False):
        try:
            sys.stderr.write(f"KeyboardInterrupt: {value}\n")
            sys.stderr.flush()
        except (AttributeError, OSError, ValueError):
            pass
        return
    (_previous_hook or sys.__excepthook__)(kind, value, trace)


def _install_hook() -> None:
    """Show uncaught batch interrupts as their one line; every other exception as before."""
    global _previous_hook
    with _hook_lock:
        if sys.excepthook is _excepthook:
            return
        if sys.excepthook is not sys.__excepthook__:
            return  # the program (or IDE) shows exceptions its own way: leave it be
        _previous_hook = sys.excepthook
        sys.excepthook = _excepthook
