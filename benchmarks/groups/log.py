"""log: ``Tracker.log()`` per row in each durability mode, ``log_batch``, 10 vs 200 columns,
and the memory of async logging.

Contenders write the same rows (benchmarks/data.py) into a fresh file each repetition. Every
tracker logs one untimed warm-up row first, so the columns exist and the timed rows measure the
steady state. In async mode the timed region ends with ``tracker.flush()``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from benchmarks import data
from benchmarks.context import Context
from benchmarks.env import subprocess_env
from benchmarks.harness import Result, Skip, measure, note, prepare
from benchmarks.peers import peer, peer_version, xetrack_c_attr
from benchmarks.report import Limit, Row, Table, growth_note, human

GROUP = "log"
Rows = Sequence[dict[str, Any]]


def _xetrack_c_tracker(path: Path, durability: str) -> Any:
    tracker_class = xetrack_c_attr("Tracker")
    if durability == "commit":
        return tracker_class(str(path))
    return tracker_class(str(path), durability=durability)


def xetrack_c_log(durability: str, rows: Rows, ncols: int) -> Callable[[], Callable[[Path], float]]:
    """Build a run that logs ``rows`` one by one with xetrack_c in ``durability`` mode."""
    def build() -> Callable[[Path], float]:
        xetrack_c_attr("Tracker")

        def run(workdir: Path) -> float:
            tracker = _xetrack_c_tracker(workdir / "c.db", durability)
            try:
                tracker.log(data.make_row(len(rows), ncols))
                if durability == "async":
                    tracker.flush()
                log = tracker.log
                start = time.perf_counter()
                for row in rows:
                    log(row)
                if durability == "async":
                    tracker.flush()
                return time.perf_counter() - start
            finally:
                tracker.close()
        return run
    return build


def xetrack_c_log_batch(rows: Rows, ncols: int) -> Callable[[], Callable[[Path], float]]:
    """Build a run that logs ``rows`` with one xetrack_c ``log_batch`` call."""
    def build() -> Callable[[Path], float]:
        xetrack_c_attr("Tracker")

        def run(workdir: Path) -> float:
            tracker = _xetrack_c_tracker(workdir / "c.db", "commit")
            try:
                tracker.log(data.make_row(len(rows), ncols))
                start = time.perf_counter()
                tracker.log_batch(list(rows))
                return time.perf_counter() - start
            finally:
                tracker.close()
        return run
    return build


def xetrack_log(rows: Rows, ncols: int, batch: bool = False) -> Callable[[], Callable[[Path], float]]:
    """Build a run that logs ``rows`` with xetrack 0.7, one by one or with ``log_batch``."""
    def build() -> Callable[[Path], float]:
        xetrack = peer("xetrack")

        def run(workdir: Path) -> float:
            tracker = xetrack.Tracker(db=str(workdir / "x.db"), warnings=False)
            try:
                tracker.log(data.make_row(len(rows), ncols))
                start = time.perf_counter()
                if batch:
                    tracker.log_batch(list(rows))
                else:
                    log = tracker.log
                    for row in rows:
                        log(row)
                return time.perf_counter() - start
            finally:
                tracker.engine.close()
        return run
    return build


def python_ceiling(rows: Rows, ncols: int, per_row: bool = False,
                   synchronous: str = "NORMAL") -> Callable[[], Callable[[Path], float]]:
    """Build a run of Python's sqlite3: executemany in one transaction, or commit per row."""
    def build() -> Callable[[Path], float]:
        def run(workdir: Path) -> float:
            if per_row:
                return data.execute_per_row_seconds(workdir / "p.db", rows, ncols, synchronous)
            return data.executemany_seconds(workdir / "p.db", rows, ncols)
        return run
    return build


