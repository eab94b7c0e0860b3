"""One self-contained HTML report of a database: ``xt report DB`` and ``Reader.report(path)``.

The file needs nothing at view time: the style and the table-sorting script are inline and
every chart is an inline SVG drawn by matplotlib. Without matplotlib the report still holds
every table and says that charts need it (``pip install matplotlib``, or the `report` extra).

Sections: the tables and their row counts; the runs with their status and duration; a summary
per metric (last, min, max, mean per run); learning curves; failures (rows whose ``error``
is set, failed experiments of a ``run_multiple`` experiments table); the environment when it
was recorded (``Tracker(log_environment=True)`` or ``git_root=``).
"""

from __future__ import annotations

import datetime
import html
import io
import math
import os
import re
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional, Tuple

from xetrack_c import _core

if TYPE_CHECKING:
    import pandas

# Columns every tracker writes, and those that describe a row rather than measure something.
_RESERVED = {"track_id", "timestamp", "error", "function_name", "args", "kwargs",
             "experiment_id", "status", "tags", "kind", "target", "fingerprint", "name",
             "description", "script_args", "attempts", "duration", "error_type",
             "function_result"}
# Columns a learning curve is drawn against, in order of preference.
STEP_COLUMNS = ("step", "epoch", "iteration", "iter", "global_step", "batch")
# Columns the environment section shows (Tracker(log_environment=True), git_root=).
ENVIRONMENT_PREFIX = "env_"
GIT_COLUMN = "git_commit_hash"
# Failures listed per table; a batch where everything failed needs only the first few.
MAX_FAILURES = 200
# The tables where logged objects are kept (see docs/tracker.md), not results to report.
ASSET_TABLES = ("assets", "keys", "counts")
# Charts per table: past that a report is long to scroll and heavy to load.
MAX_CHARTS = 8
# Characters of an error shown in a cell (a traceback's end is in the database).
_CELL_LIMIT = 2000

