"""The child API: get_param/get_params/get_seed/get_experiment_id and log_metrics.

Env-based configuration runs in real child interpreters; every row is read back with
``sqlite3``.
"""

from __future__ import annotations

import json
import os
import sys

import pytest
from conftest import child_env, read_rows, table_info, table_names
from xetrack_peer import find_xetrack_python, skip_reason

import xetrack_c
from xetrack_c import params
from xetrack_c.params import (
    XETRACK_C_CONFIG,
    XETRACK_C_DB,
    XETRACK_C_EXPERIMENT_ID,
    XETRACK_C_EXPERIMENT_NAME,
    XETRACK_C_METRICS_TABLE,
    XETRACK_C_SEED,
    child_environment,
    task_context,
)

ENV_VARS = (
    XETRACK_C_EXPERIMENT_ID, XETRACK_C_CONFIG, XETRACK_C_SEED,
    XETRACK_C_DB, XETRACK_C_EXPERIMENT_NAME, XETRACK_C_METRICS_TABLE,
)


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch):
    """No test sees the experiment variables of whatever runs the suite."""
    for name in ENV_VARS:
        monkeypatch.delenv(name, raising=False)


def _clean_env() -> dict:
    return {name: "" for name in ENV_VARS}


# ------------------------------------------------------------------ standalone
def test_standalone_defaults():
    assert xetrack_c.get_params() == {}
    assert xetrack_c.get_param("lr") is None
    assert xetrack_c.get_param("lr", 0.1) == 0.1
    assert xetrack_c.get_param("model.lr", 7) == 7
    assert xetrack_c.get_experiment_id() is None
    assert xetrack_c.get_experiment_name() is None
    assert xetrack_c.get_seed() is None


def test_standalone_log_metrics_writes_local_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    xetrack_c.log_metrics({"accuracy": 0.5})
    xetrack_c.log_metrics({"accuracy": 0.75}, step=2)
    db = str(tmp_path / params.STANDALONE_METRICS_DB)
    assert os.path.isfile(db)
    rows = read_rows(db, "metrics")
    assert [(r["experiment_id"], r["step"], r["accuracy"]) for r in rows] == [
        (None, None, 0.5), (None, 2, 0.75)
    ]


def test_import_does_not_load_params():
    code = "import sys, xetrack_c; print('xetrack_c.params' in sys.modules)"
    import subprocess

    from conftest import child_env

    out = subprocess.run([sys.executable, "-c", code], env=child_env(), capture_output=True,
                         text=True, timeout=60, check=True)
    assert out.stdout.strip() == "False"


# ------------------------------------------------------------------ environment
CHILD_SCRIPT = """
import json, sys
import xetrack_c
out = {
    "params": xetrack_c.get_params(),
    "lr": xetrack_c.get_param("model.lr"),
    "layers": xetrack_c.get_param("model.layers"),
    "missing": xetrack_c.get_param("model.dropout", "none"),
    "id": xetrack_c.get_experiment_id(),
    "name": xetrack_c.get_experiment_name(),
    "seed": xetrack_c.get_seed(),
}
for epoch in range(3):
    xetrack_c.log_metrics({"loss": 1.0 / (epoch + 1), "fold": xetrack_c.get_param("fold")},
                          step=epoch)
print(json.dumps(out))
"""


def test_script_child_reads_env_and_logs_metrics(run_py, db_path):
    config = {"fold": 3, "model": {"lr": 0.01, "layers": [64, 32]}, "tag": "é"}
    env = child_environment("exp-0007", config, 1234, db_path, "fold-3")
    proc = run_py(CHILD_SCRIPT, env=env)
    out = json.loads(proc.stdout)
    assert out == {
        "params": config, "lr": 0.01, "layers": [64, 32], "missing": "none",
        "id": "exp-0007", "name": "fold-3", "seed": 1234,
    }
    rows = read_rows(db_path, "metrics")
    assert [(r["experiment_id"], r["step"], r["loss"], r["fold"]) for r in rows] == [
        ("exp-0007", 0, 1.0, 3), ("exp-0007", 1, 0.5, 3), ("exp-0007", 2, 1.0 / 3, 3)
    ]
    # xetrack's layout: track_id and timestamp, then the keys in the order first logged.
    assert list(table_info(db_path, "metrics")) == [
        "track_id", "timestamp", "experiment_id", "step", "loss", "fold"
    ]
    assert len({r["track_id"] for r in rows}) == 1


