"""The MAC of a result-cache entry, recomputed with Python's ``hmac`` from the layout that
docs/cache.md ("Trust") documents, and helpers that write entries into cache.db as
someone with (or without) the key would."""

from __future__ import annotations

import hmac
import os
import sqlite3
import struct
from typing import Optional

TAG = b"xetrack_c.cache.mac.v1\0"


def key_file(config_home: str) -> str:
    """The per-user key file under an XDG_CONFIG_HOME."""
    return os.path.join(config_home, "xetrack_c", "cache.key")


def default_key() -> bytes:
    """The key of the per-user key file of this process's XDG_CONFIG_HOME."""
    with open(key_file(os.environ["XDG_CONFIG_HOME"]), "rb") as handle:
        return handle.read().strip()


def entry_mac(secret: bytes, key: str, value: bytes, track_id: str, created: str,
              function_name: str) -> bytes:
    """HMAC-SHA256 of the tag, then each field as its 8-byte little-endian length and bytes."""
    message = bytearray(TAG)
    for field in (key.encode(), value, track_id.encode(), created.encode(), function_name.encode()):
        message += struct.pack("<Q", len(field)) + field
    return hmac.new(secret, bytes(message), "sha256").digest()


def rewrite_value(cache_dir: str, key: str, value: bytes, secret: Optional[bytes] = None) -> None:
    """Replace the stored value of ``key``; with ``secret``, with a valid MAC under it (as a
    writer holding that key would), else keeping the old MAC (as a tamperer would)."""
    conn = sqlite3.connect(os.path.join(cache_dir, "cache.db"))
    try:
        track_id, created, function_name = conn.execute(
            "SELECT track_id, created, function_name FROM cache WHERE key = ?", (key,)).fetchone()
        conn.execute("UPDATE cache SET value = ? WHERE key = ?", (value, key))
        if secret is not None:
            conn.execute("UPDATE cache SET mac = ? WHERE key = ?",
                         (entry_mac(secret, key, value, track_id, created, function_name), key))
        conn.commit()
    finally:
        conn.close()
