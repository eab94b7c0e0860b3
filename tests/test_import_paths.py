"""xetrack's module paths under xetrack_c: every public name of xetrack_c.config,
.constants, .engine, .git, .logging, .merge and xetrack's helpers in ._dataframe, called
with a small real input. Each module's list of names is checked against the calls here, so
a name added without a test fails."""

from __future__ import annotations

import importlib
import os
import re
import sqlite3
import subprocess
from datetime import datetime

import pytest
from conftest import read_rows

import xetrack_c
from xetrack_c import Tracker

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_xetracks_top_level_names():
    for name in ("Tracker", "Reader", "copy", "get_backend", "set_backend", "SCHEMA_PARAMS",
                 "TRACKER_CONSTANTS", "df_to_dict_records"):
        assert name in xetrack_c.__all__ and getattr(xetrack_c, name) is not None
    assert xetrack_c.copy is importlib.import_module("xetrack_c.merge").copy
    assert xetrack_c.TRACKER_CONSTANTS.FUNCTION_TIME == "function_time"


# ---------------------------------------------------------------------- config / constants
def test_config_and_constants(db_path, monkeypatch):
    from xetrack_c import config, constants

    assert set(config.__all__) == set(constants.__all__)
    for name in config.__all__:
        assert getattr(constants, name) is getattr(config, name)
    c = config
    tracker = Tracker(db_path, params={"p": 1})
    tracker.track(lambda x: x, args=[1])
    row = tracker.latest
    for column in (c.TRACKER_CONSTANTS.FUNCTION_NAME, c.TRACKER_CONSTANTS.FUNCTION_TIME,
                   c.TRACKER_CONSTANTS.FUNCTION_RESULT, c.TRACKER_CONSTANTS.ARGS,
                   c.TRACKER_CONSTANTS.KWARGS, c.TRACKER_CONSTANTS.ERROR,
                   c.TRACKER_CONSTANTS.TIMESTAMP, c.SCHEMA_PARAMS.TRACK_ID):
        assert column in row
    datetime.strptime(row[c.TRACKER_CONSTANTS.TIMESTAMP], c.CONSTANTS.TIMESTAMP_FORMAT)
    assert c.TRACKER_CONSTANTS.GIT_COMMIT_KEY == "git_commit_hash"
    assert (c.SCHEMA_PARAMS.DEFAULT_TABLE, c.SCHEMA_PARAMS.SQLITE_TABLE) == (tracker.table_name,) * 2
    assert c.SCHEMA_PARAMS.DUCKDB_TABLE == Tracker(db_path, engine="duckdb").engine.table_name
    assert (c.CONSTANTS.IN_MEMORY_DB, c.CONSTANTS.SKIP_INSERT) == (Tracker.IN_MEMORY, Tracker.SKIP_INSERT)
    assert c.CONSTANTS.DTYPES_TO_PYTHON["BIGINT"] is int and c.DEFAULTS.DB == "track.db"
    params = c.LOGURU_PARAMS
    assert (params.MONITOR, params.TRACKING, params.EXPERIMENT, params.LEVEL) == (
        "MONITOR", "TRACKING", "EXPERIMENT", "level")
    assert re.search(params.STRACTURED_REGEX, "x | TRACKING | y")
    assert params.LOG_FILE_FORMAT == "{time:YYYY-MM-DD}.log" and params.ROTATION == "1 day"
    datetime.strptime("2026-01-02 03:04:05", params.TIMESTAMP_FORMAT)
    assert params.DELIMITER == "!📁!" and params.DELIMITER in params.FORMAT
    monkeypatch.setenv("LOGS_DELIMITER", "||")
    assert params.DELIMITER == "||" and "||<level>{message}" in params.FORMAT


# ---------------------------------------------------------------------- git
def test_git(tmp_path):
    from xetrack_c import git

    assert set(git.__all__) == {"get_commit_hash", "get_commit_tags"}
    repo = str(tmp_path / "repo")
    os.makedirs(os.path.join(repo, "sub"))

    def run(*args):
        return subprocess.run(["git", "-C", repo, *args], check=True, capture_output=True, text=True).stdout.strip()

    run("init", "-q")
    run("config", "user.email", "t@example.com")
    run("config", "user.name", "t")
    with open(os.path.join(repo, "sub", "f.txt"), "w") as handle:
        handle.write("1")
    run("add", ".")
    run("commit", "-qm", "one")
    first = run("rev-parse", "HEAD")
    with open(os.path.join(repo, "g.txt"), "w") as handle:
        handle.write("2")
    run("add", ".")
    run("commit", "-qm", "two")
    run("tag", "v1")
    head = run("rev-parse", "HEAD")

    assert git.get_commit_hash(git_root=repo) == head
    assert git.get_commit_hash("sub", git_root=repo) == first
    assert git.get_commit_hash("never-committed", git_root=repo) is None
    assert git.get_commit_hash(git_root=str(tmp_path / "nowhere")) is None
    assert git.get_commit_hash(git_root=str(tmp_path)) is None
    assert git.get_commit_tags(repo) == ["v1"]
    assert git.get_commit_tags(str(tmp_path)) == []


