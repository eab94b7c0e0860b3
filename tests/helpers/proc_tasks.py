"""Task functions for the process-backend tests: importable by worker processes (the tests
put this folder on sys.path, which worker processes inherit)."""

from __future__ import annotations

import os
import signal
import threading
import time

import xetrack_c


def double(config):
    return config["x"] * 2


def identify(config):
    """(pid, thread id, x): which worker ran this task."""
    return os.getpid(), threading.get_ident(), config.get("x")


def segfault(config):
    import ctypes

    ctypes.string_at(0)


def hard_exit(config):
    os._exit(config.get("code", 3))


def killed(config):
    os.kill(os.getpid(), signal.SIGKILL)
    time.sleep(60)


def allocate_until_refused(config):
    """Lower this worker's address-space limit, then allocate until it is refused."""
    import resource

    with open(f"/proc/{os.getpid()}/statm") as statm:
        size = int(statm.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    resource.setrlimit(resource.RLIMIT_AS, (size + 64 * 2**20, hard))
    blocks = []
    while True:
        blocks.append(bytearray(16 * 2**20))


def sleep_forever(config):
    time.sleep(600)


def with_params(config, seed, rng):
    return {
        "param": xetrack_c.get_param("x"),
        "id": xetrack_c.get_experiment_id(),
        "seed": seed,
        "seed_api": xetrack_c.get_seed(),
        "draw": rng.random(),
        "pid": os.getpid(),
    }


def log_and_return(config):
    xetrack_c.log_metrics({"x": config["x"], "pid": os.getpid()})
    return config["x"]


def warm(config):
    """Counts the tasks this worker ran and when its model was loaded."""
    cache = xetrack_c.worker_cache()
    if "model" not in cache:
        cache["model"] = {"loaded_by": config["x"], "pid": os.getpid()}
        cache["count"] = 0
    cache["count"] += 1
    return cache["model"]["loaded_by"], cache["count"], os.getpid(), threading.get_ident()


def init_worker():
    cache = xetrack_c.worker_cache()
    cache["inits"] = cache.get("inits", 0) + 1
    cache["init_pid"] = os.getpid()


def read_init(config):
    cache = xetrack_c.worker_cache()
    return cache.get("inits"), cache.get("init_pid"), os.getpid()


def failing_init():
    raise RuntimeError("no GPU here")


def append_line(path: str, text: str) -> int:
    with open(path, "a") as f:
        f.write(text + "\n")
    with open(path) as f:
        return len(f.read().splitlines())


def flaky(config):
    """Raises config["error"] on the first config["failures"] attempts (counted in a file)."""
    attempt = append_line(config["log"], str(config["x"]))
    if attempt <= config["failures"]:
        raise {"timeout": TimeoutError, "value": ValueError, "rate": RateLimitError}[
            config["error"]](f"attempt {attempt}")
    return attempt


class RateLimitError(Exception):
    """A mock API's 429."""


def always_fails(config):
    append_line(config["log"], str(config["x"]))
    raise PermissionError("invalid API key")


def record_start(config):
    append_line(config["log"], f"{config['x']} {time.monotonic()}")
    return config["x"]


def _wait_for_rows(db: str, count: int) -> None:
    """Wait until the experiments table of ``db`` has ``count`` rows (the rows of the tasks
    before this one, recorded by the orchestrator as they finish)."""
    import sqlite3

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            with sqlite3.connect(db, timeout=10) as conn:
                if conn.execute("SELECT COUNT(*) FROM experiments").fetchone()[0] >= count:
                    return
        except sqlite3.OperationalError:
            pass  # no table yet
        time.sleep(0.02)
    raise TimeoutError(f"{db} did not get {count} experiment rows")


def parent_of(pid: int) -> int:
    """The parent pid of process ``pid`` (from /proc)."""
    with open(f"/proc/{pid}/stat", "rb") as f:
        return int(f.read().rsplit(b")", 1)[1].split()[1])


def is_warm_server(pid: int) -> bool:
    """Whether ``pid`` is a process backend's warm server (the worker module's --server)."""
    with open(f"/proc/{pid}/cmdline", "rb") as f:
        argv = f.read().split(b"\0")
    return b"--server" in argv and any(b"process_worker" in arg for arg in argv)


def orchestrator() -> int:
    """The pid of the process that runs this worker process's batch: the parent, or the
    parent's parent when the parent is the batch's warm server."""
    parent = os.getppid()
    return parent_of(parent) if is_warm_server(parent) else parent


def record_and_maybe_die(config):
    """Appends "x pid" to config["log"]; with config["die_once"] (a marker path that does not
    exist yet) it waits until the rows of the x tasks before it are in config["db"], creates
    the marker and kills the orchestrator with SIGKILL: the process running the batch
    when config["parent"] (from a worker process), else this process (a thread)."""
    append_line(config["log"], f"{config['x']} {os.getpid()}")
    marker = config.get("die_once")
    if marker and not os.path.exists(marker):
        _wait_for_rows(config["db"], config["x"])
        open(marker, "w").close()
        if config.get("parent"):
            os.kill(orchestrator(), signal.SIGKILL)
            return None  # the reply finds no reader; the worker then ends
        os.kill(os.getpid(), signal.SIGKILL)
        time.sleep(60)
    return config["x"]


def crash_some(config):
    """Crashes its worker process for the x values in config["crash"]; else (pid, x)."""
    if config["x"] in config["crash"]:
        if config["x"] % 2:
            segfault(config)
        os._exit(3)
    if config.get("sleep"):
        time.sleep(config["sleep"])
    return os.getpid(), config["x"]


def record_pid(folder: str) -> None:
    """Writes this process's parent pid into ``folder/<pid>``; the file appears whole (it is
    renamed into place)."""
    path = os.path.join(folder, str(os.getpid()))
    with open(path + ".tmp", "w") as f:
        f.write(str(os.getppid()))
    os.rename(path + ".tmp", path)


def record_pid_and_sleep(config):
    """Records this worker process's pid in config["folder"], then sleeps config["sleep"] s."""
    record_pid(config["folder"])
    time.sleep(config["sleep"])
    return config["x"]


_left_open = None


def mark_exit(folder: str) -> None:
    """worker_init: when the worker process ends, an atexit handler creates
    ``folder/<pid>.atexit``, and ``folder/<pid>.open``, left open with unflushed text, has
    that text only if open files are flushed at exit."""
    import atexit

    global _left_open
    pid = os.getpid()
    atexit.register(lambda: open(os.path.join(folder, f"{pid}.atexit"), "w").close())
    _left_open = open(os.path.join(folder, f"{pid}.open"), "w")
    _left_open.write("flushed at exit")
