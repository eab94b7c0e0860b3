"""Smoke test of an installed xetrack_c (run by .ci/package in a fresh venv, outside the
checkout): import, a Tracker round trip, `xt head`, a 4-task run_multiple, Reader.to_df, and
the SQLite library in use."""

import os
import shutil
import subprocess
import sys
import tempfile

import xetrack_c
from xetrack_c import ExperimentSpec, Reader, Tracker, _core, run_multiple


def trial(config):
    return {"loss": (config["lr"] - 0.03) ** 2}


def main() -> None:
    assert "site-packages" in xetrack_c.__file__, xetrack_c.__file__
    info = _core.sqlite_library()
    print(f"xetrack_c {xetrack_c.__version__} from {os.path.dirname(xetrack_c.__file__)}")
    print(f"SQLite {info['version']} from {info['library']} (mapped: {info['mapped']})")
    assert "site-packages" not in info["library"], "the wheel must not carry its own SQLite"
    with tempfile.TemporaryDirectory() as tmp:
        db = os.path.join(tmp, "smoke.db")
        with Tracker(db, params={"model": "m1"}) as tracker:
            for i in range(3):
                tracker.log({"i": i, "score": i / 2})
        xt = shutil.which("xt")
        assert xt is not None, "the xt entry point is not on PATH"
        out = subprocess.run([xt, "head", db, "--n", "2"], capture_output=True, text=True,
                             check=True).stdout
        assert "score" in out and "m1" in out, out
        specs = [ExperimentSpec(function=trial, config={"lr": lr}) for lr in (0.1, 0.03, 0.01, 0.3)]
        results = run_multiple(specs, parallel=2, db=db)
        assert [r.status for r in results] == ["completed"] * 4, results
        assert results[1].result == {"loss": 0.0}
        df = Reader(db).to_df()
        assert list(df["i"]) == [0, 1, 2] and df["model"].eq("m1").all()
        experiments = Reader(db, table="experiments").to_df()
        assert len(experiments) == 4
    print("smoke test passed")


if __name__ == "__main__":
    sys.exit(main())
