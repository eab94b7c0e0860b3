"""The result cache's file, ``<cache_dir>/cache.db``: look entries up, list and delete them.

``Tracker(cache=dir)`` writes the file; these functions read it without a Tracker and
without pandas (the ``xt`` command line uses them). Read paths never create anything: a
missing directory or file is an empty cache.

Each entry is returned as xetrack's ``Reader.read_cache`` returns it, plus two fields::

    {"result": <the unpickled value>, "cache": <track_id of the run that computed it>,
     "created": "YYYY-mm-dd HH:MM:SS.ffffff", "function_name": "module.qualname"}

Unpickling runs code, so ``read_cache`` and ``scan_cache`` unpickle only entries whose
MAC verifies with the cache key (``cache_key=``, else ``XETRACK_C_CACHE_KEY``, else the
per-user key file; see xetrack_c.cache_auth and "Trust" in docs/cache.md), and raise
:class:`UntrustedEntryError` for the others. Deleting needs no key.
"""

from __future__ import annotations

import os
import pickle
from typing import Any, Callable, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple, Union

from xetrack_c import _core
from xetrack_c.cache_auth import CacheKeyArg, resolve_cache_key
from xetrack_c.cache_auth import CacheKeyError as CacheKeyError  # noqa: F401 - re-exported
from xetrack_c.cache_auth import CacheKeyUnavailable as CacheKeyUnavailable  # noqa: F401

CACHE_FILE = "cache.db"
"""Name of the SQLite file inside a cache directory."""

_PAGE = 256

PathLike = Union[str, "os.PathLike[str]"]


def cache_file(cache_dir: PathLike) -> str:
    """Path of the cache file of ``cache_dir``."""
    return os.path.join(os.fspath(cache_dir), CACHE_FILE)


class UntrustedEntryError(ValueError):
    """A cache entry's MAC does not verify with the cache key (or it has none): it was
    not unpickled."""


def _open(cache_dir: PathLike, mode: str, cache_key: CacheKeyArg = None) -> Optional[_core.ResultCache]:
    """The cache of ``cache_dir`` opened in ``mode`` ('read', authenticated with the key
    ``cache_key`` leads to; or 'write', for deletions, which need no key), or None if it
    has no cache file yet."""
    directory = os.fspath(cache_dir)
    if not isinstance(directory, str):
        raise TypeError(f"cache_dir must be a str path, not {type(directory).__name__}")
    path = cache_file(directory)
    if not os.path.exists(path):
        return None
    if not os.path.isfile(path):
        raise ValueError(f"{path!r} is not a file: cache_dir should be a directory made by Tracker(cache=...)")
    auth_key = resolve_cache_key(cache_key, create=False) if mode == "read" else None
    return _core.ResultCache(directory, mode, auth_key=auth_key)


def _entry(path: str, key: str, blob: bytes, track_id: str, created: str, function_name: str,
           auth: str) -> Dict[str, Any]:
    if auth == "mismatch":
        raise UntrustedEntryError(
            f"the cache entry {key} in {path!r} fails authentication: its MAC does not verify "
            "with this cache key, so it was written with another key or altered by someone "
            "without this one; it was not unpickled. Read it with the key its writer used "
            "(cache_key=... or XETRACK_C_CACHE_KEY), or delete it with "
            f"delete_cache_entry(cache_dir, {key!r})")
    if auth == "missing":
        raise UntrustedEntryError(
            f"the cache entry {key} in {path!r} has no MAC (written by an older xetrack_c, or "
            "with cache_key=False); it was not unpickled. Recompute it with "
            "track(..., cache_force=True), delete it with "
            f"delete_cache_entry(cache_dir, {key!r}), or, if nobody else can write this "
            "directory, read it with cache_key=False")
    try:
        result = pickle.loads(blob)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure means the same to the user
        raise ValueError(
            f"the cache entry {key} in {path!r} (computed by run {track_id!r}) cannot be "
            f"unpickled: {exc!r}; a class or library it needs may have moved. Delete it with "
            f"delete_cache_by_track_id(cache_dir, {track_id!r}) or recompute it with "
            "track(..., cache_force=True)"
        ) from exc
    return {"result": result, "cache": track_id, "created": created, "function_name": function_name}


