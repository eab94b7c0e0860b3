"""DataFrame backends: build a pandas or polars DataFrame from whole NumPy columns.

The C core hands over ``{column name: numpy.ndarray}`` (see ``_core.read_columns``); this
module turns that into a DataFrame of the chosen library without any per-row Python work.
Neither pandas nor polars is imported until a DataFrame is actually built.

The backend is process-wide (a module global, not a context variable), so
``set_backend("polars")`` also applies to threads started afterwards.
"""

from __future__ import annotations

import importlib.util
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Tuple, Union

if TYPE_CHECKING:  # pragma: no cover
    import numpy

PANDAS = "pandas"
POLARS = "polars"
AUTO = "auto"

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
        raise ValueError(f"Unknown backend: {backend!r}. Use 'polars', 'pandas', or 'auto'.")
    if importlib.util.find_spec(backend) is None:
        raise ImportError(f"backend {backend!r} is not installed: pip install {backend}")
    _backend = backend


Column = Any  # numpy.ndarray, or a (offsets, data, validity) tuple of Arrow string buffers


def text_buffers_usable(backend: Optional[str] = None) -> bool:
    """True when ``backend`` builds string columns from Arrow buffers (pyarrow installed and,
    for pandas, pandas' default string dtype is Arrow-backed): then
    ``_core.read_columns(..., text_buffers=True)`` skips creating a str per row."""
    global _text_buffers
    chosen = backend or get_backend()
    if chosen not in _text_buffers:
        usable = importlib.util.find_spec("pyarrow") is not None
        if usable and chosen == PANDAS:
            import pandas as pd

            usable = _pandas_arrow_string_dtype(pd) is not None
        _text_buffers[chosen] = usable
    return _text_buffers[chosen]


_text_buffers: Dict[str, bool] = {}


def _pandas_arrow_string_dtype(pd: Any) -> Any:
    """pandas' inferred dtype for str values when it is Arrow-backed (pandas >= 3 with
    pyarrow), else None."""
    dtype = pd.Series(["a"]).dtype
    return dtype if getattr(dtype, "storage", None) == "pyarrow" else None


def frame_from_columns(columns: Dict[str, Column], backend: Optional[str] = None) -> Any:
    """Build a DataFrame from whole columns.

    Args:
        columns: ``{name: column}`` in column order, all of one length, as returned by
            ``_core.read_columns``: 1-d numpy arrays, or for text columns read with
            ``text_buffers=True`` the tuple ``(offsets, data, validity)`` of an Arrow
            large_string array.
        backend: ``"pandas"`` or ``"polars"``; defaults to :func:`get_backend`.

    Returns:
        A ``pandas.DataFrame`` with a fresh ``RangeIndex`` and the dtypes
        ``pandas.read_sql_query`` would infer (object columns of str become pandas' string
        dtype, as pandas itself does), or a ``polars.DataFrame`` in which NaN in float
        columns (SQLite NULL) becomes null.  A BOOLEAN column of 0/1 is ``bool`` (polars
        ``Boolean``); with NULLs it is pandas' nullable ``boolean`` (polars ``Boolean`` with
        nulls).
    """
    chosen = backend or get_backend()
    if chosen == PANDAS:
        return _pandas_frame(columns)
    if chosen == POLARS:
        return _polars_frame(columns)
    raise ValueError(f"unknown DataFrame backend {chosen!r}; choose 'pandas' or 'polars'")


def _arrow_strings(buffers: Tuple[Any, Any, Any]) -> Any:
    """A pyarrow LargeStringArray over the buffers, without copying them."""
    import pyarrow as pa

    offsets, data, validity = buffers
    return pa.LargeStringArray.from_buffers(
        len(offsets) - 1, pa.py_buffer(offsets), pa.py_buffer(data),
        None if validity is None else pa.py_buffer(validity))


def _text_objects(buffers: Tuple[Any, Any, Any]) -> "numpy.ndarray":
    """The object array of str/None that the buffers describe (used when pyarrow is
    missing; slow, one str per row)."""
    import numpy as np

    offsets, data, validity = buffers
    raw = data.tobytes()
    n = len(offsets) - 1
    out = np.empty(n, dtype=object)
    for i in range(n):
        valid = validity is None or (validity[i >> 3] >> (i & 7)) & 1
        out[i] = raw[offsets[i]:offsets[i + 1]].decode("utf-8") if valid else None
    return out


def _pandas_frame(columns: Dict[str, Column]) -> Any:
    import pandas as pd

    if not columns:
        return pd.DataFrame()
    data: Dict[str, Any] = {}
    string_dtype = None
    for name, values in columns.items():
        if isinstance(values, tuple):
            if string_dtype is None and text_buffers_usable(PANDAS):
                string_dtype = _pandas_arrow_string_dtype(pd)
            if string_dtype is not None:
                values = pd.array(_arrow_strings(values), dtype=string_dtype)
            else:
                values = _text_objects(values)
        elif values.dtype.kind == "O" and _holds_bools(values):
            values = pd.array(values, dtype="boolean")
        data[name] = values
    # The arrays are fresh and owned by nobody else, so pandas may keep them as they are.
    return pd.DataFrame(data, copy=False)


def _holds_bools(values: "numpy.ndarray") -> bool:
    """True for an object column of True/False/None.

    SQLite stores no bools, so the core builds such a column only for a BOOLEAN column with
    NULLs, and then every value is True, False or None: the first value that is not None
    tells.
    """
    for value in values:  # stops at the first value: no pass over a whole text column
        if value is not None:
            return isinstance(value, bool)
    return False


