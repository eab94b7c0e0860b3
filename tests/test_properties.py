"""Property tests: what a Tracker writes is what xetrack's rules say, for any input.

Rows are read back with Python's own ``sqlite3`` module, so the file is checked, not the
tracker's view of it. The expected row comes from a small model of the rules in DESIGN.md
section 2 (the rules of xetrack 0.7):

- keys: every character outside ``[A-Za-z0-9_]`` becomes ``_``, then the first 64 are kept;
  names that differ only in case are one column (SQLite's rule), spelled as first seen;
  when two keys of one row sanitise to the same name, the column keeps the first key's
  place and the last key's value; ``track_id`` and
  ``timestamp`` are the tracker's own and a logged value for them is ignored;
- values: None -> NULL, bool -> 0/1, int -> INTEGER, float -> REAL (NaN is NULL in SQLite),
  str -> TEXT, bytes/bytearray -> BLOB bytes, dict/list/tuple -> ``str(value)``;
- the declared type of a new column: int/bool -> INTEGER, float -> REAL, bytearray -> BLOB,
  anything else TEXT, fixed by the first value seen; SQLite's column affinity then applies
  to later values of another type.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import sqlite3
import tempfile
import warnings
from pathlib import Path
from typing import Any, Dict, List, Tuple

import pytest
from conftest import read_rows, table_info
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from xetrack_c import Tracker, _core

pytestmark = pytest.mark.slow  # left out of the jobs that re-run the suite (.ci/run)

KEY_OUTSIDE = re.compile(r"[^A-Za-z0-9_]")
OWN_COLUMNS = ("track_id", "timestamp")
INT64 = (-(2**63), 2**63 - 1)

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Text SQLite and UTF-8 can hold: no lone surrogates (they raise UnicodeEncodeError).
text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=30)
keys = st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=80)
scalars = (
    st.none()
    | st.booleans()
    | st.integers(*INT64)
    | st.floats(allow_nan=True, allow_infinity=True)
    | text
    | st.binary(max_size=20)
    | st.binary(max_size=20).map(bytearray)
)
containers = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | text,
    lambda inner: st.lists(inner, max_size=4)
    | st.tuples(inner, inner)
    | st.dictionaries(text, inner, max_size=4),
    max_leaves=8,
).filter(lambda v: isinstance(v, (list, tuple, dict)))
values = scalars | containers


def sanitise(key: str) -> str:
    return KEY_OUTSIDE.sub("_", key)[:64]


def bound(value: Any) -> Any:
    """The value the tracker hands SQLite for a logged value."""
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, bytearray):
        return bytes(value)
    if isinstance(value, (list, tuple, dict)):
        return str(value)
    return value


_AFFINITY = sqlite3.connect(":memory:")


def stored(value: Any, decl: str = "") -> Any:
    """What Python's sqlite3 reads back for ``value`` stored in a column declared ``decl``.

    SQLite itself applies the column's affinity (a bool in a TEXT column reads back as
    ``'0'``), so the model asks an in-memory SQLite rather than re-implementing it.
    """
    decl = decl or declared(value)
    _AFFINITY.execute(f"CREATE TABLE IF NOT EXISTS t_{decl} (v {decl})")
    _AFFINITY.execute(f"DELETE FROM t_{decl}")
    _AFFINITY.execute(f"INSERT INTO t_{decl} VALUES (?)", (bound(value),))
    return _AFFINITY.execute(f"SELECT v FROM t_{decl}").fetchone()[0]


def declared(value: Any) -> str:
    if isinstance(value, bool):
        return "BOOLEAN"
    if isinstance(value, int):
        return "INTEGER"
    if isinstance(value, float):
        return "REAL"
    if isinstance(value, bytearray):
        return "BLOB"
    return "TEXT"


def model(row: Dict[str, Any]) -> Dict[str, Tuple[str, Any]]:
    """Column name -> (declared type, value) for one logged row.

    Keys are handled in order; the first key that names a column creates it (typed by its
    value), the last one gives the value, and the column keeps its first place, as in
    xetrack 0.7. SQLite column names ignore case, so keys that differ only in case share
    the column of the first spelling (docs/tracker.md); ``TRACK_ID`` is ``track_id``.
    """
    out: Dict[str, Tuple[str, Any]] = {}
    spelling: Dict[str, str] = {}
    for key, value in row.items():
        name = sanitise(key)
        if name.lower() in OWN_COLUMNS:
            continue
        name = spelling.setdefault(name.lower(), name)
        out[name] = (out[name][0] if name in out else declared(value), value)
    return out


def returned_order(row: Dict[str, Any]) -> List[str]:
    """Key order of the row ``log()`` returns: as xetrack builds it, a logged
    ``track_id``/``timestamp`` key holds its place and gets the tracker's value."""
    order: List[str] = []
    for name in model_names(row):
        if name not in order:
            order.append(name)
    return order + [own for own in ("timestamp", "track_id") if own not in order]


def model_names(row: Dict[str, Any]) -> List[str]:
    spelling: Dict[str, str] = {}
    names = []
    for key in row:
        name = sanitise(key)
        lower = name.lower()
        names.append(lower if lower in OWN_COLUMNS else spelling.setdefault(lower, name))
    return names


