"""xetrack's named constants (``TRACKER_CONSTANTS``, ``SCHEMA_PARAMS``, ...) under a second
name: xetrack keeps them in ``xetrack.config``, which :mod:`xetrack_c.config` mirrors."""

from xetrack_c.config import (  # noqa: F401  (re-exported)
    CONSTANTS,
    DEFAULTS,
    LOGURU_PARAMS,
    SCHEMA_PARAMS,
    TRACKER_CONSTANTS,
)

__all__ = ["CONSTANTS", "DEFAULTS", "LOGURU_PARAMS", "SCHEMA_PARAMS", "TRACKER_CONSTANTS"]
