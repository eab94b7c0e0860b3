"""Timing whole commands: wall time of a subprocess from start to exit."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from benchmarks.env import subprocess_env
from benchmarks.harness import Skip


def wall_seconds(command: Sequence[str], cwd: Path | None = None) -> float:
    """Run ``command`` (output discarded) and return its wall time; raise if it fails."""
    env = subprocess_env()
    start = time.perf_counter()
    out = subprocess.run(list(command), cwd=cwd, env=env, stdout=subprocess.DEVNULL,
                         stderr=subprocess.PIPE, check=False, timeout=600)
    elapsed = time.perf_counter() - start
    if out.returncode != 0:
        tail = out.stderr.decode(errors="replace").strip().splitlines()
        raise RuntimeError(f"{' '.join(command)} exited {out.returncode}: {tail[-1] if tail else ''}")
    return elapsed


def probe(command: Sequence[str], missing_markers: Sequence[str] = ("ModuleNotFoundError",
                                                                    "ImportError",
                                                                    "AttributeError")) -> None:
    """Run ``command`` once untimed; Skip if it fails because something is not there yet,
    raise RuntimeError if it fails otherwise."""
    out = subprocess.run(list(command), env=subprocess_env(), capture_output=True, text=True,
                         check=False, timeout=600)
    if out.returncode == 0:
        return
    lines = out.stderr.strip().splitlines()
    last = lines[-1] if lines else f"exit status {out.returncode}"
    if any(marker in out.stderr for marker in missing_markers):
        raise Skip(f"{' '.join(command[:3])}...: {last}")
    raise RuntimeError(f"{' '.join(command)} exited {out.returncode}: {last}")


def command_series(command: Sequence[str]) -> Callable[[], Callable[[Path], float]]:
    """Build a run timing ``command``, probed once first."""
    def build() -> Callable[[Path], float]:
        probe(command)
        return lambda workdir: wall_seconds(command, cwd=workdir)
    return build