def read_cache(cache_dir: PathLike, key: str, cache_key: CacheKeyArg = None) -> Optional[Dict[str, Any]]:
    """The entry stored under ``key`` (see ``cache_key``), or None.

    Args:
        cache_dir: The cache directory.
        key: The entry's key (32 hex digits).
        cache_key: The secret the entries are authenticated with (``str``/``bytes``);
            None: ``XETRACK_C_CACHE_KEY``, else the per-user key file; False: trust every
            entry (an unauthenticated cache).

    Returns:
        ``{"result", "cache", "created", "function_name"}``; ``cache`` is the track_id of
        the run that computed the result.

    Raises:
        UntrustedEntryError: the entry's MAC does not verify (it is not unpickled).
        CacheKeyError: no usable key (:class:`CacheKeyUnavailable` when there is none).
        ValueError: the value cannot be unpickled.
    """
    if not isinstance(key, str):
        raise TypeError(f"key must be a str (the hex digest from cache_key), not {type(key).__name__}")
    cache = _open(cache_dir, "read", cache_key)
    if cache is None:
        return None
    with cache:
        raw = cache.get_raw(key)
    return None if raw is None else _entry(cache.path, key, *raw)


def scan_cache(cache_dir: PathLike, cache_key: CacheKeyArg = None) -> Iterator[Tuple[str, Dict[str, Any]]]:
    """Every entry as ``(key, entry)``, in key order, read a page at a time (entries
    written meanwhile by other processes may or may not appear). ``cache_key`` and the
    errors are ``read_cache``'s: an entry that fails authentication raises
    :class:`UntrustedEntryError` when the scan reaches it."""
    cache = _open(cache_dir, "read", cache_key)
    if cache is None:
        return
    with cache:
        after = ""
        while True:
            page: List[tuple] = cache.scan_raw(after, _PAGE)
            for key, *raw in page:
                yield key, _entry(cache.path, key, *raw)
            if len(page) < _PAGE:
                return
            after = page[-1][0]


def delete_cache_by_track_id(cache_dir: PathLike, track_id: str) -> int:
    """Delete the entries computed by the run ``track_id``; returns how many."""
    if not isinstance(track_id, str):
        raise TypeError(f"track_id must be a str, not {type(track_id).__name__}")
    cache = _open(cache_dir, "write")
    if cache is None:
        return 0
    with cache:
        return cache.delete_by_track_id(track_id)


def delete_cache_entry(cache_dir: PathLike, key: str) -> bool:
    """Delete the entry stored under ``key``; True if there was one."""
    if not isinstance(key, str):
        raise TypeError(f"key must be a str, not {type(key).__name__}")
    cache = _open(cache_dir, "write")
    if cache is None:
        return False
    with cache:
        return cache.delete(key)


def cache_key(
    func: Callable[..., Any],
    args: Optional[Sequence[Any]] = None,
    kwargs: Optional[Mapping[str, Any]] = None,
    params: Optional[Mapping[str, Any]] = None,
    tracker_params: Optional[Mapping[str, Any]] = None,
) -> Optional[str]:
    """The key ``Tracker(params=tracker_params, cache=...).track(func, params, args, kwargs)``
    stores its result under: 32 hex digits, the same in every process and on every
    machine. None (with a warning, once per type) if some value cannot be encoded stably.
    """
    return _core.cache_key(
        func,
        None if args is None else list(args),
        None if kwargs is None else dict(kwargs),
        None if params is None else dict(params),
        None if tracker_params is None else dict(tracker_params),
    )