# ---------------------------------------------------------------------- engine
def test_engines_on_a_file(db_path):
    from xetrack_c import engine

    assert set(engine.__all__) == {"DuckDBEngine", "Rows", "SqliteEngine", "TrackerEngine"}
    Tracker(db_path, track_id="r1").log_batch([{"acc": 0.5, "k": "a"}, {"acc": 0.75, "k": "b"}])
    with engine.SqliteEngine(db_path) as sql:
        assert sql.table_name == "default"
        frame = sql.execute_sql(f"SELECT acc FROM {sql.table_name} ORDER BY acc")
        assert frame["acc"].tolist() == [0.5, 0.75]
        assert [tuple(row) for row in sql.execute("SELECT k FROM default ORDER BY k").fetchall()] == [("a",), ("b",)]
        assert sql.execute("SELECT 'default' AS s").fetchone()[0] == "default"  # literals untouched
        assert sql.columns == {"track_id", "timestamp", "acc", "k"}
        assert sql.dtypes == {"track_id": str, "timestamp": str, "acc": float, "k": str}
        assert [sql.to_sql_type(v) for v in (1, True, 1.5, "x", bytearray(b"1"), None)] == [
            "INTEGER", "INTEGER", "REAL", "TEXT", "BLOB", "TEXT"]
        sql.set_value("note", "all")
        sql.set_where("flag", 1, "k", "b", track_id="r1")
        sql.add_column("default", "extra", "REAL")
        sql.create_table("other", {"x": "INTEGER"}, ["x"])
        assert sql.count_records() == 2 and sql.count_records("r1") == 2 and sql.count_records("nope") == 0
        with pytest.raises(ValueError, match="invalid SQL type"):
            sql.add_column("default", "bad", "TEXT; DROP TABLE x")
    with pytest.raises(ValueError, match="closed"):
        sql.execute("SELECT 1")
    rows = sorted(read_rows(db_path), key=lambda row: row["k"])
    assert [(r["note"], r["flag"], r["extra"]) for r in rows] == [("all", None, None), ("all", 1, None)]
    assert "other" in {n for (n,) in sqlite3.connect(db_path).execute("SELECT name FROM sqlite_master")}

    from xetrack_c import duckdb as duck_path

    assert duck_path.__all__ == ["DuckDBEngine"] and duck_path.DuckDBEngine is engine.DuckDBEngine
    duck = duck_path.DuckDBEngine(db_path, table_name="runs")
    assert duck.table_name == "db.runs"
    duck.execute(f"INSERT INTO {duck.table_name} (track_id, timestamp) VALUES ('t', 'now')")
    assert duck.count_records() == 1
    assert duck.execute_sql(f"SELECT * FROM {duck.table_name}")["track_id"].tolist() == ["t"]
    duck.close()


def test_tracker_engine_sees_the_trackers_own_rows():
    from xetrack_c.engine import Rows, TrackerEngine

    tracker = Tracker(Tracker.IN_MEMORY, durability="async", params={"p": 1})
    tracker.log({"a": 1})
    assert isinstance(tracker.engine, TrackerEngine) and tracker.engine is tracker.engine
    assert (tracker.engine.name, tracker.engine.table_name) == ("sqlite", "default")
    frame = tracker.engine.execute_sql(f"SELECT * FROM {tracker.engine.table_name}")
    assert frame["a"].tolist() == [1] and frame["p"].tolist() == [1]
    result = tracker.engine.execute("UPDATE default SET a = 5")
    assert isinstance(result, Rows) and result.rowcount == 1 and result.fetchall() == []
    cursor = tracker.engine.execute("SELECT a FROM default")
    assert [col[0] for col in cursor.description] == ["a"] and list(cursor) == [(5,)]
    assert cursor.fetchone() is None
    tracker.engine.close()
    assert tracker.closed