def _polars_frame(columns: Dict[str, Column]) -> Any:
    import polars as pl

    series = []
    for name, values in columns.items():
        if isinstance(values, tuple):
            if importlib.util.find_spec("pyarrow") is not None:
                series.append(pl.Series(name, pl.from_arrow(_arrow_strings(values))))
                continue
            values = _text_objects(values)
        if values.dtype.kind == "f":
            # SQLite stores no NaN (it turns NaN into NULL), so NaN here always means NULL.
            series.append(pl.Series(name, values, nan_to_null=True))
        elif values.dtype.kind == "O" and _holds_bools(values):
            series.append(pl.Series(name, values.tolist(), dtype=pl.Boolean))
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


# ---------------------------------------------------------------------------
# xetrack's DataFrame helpers (xetrack._dataframe): frames made with the chosen backend;
# operations dispatch on the frame given, so a frame outlives a change of backend.
# ---------------------------------------------------------------------------


def _is_polars(frame: Any) -> bool:
    return type(frame).__module__.startswith("polars")


def cursor_to_dataframe(cursor: Any) -> Any:
    """The rows of a DB-API cursor (or a DuckDB result) as a DataFrame."""
    if get_backend() == POLARS:
        import polars as pl

        if hasattr(cursor, "pl"):
            return cursor.pl()
        names = [column[0] for column in cursor.description or ()]
        rows = cursor.fetchall()
        return pl.DataFrame(rows, schema=names, orient="row") if rows else pl.DataFrame(schema=names)
    import pandas as pd

    if hasattr(cursor, "df"):
        return cursor.df()
    names = [column[0] for column in cursor.description or ()]
    return pd.DataFrame.from_records(cursor.fetchall(), columns=names)


def dataframe_from_dicts(data: List[Dict[str, Any]]) -> Any:
    """A DataFrame with one row per dict (columns: the union of the keys)."""
    if get_backend() == POLARS:
        import polars as pl

        return pl.DataFrame(data) if data else pl.DataFrame()
    import pandas as pd

    return pd.DataFrame(data)


def empty_dataframe(columns: Optional[List[str]] = None) -> Any:
    """An empty DataFrame, with ``columns`` if given."""
    if get_backend() == POLARS:
        import polars as pl

        return pl.DataFrame(schema=columns) if columns else pl.DataFrame()
    import pandas as pd

    return pd.DataFrame(columns=columns)


def df_sort(df: Any, by: Union[str, List[str]]) -> Any:
    """``df`` sorted by the column(s) ``by``."""
    return df.sort(by) if _is_polars(df) else df.sort_values(by=by)


def df_to_dict_records(df: Any) -> List[Dict[str, Any]]:
    """The rows of ``df`` as a list of dicts."""
    return df.to_dicts() if _is_polars(df) else df.to_dict(orient="records")


def df_to_markdown(df: Any) -> str:
    """``df`` (or a Series) as a Markdown table, the way ``xt`` prints tables."""
    from xetrack_c.cli.render import markdown_table

    frame = df.to_frame() if not hasattr(df, "columns") else df
    rows = frame.rows() if _is_polars(frame) else list(frame.itertuples(index=False, name=None))
    return markdown_table([str(name) for name in frame.columns], rows)


def df_to_csv(df: Any, path: str) -> None:
    """Write ``df`` to a CSV file, without the index."""
    if _is_polars(df):
        df.write_csv(path)
    else:
        df.to_csv(path, index=False)


def df_to_parquet(df: Any, path: str) -> None:
    """Write ``df`` to a Parquet file, without the index."""
    if _is_polars(df):
        df.write_parquet(path)
    else:
        df.to_parquet(path, index=False)


def df_is_empty(df: Any) -> bool:
    """True when ``df`` has no rows."""
    return len(df) == 0


def df_columns(df: Any) -> List[str]:
    """The column names of ``df``."""
    return list(df.columns)


def df_filter_eq(df: Any, column: str, value: Any) -> Any:
    """The rows of ``df`` where ``column == value``."""
    if _is_polars(df):
        import polars as pl

        return df.filter(pl.col(column) == value)
    return df[df[column] == value]


def df_dropna_all(df: Any) -> Any:
    """``df`` without the rows whose every value is missing."""
    if _is_polars(df):
        import polars as pl

        return df.filter(~pl.all_horizontal(pl.all().is_null()))
    return df.dropna(how="all")


def df_column_is_float(df: Any, column: str) -> bool:
    """True when ``column`` of ``df`` holds floats."""
    if _is_polars(df):
        return df[column].dtype.is_float()
    from pandas.api.types import is_float_dtype

    return bool(is_float_dtype(df[column]))


def df_unique_series(df: Any, column: str) -> Any:
    """The distinct values of ``column``, in order of first appearance, as a Series."""
    if _is_polars(df):
        return df[column].unique(maintain_order=True)
    import pandas as pd

    return pd.Series(df[column].unique(), name=column)


def df_describe(df: Any) -> Any:
    """Summary statistics of ``df``."""
    return df.describe()


def df_row_to_dict(df: Any, index: int) -> Dict[str, Any]:
    """Row ``index`` (by position) of ``df`` as a dict."""
    return df.row(index, named=True) if _is_polars(df) else df.iloc[index].to_dict()


def df_column_max(df: Any, column: str) -> Any:
    """The largest value of ``column``."""
    return df[column].max()


def df_column_min(df: Any, column: str) -> Any:
    """The smallest value of ``column``."""
    return df[column].min()


def df_select_columns(df: Any, columns: List[str]) -> Any:
    """``df`` with only ``columns``, in that order."""
    return df.select(columns) if _is_polars(df) else df[columns]
