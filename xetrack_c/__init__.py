"""xetrack_c: fast, safe experiment tracking with a C core.

``import xetrack_c`` stays light: pandas and numpy load only when a DataFrame or array is
asked for.
"""

from xetrack_c._core import CorruptDatabaseError, Error, StorageError
from xetrack_c._dataframe import get_backend, set_backend
from xetrack_c.reader import Reader, TableNotFoundError
from xetrack_c.seeding import SeedPolicy, derive_seed, hash_identifier, make_rng, reproducible_seed
from xetrack_c.tracker import Tracker

__all__ = [
    "Tracker",
    "Reader",
    "set_backend",
    "get_backend",
    "SeedPolicy",
    "derive_seed",
    "hash_identifier",
    "reproducible_seed",
    "make_rng",
    "Error",
    "StorageError",
    "CorruptDatabaseError",
    "TableNotFoundError",
]
__version__ = "0.1.0"
