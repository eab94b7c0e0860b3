"""Every spec accounted for (issue 18, item 3): whatever ends a batch -- its normal end,
fail_fast, max_consecutive_failures, the batch timeout, Ctrl-C, an exception in
on_progress -- the results and the experiments table hold exactly one final record per
spec with the right status; every attempt of a retried task is a row of the attempts
table, and resume reads only final records. Ctrl-C prints one line, no package frames.

Real threads, processes and a child interpreter that gets a real SIGINT.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import pytest
from conftest import HELPERS, child_env, read_rows

from xetrack_c import ExperimentSpec, run_multiple

if str(HELPERS) not in sys.path:
    sys.path.insert(0, str(HELPERS))

import record_tasks  # noqa: E402

FINAL = ("completed", "failed", "timeout", "cancelled", "skipped")


def run(specs, mode, **options):
    if mode == "executor":
        with ThreadPoolExecutor(2) as pool:
            return run_multiple(specs, 2, executor=pool, **options)
    return run_multiple(specs, 2, backend=mode, **options)


def assert_one_final_record_each(db, results):
    rows = read_rows(db, "experiments")
    ids = Counter(row["experiment_id"] for row in rows)
    assert all(count == 1 for count in ids.values()), ids.most_common(3)
    assert {row["experiment_id"]: row["status"] for row in rows} == \
        {r.experiment_id: r.status for r in results}
    assert all(r.status in FINAL for r in results)
    # the record says how many attempts ran: none for what never started
    attempts = {row["experiment_id"]: row["attempts"] for row in rows}
    for r in results:
        if r.status == "cancelled" and r.error_message == "cancelled before it started":
            assert attempts[r.experiment_id] == 0, r
        elif r.status in ("completed", "failed", "timeout"):
            assert attempts[r.experiment_id] >= 1, r


def specs_failing_at(indices, count=8, sleep=0.05):
    return [ExperimentSpec(function=record_tasks.fails_or_sleeps,
                           config={"i": i, "fail": i in indices, "sleep": sleep})
            for i in range(count)]


# ------------------------------------------------------------------ stopped batches
@pytest.mark.parametrize("mode", ["thread", "executor"])
def test_fail_fast_records_every_spec(db_path, mode):
    results = run(specs_failing_at({1}), mode, db=db_path, fail_fast=True)
    assert results[1].status == "failed" and "cancelled" in {r.status for r in results}
    assert_one_final_record_each(db_path, results)


@pytest.mark.parametrize("mode", ["thread", "executor"])
def test_max_consecutive_failures_records_every_spec(db_path, mode):
    results = run(specs_failing_at({0, 1, 2, 3}), mode, db=db_path, max_consecutive_failures=2)
    assert "cancelled" in {r.status for r in results}
    assert_one_final_record_each(db_path, results)


@pytest.mark.parametrize("mode", ["thread", "executor"])
def test_batch_timeout_records_every_spec(db_path, mode):
    results = run(specs_failing_at(set(), count=10, sleep=0.3), mode, db=db_path, timeout=0.5)
    assert {"timeout", "cancelled"} <= {r.status for r in results}
    assert_one_final_record_each(db_path, results)


@pytest.mark.parametrize("mode", ["thread", "process", "executor"])
def test_an_exception_in_on_progress_stops_the_batch_every_spec_recorded(db_path, mode):
    calls = []

    def on_progress(done, total, result):
        calls.append(done)
        if done == 2:
            raise RuntimeError("on_progress gave up")

    with pytest.raises(RuntimeError, match="on_progress gave up") as caught:
        run(specs_failing_at(set(), count=12), mode, db=db_path, on_progress=on_progress)
    results = caught.value.results
    assert len(results) == 12 and "cancelled" in {r.status for r in results}
    assert calls == [1, 2]  # never called again after it raised
    assert_one_final_record_each(db_path, results)


# ------------------------------------------------------------------ retries
@pytest.mark.parametrize("mode", ["thread", "process", "executor"])
def test_every_attempt_is_a_row_of_the_attempts_table_and_resume_reads_final_records(
        tmp_path, db_path, mode):
    def specs():
        return [ExperimentSpec(function=record_tasks.fails_then_succeeds, name=name,
                               config={"marker": str(tmp_path / name), "fail": fail})
                for name, fail in (("flaky", 2), ("dead", 99), ("fine", 0))]

    results = run(specs(), mode, db=db_path, retries=2, retry_on=(ConnectionError,),
                  retry_delay=0.01)
    assert [r.status for r in results] == ["completed", "failed", "completed"]
    assert_one_final_record_each(db_path, results)
    attempts = {}
    for row in read_rows(db_path, "attempts"):
        attempts.setdefault(row["experiment_id"], []).append(
            (row["attempt"], row["status"], row["error"] is None, row["duration"] >= 0))
    flaky, dead, fine = (r.experiment_id for r in results)
    assert sorted(attempts[flaky]) == [(1, "failed", False, True), (2, "failed", False, True),
                                       (3, "completed", True, True)]
    assert sorted(attempts[dead]) == [(k, "failed", False, True) for k in (1, 2, 3)]
    assert attempts[fine] == [(1, "completed", True, True)]
    assert {row["experiment_id"]: row["attempts"]
            for row in read_rows(db_path, "experiments")} == {flaky: 3, dead: 3, fine: 1}
    # resume: only the final records count; the failed attempts of "flaky" do not
    again = run(specs(), mode, db=db_path, resume=True)
    assert [r.status for r in again] == ["skipped", "failed", "skipped"]


def test_without_retries_there_is_no_attempts_table(db_path):
    run_multiple(specs_failing_at({1}, count=3, sleep=0.0), db=db_path)
    import sqlite3

    with sqlite3.connect(db_path) as conn:
        tables = {name for (name,) in conn.execute("SELECT name FROM sqlite_master")}
    assert "attempts" not in tables


# ------------------------------------------------------------------ Ctrl-C
CTRL_C_CHILD = """
    import sys, time
    from xetrack_c import ExperimentSpec, run_multiple

    def task(config):
        time.sleep(0.01)
        return {{"value": config["i"]}}

    def on_progress(done, total, result):
        if done == 40:
            print("ready", flush=True)

    specs = [ExperimentSpec(function=task, config={{"i": i}}) for i in range({count})]
    run_multiple(specs, parallel=4, db={db!r}, on_progress=on_progress)
    print("finished", flush=True)
