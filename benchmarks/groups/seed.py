"""seed: ``SeedPolicy().derive_seed("study-1", "cond-abc", 1)`` in C against the pure-Python
reference (SHA-256 of the compact, key-sorted JSON payload; first 16 hex digits; mod 2**31-1).
Both are checked against the published vectors before they are timed."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from pathlib import Path

from benchmarks.context import Context
from benchmarks.harness import measure, prepare
from benchmarks.peers import xetrack_c_attr
from benchmarks.report import Row, Table, per_op

GROUP = "seed"
VECTORS = [(("study-1", "cond-abc", 1, ""), 0, 845025149), (("study-1", "cond-abc", 2, ""), 0, 85568769),
           (("s", "c", 1, "None:None"), 0, 1641570899), (("s", "c", 1, ""), 1, 478040251)]


def reference_seed(study_id: str, condition_id: str, replicate: int, salt: str = "",
                   base_seed: int = 0, strategy: str = "condition_replicate",
                   per_run_offset: int = 9973) -> int:
    """design-research-experiments' derive_seed, in pure Python."""
    payload = {"base_seed": base_seed, "strategy": strategy, "per_run_offset": per_run_offset,
               "study_id": study_id, "condition_id": condition_id, "replicate": replicate,
               "salt": salt}
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"))
    return int(hashlib.sha256(text.encode("utf-8")).hexdigest()[:16], 16) % (2**31 - 1)


def _check(seed_of: Callable[[tuple[str, str, int, str], int], int], name: str) -> None:
    """Raise unless ``seed_of(parts, base_seed)`` reproduces every published vector."""
    for parts, base, expected in VECTORS:
        got = seed_of(parts, base)
        if got != expected:
            raise RuntimeError(f"{name} gives {got} for {parts} with base_seed={base}; "
                               f"expected {expected}")


def xetrack_c_seeds(calls: int) -> Callable[[], Callable[[Path], float]]:
    """Build a run of ``calls`` SeedPolicy.derive_seed calls."""
    def build() -> Callable[[Path], float]:
        policy_class = xetrack_c_attr("SeedPolicy", "xetrack_c.seeding")
        _check(lambda parts, base: policy_class(base_seed=base).derive_seed(*parts),
               "xetrack_c SeedPolicy")
        derive = policy_class().derive_seed

        def run(_: Path) -> float:
            start = time.perf_counter()
            for _ in range(calls):
                derive("study-1", "cond-abc", 1)
            return time.perf_counter() - start
        return run
    return build


def python_seeds(calls: int) -> Callable[[], Callable[[Path], float]]:
    """Build a run of ``calls`` pure-Python reference calls."""
    def build() -> Callable[[Path], float]:
        _check(lambda parts, base: reference_seed(*parts, base_seed=base), "the Python reference")

        def run(_: Path) -> float:
            start = time.perf_counter()
            for _ in range(calls):
                reference_seed("study-1", "cond-abc", 1)
            return time.perf_counter() - start
        return run
    return build


def run(ctx: Context) -> None:
    """Measure and print the seed table."""
    calls = ctx.pick(200_000, 50_000)
    series = [prepare("xetrack_c SeedPolicy.derive_seed", calls, xetrack_c_seeds(calls)),
              prepare("Python reference (hashlib + json)", calls, python_seeds(calls))]
    results = measure(GROUP, series, ctx.reps, ctx.group_dir(GROUP), "derive_seed")
    ctx.emit(Table(
        "seed: SeedPolicy().derive_seed(\"study-1\", \"cond-abc\", 1)",
        mode="one thread, pure computation on both sides",
        description=
        "Time per call, median [min–max]; both checked against the published seed vectors first.",
        notes=["Target: >= 5x the pure-Python reference."],
        rows=[Row("derive_seed", f"{calls:,} calls", results[series[0].label],
                  [results[series[1].label]], display=per_op("call"))],
    ))
