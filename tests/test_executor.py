"""run_multiple: functions and scripts on the C worker pool."""

from __future__ import annotations

import json
import os
import signal
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
from conftest import alive, child_env, count_rows, read_rows

import xetrack_c
from xetrack_c import ExperimentResult, ExperimentSpec, run_multiple


@pytest.fixture(autouse=True)
def _children_import_this_build(monkeypatch):
    """Script tasks inherit the environment: let them import this worktree's xetrack_c."""
    monkeypatch.setenv("PYTHONPATH", child_env()["PYTHONPATH"])


def write_script(path: Path, body: str) -> Path:
    path.write_text(textwrap.dedent(body))
    return path


def double(config):
    return config["x"] * 2


def boom(config):
    raise ValueError(f"bad x={config['x']}")


# ------------------------------------------------------------------ functions
def test_results_come_back_in_input_order_with_values():
    specs = [ExperimentSpec(function=double, config={"x": i}, name=f"n{i}") for i in range(50)]
    results = run_multiple(specs, parallel=4)
    assert [r.result for r in results] == [2 * i for i in range(50)]
    assert [r.name for r in results] == [f"n{i}" for i in range(50)]
    assert all(r.status == "completed" and r.error_message is None for r in results)
    assert all(isinstance(r.duration, float) and r.duration >= 0 for r in results)
    assert len({r.experiment_id for r in results}) == 50
    assert all(len(r.experiment_id) == 8 for r in results)


def test_a_thousand_function_tasks():
    specs = [ExperimentSpec(function=double, config={"x": i}) for i in range(1000)]
    for parallel in (None, 2, 0):
        results = run_multiple(specs, parallel)
        assert [r.result for r in results] == [2 * i for i in range(1000)]


def test_a_raising_function_does_not_stop_the_batch():
    specs = [ExperimentSpec(function=boom if i == 2 else double, config={"x": i})
             for i in range(6)]
    results = run_multiple(specs, parallel=2)
    assert [r.status for r in results] == ["completed"] * 2 + ["failed"] + ["completed"] * 3
    message = results[2].error_message
    assert message.startswith("ValueError: bad x=2")
    assert "Traceback" in message and "in boom" in message
    assert results[2].result is None


def test_functions_get_config_seed_and_rng_by_name():
    seen = {}

    def by_name(config, seed, rng):
        seen[config["i"]] = (seed, type(rng).__name__, xetrack_c.get_seed(),
                             xetrack_c.get_param("i"), xetrack_c.get_experiment_id())
        return rng.integers(0, 1000) if hasattr(rng, "integers") else rng.randint(0, 999)

    def only_seed(seed):
        return seed

    results = run_multiple([ExperimentSpec(function=by_name, config={"i": i}) for i in range(4)]
                           + [ExperimentSpec(function=only_seed, seed=1234)], parallel=2)
    for i in range(4):
        seed, rng_type, context_seed, param, experiment_id = seen[i]
        assert seed == results[i].seed == context_seed
        assert rng_type in ("Generator", "Random")
        assert param == i and experiment_id == results[i].experiment_id
    assert results[4].result == 1234 and results[4].seed == 1234


def test_seeds_are_reproducible_across_runs_and_distinct_across_tasks():
    specs = [ExperimentSpec(function=lambda seed: seed, name="trial") for _ in range(20)]
    first = [r.result for r in run_multiple(specs, parallel=3)]
    second = [r.result for r in run_multiple(specs, parallel=None)]
    assert first == second
    assert len(set(first)) == 20
    named = [ExperimentSpec(function=lambda seed: seed, name=f"c{i}") for i in range(3)]
    assert [r.seed for r in run_multiple(named)] != first[:3]


