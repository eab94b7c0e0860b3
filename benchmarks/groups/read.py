"""read: ``to_df()`` of the whole table at 10^4, 10^5 and 10^6 rows x 12 columns (10 keys,
track_id, timestamp).

All contenders read the same file (written once per size, by the C ceiling or, without it, by
Python), so after the first repetition it is in the page cache for everybody. The limit is the
C scan floor: every cell of every row touched once with one typed SQLite call, no Python
(benchmarks/c/ceiling.c). Also shown: that scan plus building the DataFrame from ready-made
NumPy arrays. Whether pyarrow is importable is stated in the table: without it, text columns
are Python str objects, as they are for xetrack and ``read_sql_query``.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks import data
from benchmarks.context import Context
from benchmarks.env import subprocess_env
from benchmarks.harness import Result, Skip, derived, measure, note, prepare
from benchmarks.peers import peer, peer_version, xetrack_c_attr
from benchmarks.report import Limit, Row, Table, growth_note, per_op

GROUP = "read"
QUERY = 'SELECT * FROM "default"'


def build_database(ctx: Context, path: Path, nrows: int) -> str:
    """Write the file once; returns which writer made it."""
    if ctx.ceiling.binary is not None:
        ctx.ceiling.insert(path, nrows, 10)
        return "C ceiling"
    data.fill_database(path, nrows, 10)
    return "Python sqlite3"


def column_arrays(path: Path) -> dict[str, Any]:
    """The table as typed NumPy arrays (int64, float64, object), made once and not timed."""
    import numpy as np

    conn = sqlite3.connect(str(path))
    try:
        cursor = conn.execute(QUERY)
        names = [d[0] for d in cursor.description]
        columns = list(zip(*cursor.fetchall(), strict=True))
    finally:
        conn.close()
    arrays = {}
    for name, values in zip(names, columns, strict=True):
        sample = values[0] if values else None
        dtype = np.int64 if isinstance(sample, int) else np.float64 if isinstance(sample, float) else object
        arrays[name] = np.array(values, dtype=dtype)
    return arrays


def xetrack_c_to_df(db: Path, threads: int = 1) -> Callable[[], Callable[[Path], float]]:
    """Build a run of ``xetrack_c.Reader(db).to_df(threads=threads)``."""
    def build() -> Callable[[Path], float]:
        reader_class = xetrack_c_attr("Reader")

        def run(_: Path) -> float:
            start = time.perf_counter()
            frame = reader_class(str(db)).to_df(threads=threads)
            elapsed = time.perf_counter() - start
            del frame
            return elapsed
        return run
    return build


def xetrack_to_df(db: Path) -> Callable[[], Callable[[Path], float]]:
    """Build a run of xetrack 0.7's ``Reader(db).to_df()``."""
    def build() -> Callable[[Path], float]:
        from importlib import import_module

        peer("xetrack")
        reader_class = import_module("xetrack.reader").Reader

        def run(_: Path) -> float:
            start = time.perf_counter()
            reader = reader_class(str(db))
            frame = reader.to_df()
            elapsed = time.perf_counter() - start
            reader.engine.close()
            del frame
            return elapsed
        return run
    return build


def pandas_read_sql(db: Path) -> Callable[[], Callable[[Path], float]]:
    """Build a run of ``pandas.read_sql_query`` on a fresh sqlite3 connection."""
    def build() -> Callable[[Path], float]:
        pandas = peer("pandas")

        def run(_: Path) -> float:
            start = time.perf_counter()
            conn = sqlite3.connect(str(db))
            frame = pandas.read_sql_query(QUERY, conn)
            elapsed = time.perf_counter() - start
            conn.close()
            del frame
            return elapsed
        return run
    return build


def c_scan(ctx: Context, db: Path, threads: int = 1) -> Callable[[], Callable[[Path], float]]:
    """Build a run of the C scan (on ``threads`` threads, rowid ranges)."""
    def build() -> Callable[[Path], float]:
        if ctx.ceiling.binary is None:
            raise Skip(f"C ceiling unavailable: {ctx.ceiling.reason}")
        return lambda _: ctx.ceiling.scan(db, threads)
    return build


