"""Trust in the result cache: entries are authenticated with an HMAC-SHA256 under a key
that a writer of the cache directory alone does not have (docs/cache.md, "Trust").

A tampered, foreign or unsigned entry is never unpickled (unpickling runs code); it is a
miss with a warning, and an error in read_cache. Keys come from cache_key=, then
XETRACK_C_CACHE_KEY, then the per-user key file (made 0600 on first use); False /
"unauthenticated" opts out. The conftest points XDG_CONFIG_HOME at a fresh directory for
every test and the processes it starts.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import pickle
import sqlite3
import stat
import subprocess
import sys
import textwrap
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, List

import pytest
from cache_mac import default_key, entry_mac, key_file, rewrite_value
from conftest import child_env

from xetrack_c import ExperimentSpec, Reader, Tracker, _core, run_multiple
from xetrack_c.cache import cache_key, read_cache, scan_cache

CALLS: List[Any] = []
KEY_A = "team-key-a-" + "0123456789abcdef" * 2
KEY_B = "team-key-b-" + "fedcba9876543210" * 2


def square(x: int) -> int:
    CALLS.append(x)
    return x * x


@pytest.fixture(autouse=True)
def _reset_calls():
    CALLS.clear()


@pytest.fixture
def cache_dir(tmp_path) -> str:
    return str(tmp_path / "cache")


class _Planted:
    """Unpickling this creates the marker file and yields 666: what an attacker who can
    write cache.db would plant."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (eval, (f"open({self.marker!r}, 'w').write('pwned') and 666",))


def _planted_pickle(marker: Path) -> bytes:
    return pickle.dumps(_Planted(str(marker)))


def _auth_warnings(caught) -> List[str]:
    return [str(w.message) for w in caught if "xetrack_c cache" in str(w.message)]


# ------------------------------------------------------------------ HMAC-SHA256 in C
RFC4231 = [
    (b"\x0b" * 20, b"Hi There",
     "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7"),
    (b"Jefe", b"what do ya want for nothing?",
     "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"),
    (b"\xaa" * 20, b"\xdd" * 50,
     "773ea91e36800e46854db8ebd09181a72959098b3ef8c122d9635514ced565fe"),
    (bytes(range(1, 26)), b"\xcd" * 50,
     "82558a389a443c0ea4cc819899f2083a85f0faa3e578f8077a2e3ff46729665b"),
    (b"\x0c" * 20, b"Test With Truncation", "a3b6167473100ee06e0c796c2955552b"),  # 128-bit
    (b"\xaa" * 131, b"Test Using Larger Than Block-Size Key - Hash Key First",
     "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"),
    (b"\xaa" * 131,
     b"This is a test using a larger than block-size key and a larger than block-size data. "
     b"The key needs to be hashed before being used by the HMAC algorithm.",
     "9b09ffa71b942fcb27635fbcd5b0e944bfdc63644f0713938a7f51535c3a35e2"),
]


@pytest.mark.parametrize("key, data, expected", RFC4231)
def test_hmac_sha256_rfc4231_vectors(key, data, expected):
    assert _core.hmac_sha256(key, data).hex().startswith(expected)


def _compare_with_python_hmac() -> None:
    import random

    rng = random.Random(4231)
    for key_len in (0, 1, 16, 32, 63, 64, 65, 131, 1000):
        for data_len in (0, 1, 55, 56, 63, 64, 65, 119, 120, 1024, 70_000):
            key, data = rng.randbytes(key_len), rng.randbytes(data_len)
            assert _core.hmac_sha256(key, data) == hmac.new(key, data, "sha256").digest(), (
                key_len, data_len)
    assert _core.hmac_sha256(bytearray(b"k" * 20), memoryview(b"data")) == \
        hmac.new(b"k" * 20, b"data", "sha256").digest()


def test_hmac_sha256_matches_python_hmac():
    _compare_with_python_hmac()
    with pytest.raises(TypeError, match="bytes, not str"):
        _core.hmac_sha256("key", b"data")


