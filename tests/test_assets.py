"""Assets: objects logged by hash, in xetrack 0.7's assets/keys/counts tables.

Covers the round trip of arrays, dicts, objects and models; the row holding the hash;
deduplication and reference counts; removal; compression; that reading rows never
unpickles; every durability mode and log_batch; rows and assets sharing one transaction;
the xt assets commands; and files moving both ways with xetrack 0.7 (in a child
interpreter named by $XETRACK_PYTHON whose xetrack has sqlitedict, which its assets need).
"""

from __future__ import annotations

import ast
import base64
import os
import pickle
import sqlite3
import subprocess
import zlib
from decimal import Decimal
from fractions import Fraction
from typing import Any, Dict, List

import pytest
from conftest import child_env

from xetrack_c import Reader, StorageError, Tracker

cloudpickle = pytest.importorskip("cloudpickle")
xxhash = pytest.importorskip("xxhash")
np = pytest.importorskip("numpy")

UNPICKLED: List[str] = []  # names of Tripwire objects unpickled in this process


class Tripwire:
    """Records every time one is unpickled."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __setstate__(self, state: Dict[str, Any]) -> None:
        UNPICKLED.append(state["name"])
        self.__dict__.update(state)


class TinyModel:
    """A fitted-model stand-in: learned weights and a predict method."""

    def fit(self, x: Any, y: Any) -> "TinyModel":
        self.coef_ = np.linalg.lstsq(x, y, rcond=None)[0]
        return self

    def predict(self, x: Any) -> Any:
        return x @ self.coef_


def raw(db: str, sql: str, params: tuple = ()) -> list:
    conn = sqlite3.connect(db)
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()


def asset_key(digest: str) -> str:
    return base64.b64encode(pickle.dumps(digest, protocol=5)).decode("ascii")


def count_of(db: str, digest: str) -> int:
    rows = raw(db, 'SELECT value FROM "counts" WHERE key = ?', (digest,))
    return pickle.loads(rows[0][0]) if rows else 0


def blobs(db: str) -> int:
    return raw(db, 'SELECT count(*) FROM "assets"')[0][0]


def asset_tables(db: str) -> List[str]:
    return [n for (n,) in raw(db, "SELECT name FROM sqlite_master WHERE type = 'table' "
                                  "AND name IN ('assets', 'keys', 'counts') ORDER BY name")]


# ------------------------------------------------------------------------ round trips
def test_numpy_array_round_trips_exactly_and_the_row_holds_its_hash(db_path: str) -> None:
    vec = np.arange(2000) / 7
    tracker = Tracker(db_path)
    row = tracker.log({"vec": vec, "step": 1})
    digest = xxhash.xxh64(cloudpickle.dumps(vec)).hexdigest()
    assert row["vec"] == digest
    assert raw(db_path, 'SELECT vec, step FROM "default"') == [(digest, 1)]
    stored = raw(db_path, 'SELECT value FROM "assets" WHERE key = ?', (asset_key(digest),))
    assert stored[0][0] == cloudpickle.dumps(vec)
    back = tracker.get(digest)
    assert back.dtype == vec.dtype and np.array_equal(back, vec)
    assert np.array_equal(Reader(db_path).assets.get(digest), vec)


def test_objects_and_models_round_trip(db_path: str) -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(50, 3))
    model = TinyModel().fit(x, x @ np.array([1.0, -2.0, 0.5]))
    tracker = Tracker(db_path, params={"model_name": "tiny"})
    row = tracker.log({"model": model, "frac": Fraction(1, 3), "when": Decimal("2.50")})
    back = tracker.get(row["model"])
    assert isinstance(back, TinyModel)
    assert np.allclose(back.predict(x), model.predict(x))
    assert tracker.get(row["frac"]) == Fraction(1, 3)
    assert tracker.get(row["when"]) == Decimal("2.50")
    assert tracker.get("model").coef_.tolist() == model.coef_.tolist()  # by column name
    assert row["model_name"] == "tiny"


def test_a_dict_round_trips_through_the_manager_and_is_text_in_a_row(db_path: str) -> None:
    config = {"layers": [64, 32], "dropout": 0.1, "name": "mlp"}
    tracker = Tracker(db_path)
    digest = tracker.assets.insert("config", config)
    assert tracker.assets.get(digest) == config
    assert tracker.assets.get("config") == config
    # Logged in a row a dict is its text, as in xetrack: no asset.
    row = tracker.log({"cfg": config})
    assert row["cfg"] == str(config)
    assert blobs(db_path) == 1


def test_skip_insert_shows_objects_as_text() -> None:
    # A tracker that stores nothing has no asset to point a hash at.
    obj = Tripwire("s")
    row = Tracker(Tracker.SKIP_INSERT).log({"obj": obj})
    assert row["obj"] == str(obj)


def test_plain_values_stay_plain(db_path: str) -> None:
    import datetime as dt

    when = dt.datetime(2024, 5, 6, 7, 8, 9)
    row = Tracker(db_path).log({"f": np.float32(0.5), "i": np.int64(3), "when": when,
                                "items": [1, 2], "pair": (1, 2)})
    assert row["f"] == 0.5 and row["i"] == 3
    assert row["when"] == str(when)
    assert row["items"] == "[1, 2]" and row["pair"] == "(1, 2)"
    assert asset_tables(db_path) == []


def _model_pickling_to(size: int) -> TinyModel:
    model = TinyModel()
    model.payload = b"x" * 1000
    model.payload = b"x" * (1000 + size - len(cloudpickle.dumps(model)))
    assert len(cloudpickle.dumps(model)) == size
    return model


@pytest.mark.parametrize("durability", ["commit", "async"])
def test_large_objects_are_stored_whole(db_path: str, durability: str) -> None:
    # Pickles of 64 KiB and more are written into their pages in place: every byte, the
    # dedup of a second copy, and sizes around that threshold.
    big = np.random.default_rng(1).random(200_000)
    edges = {f"m{size}": _model_pickling_to(size) for size in (65_535, 65_536, 65_537)}
    tracker = Tracker(db_path, durability=durability)
    first = tracker.log({"big": big, **edges})
    tracker.log({"big": big.copy()})
    tracker.flush()
    for key, value in [("big", big), *edges.items()]:
        stored = raw(db_path, 'SELECT value FROM "assets" WHERE key = ?',
                     (asset_key(first[key]),))
        assert stored == [(cloudpickle.dumps(value),)], key
    assert count_of(db_path, first["big"]) == 2 and blobs(db_path) == 4
    assert np.array_equal(Reader(db_path).assets.get(first["big"]), big)
    tracker.close()


# ------------------------------------------------------------------------ counts
def test_the_same_object_twice_is_one_blob_with_count_two(db_path: str) -> None:
    tracker = Tracker(db_path)
    a = tracker.log({"w": np.ones(100)})
    b = tracker.log({"w": np.ones(100)})
    assert a["w"] == b["w"]
    assert blobs(db_path) == 1
    assert count_of(db_path, a["w"]) == 2
    assert dict(tracker.assets.counts) == {a["w"]: 2}
    assert dict(tracker.assets.keys) == {"w": a["w"]}


def test_remove_decrements_then_deletes(db_path: str) -> None:
    tracker = Tracker(db_path)
    digest = tracker.assets.insert("a", Fraction(2, 7))
    assert tracker.assets.insert("b", Fraction(2, 7)) == digest
    assert count_of(db_path, digest) == 2
    assert tracker.assets.remove("a") is True
    assert count_of(db_path, digest) == 1 and blobs(db_path) == 1
    assert tracker.assets.remove("b") is True
    assert count_of(db_path, digest) == 0 and blobs(db_path) == 0
    assert tracker.assets.remove("b") is False


def test_a_standalone_manager_inserts_what_a_tracker_reads(tmp_path: Any) -> None:
    from xetrack_c.assets import AssetsManager

    db = str(tmp_path / "standalone.db")
    manager = AssetsManager(db)
    assert len(manager) == 0 and manager.get("nothing") is None
    first = manager.insert("cfg", Fraction(4, 5))
    assert manager.insert("cfg2", Fraction(4, 5)) == first
    assert count_of(db, first) == 2 and blobs(db) == 1
    tracker = Tracker(db, durability="async")
    row = tracker.log({"cfg": Fraction(4, 5)})
    assert row["cfg"] == first
    assert tracker.assets.insert("cfg3", Fraction(4, 5)) == first  # after the queued row
    assert count_of(db, first) == 4
    assert tracker.get("cfg3") == Fraction(4, 5)
    tracker.close()


def test_remove_asset_deletes_it_and_clears_the_column(db_path: str) -> None:
    tracker = Tracker(db_path)
    row = tracker.log({"o1": Fraction(1, 2), "o2": Fraction(1, 3)})
    assert len(tracker.assets) == 2
    assert tracker.remove_asset(row["o1"], "o1") is True
    assert raw(db_path, 'SELECT o1, o2 FROM "default"') == [(None, row["o2"])]
    assert tracker.get(row["o1"]) is None
    assert count_of(db_path, row["o1"]) == 0
    assert dict(tracker.assets.keys) == {"o2": row["o2"]}
    assert tracker.remove_asset(row["o1"], "o1") is False
    assert Reader(db_path).remove_asset(row["o2"], None, remove_keys=False) is True
    assert len(Reader(db_path).assets) == 0
    assert count_of(db_path, row["o2"]) == 1  # kept, as remove_keys=False keeps it in xetrack


# ------------------------------------------------------------------------ compression
def test_compress_stores_zlib_and_reads_back(db_path: str) -> None:
    vec = np.zeros(10_000)
    tracker = Tracker(db_path, compress=True)
    digest = tracker.log({"vec": vec})["vec"]
    assert digest == xxhash.xxh64(cloudpickle.dumps(vec)).hexdigest()  # of the pickle
    (blob,), = raw(db_path, 'SELECT value FROM "assets"')
    assert zlib.decompress(blob) == cloudpickle.dumps(vec)
    assert len(blob) < len(cloudpickle.dumps(vec)) // 10
    assert np.array_equal(tracker.get(digest), vec)
    assert np.array_equal(Reader(db_path).assets.get(digest), vec)


# ------------------------------------------------------------------------ safety
def test_reading_rows_never_unpickles(db_path: str) -> None:
    UNPICKLED.clear()
    tracker = Tracker(db_path)
    digest = tracker.log({"obj": Tripwire("t1"), "n": 1})["obj"]
    frames = [tracker.to_df(), tracker.head(), tracker.tail(), Reader(db_path).to_df()]
    assert all(list(df["obj"]) == [digest] for df in frames)
    assert tracker.latest["obj"] == digest
    assert list(Reader(db_path).assets.keys.items()) == [("obj", digest)]
    assert UNPICKLED == []
    assert tracker.get(digest).name == "t1"
    assert UNPICKLED == ["t1"]


def test_keys_pickles_are_read_without_loading_classes(db_path: str) -> None:
    Tracker(db_path).log({"x": Fraction(1, 9)})
    evil = pickle.dumps(Tripwire("evil"), protocol=5)
    conn = sqlite3.connect(db_path)
    conn.execute('UPDATE "keys" SET value = ?', (evil,))
    conn.commit()
    conn.close()
    UNPICKLED.clear()
    with pytest.raises(pickle.UnpicklingError, match="refused to load"):
        Reader(db_path).assets.keys.items()
    assert UNPICKLED == []


def test_missing_extra_is_a_clear_error_not_a_str(db_path: str, run_py: Any) -> None:
    proc = run_py(f"""
        import sys
        sys.modules["cloudpickle"] = None  # as if not installed
        from xetrack_c import Tracker
        t = Tracker({db_path!r})
        t.log({{"n": 1}})
        try:
            t.log({{"obj": object()}})
        except ImportError as exc:
            print("ERR", exc)
        print("ROWS", len(t))
    """)
    assert "pip install cloudpickle xxhash (the `assets` extra" in proc.stdout
    assert "ROWS 1" in proc.stdout


# ------------------------------------------------------------------------ durability
@pytest.mark.parametrize("durability", ["commit", "fsync", "async"])
def test_every_durability_writes_rows_and_assets(db_path: str, durability: str) -> None:
    tracker = Tracker(db_path, durability=durability)
    rows = [tracker.log({"i": i, "obj": Fraction(i % 3, 7)}) for i in range(30)]
    tracker.flush()
    assert raw(db_path, 'SELECT count(*) FROM "default"') == [(30,)]
    assert blobs(db_path) == 3
    for i in range(3):
        assert count_of(db_path, rows[i]["obj"]) == 10
        assert Reader(db_path).assets.get(rows[i]["obj"]) == Fraction(i, 7)
    tracker.close()


def test_the_async_queue_is_bounded_by_bytes_too(db_path: str, run_py: Any) -> None:
    # While another connection holds the write lock, the writer thread waits with the rows
    # it took; log() may queue 64 MiB more of 4 MiB rows, then waits in turn.
    proc = run_py(f"""
        import sqlite3, threading, time
        from xetrack_c import Tracker
        tracker = Tracker({db_path!r}, durability="async")
        tracker.log({{"i": -1, "blob": b""}})
        tracker.flush()
        blocker = sqlite3.connect({db_path!r}, isolation_level=None)
        blocker.execute("BEGIN IMMEDIATE")
        returned = []
        def produce():
            for i in range(40):
                tracker.log({{"i": i, "blob": bytes([i]) * (4 << 20)}})
                returned.append(i)
        thread = threading.Thread(target=produce)
        thread.start()
        seen = -1
        while len(returned) != seen:  # until log() stops returning
            seen = len(returned)
            time.sleep(0.5)
        print("BLOCKED_AFTER", len(returned), thread.is_alive())
        blocker.execute("COMMIT")
        thread.join(60)
        tracker.close()
        print("ROWS", len(returned))
    """, timeout=120)
    blocked = proc.stdout.split("BLOCKED_AFTER ")[1].split()
    assert blocked[1] == "True" and 2 <= int(blocked[0]) <= 17, proc.stdout
    assert "ROWS 40" in proc.stdout
    assert raw(db_path, 'SELECT count(*) FROM "default"') == [(41,)]


def test_log_batch_writes_assets_with_the_rows(db_path: str) -> None:
    tracker = Tracker(db_path)
    last = tracker.log_batch([{"obj": Fraction(1, 5)}, {"obj": Fraction(1, 5)},
                              {"obj": Fraction(2, 5)}])
    assert tracker.get(last["obj"]) == Fraction(2, 5)
    assert blobs(db_path) == 2
    assert count_of(db_path, xxhash.xxh64(cloudpickle.dumps(Fraction(1, 5))).hexdigest()) == 2


def test_track_params_go_to_assets(db_path: str) -> None:
    tracker = Tracker(db_path)
    tracker.track(lambda a: a * 2, args=[3], params={"model": Fraction(3, 4)})
    (digest,), = raw(db_path, 'SELECT model FROM "default"')
    assert tracker.get(digest) == Fraction(3, 4)


def test_objects_are_refused_inside_a_remote_task(db_path: str) -> None:
    from xetrack_c.run.remote_buffer import remote_task

    with remote_task(os.path.abspath(db_path)) as buffer:
        tracker = Tracker(db_path)
        with pytest.raises(ValueError, match="inside a task run on an executor"):
            tracker.log({"model": Fraction(1, 2)})
        tracker.log({"n": 1})
        chunks = buffer.collect()
    assert [chunk.rows for chunk in chunks] == [[(1,)]]
    assert not os.path.exists(db_path)  # the rows travel; nothing was written here


# ------------------------------------------------------------------------ one transaction
def _refuse_inserts(db: str, table: str) -> None:
    conn = sqlite3.connect(db)
    conn.execute(f'CREATE TRIGGER refuse BEFORE INSERT ON "{table}" '
                 "BEGIN SELECT RAISE(ABORT, 'refused by test'); END")
    conn.commit()
    conn.close()


def test_a_failing_row_leaves_no_asset(db_path: str) -> None:
    tracker = Tracker(db_path)
    tracker.log({"n": 0})
    _refuse_inserts(db_path, "default")
    with pytest.raises(StorageError, match="refused by test"):
        tracker.log({"obj": Fraction(5, 6)})
    with pytest.raises(StorageError, match="refused by test"):
        tracker.log({"big": np.ones(100_000)})  # a large one, written in place
    assert asset_tables(db_path) == []  # even the tables' creation was rolled back
    assert raw(db_path, 'SELECT count(*) FROM "default"') == [(1,)]


def test_a_failing_asset_leaves_no_row(db_path: str) -> None:
    tracker = Tracker(db_path)
    first = tracker.log({"obj": Fraction(1, 6)})
    _refuse_inserts(db_path, "counts")
    with pytest.raises(StorageError, match="refused by test"):
        tracker.log_batch([{"n": 1}, {"obj": Fraction(1, 6)}, {"obj": Fraction(2, 6)}])
    assert raw(db_path, 'SELECT count(*) FROM "default"') == [(1,)]
    assert blobs(db_path) == 1
    assert count_of(db_path, first["obj"]) == 1


def test_a_corrupt_count_fails_the_row_instead_of_resetting_it(db_path: str) -> None:
    tracker = Tracker(db_path)
    digest = tracker.log({"obj": Fraction(1, 8)})["obj"]
    conn = sqlite3.connect(db_path)
    conn.execute('UPDATE "counts" SET value = ?', (b"not a pickle",))
    conn.commit()
    conn.close()
    with pytest.raises(StorageError, match="not a pickled count"):
        tracker.log({"obj": Fraction(1, 8)})
    assert raw(db_path, 'SELECT count(*) FROM "default"') == [(1,)]
    assert raw(db_path, 'SELECT value FROM "counts" WHERE key = ?', (digest,)) == [(b"not a pickle",)]


@pytest.mark.parametrize("count", [1, 255, 256, 65_535, 65_536, 2**31 - 1, 2**31, 2**40])
def test_counts_are_pickled_as_python_pickles_them(db_path: str, count: int) -> None:
    tracker = Tracker(db_path)
    digest = tracker.log({"obj": Fraction(1, 11)})["obj"]
    conn = sqlite3.connect(db_path)
    conn.execute('UPDATE "counts" SET value = ?', (pickle.dumps(count - 1, protocol=5),))
    conn.commit()
    conn.close()
    tracker.log({"obj": Fraction(1, 11)})
    (stored,), = raw(db_path, 'SELECT value FROM "counts" WHERE key = ?', (digest,))
    assert stored == pickle.dumps(count, protocol=5)


def test_a_pickle_too_long_for_sqlite_is_refused_before_writing(db_path: str) -> None:
    tracker = Tracker(db_path)
    tracker._set_length_limit(10_000)
    with pytest.raises(ValueError, match="pickled value of 'vec'"):
        tracker.log({"vec": np.zeros(5_000)})
    assert asset_tables(db_path) == []


# ------------------------------------------------------------------------ xt assets
def test_xt_assets_ls_export_delete(db_path: str, xt: Any, tmp_path: Any) -> None:
    tracker = Tracker(db_path)
    row = tracker.log({"o1": Fraction(1, 2), "o2": Fraction(1, 3)})
    tracker.close()
    table = xt.ok("assets", "ls", db_path).table()
    assert table == [{"key": "o1", "hash": row["o1"]}, {"key": "o2", "hash": row["o2"]}]
    assert xt.ok("assets", "ls", db_path, "--json").json() == [
        {"key": "o1", "hash": row["o1"]}, {"key": "o2", "hash": row["o2"]}]
    out = tmp_path / "o1.pkl"
    xt.ok("assets", "export", db_path, row["o1"], str(out))
    assert cloudpickle.loads(out.read_bytes()) == Fraction(1, 2)
    xt.ok("assets", "delete", db_path, row["o1"], "--column", "o1")
    assert raw(db_path, 'SELECT o1, o2 FROM "default"') == [(None, row["o2"])]
    assert len(Reader(db_path).assets) == 1
    assert "no asset" in xt.fails("assets", "delete", db_path, row["o1"]).err
    assert "no asset" in xt.fails("assets", "export", db_path, "0123456789abcdef", str(out)).err
    xt.usage_fails("assets", "frobnicate", db_path)


# ------------------------------------------------------------------------ xetrack 0.7
def _xetrack_python() -> str:
    for python in (os.environ.get("XETRACK_PYTHON", ""), "/opt/peers/bin/python"):
        if python and os.path.exists(python):
            proc = subprocess.run([python, "-c", "import xetrack.assets, sqlitedict"],
                                  env=child_env(), capture_output=True, timeout=120)
            if proc.returncode == 0:
                return python
    pytest.skip("no interpreter with xetrack 0.7 and sqlitedict (which xetrack's assets "
                "need): set XETRACK_PYTHON to one")


@pytest.fixture(scope="module")
def xetrack_python() -> str:
    return _xetrack_python()


def run_peer(python: str, tmp_path: Any, body: str) -> Any:
    script = tmp_path / "peer.py"
    script.write_text("from fractions import Fraction\nfrom decimal import Decimal\n" + body)
    env = child_env()
    env["PYTHONPATH"] = os.environ.get("PYTHONPATH", "")  # xetrack's own, not xetrack_c
    proc = subprocess.run([python, str(script)], capture_output=True, text=True, timeout=120,
                          env=env, cwd=str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    return ast.literal_eval(proc.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("compress", [False, True])
def test_xetrack_reads_our_assets(db_path: str, tmp_path: Any, xetrack_python: str,
                                  compress: bool) -> None:
    tracker = Tracker(db_path, compress=compress)
    a = tracker.log({"frac": Fraction(1, 3), "dec": Decimal("1.5")})
    tracker.log({"frac": Fraction(1, 3)})
    tracker.close()
    got = run_peer(xetrack_python, tmp_path, f"""
