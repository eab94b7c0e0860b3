"""Seeding: SHA-256 and canonical JSON in C, seed derivation, scoped global seeding."""

from __future__ import annotations

import dataclasses
import enum
import hashlib
import inspect
import json
import math
import os
import pathlib
import random
import subprocess
import sys
import textwrap
import types
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from xetrack_c import _core, seeding
from xetrack_c.seeding import (
    SeedPolicy,
    derive_seed,
    hash_identifier,
    make_rng,
    reproducible_seed,
)

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]


def python_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def reference_seed(payload: Any) -> int:
    """The derivation written out with the standard library."""
    digest = hashlib.sha256(python_json(payload).encode("utf-8")).hexdigest()
    return int(digest[:16], 16) % (2**31 - 1)


def reference_jsonable(value: Any) -> Any:
    """design-research-experiments' value conversion, restated for comparison."""
    if value is None:
        return None
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, (str, int, float, bool)):
        return value
    if isinstance(value, dict):
        return {str(k): reference_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [reference_jsonable(v) for v in value]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return reference_jsonable(dataclasses.asdict(value))
    return str(value)


# ---- SHA-256 ---------------------------------------------------------------------


def test_sha256_matches_hashlib_for_every_length_up_to_300():
    data = bytes(random.Random(1).getrandbits(8) for _ in range(300))
    for n in range(301):
        assert _core.sha256(data[:n]) == hashlib.sha256(data[:n]).digest(), n


def test_sha256_known_vectors():
    assert _core.sha256(b"").hex() == (
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    )
    assert _core.sha256(b"abc").hex() == (
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    )


def test_sha256_of_one_megabyte_matches_hashlib():
    data = os.urandom(1 << 20)
    assert _core.sha256(data) == hashlib.sha256(data).digest()


@pytest.mark.parametrize("chunk_size", [1, 3, 55, 56, 63, 64, 65, 127, 1000])
def test_sha256_incremental_updates_give_the_one_shot_digest(chunk_size):
    data = os.urandom(5000)
    assert _core.sha256(data, chunk_size) == hashlib.sha256(data).digest()


def test_sha256_accepts_buffers_and_rejects_text():
    data = b"xetrack" * 100
    expected = hashlib.sha256(data).digest()
    assert _core.sha256(bytearray(data)) == expected
    assert _core.sha256(memoryview(data)) == expected
    assert _core.sha256(np.frombuffer(data, dtype=np.uint8)) == expected
    with pytest.raises(TypeError, match="encode the text"):
        _core.sha256("text")
    with pytest.raises(TypeError):
        _core.sha256(12)
    with pytest.raises(ValueError, match="chunk_size"):
        _core.sha256(b"x", -1)


# ---- canonical JSON: random payloads ---------------------------------------------------

STRING_PIECES = [
    "", "a", "plain", "with space", '"quoted"', "back\\slash", "/slash", "\n", "\r\n", "\t",
    "\b", "\f", "\x00", "\x01", "\x1f", "\x7f", "\x80", "é", "ß", "ñandú", "日本語", "\u2028",
    "\ufeff", "\uffff", "😀", "\U0001f680", "\U0010ffff", "\ud800", "\udfff", "Ω≈ç√",
]
SPECIAL_FLOATS = [
    0.0, -0.0, 1.0, -1.5, 0.1, 1 / 3, 1e16, 1e-7, 1e22, 1e-5, 123456789.0, 5e-324,
    2.2250738585072014e-308, 1.7976931348623157e308, math.nan, math.inf, -math.inf, 1e300,
]
SPECIAL_INTS = [0, 1, -1, 2**31 - 1, 2**63 - 1, -(2**63), 2**63, 2**64, -(2**64) - 1, 10**50,
                -(10**80), 2**200 + 12345]


def random_string(rng: random.Random) -> str:
    if rng.random() < 0.3:
        return "".join(chr(rng.randrange(0x20, 0x7F)) for _ in range(rng.randrange(12)))
    if rng.random() < 0.2:
        # Any code point, including lone surrogates and the astral planes.
        return "".join(chr(rng.randrange(0x110000)) for _ in range(rng.randrange(6)))
    return "".join(rng.choice(STRING_PIECES) for _ in range(rng.randrange(5)))


def random_scalar(rng: random.Random) -> Any:
    kind = rng.randrange(8)
    if kind == 0:
        return random_string(rng)
    if kind == 1:
        return rng.choice(SPECIAL_INTS) if rng.random() < 0.3 else rng.randint(-(10**6), 10**6)
    if kind == 2:
        return rng.getrandbits(rng.randrange(1, 400)) * rng.choice([1, -1])
    if kind == 3:
        return rng.choice(SPECIAL_FLOATS)
    if kind == 4:
        return rng.uniform(-1, 1) * 10.0 ** rng.randint(-30, 30)
    if kind == 5:
        return rng.choice([True, False])
    if kind == 6:
        return None
    return random_string(rng)


def random_key(rng: random.Random, numeric: bool) -> Any:
    if not numeric:
        return random_string(rng)
    # Mutually comparable keys, which json sorts by value and then writes as text.
    return rng.choice([rng.randint(-50, 50), rng.uniform(-50, 50), True, False,
                       rng.choice(SPECIAL_INTS), rng.choice([1e16, 1e-7, -0.0, math.inf])])


def random_value(rng: random.Random, depth: int = 0) -> Any:
    if depth >= 4 or rng.random() < 0.35:
        return random_scalar(rng)
    size = rng.randrange(6)
    kind = rng.randrange(3)
    if kind == 0:
        numeric = rng.random() < 0.2
        return {random_key(rng, numeric): random_value(rng, depth + 1) for _ in range(size)}
    items = [random_value(rng, depth + 1) for _ in range(size)]
    return items if kind == 1 else tuple(items)


def test_canonical_json_and_digest_match_python_for_10000_random_payloads():
    rng = random.Random(20240605)
    for i in range(10_000):
        payload = random_value(rng)
        expected = python_json(payload)
        assert _core.canonical_json(payload) == expected, (i, payload)
        expected_digest = hashlib.sha256(expected.encode("ascii")).digest()
        assert _core.canonical_sha256(payload) == expected_digest, (i, payload)
        assert _core.seed_from_payload(payload) == reference_seed(payload), (i, payload)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda children: st.lists(children)
    | st.dictionaries(st.text(), children)
    | st.tuples(children, children),
    max_leaves=40,
)


