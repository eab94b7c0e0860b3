"""Shared fixtures for the Tracker tests.

Everything that reads a database back does it with Python's own ``sqlite3`` module, so the
tests check what is really in the file, not what the tracker believes it wrote.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any, Dict, List, Optional

import pytest

pytest_plugins = ["cli_support"]  # the xt fixtures

ROOT = Path(__file__).resolve().parent.parent
HELPERS = Path(__file__).resolve().parent / "helpers"
if str(HELPERS) not in sys.path:
    sys.path.insert(0, str(HELPERS))  # shared helper modules (leakcheck), as in child_env()


def child_env(extra_path: Optional[List[str]] = None) -> Dict[str, str]:
    """Environment for a child interpreter that imports this worktree's build of xetrack_c."""
    env = dict(os.environ)
    parts = [str(ROOT), str(HELPERS)] + list(extra_path or [])
    if env.get("PYTHONPATH"):
        parts.append(env["PYTHONPATH"])
    env["PYTHONPATH"] = os.pathsep.join(parts)
    env.setdefault("PYTHONFAULTHANDLER", "1")
    return env


class PyRunner:
    """Runs Python snippets in a fresh interpreter, failing the test on timeout.

    The snippet is written to a file (so ``multiprocessing``'s spawn start method can
    re-import it) and run with ``sys.executable`` unless another interpreter is given.
    """

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.count = 0

    def script(self, code: str) -> Path:
        self.count += 1
        path = self.workdir / f"snippet_{self.count}.py"
        path.write_text(textwrap.dedent(code))
        return path

    def __call__(
        self,
        code: str,
        timeout: float = 60,
        check: bool = True,
        python: str = sys.executable,
        args: Optional[List[str]] = None,
        env: Optional[Dict[str, str]] = None,
    ) -> subprocess.CompletedProcess:
        path = self.script(code)
        child = child_env()
        child.update(env or {})
        try:
            proc = subprocess.run(
                [python, str(path)] + list(args or []),
                cwd=str(self.workdir),
                env=child,
                capture_output=True,
                text=True,
                timeout=timeout,
            )
        except subprocess.TimeoutExpired as exc:
            pytest.fail(
                f"child interpreter did not finish within {timeout}s (deadlock or hang)\n"
                f"--- stdout ---\n{_text(exc.stdout)}\n--- stderr ---\n{_text(exc.stderr)}"
            )
        if check and proc.returncode != 0:
            pytest.fail(
                f"child interpreter exited with {proc.returncode}\n"
                f"--- stdout ---\n{proc.stdout}\n--- stderr ---\n{proc.stderr}"
            )
        return proc


def _text(data: Any) -> str:
    if data is None:
        return ""
    return data.decode(errors="replace") if isinstance(data, bytes) else str(data)


_SESSION_CONFIG: Optional[str] = None
_SAVED_ENV: Dict[str, Optional[str]] = {}


def pytest_configure(config: pytest.Config) -> None:
    """Before anything is collected (some modules copy os.environ at import, and module
    fixtures start processes before function fixtures run): a temporary XDG_CONFIG_HOME,
    so nothing in the session writes the result cache's key file into the real home."""
    global _SESSION_CONFIG
    import tempfile

    _SESSION_CONFIG = tempfile.mkdtemp(prefix="xetrack_c-test-config-")
    for name in ("XDG_CONFIG_HOME", "XETRACK_C_CACHE_KEY"):
        _SAVED_ENV[name] = os.environ.get(name)
    os.environ["XDG_CONFIG_HOME"] = _SESSION_CONFIG
    os.environ.pop("XETRACK_C_CACHE_KEY", None)
    # A suite started as a background job (`cmd &` in a script) has SIGINT ignored, and
    # every child would inherit that: the tests that send Ctrl-C to a child interpreter
    # need children that take it, so the session takes SIGINT back (children start with
    # the default action and Python turns it into KeyboardInterrupt).
    import signal

    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


def pytest_unconfigure(config: pytest.Config) -> None:
    import shutil

    for name, value in _SAVED_ENV.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
    if _SESSION_CONFIG is not None:
        shutil.rmtree(_SESSION_CONFIG, ignore_errors=True)


