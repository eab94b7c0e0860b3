"""``copy(source, target)``: merge tracking tables of one database file into another.

The Python face of ``xt copy`` (same code: :func:`xetrack_c.cli.merge_db.copy_databases`), with
xetrack's signature and return value. For each table, the target gets the table if it lacks
it, the columns it lacks (with the source's SQL types), and every source row whose
``(track_id, timestamp)`` it does not hold yet; rows already there are skipped, so copying
twice copies nothing the second time. Everything happens in one transaction: a failure
leaves the target as it was. The source is only read.

Asset tables (``assets``, ``keys``, ``counts``, shared by all tables of a file) come along
when the source has them and ``assets=True``: new objects and their counts are added, key
mappings are taken from the source (see ``_merge_assets`` in :mod:`xetrack_c.cli.merge_db`).
"""

from __future__ import annotations

import os
from typing import List, Optional, Union

__all__ = ["copy"]

PathLike = Union[str, "os.PathLike[str]"]


def copy(source: PathLike, target: PathLike, assets: bool = True,
         tables: Optional[List[str]] = None) -> int:
    """Copy the rows of ``tables`` (default ``["default"]``) from database ``source`` into
    database ``target`` (created when missing); return how many rows were copied.

    Raises:
        FileNotFoundError: ``source`` does not exist.
        ValueError: a table is missing from ``source`` or is not a tracking table, the two
            paths are the same file, or SQLite failed (the message says which).
    """
    from xetrack_c.cli.db import UserError
    from xetrack_c.cli.merge_db import copy_databases

    source, target = os.fspath(source), os.fspath(target)
    if isinstance(tables, str):
        raise TypeError(f"tables must be a list of table names, not the string {tables!r}: use tables=[{tables!r}]")
    names = [name[3:] if name.startswith("db.") else name for name in (tables or ["default"])]
    if not os.path.exists(source):
        raise FileNotFoundError(f"no source database {source!r}: pass the path of an existing .db file")
    try:
        report = copy_databases(source, target, names, assets=bool(assets))
    except UserError as exc:
        raise ValueError(str(exc)) from exc
    return sum(report[name]["copied"] for name in dict.fromkeys(names))
