"""Assets: objects logged by hash, stored as xetrack 0.7 stores them.

A logged value that is not a plain value (a model, a NumPy array, any object) is pickled
with cloudpickle and hashed with xxh64; the row holds the 16-digit hash and the object
goes, once per hash, to three tables that either package reads (sqlitedict's layout,
``key TEXT PRIMARY KEY, value BLOB``):

``assets``  base64 of the pickled hash -> the pickled object (zlib'd with ``compress=True``)
``keys``    base64 of the pickled column name -> the pickled hash last logged there
``counts``  the hash -> the pickled number of rows that refer to it

``log()`` writes them in the row's own transaction, through the C core (csrc/store_assets.c);
this module pickles and hashes (the tracker's asset hook) and reads, lists and deletes.

Assets are pickles: reading one (``get``) runs whatever code its bytes say. Only call it on
files you trust as much as code. Listing keys and counts never unpickles an object: those
pickles are read by an unpickler that refuses every class and function.
"""

from __future__ import annotations

import base64
import io
import os
import pickle
from collections.abc import Mapping
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

from xetrack_c import _core

# sqlitedict's pickle protocol (pickle.HIGHEST_PROTOCOL on every Python we support).
PICKLE_PROTOCOL = 5
INSTALL_HINT = "pip install cloudpickle xxhash (the `assets` extra of xetrack_c; see docs/install.md)"
_TABLES = ("assets", "keys", "counts")

Rows = List[Tuple[Any, ...]]


class AssetsUnavailableError(ImportError):
    """cloudpickle or xxhash, which assets need, is not installed."""


def _modules() -> Tuple[Any, Any]:
    """cloudpickle and xxhash, or AssetsUnavailableError naming the extra to install."""
    try:
        import cloudpickle
        import xxhash
    except ImportError as exc:
        raise AssetsUnavailableError(
            f"storing or reading assets (objects logged by hash) needs cloudpickle and xxhash, "
            f"which are not installed ({exc}): {INSTALL_HINT}"
        ) from exc
    return cloudpickle, xxhash


def encode_key(key: Any) -> str:
    """A key as sqlitedict stores it: base64 of its pickle."""
    return base64.b64encode(pickle.dumps(key, protocol=PICKLE_PROTOCOL)).decode("ascii")


class _PlainUnpickler(pickle.Unpickler):
    """Reads pickles of plain values (str, int, ...); refuses any class or function."""

    def find_class(self, module: str, name: str) -> Any:
        raise pickle.UnpicklingError(f"refused to load {module}.{name}: not a plain value")


def _plain_loads(data: Any) -> Any:
    """A pickled str or int (a key or a count), never running code."""
    return _PlainUnpickler(io.BytesIO(bytes(data))).load()


def decode_key(text: str) -> Any:
    """The key sqlitedict stored as ``text`` (see encode_key)."""
    return _plain_loads(base64.b64decode(text.encode("ascii")))


def unpack(blob: Optional[bytes]) -> Optional[bytes]:
    """The pickle bytes of a stored asset: inflated when it was stored compressed.

    A pickle starts with the PROTO opcode (0x80) and a zlib stream never does, so a
    compressed asset is recognised without knowing how it was written."""
    if not blob:
        return None
    data = bytes(blob)
    if data[:1] == b"\x80":
        return data
    import zlib

    return zlib.decompress(data)


class AssetHook:
    """What ``log()`` calls for a value stored as an asset: pickles and hashes it.

    Returns ``(hash, assets key, blob, keys key, keys value)``, everything the C core
    writes; the row holds the hash. Pickling and hashing happen here, with the GIL; the
    first call imports cloudpickle and xxhash (AssetsUnavailableError when missing).
    """

    def __init__(self, compress: bool = False) -> None:
        self.compress = bool(compress)
        self._dumps: Optional[Callable[[Any], bytes]] = None
        self._xxh64: Any = None
        self._names: Dict[str, str] = {}

    def __call__(self, column: str, value: Any) -> Tuple[str, str, bytes, str, bytes]:
        if self._dumps is None:
            cloudpickle, xxhash = _modules()
            self._dumps, self._xxh64 = cloudpickle.dumps, xxhash.xxh64
        data = self._dumps(value)
        digest = self._xxh64(data).hexdigest()
        if self.compress:
            import zlib

            blob = zlib.compress(data)
        else:
            blob = data
        name_key = self._names.get(column)
        if name_key is None:
            name_key = self._names[column] = encode_key(column)
        return (digest, encode_key(digest), blob, name_key,
                pickle.dumps(digest, protocol=PICKLE_PROTOCOL))


