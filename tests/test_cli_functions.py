"""xetrack's ``xetrack.cli`` command functions under ``xetrack_c.cli`` (``from xetrack.cli
import tail``): each runs the matching ``xt`` command in this process, with xetrack's
argument order and option names, and raises CommandError when the command fails; and
xetrack's ``_json`` helpers."""

from __future__ import annotations

import ast
import datetime
import json
import math
import os

import pytest
from conftest import read_rows

import xetrack_c.cli as cli
from xetrack_c import Tracker, _json
from xetrack_c.cli.functions import COMMANDS, command_line

# xetrack 0.7's source, to check the functions against its cli.py (tools/xetrack_suite)
XETRACK_CLI = os.path.join(os.environ.get("XETRACK_SRC", "/tmp/xetrack-src"), "xetrack", "cli.py")
# xetrack 0.7's command functions and their positional parameters (its cli.py)
XETRACK_COMMANDS = {
    "head": ("db",), "tail": ("db",), "columns": ("db",), "copy": ("source", "target"),
    "delete": ("db", "track_id"), "set": ("db", "key", "value"), "ls": ("db", "column"),
    "sql": ("db", "query"), "cache_delete": ("cache_path", "track_id"),
    "cache_ls": ("cache_path",), "export": ("db", "key", "output"),
    "assets_delete": ("db", "asset"), "assets_ls": ("db",), "hist": ("db", "column"),
    "scatter": ("db", "x", "y"), "describe": ("db",), "top": ("db", "column"),
    "bottom": ("db", "column"),
}


@pytest.fixture
def db(tmp_path):
    path = str(tmp_path / "runs.db")
    tracker = Tracker(path, track_id="run-a")
    for i in range(4):
        tracker.log({"i": i, "name": f"n{i % 2}", "acc": i / 4})
    tracker.close()
    return path


def test_tail_and_head_print_what_xt_prints(db, capsys):
    cli.tail(db, n=2, json=True)
    rows = json.loads(capsys.readouterr().out)
    assert [row["i"] for row in rows] == [2, 3]
    cli.head(db, n=1)
    table = capsys.readouterr().out
    assert "| track_id" in table and "run-a" in table and table.count("run-a") == 1


def test_positional_arguments_in_xetracks_order(db, tmp_path, capsys):
    cli.ls(db, "name", unique=True)
    assert capsys.readouterr().out.split() == ["n0", "n1"]
    cli.set(db, "note", "checked", track_id="run-a")
    assert {row["note"] for row in read_rows(db)} == {"checked"}
    target = str(tmp_path / "copy.db")
    cli.copy(db, target, assets=False)
    assert len(read_rows(target)) == 4
    cli.delete(target, "run-a", yes=True)
    assert read_rows(target) == []


def test_a_failing_command_raises_with_its_status(db, capsys):
    with pytest.raises(cli.CommandError) as failed:
        cli.head(db, tabel="x")
    assert failed.value.status == 2 and failed.value.argv[:2] == ["head", db]
    assert "did you mean --table" in capsys.readouterr().err
    with pytest.raises(cli.CommandError) as missing:
        cli.delete(db, "no-such-run")
    assert missing.value.status == 1
    assert len(read_rows(db)) == 4  # nothing deleted


def test_bad_calls_name_the_argument():
    with pytest.raises(TypeError, match="missing its argument 'db'"):
        cli.head()
    with pytest.raises(TypeError, match="at most 1 positional"):
        cli.tail("a.db", "b.db")
    with pytest.raises(AttributeError):
        cli.no_such_command  # noqa: B018


def test_options_become_flags():
    assert command_line("copy", ["a", "b"], {"table": ["x", "y"], "assets": False}) == [
        "copy", "a", "b", "--table", "x", "--table", "y", "--no-assets"]
    assert command_line("ls", ["db"], {"track_id": "r", "unique": True}) == [
        "ls", "db", "--track-id", "r", "--unique"]
    assert command_line("cache_ls", [], {"cache_path": "dir"}) == ["cache", "ls", "dir"]
    assert command_line("export", ["db", "k", "out"], {"engine": None}) == [
        "assets", "export", "db", "k", "out"]


def test_every_xetrack_command_function_exists_with_its_arguments():
    assert {name: positional for name, (_, positional) in COMMANDS.items()} == XETRACK_COMMANDS
    for name in XETRACK_COMMANDS:
        assert callable(getattr(cli, name)) and name in cli.__all__


@pytest.mark.skipif(not os.path.exists(XETRACK_CLI),
                    reason="needs xetrack 0.7's source: set XETRACK_SRC to a checkout of xetrack")
def test_the_list_matches_xetracks_own_cli():
    tree = ast.parse(open(XETRACK_CLI, encoding="utf-8").read())
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and not node.name.startswith("_"):
            positional = tuple(arg.arg for arg, default in zip(node.args.args, node.args.defaults, strict=True)
                               if "Argument" in ast.unparse(default))
            assert COMMANDS[node.name][1] == positional, node.name
            assert callable(getattr(cli, node.name))


def test_json_helpers_write_as_xetrack():
    assert _json.dumps({"a": 1}) == '{"a":1}'
    assert _json.dumps({"a": {"b": 1}}, indent=4) == '{\n  "a": {\n    "b": 1\n  }\n}'
    assert _json.loads(_json.dumps({"loss": math.nan, "inf": math.inf})) == {"loss": None,
                                                                             "inf": None}
    assert _json.dumps({"t": datetime.datetime(2024, 1, 1, 12, 30)}) == '{"t":"2024-01-01T12:30:00"}'
    assert _json.loads(b'{"a": [1, 2]}') == {"a": [1, 2]}
    assert _json.dumps({1: "x"}) == '{"1":"x"}'
    with pytest.raises(_json.JSONDecodeError):
        _json.loads("not json")
