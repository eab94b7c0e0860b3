"""``xt summary``, ``xt compare`` and ``xt runs`` on a tracking table: metric summaries
per run or per group, and two runs side by side (see :mod:`xetrack_c.summary`).

Everything is computed in SQL through the C core: no pandas, a few rows of output.
"""

from __future__ import annotations

from typing import Any, Callable, List, Optional, Sequence, TypeVar

from xetrack_c import _core
from xetrack_c import summary as summaries
from xetrack_c.cli import db as db_access
from xetrack_c.cli.db import UserError
from xetrack_c.cli.render import json_records, json_text, json_value, markdown_table

T = TypeVar("T")


def names_list(text: Optional[Sequence[str]]) -> Optional[List[str]]:
    """``--metric a,b --metric c`` as ``["a", "b", "c"]``; None when not given."""
    if not text:
        return None
    names = [name.strip() for part in text for name in part.split(",") if name.strip()]
    return list(dict.fromkeys(names)) or None


def _checked(db: str, table: str, call: Callable[[], T]) -> T:
    """``call()`` with the file checked first and its errors as one-line UserErrors."""
    db_access.schema(db, table)  # a missing file or table: the usual message
    try:
        return call()
    except ValueError as exc:
        raise UserError(db_access.one_line(str(exc))) from exc
    except _core.Error as exc:
        raise UserError(db_access.one_line(str(exc))) from exc


def summary(db: str, table: str, metrics: Optional[List[str]], by: List[str],
            agg: List[str], as_json: bool) -> str:
    """The text ``xt summary`` prints: one row per group of ``by``."""
    names, rows = _checked(db, table, lambda: summaries.summary_table(db, table, metrics,
                                                                      by, agg))
    return json_records(names, rows) if as_json else markdown_table(names, rows)


def tracking_runs(db: str, table: str, as_json: bool) -> str:
    """The text ``xt runs`` prints for a tracking table: one row per run with its params
    and the last and max of each metric."""
    def collect() -> Any:
        params, metrics = summaries.classify_table(db, table)
        names, rows = summaries.runs_table(db, table, params)
        if not metrics or not rows:
            return names, rows
        snames, srows = summaries.summary_table(db, table, metrics, "track_id",
                                                ("last", "max"))
        found = {row[0]: row[1:] for row in srows}
        width = len(snames) - 1
        return names + snames[1:], [row + found.get(row[0], (None,) * width) for row in rows]

    names, rows = _checked(db, table, collect)
    if as_json:
        return json_text({"db": db, "table": table, "runs": len(rows),
                          "rows": [{k: json_value(v) for k, v in zip(names, row, strict=True)}
                                   for row in rows]})
    return f"Runs in {db} table '{table}': {len(rows)}\n\n" + markdown_table(names, rows)


def compare(db: str, table: str, run_a: str, run_b: str, as_json: bool) -> str:
    """The text ``xt compare`` prints: params side by side (differing ones marked), then
    the last and max of each metric in both runs and their differences (b - a)."""
    (pnames, prows), (mnames, mrows) = _checked(
        db, table, lambda: summaries.compare_tables(db, table, run_a, run_b))
    if as_json:
        return json_text({
            "db": db, "table": table, "run_a": run_a, "run_b": run_b,
            "params": [{k: json_value(v) for k, v in zip(pnames, row, strict=True)}
                       for row in prows],
            "metrics": [{k: json_value(v) for k, v in zip(mnames, row, strict=True)}
                        for row in mrows]})
    differing = sum(1 for row in prows if row[3])
    out = [f"Runs {run_a!r} (a) and {run_b!r} (b) in {db} table '{table}': "
           f"{differing} of {len(prows)} params differ"]
    if prows:
        out += ["", markdown_table(["param", "a", "b", "differs"],
                                   [row[:3] + ("*" if row[3] else "",) for row in prows])]
    if mrows:
        out += ["", markdown_table(mnames, mrows)]
    return "\n".join(out)