class _Table(Mapping):
    """A read-only view of one asset table, decoded as xetrack's SqliteDict shows it."""

    def __init__(self, manager: "AssetsManager", table: str) -> None:
        self._manager = manager
        self._table = table

    def _decode_key(self, key: str) -> Any:
        return key if self._table == "counts" else decode_key(key)

    def _encode_key(self, key: Any) -> Any:
        return key if self._table == "counts" else encode_key(key)

    def _decode_value(self, value: Any) -> Any:
        if self._table == "assets":
            return unpack(value)  # the pickle's bytes: never unpickled here
        return _plain_loads(value)

    def __getitem__(self, key: Any) -> Any:
        rows = self._manager._read(f'SELECT value FROM "{self._table}" WHERE key = ?',
                                   (self._encode_key(key),))
        if not rows:
            raise KeyError(key)
        return self._decode_value(rows[0][0])

    def __iter__(self) -> Iterator[Any]:
        for (key,) in self._manager._read(f'SELECT key FROM "{self._table}" ORDER BY rowid'):
            yield self._decode_key(key)

    def __len__(self) -> int:
        rows = self._manager._read(f'SELECT count(*) FROM "{self._table}"')
        return int(rows[0][0]) if rows else 0

    def items(self) -> List[Tuple[Any, Any]]:  # type: ignore[override]
        """(key, value) pairs in insertion order, read in one statement."""
        rows = self._manager._read(f'SELECT key, value FROM "{self._table}" ORDER BY rowid')
        return [(self._decode_key(k), self._decode_value(v)) for k, v in rows]


