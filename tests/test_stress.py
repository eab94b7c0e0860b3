"""Stress and fault tests: many writers at once, writers killed mid-write, full disks.

Each scenario runs in a child interpreter (or several) under a timeout, so a deadlock
fails the test instead of hanging the run. Outcomes are exact: row counts, every row a
writer saw ``log()`` return, ``PRAGMA integrity_check``. The figures quoted in
docs/reliability.md come from the constants below.
"""

from __future__ import annotations

import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import child_env, connect, count_rows, integrity_check, read_rows

pytestmark = [
    pytest.mark.stress,
    pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals and resource limits"),
]

THREADS = 16
PROCESSES = 8
ROWS_EACH = 400
SHARED_EVERY = 50  # a new column shared by all writers every SHARED_EVERY rows
OWN_EVERY = 100  # a new column of each writer's own every OWN_EVERY rows


# --------------------------------------------------------------- many writers at once
CROWD = r"""
import json, sys, threading, traceback
import multiprocessing as mp
from xetrack_c import Reader, Tracker

DB, DURABILITY = sys.argv[1], sys.argv[2]
THREADS, PROCESSES, ROWS = int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
SHARED_EVERY, OWN_EVERY = int(sys.argv[6]), int(sys.argv[7])


def row(kind, worker, i):
    return {"kind": kind, "worker": worker, "i": i,
            f"shared_{i // SHARED_EVERY}": i,
            f"{kind}{worker}_{i // OWN_EVERY}": float(i)}


def log_rows(tracker, kind, worker, own):
    for i in range(ROWS):
        tracker.log(row(kind, worker, i))
        if i % 100 == 99:
            # Reads while everyone writes; a read through the tracker sees its own rows
            # (in async mode it flushes first).
            n = len(tracker)
            if own and n != i + 1:
                raise AssertionError(f"{kind}{worker}: len(tracker) {n} after {i + 1} rows")
            Reader(DB).to_arrays(track_id=tracker.track_id)


def process_main(worker, barrier):
    tracker = Tracker(DB, durability=DURABILITY, track_id=f"p{worker}")
    barrier.wait()
    log_rows(tracker, "p", worker, own=True)
    tracker.close()


def main():
    ctx = mp.get_context("spawn")
    proc_barrier = ctx.Barrier(PROCESSES + 1)
    procs = [ctx.Process(target=process_main, args=(w, proc_barrier)) for w in range(PROCESSES)]
    for p in procs:
        p.start()

    errors = []
    shared = Tracker(DB, durability=DURABILITY, track_id="shared")
    barrier = threading.Barrier(THREADS + 1)

    def thread_main(worker):
        try:
            # Even threads share one tracker, odd ones have their own.
            tracker = shared if worker % 2 == 0 else Tracker(DB, durability=DURABILITY,
                                                             track_id=f"t{worker}")
            barrier.wait()
            log_rows(tracker, "t", worker, own=tracker is not shared)
            if tracker is not shared:
                tracker.close()
        except BaseException:
            errors.append(traceback.format_exc())

    stop = threading.Event()
    reads = []

    def reader_main():
        last = 0
        try:
            while not stop.is_set():
                reader = Reader(DB)
                n = len(reader)
                if n < last:
                    errors.append(f"row count went back from {last} to {n}")
                last = n
                arrays = reader.to_arrays()
                if len(arrays["track_id"]) < n:
                    errors.append(f"to_arrays saw {len(arrays['track_id'])} rows after len() {n}")
                reads.append(n)
        except BaseException:
            errors.append(traceback.format_exc())

    threads = [threading.Thread(target=thread_main, args=(w,)) for w in range(THREADS)]
    readers = [threading.Thread(target=reader_main) for _ in range(2)]
    for t in threads + readers:
        t.start()
    proc_barrier.wait()
    barrier.wait()
    for t in threads:
        t.join()
    shared.close()
    for p in procs:
        p.join()
    stop.set()
    for t in readers:
        t.join()
    print(json.dumps({"errors": errors, "exitcodes": [p.exitcode for p in procs],
                      "reads": len(reads)}))


if __name__ == "__main__":
    main()
"""


