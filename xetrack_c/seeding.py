"""Reproducible seeding: seeds derived from hashes, and scoped seeding of global RNGs.

Seeds are derived from the SHA-256 of a payload's canonical JSON (compact, key-sorted,
ASCII-only: exactly ``json.dumps(payload, sort_keys=True, separators=(",", ":"))``).
Encoding, hashing and the reduction to a seed run in the C core; this module only
assembles payloads.

:class:`SeedPolicy` and :func:`hash_identifier` return what design-research-experiments
returns for the same arguments. :func:`derive_seed` is the general form for any JSON
parts.

Threads: :func:`reproducible_seed` seeds the *process-wide* generators of ``random``,
NumPy and (when already imported) PyTorch. Two threads inside it at once overwrite each
other's state, so results depend on scheduling. Code running in threads should derive a
seed per task and draw only from its own generator, ``make_rng(seed)``, which shares no
state with anything else.

Importing this module imports neither NumPy nor PyTorch.
"""

from __future__ import annotations

import contextlib
import dataclasses
import enum
import functools
import operator
import random
import sys
from collections.abc import Iterator, Mapping
from types import ModuleType
from typing import Any

from xetrack_c import _core

__all__ = ["SeedPolicy", "derive_seed", "hash_identifier", "make_rng", "reproducible_seed"]

#: Derived seeds lie in ``[0, SEED_MODULUS - 1]``.
SEED_MODULUS = 2**31 - 1
#: Largest seed :func:`reproducible_seed` accepts (NumPy's global generator takes 32 bits).
MAX_GLOBAL_SEED = 2**32 - 1


