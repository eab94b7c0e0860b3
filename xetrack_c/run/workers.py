"""Per-worker state of ``run_multiple``: :func:`worker_cache` and the ``worker_init`` record.

A thread-local, so that with the thread backend each worker thread has its own, and with
``backend="process"`` each worker process (whose tasks run on its main thread) has one.
"""

from __future__ import annotations

import threading
from typing import Any, Dict

__all__ = ["worker_cache"]

#: Per-thread state: ``cache`` (worker_cache) and ``init`` (the batch whose worker_init ran here).
worker_state = threading.local()


def worker_cache() -> Dict[str, Any]:
    """A dict private to the worker running the current task.

    It survives between the tasks that worker runs, so a task can keep a loaded model
    there for the next one: ``cache = worker_cache(); model = cache.get("model") or
    cache.setdefault("model", load())``. With the thread backend it belongs to the worker
    thread (for one batch); with ``backend="process"`` to the worker process (for its
    life). Specs with the same ``group`` run on one worker, so they share it. Outside a
    task it is the calling thread's own dict.
    """
    cache = getattr(worker_state, "cache", None)
    if cache is None:
        cache = worker_state.cache = {}
    return cache