# ---------------------------------------------------------------------- logging
def test_logging_names(tmp_path):
    pytest.importorskip("loguru")
    from xetrack_c import logging as xlog

    levels = (xlog.MONITOR, xlog.TRACKING, xlog.EXPERIMENT)
    assert levels == tuple(xlog.TRACKED_LEVELS) and xlog.TRACKED_LEVELS[xlog.TRACKING] == 27
    assert xlog.delimiter() == xlog.DEFAULT_DELIMITER and xlog.DEFAULT_DELIMITER in xlog.line_format()
    assert xlog.to_json({"a": [1, 2], "b": float("nan")}) == '{"a":[1,2],"b":null}'
    line = xlog.jsonl_record({"a": 1, "timestamp": "dropped"}, xlog.TRACKING,
                             datetime.fromisoformat("2026-01-02T03:04:05+01:00"))
    assert line == '{"timestamp":"2026-01-02T03:04:05+01:00","level":"TRACKING","a":1}\n'
    logs, jsonl = str(tmp_path / "logs"), str(tmp_path / "rows.jsonl")
    logger = xlog.Logger(stdout=False, logs_path=logs, jsonl=jsonl)
    assert logger.file_format == xlog.LOG_FILE_FORMAT
    tracker = Tracker(Tracker.IN_MEMORY)
    xlog.attach(tracker, logger)
    row = tracker.log({"v": 1})
    logger.close()
    (path,) = xlog.log_files(logs)
    assert xlog.read_log(path) == xlog.read_logs(logs) == [row]
    assert xlog.read_structured_log(path) == []  # a formatted file holds no serialized lines
    assert xlog.read_jsonl(jsonl)[0]["v"] == 1
    assert logger.is_tracked_entry("x | TRACKING | y") == ["TRACKING"]
    assert logger.read_log(path) == [row]


# ---------------------------------------------------------------------- _dataframe helpers
HELPERS = ["cursor_to_dataframe", "dataframe_from_dicts", "empty_dataframe", "df_sort",
           "df_to_dict_records", "df_to_markdown", "df_to_csv", "df_to_parquet", "df_is_empty",
           "df_columns", "df_filter_eq", "df_dropna_all", "df_column_is_float", "df_unique_series",
           "df_describe", "df_row_to_dict", "df_column_max", "df_column_min", "df_select_columns"]


@pytest.mark.parametrize("backend", ["pandas", "polars"])
def test_dataframe_helpers(backend, tmp_path):
    pytest.importorskip(backend)
    from xetrack_c import _dataframe as frames

    assert (frames.PANDAS, frames.POLARS) == ("pandas", "polars")
    before = frames.get_backend()
    frames.set_backend(backend)
    try:
        called = set()

        def use(name):
            called.add(name)
            return getattr(frames, name)

        conn = sqlite3.connect(":memory:")
        cursor = conn.execute("SELECT 2 AS a, 'y' AS b, 1.5 AS f UNION ALL SELECT 1, 'x', NULL")
        df = use("cursor_to_dataframe")(cursor)
        assert use("df_columns")(df) == ["a", "b", "f"]
        assert use("df_to_dict_records")(use("df_sort")(df, "a")) == [
            {"a": 1, "b": "x", "f": None if backend == "polars" else pytest.approx(float("nan"), nan_ok=True)},
            {"a": 2, "b": "y", "f": 1.5}]
        assert use("df_row_to_dict")(df, 0)["b"] == "y"
        assert len(use("df_filter_eq")(df, "b", "x")) == 1
        assert use("df_column_is_float")(df, "f") and not frames.df_column_is_float(df, "a")
        assert (use("df_column_max")(df, "a"), use("df_column_min")(df, "a")) == (2, 1)
        assert list(use("df_unique_series")(df, "b")) == ["y", "x"]
        assert use("df_columns")(use("df_select_columns")(df, ["b"])) == ["b"]
        assert use("df_describe")(df) is not None and len(frames.df_describe(df)) > 0
        markdown = use("df_to_markdown")(df).splitlines()
        assert markdown[0].split("|")[1].strip() == "a" and len(markdown) == 4
        with_gaps = use("dataframe_from_dicts")([{"a": 1}, {"a": None}])
        assert len(use("df_dropna_all")(with_gaps)) == 1
        assert use("df_is_empty")(use("empty_dataframe")(["x"])) and not frames.df_is_empty(df)
        use("df_to_csv")(df, str(tmp_path / "f.csv"))
        with open(tmp_path / "f.csv") as handle:
            assert handle.readline().strip() == "a,b,f"
        if backend == "polars" or importlib.util.find_spec("pyarrow"):
            use("df_to_parquet")(df, str(tmp_path / "f.parquet"))
            assert os.path.getsize(tmp_path / "f.parquet") > 0
        else:
            called.add("df_to_parquet")
        assert called == set(HELPERS)
    finally:
        frames.set_backend(before)


def test_set_backend_message_is_xetracks():
    with pytest.raises(ValueError, match=re.escape("Unknown backend: 'arrow'. Use 'polars', 'pandas', or 'auto'.")):
        xetrack_c.set_backend("arrow")


def test_copy_is_reachable_from_the_top(tmp_path):
    source, target = str(tmp_path / "a.db"), str(tmp_path / "b.db")
    Tracker(source).log({"a": 1})
    from xetrack_c import merge

    assert merge.__all__ == ["copy"]
    assert xetrack_c.copy(source, target) == 1 and read_rows(target)[0]["a"] == 1
