"""Leak tests: Trackers, Readers and seeding used and dropped in loops.

Two kinds of checks:

- references: ``sys.getrefcount`` of every object handed to the core (values, params,
  functions, arguments, results, callbacks) is back where it was once the tracker or
  reader is gone, on success and on error paths;
- memory: Python allocations (tracemalloc) and RSS stay bounded over thousands of calls,
  and no OS thread or file descriptor outlives the object that opened it. These run in a
  fresh child interpreter so other tests' memory does not blur them. RSS limits are not
  checked under AddressSanitizer, whose quarantine keeps freed memory resident.
"""

from __future__ import annotations

import gc
import sys
import warnings

import pytest
from leakcheck import assert_bounded

import xetrack_c
from xetrack_c import StorageError, Tracker, _core


class Marker:
    """A value the core stores as an asset (pickled): one more object whose references we count."""

    def __str__(self) -> str:
        return "marker"


def refcounts(*objects):
    gc.collect()
    return [sys.getrefcount(o) for o in objects]


# ------------------------------------------------------------------ references
@pytest.mark.parametrize("durability", ["commit", "async"])
def test_tracker_holds_no_reference_to_logged_values_once_dropped(tmp_path, durability):
    text = "t" * 1000 + "unique"
    big = 10**15 + 12345
    blob = bytes(range(256))
    listed = [1, 2, 3]
    marker = Marker()
    param = "param-" + "p" * 50
    objects = (text, big, blob, listed, marker, param)
    before = refcounts(*objects)
    for round_no in range(20):
        tracker = Tracker(str(tmp_path / "r.db"), params={"p": param}, durability=durability,
                          warnings=False)
        for i in range(20):
            tracker.log({"text": text, "big": big, "blob": blob, "listed": listed,
                         "marker": marker, "i": i})
        tracker.log_batch([{"text": text, "big": big}, {"blob": blob, "marker": marker}])
        tracker.set_params({"q": param})
        tracker.set_param("r", param)
        assert tracker.count_all() == 22 * (round_no + 1)
        tracker.close()
        del tracker
    assert refcounts(*objects) == before


def test_tracker_dropped_without_close_releases_everything(tmp_path):
    value = "v" * 100 + "x"
    before = refcounts(value)
    for _ in range(50):
        tracker = Tracker(str(tmp_path / "d.db"), params={"p": value})
        tracker.log({"value": value})
        del tracker
    assert refcounts(value) == before


def test_track_holds_no_reference_to_function_arguments_or_result(tmp_path):
    result = {"score": 0.5}
    argument = ("a" * 40, 7)
    keyword = "k" * 40
    per_call = "pc" * 20

    def scored(item, key=None):
        return result

    def failing(item, key=None):
        raise RuntimeError("expected failure")

    objects = (scored, failing, result, argument, keyword, per_call)
    before = refcounts(*objects)
    for _ in range(10):
        tracker = Tracker(str(tmp_path / "t.db"), raise_on_error=False, warnings=False)
        for _ in range(20):
            assert tracker.track(scored, params={"pc": per_call}, args=[argument],
                                 kwargs={"key": keyword}) is result
            tracker.track(failing, args=[argument], kwargs={"key": keyword})
        wrapped = tracker.wrap(params={"pc": per_call})(scored)
        assert wrapped(argument, key=keyword) is result
        del wrapped
        tracker.close()
        del tracker
    assert refcounts(*objects) == before


def test_error_paths_release_their_references(tmp_path):
    too_big = 2**70
    good = "g" * 64 + "good"
    bad_key = "".join(["not ", "interned"])
    before = refcounts(too_big, good, bad_key)
    tracker = Tracker(str(tmp_path / "e.db"), warnings=False)
    for _ in range(200):
        with pytest.raises(OverflowError):
            tracker.log({"good": good, "too_big": too_big})
        with pytest.raises(ValueError, match="non-empty"):
            tracker.log({bad_key: good, "": good})
        with pytest.raises((TypeError, ValueError)):
            tracker.log_batch([{"good": good}, "not a dict"])
    tracker.close()
    with pytest.raises(ValueError, match="closed"):
        tracker.log({"good": good})
    del tracker
    assert refcounts(too_big, good, bad_key) == before


