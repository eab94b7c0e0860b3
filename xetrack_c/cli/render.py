"""Text output of the ``xt`` command line: Markdown tables and JSON, without pandas.

Tables come out in the layout of ``pandas.DataFrame.to_markdown(index=False)`` (tabulate's
"pipe" format), which is what xetrack's ``xt`` prints: text columns left-aligned, numeric
columns right-aligned on the decimal point, floats in ``%g`` form, NULL as an empty cell.
"""

from __future__ import annotations

import math
from typing import Any, List, Sequence

# tabulate's MIN_PADDING: a column is at least two characters wider than its header.
_HEADER_PADDING = 2


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def cell_text(value: Any) -> str:
    """One value as a table cell shows it."""
    if value is None:
        return ""
    if isinstance(value, float):
        return format(value, "g")
    if isinstance(value, (bytes, bytearray)):
        return f"<{len(value)} bytes>"
    text = str(value)
    if "\n" in text or "|" in text:
        # A Markdown row is one line, and "|" would end the cell.
        text = text.replace("\r\n", "\n").replace("\n", " ").replace("|", "\\|")
    return text


def _digits_after_point(text: str) -> int:
    """Characters after the decimal point (or exponent), -1 when there is none."""
    point = text.rfind(".")
    if point < 0:
        point = text.lower().rfind("e")
    return len(text) - point - 1 if point >= 0 else -1


def _numeric_cells(values: Sequence[Any]) -> List[str]:
    """Cells of a numeric column padded on the right so their decimal points line up."""
    texts = [cell_text(value) for value in values]
    after = [_digits_after_point(text) if value is not None else -1
             for text, value in zip(texts, values, strict=False)]
    most = max(after, default=-1)
    return [text + " " * (most - n) if value is not None else text
            for text, n, value in zip(texts, after, values, strict=False)]


def markdown_table(names: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """``names`` and ``rows`` as a Markdown (pipe) table."""
    columns = list(zip(*rows, strict=False)) if rows else [() for _ in names]
    cells: List[List[str]] = []
    numeric: List[bool] = []
    for values in columns:
        present = [value for value in values if value is not None]
        is_numeric = bool(present) and all(_is_number(value) for value in present)
        numeric.append(is_numeric)
        cells.append(_numeric_cells(values) if is_numeric else [cell_text(v) for v in values])
    headers = [cell_text(name) for name in names]
    widths = [max([len(header) + _HEADER_PADDING] + [len(text) for text in column])
              for header, column in zip(headers, cells, strict=False)]

    def line(texts: Sequence[str]) -> str:
        parts = [text.rjust(width) if right else text.ljust(width)
                 for text, width, right in zip(texts, widths, numeric, strict=False)]
        return "| " + " | ".join(parts) + " |"

    if rows:
        rule = [("-" * (width + 1) + ":") if right else (":" + "-" * (width + 1))
                for width, right in zip(widths, numeric, strict=False)]
    else:
        rule = ["-" * (width + 2) for width in widths]
    lines = [line(headers), "|" + "|".join(rule) + "|"]
    lines.extend(line([column[i] for column in cells]) for i in range(len(rows)))
    return "\n".join(lines)


def json_value(value: Any) -> Any:
    """A value JSON can hold: non-finite floats become null, blobs their hex digits."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, (bytes, bytearray)):
        return value.hex()
    return value


def json_text(data: Any) -> str:
    """``data`` as indented JSON (two spaces, UTF-8 kept as is, as xetrack prints it)."""
    import json

    return json.dumps(data, indent=2, ensure_ascii=False, default=str)


def json_records(names: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """Rows as a JSON list of ``{column: value}`` objects."""
    return json_text([{name: json_value(value) for name, value in zip(names, row, strict=False)}
                      for row in rows])
