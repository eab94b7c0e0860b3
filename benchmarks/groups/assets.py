"""assets: ``log()`` of a row holding a 1 MiB NumPy array (stored as an asset: pickled,
hashed, written once per hash with its key and count in the row's transaction), against
xetrack 0.7's ``log()`` of the same rows and against the floor of the same work: the C
calls that pickle and hash (cloudpickle, xxh64) plus a C program writing the same bytes.

Every row holds a distinct array, so every row writes a new 1 MiB blob (no deduplication).
xetrack's assets need sqlitedict besides cloudpickle and xxhash; without it the xetrack
series is skipped (its Tracker would store ``str(array)``, a truncated repr).
"""

from __future__ import annotations

import importlib.util
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks.context import Context
from benchmarks.harness import Result, Skip, derived, measure, prepare
from benchmarks.peers import peer, peer_version, xetrack_c_attr
from benchmarks.report import Limit, Row, Table, per_op

GROUP = "assets"
ELEMENTS = 131_072  # float64: 1 MiB of data per array


def _arrays(rows: int) -> list[Any]:
    """``rows`` distinct 1 MiB arrays (plus one for the warm-up row, at index ``rows``)."""
    import numpy as np

    base = np.random.default_rng(7).random(ELEMENTS)
    return [base + i for i in range(rows + 1)]


def _modules() -> tuple[Any, Any]:
    try:
        import cloudpickle
        import xxhash
    except ImportError as exc:
        raise Skip(f"assets need cloudpickle and xxhash (pip install cloudpickle xxhash): {exc}") from exc
    return cloudpickle, xxhash


def xetrack_c_rows(arrays: list[Any], durability: str) -> Callable[[], Callable[[Path], float]]:
    """Build a run logging one row per array with xetrack_c."""
    def build() -> Callable[[Path], float]:
        tracker_class = xetrack_c_attr("Tracker")
        _modules()
        rows = len(arrays) - 1

        def run(workdir: Path) -> float:
            db = str(workdir / "c.db")
            tracker = tracker_class(db, durability=durability)
            try:
                tracker.log({"step": -1, "vec": arrays[rows]})  # warm-up: columns, tables
                tracker.flush()
                log = tracker.log
                start = time.perf_counter()
                for i in range(rows):
                    log({"step": i, "vec": arrays[i]})
                tracker.flush()
                elapsed = time.perf_counter() - start
                if len(tracker.assets) != rows + 1:
                    raise RuntimeError(f"{len(tracker.assets)} assets stored, {rows + 1} expected")
                return elapsed
            finally:
                tracker.close()
        return run
    return build


def xetrack_rows(arrays: list[Any]) -> Callable[[], Callable[[Path], float]]:
    """Build a run logging one row per array with xetrack 0.7."""
    def build() -> Callable[[Path], float]:
        xetrack = peer("xetrack")
        if importlib.util.find_spec("sqlitedict") is None:
            raise Skip("xetrack's assets are disabled without sqlitedict (pip install "
                       "sqlitedict in the peer's environment)")
        rows = len(arrays) - 1

        def run(workdir: Path) -> float:
            tracker = xetrack.Tracker(db=str(workdir / "x.db"), warnings=False)
            try:
                tracker.log({"step": -1, "vec": arrays[rows]})
                log = tracker.log
                start = time.perf_counter()
                for i in range(rows):
                    log({"step": i, "vec": arrays[i]})
                elapsed = time.perf_counter() - start
                if len(tracker.assets) != rows + 1:
                    raise RuntimeError(f"{len(tracker.assets)} assets stored, {rows + 1} expected")
                return elapsed
            finally:
                tracker.engine.close()
        return run
    return build


def pickle_and_hash(arrays: list[Any]) -> Callable[[], Callable[[Path], float]]:
    """Build a run of cloudpickle.dumps + xxh64 over the arrays: the C calls log() makes."""
    def build() -> Callable[[Path], float]:
        cloudpickle, xxhash = _modules()
        dumps, xxh64 = cloudpickle.dumps, xxhash.xxh64
        rows = len(arrays) - 1

        def run(workdir: Path) -> float:
            start = time.perf_counter()
            for i in range(rows):
                xxh64(dumps(arrays[i])).hexdigest()
            return time.perf_counter() - start
        return run
    return build


