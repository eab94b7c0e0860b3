"""The result cache: keys, hits and misses, lineage, cache_force, exceptions, files."""

from __future__ import annotations

import collections
import dataclasses
import enum
import math
import os
import pathlib
import sqlite3
import warnings
from typing import Any, Dict, List

import numpy as np
import pydantic
import pytest
from conftest import read_rows

from xetrack_c import CorruptDatabaseError, Reader, Tracker
from xetrack_c.cache import (
    cache_key,
    delete_cache_by_track_id,
    delete_cache_entry,
    read_cache,
    scan_cache,
)

CALLS: List[Any] = []


def echo(value: Any) -> Any:
    CALLS.append(value)
    return value


def boxed(value: Any) -> List[Any]:
    CALLS.append(value)
    return [value]


def square(x: int) -> int:
    CALLS.append(x)
    return x * x


def boom(x: int) -> int:
    CALLS.append(x)
    raise ValueError(f"boom {x}")


def metrics(x: int) -> Dict[str, Any]:
    CALLS.append(x)
    return {"accuracy": x / 10, "label": f"run{x}"}


@dataclasses.dataclass(frozen=True)
class Frozen:
    lr: float
    layers: tuple = (1, 2)


@dataclasses.dataclass
class Mutable:
    lr: float


class Model(pydantic.BaseModel):
    name: str
    size: int = 3


class Color(enum.Enum):
    RED = 1
    BLUE = 2


class Level(enum.IntEnum):
    LOW = 1


Point = collections.namedtuple("Point", "x y")


@pytest.fixture(autouse=True)
def _reset_calls():
    CALLS.clear()


@pytest.fixture
def cache_dir(tmp_path) -> str:
    return str(tmp_path / "cache")


def _tracker(db_path: str, cache_dir: str, **kwargs: Any) -> Tracker:
    return Tracker(db_path, cache=cache_dir, **kwargs)


SUPPORTED = {
    "none": None,
    "true": True,
    "false": False,
    "zero": 0,
    "negative": -7,
    "huge_int": 2**100,
    "huge_negative": -(2**80) - 1,
    "float": 1.5,
    "nan": float("nan"),
    "negative_zero": -0.0,
    "inf": float("inf"),
    "complex": 1 + 2j,
    "str": "text",
    "empty_str": "",
    "unicode": "naïve — 日本",
    "lone_surrogate": "a\ud800b",
    "bytes": b"\x00\xffbytes",
    "bytearray": bytearray(b"abc"),
    "tuple": (1, "a", None),
    "list": [1, [2, [3]]],
    "dict": {"b": 2, "a": [1, 2], 3: "three"},
    "frozenset": frozenset({"x", "y", "z"}),
    "set": {1, 2, 3},
    "frozen_dataclass": Frozen(0.1),
    "pydantic": Model(name="m"),
    "int_array": np.arange(12, dtype=np.int64).reshape(3, 4),
    "float_array": np.linspace(0, 1, 7),
    "strided_array": np.arange(20)[::3],
    "fortran_array": np.asfortranarray(np.arange(6.0).reshape(2, 3)),
    "big_endian_array": np.arange(4, dtype=">i4"),
    "object_array": np.array(["a", None, 3], dtype=object),
    "datetime_array": np.array(["2024-01-01", "2024-06-30"], dtype="datetime64[D]"),
    "structured_array": np.array([(1, 2.0)], dtype=[("a", "<i4"), ("b", "<f8")]),
    "numpy_scalar": np.float32(0.25),
    "numpy_int": np.int64(5),
    "enum": Color.BLUE,
    "int_enum": Level.LOW,
    "path": pathlib.Path("/data/train.csv"),
    "namedtuple": Point(1, 2),
    "nested": {"cfg": (Frozen(0.2), [Color.RED, {"k": np.float64(1.0)}])},
}


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, np.ndarray):
        return isinstance(b, np.ndarray) and a.dtype == b.dtype and a.shape == b.shape and (
            np.array_equal(a, b, equal_nan=a.dtype.kind == "f"))
    if isinstance(a, float) and math.isnan(a):
        return isinstance(b, float) and math.isnan(b)
    if isinstance(a, float) and a == 0.0:
        return isinstance(b, float) and math.copysign(1, a) == math.copysign(1, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)) and not isinstance(a, Point):
        return type(a) is type(b) and len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return type(a) is type(b) and a == b


