"""Progress display of ``run_multiple``: tqdm when installed, else one updating stderr line.

Both show tasks done out of the total, how many did not complete, the rate and the ETA,
and how many threads of stopped function tasks are still running (abandoned).
"""

from __future__ import annotations

import sys
import time
from typing import Any, Optional, TextIO


def _format_seconds(seconds: float) -> str:
    seconds = int(round(seconds))
    minutes, secs = divmod(seconds, 60)
    hours, minutes = divmod(minutes, 60)
    if hours:
        return f"{hours}:{minutes:02d}:{secs:02d}"
    return f"{minutes:02d}:{secs:02d}"


class Progress:
    """A progress display for one batch.

    Args:
        total: Number of tasks in the batch.
        stream: Where the plain line goes (default ``sys.stderr``).
        use_tqdm: Use tqdm when it is installed.
    """

    #: Seconds between two redraws of the plain line (the last one is always drawn).
    REDRAW_INTERVAL = 0.1

    def __init__(self, total: int, stream: Optional[TextIO] = None, use_tqdm: bool = True) -> None:
        self.total = total
        self.done = 0
        self.failed = 0
        self.abandoned = 0
        self.stream = stream if stream is not None else sys.stderr
        self.start = time.monotonic()
        self._last_draw = 0.0
        self._bar: Any = None
        if use_tqdm:
            try:
                from tqdm import tqdm
            except ImportError:
                tqdm = None
            if tqdm is not None:
                self._bar = tqdm(total=total, file=self.stream, unit="task",
                                 desc="run_multiple", dynamic_ncols=True)

    def update(self, status: str, abandoned: int = 0) -> None:
        """Count one finished task of the given status; ``abandoned``: threads of stopped
        function tasks still running (a thread cannot be killed)."""
        self.done += 1
        self.abandoned = abandoned
        if status not in ("completed", "skipped"):
            self.failed += 1
        if self._bar is not None:
            stuck = f" abandoned={abandoned}" if abandoned else ""
            self._bar.set_postfix_str(f"failed={self.failed}{stuck}", refresh=False)
            self._bar.update(1)
            return
        now = time.monotonic()
        if self.done == self.total or now - self._last_draw >= self.REDRAW_INTERVAL:
            self._last_draw = now
            self._draw(now)

    def line(self, now: Optional[float] = None) -> str:
        """The plain progress line, e.g. ``run_multiple 12/50 (1 failed) 3.2 tasks/s ETA 00:12``."""
        elapsed = (time.monotonic() if now is None else now) - self.start
        rate = self.done / elapsed if elapsed > 0 else 0.0
        left = self.total - self.done
        eta = _format_seconds(left / rate) if rate > 0 else "?"
        stuck = ""
        if self.abandoned:
            stuck = f", {self.abandoned} thread{'' if self.abandoned == 1 else 's'} abandoned"
        return (f"run_multiple {self.done}/{self.total} ({self.failed} failed{stuck}) "
                f"{rate:.1f} tasks/s ETA {eta}")

    def _draw(self, now: float) -> None:
        try:
            self.stream.write("\r" + self.line(now) + "\x1b[K")
            self.stream.flush()
        except (OSError, ValueError):
            pass

    def close(self) -> None:
        """Finish the display (a newline after the plain line)."""
        if self._bar is not None:
            self._bar.close()
            return
        self._draw(time.monotonic())
        try:
            self.stream.write("\n")
            self.stream.flush()
        except (OSError, ValueError):
            pass
