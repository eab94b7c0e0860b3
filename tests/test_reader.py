"""Reader and the columnar read path (_core.read_columns), checked against
pandas.read_sql_query on databases written with Python's sqlite3 in xetrack's layout."""

from __future__ import annotations

import gc
import os
import sqlite3
import subprocess
import sys
import textwrap
import tracemalloc
import weakref

import numpy as np
import pandas as pd
import pandas.testing as pdt
import pytest

import xetrack_c
from xetrack_c import _core, _dataframe
from xetrack_c._dataframe import frame_from_columns, get_backend, set_backend
from xetrack_c.reader import Reader, TableNotFoundError

CREATE = 'CREATE TABLE {} (track_id TEXT, timestamp TEXT, PRIMARY KEY (track_id, timestamp))'


def make_db(path, columns=(), rows=(), table="default", wal=True):
    """A database in xetrack's layout: the key columns, then `columns` [(name, type)]
    added by ALTER TABLE, then `rows` (tuples in column order)."""
    con = sqlite3.connect(path)
    if wal:
        con.execute("PRAGMA journal_mode=WAL")
    quoted = '"' + table.replace('"', '""') + '"'
    con.execute(CREATE.format(quoted))
    for name, sql_type in columns:
        con.execute(f'ALTER TABLE {quoted} ADD COLUMN "{name}" {sql_type}')
    if rows:
        marks = ", ".join("?" * (2 + len(columns)))
        con.executemany(f"INSERT INTO {quoted} VALUES ({marks})", rows)
    con.commit()
    con.close()
    return str(path)


def ts(i):
    return f"2025-01-01 00:00:{i // 1000000:02d}.{i % 1000000:06d}"


def expected(path, sql, params=()):
    con = sqlite3.connect(path)
    try:
        return pd.read_sql_query(sql, con, params=params)
    finally:
        con.close()


def assert_same_as_pandas(path, sql, params=()):
    got = frame_from_columns(_core.read_columns(path, sql, params), backend="pandas")
    pdt.assert_frame_equal(got, expected(path, sql, params))
    return got


@pytest.fixture(autouse=True)
def pandas_backend():
    set_backend("pandas")
    yield
    set_backend("auto")


MIXED_COLUMNS = [("i", "INTEGER"), ("f", "REAL"), ("s", "TEXT"), ("b", "BLOB"),
                 ("nulls", "TEXT"), ("any", ""), ("int_float", "REAL"), ("int_null", "INTEGER"),
                 ("text_int", "TEXT"), ("blob_text", "BLOB")]
MIXED_ROWS = [
    ("run-a", ts(1), 1, 1.5, "x", b"\x00\x01", None, 1, 1, None, "a", b"x"),
    ("run-a", ts(2), 2, None, None, b"", None, "s", 2.5, 3, None, "t"),
    ("run-b", ts(3), 2**62, 2.0, "é ✓ 日本", None, None, None, None, 4, 3, None),
    ("run-b", ts(4), -(2**63), -0.0, "", b"\xff" * 1000, None, 2.5, 7, -1, "b", b"y"),
]


# ------------------------------------------------------------------ dtypes and values

def test_mixed_storage_classes_match_read_sql_query(tmp_path):
    path = make_db(tmp_path / "t.db", MIXED_COLUMNS, MIXED_ROWS)
    got = assert_same_as_pandas(path, 'SELECT * FROM "default"')
    arrays = _core.read_columns(path, 'SELECT * FROM "default"')
    assert arrays["i"].dtype == np.int64 and arrays["i"][2] == 2**62
    assert arrays["i"][3] == -(2**63)
    assert arrays["f"].dtype == np.float64 and np.isnan(arrays["f"][1])
    assert arrays["int_null"].dtype == np.float64
    assert arrays["s"].dtype == object and arrays["s"][1] is None
    assert arrays["s"][2] == "é ✓ 日本"
    assert list(arrays["b"]) == [b"\x00\x01", b"", None, b"\xff" * 1000]
    assert list(arrays["nulls"]) == [None] * 4
    assert list(arrays["any"]) == [1, "s", None, 2.5]
    assert list(arrays["blob_text"]) == [b"x", "t", None, b"y"]
    assert len(got) == 4


