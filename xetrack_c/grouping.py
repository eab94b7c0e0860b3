"""Group-by aggregation of columns read by the C columnar reader, with NumPy only.

The columns come as ``_core.read_columns(..., text_buffers=True)`` returns them: numeric
columns as NumPy arrays (NULL as NaN), text columns as Arrow string buffers ``(offsets,
data, validity)``.  Short text (group keys, ISO timestamps) is turned into a fixed-width
bytes array so that sorting and grouping stay vectorised; long text falls back to
Python strings.
"""

from __future__ import annotations

import math
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

# Text columns whose longest value is at most this many bytes become fixed-width arrays.
_FIXED_WIDTH_LIMIT = 64


def _validity(validity: Optional[np.ndarray], n: int) -> np.ndarray:
    if validity is None:
        return np.ones(n, dtype=bool)
    return np.unpackbits(validity, bitorder="little")[:n].astype(bool)


TextBuffers = Tuple[np.ndarray, np.ndarray, Optional[np.ndarray]]


def text_keys(column: TextBuffers) -> Tuple[np.ndarray, np.ndarray]:
    """(values, valid) of an Arrow string column: values a fixed-width bytes array when
    every value is short, else an object array of str; valid False where NULL."""
    offsets, data, validity = column
    n = len(offsets) - 1
    valid = _validity(validity, n)
    lengths = np.diff(offsets)
    width = int(lengths.max()) if n else 0
    # A NUL byte would be cut off a fixed-width bytes value: such text stays Python objects.
    if width > _FIXED_WIDTH_LIMIT or bool(np.any(data == 0)):
        raw = data.tobytes()
        bounds = offsets.tolist()
        values = np.array([raw[bounds[i]:bounds[i + 1]] for i in range(n)], dtype=object)
        return values, valid
    if n and width and bool(np.all(lengths == width)):  # one width (ISO timestamps): a view
        return data[: n * width].view(f"S{width}"), valid
    width = max(width, 1)
    matrix = np.zeros((n, width), dtype=np.uint8)
    columns = np.arange(width)
    inside = columns[None, :] < lengths[:, None]
    matrix[inside] = data[(offsets[:-1, None] + columns[None, :])[inside]]
    return matrix.view(f"S{width}").reshape(n), valid


def _key_codes(column: Any) -> Tuple[np.ndarray, List[Any]]:
    """(code per row, key per code): codes in ascending key order, a NULL key last."""
    if isinstance(column, tuple):
        values, valid = text_keys(column)
        decode = True
    else:
        values = column
        decode = False
        if values.dtype.kind == "f":
            valid = ~np.isnan(values)
        elif values.dtype == object:
            valid = np.array([value is not None for value in values], dtype=bool)
        else:
            valid = np.ones(len(values), dtype=bool)
    codes = np.empty(len(values), dtype=np.int64)
    present = values[valid]
    if present.dtype == object:
        found = sorted(set(present.tolist()), key=lambda v: (type(v).__name__, v))
        index = {value: i for i, value in enumerate(found)}
        codes[valid] = np.fromiter((index[v] for v in present), dtype=np.int64,
                                   count=len(present))
        uniques: List[Any] = found
    elif present.dtype.kind == "S" and present.dtype.itemsize <= 8:
        # Up to 8 bytes: as big-endian integers, which sort as the bytes do, and faster.
        width = present.dtype.itemsize
        padded = np.zeros((len(present), 8), dtype=np.uint8)
        padded[:, :width] = present.view(np.uint8).reshape(len(present), width)
        unique, inverse = np.unique(padded.view(">u8").reshape(-1), return_inverse=True)
        codes[valid] = inverse.reshape(-1)
        uniques = unique.astype(">u8").view("S8").tolist()
    else:
        unique, inverse = np.unique(present, return_inverse=True)
        codes[valid] = inverse.reshape(-1)
        uniques = unique.tolist()
    if decode:
        uniques = [v.decode("utf-8", "replace") if isinstance(v, bytes) else v for v in uniques]
    if not valid.all():
        codes[~valid] = len(uniques)
        uniques.append(None)
    return codes, [_plain(v) for v in uniques]


