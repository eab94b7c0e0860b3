"""``xt``: look at and edit tracking databases from the shell.

The commands, arguments and options are xetrack's (``head``, ``tail``, ``columns``, ``ls``,
``delete``, ``set``, ``sql``, ``copy``, ``cache ls|delete``, ``assets ls|export|delete``,
``stats describe|top|bottom``,
``plot hist|scatter``) plus ``runs`` for the experiments table of ``run_multiple`` (or the
runs of a tracking table), ``summary`` and ``compare``.  Tables
print as Markdown, ``--json`` prints JSON.  Exit status: 0 on success, 1 for a problem with
the input (one line on stderr, no traceback), 130 when interrupted.

The reading and editing commands go through the C core and never import pandas or numpy,
so they start in a few milliseconds; ``stats describe`` uses pandas and ``plot`` matplotlib.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from xetrack_c.cli import db as db_access
from xetrack_c.cli.db import UserError
from xetrack_c.cli.parser import CONFIRM_ROWS, PROG, UsageError, build_parser, unknown_arguments
from xetrack_c.cli.render import (
    ELLIPSIS,
    fitted_markdown_table,
    json_records,
    json_text,
    json_value,
    markdown_table,
    plain_value,
)


def _out(text: str) -> None:
    sys.stdout.write(text + "\n")


def _table_or_json(names: Sequence[str], rows: Sequence[Sequence[Any]], as_json: bool) -> str:
    return json_records(names, rows) if as_json else markdown_table(names, rows)


def _pick_columns(args: argparse.Namespace, names: List[str],
                  rows: db_access.Rows) -> Tuple[List[str], db_access.Rows]:
    """The ``--columns`` of ``names`` and ``rows``, in the order given (all when empty)."""
    wanted = list(dict.fromkeys(name.strip() for name in args.columns.split(",")
                                if name.strip()))
    if not wanted:
        return names, rows
    unknown = [name for name in wanted if name not in names]
    if unknown:
        prog = args.command_parser.prog
        raise UsageError(f"{prog}: no column {unknown[0]!r} in table {args.table!r} for "
                         f"--columns (columns: {', '.join(names)}); see {prog} --help")
    indexes = [names.index(name) for name in wanted]
    return wanted, [tuple(row[i] for i in indexes) for row in rows]


def _print_rows(args: argparse.Namespace, names: List[str], rows: db_access.Rows) -> None:
    """Rows as JSON, or as a Markdown table fitted to the terminal when stdout is one."""
    names, rows = _pick_columns(args, names, rows)
    if args.json:
        _out(json_records(names, rows))
    elif sys.stdout.isatty():
        import shutil

        _out(fitted_markdown_table(names, rows, shutil.get_terminal_size().columns))
    else:
        _out(markdown_table(names, rows))


# ------------------------------------------------------------------------ commands
def cmd_head(args: argparse.Namespace) -> None:
    _print_rows(args, *db_access.head_rows(args.db, args.table, args.n))


def cmd_tail(args: argparse.Namespace) -> None:
    _print_rows(args, *db_access.tail_rows(args.db, args.table, args.n))


def cmd_columns(args: argparse.Namespace) -> None:
    names = db_access.columns(args.db, args.table)
    if args.json:
        _out(json_text(names))
    else:
        _out(f"Columns in {args.db} table '{args.table}':\n\n{names}")


def cmd_ls(args: argparse.Namespace) -> None:
    if args.column is None:
        names = db_access.columns(args.db, args.table)
        _out(json_text(names) if args.json else str(names))
        return
    values = db_access.column_values(args.db, args.table, args.column, args.track_id)
    if not args.unique:
        _out(_table_or_json([args.column], [(value,) for value in values], args.json))
        return
    # A list of distinct values, not a table: one per line, or a JSON list.
    values = list(dict.fromkeys(values))
    if args.json:
        _out(json_text([json_value(value) for value in values]))
    elif values:
        _out("\n".join(plain_value(value) for value in values))


# Runs named by a failed xt delete.
_RUNS_NAMED = 5


def _no_such_run(args: argparse.Namespace) -> UserError:
    """The error for an ``xt delete`` of a track_id with no rows, naming the runs there are."""
    names, count = db_access.run_ids(args.db, args.table, _RUNS_NAMED)
    where = f"no rows with track_id {args.track_id!r} in table {args.table!r}"
    if not names:
        return UserError(f"{where}: it holds no runs; nothing deleted")
    listed = ", ".join(repr(name) for name in names)
    if count > len(names):
        listed = f"{listed}, {ELLIPSIS} ({count} in all; xt ls {args.db} track_id --unique)"
    return UserError(f"{where} (runs: {listed}); nothing deleted")


def _confirm_delete(args: argparse.Namespace, rows: int, total: int) -> None:
    """Ask at a terminal before a deletion of more than CONFIRM_ROWS rows or of every row;
    without a terminal, refuse it (UserError) unless --yes."""
    if args.yes or (rows <= CONFIRM_ROWS and rows < total):
        return
    what = f"{rows:,} row{'s' if rows != 1 else ''} of track_id {args.track_id!r} from table {args.table!r}"
    why = "every row of the table" if rows == total else f"more than {CONFIRM_ROWS:,} rows"
    if not sys.stdin.isatty():
        raise UserError(f"not deleting {what} without confirmation ({why}): pass --yes to "
                        f"delete them")
    sys.stderr.write(f"Delete {what} ({why})? [y/N] ")
    sys.stderr.flush()
    if sys.stdin.readline().strip().lower() not in ("y", "yes"):
        raise UserError("not confirmed; nothing deleted")


def cmd_delete(args: argparse.Namespace) -> None:
    rows, total = db_access.run_row_counts(args.db, args.table, args.track_id)
    if rows == 0:
        raise _no_such_run(args)
    _confirm_delete(args, rows, total)
    deleted = db_access.delete_run(args.db, args.table, args.track_id)
    _out(f"Deleted {deleted} rows of track_id '{args.track_id}' from table '{args.table}'")


def cmd_set(args: argparse.Namespace) -> None:
    if args.where_value is not None and args.where_key is None:
        raise UserError("--where-value needs --where-key (the column to match)")
    changed = db_access.set_value(args.db, args.table, args.key, args.value, args.track_id,
                                  args.where_key, args.where_value)
    _out(f"Set {args.key} = {args.value!r} in {changed} rows of table '{args.table}'")


def cmd_sql(args: argparse.Namespace) -> None:
    names, rows = db_access.run_query(args.db, args.query)
    if names:
        _out(_table_or_json(names, rows, args.json))


def cmd_runs(args: argparse.Namespace) -> None:
    from xetrack_c.cli.runs import runs

    _out(runs(args.db, args.table, args.json, args.full))


def cmd_summary(args: argparse.Namespace) -> None:
    from xetrack_c.cli.compare import names_list, summary

    by = names_list([args.by])
    agg = names_list([args.agg])
    prog = args.command_parser.prog
    if not by:
        raise UsageError(f"{prog}: --by names no column; see {prog} --help")
    if not agg:
        raise UsageError(f"{prog}: --agg names no aggregation; see {prog} --help")
    from xetrack_c.summary import AGGREGATIONS

    unknown = [name for name in agg if name not in AGGREGATIONS]
    if unknown:
        raise UsageError(f"{prog}: unknown aggregation {unknown[0]!r} for --agg (choose from "
                         f"{', '.join(AGGREGATIONS)}); see {prog} --help")
    _out(summary(args.db, args.table, names_list(args.metric), by, agg, args.json))


def cmd_compare(args: argparse.Namespace) -> None:
    from xetrack_c.cli.compare import compare

    _out(compare(args.db, args.table, args.run_a, args.run_b, args.json))


def cmd_copy(args: argparse.Namespace) -> None:
    from xetrack_c.cli.merge_db import copy_databases

    tables = args.table or ["default"]
    report = copy_databases(args.source, args.target, tables, args.assets)
    if args.json:
        _out(json_text(report))
        return
    total = 0
    for table in dict.fromkeys(tables):
        counts = report[table]
        total += counts["copied"]
        _out(f"table '{table}': copied {counts['copied']} rows, skipped {counts['skipped']} "
             f"already present, added {counts['columns_added']} columns")
    if "assets" in report:
        _out(f"assets: copied {report['assets']['copied']}")
    _out(f"Successfully copied {total} events")


def _cache_module() -> Any:
    try:
        from xetrack_c import cache
    except ImportError as exc:
        raise UserError(f"this build of xetrack_c has no result cache module ({exc})") from exc
    return cache


def _check_cache_dir(path: str) -> None:
    if not os.path.isdir(path):
        raise UserError(f"no such cache directory: {path!r} (pass the directory given as "
                        f"Tracker(cache=...))")


def _cache_auth_key(key_file: Optional[str]) -> Optional[bytes]:
    """The key to check the entries' MACs with: ``--key-file``, else XETRACK_C_CACHE_KEY,
    else the per-user key file (never created here); None: no key, nothing is checked."""
    from xetrack_c import cache_auth

    try:
        if key_file is not None:
            key = cache_auth.read_key_file(key_file)
            if key is None:
                raise UserError(f"no such key file: {key_file!r}")
            return key
        return cache_auth.resolve_cache_key(None, create=False)
    except cache_auth.CacheKeyUnavailable:
        return None  # listing unpickles nothing: it only cannot say which entries verify
    except cache_auth.CacheKeyError as exc:
        raise UserError(str(exc)) from exc


_AUTHENTICATED = {"ok": True, "mismatch": False, "missing": False, "unchecked": None}


def _cache_entries(cache_dir: str, key_file: Optional[str] = None) -> List[Dict[str, Any]]:
    """Every entry's key, track_id, creation time, function and whether its MAC verifies
    (None: no key to check it with), without unpickling results (which could run code,
    import numpy or pandas, or fail for a class that moved)."""
    from xetrack_c import _core

    path = _cache_module().cache_file(cache_dir)
    if not os.path.exists(path):
        return []
    auth_key = _cache_auth_key(key_file)
    entries: List[Dict[str, Any]] = []
    try:
        with _core.ResultCache(cache_dir, "read", auth_key=auth_key) as cache:
            after, page_size = "", 512
            while True:
                page = cache.scan_raw(after, page_size)
                entries += [{"key": key, "track_id": track_id, "created": created,
                             "function_name": function_name, "authenticated": _AUTHENTICATED[auth]}
                            for key, _, track_id, created, function_name, auth in page]
                if len(page) < page_size:
                    return entries
                after = page[-1][0]
    except (_core.Error, ValueError) as exc:
        raise UserError(db_access.one_line(str(exc))) from exc


def cmd_cache_ls(args: argparse.Namespace) -> None:
    _check_cache_dir(args.cache_path)
    entries = _cache_entries(args.cache_path, args.key_file)
    if args.json:
        _out(json_text(entries))
    elif not entries:
        _out("Cache is empty")
    else:
        _out(f"Cache entries in {args.cache_path}:\n")
        for entry in entries:
            flag = "  (fails authentication: not trusted)" if entry["authenticated"] is False else ""
            created = str(entry["created"] or "N/A")[:19]  # to the second
            _out(f"  track_id: {entry['track_id'] or 'N/A'}  "
                 f"function: {entry['function_name'] or 'N/A'}  created: {created}  "
                 f"key: {entry['key']}{flag}")


def cmd_cache_delete(args: argparse.Namespace) -> None:
    _check_cache_dir(args.cache_path)
    from xetrack_c import _core

    try:
        deleted = _cache_module().delete_cache_by_track_id(args.cache_path, args.track_id)
    except (_core.Error, ValueError) as exc:
        raise UserError(db_access.one_line(str(exc))) from exc
    _out(f"Deleted {deleted} cache entries for track_id '{args.track_id}'")


def cmd_assets_ls(args: argparse.Namespace) -> None:
    from xetrack_c.cli.assets import column_hashes

    rows = column_hashes(args.db)
    _out(_table_or_json(["key", "hash"], rows, args.json))


def cmd_assets_export(args: argparse.Namespace) -> None:
    from xetrack_c.cli.assets import export

    size = export(args.db, args.key, args.output)
    _out(f"Asset {args.key} saved to {args.output} ({size} bytes)")


def cmd_assets_delete(args: argparse.Namespace) -> None:
    from xetrack_c.cli.assets import delete

    delete(args.db, args.asset, args.column, args.table, args.remove_keys)
    _out(f"Deleted asset {args.asset}")


def cmd_stats_describe(args: argparse.Namespace) -> None:
    from xetrack_c.cli.stats import describe

    _out(describe(args.db, args.table, args.columns, args.json))


def cmd_stats_top(args: argparse.Namespace) -> None:
    from xetrack_c.cli.stats import top_or_bottom

    _out(top_or_bottom(args.db, args.table, args.column, True, args.json))


def cmd_stats_bottom(args: argparse.Namespace) -> None:
    from xetrack_c.cli.stats import top_or_bottom

    _out(top_or_bottom(args.db, args.table, args.column, False, args.json))


def cmd_plot_hist(args: argparse.Namespace) -> None:
    from xetrack_c.cli.plot import hist

    _out(hist(args, sys.stdout.isatty()))


def cmd_plot_scatter(args: argparse.Namespace) -> None:
    from xetrack_c.cli.plot import scatter

    _out(scatter(args, sys.stdout.isatty()))


def cmd_plot_line(args: argparse.Namespace) -> None:
    from xetrack_c.cli.plot import line

    _out(line(args, sys.stdout.isatty()))


def cmd_report(args: argparse.Namespace) -> None:
    from xetrack_c.reader import Reader
    from xetrack_c.report import write_report

    db = db_access.check_file(args.db)
    db_access.table_names(db)  # a file that is not a database: one line, exit status 1
    written = write_report(db, args.output, lambda table: Reader(db, table=table).to_df(),
                           title=args.title)
    _out(f"Wrote {written}")


# Parser key (see parser.py) -> the function that runs the command.
HANDLERS: Dict[str, Callable[[argparse.Namespace], None]] = {
    "head": cmd_head, "tail": cmd_tail, "columns": cmd_columns, "ls": cmd_ls, "sql": cmd_sql,
    "runs": cmd_runs, "summary": cmd_summary, "compare": cmd_compare, "delete": cmd_delete, "set": cmd_set, "copy": cmd_copy,
    "cache ls": cmd_cache_ls, "cache delete": cmd_cache_delete,
    "assets ls": cmd_assets_ls, "assets export": cmd_assets_export,
    "assets delete": cmd_assets_delete,
    "stats describe": cmd_stats_describe, "stats top": cmd_stats_top,
    "stats bottom": cmd_stats_bottom, "plot hist": cmd_plot_hist,
    "plot scatter": cmd_plot_scatter, "plot line": cmd_plot_line, "report": cmd_report,
}


def _error(message: str) -> int:
    sys.stderr.write(message + "\n")
    return 1


def main(argv: Optional[List[str]] = None) -> int:
    """Run ``xt`` with ``argv`` (default ``sys.argv[1:]``); returns the exit status."""
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        args, extras = build_parser(argv[0] if argv else None).parse_known_args(argv)
        if extras:
            raise UsageError(unknown_arguments(args.command_parser, extras))
        HANDLERS[args.command_key](args)
        sys.stdout.flush()
    except UsageError as exc:
        _error(str(exc))
        return 2
    except UserError as exc:
        return _error(f"{PROG}: error: {exc}")
    except SystemExit as exc:  # --help and --version
        return exc.code if isinstance(exc.code, int) else 0
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader of our output went away (xt head db | head -1): stop quietly.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
