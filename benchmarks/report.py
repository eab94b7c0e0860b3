"""Markdown tables: operation, size, mode, xetrack_c, peer(s), ratio, limit.

Every cell shows the median over the repetitions and, in brackets, the minimum and maximum.
The ratio is how many times faster xetrack_c is than the peer (peer time / xetrack_c time per
operation), so above 1 means xetrack_c wins. A row with several peers takes one line per peer.
The mode column says what each side pays for: durability, journal mode, launcher, chunksize.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from benchmarks.harness import FAILED, SKIPPED, Result

RATE = "rate"
LATENCY = "latency"


@dataclass(frozen=True)
class Display:
    """How a row shows its numbers: as a rate (``rows/s``) or as a time per operation."""

    kind: str
    unit: str

    def value(self, seconds_per_op: float) -> str:
        """One number in this display's unit."""
        if self.kind == RATE:
            return f"{human(1.0 / seconds_per_op)} {self.unit}" if seconds_per_op > 0 else "inf"
        return human_time(seconds_per_op) + (f"/{self.unit}" if self.unit else "")

    def short(self, seconds_per_op: float) -> str:
        """A compact number without the unit, for the [min–max] range."""
        if self.kind == RATE:
            return human(1.0 / seconds_per_op).replace(" ", "") if seconds_per_op > 0 else "inf"
        return human_time(seconds_per_op).replace(" ", "")

    def cell(self, result: Result, size_ops: int | None = None) -> str:
        """Median with the [min–max] range over the repetitions, or why there is no number."""
        if result.status == SKIPPED:
            return "skipped"
        if result.status == FAILED and not result.seconds:
            return "failed"
        if not result.seconds:
            return "—"
        low, high = result.min_per_op, result.max_per_op
        if self.kind == RATE:
            low, high = high, low  # the slowest repetition has the lowest rate
        text = f"{self.value(result.median_per_op)} [{self.short(low)}–{self.short(high)}]"
        if size_ops is not None and result.ops != size_ops:
            text += f" (n={result.ops:,})"
        if result.status == FAILED:
            text += " (failed part-way)"
        return text


def rows_per_second(unit: str = "rows/s") -> Display:
    """Rates, higher is better."""
    return Display(RATE, unit)


def per_op(unit: str = "") -> Display:
    """Times per operation, lower is better."""
    return Display(LATENCY, unit)


def human(value: float) -> str:
    """3 significant digits with k/M/G suffix, e.g. ``"182 k"``."""
    for factor, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= factor:
            return f"{value / factor:.3g} {suffix}"
    return f"{value:.3g}"


def human_time(seconds: float) -> str:
    """A duration with the unit that keeps it readable, e.g. ``"4.1 µs"``."""
    for factor, unit in ((1.0, "s"), (1e-3, "ms"), (1e-6, "µs")):
        if abs(seconds) >= factor:
            return f"{seconds / factor:.3g} {unit}"
    return f"{seconds / 1e-9:.3g} ns"


def ratio(subject: Result | None, peer: Result) -> str:
    """How many times faster ``subject`` is than ``peer`` (median per-op times)."""
    if subject is None or not subject.ok or not peer.ok:
        return "—"
    if subject.median_per_op <= 0:
        return "—"
    return f"{peer.median_per_op / subject.median_per_op:.3g}x"


@dataclass
class Limit:
    """The physical or practical limit for a row, e.g. the C ceiling."""

    result: Result
    label: str = ""


@dataclass
class Row:
    """One operation at one size: xetrack_c against its peers, with the limit when known."""

    operation: str
    size: str
    subject: Result | None
    peers: Sequence[Result] = ()
    limit: Limit | None = None
    display: Display = field(default_factory=rows_per_second)
    mode: str = ""


@dataclass
class Table:
    """A group's table with a title, a line on what is measured, and notes below."""

    title: str
    description: str
    rows: list[Row] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    mode: str = ""

    def markdown(self) -> str:
        """The table as Markdown; a row without its own mode shows the table's."""
        lines = [f"### {self.title}", ""]
        if self.description:
            lines += [self.description, ""]
        if self.rows:
            lines.append("| operation | size | mode | xetrack_c | peer | peer result | ratio "
                         "| limit |")
            lines.append("|---|---|---|---|---|---|---|---|")
            for row in self.rows:
                lines += _row_lines(row, row.mode or self.mode or "—")
        if self.notes:
            if self.rows:
                lines.append("")
            lines += [f"- {text}" for text in self.notes]
        lines.append("")
        return "\n".join(lines)


def _limit_cell(row: Row) -> str:
    if row.limit is None:
        return "—"
    limit = row.limit
    label = limit.label or limit.result.label
    if not limit.result.ok:
        return f"{label}: {row.display.cell(limit.result)}"
    text = f"{label}: {row.display.value(limit.result.median_per_op)}"
    if row.subject is not None and row.subject.ok:
        share = limit.result.median_per_op / row.subject.median_per_op
        text += f" (xetrack_c at {share:.0%})"
    return text


def _row_lines(row: Row, mode: str) -> list[str]:
    size_ops = row.subject.ops if row.subject is not None else None
    subject = row.display.cell(row.subject) if row.subject is not None else "—"
    peers = list(row.peers) or [None]
    lines = []
    for index, peer in enumerate(peers):
        first = index == 0
        cells = [
            row.operation if first else "",
            row.size if first else "",
            mode if first else "",
            subject if first else "",
            peer.label if peer is not None else "—",
            row.display.cell(peer, size_ops) if peer is not None else "—",
            ratio(row.subject, peer) if peer is not None else "—",
            _limit_cell(row) if first else "",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def growth_note(what: str, points: Sequence[tuple[float, Result]], unit_name: str) -> str:
    """Say whether cost grows linearly in the size, from per-unit costs at each size.

    ``points`` pairs a size (columns, rows, tasks) with a result whose per-op time is the cost
    of one operation of that size; the per-unit cost is that time divided by the size. The
    verdict compares the two largest sizes, where fixed costs weigh least: linear when the
    per-unit cost stays within 0.67x-1.5x.
    """
    usable = sorted(((size, result) for size, result in points if result.ok), key=lambda p: p[0])
    if not usable:
        return f"{what}: not measured."
    if len(usable) < 2:
        return f"{what}: only one size measured; growth not judged."
    per_unit = [(size, result.median_per_op / size) for size, result in usable]
    (prev_size, prev_unit), (last_size, last_unit) = per_unit[-2], per_unit[-1]
    growth = last_unit / prev_unit
    if growth > 1.5:
        verdict = "grows faster than linearly"
    elif growth < 0.67:
        verdict = "grows less than linearly (fixed costs still dominate)"
    else:
        verdict = "grows linearly"
    step = usable[-1][1].median_per_op / usable[-2][1].median_per_op
    trail = " -> ".join(f"{human_time(unit)} at {_size(size)}" for size, unit in per_unit)
    singular = unit_name[:-1] if unit_name.endswith("s") else unit_name
    return (f"{what}: {verdict} from {_size(prev_size)} to {_size(last_size)} {unit_name} "
            f"(x{last_size / prev_size:g} {unit_name} costs x{step:.3g}); per {singular}: {trail}.")


def _size(size: float) -> str:
    """A size with thousands separators: ``1,000,000``, not ``1e+06``."""
    return f"{int(size):,}" if float(size).is_integer() else f"{size:,g}"
