"""The record of which columns of a tracking table are params: the table a Tracker writes
one row to per param name and run, and :mod:`xetrack_c.summary` reads (docs/tracker.md,
"Params and metrics"). No imports: a Tracker with params loads it."""

#: The table: (table_name, track_id, name), one row per param of a run.
PARAMS_TABLE = "xetrack_params"
#: Columns that identify rows rather than describe them: never params, never metrics.
ID_COLUMNS = ("track_id", "timestamp", "experiment_id", "step")
#: Creates the table (a WITHOUT ROWID table keyed on all three columns).
CREATE_TABLE = (f"CREATE TABLE IF NOT EXISTS {PARAMS_TABLE} (table_name TEXT NOT NULL, "
                "track_id TEXT NOT NULL, name TEXT NOT NULL, "
                "PRIMARY KEY (table_name, track_id, name)) WITHOUT ROWID")
#: Most names recorded by one statement (3 bound values each, well under SQLite's limit).
RECORD_BATCH = 256


def record_sql(count: int) -> str:
    """The statement recording ``count`` param names in one transaction: it takes
    (table_name, track_id, name) for each."""
    rows = ", ".join(["(?, ?, ?)"] * count)
    return f"INSERT OR IGNORE INTO {PARAMS_TABLE} (table_name, track_id, name) VALUES {rows}"