@pytest.mark.parametrize("durability", ["commit", "async"])
def test_threads_and_processes_grow_the_schema_and_lose_no_row(run_py, db_path, durability):
    proc = run_py(CROWD, timeout=240, args=[
        db_path, durability, str(THREADS), str(PROCESSES), str(ROWS_EACH),
        str(SHARED_EVERY), str(OWN_EVERY),
    ])
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["errors"] == []
    assert report["exitcodes"] == [0] * PROCESSES, proc.stderr
    assert report["reads"] > 0

    writers = THREADS + PROCESSES
    assert count_rows(db_path) == writers * ROWS_EACH
    rows = read_rows(db_path)
    seen = set()
    for row in rows:
        kind, worker, i = row["kind"], row["worker"], row["i"]
        seen.add((kind, worker, i))
        assert row[f"shared_{i // SHARED_EVERY}"] == i
        assert row[f"{kind}{worker}_{i // OWN_EVERY}"] == float(i)
        # The columns other writers added are NULL in this row.
        others = [k for k, v in row.items() if v is not None]
        assert len(others) == 7, row  # track_id, timestamp, kind, worker, i, two columns
    expected = {("t", w, i) for w in range(THREADS) for i in range(ROWS_EACH)}
    expected |= {("p", w, i) for w in range(PROCESSES) for i in range(ROWS_EACH)}
    assert seen == expected
    shared_columns = -(-ROWS_EACH // SHARED_EVERY)
    own_columns = writers * -(-ROWS_EACH // OWN_EVERY)
    assert len(rows[0]) == 5 + shared_columns + own_columns
    assert integrity_check(db_path) == "ok"


# --------------------------------------------------------------- opening a new file at once
OPEN_ROUNDS = 40
OPENERS = 8

OPENING = r"""
import json, os, sys, traceback
import multiprocessing as mp
from xetrack_c import Tracker

base, rounds, openers, with_cache = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]


def opener(db, cache, barrier, errors):
    barrier.wait()
    try:
        tracker = Tracker(db, cache=cache, track_id=f"o{os.getpid()}", warnings=False)
        if cache:
            tracker.track(pow, args=[2, 10])
        else:
            tracker.log({"pid": os.getpid()})
        tracker.close()
    except BaseException:
        errors.put(traceback.format_exc())


if __name__ == "__main__":
    ctx = mp.get_context("fork")
    errors = ctx.Queue()
    for r in range(rounds):
        db = os.path.join(base, f"round{r}.db")
        cache = os.path.join(base, f"cache{r}") if with_cache == "cache" else None
        barrier = ctx.Barrier(openers)
        procs = [ctx.Process(target=opener, args=(db, cache, barrier, errors))
                 for _ in range(openers)]
        for p in procs:
            p.start()
        for p in procs:
            p.join()
    found = []
    while not errors.empty():
        found.append(errors.get())
    print(json.dumps({"errors": found}))
"""


@pytest.mark.parametrize("what", ["tracker", "cache"])
def test_processes_opening_a_new_file_at_once_never_see_locked(run_py, tmp_path, what):
    """All converting a new file to WAL at once once gave "database is locked" at once."""
    if what == "cache":
        pytest.importorskip("xetrack_c.cache", reason="result cache is not merged yet")
    proc = run_py(OPENING, timeout=240, args=[str(tmp_path), str(OPEN_ROUNDS), str(OPENERS), what])
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["errors"] == []
    if what == "tracker":
        for r in range(OPEN_ROUNDS):
            db = str(tmp_path / f"round{r}.db")
            assert count_rows(db) == OPENERS
            assert integrity_check(db) == "ok"


# --------------------------------------------------------------- writers killed at random
KILL_ROUNDS = 8
KILL_WRITERS = 4
KILL_SEED = 20240607

WRITER = r"""
import os, sys
from xetrack_c import Tracker

db, round_no, worker, ack_path = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
ack = os.open(ack_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
tracker = Tracker(db, track_id=f"r{round_no}w{worker}")  # default durability
i = 0
while True:
    # A new column every 20 rows (50 per round at most: a writer the machine lets run long
    # must not reach SQLite's 2,000-column limit), so kills also land in schema changes.
    tracker.log({"round": round_no, "worker": worker, "i": i, f"c{round_no}_{i // 20 % 50}": i,
                 "payload": "x" * (i % 300)})
    os.write(ack, b"%d\n" % i)  # log() returned: from here on the row must survive
    if i == 0:
        sys.stdout.write("ready\n")
        sys.stdout.flush()
    i += 1
"""


def _acked(path: Path) -> int:
    """How many rows a writer acknowledged (complete lines of its ack file)."""
    if not path.exists():
        return 0
    lines = path.read_bytes().split(b"\n")[:-1]  # a trailing partial line is not an ack
    assert [int(x) for x in lines] == list(range(len(lines)))
    return len(lines)


def test_sigkill_of_writers_keeps_every_returned_row(run_py, db_path, tmp_path):
    script = run_py.script(WRITER)
    rng = random.Random(KILL_SEED)
    kills = 0
    acked_total = 0
    for round_no in range(KILL_ROUNDS):
        procs = []
        for worker in range(KILL_WRITERS):
            ack = tmp_path / f"ack_{round_no}_{worker}"
            proc = subprocess.Popen(
                [sys.executable, str(script), db_path, str(round_no), str(worker), str(ack)],
                env=child_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            )
            procs.append((worker, ack, proc))
        try:
            for _, _, proc in procs:
                line = proc.stdout.readline()
                assert line == b"ready\n", proc.stderr.read().decode(errors="replace")
            for _, _, proc in procs:
                time.sleep(rng.uniform(0.0, 0.25))
                proc.send_signal(signal.SIGKILL)
            for _, _, proc in procs:
                code = proc.wait(timeout=60)
                assert code == -signal.SIGKILL, proc.stderr.read().decode(errors="replace")
                kills += 1
        finally:
            for _, _, proc in procs:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
                proc.stdout.close()
                proc.stderr.close()

        assert integrity_check(db_path) == "ok", f"round {round_no}"
        conn = connect(db_path)
        try:
            for worker, ack, _ in procs:
                acked = _acked(ack)
                rows = sorted(r[0] for r in conn.execute(
                    'SELECT i FROM "default" WHERE round = ? AND worker = ?', (round_no, worker)))
                # Every acknowledged row is there; at most one more row (committed, killed
                # before its ack was written); no gap, no duplicate.
                assert rows == list(range(len(rows))), f"round {round_no} worker {worker}"
                assert acked <= len(rows) <= acked + 1, (round_no, worker, acked, len(rows))
                acked_total += acked
        finally:
            conn.close()
    assert kills == KILL_ROUNDS * KILL_WRITERS
    assert acked_total > 0
    print(f"{kills} writers killed, {acked_total} acknowledged rows all kept")
    # The file still takes writes after all those kills.
    proc = run_py(f"""
        from xetrack_c import Tracker
        with Tracker({db_path!r}, track_id="after") as t:
            t.log({{"round": -1, "worker": -1, "i": -1}})
    """)
    assert proc.returncode == 0
    assert count_rows(db_path, where="WHERE track_id = 'after'") == 1


# --------------------------------------------------------------- full disk
FILL = r"""
import json, re, resource, signal, sys
from xetrack_c import StorageError, Tracker

db, durability, how = sys.argv[1], sys.argv[2], sys.argv[3]
if how == "fsize":
    # Without this the kernel kills the process with SIGXFSZ; ignored, write() fails
    # with EFBIG and the store has to report it.
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
tracker = Tracker(db, track_id="fill", durability=durability)
for i in range(5):
    tracker.log({"i": i, "phase": "before"})
tracker.flush()
if how == "fsize":
    resource.setrlimit(resource.RLIMIT_FSIZE, (256 * 1024, resource.RLIM_INFINITY))
logged, error, lost = 0, None, 0
try:
    for i in range(5, 200_000):
        tracker.log({"i": i, "phase": "filling", "pad": "y" * 1000})
        logged += 1
    tracker.flush()
except StorageError as exc:
    error = str(exc)
    found = re.search(r"lost (\d+) row", error)
    lost = int(found.group(1)) if found else 0
# The tracker stays usable: a later error is as clear, a later success is stored.
try:
    tracker.log({"i": -1, "phase": "after"})
    tracker.flush()
    after = "stored"
except StorageError as exc:
    after = str(exc)
tracker.close()
print(json.dumps({"logged": logged, "error": error, "lost": lost, "after": after}))
"""


def _check_full_disk(report, db_path, durability, reason):
    assert report["error"] is not None, "filling the disk raised nothing"
    assert reason.search(report["error"]), report["error"]
    assert db_path in report["error"]
    assert integrity_check(db_path) == "ok"
    before = count_rows(db_path, where="WHERE phase = 'before'")
    filling = count_rows(db_path, where="WHERE phase = 'filling'")
    after = count_rows(db_path, where="WHERE phase = 'after'")
    assert before == 5
    assert after == (1 if report["after"] == "stored" else 0)
    if report["after"] != "stored":
        assert reason.search(report["after"]), report["after"]
    if durability == "async":
        # Each queued row is either in the file or counted as lost, never both.
        assert report["lost"] > 0
        assert filling + report["lost"] == report["logged"]
    else:
        # log() raised on the first row that did not fit; every earlier one is kept.
        assert filling == report["logged"] > 0


@pytest.mark.parametrize("durability", ["commit", "fsync", "async"])
def test_file_size_limit_gives_a_clear_error_and_keeps_the_rows(run_py, db_path, durability):
    proc = run_py(FILL, timeout=120, args=[db_path, durability, "fsize"])
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    reason = re.compile(r"file size limit|too large", re.I)
    _check_full_disk(report, db_path, durability, reason)


@pytest.fixture
def small_tmpfs(tmp_path):
    """A 512 KiB tmpfs, where the privilege to mount one exists."""
    mount = tmp_path / "small"
    mount.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=512k", "tmpfs", str(mount)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=True)


@pytest.mark.parametrize("durability", ["commit", "async"])
def test_full_disk_gives_a_clear_error_and_keeps_the_rows(run_py, small_tmpfs, durability):
    db = str(small_tmpfs / "full.db")
    proc = run_py(FILL, timeout=120, args=[db, durability, "tmpfs"])
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    _check_full_disk(report, db, durability, re.compile(r"disk is full|no space", re.I))
