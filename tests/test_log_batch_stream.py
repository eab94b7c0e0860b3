"""A long log_batch() is written on a thread of its own while its later rows are still
being encoded (csrc/store_batch.c), and stays one transaction: every row in order, or
none; a table changed under it, a failing row, a busy file and a call back into the
tracker from inside the batch each end as they do for a short batch."""
from __future__ import annotations

import json
import os
import sqlite3
import threading

import pytest
from conftest import Unpicklable, count_rows, read_rows, table_info

from xetrack_c import StorageError, Tracker, _core

# Above the size from which a batch is streamed (XT_BATCH_STREAM_ROWS, 2048 rows) and
# many hand-overs (XT_BATCH_CHUNK, 256 rows) long.
ROWS = 6000

two_cpus = pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2,
                              reason="a batch is streamed only when a second CPU may run the writer")


def batch_rows(n: int = ROWS) -> list[dict]:
    """Mixed storage classes; a column that first appears late in the batch; an object
    (stored as an asset) near the end."""
    rows = []
    for i in range(n):
        row = {"i": i, "x": i / 4, "s": f"s{i % 7}", "none": None, "blob": bytes([i % 256]),
               "flag": i % 2 == 0}
        if i >= n // 2:
            row["late"] = i * 10
        if i == n - 100:
            row["obj"] = {1, 2, 3}
        rows.append(row)
    return rows


@two_cpus
@pytest.mark.parametrize("durability", ["commit", "fsync"])
def test_long_batch_is_streamed_and_writes_every_row_in_order(db_path, durability):
    tracker = Tracker(db_path, params={"p": "x"}, durability=durability)
    rows = batch_rows()
    before = _core._streamed_batches()
    last = tracker.log_batch(rows)
    assert _core._streamed_batches() == before + 1
    assert last["i"] == ROWS - 1 and last["p"] == "x" and last["late"] == (ROWS - 1) * 10
    assert tracker.latest == last
    tracker.close()
    got = read_rows(db_path)
    assert len(got) == ROWS
    for i, row in enumerate(got):
        assert (row["i"], row["x"], row["s"], row["none"], row["blob"], row["flag"], row["p"]) \
            == (i, i / 4, f"s{i % 7}", None, bytes([i % 256]), int(i % 2 == 0), "x")
        assert row["late"] == (i * 10 if i >= ROWS // 2 else None)
    assert len({row["timestamp"] for row in got}) == ROWS
    assert got[-1]["timestamp"] == last["timestamp"]
    assert "late" in table_info(db_path)
    # The object went to the assets table, and reads back as itself.
    assert Tracker(db_path).get(got[ROWS - 100]["obj"]) == {1, 2, 3}


@two_cpus
def test_encoding_failure_late_in_a_long_batch_keeps_nothing(db_path):
    tracker = Tracker(db_path)
    tracker.log({"i": -1})
    rows = batch_rows()
    rows[5000]["bad"] = Unpicklable()  # rows before it were handed to the writer already
    before = _core._streamed_batches()
    with pytest.raises(RuntimeError, match="no pickle"):
        tracker.log_batch(rows)
    assert _core._streamed_batches() == before + 1
    assert count_rows(db_path) == 1
    # The writer let go of the store: the tracker writes on, on its own thread and others.
    tracker.log({"i": -2})
    rows[5000]["bad"] = 0
    tracker.log_batch(rows)
    tracker.close()
    assert count_rows(db_path) == 2 + ROWS


@two_cpus
def test_sqlite_refusing_a_row_of_a_long_batch_keeps_nothing(db_path):
    tracker = Tracker(db_path)
    tracker.log({"i": -1})
    conn = sqlite3.connect(db_path)
    conn.execute('CREATE TRIGGER refuse BEFORE INSERT ON "default" WHEN NEW.i = 4500 '
                 "BEGIN SELECT RAISE(ABORT, 'refused by the test trigger'); END")
    conn.commit()
    conn.close()
    with pytest.raises(StorageError, match="refused by the test trigger"):
        tracker.log_batch(batch_rows())
    assert count_rows(db_path) == 1
    rows = [row for row in batch_rows() if row["i"] != 4500]
    tracker.log_batch(rows)
    tracker.close()
    assert [row["i"] for row in read_rows(db_path)] == [-1] + [row["i"] for row in rows]


@two_cpus
def test_long_batch_into_a_table_dropped_meanwhile_is_written_whole(db_path):
    tracker = Tracker(db_path)
    tracker.log({"i": -1, "x": 0.5})
    conn = sqlite3.connect(db_path)
    conn.execute('DROP TABLE "default"')
    conn.commit()
    conn.close()
    tracker.log_batch(batch_rows())
    tracker.close()
    assert [row["i"] for row in read_rows(db_path)] == list(range(ROWS))


@two_cpus
def test_long_batch_on_a_busy_file_reports_it_and_keeps_nothing(db_path):
    tracker = Tracker(db_path, busy_timeout=0.3)
    tracker.log({"i": -1})
    other = sqlite3.connect(db_path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    with pytest.raises(StorageError, match="locked|busy"):
        tracker.log_batch(batch_rows())
    other.execute("ROLLBACK")
    other.close()
    assert count_rows(db_path) == 1
    tracker.log_batch(batch_rows())
    tracker.close()
    assert count_rows(db_path) == 1 + ROWS


@two_cpus
def test_other_threads_log_while_a_long_batch_is_written(db_path):
    tracker = Tracker(db_path)
    tracker.log({"writer": -1, "i": -1})
    start = threading.Barrier(3)
    errors = []

    def log_rows(w):
        start.wait()
        try:
            for i in range(300):
                tracker.log({"writer": w, "i": i})
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=log_rows, args=(w,)) for w in (1, 2)]
    for t in threads:
        t.start()
    start.wait()
    tracker.log_batch([{"writer": 0, "i": i} for i in range(20000)])
    for t in threads:
        t.join()
    tracker.close()
    assert errors == []
    got = read_rows(db_path)
    for w, n in ((0, 20000), (1, 300), (2, 300)):
        assert [row["i"] for row in got if row["writer"] == w] == list(range(n))
    assert len(got) == 20601