@settings(max_examples=500, deadline=None)
@given(json_values)
def test_canonical_json_equals_python_json_property(value):
    assert _core.canonical_json(value) == python_json(value)


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.integers() | st.floats(allow_nan=False) | st.booleans(),
                       st.integers(), max_size=8))
def test_numeric_keys_sort_and_print_like_python_json(value):
    assert _core.canonical_json(value) == python_json(value)


# ---- canonical JSON: exact cases ----------------------------------------------------------


@pytest.mark.parametrize(
    "value, text",
    [
        (1e16, "1e+16"),
        (1e-7, "1e-07"),
        (-0.0, "-0.0"),
        (5e-324, "5e-324"),
        (math.nan, "NaN"),
        (math.inf, "Infinity"),
        (-math.inf, "-Infinity"),
        (10**30, "1000000000000000000000000000000"),
        ("\x00\x1f\x7f\"\\/", '"\\u0000\\u001f\\u007f\\"\\\\/"'),
        ("😀", '"\\ud83d\\ude00"'),
        ({"b": 1, "a": [True, None]}, '{"a":[true,null],"b":1}'),
        ((), "[]"),
        ({}, "{}"),
    ],
)
def test_canonical_json_exact_text(value, text):
    assert _core.canonical_json(value) == text == python_json(value)


class Colour(enum.IntEnum):
    RED = 1


class Loud(str):
    def __repr__(self) -> str:
        return "LOUD"


class Weird(float):
    def __repr__(self) -> str:
        return "weird"


class Big(int):
    def __repr__(self) -> str:
        return "big"


def test_subclasses_are_written_by_value_like_json():
    value = {"e": Colour.RED, "s": Loud("x"), "f": Weird(2.5), "i": Big(7),
             "d": type("D", (dict,), {})(a=1), "l": type("L", (list,), {})([1, 2])}
    assert _core.canonical_json(value) == python_json(value)


