"""The result cache's authentication key: where it comes from, and the per-user key file.

Every entry a Tracker stores carries an HMAC-SHA256 of its key, value and lineage under
a secret key (computed in C, ``csrc/cache.c``); an entry whose MAC does not verify is
never unpickled. The key is the first of:

1. the ``cache_key=`` argument: a ``str`` or ``bytes`` key, or ``False`` (or the string
   ``"unauthenticated"``) for an unauthenticated cache;
2. the environment variable ``XETRACK_C_CACHE_KEY``: a key, or ``unauthenticated``;
3. the per-user key file ``$XDG_CONFIG_HOME/xetrack_c/cache.key`` (by default
   ``~/.config/xetrack_c/cache.key``), created with a random key on first use (mode 0600,
   in a directory of mode 0700).

A key is text (its UTF-8 bytes, surrounding whitespace dropped) or bytes, at least 16
bytes long. The key never appears in a message, a repr or a pickled Tracker.
"""

from __future__ import annotations

import os
import secrets
import stat
import warnings
from typing import Optional, Union

ENV_VAR = "XETRACK_C_CACHE_KEY"
"""Environment variable holding the cache key (or ``unauthenticated``)."""

UNAUTHENTICATED = "unauthenticated"
"""The explicit opt-in to a cache without MACs, as a value of ``XETRACK_C_CACHE_KEY``."""

MIN_KEY_BYTES = 16
KEY_FILE_NAME = "cache.key"

CacheKeyArg = Union[str, bytes, bool, None]

_ADVICE = (
    f"set {ENV_VAR} to a secret shared by the machines that use the cache (e.g. "
    "python -c 'import secrets; print(secrets.token_hex(32))'), or pass cache_key=...; "
    f"only for a cache directory nobody else can write, opt out of authentication with "
    f"cache_key=False or {ENV_VAR}={UNAUTHENTICATED}"
)


class CacheKeyError(ValueError):
    """A cache key was given (argument, environment, key file) but cannot be used."""


class CacheKeyUnavailable(CacheKeyError):
    """No cache key can be had: none was given and the key file cannot be read or made."""


def key_file_path() -> str:
    """The per-user key file: ``$XDG_CONFIG_HOME/xetrack_c/cache.key``, else
    ``~/.config/xetrack_c/cache.key`` (a relative XDG_CONFIG_HOME is ignored, as the XDG
    specification says)."""
    base = os.environ.get("XDG_CONFIG_HOME", "")
    if not os.path.isabs(base):
        home = os.path.expanduser("~")
        if not os.path.isabs(home):
            raise CacheKeyUnavailable(
                f"no cache key: there is no home directory for the key file; {_ADVICE}")
        base = os.path.join(home, ".config")
    return os.path.join(base, "xetrack_c", KEY_FILE_NAME)


def _checked(key: bytes, source: str) -> bytes:
    if len(key) < MIN_KEY_BYTES:
        raise CacheKeyError(
            f"the cache key from {source} is too short ({len(key)} bytes): use at least "
            f"{MIN_KEY_BYTES}, e.g. python -c 'import secrets; print(secrets.token_hex(32))'")
    return key


def _from_text(text: str, source: str) -> bytes:
    return _checked(text.strip().encode("utf-8"), source)


def read_key_file(path: str) -> Optional[bytes]:
    """The key in ``path``, or None if there is no such file.

    Raises:
        CacheKeyError: the file is not a regular file of this user that only this user
            can read (as ssh insists for private keys), or it holds no key.
    """
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise CacheKeyUnavailable(f"no cache key: the key file {path!r} cannot be read "
                                  f"({exc.strerror}); {_ADVICE}") from exc
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise CacheKeyError(f"the cache key file {path!r} is not a regular file")
        if hasattr(os, "geteuid") and info.st_uid != os.geteuid():
            raise CacheKeyError(f"the cache key file {path!r} belongs to another user: a key "
                                "someone else controls authenticates nothing; delete it")
        if info.st_mode & 0o077:
            raise CacheKeyError(
                f"the cache key file {path!r} can be read or written by others (mode "
                f"{stat.S_IMODE(info.st_mode):04o}): run chmod 600 on it, and use a new key if "
                "others may have read it (delete the file; cached entries are then recomputed)")
        data = os.read(fd, 4096)
    finally:
        os.close(fd)
    key = data.strip()
    if not key:
        raise CacheKeyError(f"the cache key file {path!r} is empty: delete it and a new key is "
                            "made on next use")
    return _checked(key, f"the key file {path!r}")


