"""``run_multiple`` and everything under it: fan experiments out over workers.

Public: :func:`run_multiple`, :class:`ExperimentSpec`, :class:`ExperimentResult` and
:func:`worker_cache` (also importable from ``xetrack_c``), and the child API of
:mod:`xetrack_c.params` (``get_param``, ``log_metrics``, ...). The modules, bottom to top
(each imports only those above it in this list):

- ``task_info``: what the child API knows of one experiment;
- ``types``: specs, results and the batch's options, with their checks;
- ``retry``, ``workers``, ``progress``, ``experiments``: retry policy and start rate,
  per-worker state, the progress display, the experiments and attempts tables (with
  ``result_data``: return values as columns, metrics rows read back);
- ``interrupts``: Ctrl-C held back while an outcome is recorded, its one-line message;
- ``child``: the child API (config, seed and ``log_metrics`` inside a task);
- ``tasks``: calling a task's function, describing how a task ended;
- ``accounting``: one final record per spec, attempts rows, metrics without ``db``;
- ``process_tasks``, ``process_worker``: ``backend="process"`` (the parent's side, and the
  warm server and its worker processes); ``forkserver``: the warm interpreter of ``launcher="forkserver"``;
- ``batch``: one batch on the C worker pool (``xetrack_c._core.run_tasks``);
- ``remote_buffer``, ``remote_task``, ``remote_dask``, ``remote_submitit``, ``task_cache``,
  ``remote``: the executor path (``run_multiple(executor=...)``);
- ``runner``: :func:`run_multiple` itself.

Importing this package loads none of them; each public name loads its module on first use.
"""

from importlib import import_module
from typing import Any

# Public name -> module that defines it, imported on first access (PEP 562).
_LAZY = {
    "run_multiple": "xetrack_c.run.runner",
    "ExperimentSpec": "xetrack_c.run.types",
    "ExperimentResult": "xetrack_c.run.types",
    "worker_cache": "xetrack_c.run.workers",
}

__all__ = list(_LAZY)


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'xetrack_c.run' has no attribute {name!r}")
    value = getattr(import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list:
    return sorted(set(globals()) | set(_LAZY))
