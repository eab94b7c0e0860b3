"""The result cache of ``run_multiple(executor=..., cache=...)``: consulted and filled by the
driver only, so tasks never touch the cache file.

:class:`TaskCache` is the cache file; :class:`CachedTasks` is the part of the executor
path's batch (:class:`xetrack_c.run.remote.RemoteBatch`) that uses it.
"""

from __future__ import annotations

import warnings
from typing import Any, List, Optional, Set, Tuple, Union


class TaskCache:
    """The result cache of function tasks, used on the driver only.

    The key is the cache's key of the call ``function(config=..., seed=...)``: the
    function's qualified name, the config and the seed. A hit's entry names the
    experiment that computed it.

    Args:
        directory: The cache directory (``<directory>/cache.db``, created if needed).
        cache_key: The key that authenticates entries, as ``Tracker(cache_key=...)``
            takes it. Where no key can be had (said once), the cache is off: every task
            runs and nothing is stored.
    """

    def __init__(self, directory: str, cache_key: Union[str, bytes, bool, None] = None) -> None:
        from xetrack_c.tracker import _open_cache

        self.store = _open_cache(directory, cache_key)
        self._replace: Set[str] = set()  # keys whose entry is unusable: store over it

    def get(self, function: Any, config: Any, seed: Optional[int]) -> Tuple[bool, Any]:
        """(True, value) on a hit, else (False, None); an entry that fails authentication
        (with a warning) or cannot be unpickled is a miss."""
        from xetrack_c.cache import UntrustedEntryError, _entry

        if self.store is None:
            return False, None
        key = self.store.key(function, None, {"config": config, "seed": seed})
        raw = None if key is None else self.store.get_raw(key)
        if raw is None:
            return False, None
        try:
            return True, _entry(self.store.path, key, *raw)["result"]
        except UntrustedEntryError as exc:
            self._replace.add(key)
            warnings.warn(f"xetrack_c cache: {exc}; the task runs again and its result "
                          "replaces the entry", UserWarning, stacklevel=2)
            return False, None
        except ValueError:
            self._replace.add(key)
            return False, None

    def put(self, function: Any, config: Any, seed: Optional[int], value: Any,
            experiment_id: str) -> bool:
        """Store ``value`` (the first stored value of a key stays, unless that entry
        failed authentication or could not be unpickled)."""
        if self.store is None:
            return False
        replace = bool(self._replace) and \
            self.store.key(function, None, {"config": config, "seed": seed}) in self._replace
        return self.store.put(function, None, {"config": config, "seed": seed}, None, None,
                              value, experiment_id, replace)

    def close(self) -> None:
        """Close the cache file."""
        if self.store is not None:
            self.store.close()


class CachedTasks:
    """Mixin of the executor path's batch: function tasks found in the result cache are
    completed without being submitted; what the others return is stored on the driver.

    Uses the batch's ``specs``, ``seeds``, ``ids``, ``cache_dir``, ``_cache`` (None until
    the first probe), ``_cache_key_arg`` and ``_finish``.
    """

    specs: List[Any]
    seeds: List[Optional[int]]
    ids: List[str]
    cache_dir: Optional[str]
    _cache: Any
    _cache_key_arg: Union[str, bytes, bool, None]
    _finish: Any

    def _cache_probe(self, index: int) -> Tuple[bool, Any]:
        """(hit, value) of the result cache for function spec ``index``."""
        if self._cache is None:
            self._cache = TaskCache(self.cache_dir, self._cache_key_arg)
        spec = self.specs[index]
        return self._cache.get(spec.function, spec.config, self.seeds[index])

    def _cache_fill(self, index: int, value: Any) -> None:
        spec = self.specs[index]
        self._cache.put(spec.function, spec.config, self.seeds[index], value,
                        self.ids[index])

    def _skip_cached(self, todo: List[int]) -> List[int]:
        """``todo`` without the function tasks found in the cache (each completed)."""
        if self.cache_dir is None:
            return todo
        left = []
        for index in todo:
            hit, value = (False, None)
            if self.specs[index].function is not None:
                hit, value = self._cache_probe(index)
            if hit:
                self._finish(index, "completed", None, 0.0, value, [])
            else:
                left.append(index)
        return left
