"""xetrack_c: fast, safe experiment tracking with a C core.

``import xetrack_c`` stays light: pandas and numpy load only when a DataFrame or array is
asked for.
"""

from xetrack_c._core import CorruptDatabaseError, Error, StorageError
from xetrack_c._dataframe import get_backend, set_backend
from xetrack_c.reader import Reader
from xetrack_c.tracker import Tracker

__all__ = [
    "Tracker",
    "Reader",
    "set_backend",
    "get_backend",
    "Error",
    "StorageError",
    "CorruptDatabaseError",
]
__version__ = "0.1.0"
