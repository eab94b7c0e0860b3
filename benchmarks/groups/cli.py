"""cli: wall time of ``xt head DB`` and ``xt sql DB "SELECT count(*) FROM \\"default\\""`` for
xetrack_c's ``xt`` against xetrack's, as subprocesses on the same 10,000-row file, with a bare
``python -c pass`` as the floor.

xetrack_c's ``xt`` is found, in order: the XETRACK_C_XT environment variable (a path), an ``xt``
on PATH whose script imports xetrack_c, ``python -m xetrack_c`` (a ``__main__`` module), or
``xetrack_c.cli.main``. xetrack's is the ``xt`` next to this interpreter or on PATH.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
from pathlib import Path

from benchmarks.context import Context
from benchmarks.groups.read import build_database
from benchmarks.harness import Skip, measure, prepare, skipped
from benchmarks.peers import peer_version
from benchmarks.report import Limit, Row, Table, per_op
from benchmarks.subprocs import command_series

GROUP = "cli"
COUNT_QUERY = 'SELECT count(*) FROM "default"'


def _script_mentions(path: Path, text: str) -> bool:
    try:
        return text in path.read_text(errors="replace")[:4096]
    except OSError:
        return False


def xetrack_c_xt() -> list[str]:
    """The command that runs xetrack_c's ``xt``; Skip when there is none yet."""
    override = os.environ.get("XETRACK_C_XT")
    if override:
        return [override]
    found = shutil.which("xt")
    if found and _script_mentions(Path(found), "xetrack_c"):
        return [found]
    if importlib.util.find_spec("xetrack_c") is None:
        raise Skip("xetrack_c is not importable")
    if importlib.util.find_spec("xetrack_c.__main__") is not None:
        return [sys.executable, "-m", "xetrack_c"]
    spec = importlib.util.find_spec("xetrack_c.cli")
    if spec is not None and spec.origin and _script_mentions_def(Path(spec.origin)):
        return [sys.executable, "-c", "import sys; from xetrack_c.cli import main; sys.exit(main())"]
    raise Skip("xetrack_c has no xt command yet (no console script, xetrack_c.__main__ or "
               "xetrack_c.cli.main)")


def _script_mentions_def(path: Path) -> bool:
    try:
        return "def main(" in path.read_text(errors="replace")
    except OSError:
        return False


def xetrack_xt() -> list[str]:
    """The command that runs xetrack 0.7's ``xt``; Skip when xetrack is not installed."""
    for candidate in (Path(sys.executable).parent / "xt", Path(shutil.which("xt") or "/nonexistent")):
        if candidate.is_file() and _script_mentions(candidate, "xetrack.cli"):
            return [str(candidate)]
    raise Skip("xetrack's xt not found (pip install xetrack)")


def run(ctx: Context) -> None:
    """Measure and print the cli table."""
    nrows = 10_000
    db = ctx.group_dir(GROUP) / "cli.db"
    build_database(ctx, db, nrows)
    version = peer_version("xetrack")
    commands = {"head": ["head", str(db)], "sql": ["sql", str(db), COUNT_QUERY]}
    series = []
    labels = {}
    for name, args in commands.items():
        for who, finder in (("xetrack_c", xetrack_c_xt), (f"xetrack {version}", xetrack_xt)):
            label = f"{who} xt {name}"
            try:
                base = finder()
            except Skip as exc:
                series.append(skipped(label, str(exc), 1))
            else:
                series.append(prepare(label, 1, command_series([*base, *args])))
            labels[(who.split()[0], name)] = label
    series.append(prepare("python -c pass", 1, command_series([sys.executable, "-c", "pass"])))
    results = measure(GROUP, series, ctx.reps, ctx.group_dir(GROUP), "xt commands")
    floor = Limit(results["python -c pass"], "python -c pass")
    rows = [Row(f"xt {name}", f"{nrows:,} rows", results[labels[("xetrack_c", name)]],
                [results[labels[("xetrack", name)]]], floor, display=per_op())
            for name in commands]
    ctx.emit(Table(
        "cli: xt commands, wall time of the whole process",
        mode="a fresh process per command, the same file for both",
        description=
        "Median [min–max] over the repetitions; `xt sql` runs `" + COUNT_QUERY + "`.",
        notes=["Target: xt head >= 5x faster than xetrack's xt head."],
        rows=rows,
    ))
