"""Group commit and the checkpointer: threads of one process writing through one Tracker.

Threads that wait for the store's write lock join the transaction that commits next; each
``log()`` still returns only after its own row is committed, and a failure reaches every
caller whose row was in the failed transaction. WAL checkpoints run on a thread of their
own: the WAL stays bounded under a steady writer and is folded back on close.

Each scenario runs in a child interpreter under a timeout (a deadlock fails the test
instead of hanging the run); the file is then read back with sqlite3.
"""

from __future__ import annotations

import json
import sqlite3
import sys

import pytest
from conftest import count_rows, integrity_check, read_rows

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(sys.platform == "win32", reason="POSIX process semantics"),
]

THREADS = 8

# ------------------------------------------------------------------ every row, visible at return
VISIBLE = r"""
import json, sqlite3, sys, threading
from xetrack_c import Tracker

DB, DURABILITY, THREADS, ROWS = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
tracker = Tracker(DB, durability=DURABILITY)
tracker.log({"writer": -1, "i": -1})
barrier = threading.Barrier(THREADS)
unseen = []

def write(w):
    barrier.wait()
    for i in range(ROWS):
        tracker.log({"writer": w, "i": i})
        # A second connection, opened after log() returned, must see the row.
        conn = sqlite3.connect(DB, timeout=60)
        n = conn.execute('SELECT count(*) FROM "default" WHERE writer = ? AND i = ?',
                         (w, i)).fetchone()[0]
        conn.close()
        if n != 1:
            unseen.append((w, i, n))

threads = [threading.Thread(target=write, args=(w,)) for w in range(THREADS)]
for t in threads:
    t.start()
for t in threads:
    t.join()
tracker.close()
print(json.dumps({"unseen": unseen}))
"""


@pytest.mark.parametrize("durability", ["commit", "fsync"])
def test_every_row_of_eight_threads_is_stored_once_and_visible_when_log_returns(
        run_py, db_path, durability):
    rows = 150
    proc = run_py(VISIBLE, timeout=300, args=[db_path, durability, str(THREADS), str(rows)])
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["unseen"] == []
    got = read_rows(db_path, where="WHERE writer >= 0")
    assert len(got) == THREADS * rows
    assert {(r["writer"], r["i"]) for r in got} == {
        (w, i) for w in range(THREADS) for i in range(rows)}
    assert integrity_check(db_path) == "ok"


# ------------------------------------------------------------------ a bad row fails only its caller
REFUSED = r"""
import json, sqlite3, sys, threading
from xetrack_c import StorageError, Tracker

DB, THREADS, ROWS = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
tracker = Tracker(DB)
tracker.log({"writer": -1, "i": -1, "bad": 0})
conn = sqlite3.connect(DB)
conn.execute('CREATE TRIGGER refuse BEFORE INSERT ON "default" WHEN NEW.bad = 1 '
             "BEGIN SELECT RAISE(ABORT, 'refused by the test trigger'); END")
conn.commit()
conn.close()
barrier = threading.Barrier(THREADS)
ok, refused, wrong = [], [], []

def write(w):
    barrier.wait()
    for i in range(ROWS):
        bad = int(i % 5 == 0)
        try:
            tracker.log({"writer": w, "i": i, "bad": bad})
        except StorageError as exc:
            (refused if "refused by the test trigger" in str(exc) else wrong).append([w, i, bad, str(exc)])
        else:
            ok.append([w, i, bad])

threads = [threading.Thread(target=write, args=(w,)) for w in range(THREADS)]
for t in threads:
    t.start()
for t in threads:
    t.join()
tracker.close()
print(json.dumps({"ok": ok, "refused": refused, "wrong": wrong}))
"""


