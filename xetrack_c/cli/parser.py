"""The ``xt`` argument parser.

Building every sub-parser costs a few milliseconds (argparse looks up message translations for
each), so :func:`build_parser` can build just the command being run; the full parser is only
built for ``--help``, ``--version`` and unknown commands.
"""

from __future__ import annotations

import argparse
from typing import Any, Callable, Dict, List, Optional, Sequence

PROG = "xt"
ENGINES = ("sqlite", "duckdb")


class UsageError(Exception):
    """A command line that is wrong in itself: ``xt`` prints one line and exits with 2."""


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose usage errors become one line and exit status 2."""

    def error(self, message: str) -> Any:  # type: ignore[override]
        raise UsageError(f"{self.prog}: error: {message} (see '{self.prog} --help')")


# SQLite's LIMIT is a signed 64-bit integer: the most rows --n can ask for.
MAX_ROWS = 2**63 - 1
# Bounds of the plot options: beyond them a plot is unreadable, and a terminal plot of
# that many bins, characters or grid cells would exhaust memory before printing.
MAX_BINS = 100_000
MAX_WIDTH = 10_000
MAX_SIZE = 1_000
# xt delete asks before deleting more rows than this (or every row of the table).
CONFIRM_ROWS = 1_000


def _whole_number(text: str, low: int, high: int) -> int:
    """``text`` as an int in [low, high], else an ArgumentTypeError (one line, exit 1)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < low:
        raise argparse.ArgumentTypeError(f"must be >= {low}, got {value}")
    if value > high:
        raise argparse.ArgumentTypeError(f"must be at most {high:,}, got {text}")
    return value


def _count_arg(text: str) -> int:
    return _whole_number(text, 0, MAX_ROWS)


def _bins_arg(text: str) -> int:
    return _whole_number(text, 1, MAX_BINS)


def _width_arg(text: str) -> int:
    return _whole_number(text, 1, MAX_WIDTH)


def _size_arg(text: str) -> int:
    return _whole_number(text, 1, MAX_SIZE)


def _db_options(parser: argparse.ArgumentParser, table: str = "default") -> None:
    parser.add_argument("--engine", default="sqlite", choices=ENGINES,
                        help='database engine: "sqlite" or "duckdb" (both read the SQLite file)')
    parser.add_argument("--table", default=table, help=f"table to use (default: {table})")


def _json_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action=argparse.BooleanOptionalAction, default=False,
                        help="print JSON instead of a Markdown table")


def _command(subparsers: Any, name: str, key: str, help_text: str, db: bool = True,
             table: str = "default") -> argparse.ArgumentParser:
    """A command's parser; ``key`` (e.g. "head", "cache ls") names its handler."""
    parser = subparsers.add_parser(name, help=help_text, description=help_text)
    if db:
        parser.add_argument("db", metavar="DB", help="path to the database file")
    parser.set_defaults(command_key=key, command_parser=parser)
    if db:
        _db_options(parser, table)
    return parser


def _head_or_tail(commands: Any, name: str, text: str) -> None:
    parser = _command(commands, name, name, text)
    parser.add_argument("--n", type=_count_arg, default=5, help="number of rows (default 5)")
    parser.add_argument("--columns", default="", metavar="A,B,...",
                        help='only these columns, in this order, e.g. "track_id,acc"')
    _json_option(parser)


def _add_head(commands: Any) -> None:
    _head_or_tail(commands, "head", "Show the first rows of the table")


def _add_tail(commands: Any) -> None:
    _head_or_tail(commands, "tail", "Show the last rows of the table")


def _add_columns(commands: Any) -> None:
    _json_option(_command(commands, "columns", "columns", "List the columns of the table"))


def _add_ls(commands: Any) -> None:
    parser = _command(commands, "ls", "ls",
                      "List the columns, or the values of COLUMN in timestamp order")
    parser.add_argument("column", metavar="COLUMN", nargs="?", help="column whose values to list")
    parser.add_argument("--unique", action=argparse.BooleanOptionalAction, default=False,
                        help="each value once, in order of first appearance")
    parser.add_argument("--track-id", help="only the rows of this run")
    _json_option(parser)