def c_ceiling(ctx: Context, nrows: int, ncols: int, per_row: bool = False,
              synchronous: str = "normal") -> Callable[[], Callable[[Path], float]]:
    """Build a run of the C ceiling inserting the same rows."""
    def build() -> Callable[[Path], float]:
        if ctx.ceiling.binary is None:
            raise Skip(f"C ceiling unavailable: {ctx.ceiling.reason}")

        def run(workdir: Path) -> float:
            # xetrack_c checkpoints the WAL on a thread of its own, off the logging thread; the
            # floor is the write path alone, without SQLite's checkpoint inside its commits.
            return ctx.ceiling.insert(workdir / "ceiling.db", nrows, ncols, synchronous, per_row,
                                      checkpoint=False)
        return run
    return build


def run(ctx: Context) -> None:
    """Measure and print the log tables."""
    sizes = {
        "commit": ctx.pick(5_000, 1_000),
        "fsync": ctx.pick(200, 50),
        "fast": ctx.pick(100_000, 20_000),
        "xetrack": ctx.pick(300, 100),
        "xetrack_batch": ctx.pick(20_000, 2_000),
        "wide": ctx.pick(10_000, 2_000),
        "wide_commit": ctx.pick(2_000, 300),
        "xetrack_wide": ctx.pick(100, 30),
    }
    narrow = data.make_rows(max(sizes["fast"], sizes["commit"]), 10)
    wide = data.make_rows(sizes["wide"], 200)
    version = peer_version("xetrack")
    n = sizes

    def rows10(count: int) -> Rows:
        return narrow[:count]

    def rows200(count: int) -> Rows:
        return wide[:count]

    plan = {
        "c_commit": prepare("xetrack_c log() commit", n["commit"],
                            xetrack_c_log("commit", rows10(n["commit"]), 10)),
        "c_fsync": prepare("xetrack_c log() fsync", n["fsync"],
                           xetrack_c_log("fsync", rows10(n["fsync"]), 10)),
        "c_async": prepare("xetrack_c log() async", n["fast"],
                           xetrack_c_log("async", rows10(n["fast"]), 10)),
        "c_batch": prepare("xetrack_c log_batch()", n["fast"],
                           xetrack_c_log_batch(rows10(n["fast"]), 10)),
        "x_log": prepare(f"xetrack {version} log()", n["xetrack"],
                         xetrack_log(rows10(n["xetrack"]), 10)),
        "x_batch": prepare(f"xetrack {version} log_batch()", n["xetrack_batch"],
                           xetrack_log(rows10(n["xetrack_batch"]), 10, batch=True)),
        "py_commit": prepare("sqlite3 execute+commit per row", n["commit"],
                             python_ceiling(rows10(n["commit"]), 10, per_row=True)),
        "py_fsync": prepare("sqlite3 execute+commit per row, synchronous=FULL", n["fsync"],
                            python_ceiling(rows10(n["fsync"]), 10, per_row=True, synchronous="FULL")),
        "py_many": prepare("sqlite3 executemany, 1 transaction", n["fast"],
                           python_ceiling(rows10(n["fast"]), 10)),
        "cc_commit": prepare("C, commit per row", n["commit"],
                             c_ceiling(ctx, n["commit"], 10, per_row=True)),
        "cc_fsync": prepare("C, commit per row, synchronous=FULL", n["fsync"],
                            c_ceiling(ctx, n["fsync"], 10, per_row=True, synchronous="full")),
        "cc_batch": prepare("C, 1 transaction", n["fast"], c_ceiling(ctx, n["fast"], 10)),
        "c_commit_200": prepare("xetrack_c log() commit, 200 cols", n["wide_commit"],
                                xetrack_c_log("commit", rows200(n["wide_commit"]), 200)),
        "c_async_200": prepare("xetrack_c log() async, 200 cols", n["wide"],
                               xetrack_c_log("async", rows200(n["wide"]), 200)),
        "c_batch_200": prepare("xetrack_c log_batch(), 200 cols", n["wide"],
                               xetrack_c_log_batch(rows200(n["wide"]), 200)),
        "x_log_200": prepare(f"xetrack {version} log(), 200 cols", n["xetrack_wide"],
                             xetrack_log(rows200(n["xetrack_wide"]), 200)),
        "py_many_200": prepare("sqlite3 executemany, 200 cols", n["wide"],
                               python_ceiling(rows200(n["wide"]), 200)),
        "cc_commit_200": prepare("C, commit per row, 200 cols", n["wide_commit"],
                                 c_ceiling(ctx, n["wide_commit"], 200, per_row=True)),
        "cc_batch_200": prepare("C, 1 transaction, 200 cols", n["wide"],
                                c_ceiling(ctx, n["wide"], 200)),
    }
    labels = {key: entry.label for key, entry in plan.items()}
    results = measure(GROUP, list(plan.values()), ctx.reps, ctx.group_dir(GROUP), "log/log_batch")
    r = {key: results[label] for key, label in labels.items()}
    _emit_tables(ctx, r, sizes)
    _memory(ctx)


