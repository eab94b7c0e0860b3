"""Text output of the ``xt`` command line: Markdown tables and JSON, without pandas.

Tables come out in the layout of ``pandas.DataFrame.to_markdown(index=False)`` (tabulate's
"pipe" format), which is what xetrack's ``xt`` prints: text columns left-aligned, numeric
columns right-aligned on the decimal point, floats in ``%g`` form, NULL as an empty cell.
"""

from __future__ import annotations

import math
from typing import Any, List, Optional, Sequence

# tabulate's MIN_PADDING: a column is at least two characters wider than its header.
_HEADER_PADDING = 2
# The longest text cell of a table fitted to the terminal; longer ones end in ELLIPSIS.
MAX_CELL = 40
ELLIPSIS = "\u2026"
# The narrowest a text column is cut to so that it still fits the terminal.
_MIN_CUT = 8


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


class _Column:
    """One column of a Markdown table: its header, cell texts, alignment and width."""

    def __init__(self, name: str, values: Sequence[Any], max_cell: Optional[int]) -> None:
        present = [value for value in values if value is not None]
        self.name = name
        self.values = values
        self.numeric = bool(present) and all(_is_number(value) for value in present)
        if self.numeric:  # numbers are short; cutting one would change its value
            self.cells = _numeric_cells(values)
        else:
            self.cells = [_shorten(cell_text(value), max_cell) for value in values]
        self.header = _shorten(cell_text(name), None if max_cell is None
                               else max(max_cell - _HEADER_PADDING, 1))
        self.header_width = len(self.header) + _HEADER_PADDING
        self.width = max([self.header_width] + [len(text) for text in self.cells])


def _shorten(text: str, limit: Optional[int]) -> str:
    """``text`` cut to ``limit`` characters, the last one an ellipsis when it was cut."""
    if limit is None or len(text) <= limit:
        return text
    return text[:limit - 1] + ELLIPSIS


def _layout(names: Sequence[str], rows: Sequence[Sequence[Any]],
            max_cell: Optional[int] = None) -> List[_Column]:
    columns = list(zip(*rows, strict=False)) if rows else [() for _ in names]
    return [_Column(name, values, max_cell)
            for name, values in zip(names, columns, strict=False)]


def _render(columns: Sequence[_Column], row_count: int) -> str:
    def line(texts: Sequence[str]) -> str:
        parts = [text.rjust(column.width) if column.numeric else text.ljust(column.width)
                 for text, column in zip(texts, columns, strict=False)]
        return "| " + " | ".join(parts) + " |"

    if row_count:
        rule = [("-" * (c.width + 1) + ":") if c.numeric else (":" + "-" * (c.width + 1))
                for c in columns]
    else:
        rule = ["-" * (c.width + 2) for c in columns]
    lines = [line([c.header for c in columns]), "|" + "|".join(rule) + "|"]
    lines.extend(line([c.cells[i] for c in columns]) for i in range(row_count))
    return "\n".join(lines)


def markdown_table(names: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """``names`` and ``rows`` as a Markdown (pipe) table."""
    return _render(_layout(names, rows), len(rows))


def fitted_markdown_table(names: Sequence[str], rows: Sequence[Sequence[Any]],
                          width: int) -> str:
    """A Markdown table no wider than ``width`` characters: text cells longer than
    :data:`MAX_CELL` (or than the width) end in an ellipsis; columns are kept from the left
    up to the first that does not fit (cut shorter when it is text and still has room), and
    the others are named on a last line."""
    columns = _layout(names, rows, max(min(MAX_CELL, width - 4), 1))
    shown: List[_Column] = []
    used = 1  # "| " + cells joined by " | " + " |": each column takes its width plus 3
    for column in columns:
        if shown and used + column.width + 3 > width:
            # A text column may still fit cut shorter: it is the last one shown.
            room = width - used - 3
            if not column.numeric and room >= max(_MIN_CUT, column.header_width):
                shown.append(_Column(column.name, column.values, room))
            break
        shown.append(column)
        used += column.width + 3
    table = _render(shown, len(rows))
    hidden = [column.name for column in columns[len(shown):]]
    return table + "\n" + _hidden_note(hidden, width) if hidden else table


def _hidden_note(hidden: Sequence[str], width: int) -> str:
    """``… 7 more columns: a, b, … (use --columns)``: the first hidden name, then as many
    more as fit in ``width``."""
    head = f"{ELLIPSIS} {len(hidden)} more column{'s' if len(hidden) != 1 else ''}: "
    tail = " (use --columns)"
    named = [hidden[0]]
    for index, name in enumerate(hidden[1:], start=2):
        more = [ELLIPSIS] if index < len(hidden) else []
        if len(head + ", ".join(named + [name] + more) + tail) > width:
            break
        named.append(name)
    if len(named) < len(hidden):
        named.append(ELLIPSIS)
    return head + ", ".join(named) + tail


def plain_value(value: Any) -> str:
    """One value on a line of its own: NULL as an empty line, floats in full, newlines as
    ``\\n`` so that each value stays one line."""
    if value is None:
        return ""
    if isinstance(value, (bytes, bytearray)):
        return f"<{len(value)} bytes>"
    return str(value).replace("\r\n", "\\n").replace("\n", "\\n")


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