def test_non_string_keys_are_coerced_like_json():
    for value in [{1: "a", 10: "b", 2: "c"}, {1.5: 0, -2: 1, True: 2}, {None: 1},
                  {False: 0}, {math.nan: 1}, {math.inf: 1, -math.inf: 2}, {2**70: 0}]:
        assert _core.canonical_json(value) == python_json(value)


def test_mixed_key_types_fail_as_in_json():
    with pytest.raises(TypeError):
        python_json({1: 0, "a": 1})
    with pytest.raises(TypeError, match="not supported between"):
        _core.canonical_json({1: 0, "a": 1})


def test_unsupported_key_raises_typeerror_naming_the_key():
    with pytest.raises(TypeError, match=r"dict key \(1, 2\) has type tuple"):
        _core.canonical_json({(1, 2): "x"})


@pytest.mark.parametrize("value, type_name", [
    (object(), "object"), ({1, 2}, "set"), (b"raw", "bytes"), ({"k": [1, 2j]}, "complex"),
    (pathlib.Path("/tmp"), "PosixPath"),
])
def test_unsupported_values_raise_typeerror_naming_the_type(value, type_name):
    with pytest.raises(TypeError, match=f"Object of type {type_name} is not JSON serializable"):
        _core.canonical_json(value)
    with pytest.raises(TypeError, match=type_name):
        derive_seed(value)


def test_circular_containers_raise_valueerror():
    loop: list[Any] = [1]
    loop.append(loop)
    with pytest.raises(ValueError, match="Circular reference"):
        _core.canonical_json(loop)
    nested: dict[str, Any] = {}
    nested["self"] = {"inner": nested}
    with pytest.raises(ValueError, match="Circular reference"):
        _core.canonical_json(nested)
    shared = [1, 2]
    assert _core.canonical_json([shared, shared]) == "[[1,2],[1,2]]"


def test_deep_nesting_raises_recursionerror_not_a_crash():
    deep: list[Any] = []
    for _ in range(100_000):
        deep = [deep]
    with pytest.raises(RecursionError):
        _core.canonical_json(deep)


def test_integers_beyond_the_str_digit_limit_fail_like_json():
    huge = 10**5000
    with pytest.raises(ValueError):
        python_json(huge)
    with pytest.raises(ValueError, match="limit"):
        _core.canonical_json(huge)


def test_default_hook_replaces_unsupported_values():
    assert _core.canonical_json({"p": pathlib.Path("/x"), "s": {3}}, str) == (
        '{"p":"/x","s":"{3}"}'
    )
    with pytest.raises(ValueError, match="Circular"):
        _core.canonical_json(object(), lambda o: o)
    with pytest.raises(ZeroDivisionError):
        _core.canonical_json(object(), lambda o: 1 / 0)
    with pytest.raises(TypeError, match="callable"):
        _core.canonical_json(1, 5)


def test_str_keys_mode_stringifies_then_sorts():
    assert _core.canonical_json({1: "a", 10: "b", 2: "c"}, None, True) == (
        '{"1":"a","10":"b","2":"c"}'
    )
    assert _core.canonical_json({True: 1, None: 2, (1, 2): 3}, None, True) == (
        '{"(1, 2)":3,"None":2,"True":1}'
    )
    # Later keys with the same text win, as in a dict comprehension.
    assert _core.canonical_json({1: "int", "1": "str"}, None, True) == '{"1":"str"}'


def test_large_string_keyed_dicts_sort_by_code_point():
    rng = random.Random(3)
    value = {random_string(rng) + str(i): i for i in range(2000)}
    value.update({"é": 1, "z": 2, "😀": 3, "\uffff": 4, "\ud800": 5, "": 6})
    assert _core.canonical_json(value) == python_json(value)


def test_default_hook_mutating_the_dict_being_encoded_is_safe():
    def make() -> dict[str, Any]:
        return {"a": object(), "b": [1, 2], "c": "kept"}

    def clear_then_replace(target: dict[str, Any]) -> Any:
        def hook(obj: Any) -> Any:
            target.clear()
            return "replaced"
        return hook

    mine = make()
    theirs = make()
    expected = json.dumps(theirs, sort_keys=True, separators=(",", ":"),
                          default=clear_then_replace(theirs))
    assert _core.canonical_json(mine, clear_then_replace(mine)) == expected
    assert mine == {}


