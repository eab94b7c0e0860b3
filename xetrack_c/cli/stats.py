"""``xt stats describe|top|bottom``: basic statistics of a tracking table.

``describe`` builds a pandas DataFrame (``DataFrame.describe``); ``top`` and ``bottom`` are
one SQL query each and need no pandas.
"""

from __future__ import annotations

from typing import Any, List, Optional, Tuple

from xetrack_c.cli import db as db_access
from xetrack_c.cli.render import json_records, markdown_table


def _plain(value: Any) -> Any:
    """A pandas/numpy cell as a plain Python value (NaN and NA as None)."""
    if value is None:
        return None
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and value != value:
        return None
    try:
        import pandas

        if value is pandas.NA or value is pandas.NaT:
            return None
    except ImportError:  # pragma: no cover - pandas is a dependency
        pass
    return value


def describe(db: str, table: str, columns: str, as_json: bool) -> str:
    """``DataFrame.describe()`` of the table (or of the comma-separated ``columns``), with
    the statistic's name as the first column."""
    present = db_access.columns(db, table)
    wanted: Optional[List[str]] = None
    if columns:
        wanted = [name.strip() for name in columns.split(",") if name.strip()]
        for name in wanted:
            db_access.require_column(name, present, table)
    from xetrack_c.reader import Reader

    frame = Reader(db, table=table).to_df()
    if wanted:
        frame = frame[wanted]
    if frame.shape[1] == 0:
        raise db_access.UserError(f"table {table!r} has no columns to describe")
    if len(frame) == 0:
        raise db_access.UserError(f"table {table!r} in {db!r} is empty: nothing to describe")
    stats = frame.describe()
    names = ["stat"] + [str(name) for name in stats.columns]
    rows = [[str(label)] + [_plain(value) for value in stats.loc[label].tolist()]
            for label in stats.index]
    return json_records(names, rows) if as_json else markdown_table(names, rows)


def extreme_rows(db: str, table: str, column: str, largest: bool) -> Tuple[List[str], list]:
    """The rows whose ``column`` holds the largest (or smallest) value, by timestamp."""
    present = db_access.columns(db, table)
    db_access.require_column(column, present, table)
    source, target = db_access.quote(table), db_access.quote(column)
    function = "max" if largest else "min"
    sql = f"SELECT * FROM {source} WHERE {target} = (SELECT {function}({target}) FROM {source})"
    names, rows = db_access.read(db, sql)
    return names, db_access.sort_by_timestamp(names, rows)


def top_or_bottom(db: str, table: str, column: str, largest: bool, as_json: bool) -> str:
    """The text ``xt stats top|bottom`` prints."""
    names, rows = extreme_rows(db, table, column, largest)
    return json_records(names, rows) if as_json else markdown_table(names, rows)
