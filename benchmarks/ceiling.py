"""The C ceiling (benchmarks/c/ceiling.c): build it with ``cc`` and run it.

The binary goes to benchmarks/c/bin/ (git-ignored), or to a temp dir when that is not writable,
and is rebuilt when the source is newer. Without a C compiler or the SQLite headers the limit
columns say "skipped" and everything else runs.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.harness import Skip

SOURCE = Path(__file__).resolve().parent / "c" / "ceiling.c"
BIN_DIR = SOURCE.parent / "bin"


@dataclass
class Ceiling:
    """A built ceiling binary, or the reason there is none."""

    binary: Path | None
    reason: str = ""

    def _run(self, *args: str) -> dict[str, Any]:
        if self.binary is None:
            raise Skip(f"C ceiling unavailable: {self.reason}")
        out = subprocess.run([str(self.binary), *args], capture_output=True, text=True,
                             check=False, timeout=900)
        if out.returncode != 0:
            raise RuntimeError(f"ceiling {' '.join(args)} failed: {out.stderr.strip()}")
        return json.loads(out.stdout)

    def insert(self, db: Path, rows: int, cols: int = 10, synchronous: str = "normal",
               per_row_commit: bool = False, checkpoint: bool = True) -> float:
        """Seconds to insert ``rows`` rows into a fresh ``db``; ``checkpoint=False`` turns
        SQLite's automatic WAL checkpoint off (the write path alone)."""
        return float(self.insert_figures(db, rows, cols, synchronous, per_row_commit,
                                         checkpoint)["seconds"])

    def insert_figures(self, db: Path, rows: int, cols: int = 10, synchronous: str = "normal",
                       per_row_commit: bool = False, checkpoint: bool = True) -> dict[str, Any]:
        """As ``insert``, with the program's whole report: with ``per_row_commit``, also
        the ``median`` and ``p99`` seconds of one row (its INSERT and COMMIT)."""
        mode = "each" if per_row_commit else "batch"
        return self._run("insert", str(db), str(rows), str(cols), synchronous, mode,
                         "ckpt" if checkpoint else "nockpt")

    def blobs(self, db: Path, rows: int, nbytes: int, per_row_commit: bool = True,
              checkpoint: bool = True) -> float:
        """Seconds to write ``rows`` rows that each hold a distinct ``nbytes``-byte asset
        (blob, key, count and row) into a fresh ``db``: one transaction per row, or one;
        ``checkpoint=False`` turns SQLite's automatic WAL checkpoint off."""
        mode = "each" if per_row_commit else "batch"
        return float(self._run("blobs", str(db), str(rows), str(nbytes), mode,
                               "ckpt" if checkpoint else "nockpt")["seconds"])

    def scan(self, db: Path, threads: int = 1) -> float:
        """Seconds to read every column of every row of ``db``; with ``threads`` > 1, in
        that many equal rowid ranges, a thread and a connection each."""
        return float(self._run("scan", str(db), str(threads))["seconds"])

    def sqlite_version(self) -> str:
        """The SQLite version the binary links against."""
        if self.binary is None:
            return "n/a"
        with tempfile.TemporaryDirectory() as tmp:
            return str(self._run("insert", str(Path(tmp) / "v.db"), "1", "1")["sqlite"])


def build(work_dir: Path) -> Ceiling:
    """Compile the ceiling with ``cc -O2 ... -lsqlite3`` unless an up-to-date binary exists."""
    compiler = shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if compiler is None:
        return Ceiling(None, "no C compiler (cc) on PATH")
    for directory in (BIN_DIR, work_dir / "ceiling-bin"):
        binary = directory / "ceiling"
        try:
            directory.mkdir(parents=True, exist_ok=True)
            if binary.exists() and binary.stat().st_mtime >= SOURCE.stat().st_mtime:
                return Ceiling(binary)
            out = subprocess.run([compiler, "-O2", "-pthread", "-o", str(binary), str(SOURCE), "-lsqlite3"],
                                 capture_output=True, text=True, check=False, timeout=300)
        except OSError:
            continue
        if out.returncode == 0:
            return Ceiling(binary)
        return Ceiling(None, f"cc failed (are the SQLite headers installed?): "
                             f"{out.stderr.strip().splitlines()[-1] if out.stderr.strip() else ''}")
    return Ceiling(None, "no writable directory for the binary")
