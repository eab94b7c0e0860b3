"""Log files move both ways between xetrack_c and xetrack 0.7: each package reads the text
logs and JSONL files the other writes. The xetrack side runs in ``$XETRACK_PYTHON``."""

from __future__ import annotations

import pytest
from test_xetrack_interop import run_xetrack, xetrack_python  # noqa: F401  (the fixture)

from xetrack_c import Reader, Tracker
from xetrack_c.logging import Logger, read_jsonl, read_logs

pytestmark = pytest.mark.slow
pytest.importorskip("loguru")


def without_time(records):
    return [{key: value for key, value in record.items() if key != "timestamp"} for record in records]


def test_xetrack_reads_xetrack_c_logs(run_py, xetrack_python, tmp_path):  # noqa: F811
    logs, jsonl = str(tmp_path / "logs"), str(tmp_path / "rows.jsonl")
    tracker = Tracker(Tracker.IN_MEMORY, params={"model": "m1"}, logs_path=logs, jsonl=jsonl,
                      track_id="c-run")
    rows = [tracker.log({"acc": 0.5, "name": "é"}), tracker.log({"acc": 0.75, "epoch": 2})]
    tracker.track(lambda x: x + 1, args=[1])
    rows.append(tracker.latest)
    tracker.logger.experiment({"lr": 0.01})
    tracker.close()

    got = run_xetrack(run_py, xetrack_python, f"""
from xetrack import Reader
from xetrack.logging import Logger
emit(Logger(stdout=False).read_logs({logs!r}))
emit(records(Reader.read_logs({logs!r})))
emit(records(Reader.read_jsonl({jsonl!r})))
""")
    text_records, frame_records, jsonl_records = got
    assert text_records == rows + [{"lr": 0.01}]
    assert len(frame_records) == 4 and frame_records[0]["name"] == "é"
    assert [r["level"] for r in jsonl_records] == ["TRACKING"] * 3 + ["EXPERIMENT"]
    assert [r["acc"] for r in jsonl_records[:2]] == [0.5, 0.75]
    assert all("T" in r["timestamp"] for r in jsonl_records)
    assert jsonl_records[2]["function_result"] == 2


def test_xetrack_c_reads_xetrack_logs(run_py, xetrack_python, tmp_path):  # noqa: F811
    logs, jsonl = str(tmp_path / "logs"), str(tmp_path / "rows.jsonl")
    written = run_xetrack(run_py, xetrack_python, f"""
from xetrack import Tracker
from xetrack.logging import Logger
t = Tracker(Tracker.IN_MEMORY, params={{"model": "m1"}}, logs_path={logs!r}, jsonl={jsonl!r},
            track_id="x-run")
emit(t.log({{"acc": 0.5, "name": "é"}}))
emit(t.log({{"acc": 0.75, "epoch": 2}}))
t.logger.warning("a warning")
t.logger.experiment({{"lr": 0.01}})
""")
    assert read_logs(logs) == written + [{"lr": 0.01}]
    assert Logger(stdout=False).read_logs(logs) == written + [{"lr": 0.01}]
    records = read_jsonl(jsonl)
    assert [r["level"] for r in records] == ["TRACKING", "TRACKING", "EXPERIMENT"]
    assert without_time(records[:2]) == [
        {"level": "TRACKING", **{k: v for k, v in row.items() if k != "timestamp"}} for row in written]
    frame = Reader.read_jsonl(jsonl)
    assert frame["acc"].tolist()[:2] == [0.5, 0.75]
    assert Reader.read_logs(logs)["acc"].tolist()[:2] == [0.5, 0.75]
