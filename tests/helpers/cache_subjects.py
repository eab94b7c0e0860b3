"""Functions and argument types for the cache-key tests, importable by name in any process."""

from __future__ import annotations

import dataclasses
from typing import Any, Tuple


def scored(item: Any, scale: float = 1.0) -> dict:
    """A tracked function: its qualified name is part of every cache key."""
    return {"score": scale}


class Holder:
    """Namespace for a nested qualified name."""

    @staticmethod
    def method(item: Any) -> Any:
        return item


@dataclasses.dataclass(frozen=True)
class Point:
    x: int
    y: float
    label: str = ""


@dataclasses.dataclass(frozen=True)
class Box:
    corner: Point
    tags: Tuple[str, ...] = ()
