"""What runs on the executor's worker for one ``run_multiple(executor=...)`` task.

:func:`run_function_task` and :func:`run_script_task` never raise for a failure of the
task itself: they return an :data:`Outcome` tuple ``(status, value, error, duration,
chunks, retryable)`` where ``chunks`` are the rows the task logged (see
:mod:`xetrack_c.run.remote_buffer`), for the driver to write. Nothing here writes a file the driver
reads: function tasks buffer their rows in memory; a script child logs into a SQLite file
in a private temporary directory of the worker, read back and deleted when it exits.
"""

from __future__ import annotations

import os
import pickle
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from typing import Any, Dict, List, Optional, Tuple

from xetrack_c.run import remote_buffer
from xetrack_c.run.tasks import TAIL_CHARS, call_in_mode, signal_name

#: (status, value, error text, duration in seconds, chunks, retryable)
Outcome = Tuple[str, Any, Optional[str], float, List[remote_buffer.Chunk], bool]
#: Characters of a script's stderr kept in its error message.
_FUNCTIONS: Dict[bytes, Any] = {}
_FUNCTIONS_KEPT = 64


def _function(blob: bytes) -> Any:
    """The function pickled in ``blob`` (unpickled once per worker process)."""
    function = _FUNCTIONS.get(blob)
    if function is None:
        function = pickle.loads(blob)
        if len(_FUNCTIONS) >= _FUNCTIONS_KEPT:
            _FUNCTIONS.clear()
        _FUNCTIONS[blob] = function
    return function


def _matches(exc: BaseException, retry_on: Tuple[type, ...]) -> bool:
    return not retry_on or isinstance(exc, retry_on)


def run_function_task(function_blob: bytes, task_blob: bytes) -> Outcome:
    """Run one function spec here; see the module docstring for what it returns.

    Args:
        function_blob: The spec's function, pickled with cloudpickle.
        task_blob: ``(experiment_id, config, seed, db, name, mode, retry_on, attempt)``,
            pickled with cloudpickle; ``mode`` names the keyword arguments to pass
            (None: call ``function(config)``).
    """
    from xetrack_c.run import child
    from xetrack_c.run.tasks import describe_exception

    start = time.perf_counter()
    retry_on: Tuple[type, ...] = ()
    chunks: List[remote_buffer.Chunk] = []
    try:
        function = _function(function_blob)
        experiment_id, config, seed, db, name, mode, retry_on, _ = pickle.loads(task_blob)
        with remote_buffer.remote_task(db) as buffer:
            try:
                with child.task_context(experiment_id, config, seed, db, name):
                    value = call_in_mode(function, mode, config, seed)
            finally:
                chunks = buffer.collect()
    except BaseException as exc:  # noqa: BLE001 - any failure of the task is its outcome
        return ("failed", None, describe_exception(_without_wrapper(exc)),
                time.perf_counter() - start, chunks, _matches(exc, tuple(retry_on)))
    return ("completed", value, None, time.perf_counter() - start, chunks, False)


def _without_wrapper(exc: BaseException) -> BaseException:
    """``exc`` with the frames of this module cut from the front of its traceback."""
    trace = exc.__traceback__
    while trace is not None and trace.tb_frame.f_code.co_filename == __file__:
        trace = trace.tb_next
    return exc.with_traceback(trace) if trace is not None else exc




def run_script_task(argv: List[str], env: Dict[str, str], timeout: Optional[float],
                    grace: float, cwd: Optional[str], destination: str,
                    retry_on: Tuple[type, ...], attempt: int) -> Outcome:
    """Run one script spec here as ``python script args`` in its own process group.

    Args:
        argv: The script path and its arguments (run with this worker's Python).
        env: The child API's variables (``XETRACK_C_DB`` is replaced by a private file
            whose rows are shipped back).
        timeout: Seconds the script may run; then SIGTERM to its process group and,
            ``grace`` seconds later, SIGKILL.
        grace: See ``timeout``.
        cwd: Working directory, used when it exists on this machine.
        destination: Where the driver writes the script's rows (``remote_buffer.BATCH`` or
            ``remote_buffer.STANDALONE``).
        retry_on: Exception types the driver retries; an empty tuple retries any failure.
        attempt: Attempt number (part of the arguments, so every attempt is a new task).
    """
    from xetrack_c.run import child

    start = time.perf_counter()
    workdir = tempfile.mkdtemp(prefix="xetrack_c-task-")
    try:
        child_env = {key: value for key, value in os.environ.items()
                     if key not in env and key != child.XETRACK_C_DB}
        child_env.update(env)
        buffer_db = os.path.join(workdir, "rows.db")
        child_env[child.XETRACK_C_DB] = buffer_db
        err_path = os.path.join(workdir, "stderr")
        with open(os.path.join(workdir, "stdout"), "wb") as out, open(err_path, "wb") as err:
            code, timed_out = _run_child([sys.executable, *argv], child_env,
                                         cwd if cwd and os.path.isdir(cwd) else None,
                                         out, err, timeout, grace)
        duration = time.perf_counter() - start
        chunks = remote_buffer.chunks_from_file(buffer_db, destination)
        tail = _tail(err_path)
        if timed_out:
            return ("timeout", None, f"timed out after {timeout:g}s (its timeout); the script was "
                    f"stopped (SIGTERM, then SIGKILL){tail}", duration, chunks, False)
        if code == 0:
            return ("completed", None, None, duration, chunks, False)
        how = f"exit code {code}" if code >= 0 else f"killed by {signal_name(-code)}"
        return ("failed", None, f"script {argv[0]} failed: {how}{tail}", duration, chunks,
                not retry_on)
    except OSError as exc:
        return ("failed", None, f"script {argv[0]} could not be started on this worker: {exc}",
                time.perf_counter() - start, [], not retry_on)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _run_child(argv: List[str], env: Dict[str, str], cwd: Optional[str], out: Any, err: Any,
               timeout: Optional[float], grace: float) -> Tuple[int, bool]:
    """(exit status, timed out) of the child; a timed-out child's group is stopped."""
    child = subprocess.Popen(argv, env=env, cwd=cwd, stdin=subprocess.DEVNULL, stdout=out,
                             stderr=err, start_new_session=True)
    try:
        return child.wait(timeout=timeout), False
    except subprocess.TimeoutExpired:
        pass
    except BaseException:
        _stop(child, grace)
        raise
    _stop(child, grace)
    return child.returncode, True


def _stop(child: subprocess.Popen, grace: float) -> None:
    """SIGTERM to the child's process group, SIGKILL after ``grace`` seconds."""
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, None)):
        try:
            os.killpg(child.pid, sig)
        except ProcessLookupError:
            pass
        try:
            child.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def _tail(path: str) -> str:
    try:
        with open(path, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            size = handle.tell()
            handle.seek(max(0, size - 4 * TAIL_CHARS))
            text = handle.read().decode("utf-8", errors="replace")[-TAIL_CHARS:]
    except OSError:
        return ""
    return "\nstderr (last lines):\n" + text.rstrip() if text.strip() else ""

