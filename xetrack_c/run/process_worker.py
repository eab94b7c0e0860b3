"""The worker process of ``run_multiple(..., backend="process")``, and its warm server.

A process's first process batch starts its warm server, which later batches reuse: the C
pool (``csrc/procpool.c``) spawns the worker command
(:func:`xetrack_c.run.process_tasks.worker_command`: ``python -S -c`` loading this module
from its file, then :func:`main`) with ``--server``, with ``xt_spawn`` (``csrc/spawner.c``:
a new interpreter, never a fork of the threaded parent), stdin from ``/dev/null`` and fd 3
its control socket. It loads xetrack_c's C core and serves in C (``csrc/procserver.c``).
Each batch first hands it a frame in a memory file, the pickle of ``{"sys_path": [...],
"cwd": str, "environ": {...}, "functions": [bytes, ...]}``: it takes that ``sys.path``,
working directory and environment, unpickles the batch's functions (importing their
modules) and freezes its objects out of the collector's reach (:func:`_load`). Then it
forks workers for the batch: each is a fork of this warm interpreter, in a process group
of its own, SIGKILLed when the server dies, with its pipes on fds 3 and 4 and the
server's functions already loaded. A server whose imported modules changed on disk
since (an edited task module) refuses to fork; the pool retires it and the next batch
starts a new one, so workers run the code on disk when the batch started. The server
exits at the end of its control socket, which comes when the parent dies; the parent
SIGKILLs it at its interpreter's exit, and once no batch uses it after retiring it. Importing a function that starts threads makes the server refuse to
fork; the pool then retires it and starts that batch's workers cold, as below.

A cold worker (no server, or one that refused or died) is started by the pool with
the same command without ``--server``, in a process group of its own, stdin from
``/dev/null`` and the parent's stdout and stderr, set before the exec to be SIGKILLed when
its parent dies. Forked or cold, a worker reads frames on fd 3 and answers on fd 4; a
frame is an 8-byte little-endian length, then that many bytes.

* The first frame is the batch's init: the pickle of ``{"sys_path": [...],
  "worker_init": bytes or None}``. ``sys.path`` becomes the parent's (``-S`` skipped the
  ``site`` module: the parent's path already holds what it added), then ``worker_init`` is
  unpickled and called once.
* Each further frame is a task: the pickle of ``(function_bytes, config_bytes, seed, mode,
  experiment_id, db, name)``. The function is called as the thread backend calls it, inside
  the child API's task context; the reply frame is the pickle of ``("ok", value, metrics)``,
  ``("error", exception_bytes or None, type_names, text, metrics)`` or, when
  ``worker_init`` raised, ``("init_error", text)`` for every task of this worker.
  ``metrics`` are the task's ``log_metrics`` rows when ``db`` is None (no file is
  written then), else ``[]``.

It ends at the end of its input, when the batch is over (or, if the server or its parent
died, by the parent-death signal, even in the middle of a task).

A cold worker imports nothing of xetrack_c until a task does: it starts in about the time
of the interpreter plus the C pickler. The child API's context is set through
:mod:`xetrack_c.run.child` when that module is loaded; when a task imports it for the first
time, the module takes the running task over from :data:`current_task` as it loads.
"""

from __future__ import annotations

# The C pickler itself: the pickle module would also import re and enum (start-up time).
import _pickle as pickle
import os
import sys

#: (experiment_id, config, seed, db, name, metrics_table, metrics_sink) of the task
#: running while xetrack_c.run.child is not loaded yet, else None.
current_task = None
#: The table log_metrics appends to (task_info.DEFAULT_METRICS_TABLE, not imported here).
_METRICS_TABLE = "metrics"

_HEADER_SIZE = 8  # a frame's length: 8 bytes, little-endian
_PROTOCOL = 5  # pickle.HIGHEST_PROTOCOL of every Python this package supports
_CONTROL_FD = 3  # the warm server's control socket (fd 3 is a worker's input after the fork)
_IN_FD = 3
_OUT_FD = 4
#: Characters of traceback kept in an error reply (as the thread backend keeps).
_TAIL_CHARS = 2000


def _read_frame(stream: object) -> bytes | None:
    header = stream.read(_HEADER_SIZE)
    if len(header) < _HEADER_SIZE:
        return None
    size = int.from_bytes(header, "little")
    data = stream.read(size)
    return data if len(data) == size else None


def _write_frame(data: bytes) -> None:
    view = memoryview(len(data).to_bytes(_HEADER_SIZE, "little") + data)
    while view:
        written = os.write(_OUT_FD, view)
        view = view[written:]


def _describe(exc: BaseException) -> str:
    import traceback

    head = f"{type(exc).__name__}: {exc}"
    trace = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    if len(trace) > _TAIL_CHARS:
        trace = "..." + trace[-_TAIL_CHARS:]
    return f"{head}\n{trace}".rstrip()


