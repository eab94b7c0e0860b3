"""Task functions for the tests of what a batch records (results as data, attempts, metrics
without db): importable by worker processes and executor workers (the tests put this folder
on sys.path, which worker processes inherit)."""

from __future__ import annotations

import dataclasses
import os
import time

import xetrack_c


def trial(config):
    """The README's trial."""
    return {"loss": (config["lr"] - 0.03) ** 2}


def returns(config):
    """CASES[config["case"]]."""
    return CASES[config["case"]]


class Opaque:
    """An object with no column form (its repr shows a memory address)."""


#: Return values of ``returns``, by case number.
CASES = [
    0.5,
    "text",
    True,
    7,
    [1, "a", None],
    {"curve": [0.1, 0.2], "meta": {"k": 1}, "flag": False},
    None,
    {"status": "mine", "error": "e", "lr": 5, "experiment_id": "x", "case": 3, "loss": 1},
]


def returns_opaque(config):
    return {"kept": 1, "model": Opaque(), "nested": [1, Opaque()]}


@dataclasses.dataclass
class Score:
    accuracy: float
    label: str


def returns_dataclass(config):
    return Score(accuracy=0.75, label="ok")


def logs_metrics(config):
    for step in range(3):
        xetrack_c.log_metrics({"loss": 1.0 / (step + 1)}, step=step)
    xetrack_c.log_metrics({"final": config["i"]})
    return config["i"]


def fails_then_succeeds(config):
    """Fails until its marker file has config["fail"] lines, then returns."""
    with open(config["marker"], "a+") as handle:
        handle.seek(0)
        seen = len(handle.read().splitlines())
        handle.write("x\n")
    if seen < config["fail"]:
        raise ConnectionError(f"attempt {seen + 1} fails")
    return {"attempts_seen": seen + 1}


def fails_or_sleeps(config):
    if config.get("fail"):
        raise RuntimeError(f"spec {config['i']} fails")
    time.sleep(config.get("sleep", 0.0))
    return config["i"]


def cwd_files(config):
    return sorted(os.listdir("."))
