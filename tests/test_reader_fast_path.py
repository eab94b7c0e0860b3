"""The read path's shortcuts change no value: buffers sized from a row-count hint, and text
interned per column (one str per distinct value), checked against pandas.read_sql_query."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path
from typing import Any, List, Sequence, Tuple

import pandas as pd
import pandas.testing as pdt
import pytest

from xetrack_c import _core
from xetrack_c._dataframe import frame_from_columns
from xetrack_c.reader import Reader

CREATE = 'CREATE TABLE "default" (track_id TEXT, timestamp TEXT, {}, PRIMARY KEY (track_id, timestamp))'
ALL = 'SELECT * FROM "default"'


def make_db(path: Path, columns: Sequence[Tuple[str, str]], rows: Sequence[Tuple[Any, ...]]) -> str:
    """A WAL database in xetrack's layout with `columns` after track_id and timestamp."""
    con = sqlite3.connect(path)
    con.execute("PRAGMA journal_mode=WAL")
    con.execute(CREATE.format(", ".join(f'"{name}" {kind}' for name, kind in columns)))
    marks = ", ".join("?" * (2 + len(columns)))
    con.executemany(f'INSERT INTO "default" VALUES ({marks})', rows)
    con.commit()
    con.close()
    return str(path)


def ts(i: int) -> str:
    return f"2025-01-01 00:{i // 60_000_000 % 60:02d}:{i // 1_000_000 % 60:02d}.{i % 1_000_000:06d}"


def pandas_frame(path: str, sql: str = ALL) -> pd.DataFrame:
    con = sqlite3.connect(path)
    try:
        return pd.read_sql_query(sql, con)
    finally:
        con.close()


def assert_read_matches_pandas(path: str) -> None:
    """read_columns with and without a hint, and Reader.to_df, all equal read_sql_query."""
    want = pandas_frame(path)
    for hint in (None, 'SELECT max(rowid) FROM "default"'):
        got = frame_from_columns(_core.read_columns(path, ALL, rows_hint_sql=hint), "pandas")
        pdt.assert_frame_equal(got, want)
    ordered = pandas_frame(path, ALL + " ORDER BY timestamp")
    pdt.assert_frame_equal(Reader(path).to_df(), ordered)


def test_low_cardinality_text_three_columns_of_1000_values(tmp_path: Path) -> None:
    n = 6_000
    rows = [("run", ts(i), f"a-{i % 1000}", f"b-{(i * 7) % 1000}", f"c-{(i // 3) % 1000}", i)
            for i in range(n)]
    path = make_db(tmp_path / "low.db", [("a", "TEXT"), ("b", "TEXT"), ("c", "TEXT"), ("n", "INTEGER")],
                   rows)
    assert_read_matches_pandas(path)
    arrays = _core.read_columns(path, ALL)
    for name, prefix in (("a", "a-"), ("b", "b-"), ("c", "c-")):
        values = arrays[name]
        # One object per distinct value, and each still says what its own row holds.
        assert len({id(v) for v in values}) == 1000
        assert [v for v in values[:5]] == [r[{"a": 2, "b": 3, "c": 4}[name]] for r in rows[:5]]
        assert all(v.startswith(prefix) for v in values)
    # Objects are shared within a column, never across columns holding other values.
    assert arrays["a"][0] is arrays["a"][1000]
    assert arrays["a"][1] is not arrays["b"][1]
    # A str handed out is an ordinary immutable str: "changing" one value changes no other.
    first = arrays["a"][0]
    arrays["a"][0] = first + "!"
    assert arrays["a"][1000] == "a-0" and arrays["a"][0] == "a-0!"


