"""``xt`` reading commands, run as real processes: head, tail, columns, ls, sql, stats."""

from __future__ import annotations

import os

import pytest

COLUMNS = ["track_id", "timestamp", "model", "n", "acc", "name"]


def test_head_prints_the_first_rows_as_markdown(xt, db):
    result = xt.ok("head", db)
    rows = result.table()
    assert list(rows[0]) == COLUMNS
    assert [row["n"] for row in rows] == ["0", "1", "2", "3", "4"]
    assert [row["track_id"] for row in rows] == ["run-a"] * 4 + ["run-b"]
    assert rows[1]["acc"] == "0.1" and rows[0]["model"] == "alpha"
    timestamps = [row["timestamp"] for row in rows]
    assert timestamps == sorted(timestamps)


def test_head_n_and_json(xt, db):
    records = xt.ok("head", db, "--n", "2", "--json").json()
    assert [r["n"] for r in records] == [0, 1]
    assert records[1] == {**records[1], "track_id": "run-a", "model": "alpha", "acc": 0.1,
                          "name": "item1"}
    assert list(records[0]) == COLUMNS


def test_tail_gives_the_latest_rows_oldest_first(xt, db):
    records = xt.ok("tail", db, "--n", "2", "--json").json()
    assert [(r["track_id"], r["n"]) for r in records] == [("run-b", 5), ("run-b", 6)]
    rows = xt.ok("tail", db, "--n", "3").table()
    assert [row["n"] for row in rows] == ["4", "5", "6"]


def test_head_of_another_table_and_engine_option(xt, db):
    records = xt.ok("head", db, "--table", "other", "--engine", "duckdb", "--json").json()
    assert [(r["track_id"], r["score"]) for r in records] == [("run-c", 42)]


def test_head_zero_rows_and_empty_table(xt, tmp_path, db):
    result = xt.ok("head", db, "--n", "0")
    lines = result.out.strip().splitlines()
    assert len(lines) == 2 and "track_id" in lines[0]
    assert xt.ok("head", db, "--n", "0", "--json").json() == []


def test_columns(xt, db):
    result = xt.ok("columns", db)
    assert result.out.splitlines()[0] == f"Columns in {db} table 'default':"
    assert result.out.strip().endswith(str(COLUMNS))
    assert xt.ok("columns", db, "--table", "other", "--json").json() == [
        "track_id", "timestamp", "score"]


def test_ls_without_column_lists_columns(xt, db):
    assert xt.ok("ls", db).out.strip() == str(COLUMNS)


def test_ls_column_values_unique_and_by_run(xt, db):
    rows = xt.ok("ls", db, "name").table()
    assert [row["name"] for row in rows] == ["item0", "item1", "item2", "item3", "item4",
                                             "item4", "item6"]
    run_b = xt.ok("ls", db, "n", "--track-id", "run-b", "--json").json()
    assert run_b == [{"n": 4}, {"n": 5}, {"n": 6}]


def test_ls_unique_prints_a_list_not_a_table(xt, db):
    """A list of distinct values prints one per line (nothing else), or as a JSON list."""
    unique = xt.ok("ls", db, "name", "--unique").out
    assert unique == "item0\nitem1\nitem2\nitem3\nitem4\nitem6\n"
    assert xt.ok("ls", db, "name", "--unique", "--json").json() == [
        "item0", "item1", "item2", "item3", "item4", "item6"]
    assert xt.ok("ls", db, "model", "--unique", "--track-id", "run-b").out == "beta\n"
    # Numbers print in full (a %g cell could show two distinct values alike) and stay
    # numbers in JSON.
    assert xt.ok("ls", db, "acc", "--unique").out.splitlines()[1:3] == ["0.1", "0.2"]
    assert xt.ok("ls", db, "n", "--unique", "--json").json() == [0, 1, 2, 3, 4, 5, 6]
    assert xt.ok("ls", db, "name", "--unique", "--track-id", "nobody").out == ""


def test_head_and_tail_columns(xt, db):
    rows = xt.ok("head", db, "--columns", "n,track_id", "--n", "2").table()
    assert rows == [{"n": "0", "track_id": "run-a"}, {"n": "1", "track_id": "run-a"}]
    records = xt.ok("tail", db, "--columns", " acc , n,acc", "--n", "1", "--json").json()
    assert records == [{"acc": 0.6, "n": 6}]