def test_hmac_sha256_matches_python_hmac_with_portable_sha256(run_py):
    """The same MACs without the SHA-NI compression function."""
    run_py(f"""
        import sys
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        from test_cache_trust import _compare_with_python_hmac
        _compare_with_python_hmac()
    """, env={"XETRACK_SHA256_PORTABLE": "1"})


# ------------------------------------------------------------------ tampering
def test_tampered_entry_is_never_unpickled_by_track(tmp_path, cache_dir):
    marker = tmp_path / "pwned"
    with Tracker(str(tmp_path / "t.db"), cache=cache_dir) as tracker:
        assert tracker.track(square, args=[7]) == 49
        key = tracker.cache_key(square, [7])
    rewrite_value(cache_dir, key, _planted_pickle(marker))  # no key: the old MAC stays
    with Tracker(str(tmp_path / "t.db"), cache=cache_dir, track_id="after") as tracker, \
            warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert tracker.track(square, args=[7]) == 49  # recomputed, not the planted 666
        assert tracker.track(square, args=[7]) == 49  # and the entry was replaced: a hit
    assert not marker.exists()
    assert CALLS == [7, 7]
    messages = _auth_warnings(caught)
    assert len(messages) == 1 and key in messages[0] and "fails authentication" in messages[0]
    entry = read_cache(cache_dir, key)
    assert entry["result"] == 49 and entry["cache"] == "after"
    assert not marker.exists()


def test_tampered_entry_is_never_unpickled_by_read_cache(tmp_path, cache_dir):
    marker = tmp_path / "pwned"
    with Tracker(str(tmp_path / "t.db"), cache=cache_dir) as tracker:
        tracker.track(square, args=[5])
        tracker.track(square, args=[6])
        key = tracker.cache_key(square, [5])
    rewrite_value(cache_dir, key, _planted_pickle(marker))
    with pytest.raises(ValueError, match=f"{key}.*fails authentication.*not unpickled"):
        read_cache(cache_dir, key)
    with pytest.raises(ValueError, match="fails authentication"):
        Reader.read_cache(cache_dir, key)
    with pytest.raises(ValueError, match="fails authentication"):
        dict(scan_cache(cache_dir))
    assert not marker.exists()
    # The other entry is still fine.
    assert read_cache(cache_dir, cache_key(square, [6]))["result"] == 36


def test_a_moved_entry_fails_too(tmp_path, cache_dir):
    """The MAC covers the key: a valid entry copied under another key is not accepted."""
    with Tracker(str(tmp_path / "t.db"), cache=cache_dir) as tracker:
        tracker.track(square, args=[2])
        tracker.track(square, args=[3])
    two, three = cache_key(square, [2]), cache_key(square, [3])
    conn = sqlite3.connect(os.path.join(cache_dir, "cache.db"))
    conn.execute("UPDATE cache SET (value, mac) = (SELECT value, mac FROM cache WHERE key = ?) "
                 "WHERE key = ?", (two, three))
    conn.commit()
    conn.close()
    with pytest.raises(ValueError, match="fails authentication"):
        read_cache(cache_dir, three)
    assert read_cache(cache_dir, two)["result"] == 4


def test_entry_with_a_wrong_mac_is_a_miss_with_a_warning(tmp_path, cache_dir):
    with Tracker(str(tmp_path / "t.db"), cache=cache_dir, cache_key=KEY_A) as tracker:
        tracker.track(square, args=[4])
        key = tracker.cache_key(square, [4])
    conn = sqlite3.connect(os.path.join(cache_dir, "cache.db"))
    conn.execute("UPDATE cache SET mac = ? WHERE key = ?", (b"\x00" * 32, key))
    conn.commit()
    conn.close()
    with Tracker(str(tmp_path / "t.db"), cache=cache_dir, cache_key=KEY_A,
                 warnings=False) as tracker, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert tracker.track(square, args=[4]) == 16
    assert CALLS == [4, 4]
    (message,) = _auth_warnings(caught)  # even with warnings=False: it may be an attack
    assert key in message and "fails authentication" in message and KEY_A not in message
    assert read_cache(cache_dir, key, cache_key=KEY_A)["result"] == 16  # re-signed