def test_high_cardinality_text_gives_up_interning_and_matches(tmp_path: Path) -> None:
    n = 10_000
    rows = [("run", ts(i), f"unique-{i}", f"low-{i % 7}") for i in range(n)]
    path = make_db(tmp_path / "high.db", [("u", "TEXT"), ("l", "TEXT")], rows)
    assert_read_matches_pandas(path)
    arrays = _core.read_columns(path, ALL)
    assert list(arrays["u"]) == [f"unique-{i}" for i in range(n)]
    assert len({id(v) for v in arrays["l"]}) == 7


def test_cardinality_that_changes_midway(tmp_path: Path) -> None:
    # Read backwards, the last 4,000 rows repeat 3 values, then every row is new.
    n = 12_000
    rows = [("run", ts(i), f"v{i}" if i < n - 4_000 else f"r{i % 3}") for i in range(n)]
    path = make_db(tmp_path / "mid.db", [("v", "TEXT")], rows)
    assert_read_matches_pandas(path)


def test_nulls_between_interned_values(tmp_path: Path) -> None:
    rows = [("run", ts(i), None if i % 5 == 0 else f"x{i % 11}", None if i % 2 else float(i))
            for i in range(6_000)]
    path = make_db(tmp_path / "nulls.db", [("t", "TEXT"), ("f", "REAL")], rows)
    assert_read_matches_pandas(path)
    values = _core.read_columns(path, ALL)["t"]
    assert values[0] is None and values[5] is None and values[1] == "x1"


def test_mixed_storage_classes_keep_their_types(tmp_path: Path) -> None:
    # Text and blob with the same bytes, an integer and a real spelled like them: one column.
    cycle: List[Any] = ["12", b"12", 12, 12.5, None, "ab", b"ab", "", b""]
    rows = [("run", ts(i), cycle[i % len(cycle)]) for i in range(9 * 1_000)]
    path = make_db(tmp_path / "mixed.db", [("m", "")], rows)
    assert_read_matches_pandas(path)
    values = _core.read_columns(path, ALL)["m"]
    for i, value in enumerate(values[: 3 * len(cycle)]):
        want = cycle[i % len(cycle)]
        assert type(value) is type(want) and value == want, (i, value, want)


def test_empty_table(tmp_path: Path) -> None:
    path = make_db(tmp_path / "empty.db", [("a", "TEXT"), ("n", "INTEGER")], [])
    assert_read_matches_pandas(path)
    assert len(Reader(path).to_df()) == 0


