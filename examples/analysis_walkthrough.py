"""Notebook-style analysis of a benchmark database, cell by cell.

It first builds a small two-table benchmark (two mock models x two prompt templates x three
trials over twelve items: a `predictions` table and a `metrics` table), then reads it back
as a notebook would: a pivot of the metrics by condition, predictions joined to their run's
metrics, the same with polars, plain numpy arrays without pandas, and reading a table while
another process is still writing it.

Run: python examples/analysis_walkthrough.py [analysis.db]
"""

import os
import random
import subprocess
import sys
import time

from xetrack_c import Reader, Tracker

MODELS = {"small": 0.65, "large": 0.85}  # how often each mock model is right
TEMPLATES = ["plain", "few-shot"]
TRIALS = 3
ITEMS = 12
LIVE_ROWS = 300


def build(db: str) -> None:
    """Writes the benchmark: one predictions row per item, one metrics row per run."""
    for model, skill in MODELS.items():
        for template in TEMPLATES:
            for trial in range(TRIALS):
                # a str seed is hashed with SHA-512 by random.seed: the same in every process
                rng = random.Random(f"{model}/{template}/{trial}")
                bonus = 0.05 if template == "few-shot" else 0.0
                params = {"model": model, "template": template, "trial": trial}
                predictions = Tracker(db, table="predictions", params=params)
                correct = 0
                for item in range(ITEMS):
                    label = item % 2
                    right = rng.random() < skill + bonus
                    prediction = label if right else 1 - label
                    predictions.log({"item": item, "label": label, "prediction": prediction})
                    correct += right
                metrics = Tracker(db, table="metrics", params=params,
                                  track_id=predictions.track_id)
                metrics.log({"accuracy": correct / ITEMS,
                             "latency_ms": round(rng.uniform(80, 120), 1)})
                predictions.close()
                metrics.close()


def write_live(db: str, first: int, rows: int) -> None:
    """The "batch still running": logs rows one by one, each committed as it is logged."""
    with Tracker(db, table="live", params={"model": "large"}) as live:
        for step in range(first, first + rows):
            live.log({"step": step, "loss": 1.0 / (step + 1)})


def walkthrough(db: str) -> None:
    # --8<-- [start:load]
    from xetrack_c import Reader

    predictions = Reader(db, table="predictions").to_df()
    metrics = Reader(db, table="metrics").to_df()
    print(f"{len(predictions)} predictions, {len(metrics)} runs")
    # --8<-- [end:load]

    # --8<-- [start:pivot]
    # mean accuracy per condition: models down, templates across
    pivot = metrics.pivot_table(index="model", columns="template", values="accuracy",
                                aggfunc="mean")
    print(pivot.round(3).to_string())

    # mean and spread over the trials, one row per condition
    by_condition = (metrics.groupby(["model", "template"])["accuracy"]
                    .agg(["mean", "std", "count"]).reset_index())
    print(by_condition.round(3).to_string(index=False))
    # --8<-- [end:pivot]

    # --8<-- [start:join]
    # attach each run's metrics to its predictions (both tables share the run's track_id)
    joined = predictions.merge(metrics[["track_id", "accuracy", "latency_ms"]],
                               on="track_id", validate="many_to_one")
    joined["correct"] = joined["prediction"] == joined["label"]
    # the per-item view agrees with the per-run accuracy
    per_run = joined.groupby("track_id").agg(items=("correct", "size"),
                                             correct=("correct", "mean"),
                                             accuracy=("accuracy", "first"))
    assert (per_run["correct"] - per_run["accuracy"]).abs().max() < 1e-12
    # the hardest items: right in the fewest runs
    hardest = joined.groupby("item")["correct"].mean().sort_values().head(3)
    print(f"{len(joined)} predictions joined to {len(per_run)} runs")
    print(hardest.round(3).to_string())
    # --8<-- [end:join]

    # --8<-- [start:polars]
    import polars as pl

    from xetrack_c import set_backend

    set_backend("polars")                         # Reader.to_df() now returns polars
    metrics_pl = Reader(db, table="metrics").to_df()
    summary = (metrics_pl.group_by("model", "template")
               .agg(pl.col("accuracy").mean().alias("accuracy"),
                    pl.col("latency_ms").median().alias("latency_ms"))
               .sort("model", "template"))
    print(summary)
    set_backend("pandas")                         # back to pandas for the rest
    # --8<-- [end:polars]

    # --8<-- [start:arrays]
    import numpy as np

    columns = Reader(db, table="metrics").to_arrays()     # {column: numpy array}, no pandas
    accuracy, model = columns["accuracy"], columns["model"]   # float64, object (str)
    for name in sorted(set(model)):
        mask = model == name
        print(f"{name}: accuracy {accuracy[mask].mean():.3f} over {mask.sum()} runs")
    print(f"columns: {', '.join(columns)}; accuracy is {accuracy.dtype}")
    assert np.isclose(accuracy.mean(), metrics["accuracy"].mean())
    # --8<-- [end:arrays]


def read_while_writing(db: str) -> None:
    """Starts a writer process and reads its table while it writes."""
    write_live(db, 0, 1)  # the table exists before the first read
    writer = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--write-live", db,
                               "1", str(LIVE_ROWS - 1)])
    # --8<-- [start:live]
    sizes = []
    while True:
        running = writer.poll() is None          # a batch still writing "live"
        live = Reader(db, table="live").to_df()  # one consistent snapshot
        # every row in a snapshot is whole: no half-written rows, no NaN losses
        assert live["loss"].notna().all() and live["step"].notna().all()
        sizes.append(len(live))
        if not running:
            break
        time.sleep(0.02)                          # a notebook would re-run the cell instead
    # --8<-- [end:live]
    if writer.wait() != 0:
        raise SystemExit(f"the writer process failed with exit code {writer.returncode}")
    assert sizes == sorted(sizes), "snapshots never shrink"
    print(f"read while writing: {len(sizes)} snapshots, {sizes[0]} -> {sizes[-1]} rows")


def main() -> None:
    if len(sys.argv) == 5 and sys.argv[1] == "--write-live":
        write_live(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
        return
    db = sys.argv[1] if len(sys.argv) > 1 else "analysis.db"
    if os.path.exists(db):
        raise SystemExit(f"{db} exists: give the walkthrough a new file name")
    build(db)
    walkthrough(db)
    read_while_writing(db)


if __name__ == "__main__":
    main()
