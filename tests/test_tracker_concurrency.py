"""Concurrency and durability: threads, processes, fork, kill -9, async flushing.

Every scenario runs in a child interpreter under a timeout (a deadlock fails the test
instead of hanging the run); workers start together on a barrier; the file is then read
back with sqlite3 and every row accounted for.
"""

from __future__ import annotations

import signal
import subprocess
import sys

import pytest
from conftest import child_env, connect, count_rows, integrity_check, read_rows

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX process semantics")


def per_writer(db: str, table: str = "default"):
    """writer -> (rows, distinct i, min i, max i)."""
    conn = connect(db)
    try:
        return {
            w: (n, d, lo, hi)
            for w, n, d, lo, hi in conn.execute(
                f'SELECT writer, count(*), count(DISTINCT i), min(i), max(i) FROM "{table}" GROUP BY writer'
            )
        }
    finally:
        conn.close()


# ------------------------------------------------------------------ the numbers
THREADS_THEN_PROCESSES = """
import sys, threading, multiprocessing as mp
from xetrack_c import Tracker

DB, DURABILITY, N = sys.argv[1], sys.argv[2], int(sys.argv[3])

def process_writer(barrier, k):
    tracker = Tracker(DB, track_id=f"proc-{k}", durability=DURABILITY)
    barrier.wait()
    for i in range(N):
        tracker.log({"writer": f"p{k}", "i": i})
    tracker.close()

if __name__ == "__main__":
    tracker = Tracker(DB, track_id="threads", durability=DURABILITY)
    barrier = threading.Barrier(8)
    errors = []

    def thread_writer(k):
        try:
            barrier.wait()
            for i in range(N):
                tracker.log({"writer": f"t{k}", "i": i})
        except BaseException as exc:
            errors.append(repr(exc))

    threads = [threading.Thread(target=thread_writer, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    tracker.flush()
    print("after threads", tracker.count_all(), flush=True)

    ctx = mp.get_context("spawn")
    pbarrier = ctx.Barrier(4)
    procs = [ctx.Process(target=process_writer, args=(pbarrier, k)) for k in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    assert [p.exitcode for p in procs] == [0, 0, 0, 0], [p.exitcode for p in procs]
    print("after processes", tracker.count_all(), flush=True)
    tracker.close()
"""


@pytest.mark.parametrize("durability", ["commit", "async"])
def test_8_threads_and_4_processes_lose_no_row(run_py, db_path, durability):
    n = 20_000
    proc = run_py(THREADS_THEN_PROCESSES, timeout=300, args=[db_path, durability, str(n)])
    assert "after threads 160000" in proc.stdout
    assert "after processes 240000" in proc.stdout
    assert count_rows(db_path) == 240_000
    expected = {f"t{k}": (n, n, 0, n - 1) for k in range(8)}
    expected.update({f"p{k}": (n, n, 0, n - 1) for k in range(4)})
    assert per_writer(db_path) == expected
    assert count_rows(db_path, where="WHERE track_id = 'threads'") == 160_000
    assert integrity_check(db_path) == "ok"
    assert "locked" not in proc.stderr


SHARED_TRACK_ID = """
import sys, json, multiprocessing as mp
from xetrack_c import Tracker

DB, N = sys.argv[1], int(sys.argv[2])

def writer(barrier, k, out):
    tracker = Tracker(DB, track_id="shared")
    barrier.wait()
    stamps = []
    for i in range(0, N, 100):  # batches, so timestamps crowd the same microseconds
        # (log_batch's returned timestamps are checked in test_tracker_rows.py)
        tracker.log_batch([{"writer": f"w{k}", "i": j} for j in range(i, i + 50)])
        for j in range(i + 50, i + 100):
            stamps.append((j, tracker.log({"writer": f"w{k}", "i": j})["timestamp"]))
    tracker.close()
    with open(out, "w") as f:
        json.dump(stamps, f)

if __name__ == "__main__":
    ctx = mp.get_context("spawn")
    barrier = ctx.Barrier(2)
    procs = [ctx.Process(target=writer, args=(barrier, k, f"{DB}.w{k}.json")) for k in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    assert [p.exitcode for p in procs] == [0, 0]
"""


def test_two_processes_sharing_a_track_id_lose_nothing(run_py, db_path):
    import json

    n = 4000
    run_py(SHARED_TRACK_ID, timeout=120, args=[db_path, str(n)])
    assert count_rows(db_path) == 2 * n
    assert per_writer(db_path) == {"w0": (n, n, 0, n - 1), "w1": (n, n, 0, n - 1)}
    stored = {(r["writer"], r["i"]): r["timestamp"] for r in read_rows(db_path)}
    assert len(set(stored.values())) == 2 * n  # the primary key held: no two rows share one
    # the timestamps log() returned are the ones stored, even after a primary-key bump
    for k in range(2):
        with open(f"{db_path}.w{k}.json") as f:
            for i, stamp in json.load(f):
                assert stored[(f"w{k}", i)] == stamp, (k, i)


