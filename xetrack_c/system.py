"""System and network metrics of ``Tracker(log_system_params=True, log_network_params=True)``.

xetrack measures inside every call: a blocking ``cpu_percent(interval=0.1)`` per row and a
helper process per ``track()``. Here one daemon thread per tracker samples ``psutil`` every
``measurement_interval`` seconds; a row reads the latest sample, and a tracked call reads
the samples taken while it ran (plus the process's CPU clock at its start and end). The
columns keep xetrack's names; docs/tracker.md says what each holds and how it is sampled.

Rules the sampler keeps:

- it stops on ``Tracker.close()`` (joined), when its tracker is collected, and never keeps
  the interpreter alive (a daemon thread);
- after ``fork()`` the child does not inherit a running sampler: its first row starts a
  fresh one that measures the child (a call open across the fork gets no ``cpu`` value);
- ``psutil`` is imported only here, when a tracker asks for metrics.
"""

from __future__ import annotations

import math
import os
import threading
import time
import weakref
from dataclasses import dataclass
from typing import Any, Dict, Optional, Tuple

EXTRA_HINT = "pip install psutil (the `system` extra of xetrack_c; see docs/install.md)"
# The first sample's system CPU figure needs a window; the tracker's constructor waits
# this long (or the interval, if shorter) once, instead of xetrack's 0.1 s on every row.
FIRST_WINDOW_S = 0.05
JOIN_TIMEOUT_S = 5.0

_samplers: "weakref.WeakSet[SystemSampler]" = weakref.WeakSet()
_restart_lock = threading.Lock()


def import_psutil() -> Any:
    """``psutil``, or an ImportError that names the extra to install."""
    try:
        import psutil
    except ImportError as exc:
        raise ImportError(
            "Tracker(log_system_params=True / log_network_params=True) needs psutil: "
            f"{EXTRA_HINT}"
        ) from exc
    return psutil


def validate_interval(measurement_interval: Any) -> float:
    """The sampling interval in seconds; ValueError/TypeError for anything but a positive number."""
    if isinstance(measurement_interval, bool) or not isinstance(measurement_interval, (int, float)):
        raise TypeError(
            "measurement_interval must be a number of seconds (e.g. 1 or 0.5), not "
            f"{type(measurement_interval).__name__}"
        )
    interval = float(measurement_interval)
    if not math.isfinite(interval) or interval <= 0:
        raise ValueError(
            f"measurement_interval must be a positive, finite number of seconds, got "
            f"{measurement_interval!r}"
        )
    return interval


@dataclass(frozen=True)
class Sample:
    """One reading of the machine and the process."""

    cpu_percent: float = 0.0  # whole machine, since the previous sample, 0..100
    ram_percent: float = 0.0  # psutil's virtual_memory().percent (available-based)
    memory_percent: float = 0.0  # used / total * 100, xetrack's track() figure
    p_memory_percent: float = 0.0  # this process's RSS / total RAM * 100
    disk_percent: float = 0.0  # disk_usage('/').percent
    bytes_sent: Optional[int] = None  # machine-wide counters since boot
    bytes_recv: Optional[int] = None


@dataclass
class Window:
    """The samples taken while one tracked call ran (filled by the sampler thread)."""

    pid: int
    wall_start: float
    cpu_start: float
    count: int = 0
    cpu_percent: float = 0.0
    ram_percent: float = 0.0
    memory_percent: float = 0.0
    p_memory_peak: float = 0.0

    def add(self, sample: Sample) -> None:
        """Fold one sample into the window's sums and peak."""
        self.count += 1
        self.cpu_percent += sample.cpu_percent
        self.ram_percent += sample.ram_percent
        self.memory_percent += sample.memory_percent
        self.p_memory_peak = max(self.p_memory_peak, sample.p_memory_percent)


