"""The parallel read: a big table is read in rowid ranges by several threads, each on a
connection of its own, all in one snapshot, and the result is the one a single thread gives.

Every case compares against the single-threaded read and against Python's own ``sqlite3``,
and asserts through ``_core._parallel_reads()`` that the parallel path ran (or, where it must
not, that it did not).
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time

import numpy as np
import pandas as pd
import pytest
from conftest import child_env

from xetrack_c import Reader, Tracker, _core

# Rows enough for two parts (read_columns gives each thread at least 65,536 rows).
ROWS = 140_000


def parallel_reads() -> tuple:
    return _core._parallel_reads()


def assert_same_arrays(one: dict, other: dict) -> None:
    assert list(one) == list(other)
    for name in one:
        a, b = one[name], other[name]
        assert a.dtype == b.dtype, name
        if a.dtype.kind == "f":
            np.testing.assert_array_equal(a, b, err_msg=name)
        else:
            assert a.tolist() == b.tolist(), name


def fill(path: str, rows: int = ROWS) -> None:
    """A tracker table of `rows` rows whose columns change storage class part-way, hold
    NULLs in some ranges only, and repeat text values (interned) or not."""
    with Tracker(path, track_id="run") as tracker:
        batch = []
        for i in range(rows):
            row = {"i": i, "x": i * 0.25, "name": f"n{i % 997}", "flag": i % 2 == 0}
            # int in the first half, text in the second: an object column
            row["mixed"] = i if i < rows // 2 else f"t{i}"
            # NULL only in the last quarter: float64 with NaN
            row["late_null"] = None if i >= rows * 3 // 4 else i
            row["blob"] = bytes([i % 256]) * (i % 5)
            batch.append(row)
            if len(batch) == 10_000:
                tracker.log_batch(batch)
                batch = []
        if batch:
            tracker.log_batch(batch)


@pytest.fixture(scope="module")
def big_db(tmp_path_factory) -> str:
    path = str(tmp_path_factory.mktemp("parallel") / "big.db")
    fill(path)
    return path


def test_a_parallel_read_equals_the_single_threaded_read_and_sqlite3(big_db):
    reader = Reader(big_db)
    before = parallel_reads()
    single = reader.to_arrays(threads=1)
    assert parallel_reads() == before, "threads=1 must read on one thread"
    several = reader.to_arrays(threads=3)
    reads, parts, _ = parallel_reads()
    assert reads == before[0] + 1 and parts - before[1] == 2, \
        "140,000 rows give two parts of at least 65,536 rows"
    assert_same_arrays(single, several)
    assert len(several["i"]) == ROWS
    conn = sqlite3.connect(big_db)
    try:
        expected = conn.execute('SELECT i, mixed, late_null, blob FROM "default" '
                                "ORDER BY timestamp").fetchall()
    finally:
        conn.close()
    got = list(zip(several["i"].tolist(), several["mixed"].tolist(),
                   several["late_null"].tolist(), several["blob"].tolist(), strict=True))
    assert [r[0] for r in got] == [r[0] for r in expected]
    assert [r[1] for r in got] == [r[1] for r in expected]
    assert [None if np.isnan(r[2]) else int(r[2]) for r in got] == [r[2] for r in expected]
    assert [r[3] for r in got] == [r[3] for r in expected]
    assert several["mixed"].dtype == object and several["late_null"].dtype == np.float64


def test_to_df_in_parallel_equals_one_thread_and_read_sql_query(big_db):
    reader = Reader(big_db)
    before = parallel_reads()
    parallel = reader.to_df(threads=2)
    assert parallel_reads()[0] == before[0] + 1
    pd.testing.assert_frame_equal(parallel, reader.to_df(threads=1))
    conn = sqlite3.connect(big_db)
    try:
        expected = pd.read_sql_query('SELECT * FROM "default" ORDER BY timestamp', conn)
    finally:
        conn.close()
    assert parallel["timestamp"].tolist() == expected["timestamp"].tolist()
    assert parallel["name"].tolist() == expected["name"].tolist()
    assert parallel["i"].tolist() == expected["i"].tolist()
    assert parallel["flag"].tolist() == [bool(v) for v in expected["flag"]]


def test_rowid_gaps_and_an_empty_range_read_the_same(tmp_path):
    path = str(tmp_path / "gaps.db")
    fill(path, 200_000)
    conn = sqlite3.connect(path)
    # A hole over a whole range of the four, and scattered holes elsewhere.
    conn.execute('DELETE FROM "default" WHERE rowid BETWEEN 60000 AND 110000 '
                 "OR rowid % 7 = 3")
    conn.commit()
    left = conn.execute('SELECT count(*) FROM "default"').fetchone()[0]
    conn.close()
    reader = Reader(path)
    before = parallel_reads()
    several = reader.to_arrays(threads=4)
    assert parallel_reads()[1] - before[1] == 3  # a span of 200,000 rowids: three parts
    single = reader.to_arrays(threads=1)
    assert len(several["i"]) == left
    assert_same_arrays(single, several)


def test_small_tables_filters_and_views_read_on_one_thread(big_db, tmp_path):
    reader = Reader(big_db)
    before = parallel_reads()
    assert len(reader.to_df(track_id="run", threads=4)) == ROWS
    assert len(reader.to_df(head=10, threads=4)) == 10
    assert len(reader.to_df(tail=10, threads=4)) == 10
    small = str(tmp_path / "small.db")
    with Tracker(small) as tracker:
        tracker.log_batch([{"i": i} for i in range(1000)])
    assert len(Reader(small).to_df(threads=4)) == 1000
    conn = sqlite3.connect(big_db)
    conn.execute('CREATE VIEW IF NOT EXISTS everything AS SELECT * FROM "default"')
    conn.commit()
    conn.close()
    assert len(Reader(big_db, table="everything").to_df(threads=4)) == ROWS
    assert parallel_reads() == before


def test_a_column_named_rowid_alias_reads_on_one_thread_and_right(tmp_path):
    path = str(tmp_path / "alias.db")
    with Tracker(path) as tracker:
        # _rowid_ as a column of its own, counting down: a range read on it would be wrong.
        tracker.log_batch([{"_rowid_": ROWS - i, "i": i} for i in range(ROWS)])
    reader = Reader(path)
    before = parallel_reads()
    out = reader.to_arrays(threads=4)
    assert parallel_reads() == before
    assert out["i"].tolist() == list(range(ROWS))
    assert out["_rowid_"].tolist() == [ROWS - i for i in range(ROWS)]


def test_a_table_without_rowids_reads_on_one_thread(tmp_path):
    path = str(tmp_path / "norowid.db")
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE plain (k INTEGER PRIMARY KEY, v TEXT) WITHOUT ROWID")
    conn.executemany("INSERT INTO plain VALUES (?, ?)", ((i, f"v{i}") for i in range(ROWS)))
    conn.commit()
    conn.close()
    before = parallel_reads()
    out = Reader(path, table="plain").to_arrays(threads=4)
    assert parallel_reads() == before
    assert out["k"].tolist() == list(range(ROWS))


@pytest.mark.parametrize("threads, error", [(0, ValueError), (-2, ValueError),
                                            ("2", TypeError), (True, TypeError),
                                            (2.0, TypeError)])
def test_a_bad_threads_value_is_refused_by_name(big_db, threads, error):
    with pytest.raises(error, match="threads"):
        Reader(big_db).to_df(threads=threads)
    with pytest.raises(error, match="threads"):
        Reader(big_db).to_arrays(threads=threads)


def rewrite_every_row(path: str, pause: float) -> subprocess.Popen:
    """A table of ROWS rows (i, gen=0) at `path`, and a writer process that sets gen to
    1, 2, 3, ... on every row, one transaction each, `pause` seconds apart, printing each
    generation once committed."""
    with Tracker(path) as tracker:
        tracker.log_batch([{"i": i, "gen": 0} for i in range(ROWS)])
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(f"""
            import sqlite3, time
            conn = sqlite3.connect({path!r}, timeout=30, isolation_level=None)
            deadline = time.monotonic() + 60
            gen = 0
            while time.monotonic() < deadline:
                gen += 1
                conn.execute("BEGIN IMMEDIATE")
                conn.execute('UPDATE "default" SET gen = ?', (gen,))
                conn.execute("COMMIT")
                print(gen, flush=True)
                time.sleep({pause})
        """)], stdout=subprocess.PIPE, text=True, env=child_env())


def test_the_parts_read_one_snapshot_while_another_process_rewrites_every_row(tmp_path):
    """A writer sets one generation number on every row per transaction; parts read in
    different snapshots would mix generations."""
    path = str(tmp_path / "snapshot.db")
    writer = rewrite_every_row(path, pause=0)
    try:
        assert writer.stdout.readline().strip() == "1"  # the writer is under way
        reader = Reader(path)
        before = parallel_reads()
        seen = set()
        for _ in range(6):
            out = reader.to_arrays(threads=4)
            gens = set(out["gen"].tolist())
            assert len(gens) == 1, f"one read saw several generations: {sorted(gens)}"
            assert out["i"].tolist() == list(range(ROWS))
            seen |= gens
        reads = parallel_reads()[0] - before[0]
        assert reads >= 1, "every read fell back to one thread"
        assert len(seen) > 1, "the writer committed nothing while the reads ran"
    finally:
        writer.kill()
        writer.wait()


def test_a_commit_between_the_connections_snapshots_is_seen_and_never_mixed(tmp_path):
    """With a pause after the first connection's snapshot (a test hook), the writer commits
    between the snapshots: the sentinel sees it, the snapshots are taken again, and when
    every try sees a commit one thread reads; no read mixes generations. Without the
    sentinel's check the parts would read different generations here."""
    path = str(tmp_path / "between.db")
    writer = rewrite_every_row(path, pause=0.02)
    _core._parallel_pause(400_000)
    try:
        assert writer.stdout.readline().strip() == "1"
        before = parallel_reads()
        for _ in range(3):
            out = Reader(path).to_arrays(threads=2)
            gens = set(out["gen"].tolist())
            assert len(gens) == 1, f"one read saw several generations: {sorted(gens)}"
            assert out["i"].tolist() == list(range(ROWS))
        retries = parallel_reads()[2] - before[2]
        assert retries >= 3, f"the sentinel saw {retries} commit(s) between the snapshots"
    finally:
        _core._parallel_pause(0)
        writer.kill()
        writer.wait()


