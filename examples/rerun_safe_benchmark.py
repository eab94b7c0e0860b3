"""Rerun safety: a benchmark killed half way picks up where it stopped when run again.

A mock "model" (slow, as an API call would be) labels a small data set. Every call goes
through `Tracker(db, cache=cache_dir).track(...)`: the result is stored in the cache
directory before `track()` returns, keyed by the function, its arguments and the params.
Run it with `--crash-after 4` and the process kills itself (SIGKILL, like the OOM killer or
a preempted machine) before the 5th item. Run it again without the option: the first four
items are cache hits (the model is not called for them), the rest are computed.

The mock model appends one line per real call to a calls file, so you can count how often
it ran.

Run:
    python examples/rerun_safe_benchmark.py bench.db cache_dir --crash-after 4   # killed
    python examples/rerun_safe_benchmark.py bench.db cache_dir                   # resumes
"""

import argparse
import os
import signal
import time

from xetrack_c import Reader, Tracker

DATA = [
    ("a wonderful, moving film", "positive"),
    ("dull and far too long", "negative"),
    ("the cast is wonderful", "positive"),
    ("a mess from start to finish", "negative"),
    ("not bad at all", "positive"),
    ("I loved every minute", "positive"),
    ("nothing happens, slowly", "negative"),
    ("a moving, wonderful score", "positive"),
]
POSITIVE_WORDS = {"wonderful", "moving", "loved", "bad"}
CALLS_FILE = "model_calls.txt"


def mock_model(text: str, temperature: float = 0.0) -> dict:
    """Stands in for a slow API call; records every real call in CALLS_FILE."""
    with open(CALLS_FILE, "a", encoding="utf-8") as calls:
        calls.write(text + "\n")
    time.sleep(0.05)  # the "network"
    words = set(text.replace(",", "").split())
    label = "positive" if words & POSITIVE_WORDS else "negative"
    return {"prediction": label, "tokens": len(text.split())}


def run_benchmark(db: str, cache_dir: str, crash_after: int = -1) -> Tracker:
    tracker = Tracker(db, table="predictions", cache=cache_dir,
                      params={"model": "keyword-rule-v1"})
    for index, (text, label) in enumerate(DATA):
        if index == crash_after:
            # A hard kill: no exception handler, no atexit, no close(). Every row and
            # every cache entry written so far is already committed.
            os.kill(os.getpid(), signal.SIGKILL)
        tracker.track(mock_model, args=[text], kwargs={"temperature": 0.0},
                      params={"label": label})
    return tracker


def report(db: str, cache_dir: str, tracker: Tracker) -> None:
    rows = Reader(db, table="predictions").to_df(track_id=tracker.track_id)
    # `cache` is "" for a computed call and the computing run's track_id for a hit.
    hits = rows[rows["cache"] != ""]
    print(f"run {tracker.track_id}: {len(rows)} items, {len(rows) - len(hits)} computed, "
          f"{len(hits)} from the cache")
    for computed_by, count in hits.groupby("cache").size().items():
        print(f"  {count} results reused from run {computed_by}")
    accuracy = (rows["prediction"] == rows["label"]).mean()
    print(f"accuracy {accuracy:.3f}")

    # The cache directory on its own: one entry per distinct call, with its lineage.
    entries = list(Reader.scan_cache(cache_dir))
    by_run = {}
    for _key, entry in entries:
        by_run[entry["cache"]] = by_run.get(entry["cache"], 0) + 1
    print(f"cache: {len(entries)} entries, " +
          ", ".join(f"{n} computed by {run}" for run, n in sorted(by_run.items())))


def main() -> None:
    global CALLS_FILE
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("db", nargs="?", default="bench.db")
    parser.add_argument("cache_dir", nargs="?", default="cache_dir")
    parser.add_argument("--crash-after", type=int, default=-1,
                        help="kill the process before item N (0-based)")
    parser.add_argument("--calls", default="model_calls.txt",
                        help="file the mock model appends one line per real call to")
    args = parser.parse_args()
    CALLS_FILE = args.calls
    tracker = run_benchmark(args.db, args.cache_dir, args.crash_after)
    report(args.db, args.cache_dir, tracker)
    tracker.close()


if __name__ == "__main__":
    main()