def _add_sql(commands: Any) -> None:
    parser = _command(commands, "sql", "sql",
                      'Run one read-only SQL query, e.g. \'SELECT count(*) FROM "default"\'')
    parser.add_argument("query", metavar="QUERY", help="the SQL statement")
    _json_option(parser)


def _add_runs(commands: Any) -> None:
    parser = _command(commands, "runs", "runs",
                      "Summarise a run_multiple experiments table: status counts, durations, "
                      "failures; with --table naming a tracking table, one row per run with "
                      "its params and the last and max of its metrics", table="experiments")
    parser.add_argument("--full", action=argparse.BooleanOptionalAction, default=False,
                        help="also print each failure's whole error text")
    _json_option(parser)


def _add_summary(commands: Any) -> None:
    parser = _command(commands, "summary", "summary",
                      "Summarise metrics per run or per group: e.g. the last, max and mean "
                      "accuracy of each model")
    parser.add_argument("--metric", action="append", metavar="A,B,...",
                        help="metric column(s) to summarise (default: every metric, i.e. "
                             "numeric column that changes within a run)")
    parser.add_argument("--by", default="track_id", metavar="A,B,...",
                        help="column(s) to group by (default: track_id)")
    parser.add_argument("--agg", default="last,max,mean", metavar="A,B,...",
                        help="aggregations among last, first, min, max, mean, count, std "
                             "(default: last,max,mean)")
    _json_option(parser)


def _add_compare(commands: Any) -> None:
    parser = _command(commands, "compare", "compare",
                      "Compare two runs: their params side by side and the last and max of "
                      "each metric with the differences")
    parser.add_argument("run_a", metavar="RUN_A", help="track id of the first run")
    parser.add_argument("run_b", metavar="RUN_B", help="track id of the second run")
    _json_option(parser)


def _add_delete(commands: Any) -> None:
    parser = _command(commands, "delete", "delete", "Delete the rows of one run")
    parser.add_argument("track_id", metavar="TRACK_ID", help="track id of the run to delete")
    parser.add_argument("--yes", "-y", action="store_true",
                        help=f"delete without asking, even more than {CONFIRM_ROWS:,} rows "
                             f"or every row of the table")


def _add_set(commands: Any) -> None:
    parser = _command(commands, "set", "set",
                      "Set KEY to VALUE in every row, or only in the rows selected by "
                      "--track-id and/or --where-key/--where-value")
    parser.add_argument("key", metavar="KEY", help="column to set (added when missing)")
    parser.add_argument("value", metavar="VALUE", help="value to store")
    parser.add_argument("--track-id", help="only rows of this run")
    parser.add_argument("--where-key", help="only rows whose WHERE_KEY column ...")
    parser.add_argument("--where-value", help="... equals WHERE_VALUE (omitted: is NULL)")


def _add_copy(commands: Any) -> None:
    parser = _command(commands, "copy", "copy",
                      "Merge tables of SOURCE into TARGET: add missing columns, skip rows "
                      "already present", db=False)
    parser.add_argument("source", metavar="SOURCE", help="database to copy from (not modified)")
    parser.add_argument("target", metavar="TARGET",
                        help="database to copy into (created if missing)")
    parser.add_argument("--table", action="append",
                        help="table to copy; repeat for several (default: default)")
    parser.add_argument("--engine", default="sqlite", choices=ENGINES, help=argparse.SUPPRESS)
    parser.add_argument("--assets", action=argparse.BooleanOptionalAction, default=True,
                        help="also copy xetrack's asset tables (default: yes)")
    _json_option(parser)


