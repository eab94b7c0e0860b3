"""A parallel benchmark: every (condition, trial) pair is a function task.

    python examples/parallel_benchmark.py [DB] [--trials N] [--parallel P]

Conditions are the product of an algorithm and an input size; each trial gets its own
seed (hence its own input) and its own generator, so trials are reproducible whatever
the scheduling. Each task returns its measurements (``result.result``) and logs them
with ``log_metrics``; the experiments table holds one row per task.
"""

import argparse
import heapq
import itertools
import sys
import time

from xetrack_c import ExperimentSpec, Reader, log_metrics, run_multiple

ALGORITHMS = ("sorted", "heapsort", "insertion_blocks")
SIZES = (1_000, 20_000)


def heap_sort(values):
    heap = list(values)
    heapq.heapify(heap)
    return [heapq.heappop(heap) for _ in range(len(heap))]


def insertion_blocks(values, block=32):
    # Insertion-sort small blocks, then merge them: a deliberately slower baseline.
    blocks = []
    for start in range(0, len(values), block):
        chunk = []
        for value in values[start:start + block]:
            index = len(chunk)
            while index and chunk[index - 1] > value:
                index -= 1
            chunk.insert(index, value)
        blocks.append(chunk)
    return list(heapq.merge(*blocks))


SORTERS = {"sorted": sorted, "heapsort": heap_sort, "insertion_blocks": insertion_blocks}


def run_trial(config, seed, rng):
    """One measurement. run_multiple passes config, seed and rng because they are named here."""
    values = [rng.random() for _ in range(config["size"])]
    start = time.perf_counter()
    ordered = SORTERS[config["algorithm"]](values)
    elapsed = time.perf_counter() - start
    assert all(a <= b for a, b in zip(ordered, ordered[1:], strict=False))
    metrics = {"algorithm": config["algorithm"], "size": config["size"],
               "seconds": elapsed, "first": ordered[0]}
    log_metrics(metrics)
    return metrics


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("db", nargs="?", default="benchmark.db")
    parser.add_argument("--trials", type=int, default=3)
    parser.add_argument("--parallel", type=int, default=4)
    args = parser.parse_args()

    specs = [
        ExperimentSpec(
            function=run_trial,
            config={"algorithm": algorithm, "size": size, "trial": trial},
            name=f"{algorithm}-{size}-t{trial}",
            tags=["sorting", algorithm],
        )
        for algorithm, size, trial in itertools.product(ALGORITHMS, SIZES, range(args.trials))
    ]
    results = run_multiple(specs, parallel=args.parallel, db=args.db)
    failed = [r for r in results if r.status != "completed"]
    for result in failed:
        print(f"{result.name}: {result.status}: {result.error_message}")

    table = Reader(args.db, table="metrics").to_df()
    summary = table.groupby(["algorithm", "size"])["seconds"].agg(["mean", "min", "count"])
    print(summary.to_string())
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
