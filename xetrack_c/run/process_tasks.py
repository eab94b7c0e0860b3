"""The parent's side of ``backend="process"``: the worker command, task payloads, replies.

Everything here runs on the calling thread with the GIL: payloads are pickled before the C
pool starts, and replies are unpickled as the pool reports them (see
:mod:`xetrack_c.run.process_worker` for the protocol).

Callables and configs are pickled with :mod:`pickle` where that gives something a fresh
worker process can load, and with ``cloudpickle`` (when installed) where it does not:
lambdas, closures, and anything defined in the ``__main__`` script, which a worker cannot
import.
"""

from __future__ import annotations

import atexit
import dataclasses
import os
import pickle
import signal
import sys
from typing import Any, Dict, List, Optional, Sequence, Tuple

from xetrack_c import _core

_PROTOCOL = pickle.HIGHEST_PROTOCOL

# The warm server lives as long as this interpreter: it ends at exit, and a fork of this
# process leaves its parent's server alone (its first process batch starts its own).
atexit.register(_core.stop_process_server)
os.register_at_fork(after_in_child=_core.forget_process_server)


#: The worker's launcher: loads the worker module from its file under its package name
#: (compiled once and cached, unlike a script; without importing the package, and without
#: putting its folder on sys.path, where run/types.py would hide the standard library's).
_LAUNCH = ("import sys; from importlib.machinery import ModuleSpec, SourceFileLoader; "
           "name = 'xetrack_c.run.process_worker'; loader = SourceFileLoader(name, {path!r}); "
           "worker = type(sys)(name); worker.__file__ = {path!r}; worker.__loader__ = loader; "
           "worker.__spec__ = ModuleSpec(name, loader, origin={path!r}); "
           "sys.modules[name] = worker; loader.exec_module(worker); worker.main()")


def worker_command() -> List[str]:
    """argv of a worker process started cold: this interpreter, without ``site`` (the init
    frame hands it this process's ``sys.path``), running this copy of xetrack_c's worker
    module."""
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "process_worker.py")
    return [sys.executable, "-S", "-c", _LAUNCH.format(path=path)]


def server_command() -> List[str]:
    """argv of this process's warm server: the worker module, serving forks of itself."""
    return worker_command() + ["--server"]


#: Bytes of pickled functions of one batch the warm server gets at most (it keeps what it
#: loaded for later batches). Functions past it (large closures) are loaded by each
#: worker instead.
SERVER_FUNCTION_BYTES = 48 * 1024


def server_frame(functions: Sequence[bytes]) -> bytes:
    """What the warm server loads before it forks for a batch: this process's
    ``sys.path``, working directory and environment (its forks then start as a new
    interpreter started now would) and the batch's pickled functions (up to
    :data:`SERVER_FUNCTION_BYTES`), which it loads once for all its workers."""
    sent: List[bytes] = []
    total = 0
    for data in functions:
        if total + len(data) <= SERVER_FUNCTION_BYTES:
            sent.append(data)
            total += len(data)
    return pickle.dumps({"sys_path": list(sys.path), "cwd": os.getcwd(),
                         "environ": dict(os.environ), "functions": sent}, _PROTOCOL)


def _cloudpickle(value: Any, what: str, reason: str) -> bytes:
    try:
        import cloudpickle
    except ImportError:
        raise ValueError(
            f"{what} cannot be sent to a worker process ({reason}); install cloudpickle, "
            "define it at module level in an importable module, or use backend='thread'"
        ) from None
    try:
        return cloudpickle.dumps(value, protocol=_PROTOCOL)
    except Exception as exc:
        raise ValueError(f"{what} cannot be sent to a worker process: {exc}; use picklable "
                         "values or backend='thread'") from None


def dumps(value: Any, what: str) -> bytes:
    """``value`` pickled so that a fresh worker process can load it."""
    try:
        data = pickle.dumps(value, _PROTOCOL)
    except Exception as exc:
        return _cloudpickle(value, what, str(exc))
    if b"__main__" in data:
        # Pickled by reference to the main script, which a worker cannot import.
        return _cloudpickle(value, what, "it refers to the __main__ script")
    return data


def init_frame(worker_init: Any) -> bytes:
    """The first frame every worker process of the batch gets."""
    init = None if worker_init is None else dumps(worker_init, "worker_init")
    return pickle.dumps({"sys_path": list(sys.path), "worker_init": init}, _PROTOCOL)


def environment() -> List[str]:
    """The worker processes' environment: this process's, as ``NAME=value``."""
    return [f"{key}={value}" for key, value in os.environ.items()]


class Payloads:
    """Builds the task payloads of one batch, pickling each distinct function once."""

    def __init__(self) -> None:
        self._functions: Dict[int, Tuple[Any, bytes]] = {}

    def functions(self) -> List[bytes]:
        """Every distinct function of the batch so far, pickled."""
        return [data for _, data in self._functions.values()]

    def function_bytes(self, function: Any) -> bytes:
        entry = self._functions.get(id(function))
        if entry is None or entry[0] is not function:
            entry = (function, dumps(function, "the function"))
            self._functions[id(function)] = entry
        return entry[1]

    def payload(self, function: Any, config: Any, seed: Optional[int],
                mode: Optional[Tuple[str, ...]], experiment_id: str, db: Optional[str],
                name: Optional[str]) -> bytes:
        message = (self.function_bytes(function), dumps(config, "the config"), seed, mode,
                   experiment_id, db, name)
        return pickle.dumps(message, _PROTOCOL)


@dataclasses.dataclass
class Outcome:
    """What a process task's report means: status, result, error text, the exception
    (or its type names) for the retry decision, and the log_metrics rows of a task in a
    batch without db."""

    status: str
    result: Any = None
    error: Optional[str] = None
    exception: Optional[BaseException] = None
    type_names: Sequence[str] = ()
    metrics: List[Dict[str, Any]] = dataclasses.field(default_factory=list)


def signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def death(exit_code: int) -> str:
    """Why a worker process ended without answering."""
    if exit_code >= 0:
        return f"worker died: exit code {exit_code}"
    name = signal_name(-exit_code)
    if -exit_code == signal.SIGKILL:
        return f"worker died: killed by {name} (out of memory?)"
    return f"worker died: signal {name}"


def decode_reply(data: bytes) -> Outcome:
    """The outcome a worker's reply frame describes."""
    try:
        reply = pickle.loads(data)
    except Exception as exc:
        return Outcome("failed", error=f"the worker's reply could not be unpickled here: "
                                       f"{type(exc).__name__}: {exc}")
    kind = reply[0]
    if kind == "ok":
        return Outcome("completed", result=reply[1], metrics=list(reply[2] or ()))
    if kind == "init_error":
        return Outcome("failed", error=f"worker_init failed in the worker process: {reply[1]}")
    _, exception_bytes, names, text, metrics = reply
    exception = None
    if exception_bytes is not None:
        try:
            exception = pickle.loads(exception_bytes)
        except Exception:
            exception = None
    return Outcome("failed", error=text, exception=exception, type_names=tuple(names),
                   metrics=list(metrics or ()))