def test_seed_policy_drives_the_seeds():
    from xetrack_c import SeedPolicy

    policy = SeedPolicy(base_seed=7)
    specs = [ExperimentSpec(function=lambda seed: seed, name="cond", group="study")
             for _ in range(3)]
    results = run_multiple(specs, seed_policy=policy)
    assert [r.seed for r in results] == [policy.derive_seed("study", "cond", i) for i in range(3)]
    custom = run_multiple(specs, seed_policy=lambda spec, index: 100 + index)
    assert [r.result for r in custom] == [100, 101, 102]


def test_function_timeout_stops_python_code():
    def spin(config):
        while True:
            pass

    results = run_multiple([ExperimentSpec(function=spin, timeout=0.3),
                            ExperimentSpec(function=double, config={"x": 1})], parallel=2)
    assert results[0].status == "timeout"
    assert "timed out after 0.3s" in results[0].error_message
    assert results[0].duration >= 0.3
    assert results[1].result == 2


def test_fail_fast_cancels_what_has_not_started():
    specs = [ExperimentSpec(function=double, config={"x": 0}),
             ExperimentSpec(function=boom, config={"x": 1})] + \
            [ExperimentSpec(function=double, config={"x": i}) for i in range(2, 10)]
    results = run_multiple(specs, parallel=None, fail_fast=True)
    assert [r.status for r in results] == ["completed", "failed"] + ["cancelled"] * 8
    assert all(r.duration == 0.0 for r in results[2:])
    assert results[2].error_message == "cancelled before it started"


def test_max_consecutive_failures():
    specs = [ExperimentSpec(function=boom, config={"x": i}) for i in range(3)] + \
            [ExperimentSpec(function=double, config={"x": 1})]
    results = run_multiple(specs, max_consecutive_failures=2)
    assert [r.status for r in results] == ["failed", "failed", "cancelled", "cancelled"]


def test_on_progress_in_completion_order():
    calls = []
    specs = [ExperimentSpec(function=double, config={"x": i}) for i in range(10)]
    results = run_multiple(specs, parallel=3,
                           on_progress=lambda done, total, result: calls.append((done, total, result)))
    assert [c[0] for c in calls] == list(range(1, 11))
    assert all(c[1] == 10 for c in calls)
    assert {id(c[2]) for c in calls} == {id(r) for r in results}


def test_batch_timeout_stops_running_and_cancels_pending():
    def spin(config):
        while True:
            pass

    specs = [ExperimentSpec(function=spin) for _ in range(2)] + \
            [ExperimentSpec(function=double, config={"x": 1})]
    results = run_multiple(specs, parallel=2, batch_timeout=0.3)
    assert [r.status for r in results] == ["timeout", "timeout", "cancelled"]
    assert "batch timeout of 0.3s" in results[0].error_message


def test_dry_run_and_limit():
    specs = [ExperimentSpec(function=boom, config={"x": i}) for i in range(5)]
    dry = run_multiple(specs, dry_run=True)
    assert [r.status for r in dry] == ["skipped"] * 5
    assert [r.seed for r in dry] == [r.seed for r in run_multiple(specs)]
    assert len(run_multiple(specs, limit=2)) == 2


def test_progress_line_on_stderr(capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "tqdm", None)  # the plain line, not tqdm
    run_multiple([ExperimentSpec(function=boom, config={"x": 1}),
                  ExperimentSpec(function=double, config={"x": 1})], progress=True)
    err = capsys.readouterr().err
    assert "run_multiple 2/2 (1 completed, 1 failed)" in err and "tasks/s" in err and "ETA" in err


