"""Files move both ways between xetrack_c and xetrack 0.7.

The xetrack side runs in a child interpreter that can ``import xetrack``: this one if it
can, else ``$XETRACK_PYTHON`` (tests/helpers/xetrack_peer.py).  Without one the tests skip.
Run them with xetrack in another interpreter, or in the same one:

    XETRACK_PYTHON=/path/to/venv/bin/python python -m pytest tests/test_xetrack_interop.py
    PYTHONPATH=. /path/to/venv/bin/python -m pytest tests/test_xetrack_interop.py
"""

from __future__ import annotations

import ast
import math

import pytest
from conftest import child_env, integrity_check, read_rows, table_info
from xetrack_peer import find_xetrack_python, skip_reason

from xetrack_c import Tracker


@pytest.fixture(scope="module")
def xetrack_python() -> str:
    python = find_xetrack_python(child_env())
    if python is None:
        pytest.skip(skip_reason())
    return python


# Prints a DataFrame as a literal list of dicts (NaN -> None, numpy scalars -> Python).
RECORDS = """
def records(df):
    out = []
    for rec in df.to_dict("records"):
        clean = {}
        for k, v in rec.items():
            if hasattr(v, "item"):
                v = v.item()
            if isinstance(v, float) and v != v:
                v = None
            clean[k] = v
        out.append(clean)
    return out
"""


def run_xetrack(run_py, python: str, body: str):
    """Run ``body`` with xetrack; it calls ``emit(value)``, whose values are returned."""
    proc = run_py(
        "import sys\n" + RECORDS + "\nOUT = []\ndef emit(v):\n    OUT.append(v)\n" + body
        + "\nprint(repr(OUT))\n",
        timeout=120,
        python=python,
    )
    return ast.literal_eval(proc.stdout.strip().splitlines()[-1])


def same(a, b) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return math.isclose(a, b, rel_tol=0, abs_tol=0) or a == b
    if isinstance(a, bool) or isinstance(b, bool):
        return int(a) == int(b)
    return a == b


def assert_rows_equal(got, expected):
    assert len(got) == len(expected)
    for g, e in zip(got, expected, strict=True):
        assert set(g) == set(e), (set(g) ^ set(e))
        for key in e:
            assert same(g[key], e[key]), (key, g[key], e[key])


def add(a, b):
    return a + b


# ------------------------------------------------------------------ xetrack_c -> xetrack
def test_file_written_by_xetrack_c_reads_and_appends_in_xetrack(run_py, xetrack_python, db_path):
    tracker = Tracker(db_path, params={"model": "m1"}, track_id="c-run")
    tracker.log({"i": 0, "f": 0.5, "ok": True, "s": "alpha", "n": None, "l": [1, 2], "Acc": 1,
                 1: "one", "by": b"\x00\x01"})
    tracker.log_batch([{"i": k, "f": k / 4, "ok": False, "s": f"s{k}"} for k in range(1, 4)])
    tracker.track(add, args=[2, 3])
    tracker.close()
    written = read_rows(db_path)
    schema_before = table_info(db_path)

    got = run_xetrack(run_py, xetrack_python, f"""
from xetrack import Reader, Tracker
DB = {db_path!r}
emit(records(Reader(DB).to_df()))
emit(records(Reader(DB).to_df(track_id="c-run")))
# no numeric key here: xetrack 0.7 itself cannot re-log one into an existing table
t = Tracker(DB, track_id="c-run", params={{"model": "m1"}})
emit(len(t))
t.log({{"i": 99, "f": 9.5, "ok": False, "s": "from-xetrack", "extra": 7, "Acc": 3}})
t.track(lambda a, b: a * b, args=[4, 5])
emit(len(t))
emit(t.count_all())
""")
    from_reader, from_reader_run, len_before, len_after, count_all = got
    by_time = sorted(written, key=lambda r: r["timestamp"])
    assert_rows_equal(from_reader, by_time)
    assert_rows_equal(from_reader_run, by_time)
    assert (len_before, len_after, count_all) == (5, 7, 7)

    after = read_rows(db_path)
    assert [{k: r[k] for k in written[0]} for r in after[:5]] == written  # our rows untouched
    appended = after[5]
    assert (appended["i"], appended["f"], appended["ok"], appended["s"], appended["extra"]) == (
        99, 9.5, 0, "from-xetrack", 7)
    assert (appended["Acc"], appended["model"], appended["track_id"]) == (3, "m1", "c-run")
    assert after[6]["function_result"] == 20
    schema_after = table_info(db_path)
    assert {k: schema_after[k] for k in schema_before} == schema_before
    assert schema_after["extra"] == "INTEGER"
    assert integrity_check(db_path) == "ok"

    # and xetrack_c keeps going on the file xetrack appended to
    with Tracker(db_path, track_id="c-run") as again:
        assert len(again) == 7
        again.log({"i": 100, "extra": 8})
    assert read_rows(db_path)[-1]["extra"] == 8


