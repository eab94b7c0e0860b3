"""What every group gets: run settings, the work directory, the C ceiling, collected output."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from benchmarks.ceiling import Ceiling
from benchmarks.harness import Result
from benchmarks.report import Table


@dataclass
class ScalingPoint:
    """One point of a scaling curve: cost per unit at a size."""

    series: str
    size: float
    result: Result


@dataclass
class Context:
    """Settings and shared state of one benchmark run.

    Attributes:
        quick: Short sizes and fewer repetitions (CI).
        reps: Repetitions per series (medians are taken over these).
        workdir: A fresh directory on disk for this run's files.
        ceiling: The C limit, or why it is unavailable.
        tables: Every table printed so far, in order.
        scaling: Curves for the plot, by panel title.
    """

    quick: bool
    reps: int
    workdir: Path
    ceiling: Ceiling
    tables: list[Table] = field(default_factory=list)
    scaling: dict[str, list[ScalingPoint]] = field(default_factory=dict)

    def pick(self, full: int, quick: int) -> int:
        """A size: ``full`` normally, ``quick`` under --quick."""
        return quick if self.quick else full

    def group_dir(self, name: str) -> Path:
        """A directory for one group's files."""
        path = self.workdir / name
        path.mkdir(parents=True, exist_ok=True)
        return path

    def add_scaling(self, panel: str, series: str, size: float, result: Result) -> None:
        """Record a point for the scaling plot (skipped and failed results are left out)."""
        if result.ok:
            self.scaling.setdefault(panel, []).append(ScalingPoint(series, size, result))

    def emit(self, table: Table) -> None:
        """Print a table now and keep it for the report."""
        self.tables.append(table)
        print(table.markdown(), flush=True)