def cpus() -> int:
    """The CPUs this process may run on: the threads to_df uses by default."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


# The smallest table to_df reads on several threads (two parts of 65,536 rows).
PARALLEL_MIN_ROWS = 131_072


def dataframe_build(arrays: dict[str, Any]) -> Callable[[], Callable[[Path], float]]:
    """Build a run of ``pandas.DataFrame`` from ready NumPy arrays."""
    def build() -> Callable[[Path], float]:
        pandas = peer("pandas")

        def run(_: Path) -> float:
            start = time.perf_counter()
            frame = pandas.DataFrame(arrays)
            elapsed = time.perf_counter() - start
            del frame
            return elapsed
        return run
    return build


def combined(label: str, first: Result, second: Result) -> Result:
    """Sum of two results, repetition by repetition."""
    if not (first.ok and second.ok):
        return Result(label=label, ops=1, status=first.status if not first.ok else second.status,
                      reason=first.reason or second.reason)
    return derived(label, 1, [a + b for a, b in zip(first.seconds, second.seconds, strict=True)])


def pyarrow_state() -> str:
    """"with pyarrow X" or "without pyarrow", for the table's notes."""
    import importlib.util

    if importlib.util.find_spec("pyarrow") is None:
        return "without pyarrow (text columns are Python str objects for every contender)"
    return f"with pyarrow {peer_version('pyarrow')} (xetrack_c hands text to pandas as Arrow buffers)"


def peak_memory(who: str, db: Path) -> tuple[float, str]:
    """MiB the process's peak rose above its resident size before one full load by ``who``
    (benchmarks/dfprobe.py in a fresh process), or NaN and why there is no figure."""
    command = [sys.executable, "-m", "benchmarks.dfprobe", who, str(db)]
    if os.path.exists("/bin/sh"):
        # As for the async-memory probe: a child forked from a small shell, so that ru_maxrss
        # is the probe's own and not inherited from this (large) process.
        command = ["/bin/sh", "-c", '"$0" "$@"; exit $?', *command]
    out = subprocess.run(command, capture_output=True, text=True, env=subprocess_env(),
                         check=False, timeout=600)
    if out.returncode != 0:
        return float("nan"), (out.stderr.strip().splitlines() or ["no output"])[-1]
    probe = json.loads(out.stdout.strip().splitlines()[-1])
    return (probe["peak_kib"] - probe["rss_before_kib"]) / 1024.0, ""


def _memory_table(ctx: Context, figures: dict[int, dict[str, tuple[float, str]]]) -> None:
    """The peak-memory table of to_df, one line per size."""
    table = Table(
        "read: peak memory of to_df()",
        "MiB the peak resident size rose above the size before the call, one load in a fresh "
        "process per reader and size (ru_maxrss after it minus VmRSS before it, pandas and the "
        "reader already imported); one measurement each, not a median.",
        mode="one thread, the same file as above",
    )
    readers = [("xetrack_c", "xetrack_c Reader.to_df()"),
               ("xetrack", f"xetrack {peer_version('xetrack')} Reader.to_df()"),
               ("pandas", "pandas.read_sql_query")]
    lines = ["| rows | " + " | ".join(name for _, name in readers) + " |",
             "|---" * (len(readers) + 1) + "|"]
    for nrows, by_who in figures.items():
        cells = []
        for who, _ in readers:
            mib, why = by_who[who]
            cells.append(f"{mib:.1f} MiB" if why == "" else f"failed: {why}")
        lines.append(f"| {nrows:,} | " + " | ".join(cells) + " |")
    table.description += "\n\n" + "\n".join(lines)
    ctx.emit(table)