XT_MODE = "rollback journal (DELETE), synchronous=FULL, commit per row"
"""How xetrack 0.7 writes a row: it sets no pragma (SQLite's defaults; a file it wrote reports
journal_mode=delete, synchronous=2) and commits after every statement."""


def _emit_tables(ctx: Context, r: dict[str, Result], n: dict[str, int]) -> None:
    version = peer_version("xetrack")
    same = Table(
        "log: like for like (same durability, same batching)",
        "Rows/s, median of the repetitions [min–max]; each row pairs modes that promise the "
        "same thing. The ratio is xetrack_c's speed-up (rates compared; xetrack writes fewer "
        "rows per log() because it is slow).",
        notes=[
            f"xetrack {version} sets no pragma: a file it writes reports journal_mode=delete "
            "(rollback journal) and synchronous=FULL, and it commits after every statement. "
            "Each of its log() calls is therefore durable on return, like xetrack_c's "
            "durability=\"fsync\" (WAL, synchronous=FULL, commit per row); the rollback "
            "journal syncs the journal and the database per commit where WAL syncs the log once.",
            "log_batch() is one transaction on both sides; the Python floor is one executemany "
            "in one transaction (WAL, synchronous=NORMAL).",
            "durability=\"async\" queues rows for a background writer that commits them in "
            "batches (WAL, synchronous=NORMAL); the timed region ends with flush(). Its peer is "
            f"xetrack {version}'s fastest way to write many rows, log_batch() in one transaction.",
            "Targets: async and log_batch >= 1,000,000 rows/s and >= 50% of the C ceiling.",
            "Per-row fsync figures are set by the disk's sync latency, which other programs' "
            "I/O moves from one repetition to the next (see the ranges): xetrack_c and the C "
            "floor issue the same system calls per commit (strace: one fdatasync each), so a "
            "share above 100% in that row is this noise, not a loose floor.",
        ],
    )
    same.rows = [
        Row("log(), durability=fsync", f"{n['fsync']:,} rows", r["c_fsync"],
            [r["x_log"], r["py_fsync"]], Limit(r["cc_fsync"], "C, commit+sync per row, no checkpoint"),
            mode=f"xetrack_c: WAL, synchronous=FULL, commit per row / xetrack {version} "
                 f"log(): {XT_MODE} / sqlite3: WAL, synchronous=FULL, commit per row"),
        Row("log_batch(rows)", f"{n['fast']:,} rows", r["c_batch"],
            [r["x_batch"], r["py_many"]], Limit(r["cc_batch"], "C, 1 transaction"),
            mode=f"xetrack_c: WAL, synchronous=NORMAL, 1 transaction / xetrack {version} "
                 "log_batch(): rollback journal, synchronous=FULL, 1 transaction / sqlite3 "
                 "executemany: WAL, synchronous=NORMAL, 1 transaction"),
        Row("log(), durability=async (+flush)", f"{n['fast']:,} rows", r["c_async"],
            [r["x_batch"], r["py_many"]], Limit(r["cc_batch"], "C, 1 transaction"),
            mode=f"xetrack_c: WAL, synchronous=NORMAL, background batches / xetrack {version} "
                 "log_batch() (its fastest mode): rollback journal, synchronous=FULL, "
                 "1 transaction / sqlite3 executemany, 1 transaction"),
    ]
    ctx.emit(same)

    per_row = Table(
        "log: Tracker.log() per row, default durability",
        "Rows/s, median [min–max]. xetrack_c's default commits every row without a disk sync; "
        "xetrack's log() syncs every row, so this ratio compares unlike durability: read it "
        "as what the default costs, and the like-for-like table above for the comparison.",
        notes=["durability=\"commit\" commits every row to the WAL with synchronous=NORMAL: "
               "a committed row survives a crash of the process, not a power cut.",
               "Target: default durability >= 100x xetrack."],
    )
    per_row.rows = [
        Row("log(), durability=commit", f"{n['commit']:,} rows", r["c_commit"],
            [r["x_log"], r["py_commit"]], Limit(r["cc_commit"], "C, commit per row, no checkpoint"),
            mode=f"xetrack_c: WAL, synchronous=NORMAL (no sync), commit per row / xetrack "
                 f"{version} log(): {XT_MODE} / sqlite3: WAL, synchronous=NORMAL, commit per "
                 "row"),
    ]
    ctx.emit(per_row)

    wide = Table(
        "log: 10 vs 200 columns",
        "Rows/s with 200 keys per row (same value pattern); the 10-key figures are in the "
        "tables above, from the same interleaved run.",
    )
    wide.rows = [
        Row("log(), commit, 200 keys", f"{n['wide_commit']:,} rows", r["c_commit_200"],
            [r["x_log_200"]], Limit(r["cc_commit_200"], "C, commit per row, no checkpoint"),
            mode=f"xetrack_c: WAL, no sync, commit per row / xetrack: {XT_MODE}"),
        Row("log(), async (+flush), 200 keys", f"{n['wide']:,} rows", r["c_async_200"],
            [r["py_many_200"]], Limit(r["cc_batch_200"], "C, 1 transaction"),
            mode="xetrack_c: WAL, background batches / sqlite3 executemany, 1 transaction"),
        Row("log_batch(rows), 200 keys", f"{n['wide']:,} rows", r["c_batch_200"],
            [r["py_many_200"]], Limit(r["cc_batch_200"], "C, 1 transaction"),
            mode="1 transaction each, WAL, synchronous=NORMAL"),
    ]
    for name, small, large in (
        ("xetrack_c log() commit", "c_commit", "c_commit_200"),
        ("xetrack_c log() async", "c_async", "c_async_200"),
        ("xetrack_c log_batch()", "c_batch", "c_batch_200"),
        ("xetrack 0.7 log()", "x_log", "x_log_200"),
        ("sqlite3 executemany", "py_many", "py_many_200"),
        ("C, 1 transaction", "cc_batch", "cc_batch_200"),
    ):
        wide.notes.append(growth_note(name, [(10, r[small]), (200, r[large])], "columns"))
        for cols, key in ((10, small), (200, large)):
            ctx.add_scaling("log: cost per row vs columns", name, cols, r[key])
    ctx.emit(wide)