SAME_NEW_COLUMNS = """
import sys, multiprocessing as mp
from xetrack_c import Tracker

DB, COLUMNS = sys.argv[1], int(sys.argv[2])

def writer(barrier, k):
    tracker = Tracker(DB)
    barrier.wait()
    for i in range(COLUMNS):
        tracker.log({"who": k, f"c{i}": i, f"f{i}": float(i)})
    tracker.close()

if __name__ == "__main__":
    ctx = mp.get_context("spawn")
    barrier = ctx.Barrier(3)
    procs = [ctx.Process(target=writer, args=(barrier, k)) for k in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    assert [p.exitcode for p in procs] == [0, 0, 0], [p.exitcode for p in procs]
"""


def test_processes_adding_the_same_new_columns_all_succeed(run_py, db_path):
    columns = 150
    run_py(SAME_NEW_COLUMNS, timeout=120, args=[db_path, str(columns)])
    conn = connect(db_path)
    try:
        names = [r[1] for r in conn.execute('PRAGMA table_info("default")')]
        decl = {r[1]: r[2] for r in conn.execute('PRAGMA table_info("default")')}
        assert len(names) == len(set(n.lower() for n in names))
        assert set(names) == {"track_id", "timestamp", "who"} | {f"c{i}" for i in range(columns)} | {
            f"f{i}" for i in range(columns)}
        assert all(decl[f"c{i}"] == "INTEGER" and decl[f"f{i}"] == "REAL" for i in range(columns))
        assert conn.execute('SELECT count(*) FROM "default"').fetchone()[0] == 3 * columns
        for i in range(columns):
            got = conn.execute(
                f'SELECT count(*) FROM "default" WHERE c{i} = ? AND f{i} = ?', (i, float(i))
            ).fetchone()[0]
            assert got == 3, i
    finally:
        conn.close()


# ------------------------------------------------------------------ crashes and exits
KILL_ME = """
import sys
from xetrack_c import Tracker

tracker = Tracker(sys.argv[1], durability=sys.argv[2])
i = 0
while True:
    row = tracker.log({"i": i, "payload": "x" * 200})
    print(i, row["timestamp"], flush=True)  # only after log() has returned
    i += 1
    if i == int(sys.argv[3]):
        sys.stdin.read()  # wait for the parent (which kills us)
"""


