"""``xt plot hist|scatter|line``: a PNG through matplotlib when it is installed, else a plot drawn
with characters in the terminal (``--terminal`` asks for that one explicitly)."""

from __future__ import annotations

import math
from typing import Any, Dict, List, Optional, Sequence, Tuple

from xetrack_c.cli import db as db_access

_COLOURS = {"black": 30, "red": 31, "green": 32, "yellow": 33, "blue": 34, "magenta": 35,
            "cyan": 36, "white": 37}


def numeric_rows(db: str, table: str, names: Sequence[str]) -> List[Tuple[float, ...]]:
    """Rows of the numeric ``names`` columns in timestamp order, skipping rows where one is
    NULL; UserError for text values."""
    present = db_access.columns(db, table)
    for name in names:
        db_access.require_column(name, present, table)
    sql = (f"SELECT {', '.join(db_access.quote(name) for name in names)} "
           f"FROM {db_access.quote(table)}")
    if db_access.TIMESTAMP in present:
        sql += f" ORDER BY {db_access.quote(db_access.TIMESTAMP)}"
    out: List[Tuple[float, ...]] = []
    for row in db_access.read(db, sql)[1]:
        if any(value is None for value in row):
            continue
        for name, value in zip(names, row, strict=False):
            if not isinstance(value, (int, float)) or isinstance(value, bool):
                raise db_access.UserError(f"column {name!r} holds non-numeric values such as "
                                          f"{value!r}; plot a numeric column")
        out.append(tuple(float(value) for value in row))
    return out


def has_matplotlib() -> bool:
    """Whether matplotlib can be imported (a broken install counts as missing)."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def _paint(text: str, colour: str, enabled: bool) -> str:
    code = _COLOURS.get(colour.lower())
    if not enabled or code is None or colour.lower() == "white":
        return text
    return f"\033[{code}m{text}\033[0m"


def _bins(values: Sequence[float], count: int) -> Tuple[List[float], List[int]]:
    """Equal-width bin edges over [min, max] and how many values fall in each bin."""
    low, high = min(values), max(values)
    if high == low:
        low, high = low - 0.5, high + 0.5
    step = (high - low) / count
    edges = [low + i * step for i in range(count + 1)]
    counts = [0] * count
    for value in values:
        index = min(int((value - low) / step), count - 1)
        counts[index] += 1
    return edges, counts


def _default_bins(n: int) -> int:
    return max(1, min(50, int(math.ceil(math.log2(n))) + 1)) if n else 1


def _summary(values: Sequence[float]) -> List[str]:
    n = len(values)
    mean = sum(values) / n
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else 0.0
    return [f"observations: {n}", f"min: {min(values):g}", f"mean: {mean:g}",
            f"std: {std:g}", f"max: {max(values):g}"]


def terminal_hist(values: Sequence[float], bins: Optional[int], width: Optional[int],
                  pch: str, colour: str, summary: bool, title: str, tty: bool) -> str:
    """A horizontal histogram: one line per bin, ``pch`` repeated in proportion."""
    edges, counts = _bins(values, bins or _default_bins(len(values)))
    bar_width = width or 50
    most = max(counts) or 1
    labels = [f"[{edges[i]:.4g}, {edges[i + 1]:.4g}{']' if i == len(counts) - 1 else ')'}"
              for i in range(len(counts))]
    label_width = max(len(label) for label in labels)
    lines = [title, ""]
    for label, count in zip(labels, counts, strict=False):
        bar = (pch or "o")[0] * int(round(count / most * bar_width))
        lines.append(f"{label.rjust(label_width)} | {_paint(bar, colour, tty)} {count}")
    if summary:
        lines += ["", "Summary", "-------"] + _summary(values)
    return "\n".join(lines)


class _Grid:
    """A ``width`` x ``height`` character canvas over the points' range, with y labels at
    the top and bottom, a frame and the x range below (the terminal plots share it)."""

    def __init__(self, points: Sequence[Tuple[float, float]], width: int, height: int) -> None:
        self.x_low, self.x_high = min(x for x, _ in points), max(x for x, _ in points)
        self.y_low, self.y_high = min(y for _, y in points), max(y for _, y in points)
        self.width, self.height = max(2, width), max(2, height)
        self.cells = [[" "] * self.width for _ in range(self.height)]

    def put(self, x: float, y: float, mark: str) -> None:
        x_span = (self.x_high - self.x_low) or 1.0
        y_span = (self.y_high - self.y_low) or 1.0
        column = min(int((x - self.x_low) / x_span * (self.width - 1) + 0.5), self.width - 1)
        row = self.height - 1 - min(int((y - self.y_low) / y_span * (self.height - 1) + 0.5),
                                    self.height - 1)
        self.cells[row][column] = mark

    def lines(self, title: str) -> List[str]:
        top, bottom = f"{self.y_high:.4g}", f"{self.y_low:.4g}"
        margin = max(len(top), len(bottom))
        lines = [title, ""]
        for i, row in enumerate(self.cells):
            label = top if i == 0 else bottom if i == self.height - 1 else ""
            lines.append(f"{label.rjust(margin)} |{''.join(row)}|")
        lines.append(" " * margin + " +" + "-" * self.width + "+")
        right = f"{self.x_high:.4g}"
        lines.append(" " * (margin + 2) + f"{self.x_low:.4g}".ljust(self.width - len(right) + 1)
                     + right)
        return lines


def terminal_scatter(xs: Sequence[float], ys: Sequence[float], size: int, pch: str,
                     colour: str, title: str, x_name: str, y_name: str, tty: bool) -> str:
    """A ``size`` x ``size`` character grid with ``pch`` where points fall."""
    grid = _Grid(list(zip(xs, ys, strict=False)), size, size)
    mark = _paint((pch or "o")[0], colour, tty)
    for x, y in zip(xs, ys, strict=False):
        grid.put(x, y, mark)
    lines = grid.lines(title)
    lines.append(f"x: {x_name}, y: {y_name}, {len(xs)} points")
    return "\n".join(lines)


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as pyplot

    return pyplot


def _colour(colour: str) -> Optional[str]:
    """matplotlib colour for xetrack's terminal colour names ('white' means the default)."""
    return None if colour.lower() in ("white", "default") else colour


