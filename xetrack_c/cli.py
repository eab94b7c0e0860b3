"""``xt``: look at and edit tracking databases from the shell.

The commands, arguments and options are xetrack's (``head``, ``tail``, ``columns``, ``ls``,
``delete``, ``set``, ``sql``, ``copy``, ``cache ls|delete``, ``stats describe|top|bottom``,
``plot hist|scatter``) plus ``runs`` for the experiments table of ``run_multiple``.  Tables
print as Markdown, ``--json`` prints JSON.  Exit status: 0 on success, 1 for a problem with
the input (one line on stderr, no traceback), 130 when interrupted.

The reading and editing commands go through the C core and never import pandas or numpy,
so they start in a few milliseconds; ``stats describe`` uses pandas and ``plot`` matplotlib.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any, Callable, List, Optional, Sequence

from xetrack_c import _cli_db as db_access
from xetrack_c._cli_db import UserError
from xetrack_c._cli_render import json_records, json_text, markdown_table

PROG = "xt"
ENGINES = ("sqlite", "duckdb")


class _UsageError(Exception):
    """A command line argparse cannot parse."""


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose usage errors become one line and exit status 1."""

    def error(self, message: str) -> Any:  # type: ignore[override]
        raise _UsageError(f"{self.prog}: error: {message} (see '{self.prog} --help')")


def _out(text: str) -> None:
    sys.stdout.write(text + "\n")


def _table_or_json(names: Sequence[str], rows: Sequence[Sequence[Any]], as_json: bool) -> str:
    return json_records(names, rows) if as_json else markdown_table(names, rows)


def _count_arg(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


# ------------------------------------------------------------------------ commands
def cmd_head(args: argparse.Namespace) -> None:
    names, rows = db_access.head_rows(args.db, args.table, args.n)
    _out(_table_or_json(names, rows, args.json))


def cmd_tail(args: argparse.Namespace) -> None:
    names, rows = db_access.tail_rows(args.db, args.table, args.n)
    _out(_table_or_json(names, rows, args.json))


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
    if args.unique:
        values = list(dict.fromkeys(values))
    _out(_table_or_json([args.column], [(value,) for value in values], args.json))


def cmd_delete(args: argparse.Namespace) -> None:
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
    from xetrack_c._cli_runs import runs

    _out(runs(args.db, args.table, args.json, args.full))


def cmd_copy(args: argparse.Namespace) -> None:
    from xetrack_c._cli_copy import copy_databases

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


def cmd_cache_ls(args: argparse.Namespace) -> None:
    _check_cache_dir(args.cache_path)
    entries = []
    for key, cached in _cache_module().scan_cache(args.cache_path):
        track_id = cached.get("cache", "N/A") if isinstance(cached, dict) else "N/A"
        entries.append({"key": key, "track_id": track_id})
    if args.json:
        _out(json_text(entries))
    elif not entries:
        _out("Cache is empty")
    else:
        _out(f"Cache entries in {args.cache_path}:\n")
        for entry in entries:
            _out(f"  track_id: {entry['track_id']}  key: {entry['key']}")


def cmd_cache_delete(args: argparse.Namespace) -> None:
    _check_cache_dir(args.cache_path)
    deleted = _cache_module().delete_cache_by_track_id(args.cache_path, args.track_id)
    _out(f"Deleted {deleted} cache entries for track_id '{args.track_id}'")


def cmd_stats_describe(args: argparse.Namespace) -> None:
    from xetrack_c._cli_stats import describe

    _out(describe(args.db, args.table, args.columns, args.json))


def cmd_stats_top(args: argparse.Namespace) -> None:
    from xetrack_c._cli_stats import top_or_bottom

    _out(top_or_bottom(args.db, args.table, args.column, True, args.json))


def cmd_stats_bottom(args: argparse.Namespace) -> None:
    from xetrack_c._cli_stats import top_or_bottom

    _out(top_or_bottom(args.db, args.table, args.column, False, args.json))


def cmd_plot_hist(args: argparse.Namespace) -> None:
    from xetrack_c._cli_plot import hist

    _out(hist(args, sys.stdout.isatty()))


def cmd_plot_scatter(args: argparse.Namespace) -> None:
    from xetrack_c._cli_plot import scatter

    _out(scatter(args, sys.stdout.isatty()))


# -------------------------------------------------------------------------- parser
def _db_options(parser: argparse.ArgumentParser, table: str = "default") -> None:
    parser.add_argument("--engine", default="sqlite", choices=ENGINES,
                        help='database engine: "sqlite" or "duckdb" (both read the SQLite file)')
    parser.add_argument("--table", default=table, help=f"table to use (default: {table})")


def _json_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action=argparse.BooleanOptionalAction, default=False,
                        help="print JSON instead of a Markdown table")