def _old_cache(cache_dir: str, entries: dict) -> None:
    """A cache.db as versions before authentication wrote it: no mac column."""
    os.makedirs(cache_dir)
    conn = sqlite3.connect(os.path.join(cache_dir, "cache.db"))
    conn.executescript(
        "PRAGMA journal_mode=WAL;"
        "CREATE TABLE cache (key TEXT PRIMARY KEY NOT NULL, value BLOB NOT NULL, "
        "track_id TEXT NOT NULL, created TEXT NOT NULL, function_name TEXT NOT NULL DEFAULT '');"
        "CREATE INDEX cache_track_id ON cache (track_id);"
        "PRAGMA application_id = 1481917233; PRAGMA user_version = 1;")
    for key, value in entries.items():
        conn.execute("INSERT INTO cache VALUES (?, ?, 'old-run', '2024-01-01 00:00:00.000000', "
                     "'test_cache_trust.square')", (key, pickle.dumps(value)))
    conn.commit()
    conn.close()


def _columns(cache_dir: str) -> List[str]:
    conn = sqlite3.connect(os.path.join(cache_dir, "cache.db"))
    try:
        return [row[1] for row in conn.execute("PRAGMA table_info(cache)")]
    finally:
        conn.close()


def test_reading_entries_of_older_versions_raises_and_changes_nothing(cache_dir):
    _old_cache(cache_dir, {cache_key(square, [1]): 1})
    with pytest.raises(ValueError, match="has no MAC"):
        read_cache(cache_dir, cache_key(square, [1]), cache_key=KEY_A)
    assert read_cache(cache_dir, cache_key(square, [1]), cache_key=False)["result"] == 1
    assert "mac" not in _columns(cache_dir)  # a read path never modifies the file


def test_entries_of_older_versions_are_misses_with_one_warning(tmp_path, cache_dir):
    _old_cache(cache_dir, {cache_key(square, [1]): 1, cache_key(square, [2]): 4})
    with Tracker(str(tmp_path / "t.db"), cache=cache_dir) as tracker, \
            warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert tracker.track(square, args=[1]) == 1
        assert tracker.track(square, args=[2]) == 4
        assert tracker.track(square, args=[1]) == 1  # replaced: a hit now
    assert CALLS == [1, 2]
    (message,) = _auth_warnings(caught)
    assert "has no MAC" in message and "older xetrack_c" in message
    assert _columns(cache_dir)[-1] == "mac"
    conn = sqlite3.connect(os.path.join(cache_dir, "cache.db"))
    assert conn.execute("PRAGMA user_version").fetchone()[0] == 2
    conn.close()
    assert {key: entry["result"] for key, entry in scan_cache(cache_dir)} == {
        cache_key(square, [1]): 1, cache_key(square, [2]): 4}


def test_the_mac_is_the_documented_one(tmp_path, cache_dir):
    """Recomputed with Python's hmac from the layout in docs/cache.md."""
    with Tracker(str(tmp_path / "t.db"), cache=cache_dir, cache_key=KEY_A, track_id="r1") as tracker:
        tracker.track(square, args=[9])
    conn = sqlite3.connect(os.path.join(cache_dir, "cache.db"))
    key, value, track_id, created, name, mac = conn.execute(
        "SELECT key, value, track_id, created, function_name, mac FROM cache").fetchone()
    conn.close()
    assert mac == entry_mac(KEY_A.encode(), key, value, track_id, created, name)


