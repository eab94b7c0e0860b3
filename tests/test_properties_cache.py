"""Property test for the result cache: a cache key is the same in every process.

One long-lived child interpreter, started with another ``PYTHONHASHSEED``, computes keys
for pickled calls sent to it; every hypothesis example must get the same key there as
here (``None`` in both when the call cannot be keyed).
"""

from __future__ import annotations

import base64
import math
import pickle
import subprocess
import sys
from typing import Any

import pytest
from cache_subjects import Box, Holder, Point, scored
from conftest import child_env
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

pytestmark = pytest.mark.slow  # left out of the jobs that re-run the suite (.ci/run)

cache = pytest.importorskip(
    "xetrack_c.cache", reason="result cache (xetrack_c.cache.cache_key) is not merged yet"
)
if not hasattr(cache, "cache_key"):
    pytest.skip("result cache: xetrack_c.cache.cache_key is not merged yet", allow_module_level=True)

SERVER = r"""
import base64, pickle, sys
from xetrack_c.cache import cache_key
import cache_subjects
for line in sys.stdin:
    func_name, args, kwargs, params, tracker_params = pickle.loads(base64.b64decode(line))
    func = cache_subjects
    for part in func_name.split("."):
        func = getattr(func, part)
    key = cache_key(func, args=args, kwargs=kwargs, params=params, tracker_params=tracker_params)
    sys.stdout.write(repr(key) + "\n")
    sys.stdout.flush()
"""


@pytest.fixture(scope="module")
def key_server():
    env = child_env()
    env["PYTHONHASHSEED"] = "4242"  # a different str/bytes hash than this process's
    proc = subprocess.Popen([sys.executable, "-c", SERVER], env=env, text=True,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)

    def ask(*call: Any) -> str:
        proc.stdin.write(base64.b64encode(pickle.dumps(call)).decode() + "\n")
        proc.stdin.flush()
        line = proc.stdout.readline()
        if not line:
            pytest.fail(f"the key server died: {proc.stderr.read()}")
        return line.strip()

    yield ask
    proc.stdin.close()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        pytest.fail("the key server did not exit")
    proc.stdout.close()
    proc.stderr.close()


text = st.text(max_size=12)
floats = st.floats(allow_nan=False) | st.just(math.inf) | st.just(-0.0)
points = st.builds(Point, st.integers(), st.floats(allow_nan=False), text)
boxes = st.builds(Box, points, st.lists(text, max_size=3).map(tuple))


def arrays():
    np = pytest.importorskip("numpy")
    return st.sampled_from(["int64", "float32", "uint8", "bool"]).flatmap(
        lambda dtype: st.lists(st.integers(0, 100), max_size=6).map(
            lambda xs: np.array(xs, dtype=dtype)))


values = st.recursive(
    st.none() | st.booleans() | st.integers() | floats | text | st.binary(max_size=12)
    | points | boxes | arrays(),
    lambda inner: st.lists(inner, max_size=4).map(tuple)
    | st.dictionaries(text, inner, max_size=4),
    max_leaves=12,
)
functions = st.sampled_from(["scored", "Holder.method"])


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(functions, st.lists(values, max_size=4).map(tuple),
       st.dictionaries(st.from_regex(r"[a-z]{1,8}", fullmatch=True), values, max_size=3),
       st.none() | st.dictionaries(text, values, max_size=3),
       st.none() | st.dictionaries(text, values, max_size=3))
def test_any_call_gets_the_same_cache_key_in_another_process(
        key_server, func_name, args, kwargs, params, tracker_params):
    func = {"scored": scored, "Holder.method": Holder.method}[func_name]
    here = cache.cache_key(func, args=list(args), kwargs=kwargs, params=params,
                           tracker_params=tracker_params)
    again = cache.cache_key(func, args=list(args), kwargs=kwargs, params=params,
                            tracker_params=tracker_params)
    assert here == again
    assert here is None or isinstance(here, str)
    there = key_server(func_name, list(args), kwargs, params, tracker_params)
    assert there == repr(here)