def _memory(ctx: Context) -> None:
    """Peak RSS of a subprocess that logs many rows in async mode, vs its RSS early on."""
    total = ctx.pick(10_000_000, 1_000_000)
    mark = 100_000
    table = Table(
        "log: memory of async logging",
        f"A fresh process logs {total:,} rows of 10 keys with durability=async, then flush(). "
        f"RSS is read from /proc/self/status after {mark:,} rows and every {mark:,} rows after; "
        "the peak is the process's ru_maxrss at the end (the process is started from a small "
        "shell, so the figure is its own). A bounded queue keeps the peak near the early figure.",
    )
    try:
        xetrack_c_attr("Tracker")
    except Skip as exc:
        note(f"skip: {GROUP}: async memory: {exc}")
        table.notes.append(f"skipped: {exc}")
        ctx.emit(table)
        return
    workdir = ctx.group_dir(GROUP) / "memory"
    workdir.mkdir(parents=True, exist_ok=True)
    db = workdir / "memory.db"
    command = [sys.executable, "-m", "benchmarks.memprobe", str(db), str(total), str(mark)]
    if os.path.exists("/bin/sh"):
        # Linux keeps the high-water mark of the image a process replaces in execve, and a
        # child forked from this (large) process starts with this process's pages: launched
        # directly, the probe's ru_maxrss would report ours. A shell that forks the probe
        # from its own small image keeps the figure the probe's own.
        command = ["/bin/sh", "-c", '"$0" "$@"; exit $?', *command]
    out = subprocess.run(command, capture_output=True, text=True, env=subprocess_env(),
                         check=False, timeout=1800)
    for path in workdir.glob("memory.db*"):
        path.unlink()
    if out.returncode != 0:
        reason = (out.stderr.strip().splitlines() or ["no output"])[-1]
        note(f"FAILED: {GROUP}: async memory: {reason}")
        table.notes.append(f"failed: {reason}")
        ctx.emit(table)
        return
    probe = json.loads(out.stdout.strip().splitlines()[-1])
    if probe.get("skipped"):
        note(f"skip: {GROUP}: async memory: {probe['skipped']}")
        table.notes.append(f"skipped: {probe['skipped']}")
        ctx.emit(table)
        return
    ctx.emit(_memory_table(table, probe, total, mark))