def test_opening_a_non_database_releases_its_references(tmp_path):
    path = tmp_path / "garbage.db"
    path.write_bytes(b"this is not a database, just text " * 200)
    db = str(path)
    before = refcounts(db)
    for _ in range(50):
        with pytest.raises(StorageError):
            Tracker(db).log({"a": 1})
        with pytest.raises(StorageError):
            len(xetrack_c.Reader(db))
    assert refcounts(db) == before


def test_reader_holds_no_reference_once_dropped(tmp_path):
    db = str(tmp_path / "reader.db")
    with Tracker(db, track_id="run") as tracker:
        tracker.log_batch([{"i": i, "f": i / 2, "s": str(i), "b": bytearray(b"xy")}
                           for i in range(200)])
    track_id = "".join(["r", "un"])  # not interned: no module holds this object
    reader = xetrack_c.Reader(db)
    reader.to_df(head=1), reader.latest()  # imports pandas before counting
    del reader
    before = refcounts(db, track_id)
    for _ in range(30):
        reader = xetrack_c.Reader(db)
        assert len(reader) == 200
        arrays = reader.to_arrays(track_id=track_id)
        assert len(arrays["i"]) == 200
        assert len(reader.to_df(head=5)) == 5
        assert len(reader.latest()) == 200
        assert "s" in reader.columns
        del reader, arrays
    assert refcounts(db, track_id) == before


def test_seeding_and_canonical_json_hold_no_references():
    default = str
    payload_text = "seed-" * 20
    policy = xetrack_c.SeedPolicy(base_seed=3)
    objects = (default, payload_text, policy)
    before = refcounts(*objects)
    for i in range(500):
        policy.derive_seed(payload_text, "c", i)
        xetrack_c.derive_seed(payload_text, i, {"k": [payload_text, i]})
        _core.canonical_json({"a": payload_text, "o": object()}, default, True)
        _core.canonical_sha256([payload_text, Marker()], default)
        with pytest.raises(TypeError):
            _core.canonical_json({"o": object()})
        with xetrack_c.reproducible_seed(i):
            pass
    assert refcounts(*objects) == before


# ------------------------------------------------------------------ memory, threads, files
LOOPS = r"""
import json, sys, warnings
import xetrack_c
from xetrack_c import Tracker, _core
from leakcheck import assert_bounded, open_fds, os_threads, threads_after

db, step_name = sys.argv[1], sys.argv[2]
warnings.simplefilter("ignore")

def tracker_lifecycle():
    with Tracker(db, params={"model": "m"}, track_id="life") as t:
        t.log({"a": 1, "b": 2.5, "c": "text"})
        t.log_batch([{"a": i} for i in range(5)])
        len(t)

def async_lifecycle():
    t = Tracker(db, durability="async", track_id="async")
    t.log({"a": 1, "s": "x" * 100})
    t.flush()
    t.close()

long_lived = Tracker(db, track_id="long")
row = {"a": 1, "b": 2.5, "c": "some text", "d": b"bytes", "e": None, "f": [1, 2]}
def log_one():
    long_lived.log(row)

def track_one():
    long_lived.track(lambda x, y=1: {"out": x + y}, params={"p": 1}, args=[1], kwargs={"y": 2})

def error_one():
    try:
        long_lived.log({"too_big": 2**70, "ok": "x" * 200})
    except OverflowError:
        pass
    try:
        long_lived.log_batch([{"a": 1}, 5])
    except TypeError:
        pass

reader_db = db + ".read"
with Tracker(reader_db, track_id="r") as t:
    t.log_batch([{"i": i, "f": i / 3, "s": f"text {i}"} for i in range(500)])
def reader_one():
    r = xetrack_c.Reader(reader_db)
    r.to_arrays()
    len(r)

def seed_one():
    xetrack_c.SeedPolicy().derive_seed("study", "cond", 3)
    xetrack_c.derive_seed("a", 1, {"k": [1, 2.5, None]})
    _core.canonical_json({"k": [object()]}, str, True)
    with xetrack_c.reproducible_seed(7):
        pass

# name: (step, iterations, warm-up calls, RSS limit in KiB). The limits leave room for
# SQLite's page cache and WAL index, yet a leak of 100 bytes per logged row, one SQLite
# connection per tracker or one column buffer per read would pass them.
steps = {
    "tracker_lifecycle": (tracker_lifecycle, 300, 30, 8 * 1024),
    "async_lifecycle": (async_lifecycle, 200, 20, 8 * 1024),
    "log": (log_one, 60000, 10000, 4 * 1024),
    "track": (track_one, 5000, 1000, 4 * 1024),
    "errors": (error_one, 5000, 500, 4 * 1024),
    "reader": (reader_one, 300, 30, 8 * 1024),
    "seeding": (seed_one, 1000, 100, 4 * 1024),
}
step, iterations, warmup, rss_limit_kib = steps[step_name]
step()  # imports (numpy may start its own threads) before the baseline
threads, fds = os_threads(), open_fds()
assert_bounded(step, iterations, warmup, rss_limit_kib=rss_limit_kib)
long_lived.close()
print(json.dumps({"threads": [threads, threads_after(threads)], "fds": [fds, open_fds()]}))
"""


