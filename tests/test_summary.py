"""Comparing runs: params vs metrics, Reader.tables/runs/summary/compare, rows linked to
run_multiple experiments, and the params record read by xetrack 0.7."""

from __future__ import annotations

import math
import os
import random
import sqlite3
import sys
from pathlib import Path

import pandas as pd
import pytest
from conftest import child_env
from xetrack_peer import find_xetrack_python, skip_reason

from xetrack_c import ExperimentSpec, Reader, Tracker, run_multiple
from xetrack_c.summary import AGGREGATIONS, PARAMS_TABLE, classify

sys.path.insert(0, str(Path(__file__).parent / "helpers"))
import summary_tasks  # noqa: E402  (importable by process workers through sys.path)

pytestmark = pytest.mark.slow  # run_multiple on processes, xetrack 0.7 in a child


def _random_runs(path: str, seed: int = 7) -> None:
    """Six runs over two models and three learning rates; acc and loss with NULL gaps,
    loss missing for whole runs of one model, an int metric."""
    rng = random.Random(seed)
    for run in range(6):
        model = "ab"[run % 2]
        tracker = Tracker(path, params={"model": model, "lr": [0.1, 0.01, 0.001][run % 3]},
                          track_id=f"run-{run}")
        for step in range(rng.randint(3, 9)):
            row = {"epoch": step, "acc": None if rng.random() < 0.3 else rng.random()}
            if model == "a":
                row["loss"] = None if rng.random() < 0.3 else rng.uniform(-5, 5)
            tracker.log(row)
        tracker.close()


def _expected(frame: pd.DataFrame, by, metrics, aggs) -> pd.DataFrame:
    grouped = frame.groupby(by, dropna=False, sort=True)[metrics]
    return grouped.agg(list(aggs))


@pytest.mark.parametrize("by", ["track_id", "model", ["model", "lr"]])
def test_summary_matches_pandas_groupby(db_path, by):
    _random_runs(db_path)
    reader = Reader(db_path)
    metrics = ["acc", "loss", "epoch"]
    got = reader.summary(metrics, by=by, agg=AGGREGATIONS)
    frame = reader.to_df()  # sorted by timestamp: pandas' first/last follow it
    # loss's first value was None: its column is TEXT and holds the numbers as text
    assert frame.loss.dropna().map(type).eq(str).all()
    frame["loss"] = pd.to_numeric(frame.loss)
    expected = _expected(frame, by, metrics, AGGREGATIONS)
    keys = [by] if isinstance(by, str) else by
    assert len(got) == len(expected) and len(got) >= 2
    for i, (key, row) in enumerate(expected.iterrows()):
        key = key if isinstance(key, tuple) else (key,)
        assert tuple(got.loc[i, keys]) == key
        for metric in metrics:
            for agg in AGGREGATIONS:
                want, have = row[(metric, agg)], got.loc[i, f"{metric}_{agg}"]
                if pd.isna(want):
                    assert pd.isna(have), (key, metric, agg, have)
                else:
                    assert have == pytest.approx(want, rel=1e-9, abs=1e-12), (key, metric, agg)


def test_last_follows_timestamps_not_table_order(tmp_path):
    path = str(tmp_path / "shuffled.db")
    conn = sqlite3.connect(path)
    conn.execute('CREATE TABLE "default" (timestamp TEXT, track_id TEXT, acc REAL)')
    conn.executemany('INSERT INTO "default" VALUES (?, ?, ?)', [
        ("2024-01-01 00:00:03.000000", "r", 3.0), ("2024-01-01 00:00:01.000000", "r", 1.0),
        ("2024-01-01 00:00:04.000000", "r", None), ("2024-01-01 00:00:02.000000", "r", 2.0)])
    conn.commit()
    conn.close()
    got = Reader(path).summary("acc", agg=["first", "last", "count"])
    assert got.to_dict("records") == [{"track_id": "r", "acc_first": 1.0, "acc_last": 3.0,
                                       "acc_count": 3}]


def test_summary_bad_input_names_what_exists(db_path):
    _random_runs(db_path)
    reader = Reader(db_path)
    with pytest.raises(ValueError, match=r"unknown metric 'accuracy'.*\bacc\b"):
        reader.summary("accuracy")
    with pytest.raises(ValueError, match=r"unknown aggregation 'median'.*last, first"):
        reader.summary("acc", agg="median")
    with pytest.raises(ValueError, match=r"unknown by column 'size'.*model"):
        reader.summary("acc", by="size")
    with pytest.raises(ValueError, match=r"metrics= is empty.*\bacc\b"):
        reader.summary([])
    with pytest.raises(ValueError, match="'model' holds text that is not a number"):
        reader.summary("model", by="lr")


def test_params_are_recorded_and_classify(db_path):
    tracker = Tracker(db_path, params={"model": "a"}, track_id="one")
    tracker.log({"acc": 0.5, "note": "x"})
    tracker.set_param("batch", 32)
    tracker.log({"acc": 0.7, "note": "y"})
    tracker.close()
    conn = sqlite3.connect(db_path)
    recorded = sorted(conn.execute(f"SELECT table_name, track_id, name FROM {PARAMS_TABLE}"))
    conn.close()
    assert recorded == [("default", "one", "batch"), ("default", "one", "model")]
    assert classify(Reader(db_path)) == (["model", "batch"], ["acc"])