@pytest.mark.parametrize("sql", [
    'SELECT * FROM "default" WHERE 0',                  # empty result
    'SELECT i, s FROM "default" WHERE i > 100',        # big ints only
    'SELECT f FROM "default" WHERE f IS NULL',          # all NULL
    'SELECT s, b, text_int FROM "default" ORDER BY timestamp DESC',
    'SELECT i + 0.5 AS x, upper(s) AS y, length(b) AS z FROM "default"',
])
def test_queries_match_read_sql_query(tmp_path, sql):
    path = make_db(tmp_path / "t.db", MIXED_COLUMNS, MIXED_ROWS)
    assert_same_as_pandas(path, sql)


def test_empty_table_matches_read_sql_query(tmp_path):
    path = make_db(tmp_path / "t.db", [("a", "INTEGER"), ("b", "TEXT")])
    got = assert_same_as_pandas(path, 'SELECT * FROM "default"')
    assert list(got.columns) == ["track_id", "timestamp", "a", "b"] and len(got) == 0
    assert len(Reader(path).to_df()) == 0


def test_one_column(tmp_path):
    con = sqlite3.connect(tmp_path / "one.db")
    con.execute("CREATE TABLE t (v INTEGER)")
    con.executemany("INSERT INTO t VALUES (?)", [(i,) for i in range(1000)])
    con.commit()
    con.close()
    got = assert_same_as_pandas(str(tmp_path / "one.db"), "SELECT v FROM t")
    assert got["v"].tolist() == list(range(1000))


def test_500_columns(tmp_path):
    columns = [(f"c{k}", ("INTEGER", "REAL", "TEXT")[k % 3]) for k in range(498)]
    rows = []
    for r in range(50):
        values = []
        for k in range(498):
            if (r + k) % 7 == 0:
                values.append(None)
            else:
                values.append((r * k, r / (k + 1), f"v{r}-{k}")[k % 3])
        rows.append((f"run-{r % 3}", ts(r), *values))
    path = make_db(tmp_path / "wide.db", columns, rows)
    got = assert_same_as_pandas(path, 'SELECT * FROM "default"')
    assert got.shape == (50, 500)


def test_many_rows_and_repeated_strings(tmp_path):
    rows = [(f"run-{i // 300}", ts(i), i, i * 0.5, ("a", "bb", "a", None)[i % 4], i % 5 == 0)
            for i in range(5000)]
    path = make_db(tmp_path / "big.db", [("i", "INTEGER"), ("f", "REAL"), ("s", "TEXT"),
                                          ("flag", "INTEGER")], rows)
    assert_same_as_pandas(path, 'SELECT * FROM "default"')
    arrays = _core.read_columns(path, 'SELECT track_id FROM "default"')
    # equal consecutive values share one str object
    assert arrays["track_id"][0] is arrays["track_id"][1]


def test_invalid_utf8_text_is_replaced_not_fatal(tmp_path):
    con = sqlite3.connect(tmp_path / "bad.db")
    con.execute("CREATE TABLE t (v TEXT)")
    con.execute("INSERT INTO t VALUES (CAST(X'61FF62' AS TEXT))")
    con.commit()
    con.close()
    assert _core.read_columns(str(tmp_path / "bad.db"), "SELECT v FROM t")["v"][0] == "a\ufffdb"


def test_duplicate_column_names_get_suffixes(tmp_path):
    path = make_db(tmp_path / "t.db", [("a", "INTEGER")], [("r", ts(1), 5)])
    arrays = _core.read_columns(path, 'SELECT a, a, a * 2 AS "a.1", track_id FROM "default"')
    assert list(arrays) == ["a", "a.1", "a.1.1", "track_id"]
    assert arrays["a.1"][0] == 5 and arrays["a.1.1"][0] == 10


