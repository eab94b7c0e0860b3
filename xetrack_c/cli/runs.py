"""``xt runs DB``: a summary of the experiments table that ``run_multiple(db=...)`` writes
(with ``--table`` naming a tracking table instead, one row per run with its params and
metrics: see :mod:`xetrack_c.cli.compare`).

One row per experiment attempt, with ``experiment_id``, ``name``, ``status`` (completed,
failed, cancelled, timeout, skipped), ``duration`` (seconds), ``seed``, ``error`` and the
config columns.  An experiment that was run again (``resume=True``, retries) counts once,
with its latest row.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence, Tuple

from xetrack_c.cli import db as db_access
from xetrack_c.cli.render import json_text, json_value, markdown_table

STATUSES = ("completed", "failed", "cancelled", "timeout", "skipped")
PROBLEM_STATUSES = ("failed", "timeout", "cancelled")
_ERROR_WIDTH = 160


def error_summary(error: Any) -> str:
    """The most telling line of an error text: the exception line of a traceback, else the
    first non-empty line; shortened to fit a table cell."""
    if error is None:
        return ""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    if not lines:
        return ""
    traceback_seen = any(line.startswith("Traceback (most recent call last)") for line in lines)
    line = lines[-1] if traceback_seen else lines[0]
    return line if len(line) <= _ERROR_WIDTH else line[: _ERROR_WIDTH - 3] + "..."


def latest_attempts(names: Sequence[str], rows: Sequence[Tuple[Any, ...]]) -> List[Dict[str, Any]]:
    """Rows as dicts in timestamp order, keeping only the latest row of each experiment_id."""
    records = [dict(zip(names, row, strict=False)) for row in db_access.sort_by_timestamp(names, list(rows))]
    if "experiment_id" not in names:
        return records
    latest: Dict[Any, Dict[str, Any]] = {}
    anonymous: List[Dict[str, Any]] = []
    for record in records:
        key = record["experiment_id"]
        if key is None:
            anonymous.append(record)
        else:
            latest.pop(key, None)  # re-insert so the order follows the latest attempt
            latest[key] = record
    return list(latest.values()) + anonymous


def _duration_stats(durations: List[float]) -> Dict[str, Optional[float]]:
    if not durations:
        return {"total_s": None, "mean_s": None, "min_s": None, "max_s": None}
    total = sum(durations)
    return {"total_s": total, "mean_s": total / len(durations),
            "min_s": min(durations), "max_s": max(durations)}


def summarize(records: List[Dict[str, Any]]) -> Dict[str, Any]:
    """Counts and durations by status, plus the failed, timed-out and cancelled runs."""
    by_status: Dict[str, List[Dict[str, Any]]] = {}
    for record in records:
        by_status.setdefault(str(record.get("status")), []).append(record)
    order = [s for s in STATUSES if s in by_status] + sorted(s for s in by_status
                                                             if s not in STATUSES)
    statuses = []
    for status in order:
        durations = [float(r["duration"]) for r in by_status[status]
                     if isinstance(r.get("duration"), (int, float))]
        statuses.append({"status": status, "count": len(by_status[status]),
                         **_duration_stats(durations)})
    all_durations = [float(r["duration"]) for r in records
                     if isinstance(r.get("duration"), (int, float))]
    problems = [r for r in records if r.get("status") in PROBLEM_STATUSES]
    return {"experiments": len(records), "statuses": statuses,
            "durations": _duration_stats(all_durations), "failures": problems}


def _seconds(value: Optional[float]) -> Optional[float]:
    return None if value is None else round(value, 3)


def render(db: str, table: str, summary: Dict[str, Any], full: bool) -> str:
    """The summary as Markdown tables."""
    total = summary["experiments"]
    out = [f"Experiments in {db} table '{table}': {total}"]
    if not total:
        return out[0]
    durations = summary["durations"]
    if durations["total_s"] is not None:
        out[0] += (f" (total {durations['total_s']:.3f} s, mean {durations['mean_s']:.3f} s, "
                   f"max {durations['max_s']:.3f} s)")
    names = ["status", "count", "total_s", "mean_s", "min_s", "max_s"]
    rows = [[s["status"], s["count"]] + [_seconds(s[k]) for k in names[2:]]
            for s in summary["statuses"]]
    out += ["", markdown_table(names, rows)]
    failures = summary["failures"]
    if failures:
        out += ["", f"Failures ({len(failures)}):", ""]
        names = ["experiment_id", "name", "status", "duration", "error"]
        rows = [[r.get("experiment_id"), r.get("name"), r.get("status"),
                 _seconds(r["duration"]) if isinstance(r.get("duration"), (int, float))
                 else None, error_summary(r.get("error"))] for r in failures]
        out.append(markdown_table(names, rows))
        if full:
            for r in failures:
                if r.get("error"):
                    out += ["", f"--- {r.get('experiment_id')} ({r.get('name')}): "
                                f"{r.get('status')}", str(r["error"]).rstrip()]
    return "\n".join(out)


def runs(db: str, table: str, as_json: bool, full: bool) -> str:
    """The text ``xt runs`` prints."""
    present = db_access.columns(db, table)
    if "status" not in present and "track_id" in present:  # a tracking table
        from xetrack_c.cli.compare import tracking_runs

        return tracking_runs(db, table, as_json)
    db_access.require_column("status", present, table)
    names, rows = db_access.read(db, f"SELECT * FROM {db_access.quote(table)}")
    summary = summarize(latest_attempts(names, rows))
    if as_json:
        summary["failures"] = [{k: json_value(v) for k, v in r.items()}
                               for r in summary["failures"]]
        return json_text({"db": db, "table": table, **summary})
    return render(db, table, summary, full)