def png_hist(values: Sequence[float], bins: Optional[int], colour: str, title: str,
             column: str, output: str) -> None:
    pyplot = _pyplot()
    figure, axes = pyplot.subplots(figsize=(8, 5))
    axes.hist(values, bins=bins or _default_bins(len(values)), color=_colour(colour))
    axes.set(title=title, xlabel=column, ylabel="count")
    figure.tight_layout()
    figure.savefig(output, dpi=100)
    pyplot.close(figure)


def png_scatter(xs: Sequence[float], ys: Sequence[float], size: int, colour: str, title: str,
                x_name: str, y_name: str, output: str) -> None:
    pyplot = _pyplot()
    figure, axes = pyplot.subplots(figsize=(8, 5))
    axes.scatter(xs, ys, s=size, color=_colour(colour))
    axes.set(title=title, xlabel=x_name, ylabel=y_name)
    figure.tight_layout()
    figure.savefig(output, dpi=100)
    pyplot.close(figure)


def hist(args: Any, tty: bool) -> str:
    """The text ``xt plot hist`` prints (the plot itself, or where the PNG went)."""
    values = [value for (value,) in numeric_rows(args.db, args.table, [args.column])]
    if not values:
        raise db_access.UserError(f"column {args.column!r} has no values to plot")
    if args.bins is not None and args.bins < 1:
        raise db_access.UserError("--bins must be at least 1")
    title = args.title or f"{args.column} histogram"
    if args.terminal or not has_matplotlib():
        return terminal_hist(values, args.bins, args.width, args.pch, args.colour,
                             args.summary, title, tty)
    output = args.output or f"{args.column}_hist.png"
    png_hist(values, args.bins, args.colour, title, args.column, output)
    return f"Wrote {output} ({len(values)} values)"


def scatter(args: Any, tty: bool) -> str:
    """The text ``xt plot scatter`` prints."""
    pairs = numeric_rows(args.db, args.table, [args.x, args.y])
    if not pairs:
        raise db_access.UserError(f"columns {args.x!r} and {args.y!r} have no rows with both "
                                  f"values set")
    xs, ys = [x for x, _ in pairs], [y for _, y in pairs]
    title = args.title or f"{args.x} vs {args.y}"
    if args.terminal or not has_matplotlib():
        return terminal_scatter(xs, ys, args.size, args.pch, args.colour, title, args.x,
                                args.y, tty)
    output = args.output or f"{args.x}_vs_{args.y}.png"
    png_scatter(xs, ys, args.size, args.colour, title, args.x, args.y, output)
    return f"Wrote {output} ({len(xs)} points)"


