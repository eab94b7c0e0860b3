"""Build the HTML reports shown in docs/report.md and take their screenshots.

Two databases are made in a temporary directory: the one of examples/two_table_benchmark.py,
and a learning-curve run (three models, five epochs each, the environment recorded, one
tracked call that fails). Each gets ``xt report``; headless Chromium takes a 1280 x 2000
screenshot of each, saved as docs/img/report_*.png with a reduced palette to stay small.

Run from the repository root: python docs/report_screenshots.py  (needs matplotlib,
Pillow and chromium).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
IMAGES = ROOT / "docs" / "img"
MODELS = {"small": 1.0, "medium": 1.6, "large": 2.4}


def learning_curves(db: str) -> None:
    """Three models trained for five epochs; loss falls and accuracy rises with size."""
    from xetrack_c import Tracker

    for model, factor in MODELS.items():
        tracker = Tracker(db, params={"model": model, "lr": 0.001}, log_environment=True)
        for epoch in range(1, 6):
            loss = 2.0 / (1 + epoch * factor)
            tracker.log({"epoch": epoch, "loss": round(loss, 4),
                         "accuracy": round(1 - loss / 2.2, 4)})
        tracker.close()
    evaluation = Tracker(db, table="evaluation", raise_on_error=False, warnings=False)
    for shard in range(4):
        evaluation.track(evaluate_shard, args=[shard])
    evaluation.close()


def evaluate_shard(shard: int) -> dict:
    """A tracked call; shard 2 is missing, so its row carries the error."""
    if shard == 2:
        raise FileNotFoundError("shard-2.jsonl not found")
    return {"examples": 250, "f1": 0.8 + shard / 50}


def run(command: list, cwd: str) -> None:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    subprocess.run(command, cwd=cwd, env=env, check=True, stdout=subprocess.DEVNULL)


def screenshot(page: Path, target: Path) -> None:
    """A 1280 x 2000 PNG of ``page`` in headless Chromium, its palette reduced."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        sys.exit("chromium is not installed (apt install chromium)")
    subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu",
                    "--hide-scrollbars", f"--screenshot={target}", "--window-size=1280,2000",
                    page.as_uri()], check=True, capture_output=True, timeout=120)
    from PIL import Image

    with Image.open(target) as image:
        small = image.convert("RGB").quantize(colors=128)
    small.save(target, optimize=True)
    print(f"{target.relative_to(ROOT)}: {target.stat().st_size // 1024} KiB")


def main() -> None:
    sys.path.insert(0, str(ROOT))
    IMAGES.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        run([sys.executable, str(ROOT / "examples" / "two_table_benchmark.py"), "bench.db"], tmp)
        learning_curves(os.path.join(tmp, "curves.db"))
        for name, db in (("benchmark", "bench.db"), ("curves", "curves.db")):
            run([sys.executable, "-m", "xetrack_c", "report", db, "-o", f"{name}.html"], tmp)
            screenshot(Path(tmp) / f"{name}.html", IMAGES / f"report_{name}.png")


if __name__ == "__main__":
    main()