def test_head_columns_unknown_is_a_usage_error(xt, db):
    result = xt.usage_fails("head", db, "--columns", "n,accuracy")
    assert "no column 'accuracy'" in result.err
    assert "columns: track_id, timestamp, model, n, acc, name" in result.err
    assert "see xt head --help" in result.err
    assert "xt tail:" in xt.usage_fails("tail", db, "--columns", "nope").err
    assert result.out == ""


def test_sql_count_and_json(xt, db):
    rows = xt.ok("sql", db, 'SELECT count(*) AS rows FROM "default"').table()
    assert rows == [{"rows": "7"}]
    records = xt.ok("sql", db, 'SELECT track_id, max(acc) AS best FROM "default" '
                               "GROUP BY track_id ORDER BY track_id", "--json").json()
    assert records == [{"track_id": "run-a", "best": 0.3}, {"track_id": "run-b", "best": 0.6}]


def test_sql_null_and_text_with_pipes(xt, db):
    records = xt.ok("sql", db, "SELECT NULL AS empty, 'a|b' AS text", "--json").json()
    assert records == [{"empty": None, "text": "a|b"}]
    rows = xt.ok("sql", db, "SELECT NULL AS empty, 'a|b' AS text").out.splitlines()
    assert rows[2].startswith("|") and "a\\|b" in rows[2]


def test_sql_does_not_write(xt, db, tmp_path):
    result = xt.fails("sql", db, 'DELETE FROM "default"')
    assert "read-only" in result.err
    assert xt.ok("sql", db, 'SELECT count(*) AS c FROM "default"', "--json").json() == [{"c": 7}]


def test_stats_describe(xt, db):
    rows = xt.ok("stats", "describe", db, "--columns", "n,acc").table()
    by_stat = {row["stat"]: row for row in rows}
    assert by_stat["count"]["n"] == "7" and by_stat["max"]["acc"] == "0.6"
    assert by_stat["mean"]["n"] == "3"
    records = xt.ok("stats", "describe", db, "--columns", "acc", "--json").json()
    assert {r["stat"]: r["acc"] for r in records}["min"] == 0.0


def test_stats_top_and_bottom(xt, db):
    top = xt.ok("stats", "top", db, "acc", "--json").json()
    assert [(r["track_id"], r["n"]) for r in top] == [("run-b", 6)]
    bottom = xt.ok("stats", "bottom", db, "n").table()
    assert [(r["track_id"], r["n"]) for r in bottom] == [("run-a", "0")]
    other = xt.ok("stats", "top", db, "score", "--table", "other", "--json").json()
    assert other[0]["score"] == 42


def test_help_and_version(xt):
    result = xt.ok("--help")
    for command in ("head", "tail", "columns", "ls", "delete", "set", "sql", "copy", "cache",
                    "stats", "plot", "runs"):
        assert command in result.out
    assert "xetrack_c" in xt.ok("--version").out
    assert "--where-key" in xt.ok("set", "--help").out


@pytest.mark.parametrize("args", [
    ("head", "{m}"), ("tail", "{m}"), ("columns", "{m}"), ("ls", "{m}"), ("ls", "{m}", "n"),
    ("sql", "{m}", "SELECT 1"), ("stats", "describe", "{m}"), ("stats", "top", "{m}", "n"),
    ("runs", "{m}"), ("plot", "hist", "{m}", "n"), ("delete", "{m}", "run-a"),
    ("set", "{m}", "k", "v"), ("copy", "{m}", "{m}.target"),
])
def test_missing_file_is_a_user_error_and_creates_nothing(xt, tmp_path, args):
    missing = str(tmp_path / "missing.db")
    result = xt.fails(*[arg.format(m=missing) for arg in args])
    assert "no such file" in result.err and "missing.db" in result.err
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("args", [("head",), ("columns",), ("ls", "n"), ("stats", "top", "n"),
                                  ("delete", "x"), ("sql", "SELECT * FROM nope")])
def test_missing_table(xt, db, args):
    extra = ["--table", "nope"] if args[0] != "sql" else []
    if args[0] == "stats":
        result = xt.fails("stats", "top", db, "n", *extra)
    else:
        result = xt.fails(args[0], db, *args[1:], *extra)
    assert "nope" in result.err
    if args[0] != "sql":
        assert "'default', 'other'" in result.err  # names the tables there are