def _stable_fallback(value: Any) -> Any:
    """Replace a value JSON has no form for, as design-research-experiments does.

    Enum members become their value, sets become lists, dataclass instances become
    ``dataclasses.asdict(...)``, anything else becomes ``str(value)``. Used together
    with str() dict keys (``str_keys``) by :class:`SeedPolicy` and :func:`hash_identifier`.
    """
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, (set, frozenset)):
        return list(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    return str(value)


@dataclasses.dataclass(frozen=True, slots=True)
class SeedPolicy:
    """Deterministic per-run seeds for a study, compatible with design-research-experiments.

    Attributes:
        base_seed: Study-wide base seed.
        strategy: Name of the derivation strategy; recorded in (and so changes) every seed.
        per_run_offset: Number mixed into every seed; recorded like ``strategy``.
    """

    base_seed: int = 0
    strategy: str = "condition_replicate"
    per_run_offset: int = 9973

    def derive_seed(
        self, study_id: str, condition_id: str, replicate: int, salt: str = ""
    ) -> int:
        """Return the seed of one run, in ``[0, 2**31 - 2]``.

        The seed is SHA-256 of the canonical JSON of ``{base_seed, strategy,
        per_run_offset, study_id, condition_id, replicate, salt}``, its first 16 hex
        digits read as an integer, modulo ``2**31 - 1``.

        Args:
            study_id: Identifier of the study.
            condition_id: Identifier of the experimental condition.
            replicate: Replicate number of the run within its condition.
            salt: Extra text that separates otherwise identical runs.

        Returns:
            The same seed design-research-experiments' ``SeedPolicy.derive_seed`` returns.
        """
        return _core.policy_seed(
            self.base_seed, self.strategy, self.per_run_offset,
            study_id, condition_id, replicate, salt, _stable_fallback,
        )


def derive_seed(*parts: Any, base_seed: int = 0) -> int:
    """Return a seed in ``[0, 2**31 - 2]`` determined by ``parts`` and ``base_seed``.

    The payload is ``{"base_seed": base_seed, "parts": [*parts]}``; the seed is SHA-256
    of its canonical JSON, first 16 hex digits as an integer, modulo ``2**31 - 1``. The
    same parts give the same seed in every process, run and machine.

    Args:
        *parts: JSON values (str, int, float, bool, None, and lists, tuples and dicts of
            them) naming what the seed is for, e.g. ``("fold", 3, "model-a")``.
        base_seed: Seed of the whole experiment.

    Returns:
        The derived seed.

    Raises:
        TypeError: A part (or something inside one) has no JSON form; the message names
            its type. Convert it first, e.g. with ``str()``.
    """
    if not isinstance(base_seed, int):
        raise TypeError(f"base_seed must be an int, not {type(base_seed).__name__}")
    return _core.seed_from_payload({"base_seed": base_seed, "parts": parts})


def hash_identifier(prefix: str, payload: Mapping[str, Any], *, length: int = 12) -> str:
    """Return ``f"{prefix}-{hex}"`` where ``hex`` is the payload's SHA-256, cut to ``length``.

    Same result as design-research-experiments' ``hash_identifier``: dict keys are
    turned into ``str(key)``, and values JSON has no form for are converted (enum members
    to their value, sets to lists, dataclasses to dicts, anything else to ``str``).

    Args:
        prefix: Text before the dash, e.g. ``"run"``.
        payload: What the identifier stands for.
        length: Number of hex digits kept (at most 64).

    Returns:
        The identifier, e.g. ``"run-3f9a0c1d2b4e"``.
    """
    digest = _core.canonical_sha256(payload, _stable_fallback, True)
    return f"{prefix}-{digest.hex()[:length]}"


@functools.cache
def _numpy_module() -> ModuleType | None:
    """NumPy, imported on first use; None where it is not installed."""
    try:
        import numpy
    except ImportError:
        return None
    return numpy


def _check_seed(seed: Any) -> int:
    if isinstance(seed, bool):
        raise TypeError("seed must be an int, not bool")
    try:
        value = operator.index(seed)
    except TypeError:
        raise TypeError(
            f"seed must be an int, not {type(seed).__name__}; "
            "use derive_seed(...) to turn other values into a seed"
        ) from None
    if not 0 <= value <= MAX_GLOBAL_SEED:
        raise ValueError(
            f"seed must be in [0, 2**32 - 1], got {value}; "
            "use derive_seed(value) to map any value into range"
        )
    return value


def make_rng(seed: int) -> Any:
    """Return a fresh random generator of its own, seeded with ``seed``.

    It shares no state with the global generators or with other generators, so each
    task or thread can draw from its own without locks and get the same numbers
    whatever the scheduling.

    Args:
        seed: An int in ``[0, 2**32 - 1]``, e.g. from :func:`derive_seed`.

    Returns:
        ``numpy.random.Generator(numpy.random.PCG64(seed))`` when NumPy is installed,
        else ``random.Random(seed)``.
    """
    seed = _check_seed(seed)
    numpy = _numpy_module()
    if numpy is None:
        return random.Random(seed)
    return numpy.random.Generator(numpy.random.PCG64(seed))


def _save_torch_state(torch: ModuleType) -> tuple[Any, Any]:
    cpu_state = torch.get_rng_state()
    cuda = getattr(torch, "cuda", None)
    cuda_states = None
    if cuda is not None and cuda.is_available() and cuda.is_initialized():
        cuda_states = cuda.get_rng_state_all()
    return cpu_state, cuda_states


def _restore_torch_state(torch: ModuleType, saved: tuple[Any, Any]) -> None:
    cpu_state, cuda_states = saved
    torch.set_rng_state(cpu_state)
    if cuda_states is not None:
        torch.cuda.set_rng_state_all(cuda_states)


@contextlib.contextmanager
def reproducible_seed(seed: int) -> Iterator[Any]:
    """Seed the global generators for the ``with`` block, then put their states back.

    Seeds ``random``, NumPy's global generator (``numpy.random.seed``) and, when
    ``torch`` has already been imported, PyTorch's (never imported here). On exit,
    including by an exception, each generator returns to the exact state it had on
    entry, so blocks nest and code after the block is unaffected.

    The global generators are process-wide: this is not thread-safe. Two threads inside
    ``reproducible_seed`` at once (or one inside while another draws from ``random``)
    interfere. In threads, give each task its own seed (:func:`derive_seed`) and draw
    only from its own generator (:func:`make_rng`, or the one this yields).

    Args:
        seed: An int in ``[0, 2**32 - 1]``.

    Yields:
        ``make_rng(seed)``: a generator of the block's own.

    Example:
        >>> with reproducible_seed(derive_seed("fold", 3)) as rng:
        ...     sample = rng.random()
    """
    seed = _check_seed(seed)
    numpy = _numpy_module()
    torch = sys.modules.get("torch")
    with contextlib.ExitStack() as restore:
        restore.callback(random.setstate, random.getstate())
        random.seed(seed)
        if numpy is not None:
            restore.callback(numpy.random.set_state, numpy.random.get_state())
            numpy.random.seed(seed)
        if torch is not None:
            restore.callback(_restore_torch_state, torch, _save_torch_state(torch))
            torch.manual_seed(seed)
        yield make_rng(seed)
