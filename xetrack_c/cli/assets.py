"""xt assets ls|export|delete: the assets tables of a database, read and edited without
unpickling any object (an export writes the pickle's bytes, it does not load them)."""

from __future__ import annotations

from typing import Any, List, Optional, Tuple

from xetrack_c.assets import AssetsManager, remove_asset
from xetrack_c.cli import db as db_access
from xetrack_c.cli.db import UserError


def _manager(db: str) -> AssetsManager:
    return AssetsManager(db_access.check_file(db))


def _translate(db: str, exc: Exception) -> UserError:
    return UserError(f"cannot read the assets of {db!r}: {db_access.one_line(str(exc))}")


def column_hashes(db: str) -> List[Tuple[Any, Any]]:
    """(column, hash it last stored) for every column that holds assets."""
    try:
        return _manager(db).keys.items()
    except UserError:
        raise
    except Exception as exc:  # noqa: BLE001 - a damaged or foreign file: one line
        raise _translate(db, exc) from exc


def export(db: str, asset_hash: str, output: str) -> int:
    """Write the pickle of asset ``asset_hash`` to ``output``; the number of bytes."""
    try:
        data: Optional[bytes] = _manager(db).blob(asset_hash)
    except UserError:
        raise
    except Exception as exc:  # noqa: BLE001
        raise _translate(db, exc) from exc
    if data is None:
        raise UserError(f"no asset {asset_hash!r} in {db!r} (xt assets ls {db} lists them)")
    try:
        with open(output, "wb") as f:
            f.write(data)
    except OSError as exc:
        raise UserError(f"cannot write {output!r}: {exc.strerror or exc}") from exc
    return len(data)


def delete(db: str, asset_hash: str, column: Optional[str], table: str,
           remove_keys: bool) -> None:
    """Delete asset ``asset_hash`` (and NULL ``column`` of ``table`` where it held it)."""
    manager = _manager(db)
    if column is not None:
        db_access.require_column(column, db_access.columns(db, table), table)

    def write(sql: str, params: Any) -> int:
        return db_access.execute(db, sql, params)

    try:
        found = remove_asset(manager, write, db_access.quote(table), asset_hash, column,
                             remove_keys)
    except UserError:
        raise
    except Exception as exc:  # noqa: BLE001
        raise _translate(db, exc) from exc
    if not found:
        raise UserError(f"no asset {asset_hash!r} in {db!r} (xt assets ls {db} lists them)")
