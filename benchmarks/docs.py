"""Write the Markdown report (docs/benchmarks.md): machine, command, every table."""

from __future__ import annotations

import datetime
import os
from pathlib import Path

from benchmarks.context import Context
from benchmarks.env import Machine


def write_report(path: Path, ctx: Context, machine: Machine, command: str, reps: int,
                 seconds: float, plot: Path | None = None,
                 load: tuple[float, float] | None = None) -> None:
    """Write the report for this run to ``path``; ``load`` is the 1-minute load average at
    the start and at the end of the run."""
    lines = [
        "# Benchmarks",
        "",
        "Side-by-side figures for xetrack_c against xetrack 0.7, yanex 0.6, Python's own tools "
        "and a C program that marks the physical limit (benchmarks/c/ceiling.c). Every "
        "comparison ran interleaved in one run (A B A B ...) on the same rows, in fresh files; "
        "figures from different runs must not be compared. How to run and what each group "
        "measures: benchmarks/README.md.",
        "",
        "## This run",
        "",
        f"- date: {datetime.date.today().isoformat()}",
        f"- command: `{command}` (from the repository root, with `PYTHONPATH` set to it, "
        "the peers' interpreter; see benchmarks/README.md)",
        machine.markdown(),
        f"- repetitions: {reps} per series; cells show the median and [min–max]",
        f"- {'quick' if ctx.quick else 'full'} sizes; whole run {seconds / 60:.1f} min",
        "- ratio: how many times faster xetrack_c is than that peer (above 1: xetrack_c wins)",
        "- mode: what each side pays for (durability and journal mode, batching, launcher, "
        "chunksize); each group leads with the pairs that promise the same thing, and a row "
        "that compares unlike modes says so",
    ]
    if load is not None:
        cores = os.cpu_count() or 1
        busy = load[0] > 0.5
        lines.append(f"- machine load: 1-minute load average {load[0]:.1f} just before the run "
                     f"(other programs) and {load[1]:.1f} at its end (this run included), on "
                     f"{cores} cores"
                     + ("; other programs were running, so absolute figures are lower and "
                        "ranges wider than on a quiet machine (the interleaving spreads the "
                        "load over all contenders alike)" if busy else ""))
    lines.append("")
    if plot is not None and plot.exists():
        relative = os.path.relpath(plot, path.parent)
        lines += ["## Scaling", "", f"![scaling runs]({relative})", ""]
    lines += ["## Tables", ""]
    lines += [table.markdown() for table in ctx.tables]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines))
