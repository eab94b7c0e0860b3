"""``xt summary``, ``xt compare`` and ``xt runs`` on a tracking table, as real processes
(the database of cli_support.make_db: run-a n=0..3, run-b n=4..6, acc = n / 10)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # left out of the jobs that re-run the suite (.ci/run)


def test_summary_by_run(xt, db):
    rows = xt.ok("summary", db, "--metric", "acc").table()
    assert rows == [{"track_id": "run-a", "acc_last": "0.3", "acc_max": "0.3",
                     "acc_mean": "0.15"},
                    {"track_id": "run-b", "acc_last": "0.6", "acc_max": "0.6",
                     "acc_mean": "0.5"}]


def test_summary_by_param_with_aggregations_as_json(xt, db):
    data = xt.ok("summary", db, "--metric", "acc,n", "--by", "model",
                 "--agg", "first,count,std,min", "--json").json()
    assert [row["model"] for row in data] == ["alpha", "beta"]
    alpha, beta = data
    assert (alpha["acc_first"], alpha["acc_count"], alpha["n_min"]) == (0.0, 4, 0)
    assert alpha["n_std"] == pytest.approx(1.2909944487358056)
    assert (beta["acc_first"], beta["acc_count"], beta["n_min"]) == (0.4, 3, 4)


def test_summary_defaults_to_every_metric(xt, db):
    row = xt.ok("summary", db, "--json").json()[0]
    assert set(row) == {"track_id", "n_last", "n_max", "n_mean", "acc_last", "acc_max",
                        "acc_mean"}


def test_summary_errors(xt, db):
    assert "unknown metric 'accuracy'" in xt.fails("summary", db, "--metric", "accuracy").err
    assert "unknown by column 'size'" in xt.fails("summary", db, "--by", "size").err
    assert "'name' holds text" in xt.fails("summary", db, "--metric", "name").err
    assert "unknown aggregation 'median'" in xt.usage_fails("summary", db, "--agg",
                                                            "last,median").err
    assert "no table 'nope'" in xt.fails("summary", db, "--table", "nope").err
    assert "no such file" in xt.fails("summary", db + ".missing").err


def test_compare(xt, db):
    out = xt.ok("compare", db, "run-a", "run-b").out
    assert out.splitlines()[0].endswith("1 of 1 params differ")
    params, metrics = out.split("\n\n")[1:]
    from cli_support import parse_markdown

    assert parse_markdown(params) == [{"param": "model", "a": "alpha", "b": "beta",
                                       "differs": "*"}]
    acc = {row["metric"]: row for row in parse_markdown(metrics)}["acc"]
    assert (acc["a_last"], acc["b_last"], acc["delta_last"]) == ("0.3", "0.6", "0.3")


def test_compare_json_and_unknown_run(xt, db):
    data = xt.ok("compare", db, "run-b", "run-a", "--json").json()
    n = {row["metric"]: row for row in data["metrics"]}["n"]
    assert (n["a_max"], n["b_max"], n["delta_max"]) == (6, 3, -3)
    err = xt.fails("compare", db, "run-a", "run-z").err
    assert "no run 'run-z'" in err and "'run-b'" in err


def test_runs_of_a_tracking_table(xt, db):
    out = xt.ok("runs", db, "--table", "default").out
    assert out.splitlines()[0] == f"Runs in {db} table 'default': 2"
    rows = {row["track_id"]: row for row in xt.ok("runs", db, "--table", "default").table()}
    assert (rows["run-a"]["rows"], rows["run-a"]["model"], rows["run-a"]["acc_last"]) == (
        "4", "alpha", "0.3")
    assert (rows["run-b"]["n_max"], rows["run-b"]["acc_max"]) == ("6", "0.6")
    data = xt.ok("runs", db, "--table", "other", "--json").json()
    assert data["runs"] == 1 and data["rows"][0]["track_id"] == "run-c"


def test_runs_of_a_table_without_runs(xt, tmp_path: Path):
    path = str(tmp_path / "plain.db")
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE notes (text TEXT)")
    conn.commit()
    conn.close()
    assert "no column 'status'" in xt.fails("runs", path, "--table", "notes").err


def test_summary_needs_no_pandas(xt, db):
    assert "PANDAS_IMPORTED=False" in xt.probe("summary", db, "--metric", "acc").err
    assert "PANDAS_IMPORTED=False" in xt.probe("compare", db, "run-a", "run-b").err


def test_the_params_record_is_not_offered_as_a_table(xt, db):
    from xetrack_c import Reader, TableNotFoundError

    err = xt.fails("head", db, "--table", "nope").err
    assert "'default'" in err and "'other'" in err and "xetrack_params" not in err
    with pytest.raises(TableNotFoundError) as caught:
        Reader(db, table="nope")
    assert "'default'" in str(caught.value) and "xetrack_params" not in str(caught.value)