def _add_cache(commands: Any) -> None:
    cache = commands.add_parser("cache", help="Result cache commands")
    cache_commands = cache.add_subparsers(dest="cache_command", metavar="COMMAND", required=True)
    parser = _command(cache_commands, "ls", "cache ls",
                      "List cached entries with the track_id that computed them", db=False)
    parser.add_argument("cache_path", metavar="DIR", help="cache directory")
    parser.add_argument("--key-file", metavar="FILE", default=None,
                        help="file holding the cache key that checks the entries' MACs "
                             "(default: $XETRACK_C_CACHE_KEY, else ~/.config/xetrack_c/cache.key)")
    _json_option(parser)
    parser = _command(cache_commands, "delete", "cache delete",
                      "Delete the cache entries computed by one run", db=False)
    parser.add_argument("cache_path", metavar="DIR", help="cache directory")
    parser.add_argument("track_id", metavar="TRACK_ID", help="track id whose entries to delete")


def _add_assets(commands: Any) -> None:
    assets = commands.add_parser("assets", help="Assets: objects logged by hash")
    asset_commands = assets.add_subparsers(dest="assets_command", metavar="COMMAND",
                                           required=True)
    parser = _command(asset_commands, "ls", "assets ls",
                      "List the columns that hold assets and the hash each last stored",
                      db=False)
    parser.add_argument("db", metavar="DB", help="path to the database file")
    parser.add_argument("--engine", default="sqlite", choices=ENGINES, help=argparse.SUPPRESS)
    _json_option(parser)
    parser = _command(asset_commands, "export", "assets export",
                      "Write an asset's pickle (as cloudpickle.dump writes it) to a file",
                      db=False)
    parser.add_argument("db", metavar="DB", help="path to the database file")
    parser.add_argument("key", metavar="HASH", help="the asset's hash, as its row holds it")
    parser.add_argument("output", metavar="OUTPUT", help="file to write")
    parser.add_argument("--engine", default="sqlite", choices=ENGINES, help=argparse.SUPPRESS)
    parser = _command(asset_commands, "delete", "assets delete",
                      "Delete an asset, whatever the number of rows that refer to it",
                      db=False)
    parser.add_argument("db", metavar="DB", help="path to the database file")
    parser.add_argument("asset", metavar="HASH", help="the asset's hash")
    parser.add_argument("--column", default=None,
                        help="also set this column to NULL in the rows that held the hash")
    parser.add_argument("--table", default="default",
                        help="table of --column (default: default)")
    parser.add_argument("--remove-keys", action=argparse.BooleanOptionalAction, default=True,
                        help="also drop its count and the columns that point to it "
                             "(default: yes)")
    parser.add_argument("--engine", default="sqlite", choices=ENGINES, help=argparse.SUPPRESS)


def _add_stats(commands: Any) -> None:
    stats = commands.add_parser("stats", help="Basic statistics")
    stats_commands = stats.add_subparsers(dest="stats_command", metavar="COMMAND", required=True)
    parser = _command(stats_commands, "describe", "stats describe",
                      "Describe the columns (count, mean, std, quartiles; or counts for text)")
    parser.add_argument("--columns", default="", help='comma-separated columns, e.g. "a,b"')
    _json_option(parser)
    for name, text in (("top", "rows with the largest COLUMN"),
                       ("bottom", "rows with the smallest COLUMN")):
        parser = _command(stats_commands, name, f"stats {name}", f"Show the {text}")
        parser.add_argument("column", metavar="COLUMN")
        _json_option(parser)


