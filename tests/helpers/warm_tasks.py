"""Task functions for the warm-server tests of backend="process" (tests/test_process_server.py).

``LOADED_IN`` is the pid of the process that imported this module: in a worker forked from
the batch's warm server it is the server's pid, in a worker started cold the worker's own.
"""

from __future__ import annotations

import os
import signal
import time

LOADED_IN = os.getpid()


def server_marker(pid: int) -> bool:
    """Whether ``pid`` runs the worker module as a warm server (its argv ends in --server)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            argv = f.read().split(b"\0")
    except OSError:
        return False
    return b"--server" in argv and any(b"process_worker" in arg for arg in argv)


def where(config):
    """{pid, ppid, pgid, loaded_in, parent_is_server, x}: how this worker was started."""
    ppid = os.getppid()
    return {"pid": os.getpid(), "ppid": ppid, "pgid": os.getpgid(0), "loaded_in": LOADED_IN,
            "parent_is_server": server_marker(ppid), "x": config["x"]}


def crash_or_where(config):
    """Ends its worker for x in config["crash"] (SIGKILL for odd x, os._exit(3) for even);
    else where(config)."""
    if config["x"] in config["crash"]:
        if config["x"] % 2:
            os.kill(os.getpid(), signal.SIGKILL)
            time.sleep(30)
        os._exit(3)
    return where(config)


def kill_server_or_where(config):
    """For x == config["kill"]: SIGKILLs this worker's warm server (its parent), then waits
    for the parent-death signal to end this worker too; else where(config)."""
    if config["x"] == config["kill"]:
        os.kill(os.getppid(), signal.SIGKILL)
        time.sleep(30)
    return where(config)


def record_and_sleep(config):
    """Writes "pid ppid" to config["folder"]/<pid> (whole, by rename), then sleeps
    config["sleep"] seconds."""
    path = os.path.join(config["folder"], str(os.getpid()))
    with open(path + ".tmp", "w") as f:
        f.write(f"{os.getpid()} {os.getppid()}")
    os.rename(path + ".tmp", path)
    time.sleep(config["sleep"])
    return config["x"]


def inherited(config):
    """What this worker and its parent hold: {"server_threads": threads of the parent
    process, "fds": the paths this worker's open descriptors point to}."""
    fds = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            fds.append(os.readlink(f"/proc/self/fd/{fd}"))
        except OSError:
            pass
    return {"server_threads": len(os.listdir(f"/proc/{os.getppid()}/task")), "fds": fds,
            "parent_is_server": server_marker(os.getppid())}


def cwd_and_env(config):
    """(working directory, $XT_PROC_KEEP_PROBE, whether the parent is a warm server)."""
    return (os.getcwd(), os.environ.get("XT_PROC_KEEP_PROBE"),
            server_marker(os.getppid()))


def shout(config):
    """Prints "out <x>" on stdout and "err <x>" on stderr; returns where(config)."""
    import sys

    # one write() per line: two workers share the descriptors, and print() may write the
    # text and its newline separately, which another worker's line can split
    sys.stdout.write(f"out {config['x']}\n")
    sys.stdout.flush()
    sys.stderr.write(f"err {config['x']}\n")
    sys.stderr.flush()
    return where(config)
