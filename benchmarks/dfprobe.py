"""Subprocess body of the to_df memory benchmark: ``python -m benchmarks.dfprobe WHO DB``.

Imports what WHO needs ("xetrack_c", "xetrack" or "pandas"), reads the resident set size, loads
the whole table into a DataFrame once and prints one JSON line: the RSS before the call, the
process's peak (ru_maxrss) after it, and the number of rows read (KiB figures). Runs in its own
process so that the peak belongs to this one call.
"""

from __future__ import annotations

import json
import resource
import sqlite3
import sys
from typing import Any

from benchmarks.memprobe import current_rss_kib

QUERY = 'SELECT * FROM "default"'


def load(who: str, db: str) -> Any:
    """The table as a DataFrame, read the way ``who`` reads it."""
    if who == "xetrack_c":
        import xetrack_c

        return xetrack_c.Reader(db).to_df()
    if who == "xetrack":
        import xetrack

        return xetrack.Reader(db).to_df()
    if who == "pandas":
        import pandas

        conn = sqlite3.connect(db)
        try:
            return pandas.read_sql_query(QUERY, conn)
        finally:
            conn.close()
    raise SystemExit(f"dfprobe: unknown reader {who!r}; use xetrack_c, xetrack or pandas")


def main(argv: list[str]) -> int:
    """Measure one load and print the JSON line."""
    if len(argv) != 2:
        print("usage: python -m benchmarks.dfprobe xetrack_c|xetrack|pandas DB", file=sys.stderr)
        return 2
    who, db = argv
    import pandas  # noqa: F401 - imported before the baseline, as every reader needs it

    if who == "xetrack_c":
        import xetrack_c  # noqa: F401
    elif who == "xetrack":
        import xetrack  # noqa: F401
    before = current_rss_kib()
    frame = load(who, db)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"who": who, "rows": len(frame), "rss_before_kib": before,
                      "peak_kib": peak}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
