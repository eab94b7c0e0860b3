"""xetrack's public path ``xetrack.duckdb``: ``DuckDBEngine`` (see :mod:`xetrack_c.engine`)."""

from xetrack_c.engine import DuckDBEngine

__all__ = ["DuckDBEngine"]
