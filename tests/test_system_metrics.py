"""System and network metrics: ``Tracker(log_system_params=True, log_network_params=True)``.

The columns carry xetrack's names and real psutil readings, read back from the file with
sqlite3; the sampler thread stops on close, does not outlive a forked parent in its child,
and bad input is refused before any file is made.
"""

from __future__ import annotations

import json
import os
import threading
import time

import pytest
from conftest import read_rows

from xetrack_c import Tracker

psutil = pytest.importorskip("psutil")

pytestmark = pytest.mark.slow  # sampler threads with real intervals: a few seconds in all

LOG_COLUMNS = ["cpu_percent", "ram_percent", "p_memory_percent", "disk_percent"]
NET_COLUMNS = ["bytes_sent", "bytes_recv"]
TRACK_COLUMNS = ["disk_percent", "p_memory_percent", "cpu", "memory_percent"]
INTERVAL = 0.02


def sampler_threads() -> list:
    return [t for t in threading.enumerate() if t.name.startswith("xetrack_c-system-")]


def assert_percent(value: float, upper: float = 100.0) -> None:
    assert isinstance(value, float)
    assert 0.0 <= value <= upper


def test_log_rows_carry_system_and_network_columns(db_path: str) -> None:
    with Tracker(db_path, log_system_params=True, log_network_params=True,
                 measurement_interval=INTERVAL) as tracker:
        returned = tracker.log({"step": 1})
        time.sleep(INTERVAL * 5)
        tracker.log({"step": 2})
    rows = read_rows(db_path)
    assert [row["step"] for row in rows] == [1, 2]
    rss_percent = psutil.Process().memory_info().rss * 100 / psutil.virtual_memory().total
    for row in rows:
        for column in ("cpu_percent", "ram_percent", "disk_percent"):
            assert_percent(row[column])
        # This process's RSS as a share of RAM: the same order as measured here.
        assert 0 < row["p_memory_percent"] < rss_percent * 3
        counters = psutil.net_io_counters()
        assert 0 <= row["bytes_sent"] <= counters.bytes_sent
        assert 0 <= row["bytes_recv"] <= counters.bytes_recv
    assert {k: returned[k] for k in LOG_COLUMNS + NET_COLUMNS} == {
        k: rows[0][k] for k in LOG_COLUMNS + NET_COLUMNS
    }


def test_only_the_asked_for_columns(db_path: str) -> None:
    with Tracker(db_path, log_network_params=True, measurement_interval=INTERVAL) as tracker:
        tracker.log({"x": 1})
    (row,) = read_rows(db_path)
    assert set(NET_COLUMNS) <= set(row)
    assert not set(LOG_COLUMNS) & set(row)
    other = db_path + ".plain.db"
    with Tracker(other) as tracker:
        assert tracker._system is None
        tracker.log({"x": 1})
    (row,) = read_rows(other)
    assert set(row) == {"track_id", "timestamp", "x"}


def test_track_row_of_a_busy_call(db_path: str) -> None:
    def spin(cpu_seconds: float) -> float:
        """Burn this much CPU time (however long that takes on a loaded machine)."""
        start = time.process_time()
        while time.process_time() - start < cpu_seconds:
            pass
        return time.process_time() - start

    with Tracker(db_path, log_system_params=True, measurement_interval=INTERVAL) as tracker:
        burned = tracker.track(spin, args=[0.2])
    (row,) = read_rows(db_path)
    assert row["function_name"] == "spin"
    for column in TRACK_COLUMNS + LOG_COLUMNS:
        assert row[column] is not None, column
    # cpu is CPU time over wall time of the call: it accounts for the CPU the call burned.
    cpu_seconds = row["cpu"] / 100 * row["function_time"]
    assert 0.9 * burned <= cpu_seconds
    assert row["cpu"] <= 100.0 * os.cpu_count()
    assert_percent(row["memory_percent"])
    assert_percent(row["cpu_percent"])