# ------------------------------------------------------------------ sharing by key
SHARED = """
    import os, sys, warnings
    warnings.simplefilter("always")
    from xetrack_c import Tracker
    calls = []
    def f(x):
        calls.append(x)
        return x + 1
    key = sys.argv[2] if len(sys.argv) > 2 else None
    with Tracker(sys.argv[1] + "/t.db", cache=sys.argv[1] + "/cache", cache_key=key) as t:
        assert t.track(f, args=[41]) == 42
    print("CALLS", len(calls))
"""


def test_processes_with_the_same_key_share_hits_and_another_key_misses(run_py, tmp_path):
    homes = iter(range(100))

    def run(key_arg: List[str], env: dict) -> subprocess.CompletedProcess:
        # Each process has its own (empty) per-user key file home: only the key is shared.
        home = tmp_path / f"home{next(homes)}"
        home.mkdir()
        return run_py(SHARED, args=[str(tmp_path)] + key_arg,
                      env={"XDG_CONFIG_HOME": str(home), **env})

    first = run([KEY_A], {})
    assert "CALLS 1" in first.stdout
    by_env = run([], {"XETRACK_C_CACHE_KEY": KEY_A})  # the same key, from the environment
    assert "CALLS 0" in by_env.stdout, by_env.stderr
    by_arg = run([KEY_A], {"XETRACK_C_CACHE_KEY": KEY_B})  # the argument wins
    assert "CALLS 0" in by_arg.stdout, by_arg.stderr
    other = run([KEY_B], {})
    assert "CALLS 1" in other.stdout and "fails authentication" in other.stderr
    assert KEY_B not in other.stderr and KEY_A not in other.stderr
    own_file = run([], {})  # a fresh per-user key: not KEY_B's entry either
    assert "CALLS 1" in own_file.stdout and "fails authentication" in own_file.stderr


def test_run_multiple_executor_cache_takes_the_key(tmp_path, db_path):
    def task(config, seed):
        return config["i"] * 10

    cache = str(tmp_path / "cache")
    specs = [ExperimentSpec(function=task, config={"i": i}, seed=i) for i in range(3)]
    with ThreadPoolExecutor(2) as pool:
        run_multiple(specs, executor=pool, cache=cache, cache_key=KEY_A)
    with ThreadPoolExecutor(2) as pool:
        warm = run_multiple(specs, executor=pool, cache=cache, cache_key=KEY_A)
    assert [r.duration for r in warm] == [0.0] * 3 and [r.result for r in warm] == [0, 10, 20]
    with ThreadPoolExecutor(2) as pool, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        cold = run_multiple(specs, executor=pool, cache=cache, cache_key=KEY_B)
    assert [r.result for r in cold] == [0, 10, 20]
    assert len([m for m in _auth_warnings(caught) if "fails authentication" in m]) == 3
    # KEY_B's results replaced the entries.
    assert all(entry["result"] in (0, 10, 20) for _, entry in scan_cache(cache, cache_key=KEY_B))
    with pytest.raises(ValueError, match="cache=..."):
        run_multiple(specs, cache_key=KEY_A)


