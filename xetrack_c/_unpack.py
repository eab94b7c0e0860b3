"""Unpacking of dataclass and pydantic arguments into ``<param>_<field>`` columns."""

from __future__ import annotations

import dataclasses
import inspect
from typing import Any, Callable, Dict, List, Optional

MAX_DEPTH = 10

# Argument types that are never models: checked by type identity, the cheapest test.
_PLAIN = frozenset({int, float, str, bool, bytes, type(None), list, tuple, dict, set})


def _is_model(value: Any) -> bool:
    """True for dataclass instances and pydantic models (anything with ``model_dump``)."""
    if isinstance(value, type):
        return False
    return dataclasses.is_dataclass(value) or callable(getattr(value, "model_dump", None))


def _fields(value: Any) -> Dict[str, Any]:
    if dataclasses.is_dataclass(value):
        return {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
    # Read pydantic fields as attributes so nested models stay models (and unpack);
    # model_dump() would turn them into plain dicts.
    names = getattr(type(value), "model_fields", None) or getattr(type(value), "__fields__", None)
    if names:
        return {name: getattr(value, name) for name in names}
    try:
        return dict(value.model_dump(mode="python"))
    except TypeError:  # pydantic v1 has no mode=
        return dict(value.model_dump())


def unpack_model(
    value: Any,
    prefix: str,
    warn: Callable[[str], None],
    seen: Optional[set] = None,
    depth: int = 0,
) -> Dict[str, Any]:
    """Flatten a dataclass or pydantic model into ``{prefix_field: value}``, recursively.

    Nested models become ``prefix_field_subfield``; recursion stops at ``MAX_DEPTH`` and at
    cycles, each with a warning.
    """
    if depth >= MAX_DEPTH:
        warn(f"not unpacking {prefix!r}: nesting deeper than {MAX_DEPTH} levels")
        return {}
    seen = set() if seen is None else seen
    if id(value) in seen:
        warn(f"not unpacking {prefix!r}: it refers back to itself")
        return {}
    seen.add(id(value))
    try:
        flat: Dict[str, Any] = {}
        for name, field_value in _fields(value).items():
            key = f"{prefix}_{name}"
            if field_value is not None and _is_model(field_value):
                flat.update(unpack_model(field_value, key, warn, seen, depth + 1))
            else:
                flat[key] = field_value
        return flat
    finally:
        seen.discard(id(value))


def unpack_arguments(
    func: Callable[..., Any], args: List[Any], kwargs: Dict[str, Any], warn: Callable[[str], None]
) -> Dict[str, Any]:
    """Columns for every dataclass/pydantic argument of a call, named after its parameter."""
    for value in args:
        if type(value) not in _PLAIN and _is_model(value):
            break
    else:
        for value in kwargs.values():
            if type(value) not in _PLAIN and _is_model(value):
                break
        else:
            return {}  # the common case: no signature inspection at all
    flat: Dict[str, Any] = {}
    try:
        names = list(inspect.signature(func).parameters)
    except (TypeError, ValueError):
        names = []
    for index, arg in enumerate(args):
        if index < len(names) and _is_model(arg):
            flat.update(unpack_model(arg, names[index], warn))
    for name, value in kwargs.items():
        if _is_model(value):
            flat.update(unpack_model(value, name, warn))
    return flat
