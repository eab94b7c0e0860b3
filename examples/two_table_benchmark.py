"""The two-table benchmark pattern: one row per prediction, one row per run of metrics.

A mock "model" (a keyword rule) classifies a small sentiment data set under two prompt
templates. Every prediction goes to the `predictions` table through `track()`; each run's
summary goes to the `metrics` table; both share the run's track_id, so they join.

Run: python examples/two_table_benchmark.py [bench.db]
"""

import sys

from xetrack_c import Reader, Tracker

DATA = [
    ("a wonderful, moving film", "positive"),
    ("dull and far too long", "negative"),
    ("the cast is wonderful", "positive"),
    ("a mess from start to finish", "negative"),
    ("not bad at all", "positive"),
    ("I loved every minute", "positive"),
]
POSITIVE_WORDS = {"wonderful", "moving", "loved", "bad"}


def mock_model(text: str, template: str) -> dict:
    """Stands in for an API call: returns the prediction and the prompt's length."""
    prompt = template.format(text=text)
    words = set(text.replace(",", "").split())
    label = "positive" if words & POSITIVE_WORDS else "negative"
    if template.startswith("Strict") and "not" in words:
        label = "negative"
    return {"prediction": label, "prompt_chars": len(prompt)}


TEMPLATES = {
    "plain": "Is this review positive or negative? {text}",
    "strict": "Strictly classify the sentiment of: {text}",
}


def run_benchmark(db: str) -> None:
    for template_name, template in TEMPLATES.items():
        params = {"model": "keyword-rule", "template": template_name}
        predictions = Tracker(db, table="predictions", params=params)
        correct = 0
        for text, label in DATA:
            result = predictions.track(mock_model, args=[text, template], params={"label": label})
            correct += result["prediction"] == label
        # The same track_id ties the run's metrics to its predictions.
        metrics = Tracker(db, table="metrics", params=params, track_id=predictions.track_id)
        metrics.log({"accuracy": correct / len(DATA), "items": len(DATA)})
        predictions.close()
        metrics.close()


def summarise(db: str) -> None:
    predictions = Reader(db, table="predictions").to_df()
    metrics = Reader(db, table="metrics").to_df()
    predictions["correct"] = predictions["prediction"] == predictions["label"]
    per_template = predictions.groupby("template")["correct"].mean()
    joined = predictions.merge(metrics[["track_id", "accuracy"]], on="track_id")
    print(per_template.to_string())
    print(metrics[["template", "accuracy", "items"]].to_string(index=False))
    print(f"{len(joined)} predictions joined to their run's metrics")


if __name__ == "__main__":
    database = sys.argv[1] if len(sys.argv) > 1 else "bench.db"
    run_benchmark(database)
    summarise(database)
