"""xetrack_c: fast, safe experiment tracking with a C core.

``import xetrack_c`` stays light: only the Tracker loads at import; the Reader, the
DataFrame backends and the seeding API load on first use, pandas and numpy only when a
DataFrame or array is asked for.
"""

from __future__ import annotations

from importlib import import_module as _import_module

from xetrack_c import _core  # noqa: F401  (an attribute even where a server preloaded it)
from xetrack_c._core import CorruptDatabaseError, Error, StorageError
from xetrack_c.tracker import Tracker

# Public name -> module that defines it, imported on first access (PEP 562).
_LAZY = {
    "Reader": "xetrack_c.reader",
    "TableNotFoundError": "xetrack_c.reader",
    "set_backend": "xetrack_c._dataframe",
    "get_backend": "xetrack_c._dataframe",
    "SeedPolicy": "xetrack_c.seeding",
    "derive_seed": "xetrack_c.seeding",
    "hash_identifier": "xetrack_c.seeding",
    "reproducible_seed": "xetrack_c.seeding",
    "make_rng": "xetrack_c.seeding",
    "get_param": "xetrack_c.run.child",
    "get_params": "xetrack_c.run.child",
    "get_experiment_id": "xetrack_c.run.child",
    "get_experiment_name": "xetrack_c.run.child",
    "get_seed": "xetrack_c.run.child",
    "log_metrics": "xetrack_c.run.child",
    "run_multiple": "xetrack_c.run.runner",
    "ExperimentSpec": "xetrack_c.run.types",
    "ExperimentResult": "xetrack_c.run.types",
    "worker_cache": "xetrack_c.run.workers",
    "copy": "xetrack_c.merge",
    "SCHEMA_PARAMS": "xetrack_c.config",
    "TRACKER_CONSTANTS": "xetrack_c.config",
    "df_to_dict_records": "xetrack_c._dataframe",
}

__all__ = ["Tracker", "Error", "StorageError", "CorruptDatabaseError", *_LAZY]
__version__ = "0.1.0"


def __getattr__(name: str) -> object:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'xetrack_c' has no attribute {name!r}")
    value = getattr(_import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list:
    # The documented API only (docs/reference.md): no imported helpers or submodules.
    return sorted([*__all__, "__version__"])
