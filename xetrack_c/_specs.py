"""Checking ``run_multiple``'s specs and options, and describing what went wrong."""

from __future__ import annotations

import dataclasses
import inspect
import numbers
import os
import traceback
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Dict, List, Optional, Tuple

from xetrack_c.executor import ExperimentSpec

#: Characters of stderr (scripts) or traceback (functions) kept in an error message.
TAIL_CHARS = 2000
#: The function parameters run_multiple fills in by name.
INJECTED = ("config", "seed", "rng")


# ------------------------------------------------------------------ checking
def _type_name(value: Any) -> str:
    return type(value).__name__


def validate_spec(spec: ExperimentSpec) -> None:
    """Raise ValueError/TypeError naming what is wrong with ``spec``."""
    has_script = spec.script_path is not None
    has_function = spec.function is not None
    if has_script == has_function:
        which = "both are set" if has_script else "neither is set"
        raise ValueError(f"set exactly one of script_path or function ({which})")
    if has_function and not callable(spec.function):
        raise TypeError(f"function must be callable, not {_type_name(spec.function)}")
    if has_script:
        try:
            path = os.fspath(spec.script_path)
        except TypeError:
            raise TypeError(f"script_path must be a str or path, not "
                            f"{_type_name(spec.script_path)}") from None
        if not isinstance(path, str) or not os.path.isfile(path):
            raise ValueError(f"script_path {path!r} is not a file (relative paths are "
                             f"taken from the working directory {os.getcwd()!r})")
    if isinstance(spec.script_args, (str, bytes)) or not isinstance(spec.script_args, Sequence) \
            or not all(isinstance(arg, str) for arg in spec.script_args):
        raise TypeError("script_args must be a list of str, e.g. ['--epochs', '3']")
    if not isinstance(spec.config, Mapping):
        raise TypeError(f"config must be a dict, not {_type_name(spec.config)}")
    if spec.name is not None and not isinstance(spec.name, str):
        raise TypeError(f"name must be a str or None, not {_type_name(spec.name)}")
    if isinstance(spec.tags, (str, bytes)) or not isinstance(spec.tags, Sequence) \
            or not all(isinstance(tag, str) for tag in spec.tags):
        raise TypeError("tags must be a list of str, e.g. ['kfold']")
    if spec.seed is not None:
        if isinstance(spec.seed, bool) or not isinstance(spec.seed, int):
            raise TypeError(f"seed must be an int or None, not {_type_name(spec.seed)}")
        if not 0 <= spec.seed <= 2**32 - 1:
            raise ValueError(f"seed must be in [0, 2**32 - 1], got {spec.seed}")
    _check_timeout(spec.timeout, "timeout")
    if spec.group is not None and not isinstance(spec.group, str):
        raise TypeError(f"group must be a str or None, not {_type_name(spec.group)}")


def _check_timeout(value: Any, what: str) -> Optional[float]:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{what} must be a number of seconds or None, not {_type_name(value)}")
    if not value > 0:
        raise ValueError(f"{what} must be > 0 seconds (None for no limit), got {value!r}")
    return float(value)


def _as_spec(item: Any) -> ExperimentSpec:
    """Our spec, or one made from a look-alike (e.g. yanex's ExperimentSpec)."""
    if isinstance(item, ExperimentSpec):
        return item
    if hasattr(item, "script_path") and hasattr(item, "function"):
        fields = {f.name: getattr(item, f.name) for f in dataclasses.fields(ExperimentSpec)
                  if hasattr(item, f.name)}
        return ExperimentSpec(**fields)
    raise TypeError(f"expected an ExperimentSpec, got {_type_name(item)}")


def check_specs(specs: Any, limit: Optional[int]) -> List[ExperimentSpec]:
    """The specs to run (the first ``limit``), each validated."""
    if isinstance(specs, (str, bytes, Mapping)) or not isinstance(specs, (Sequence, list)):
        raise TypeError(f"specs must be a list of ExperimentSpec, not {_type_name(specs)}")
    if not specs:
        raise ValueError("run_multiple() needs at least one ExperimentSpec; got an empty list")
    checked = []
    for index, item in enumerate(specs[:limit] if limit is not None else specs):
        try:
            spec = _as_spec(item)
            validate_spec(spec)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"Invalid ExperimentSpec at index {index}: {exc}") from exc
        checked.append(spec)
    return checked