class AssetsManager:
    """The assets of one database file, xetrack 0.7's ``AssetsManager`` API.

    Args:
        path: the database file.
        autocommit: accepted for xetrack's signature; every write commits at once.
        compress: zlib-compress the assets this manager inserts (reading recognises
            compressed assets either way).
        tracker: the Tracker whose connection reads and writes (``Tracker.assets``); an
            in-memory tracker's assets are only reachable this way.

    ``get`` unpickles: only use it on files you trust as you would trust code.
    """

    ASSETS_TABLE_NAME = "assets"
    KEYS_TABLE_NAME = "keys"
    COUNTS_TABLE_NAME = "counts"

    def __init__(self, path: str, autocommit: bool = True, compress: bool = False,
                 tracker: Any = None) -> None:
        self.db = path
        self.autocommit = autocommit
        self.compress = bool(compress)
        self._tracker = tracker
        self.assets = _Table(self, "assets")
        self.keys = _Table(self, "keys")
        self.counts = _Table(self, "counts")

    # ------------------------------------------------------------- database access
    def _tables(self) -> set:
        names = _TABLES
        if self._tracker is None and not os.path.exists(self.db):
            return set()  # nothing stored yet: insert() creates the file
        rows = self._raw_read("SELECT name FROM sqlite_master WHERE type = 'table' AND name IN "
                              "(?, ?, ?)", names)
        return {name for (name,) in rows}

    def _raw_read(self, sql: str, params: Sequence[Any] = ()) -> Rows:
        if self._tracker is not None:
            return list(self._tracker._query(sql, tuple(params))[1])
        return list(_core.read_rows(self.db, sql, tuple(params))[1])

    def _read(self, sql: str, params: Sequence[Any] = ()) -> Rows:
        """Rows of ``sql``; none while the asset tables do not exist yet."""
        if len(self._tables()) < len(_TABLES):
            return []
        return self._raw_read(sql, params)

    def _transaction(self, work: Callable[[Any], None]) -> None:
        """Run ``work(connection)`` in one write transaction on the file (not a tracker's)."""
        import sqlite3

        conn = sqlite3.connect(self.db, timeout=60.0, isolation_level=None)
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                work(conn)
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        finally:
            conn.close()

    def _write(self, statements: Sequence[Tuple[str, Sequence[Any]]]) -> None:
        """Run writing statements: on the tracker's connection (each its own transaction,
        ordered so that an interruption leaves no key or count without its asset), else
        in one transaction."""
        if self._tracker is not None:
            for sql, params in statements:
                self._tracker._execute(sql, tuple(params))
            return

        def run(conn: Any) -> None:
            for sql, params in statements:
                conn.execute(sql, tuple(params))

        self._transaction(run)

    def commit(self) -> None:
        """Nothing to do: every write is committed when it returns (xetrack's API)."""

    # ------------------------------------------------------------- encoding
    @staticmethod
    def hash_bytes(b: bytes) -> str:
        """The xxh64 hex digest xetrack keys an asset by."""
        return _modules()[1].xxh64(b).hexdigest()

    @staticmethod
    def _to_bytes(asset: Any) -> bytes:
        return _modules()[0].dumps(asset)

    @staticmethod
    def _from_bytes(asset_bytes: Optional[bytes]) -> Optional[Any]:
        data = unpack(asset_bytes)
        return _modules()[0].loads(data) if data else None

    @staticmethod
    def is_hash_candidate(value: Any) -> bool:
        """True for a str that could be an asset hash (16 characters)."""
        return isinstance(value, str) and len(value) == 16

    # ------------------------------------------------------------- API
    def __len__(self) -> int:
        return len(self.assets)

    def insert(self, key: str, asset: Any) -> str:
        """Store ``asset`` under column name ``key``; returns its hash.

        One transaction: on a tracker's connection through the C core, as ``log()``
        writes assets; on a file, with the count read and written inside it."""
        parts = AssetHook(self.compress)(key, asset)
        if self._tracker is not None:
            self._tracker._put_assets([parts])
            return parts[0]
        digest, asset_key, blob, name_key, name_value = parts

        def put(conn: Any) -> None:
            for table in _TABLES:
                conn.execute(f'CREATE TABLE IF NOT EXISTS "{table}" '
                             "(key TEXT PRIMARY KEY, value BLOB)")
            conn.execute('INSERT OR IGNORE INTO "assets" (key, value) VALUES (?, ?)',
                         (asset_key, blob))
            conn.execute('REPLACE INTO "keys" (key, value) VALUES (?, ?)', (name_key, name_value))
            row = conn.execute('SELECT value FROM "counts" WHERE key = ?', (digest,)).fetchone()
            count = _plain_loads(row[0]) if row else 0
            conn.execute('REPLACE INTO "counts" (key, value) VALUES (?, ?)',
                         (digest, pickle.dumps(count + 1, protocol=PICKLE_PROTOCOL)))

        self._transaction(put)
        return digest

    def blob(self, asset_hash: str) -> Optional[bytes]:
        """The pickle bytes of the asset ``asset_hash`` (inflated), without unpickling."""
        return self.assets.get(asset_hash)

    def get_from_hash(self, asset_hash: str, default: Any = None) -> Any:
        """The asset with hash ``asset_hash`` (unpickled), else ``default``."""
        data = self.blob(asset_hash)
        return default if data is None else self._from_bytes(data)

    def get_from_key(self, key: str, default: Any = None) -> Any:
        """The asset last stored under column ``key`` (unpickled), else ``default``."""
        asset_hash = self.keys.get(key)
        return default if asset_hash is None else self.get_from_hash(asset_hash, default)

    def get(self, key: str, default: Any = None) -> Any:
        """The asset of column ``key`` or with hash ``key`` (unpickled), else ``default``."""
        asset_hash = self.keys.get(key)
        if asset_hash is None or self.blob(asset_hash) is None:
            asset_hash = key
        return self.get_from_hash(asset_hash, default)

    def remove(self, key: str) -> bool:
        """Drop column ``key``'s reference: the count goes down, the blob goes at zero."""
        asset_hash = self.keys.get(key)
        if asset_hash is None:
            return False
        count = self.counts.get(asset_hash, 1) - 1
        statements: List[Tuple[str, Sequence[Any]]] = [
            ('DELETE FROM "keys" WHERE key = ?', (encode_key(key),))]
        if count <= 0:
            statements += [('DELETE FROM "counts" WHERE key = ?', (asset_hash,)),
                           ('DELETE FROM "assets" WHERE key = ?', (encode_key(asset_hash),))]
        else:
            statements.append(('REPLACE INTO "counts" (key, value) VALUES (?, ?)',
                               (asset_hash, pickle.dumps(count, protocol=PICKLE_PROTOCOL))))
        self._write(statements)
        return True

    def remove_hash(self, asset_hash: str, remove_keys: bool = True) -> bool:
        """Delete the asset ``asset_hash`` whatever its count; with ``remove_keys`` also
        its count and the columns that point to it.  False when there is no such asset."""
        if self.blob(asset_hash) is None:
            return False
        statements: List[Tuple[str, Sequence[Any]]] = []
        if remove_keys:
            name_keys = [encode_key(k) for k, v in self.keys.items() if v == asset_hash]
            statements += [('DELETE FROM "keys" WHERE key = ?', (k,)) for k in name_keys]
            statements.append(('DELETE FROM "counts" WHERE key = ?', (asset_hash,)))
        statements.append(('DELETE FROM "assets" WHERE key = ?', (encode_key(asset_hash),)))
        self._write(statements)
        return True

    def pop(self, key: str, default: Any = None) -> Any:
        """``get(key)`` then ``remove(key)``."""
        value = self.get(key, default)
        self.remove(key)
        return value


def remove_asset(manager: AssetsManager, write: Callable[[str, Sequence[Any]], Any],
                 table_sql: str, hash_value: str, column: Optional[str],
                 remove_keys: bool = True) -> bool:
    """xetrack's ``remove_asset``: delete the asset, then set ``column`` to NULL where it
    held ``hash_value`` (``write(sql, params)`` runs the UPDATE)."""
    if not manager.remove_hash(hash_value, remove_keys=remove_keys):
        return False
    if column:
        quoted = _core.quote_identifier(_core.sanitize_key(column))
        write(f"UPDATE {table_sql} SET {quoted} = NULL WHERE {quoted} = ?", (hash_value,))
    return True