# ------------------------------------------------------------------ validation
def test_bad_specs_are_rejected_before_anything_runs(tmp_path):
    ran = []
    good = ExperimentSpec(function=lambda: ran.append(1))
    with pytest.raises(ValueError, match="at least one ExperimentSpec"):
        run_multiple([])
    with pytest.raises(ValueError, match=r"Invalid ExperimentSpec at index 1: set exactly one"):
        run_multiple([good, ExperimentSpec()])
    with pytest.raises(ValueError, match=r"index 1: set exactly one .*both are set"):
        run_multiple([good, ExperimentSpec(function=double, script_path=__file__)])
    with pytest.raises(ValueError, match=r"index 0: script_path .*missing.py' is not a file"):
        run_multiple([ExperimentSpec(script_path=str(tmp_path / "missing.py")), good])
    with pytest.raises(ValueError, match=r"index 1: config key 'obj' is not JSON"):
        run_multiple([good, ExperimentSpec(script_path=__file__, config={"obj": object()})])
    with pytest.raises(ValueError, match=r"index 0: timeout must be > 0"):
        run_multiple([ExperimentSpec(function=double, timeout=0)])
    with pytest.raises(ValueError, match=r"index 0: expected an ExperimentSpec, got int"):
        run_multiple([3])
    with pytest.raises(ValueError, match="parallel must be"):
        run_multiple([good], parallel=-1)
    with pytest.raises(ValueError, match="resume=True needs db="):
        run_multiple([good], resume=True)
    assert ran == []


def test_options_that_apply_only_to_one_path_say_so(tmp_path):
    spec = [ExperimentSpec(function=double, config={"x": 1})]
    with pytest.raises(ValueError, match="backend must be"):
        run_multiple(spec, backend="gpu")
    with pytest.raises(NotImplementedError, match="cache=.*needs executor"):
        run_multiple(spec, cache=str(tmp_path / "cache"))
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(1) as pool:
        for option in ({"rate_limit": "5/s"}, {"worker_init": print},
                       {"launcher": "forkserver"}):
            with pytest.raises(NotImplementedError, match="applies to the local pool"):
                run_multiple(spec, executor=pool, **option)


def test_yanex_style_spec_objects_are_accepted(tmp_path):
    class YanexSpec:  # the attributes of yanex.ExperimentSpec
        def __init__(self, **kw):
            self.script_path, self.function = None, None
            self.script_args, self.config, self.tags = [], {}, []
            self.name = self.description = None
            self.__dict__.update(kw)

    results = run_multiple([YanexSpec(function=double, config={"x": 4}, name="y")])
    assert results[0].result == 8 and results[0].name == "y"


# ------------------------------------------------------------------ scripts
@pytest.mark.parametrize("launcher", ["spawn", "forkserver"])
def test_scripts_run_with_config_seed_and_args(tmp_path, launcher):
    script = write_script(tmp_path / "child.py", """
        import json, os, sys
        import xetrack_c
        out = {"args": sys.argv[1:], "params": xetrack_c.get_params(),
               "seed": xetrack_c.get_seed(), "id": xetrack_c.get_experiment_id(),
               "cwd": os.getcwd()}
        with open(sys.argv[1], "w") as f:
            json.dump(out, f)
    """)
    specs = [ExperimentSpec(script_path=str(script), config={"lr": 0.1 * i},
                            script_args=[str(tmp_path / f"out{i}.json"), "--flag"])
             for i in range(3)]
    results = run_multiple(specs, parallel=2, launcher=launcher)
    assert [r.status for r in results] == ["completed"] * 3, [r.error_message for r in results]
    for i, result in enumerate(results):
        out = json.loads((tmp_path / f"out{i}.json").read_text())
        assert out["args"] == [str(tmp_path / f"out{i}.json"), "--flag"]
        assert out["params"] == {"lr": 0.1 * i}
        assert out["seed"] == result.seed and out["id"] == result.experiment_id
        assert out["cwd"] == os.getcwd()
        assert result.result is None