def test_portable_sha256_matches_hashlib():
    code = textwrap.dedent("""
        import hashlib, os
        from xetrack_c import _core
        for n in list(range(300)) + [1 << 20]:
            data = os.urandom(n)
            assert _core.sha256(data) == hashlib.sha256(data).digest(), n
            assert _core.sha256(data, 13) == hashlib.sha256(data).digest(), n
        print("ok")
    """)
    env = dict(os.environ, XETRACK_SHA256_PORTABLE="1")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, env=env,
                          capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "ok"


def test_canonical_json_keeps_reference_counts_balanced():
    marker = "a-string-only-this-test-uses"
    payload = {"k": [marker, (marker, 1.5)], marker: {marker: None}}
    before = sys.getrefcount(marker)
    for _ in range(1000):
        _core.canonical_json(payload)
        _core.canonical_json({(1,): marker}, None, True)
        _core.canonical_json([object()], lambda o: marker)
        with pytest.raises(TypeError):
            _core.canonical_json([marker, object()])
    assert sys.getrefcount(marker) == before


def test_core_functions_have_text_signatures():
    assert str(inspect.signature(_core.canonical_json)) == (
        "(obj, default=None, str_keys=False, /)"
    )
    assert str(inspect.signature(_core.sha256)) == "(data, chunk_size=0, /)"
    assert _core.seed_from_payload.__text_signature__ == "(obj, default=None, str_keys=False, /)"
    assert "2**31 - 1" in _core.seed_from_payload.__doc__


# ---- seed derivation -----------------------------------------------------------------


@pytest.mark.parametrize(
    "policy, args, expected",
    [
        (SeedPolicy(), ("study-1", "cond-abc", 1, ""), 845025149),
        (SeedPolicy(), ("study-1", "cond-abc", 2, ""), 85568769),
        (SeedPolicy(), ("s", "c", 1, "None:None"), 1641570899),
        (SeedPolicy(base_seed=1), ("s", "c", 1), 478040251),
    ],
)
def test_seed_policy_vectors(policy, args, expected):
    assert policy.derive_seed(*args) == expected


def test_seed_policy_is_frozen_with_the_documented_defaults():
    policy = SeedPolicy()
    assert (policy.base_seed, policy.strategy, policy.per_run_offset) == (
        0, "condition_replicate", 9973)
    with pytest.raises(dataclasses.FrozenInstanceError):
        policy.base_seed = 3  # type: ignore[misc]
    assert SeedPolicy(base_seed=2) == SeedPolicy(base_seed=2)


def test_seed_policy_matches_the_reference_derivation():
    rng = random.Random(7)
    for _ in range(500):
        policy = SeedPolicy(rng.randint(0, 10**6), random_string(rng), rng.randint(0, 10**5))
        args = (random_string(rng), random_string(rng), rng.randint(0, 100), random_string(rng))
        payload = dict(zip(
            ["base_seed", "strategy", "per_run_offset", "study_id", "condition_id",
             "replicate", "salt"],
            [policy.base_seed, policy.strategy, policy.per_run_offset, *args], strict=True))
        seed = policy.derive_seed(*args)
        assert seed == reference_seed(payload)
        assert 0 <= seed <= 2**31 - 2


def test_seed_policy_converts_values_as_design_research_experiments_does():
    # numpy integers are not ints: they are hashed as their str(), as there.
    policy = SeedPolicy()
    payload = {"base_seed": 0, "strategy": "condition_replicate", "per_run_offset": 9973,
               "study_id": pathlib.Path("studies/a"), "condition_id": Colour.RED,
               "replicate": np.int64(3), "salt": ""}
    assert policy.derive_seed("studies/a", 1, "3") == reference_seed(
        reference_jsonable(payload))
    assert policy.derive_seed(pathlib.Path("studies/a"), Colour.RED, np.int64(3)) == (
        reference_seed(reference_jsonable(payload)))