def test_a_call_that_holds_200_mb_shows_it(db_path: str) -> None:
    size = 200 * 1024 * 1024
    total = psutil.virtual_memory().total

    def hold(nbytes: int) -> int:
        block = bytearray(nbytes)  # zero-filled pages count in RSS once touched
        block[::4096] = b"\x01" * len(range(0, nbytes, 4096))
        time.sleep(INTERVAL * 25)  # many samples see it, even on a loaded machine
        return len(block)

    with Tracker(db_path, log_system_params=True, measurement_interval=INTERVAL) as tracker:
        tracker.track(time.sleep, args=[INTERVAL * 5])
        tracker.track(hold, args=[size])
    before, during = read_rows(db_path)
    grown = (during["p_memory_percent"] - before["p_memory_percent"]) * total / 100
    assert grown >= 0.75 * size, f"RSS grew by {grown / 2**20:.0f} MiB"


def test_wrap_rows_carry_the_columns(db_path: str) -> None:
    with Tracker(db_path, log_system_params=True, measurement_interval=INTERVAL) as tracker:
        @tracker.wrap(params={"model": "a"})
        def add(a: int, b: int) -> int:
            return a + b

        assert add(2, 3) == 5
    (row,) = read_rows(db_path)
    assert (row["function_result"], row["model"]) == (5, "a")
    assert set(TRACK_COLUMNS + LOG_COLUMNS) <= set(row)


def test_explicit_values_win_over_samples(db_path: str) -> None:
    with Tracker(db_path, log_system_params=True, measurement_interval=INTERVAL) as tracker:
        tracker.log({"cpu_percent": 12.5})
    (row,) = read_rows(db_path)
    assert row["cpu_percent"] == 12.5
    assert row["ram_percent"] is not None


def test_sampler_thread_stops_on_close(db_path: str) -> None:
    before = len(sampler_threads())
    tracker = Tracker(db_path, log_system_params=True, measurement_interval=INTERVAL)
    sampler = tracker._system
    assert sampler.running and len(sampler_threads()) == before + 1
    tracker.close()
    assert not sampler.running
    assert len(sampler_threads()) == before
    tracker.close()  # twice is harmless


def test_sampler_thread_stops_when_the_tracker_is_dropped(run_py) -> None:
    out = run_py("""
        import gc, threading
        from xetrack_c import Tracker
        tracker = Tracker(Tracker.IN_MEMORY, log_system_params=True, measurement_interval=0.01)
        thread = [t for t in threading.enumerate() if t.name.startswith("xetrack_c-system-")][0]
        del tracker
        gc.collect()
        thread.join(5)
        print(thread.is_alive(), thread.daemon)
    """).stdout.split()
    assert out == ["False", "True"]


def test_an_unclosed_tracker_does_not_keep_the_interpreter_alive(run_py) -> None:
    proc = run_py("""
        from xetrack_c import Tracker
        tracker = Tracker("t.db", log_system_params=True, measurement_interval=0.01)
        tracker.log({"x": 1})
        print("done")
    """, timeout=30)
    assert proc.stdout.strip() == "done"


@pytest.mark.no_sanitizer
def test_forked_child_measures_itself(run_py) -> None:
    proc = run_py("""
        import json, os, threading, time
        from xetrack_c import Tracker
        tracker = Tracker("t.db", log_system_params=True, measurement_interval=0.01)
        tracker.log({"who": "parent"})
        parent_thread = tracker._system._thread
        pid = os.fork()
        if pid == 0:
            inherited = tracker._system.running
            tracker.log({"who": "child"})
            report = {"inherited": inherited, "restarted": tracker._system.running,
                      "new_thread": tracker._system._thread is not parent_thread}
            tracker.close()
            with open("child.json", "w") as f:
                json.dump(report, f)
            os._exit(0)
        _, status = os.waitpid(pid, 0)
        tracker.log({"who": "parent"})
        print(status, tracker._system.running)
        tracker.close()
    """, timeout=60)
    assert proc.stdout.split() == ["0", "True"]
    report = json.loads((run_py.workdir / "child.json").read_text())
    assert report == {"inherited": False, "restarted": True, "new_thread": True}
    rows = read_rows(str(run_py.workdir / "t.db"))
    assert sorted(row["who"] for row in rows) == ["child", "parent", "parent"]
    assert all(row["p_memory_percent"] > 0 for row in rows)


