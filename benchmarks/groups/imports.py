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


def run(ctx: Context) -> None:
    """Measure and print the import table."""
    reps = max(ctx.reps, ctx.pick(10, 5))
    python = sys.executable
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
        notes=["Targets: import xetrack_c <= 50 ms, and >= 10x faster than import xetrack."],
        rows=[Row("import", "fresh process", subject, [xetrack], Limit(bare, "python -c pass"),
                  display=per_op())],
    )
    if subject.ok and bare.ok:
        table.notes.append("Import cost above bare start-up: xetrack_c "
                           f"{human_time(subject.median_per_op - bare.median_per_op)}"
                           + (f", xetrack {human_time(xetrack.median_per_op - bare.median_per_op)}"
                              if xetrack.ok else "") + ".")
    ctx.emit(table)