def test_script_child_custom_metrics_table_and_relative_db(run_py, tmp_path):
    # The db is made absolute, so a child in another directory writes the same file.
    here = os.getcwd()
    os.chdir(tmp_path)
    try:
        env = child_environment("e1", {}, None, "rel.db", None, metrics_table="scores")
    finally:
        os.chdir(here)
    assert env[XETRACK_C_DB] == str(tmp_path / "rel.db")
    run_py("import xetrack_c; xetrack_c.log_metrics({'x': 1})", env=env)
    assert table_names(str(tmp_path / "rel.db")) == ["scores"]
    assert read_rows(str(tmp_path / "rel.db"), "scores")[0]["x"] == 1


def test_child_environment_values():
    env = child_environment("e9", {"a": 1}, None, None, None)
    assert set(env) == set(ENV_VARS)
    assert all(isinstance(v, str) for v in env.values())
    # Unset values are present and empty, so nothing leaks in from a parent batch.
    assert env[XETRACK_C_SEED] == env[XETRACK_C_DB] == env[XETRACK_C_EXPERIMENT_NAME] == ""
    assert json.loads(env[XETRACK_C_CONFIG]) == {"a": 1}
    assert env[XETRACK_C_METRICS_TABLE] == "metrics"


def test_environment_read_in_process(monkeypatch, tmp_path):
    env = child_environment("e2", {"k": {"v": [1, 2]}}, 0, str(tmp_path / "m.db"), "n")
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert xetrack_c.get_params() == {"k": {"v": [1, 2]}}
    assert xetrack_c.get_param("k.v") == [1, 2]
    assert xetrack_c.get_seed() == 0
    assert xetrack_c.get_experiment_id() == "e2"
    # The environment changing is noticed.
    monkeypatch.setenv(XETRACK_C_CONFIG, '{"k": 5}')
    assert xetrack_c.get_param("k") == 5


def test_environment_db_alone_directs_standalone_metrics(run_py, db_path):
    code = (
        "import xetrack_c\n"
        "assert xetrack_c.get_params() == {} and xetrack_c.get_experiment_id() is None\n"
        "xetrack_c.log_metrics({'x': 1})\n"
    )
    env = _clean_env()
    env[XETRACK_C_DB] = db_path
    run_py(code, env=env)
    assert [(r["experiment_id"], r["x"]) for r in read_rows(db_path, "metrics")] == [(None, 1)]
    assert not os.path.exists(os.path.join(os.path.dirname(db_path), "scripts",
                                           params.STANDALONE_METRICS_DB))


def test_get_params_returns_a_copy():
    with task_context("e", {"a": 1}, None, None, None):
        xetrack_c.get_params()["a"] = 2
        assert xetrack_c.get_param("a") == 1


# ------------------------------------------------------------------ dotted names
@pytest.mark.parametrize(
    "name, expected",
    [
        ("model.optimizer.lr", 0.001),
        ("model.optimizer", {"lr": 0.001, "name": "adam"}),
        ("model.optimizer.name", "adam"),
        ("model.missing", "default"),
        ("model.optimizer.lr.deeper", "default"),   # a number has no keys
        ("epochs.x", "default"),
        ("flat.key", "literal"),                    # a key containing a dot is found first
        ("", "default"),
        ("model..optimizer", "default"),
        ("none_value", None),                        # found, even though None
    ],
)
def test_dotted_names(name, expected):
    config = {
        "model": {"optimizer": {"lr": 0.001, "name": "adam"}},
        "epochs": 10,
        "flat.key": "literal",
        "none_value": None,
    }
    with task_context("e", config, None, None, None):
        assert xetrack_c.get_param(name, "default") == expected


# ------------------------------------------------------------------ task context
def test_context_overrides_environment_and_nests(monkeypatch):
    for key, value in child_environment("env-id", {"a": "env"}, 1, None, "env").items():
        monkeypatch.setenv(key, value)
    assert xetrack_c.get_param("a") == "env"
    with task_context("outer", {"a": "outer"}, 2, None, "outer"):
        assert (xetrack_c.get_experiment_id(), xetrack_c.get_param("a"), xetrack_c.get_seed()) == (
            "outer", "outer", 2)
        with task_context("inner", {"a": "inner"}, None, None, None):
            assert xetrack_c.get_experiment_id() == "inner"
            assert xetrack_c.get_param("a") == "inner"
            assert xetrack_c.get_seed() is None
        assert xetrack_c.get_experiment_id() == "outer"
    assert xetrack_c.get_experiment_id() == "env-id"


