"""Task functions for the tests of rows linked to experiments: importable by the worker
processes of ``backend="process"`` (the tests put this folder on sys.path)."""

from __future__ import annotations

from typing import Any, Dict

from xetrack_c import Tracker


def train(config: Dict[str, Any]) -> Dict[str, Any]:
    """Log a short learning curve to ``config["db"]`` with a Tracker of the task's own."""
    tracker = Tracker(config["db"], params={"lr": config["lr"]})
    for epoch in range(3):
        tracker.log({"epoch": epoch, "acc": config["lr"] * (epoch + 1)})
    tracker.close()
    return {"final": config["lr"] * 3}