def _type_names(exc: BaseException) -> list[str]:
    return [f"{cls.__module__}.{cls.__qualname__}" for cls in type(exc).__mro__]


def _error_reply(exc: BaseException, metrics: list) -> bytes:
    try:
        exception: bytes | None = pickle.dumps(exc, _PROTOCOL)
    except Exception:
        exception = None
    reply = ("error", exception, _type_names(exc), _describe(exc))
    try:
        return pickle.dumps(reply + (metrics,), _PROTOCOL)
    except Exception:
        return pickle.dumps(reply + ([],), _PROTOCOL)


#: The batch's functions the warm server loaded, by their pickle: a forked worker's copy.
_loaded: dict[bytes, object] = {}


def _set_path(path: list) -> None:
    """Take the parent's ``sys.path``, keeping this copy of xetrack_c importable."""
    sys.path[:] = list(path)
    # .../root/xetrack_c/run/process_worker.py -> .../root
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    if root not in sys.path:
        sys.path.append(root)


def _load_core() -> object:
    """xetrack_c's C core, loaded without the package (whose import costs more than the
    core): the server needs only its fork loop. A worker that imports xetrack_c later
    finds the core already loaded."""
    from importlib.machinery import EXTENSION_SUFFIXES, ExtensionFileLoader, ModuleSpec

    package = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    for suffix in EXTENSION_SUFFIXES:
        path = os.path.join(package, "_core" + suffix)
        if os.path.exists(path):
            loader = ExtensionFileLoader("xetrack_c._core", path)
            spec = ModuleSpec("xetrack_c._core", loader, origin=path)
            core = loader.create_module(spec)
            core.__spec__, core.__loader__, core.__file__ = spec, loader, path
            sys.modules["xetrack_c._core"] = core
            loader.exec_module(core)
            return core
    raise ImportError(f"xetrack_c's C core is not in {package}")


def _read_all(fd: int) -> bytes:
    """Everything left to read on ``fd`` (a memory file), which is then closed."""
    parts = []
    try:
        while True:
            part = os.read(fd, 1 << 20)
            if not part:
                return b"".join(parts)
            parts.append(part)
    finally:
        os.close(fd)


#: Bytes of pickled functions the server keeps loaded across batches at most; past it,
#: the oldest are dropped (a worker loads a function the server no longer has itself).
_KEPT_FUNCTION_BYTES = 1 << 20


#: The modification time (ns) of each imported module's file when the server first saw it.
_module_times: dict[str, int] = {}


def _note_modules() -> None:
    """Remember the modification time of every imported module's file not seen yet."""
    for module in list(sys.modules.values()):
        path = getattr(module, "__file__", None)
        if isinstance(path, str) and path not in _module_times:
            try:
                _module_times[path] = os.stat(path).st_mtime_ns
            except OSError:
                pass


def _modules_changed() -> bool:
    """Whether the file of a module this server imported changed since: its forks would
    run the old code where a new interpreter would import the new."""
    for path, seen in _module_times.items():
        try:
            if os.stat(path).st_mtime_ns != seen:
                return True
        except OSError:
            return True
    return False


def _load(fd: int) -> bool:
    """Load a batch's frame (the memory file ``fd``): take the parent's ``sys.path``,
    working directory and environment, unpickle the batch's functions (importing their
    modules; one that fails is left to the workers, whose tasks then report the error;
    where they use xetrack_c, its child API is loaded too), and freeze what is loaded out
    of the collector's reach. False, loading nothing, when a module it imported changed
    on disk since: the server must then be replaced."""
    import gc

    data = _read_all(fd)
    if _modules_changed():
        return False
    settings = pickle.loads(data)
    _set_path(settings["sys_path"])
    try:
        os.chdir(settings["cwd"])
    except OSError:
        pass  # a cold worker would fail the same way; the forks keep the server's folder
    environ = settings["environ"]
    if dict(os.environ) != environ:
        os.environ.clear()
        os.environ.update(environ)
    for function_bytes in settings["functions"]:
        if function_bytes in _loaded:
            _loaded[function_bytes] = _loaded.pop(function_bytes)  # the most recent, last
            continue
        try:
            _loaded[function_bytes] = pickle.loads(function_bytes)
        except BaseException:  # noqa: BLE001 - each worker loads it again and reports why
            pass
    total = sum(len(kept) for kept in _loaded)
    for kept in list(_loaded):
        if total <= _KEPT_FUNCTION_BYTES:
            break
        total -= len(kept)
        del _loaded[kept]
    if "xetrack_c" in sys.modules:  # the functions use xetrack_c: its child API, once for all
        import xetrack_c.run.child  # noqa: F401
    _note_modules()
    _flush_streams()
    gc.freeze()  # the server's objects stay out of the workers' collections (fewer page copies)
    return True


