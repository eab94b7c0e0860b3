"""Rows, column types, row layout and the rest of the Tracker's xetrack-compatible API.

Each test writes through ``xetrack_c.Tracker`` and reads the file back with ``sqlite3``.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from datetime import datetime, timedelta

import pytest
from conftest import Unpicklable, count_rows, read_rows, table_info, table_names

from xetrack_c import Tracker

TIMESTAMP_FORMAT = "%Y-%m-%d %H:%M:%S.%f"
TRACK_ID = re.compile(r"^[a-z]+-[a-z]+-\d{4}$")


def typeof(db: str, column: str, table: str = "default") -> list:
    import sqlite3

    conn = sqlite3.connect(db)
    try:
        return [r[0] for r in conn.execute(f'SELECT typeof("{column}") FROM "{table}" ORDER BY rowid')]
    finally:
        conn.close()


# ------------------------------------------------------------------ values and their types
class Thing:
    def __str__(self) -> str:
        return "a thing"


def test_primitive_values_round_trip_with_their_storage_class(db_path):
    tracker = Tracker(db_path)
    row = tracker.log(
        {
            "i": 7,
            "neg": -(2**63),
            "f": 2.5,
            "yes": True,
            "no": False,
            "s": "héllo wörld",
            "by": b"\x00\x01\xff",
            "ba": bytearray(b"\x02\x03"),
            "nothing": None,
        }
    )
    tracker.close()
    (stored,) = read_rows(db_path)
    assert stored["i"] == 7 and stored["neg"] == -(2**63)
    assert stored["f"] == 2.5
    assert stored["yes"] == 1 and stored["no"] == 0
    assert stored["s"] == "héllo wörld"
    assert stored["by"] == b"\x00\x01\xff"
    assert stored["ba"] == b"\x02\x03"
    assert stored["nothing"] is None
    for column, storage in [
        ("i", "integer"), ("f", "real"), ("yes", "integer"), ("s", "text"),
        ("by", "blob"), ("ba", "blob"), ("nothing", "null"),
    ]:
        assert typeof(db_path, column) == [storage], column
    # the returned row shows the values as given (bool stays bool in the dict)
    assert row["yes"] is True and row["i"] == 7 and row["nothing"] is None


def test_memoryview_and_bytearray_are_stored_as_their_bytes(db_path):
    from array import array

    ints = array("i", [1, -2, 3])
    source = bytearray(b"abcdef")
    values = {
        "ba": bytearray(b"\x00\x01"),
        "mv": memoryview(b"xyz"),
        "mv_rw": memoryview(source),
        "mv_strided": memoryview(b"abcdef")[::2],  # not contiguous
        "mv_ints": memoryview(ints),  # not a byte format
        "mv_2d": memoryview(b"abcdef").cast("B", (2, 3)),
        "mv_empty": memoryview(b""),
    }
    expected = {
        "ba": b"\x00\x01", "mv": b"xyz", "mv_rw": b"abcdef", "mv_strided": b"ace",
        "mv_ints": ints.tobytes(), "mv_2d": b"abcdef", "mv_empty": b"",
    }
    tracker = Tracker(db_path)
    row = tracker.log(values)
    source[:] = b"ZZZZZZ"  # the row is a copy taken by log()
    tracker.close()
    (stored,) = read_rows(db_path)
    for column, data in expected.items():
        assert stored[column] == data, column
        assert typeof(db_path, column) == ["blob"], column
        assert type(row[column]) is bytes and row[column] == data, column
    decl = table_info(db_path)
    # as xetrack 0.7 declares them: bytearray -> BLOB, memoryview (like bytes) -> TEXT
    assert decl["ba"] == "BLOB" and decl["mv"] == "TEXT"


def test_negative_zero_reads_back_as_zero(db_path):
    """Documented (docs/tracker.md): SQLite stores a REAL with an integral value as an
    integer, which has no sign."""
    import math

    tracker = Tracker(db_path)
    tracker.log({"z": -0.0, "t": "text column"})
    tracker.log({"t": -0.0})
    tracker.close()
    first, second = read_rows(db_path)
    assert first["z"] == 0.0 and math.copysign(1.0, first["z"]) == 1.0
    assert second["t"] == "0.0"

def test_containers_are_stored_as_str_and_objects_as_assets(db_path):
    tracker = Tracker(db_path)
    value_map = {"d": {"a": 1, "b": [2]}, "l": [1, "x"], "t": (1, 2), "obj": Thing()}
    row = tracker.log(value_map)
    (stored,) = read_rows(db_path)
    assert stored["d"] == "{'a': 1, 'b': [2]}"
    assert stored["l"] == "[1, 'x']"
    assert stored["t"] == "(1, 2)"
    assert stored["obj"] == row["obj"] and len(row["obj"]) == 16  # the asset's hash
    assert str(tracker.get(row["obj"])) == "a thing"
    assert row["d"] == "{'a': 1, 'b': [2]}"
    assert table_info(db_path)["d"] == "TEXT"
    tracker.close()


def test_int_beyond_64_bits_raises_and_stores_nothing(db_path):
    big = 2**70 + 1
    tracker = Tracker(db_path)
    tracker.log({"small": 1})
    with pytest.raises(OverflowError, match="64-bit INTEGER"):
        tracker.log({"big": big, "small": 2})
    tracker.log({"small": 3})
    tracker.close()
    assert [r["small"] for r in read_rows(db_path)] == [1, 3]


def test_numpy_scalars_are_stored_as_python_values(db_path):
    np = pytest.importorskip("numpy")
    tracker = Tracker(db_path)
    row = tracker.log({"ni": np.int64(42), "nf": np.float32(0.5), "nb": np.bool_(True), "nd": np.float64(1.25)})
    tracker.close()
    assert type(row["ni"]) is int and row["ni"] == 42
    assert type(row["nf"]) is float and row["nf"] == 0.5
    assert type(row["nb"]) is bool and row["nb"] is True
    (stored,) = read_rows(db_path)
    assert stored == {**stored, "ni": 42, "nf": 0.5, "nb": 1, "nd": 1.25}
    assert [typeof(db_path, c)[0] for c in ("ni", "nf", "nb", "nd")] == ["integer", "real", "integer", "real"]
    decl = table_info(db_path)
    assert (decl["ni"], decl["nf"], decl["nb"], decl["nd"]) == ("INTEGER", "REAL", "BOOLEAN", "REAL")


def test_declared_column_types_follow_the_first_value(db_path):
    tracker = Tracker(db_path)
    tracker.log({"i": 1, "f": 1.0, "b": True, "ba": bytearray(b"x"), "s": "x", "by": b"x", "n": None, "l": [1]})
    tracker.log({"i": "later text", "f": 3, "b": "x"})  # later values do not change the type
    tracker.close()
    decl = table_info(db_path)
    assert decl == {
        "track_id": "TEXT", "timestamp": "TEXT", "i": "INTEGER", "f": "REAL", "b": "BOOLEAN",
        "ba": "BLOB", "s": "TEXT", "by": "TEXT", "n": "TEXT", "l": "TEXT",
    }


def test_dtypes_and_columns(db_path):
    tracker = Tracker(db_path)
    tracker.log({"i": 1, "f": 1.0, "b": False, "ba": bytearray(b"x"), "s": "x"})
    assert tracker.columns == {"track_id", "timestamp", "i", "f", "b", "ba", "s"}
    assert tracker.dtypes == {
        "track_id": str, "timestamp": str, "i": int, "f": float, "b": bool, "ba": bytearray, "s": str,
    }


def test_keys_differing_only_in_case_share_one_column(db_path):
    tracker = Tracker(db_path)
    tracker.log({"Acc": 1})
    tracker.log({"acc": 2})
    tracker.close()
    names = [n for n in table_info(db_path) if n.lower() == "acc"]
    assert len(names) == 1
    assert [r[names[0]] for r in read_rows(db_path)] == [1, 2]


# ------------------------------------------------------------------ row layout
def test_row_layout_params_then_keys_then_timestamp_then_track_id(db_path):
    tracker = Tracker(db_path, params={"model": "m", "seed": 3}, track_id="run-1")
    row = tracker.log({"zeta": 1, "alpha": 2})
    assert list(row) == ["model", "seed", "zeta", "alpha", "timestamp", "track_id"]
    assert row["track_id"] == "run-1" and row["model"] == "m"
    tracker.close()
    assert list(table_info(db_path)) == ["track_id", "timestamp", "model", "seed", "zeta", "alpha"]
    (stored,) = read_rows(db_path)
    assert stored == {"track_id": "run-1", "timestamp": row["timestamp"], "model": "m", "seed": 3,
                      "zeta": 1, "alpha": 2}


def test_logged_key_overrides_param_in_place(db_path):
    tracker = Tracker(db_path, params={"lr": 0.1, "seed": 1})
    row = tracker.log({"lr": 0.5, "x": 1})
    assert list(row) == ["lr", "seed", "x", "timestamp", "track_id"]
    assert row["lr"] == 0.5
    tracker.close()
    assert read_rows(db_path)[0]["lr"] == 0.5


def test_timestamp_is_local_time_in_xetrack_format(run_py, db_path):
    # A zone far from UTC, so a UTC timestamp cannot pass for local time.
    proc = run_py(
        f"""
        import time
        from datetime import datetime
        from xetrack_c import Tracker
        t = Tracker({db_path!r})
        before = datetime.now()
        row = t.log({{"x": 1}})
        after = datetime.now()
        print(before.isoformat(), row["timestamp"], after.isoformat(), sep="|")
        """,
        env={"TZ": "Asia/Kolkata"},
    )
    before, stamp, after = proc.stdout.strip().split("|")
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{6}", stamp)
    parsed = datetime.strptime(stamp, TIMESTAMP_FORMAT)
    slack = timedelta(seconds=1)  # clock granularity only; a zone error is hours
    assert datetime.fromisoformat(before) - slack <= parsed <= datetime.fromisoformat(after) + slack
    assert read_rows(db_path)[0]["timestamp"] == stamp


def test_timestamps_are_unique_and_increasing_within_a_tracker(db_path):
    tracker = Tracker(db_path, track_id="same")
    stamps = [tracker.log({"i": i})["timestamp"] for i in range(2000)]
    assert len(set(stamps)) == 2000
    assert stamps == sorted(stamps)
    tracker.close()
    assert count_rows(db_path) == 2000


# ------------------------------------------------------------------ log / log_batch / latest
def _crowd_the_next_microseconds(db: str, track_id: str, window_us: int):
    """Fill (track_id, timestamp) for every microsecond of a window starting soon; return
    its first and last timestamps, or None if the clock had already passed its start."""
    import sqlite3

    start = datetime.now() + timedelta(milliseconds=300)
    stamps = [(start + timedelta(microseconds=k)).strftime(TIMESTAMP_FORMAT) for k in range(window_us)]
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("BEGIN IMMEDIATE")
    conn.executemany('INSERT INTO "default" (track_id, timestamp) VALUES (?, ?)',
                     [(track_id, s) for s in stamps])
    conn.execute("COMMIT")
    conn.close()
    while datetime.now() < start:  # wait for the wall clock to enter the window
        pass
    if datetime.now() > start + timedelta(microseconds=window_us // 4):
        return None
    return stamps[0], stamps[-1]


@pytest.mark.parametrize(
    "method",
    [
        "log",
        pytest.param("log_batch"),
    ],
)
def test_returned_timestamp_is_the_stored_one_after_a_primary_key_bump(db_path, method):
    tracker = Tracker(db_path, track_id="same")
    tracker.log({"i": -1})
    for _ in range(5):
        window = _crowd_the_next_microseconds(db_path, "same", 20_000)
        if window is None:
            continue  # the machine was too slow to hit the window: try again
        if method == "log":
            row = tracker.log({"i": 1})
        else:
            row = tracker.log_batch([{"i": 0}, {"i": 1}])
        stored = read_rows(db_path, where="WHERE i = 1")[0]["timestamp"]
        assert stored > window[1]  # it collided and was moved past the crowded window
        assert row["timestamp"] == stored
        assert tracker.latest["timestamp"] == stored
        return
    pytest.skip("could not log inside the crowded window")


def test_log_returns_the_row_and_sets_latest(db_path):
    tracker = Tracker(db_path)
    assert tracker.latest == {}
    row = tracker.log({"a": 1})
    assert tracker.latest == row
    row2 = tracker.log({"a": 2})
    assert tracker.latest == row2 != row


def test_log_batch_writes_every_row_and_returns_the_last(db_path):
    tracker = Tracker(db_path, params={"p": "x"})
    last = tracker.log_batch([{"i": i, "sq": i * i} for i in range(500)])
    assert last["i"] == 499 and last["p"] == "x"
    assert tracker.latest == last
    tracker.close()
    rows = read_rows(db_path)
    assert [r["i"] for r in rows] == list(range(500))
    assert all(r["sq"] == r["i"] ** 2 and r["p"] == "x" for r in rows)
    assert len({r["timestamp"] for r in rows}) == 500


def test_log_batch_is_all_or_nothing(db_path):
    tracker = Tracker(db_path)
    tracker.log({"i": -1})
    with pytest.raises(RuntimeError, match="no pickle"):
        tracker.log_batch([{"i": 0}, {"i": 1, "bad": Unpicklable()}, {"i": 2}])
    tracker.close()
    assert [r["i"] for r in read_rows(db_path)] == [-1]


def test_log_batch_of_empty_list_returns_empty_dict(db_path):
    tracker = Tracker(db_path)
    assert tracker.log_batch([]) == {}
    tracker.close()
    assert count_rows(db_path) == 0


# ------------------------------------------------------------------ params and back-filling
def test_set_param_creates_the_column_now_and_adds_it_to_later_rows(db_path):
    tracker = Tracker(db_path)
    tracker.log({"i": 0})
    assert tracker.set_param("model", "gpt") == "model"
    assert table_info(db_path)["model"] == "TEXT"  # before any row carries it
    tracker.set_params({"temp": 0.7, "k": 3})
    assert table_info(db_path)["temp"] == "REAL" and table_info(db_path)["k"] == "INTEGER"
    tracker.log({"i": 1})
    tracker.close()
    rows = read_rows(db_path)
    assert (rows[0]["model"], rows[0]["temp"], rows[0]["k"]) == (None, None, None)
    assert (rows[1]["model"], rows[1]["temp"], rows[1]["k"]) == ("gpt", 0.7, 3)
    assert tracker.params == {"model": "gpt", "temp": 0.7, "k": 3}


def test_set_value_touches_only_this_runs_rows(db_path):
    mine, other = Tracker(db_path, track_id="mine"), Tracker(db_path, track_id="other")
    mine.log({"i": 1})
    other.log({"i": 1})
    mine.log({"i": 2})
    mine.set_value("label", "done")
    rows = read_rows(db_path)
    assert [(r["track_id"], r["label"]) for r in rows] == [("mine", "done"), ("other", None), ("mine", "done")]


def test_set_where_touches_only_matching_rows_of_this_run(db_path):
    mine, other = Tracker(db_path, track_id="mine"), Tracker(db_path, track_id="other")
    for i in range(3):
        mine.log({"i": i})
        other.log({"i": i})
    mine.set_where("hit", 1, "i", 2)
    rows = read_rows(db_path)
    hits = [(r["track_id"], r["i"]) for r in rows if r["hit"] == 1]
    assert hits == [("mine", 2)]


# ------------------------------------------------------------------ counting and reading
def test_len_count_run_count_all(db_path):
    a, b = Tracker(db_path), Tracker(db_path)
    for i in range(3):
        a.log({"i": i})
    b.log({"i": 9})
    assert len(a) == a.count_run() == 3
    assert len(b) == 1
    assert a.count_all() == b.count_all() == 4


def test_to_df_head_tail(db_path):
    pytest.importorskip("pandas")
    a, b = Tracker(db_path, track_id="a"), Tracker(db_path, track_id="b")
    for i in range(8):
        a.log({"i": i})
    b.log({"i": 100})
    assert list(a.to_df()["i"]) == list(range(8))
    assert set(a.to_df(all=True)["i"]) == set(range(8)) | {100}
    assert list(a.head(3)["i"]) == [0, 1, 2]
    assert list(a.head()["i"]) == [0, 1, 2, 3, 4]
    assert list(a.tail(3)["i"]) == [7, 6, 5]  # newest first, as xetrack
    assert set(a.to_df().columns) >= {"track_id", "timestamp", "i"}


def test_getitem_column_and_row_number(db_path):
    pytest.importorskip("pandas")
    other = Tracker(db_path, track_id="first")
    other.log({"x": -1})
    tracker = Tracker(db_path, track_id="second")
    for i in range(3):
        tracker.log({"x": i})
    assert list(tracker["x"]) == [0, 1, 2]  # this run only
    # row numbers are 1-based across the whole table, as in xetrack
    assert tracker[1]["track_id"] == "first" and tracker[1]["x"] == -1
    assert tracker[2]["x"] == 0 and tracker[4]["x"] == 2
    assert tracker[5] is None
    with pytest.raises(KeyError):
        tracker["no_such_column"]


def test_to_csv_and_to_parquet_round_trip(db_path, tmp_path):
    pd = pytest.importorskip("pandas")
    tracker = Tracker(db_path, params={"p": "v"})
    for i in range(4):
        tracker.log({"i": i, "f": i / 2, "s": f"s{i}"})
    csv, parquet = tmp_path / "out.csv", tmp_path / "out.parquet"
    tracker.to_csv(str(csv))
    back = pd.read_csv(csv)
    assert list(back["i"]) == [0, 1, 2, 3] and list(back["s"]) == ["s0", "s1", "s2", "s3"]
    assert list(back["timestamp"]) == [r["timestamp"] for r in read_rows(db_path)]
    pytest.importorskip("pyarrow")
    tracker.to_parquet(str(parquet))
    back = pd.read_parquet(parquet)
    pd.testing.assert_frame_equal(back.reset_index(drop=True), tracker.to_df().reset_index(drop=True))


# ------------------------------------------------------------------ lifecycle
def test_context_manager_closes_and_use_after_close_raises(db_path):
    with Tracker(db_path) as tracker:
        tracker.log({"a": 1})
    assert tracker.closed
    with pytest.raises(ValueError):
        tracker.log({"a": 2})
    with pytest.raises(ValueError):
        tracker.log_batch([{"a": 2}])
    with pytest.raises(ValueError):
        tracker.count_all()
    tracker.close()  # closing twice is harmless
    assert count_rows(db_path) == 1


def test_track_id_property_and_generated_ids(db_path):
    tracker = Tracker(db_path)
    assert TRACK_ID.match(tracker.track_id), tracker.track_id
    ids = {Tracker.generate_track_id() for _ in range(200)}
    assert all(TRACK_ID.match(i) for i in ids)
    assert len(ids) > 150  # random, not a constant
    named = Tracker(db_path, track_id="my-run")
    assert named.track_id == "my-run"
    assert named.log({"a": 1})["track_id"] == "my-run"
    assert read_rows(db_path)[0]["track_id"] == "my-run"


def test_get_timestamp_format():
    stamp = Tracker.get_timestamp()
    parsed = datetime.strptime(stamp, TIMESTAMP_FORMAT)
    assert abs(parsed - datetime.now()) < timedelta(minutes=1)


def test_in_memory_tracker(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    tracker = Tracker(Tracker.IN_MEMORY)
    for i in range(5):
        tracker.log({"i": i})
    assert len(tracker) == 5 and tracker.count_all() == 5
    assert list(tracker.to_df()["i"]) == [0, 1, 2, 3, 4]
    tracker.close()
    assert os.listdir(tmp_path) == []


def test_skip_insert_returns_rows_but_stores_nothing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    tracker = Tracker(Tracker.SKIP_INSERT, params={"p": 1})
    row = tracker.log({"i": 1})
    assert row["i"] == 1 and row["p"] == 1 and "timestamp" in row
    assert tracker.latest == row
    assert tracker.count_all() == 0
    tracker.close()
    assert os.listdir(tmp_path) == []


def test_skip_insert_log_batch_returns_the_last_row(run_py, tmp_path):
    # In a child interpreter: a memory error here must fail this test, not the run.
    proc = run_py(
        """
        from xetrack_c import Tracker
        tracker = Tracker(Tracker.SKIP_INSERT)
        last = tracker.log_batch([{"i": i} for i in range(3)])
        assert last["i"] == 2, last
        assert tracker.count_all() == 0
        print("ok")
        """,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == "ok"


def test_reset_drops_old_rows(db_path):
    with Tracker(db_path) as tracker:
        tracker.log({"old": 1})
    with Tracker(db_path, reset=True) as tracker:
        tracker.log({"new": 2})
    assert [r["new"] for r in read_rows(db_path)] == [2]
    assert "old" not in table_info(db_path)


def test_tables_are_isolated_in_one_file(db_path):
    a, b = Tracker(db_path, table="alpha"), Tracker(db_path, table="beta")
    a.log({"x": 1})
    b.log({"y": 2})
    b.log({"y": 3})
    assert a.table_name == "alpha"
    assert table_names(db_path) == ["alpha", "beta"]
    assert [r["x"] for r in read_rows(db_path, "alpha")] == [1]
    assert [r["y"] for r in read_rows(db_path, "beta")] == [2, 3]
    assert "y" not in table_info(db_path, "alpha")
    assert a.count_all() == 1 and b.count_all() == 2


def test_engine_duckdb_writes_the_same_sqlite_file(db_path):
    with Tracker(db_path, engine="duckdb") as tracker:
        tracker.log({"x": 1})
    assert read_rows(db_path)[0]["x"] == 1


def test_database_runs_in_wal_mode(db_path):
    import sqlite3

    Tracker(db_path).log({"x": 1})
    assert sqlite3.connect(db_path).execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_bogus_durability_raises(db_path):
    with pytest.raises(ValueError, match="bogus"):
        Tracker(db_path, durability="bogus")


@pytest.mark.parametrize("durability", ["commit", "fsync", "async"])
def test_each_durability_mode_stores_rows(db_path, durability):
    tracker = Tracker(db_path, durability=durability)
    assert tracker.durability == durability
    tracker.log_batch([{"i": i} for i in range(10)])
    tracker.log({"i": 10})
    tracker.close()
    assert [r["i"] for r in read_rows(db_path)] == list(range(11))


def test_git_root_records_the_commit_hash(db_path, tmp_path):
    git = shutil.which("git")
    if git is None:
        pytest.skip("git is not installed")
    repo = tmp_path / "repo"
    repo.mkdir()
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.com",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.com"}
    subprocess.run([git, "init", "-q", str(repo)], check=True, env=env)
    (repo / "f.txt").write_text("x")
    subprocess.run([git, "-C", str(repo), "add", "f.txt"], check=True, env=env)
    subprocess.run([git, "-C", str(repo), "commit", "-q", "-m", "init"], check=True, env=env)
    head = subprocess.run([git, "-C", str(repo), "rev-parse", "HEAD"], check=True, env=env,
                          capture_output=True, text=True).stdout.strip()
    tracker = Tracker(db_path, git_root=str(repo))
    assert tracker.params["git_commit_hash"] == head
    tracker.log({"x": 1})
    tracker.close()
    assert read_rows(db_path)[0]["git_commit_hash"] == head


def test_log_of_an_empty_dict_warns_and_writes_nothing(db_path):
    tracker = Tracker(db_path, params={"model": "m"})
    with pytest.warns(UserWarning, match="no values"):
        assert tracker.log({}) == {}
    tracker.log({"i": 1})
    tracker.close()
    assert [r["i"] for r in read_rows(db_path)] == [1]
