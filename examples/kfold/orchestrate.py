"""K-fold cross-validation: one script run per fold, in parallel, all into one database.

    python examples/kfold/orchestrate.py [DB] [--folds N] [--parallel P]

Each fold runs ``train_fold.py`` in its own process. The experiments table of DB gets one
row per fold (status, duration, seed, the config as columns); the metrics table gets the
folds' ``log_metrics`` rows. Exits with 1 if any fold did not complete.
"""

import argparse
import sys
from pathlib import Path

from xetrack_c import ExperimentSpec, Reader, run_multiple

TRAIN_SCRIPT = Path(__file__).resolve().parent / "train_fold.py"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("db", nargs="?", default="kfold.db")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--parallel", type=int, default=0, help="workers (0: every CPU)")
    args = parser.parse_args()

    specs = [
        ExperimentSpec(
            script_path=str(TRAIN_SCRIPT),
            config={"_fold_idx": fold, "n_folds": args.folds, "data_seed": 0,
                    "model": {"lr": 0.05, "epochs": 20}},
            name=f"fold-{fold}",
            tags=["kfold", "linear"],
            timeout=300,
        )
        for fold in range(args.folds)
    ]
    results = run_multiple(specs, parallel=args.parallel, db=args.db)

    for result in results:
        line = f"{result.name}: {result.status} in {result.duration or 0:.2f}s (seed {result.seed})"
        if result.error_message:
            line += f"\n    {result.error_message.splitlines()[-1]}"
        print(line)

    metrics = Reader(args.db, table="metrics").to_df()
    final = metrics[metrics["val_mse"].notna()]
    print(f"mean validation MSE over {len(final)} folds: {final['val_mse'].mean():.4f}")
    return 0 if all(r.status == "completed" for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
