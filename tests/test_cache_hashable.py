"""Objects whose class defines ``__hash__`` as cache arguments (xetrack's Point test).

They are keyed by their class and pickled state, never by ``hash()``: equal objects hit,
different values miss even when their ``hash()`` is equal, and the key is the same in
another process with another string-hash seed.
"""

from __future__ import annotations

import datetime
import os
import subprocess
import sys
import uuid
import warnings
from typing import Any, List

import pytest
from conftest import child_env, read_rows

from xetrack_c import Tracker

CALLS: List[Any] = []


class Point:
    """xetrack's example: value semantics through __eq__ and __hash__."""

    def __init__(self, x: Any, y: Any) -> None:
        self.x = x
        self.y = y

    def __hash__(self) -> int:
        return hash((self.x, self.y))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Point) and (self.x, self.y) == (other.x, other.y)


class SlotPoint(Point):
    __slots__ = ("z",)

    def __init__(self, x: Any, y: Any, z: Any) -> None:
        super().__init__(x, y)
        self.z = z


class OnlyEq:
    """__eq__ without __hash__: unhashable, as in xetrack."""

    def __init__(self, x: int) -> None:
        self.x = x

    def __eq__(self, other: object) -> bool:
        return isinstance(other, OnlyEq) and self.x == other.x


class Holder:
    """Hashable, but holding a value the cache cannot encode."""

    def __init__(self) -> None:
        self.handle = object()

    def __hash__(self) -> int:
        return 1


class Stamp(datetime.date):
    """A Python subclass of a C type: its value lives where pickle's state does not show it."""

    def __hash__(self) -> int:
        return super().__hash__()


def norm(p: Point) -> float:
    CALLS.append(p)
    return float((p.x ** 2 + p.y ** 2) ** 0.5)


def echo(value: Any) -> Any:
    CALLS.append(value)
    return repr(value)


@pytest.fixture(autouse=True)
def _reset_calls() -> None:
    CALLS.clear()


@pytest.fixture
def tracker(tmp_path):
    with Tracker(str(tmp_path / "t.db"), cache=str(tmp_path / "cache")) as t:
        yield t


def test_equal_objects_hit_like_xetrack(tracker) -> None:
    assert tracker.track(norm, args=[Point(3, 4)]) == 5.0
    assert tracker.track(norm, args=[Point(3, 4)]) == 5.0  # another object, same value
    assert tracker.track(norm, args=[Point(6, 8)]) == 10.0
    assert len(CALLS) == 2
    rows = read_rows(tracker.db)
    assert [r["cache"] for r in rows] == ["", tracker.track_id, ""]


def test_equal_hash_different_value_is_a_miss(tracker) -> None:
    assert hash(Point(-1, 0)) == hash(Point(-2, 0))  # CPython: hash(-1) == hash(-2)
    assert tracker.track(norm, args=[Point(-1, 0)]) == 1.0
    assert tracker.track(norm, args=[Point(-2, 0)]) == 2.0  # xetrack would return 1.0
    assert len(CALLS) == 2
    assert tracker.cache_key(norm, [Point(-1, 0)]) != tracker.cache_key(norm, [Point(-2, 0)])


def test_class_and_slots_are_part_of_the_key(tracker) -> None:
    keys = {tracker.cache_key(echo, [value]) for value in (
        Point(1, 2), Point(2, 1), Point(1, (2,)), SlotPoint(1, 2, 3), SlotPoint(1, 2, 4))}
    assert None not in keys and len(keys) == 5
    assert tracker.cache_key(echo, [SlotPoint(1, 2, 3)]) == tracker.cache_key(echo, [SlotPoint(1, 2, 3)])


def test_standard_library_value_objects(tracker) -> None:
    first = uuid.UUID(int=7)
    tracker.track(echo, args=[first])
    tracker.track(echo, args=[uuid.UUID(int=7)])
    tracker.track(echo, args=[uuid.UUID(int=8)])
    assert CALLS == [first, uuid.UUID(int=8)]


def test_key_is_the_same_under_another_string_hash_seed(tracker, tmp_path) -> None:
    here = tracker.cache_key(norm, [Point("a", "b")], params={"fold": Point("c", 1)})
    script = (
        "import sys; sys.path.insert(0, sys.argv[1])\n"
        "import test_cache_hashable as m\n"
        "from xetrack_c import Tracker\n"
        "print(Tracker(Tracker.IN_MEMORY).cache_key("
        "m.norm, [m.Point('a', 'b')], params={'fold': m.Point('c', 1)}))\n"
    )
    keys = set()
    for seed in ("1", "2"):
        env = {**child_env(), "PYTHONHASHSEED": seed}
        out = subprocess.run([sys.executable, "-c", script, os.path.dirname(__file__)], env=env,
                             capture_output=True, text=True, timeout=60, check=True)
        keys.add(out.stdout.strip())
    assert keys == {here}


@pytest.mark.parametrize("make,name", [
    (lambda: OnlyEq(1), "OnlyEq"),  # unhashable
    (Holder, "builtins.object"),  # hashable, but its state holds an opaque object: named
    (lambda: Stamp(2024, 1, 2), "Stamp"),  # its value is in the C part
])
def test_objects_without_an_encodable_value_skip_the_cache(tracker, make, name) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        tracker.track(echo, args=[make()])
        tracker.track(echo, args=[make()])
        assert tracker.cache_key(echo, [make()]) is None
    assert len(CALLS) == 2
    assert any(name in str(w.message) for w in caught), [str(w.message) for w in caught]
    assert "cache" not in read_rows(tracker.db)[0]