@pytest.mark.parametrize("launcher", ["spawn", "forkserver"])
def test_a_failing_script_does_not_stop_the_batch(tmp_path, launcher):
    ok = write_script(tmp_path / "ok.py", "print('fine')\n")
    bad = write_script(tmp_path / "bad.py", """
        import sys
        print("about to fail", file=sys.stderr)
        sys.exit(3)
    """)
    results = run_multiple([ExperimentSpec(script_path=str(ok)),
                            ExperimentSpec(script_path=str(bad)),
                            ExperimentSpec(script_path=str(ok))], parallel=2, launcher=launcher)
    assert [r.status for r in results] == ["completed", "failed", "completed"]
    message = results[1].error_message
    assert "exit code 3" in message and "about to fail" in message
    err_file = message.rsplit(", ", 1)[1].rstrip(")")
    assert Path(err_file).read_text() == "about to fail\n"  # kept for the failed one


@pytest.mark.parametrize("launcher", ["spawn", "forkserver"])
def test_a_hanging_script_is_killed_at_its_timeout_with_its_children(tmp_path, launcher):
    pids = tmp_path / "pids.txt"
    script = write_script(tmp_path / "hang.py", f"""
        import os, signal, subprocess, sys, time
        signal.signal(signal.SIGTERM, signal.SIG_IGN)   # needs SIGKILL
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
        with open({str(pids)!r}, "w") as f:
            f.write(f"{{os.getpid()}} {{child.pid}}")
        time.sleep(600)
    """)
    start = time.monotonic()
    results = run_multiple([ExperimentSpec(script_path=str(script), timeout=1.5)],
                           launcher=launcher)
    elapsed = time.monotonic() - start
    assert results[0].status == "timeout", results[0].error_message
    assert results[0].duration >= 1.5
    assert elapsed < 30
    for pid in map(int, pids.read_text().split()):
        deadline = time.monotonic() + 10
        while alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not alive(pid), f"process {pid} survived the timeout"


@pytest.mark.parametrize("launcher", ["spawn", "forkserver"])
def test_a_script_that_cannot_start_is_reported(tmp_path, monkeypatch, launcher):
    script = write_script(tmp_path / "ok.py", "pass\n")
    monkeypatch.setattr(sys, "executable", str(tmp_path / "no-such-python"))
    results = run_multiple([ExperimentSpec(script_path=str(script))], launcher=launcher)
    assert results[0].status == "failed"
    assert "could not start" in results[0].error_message


# ------------------------------------------------------------------ database
def test_db_records_every_experiment_and_function_metrics(tmp_path):
    db = str(tmp_path / "runs.db")

    def train(config):
        xetrack_c.log_metrics({"acc": config["lr"] * 10})
        if config["lr"] > 0.25:
            raise RuntimeError("diverged")
        return config["lr"]

    specs = [ExperimentSpec(function=train, config={"lr": 0.1 * i}, name=f"r{i}", tags=["t"])
             for i in range(4)]
    results = run_multiple(specs, parallel=2, db=db)
    rows = {row["experiment_id"]: row for row in read_rows(db, "experiments")}
    assert set(rows) == {r.experiment_id for r in results}
    for result in results:
        row = rows[result.experiment_id]
        assert row["status"] == result.status and row["seed"] == result.seed
        assert row["kind"] == "function" and row["target"].endswith("train")
    assert rows[results[3].experiment_id]["error"].startswith("RuntimeError: diverged")
    metrics = read_rows(db, "metrics")
    assert sorted(m["experiment_id"] for m in metrics) == sorted(r.experiment_id for r in results)


def test_resume_skips_what_completed(tmp_path):
    db = str(tmp_path / "runs.db")
    calls = []

    def flaky(config):
        calls.append(config["i"])
        if config["i"] == 1 and len(calls) < 4:
            raise RuntimeError("first time")

    specs = [ExperimentSpec(function=flaky, config={"i": i}) for i in range(3)]
    first = run_multiple(specs, db=db)
    assert [r.status for r in first] == ["completed", "failed", "completed"]
    again = run_multiple(specs, db=db, resume=True)
    assert [r.status for r in again] == ["skipped", "completed", "skipped"]
    assert calls == [0, 1, 2, 1]
    assert count_rows(db, "experiments") == 4