@pytest.mark.parametrize("durability", ["commit", "fsync"])
@pytest.mark.parametrize("rows_before_kill", [1, 500])
def test_row_survives_sigkill_right_after_log_returned(run_py, db_path, durability, rows_before_kill):
    script = run_py.script(KILL_ME)
    child = subprocess.Popen(
        [sys.executable, str(script), db_path, durability, str(rows_before_kill)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        env=child_env(), text=True,
    )
    printed = []
    try:
        while len(printed) < rows_before_kill:
            line = child.stdout.readline()
            if not line:
                break
            i, stamp = line.split(" ", 1)
            printed.append((int(i), stamp.strip()))
        child.send_signal(signal.SIGKILL)
        err = child.stderr.read()
        child.wait(timeout=60)
    except BaseException:
        child.kill()
        child.wait()
        raise
    assert child.returncode == -signal.SIGKILL, err
    assert len(printed) == rows_before_kill, err
    rows = {r["i"]: r["timestamp"] for r in read_rows(db_path)}
    for i, stamp in printed:
        assert rows.get(i) == stamp, (i, stamp)
    assert integrity_check(db_path) == "ok"


def test_kill_during_a_stream_of_writes_keeps_every_returned_row(run_py, db_path):
    script = run_py.script(KILL_ME)
    child = subprocess.Popen(
        [sys.executable, str(script), db_path, "commit", "-1"],  # never pauses
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=child_env(), text=True,
    )
    printed = []
    try:
        while len(printed) < 2000:
            line = child.stdout.readline()
            if not line:
                break
            printed.append(line)
        child.send_signal(signal.SIGKILL)  # while it keeps writing
        # read through the same buffered file: communicate() would skip what it holds
        out = child.stdout.read()
        err = child.stderr.read()
        child.wait(timeout=60)
    except BaseException:
        child.kill()
        child.wait()
        raise
    printed += out.splitlines(keepends=True)
    printed = [line.split(" ", 1) for line in printed if line.endswith("\n")]
    assert len(printed) >= 2000, err
    rows = {r["i"]: r["timestamp"] for r in read_rows(db_path)}
    for i, stamp in printed:
        assert rows.get(int(i)) == stamp.strip(), i
    # committed rows form an unbroken prefix: at most the one row in flight is missing
    assert sorted(rows) == list(range(len(rows)))
    assert len(rows) in (len(printed), len(printed) + 1)
    assert integrity_check(db_path) == "ok"


def test_async_rows_are_there_after_flush_and_os_exit(run_py, db_path):
    run_py(
        f"""
        import os
        from xetrack_c import Tracker
        tracker = Tracker({db_path!r}, durability="async")
        for i in range(5000):
            tracker.log({{"i": i}})
        tracker.log_batch([{{"i": i}} for i in range(5000, 6000)])
        tracker.flush()
        os._exit(0)
        """
    )
    assert [r["i"] for r in read_rows(db_path)] == list(range(6000))


@pytest.mark.parametrize("keep", ["global", "local-function", "reference-cycle"])
def test_async_rows_are_written_at_normal_interpreter_exit(run_py, db_path, keep):
    run_py(
        f"""
        from xetrack_c import Tracker
        KEEP = {keep!r}
        def work():
            tracker = Tracker({db_path!r}, durability="async")
            for i in range(3000):
                tracker.log({{"i": i}})
            if KEEP == "reference-cycle":
                holder = {{"tracker": tracker}}
                holder["self"] = holder
            return tracker
        if KEEP == "global":
            TRACKER = work()
        else:
            work()
        """
    )
    assert [r["i"] for r in read_rows(db_path)] == list(range(3000))


# ------------------------------------------------------------------ multiprocessing and fork
POOL = """
import sys, multiprocessing as mp
from xetrack_c import Tracker

DB, METHOD, DURABILITY, PER_TASK = sys.argv[1], sys.argv[2], sys.argv[3], 40

def created_in_child(k):
    tracker = Tracker(DB, track_id=f"made-{k}", durability=DURABILITY)
    for i in range(PER_TASK):
        tracker.log({"task": k, "i": i})
    tracker.close()
    return k

def passed_to_child(args):
    tracker, k = args
    assert tracker.db == DB and tracker.durability == DURABILITY
    for i in range(PER_TASK):
        tracker.log({"task": k, "i": i, "passed": 1})
    return tracker.track_id

if __name__ == "__main__":
    ctx = mp.get_context(METHOD)
    parent = Tracker(DB, track_id="parent", durability=DURABILITY)
    parent.log({"task": -1, "i": 0})
    with ctx.Pool(2) as pool:
        assert sorted(pool.map(created_in_child, range(6))) == list(range(6))
        assert set(pool.map(passed_to_child, [(parent, k) for k in range(6)])) == {"parent"}
        # Let the workers exit on their own: a worker frees (and so flushes) its async
        # tracker only after handing back its result, and leaving the with-block would
        # terminate it with SIGTERM first.
        pool.close()
        pool.join()
    parent.log({"task": -2, "i": 0})
    parent.close()
"""


@pytest.mark.parametrize("durability", ["commit", "async"])
@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_tracker_in_multiprocessing_pool_children(run_py, db_path, method, durability):
    run_py(POOL, timeout=120, args=[db_path, method, durability])
    conn = connect(db_path)
    try:
        made = dict(conn.execute(
            "SELECT task, count(DISTINCT i) FROM \"default\" WHERE track_id LIKE 'made-%' GROUP BY task"))
        passed = dict(conn.execute(
            "SELECT task, count(DISTINCT i) FROM \"default\" WHERE track_id = 'parent' AND passed = 1 GROUP BY task"))
        total = conn.execute('SELECT count(*) FROM "default"').fetchone()[0]
    finally:
        conn.close()
    assert made == {k: 40 for k in range(6)}
    assert passed == {k: 40 for k in range(6)}
    assert total == 2 + 6 * 40 * 2
    assert integrity_check(db_path) == "ok"


FORK = """
import os, sys, traceback
from xetrack_c import Tracker

tracker = Tracker(sys.argv[1], track_id="t", durability=sys.argv[2])
for i in range(200):
    tracker.log({"who": "parent-before", "i": i})   # async: still queued at fork time
pid = os.fork()
if pid == 0:
    code = 1
    try:
        for i in range(50):
            tracker.log({"who": "child", "i": i})
        tracker.log_batch([{"who": "child", "i": i} for i in range(50, 60)])
        tracker.flush()
        code = 0
    except BaseException:
        traceback.print_exc()
    finally:
        sys.stderr.flush()
        os._exit(code)
_, status = os.waitpid(pid, 0)
assert os.waitstatus_to_exitcode(status) == 0, status
for i in range(30):
    tracker.log({"who": "parent-after", "i": i})
tracker.close()
"""


@pytest.mark.parametrize("durability", ["commit", "async"])
def test_after_fork_child_and_parent_both_keep_logging(run_py, db_path, durability):
    run_py(FORK, timeout=60, args=[db_path, durability])
    conn = connect(db_path)
    try:
        got = dict(conn.execute(
            'SELECT who, count(*) FROM "default" GROUP BY who'))
        distinct = dict(conn.execute(
            'SELECT who, count(DISTINCT i) FROM "default" GROUP BY who'))
    finally:
        conn.close()
    # no row lost, none written twice (the parent's queue is not replayed by the child)
    assert got == {"parent-before": 200, "child": 60, "parent-after": 30}
    assert distinct == got
    assert integrity_check(db_path) == "ok"


def test_readers_see_committed_rows_while_a_writer_runs(run_py, db_path):
    # A reader through a second tracker counts rows while threads write; counts only grow
    # and end at the total.
    proc = run_py(
        f"""
        import threading
        from xetrack_c import Tracker
        writer = Tracker({db_path!r})
        reader = Tracker({db_path!r})
        start = threading.Barrier(3)
        def write(k):
            start.wait()
            for i in range(3000):
                writer.log({{"k": k, "i": i}})
        threads = [threading.Thread(target=write, args=(k,)) for k in range(2)]
        for t in threads:
            t.start()
        start.wait()
        seen = []
        while any(t.is_alive() for t in threads):
            seen.append(reader.count_all())
        for t in threads:
            t.join()
        seen.append(reader.count_all())
        assert seen == sorted(seen), "a reader saw the row count go down"
        print(seen[-1])
        """,
        timeout=120,
    )
    assert proc.stdout.strip() == "6000"
    assert count_rows(db_path) == 6000


# ------------------------------------------------------------------ closing while others log
CLOSE_WHILE_LOGGING = """
import sys, threading
from xetrack_c import Tracker

DB, DURABILITY, ROUNDS = sys.argv[1], sys.argv[2], int(sys.argv[3])
for round in range(ROUNDS):
    tracker = Tracker(f"{DB}.{round}", durability=DURABILITY)
    running = threading.Barrier(2)
    logged = [0]

    def producer():
        running.wait()
        while True:
            sum(range(2000))  # stands for the caller's own work between rows
            try:
                tracker.log({"i": logged[0]})
            except ValueError:  # closed: the documented way a late log() fails
                return
            logged[0] += 1

    thread = threading.Thread(target=producer)
    thread.start()
    running.wait()
    while logged[0] < 500:
        pass
    tracker.close()
    thread.join()
    print(logged[0])
"""


@pytest.mark.parametrize(
    "durability",
    [
        "commit",
        pytest.param("async"),
    ],
)
def test_every_row_logged_while_another_thread_closes_is_stored(run_py, db_path, durability):
    rounds = 3
    proc = run_py(CLOSE_WHILE_LOGGING, timeout=60, args=[db_path, durability, str(rounds)])
    logged = [int(n) for n in proc.stdout.split()]
    stored = [count_rows(f"{db_path}.{r}") for r in range(rounds)]
    assert stored == logged  # every log() that returned is in the file


CLOSE_UNDER_FAST_PRODUCER = """
import sys, threading
from xetrack_c import Tracker

tracker = Tracker(sys.argv[1], durability=sys.argv[2])
CAP = 1_000_000
running = threading.Barrier(2)
state = {"logged": 0, "closed": False, "cap_reached_while_open": False}

def producer():
    running.wait()
    while state["logged"] < CAP:
        try:
            tracker.log({"i": 1})
        except ValueError:
            return
        state["logged"] += 1
    state["cap_reached_while_open"] = not state["closed"]

thread = threading.Thread(target=producer)
thread.start()
running.wait()
while state["logged"] < 1000:
    pass
tracker.close()
state["closed"] = True
thread.join()
print("close waited for the producer" if state["cap_reached_while_open"] else "close returned")
"""


@pytest.mark.parametrize("durability", ["commit", "fsync", "async"])
def test_close_does_not_wait_for_other_threads_to_stop_logging(run_py, db_path, durability):
    proc = run_py(CLOSE_UNDER_FAST_PRODUCER, timeout=120, args=[db_path, durability])
    assert proc.stdout.strip() == "close returned"


def test_async_log_racing_close_is_either_stored_or_refused(run_py, db_path):
    proc = run_py(
        f"""
        from xetrack_c import Tracker
        tracker = Tracker({db_path!r}, durability="async")

        class ClosesTheTracker:
            # runs while log() encodes the row (pickling it as an asset): the same
            # interleaving as close() on another thread landing between log()'s open
            # check and its enqueue
            def __reduce__(self):
                tracker.close()
                return (str, ("value",))

        try:
            tracker.log({{"v": ClosesTheTracker()}})
            print("returned")
        except ValueError:
            print("refused")
        """,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    outcome = proc.stdout.strip()
    if outcome == "returned":
        assert count_rows(db_path) == 1, "log() returned a row that was never written"
    else:
        assert outcome == "refused" and count_rows(db_path) == 0