def test_params_binding(tmp_path):
    path = make_db(tmp_path / "t.db", MIXED_COLUMNS, MIXED_ROWS)
    sql = 'SELECT ? AS a, ? AS b, ? AS c, ? AS d, ? AS e, ? AS f, ? AS g'
    arrays = _core.read_columns(path, sql, (None, 7, 2.5, "é", b"\x00", True, np.int64(3)))
    assert [arrays[k][0] for k in "abcdefg"] == [None, 7, 2.5, "é", b"\x00", 1, 3]
    assert _core.read_columns(path, 'SELECT ? AS a', [1])["a"][0] == 1
    with pytest.raises(ValueError, match="2 parameter"):
        _core.read_columns(path, "SELECT ?, ?", (1,))
    with pytest.raises(TypeError, match="cannot bind"):
        _core.read_columns(path, "SELECT ?", (object(),))
    with pytest.raises(OverflowError):
        _core.read_columns(path, "SELECT ?", (2**64,))
    with pytest.raises(TypeError, match="tuple or a list"):
        _core.read_columns(path, "SELECT ?", "x")


def test_single_statement_only(tmp_path):
    path = make_db(tmp_path / "t.db")
    assert _core.read_columns(path, "SELECT 1 AS x; -- trailing comment\n ;")["x"][0] == 1
    with pytest.raises(ValueError, match="single statement"):
        _core.read_columns(path, 'SELECT 1; DELETE FROM "default"')
    with pytest.raises(ValueError, match="no statement"):
        _core.read_columns(path, "  -- nothing")


def test_sql_error_names_file_and_statement(tmp_path):
    path = make_db(tmp_path / "t.db")
    with pytest.raises(xetrack_c.StorageError) as info:
        _core.read_columns(path, "SELECT nope FROM nowhere")
    assert path in str(info.value) and "nowhere" in str(info.value)
    assert info.value.filename == path and info.value.sql == "SELECT nope FROM nowhere"


def test_sort_by_orders_like_order_by(tmp_path):
    con = sqlite3.connect(tmp_path / "s.db")
    con.execute("CREATE TABLE t (k, v INTEGER)")
    keys = [3, None, "b", 2.5, b"\x01", "a", 3, None, -7, "ab", b"", 2**62, "b", 1.0, "", 3.0]
    con.executemany("INSERT INTO t VALUES (?, ?)", [(k, i) for i, k in enumerate(keys)])
    con.commit()
    con.close()
    path = str(tmp_path / "s.db")
    got = _core.read_columns(path, "SELECT k, v FROM t", sort_by="k")
    want = expected(path, "SELECT k, v FROM t ORDER BY k, rowid")
    assert list(got["v"]) == list(want["v"])  # equal keys keep table order
    assert [repr(x) for x in got["k"]] == [repr(x) for x in want["k"]]
    buffers = _core.read_columns(path, "SELECT CAST(k AS TEXT) AS k, v FROM t WHERE k IS NOT NULL",
                                 sort_by="k", text_buffers=True)
    pdt.assert_frame_equal(frame_from_columns(buffers, "pandas"),
                           expected(path, "SELECT CAST(k AS TEXT) AS k, v FROM t "
                                          "WHERE k IS NOT NULL ORDER BY CAST(k AS TEXT), rowid"))
    assert len(_core.read_columns(path, "SELECT k FROM t WHERE 0", sort_by="k")["k"]) == 0
    with pytest.raises(ValueError, match="sort_by"):
        _core.read_columns(path, "SELECT k FROM t", sort_by="nope")


def test_read_rows_needs_no_numpy(tmp_path):
    path = make_db(tmp_path / "t.db", [("a", "INTEGER")], [("r", ts(1), 5), ("r", ts(2), None)])
    names, rows = _core.read_rows(path, 'SELECT a, track_id FROM "default" ORDER BY a')
    assert names == ("a", "track_id") and rows == [(None, "r"), (5, "r")]