def run(ctx: Context) -> None:
    """Measure and print the read table."""
    sizes = [10_000, 100_000] if ctx.quick else [10_000, 100_000, 1_000_000]
    version = peer_version("xetrack")
    table = Table(
        "read: to_df() of the whole table, 12 columns (10 keys, track_id, timestamp)",
        "Time per call, median [min–max]; the same file for everybody, warm page cache; "
        "one thread, but for the rows that say how many (a table of 131,072 rows or more "
        "is read on every CPU by default).",
        notes=["Targets at 10^6 rows, one thread: within 1.3x of the C scan floor (the limit "
               "column: 77% or more), >= 10x xetrack, >= 3x pandas.read_sql_query.",
               f"Run {pyarrow_state()}."],
    )
    curves: dict[str, list[tuple[float, Result]]] = {}
    memory: dict[int, dict[str, tuple[float, str]]] = {}
    workdir = ctx.group_dir(GROUP)
    for nrows in sizes:
        db = workdir / f"rows-{nrows}.db"
        writer = build_database(ctx, db, nrows)
        try:
            arrays = column_arrays(db)
        except ImportError as exc:
            note(f"skip: {GROUP}: DataFrame build limit: {exc}")
            arrays = {}
        threads = cpus()
        parallel = threads > 1 and nrows >= PARALLEL_MIN_ROWS
        plan = {
            "c": prepare("xetrack_c Reader.to_df()", 1, xetrack_c_to_df(db)),
            "x": prepare(f"xetrack {version} Reader.to_df()", 1, xetrack_to_df(db)),
            "pd": prepare("pandas.read_sql_query", 1, pandas_read_sql(db)),
            "scan": prepare("C scan", 1, c_scan(ctx, db)),
            "frame": prepare("DataFrame from arrays", 1, dataframe_build(arrays)),
        }
        if parallel:
            plan["cN"] = prepare(f"xetrack_c Reader.to_df(threads={threads})", 1,
                                 xetrack_c_to_df(db, threads))
            plan["scanN"] = prepare(f"C scan, {threads} threads", 1, c_scan(ctx, db, threads))
        labels = {key: entry.label for key, entry in plan.items()}
        results = measure(GROUP, list(plan.values()), ctx.reps, workdir / "runs",
                          f"{nrows:,} rows")
        r = {key: results[label] for key, label in labels.items()}
        limit = combined("C scan + DataFrame from arrays", r["scan"], r["frame"])
        table.rows.append(Row("Reader(db).to_df()", f"{nrows:,} rows", r["c"], [r["x"], r["pd"]],
                              Limit(r["scan"], "C scan floor"), display=per_op(),
                              mode="one thread each, whole table, warm page cache"))
        table.rows.append(Row("  C scan floor + DataFrame from arrays", f"{nrows:,} rows", None,
                              [limit], display=per_op(), mode="C, then NumPy arrays"))
        if parallel:
            table.rows.append(Row(f"Reader(db).to_df(threads={threads})", f"{nrows:,} rows",
                                  r["cN"], [r["c"]], Limit(r["scanN"], f"C scan floor, "
                                                           f"{threads} threads"),
                                  display=per_op(),
                                  mode=f"{threads} threads, rowid ranges, one snapshot; the "
                                       "peer is xetrack_c on one thread"))
            if r["cN"].ok and r["c"].ok and r["scanN"].ok and r["scan"].ok:
                table.notes.append(
                    f"Parallel scan at {nrows:,} rows, {threads} threads: to_df "
                    f"{r['c'].median_per_op / r['cN'].median_per_op:.2f}x its one-thread "
                    f"time; the C floor {r['scan'].median_per_op / r['scanN'].median_per_op:.2f}x "
                    f"its one-thread time; to_df on {threads} threads at "
                    f"{r['cN'].median_per_op / r['scan'].median_per_op:.2f}x the one-thread "
                    "C floor.")
        for key, name in (("c", "xetrack_c Reader.to_df()"), ("x", "xetrack 0.7 Reader.to_df()"),
                          ("pd", "pandas.read_sql_query"), ("scan", "C scan")):
            curves.setdefault(name, []).append((nrows, r[key]))
            ctx.add_scaling("read: to_df() time vs rows", name, nrows, r[key])
        memory[nrows] = {who: peak_memory(who, db) for who in ("xetrack_c", "xetrack", "pandas")}
        for path in workdir.glob(f"rows-{nrows}.db*"):
            path.unlink()
        table.notes.append(f"{nrows:,}-row file written by the {writer}.")
    for name, points in curves.items():
        table.notes.append(growth_note(name, points, "rows"))
    ctx.emit(table)
    _memory_table(ctx, memory)
