"""summary: ``xt summary DB --metric acc,loss --by model --agg last,max,mean`` on 1,000,000 rows
(1,000 runs x 1,000 steps, 5 models), against the same summary in pandas (``Reader.to_df()``
then ``groupby(...).agg(["last", "max", "mean"])``), in the same interleaved loop.

Also shown: ``Reader.summary`` in-process (no interpreter start), and pandas' groupby alone
on a DataFrame already in memory (the part of the pandas route after reading).
"""

from __future__ import annotations

import os
import sqlite3
import sys
import time
from collections.abc import Callable
from pathlib import Path

from benchmarks.context import Context
from benchmarks.groups.cli import xetrack_c_xt
from benchmarks.harness import Skip, measure, prepare
from benchmarks.peers import peer, xetrack_c_attr
from benchmarks.report import Row, Table, per_op
from benchmarks.subprocs import command_series

GROUP = "summary"
METRICS = ["acc", "loss"]
AGGS = ["last", "max", "mean"]


def build_database(path: Path, nrows: int, steps: int = 1000) -> None:
    """A tracking table as a Tracker writes it: timestamp, track_id, params model and lr,
    metrics epoch, acc and loss (loss empty in one row of seven)."""
    import random

    rng = random.Random(1)
    conn = sqlite3.connect(str(path))
    conn.execute('CREATE TABLE "default" (timestamp TEXT, track_id TEXT, model TEXT, '
                 'lr REAL, epoch INTEGER, acc REAL, loss REAL)')
    rows = ((f"2026-01-01 {i // 3_600_000_000 % 24:02d}:{i // 60_000_000 % 60:02d}:"
             f"{i // 1_000_000 % 60:02d}.{i % 1_000_000:06d}", f"run-{i // steps:05d}",
             f"model-{i // steps % 5}", 0.1 ** (i // steps % 3 + 1), i % steps, rng.random(),
             rng.random() if i % 7 else None) for i in range(nrows))
    conn.executemany('INSERT INTO "default" VALUES (?, ?, ?, ?, ?, ?, ?)', rows)
    conn.commit()
    conn.close()


def reader_summary(db: Path) -> Callable[[], Callable[[Path], float]]:
    """Build a run of ``Reader(db).summary(METRICS, by="model", agg=AGGS)``."""
    def build() -> Callable[[Path], float]:
        reader_class = xetrack_c_attr("Reader")
        if not hasattr(reader_class, "summary"):
            raise Skip("xetrack_c's Reader has no summary() yet")

        def run(_: Path) -> float:
            start = time.perf_counter()
            reader_class(str(db)).summary(METRICS, by="model", agg=AGGS)
            return time.perf_counter() - start
        return run
    return build


def pandas_route(db: Path) -> Callable[[], Callable[[Path], float]]:
    """Build a run of ``Reader(db).to_df()`` plus pandas' groupby (to_df sorts by time)."""
    def build() -> Callable[[Path], float]:
        peer("pandas")
        reader_class = xetrack_c_attr("Reader")

        def run(_: Path) -> float:
            start = time.perf_counter()
            frame = reader_class(str(db)).to_df()
            frame.groupby("model")[METRICS].agg(AGGS)
            elapsed = time.perf_counter() - start
            del frame
            return elapsed
        return run
    return build


def pandas_groupby_only(db: Path) -> Callable[[], Callable[[Path], float]]:
    """Build a run of pandas' groupby alone on the table read once beforehand."""
    def build() -> Callable[[Path], float]:
        peer("pandas")
        frame = xetrack_c_attr("Reader")(str(db)).to_df()

        def run(_: Path) -> float:
            start = time.perf_counter()
            frame.groupby("model")[METRICS].agg(AGGS)
            return time.perf_counter() - start
        return run
    return build


def run(ctx: Context) -> None:
    """Measure and print the summary table."""
    nrows = ctx.pick(1_000_000, 100_000)
    workdir = ctx.group_dir(GROUP)
    db = workdir / "summary.db"
    build_database(db, nrows)
    try:
        xt = xetrack_c_xt()
    except Skip:
        xt = [sys.executable, "-m", "xetrack_c"]
    command = [*xt, "summary", str(db), "--metric", ",".join(METRICS), "--by", "model",
               "--agg", ",".join(AGGS)]
    plan = {
        "xt": prepare("xetrack_c xt summary", 1, command_series(command)),
        "reader": prepare("xetrack_c Reader.summary()", 1, reader_summary(db)),
        "pandas": prepare("Reader.to_df() + pandas groupby", 1, pandas_route(db)),
        "groupby": prepare("pandas groupby alone (frame in memory)", 1,
                           pandas_groupby_only(db)),
    }
    labels = {key: entry.label for key, entry in plan.items()}
    results = measure(GROUP, list(plan.values()), ctx.reps, workdir / "runs",
                      f"{nrows:,} rows")
    r = {key: results[label] for key, label in labels.items()}
    load = ", ".join(f"{value:.2f}" for value in os.getloadavg())
    size = f"{nrows:,} rows"
    ctx.emit(Table(
        "summary: last, max and mean of 2 metrics per model",
        "Median [min–max] over the repetitions; xt summary is the whole process (interpreter "
        "start included), the others one call in this process.",
        notes=["Target: xt summary on 1,000,000 rows in <= 1 s, with the equivalent pandas "
               "groupby (read included) in the same run.",
               f"Load average when the table was printed: {load} (the machine was shared; "
               "times are upper bounds).",
               "The summary reads 3 of the 7 columns through the C columnar reader and "
               "groups them with NumPy; pandas reads all 7 into a DataFrame first."],
        rows=[Row("xt summary", size, r["xt"], [r["pandas"]], display=per_op()),
              Row("Reader.summary()", size, r["reader"], [r["pandas"], r["groupby"]],
                  display=per_op())],
    ))
    for path in workdir.glob("summary.db*"):
        path.unlink()