@pytest.mark.parametrize("hint", [
    "SELECT 10", "SELECT 1000000", "SELECT 0", "SELECT -5", "SELECT NULL", "SELECT 'many'",
    "SELECT * FROM no_such_table", "SELECT 9223372036854775807",
])
def test_a_wrong_hint_changes_no_value(tmp_path: Path, hint: str) -> None:
    rows = [("run", ts(i), f"s{i % 50}" * (1 + i // 1000), i * 0.5) for i in range(3_000)]
    path = make_db(tmp_path / "hint.db", [("s", "TEXT"), ("f", "REAL")], rows)
    got = frame_from_columns(_core.read_columns(path, ALL, rows_hint_sql=hint), "pandas")
    pdt.assert_frame_equal(got, pandas_frame(path))


def test_text_longer_after_the_sampled_rows(tmp_path: Path) -> None:
    # The arena is sized from the first rows' bytes per row; later rows are 100x longer.
    rows = [("run", ts(i), "s" if i < 1_000 else "L" * 100 + str(i)) for i in range(4_000)]
    path = make_db(tmp_path / "long.db", [("s", "TEXT")], rows)
    assert_read_matches_pandas(path)
    got = frame_from_columns(_core.read_columns(path, ALL, text_buffers=True,
                                                rows_hint_sql="SELECT 4000"), "pandas")
    pdt.assert_frame_equal(got, pandas_frame(path))


def test_table_growing_while_read(tmp_path: Path) -> None:
    start = 2_000
    rows = [("run", ts(i), f"v{i % 10}", i) for i in range(start)]
    path = make_db(tmp_path / "grow.db", [("v", "TEXT"), ("n", "INTEGER")], rows)
    stop = threading.Event()
    written = [start]

    def writer() -> None:
        con = sqlite3.connect(path, timeout=30)
        i = start
        while not stop.is_set() and i < start + 200_000:
            con.executemany('INSERT INTO "default" VALUES (?, ?, ?, ?)',
                            [("run", ts(j), f"v{j % 10}", j) for j in range(i, i + 500)])
            con.commit()
            i += 500
            written[0] = i
        con.close()

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        sizes: List[int] = []
        while len(sizes) < 10 or (sizes[-1] == sizes[0] and len(sizes) < 500):
            frame = Reader(path).to_df()
            n = len(frame)
            sizes.append(n)
            # Each read is one snapshot: a whole prefix of the rows written, in order.
            assert n >= start and n % 500 == 0
            assert frame["n"].tolist() == list(range(n))
            assert frame["v"].tolist() == [f"v{j % 10}" for j in range(n)]
    finally:
        stop.set()
        thread.join()
    assert sizes[-1] > sizes[0], sizes  # the table did grow between the reads


def test_views_and_quoted_table_names(tmp_path: Path) -> None:
    path = make_db(tmp_path / "names.db", [("v", "TEXT")],
                   [("run", ts(i), f"v{i % 4}") for i in range(3_000)])
    con = sqlite3.connect(path)
    con.execute('CREATE TABLE "it\'s ""x""" AS SELECT * FROM "default"')
    con.execute('CREATE VIEW "view\'s" AS SELECT * FROM "default" WHERE v != \'v1\'')
    con.commit()
    con.close()
    want = pandas_frame(path, ALL + " ORDER BY timestamp")
    pdt.assert_frame_equal(Reader(path, table='it\'s "x"').to_df(), want)
    view = pandas_frame(path, ALL + " WHERE v != 'v1' ORDER BY timestamp")
    pdt.assert_frame_equal(Reader(path, table="view's").to_df(), view)
    assert len(view) == 2_250


def _key_values(seed: int, n: int) -> List[Any]:
    import random

    rng = random.Random(seed)
    pool: List[Any] = [None, 0, -3, 2.5, 7, "", "a", "ab", "abc", "b", "a\x00", b"", b"a",
                       b"ab", "zz" * 20, "é", 1e300]
    return [rng.choice(pool) if rng.random() < 0.7 else f"t{rng.randrange(50):03d}"
            for _ in range(n)]


def _sql_order(values: List[Any]) -> List[Any]:
    con = sqlite3.connect(":memory:")
    con.execute("CREATE TABLE t (k)")
    con.executemany("INSERT INTO t VALUES (?)", [(v,) for v in values])
    return [row[0] for row in con.execute("SELECT k FROM t ORDER BY k")]


@pytest.mark.parametrize("case", ["shuffled", "in_order", "last_pair_swapped", "first_pair_swapped"])
def test_sort_by_checks_order_without_a_length_array(tmp_path: Path, case: str) -> None:
    values = _key_values(7, 2_000)
    if case != "shuffled":
        values = _sql_order(values)
        if case == "last_pair_swapped":
            values[-2], values[-1] = "zzzz", "a"
        elif case == "first_pair_swapped":
            values[0], values[1] = "b", "a"
    path = str(tmp_path / "sort.db")
    con = sqlite3.connect(path)
    con.execute("CREATE TABLE t (i INTEGER, k)")
    con.executemany("INSERT INTO t VALUES (?, ?)", list(enumerate(values)))
    con.commit()
    con.close()
    got = _core.read_columns(path, "SELECT k, i FROM t", sort_by="k")
    assert list(got["k"]) == _sql_order(values)
    # Equal keys keep table order.
    pairs = list(zip(got["k"], got["i"], strict=True))
    for (k1, i1), (k2, i2) in zip(pairs, pairs[1:], strict=False):
        if type(k1) is type(k2) and k1 == k2:
            assert i1 < i2