# Marker characters of the series of a terminal line plot, in order (then they repeat).
LINE_MARKERS = "*+ox#@%&"
# Without --by values, a row belongs to this series.
NO_GROUP = "(none)"


def line_series(db: str, table: str, x: str, y: str,
                by: str) -> Dict[str, List[Tuple[float, float]]]:
    """(x, y) points per value of ``by``, series in order of first appearance and points in
    timestamp order; rows where x or y is NULL are skipped."""
    present = db_access.columns(db, table)
    for name in (x, y, by):
        db_access.require_column(name, present, table)
    sql = (f"SELECT {db_access.quote(x)}, {db_access.quote(y)}, {db_access.quote(by)} "
           f"FROM {db_access.quote(table)}")
    if db_access.TIMESTAMP in present:
        sql += f" ORDER BY {db_access.quote(db_access.TIMESTAMP)}"
    series: Dict[str, List[Tuple[float, float]]] = {}
    for x_value, y_value, group in db_access.read(db, sql)[1]:
        if x_value is None or y_value is None:
            continue
        for name, value in ((x, x_value), (y, y_value)):
            if not isinstance(value, (int, float)) or isinstance(value, bool):
                raise db_access.UserError(f"column {name!r} holds non-numeric values such as "
                                          f"{value!r}; plot a numeric column")
        key = NO_GROUP if group is None else str(group)
        series.setdefault(key, []).append((float(x_value), float(y_value)))
    for points in series.values():
        points.sort(key=lambda point: point[0])
    return series


def terminal_line(series: Dict[str, List[Tuple[float, float]]], width: int, height: int,
                  markers: str, title: str, x_name: str, y_name: str, by: str) -> str:
    """A ``width`` x ``height`` character grid, one marker character per series, and a
    legend naming each series with its marker, point count and last value."""
    markers = markers or LINE_MARKERS
    grid = _Grid([point for values in series.values() for point in values], width, height)
    legend = []
    for index, (name, values) in enumerate(series.items()):
        mark = markers[index % len(markers)]
        for x, y in values:
            grid.put(x, y, mark)
        legend.append(f"  {mark} {name}: {len(values)} points, last {y_name} = "
                      f"{values[-1][1]:.6g}")
    lines = grid.lines(title)
    lines.append(f"x: {x_name}, y: {y_name}, {len(series)} series by {by}:")
    return "\n".join(lines + legend)


def draw_lines(axes: Any, series: Dict[str, List[Tuple[float, float]]], x_name: str,
               y_name: str, title: str, by: str) -> None:
    """One line with markers per series on ``axes``, labelled, with a legend."""
    for name, values in series.items():
        axes.plot([x for x, _ in values], [y for _, y in values], marker="o", markersize=3,
                  label=name)
    axes.set(title=title, xlabel=x_name, ylabel=y_name)
    axes.grid(True, alpha=0.3)
    if all(float(x).is_integer() for values in series.values() for x, _ in values):
        from matplotlib.ticker import MaxNLocator

        axes.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs, not epoch 1.5
    if len(series) <= 20:  # past that a legend hides the plot
        axes.legend(title=by, fontsize="small")


def png_line(series: Dict[str, List[Tuple[float, float]]], title: str, x_name: str,
             y_name: str, by: str, output: str) -> None:
    pyplot = _pyplot()
    figure, axes = pyplot.subplots(figsize=(8, 5))
    draw_lines(axes, series, x_name, y_name, title, by)
    figure.tight_layout()
    figure.savefig(output, dpi=100)
    pyplot.close(figure)


def line(args: Any, tty: bool) -> str:
    """The text ``xt plot line`` prints: the plot, or where the PNG went."""
    series = line_series(args.db, args.table, args.x, args.y, args.by)
    if not series:
        raise db_access.UserError(f"columns {args.x!r} and {args.y!r} have no rows with both "
                                  f"values set")
    title = args.title or f"{args.y} by {args.x}"
    if args.terminal or not has_matplotlib():
        return terminal_line(series, args.width or 60, args.height or 20, args.pch, title,
                             args.x, args.y, args.by)
    output = args.output or f"{args.y}_by_{args.x}.png"
    png_line(series, title, args.x, args.y, args.by, output)
    points = sum(len(values) for values in series.values())
    return f"Wrote {output} ({len(series)} series, {points} points)"