@pytest.mark.parametrize(
    "step", ["tracker_lifecycle", "async_lifecycle", "log", "track", "errors", "reader", "seeding"]
)
def test_memory_threads_and_files_stay_bounded(run_py, db_path, step):
    import json

    proc = run_py(LOOPS, timeout=240, args=[db_path, step])
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    threads_before, threads_after = report["threads"]
    fds_before, fds_after = report["fds"]
    assert threads_after <= threads_before, "an OS thread outlived its tracker"
    assert fds_after <= fds_before, "a file descriptor outlived its tracker or reader"


def test_leak_helper_catches_a_leak():
    hoard = []
    with pytest.raises(AssertionError, match="Python allocations grew"):
        assert_bounded(lambda: hoard.append(bytearray(1000)), iterations=1000, warmup=10)


def test_warning_paths_do_not_accumulate(tmp_path):
    marker = Marker()
    before = refcounts(marker)
    tracker = Tracker(str(tmp_path / "w.db"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for _ in range(200):
            tracker.log({})
            tracker.track(lambda m: {"m": m, "nested": {"x": 1}}, args=[marker])
    tracker.close()
    del tracker
    assert refcounts(marker) == before


# ------------------------------------------------------------------ allocators
DEBUG_ALLOCATOR_USE = """
import gc, sys, warnings
from xetrack_c import Reader, Tracker

db, cache_dir = sys.argv[1], sys.argv[2]
warnings.simplefilter("ignore")
for durability in ("commit", "fsync", "async"):
    tracker = Tracker(db, durability=durability, params={"p": 1}, cache=cache_dir)
    tracker.log({"a": 1, "b": "x" * 100, "c": b"y" * 700, "d": bytearray(3), "e": 1.5})
    tracker.log_batch([{"f": i, "g": [i]} for i in range(100)])
    tracker.track(lambda x: {"out": x * 2}, args=[3])
    tracker.track(lambda x: {"out": x * 2}, args=[3])  # a cache hit
    tracker.set_value("b", "z")
    len(tracker), tracker.to_df(), tracker.columns
    tracker.close()
    del tracker
dropped = Tracker(db, durability="async")
dropped.log({"h": 1})
del dropped  # dropped without close()
reader = Reader(db)
reader.to_df(), len(reader)
del reader
gc.collect()
print("freed")
"""


def test_every_allocation_is_freed_by_its_own_allocator(run_py, tmp_path):
    """CPython's debug allocator aborts on a pointer freed by another allocator family
    (PyMem_RawMalloc'd memory passed to free(), say)."""
    proc = run_py(
        DEBUG_ALLOCATOR_USE,
        timeout=240,
        check=False,
        args=[str(tmp_path / "alloc.db"), str(tmp_path / "cache")],
        env={"PYTHONMALLOC": "debug", "PYTHONDEVMODE": "1"},
    )
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stderr[-3000:]}"
    assert proc.stdout.strip().endswith("freed")
