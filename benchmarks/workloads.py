"""Functions the benchmarks hand to trackers and executors. They live in a module (not in a
closure) so that worker processes can import them by name."""

from __future__ import annotations

from typing import Any


def noop(a: Any = None, b: Any = None) -> None:
    """Does nothing: what is left is the caller's overhead."""
    return None


def noop_task(config: dict[str, Any]) -> None:
    """A no-op executor task: called as ``function(config)``."""
    return None


def cpu_task(config: dict[str, Any]) -> int:
    """A CPU-bound executor task: ``config["n"]`` iterations of pure-Python arithmetic."""
    total = 0
    for i in range(config["n"]):
        total += i * i % 7
    return total


def square(x: int) -> int:
    """A trivial function whose result is worth caching in the cache benchmark."""
    return x * x


TRIVIAL_SCRIPT = "import sys\n"
"""Body of the trivial script the script-executor benchmark runs 50 times."""


CALLS = {"counted_square": 0}
"""How many times counted_square really ran (the cache benchmark checks its hits with it)."""


def counted_square(x: int) -> int:
    """``x * x``, counting real calls so that a cache hit can be told from a computation."""
    CALLS["counted_square"] += 1
    return x * x