@pytest.fixture(autouse=True)
def _private_cache_key_home(tmp_path_factory: pytest.TempPathFactory,
                            monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test, and every process it starts, finds the result cache's per-user key file
    under a fresh temporary XDG_CONFIG_HOME, never in the real ~/.config, and no
    XETRACK_C_CACHE_KEY from the developer's environment."""
    config = tmp_path_factory.mktemp("xdg-config")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(config))
    monkeypatch.delenv("XETRACK_C_CACHE_KEY", raising=False)
    return config


@pytest.fixture
def run_py(tmp_path: Path) -> PyRunner:
    """``run_py(code, timeout=60, check=True)``: run ``code`` in a child interpreter."""
    workdir = tmp_path / "scripts"
    workdir.mkdir()
    return PyRunner(workdir)


@pytest.fixture
def db_path(tmp_path: Path) -> str:
    """A path for a fresh database file (not created yet)."""
    return str(tmp_path / "track.db")


# ------------------------------------------------------------------ reading files back
def connect(db: str) -> sqlite3.Connection:
    conn = sqlite3.connect(db, timeout=60)
    return conn


def read_rows(db: str, table: str = "default", where: str = "", params: tuple = ()) -> List[Dict[str, Any]]:
    """Every row of ``table`` as a dict, in insertion (rowid) order."""
    conn = connect(db)
    try:
        cur = conn.execute(f'SELECT * FROM "{table}" {where} ORDER BY rowid', params)
        names = [d[0] for d in cur.description]
        return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]
    finally:
        conn.close()


class Unpicklable:
    """An object whose pickling (as an asset) raises RuntimeError("no pickle")."""

    def __reduce__(self):
        raise RuntimeError("no pickle")


def count_rows(db: str, table: str = "default", where: str = "", params: tuple = ()) -> int:
    conn = connect(db)
    try:
        return conn.execute(f'SELECT count(*) FROM "{table}" {where}', params).fetchone()[0]
    finally:
        conn.close()


def table_info(db: str, table: str = "default") -> Dict[str, str]:
    """Column name -> declared SQL type, in table order."""
    conn = connect(db)
    try:
        return {name: decl for _, name, decl, *_ in conn.execute(f'PRAGMA table_info("{table}")')}
    finally:
        conn.close()


def table_names(db: str) -> List[str]:
    conn = connect(db)
    try:
        return sorted(r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'"))
    finally:
        conn.close()


def alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            state = stat.read().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state not in ("Z", "X")


def integrity_check(db: str) -> str:
    conn = connect(db)
    try:
        return conn.execute("PRAGMA integrity_check").fetchone()[0]
    finally:
        conn.close()


# The C core's own test modules: the jobs that re-run the suite on another interpreter or
# allocator (the other CPythons, the debug allocator in .ci/run) run these, with
# -m "core and not slow and not stress and not no_sanitizer"; the full suite and the
# sanitizer job run everything. A module that calls into csrc/ directly belongs here.
CORE_MODULES = frozenset({
    "test_assets", "test_bool_columns", "test_cache", "test_cache_hashable",
    "test_cache_processes", "test_cache_trust", "test_every_spec_recorded", "test_executor",
    "test_executor_abandon", "test_executor_process", "test_fork_safety", "test_forkserver",
    "test_group_commit", "test_leaks", "test_leaks_cache_executor", "test_log_batch_stream",
    "test_orchestrator_death",
    "test_params", "test_process_server", "test_read_interrupt", "test_read_only_location",
    "test_read_only_sql", "test_reader", "test_reader_fast_path", "test_reader_parallel",
    "test_results_as_data",
    "test_seeding", "test_stress", "test_tracker_bad_input", "test_tracker_column_limit",
    "test_tracker_concurrency", "test_tracker_rows", "test_tracker_track", "test_public_api",
})


def pytest_collection_modifyitems(config: pytest.Config, items: List[pytest.Item]) -> None:
    """Mark the tests of CORE_MODULES ``core``."""
    for item in items:
        if item.path.stem in CORE_MODULES:
            item.add_marker(pytest.mark.core)
