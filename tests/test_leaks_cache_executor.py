"""Leak tests for the result cache and the parallel executor.

Same checks as tests/test_leaks.py: references to what is passed in are released, memory
stays bounded over many calls, and no OS thread, file descriptor or child process
outlives a batch. Each group skips only while its feature is missing.
"""

from __future__ import annotations

import gc
import json
import sys
import warnings

import pytest

import xetrack_c
from xetrack_c import Tracker


def _have_cache() -> bool:
    try:
        from xetrack_c import cache
    except ImportError:
        return False
    return hasattr(cache, "cache_key")


needs_cache = pytest.mark.skipif(
    not _have_cache(), reason="result cache (xetrack_c.cache, Tracker(cache=...)) is not merged yet"
)
needs_executor = pytest.mark.skipif(
    not (hasattr(xetrack_c, "run_multiple") and hasattr(xetrack_c, "ExperimentSpec")),
    reason="parallel executor (xetrack_c.run_multiple, ExperimentSpec) is not merged yet",
)


def refcounts(*objects):
    gc.collect()
    return [sys.getrefcount(o) for o in objects]


def doubled(item, scale=1):
    return {"value": item[0] * 2 * scale}


def task(config):
    return {"out": config["x"] * 2, "label": config["label"]}


# ------------------------------------------------------------------ result cache
@needs_cache
def test_cached_track_releases_arguments_and_results(tmp_path):
    item = (21, "x" * 100)
    scale = 10**12 + 3
    per_call = "p" * 30
    before = refcounts(doubled, item, scale, per_call)
    for _ in range(10):
        tracker = Tracker(str(tmp_path / "c.db"), cache=str(tmp_path / "cache"), warnings=False)
        for _ in range(20):  # the first call of the first round misses, the rest hit
            result = tracker.track(doubled, params={"p": per_call}, args=[item],
                                   kwargs={"scale": scale})
            assert result == {"value": 42 * scale}
        tracker.track(doubled, args=[item], kwargs={"scale": scale}, cache_force=True)
        tracker.close()
        del tracker, result
    assert refcounts(doubled, item, scale, per_call) == before


@needs_cache
def test_cache_key_releases_its_arguments():
    from xetrack_c.cache import cache_key

    args = [("a" * 50, 1.5), {"k": [1, 2, 3]}]
    kwargs = {"scale": 10**12 + 5}
    params = {"model": "m" * 20}
    objects = (doubled, args, kwargs, params, args[0], kwargs["scale"])
    before = refcounts(*objects)
    keys = {cache_key(doubled, args=args, kwargs=kwargs, params=params, tracker_params=params)
            for _ in range(2000)}
    assert len(keys) == 1
    unkeyable = [object()]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # one warning per type: maybe already given
        for _ in range(200):
            assert cache_key(doubled, args=unkeyable) is None
    assert refcounts(*objects) == before


CACHE_LOOP = r"""
import json, sys, warnings
from xetrack_c import Tracker
from xetrack_c.cache import cache_key
from leakcheck import assert_bounded, open_fds, os_threads, threads_after

db, cache_dir, step_name = sys.argv[1], sys.argv[2], sys.argv[3]
warnings.simplefilter("ignore")

def work(x, y=1):
    return {"z": x * y}

tracker = Tracker(db, cache=cache_dir)
def hit():
    tracker.track(work, args=[3], kwargs={"y": 4})

counter = iter(range(10**9))
def miss():
    tracker.track(work, args=[next(counter)])

def lifecycle():
    with Tracker(db, cache=cache_dir) as t:
        t.track(work, args=[5])

def key():
    cache_key(work, args=[1, "two", (3.0, None)], kwargs={"y": b"bytes"}, params={"p": 1})

steps = {"hit": (hit, 3000, 300, 8 * 1024), "miss": (miss, 1000, 100, 16 * 1024),
         "lifecycle": (lifecycle, 200, 20, 8 * 1024), "key": (key, 20000, 1000, 4 * 1024)}
step, iterations, warmup, rss_limit = steps[step_name]
step()
threads, fds = os_threads(), open_fds()
assert_bounded(step, iterations, warmup, rss_limit_kib=rss_limit)
tracker.close()
print(json.dumps({"threads": [threads, threads_after(threads)], "fds": [fds, open_fds()]}))
"""


@needs_cache
@pytest.mark.parametrize("step", ["hit", "miss", "lifecycle", "key"])
def test_cache_memory_threads_and_files_stay_bounded(run_py, tmp_path, step):
    proc = run_py(CACHE_LOOP, timeout=240,
                  args=[str(tmp_path / "c.db"), str(tmp_path / "cache"), step])
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["threads"][1] <= report["threads"][0]
    assert report["fds"][1] <= report["fds"][0]


# ------------------------------------------------------------------ parallel executor
@needs_executor
@pytest.mark.parametrize("parallel", [None, 4])
def test_run_multiple_releases_functions_and_configs(parallel):
    label = "label-" + "l" * 40
    big = 10**13 + 7
    before = refcounts(task, label, big)
    for _ in range(20):
        specs = [xetrack_c.ExperimentSpec(function=task, config={"x": big + i, "label": label})
                 for i in range(8)]
        results = xetrack_c.run_multiple(specs, parallel=parallel)
        assert [r.status for r in results] == ["completed"] * 8
        assert [r.result["out"] for r in results] == [(big + i) * 2 for i in range(8)]
        del specs, results
    assert refcounts(task, label, big) == before


EXEC_LOOP = r"""
import json, os, sys
import xetrack_c
from leakcheck import assert_bounded, open_fds, os_threads, threads_after

script, kind = sys.argv[1], sys.argv[2]

def task(config):
    if config["x"] % 5 == 4:
        raise ValueError("task failed on purpose")
    return {"out": config["x"]}

def functions():
    specs = [xetrack_c.ExperimentSpec(function=task, config={"x": i}) for i in range(8)]
    results = xetrack_c.run_multiple(specs, parallel=4)
    assert [r.status for r in results] == [
        "failed" if i % 5 == 4 else "completed" for i in range(8)], results

def scripts():
    specs = [xetrack_c.ExperimentSpec(script_path=script, config={"x": i}) for i in range(4)]
    results = xetrack_c.run_multiple(specs, parallel=2)
    assert [r.status for r in results] == ["completed"] * 4, results

step, iterations, warmup = {"functions": (functions, 100, 10), "scripts": (scripts, 10, 2)}[kind]
step()
threads, fds = os_threads(), open_fds()
assert_bounded(step, iterations, warmup, rss_limit_kib=16 * 1024)
try:
    pid, _ = os.waitpid(-1, os.WNOHANG)  # (0, 0): children still running, e.g. a warm pool
    children = f"child {pid} exited but was never reaped" if pid else "none unreaped"
except ChildProcessError:
    children = "none unreaped"
print(json.dumps({"threads": [threads, threads_after(threads)], "fds": [fds, open_fds()],
                  "children": children}))
"""


@needs_executor
@pytest.mark.parametrize("kind", ["functions", "scripts"])
def test_executor_threads_files_and_children_do_not_outlive_a_batch(run_py, tmp_path, kind):
    script = tmp_path / "child.py"
    script.write_text("import sys\nsys.exit(0)\n")
    proc = run_py(EXEC_LOOP, timeout=300, args=[str(script), kind])
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["threads"][1] <= report["threads"][0], "a worker thread outlived its batch"
    assert report["fds"][1] <= report["fds"][0], "a pipe or pidfd outlived its batch"
    assert report["children"] == "none unreaped"