def test_xetrack_reads_xetrack_c_tables_and_async_rows(run_py, xetrack_python, db_path):
    with Tracker(db_path, table="experiments", durability="async", track_id="a") as tracker:
        tracker.log_batch([{"score": k * 0.1, "k": k} for k in range(100)])
    got = run_xetrack(run_py, xetrack_python, f"""
from xetrack import Reader
df = Reader({db_path!r}, table="experiments").to_df()
emit(len(df))
emit(sorted(int(k) for k in df["k"]))
emit(Reader.read_db({db_path!r}, table="experiments", track_id="a").shape[0])
""")
    assert got == [100, list(range(100)), 100]


# ------------------------------------------------------------------ xetrack -> xetrack_c
@pytest.mark.parametrize("table", ["default", "runs"])
def test_file_written_by_xetrack_reads_and_appends_in_xetrack_c(run_py, xetrack_python, db_path, table):
    run_xetrack(run_py, xetrack_python, f"""
from xetrack import Tracker
def add(a, b):
    return a + b
t = Tracker({db_path!r}, params={{"model": "x"}}, track_id="x-run", table={table!r})
t.log({{"i": 0, "f": 0.5, "ok": True, "s": "alpha", "n": None, "l": [1, 2], "Acc": 1, 1: "one"}})
t.log_batch([{{"i": k, "f": k / 4, "ok": False, "s": "s" + str(k)}} for k in range(1, 4)])
t.track(add, args=[2, 3])
""")
    written = read_rows(db_path, table)
    schema_before = table_info(db_path, table)
    assert len(written) == 5

    tracker = Tracker(db_path, track_id="x-run", params={"model": "x"}, table=table)
    assert len(tracker) == 5 and tracker.count_all() == 5
    assert tracker.columns == set(schema_before)
    frame = tracker.to_df()
    assert sorted(frame["i"].dropna().astype(int)) == [0, 1, 2, 3]
    assert list(frame["s"].dropna()) == ["alpha", "s1", "s2", "s3"]
    row = tracker.log({"i": 10, "f": 1.5, "ok": False, "s": "from-c", "acc": 2, 1: "uno", "new": "col"})
    assert row["track_id"] == "x-run"
    assert tracker.track(add, args=[1, 1]) == 2
    tracker.close()

    after = read_rows(db_path, table)
    assert [{k: r[k] for k in written[0]} for r in after[:5]] == written  # xetrack's rows untouched
    assert all(r["new"] is None for r in after[:5])
    new = after[5]
    assert (new["i"], new["f"], new["ok"], new["s"], new["Acc"], new["1"], new["new"], new["model"]) == (
        10, 1.5, 0, "from-c", 2, "uno", "col", "x")
    assert after[6]["function_result"] == 2 and after[6]["args"] == "[1, 1]"
    schema_after = table_info(db_path, table)
    # existing columns keep their names and types; no case-variant or quoted duplicates
    assert list(schema_after)[: len(schema_before)] == list(schema_before)
    assert {k: schema_after[k] for k in schema_before} == schema_before
    assert len({k.lower() for k in schema_after}) == len(schema_after)
    assert schema_after["new"] == "TEXT"
    assert integrity_check(db_path) == "ok"

    # xetrack reads the combined run back, in timestamp order
    (got,) = run_xetrack(run_py, xetrack_python, f"""
from xetrack import Reader
emit(records(Reader({db_path!r}, table={table!r}).to_df(track_id="x-run")))
""")
    assert_rows_equal(got, sorted(after, key=lambda r: r["timestamp"]))
    assert [r["i"] for r in got][:4] == [0, 1, 2, 3]
