"""Progress display of ``run_multiple``, where the user is looking.

- In a terminal or a Jupyter notebook: ``tqdm.auto`` when tqdm is installed (a widget in a
  notebook with ipywidgets, a bar in a terminal).
- Without tqdm, on a terminal: one line updated in place (``\\r``).
- Anywhere else (stderr redirected to a file or a pipe, a Slurm log, CI), or without tqdm in
  a notebook: whole lines, at most one every :attr:`Progress.LINE_INTERVAL` seconds plus the
  last one; no carriage returns, no escape codes.

Every form counts completed, failed, timed-out and cancelled tasks separately (a task
cancelled before it started is not a failure), and shows the rate and the ETA.
"""

from __future__ import annotations

import sys
import time
from typing import Any, Dict, Optional, TextIO

#: Statuses counted as such; any other status (e.g. ``skipped``) counts as completed.
_COUNTED = ("failed", "timeout", "cancelled")


def _format_seconds(seconds: float) -> str:
    seconds = int(round(seconds))
    minutes, secs = divmod(seconds, 60)
    hours, minutes = divmod(minutes, 60)
    if hours:
        return f"{hours}:{minutes:02d}:{secs:02d}"
    return f"{minutes:02d}:{secs:02d}"


def is_terminal(stream: Optional[TextIO]) -> bool:
    """True when ``stream`` is an open terminal."""
    try:
        return stream is not None and bool(stream.isatty())
    except (AttributeError, ValueError, OSError):
        return False


def in_notebook() -> bool:
    """True inside a Jupyter kernel (a notebook, JupyterLab, VS Code, Colab).

    Looks only at modules already imported: a plain interpreter imports nothing here.
    """
    ipython = sys.modules.get("IPython")
    if ipython is not None:
        try:
            shell = ipython.get_ipython()
        except Exception:  # noqa: BLE001 - a broken IPython is not a notebook
            shell = None
        if shell is not None and type(shell).__name__ == "ZMQInteractiveShell":
            return True
    kernelapp = sys.modules.get("ipykernel.kernelapp")
    if kernelapp is not None:
        try:
            return bool(kernelapp.IPKernelApp.initialized())
        except Exception:  # noqa: BLE001 - no running kernel
            return False
    return False


def shown_by_default() -> bool:
    """Whether ``progress=None`` shows progress: stderr is a terminal, or this is a notebook."""
    return is_terminal(sys.stderr) or in_notebook()


class Progress:
    """A progress display for one batch.

    Args:
        total: Number of tasks in the batch.
        stream: Where the plain display goes (default ``sys.stderr``).
        use_tqdm: Use ``tqdm.auto`` when it is installed and the output is a terminal or
            a notebook.
    """

    #: Seconds between two redraws of the line updated in place on a terminal.
    REDRAW_INTERVAL = 0.1
    #: Seconds between two whole lines when the output is not a terminal (the line of the
    #: last task is always written).
    LINE_INTERVAL = 5.0

    def __init__(self, total: int, stream: Optional[TextIO] = None, use_tqdm: bool = True) -> None:
        self.total = total
        self.done = 0
        self.counts: Dict[str, int] = dict.fromkeys(_COUNTED, 0)
        self.abandoned = 0
        self.stream = stream if stream is not None else sys.stderr
        self.start = time.monotonic()
        self.terminal = is_terminal(self.stream)
        self._last_draw = self.start
        self._drawn: Any = None  # the counts the last line showed
        self._bar: Any = None
        if use_tqdm and (self.terminal or in_notebook()):
            self._bar = _tqdm_bar(total, self.stream)

    @property
    def failed(self) -> int:
        """Tasks that failed (not timed out, not cancelled)."""
        return self.counts["failed"]

    @property
    def completed(self) -> int:
        """Tasks that completed (or were skipped)."""
        return self.done - sum(self.counts.values())

    def update(self, status: str, abandoned: int = 0) -> None:
        """Count one finished task of the given status.

        Args:
            status: The task's status (``completed``, ``failed``, ``timeout``,
                ``cancelled``, ``skipped``).
            abandoned: Worker threads given up on so far (a timed-out function still
                running); shown when not zero, the largest count given is kept.
        """
        self.done += 1
        if status in self.counts:
            self.counts[status] += 1
        self.abandoned = max(self.abandoned, abandoned)
        if self._bar is not None:
            self._bar.set_postfix_str(self._summary(", ", "="), refresh=False)
            self._bar.update(1)
            return
        now = time.monotonic()
        interval = self.REDRAW_INTERVAL if self.terminal else self.LINE_INTERVAL
        if self.done == self.total or now - self._last_draw >= interval:
            self._last_draw = now
            self._draw(now)

    def _summary(self, separator: str, equals: Optional[str]) -> str:
        """``completed``, ``failed``, then the other counts that are not zero."""
        counts = {"completed": self.completed, **self.counts, "abandoned threads": self.abandoned}
        parts = [(name, count) for name, count in counts.items()
                 if count or name in ("completed", "failed")]
        if equals is None:
            return separator.join(f"{count} {name}" for name, count in parts)
        return separator.join(f"{name.replace(' ', '_')}{equals}{count}" for name, count in parts)

    def line(self, now: Optional[float] = None) -> str:
        """The plain progress line, e.g.
        ``run_multiple 12/50 (10 completed, 1 failed, 1 timeout) 3.2 tasks/s ETA 00:12``."""
        elapsed = (time.monotonic() if now is None else now) - self.start
        rate = self.done / elapsed if elapsed > 0 else 0.0
        left = self.total - self.done
        eta = _format_seconds(left / rate) if rate > 0 else "?"
        return (f"run_multiple {self.done}/{self.total} ({self._summary(', ', None)}) "
                f"{rate:.1f} tasks/s ETA {eta}")

    def _draw(self, now: float) -> None:
        text = self.line(now)
        self._drawn = self._state()
        try:
            if self.terminal:
                self.stream.write("\r" + text + "\x1b[K")
            else:
                self.stream.write(text + "\n")
            self.stream.flush()
        except (OSError, ValueError):
            pass

    def close(self) -> None:
        """Finish the display: the last counts, and a newline after the terminal line."""
        if self._bar is not None:
            self._bar.close()
            return
        if self.terminal:
            self._draw(time.monotonic())
            try:
                self.stream.write("\n")
                self.stream.flush()
            except (OSError, ValueError):
                pass
        elif self._drawn != self._state():
            self._draw(time.monotonic())  # counts not written yet (an interrupted batch)

    def _state(self) -> tuple:
        return (self.done, tuple(self.counts.values()), self.abandoned)


def _tqdm_bar(total: int, stream: TextIO) -> Any:
    """A ``tqdm.auto`` bar (a widget in a notebook), or None without tqdm."""
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return None
    return tqdm(total=total, file=stream, unit="task", desc="run_multiple", dynamic_ncols=True)
