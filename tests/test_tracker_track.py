"""track() and wrap(): the row describing a call, results, errors, and argument unpacking."""

from __future__ import annotations

import dataclasses
import json
import warnings
from typing import Optional

import pytest
from conftest import read_rows, table_info

from xetrack_c import Tracker


def add(a, b=2):
    """Add two numbers."""
    return a + b


def fail(x):
    raise ValueError(f"bad input {x}")


def test_track_row_describes_the_call(db_path):
    tracker = Tracker(db_path, params={"model": "m"})
    assert tracker.track(add, args=[1], kwargs={"b": 3}) == 4
    row = tracker.latest
    assert list(row) == ["model", "function_name", "args", "kwargs", "error", "function_time",
                         "function_result", "timestamp", "track_id"]
    assert row["function_name"] == "add"
    assert row["args"] == "[1]"
    assert row["kwargs"] == "{'b': 3}"
    assert row["error"] == ""
    assert isinstance(row["function_time"], float) and row["function_time"] > 0
    assert row["function_result"] == 4
    tracker.close()
    (stored,) = read_rows(db_path)
    assert {k: stored[k] for k in ("function_name", "args", "kwargs", "error", "function_result", "model")} == {
        "function_name": "add", "args": "[1]", "kwargs": "{'b': 3}", "error": "",
        "function_result": 4, "model": "m",
    }
    assert stored["function_time"] == row["function_time"]
    assert table_info(db_path)["function_time"] == "REAL"


def test_track_defaults_to_no_arguments(db_path):
    tracker = Tracker(db_path)
    assert tracker.track(lambda: 5) == 5
    assert tracker.latest["args"] == "[]" and tracker.latest["kwargs"] == "{}"
    assert tracker.latest["function_name"] == "<lambda>"


def test_tuple_args_are_listed(db_path):
    tracker = Tracker(db_path)
    tracker.track(add, args=(1, 2))
    assert tracker.latest["args"] == "[1, 2]"


def test_dict_result_merges_into_the_row(db_path):
    tracker = Tracker(db_path)
    result = tracker.track(lambda: {"acc": 0.9, "n": 10})
    assert result == {"acc": 0.9, "n": 10}
    row = tracker.latest
    assert row["acc"] == 0.9 and row["n"] == 10
    assert "function_result" not in row
    tracker.close()
    stored = read_rows(db_path)[0]
    assert (stored["acc"], stored["n"]) == (0.9, 10)


@pytest.mark.parametrize(
    "result,stored",
    [(None, "None"), ([1, 2], "[1, 2]"), ("text", "text"), (2.5, 2.5), (True, 1), (b"ab", b"ab")],
)
def test_non_dict_results_go_to_function_result(db_path, result, stored):
    tracker = Tracker(db_path)
    assert tracker.track(lambda: result) == result
    tracker.close()
    assert read_rows(db_path)[0]["function_result"] == stored


def test_object_result_is_stored_as_str(db_path):
    class Answer:
        def __str__(self):
            return "forty-two"

    tracker = Tracker(db_path)
    answer = Answer()
    assert tracker.track(lambda: answer) is answer  # the caller still gets the object
    tracker.close()
    assert read_rows(db_path)[0]["function_result"] == "forty-two"


def test_per_call_params_come_last_and_win(db_path):
    tracker = Tracker(db_path, params={"model": "m"})
    tracker.track(lambda: {"score": 1}, params={"fold": 3, "score": 99})
    row = tracker.latest
    assert list(row)[-3:] == ["fold", "timestamp", "track_id"]
    assert row["score"] == 99 and row["fold"] == 3
    tracker.close()
    assert read_rows(db_path)[0]["fold"] == 3
    assert tracker.params == {"model": "m"}  # per-call params do not stick


def test_exception_is_logged_then_reraised(db_path):
    tracker = Tracker(db_path)
    with pytest.raises(ValueError, match="bad input 7"):
        tracker.track(fail, args=[7])
    tracker.close()
    (stored,) = read_rows(db_path)
    assert stored["error"] == "bad input 7"
    assert stored["function_name"] == "fail"
    # a call that raised has no result: NULL, not the text of a function returning None
    assert stored["function_result"] is None
    assert stored["error_type"] == "ValueError"