def test_classify_without_record_uses_constancy(db_path):
    _random_runs(db_path)
    conn = sqlite3.connect(db_path)
    conn.execute(f"DROP TABLE {PARAMS_TABLE}")
    conn.commit()
    conn.close()
    assert classify(Reader(db_path)) == (["model", "lr"], ["epoch", "acc", "loss"])
    # one row per run: text columns are params, numbers metrics
    single = db_path + ".single"
    for model, score in (("a", 1.0), ("b", 2.0)):
        with Tracker(single) as tracker:
            tracker.log({"model": model, "score": score})
    assert classify(Reader(single)) == (["model"], ["score"])


def test_tables_runs_and_compare(db_path):
    _random_runs(db_path)
    reader = Reader(db_path)
    assert reader.tables().to_dict("records") == [
        {"name": "default", "kind": "tracking"}, {"name": PARAMS_TABLE, "kind": "params"}]
    runs = reader.runs()
    frame = reader.to_df()
    assert list(runs["track_id"]) == [f"run-{i}" for i in range(6)]
    for _, run in runs.iterrows():
        rows = frame[frame.track_id == run.track_id]
        assert run["rows"] == len(rows)
        assert (run.start, run.end) == (rows.timestamp.min(), rows.timestamp.max())
        assert (run.model, run.lr) == (rows.model.iloc[0], rows.lr.iloc[0])
    comparison = reader.compare("run-0", "run-1")
    params = comparison.params.set_index("param")
    assert params.loc["model"].tolist() == ["a", "b", True]
    assert params.loc["lr"].tolist() == [0.1, 0.01, True]
    metrics = comparison.metrics.set_index("metric")
    last = frame.groupby("track_id")["acc"].last()
    top = frame.groupby("track_id")["acc"].max()
    acc = metrics.loc["acc"]
    assert acc.a_last == pytest.approx(last["run-0"]) and acc.b_max == pytest.approx(top["run-1"])
    assert acc.delta_last == pytest.approx(last["run-1"] - last["run-0"])
    assert acc.delta_max == pytest.approx(top["run-1"] - top["run-0"])
    assert math.isnan(metrics.loc["loss"].b_last)  # model b logs no loss
    with pytest.raises(ValueError, match=r"no run 'run-9'.*'run-0'"):
        reader.compare("run-0", "run-9")


@pytest.mark.no_sanitizer
@pytest.mark.parametrize("backend", ["thread", "process"])
def test_tracker_in_a_task_records_the_experiment(tmp_path, backend, monkeypatch):
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(
        [str(Path(__file__).parent / "helpers"), os.environ.get("PYTHONPATH", "")]))
    db = str(tmp_path / "batch.db")
    specs = [ExperimentSpec(function=summary_tasks.train, config={"lr": lr, "db": db},
                            name=f"lr{lr}") for lr in (0.1, 0.2, 0.3)]
    results = run_multiple(specs, parallel=2, backend=backend, db=db)
    assert [r.status for r in results] == ["completed"] * 3
    reader = Reader(db)
    frame = reader.to_df()
    lrs = {spec.name: spec.config["lr"] for spec in specs}
    ids = {r.experiment_id: lrs[r.name] for r in results}
    assert set(frame.experiment_id) == set(ids)
    for experiment_id, lr in ids.items():
        assert set(frame[frame.experiment_id == experiment_id].lr) == {lr}
    summary = reader.summary("acc", by="experiment_id", agg=["last", "count"])
    assert {row["experiment_id"]: (row["acc_last"], row["acc_count"])
            for row in summary.to_dict("records")} == pytest.approx(
        {eid: (lr * 3, 3) for eid, lr in ids.items()})
    runs = reader.runs()
    assert sorted(runs.status) == ["completed"] * 3
    assert dict(zip(runs.experiment_id, runs.lr, strict=True)) == ids


def test_a_tracker_outside_a_task_has_no_experiment_id(db_path):
    with Tracker(db_path, params={"lr": 1}) as tracker:
        tracker.log({"acc": 1.0})
    assert "experiment_id" not in Reader(db_path).columns


def test_xetrack_07_reads_a_file_with_the_params_record(db_path, run_py):
    python = find_xetrack_python(child_env())
    if python is None:
        pytest.skip(skip_reason())
    _random_runs(db_path)
    expected = len(Reader(db_path))
    proc = run_py(
        "from xetrack import Reader, Tracker\n"
        f"df = Reader({db_path!r}).to_df()\n"
        "assert PARAMS not in df.columns\n"
        f"t = Tracker({db_path!r}, params={{'model': 'c'}})\n"
        "t.log({'acc': 0.5})\n"
        f"print(len(df), len(Reader({db_path!r}).to_df()), sorted(df.columns))\n"
        .replace("PARAMS", repr(PARAMS_TABLE)),
        timeout=120, python=python)
    rows_before, rows_after, columns = proc.stdout.split(maxsplit=2)
    assert (int(rows_before), int(rows_after)) == (expected, expected + 1)
    assert "xetrack_params" not in columns
    # xetrack's run has no params record: the recorded runs keep theirs
    runs = Reader(db_path).runs()
    assert len(runs) == 7 and set(runs.model) == {"a", "b", "c"}