@pytest.mark.parametrize("name", list(SUPPORTED))
def test_every_supported_type_hits_after_a_miss(db_path, cache_dir, name):
    value = SUPPORTED[name]
    with _tracker(db_path, cache_dir) as tracker, warnings.catch_warnings():
        warnings.simplefilter("error")  # a supported type never warns
        (first,) = tracker.track(boxed, args=[value])
        (second,) = tracker.track(boxed, args=[value])
        key = tracker.cache_key(boxed, [value])
    assert len(CALLS) == 1, "the second call must be a hit"
    assert _same(value, first) and _same(value, second)
    assert key is not None and len(key) == 32
    rows = read_rows(db_path)
    assert [r["cache"] for r in rows] == ["", rows[0]["track_id"]]
    assert rows[1]["function_time"] == 0.0 and rows[1]["error"] == ""
    assert read_cache(cache_dir, key)["cache"] == rows[0]["track_id"]


@pytest.mark.parametrize(
    "a,b",
    [
        (1, 1.0), (1, True), (0, False), (0.0, -0.0), ("1", 1), ("a", b"a"), (b"a", bytearray(b"a")),
        ([1, 2], (1, 2)), ({1, 2}, frozenset({1, 2})), (frozenset({1, 2}), (1, 2)),
        ({"a": 1}, {"a": 1.0}), (Color.RED, 1), (Level.LOW, 1), (Color.RED, Color.BLUE),
        (Point(1, 2), (1, 2)), (pathlib.Path("a"), "a"), (None, "None"), ((), []),
        (np.arange(3, dtype=np.int32), np.arange(3, dtype=np.int64)),
        (np.arange(6).reshape(2, 3), np.arange(6).reshape(3, 2)),
        (np.float64(1.0), 1.0), (Frozen(0.1), Frozen(0.2)), (Model(name="a"), Model(name="b")),
        (2**64, 2**64 + 1), (-(2**64), 2**64), (1 + 0j, 1.0),
    ],
    ids=repr,
)
def test_different_values_get_different_keys(a, b):
    assert cache_key(echo, [a]) != cache_key(echo, [b])


@pytest.mark.parametrize(
    "a,b",
    [
        (float("nan"), -float("nan")),
        ({"a": 1, "b": 2}, {"b": 2, "a": 1}),
        ({3, 1, 2}, {1, 2, 3}),
        (np.arange(10)[::2], np.array([0, 2, 4, 6, 8])),
        (np.arange(4, dtype=">i8"), np.arange(4, dtype="<i8")),
        (np.asfortranarray(np.eye(3)), np.eye(3)),
        (Frozen(0.1), Frozen(0.1)),
        (pathlib.PurePosixPath("/a/b"), pathlib.Path("/a/b")),
    ],
    ids=repr,
)
def test_equal_values_share_a_key(a, b):
    assert cache_key(echo, [a]) == cache_key(echo, [b])


def test_key_covers_function_args_kwargs_params_and_tracker_params():
    base = cache_key(square, [1], {"k": 1}, {"p": 1}, {"t": 1})
    assert base == cache_key(square, (1,), {"k": 1}, {"p": 1}, {"t": 1})
    others = {
        cache_key(echo, [1], {"k": 1}, {"p": 1}, {"t": 1}),
        cache_key(square, [2], {"k": 1}, {"p": 1}, {"t": 1}),
        cache_key(square, [1], {"k": 2}, {"p": 1}, {"t": 1}),
        cache_key(square, [1], {"k": 1}, {"p": 2}, {"t": 1}),
        cache_key(square, [1], {"k": 1}, {"p": 1}, {"t": 2}),
        cache_key(square, [1], {"k": 1}, {"p": 1}, None),
    }
    assert base not in others and len(others) == 6
    # None and empty mean the same
    assert cache_key(square) == cache_key(square, [], {}, {}, {})


def test_key_is_pinned():
    """The encoding is versioned: a change that moves keys must bump the version tag."""
    key = cache_key(len, ["abc", 1, 2.5, None, (True,), {"k": b"v"}])
    assert key == "34296f1591967ab069d94b875e2366b1"


