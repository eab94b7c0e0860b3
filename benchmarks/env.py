"""Where the benchmarks run: the temp directory, the machine, the environment of subprocesses."""

from __future__ import annotations

import os
import platform
import sqlite3
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
MEMORY_FILESYSTEMS = {"tmpfs", "ramfs", "devtmpfs"}


@dataclass
class Mount:
    """The mount a directory lives on."""

    point: str
    device: str
    fstype: str

    def describe(self) -> str:
        """E.g. ``"/tmp on / (ext4, /dev/vda)"``."""
        return f"{self.point} ({self.fstype}, {self.device})"


def mount_of(path: Path) -> Mount:
    """The mount that holds ``path``: the longest mount point that prefixes it."""
    resolved = str(path.resolve())
    best = Mount("/", "?", "?")
    try:
        with open("/proc/mounts", encoding="utf-8") as mounts:
            for line in mounts:
                parts = line.split()
                if len(parts) < 3:
                    continue
                device, point, fstype = parts[0], parts[1], parts[2]
                inside = resolved == point or resolved.startswith(point.rstrip("/") + "/")
                if inside and len(point) >= len(best.point):
                    best = Mount(point, device, fstype)
    except OSError:
        pass
    return best


def choose_temp_root(requested: str | None) -> Path:
    """A directory on disk for the benchmark files: the requested one, else the first of the
    system temp dir, /var/tmp and the repository that is not a memory file system."""
    if requested:
        path = Path(requested)
        path.mkdir(parents=True, exist_ok=True)
        return path
    candidates = [Path(tempfile.gettempdir()), Path("/var/tmp"), REPO_ROOT / "benchmarks" / "c" / "bin"]
    for candidate in candidates:
        if candidate.is_dir() and os.access(candidate, os.W_OK):
            if mount_of(candidate).fstype not in MEMORY_FILESYSTEMS:
                return candidate
    return Path(tempfile.gettempdir())


def subprocess_env() -> dict[str, str]:
    """The environment for child Pythons: ours, with the repository first on PYTHONPATH so that
    the in-place build of xetrack_c and the benchmarks package import there too."""
    env = dict(os.environ)
    paths = [str(REPO_ROOT)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
    return env


@contextmanager
def quiet_output() -> Iterator[None]:
    """Send file descriptors 1 and 2 to /dev/null (peers that print from worker processes)."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 1)
        os.dup2(devnull, 2)
        yield
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in (*saved, devnull):
            os.close(fd)


def cpu_model() -> str:
    """The CPU model name from /proc/cpuinfo."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            for line in info:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def memory_total() -> str:
    """Total memory from /proc/meminfo."""
    try:
        with open("/proc/meminfo", encoding="utf-8") as info:
            for line in info:
                if line.startswith("MemTotal:"):
                    return f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
    except OSError:
        pass
    return "unknown"


def _git_head() -> str:
    try:
        out = subprocess.run(["git", "-C", str(REPO_ROOT), "rev-parse", "--short", "HEAD"],
                             capture_output=True, text=True, timeout=10, check=False)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def _version(module: str) -> str:
    try:
        from importlib.metadata import version

        return version(module)
    except Exception:  # noqa: BLE001 - any failure means "not installed"
        return "not installed"


@dataclass
class Machine:
    """What a run's figures depend on."""

    cpu: str
    cores: int
    usable_cores: int
    memory: str
    temp_dir: str
    temp_mount: Mount
    python: str
    sqlite: str
    commit: str
    versions: dict[str, str] = field(default_factory=dict)

    def markdown(self) -> str:
        """A bullet list for the report."""
        mem_note = " — a memory file system: disk cost is not measured" \
            if self.temp_mount.fstype in MEMORY_FILESYSTEMS else " (on disk)"
        lines = [
            f"- CPU: {self.cpu}, {self.cores} cores ({self.usable_cores} usable by this process)",
            f"- memory: {self.memory}",
            f"- temp dir: {self.temp_dir} on {self.temp_mount.describe()}{mem_note}",
            f"- Python {self.python}, SQLite {self.sqlite} (Python's sqlite3 module)",
            f"- xetrack_c commit: {self.commit}",
            "- peers: " + ", ".join(f"{name} {ver}" for name, ver in self.versions.items()),
        ]
        return "\n".join(lines)


def describe_machine(temp_root: Path) -> Machine:
    """Collect the facts about this machine and environment."""
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count() or 1
    return Machine(
        cpu=cpu_model(),
        cores=os.cpu_count() or 1,
        usable_cores=usable,
        memory=memory_total(),
        temp_dir=str(temp_root),
        temp_mount=mount_of(temp_root),
        python=platform.python_version(),
        sqlite=sqlite3.sqlite_version,
        commit=_git_head(),
        versions={name: _version(name) for name in
                  ("xetrack", "diskcache", "yanex", "numpy", "pandas")},
    )
