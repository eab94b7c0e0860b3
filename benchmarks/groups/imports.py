"""import: wall time of ``python -c "import xetrack_c"`` against ``python -c "import xetrack"``,
with a bare ``python -c pass`` as the floor (interpreter start-up)."""

from __future__ import annotations

import sys

from benchmarks.context import Context
from benchmarks.harness import measure, prepare
from benchmarks.peers import peer_version
from benchmarks.report import Limit, Row, Table, human_time, per_op
from benchmarks.subprocs import command_series

GROUP = "import"


def _compile_package() -> None:
    """Write xetrack_c's bytecode, as pip does for an installed package; without it a
    checkout under PYTHONDONTWRITEBYTECODE would compile every module at every import."""
    import compileall
    import importlib.util
    from pathlib import Path

    spec = importlib.util.find_spec("xetrack_c")
    if spec is not None and spec.origin is not None:
        compileall.compile_dir(str(Path(spec.origin).parent), quiet=1)


def run(ctx: Context) -> None:
    """Measure and print the import table."""
    reps = max(ctx.reps, ctx.pick(10, 5))
    python = sys.executable
    _compile_package()
    series = [
        prepare("python -c 'import xetrack_c'", 1, command_series([python, "-c", "import xetrack_c"])),
        prepare(f"python -c 'import xetrack' ({peer_version('xetrack')})", 1,
                command_series([python, "-c", "import xetrack"])),
        prepare("python -c pass", 1, command_series([python, "-c", "pass"])),
    ]
    results = measure(GROUP, series, reps, ctx.group_dir(GROUP), "imports")
    subject, xetrack, bare = (results[s.label] for s in series)
    table = Table(
        "import: a fresh interpreter importing the package",
        f"Wall time of the whole process, median [min–max] of {reps} runs.",
        notes=["Targets: import xetrack_c <= 50 ms, and >= 10x faster than import xetrack.",
               "Both packages import from compiled bytecode, as an installed package does "
               "(the suite compiles xetrack_c's modules first, even under "
               "PYTHONDONTWRITEBYTECODE)."],
        rows=[Row("import", "fresh process", subject, [xetrack], Limit(bare, "python -c pass"),
                  display=per_op())],
    )
    if subject.ok and bare.ok:
        table.notes.append("Import cost above bare start-up: xetrack_c "
                           f"{human_time(subject.median_per_op - bare.median_per_op)}"
                           + (f", xetrack {human_time(xetrack.median_per_op - bare.median_per_op)}"
                              if xetrack.ok else "") + ".")
    ctx.emit(table)