def _memory_table(table: Table, probe: dict[str, Any], total: int, mark: int) -> Table:
    """Fill the memory table's notes from the probe's JSON."""
    def mib(kib: float) -> str:
        return f"{kib / 1024.0:.1f} MiB"

    samples = probe.get("samples") or [[mark, probe["rss_mark_kib"], probe["rss_mark_kib"]]]
    highest = max(samples, key=lambda item: item[1])
    half = [sample[1] for sample in samples if sample[0] > total // 2] or [samples[-1][1]]
    hwm_mark = probe.get("hwm_mark_kib", probe["rss_mark_kib"])
    before_flush = probe.get("hwm_before_flush_kib", highest[1])
    after_flush = probe.get("hwm_after_flush_kib", probe["maxrss_kib"])
    phase = ("while logging" if before_flush >= probe["maxrss_kib"] else
             "during the final flush()" if after_flush >= probe["maxrss_kib"] else "during close()")
    rose = next((sample for sample in samples if len(sample) > 2 and sample[2] > hwm_mark), None)
    table.notes = [
        f"RSS after import and open: {mib(probe['rss_start_kib'])}; after {mark:,} rows: "
        f"{mib(probe['rss_mark_kib'])}; after all {total:,} rows and flush: "
        f"{mib(probe['rss_end_kib'])}; peak (ru_maxrss): {mib(probe['maxrss_kib'])}.",
        f"RSS sampled every {mark:,} rows: highest {mib(highest[1])} (after {highest[0]:,} "
        f"rows); over the second half of the run {mib(min(half))}-{mib(max(half))}.",
        f"High-water mark (VmHWM): {mib(hwm_mark)} after {mark:,} rows, {mib(before_flush)} "
        f"before the final flush(), {mib(after_flush)} after it; the peak came {phase}"
        + (f"; it first rose above the {mark:,}-row mark by {rose[0]:,} rows." if rose else "."),
        f"Peak minus RSS after {mark:,} rows: {mib(probe['maxrss_kib'] - probe['rss_mark_kib'])} "
        f"for {total / mark:g}x the rows.",
        f"Throughput over the whole run: {human(total / probe['seconds'])} rows/s "
        f"({probe['seconds']:.1f} s including the final flush).",
    ]
    return table
