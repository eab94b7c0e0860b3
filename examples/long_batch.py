"""A long batch that survives what long batches meet: expensive models loaded once per
worker, a flaky API, crashes, and being stopped half way.

    python examples/long_batch.py --limit 6    # a staged rollout: the first 6 specs (runs.db)
    python examples/long_batch.py              # then the rest (resume skips the 6)

Every (model, item) pair is a function task. Tasks of one model form a group: they run one
after another on the same worker process, which loads the model once and keeps it in
``worker_cache()``. The scoring API fails the first call for every third item with a
TransientAPIError; ``retries`` runs those tasks again after a short backoff. Each task logs
its score into the batch's database; ``resume=True`` skips what already completed there, so
the script can be stopped (even with ``kill -9``) and started again.
"""

from __future__ import annotations

import argparse
import collections
import os
import time

from xetrack_c import ExperimentSpec, log_metrics, run_multiple, worker_cache

MODELS = ["small", "medium", "large"]
ITEMS = range(8)


class TransientAPIError(Exception):
    """The scoring API's 503: worth another attempt."""


def load_model(name: str) -> dict:
    time.sleep(0.2)  # stands for reading weights from disk
    return {"name": name, "scale": len(name)}


def get_model(name: str) -> dict:
    """The model, loaded at most once per worker process."""
    cache = worker_cache()
    models = cache.setdefault("models", {})
    if name not in models:
        models[name] = load_model(name)
        cache["loads"] = cache.get("loads", 0) + 1
    return models[name]


def call_scoring_api(model: dict, item: int, seed: int) -> float:
    calls = worker_cache().setdefault("calls", collections.Counter())
    calls[(model["name"], item)] += 1
    if item % 3 == 0 and calls[(model["name"], item)] == 1:
        raise TransientAPIError("503 Service Unavailable")
    return (item * model["scale"] + seed % 7) / 10


def score(config: dict, seed: int) -> dict:
    model = get_model(config["model"])
    value = call_scoring_api(model, config["item"], seed)
    log_metrics({"model": config["model"], "item": config["item"], "score": value})
    return {"score": value, "model_loads_on_worker": worker_cache()["loads"],
            "pid": os.getpid()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("db", nargs="?", default="runs.db",
                        help="SQLite file for the experiments and metrics tables (runs.db)")
    parser.add_argument("--limit", type=int, default=None, help="run only the first N specs")
    parser.add_argument("--parallel", type=int, default=2)
    args = parser.parse_args()

    specs = [
        ExperimentSpec(function=score, config={"model": model, "item": item},
                       name=f"{model}-{item}", group=model, timeout=60)
        for model in MODELS for item in ITEMS
    ]
    results = run_multiple(
        specs, parallel=args.parallel, backend="process", db=args.db,
        resume=True, limit=args.limit,
        retries=3, retry_on=(TransientAPIError,), retry_delay=0.05,
        max_consecutive_failures=5,
    )
    counts = collections.Counter(result.status for result in results)
    print("statuses:", dict(sorted(counts.items())))
    ran = [result.result for result in results if result.status == "completed"]
    if ran:
        loads = max(value["model_loads_on_worker"] for value in ran)
        print(f"ran {len(ran)} tasks on {len({value['pid'] for value in ran})} worker "
              f"processes; at most {loads} model loads on one worker")
    for result in results:
        if result.status not in ("completed", "skipped"):
            print(f"{result.name}: {result.status}: {result.error_message}")


if __name__ == "__main__":
    main()