def test_context_reset_after_exception():
    with pytest.raises(RuntimeError):
        with task_context("e", {"a": 1}, None, None, None):
            raise RuntimeError("task failed")
    assert xetrack_c.get_experiment_id() is None
    assert xetrack_c.get_params() == {}


def test_context_config_need_not_be_json():
    marker = object()
    with task_context("e", {"model": marker}, None, None, None):
        assert xetrack_c.get_param("model") is marker


def test_context_log_metrics_goes_to_context_db(db_path):
    with task_context("ctx-1", {}, None, db_path, None, metrics_table="m"):
        row = xetrack_c.log_metrics({"score": 2.5}, step=4)
    assert row["experiment_id"] == "ctx-1" and row["score"] == 2.5
    rows = read_rows(db_path, "m")
    assert [(r["experiment_id"], r["step"], r["score"]) for r in rows] == [("ctx-1", 4, 2.5)]


def test_context_without_db_falls_back_to_environment_db(monkeypatch, tmp_path):
    env_db = str(tmp_path / "env.db")
    for key, value in child_environment("env-id", {}, None, env_db, None).items():
        monkeypatch.setenv(key, value)
    with task_context("inner-id", {}, None, None, None):
        xetrack_c.log_metrics({"v": 1})
    assert [(r["experiment_id"], r["v"]) for r in read_rows(env_db, "metrics")] == [("inner-id", 1)]


THREADS_SCRIPT = """
import sqlite3, sys, threading
import xetrack_c
from xetrack_c.params import task_context

db = sys.argv[1]
N = 8
barrier = threading.Barrier(N)
seen = {}
errors = []

def task(i):
    try:
        with task_context(f"exp-{i}", {"index": i, "nested": {"value": i * 10}}, 100 + i, db, f"n{i}"):
            barrier.wait(timeout=30)
            for step in range(20):
                xetrack_c.log_metrics({"index": xetrack_c.get_param("index"),
                                       "value": xetrack_c.get_param("nested.value")}, step=step)
            seen[i] = (xetrack_c.get_experiment_id(), xetrack_c.get_param("index"),
                       xetrack_c.get_param("nested.value"), xetrack_c.get_seed(),
                       xetrack_c.get_experiment_name())
    except BaseException as exc:
        errors.append(repr(exc))

threads = [threading.Thread(target=task, args=(i,)) for i in range(N)]
for t in threads:
    t.start()
for t in threads:
    t.join()
assert not errors, errors
for i in range(N):
    assert seen[i] == (f"exp-{i}", i, i * 10, 100 + i, f"n{i}"), seen[i]
assert xetrack_c.get_experiment_id() is None
print("ok")
"""


def test_task_context_isolated_across_threads(run_py, db_path):
    proc = run_py(THREADS_SCRIPT, args=[db_path], env=_clean_env(), timeout=120)
    assert proc.stdout.strip() == "ok"
    rows = read_rows(db_path, "metrics")
    assert len(rows) == 8 * 20
    for row in rows:
        index = int(row["experiment_id"].split("-")[1])
        assert row["index"] == index and row["value"] == index * 10
    for i in range(8):
        steps = sorted(r["step"] for r in rows if r["experiment_id"] == f"exp-{i}")
        assert steps == list(range(20))
    # One cached Tracker per (db, table) per process: every row shares its track_id.
    assert len({r["track_id"] for r in rows}) == 1


FORK_SCRIPT = """
import os, sys
import xetrack_c
from xetrack_c.params import task_context

db = sys.argv[1]
with task_context("parent", {}, None, db, None):
    xetrack_c.log_metrics({"who": "parent-before"})
    pid = os.fork()
    if pid == 0:
        try:
            with task_context("child", {}, None, db, None):
                xetrack_c.log_metrics({"who": "child"})
        except BaseException as exc:
            print(repr(exc), file=sys.stderr)
            os._exit(1)
        os._exit(0)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    xetrack_c.log_metrics({"who": "parent-after"})
print("ok")
"""


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_log_metrics_after_fork(run_py, db_path):
    proc = run_py(FORK_SCRIPT, args=[db_path], env=_clean_env())
    assert proc.stdout.strip() == "ok"
    rows = read_rows(db_path, "metrics")
    assert sorted((r["experiment_id"], r["who"]) for r in rows) == [
        ("child", "child"), ("parent", "parent-after"), ("parent", "parent-before")
    ]