# In a child interpreter with a timeout: a call that waited for the batch's writer would
# hang there, not here.
CALL_BACK = r"""
import json, sys
from xetrack_c import Tracker, _core

tracker = Tracker(sys.argv[1])
tracker.log({"i": -1})

class CallsBack:
    def __reduce__(self):
        tracker.log({"i": -2})  # from inside the batch, on its thread
        return (int, (0,))

n = int(sys.argv[2])
rows = [{"i": i} for i in range(n)]
rows[n // 2]["obj"] = CallsBack()
before = _core._streamed_batches()
try:
    tracker.log_batch(rows)
except RuntimeError as exc:
    error = str(exc)
else:
    error = None
streamed = _core._streamed_batches() - before
tracker.log({"i": -3})
tracker.close()
print(json.dumps({"error": error, "streamed": streamed}))
"""


@pytest.mark.parametrize("rows", [ROWS, 10])
def test_calling_the_tracker_from_inside_a_batch_is_refused(run_py, db_path, rows):
    # Refused in a short batch too (not streamed), so that it does not depend on the length.
    out = json.loads(run_py(CALL_BACK, args=[db_path, str(rows)], timeout=60).stdout)
    streams = rows >= 2048 and len(os.sched_getaffinity(0)) > 1
    assert out["streamed"] == int(streams)
    assert "writing a log_batch() on this thread" in out["error"]
    assert [row["i"] for row in read_rows(db_path)] == [-1, -3]


def test_short_batch_and_async_batch_are_not_streamed(db_path, tmp_path):
    before = _core._streamed_batches()
    tracker = Tracker(db_path)
    tracker.log_batch([{"i": i} for i in range(2047)])
    tracker.close()
    tracker = Tracker(str(tmp_path / "async.db"), durability="async")
    tracker.log_batch([{"i": i} for i in range(ROWS)])
    tracker.close()
    assert _core._streamed_batches() == before
    assert count_rows(db_path) == 2047
    assert count_rows(str(tmp_path / "async.db")) == ROWS


# Ctrl-C while the caller waits for its batch's writer: a trigger makes every insert slow
# (a cross join of 200 x 200 rows, about 0.7 ms here), so the whole batch would take about
# 20 s to write, and a piece of 1,024 rows under a second.
INTERRUPTED = r"""
import json, sqlite3, sys, time
from xetrack_c import Tracker, _core

tracker = Tracker(sys.argv[1])
tracker.log({"i": -1})
conn = sqlite3.connect(sys.argv[1])
conn.execute("CREATE TABLE pad (x)")
conn.executemany("INSERT INTO pad VALUES (?)", [(i,) for i in range(200)])
conn.execute('CREATE TRIGGER slow AFTER INSERT ON "default" BEGIN '
             "SELECT count(*) FROM pad a, pad b; END")
conn.commit()
conn.close()
rows = [{"i": i} for i in range(30000)]
before = _core._streamed_batches()
print("ready", flush=True)
try:
    tracker.log_batch(rows)
except KeyboardInterrupt:
    outcome = "interrupted"
else:
    outcome = "returned"
stopped = time.monotonic()
tracker.log({"i": -2})
tracker.close()
print(json.dumps({"outcome": outcome, "stopped": stopped,
                  "streamed": _core._streamed_batches() - before}), flush=True)
"""


@two_cpus
def test_ctrl_c_while_a_long_batch_is_written_stops_it_and_writes_nothing(run_py, db_path):
    import signal
    import subprocess
    import sys
    import time

    script = run_py.script(INTERRUPTED)
    child = subprocess.Popen([sys.executable, str(script), db_path], stdout=subprocess.PIPE,
                             text=True)
    try:
        assert child.stdout.readline().strip() == "ready"
        time.sleep(0.5)  # the rows are encoded by now; their writing takes seconds
        sent = time.monotonic()
        child.send_signal(signal.SIGINT)
        out, _ = child.communicate(timeout=60)
    finally:
        child.kill()
        child.wait()
    result = json.loads(out)
    assert result["streamed"] == 1
    assert result["outcome"] == "interrupted"
    assert result["stopped"] - sent < 5  # the writer stops within a piece, not at the end
    assert [row["i"] for row in read_rows(db_path)] == [-1, -2]