@dataclasses.dataclass
class BatchOptions:
    """run_multiple's options, checked."""

    workers: int
    db: Optional[str]
    table: str
    fail_fast: bool
    max_consecutive_failures: Optional[int]
    timeout: Optional[float]
    progress: Optional[bool]
    on_progress: Optional[Callable[..., Any]]
    resume: bool
    limit: Optional[int]
    seed_policy: Any
    retry: Any = None  # a xetrack_c._retry.RetryPolicy
    rate_interval: float = 0.0
    worker_init: Optional[Callable[[], Any]] = None
    backend: str = "thread"
    launcher: str = "spawn"

    @classmethod
    def check(cls, *, parallel: Any, db: Any, table: Any, fail_fast: Any,
              max_consecutive_failures: Any, timeout: Any, progress: Any, on_progress: Any,
              resume: Any, limit: Any, seed_policy: Any, retries: Any = 0, retry_on: Any = (),
              retry_delay: Any = 1.0, rate_limit: Any = None, worker_init: Any = None,
              backend: Any = "auto", launcher: Any = "spawn") -> "BatchOptions":
        from xetrack_c._retry import RetryPolicy, rate_interval

        if parallel is None:
            workers = 1
        elif isinstance(parallel, bool) or not isinstance(parallel, int):
            raise TypeError(f"parallel must be None, 0 or a positive int, not {_type_name(parallel)}")
        elif parallel < 0:
            raise ValueError(f"parallel must be None, 0 (every CPU) or a positive int, got {parallel}")
        else:
            workers = parallel or (os.cpu_count() or 1)
        if db is not None:
            db = os.path.abspath(os.fspath(db))
        if not isinstance(table, str) or not table:
            raise TypeError(f"table must be a non-empty str, not {table!r}")
        if resume and db is None:
            raise ValueError("resume=True needs db=: the experiments table says what completed")
        for name, value in (("max_consecutive_failures", max_consecutive_failures),
                            ("limit", limit)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                                      or value < 1):
                raise ValueError(f"{name} must be None or a positive int, got {value!r}")
        if progress is not None and not isinstance(progress, bool):
            raise TypeError(f"progress must be None, True or False, not {_type_name(progress)}")
        if on_progress is not None and not callable(on_progress):
            raise TypeError("on_progress must be a callable (done, total, result) or None")
        if seed_policy is not None and not (hasattr(seed_policy, "derive_seed")
                                            or callable(seed_policy)):
            raise TypeError("seed_policy must be a SeedPolicy, a callable (spec, index) -> int, "
                            "or None")
        if backend not in ("auto", "thread", "process"):
            raise ValueError(f"backend must be 'auto', 'thread' or 'process', not {backend!r}")
        if worker_init is not None and not callable(worker_init):
            raise TypeError("worker_init must be a callable taking no arguments, or None")
        if launcher not in ("spawn", "forkserver"):
            raise ValueError(f"launcher must be 'spawn' (a new interpreter per script) or "
                             f"'forkserver' (scripts forked from a warm interpreter), "
                             f"not {launcher!r}")
        return cls(workers, db, table, bool(fail_fast), max_consecutive_failures,
                   _check_timeout(timeout, "timeout"), progress, on_progress, bool(resume),
                   limit, seed_policy, RetryPolicy(retries, retry_on, retry_delay),
                   rate_interval(rate_limit), worker_init,
                   "process" if backend == "process" else "thread", launcher)


# ------------------------------------------------------------------ describing outcomes
def describe_exception(exc: BaseException) -> str:
    """``Type: message`` and the tail of the traceback."""
    head = f"{type(exc).__name__}: {exc}"
    trace = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    if len(trace) > TAIL_CHARS:
        trace = "..." + trace[-TAIL_CHARS:]
    return f"{head}\n{trace}".rstrip()


def _signal_name(number: int) -> str:
    import signal

    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def _stderr_tail(tail: Optional[bytes]) -> str:
    if not tail:
        return ""
    text = tail.decode("utf-8", errors="replace")[-TAIL_CHARS:]
    return "\nstderr (last lines):\n" + text.rstrip()


def _call_mode(function: Callable[..., Any], cache: Dict[Any, Optional[Tuple[str, ...]]]
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
    """Call ``function`` as its mode (from :func:`_call_mode`) says: ``function(config)``,
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

