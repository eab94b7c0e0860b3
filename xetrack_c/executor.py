"""``run_multiple`` and its types at their earlier public path, ``xetrack_c.executor``.

The code lives in :mod:`xetrack_c.run`; prefer ``from xetrack_c import run_multiple``.
"""

from xetrack_c.run.runner import run_multiple
from xetrack_c.run.types import STATUSES, ExperimentResult, ExperimentSpec
from xetrack_c.run.workers import worker_cache

__all__ = ["ExperimentSpec", "ExperimentResult", "run_multiple", "worker_cache", "STATUSES"]