def _command(subparsers: Any, name: str, handler: Callable[[argparse.Namespace], None],
             help_text: str, db: bool = True, table: str = "default") -> argparse.ArgumentParser:
    parser = subparsers.add_parser(name, help=help_text, description=help_text)
    if db:
        parser.add_argument("db", metavar="DB", help="path to the database file")
    parser.set_defaults(handler=handler)
    if db:
        _db_options(parser, table)
    return parser


def _add_read_commands(commands: Any) -> None:
    for name, handler, text in (("head", cmd_head, "Show the first rows of the table"),
                                ("tail", cmd_tail, "Show the last rows of the table")):
        parser = _command(commands, name, handler, text)
        parser.add_argument("--n", type=_count_arg, default=5, help="number of rows (default 5)")
        _json_option(parser)
    _json_option(_command(commands, "columns", cmd_columns, "List the columns of the table"))
    parser = _command(commands, "ls", cmd_ls,
                      "List the columns, or the values of COLUMN in timestamp order")
    parser.add_argument("column", metavar="COLUMN", nargs="?", help="column whose values to list")
    parser.add_argument("--unique", action=argparse.BooleanOptionalAction, default=False,
                        help="each value once, in order of first appearance")
    parser.add_argument("--track-id", help="only the rows of this run")
    _json_option(parser)
    parser = _command(commands, "sql", cmd_sql,
                      'Run one read-only SQL query, e.g. \'SELECT count(*) FROM "default"\'')
    parser.add_argument("query", metavar="QUERY", help="the SQL statement")
    _json_option(parser)
    parser = _command(commands, "runs", cmd_runs,
                      "Summarise a run_multiple experiments table: status counts, durations, "
                      "failures", table="experiments")
    parser.add_argument("--full", action=argparse.BooleanOptionalAction, default=False,
                        help="also print each failure's whole error text")
    _json_option(parser)


def _add_write_commands(commands: Any) -> None:
    parser = _command(commands, "delete", cmd_delete, "Delete the rows of one run")
    parser.add_argument("track_id", metavar="TRACK_ID", help="track id of the run to delete")
    parser = _command(commands, "set", cmd_set,
                      "Set KEY to VALUE in every row, or only in the rows selected by "
                      "--track-id and/or --where-key/--where-value")
    parser.add_argument("key", metavar="KEY", help="column to set (added when missing)")
    parser.add_argument("value", metavar="VALUE", help="value to store")
    parser.add_argument("--track-id", help="only rows of this run")
    parser.add_argument("--where-key", help="only rows whose WHERE_KEY column ...")
    parser.add_argument("--where-value", help="... equals WHERE_VALUE (omitted: is NULL)")
    parser = _command(commands, "copy", cmd_copy,
                      "Merge tables of SOURCE into TARGET: add missing columns, skip rows "
                      "already present", db=False)
    parser.add_argument("source", metavar="SOURCE", help="database to copy from (not modified)")
    parser.add_argument("target", metavar="TARGET", help="database to copy into (created if missing)")
    parser.add_argument("--table", action="append",
                        help="table to copy; repeat for several (default: default)")
    parser.add_argument("--engine", default="sqlite", choices=ENGINES, help=argparse.SUPPRESS)
    parser.add_argument("--assets", action=argparse.BooleanOptionalAction, default=True,
                        help="also copy xetrack's asset tables (default: yes)")
    _json_option(parser)


