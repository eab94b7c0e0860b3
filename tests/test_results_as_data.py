"""What a batch records as data (issue 18): a function's return value as columns of its
experiments row, the spec's description / tags / script_args, an older table migrated in
place (item 1); and ``log_metrics`` without ``db``: no file, the rows in
``ExperimentResult.metrics`` (item 6).

Every behaviour is checked on the local pool's threads, its worker processes
(``backend="process"``) and the executor path (``executor=``), with real threads and
processes. Task functions live in tests/helpers/record_tasks.py, importable by workers.
"""

from __future__ import annotations

import os
import sqlite3
import sys
import textwrap
import warnings
from concurrent.futures import ThreadPoolExecutor

import pytest
from conftest import HELPERS, read_rows, table_info

from xetrack_c import ExperimentSpec, run_multiple

if str(HELPERS) not in sys.path:
    sys.path.insert(0, str(HELPERS))

import record_tasks  # noqa: E402

MODES = ["thread", "process", "executor"]


def run(specs, mode, parallel=2, **options):
    """run_multiple on the local pool's threads or processes, or on an executor."""
    if mode == "executor":
        with ThreadPoolExecutor(parallel) as pool:
            return run_multiple(specs, parallel, executor=pool, **options)
    return run_multiple(specs, parallel, backend=mode, **options)


def rows_by_id(db):
    return {row["experiment_id"]: row for row in read_rows(db, "experiments")}


# ------------------------------------------------------------------ item 1: results as data
@pytest.mark.parametrize("mode", MODES)
def test_readme_trial_leaves_loss_in_the_experiments_table(db_path, mode):
    specs = [ExperimentSpec(function=record_tasks.trial, config={"lr": lr})
             for lr in (0.1, 0.03, 0.01)]
    results = run(specs, mode, db=db_path)
    assert [r.status for r in results] == ["completed"] * 3
    rows = rows_by_id(db_path)
    assert {rows[r.experiment_id]["lr"]: rows[r.experiment_id]["loss"] for r in results} == \
        pytest.approx({0.1: 0.07 ** 2, 0.03: 0.0, 0.01: 0.02 ** 2})
    assert table_info(db_path, "experiments")["loss"] == "REAL"


@pytest.mark.parametrize("mode", MODES)
def test_values_as_themselves_json_as_text_collisions_prefixed(db_path, mode):
    specs = [ExperimentSpec(function=record_tasks.returns, config={"case": case, "lr": 0.1})
             for case in range(len(record_tasks.CASES))]
    # One at a time: a column takes the SQL type of the first value written to it (xetrack's
    # rule), so the order of the rows decides how `result` is declared.
    results = run(specs, mode, parallel=1, db=db_path)
    assert [r.status for r in results] == ["completed"] * len(specs)
    rows = [rows_by_id(db_path)[r.experiment_id] for r in results]
    # anything but a dict: the column `result`, numbers, strings and bools as themselves
    assert [row["result"] for row in rows[:5]] == [0.5, "text", 1, 7, '[1, "a", null]']
    # a dict: one column per key; lists and nested dicts as JSON text
    assert (rows[5]["curve"], rows[5]["meta"], rows[5]["flag"]) == ("[0.1, 0.2]", '{"k": 1}', 0)
    assert rows[5]["result"] is None
    assert rows[6]["result"] is None  # None stores nothing
    # keys that are the table's own columns (or a config key) get `result_`
    collided = rows[7]
    assert (collided["status"], collided["error"], collided["lr"], collided["case"]) == \
        ("completed", None, 0.1, 7)
    assert collided["experiment_id"] == results[7].experiment_id
    assert (collided["result_status"], collided["result_error"], collided["result_lr"],
            collided["result_experiment_id"], collided["result_case"], collided["loss"]) == \
        ("mine", "e", 5, "x", 3, 1)
    assert results[7].result == record_tasks.CASES[7]  # the result itself is untouched


@pytest.mark.parametrize("mode", MODES)
def test_objects_are_refused_with_a_warning_naming_the_type_never_a_repr(db_path, mode):
    specs = [ExperimentSpec(function=record_tasks.returns_opaque, config={"i": 0})]
    with pytest.warns(RuntimeWarning) as caught:
        (result,) = run(specs, mode, db=db_path)
    assert result.status == "completed" and isinstance(result.result["model"],
                                                       record_tasks.Opaque)
    texts = [str(w.message) for w in caught]
    assert any("'model' is a Opaque" in text for text in texts), texts
    assert any("'nested' is a list (a list holding a Opaque)" in text for text in texts), texts
    row = rows_by_id(db_path)[result.experiment_id]
    assert row["kept"] == 1
    assert row.get("model") is None and row.get("nested") is None
    assert not any("Opaque" in str(value) for value in row.values())


def test_a_refused_non_dict_result_warns_too(db_path):
    with pytest.warns(RuntimeWarning, match="the return value is a Opaque"):
        (result,) = run_multiple([ExperimentSpec(function=lambda config: record_tasks.Opaque())],
                                 db=db_path)
    assert rows_by_id(db_path)[result.experiment_id].get("result") is None


def test_dataclass_result_becomes_columns(db_path):
    (result,) = run_multiple([ExperimentSpec(function=record_tasks.returns_dataclass)],
                             db=db_path)
    row = rows_by_id(db_path)[result.experiment_id]
    assert (row["accuracy"], row["label"]) == (0.75, "ok")