def _serve() -> bool:
    """Be this process's warm server: load each batch's frame, fork workers for it. True
    in each forked worker, False in the server once its control socket ends (or when it
    cannot serve: the pool then starts workers cold)."""
    try:
        core = _load_core()
    except ImportError:
        return False
    refuse = 0
    while True:
        answer = core.serve_worker_forks(_CONTROL_FD, refuse)
        if answer is True:
            break
        if answer is False:
            return False
        if not refuse and not _load(answer):
            import errno

            refuse = errno.ESTALE  # the pool retires this server; the next batch starts one
        elif refuse:
            os.close(answer)
    numpy_random = sys.modules.get("numpy.random")
    if numpy_random is not None:
        numpy_random.seed()  # fresh entropy, as a new interpreter has (random reseeds itself)
    return True


class _Worker:
    """One worker process's state: its functions, and whether worker_init failed."""

    def __init__(self) -> None:
        self.functions: dict[bytes, object] = dict(_loaded)
        self.init_error: str | None = None
        self.metrics: list = []  # log_metrics rows of the current task, without db

    def start(self, init: bytes) -> None:
        settings = pickle.loads(init)
        _set_path(settings["sys_path"])
        worker_init = settings.get("worker_init")
        if worker_init is not None:
            try:
                pickle.loads(worker_init)()
            except BaseException as exc:  # reported with every task of this worker
                self.init_error = _describe(exc)

    def run(self, frame: bytes) -> bytes:
        if self.init_error is not None:
            return pickle.dumps(("init_error", self.init_error), _PROTOCOL)
        self.metrics = []
        try:
            value = self._call(frame)
        except BaseException as exc:  # the task's failure, reported to the parent
            return _error_reply(exc, self.metrics)
        try:
            return pickle.dumps(("ok", value, self.metrics), _PROTOCOL)
        except Exception as exc:
            error = TypeError(
                f"the return value ({type(value).__name__}) or a logged metric could not be "
                f"pickled to send it back from the worker process: {exc}; return and log "
                "picklable values or use backend='thread'"
            )
            return _error_reply(error, [])

    def _call(self, frame: bytes) -> object:
        global current_task

        function_bytes, config_bytes, seed, mode, experiment_id, db, name = pickle.loads(frame)
        function = self.functions.get(function_bytes)
        if function is None:
            function = self.functions[function_bytes] = pickle.loads(function_bytes)
        config = pickle.loads(config_bytes)
        task = (experiment_id, config, seed, db, name, _METRICS_TABLE,
                self.metrics if db is None else None)
        child = sys.modules.get("xetrack_c.run.child")
        if child is not None:
            token = child.current_task.set(child.TaskInfo(*task))
        else:
            current_task = task
        try:
            # As tasks.call_in_mode, which this module cannot import: a worker process
            # loads nothing of xetrack_c before a task needs it.
            if mode is None:
                return function(config)
            kwargs: dict[str, object] = {}
            if "config" in mode:
                kwargs["config"] = config
            if "seed" in mode:
                kwargs["seed"] = seed
            if "rng" in mode:
                from xetrack_c.seeding import make_rng

                kwargs["rng"] = make_rng(seed)
            return function(**kwargs)
        finally:
            if child is not None:
                child.current_task.reset(token)
            else:
                current_task = None
                loaded = sys.modules.get("xetrack_c.run.child")
                if loaded is not None:  # imported by the task: it took the task over
                    loaded.current_task.set(None)


def _flush_streams() -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            if stream is not None:
                stream.flush()
        except (OSError, ValueError):
            pass


def _exit() -> None:
    """End as interpreter shutdown would, without finalising every object: wait for
    non-daemon threads, run atexit handlers, flush open files, then ``os._exit(0)``."""
    import atexit
    import gc
    import io

    threading = sys.modules.get("threading")
    if threading is not None:
        for thread in threading.enumerate():
            if thread is not threading.main_thread() and not thread.daemon:
                thread.join()
    atexit._run_exitfuncs()
    for obj in gc.get_objects():
        if isinstance(obj, io.IOBase):
            try:
                if not obj.closed and obj.writable():
                    obj.flush()
            except (OSError, ValueError):
                pass
    _flush_streams()
    os._exit(0)


def main() -> None:
    """Serve tasks until the end of input (``--server``: fork workers that do)."""
    import faulthandler

    faulthandler.enable()  # a crashing task leaves its traceback on stderr
    if sys.argv[1:] == ["--server"] and not _serve():
        _flush_streams()
        os._exit(0)
    stream = open(_IN_FD, "rb", buffering=1 << 16, closefd=False)
    init = _read_frame(stream)
    if init is None:
        return
    worker = _Worker()
    worker.start(init)
    _flush_streams()
    while True:
        frame = _read_frame(stream)
        if frame is None:
            break
        reply = worker.run(frame)
        _flush_streams()
        try:
            _write_frame(reply)
        except BrokenPipeError:
            break  # the parent is gone
    _exit()