def _add_plot(commands: Any) -> None:
    plot = commands.add_parser("plot", help="Plots: a PNG with matplotlib, else in the terminal")
    plot_commands = plot.add_subparsers(dest="plot_command", metavar="COMMAND", required=True)
    hist = _command(plot_commands, "hist", "plot hist", "Histogram of COLUMN")
    hist.add_argument("column", metavar="COLUMN")
    hist.add_argument("--bins", type=_bins_arg, help="number of bins")
    hist.add_argument("--width", type=_width_arg, help="width of the terminal bars")
    hist.add_argument("--height", type=_width_arg, help="accepted for xetrack compatibility")
    hist.add_argument("--xlab", action=argparse.BooleanOptionalAction, default=False,
                      help="accepted for xetrack compatibility")
    hist.add_argument("--summary", action=argparse.BooleanOptionalAction, default=True,
                      help="print a summary under a terminal histogram")
    scatter = _command(plot_commands, "scatter", "plot scatter", "Scatter plot of Y against X")
    scatter.add_argument("x", metavar="X")
    scatter.add_argument("y", metavar="Y")
    scatter.add_argument("--size", type=_size_arg, default=20, help="point size / terminal grid size")
    line = _command(plot_commands, "line", "plot line",
                    "Learning curve: Y against X, one line per value of --by")
    line.add_argument("--x", required=True, help="the step column (epoch, step, ...)")
    line.add_argument("--y", required=True, help="the metric column")
    line.add_argument("--by", default="track_id",
                      help="one line per value of this column (a run or a parameter)")
    line.add_argument("--width", type=_width_arg, help="width of the terminal plot (default 60)")
    line.add_argument("--height", type=_width_arg, help="height of the terminal plot "
                                                        "(default 20)")
    line.add_argument("--pch", default="*+ox#@%&",
                      help="marker characters of the terminal series, one per line")
    for parser in (hist, scatter):
        parser.add_argument("--pch", default="o", help="point character of terminal plots")
        parser.add_argument("--colour", default="white", help="colour of the plot")
    for parser in (hist, scatter, line):
        parser.add_argument("--title", help="title of the plot")
        parser.add_argument("--output", "-o", help="PNG file to write (default: named after "
                                                   "the columns, in the current directory)")
        parser.add_argument("--terminal", action="store_true",
                            help="draw in the terminal even when matplotlib is installed")


def _add_report(commands: Any) -> None:
    report = _command(commands, "report", "report",
                      "Write one self-contained HTML report of every table in DB", db=False)
    report.add_argument("db", metavar="DB", help="path to the database file")
    report.add_argument("--output", "-o", default="report.html",
                        help="HTML file to write (default: report.html)")
    report.add_argument("--title", help="title of the report (default: the file's name)")


# Top-level command -> function adding its parser, in the order --help lists them.
BUILDERS: Dict[str, Callable[[Any], None]] = {
    "head": _add_head, "tail": _add_tail, "columns": _add_columns, "ls": _add_ls,
    "sql": _add_sql, "runs": _add_runs, "summary": _add_summary, "compare": _add_compare,
    "delete": _add_delete, "set": _add_set,
    "copy": _add_copy, "cache": _add_cache, "assets": _add_assets, "stats": _add_stats,
    "plot": _add_plot, "report": _add_report,
}


def option_strings(parser: argparse.ArgumentParser) -> List[str]:
    """Every option string ``parser`` accepts (``--table``, ``--json``, ``--no-json``, ...)."""
    return [option for action in parser._actions for option in action.option_strings]


def unknown_arguments(parser: argparse.ArgumentParser, extras: Sequence[str]) -> str:
    """The one-line error for arguments ``parser`` (a command's parser) did not take: the
    first unknown option with the closest known one, and where the command's help is."""
    import difflib

    options = [arg for arg in extras if arg.startswith("-") and arg != "-"]
    if not options:
        return (f"{parser.prog}: unexpected argument {extras[0]!r}; "
                f"see {parser.prog} --help")
    option = options[0].split("=", 1)[0]
    close = difflib.get_close_matches(option, option_strings(parser), n=1, cutoff=0.6)
    hint = f" (did you mean {close[0]}?)" if close else ""
    return f"{parser.prog}: unknown option {option}{hint}; see {parser.prog} --help"


def build_parser(command: Optional[str] = None) -> argparse.ArgumentParser:
    """The ``xt`` parser: with only ``command``'s sub-parser when it names one, else all."""
    from xetrack_c import __version__

    parser = Parser(prog=PROG, description="Look at and edit xetrack / xetrack_c databases.")
    parser.add_argument("--version", action="version", version=f"xt (xetrack_c) {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    if command in BUILDERS:
        BUILDERS[command](commands)
    else:
        for add in BUILDERS.values():
            add(commands)
    return parser
