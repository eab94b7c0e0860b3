"""The notebook preview of a Reader or a Tracker (``_repr_html_``), without pandas.

Cells show what the DataFrame shows: floats to 6 significant digits, a missing value as
``NaN``. Wide tables scroll sideways inside their own box instead of running off the page,
and a footer row gives each numeric column's min, mean and max over all its rows (the rows
shown are only the first few).
"""

from __future__ import annotations

import html
import math
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

# Significant digits of a float cell.
DIGITS = 6
# Characters of a text cell before it is cut.
CELL_LIMIT = 40
_BOX = 'style="overflow-x:auto;max-width:100%"'
_NAN = '<span style="color:#888">NaN</span>'

Stats = Dict[str, Tuple[float, float, float]]


def cell_html(value: Any) -> str:
    """One cell: numbers compact, missing values as ``NaN`` (as the DataFrame prints them),
    long text cut to :data:`CELL_LIMIT` characters."""
    value = _plain(value)
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return _NAN
    if isinstance(value, float):
        return format(value, f".{DIGITS}g")
    if isinstance(value, (bytes, bytearray)):
        return f"&lt;{len(value)} bytes&gt;"
    text = str(value)
    if len(text) > CELL_LIMIT:
        text = text[: CELL_LIMIT - 3] + "..."
    return html.escape(text)


def numeric_stats(read: Callable[[str, Tuple[Any, ...]], Dict[str, Sequence[Any]]],
                  table_sql: str, names: Sequence[str], where: str = "",
                  params: Tuple[Any, ...] = ()) -> Stats:
    """(min, mean, max) of each column of ``names`` that holds numbers, by one SQL query
    through ``read`` (a Reader's or a Tracker's column reader)."""
    if not names:
        return {}
    parts = []
    for i, name in enumerate(names):
        quoted = '"' + name.replace('"', '""') + '"'
        parts += [f"min({quoted}) AS mn{i}", f"avg({quoted}) AS av{i}",
                  f"max({quoted}) AS mx{i}"]
    columns = read(f"SELECT {', '.join(parts)} FROM {table_sql}{where}", params)
    stats: Stats = {}
    for i, name in enumerate(names):
        values = [_plain(columns[f"{kind}{i}"][0]) for kind in ("mn", "av", "mx")]
        if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
            stats[name] = (float(values[0]), float(values[1]), float(values[2]))
    return stats


def _plain(value: Any) -> Any:
    """A numpy scalar as the Python value it holds."""
    return value.item() if hasattr(value, "item") and not isinstance(value, (str, bytes)) \
        else value


def numeric_names(columns: Dict[str, Any]) -> List[str]:
    """Names of the columns whose shown values are numbers (bools left out)."""
    names: List[str] = []
    for name, values in columns.items():
        kind = getattr(getattr(values, "dtype", None), "kind", "O")
        if kind in "iuf":
            names.append(name)
    return names


def html_preview(title_html: str, summary: str, columns: Dict[str, Any],
                 stats: Optional[Stats] = None) -> str:
    """A title line with a summary, the first rows as a table in a sideways-scrolling box,
    and a footer row with ``stats`` (min, mean, max) under the numeric columns."""
    stats = stats or {}
    header = "".join(f"<th>{html.escape(name)}</th>" for name in columns)
    nrows = len(next(iter(columns.values()))) if columns else 0
    numeric = set(numeric_names(columns))
    body = "".join(
        "<tr>" + "".join(
            f'<td style="text-align:right">{cell_html(values[i])}</td>' if name in numeric
            else f"<td>{cell_html(values[i])}</td>"
            for name, values in columns.items()) + "</tr>"
        for i in range(nrows))
    footer = ""
    if stats:
        cells = "".join(
            f'<td style="text-align:right;color:#555">{_stats_text(stats[name])}</td>'
            if name in stats else "<td></td>" for name in columns)
        footer = f'<tfoot><tr title="min / mean / max of every row">{cells}</tr></tfoot>'
    return (f"<div><p>{title_html}: {html.escape(summary)}</p><div {_BOX}>"
            f"<table><thead><tr>{header}</tr></thead><tbody>{body}</tbody>{footer}</table>"
            f"</div></div>")


def _stats_text(values: Tuple[float, float, float]) -> str:
    low, mean, high = (format(v, ".4g") for v in values)
    return f"min {low}<br>mean {mean}<br>max {high}"