class ParseError(Exception):
    """A project's own exception class."""


def test_error_type_keeps_the_exception_class(db_path):
    tracker = Tracker(db_path, raise_on_error=False)
    tracker.track(add, args=[1])
    caught = {}

    def raising(exc):
        caught[type(exc)] = exc
        raise exc

    for exc in (ValueError("bad"), KeyError("k"), ParseError("line 3"), json_error()):
        assert tracker.track(raising, args=[exc]) is None
    tracker.track(lambda: None)  # returned None: the text 'None', as xetrack writes it
    tracker.close()
    rows = read_rows(db_path)
    assert [(r["error"], r["error_type"], r["function_result"]) for r in rows] == [
        ("", None, 3),
        ("bad", "ValueError", None),
        (str(caught[KeyError]), "KeyError", None),
        ("line 3", f"{__name__}.ParseError", None),
        (str(caught[json.JSONDecodeError]), "json.decoder.JSONDecodeError", None),
        ("", None, "None"),
    ]
    assert str(caught[KeyError]) == "'k'"
    # error_type sits beside error, created by the first call that raised
    names = list(table_info(db_path))
    assert names.index("error_type") > names.index("error")


def json_error() -> Exception:
    try:
        json.loads("{")
    except json.JSONDecodeError as exc:
        return exc
    raise AssertionError("json.loads('{') parsed")


def test_error_type_with_a_local_class_is_its_qualified_name(db_path):
    class LocalError(RuntimeError):
        pass

    def fails():
        raise LocalError("inner")

    with Tracker(db_path, raise_on_error=False) as tracker:
        tracker.track(fails)
        assert tracker.latest["error_type"] == (
            f"{__name__}.test_error_type_with_a_local_class_is_its_qualified_name."
            "<locals>.LocalError")
        assert tracker.latest["function_result"] is None


def test_exception_returns_none_without_raise_on_error(db_path):
    tracker = Tracker(db_path, raise_on_error=False)
    assert tracker.track(fail, args=[1]) is None
    assert tracker.latest["error"] == "bad input 1"
    tracker.close()
    assert read_rows(db_path)[0]["error"] == "bad input 1"


def test_wrap_tracks_every_call_and_keeps_name_and_doc(db_path):
    tracker = Tracker(db_path)
    wrapped = tracker.wrap(params={"tag": "w"})(add)
    assert wrapped.__name__ == "add"
    assert wrapped.__doc__ == "Add two numbers."
    assert wrapped(1) == 3
    assert wrapped(1, b=10) == 11
    tracker.close()
    rows = read_rows(db_path)
    assert [(r["args"], r["kwargs"], r["function_result"], r["tag"]) for r in rows] == [
        ("[1]", "{}", 3, "w"), ("[1]", "{'b': 10}", 11, "w"),
    ]


def test_wrap_as_decorator_reraises(db_path):
    tracker = Tracker(db_path)

    @tracker.wrap()
    def explode():
        raise KeyError("k")

    with pytest.raises(KeyError):
        explode()
    assert read_rows(db_path)[0]["function_name"] == "explode"


# ------------------------------------------------------------------ argument unpacking
@dataclasses.dataclass(frozen=True)
class Inner:
    x: int = 1
    y: str = "why"


@dataclasses.dataclass
class Config:
    lr: float = 0.01
    layers: int = 2
    inner: Inner = dataclasses.field(default_factory=Inner)
    note: Optional[str] = None


@dataclasses.dataclass(frozen=True)
class Frozen:
    k: int = 5


def train(cfg, frozen=None, plain=0):
    return {"ok": True}


def test_dataclasses_unpack_into_param_field_columns(db_path):
    tracker = Tracker(db_path)
    tracker.track(train, args=[Config()], kwargs={"frozen": Frozen(k=9)})
    row = tracker.latest
    assert row["cfg_lr"] == 0.01 and row["cfg_layers"] == 2
    assert row["cfg_inner_x"] == 1 and row["cfg_inner_y"] == "why"  # nested, recursively
    assert row["cfg_note"] is None
    assert row["frozen_k"] == 9
    assert "cfg_inner" not in row
    tracker.close()
    stored = read_rows(db_path)[0]
    assert (stored["cfg_lr"], stored["cfg_inner_x"], stored["cfg_inner_y"], stored["frozen_k"]) == (0.01, 1, "why", 9)
    decl = table_info(db_path)
    assert decl["cfg_lr"] == "REAL" and decl["cfg_inner_x"] == "INTEGER"


