"""The result cache across threads and processes, and with damaged files.

Everything that could hang or crash runs in a child interpreter with a timeout."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3

import pytest

KEYED_CALLS = '''
import collections, dataclasses, enum, json, pathlib, sys
import numpy as np
from xetrack_c import Tracker

@dataclasses.dataclass(frozen=True)
class Config:
    name: str
    tags: frozenset

class Mode(enum.Enum):
    FAST = "fast"

VALUES = [
    "a string", b"bytes", frozenset({"x", "y", "z", "w"}), {"b", "a", "c"},
    {"z": 1, "a": [1.5, None]}, Config("c", frozenset({"p", "q"})), Mode.FAST,
    np.arange(6, dtype=np.float32).reshape(2, 3), pathlib.Path("/tmp/data"),
    (2**90, -0.0, float("nan")), collections.OrderedDict(k="v"),
]
CALLS = []

def work(value, scale=1):
    CALLS.append(repr(value))
    return {"seen": repr(value)[:40], "scale": scale}

with Tracker(sys.argv[1], cache=sys.argv[2], params={"suite": "s1"}) as tracker:
    keys = [tracker.cache_key(work, [v], {"scale": 2}) for v in VALUES]
    for v in VALUES:
        tracker.track(work, args=[v], kwargs={"scale": 2})
print(json.dumps({"keys": keys, "calls": len(CALLS), "track_id": tracker.track_id}))
'''


def test_a_fresh_interpreter_with_another_hash_seed_hits_the_entries(run_py, tmp_path):
    db, cache = str(tmp_path / "t.db"), str(tmp_path / "cache")
    first = json.loads(run_py(KEYED_CALLS, args=[db, cache], env={"PYTHONHASHSEED": "1"}).stdout)
    second = json.loads(run_py(KEYED_CALLS, args=[db, cache], env={"PYTHONHASHSEED": "4242"}).stdout)
    assert first["calls"] == 11 and second["calls"] == 0
    assert first["keys"] == second["keys"] and None not in first["keys"]
    assert len(set(first["keys"])) == 11
    conn = sqlite3.connect(db)
    lineage = [row[0] for row in conn.execute(
        'SELECT cache FROM "default" WHERE track_id = ? ORDER BY rowid', (second["track_id"],))]
    conn.close()
    assert lineage == [first["track_id"]] * 11


SINGLE_FLIGHT = '''
import sys, threading, time
from xetrack_c import Tracker

tracker = Tracker(sys.argv[1], cache=sys.argv[2])
runs, lock = [], threading.Lock()
barrier = threading.Barrier(8)
fail_first = sys.argv[3] == "fail-first"

def slow(x):
    with lock:
        runs.append(x)
        attempt = len(runs)
    time.sleep(0.3)
    if fail_first and attempt == 1:
        raise RuntimeError("first attempt fails")
    return x * 10

results, errors = [], []

def worker():
    barrier.wait()
    try:
        results.append(tracker.track(slow, args=[7]))
    except RuntimeError as exc:
        errors.append(str(exc))

threads = [threading.Thread(target=worker) for _ in range(8)]
for t in threads:
    t.start()
for t in threads:
    t.join()
tracker.close()
print(len(runs), sorted(results), errors)
'''


def test_eight_threads_with_one_key_compute_once(run_py, tmp_path):
    out = run_py(SINGLE_FLIGHT, args=[str(tmp_path / "t.db"), str(tmp_path / "c"), "ok"], timeout=60)
    assert out.stdout.split("\n")[0] == "1 " + str([70] * 8) + " []"
    conn = sqlite3.connect(tmp_path / "t.db")
    caches = [row[0] for row in conn.execute('SELECT cache FROM "default"')]
    conn.close()
    assert sorted(caches).count("") == 1 and len(caches) == 8


def test_a_waiter_computes_when_the_first_call_raises(run_py, tmp_path):
    out = run_py(SINGLE_FLIGHT, args=[str(tmp_path / "t.db"), str(tmp_path / "c"), "fail-first"], timeout=60)
    runs, rest = out.stdout.split(" ", 1)
    assert runs == "2", out.stdout  # the failed call, then one waiter; the others hit
    assert rest.strip() == str([70] * 7) + " ['first attempt fails']"


def test_recursion_with_the_same_key_does_not_deadlock(run_py, tmp_path):
    code = '''
import sys
from xetrack_c import Tracker
tracker = Tracker(sys.argv[1], cache=sys.argv[2])
depth = []

def again(x):
    depth.append(x)
    if len(depth) < 3:
        return tracker.track(again, args=[x]) + 1
    return 0

print(tracker.track(again, args=[5]), len(depth))
print(tracker.track(again, args=[5]), len(depth))
'''
    out = run_py(code, args=[str(tmp_path / "t.db"), str(tmp_path / "c")], timeout=30)
    first, calls, second, calls_after = out.stdout.split()
    assert (first, calls, calls_after) == ("2", "3", "3")  # the second call is a hit
    assert second == "0"  # the innermost call stored first; later stores of the key keep it


def test_threads_waiting_on_each_other_do_not_deadlock(run_py, tmp_path):
    code = '''
import sys, threading
from xetrack_c import Tracker
tracker = Tracker(sys.argv[1], cache=sys.argv[2])
both_own_a_key = threading.Barrier(2)

def fa():
    if threading.current_thread().name == "t1":
        both_own_a_key.wait()
        return tracker.track(fb) + "a"  # fb is t2's
    return "A"

def fb():
    if threading.current_thread().name == "t2":
        both_own_a_key.wait()
        return tracker.track(fa) + "b"  # fa is t1's: a ring, so t2 computes it itself
    return "B"

out = {}
def run(func):
    out[threading.current_thread().name] = tracker.track(func)

threads = [threading.Thread(target=run, args=(fa,), name="t1"),
           threading.Thread(target=run, args=(fb,), name="t2")]
for t in threads:
    t.start()
for t in threads:
    t.join()
print(out["t1"], out["t2"])
'''
    out = run_py(code, args=[str(tmp_path / "t.db"), str(tmp_path / "c")], timeout=30)
    # whichever thread found the ring computed the other's function itself
    assert out.stdout.split() in (["Aba", "Ab"], ["Ba", "Bab"])


def test_processes_sharing_a_cache_keep_it_consistent(run_py, tmp_path):
    code = '''
import sys
from multiprocessing import get_context
from xetrack_c import Tracker

def work(i):
    return {"v": i * i}

def child(n):
    with Tracker(sys.argv[1], cache=sys.argv[2]) as tracker:
        return [tracker.track(work, args=[i % 40])["v"] for i in range(n)]

if __name__ == "__main__":
    with get_context("spawn").Pool(4) as pool:
        outs = pool.map(child, [200] * 4)
    assert all(out == [(i % 40) ** 2 for i in range(200)] for out in outs)
    from xetrack_c.cache import scan_cache
    entries = dict(scan_cache(sys.argv[2]))
    assert len(entries) == 40, len(entries)
    assert sorted(e["result"]["v"] for e in entries.values()) == [i * i for i in range(40)]
    print("ok")
'''
    out = run_py(code, args=[str(tmp_path / "t.db"), str(tmp_path / "c")], timeout=120)
    assert out.stdout.strip() == "ok"


def test_a_forked_child_uses_the_cache(run_py, tmp_path):
    code = '''
import os, sys
from xetrack_c import Tracker
tracker = Tracker(sys.argv[1], cache=sys.argv[2])

def sq(x):
    return x * x

tracker.track(sq, args=[3])
pid = os.fork()
if pid == 0:
    ok = tracker.track(sq, args=[3]) == 9 and tracker.track(sq, args=[4]) == 16
    os._exit(0 if ok else 1)
_, status = os.waitpid(pid, 0)
print(os.waitstatus_to_exitcode(status), tracker.track(sq, args=[4]), len(tracker.cache))
'''
    out = run_py(code, args=[str(tmp_path / "t.db"), str(tmp_path / "c")], timeout=30)
    assert out.stdout.split() == ["0", "16", "2"]


DAMAGED = '''
import sys
from xetrack_c import Tracker, StorageError
from xetrack_c.cache import read_cache, scan_cache

def sq(x):
    return x * x

outcomes = []
for attempt in ("tracker", "read", "scan"):
    try:
        if attempt == "tracker":
            with Tracker(sys.argv[1], cache=sys.argv[2]) as tracker:
                outcomes.append(("tracker", tracker.track(sq, args=[3])))
        elif attempt == "read":
            outcomes.append(("read", read_cache(sys.argv[2], "0" * 32)))
        else:
            outcomes.append(("scan", len(list(scan_cache(sys.argv[2])))))
    except (StorageError, ValueError) as exc:
        assert "cache.db" in str(exc), str(exc)
        outcomes.append((attempt, type(exc).__name__))
print(outcomes)
'''


@pytest.mark.parametrize("cut", [0, 50, 100, 4096, 0.5, -100])
def test_a_truncated_cache_file_gives_a_clear_error_or_works(run_py, tmp_path, cut):
    db, cache = str(tmp_path / "t.db"), tmp_path / "cache"
    fill = '''
import sys
from xetrack_c import Tracker
def pad(i):
    return "x" * 3000 + str(i)
with Tracker(sys.argv[1], cache=sys.argv[2]) as tracker:
    for i in range(200):
        tracker.track(pad, args=[i])
'''
    run_py(fill, args=[db, str(cache)])
    path = cache / "cache.db"
    for extra in ("cache.db-wal", "cache.db-shm"):
        if (cache / extra).exists():
            os.remove(cache / extra)
    size = path.stat().st_size
    keep = int(size * cut) if isinstance(cut, float) else (size + cut if cut < 0 else cut)
    with open(path, "r+b") as handle:
        handle.truncate(keep)
    out = run_py(DAMAGED, args=[db, str(cache)], timeout=60, check=False)
    assert out.returncode == 0, out.stderr  # never a crash
    assert "tracker" in out.stdout and "scan" in out.stdout


def test_a_corrupted_page_gives_a_clear_error_or_works(run_py, tmp_path):
    db, cache = str(tmp_path / "t.db"), tmp_path / "cache"
    run_py('''
import sys
from xetrack_c import Tracker
def pad(i):
    return "y" * 2000 + str(i)
with Tracker(sys.argv[1], cache=sys.argv[2]) as tracker:
    for i in range(100):
        tracker.track(pad, args=[i])
''', args=[db, str(cache)])
    path = cache / "cache.db"
    data = bytearray(path.read_bytes())
    for offset in range(4096 + 100, len(data), 4096):
        data[offset:offset + 64] = b"\xde\xad\xbe\xef" * 16
    path.write_bytes(bytes(data))
    out = run_py(DAMAGED, args=[db, str(cache)], timeout=60, check=False)
    assert out.returncode == 0, out.stderr


def test_deleting_the_damaged_file_starts_afresh(run_py, tmp_path):
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "cache.db").write_bytes(b"\x00garbage" * 64)
    out = run_py(DAMAGED, args=[str(tmp_path / "t.db"), str(cache)], check=False)
    assert "('tracker', 'CorruptDatabaseError')" in out.stdout
    shutil.rmtree(cache)
    out = run_py(DAMAGED, args=[str(tmp_path / "t.db"), str(cache)])
    assert "('tracker', 9)" in out.stdout


def test_import_of_the_cache_module_stays_light(run_py):
    out = run_py('''
import sys
import xetrack_c.cache
from xetrack_c.cache import scan_cache
print(sorted(m for m in ("pandas", "numpy", "cloudpickle") if m in sys.modules))
''')
    assert out.stdout.strip() == "[]"
