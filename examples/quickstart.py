"""Log a few epochs and a tracked function call, then read them back."""

import sys

from xetrack_c import Tracker

db = sys.argv[1] if len(sys.argv) > 1 else "results.db"
tracker = Tracker(db, params={"model": "resnet18"})
for epoch in range(3):
    tracker.log({"epoch": epoch, "accuracy": 0.8 + epoch / 100, "loss": 0.2})


def score(x, y):
    return {"score": x * y}


tracker.track(score, args=[3, 4])
print(tracker.to_df()[["epoch", "accuracy", "score"]])
tracker.close()
