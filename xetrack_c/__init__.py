"""xetrack_c: fast, safe experiment tracking with a C core."""

from xetrack_c._core import CorruptDatabaseError, Error, StorageError

__all__ = ["Error", "StorageError", "CorruptDatabaseError"]
__version__ = "0.1.0"