class SystemSampler:
    """Samples psutil on a daemon thread and adds the metric columns to rows.

    Called from the C core: ``extend(data)`` for every row, ``begin()`` and
    ``end(window, row)`` around each ``track()`` call.
    """

    def __init__(self, measurement_interval: Any, system: bool, network: bool) -> None:
        self.interval = validate_interval(measurement_interval)
        self.system = bool(system)
        self.network = bool(network)
        self._psutil = import_psutil()
        self._pid = -1
        self._thread: Optional[threading.Thread] = None
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._open: Dict[int, Window] = {}
        self._latest = Sample()
        self._failure: Optional[BaseException] = None
        self._closed = False
        _samplers.add(self)

    # ------------------------------------------------------------------ lifetime
    @property
    def running(self) -> bool:
        """True while this process's sampler thread is alive."""
        thread = self._thread
        return thread is not None and thread.is_alive() and self._pid == os.getpid()

    def start(self) -> None:
        """Take the first sample now and start the thread (in this process)."""
        self._process = self._psutil.Process()
        if self.system:
            self._cpu_times = self._cpu_busy_total()  # opens the first machine-wide window
            self._stop.wait(min(self.interval, FIRST_WINDOW_S))
        self._latest = self._take()
        self._pid = os.getpid()
        self._thread = threading.Thread(
            target=self._run, name=f"xetrack_c-system-{id(self):x}", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        """Stop and join the thread; rows logged afterwards raise (the tracker is closed)."""
        self._closed = True
        self._stop.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread() and self._pid == os.getpid():
            thread.join(JOIN_TIMEOUT_S)
        self._thread = None

    def _after_fork_in_child(self) -> None:
        """The parent's thread does not exist here: forget it, restart on the next row."""
        self._thread = None
        self._pid = -1
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._open = {}

    def _ensure_running(self) -> None:
        if self._pid != os.getpid() and not self._closed:
            with _restart_lock:  # two threads of a forked child start one sampler
                if self._pid != os.getpid():
                    # A child forked without Python's fork hooks (a C-level fork) lands
                    # here too.
                    self._after_fork_in_child()
                    self.start()
        if self._failure is not None:
            raise RuntimeError(
                f"the system-metrics sampler stopped: {self._failure!r}; the metric columns "
                "cannot be filled (create the Tracker again, or turn log_system_params off)"
            ) from self._failure

    # ------------------------------------------------------------------ sampling
    def _cpu_busy_total(self) -> Tuple[float, float]:
        """Busy and total CPU seconds of the machine since boot (all CPUs)."""
        times = self._psutil.cpu_times()
        total = sum(times)
        idle = times.idle + getattr(times, "iowait", 0.0)
        return total - idle, total

    def _machine_cpu_percent(self) -> float:
        """Machine-wide CPU use since the previous sample, 0..100 (this sampler's own window:
        ``psutil.cpu_percent(None)`` keeps one window per process, shared with other callers)."""
        busy0, total0 = self._cpu_times
        busy1, total1 = self._cpu_times = self._cpu_busy_total()
        if total1 <= total0:
            return 0.0
        return min(100.0, max(0.0, (busy1 - busy0) * 100.0 / (total1 - total0)))

    def _take(self) -> Sample:
        psutil = self._psutil
        values: Dict[str, Any] = {}
        if self.system:
            memory = psutil.virtual_memory()
            values.update(
                cpu_percent=self._machine_cpu_percent(),
                ram_percent=float(memory.percent),
                memory_percent=memory.used * 100.0 / memory.total,
                p_memory_percent=self._process.memory_info().rss * 100.0 / memory.total,
                disk_percent=float(psutil.disk_usage("/").percent),
            )
        if self.network:
            counters = psutil.net_io_counters()
            if counters is not None:
                values.update(bytes_sent=counters.bytes_sent, bytes_recv=counters.bytes_recv)
        return Sample(**values)

    def _run(self) -> None:
        try:
            while not self._stop.wait(self.interval):
                sample = self._take()
                with self._lock:
                    self._latest = sample
                    for window in self._open.values():
                        window.add(sample)
        except Exception as exc:  # noqa: BLE001 - reported on the next row, not lost
            self._failure = exc

    # ------------------------------------------------------------------ rows
    def extend(self, data: Dict[str, Any]) -> Dict[str, Any]:
        """``data`` with the metric columns of the latest sample (explicit values win)."""
        self._ensure_running()
        latest = self._latest
        row = dict(data)
        if self.system:
            row.setdefault("cpu_percent", latest.cpu_percent)
            row.setdefault("ram_percent", latest.ram_percent)
            row.setdefault("p_memory_percent", latest.p_memory_percent)
            row.setdefault("disk_percent", latest.disk_percent)
        if self.network:
            row.setdefault("bytes_sent", latest.bytes_sent)
            row.setdefault("bytes_recv", latest.bytes_recv)
        return row

    def begin(self) -> Window:
        """Open the window of one tracked call."""
        self._ensure_running()
        window = Window(os.getpid(), time.perf_counter(), time.process_time())
        with self._lock:
            self._open[id(window)] = window
        return window

    def end(self, window: Window, row: Dict[str, Any]) -> None:
        """Close the window and put the call's figures into its row."""
        cpu_end, wall_end = time.process_time(), time.perf_counter()
        with self._lock:
            self._open.pop(id(window), None)
            latest = self._latest
        if self.system:
            row.update(self._call_figures(window, latest, cpu_end, wall_end))
        if self.network:
            row["bytes_sent"] = latest.bytes_sent
            row["bytes_recv"] = latest.bytes_recv
        if self.system:
            count = window.count
            row["cpu_percent"] = window.cpu_percent / count if count else latest.cpu_percent
            row["ram_percent"] = window.ram_percent / count if count else latest.ram_percent

    @staticmethod
    def _call_figures(window: Window, latest: Sample, cpu_end: float, wall_end: float) -> Dict[str, Any]:
        """disk_percent, p_memory_percent, cpu and memory_percent of one call, xetrack's order."""
        count = window.count
        wall = wall_end - window.wall_start
        if window.pid != os.getpid():
            cpu: Optional[float] = None  # opened before a fork: the child's clock started anew
        elif wall > 0:
            cpu = max(0.0, (cpu_end - window.cpu_start) * 100.0 / wall)
        else:
            cpu = 0.0
        return {
            "disk_percent": latest.disk_percent,
            "p_memory_percent": max(window.p_memory_peak, latest.p_memory_percent),
            "cpu": cpu,
            "memory_percent": window.memory_percent / count if count else latest.memory_percent,
        }


def _reset_samplers_in_child() -> None:
    global _restart_lock
    _restart_lock = threading.Lock()  # a thread of the parent may have held it at fork()
    for sampler in list(_samplers):
        if sampler._pid != -1:
            sampler._after_fork_in_child()


os.register_at_fork(after_in_child=_reset_samplers_in_child)
