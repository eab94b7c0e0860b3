"""import: wall time of ``python -c "import xetrack_c"`` against ``python -c "import xetrack"``,
with a bare ``python -c pass`` as the floor (interpreter start-up); and the import's own cost
as ``python -X importtime`` reports it (the cumulative time of the ``xetrack_c`` line), with
and without ``site`` (which may import ``typing`` and ``re`` itself and hide their cost)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from benchmarks.context import Context
from benchmarks.env import subprocess_env
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


def importtime_series(python: str, no_site: bool) -> Callable[[], Callable[[Path], float]]:
    """Build a run returning the cumulative seconds ``-X importtime`` gives ``xetrack_c``."""
    def build() -> Callable[[Path], float]:
        import importlib.util

        spec = importlib.util.find_spec("xetrack_c")
        if spec is None or spec.origin is None:
            raise ImportError("xetrack_c is not importable")
        env = subprocess_env()
        if no_site:  # -S drops site-packages: point PYTHONPATH at the package's directory
            root = str(Path(spec.origin).resolve().parent.parent)
            env["PYTHONPATH"] = os.pathsep.join([root, *filter(None, [env.get("PYTHONPATH")])])
        # Without site, os is not loaded yet; every interpreter with site has it.
        code = "import os; import xetrack_c" if no_site else "import xetrack_c"
        command = [python, *(["-S"] if no_site else []), "-X", "importtime", "-c", code]

        def run(workdir: Path) -> float:
            out = subprocess.run(command, cwd=workdir, env=env, capture_output=True, text=True,
                                 check=True, timeout=120)
            for line in out.stderr.splitlines():
                fields = line.split("|")
                if len(fields) == 3 and fields[2].strip() == "xetrack_c":
                    return int(fields[1]) / 1e6
            raise RuntimeError(f"no xetrack_c line in -X importtime output: {out.stderr[-200:]}")
        return run
    return build


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
    own = [
        prepare("-X importtime: xetrack_c (cumulative)", 1, importtime_series(python, False)),
        prepare("-X importtime -S: xetrack_c (cumulative)", 1, importtime_series(python, True)),
    ]
    results = measure(GROUP, [*series, *own], max(reps, 7), ctx.group_dir(GROUP), "imports")
    subject, xetrack, bare = (results[s.label] for s in series)
    with_site, without_site = (results[s.label] for s in own)
    table = Table(
        "import: a fresh interpreter importing the package",
        mode="a fresh interpreter each",
        description=
        f"Wall time of the whole process, median [min–max] of {reps} runs.",
        notes=["Targets: import xetrack_c <= 5 ms above a bare interpreter (the -X importtime "
               "rows: the cumulative time Python reports for the xetrack_c line, which is the "
               "import alone), and >= 10x faster than import xetrack.",
               "Both packages import from compiled bytecode, as an installed package does "
               "(the suite compiles xetrack_c's modules first, even under "
               "PYTHONDONTWRITEBYTECODE)."],
        rows=[Row("import", "fresh process", subject, [xetrack], Limit(bare, "python -c pass"),
                  display=per_op()),
              Row("import xetrack_c, -X importtime", "with site", with_site, display=per_op()),
              Row("import xetrack_c, -X importtime -S", "without site", without_site,
                  display=per_op())],
    )
    if subject.ok and bare.ok:
        table.notes.append("Import cost above bare start-up: xetrack_c "
                           f"{human_time(subject.median_per_op - bare.median_per_op)}"
                           + (f", xetrack {human_time(xetrack.median_per_op - bare.median_per_op)}"
                              if xetrack.ok else "") + ".")
    ctx.emit(table)