def c_write(ctx: Context, rows: int, nbytes: int,
            per_row_commit: bool) -> Callable[[], Callable[[Path], float]]:
    """Build a run of the C program writing ``rows`` rows with a distinct ``nbytes`` blob
    each: one transaction per row, or one for all."""
    def build() -> Callable[[Path], float]:
        if ctx.ceiling.binary is None:
            raise Skip(f"C ceiling unavailable: {ctx.ceiling.reason}")

        def run(workdir: Path) -> float:
            # xetrack_c checkpoints the WAL on a thread of its own: the floor is the write
            # path alone, without SQLite's automatic checkpoint inside its commits.
            return ctx.ceiling.blobs(workdir / "f.db", rows, nbytes, per_row_commit,
                                     checkpoint=False)
        return run
    return build


def floor(label: str, parts: list[Result]) -> Result:
    """The floor: the parts' times added repetition by repetition (same interleaved pass)."""
    if not all(p.ok for p in parts):
        failed = next(p for p in parts if not p.ok)
        return Result(label=label, ops=failed.ops, status=failed.status, reason=failed.reason)
    return derived(label, parts[0].ops, [sum(s) for s in zip(*(p.seconds for p in parts), strict=True)])


def run(ctx: Context) -> None:
    """Measure and print the assets table."""
    rows = ctx.pick(40, 10)
    try:
        cloudpickle, _ = _modules()
        arrays = _arrays(rows)
        nbytes = len(cloudpickle.dumps(arrays[0]))
    except Skip:
        arrays, nbytes = [None] * (rows + 1), 1
    version = peer_version("xetrack")
    plan = {
        "commit": prepare("xetrack_c log(), commit", rows, xetrack_c_rows(arrays, "commit")),
        "async": prepare("xetrack_c log(), async", rows, xetrack_c_rows(arrays, "async")),
        "xetrack": prepare(f"xetrack {version} log()", rows, xetrack_rows(arrays)),
        "pickle": prepare("cloudpickle.dumps + xxh64", rows, pickle_and_hash(arrays)),
        "write": prepare("C write, commit per row", rows, c_write(ctx, rows, nbytes, True)),
        "write_batch": prepare("C write, one transaction", rows,
                               c_write(ctx, rows, nbytes, False)),
    }
    labels = {key: entry.label for key, entry in plan.items()}
    results = measure(GROUP, list(plan.values()), ctx.reps, ctx.group_dir(GROUP), "1 MiB arrays")
    r = {key: results[label] for key, label in labels.items()}
    per_row = floor("pickle + hash + C commit per row", [r["pickle"], r["write"]])
    one_txn = floor("pickle + hash + C one transaction", [r["pickle"], r["write_batch"]])
    size = f"{rows} rows x {nbytes / 2**20:.2f} MiB"
    table = Table(
        "assets: log() of a row holding a 1 MiB NumPy array",
        mode="xetrack_c: WAL, the durability named in the row / xetrack 0.7: rollback journal, synchronous=FULL, commit per row",
        description=
        "Time per row, median [min–max]; every row holds a distinct array, so each writes a new "
        "blob with its key and count. The limit is the floor of the same work in the same "
        "interleaved run: cloudpickle.dumps + xxh64 of the array (C calls) plus "
        "benchmarks/c/ceiling.c writing the same number of bytes, key, count and row, with a "
        "commit per row (against durability='commit') or in one transaction (against async).",
        notes=["Target: log() of an asset row at >= 80% of the floor (pickle + hash + write).",
               "xetrack 0.7 writes each asset through sqlitedict (its own connection and "
               "thread, a commit per table) and then the row, with a disk sync per commit; "
               "xetrack_c writes the blob, key, count and row in the row's one transaction "
               "(WAL, no sync in 'commit' mode).",
               "The floor's parts, per row: pickle + hash, and each C write.",
               "The C floor runs without SQLite's automatic checkpoint (xetrack_c checkpoints "
               "on a thread of its own, off the logging thread); with it, copying 1 MiB per "
               "row back into the database roughly tripled the floor's time.",
               "Both xetrack_c and the C floor write a large blob in place (a zeroblob, then "
               "sqlite3_blob_write), so neither builds a 1 MiB record of it in memory."],
        rows=[
            Row("log() with a 1 MiB array, commit", size, r["commit"], [r["xetrack"]],
                Limit(per_row, "pickle + hash + C, commit per row"), display=per_op("row")),
            Row("log() with a 1 MiB array, async (+flush)", size, r["async"], [r["xetrack"]],
                Limit(one_txn, "pickle + hash + C, one transaction"), display=per_op("row")),
            Row("floor part: cloudpickle.dumps + xxh64", size, r["pickle"], display=per_op("row")),
            Row("floor part: C write, commit per row", size, r["write"], display=per_op("row")),
            Row("floor part: C write, one transaction", size, r["write_batch"],
                display=per_op("row")),
        ],
    )
    ctx.emit(table)
