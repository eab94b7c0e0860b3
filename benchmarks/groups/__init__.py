"""Benchmark groups, each a module with ``run(ctx)``, in the order ``python -m benchmarks`` runs them."""

GROUPS: dict[str, str] = {
    "log": "benchmarks.groups.log",
    "writers": "benchmarks.groups.writers",
    "track": "benchmarks.groups.track",
    "assets": "benchmarks.groups.assets",
    "system": "benchmarks.groups.system",
    "cache": "benchmarks.groups.cache",
    "read": "benchmarks.groups.read",
    "summary": "benchmarks.groups.summary",
    "seed": "benchmarks.groups.seed",
    "executor": "benchmarks.groups.executor",
    "process": "benchmarks.groups.process_start",
    "distributed": "benchmarks.groups.distributed",
    "cli": "benchmarks.groups.cli",
    "import": "benchmarks.groups.imports",
}
