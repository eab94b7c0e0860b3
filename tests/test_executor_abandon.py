"""Function tasks on threads that do not stop: the batch stops waiting for them.

A thread cannot be killed. run_multiple interrupts a function task past its timeout (or
cancelled) with an exception that lands when the task next runs Python; a task that has
not returned 0.5 s later is reported at once and its thread abandoned: its outcome is
dropped, its ``log_metrics`` calls are refused, a new thread takes its worker's place, and
the interpreter never waits for it at exit. Past a cap of stuck threads (the worker count)
no further function task starts.

The tests hang real threads in ``time.sleep(30)`` and prove the batch, or the interpreter,
is done within a few seconds. They run in child interpreters under a timeout, so a
regression fails instead of hanging the suite.
"""

from __future__ import annotations

import io
import json
import signal
import subprocess
import sys
import time
import warnings

import pytest
from conftest import child_env

from xetrack_c import ExperimentSpec, run_multiple
from xetrack_c.run.progress import Progress


def test_a_hung_thread_task_is_reported_at_its_deadline_and_abandoned(tmp_path, run_py):
    db = str(tmp_path / "runs.db")
    proc = run_py(f"""
        import json, sqlite3, time
        from xetrack_c import ExperimentSpec, log_metrics, run_multiple, _core

        late = []  # what the task that outlives its deadline does afterwards

        def hang(config):
            time.sleep(30)
            return "never seen"

        def overstay(config):
            try:
                time.sleep(3)  # C code: its TaskTimeout lands only after this
            except BaseException as exc:
                late.append(type(exc).__name__)
            try:
                log_metrics({{"late": 1}})
                late.append("wrote")
            except BaseException as exc:
                late.append("refused " + type(exc).__name__)
            return "late value"

        def quick(config):
            log_metrics({{"i": config["i"]}})
            return config["i"]

        specs = [ExperimentSpec(function=hang, timeout=1, name="hang"),
                 ExperimentSpec(function=overstay, timeout=1, name="overstay")] + \\
                [ExperimentSpec(function=quick, config={{"i": i}}) for i in range(48)]
        start = time.monotonic()
        results = run_multiple(specs, parallel=4, db={db!r})
        elapsed = time.monotonic() - start
        assert elapsed < 5, f"the batch took {{elapsed:.1f}} s"
        # The overstaying task wakes 3 s after it started, tries to log, returns and ends.
        deadline = time.monotonic() + 20
        while (len(late) < 2 or _core.abandoned_threads() != 1) and time.monotonic() < deadline:
            time.sleep(0.05)
        with sqlite3.connect({db!r}) as conn:
            ids = [row[0] for row in conn.execute("SELECT experiment_id FROM metrics")]
        print(json.dumps({{"statuses": [r.status for r in results],
                          "results": [r.result for r in results],
                          "errors": [r.error_message for r in results[:2]],
                          "overstay": results[1].experiment_id, "ids": ids, "late": late,
                          "abandoned": _core.abandoned_threads()}}))
    """, timeout=60)
    out = json.loads(proc.stdout)
    assert out["statuses"] == ["timeout", "timeout"] + ["completed"] * 48
    assert out["results"] == [None, None] + list(range(48))  # the late value is dropped
    for error in out["errors"]:
        assert error.startswith("timed out after 1s (its timeout)"), error
        assert "stopped waiting for it" in error and 'backend="process"' in error, error
    assert out["late"] == ["TaskTimeout", "refused TaskTimeout"]
    assert len(out["ids"]) == 48 and out["overstay"] not in out["ids"]
    assert out["abandoned"] == 1  # the 30 s sleeper; the overstaying thread has ended


def test_ctrl_c_returns_within_two_seconds_whatever_the_tasks_do(tmp_path, run_py):
    started = tmp_path / "started"
    path = run_py.script(f"""
        import json, sys, time
        from xetrack_c import ExperimentSpec, run_multiple

        def hang(config):
            with open({str(started)!r}, "a") as marker:
                marker.write("x")
            time.sleep(30)

        try:
            run_multiple([ExperimentSpec(function=hang) for _ in range(6)], parallel=3)
        except KeyboardInterrupt as exc:
            print(json.dumps({{"at": time.monotonic(),
                              "statuses": [r.status for r in exc.results],
                              "errors": [r.error_message for r in exc.results]}}), flush=True)
            sys.exit(0)
        sys.exit(5)
    """)
    proc = subprocess.Popen([sys.executable, str(path)], env=child_env(), text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while (not started.exists() or len(started.read_text()) < 3) \
                and time.monotonic() < deadline:
            time.sleep(0.05)
        assert started.read_text() == "xxx", "the tasks did not start"
        sent = time.monotonic()
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=15)
        ended = time.monotonic()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    result = json.loads(out)
    assert result["at"] - sent < 2.0, result["at"] - sent  # CLOCK_MONOTONIC: one clock
    assert ended - sent < 5.0  # and the interpreter exits with three threads asleep
    assert result["statuses"] == ["cancelled"] * 6
    assert all(e.startswith("cancelled while running") for e in result["errors"][:3])
    assert result["errors"][3:] == ["cancelled before it started"] * 3