@pytest.mark.parametrize("launcher", ["spawn", "forkserver"])
def test_kfold_orchestrator_script_runs_fold_scripts(tmp_path, run_py, launcher):
    db = tmp_path / "kfold.db"
    fold = write_script(tmp_path / "fold.py", """
        import xetrack_c
        k = xetrack_c.get_param("_fold_idx")
        xetrack_c.log_metrics({"fold": k, "score": 0.5 + k / 100, "lr": xetrack_c.get_param("lr")})
    """)
    orchestrator = write_script(tmp_path / "orchestrate.py", f"""
        import xetrack_c
        from xetrack_c import ExperimentSpec, run_multiple
        lr = xetrack_c.get_param("lr")
        specs = [ExperimentSpec(script_path={str(fold)!r}, config={{"lr": lr, "_fold_idx": k}},
                                name=f"fold-{{k}}", tags=["kfold"]) for k in range(5)]
        results = run_multiple(specs, parallel=2, db={str(db)!r}, table="folds",
                               launcher={launcher!r})
        assert all(r.status == "completed" for r in results), [r.error_message for r in results]
    """)
    run_py(f"""
        from xetrack_c import ExperimentSpec, run_multiple
        results = run_multiple([ExperimentSpec(script_path={str(orchestrator)!r},
                                               config={{"lr": 0.01}}, name="cv")],
                               db={str(db)!r}, launcher={launcher!r})
        assert results[0].status == "completed", results[0].error_message
    """, timeout=120)
    folds = read_rows(str(db), "folds")
    assert sorted(row["name"] for row in folds) == [f"fold-{k}" for k in range(5)]
    assert {row["_fold_idx"] for row in folds} == set(range(5))
    metrics = read_rows(str(db), "metrics")
    assert sorted(m["fold"] for m in metrics) == list(range(5))
    assert {m["experiment_id"] for m in metrics} == {row["experiment_id"] for row in folds}
    assert all(m["lr"] == 0.01 for m in metrics)
    assert [row["name"] for row in read_rows(str(db), "experiments")] == ["cv"]


