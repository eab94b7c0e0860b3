"""``xt plot hist|scatter``: a PNG through matplotlib when it is installed, else a plot drawn
with characters in the terminal (``--terminal`` asks for that one explicitly)."""

from __future__ import annotations

import math
from typing import Any, List, Optional, Sequence, Tuple

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


def terminal_scatter(xs: Sequence[float], ys: Sequence[float], size: int, pch: str,
                     colour: str, title: str, x_name: str, y_name: str, tty: bool) -> str:
    """A ``size`` x ``size`` character grid with ``pch`` where points fall."""
    size = max(2, size)
    x_low, x_high, y_low, y_high = min(xs), max(xs), min(ys), max(ys)
    x_span, y_span = (x_high - x_low) or 1.0, (y_high - y_low) or 1.0
    grid = [[" "] * size for _ in range(size)]
    mark = _paint((pch or "o")[0], colour, tty)
    for x, y in zip(xs, ys, strict=False):
        column = min(int((x - x_low) / x_span * (size - 1) + 0.5), size - 1)
        row = size - 1 - min(int((y - y_low) / y_span * (size - 1) + 0.5), size - 1)
        grid[row][column] = mark
    top, bottom = f"{y_high:.4g}", f"{y_low:.4g}"
    margin = max(len(top), len(bottom))
    lines = [title, ""]
    for i, row in enumerate(grid):
        label = top if i == 0 else bottom if i == size - 1 else ""
        lines.append(f"{label.rjust(margin)} |{''.join(row)}|")
    lines.append(" " * margin + " +" + "-" * size + "+")
    x_axis = f"{x_low:.4g}".ljust(size - len(f"{x_high:.4g}") + 1) + f"{x_high:.4g}"
    lines.append(" " * (margin + 2) + x_axis)
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
