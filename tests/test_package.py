"""Package-level guarantees: light import, one exported C symbol, introspectable API."""

import inspect
import os
import shutil
import subprocess
import sys

import pytest

import xetrack_c
from xetrack_c import _core

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Subprocesses import the package under test, installed or built in place.
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [ROOT, os.environ.get("PYTHONPATH")]))}


def test_import_loads_neither_pandas_nor_numpy():
    code = "import sys, xetrack_c; print(sorted(m for m in ('pandas', 'numpy') if m in sys.modules))"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env=ENV
    )
    assert out.stdout.strip() == "[]"


@pytest.mark.skipif(shutil.which("nm") is None, reason="nm not installed")
def test_only_pyinit_is_exported():
    out = subprocess.run(
        ["nm", "-D", "--defined-only", _core.__file__], capture_output=True, text=True, check=True
    )
    exported = [line.split()[-1] for line in out.stdout.splitlines() if line.split()[-2] in "TDB"]
    assert exported == ["PyInit__core"]


def test_c_methods_have_text_signatures():
    sig = inspect.signature(_core.TrackerCore.log)
    assert list(sig.parameters) == ["self", "data"]
    assert list(inspect.signature(_core.sanitize_key).parameters) == ["key"]


def test_error_hierarchy():
    assert issubclass(xetrack_c.StorageError, xetrack_c.Error)
    assert issubclass(xetrack_c.CorruptDatabaseError, xetrack_c.StorageError)


def test_quickstart_example_runs(tmp_path):
    db = tmp_path / "results.db"
    out = subprocess.run(
        [sys.executable, os.path.join(ROOT, "examples", "quickstart.py"), str(db)],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
        env=ENV,
    )
    assert "accuracy" in out.stdout and "score" in out.stdout
    import sqlite3

    rows = sqlite3.connect(db).execute('SELECT epoch, score FROM "default" ORDER BY timestamp').fetchall()
    assert rows == [(0, None), (1, None), (2, None), (None, 12)]


def test_tracker_html_repr_shows_first_rows_and_summary(tmp_path):
    tracker = xetrack_c.Tracker(str(tmp_path / "t.db"), params={"model": "m<1>"})
    for i in range(7):
        tracker.log({"step": i})
    page = tracker._repr_html_()
    assert "7 rows in this run, 4 columns" in page
    assert page.count("<tr>") == 6  # header + the first 5 rows
    assert "m&lt;1&gt;" in page  # values are escaped
    tracker.close()
    assert "closed" in tracker._repr_html_()