def test_the_test_pause_is_refused_out_of_range():
    with pytest.raises(ValueError, match="microseconds"):
        _core._parallel_pause(-1)


def test_ctrl_c_stops_a_parallel_read(tmp_path):
    """Rows whose generated column takes milliseconds each: the read would take many
    minutes; SIGINT ends it within seconds, with KeyboardInterrupt, on every thread."""
    path = str(tmp_path / "slow.db")
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE slow (a INTEGER)")
    conn.execute("INSERT INTO slow (a) WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL "
                 f"SELECT x + 1 FROM c WHERE x < {ROWS}) SELECT x FROM c")
    # Added afterwards: an INSERT would compute it for every row.
    conn.execute("ALTER TABLE slow ADD COLUMN g INTEGER GENERATED ALWAYS AS "
                 "(length(hex(zeroblob(2000000 + a % 2)))) VIRTUAL")
    conn.commit()
    conn.close()
    child = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(f"""
            import sys
            from xetrack_c import Reader, _core
            print("reading", flush=True)
            try:
                Reader({path!r}, table="slow").to_arrays(threads=2)
            except KeyboardInterrupt:
                print("interrupted", _core._parallel_reads(), flush=True)
                sys.exit(3)
        """)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=child_env())
    try:
        assert child.stdout.readline().strip() == "reading"
        time.sleep(1.5)
        assert child.poll() is None, child.communicate()
        sent = time.monotonic()
        os.kill(child.pid, signal.SIGINT)
        out, err = child.communicate(timeout=30)
        took = time.monotonic() - sent
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert child.returncode == 3, (out, err)
    assert "interrupted (1, 2, " in out, out  # one parallel read, in two parts
    assert took < 5, f"the read went on for {took:.1f} s after SIGINT"