def test_import_does_not_import_numpy():
    code = "import sys, xetrack_c, xetrack_c.reader; print('numpy' in sys.modules, 'pandas' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=os.path.dirname(os.path.dirname(__file__)))
    assert out.stdout.split() == ["False", "False"]


# ------------------------------------------------------------------ Reader semantics

def runs_db(tmp_path, name="runs.db"):
    """Three runs; rows inserted out of timestamp order so sorting is visible."""
    order = [5, 1, 7, 3, 0, 6, 2, 4, 8]
    rows = [(("alpha", "beta", "gamma")[i % 3], ts(i), i, i / 2, f"p{i}") for i in order]
    return make_db(tmp_path / name, [("step", "INTEGER"), ("loss", "REAL"), ("prompt", "TEXT")],
                   rows), order


def xetrack_like(path, track_id=None, head=None, tail=None):
    """xetrack 0.7's to_df algorithm, with a fresh index."""
    con = sqlite3.connect(path)
    query = 'SELECT * FROM "default"'
    params = ()
    if track_id is not None:
        query, params = query + " WHERE track_id = ?", (track_id,)
    elif head is not None:
        query += f" LIMIT {head}"
    elif tail is not None:
        query += f" ORDER BY timestamp DESC LIMIT {tail}"
    df = pd.read_sql_query(query, con, params=params)
    con.close()
    return df.sort_values("timestamp", kind="stable").reset_index(drop=True)


@pytest.mark.parametrize("kwargs", [
    {}, {"track_id": "beta"}, {"head": 4}, {"tail": 3}, {"head": 0}, {"head": 100},
    {"track_id": "alpha", "head": 1, "tail": 1}, {"head": 2, "tail": 5},
    {"track_id": "missing"},
])
def test_to_df_precedence_as_xetrack(tmp_path, kwargs):
    path, _ = runs_db(tmp_path)
    got = Reader(path).to_df(**kwargs)
    want = xetrack_like(path, **kwargs)
    if len(want) == 0:
        assert len(got) == 0 and list(got.columns) == list(want.columns)
    else:
        pdt.assert_frame_equal(got, want)
    assert list(got["timestamp"]) == sorted(got["timestamp"])
    pdt.assert_frame_equal(Reader.read_db(path, **kwargs), got)


def test_to_arrays_and_len(tmp_path):
    path, order = runs_db(tmp_path)
    reader = Reader(path)
    arrays = reader.to_arrays(tail=2)
    assert arrays["step"].dtype == np.int64 and list(arrays["step"]) == [7, 8]
    assert len(reader) == len(order)
    assert reader.columns == ["track_id", "timestamp", "step", "loss", "prompt"]
    assert reader.dtypes == {"track_id": str, "timestamp": str, "step": int, "loss": float,
                             "prompt": str}


def test_bad_limits(tmp_path):
    path, _ = runs_db(tmp_path)
    with pytest.raises(ValueError, match="head"):
        Reader(path).to_df(head=-1)
    with pytest.raises(TypeError, match="tail"):
        Reader(path).to_df(tail="3")


def test_latest_is_run_with_newest_row(tmp_path):
    path, _ = runs_db(tmp_path)
    latest = Reader(path).latest()
    assert set(latest["track_id"]) == {"gamma"}  # ts(8) belongs to 8 % 3 == 2
    assert list(latest["step"]) == [2, 5, 8]
    empty = make_db(tmp_path / "empty.db", [("x", "REAL")])
    got = Reader(empty).latest()
    assert len(got) == 0 and list(got.columns) == ["track_id", "timestamp", "x"]


def test_delete_run(tmp_path):
    path, _ = runs_db(tmp_path)
    reader = Reader(path)
    assert reader.delete_run("beta") is True
    assert set(reader.to_df()["track_id"]) == {"alpha", "gamma"}
    assert len(reader) == 6


