"""The experiments table of run_multiple, config flattening and resume fingerprints."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import threading

import pytest
from conftest import child_env, read_rows, table_info, table_names

import xetrack_c
from xetrack_c import Tracker
from xetrack_c.run.experiments import FIXED_COLUMNS, ExperimentTable, fingerprint, flatten_config


def _record(table: ExperimentTable, experiment_id: str, status: str = "completed", **extra):
    args = dict(
        experiment_id=experiment_id, name=f"name-{experiment_id}", status=status,
        duration=1.5, seed=7, error_message=None, tags=["a", "b"], config={"lr": 0.1},
        kind="function", target="mod.train", fingerprint=f"fp-{experiment_id}",
    )
    args.update(extra)
    table.record(**args)


# ------------------------------------------------------------------ rows
def test_record_writes_one_row_with_fixed_columns_then_config(db_path):
    with ExperimentTable(db_path) as table:
        table.record(
            experiment_id="e-1", name="fold-0", status="completed", duration=2.25, seed=None,
            error_message=None, tags=["cv", "baseline"],
            config={"model": {"lr": 0.01, "opt": {"name": "adam"}}, "fold": 0, "layers": [1, 2]},
            kind="script", target="train.py", fingerprint="abc",
        )
        table.record(
            experiment_id="e-2", name=None, status="failed", duration=0.5, seed=42,
            error_message="ValueError: bad fold", tags=[], config={"fold": 1},
            kind="script", target="train.py", fingerprint="def",
        )
    assert table_names(db_path) == ["experiments"]
    columns = list(table_info(db_path, "experiments"))
    assert columns[:2] == ["track_id", "timestamp"]
    fixed_end = 2 + len(FIXED_COLUMNS)
    assert columns[2:fixed_end] == list(FIXED_COLUMNS)
    assert columns[fixed_end:] == ["model_lr", "model_opt_name", "fold", "layers"]
    types = table_info(db_path, "experiments")
    assert types["seed"] == "INTEGER" and types["duration"] == "REAL" and types["error"] == "TEXT"
    first, second = read_rows(db_path, "experiments")
    assert first["experiment_id"] == "e-1" and first["name"] == "fold-0"
    assert first["status"] == "completed" and first["duration"] == 2.25
    assert first["seed"] is None and first["error"] is None
    assert first["tags"] == "cv,baseline"
    assert (first["kind"], first["target"], first["fingerprint"]) == ("script", "train.py", "abc")
    assert (first["model_lr"], first["model_opt_name"], first["fold"]) == (0.01, "adam", 0)
    assert first["layers"] == "[1, 2]"
    assert second["seed"] == 42 and isinstance(second["seed"], int)
    assert second["error"] == "ValueError: bad fold" and second["tags"] == ""
    assert second["name"] is None and second["model_lr"] is None
    # One batch, one track_id.
    assert first["track_id"] == second["track_id"]


def test_rows_open_as_a_tracker_table(db_path):
    with ExperimentTable(db_path, table="runs") as table:
        _record(table, "x")
    tracker = Tracker(db_path, table="runs")
    try:
        assert tracker.count_all() == 1
    finally:
        tracker.close()


def test_config_key_clashing_with_fixed_column_gets_prefix(db_path):
    config = {"name": "cfg-name", "Status": "cfg-status", "seed": 3, "timestamp": 1,
              "tags": ["t"], "other": 1}
    with ExperimentTable(db_path) as table:
        _record(table, "e", config=config)
    row = read_rows(db_path, "experiments")[0]
    assert row["name"] == "name-e" and row["status"] == "completed" and row["seed"] == 7
    assert row["config_name"] == "cfg-name"
    assert row["config_Status"] == "cfg-status"
    assert row["config_seed"] == 3 and row["config_timestamp"] == 1
    assert row["config_tags"] == "['t']" and row["other"] == 1


def test_flatten_config():
    assert flatten_config({}) == {}
    assert flatten_config({"a": {"b": {"c": 1}}, "d": 2, "e": {}}) == {"a_b_c": 1, "d": 2, "e": {}}
    assert flatten_config({"model.lr": 1, "x y": 2}) == {"model_lr": 1, "x_y": 2}
    assert flatten_config({"error": "e"}) == {"config_error": "e"}


@pytest.mark.parametrize(
    "config",
    [
        {"a_b": 1, "a": {"b": 2}},
        {"lr": 1, "LR": 2},
        {"model.lr": 1, "model": {"lr": 2}},
        {"config_name": 1, "name": 2},
    ],
)
def test_flatten_config_collision_names_both_keys(config):
    with pytest.raises(ValueError, match="both become the column"):
        flatten_config(config)


def test_flatten_config_rejects_non_dict():
    with pytest.raises(TypeError, match="config must be a dict"):
        flatten_config([("a", 1)])


def test_concurrent_records_from_threads(db_path):
    barrier = threading.Barrier(8)
    errors = []

    def worker(i: int) -> None:
        try:
            barrier.wait(timeout=30)
            _record(table, f"e{i}", config={"i": i})
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    with ExperimentTable(db_path) as table:
        threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
    assert not errors
    rows = read_rows(db_path, "experiments")
    assert sorted(r["experiment_id"] for r in rows) == [f"e{i}" for i in range(8)]
    assert all(r["i"] == int(r["experiment_id"][1:]) for r in rows)


# ------------------------------------------------------------------ completed fingerprints
def test_completed_fingerprints_missing_file_creates_nothing(tmp_path):
    db = tmp_path / "none" / "missing.db"
    table = ExperimentTable(db)
    assert table.completed_fingerprints() == set()
    table.close()
    assert not db.exists() and not db.parent.exists()


def test_completed_fingerprints_missing_table_creates_nothing(db_path):
    with Tracker(db_path, table="other") as tracker:
        tracker.log({"a": 1})
    with ExperimentTable(db_path) as table:
        assert table.completed_fingerprints() == set()
    assert table_names(db_path) == ["other"]


def test_completed_fingerprints_only_completed(db_path):
    with ExperimentTable(db_path) as table:
        _record(table, "1", "completed", fingerprint="fp-a")
        _record(table, "2", "failed", fingerprint="fp-b")
        _record(table, "3", "timeout", fingerprint="fp-c")
        _record(table, "4", "completed", fingerprint="fp-d")
        _record(table, "5", "completed", fingerprint="fp-a")
        assert table.completed_fingerprints() == {"fp-a", "fp-d"}
    # A fresh object (a resumed batch) sees the same.
    assert ExperimentTable(db_path).completed_fingerprints() == {"fp-a", "fp-d"}


def test_completed_fingerprints_of_a_non_database_names_file(tmp_path):
    path = tmp_path / "notes.db"
    path.write_text("this is not a database" * 100)
    with pytest.raises(xetrack_c.CorruptDatabaseError, match="notes.db"):
        ExperimentTable(path).completed_fingerprints()


# ------------------------------------------------------------------ lifetime and bad input
def test_record_after_close_raises(db_path):
    table = ExperimentTable(db_path)
    table.close()
    table.close()
    with pytest.raises(ValueError, match="closed"):
        _record(table, "e")


@pytest.mark.parametrize("db", [":memory:", "SKIP_INSERT"])
def test_in_memory_db_refused(db):
    with pytest.raises(ValueError, match="pass a file path"):
        ExperimentTable(db)


def test_bad_table_name_refused(db_path):
    with pytest.raises(ValueError, match="invalid table name"):
        ExperimentTable(db_path, table="x; DROP TABLE y")


def test_tags_must_be_a_list(db_path):
    with ExperimentTable(db_path) as table:
        with pytest.raises(TypeError, match="tags must be a list"):
            _record(table, "e", tags="a,b")
    assert not os.path.exists(db_path)


# ------------------------------------------------------------------ fingerprint
def test_fingerprint_properties():
    base = fingerprint("train.py", {"a": 1, "b": {"c": [1, 2]}}, 3)
    assert len(base) == 64 and int(base, 16) >= 0
    assert fingerprint("train.py", {"b": {"c": [1, 2]}, "a": 1}, 3) == base  # key order
    assert fingerprint("other.py", {"a": 1, "b": {"c": [1, 2]}}, 3) != base
    assert fingerprint("train.py", {"a": 2, "b": {"c": [1, 2]}}, 3) != base
    assert fingerprint("train.py", {"a": 1, "b": {"c": [1, 2]}}, None) != base
    assert fingerprint("train.py", {}, None) != fingerprint("train.py", {}, 0)


def test_fingerprint_bad_input():
    with pytest.raises(TypeError, match="target must be a str"):
        fingerprint(None, {}, None)
    with pytest.raises(TypeError, match="config must be a dict"):
        fingerprint("t", [1], None)


@dataclasses.dataclass
class _Point:
    x: int
    y: str


FINGERPRINT_CODE = (
    "from xetrack_c.run.experiments import fingerprint\n"
    "print(fingerprint('mod.fn', {'s': {'b', 'a', 'c'}, 'k': 'v', 1: [1.5, None, True],"
    " 'u': '\u00e9\u6f22'}, 12))\n"
)


def test_fingerprint_same_in_processes_with_different_hash_seeds():
    outputs = set()
    for hash_seed in ("0", "1", "12345"):
        env = child_env()
        env["PYTHONHASHSEED"] = hash_seed
        proc = subprocess.run([sys.executable, "-c", FINGERPRINT_CODE], env=env,
                              capture_output=True, text=True, timeout=60, check=True)
        outputs.add(proc.stdout.strip())
    assert len(outputs) == 1
    here = fingerprint("mod.fn", {"s": {"b", "a", "c"}, "k": "v", 1: [1.5, None, True],
                                  "u": "\u00e9\u6f22"}, 12)
    assert outputs == {here}


def test_fingerprint_of_dataclass_config_value():
    assert fingerprint("f", {"p": _Point(1, "a")}, None) == fingerprint(
        "f", {"p": {"x": 1, "y": "a"}}, None)


def test_attempts_is_not_a_name_for_the_experiments_table(db_path):
    with pytest.raises(ValueError, match="attempts table"):
        ExperimentTable(db_path, table="Attempts")