def same(a: Any, b: Any) -> bool:
    """Equality that also holds for -0.0/0.0 pairs and compares types (1 is not True)."""
    return type(a) is type(b) and (a == b or (isinstance(a, float) and math.isnan(a) and math.isnan(b)))


@SETTINGS
@given(st.dictionaries(keys, values, min_size=1, max_size=8), text)
def test_any_row_reads_back_as_xetrack_rules_say(row, track_id):
    expected = model(row)
    assume(expected)
    with tempfile.TemporaryDirectory() as tmp:
        db = str(Path(tmp) / "p.db")
        with Tracker(db, track_id=track_id or None, warnings=False) as tracker:
            returned = tracker.log(row)
            tid = tracker.track_id
        assert list(returned) == returned_order(row)
        assert returned["track_id"] == tid

        (got,) = read_rows(db)
        assert got.pop("track_id") == tid
        assert got.pop("timestamp") == returned["timestamp"]
        assert list(got) == list(expected)
        types = table_info(db)
        for name, (decl, value) in expected.items():
            assert types[name] == decl, (name, value, types[name])
            assert same(got[name], stored(value, decl)), (name, value, got[name])


# Several rows with schema growth: each key keeps one kind of value (so SQLite's column
# affinity never converts one), rows carry any subset of the keys, and None may appear
# once a key's column exists.
KINDS = {
    "int": st.integers(*INT64) | st.booleans(),
    "float": st.floats(allow_nan=False),
    "text": text,
    "blob": st.binary(max_size=20),
    "repr": containers,
}


@st.composite
def runs(draw) -> Tuple[Dict[str, str], List[Dict[str, Any]]]:
    names = draw(st.lists(st.from_regex(r"[a-z][a-z0-9_]{0,12}", fullmatch=True),
                          min_size=1, max_size=6, unique=True))
    names = [n for n in names if n not in OWN_COLUMNS]
    assume(names)
    kinds = {name: draw(st.sampled_from(sorted(KINDS))) for name in names}
    rows: List[Dict[str, Any]] = []
    seen: set = set()
    for _ in range(draw(st.integers(1, 8))):
        chosen = draw(st.lists(st.sampled_from(names), min_size=1, unique=True))
        row = {}
        for name in chosen:
            if name in seen and draw(st.booleans()) and draw(st.booleans()):
                row[name] = None
            else:
                row[name] = draw(KINDS[kinds[name]])
        seen.update(chosen)
        rows.append(row)
    return kinds, rows


@SETTINGS
@given(runs(), st.booleans())
def test_rows_with_growing_schema_read_back_exactly(run, batch):
    _, rows = run
    with tempfile.TemporaryDirectory() as tmp:
        db = str(Path(tmp) / "p.db")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Tracker(db, track_id="prop", warnings=False) as tracker:
                if batch:
                    tracker.log_batch(rows)
                else:
                    for row in rows:
                        tracker.log(row)
        got = read_rows(db)
    assert len(got) == len(rows)
    for logged, back in zip(rows, got, strict=True):
        for name, value in back.items():
            if name in OWN_COLUMNS:
                continue
            want = stored(logged[name]) if name in logged else None
            assert same(value, want), (name, logged.get(name), value)


# ------------------------------------------------------------------ canonical JSON
def python_json(value: Any, **kw: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True, **kw)


any_text = st.text(max_size=20)  # surrogates included: json escapes them
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | any_text,
    lambda inner: st.lists(inner, max_size=5)
    | st.tuples(inner, inner)
    | st.dictionaries(any_text, inner, max_size=5),
    max_leaves=30,
)


@settings(max_examples=300, deadline=None)
@given(json_values)
def test_canonical_json_and_its_digest_equal_pythons(value):
    expected = python_json(value)
    assert _core.canonical_json(value) == expected
    assert _core.canonical_sha256(value) == hashlib.sha256(expected.encode("ascii")).digest()


class Opaque:
    def __init__(self, tag: int) -> None:
        self.tag = tag

    def __str__(self) -> str:
        return f"opaque-{self.tag}"


with_objects = st.recursive(
    st.none() | st.integers() | any_text | st.integers().map(Opaque),
    lambda inner: st.lists(inner, max_size=4)
    | st.dictionaries(st.integers() | any_text | st.booleans() | st.none(), inner, max_size=4),
    max_leaves=20,
)


def str_keys(value: Any) -> Any:
    """``value`` with dict keys as str(key), as ``canonical_json(..., str_keys=True)`` sees it."""
    if isinstance(value, dict):
        return {str(k): str_keys(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [str_keys(v) for v in value]
    return value


@settings(max_examples=200, deadline=None)
@given(with_objects)
def test_canonical_json_with_default_and_str_keys_equals_pythons(value):
    # str(key) can make two keys equal (1 and "1"); json.dumps then writes both, so
    # only key sets that stay distinct are compared.
    def distinct(v: Any) -> bool:
        if isinstance(v, dict):
            return len({str(k) for k in v}) == len(v) and all(distinct(x) for x in v.values())
        if isinstance(v, list):
            return all(distinct(x) for x in v)
        return True

    assume(distinct(value))
    assert _core.canonical_json(value, str, True) == python_json(str_keys(value), default=str)