def _make_private_dirs(directory: str) -> None:
    """Create ``directory`` and its missing parents with mode 0700 (existing ones keep
    their mode)."""
    if os.path.isdir(directory):
        return
    parent = os.path.dirname(directory)
    if parent and parent != directory:
        _make_private_dirs(parent)
    try:
        os.mkdir(directory, 0o700)
    except FileExistsError:
        pass


def _write_new(path: str, data: bytes) -> None:
    """Write ``data`` to a new file ``path`` (mode 0600); FileExistsError if it exists."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


def _create_key_file(path: str) -> bytes:
    """Create the key file with a fresh random key, unless another process does first;
    return the key in the file either way.

    The key is written to a private temporary file, then hard-linked to ``path``: a link
    never replaces a file, so among processes racing on first use exactly one key lands
    and every one of them reads that key back, complete.
    """
    directory = os.path.dirname(path)
    _make_private_dirs(directory)
    data = (secrets.token_hex(32) + "\n").encode("ascii")
    temporary = os.path.join(directory, f".{KEY_FILE_NAME}.{os.getpid()}.{secrets.token_hex(8)}")
    _write_new(temporary, data)
    try:
        os.link(temporary, path)
    except FileExistsError:
        pass  # another process made it first: its key is the key
    except OSError:
        # A file system without hard links: create the file itself exclusively (a racing
        # reader may then find it empty for a moment, and says so).
        try:
            _write_new(path, data)
        except FileExistsError:
            pass
    finally:
        os.unlink(temporary)
    key = read_key_file(path)
    if key is None:
        raise CacheKeyUnavailable(f"no cache key: the key file {path!r} vanished while it "
                                  f"was made; {_ADVICE}")
    return key


def default_key(create: bool = True) -> bytes:
    """The per-user key, from the key file (made on first use if ``create``).

    Raises:
        CacheKeyUnavailable: no key file and it cannot be made (read-only home), or
            ``create`` is False and there is none.
        CacheKeyError: the key file is unusable (permissions, owner, content).
    """
    path = key_file_path()
    key = read_key_file(path)
    if key is not None:
        return key
    if not create:
        raise CacheKeyUnavailable(f"no cache key: the key file {path!r} does not exist (it is "
                                  f"made when a Tracker first uses a cache); {_ADVICE}")
    try:
        return _create_key_file(path)
    except OSError as exc:
        raise CacheKeyUnavailable(f"no cache key: the key file {path!r} cannot be created "
                                  f"({exc.strerror or exc}); {_ADVICE}") from exc


def resolve_cache_key(cache_key: CacheKeyArg = None, create: bool = True) -> Optional[bytes]:
    """The key that authenticates cache entries, or None for an unauthenticated cache
    (explicitly chosen).

    Args:
        cache_key: ``None`` (look in ``XETRACK_C_CACHE_KEY``, then the key file), a key
            (``str`` or ``bytes``), or ``False`` / ``"unauthenticated"`` to opt out.
        create: Make the per-user key file if it does not exist (writers do; readers,
            which could not verify anything with a brand-new key, do not).

    Raises:
        CacheKeyUnavailable: no key can be had, and no opt-out was given.
        CacheKeyError: the key given is unusable (too short, a bad key file).
        TypeError: ``cache_key`` is of another type.
    """
    if cache_key is False:
        return None
    if isinstance(cache_key, str):
        if cache_key.strip().lower() == UNAUTHENTICATED:
            return None
        return _from_text(cache_key, "cache_key=")
    if isinstance(cache_key, (bytes, bytearray, memoryview)):
        return _checked(bytes(cache_key), "cache_key=")
    if cache_key is not None:
        raise TypeError(f"cache_key must be a str or bytes key, False (no authentication) or "
                        f"None (XETRACK_C_CACHE_KEY, else the key file), not "
                        f"{type(cache_key).__name__}")
    text = os.environ.get(ENV_VAR, "").strip()
    if text:
        return None if text.lower() == UNAUTHENTICATED else _from_text(text, ENV_VAR)
    return default_key(create)


_said_unavailable = False


def warn_unavailable(exc: CacheKeyUnavailable, stacklevel: int = 2) -> None:
    """Say, once per process, that the cache is off for want of a key."""
    global _said_unavailable
    if _said_unavailable:
        return
    _said_unavailable = True
    warnings.warn(f"xetrack_c cache is off: {exc}. Calls are computed and nothing is stored "
                  "until a key is available.", UserWarning, stacklevel=stacklevel + 1)
