"""A fork server for script tasks: a warm interpreter that forks one child per script.

Started once per executor worker (``python .../xetrack_c/run/forkserver.py``, by the C core's
spawn: never a fork of a threaded process, and SIGKILLed when that worker's thread ends, at
the latest when the executor's process dies), it reads launch requests on stdin and answers
on stdout:

- request: a 4-byte little-endian length, then UTF-8 JSON
  ``{"argv": [script, *args], "env": {...}, "cwd": str, "stdout": path, "stderr": path}``;
- answer: the child's pid as a 4-byte little-endian signed int (``-errno`` when the fork
  failed), then, when the child has ended, its raw wait status as a 4-byte int. The ended
  child is reaped only when the next request (or end of input) arrives, so the executor can
  still signal its process group without hitting a reused pid.

The child runs the script as ``python script args`` would, minus interpreter start-up: SIGKILL
when the server dies (Linux ``PR_SET_PDEATHSIG``, set right after the fork), its own process
group, the request's working directory and environment, stdin from /dev/null,
stdout and stderr to the request's files, ``sys.argv`` and ``sys.path[0]`` set, the script
compiled and run as the ``__main__`` module, then the end of a normal interpreter exit
(non-daemon threads joined, atexit handlers run, open files flushed). The server
exits when its stdin closes (the executor is gone).
"""

from __future__ import annotations

import json
import os
import signal
import struct
import sys
from typing import Any

_INT = struct.Struct("<i")
_PR_SET_PDEATHSIG = 1
#: libc's prctl (loaded by main(), before the first fork), or None.
_prctl: Any = None


def _load_prctl() -> Any:
    """libc's ``prctl``, or None where there is none (loaded once by the server, so that a
    child pays nothing for it)."""
    try:
        import ctypes

        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (ImportError, OSError, AttributeError):
        return None
    prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong,
                      ctypes.c_ulong]
    prctl.restype = ctypes.c_int
    return prctl


def _die_with(server: int) -> None:
    """In a forked child: be SIGKILLed when the server (pid ``server``) dies, so that the
    script dies with the executor (which the server dies with); a server that died before
    the ``prctl`` took effect leaves nothing to run for."""
    if _prctl is not None:
        _prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != server:
        os._exit(1)