def test_the_interpreter_exits_promptly_with_abandoned_threads_inside_python(run_py):
    proc = run_py("""
        import time
        from xetrack_c import ExperimentSpec, run_multiple

        def hang(config):
            time.sleep(config["seconds"])

        class SlowFinalizer:
            # Runs while the interpreter finalizes; the 2.5 s sleeper wakes meanwhile, and
            # CPython must end or park it rather than let it take the GIL.
            def __del__(self, sleep=time.sleep):
                sleep(2)

        start = time.monotonic()
        results = run_multiple([ExperimentSpec(function=hang, config={"seconds": seconds},
                                               timeout=1) for seconds in (30, 2.5)],
                               parallel=2)
        assert [r.status for r in results] == ["timeout", "timeout"], results
        print(f"returned after {time.monotonic() - start:.1f} s", flush=True)
        finalizer = SlowFinalizer()
    """, timeout=15)
    assert proc.stdout.startswith("returned after"), proc.stdout
    assert "Fatal Python error" not in proc.stderr, proc.stderr


def test_past_the_cap_of_stuck_threads_no_function_task_starts(run_py):
    proc = run_py("""
        import json, time
        from xetrack_c import ExperimentSpec, run_multiple

        def hang(config):
            time.sleep(30)

        specs = [ExperimentSpec(function=hang, timeout=1) for _ in range(5)] + \\
                [ExperimentSpec(function=lambda config: 1) for _ in range(3)]
        start = time.monotonic()
        results = run_multiple(specs, parallel=2)
        print(json.dumps({"elapsed": time.monotonic() - start,
                          "statuses": [r.status for r in results],
                          "errors": [r.error_message for r in results]}))
    """, timeout=30)
    out = json.loads(proc.stdout)
    statuses, errors = out["statuses"], out["errors"]
    assert out["elapsed"] < 5, out
    assert statuses[:2] == ["timeout", "timeout"]
    # The cap is 2 (the worker count). A hung task a new thread started before the
    # second thread was abandoned may still time out; nothing starts after that.
    assert statuses[2:].count("timeout") <= 1, statuses
    assert statuses[5:] == ["cancelled"] * 3
    refused = [error for status, error in zip(statuses, errors, strict=True)
               if status == "cancelled"]
    assert len(refused) >= 5
    for error in refused:
        assert error.startswith("not started: 2 threads of this batch"), error
        assert 'backend="process"' in error, error


# ------------------------------------------------------------------ one meaning of timeout
def spin(config):
    end = time.monotonic() + config["seconds"]
    while time.monotonic() < end:
        pass
    return config["seconds"]


def test_task_timeout_limits_the_specs_without_their_own():
    specs = [ExperimentSpec(function=spin, config={"seconds": 30}),
             ExperimentSpec(function=spin, config={"seconds": 0.6}, timeout=20)]
    start = time.monotonic()
    results = run_multiple(specs, parallel=2, task_timeout=0.3)
    assert time.monotonic() - start < 10
    assert [r.status for r in results] == ["timeout", "completed"]
    assert results[0].error_message.startswith("timed out after 0.3s (its timeout)")
    assert results[1].result == 0.6
    assert specs[0].timeout is None  # the caller's spec is not changed


def test_timeout_is_the_deprecated_name_of_batch_timeout():
    specs = [ExperimentSpec(function=spin, config={"seconds": 30}) for _ in range(2)] + \
            [ExperimentSpec(function=spin, config={"seconds": 0})]
    with pytest.warns(DeprecationWarning, match=r"batch_timeout=.*task_timeout="):
        results = run_multiple(specs, parallel=2, timeout=0.3)
    assert [r.status for r in results] == ["timeout", "timeout", "cancelled"]
    assert "the batch timeout of 0.3s passed" in results[0].error_message
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        again = run_multiple(specs, parallel=2, batch_timeout=0.3)
    assert [r.status for r in again] == ["timeout", "timeout", "cancelled"]
    with pytest.raises(TypeError, match="batch_timeout"):
        run_multiple(specs, timeout=1, batch_timeout=1)


def test_the_progress_line_counts_abandoned_threads():
    progress = Progress(3, stream=io.StringIO(), use_tqdm=False)
    progress.update("completed")
    assert "(1 completed, 0 failed)" in progress.line()
    progress.update("timeout", abandoned=2)
    assert "(1 completed, 0 failed, 1 timeout, 2 abandoned threads)" in progress.line()
