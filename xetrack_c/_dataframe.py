"""DataFrame backends: build a pandas or polars DataFrame from whole NumPy columns.

The C core hands over ``{column name: numpy.ndarray}`` (see ``_core.read_columns``); this
module turns that into a DataFrame of the chosen library without any per-row Python work.
Neither pandas nor polars is imported until a DataFrame is actually built.

The backend is process-wide (a module global, not a context variable), so
``set_backend("polars")`` also applies to threads started afterwards.
"""

from __future__ import annotations

import importlib.util
from typing import TYPE_CHECKING, Any, Dict, Optional

if TYPE_CHECKING:  # pragma: no cover
    import numpy

PANDAS = "pandas"
POLARS = "polars"
AUTO = "auto"
BACKENDS = (PANDAS, POLARS, AUTO)

_backend: Optional[str] = None


def _detect_backend() -> str:
    """Return pandas when it is installed, else polars; raise ImportError if neither is."""
    if importlib.util.find_spec(PANDAS) is not None:
        return PANDAS
    if importlib.util.find_spec(POLARS) is not None:
        return POLARS
    raise ImportError(
        "reading into a DataFrame needs pandas or polars: pip install pandas (or polars); "
        "Reader.to_arrays() works without either"
    )


def get_backend() -> str:
    """Return the DataFrame library in use: ``"pandas"`` or ``"polars"``.

    Until :func:`set_backend` is called this is pandas when installed, else polars.
    """
    global _backend
    if _backend is None:
        _backend = _detect_backend()
    return _backend


def set_backend(backend: str) -> None:
    """Choose the DataFrame library that ``to_df`` and friends return.

    Args:
        backend: ``"pandas"``, ``"polars"``, or ``"auto"`` (pandas if installed, else
            polars).

    Raises:
        ValueError: for any other name.
        ImportError: when the chosen library is not installed.
    """
    global _backend
    if backend == AUTO:
        _backend = _detect_backend()
        return
    if backend not in (PANDAS, POLARS):
        raise ValueError(
            f"unknown DataFrame backend {backend!r}; choose one of {', '.join(map(repr, BACKENDS))}"
        )
    if importlib.util.find_spec(backend) is None:
        raise ImportError(f"backend {backend!r} is not installed: pip install {backend}")
    _backend = backend


def frame_from_columns(
    columns: Dict[str, "numpy.ndarray"], backend: Optional[str] = None
) -> Any:
    """Build a DataFrame from whole columns.

    Args:
        columns: ``{name: 1-d numpy array}``, all of one length, in column order (the
            output of ``_core.read_columns``).
        backend: ``"pandas"`` or ``"polars"``; defaults to :func:`get_backend`.

    Returns:
        A ``pandas.DataFrame`` with a fresh ``RangeIndex`` and the dtypes
        ``pandas.read_sql_query`` would infer (object columns of str become pandas' string
        dtype, as pandas itself does), or a ``polars.DataFrame`` in which NaN in float
        columns (SQLite NULL) becomes null.
    """
    chosen = backend or get_backend()
    if chosen == PANDAS:
        return _pandas_frame(columns)
    if chosen == POLARS:
        return _polars_frame(columns)
    raise ValueError(f"unknown DataFrame backend {chosen!r}; choose 'pandas' or 'polars'")


def _pandas_frame(columns: Dict[str, "numpy.ndarray"]) -> Any:
    import pandas as pd

    if not columns:
        return pd.DataFrame()
    # The arrays are fresh and owned by nobody else, so pandas may keep them as they are.
    return pd.DataFrame(columns, copy=False)


def _polars_frame(columns: Dict[str, "numpy.ndarray"]) -> Any:
    import polars as pl

    series = []
    for name, values in columns.items():
        if values.dtype.kind == "f":
            # SQLite stores no NaN (it turns NaN into NULL), so NaN here always means NULL.
            series.append(pl.Series(name, values, nan_to_null=True))
        elif values.dtype.kind == "O":
            series.append(_polars_object_series(pl, name, values))
        else:
            series.append(pl.Series(name, values))
    return pl.DataFrame(series)


def _polars_object_series(pl: Any, name: str, values: "numpy.ndarray") -> Any:
    """A polars Series for an object column: String, Binary or Null when the values are
    uniform, else polars' Object dtype holding the Python values."""
    if len(values) == 0:
        return pl.Series(name, [], dtype=pl.Null)
    try:
        return pl.Series(name, values, strict=True)
    except (TypeError, ValueError, pl.exceptions.PolarsError):
        # Mixed storage classes: keep the Python values (polars cannot type them).
        return pl.Series(name, values.tolist(), dtype=pl.Object)