def test_set_value_adds_typed_columns(tmp_path):
    path, _ = runs_db(tmp_path)
    reader = Reader(path)
    reader.set_value("score", 3)
    reader.set_value("ratio", 0.5, track_id="alpha")
    reader.set_value("flag", True)
    reader.set_value("raw", bytearray(b"\x01\x02"))
    reader.set_value("note", {"a": 1})
    reader.set_value("bad key!", "v")
    reader.set_value("step", np.int64(42), track_id="beta")
    dtypes = reader.dtypes
    assert dtypes["score"] is int and dtypes["ratio"] is float and dtypes["flag"] is bool
    assert dtypes["raw"] is bytearray and dtypes["note"] is str and dtypes["bad_key_"] is str
    df = reader.to_df()
    assert (df["score"] == 3).all() and df["flag"].dtype == bool and df["flag"].all()
    assert df.loc[df.track_id == "alpha", "ratio"].eq(0.5).all()
    assert df.loc[df.track_id != "alpha", "ratio"].isna().all()
    assert set(df["raw"]) == {b"\x01\x02"} and set(df["note"]) == {"{'a': 1}"}
    assert set(df.loc[df.track_id == "beta", "step"]) == {42}
    assert df["step"].dtype == np.int64


def test_set_where(tmp_path):
    path, _ = runs_db(tmp_path)
    reader = Reader(path)
    reader.set_where("label", "odd", "step", 3)
    reader.set_where("label", "seven", "step", 7, track_id="beta")  # 7 is alpha's: no-op
    reader.set_where("label", "seven", "step", 7, track_id="alpha")
    reader.set_where("flag", 1, "label", None)  # None matches NULL
    df = reader.to_df().set_index("step")
    assert df.loc[3, "label"] == "odd" and df.loc[7, "label"] == "seven"
    assert df["flag"].isna().sum() == 2 and df.loc[0, "flag"] == 1
    with pytest.raises(ValueError, match="not a column"):
        reader.set_where("label", "x", "no_such_column", 1)


# ------------------------------------------------------------------ files and safety

def test_missing_file_creates_nothing(tmp_path):
    path = tmp_path / "absent.db"
    with pytest.raises(FileNotFoundError) as info:
        Reader(path)
    assert str(path) in str(info.value)
    with pytest.raises(FileNotFoundError):
        _core.read_columns(str(path), "SELECT 1")
    with pytest.raises(FileNotFoundError):
        _core.execute(str(path), "CREATE TABLE x (a)")
    assert os.listdir(tmp_path) == []


def test_reading_never_modifies_the_file(tmp_path):
    path, _ = runs_db(tmp_path)
    before = open(path, "rb").read()
    mtime = os.stat(path).st_mtime_ns
    reader = Reader(path)
    reader.to_df(), reader.latest(), len(reader), repr(reader), reader._repr_html_()
    assert open(path, "rb").read() == before and os.stat(path).st_mtime_ns == mtime


def test_non_sqlite_file_is_corrupt_database_error(tmp_path):
    path = tmp_path / "notes.db"
    path.write_bytes(b"this is not a database\n" * 100)
    with pytest.raises(xetrack_c.CorruptDatabaseError, match="notes.db"):
        Reader(path)
    with pytest.raises(xetrack_c.CorruptDatabaseError, match="notes.db"):
        _core.read_columns(str(path), "SELECT 1 FROM sqlite_master")


def test_missing_table_lists_tables(tmp_path):
    path = make_db(tmp_path / "t.db", table="metrics")
    make_db(path, table="predictions")
    with pytest.raises(TableNotFoundError, match="'default'.*'metrics', 'predictions'"):
        Reader(path)
    assert len(Reader(path, table="predictions")) == 0