@pytest.mark.parametrize("long_keys", [False, True])
def test_group_keys_of_any_length_and_empty(tmp_path, long_keys):
    path = str(tmp_path / "keys.db")
    rng = random.Random(3)
    names = ["x", "yy", "zzzz", "a key of 24 characters.", None]
    names += ["w" * 100] if long_keys else []
    conn = sqlite3.connect(path)
    conn.execute('CREATE TABLE "default" (timestamp TEXT, track_id TEXT, tag TEXT, '
                 'size INTEGER, acc REAL)')
    conn.executemany('INSERT INTO "default" VALUES (?, ?, ?, ?, ?)', [
        (f"2024-01-01 00:00:{i:02d}.000000", f"r{i % 3}", rng.choice(names),
         rng.choice([1, 2, None]), rng.random()) for i in range(60)])
    conn.commit()
    conn.close()
    reader = Reader(path)
    got = reader.summary("acc", by=["tag", "size"], agg=["last", "count", "mean"])
    frame = reader.to_df()
    expected = frame.groupby(["tag", "size"], dropna=False, sort=True)["acc"].agg(
        ["last", "count", "mean"]).reset_index()
    assert len(got) == len(expected)
    for have, want in zip(got.to_dict("records"), expected.to_dict("records"), strict=True):
        for key in ("tag", "size"):
            assert (pd.isna(have[key]) and pd.isna(want[key])) or have[key] == want[key]
        assert have["acc_last"] == pytest.approx(want["last"])
        assert have["acc_count"] == want["count"]
        assert have["acc_mean"] == pytest.approx(want["mean"])


def test_tracker_in_a_script_task_records_the_experiment(tmp_path, monkeypatch):
    db = str(tmp_path / "scripts.db")
    script = tmp_path / "train.py"
    script.write_text(
        "from xetrack_c import Tracker, get_param\n"
        f"tracker = Tracker({db!r}, params={{'lr': get_param('lr')}})\n"
        "tracker.log({'acc': get_param('lr') * 2})\n"
        "tracker.close()\n")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(
        [str(Path(__file__).resolve().parents[1]), os.environ.get("PYTHONPATH", "")]))
    results = run_multiple([ExperimentSpec(script_path=str(script), config={"lr": lr})
                            for lr in (0.1, 0.2)], db=db)
    assert [r.status for r in results] == ["completed"] * 2
    runs = Reader(db).runs()
    assert dict(zip(runs.experiment_id, runs.lr, strict=True)) == {
        results[0].experiment_id: 0.1, results[1].experiment_id: 0.2}
    assert list(runs.status) == ["completed"] * 2


def test_runs_of_the_log_metrics_table(tmp_path):
    from xetrack_c import log_metrics

    def task(config):
        for step in range(2):
            log_metrics({"loss": config["x"] / (step + 1)}, step=step)

    db = str(tmp_path / "metrics.db")
    results = run_multiple([ExperimentSpec(function=task, config={"x": x}) for x in (1.0, 2.0)],
                           db=db)
    reader = Reader(db, table="metrics")
    runs = reader.runs()  # one tracker per process: one run holding both experiments
    assert len(runs) == 1 and runs.experiment_id.isna().all() and runs.status.isna().all()
    summary = reader.summary("loss", by="experiment_id", agg=["first", "last"])
    expected = {r.experiment_id: x for r, x in zip(results, (1.0, 2.0), strict=True)}
    assert {row["experiment_id"]: (row["loss_first"], row["loss_last"])
            for row in summary.to_dict("records")} == {
        eid: (x, x / 2) for eid, x in expected.items()}


def test_a_param_named_like_a_runs_column(db_path):
    for status in ("ok", "bad"):
        with Tracker(db_path, params={"status": status, "rows": 3}) as tracker:
            tracker.log({"acc": 0.5})
            tracker.log({"acc": 1.0 if status == "ok" else 0.0})
    reader = Reader(db_path)
    runs = reader.runs()
    assert list(runs.columns) == ["track_id", "start", "end", "rows", "param_status",
                                  "param_rows"]
    assert list(runs["rows"]) == [2, 2] and list(runs.param_status) == ["ok", "bad"]
    ids = list(runs.track_id)
    params = reader.compare(*ids).params.set_index("param")
    assert params.loc["status"].tolist() == ["ok", "bad", True]
    assert params.loc["rows"].tolist() == [3, 3, False]


def test_many_params_are_recorded(db_path):
    params = {f"p{i}": i for i in range(300)}
    with Tracker(db_path, params={**params, "step": 0}, track_id="wide") as tracker:
        tracker.log({"acc": 1.0})
    conn = sqlite3.connect(db_path)
    names = {name for (name,) in conn.execute(f"SELECT name FROM {PARAMS_TABLE}")}
    conn.close()
    assert names == set(params)  # step identifies rows: never a param