def test_policy_seed_core_equals_the_dict_payload():
    rng = random.Random(11)
    for _ in range(300):
        values = [rng.randint(0, 99), random_string(rng), rng.randint(0, 99),
                  random_value(rng), random_value(rng), random_value(rng), random_string(rng)]
        names = ["base_seed", "strategy", "per_run_offset", "study_id", "condition_id",
                 "replicate", "salt"]
        payload = dict(zip(names, values, strict=True))
        assert _core.policy_seed(*values) == _core.seed_from_payload(payload, None, True)
    with pytest.raises(TypeError, match="7 or 8"):
        _core.policy_seed(1, 2, 3)
    with pytest.raises(TypeError, match="JSON serializable"):
        _core.policy_seed(0, "s", 1, object(), "c", 1, "")


def test_general_derive_seed_payload_and_range():
    assert derive_seed("fold", 3) == reference_seed({"base_seed": 0, "parts": ["fold", 3]})
    assert derive_seed("fold", 3, base_seed=11) == reference_seed(
        {"base_seed": 11, "parts": ["fold", 3]})
    assert derive_seed() == reference_seed({"base_seed": 0, "parts": []})
    assert derive_seed({"b": 1.5, "a": [None]}) == reference_seed(
        {"base_seed": 0, "parts": [{"a": [None], "b": 1.5}]})
    seeds = {derive_seed("task", i) for i in range(2000)}
    assert len(seeds) == 2000
    assert all(0 <= s <= 2**31 - 2 for s in seeds)
    with pytest.raises(TypeError, match="base_seed"):
        derive_seed("x", base_seed="1")  # type: ignore[arg-type]


@dataclasses.dataclass
class Config:
    lr: float
    layers: tuple[int, ...]


class Mode(enum.Enum):
    FAST = "fast"


def test_hash_identifier_matches_design_research_experiments():
    payloads = [
        {"study": "s1", "n": 3},
        {"path": pathlib.Path("/data/x.csv"), "mode": Mode.FAST, "cfg": Config(0.1, (1, 2))},
        {1: "int key", "1.5": 2, None: [frozenset({7})], Mode.FAST: {"deep": {3: 4}}},
        {"obj": types.SimpleNamespace(a=1), "tuple": (1, "x")},
    ]
    for payload in payloads:
        digest = hashlib.sha256(python_json(reference_jsonable(payload)).encode()).hexdigest()
        assert hash_identifier("run", payload) == f"run-{digest[:12]}"
        assert hash_identifier("cond", payload, length=20) == f"cond-{digest[:20]}"
        assert hash_identifier("full", payload, length=64) == f"full-{digest}"


# ---- global seeding -----------------------------------------------------------------------


def draw_globals() -> tuple[float, float]:
    return random.random(), float(np.random.random())


def test_reproducible_seed_seeds_and_restores_global_generators():
    random.seed(99)
    np.random.seed(99)
    expected_after = draw_globals()
    random.seed(99)
    np.random.seed(99)
    with reproducible_seed(1234) as rng:
        inside = draw_globals()
    assert draw_globals() == expected_after
    random.seed(1234)
    np.random.seed(1234)
    assert inside == draw_globals()
    assert isinstance(rng, np.random.Generator)
    assert rng.random() == np.random.Generator(np.random.PCG64(1234)).random()


def test_reproducible_seed_restores_state_after_an_exception():
    random.seed(5)
    np.random.seed(5)
    random_state, numpy_state = random.getstate(), np.random.get_state()
    with pytest.raises(KeyError), reproducible_seed(77):
        random.random()
        np.random.standard_normal(3)
        raise KeyError("boom")
    assert random.getstate() == random_state
    restored = np.random.get_state()
    assert restored[0] == numpy_state[0]
    assert np.array_equal(restored[1], numpy_state[1])
    assert restored[2:] == numpy_state[2:]


def test_reproducible_seed_nests():
    random.seed(1)
    np.random.seed(1)
    outer_expected = draw_globals()
    random.seed(1)
    np.random.seed(1)
    with reproducible_seed(10):
        first = draw_globals()
        with reproducible_seed(20):
            inner = draw_globals()
        second = draw_globals()
    with reproducible_seed(10):
        assert [first, second] == [draw_globals(), draw_globals()]
    with reproducible_seed(20):
        assert inner == draw_globals()
    assert draw_globals() == outer_expected