def _read_exact(fd: int, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = os.read(fd, size - len(data))
        if not chunk:
            return b""
        data += chunk
    return data


def _write_int(value: int) -> None:
    os.write(1, _INT.pack(value))


def _wait_status(pid: int) -> int:
    """Wait for ``pid`` to end, leaving it a zombie; its raw wait status."""
    while True:
        try:
            info = os.waitid(os.P_PID, pid, os.WEXITED | os.WNOWAIT)
            break
        except InterruptedError:
            continue
    if info.si_code == os.CLD_EXITED:
        return (info.si_status & 0xFF) << 8
    return info.si_status | (0x80 if info.si_code == os.CLD_DUMPED else 0)


def serve() -> dict[str, Any] | None:
    """Serve requests until stdin closes (returns None), or return the request in a child.

    An ended child stays a zombie until the next request arrives, so its pid (and process
    group id) cannot be reused while the executor may still signal its group."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the executor's to handle
    server = os.getpid()
    previous = 0
    while True:
        header = _read_exact(0, 4)
        if previous:
            os.waitpid(previous, 0)
            previous = 0
        if not header:
            return None
        request = json.loads(_read_exact(0, _INT.unpack(header)[0]))
        try:
            pid = os.fork()
        except OSError as exc:
            _write_int(-(exc.errno or 1))
            continue
        if pid == 0:
            _die_with(server)
            return request
        _write_int(pid)
        _write_int(_wait_status(pid))
        previous = pid


def _enter_child(request: dict[str, Any]) -> str:
    """Set up the forked child as a fresh ``python script`` process; returns the script path."""
    os.setpgid(0, 0)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    for name in ("SIGTERM", "SIGPIPE", "SIGXFSZ"):
        signal.signal(getattr(signal, name), signal.SIG_DFL)
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    devnull = os.open(os.devnull, os.O_RDONLY)
    out = os.open(request["stdout"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    err = os.open(request["stderr"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    for source, target in ((devnull, 0), (out, 1), (err, 2)):
        os.dup2(source, target)
        os.close(source)
    script = request["argv"][0]
    sys.argv = list(request["argv"])
    extra = [p for p in request["env"].get("PYTHONPATH", "").split(os.pathsep) if p]
    home = script if os.path.isdir(script) else os.path.dirname(os.path.abspath(script))
    sys.path[:] = [home] + extra + sys.path
    return script


def _exit_code(exc: SystemExit) -> int:
    """The exit status the interpreter gives ``sys.exit(code)``."""
    if exc.code is None:
        return 0
    if isinstance(exc.code, int):
        return exc.code & 0xFF
    print(exc.code, file=sys.stderr)
    return 1


def _run_main(script: str) -> None:
    """Run ``script`` as ``__main__``, as ``python script`` does."""
    if not os.path.isfile(script):  # a directory or zip file with a __main__.py
        import runpy

        runpy.run_path(script, run_name="__main__")
        return
    from importlib.machinery import SourceFileLoader
    from types import ModuleType

    main = ModuleType("__main__")
    main.__dict__.update(__file__=script, __cached__=None, __builtins__=__builtins__,
                         __loader__=SourceFileLoader("__main__", script))
    sys.modules["__main__"] = main
    with open(script, "rb") as source:
        code = compile(source.read(), script, "exec")
    exec(code, main.__dict__)


def _run_script(script: str) -> int:
    try:
        _run_main(script)
    except SystemExit as exc:
        return _exit_code(exc)
    except KeyboardInterrupt:
        raise
    except BaseException as exc:  # reported as the interpreter would, from the script's frames
        import traceback

        tb = exc.__traceback__
        while tb is not None and tb.tb_frame.f_code.co_filename != script:
            tb = tb.tb_next
        traceback.print_exception(type(exc), exc, tb or exc.__traceback__)
        return 1
    return 0


def _finish(code: int) -> None:
    """End the child as interpreter shutdown would, without finalising every object.

    A full shutdown writes to every object inherited from the server, copying each memory
    page (copy-on-write) for nothing. Instead: wait for non-daemon threads, run atexit
    handlers, flush every file object the script left open, then ``os._exit``."""
    import atexit
    import gc
    import io
    import threading

    for thread in threading.enumerate():
        if thread is not threading.main_thread() and not thread.daemon:
            thread.join()
    atexit._run_exitfuncs()
    for obj in gc.get_objects():  # the server froze its own objects: these are the script's
        if isinstance(obj, io.IOBase):
            try:
                if not obj.closed and obj.writable():
                    obj.flush()
            except (OSError, ValueError):
                pass
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError, AttributeError):
            pass
    os._exit(code)


def main() -> None:
    global _prctl
    import gc

    if sys.path and sys.path[0] == os.path.dirname(os.path.abspath(__file__)):
        del sys.path[0]  # started as a file: its folder is no place to import from
    # What every child needs, imported once here instead of once per script.
    import atexit  # noqa: F401
    import importlib.machinery  # noqa: F401
    import io  # noqa: F401
    import threading  # noqa: F401
    import traceback  # noqa: F401
    import types  # noqa: F401

    try:  # scripts run by run_multiple read their configuration through the child API
        import xetrack_c.params  # noqa: F401  (loads xetrack_c.run.child)
    except ImportError:
        pass
    _prctl = _load_prctl()
    gc.freeze()  # the server's objects stay out of the children's collections (fewer page copies)
    request = serve()
    if request is None:
        return
    script = _enter_child(request)
    try:
        code = _run_script(script)
    except KeyboardInterrupt:
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGINT)
        code = 130
    _finish(code)


if __name__ == "__main__":
    main()