# ------------------------------------------------------------------ bad input
@pytest.mark.parametrize("bad", [[("a", 1)], "acc=1", 0.5, None])
def test_log_metrics_rejects_non_dict(bad, db_path):
    with task_context("e", {}, None, db_path, None):
        with pytest.raises(TypeError, match="dict of metric name"):
            xetrack_c.log_metrics(bad)
    assert not os.path.exists(db_path)


@pytest.mark.parametrize("step", ["1", 1.0, True])
def test_log_metrics_rejects_bad_step(step, db_path):
    with task_context("e", {}, None, db_path, None):
        with pytest.raises(TypeError, match="step must be an int"):
            xetrack_c.log_metrics({"a": 1}, step=step)


@pytest.mark.parametrize("key", ["experiment_id", "track_id", "timestamp"])
def test_log_metrics_rejects_reserved_keys(key, db_path):
    with task_context("e", {}, None, db_path, None):
        with pytest.raises(ValueError, match=key):
            xetrack_c.log_metrics({key: 1})
        with pytest.raises(ValueError, match="step"):
            xetrack_c.log_metrics({"step": 1}, step=2)


def test_child_environment_names_unserialisable_key():
    with pytest.raises(ValueError, match=r"'model\.loss_fn'.*JSON-compatible"):
        child_environment("e", {"model": {"lr": 1, "loss_fn": len}}, None, None, None)
    with pytest.raises(ValueError, match=r"'items\[1\]'"):
        child_environment("e", {"items": [1, {1, 2}]}, None, None, None)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"experiment_id": ""}, "experiment_id"),
        ({"experiment_id": 3}, "experiment_id"),
        ({"config": [1]}, "config must be a dict"),
        ({"seed": "1"}, "seed must be an int"),
        ({"seed": True}, "seed must be an int"),
        ({"name": 5}, "name must be a str"),
        ({"metrics_table": ""}, "metrics_table"),
    ],
)
def test_bad_arguments(kwargs, match):
    args = {"experiment_id": "e", "config": {}, "seed": None, "db": None, "name": None}
    args.update(kwargs)
    with pytest.raises(TypeError, match=match):
        child_environment(**args)
    with pytest.raises(TypeError, match=match):
        with task_context(**args):
            pass


def test_get_param_name_must_be_str():
    with pytest.raises(TypeError, match="name as a str"):
        xetrack_c.get_param(1)


@pytest.mark.parametrize(
    "variable, value, match",
    [
        (XETRACK_C_CONFIG, "{not json", "XETRACK_C_CONFIG is not valid JSON"),
        (XETRACK_C_CONFIG, "[1, 2]", "must hold a JSON object"),
        (XETRACK_C_SEED, "abc", "XETRACK_C_SEED='abc' is not an int"),
    ],
)
def test_bad_environment(monkeypatch, variable, value, match):
    monkeypatch.setenv(XETRACK_C_EXPERIMENT_ID, "e")
    monkeypatch.setenv(variable, value)
    with pytest.raises(ValueError, match=match):
        xetrack_c.get_params()


def test_bad_metrics_table_name_raises(db_path):
    with task_context("e", {}, None, db_path, None, metrics_table="bad name;"):
        with pytest.raises(ValueError, match="invalid table name"):
            xetrack_c.log_metrics({"a": 1})


def test_metrics_table_opens_in_xetrack(db_path, run_py):
    python = find_xetrack_python(child_env())
    if python is None:
        pytest.skip(skip_reason())
    with task_context("exp-x", {}, None, db_path, None):
        xetrack_c.log_metrics({"acc": 0.5, "note": "ok"}, step=1)
    # xetrack 0.7 with sqlitedict switches the file's journal mode on open, which needs the
    # file to itself (docs/migration.md): close the metrics tracker this process keeps open.
    from xetrack_c.run import child

    for tracker in list(child._trackers.values()):
        tracker.close()
    code = (
        "import sys, json\n"
        "from xetrack.reader import Reader\n"
        "df = Reader(sys.argv[1], table='metrics').to_df()\n"
        "print(json.dumps(df[['experiment_id', 'step', 'acc', 'note']].values.tolist()))\n"
    )
    proc = run_py(code, python=python, args=[db_path], check=False, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == [["exp-x", 1, 0.5, "ok"]]