@pytest.mark.parametrize("interval", [-1, 0, float("nan"), float("inf")])
def test_bad_interval_is_refused_before_the_file_exists(db_path: str, interval: float) -> None:
    with pytest.raises(ValueError, match="measurement_interval must be a positive"):
        Tracker(db_path, log_system_params=True, measurement_interval=interval)
    assert not os.path.exists(db_path)


@pytest.mark.parametrize("interval", ["1", None, True])
def test_interval_of_the_wrong_type(db_path: str, interval: object) -> None:
    with pytest.raises(TypeError, match="measurement_interval must be a number"):
        Tracker(db_path, log_network_params=True, measurement_interval=interval)
    assert not os.path.exists(db_path)


def test_interval_is_not_checked_when_metrics_are_off(db_path: str) -> None:
    with Tracker(db_path, measurement_interval=-1) as tracker:
        tracker.log({"x": 1})
    assert read_rows(db_path)[0]["x"] == 1


def test_missing_psutil_names_the_extra(run_py, tmp_path) -> None:
    proc = run_py("""
        import os, sys
        sys.modules["psutil"] = None  # as if it were not installed
        from xetrack_c import Tracker
        try:
            Tracker("t.db", log_system_params=True)
        except ImportError as exc:
            print(exc)
        print(os.path.exists("t.db"))
    """)
    message, exists = proc.stdout.strip().splitlines()
    assert "pip install psutil" in message and "the `system` extra" in message
    assert exists == "False"


def test_pickled_tracker_keeps_its_metric_settings(db_path: str) -> None:
    import pickle

    with Tracker(db_path, log_system_params=True, measurement_interval=0.5) as tracker:
        clone = pickle.loads(pickle.dumps(tracker))
    try:
        assert (clone.log_system_params, clone.log_network_params) == (True, False)
        assert clone._system.interval == 0.5 and clone._system.running
    finally:
        clone.close()


def test_a_failed_sampler_is_reported_not_hidden(db_path: str) -> None:
    tracker = Tracker(db_path, log_system_params=True, measurement_interval=INTERVAL)
    sampler = tracker._system

    def broken() -> None:
        raise OSError("no /proc here")

    sampler._take = broken
    sampler._thread.join(5)  # the thread ends on its next sample
    assert not sampler.running
    with pytest.raises(RuntimeError, match="sampler stopped: OSError"):
        tracker.log({"x": 1})
    tracker.close()
    assert read_rows(db_path) == []


def test_metric_rows_hold_no_references_and_memory_stays_bounded(tmp_path) -> None:
    import sys

    from leakcheck import assert_bounded

    argument, per_call = ("a" * 40, 7), "pc" * 20

    def scored(item: tuple) -> dict:
        return {"score": 0.5}

    def failing(item: tuple) -> None:
        raise RuntimeError("expected failure")

    before = [sys.getrefcount(o) for o in (scored, failing, argument, per_call)]
    tracker = Tracker(str(tmp_path / "t.db"), log_system_params=True, log_network_params=True,
                      measurement_interval=INTERVAL, raise_on_error=False, durability="async")

    def step() -> None:
        tracker.track(scored, params={"pc": per_call}, args=[argument])
        tracker.track(failing, args=[argument])
        tracker.log({"x": 1})

    assert_bounded(step, iterations=3000, warmup=300)
    tracker.close()
    assert [sys.getrefcount(o) for o in (scored, failing, argument, per_call)] == before
    assert len(read_rows(str(tmp_path / "t.db"))) == 3 * 3300


def square(x: int) -> int:
    return x * x


def test_cache_hit_rows_carry_the_row_columns(tmp_path) -> None:
    db = str(tmp_path / "t.db")
    with Tracker(db, cache=str(tmp_path / "cache"), log_system_params=True,
                 measurement_interval=INTERVAL) as tracker:
        assert tracker.track(square, args=[3]) == 9  # computed
        assert tracker.track(square, args=[3]) == 9  # a hit: nothing ran, no call figures
    computed, hit = read_rows(db)
    assert (computed["cache"], hit["cache"]) == ("", tracker.track_id)
    assert computed["cpu"] is not None and hit["cpu"] is None
    for column in LOG_COLUMNS:
        assert computed[column] is not None and hit[column] is not None, column
