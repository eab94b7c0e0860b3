"""Retries and start rates of ``run_multiple``: the checks of their options and the policy.

The decision to run a task again is made here, on the calling thread, from how the task
ended; the wait before it runs again is the C pool's (the task is queued with a time
before which no worker takes it, and no worker slot is held meanwhile).
"""

from __future__ import annotations

import numbers
import random
import re
from collections.abc import Sequence
from typing import Any, Optional, Tuple

#: Longest wait before a retry, whatever the attempt number.
MAX_RETRY_DELAY = 300.0

_UNITS = {
    "s": 1.0, "sec": 1.0, "second": 1.0, "seconds": 1.0,
    "m": 60.0, "min": 60.0, "minute": 60.0, "minutes": 60.0,
    "h": 3600.0, "hour": 3600.0, "hours": 3600.0,
}
_RATE = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*/\s*([a-zA-Z]+)\s*$")


def rate_interval(rate_limit: Any) -> float:
    """Seconds between two task starts for ``rate_limit`` (0.0: no limit).

    ``rate_limit`` is None, a number of starts per second, or a string ``"N/s"``,
    ``"N/min"`` or ``"N/h"`` (``"50/min"``: one start every 1.2 s).
    """
    if rate_limit is None:
        return 0.0
    if isinstance(rate_limit, bool):
        raise TypeError("rate_limit must be None, a number of starts per second, or a str "
                        "like '50/min'")
    if isinstance(rate_limit, numbers.Real):
        per_second = float(rate_limit)
    elif isinstance(rate_limit, str):
        match = _RATE.match(rate_limit)
        if match is None or match.group(2).lower() not in _UNITS:
            raise ValueError(f"rate_limit {rate_limit!r} is not understood; write it as "
                             "'N/s', 'N/min' or 'N/h', e.g. '50/min'")
        per_second = float(match.group(1)) / _UNITS[match.group(2).lower()]
    else:
        raise TypeError(f"rate_limit must be None, a number or a str like '50/min', not "
                        f"{type(rate_limit).__name__}")
    if not per_second > 0 or per_second == float("inf"):
        raise ValueError(f"rate_limit must allow a positive, finite number of starts, got "
                         f"{rate_limit!r}")
    return 1.0 / per_second


def _type_name(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


class RetryPolicy:
    """When and after how long a task runs again.

    Args:
        retries: Attempts after the first (0: none).
        retry_on: Exception types worth another attempt; empty: any ``Exception``.
        retry_delay: Base of the backoff: before attempt ``k + 1`` the task waits a random
            time in ``[0, retry_delay * 2**(k - 1)]`` (full jitter), at most
            ``MAX_RETRY_DELAY`` seconds.
    """

    def __init__(self, retries: Any, retry_on: Any, retry_delay: Any) -> None:
        if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
            raise ValueError(f"retries must be an int >= 0, got {retries!r}")
        if isinstance(retry_on, type):
            retry_on = (retry_on,)
        if isinstance(retry_on, (str, bytes)) or not isinstance(retry_on, Sequence) \
                or not all(isinstance(t, type) and issubclass(t, BaseException)
                           for t in retry_on):
            raise TypeError("retry_on must be a tuple of exception types, e.g. "
                            "(TimeoutError, ConnectionError)")
        if isinstance(retry_delay, bool) or not isinstance(retry_delay, numbers.Real) \
                or not 0 <= retry_delay < float("inf"):
            raise ValueError(f"retry_delay must be a number of seconds >= 0, got {retry_delay!r}")
        self.retries = retries
        self.retry_on: Tuple[type, ...] = tuple(retry_on) or (Exception,)
        self.retry_delay = float(retry_delay)
        self._names = {_type_name(t) for t in self.retry_on}
        self._random = random.Random()

    def matches(self, exception: Optional[BaseException], type_names: Sequence[str] = ()) -> bool:
        """Whether an exception (or one known by its type names, from a worker process
        whose exception could not be unpickled here) is worth another attempt."""
        if exception is not None:
            return isinstance(exception, self.retry_on)
        return any(name in self._names for name in type_names)

    def timeout_matches(self) -> bool:
        """A task's own timeout counts as a ``TimeoutError``."""
        return issubclass(TimeoutError, self.retry_on)

    def delay(self, attempt: int) -> float:
        """Seconds to wait before attempt ``attempt + 1`` (``attempt`` >= 1 failed)."""
        ceiling = min(self.retry_delay * 2.0 ** (attempt - 1), MAX_RETRY_DELAY)
        return self._random.uniform(0.0, ceiling)