_STYLE = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;margin:0;color:#1f2328;
background:#f6f8fa}
header{background:#24292f;color:#fff;padding:18px 32px}header h1{margin:0;font-size:22px}
header p{margin:4px 0 0;color:#c9d1d9}main{padding:8px 32px 40px;max-width:1400px}
nav a{color:#c9d1d9;margin-right:14px}section{background:#fff;border:1px solid #d0d7de;
border-radius:6px;padding:12px 18px;margin:16px 0}h2{margin:4px 0 10px;font-size:18px}
h3{font-size:15px;margin:14px 0 6px}.scroll{overflow-x:auto}
table{border-collapse:collapse;font-size:13px;margin:4px 0 10px}
th,td{border:1px solid #d0d7de;padding:3px 8px;text-align:left;vertical-align:top}
th{background:#f6f8fa;cursor:pointer;user-select:none;white-space:nowrap}
th.asc:after{content:" \\25b2"}th.desc:after{content:" \\25bc"}
td.num{text-align:right;font-variant-numeric:tabular-nums}
.failed{color:#cf222e;font-weight:600}.ok{color:#1a7f37}.note{color:#57606a}
pre{white-space:pre-wrap;margin:0;max-height:16em;overflow:auto;font-size:12px}
.charts{display:flex;flex-wrap:wrap;gap:12px}.chart svg{width:560px;height:auto}
"""

# Click a header to sort its table; numbers sort as numbers, empty cells last.
_SCRIPT = """
document.querySelectorAll("table.sortable th").forEach(function(th){
 th.addEventListener("click",function(){
  var table=th.closest("table"),body=table.tBodies[0],i=th.cellIndex;
  var asc=!th.classList.contains("asc");
  table.querySelectorAll("th").forEach(function(h){h.classList.remove("asc","desc")});
  th.classList.add(asc?"asc":"desc");
  var rows=Array.prototype.slice.call(body.rows);
  rows.sort(function(a,b){
   var x=a.cells[i].getAttribute("data-v")||a.cells[i].textContent,
       y=b.cells[i].getAttribute("data-v")||b.cells[i].textContent;
   if(x===""||y===""){return x===y?0:(x===""?1:-1)}
   var p=parseFloat(x),q=parseFloat(y);
   var c=(!isNaN(p)&&!isNaN(q)&&isFinite(x)&&isFinite(y))?p-q:x.localeCompare(y);
   return asc?c:-c});
  rows.forEach(function(r){body.appendChild(r)})})});
"""


def format_value(value: Any, digits: int = 6) -> str:
    """A cell's text: floats to ``digits`` significant digits, NaN and None as empty."""
    if value is None:
        return ""
    if isinstance(value, float):
        return "" if math.isnan(value) else format(value, f".{digits}g")
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):  # numpy scalars
        return format_value(value.item(), digits)
    if isinstance(value, (bytes, bytearray)):
        return f"<{len(value)} bytes>"
    return str(value)


def html_table(frame: "pandas.DataFrame", table_id: str = "") -> str:
    """``frame`` as a sortable HTML table inside a horizontal scroll container."""
    import pandas

    ident = f' id="{html.escape(table_id)}"' if table_id else ""
    numeric = {name for name in frame.columns
               if pandas.api.types.is_numeric_dtype(frame[name])
               and not pandas.api.types.is_bool_dtype(frame[name])}
    head = "".join(f"<th>{html.escape(str(name))}</th>" for name in frame.columns)
    rows = []
    for record in frame.itertuples(index=False, name=None):
        cells = []
        for name, value in zip(frame.columns, record, strict=True):
            text = format_value(value)
            if name in numeric:
                full = format_value(value, 17)  # what the sort script compares
                cells.append(f'<td class="num" data-v="{html.escape(full)}">'
                             f"{html.escape(text)}</td>")
            elif name in ("error", "errors") and text:
                cells.append(f"<td><pre>{html.escape(text[:_CELL_LIMIT])}</pre></td>")
            elif name == "status":
                css = "ok" if text in ("ok", "completed") else "failed" if text else ""
                cells.append(f'<td class="{css}">{html.escape(text)}</td>')
            else:
                cells.append(f"<td>{html.escape(text)}</td>")
        rows.append("<tr>" + "".join(cells) + "</tr>")
    return (f'<div class="scroll"><table class="sortable"{ident}><thead><tr>{head}</tr></thead>'
            f"<tbody>{''.join(rows)}</tbody></table></div>")


# ---------------------------------------------------------------------- the report's data layer
def _table_names(db: str) -> List[str]:
    """The tables of ``db`` in creation order, less the asset store's and the params record
    (``xetrack_c.param_record``)."""
    from xetrack_c.param_record import PARAMS_TABLE

    _, rows = _core.read_rows(db, "SELECT name FROM sqlite_master WHERE type = 'table' AND "
                                  "name NOT LIKE 'sqlite_%' ORDER BY rowid", ())
    names = [name for (name,) in rows if name != PARAMS_TABLE]
    store = set(ASSET_TABLES) if "assets" in names else set()
    return [name for name in names if name not in store]


def run_key(frame: "pandas.DataFrame") -> Optional[str]:
    """The column that names a run: ``experiment_id`` in the tables of ``run_multiple`` (its
    experiments share the batch's track_id), else ``track_id``; None when there is neither."""
    if "experiment_id" in frame.columns and frame["experiment_id"].notna().any():
        return "experiment_id"
    return "track_id" if "track_id" in frame.columns else None


def _is_experiments(frame: "pandas.DataFrame") -> bool:
    """Whether ``frame`` is a ``run_multiple`` experiments table (one row per attempt)."""
    return {"experiment_id", "status"} <= set(frame.columns)


def _step_column(frame: "pandas.DataFrame") -> Optional[str]:
    """The first numeric column of :data:`STEP_COLUMNS` in ``frame``, if any."""
    import pandas

    return next((name for name in STEP_COLUMNS if name in frame.columns
                 and pandas.api.types.is_numeric_dtype(frame[name])
                 and not pandas.api.types.is_bool_dtype(frame[name])), None)


def _split_columns(frame: "pandas.DataFrame") -> Tuple[List[str], List[str]]:
    """The report's own split of a table's columns into (params, metrics).

    Metrics are numeric columns that change within a run; when no column does (one row per
    run), every numeric column is one. Params are the other columns that hold one value per
    run. Step columns, the environment and the columns every tracker writes are neither. An
    experiments table has no metrics: its rows (config and results) are shown whole.
    """
    import pandas

    key = run_key(frame)
    skip = set(_RESERVED) | set(STEP_COLUMNS) | {GIT_COLUMN}
    names = [name for name in frame.columns
             if name not in skip and not str(name).startswith(ENVIRONMENT_PREFIX)]
    numeric = [name for name in names if pandas.api.types.is_numeric_dtype(frame[name])
               and not pandas.api.types.is_bool_dtype(frame[name])]
    if _is_experiments(frame):
        return names, []
    if key is not None and len(frame):
        varying = frame.groupby(key, sort=False)[numeric].nunique(dropna=True).max()
        metrics = [name for name in numeric if varying[name] > 1]
    else:
        metrics = []
    if not metrics:
        metrics = numeric
    params = [name for name in names if name not in metrics]
    if key is not None and len(frame):
        per_run = frame.groupby(key, sort=False)[params].nunique(dropna=True).max()
        params = [name for name in params if per_run[name] <= 1]
    return params, metrics


def _runs_table(frame: "pandas.DataFrame") -> "pandas.DataFrame":
    """The report's own table of runs: one row per run (see :func:`run_key`) with its start,
    end, duration in seconds, row count, status and params, in order of start. An
    experiment's duration and status are those of its last attempt."""
    import pandas

    params, _ = _split_columns(frame)
    key = run_key(frame)
    when = pandas.to_datetime(frame["timestamp"], errors="coerce")
    grouped = frame.assign(_when=when).groupby(key, sort=False)
    runs = pandas.DataFrame({
        "start": grouped["_when"].min(), "end": grouped["_when"].max(),
        "rows": grouped.size(),
    })
    if _is_experiments(frame) and "name" in frame.columns:
        runs.insert(0, "name", grouped["name"].last())
    runs["duration_s"] = (runs["end"] - runs["start"]).dt.total_seconds()
    if _is_experiments(frame):
        runs["status"] = grouped["status"].last()
        if "duration" in frame.columns:
            runs["duration_s"] = grouped["duration"].last()
    elif "status" in frame.columns:
        runs["status"] = grouped["status"].agg(
            lambda values: ", ".join(f"{count} {status}" for status, count
                                     in values.value_counts().items()))
    elif "error" in frame.columns:
        errors = grouped["error"].agg(lambda values: int((values.fillna("") != "").sum()))
        runs["status"] = ["ok" if count == 0 else f"failed ({count} error{'s' * (count > 1)})"
                          for count in errors]
    else:
        runs["status"] = "ok"
    for name in params:
        runs[name] = grouped[name].first()
    runs["start"] = runs["start"].dt.strftime("%Y-%m-%d %H:%M:%S")
    runs["end"] = runs["end"].dt.strftime("%Y-%m-%d %H:%M:%S")
    return runs.sort_values("start").reset_index()


def _metric_summary(frame: "pandas.DataFrame", metric: str) -> "pandas.DataFrame":
    """The report's own summary of one metric: per run its last, min, max and mean value and
    how many rows set it."""
    key = run_key(frame)
    values = frame[[key, metric]].dropna()
    grouped = values.groupby(key, sort=False)[metric]
    summary = grouped.agg(["last", "min", "max", "mean", "count"])
    return summary.sort_values("last", ascending=False).reset_index()


# ---------------------------------------------------------------------------------- the charts
def has_matplotlib() -> bool:
    """Whether matplotlib can be imported."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def curve_svg(frame: "pandas.DataFrame", metric: str, step: Optional[str]) -> str:
    """An inline SVG of ``metric`` against ``step`` (else the row's position in its run),
    one line per run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as pyplot

    from xetrack_c.cli.plot import draw_lines

    series: Dict[str, List[Tuple[float, float]]] = {}
    for run, rows in frame.groupby(run_key(frame), sort=False):
        rows = rows[rows[metric].notna()]
        if step:
            rows = rows[rows[step].notna()]
        xs = rows[step].tolist() if step else list(range(1, len(rows) + 1))
        series[str(run)] = sorted((float(x), float(y))
                                  for x, y in zip(xs, rows[metric].tolist(), strict=True))
    figure, axes = pyplot.subplots(figsize=(6.4, 3.6))
    draw_lines(axes, series, step or "row in run", metric, metric, run_key(frame) or "run")
    figure.tight_layout()
    buffer = io.StringIO()
    with matplotlib.rc_context({"svg.fonttype": "none"}):  # text as text: small files
        figure.savefig(buffer, format="svg", metadata={"Date": None})
    pyplot.close(figure)
    return inline_svg(buffer.getvalue())


def inline_svg(svg: str) -> str:
    """matplotlib's SVG made fit for inside HTML: no XML prolog or DOCTYPE, no metadata
    block, and no namespace declarations (the HTML parser puts ``<svg>`` and ``xlink:href``
    in their namespaces itself), so the file holds no URL at all."""
    svg = svg[svg.index("<svg"):]
    start, end = svg.find("<metadata>"), svg.find("</metadata>")
    if start >= 0 and end > start:
        svg = svg[:start] + svg[end + len("</metadata>"):]
    return re.sub(r'\s+xmlns(:\w+)?="[^"]*"', "", svg, count=0)


# ------------------------------------------------------------------------------ the sections
def _section(anchor: str, title: str, body: str) -> str:
    return f'<section id="{anchor}"><h2>{html.escape(title)}</h2>{body}</section>'


def _tables_section(frames: Dict[str, "pandas.DataFrame"]) -> str:
    import pandas

    listing = pandas.DataFrame({
        "table": list(frames), "rows": [len(f) for f in frames.values()],
        "columns": [len(f.columns) for f in frames.values()],
        "runs": [f[run_key(f)].nunique() if run_key(f) else None for f in frames.values()]})
    return _section("tables", "Tables", html_table(listing, "tables-list"))


def _runs_section(frames: Dict[str, "pandas.DataFrame"]) -> str:
    parts = []
    for table, frame in frames.items():
        if run_key(frame) and "timestamp" in frame.columns and len(frame):
            parts.append(f"<h3>{html.escape(table)}</h3>"
                         + html_table(_runs_table(frame), f"runs-{table}"))
    return _section("runs", "Runs", "".join(parts) or '<p class="note">No runs.</p>')


def _summary_section(frames: Dict[str, "pandas.DataFrame"]) -> str:
    parts = []
    for table, frame in frames.items():
        if run_key(frame) is None:
            continue
        for metric in _split_columns(frame)[1]:
            parts.append(f"<h3>{html.escape(table)}: {html.escape(metric)}</h3>"
                         + html_table(_metric_summary(frame, metric),
                                      f"summary-{table}-{metric}"))
    return _section("summary", "Metrics", "".join(parts) or '<p class="note">No metrics.</p>')


def _curves_section(frames: Dict[str, "pandas.DataFrame"]) -> str:
    if not has_matplotlib():
        return _section("curves", "Learning curves",
                        '<p class="note">Charts need matplotlib: '
                        "<code>pip install matplotlib</code> (the <code>report</code> extra of "
                        "xetrack_c).</p>")
    parts = []
    for table, frame in frames.items():
        if run_key(frame) is None:
            continue
        step = _step_column(frame)
        counts = frame.groupby(run_key(frame), sort=False).count()
        metrics = [m for m in _split_columns(frame)[1] if counts[m].max() > 1]
        if not metrics:
            continue
        against = f"against {step}" if step else "against the row's position in its run"
        charts = "".join(f'<div class="chart">{curve_svg(frame, metric, step)}</div>'
                         for metric in metrics[:MAX_CHARTS])
        parts.append(f"<h3>{html.escape(table)} ({html.escape(against)})</h3>"
                     f'<div class="charts">{charts}</div>')
    return _section("curves", "Learning curves",
                    "".join(parts) or '<p class="note">No run has more than one value of a '
                                    "metric.</p>")


def _failures_section(frames: Dict[str, "pandas.DataFrame"]) -> str:
    parts = []
    for table, frame in frames.items():
        if "error" not in frame.columns:
            continue
        failed = frame[frame["error"].fillna("").astype(str) != ""]
        if "status" in frame.columns:  # an experiments table: its failures have a status
            failed = frame[frame["status"].isin(["failed", "timeout"])
                           | (frame["error"].fillna("").astype(str) != "")]
        if len(failed):
            keep = [c for c in ("track_id", "timestamp", "experiment_id", "name", "status",
                                "function_name", "args", "error") if c in failed.columns]
            shown = ("" if len(failed) <= MAX_FAILURES else
                     f' <span class="note">(the first {MAX_FAILURES})</span>')
            parts.append(f"<h3>{html.escape(table)}: {len(failed)}{shown}</h3>"
                         + html_table(failed[keep].head(MAX_FAILURES), f"failures-{table}"))
    return _section("failures", "Failures", "".join(parts) or '<p class="ok">None.</p>')


def _environment_section(frames: Dict[str, "pandas.DataFrame"]) -> str:
    parts = []
    for table, frame in frames.items():
        names = [c for c in frame.columns if c == GIT_COLUMN
                 or str(c).startswith(ENVIRONMENT_PREFIX)]
        if names and "track_id" in frame.columns:
            recorded = frame[["track_id", *names]].dropna(how="all", subset=names)
            if len(recorded):
                parts.append(f"<h3>{html.escape(table)}</h3>" + html_table(
                    recorded.drop_duplicates().reset_index(drop=True), f"environment-{table}"))
    body = "".join(parts) or ('<p class="note">Not recorded: use '
                              "<code>Tracker(log_environment=True)</code>.</p>")
    return _section("environment", "Environment", body)


# Reads one table of the file as a DataFrame (``Reader(db, table=name).to_df()``).
ReadTable = Callable[[str], "pandas.DataFrame"]


def build_report(db: str, read_table: ReadTable, title: Optional[str] = None) -> str:
    """The report of every table of ``db`` as one HTML document."""
    frames = {table: read_table(table) for table in _table_names(db)}
    title = title or os.path.basename(db)
    made = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
    sections = [_tables_section(frames), _runs_section(frames), _summary_section(frames),
                _curves_section(frames), _failures_section(frames),
                _environment_section(frames)]
    links = "".join(f'<a href="#{anchor}">{label}</a>' for anchor, label in (
        ("tables", "Tables"), ("runs", "Runs"), ("summary", "Metrics"),
        ("curves", "Learning curves"), ("failures", "Failures"),
        ("environment", "Environment")))
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head><body>"
            f"<header><h1>{html.escape(title)}</h1><p>{html.escape(db)}, "
            f"{sum(len(f) for f in frames.values()):,} rows in {len(frames)} tables, "
            f"made {made}</p><nav>{links}</nav></header><main>{''.join(sections)}</main>"
            f"<script>{_SCRIPT}</script></body></html>\n")


def write_report(db: str, path: str, read_table: ReadTable, title: Optional[str] = None) -> str:
    """Write the report of ``db`` to ``path`` (one self-contained HTML file), reading each
    table with ``read_table``; returns ``path``."""
    text = build_report(os.fspath(db), read_table, title)
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(text)
    return path