def _plain(value: Any) -> Any:
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def group_codes(columns: Sequence[Any]) -> Tuple[np.ndarray, List[Tuple[Any, ...]]]:
    """(group code per row, key tuple per group) for the ``by`` columns, groups in
    ascending order of their keys (NULL last in each column)."""
    combined: Optional[np.ndarray] = None
    per_column: List[List[Any]] = []
    for column in columns:
        codes, uniques = _key_codes(column)
        per_column.append(uniques)
        combined = codes if combined is None else combined * len(uniques) + codes
    assert combined is not None
    if len(per_column) == 1:  # the codes are dense and in key order already
        return combined, [(key,) for key in per_column[0]]
    used, inverse = np.unique(combined, return_inverse=True)
    sizes = [len(u) for u in per_column]
    positions = np.unravel_index(used, sizes) if len(used) else [np.empty(0, int)] * len(sizes)
    keys = [tuple(per_column[c][int(positions[c][g])] for c in range(len(sizes)))
            for g in range(len(used))]
    return inverse.reshape(-1), keys


def _time_order(timestamps: Any) -> Optional[np.ndarray]:
    """Row order by timestamp (stable; NULL first), or None when already in order."""
    if isinstance(timestamps, tuple):
        values, valid = text_keys(timestamps)
        values = np.where(valid, values, b"" if values.dtype == object else values.dtype.type())
    else:
        values = np.asarray(timestamps)
        if values.dtype == object:
            values = np.array(["" if v is None else str(v) for v in values])
    if len(values) < 2 or bool(np.all(values[1:] >= values[:-1])):
        return None
    return np.argsort(values, kind="stable")


def _numeric(name: str, column: Any) -> np.ndarray:
    if isinstance(column, tuple):
        raise ValueError(f"metric {name!r} is a text column: pass numeric columns as metrics")
    if column.dtype == object:
        try:
            return np.array([np.nan if v is None else float(v) for v in column], dtype=float)
        except (TypeError, ValueError):
            raise ValueError(f"metric {name!r} holds values that are not numbers") from None
    if column.dtype == bool:
        return column.astype(np.int64)
    return column


def aggregate(by: Sequence[Any], metrics: Sequence[Any], names: Sequence[str],
              aggs: Sequence[str], timestamps: Any = None
              ) -> Tuple[List[Tuple[Any, ...]], Dict[Tuple[str, str], List[Any]]]:
    """(group keys, {(metric, agg): value per group}); see ``xetrack_c.summary``."""
    codes, keys = group_codes(by)
    order = _time_order(timestamps) if timestamps is not None else None
    if order is not None:
        codes = codes[order]
    # Groups contiguous, time order within; NumPy's stable sort is a radix sort for
    # 16-bit keys, so few groups sort in linear time.
    narrow = codes.astype(np.uint16) if len(keys) <= np.iinfo(np.uint16).max else codes
    by_group = np.argsort(narrow, kind="stable")
    results: Dict[Tuple[str, str], List[Any]] = {}
    for name, column in zip(names, metrics, strict=True):
        values = _numeric(name, column)
        if order is not None:
            values = values[order]
        valid = ~np.isnan(values) if values.dtype.kind == "f" else np.ones(len(values), bool)
        picked = by_group[valid[by_group]]
        group_of, value = codes[picked], values[picked]
        starts = np.flatnonzero(np.r_[True, group_of[1:] != group_of[:-1]]) if len(picked) \
            else np.empty(0, dtype=np.int64)
        ends = np.r_[starts[1:], len(picked)].astype(np.int64)
        counts = ends - starts
        present = group_of[starts]
        floats = value.astype(float)
        sums = np.add.reduceat(floats, starts) if len(starts) else np.empty(0)
        means = sums / np.maximum(counts, 1)
        for agg in aggs:
            column_out: List[Any] = [None] * len(keys)
            if agg == "count":
                column_out = [0] * len(keys)
            if len(starts):
                if agg == "first":
                    found = value[starts]
                elif agg == "last":
                    found = value[ends - 1]
                elif agg == "min":
                    found = np.minimum.reduceat(value, starts)
                elif agg == "max":
                    found = np.maximum.reduceat(value, starts)
                elif agg == "mean":
                    found = means
                elif agg == "count":
                    found = counts
                else:  # std, two passes: sum of squared deviations from the group mean
                    deviations = floats - np.repeat(means, counts)
                    squares = np.add.reduceat(deviations * deviations, starts)
                    found = np.where(counts > 1, np.sqrt(squares / np.maximum(counts - 1, 1)),
                                     np.nan)
                for group, item in zip(present.tolist(), found.tolist(), strict=True):
                    column_out[group] = _plain(item)
            results[(name, agg)] = column_out
    return keys, results
