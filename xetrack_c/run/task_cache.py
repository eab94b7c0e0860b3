"""The result cache of ``run_multiple(executor=..., cache=...)``: consulted and filled by the
driver only, so tasks never touch the cache file."""

from __future__ import annotations

from typing import Any, Optional, Tuple


class TaskCache:
    """The result cache of function tasks, used on the driver only.

    The key is the cache's key of the call ``function(config=..., seed=...)``: the
    function's qualified name, the config and the seed. A hit's entry names the
    experiment that computed it.

    Args:
        directory: The cache directory (``<directory>/cache.db``, created if needed).
    """

    def __init__(self, directory: str) -> None:
        from xetrack_c.tracker import _open_cache

        self.store = _open_cache(directory)

    def get(self, function: Any, config: Any, seed: Optional[int]) -> Tuple[bool, Any]:
        """(True, value) on a hit, else (False, None); an entry that cannot be unpickled
        is a miss."""
        from xetrack_c.cache import _entry

        key = self.store.key(function, None, {"config": config, "seed": seed})
        raw = None if key is None else self.store.get_raw(key)
        if raw is None:
            return False, None
        try:
            return True, _entry(self.store.path, key, *raw)["result"]
        except ValueError:
            return False, None

    def put(self, function: Any, config: Any, seed: Optional[int], value: Any,
            experiment_id: str) -> bool:
        """Store ``value`` (the first stored value of a key stays)."""
        return self.store.put(function, None, {"config": config, "seed": seed}, None, None,
                              value, experiment_id)

    def close(self) -> None:
        """Close the cache file."""
        self.store.close()
