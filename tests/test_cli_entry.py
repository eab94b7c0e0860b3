"""The ``xt`` console script itself, and the cache commands."""

from __future__ import annotations

import importlib.metadata
import re
import sysconfig
import tomllib
from pathlib import Path
from typing import List

import pytest
from cli_support import make_db, run
from conftest import ROOT, read_rows


def xt_command() -> List[str]:
    """The command that runs the ``xt`` console script.

    When xetrack_c is installed (CI installs it), that is the script the installer wrote, or
    the entry point loaded from the distribution's metadata; otherwise the callable that
    pyproject.toml declares, called as the console-script wrapper calls it.
    """
    try:
        dist = importlib.metadata.distribution("xetrack_c")
    except importlib.metadata.PackageNotFoundError:
        scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
        assert scripts["xt"] == "xetrack_c.cli:main"
        module, function = scripts["xt"].split(":")
        return ["python", "-c", f"import sys; from {module} import {function}; "
                                f"sys.exit({function}())"]
    entry = [ep for ep in dist.entry_points if ep.group == "console_scripts" and ep.name == "xt"]
    assert entry, "the installed xetrack_c declares no xt console script"
    assert entry[0].value == "xetrack_c.cli:main"
    script = Path(sysconfig.get_path("scripts")) / "xt"
    if script.is_file() and "xetrack_c" in script.read_text(errors="replace"):
        return [str(script)]
    return ["python", "-c", "import sys; from importlib.metadata import entry_points; "
                            "sys.exit(entry_points(group='console_scripts')['xt'].load()())"]


def test_console_script_runs(tmp_path):
    import sys

    command = [sys.executable if part == "python" else part for part in xt_command()]
    db = str(tmp_path / "track.db")
    make_db(db)
    result = run(command, ["head", db, "--n", "3", "--json"], tmp_path)
    assert result.code == 0, result
    assert [r["n"] for r in result.json()] == [0, 1, 2]
    missing = run(command, ["head", str(tmp_path / "missing.db")], tmp_path)
    assert missing.code == 1 and "no such file" in missing.err and "Traceback" not in missing.err


def test_main_returns_status_codes(tmp_path, capsys):
    from xetrack_c.cli import main

    db = str(tmp_path / "track.db")
    make_db(db)
    assert main(["sql", db, 'SELECT count(*) AS c FROM "default"', "--json"]) == 0
    assert '"c": 7' in capsys.readouterr().out
    assert main(["head", str(tmp_path / "missing.db")]) == 1
    assert "no such file" in capsys.readouterr().err
    assert main(["--help"]) == 0
    assert main(["head"]) == 2
    assert "xt head: error" in capsys.readouterr().err
    assert main(["head", db, "--tabel", "x"]) == 2
    assert "did you mean --table?" in capsys.readouterr().err


def test_cache_commands_need_an_existing_directory(xt, tmp_path):
    missing = str(tmp_path / "no-cache")
    assert "no such cache directory" in xt.fails("cache", "ls", missing).err
    assert "no such cache directory" in xt.fails("cache", "delete", missing, "run-a").err
    assert not (tmp_path / "no-cache").exists()


def _cached_tracker_rows(tmp_path: Path) -> tuple:
    """A cache filled by two runs: run-a computes f(1), f(2); run-b computes f(3)."""
    from xetrack_c import Tracker

    cache_dir = str(tmp_path / "cache")
    db = str(tmp_path / "track.db")

    def f(x):
        return x * 2

    for track_id, xs in (("run-a", (1, 2)), ("run-b", (3,))):
        tracker = Tracker(db, cache=cache_dir, track_id=track_id)
        for x in xs:
            tracker.track(f, args=[x])
        tracker.close()
    return cache_dir, db


def test_cache_ls_and_delete(xt, tmp_path):
    pytest.importorskip("xetrack_c.cache", reason="the result cache is not merged yet")
    cache_dir, db = _cached_tracker_rows(tmp_path)
    assert len(read_rows(db)) == 3
    result = xt.ok("cache", "ls", cache_dir)
    assert result.out.startswith(f"Cache entries in {cache_dir}:")
    entries = xt.ok("cache", "ls", cache_dir, "--json").json()
    assert sorted(e["track_id"] for e in entries) == ["run-a", "run-a", "run-b"]
    # Each line shows what --json gives: track_id, function, creation time (to the
    # second) and key.
    lines = sorted(line.strip() for line in result.out.splitlines() if "track_id:" in line)
    assert lines == sorted(
        f"track_id: {e['track_id']}  function: {e['function_name']}  "
        f"created: {e['created'][:19]}  key: {e['key']}" for e in entries)
    assert all(e["function_name"].endswith(".f") for e in entries)
    assert all(re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d.*", e["created"])
               for e in entries)
    assert "PANDAS_IMPORTED=False" in xt.probe("cache", "ls", cache_dir).err

    deleted = xt.ok("cache", "delete", cache_dir, "run-a")
    assert "Deleted 2 cache entries for track_id 'run-a'" in deleted.out
    left = xt.ok("cache", "ls", cache_dir, "--json").json()
    assert [e["track_id"] for e in left] == ["run-b"]
    xt.ok("cache", "delete", cache_dir, "run-b")
    assert xt.ok("cache", "ls", cache_dir).out.strip() == "Cache is empty"


def test_cache_ls_does_not_unpickle_results(xt, tmp_path):
    """Listing reads keys and track_ids only: a cached DataFrame does not pull in pandas."""
    pytest.importorskip("xetrack_c.cache", reason="the result cache is not merged yet")
    import pandas

    from xetrack_c import Tracker

    cache_dir = str(tmp_path / "cache")

    def frame(n):
        return pandas.DataFrame({"x": list(range(n))})

    tracker = Tracker(str(tmp_path / "track.db"), cache=cache_dir, track_id="run-df")
    tracker.track(frame, args=[3])
    tracker.close()
    result = xt.probe("cache", "ls", cache_dir, "--json")
    assert "PANDAS_IMPORTED=False" in result.err, result
    entries = result.json()
    assert [e["track_id"] for e in entries] == ["run-df"]
    assert entries[0]["function_name"].endswith("frame")


def test_cache_errors(xt, tmp_path):
    pytest.importorskip("xetrack_c.cache", reason="the result cache is not merged yet")
    empty = tmp_path / "empty"
    empty.mkdir()
    assert xt.ok("cache", "ls", str(empty)).out.strip() == "Cache is empty"
    assert "Deleted 0 cache entries" in xt.ok("cache", "delete", str(empty), "x").out
    (empty / "cache.db").write_bytes(b"not sqlite" * 500)
    xt.fails("cache", "ls", str(empty))
    xt.fails("cache", "delete", str(empty), "x")