def test_engine_choices(tmp_path):
    path, _ = runs_db(tmp_path)
    pdt.assert_frame_equal(Reader(path, engine="duckdb").to_df(), Reader(path).to_df())
    with pytest.raises(ValueError, match="'sqlite', 'duckdb'"):
        Reader(path, engine="postgres")


def test_injection_through_names_is_harmless(tmp_path):
    evil_table = 'x"; DROP TABLE "default"; --'
    path = make_db(tmp_path / "t.db", [("v", "INTEGER")], [("r", ts(1), 1)])
    make_db(path, [("v", "INTEGER")], [("r", ts(1), 2)], table=evil_table)
    reader = Reader(path, table=evil_table)
    assert list(reader.to_df()["v"]) == [2]
    reader.set_value('v" = 0; DROP TABLE "default"; --', 5)
    reader.set_value("v", 9, track_id="r' OR '1'='1")
    with pytest.raises(ValueError):
        reader.set_where("v", 7, 'track_id" OR 1=1 --', "r")
    reader.delete_run("r' OR '1'='1")
    with pytest.raises(TableNotFoundError):
        Reader(path, table='default" --')
    assert list(Reader(path).to_df()["v"]) == [1]
    df = reader.to_df()
    assert list(df["v"]) == [2] and len(df) == 1
    assert _core.sanitize_key('v" = 0; DROP TABLE "default"; --') in reader.columns


def test_repr(tmp_path):
    path, _ = runs_db(tmp_path)
    reader = Reader(path)
    text = repr(reader)
    assert "9 rows x 5 columns, 3 runs" in text and "track_id" in text and "p5" in text
    page = reader._repr_html_()
    assert "<table>" in page and "9 rows x 5 columns, 3 runs" in page and "<th>loss</th>" in page
    os.remove(path)
    assert "FileNotFoundError" in repr(reader)


WRITER = textwrap.dedent("""
    import sqlite3, sys
    path, batches, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    con = sqlite3.connect(path, timeout=30, isolation_level=None)
    con.execute("PRAGMA journal_mode=WAL")
    n = 0
    for b in range(batches):
        con.execute("BEGIN IMMEDIATE")
        for _ in range(size):
            con.execute('INSERT INTO "default" VALUES (?, ?, ?, ?)',
                        ("w", "%012d" % n, n, "x" * (n % 50)))
            n += 1
        con.execute("COMMIT")
    print("done", flush=True)
""")


def test_reads_see_consistent_prefix_during_writes(tmp_path):
    size = 37
    path = make_db(tmp_path / "live.db", [("n", "INTEGER"), ("s", "TEXT")])
    writer = subprocess.Popen([sys.executable, "-c", WRITER, path, "300", str(size)],
                              stdout=subprocess.PIPE, text=True)
    reader = Reader(path)
    counts = []
    try:
        while writer.poll() is None:
            arrays = reader.to_arrays()
            n = len(arrays["n"])
            counts.append(n)
            assert n % size == 0
            assert list(arrays["n"][:n]) == list(range(n)) if n < 200 else True
            assert (np.diff(arrays["n"]) == 1).all() if n else True
    finally:
        assert writer.wait(timeout=120) == 0
    assert len(reader) == 300 * size
    assert counts, "the reader never ran while the writer wrote"


# ------------------------------------------------------------------ memory

def test_refcounts_of_returned_arrays(tmp_path):
    path = make_db(tmp_path / "t.db", MIXED_COLUMNS, MIXED_ROWS)
    arrays = _core.read_columns(path, 'SELECT * FROM "default"')
    for name in list(arrays):
        values = arrays[name]
        # held by the dict, by `values` and by getrefcount's argument: nothing else
        assert sys.getrefcount(values) == 3, name
        assert values.flags.c_contiguous and values.flags.writeable
    del values
    refs = [weakref.ref(values) for values in arrays.values()]
    # numeric arrays own their C buffer through a capsule base held by the array alone
    bases = [values.base for values in arrays.values() if values.base is not None]
    # held by the array, the list, the loop variable and getrefcount's argument
    assert bases and all(sys.getrefcount(base) == 4 for base in bases)
    text = arrays["s"][2]
    assert sys.getrefcount(text) == 3  # the array's slot, `text`, the argument
    del arrays
    gc.collect()
    assert all(ref() is None for ref in refs)
    assert sys.getrefcount(text) == 2
    assert all(sys.getrefcount(base) == 3 for base in bases)  # the arrays let go