def test_partials_lambdas_and_methods_are_named_apart():
    import functools

    def outer():
        return lambda x: x

    first = lambda x: x  # noqa: E731
    second = lambda x: x + 1  # noqa: E731
    assert cache_key(first, [1]) != cache_key(second, [1])  # their lines differ
    assert cache_key(functools.partial(square, 1)) != cache_key(functools.partial(square, 2))
    assert cache_key(functools.partial(square, 1)) != cache_key(functools.partial(echo, 1))
    assert cache_key(outer()) == cache_key(outer())

    class Scaler:
        def __init__(self, k):
            self.k = k

        def scale(self, x):
            return self.k * x

    # As in xetrack, a bound method is named by its qualified name; the instance is not
    # part of the key.
    assert cache_key(Scaler(1).scale, [3]) == cache_key(Scaler(2).scale, [3])
    assert cache_key(Scaler(1).scale, [3]) != cache_key(square, [3])


def test_dict_result_and_dataclass_arguments_make_the_same_row_on_a_hit(db_path, cache_dir):
    with _tracker(db_path, cache_dir) as tracker:
        assert tracker.track(metrics, args=[3], params={"fold": 1}) == {"accuracy": 0.3, "label": "run3"}
        assert tracker.track(metrics, args=[3], params={"fold": 1}) == {"accuracy": 0.3, "label": "run3"}
        tracker.track(echo, args=[Frozen(0.5)])
        tracker.track(echo, args=[Frozen(0.5)])
    rows = read_rows(db_path)
    assert CALLS == [3, Frozen(0.5)]
    assert [(r["accuracy"], r["label"], r["fold"]) for r in rows[:2]] == [(0.3, "run3", 1)] * 2
    assert [r["cache"] for r in rows] == ["", rows[0]["track_id"], "", rows[0]["track_id"]]
    assert rows[2]["value_lr"] == rows[3]["value_lr"] == 0.5


def test_params_are_part_of_the_key(db_path, cache_dir):
    with _tracker(db_path, cache_dir, params={"model": "a"}) as tracker:
        tracker.track(square, args=[2], params={"fold": 1})
        tracker.track(square, args=[2], params={"fold": 2})
        tracker.track(square, args=[2], params={"fold": 1})
        tracker.set_param("model", "b")
        tracker.track(square, args=[2], params={"fold": 1})
    assert CALLS == [2, 2, 2]
    assert [r["cache"] != "" for r in read_rows(db_path)] == [False, False, True, False]


def test_unhashable_arguments_skip_the_cache_with_one_warning_per_type(db_path, cache_dir):
    class Opaque:
        pass

    with _tracker(db_path, cache_dir) as tracker, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(3):
            tracker.track(echo, args=[Opaque()])
        tracker.track(echo, kwargs={"value": Mutable(0.1)})
        tracker.track(echo, kwargs={"value": Mutable(0.1)})
        tracker.track(echo, args=[[1, {"deep": Opaque()}]])  # same type again: no new warning
        assert tracker.cache_key(echo, [Opaque()]) is None
    messages = [str(w.message) for w in caught]
    assert len(messages) == 2, messages
    assert "Opaque" in messages[0] and "args[0]" in messages[0] and "cacheable" in messages[0]
    assert "Mutable" in messages[1] and "frozen=True" in messages[1] and "kwargs['value']" in messages[1]
    assert len(CALLS) == 6  # every call ran
    rows = read_rows(db_path)
    assert "cache" not in rows[0]  # as xetrack: no lineage value for calls the cache skipped


def test_warnings_false_silences_the_cache(db_path, cache_dir):
    with _tracker(db_path, cache_dir, warnings=False) as tracker, warnings.catch_warnings():
        warnings.simplefilter("error")
        tracker.track(echo, args=[object()])
        tracker.track(lambda: (lambda: 0))  # an unpicklable-by-pickle result, cloudpickle takes it