def test_without_db_nothing_is_converted_or_warned(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        (result,) = run_multiple([ExperimentSpec(function=record_tasks.returns_opaque)])
    assert result.status == "completed" and os.listdir(tmp_path) == []


@pytest.mark.parametrize("mode", ["thread", "executor"])
def test_description_tags_and_script_args_are_recorded(tmp_path, db_path, mode):
    script = tmp_path / "echo_args.py"
    script.write_text("import sys\nassert sys.argv[1:] == ['--epochs', '3']\n")
    specs = [
        ExperimentSpec(script_path=str(script), script_args=["--epochs", "3"], name="s",
                       description="a script", tags=["kfold", "baseline"]),
        ExperimentSpec(function=record_tasks.trial, config={"lr": 0.1}, name="f",
                       description="a function", tags=["grid"]),
    ]
    results = run(specs, mode, db=db_path)
    assert [r.status for r in results] == ["completed"] * 2, results
    rows = rows_by_id(db_path)
    script_row, function_row = (rows[r.experiment_id] for r in results)
    assert (script_row["description"], script_row["tags"], script_row["script_args"]) == \
        ("a script", "kfold,baseline", '["--epochs", "3"]')
    assert (function_row["description"], function_row["tags"], function_row["script_args"]) == \
        ("a function", "grid", "[]")
    assert script_row["attempts"] == function_row["attempts"] == 1


def test_an_experiments_table_of_the_previous_version_is_migrated_in_place(db_path):
    # The table exactly as the previous version wrote it: no description, script_args,
    # attempts, and no result columns.
    with sqlite3.connect(db_path) as conn:
        conn.execute(textwrap.dedent("""
            CREATE TABLE "experiments" (track_id TEXT, timestamp TEXT, "experiment_id" TEXT,
                "name" TEXT, "status" TEXT, "duration" REAL, "seed" INTEGER, "error" TEXT,
                "tags" TEXT, "kind" TEXT, "target" TEXT, "fingerprint" TEXT, "lr" REAL,
                PRIMARY KEY (track_id, timestamp))"""))
        conn.execute("""INSERT INTO "experiments" VALUES ('old-run', '2024-01-01 00:00:00.000000',
            'old00001', 'old', 'completed', 1.0, 5, NULL, '', 'function', 'x.y', 'fp', 0.5)""")
    specs = [ExperimentSpec(function=record_tasks.trial, config={"lr": lr}, description="new")
             for lr in (0.1, 0.03)]
    results = run_multiple(specs, 2, db=db_path)
    assert [r.status for r in results] == ["completed"] * 2
    columns = table_info(db_path, "experiments")
    for column in ("description", "script_args", "attempts", "loss"):
        assert column in columns
    rows = rows_by_id(db_path)
    old = rows["old00001"]
    assert (old["name"], old["status"], old["lr"]) == ("old", "completed", 0.5)
    assert (old["description"], old["script_args"], old["attempts"], old["loss"]) == \
        (None, None, None, None)
    for result in results:
        row = rows[result.experiment_id]
        assert (row["description"], row["script_args"], row["attempts"]) == ("new", "[]", 1)
        assert row["loss"] == pytest.approx((row["lr"] - 0.03) ** 2)
    # and resume still reads it
    again = run_multiple(specs, 2, db=db_path, resume=True)
    assert [r.status for r in again] == ["skipped"] * 2


# ------------------------------------------------------------------ item 6: nothing written unasked
def expected_metrics(result, i):
    return [{"experiment_id": result.experiment_id, "step": 0, "loss": 1.0},
            {"experiment_id": result.experiment_id, "step": 1, "loss": 0.5},
            {"experiment_id": result.experiment_id, "step": 2, "loss": 1.0 / 3},
            {"experiment_id": result.experiment_id, "final": i}]


@pytest.mark.parametrize("mode", MODES)
def test_function_tasks_without_db_write_no_file_and_return_their_metrics(tmp_path, monkeypatch,
                                                                          mode):
    monkeypatch.chdir(tmp_path)
    specs = [ExperimentSpec(function=record_tasks.logs_metrics, config={"i": i})
             for i in range(3)]
    results = run(specs, mode)
    assert [r.status for r in results] == ["completed"] * 3
    for i, result in enumerate(results):
        assert result.metrics == expected_metrics(result, i)
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("launcher", ["spawn", "forkserver", "executor"])
def test_script_tasks_without_db_write_no_file_and_return_their_metrics(tmp_path, monkeypatch,
                                                                        launcher):
    scripts = tmp_path / "scripts"
    scripts.mkdir()
    script = scripts / "logs.py"
    script.write_text(textwrap.dedent("""
        import xetrack_c
        for step in range(3):
            xetrack_c.log_metrics({"loss": 1.0 / (step + 1)}, step=step)
        xetrack_c.log_metrics({"final": xetrack_c.get_param("i")})
    """))
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    specs = [ExperimentSpec(script_path=str(script), config={"i": i}) for i in range(2)]
    if launcher == "executor":
        with ThreadPoolExecutor(2) as pool:
            results = run_multiple(specs, 2, executor=pool)
    else:
        results = run_multiple(specs, 2, launcher=launcher)
    assert [r.status for r in results] == ["completed"] * 2, results
    for i, result in enumerate(results):
        assert result.metrics == expected_metrics(result, i)
    assert os.listdir(work) == []


def test_with_db_metrics_go_to_its_table_and_not_to_the_result(db_path):
    results = run_multiple([ExperimentSpec(function=record_tasks.logs_metrics, config={"i": 0})],
                           db=db_path)
    assert results[0].metrics == []
    assert len(read_rows(db_path, "metrics")) == 4