def test_text_buffers_match_object_columns(tmp_path):
    rows = [(f"run-{i % 2}", ts(i), ("é", None, "", "abc ✓")[i % 4], i) for i in range(37)]
    path = make_db(tmp_path / "t.db", [("s", "TEXT"), ("i", "INTEGER")], rows)
    sql = 'SELECT * FROM "default"'
    plain = _core.read_columns(path, sql)
    buffers = _core.read_columns(path, sql, text_buffers=True)
    offsets, data, validity = buffers["s"]
    assert offsets.dtype == np.int64 and len(offsets) == 38 and data.dtype == np.uint8
    assert validity is not None and buffers["track_id"][2] is None
    assert list(_dataframe._text_objects(buffers["s"])) == list(plain["s"])
    for backend in ("pandas",):
        pdt.assert_frame_equal(frame_from_columns(buffers, backend),
                               frame_from_columns(plain, backend))
    pdt.assert_frame_equal(frame_from_columns(buffers, "pandas"), expected(path, sql))


def test_repeated_reads_do_not_leak(tmp_path):
    rows = [(f"run-{i % 3}", ts(i), i, i * 0.25, f"text {i}", bytes([i % 256]) * 3)
            for i in range(200)]
    path = make_db(tmp_path / "t.db", [("i", "INTEGER"), ("f", "REAL"), ("s", "TEXT"),
                                        ("b", "BLOB")], rows)

    def rss_kib():
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        return 0

    for _ in range(100):
        _core.read_columns(path, 'SELECT * FROM "default"')
    gc.collect()
    tracemalloc.start()
    rss_before = rss_kib()
    snapshot_before = tracemalloc.take_snapshot()
    for _ in range(1000):
        _core.read_columns(path, 'SELECT * FROM "default"')
    gc.collect()
    growth = sum(stat.size_diff for stat in
                 tracemalloc.take_snapshot().compare_to(snapshot_before, "filename"))
    tracemalloc.stop()
    assert growth < 256 * 1024
    # AddressSanitizer keeps freed memory in quarantine, so RSS says nothing under it.
    if sys.platform.startswith("linux") and "asan" not in os.environ.get("LD_PRELOAD", ""):
        assert rss_kib() - rss_before < 16 * 1024


# ------------------------------------------------------------------ backends

def test_backend_selection():
    set_backend("auto")
    assert get_backend() == "pandas"
    with pytest.raises(ValueError, match="Unknown backend: 'arrow'"):
        set_backend("arrow")
    set_backend("pandas")
    assert _dataframe.frame_from_columns({}).shape == (0, 0)


def test_polars_backend(tmp_path):
    pl = pytest.importorskip("polars")
    path = make_db(tmp_path / "t.db", MIXED_COLUMNS, MIXED_ROWS)
    set_backend("polars")
    assert get_backend() == "polars"
    df = Reader(path).to_df()
    assert isinstance(df, pl.DataFrame) and df.shape == (4, 12)
    assert df["i"].dtype == pl.Int64 and df["i"][2] == 2**62
    assert df["f"].dtype == pl.Float64 and df["f"].null_count() == 1
    assert df["s"].dtype == pl.String and df["s"].to_list() == ["x", None, "é ✓ 日本", ""]
    assert df["b"].dtype == pl.Binary
    assert df["any"].to_list() == [1, "s", None, 2.5]
    empty = make_db(tmp_path / "e.db", [("a", "INTEGER")])
    assert Reader(empty).to_df().shape == (0, 3)