# ------------------------------------------------------------------ files and modes
def test_key_file_is_created_0600_in_a_0700_directory(tmp_path, monkeypatch, cache_dir):
    monkeypatch.delenv("XDG_CONFIG_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    old_umask = os.umask(0o022)
    try:
        with Tracker(str(tmp_path / "t.db"), cache=cache_dir) as tracker:
            tracker.track(square, args=[1])
            for name in ("cache.db", "cache.db-wal", "cache.db-shm"):
                path = os.path.join(cache_dir, name)
                assert stat.S_IMODE(os.stat(path).st_mode) == 0o600, name
    finally:
        os.umask(old_umask)
    path = tmp_path / "home" / ".config" / "xetrack_c" / "cache.key"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert stat.S_IMODE(path.parent.parent.stat().st_mode) == 0o700
    assert stat.S_IMODE(os.stat(cache_dir).st_mode) == 0o700
    assert len(path.read_text().strip()) == 64  # 32 random bytes, in hex
    assert os.listdir(path.parent) == ["cache.key"]  # no temporary file left


def test_xdg_config_home_is_honoured():
    path = key_file(os.environ["XDG_CONFIG_HOME"])
    assert not os.path.exists(path)
    from xetrack_c.cache_auth import resolve_cache_key

    key = resolve_cache_key()
    assert os.path.exists(path) and key == default_key()
    assert resolve_cache_key() == key  # read back, not made again


def test_concurrent_first_use_agrees_on_one_key(tmp_path):
    """Many processes using the cache for the first time at once end up with one key."""
    go = tmp_path / "go"
    code = textwrap.dedent(f"""
        import hashlib, os, time
        while not os.path.exists({str(go)!r}):
            time.sleep(0.001)
        from xetrack_c.cache_auth import resolve_cache_key
        print(hashlib.sha256(resolve_cache_key()).hexdigest())
    """)
    from xetrack_c import cache_auth  # noqa: F401 - warm the import for the children's timing

    env = child_env()
    procs = [subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(12)]
    go.touch()
    digests = set()
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        digests.add(out.strip())
    assert digests == {hashlib.sha256(default_key()).hexdigest()}
    assert os.listdir(os.path.dirname(key_file(os.environ["XDG_CONFIG_HOME"]))) == ["cache.key"]


def test_a_key_file_others_can_read_is_refused(tmp_path, cache_dir):
    from xetrack_c.cache_auth import CacheKeyError, resolve_cache_key

    Tracker(str(tmp_path / "t.db"), cache=cache_dir).close()
    path = key_file(os.environ["XDG_CONFIG_HOME"])
    os.chmod(path, 0o644)
    with pytest.raises(CacheKeyError, match="chmod 600"):
        Tracker(str(tmp_path / "t.db"), cache=cache_dir)
    with pytest.raises(CacheKeyError, match="chmod 600"):
        read_cache(cache_dir, "0" * 32)
    os.chmod(path, 0o600)
    assert resolve_cache_key() == default_key()


def test_bad_keys_are_clear_errors_that_do_not_show_the_key(tmp_path, cache_dir, monkeypatch):
    from xetrack_c.cache_auth import CacheKeyError

    with pytest.raises(CacheKeyError, match="too short") as info:
        Tracker(str(tmp_path / "t.db"), cache=cache_dir, cache_key="s3cr3t")
    assert "s3cr3t" not in str(info.value)
    monkeypatch.setenv("XETRACK_C_CACHE_KEY", "hunter2")
    with pytest.raises(CacheKeyError, match="XETRACK_C_CACHE_KEY is too short") as info:
        Tracker(str(tmp_path / "t.db"), cache=cache_dir)
    assert "hunter2" not in str(info.value)
    with pytest.raises(TypeError, match="cache_key must be"):
        Tracker(str(tmp_path / "t.db"), cache=cache_dir, cache_key=True)
    with pytest.raises(TypeError, match="auth_key"):
        _core.ResultCache(cache_dir)  # the C type has no trusting default


def test_the_key_is_in_no_repr_and_no_pickle(tmp_path, cache_dir):
    with Tracker(str(tmp_path / "t.db"), cache=cache_dir, cache_key=KEY_A) as tracker:
        tracker.track(square, args=[1])
        assert callable(tracker.cache_key)  # the method is not shadowed by the argument
        shown = repr(tracker) + repr(tracker.cache) + repr(vars(tracker))
        assert KEY_A not in shown and tracker.cache.authenticated
        assert KEY_A.encode() not in pickle.dumps(tracker)


# ------------------------------------------------------------------ no key, and the opt-out
def test_unauthenticated_opt_in(tmp_path, cache_dir, monkeypatch):
    marker = tmp_path / "trusted"
    with Tracker(str(tmp_path / "t.db"), cache=cache_dir, cache_key=False) as tracker:
        assert "unauthenticated" in repr(tracker.cache) and not tracker.cache.authenticated
        tracker.track(square, args=[3])
        assert tracker.track(square, args=[3]) == 9
        clone = pickle.loads(pickle.dumps(tracker))  # the opt-out travels
    try:
        assert not clone.cache.authenticated
    finally:
        clone.close()
    assert CALLS == [3]
    conn = sqlite3.connect(os.path.join(cache_dir, "cache.db"))
    assert conn.execute("SELECT mac FROM cache").fetchall() == [(None,)]
    conn.close()
    key = cache_key(square, [3])
    assert read_cache(cache_dir, key, cache_key=False)["result"] == 9
    with pytest.raises(ValueError, match="has no MAC"):
        read_cache(cache_dir, key, cache_key=KEY_A)  # a reader with a key does not trust it
    # The opt-out by environment; it trusts whatever the directory holds.
    monkeypatch.setenv("XETRACK_C_CACHE_KEY", "unauthenticated")
    rewrite_value(cache_dir, key, pickle.dumps(_Planted(str(marker))))
    assert read_cache(cache_dir, key)["result"] == 666 and marker.exists()


NO_KEY = """
    import os, sys, warnings
    warnings.simplefilter("always")
    from xetrack_c import Tracker
    from xetrack_c.cache import read_cache
    from xetrack_c.cache_auth import CacheKeyUnavailable
    calls = []
    def f(x):
        calls.append(x)
        return x
    root = sys.argv[1]
    for run in range(2):
        with Tracker(root + "/t.db", cache=root + "/cache") as t:
            assert t.cache is None
            t.track(f, args=[1])
    print("CALLS", len(calls), "CACHE_DIR", os.path.exists(root + "/cache"))
    try:
        read_cache(root + "/old", "0" * 32)
    except CacheKeyUnavailable as exc:
        print("READ_ERROR", exc)
    with Tracker(root + "/t.db", cache=root + "/cache", cache_key=False) as t:
        t.track(f, args=[1])
        t.track(f, args=[1])
    print("OPTED_IN_CALLS", len(calls))
"""


def test_without_a_key_the_cache_says_so_once_and_is_off(run_py, tmp_path):
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")  # no key file can be made under a file (not even by root)
    Tracker(str(tmp_path / "w.db"), cache=str(tmp_path / "old"), cache_key=False).close()
    result = run_py(NO_KEY, args=[str(tmp_path)],
                    env={"XDG_CONFIG_HOME": str(blocker / "config")})
    assert "CALLS 2 CACHE_DIR False" in result.stdout
    assert result.stderr.count("xetrack_c cache is off") == 1, result.stderr
    assert "XETRACK_C_CACHE_KEY" in result.stderr and "cache_key=False" in result.stderr
    assert "READ_ERROR no cache key" in result.stdout
    assert "OPTED_IN_CALLS 3" in result.stdout


# ------------------------------------------------------------------ xt cache ls
def test_xt_cache_ls_flags_entries_that_fail(xt, tmp_path, cache_dir):
    with Tracker(str(tmp_path / "t.db"), cache=cache_dir, track_id="run-a") as tracker:
        tracker.track(square, args=[1])
        tracker.track(square, args=[2])
    rewrite_value(cache_dir, cache_key(square, [2]), pickle.dumps(-1))
    entries = {e["key"]: e for e in xt.ok("cache", "ls", cache_dir, "--json").json()}
    assert entries[cache_key(square, [1])]["authenticated"] is True
    assert entries[cache_key(square, [2])]["authenticated"] is False
    text = xt.ok("cache", "ls", cache_dir).out
    assert text.count("fails authentication") == 1
    other = tmp_path / "other.key"
    other.write_text(KEY_B)
    os.chmod(other, 0o600)
    listed = xt.ok("cache", "ls", cache_dir, "--json", "--key-file", str(other)).json()
    assert [e["authenticated"] for e in listed] == [False, False]
    listed = xt.ok("cache", "ls", cache_dir, "--json",
                   env={"XETRACK_C_CACHE_KEY": "unauthenticated"}).json()
    assert [e["authenticated"] for e in listed] == [None, None]