def test_reproducible_seed_seeds_torch_only_when_already_imported(monkeypatch):
    calls: list[tuple[str, Any]] = []
    fake = types.ModuleType("torch")
    state = {"cpu": "initial"}
    fake.get_rng_state = lambda: state["cpu"]  # type: ignore[attr-defined]
    fake.set_rng_state = lambda s: (calls.append(("set", s)), state.update(cpu=s))  # type: ignore[attr-defined]
    fake.manual_seed = lambda s: (calls.append(("seed", s)), state.update(cpu=f"seeded-{s}"))  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "torch", fake)
    with reproducible_seed(42):
        assert state["cpu"] == "seeded-42"
    assert calls == [("seed", 42), ("set", "initial")]
    assert state["cpu"] == "initial"


def test_import_does_not_pull_in_numpy_or_torch():
    code = ("import sys, xetrack_c.seeding as s; "
            "print('numpy' in sys.modules, 'torch' in sys.modules, s.derive_seed('x'))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True,
                         text=True, timeout=60, check=True).stdout.split()
    assert out[:2] == ["False", "False"]
    assert int(out[2]) == derive_seed("x")


def test_make_rng_is_private_and_reproducible():
    a, b = make_rng(3), make_rng(3)
    assert isinstance(a, np.random.Generator)
    assert a.integers(0, 2**40, 10).tolist() == b.integers(0, 2**40, 10).tolist()
    random.seed(0)
    before = random.getstate()
    make_rng(8).random(100)
    assert random.getstate() == before


def test_without_numpy_rng_is_random_random(monkeypatch):
    monkeypatch.setattr(seeding, "_numpy_module", lambda: None)
    rng = make_rng(9)
    assert isinstance(rng, random.Random)
    assert rng.random() == random.Random(9).random()
    random.seed(3)
    expected = random.random()
    random.seed(3)
    with reproducible_seed(9) as block_rng:
        assert random.random() == random.Random(9).random()
        assert isinstance(block_rng, random.Random)
    assert random.random() == expected


@pytest.mark.parametrize("bad, error", [(-1, ValueError), (2**32, ValueError),
                                        (1.5, TypeError), ("7", TypeError), (True, TypeError)])
def test_seed_validation(bad, error):
    with pytest.raises(error, match="seed"):
        make_rng(bad)
    with pytest.raises(error, match="seed"), reproducible_seed(bad):
        pass


def test_numpy_integer_seeds_are_accepted():
    assert make_rng(np.int64(4)).random() == make_rng(4).random()


# ---- threads --------------------------------------------------------------------------


THREAD_SCRIPT = textwrap.dedent("""
    import hashlib, json, os, sys, threading
    from xetrack_c import _core
    from xetrack_c.seeding import SeedPolicy, derive_seed, make_rng

    N_THREADS, TASKS = 8, 400
    policy = SeedPolicy(base_seed=3)

    def task(k):
        seed = derive_seed("task", k, {"fold": k % 5}, base_seed=17)
        run_seed = policy.derive_seed("study", f"cond-{k % 7}", k)
        rng = make_rng(seed)
        return [seed, run_seed, rng.random(4).tolist(), int(rng.integers(0, 10**9))]

    sequential = {k: task(k) for k in range(TASKS)}

    blobs = [os.urandom(256 * 1024) for _ in range(N_THREADS)]
    barrier = threading.Barrier(N_THREADS)
    threaded, digests_ok = {}, []

    def worker(i):
        barrier.wait()
        for k in range(i, TASKS, N_THREADS):
            threaded[k] = task(k)
        digests_ok.append(_core.sha256(blobs[i]) == hashlib.sha256(blobs[i]).digest())

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(N_THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    print(json.dumps({"same": threaded == sequential, "count": len(threaded),
                      "digests": digests_ok}))
""")


def test_per_task_rngs_in_threads_match_a_sequential_run():
    proc = subprocess.run([sys.executable, "-c", THREAD_SCRIPT], cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result == {"same": True, "count": 400, "digests": [True] * 8}
