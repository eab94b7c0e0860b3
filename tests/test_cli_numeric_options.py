"""Numeric options out of range are one-line usage errors (exit 2), never a traceback.

``--n`` is bound into SQLite's LIMIT, a signed 64-bit integer; the plot options size lists
and strings a terminal plot builds.  Values past their bounds used to escape as
OverflowError or MemoryError tracebacks.
"""

from __future__ import annotations

import pytest

HUGE = "99999999999999999999"  # past 2**63 - 1

CASES = [
    (("head", "{db}", "--n", HUGE), "--n"),
    (("tail", "{db}", "--n", HUGE), "--n"),
    (("head", "{db}", "--n", "-1"), "--n"),
    (("plot", "hist", "{db}", "n", "--terminal", "--bins", HUGE), "--bins"),
    (("plot", "hist", "{db}", "n", "--terminal", "--width", HUGE), "--width"),
    (("plot", "hist", "{db}", "n", "--terminal", "--height", HUGE), "--height"),
    (("plot", "scatter", "{db}", "n", "acc", "--terminal", "--size", HUGE), "--size"),
    (("plot", "scatter", "{db}", "n", "acc", "--terminal", "--size", "0"), "--size"),
]


@pytest.mark.parametrize("args, option", CASES, ids=[" ".join(a[:1] + a[-2:]) for a, _ in CASES])
def test_an_out_of_range_number_is_a_one_line_error(xt, db, args, option):
    result = xt.usage_fails(*(arg.format(db=db) for arg in args))
    assert option in result.err
    assert "must be" in result.err


def test_the_largest_row_count_sqlite_takes_still_works(xt, db):
    records = xt.ok("head", db, "--n", str(2**63 - 1), "--json").json()
    assert len(records) == 7