"""


def interrupt_child(tmp_path, db, count=900, env=None):
    """Run CTRL_C_CHILD, send SIGINT once it is under way; (seconds to exit, rc, stderr)."""
    script = tmp_path / "batch.py"
    script.write_text(textwrap.dedent(CTRL_C_CHILD.format(db=db, count=count)))
    proc = subprocess.Popen([sys.executable, str(script)], cwd=str(tmp_path),
                            env=dict(child_env(), **(env or {})), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "ready", proc.stderr.read()
        proc.send_signal(signal.SIGINT)
        sent = time.monotonic()
        out, err = proc.communicate(timeout=60)
        took = time.monotonic() - sent
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert "finished" not in out, "the batch ended before SIGINT reached it"
    return took, proc.returncode, err


def test_sigint_returns_fast_records_900_final_rows_and_prints_one_line(tmp_path):
    db = str(tmp_path / "runs.db")
    took, returncode, err = interrupt_child(tmp_path, db)
    assert took < 2.0, f"took {took:.2f}s to stop after SIGINT"
    assert returncode in (-signal.SIGINT, 130), (returncode, err)
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    line = lines[0]
    assert line.startswith("KeyboardInterrupt: run_multiple stopped by Ctrl-C: "), line
    assert " completed, 0 failed, " in line and " cancelled" in line
    assert "resume=True" in line and repr(db) in line
    assert "Traceback" not in err and "xetrack_c" + "/" not in err
    import sqlite3

    with sqlite3.connect(db) as conn:
        (final,) = conn.execute(
            "SELECT COUNT(DISTINCT experiment_id) FROM experiments WHERE status IN "
            "('completed', 'failed', 'timeout', 'cancelled', 'skipped')").fetchone()
        (total,) = conn.execute("SELECT COUNT(*) FROM experiments").fetchone()
        statuses = dict(conn.execute("SELECT status, COUNT(*) FROM experiments GROUP BY status"))
    assert final == total == 900, statuses
    assert statuses.get("completed", 0) >= 40 and statuses.get("cancelled", 0) > 0
    counted = line.split(": ", 2)[2].split(";")[0]
    assert counted.startswith(f"{statuses.get('completed', 0)} completed, ")


def test_sigint_full_traceback_on_request(tmp_path):
    took, returncode, err = interrupt_child(tmp_path, str(tmp_path / "runs.db"), count=300,
                                            env={"XETRACK_C_TRACEBACK": "1"})
    assert "Traceback" in err and "xetrack_c" in err
    assert err.rstrip().splitlines()[-1].startswith(
        "KeyboardInterrupt: run_multiple stopped by Ctrl-C: ")