def test_positional_and_keyword_models_both_unpack(db_path):
    tracker = Tracker(db_path)
    tracker.track(train, args=[Config(lr=0.5), Frozen(k=1)])
    positional = tracker.latest
    tracker.track(train, kwargs={"cfg": Config(lr=0.7), "frozen": Frozen(k=2)})
    keyword = tracker.latest
    assert (positional["cfg_lr"], positional["frozen_k"]) == (0.5, 1)
    assert (keyword["cfg_lr"], keyword["frozen_k"]) == (0.7, 2)


def test_pydantic_models_unpack(db_path):
    pydantic = pytest.importorskip("pydantic")

    class Sub(pydantic.BaseModel):
        depth: int = 3

    class Settings(pydantic.BaseModel):
        name: str = "base"
        temperature: float = 0.2

    def run(settings):
        return 1

    tracker = Tracker(db_path)
    tracker.track(run, args=[Settings(name="s1")])
    tracker.track(run, kwargs={"settings": Settings(temperature=0.9)})
    tracker.close()
    rows = read_rows(db_path)
    assert (rows[0]["settings_name"], rows[0]["settings_temperature"]) == ("s1", 0.2)
    assert (rows[1]["settings_name"], rows[1]["settings_temperature"]) == ("base", 0.9)


def test_nested_pydantic_models_unpack_recursively(db_path):
    pydantic = pytest.importorskip("pydantic")

    class Sub(pydantic.BaseModel):
        depth: int = 3

    class Settings(pydantic.BaseModel):
        name: str = "base"
        sub: Sub = Sub()

    def run(settings):
        return 1

    tracker = Tracker(db_path)
    tracker.track(run, args=[Settings()])
    tracker.close()
    stored = read_rows(db_path)[0]
    assert stored["settings_sub_depth"] == 3
    assert "settings_sub" not in stored


def test_dataclass_nested_in_pydantic_model_and_back(db_path):
    pydantic = pytest.importorskip("pydantic")

    class Model(pydantic.BaseModel):
        alpha: float = 0.5

    @dataclasses.dataclass
    class Outer:
        model: Model = dataclasses.field(default_factory=Model)
        inner: Inner = dataclasses.field(default_factory=Inner)

    tracker = Tracker(db_path)
    tracker.track(lambda cfg: 0, args=[Outer()])
    tracker.close()
    stored = read_rows(db_path)[0]
    assert stored["cfg_model_alpha"] == 0.5
    assert stored["cfg_inner_x"] == 1


@dataclasses.dataclass(eq=False)
class Node:
    value: int = 0
    next: "Optional[Node]" = None


def test_self_referencing_dataclass_does_not_hang(db_path):
    node = Node(1)
    node.next = node
    tracker = Tracker(db_path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert tracker.track(lambda cfg: "done", args=[node]) == "done"
    assert tracker.latest["cfg_value"] == 1
    assert any("cfg_next" in str(w.message) for w in caught)
    tracker.close()
    assert read_rows(db_path)[0]["cfg_value"] == 1


def test_nesting_deeper_than_ten_levels_stops_with_a_warning(db_path):
    head = Node(0)
    node = head
    for i in range(1, 30):
        node.next = Node(i)
        node = node.next
    tracker = Tracker(db_path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        tracker.track(lambda cfg: None, args=[head])
    row = tracker.latest
    assert row["cfg_value"] == 0
    assert row["cfg" + "_next" * 9 + "_value"] == 9
    assert not any(k.startswith("cfg" + "_next" * 10) for k in row)
    assert any("10" in str(w.message) for w in caught)


def test_plain_values_are_not_unpacked(db_path):
    tracker = Tracker(db_path)
    tracker.track(train, args=[{"lr": 1}], kwargs={"plain": 3})
    assert not any(k.startswith("cfg_") or k.startswith("plain_") for k in tracker.latest)