@pytest.mark.parametrize("args", [("ls", "{db}", "nope"), ("stats", "top", "{db}", "nope"),
                                  ("stats", "describe", "{db}", "--columns", "n,nope"),
                                  ("plot", "hist", "{db}", "nope", "--terminal"),
                                  ("set", "{db}", "k", "v", "--where-key", "nope",
                                   "--where-value", "1")])
def test_missing_column(xt, db, args):
    result = xt.fails(*[arg.format(db=db) for arg in args])
    assert "no column 'nope'" in result.err and "acc" in result.err


@pytest.mark.parametrize("query,expected", [("SELEC * FROM x", "syntax error"),
                                            ("SELECT nope FROM \"default\"", "no such column"),
                                            ("SELECT 1; SELECT 2", "single statement"),
                                            ("   ", "no statement")])
def test_bad_sql(xt, db, query, expected):
    assert expected in xt.fails("sql", db, query).err


@pytest.mark.parametrize("query,table", [("SELECT * FROM default", "default"),
                                         ("SELECT count(*) FROM Default WHERE n > 1", "default"),
                                         ("SELECT * FROM other AS order", None),
                                         ("SELEC * FROM other", None)])
def test_syntax_error_near_a_table_name_says_to_quote_it(xt, db, query, table):
    """`default` is an SQL keyword: FROM default does not parse, and the error says how
    to write it; other syntax errors get no such advice."""
    err = xt.fails("sql", db, query).err
    assert "syntax error" in err
    if table:
        assert err.strip().endswith(f"to use the table '{table}', quote its name: \"{table}\"")
    else:
        assert "quote its name" not in err


def test_not_a_database_and_directory(xt, tmp_path):
    bad = tmp_path / "bad.db"
    bad.write_bytes(b"not a database" * 100)
    assert "not a SQLite database" in xt.fails("head", str(bad)).err
    assert "directory" in xt.fails("head", str(tmp_path)).err


@pytest.mark.parametrize("args,expected", [
    ((), "required"), (("head",), "DB"), (("head", "x.db", "--n", "many"), "whole number"),
    (("head", "x.db", "--n", "-3"), ">= 0"), (("nosuch",), "invalid choice"),
    (("head", "x.db", "--engine", "postgres"), "invalid choice"), (("stats",), "required"),
])
def test_usage_errors_are_one_line_with_status_2(xt, args, expected):
    assert expected in xt.usage_fails(*args).err


@pytest.mark.parametrize("args,message", [
    (("head", "{db}", "--tabel", "steps"),
     "xt head: unknown option --tabel (did you mean --table?); see xt head --help"),
    (("tail", "{db}", "--tabel=steps"),
     "xt tail: unknown option --tabel (did you mean --table?); see xt tail --help"),
    (("ls", "{db}", "name", "--uniqe"),
     "xt ls: unknown option --uniqe (did you mean --unique?); see xt ls --help"),
    (("stats", "top", "{db}", "n", "--jsn"),
     "xt stats top: unknown option --jsn (did you mean --json?); see xt stats top --help"),
    (("head", "{db}", "--frobnicate"), "xt head: unknown option --frobnicate; see xt head --help"),
    (("head", "{db}", "more.db"), "xt head: unexpected argument 'more.db'; see xt head --help"),
])
def test_unknown_option_points_to_the_command_help(xt, db, args, message):
    result = xt.usage_fails(*[arg.format(db=db) for arg in args])
    assert result.err.strip() == message
    assert result.out == ""


@pytest.mark.parametrize("args", [
    ("head", "{db}"), ("head", "{db}", "--json"), ("tail", "{db}"), ("columns", "{db}"),
    ("ls", "{db}"), ("ls", "{db}", "name", "--unique"), ("head", "{db}", "--columns", "n"), ("sql", "{db}", "SELECT count(*) FROM \"default\""),
    ("delete", "{db}", "run-b"), ("set", "{db}", "note", "x"), ("stats", "top", "{db}", "n"),
    ("runs", "{db}", "--table", "default"), ("head", "{missing}"),
])
def test_fast_commands_do_not_import_pandas(xt, db, tmp_path, args):
    result = xt.probe(*[arg.format(db=db, missing=str(tmp_path / "missing.db")) for arg in args])
    assert "PANDAS_IMPORTED=False" in result.err, result
    assert "Traceback" not in result.err


def test_describe_does_import_pandas(xt, db):
    # The probe itself must be able to see an import, or the test above proves nothing.
    assert "PANDAS_IMPORTED=True" in xt.probe("stats", "describe", db).err