from xetrack import Reader
from xetrack.assets import AssetsManager
m = AssetsManager({db_path!r}, compress={compress!r})
df = Reader({db_path!r}).to_df()
print(repr([list(df["frac"]), str(m.get({a["frac"]!r})), str(m.get("dec")),
            dict(m.counts.items()), dict(m.keys.items())]))
""")
    assert got == [[a["frac"], a["frac"]], "1/3", "1.5", {a["frac"]: 2, a["dec"]: 1},
                   {"frac": a["frac"], "dec": a["dec"]}]


def test_we_read_and_extend_xetracks_assets(db_path: str, tmp_path: Any,
                                            xetrack_python: str) -> None:
    hashes = run_peer(xetrack_python, tmp_path, f"""
from xetrack import Tracker
t = Tracker({db_path!r})
r = t.log({{"frac": Fraction(2, 3), "dec": Decimal("0.25")}})
t.log({{"frac": Fraction(2, 3)}})
print(repr([r["frac"], r["dec"]]))
""")
    frac, dec = hashes
    reader = Reader(db_path)
    assert reader.assets.get(frac) == Fraction(2, 3)
    assert reader.assets.get("dec") == Decimal("0.25")
    assert dict(reader.assets.counts) == {frac: 2, dec: 1}
    # The same object logged here dedups against xetrack's blob (same pickle, same hash).
    row = Tracker(db_path).log({"frac": Fraction(2, 3)})
    assert row["frac"] == frac
    assert blobs(db_path) == 2 and count_of(db_path, frac) == 3
    got = run_peer(xetrack_python, tmp_path, f"""
from xetrack import Reader
r = Reader({db_path!r})
ok = r.remove_asset({dec!r}, "dec")
print(repr([r.assets.counts[{frac!r}], len(r.assets), ok]))
""")
    assert got == [3, 1, True]
    assert Reader(db_path).assets.get(dec) is None