def test_lineage_across_runs_and_delete_by_track_id(db_path, cache_dir):
    with _tracker(db_path, cache_dir, track_id="first-run") as first:
        first.track(square, args=[4])
        first.track(square, args=[5])
    with _tracker(db_path, cache_dir, track_id="second-run") as second:
        assert second.track(square, args=[4]) == 16
        second.track(square, args=[6])
    assert CALLS == [4, 5, 6]
    rows = {(r["track_id"], r["args"]): r["cache"] for r in read_rows(db_path)}
    assert rows[("second-run", "[4]")] == "first-run"
    assert rows[("second-run", "[6]")] == ""
    entries = dict(Reader.scan_cache(cache_dir))
    assert sorted(e["cache"] for e in entries.values()) == ["first-run", "first-run", "second-run"]
    assert {e["function_name"] for e in entries.values()} == {f"{__name__}.square"}
    assert all(e["created"][:2] == "20" for e in entries.values())
    assert Reader.delete_cache_by_track_id(cache_dir, "first-run") == 2
    assert Reader.delete_cache_by_track_id(cache_dir, "first-run") == 0
    assert [e["result"] for _, e in Reader.scan_cache(cache_dir)] == [36]


def test_cache_force_recomputes_and_overwrites(db_path, cache_dir):
    with _tracker(db_path, cache_dir, track_id="old") as tracker:
        tracker.track(square, args=[3])
    with _tracker(db_path, cache_dir, track_id="new") as tracker:
        assert tracker.track(square, args=[3], cache_force=True) == 9
        key = tracker.cache_key(square, [3])
        assert tracker.track(square, args=[3]) == 9
    assert CALLS == [3, 3]
    assert read_cache(cache_dir, key)["cache"] == "new"
    assert [r["cache"] for r in read_rows(db_path)] == ["", "", "new"]


def test_exceptions_are_never_cached(db_path, cache_dir):
    with _tracker(db_path, cache_dir) as tracker:
        for _ in range(2):
            with pytest.raises(ValueError, match="boom 1"):
                tracker.track(boom, args=[1])
        tracker.raise_on_error = False
        assert tracker.track(boom, args=[1]) is None
        assert len(tracker.cache) == 0
    assert CALLS == [1, 1, 1]
    rows = read_rows(db_path)
    assert [r["error"] for r in rows] == ["boom 1"] * 3 and [r["cache"] for r in rows] == [""] * 3


def test_unpicklable_result_is_returned_but_not_cached(db_path, cache_dir, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "cloudpickle", None)  # pickle alone cannot take a lock
    import threading

    def make_lock():
        CALLS.append(1)
        return threading.Lock()

    with _tracker(db_path, cache_dir) as tracker, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert tracker.track(make_lock) is not None
        assert tracker.track(make_lock) is not None
    assert len(CALLS) == 2
    assert any("cannot be pickled" in str(w.message) for w in caught)


def test_cloudpickle_takes_what_pickle_cannot(db_path, cache_dir):
    def make_adder(n):
        CALLS.append(n)
        return lambda x: x + n

    with _tracker(db_path, cache_dir) as tracker:
        tracker.track(make_adder, args=[2])
        adder = tracker.track(make_adder, args=[2])
    assert CALLS == [2] and adder(1) == 3


def test_stale_entry_is_recomputed_and_replaced(db_path, cache_dir):
    from cache_mac import default_key, rewrite_value

    with _tracker(db_path, cache_dir) as tracker:
        tracker.track(square, args=[7])
        key = tracker.cache_key(square, [7])
    # Authentic (a valid MAC under this user's key) but no longer unpicklable.
    rewrite_value(cache_dir, key, b"\x00\x11\x22\x33", secret=default_key())
    with pytest.raises(ValueError, match="cannot be unpickled"):
        read_cache(cache_dir, key)
    with _tracker(db_path, cache_dir, track_id="fixer") as tracker, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert tracker.track(square, args=[7]) == 49
    assert CALLS == [7, 7]
    assert any("cannot be unpickled" in str(w.message) for w in caught)
    assert read_cache(cache_dir, key) is not None and read_cache(cache_dir, key)["cache"] == "fixer"


def test_tracker_cache_key_finds_the_entry(db_path, cache_dir):
    with _tracker(db_path, cache_dir, params={"seed": 1}) as tracker:
        tracker.track(square, args=[8], kwargs={}, params={"fold": 0})
        key = tracker.cache_key(square, [8], {}, {"fold": 0})
    assert key == cache_key(square, [8], None, {"fold": 0}, {"seed": 1})
    assert read_cache(cache_dir, key)["result"] == 64
    assert delete_cache_entry(cache_dir, key) is True
    assert read_cache(cache_dir, key) is None


