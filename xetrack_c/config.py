"""xetrack's named constants at its public path ``xetrack.config``.

The values are the ones xetrack_c itself uses for column names, defaults and log formats,
so a script that builds SQL or reads logs with them sees the same names in either package.
"""

from __future__ import annotations

from typing import Any, Dict

__all__ = ["CONSTANTS", "DEFAULTS", "LOGURU_PARAMS", "SCHEMA_PARAMS", "TRACKER_CONSTANTS"]


class SCHEMA_PARAMS:
    """Table and column names of the tracking schema."""

    DUCKDB_TABLE: str = "db.default"
    SQLITE_TABLE: str = "default"
    TRACK_ID: str = "track_id"
    DEFAULT_TABLE: str = "default"


class DEFAULTS:
    """Default arguments."""

    DB: str = "track.db"


class CONSTANTS:
    """Special ``db`` values, SQL type names and the timestamp format."""

    IN_MEMORY_DB: str = ":memory:"
    SKIP_INSERT: str = "SKIP_INSERT"
    DTYPES_TO_PYTHON: Dict[str, Any] = {
        "BOOLEAN": bool, "TINYINT": int, "SMALLINT": int, "INTEGER": int, "BIGINT": int,
        "FLOAT": float, "DOUBLE": float, "VARCHAR": str, "CHAR": str, "BLOB": bytearray,
        "DATE": str, "TIME": str, "TIMESTAMP": str, "DECIMAL": float, "INTERVAL": str,
        "UUID": str,
    }
    TIMESTAMP_FORMAT: str = "%Y-%m-%d %H:%M:%S.%f"


class TRACKER_CONSTANTS:
    """Column names the Tracker writes."""

    FUNCTION_NAME: str = "function_name"
    FUNCTION_TIME: str = "function_time"
    FUNCTION_RESULT: str = "function_result"
    ARGS: str = "args"
    KWARGS: str = "kwargs"
    ERROR: str = "error"
    TIMESTAMP: str = "timestamp"
    GIT_COMMIT_KEY: str = "git_commit_hash"


class _LogFormat(type):
    """Makes ``LOGURU_PARAMS.DELIMITER`` and ``.FORMAT`` follow ``LOGS_DELIMITER`` when read."""

    @property
    def DELIMITER(cls) -> str:  # noqa: N802 - xetrack's name
        from xetrack_c.logging import delimiter

        return delimiter()

    @property
    def FORMAT(cls) -> str:  # noqa: N802 - xetrack's name
        from xetrack_c.logging import line_format

        return line_format()


class LOGURU_PARAMS(metaclass=_LogFormat):
    """Levels, file names and formats of the text logs (see :mod:`xetrack_c.logging`)."""

    ROTATION: str = "1 day"
    EXPERIMENT: str = "EXPERIMENT"
    MONITOR: str = "MONITOR"
    TRACKING: str = "TRACKING"
    LEVEL: str = "level"
    TIMESTAMP_FORMAT: str = "%Y-%m-%d %H:%M:%S"
    LOG_FILE_FORMAT: str = "{time:YYYY-MM-DD}.log"
    STRACTURED_REGEX: str = r"\b(MONITOR|EXPERIMENT|TRACKING)\b"