# ------------------------------------------------------------------ Ctrl-C and nesting
@pytest.mark.parametrize("launcher", ["spawn", "forkserver"])
def test_sigint_stops_the_batch_leaves_no_orphans_and_returns_partial_results(tmp_path, run_py,
                                                                               launcher):
    pids = tmp_path / "pids"
    pids.mkdir()
    quick = write_script(tmp_path / "quick.py", "pass\n")
    slow = write_script(tmp_path / "slow.py", f"""
        import os, subprocess, sys, time
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
        with open(os.path.join({str(pids)!r}, str(os.getpid())), "w") as f:
            f.write(str(child.pid))
        time.sleep(600)
    """)
    code = f"""
        import json, sys
        from xetrack_c import ExperimentSpec, run_multiple
        specs = [ExperimentSpec(script_path={str(quick)!r})] + \\
                [ExperimentSpec(script_path={str(slow)!r}) for _ in range(4)]
        try:
            run_multiple(specs, parallel=2, db={str(tmp_path / "r.db")!r}, launcher={launcher!r})
        except KeyboardInterrupt as exc:
            print(json.dumps([r.status for r in exc.results]))
            sys.exit(0)
        sys.exit(5)
    """
    import subprocess

    path = run_py.script(code)
    proc = subprocess.Popen([sys.executable, str(path)], env=child_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while len(list(pids.iterdir())) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(list(pids.iterdir())) == 2, "the slow scripts did not start"
        time.sleep(0.2)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    statuses = json.loads(out)
    assert statuses[0] == "completed"
    assert statuses[1:].count("cancelled") == 4
    started = [int(p.name) for p in pids.iterdir()] + [int(p.read_text()) for p in pids.iterdir()]
    for pid in started:
        deadline = time.monotonic() + 10
        while alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not alive(pid), f"process {pid} outlived the interrupted batch"
    assert count_rows(str(tmp_path / "r.db"), "experiments") == 5


def test_nested_run_multiple_does_not_deadlock_and_shares_the_limit(run_py):
    proc = run_py("""
        import threading, time
        from xetrack_c import ExperimentSpec, run_multiple, _core

        lock = threading.Lock()
        running = [0, 0]   # now, peak

        def trial(config):
            with lock:
                running[0] += 1
                running[1] = max(running[1], running[0])
            total = sum(range(20000))
            time.sleep(0.01)
            with lock:
                running[0] -= 1
            return config["t"]

        def condition(config):
            inner = [ExperimentSpec(function=trial, config={"t": t}) for t in range(8)]
            results = run_multiple(inner, parallel=4)
            return sum(r.result for r in results)

        outer = [ExperimentSpec(function=condition, config={"c": c}) for c in range(6)]
        results = run_multiple(outer, parallel=3)
        assert [r.status for r in results] == ["completed"] * 6, [r.error_message for r in results]
        assert all(r.result == 28 for r in results)
        limit = max(3, __import__("os").cpu_count())
        assert running[1] <= limit, (running[1], limit)
        assert _core.worker_slots()[0] == 0
        print("ok", running[1], limit)
    """, timeout=120)
    assert proc.stdout.startswith("ok")


def test_exceptions_are_base_exceptions():
    assert issubclass(xetrack_c._core.TaskTimeout, BaseException)
    assert not issubclass(xetrack_c._core.TaskTimeout, Exception)
    assert not issubclass(xetrack_c._core.TaskCancelled, Exception)
    assert ExperimentResult("a", "completed").duration is None
    assert threading.active_count() >= 1


# ------------------------------------------------------------------ fork server launcher
def _fork_servers_of(pid: int) -> list:
    """Live fork servers (xetrack_c/run/forkserver.py) whose parent is ``pid``."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmdline = f.read()
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (FileNotFoundError, ProcessLookupError):
            continue
        if ppid == pid and b"xetrack_c/run/forkserver.py" in cmdline and alive(int(entry)):
            found.append(int(entry))
    return found


def test_forkserver_scripts_match_spawned_ones_and_servers_end_with_the_batch(tmp_path):
    script = write_script(tmp_path / "s.py", """
        import sys
        import xetrack_c
        i = xetrack_c.get_param("i")
        print(i, xetrack_c.get_seed(), sys.argv[1:])
        sys.exit(i % 3)
    """)
    specs = [ExperimentSpec(script_path=str(script), script_args=["x"], config={"i": i},
                            name=f"s{i}") for i in range(9)]
    spawned = run_multiple(specs, parallel=2)
    forked = run_multiple(specs, parallel=2, launcher="forkserver")
    assert [(r.status, r.seed, r.name) for r in forked] == \
        [(r.status, r.seed, r.name) for r in spawned]
    assert [r.status for r in forked] == ["completed", "failed", "failed"] * 3
    assert "exit code 2" in forked[2].error_message
    assert _fork_servers_of(os.getpid()) == []


def test_forkserver_is_replaced_when_it_dies(tmp_path):
    # A script that kills its own fork server: the task fails, the next task gets a new one.
    script = write_script(tmp_path / "s.py", """
        import os, signal, sys
        import xetrack_c
        if xetrack_c.get_param("kill"):
            os.kill(os.getppid(), signal.SIGKILL)
            import time; time.sleep(30)
        print("ran")
    """)
    specs = [ExperimentSpec(script_path=str(script), config={"kill": k}) for k in (0, 1, 0)]
    results = run_multiple(specs, launcher="forkserver")
    assert [r.status for r in results] == ["completed", "failed", "completed"]
    assert _fork_servers_of(os.getpid()) == []


def test_launcher_is_checked():
    with pytest.raises(ValueError, match="launcher must be 'spawn'"):
        run_multiple([ExperimentSpec(function=double, config={"x": 1})], launcher="fork")