def test_read_paths_never_create_files(tmp_path):
    missing = tmp_path / "nowhere"
    assert read_cache(missing, "0" * 32) is None
    assert list(scan_cache(missing)) == []
    assert delete_cache_by_track_id(missing, "run") == 0
    assert delete_cache_entry(missing, "0" * 32) is False
    assert not missing.exists()
    empty = tmp_path / "empty"
    empty.mkdir()
    assert read_cache(empty, "0" * 32) is None and os.listdir(empty) == []


def test_cache_file_layout(db_path, cache_dir):
    with _tracker(db_path, cache_dir) as tracker:
        tracker.track(square, args=[1])
    path = os.path.join(cache_dir, "cache.db")
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        columns = [row[1] for row in conn.execute("PRAGMA table_info(cache)")]
        assert columns == ["key", "value", "track_id", "created", "function_name", "mac"]
    finally:
        conn.close()


def test_scan_pages_through_many_entries(db_path, cache_dir):
    with _tracker(db_path, cache_dir, durability="async") as tracker:
        for i in range(600):
            tracker.track(square, args=[i])
    results = sorted(entry["result"] for _, entry in scan_cache(cache_dir))
    assert results == sorted(i * i for i in range(600))


def test_not_a_cache_file_is_a_clear_error(db_path, tmp_path):
    garbage = tmp_path / "garbage"
    garbage.mkdir()
    (garbage / "cache.db").write_bytes(b"this is not a database" * 100)
    with pytest.raises(CorruptDatabaseError, match="cache.db.*delete it"):
        Tracker(db_path, cache=str(garbage))
    with pytest.raises(CorruptDatabaseError, match="cache.db"):
        read_cache(garbage, "0" * 32)
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    conn = sqlite3.connect(foreign / "cache.db")
    conn.execute("CREATE TABLE Cache (rowid INTEGER PRIMARY KEY, key BLOB, raw INTEGER)")
    conn.commit()
    conn.close()
    with pytest.raises(ValueError, match="not a xetrack_c result cache"):
        Tracker(db_path, cache=str(foreign))
    with pytest.raises(ValueError, match="not a xetrack_c result cache"):
        list(scan_cache(foreign))
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    with pytest.raises(NotADirectoryError, match="directory"):
        Tracker(db_path, cache=str(a_file))


def test_read_cache_rejects_a_bad_key_type(cache_dir):
    with pytest.raises(TypeError, match="key must be a str"):
        read_cache(cache_dir, 123)


def test_tracker_pickles_with_its_cache(db_path, cache_dir):
    import pickle

    with _tracker(db_path, cache_dir) as tracker:
        tracker.track(square, args=[9])
        clone = pickle.loads(pickle.dumps(tracker))
    try:
        assert clone.cache_path == cache_dir and clone.track(square, args=[9]) == 81
    finally:
        clone.close()
    assert CALLS == [9]


def test_closed_tracker_closes_its_cache(db_path, cache_dir):
    tracker = _tracker(db_path, cache_dir)
    cache = tracker.cache
    tracker.close()
    assert cache.closed
    with pytest.raises(ValueError, match="closed"):
        cache.get_raw("0" * 32)


def test_cache_off_by_default(db_path):
    with Tracker(db_path) as tracker:
        assert tracker.cache is None and tracker.cache_path is None
        tracker.track(square, args=[1])
        tracker.track(square, args=[1])
    assert CALLS == [1, 1] and "cache" not in read_rows(db_path)[0]


def test_xetracks_private_key_name_gives_the_key_reader_finds(tmp_path):
    # xetrack 0.7 scripts read an entry back with tracker._generate_cache_key(...)
    from xetrack_c import Reader

    tracker = Tracker(str(tmp_path / "t.db"), cache=str(tmp_path / "cache"))

    def multiply(x, y):
        return x * y

    assert tracker.track(multiply, args=[5, 7]) == 35
    key = tracker._generate_cache_key(multiply, [5, 7], {}, {})
    assert key == tracker.cache_key(multiply, [5, 7], {}, {}) and len(key) == 32
    entry = Reader.read_cache(str(tmp_path / "cache"), key)
    assert entry["result"] == 35 and entry["cache"] == tracker.track_id
    tracker.close()
