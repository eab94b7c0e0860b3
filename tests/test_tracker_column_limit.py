"""Growing a table past SQLite's column limit (SQLITE_MAX_COLUMN, 2000) is a ValueError.

A single row wider than the limit is refused before anything is written (row.c); rows
that add a few keys each reach the limit only when ALTER TABLE fails.  That too is a
ValueError naming the limit and what to do, and nothing of the write is stored.
"""

from __future__ import annotations

import pytest
from conftest import count_rows, integrity_check, table_info

from xetrack_c import StorageError, Tracker

pytestmark = pytest.mark.slow  # left out of the jobs that re-run the suite (.ci/run)


def fill(tracker: Tracker, columns: int) -> None:
    """Log one row that brings the table to ``columns`` columns (with track_id, timestamp)."""
    tracker.log({f"k{i}": i for i in range(columns - 2)})


@pytest.mark.parametrize("durability", ["commit", "fsync"])
def test_growing_past_the_limit_raises_value_error_and_writes_nothing(db_path, durability):
    tracker = Tracker(db_path, durability=durability)
    fill(tracker, 1995)
    with pytest.raises(ValueError, match="2000") as info:
        tracker.log({f"new{i}": i for i in range(10)})
    assert not isinstance(info.value, StorageError)
    message = str(info.value)
    assert "SQLITE_MAX_COLUMN" in message and "table=" in message
    assert count_rows(db_path) == 1 and len(table_info(db_path)) == 1995
    with pytest.raises(ValueError, match="2000"):
        tracker.log_batch([{"a": 1}, {f"more{i}": i for i in range(10)}])
    assert count_rows(db_path) == 1
    tracker.log({"k5": 5, "new0": 0})  # up to the limit still works
    tracker.close()
    assert count_rows(db_path) == 2 and integrity_check(db_path) == "ok"


def test_set_param_past_the_limit_raises_value_error(db_path):
    tracker = Tracker(db_path)
    fill(tracker, 2000)
    with pytest.raises(ValueError, match="SQLITE_MAX_COLUMN"):
        tracker.set_param("one_too_many", 1)
    tracker.close()


def test_async_writer_reports_the_limit_as_value_error(db_path):
    tracker = Tracker(db_path)
    fill(tracker, 1999)
    tracker.close()
    tracker = Tracker(db_path, durability="async")
    tracker.log({"x1": 1, "x2": 2})
    with pytest.raises(ValueError, match="SQLITE_MAX_COLUMN"):
        tracker.flush()
    tracker.close()
    assert count_rows(db_path) == 1
