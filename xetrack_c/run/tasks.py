"""Calling a task's function and describing how a task ended.

Shared by the local batch (:mod:`xetrack_c.run.batch`), the executor path
(:mod:`xetrack_c.run.remote`) and the code that runs on an executor's worker
(:mod:`xetrack_c.run.remote_task`).
"""

from __future__ import annotations

import inspect
import os
import traceback
from collections.abc import Callable
from typing import Any, Dict, Optional, Tuple

from xetrack_c.run.types import ExperimentSpec

#: Characters of stderr (scripts) or traceback (functions) kept in an error message.
TAIL_CHARS = 2000
#: The function parameters run_multiple fills in by name.
INJECTED = ("config", "seed", "rng")


# ------------------------------------------------------------------ describing outcomes
def describe_exception(exc: BaseException) -> str:
    """``Type: message`` and the tail of the traceback."""
    head = f"{type(exc).__name__}: {exc}"
    trace = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    if len(trace) > TAIL_CHARS:
        trace = "..." + trace[-TAIL_CHARS:]
    return f"{head}\n{trace}".rstrip()


def signal_name(number: int) -> str:
    import signal

    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def stderr_tail(tail: Optional[bytes]) -> str:
    if not tail:
        return ""
    text = tail.decode("utf-8", errors="replace")[-TAIL_CHARS:]
    return "\nstderr (last lines):\n" + text.rstrip()


def call_mode(function: Callable[..., Any], cache: Dict[Any, Optional[Tuple[str, ...]]]
               ) -> Optional[Tuple[str, ...]]:
    """The injected names ``function`` takes by keyword, or None to call ``function(config)``."""
    try:
        return cache[function]
    except (KeyError, TypeError):
        pass
    try:
        parameters = inspect.signature(function).parameters
    except (TypeError, ValueError):
        wanted: Tuple[str, ...] = ()
    else:
        wanted = tuple(name for name in INJECTED if name in parameters
                       and parameters[name].kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD,
                                                     inspect.Parameter.KEYWORD_ONLY))
    mode = wanted or None
    try:
        cache[function] = mode
    except TypeError:
        pass
    return mode


def call_in_mode(function: Callable[..., Any], mode: Optional[Tuple[str, ...]], config: Any,
                 seed: int) -> Any:
    """Call ``function`` as its mode (from :func:`call_mode`) says: ``function(config)``,
    or with the keyword arguments it names among config, seed and rng."""
    if mode is None:
        return function(config)
    kwargs: Dict[str, Any] = {}
    if "config" in mode:
        kwargs["config"] = config
    if "seed" in mode:
        kwargs["seed"] = seed
    if "rng" in mode:
        from xetrack_c.seeding import make_rng

        kwargs["rng"] = make_rng(seed)
    return function(**kwargs)


def target_of(spec: ExperimentSpec) -> Tuple[str, str]:
    """(kind, target) as recorded: ("script", path) or ("function", qualified name)."""
    if spec.function is not None:
        function = spec.function
        name = getattr(function, "__qualname__", None) or type(function).__qualname__
        return "function", f"{getattr(function, '__module__', None) or '?'}.{name}"
    return "script", os.path.abspath(os.fspath(spec.script_path))