def test_a_refused_row_fails_only_its_own_caller_in_a_group(run_py, db_path):
    rows = 200
    proc = run_py(REFUSED, timeout=300, args=[db_path, str(THREADS), str(rows)])
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["wrong"] == []
    assert all(bad == 0 for _, _, bad in report["ok"])
    assert all(bad == 1 for _, _, bad, _ in report["refused"])
    assert len(report["refused"]) == THREADS * (rows // 5)
    stored = {(r["writer"], r["i"]) for r in read_rows(db_path, where="WHERE writer >= 0")}
    assert stored == {(w, i) for w, i, _ in report["ok"]}
    assert len(stored) == THREADS * rows - THREADS * (rows // 5)


# ------------------------------------------------------------------ a failed commit reaches every member
FULL = r"""
import json, resource, signal, sys, threading
from xetrack_c import StorageError, Tracker

DB, THREADS = sys.argv[1], int(sys.argv[2])
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
tracker = Tracker(DB)
tracker.log({"writer": -1, "i": -1, "pad": ""})
resource.setrlimit(resource.RLIMIT_FSIZE, (512 * 1024, resource.RLIM_INFINITY))
barrier = threading.Barrier(THREADS)
ok, failed, errors = [], [], set()

def write(w):
    barrier.wait()
    misses = 0
    for i in range(100_000):
        try:
            tracker.log({"writer": w, "i": i, "pad": "y" * 2000})
        except StorageError as exc:
            failed.append([w, i])
            errors.add(str(exc).split(" (SQLite code")[0])
            misses += 1
            if misses == 20:
                return
        else:
            ok.append([w, i])

threads = [threading.Thread(target=write, args=(w,)) for w in range(THREADS)]
for t in threads:
    t.start()
for t in threads:
    t.join()
resource.setrlimit(resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
tracker.close()
print(json.dumps({"ok": ok, "failed": failed, "errors": sorted(errors)}))
"""


def test_a_failed_commit_is_reported_to_every_caller_and_no_row_is_lost(run_py, db_path):
    proc = run_py(FULL, timeout=300, args=[db_path, str(THREADS)])
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    # Every thread was told of the failure; nothing it was told was stored is missing,
    # and nothing it was told failed is in the file.
    assert {w for w, _ in report["failed"]} == set(range(THREADS))
    assert report["ok"], "no row fitted under the limit"
    stored = {(r["writer"], r["i"]) for r in read_rows(db_path, where="WHERE writer >= 0")}
    assert stored == {(w, i) for w, i in report["ok"]}
    assert not stored & {(w, i) for w, i in report["failed"]}
    assert integrity_check(db_path) == "ok"


# ------------------------------------------------------------------ new columns inside a group
COLUMNS = r"""
import sys, threading
from xetrack_c import Tracker

DB, THREADS, ROWS = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
tracker = Tracker(DB)
barrier = threading.Barrier(THREADS)

def write(w):
    barrier.wait()
    for i in range(ROWS):
        # A column of this thread's own every 10 rows, and one all threads share.
        tracker.log({"writer": w, "i": i, f"own_{w}_{i // 10}": i * 1.5, f"shared_{i // 25}": i})

threads = [threading.Thread(target=write, args=(w,)) for w in range(THREADS)]
for t in threads:
    t.start()
for t in threads:
    t.join()
tracker.close()
"""


def test_rows_adding_columns_from_several_threads_are_all_stored(run_py, db_path):
    rows = 100
    run_py(COLUMNS, timeout=300, args=[db_path, str(THREADS), str(rows)])
    got = read_rows(db_path)
    assert len(got) == THREADS * rows
    for r in got:
        w, i = r["writer"], r["i"]
        assert r[f"own_{w}_{i // 10}"] == i * 1.5
        assert r[f"shared_{i // 25}"] == i
        others = [k for k, v in r.items() if k.startswith("own_") and v is not None]
        assert others == [f"own_{w}_{i // 10}"]


# ------------------------------------------------------------------ fork while groups commit
FORK = r"""
import json, os, sys, threading
from xetrack_c import Tracker

DB, THREADS = sys.argv[1], int(sys.argv[2])
tracker = Tracker(DB)
stop = threading.Event()
counts = [0] * THREADS

def write(w):
    while not stop.is_set():
        tracker.log({"writer": w, "i": counts[w], "pad": "z" * 500})
        counts[w] += 1

threads = [threading.Thread(target=write, args=(w,)) for w in range(THREADS)]
for t in threads:
    t.start()
children = []
for k in range(5):
    while sum(counts) < 400 * (k + 1):
        threading.Event().wait(0.005)
    pid = os.fork()
    if pid == 0:
        try:
            before = len(os.listdir("/proc/self/task"))
            for i in range(3000):  # past the checkpoint threshold: the child starts its own
                tracker.log({"writer": 100 + k, "i": i, "pad": "c" * 500})
            grew = len(os.listdir("/proc/self/task")) > before
            tracker.close()
            os._exit(0 if grew else 3)
        except BaseException:
            os._exit(2)
    children.append(pid)
statuses = [os.waitpid(pid, 0)[1] for pid in children]
stop.set()
for t in threads:
    t.join()
tracker.close()
print(json.dumps({"statuses": statuses, "counts": counts}))
"""


@pytest.mark.no_sanitizer
def test_fork_while_groups_commit_and_the_checkpointer_runs(run_py, db_path):
    proc = run_py(FORK, timeout=300, args=[db_path, "4"])
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["statuses"] == [0] * 5
    for w, n in enumerate(report["counts"]):
        assert count_rows(db_path, where="WHERE writer = ?", params=(w,)) == n
    for k in range(5):
        assert count_rows(db_path, where="WHERE writer = ?", params=(100 + k,)) == 3000
    assert integrity_check(db_path) == "ok"


# ------------------------------------------------------------------ the WAL, bounded and folded back
STEADY = r"""
import json, os, sys
from xetrack_c import Tracker

DB, ROWS, MOVE = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "move"
threads_before = len(os.listdir("/proc/self/task"))
os.chdir(os.path.dirname(DB))
tracker = Tracker(os.path.basename(DB))  # a relative path
if MOVE:
    os.chdir("/")  # the checkpointer still finds the file
largest = 0
for i in range(ROWS):
    tracker.log({"i": i, "x": i * 0.5, "s": f"v-{i % 1000}"})
    if i % 250 == 0:
        largest = max(largest, os.path.getsize(DB + "-wal"))
threads_open = len(os.listdir("/proc/self/task"))
tracker.close()
threads_closed = len(os.listdir("/proc/self/task"))
wal_after = os.path.getsize(DB + "-wal") if os.path.exists(DB + "-wal") else None
print(json.dumps({"largest": largest, "wal_after": wal_after, "threads": [
    threads_before, threads_open, threads_closed]}))
"""


@pytest.mark.parametrize("cwd", ["stay", "move"])
def test_a_steady_writer_keeps_the_wal_bounded_and_close_folds_it_back(run_py, db_path, cwd):
    rows = 20_000
    proc = run_py(STEADY, timeout=300, args=[db_path, str(rows), cwd])
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    # Unchecked, 20,000 single-row commits leave a WAL of over 150 MB (about two pages a
    # row); the checkpointer keeps it to a few thousand pages.
    assert report["largest"] < 48 * 2**20, report
    assert report["wal_after"] in (None, 0), report
    before, opened, closed = report["threads"]
    assert opened == before + 1  # the checkpointer
    assert closed == before  # stopped by close()
    assert count_rows(db_path) == rows
    assert integrity_check(db_path) == "ok"


def test_close_copies_the_wal_into_the_database_while_another_connection_is_open(tmp_path):
    from xetrack_c import Tracker

    db = str(tmp_path / "t.db")
    other = sqlite3.connect(db)
    tracker = Tracker(db)
    for i in range(500):
        tracker.log({"i": i})
    tracker.close()
    # The WAL stays (another connection is open), but the database file alone, read
    # without it, holds every row.
    alone = sqlite3.connect(f"file:{db}?immutable=1", uri=True)
    try:
        assert alone.execute('SELECT count(*), min(i), max(i) FROM "default"').fetchone() == (500, 0, 499)
    finally:
        alone.close()
        other.close()


UNCLOSED = r"""
import sys
from xetrack_c import Tracker

tracker = Tracker(sys.argv[1])
for i in range(5000):  # the checkpointer has started
    tracker.log({"i": i, "pad": "p" * 200})
# No close(): the interpreter exits with the tracker and its checkpointer alive.
print("done")
"""


def test_the_checkpointer_does_not_keep_the_interpreter_alive(run_py, db_path):
    proc = run_py(UNCLOSED, timeout=120, args=[db_path])
    assert proc.stdout.strip() == "done"
    assert count_rows(db_path) == 5000
    assert integrity_check(db_path) == "ok"