def _add_group_commands(commands: Any) -> None:
    cache = commands.add_parser("cache", help="Result cache commands")
    cache_commands = cache.add_subparsers(dest="cache_command", metavar="COMMAND", required=True)
    parser = _command(cache_commands, "ls", cmd_cache_ls,
                      "List cached entries with the track_id that computed them", db=False)
    parser.add_argument("cache_path", metavar="DIR", help="cache directory")
    _json_option(parser)
    parser = _command(cache_commands, "delete", cmd_cache_delete,
                      "Delete the cache entries computed by one run", db=False)
    parser.add_argument("cache_path", metavar="DIR", help="cache directory")
    parser.add_argument("track_id", metavar="TRACK_ID", help="track id whose entries to delete")

    stats = commands.add_parser("stats", help="Basic statistics")
    stats_commands = stats.add_subparsers(dest="stats_command", metavar="COMMAND", required=True)
    parser = _command(stats_commands, "describe", cmd_stats_describe,
                      "Describe the columns (count, mean, std, quartiles; or counts for text)")
    parser.add_argument("--columns", default="", help='comma-separated columns, e.g. "a,b"')
    _json_option(parser)
    for name, handler, text in (("top", cmd_stats_top, "rows with the largest COLUMN"),
                                ("bottom", cmd_stats_bottom, "rows with the smallest COLUMN")):
        parser = _command(stats_commands, name, handler, f"Show the {text}")
        parser.add_argument("column", metavar="COLUMN")
        _json_option(parser)

    plot = commands.add_parser("plot", help="Plots: a PNG with matplotlib, else in the terminal")
    plot_commands = plot.add_subparsers(dest="plot_command", metavar="COMMAND", required=True)
    hist = _command(plot_commands, "hist", cmd_plot_hist, "Histogram of COLUMN")
    hist.add_argument("column", metavar="COLUMN")
    hist.add_argument("--bins", type=int, help="number of bins")
    hist.add_argument("--width", type=int, help="width of the terminal bars")
    hist.add_argument("--height", type=int, help="accepted for xetrack compatibility")
    hist.add_argument("--xlab", action=argparse.BooleanOptionalAction, default=False,
                      help="accepted for xetrack compatibility")
    hist.add_argument("--summary", action=argparse.BooleanOptionalAction, default=True,
                      help="print a summary under a terminal histogram")
    scatter = _command(plot_commands, "scatter", cmd_plot_scatter, "Scatter plot of Y against X")
    scatter.add_argument("x", metavar="X")
    scatter.add_argument("y", metavar="Y")
    scatter.add_argument("--size", type=int, default=20, help="point size / terminal grid size")
    for parser in (hist, scatter):
        parser.add_argument("--pch", default="o", help="point character of terminal plots")
        parser.add_argument("--colour", default="white", help="colour of the plot")
        parser.add_argument("--title", help="title of the plot")
        parser.add_argument("--output", "-o", help="PNG file to write (default: named after "
                                                   "the columns, in the current directory)")
        parser.add_argument("--terminal", action="store_true",
                            help="draw in the terminal even when matplotlib is installed")


def build_parser() -> argparse.ArgumentParser:
    """The ``xt`` argument parser."""
    from xetrack_c import __version__

    parser = _Parser(prog=PROG, description="Look at and edit xetrack / xetrack_c databases.")
    parser.add_argument("--version", action="version", version=f"xt (xetrack_c) {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    _add_read_commands(commands)
    _add_write_commands(commands)
    _add_group_commands(commands)
    return parser


def _error(message: str) -> int:
    sys.stderr.write(message + "\n")
    return 1


def main(argv: Optional[List[str]] = None) -> int:
    """Run ``xt`` with ``argv`` (default ``sys.argv[1:]``); returns the exit status."""
    try:
        args = build_parser().parse_args(argv)
        args.handler(args)
        sys.stdout.flush()
    except _UsageError as exc:
        return _error(str(exc))
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
