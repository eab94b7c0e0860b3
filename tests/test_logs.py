"""Text and JSONL logs: Tracker(logs_stdout=, logs_path=, logs_file_format=, jsonl=) and
xetrack_c.logging.Logger write xetrack's formats, and read them back."""

from __future__ import annotations

import json
import math
import os
import pickle
import re
import sys
import weakref
from datetime import date, datetime

import pytest
from conftest import read_rows

from xetrack_c import Reader, Tracker
from xetrack_c.logging import Logger, log_files, read_jsonl, read_log, read_logs

pytest.importorskip("loguru")

LINE = re.compile(
    r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3} \| (?P<level>[A-Z]+) *\| "
    r"(?P<where>[\w.<>]+:[\w<>]+:\d+)!📁!(?P<message>.*)$"
)


def log_lines(directory: str) -> list:
    (path,) = log_files(directory)
    with open(path, encoding="utf-8") as handle:
        return handle.read().splitlines()


def test_logs_path_writes_one_dated_file_with_a_line_per_row(tmp_path, db_path):
    logs = str(tmp_path / "logs")
    tracker = Tracker(db_path, params={"model": "m1"}, logs_path=logs)
    first = tracker.log({"acc": 0.5, "name": "é-run"})
    second = tracker.log({"acc": 0.75, "epoch": 2})
    tracker.close()

    assert os.listdir(logs) == [f"{date.today():%Y-%m-%d}.log"]
    lines = log_lines(logs)
    assert len(lines) == 2
    for line, row in zip(lines, (first, second), strict=True):
        match = LINE.match(line)
        assert match, line
        assert match["level"] == "TRACKING"
        assert json.loads(match["message"]) == row
    assert read_logs(logs) == [first, second]
    assert len(read_rows(db_path)) == 2  # the database still gets every row


def test_logs_file_format_names_the_file(tmp_path):
    logs = str(tmp_path / "logs")
    tracker = Tracker(Tracker.IN_MEMORY, logs_path=logs, logs_file_format="run-{time:YYYY}.log")
    row = tracker.log({"x": 1})
    tracker.close()
    assert os.listdir(logs) == [f"run-{date.today():%Y}.log"]
    assert read_logs(logs) == [row]


def test_logs_stdout_prints_each_row(capsys):
    tracker = Tracker(Tracker.IN_MEMORY, logs_stdout=True, params={"p": 1})
    row = tracker.log({"a": 1, "b": "two"})
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 1
    match = LINE.match(out[0])
    assert match and match["level"] == "TRACKING"
    assert json.loads(match["message"]) == row == {"p": 1, "a": 1, "b": "two", "timestamp": row["timestamp"],
                                                   "track_id": tracker.track_id}


def test_no_output_anywhere_without_logs(tmp_path, capfd, monkeypatch):
    monkeypatch.chdir(tmp_path)
    tracker = Tracker(str(tmp_path / "t.db"))
    tracker.log({"a": 1})
    assert tracker.logger is None
    captured = capfd.readouterr()
    assert captured.out == "" and captured.err == ""
    assert sorted(os.listdir(tmp_path)) == ["t.db", "t.db-shm", "t.db-wal"]


def test_logs_off_leaves_the_c_methods_in_place(db_path):
    plain = Tracker(db_path)
    for name in ("log", "log_batch", "track", "close"):
        assert name not in vars(plain)
        assert getattr(plain, name).__self__ is plain
    # the hot paths are the C methods themselves (close() is Python: it stops samplers)
    for name in ("log", "log_batch", "track"):
        assert type(getattr(plain, name)).__name__ == "builtin_function_or_method"
    logged = Tracker(Tracker.IN_MEMORY, jsonl=db_path + ".jsonl")
    assert isinstance(logged, Tracker) and type(logged).__name__ == "Tracker"
    for name in ("log", "log_batch", "track", "close"):
        assert name not in vars(logged) and getattr(type(logged), name) is not getattr(Tracker, name)


def test_jsonl_records_have_xetracks_fields(tmp_path):
    path = str(tmp_path / "out" / "rows.jsonl")
    tracker = Tracker(Tracker.IN_MEMORY, params={"model": "m"}, jsonl=path, track_id="run-1")
    rows = [tracker.log({"acc": value, "epoch": epoch}) for epoch, value in enumerate((0.9, 0.95))]
    records = read_jsonl(path)
    assert len(records) == 2
    for record, row in zip(records, rows, strict=True):
        stamp = datetime.fromisoformat(record.pop("timestamp"))
        assert stamp.tzinfo is not None  # ISO 8601 with the offset
        assert record.pop("level") == "TRACKING"
        expected = dict(row)
        del expected["timestamp"]  # the tracker's own timestamp is left out, as in xetrack
        assert record == expected
    with open(path, encoding="utf-8") as handle:
        assert all(line.endswith("}\n") and "\n" not in line[:-1] for line in handle)
    frame = Reader.read_jsonl(path)
    assert frame["acc"].tolist() == [0.9, 0.95]
    assert frame["level"].tolist() == ["TRACKING", "TRACKING"]


def test_jsonl_holds_only_tracked_levels(tmp_path):
    path = str(tmp_path / "rows.jsonl")
    tracker = Tracker(Tracker.IN_MEMORY, jsonl=path)
    tracker.log({"v": 1})
    tracker.logger.warning("not a record")
    tracker.logger.info("nor this")
    tracker.logger.monitor({"cpu": 3})
    tracker.logger.experiment({"lr": 0.1})
    assert [(r["level"], r.get("v", r.get("cpu", r.get("lr")))) for r in read_jsonl(path)] == [
        ("TRACKING", 1), ("MONITOR", 3), ("EXPERIMENT", 0.1)]


def test_jsonl_needs_no_loguru_and_text_logs_name_the_extra(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "loguru", None)  # import loguru now fails
    path = str(tmp_path / "rows.jsonl")
    tracker = Tracker(Tracker.IN_MEMORY, jsonl=path)
    row = tracker.log({"a": 1})
    assert read_jsonl(path)[0]["track_id"] == row["track_id"]
    with pytest.raises(ImportError, match=re.escape("pip install loguru (or xetrack_c's `logs` extra")):
        Tracker(Tracker.IN_MEMORY, logs_stdout=True)


def test_track_and_log_batch_rows_are_logged(tmp_path):
    logs = str(tmp_path / "logs")
    tracker = Tracker(Tracker.IN_MEMORY, logs_path=logs, params={"p": 0}, raise_on_error=False)
    batch_last = tracker.log_batch([{"i": 1, "tags": ["a"]}, {"i": 2}])
    assert tracker.track(lambda x: {"double": x * 2}, args=[4]) == {"double": 8}

    def broken(x):
        raise RuntimeError("bad input")

    tracker.track(broken, args=[1])
    strict = Tracker(Tracker.IN_MEMORY, logs_path=str(tmp_path / "strict"))
    with pytest.raises(RuntimeError):
        strict.track(broken, args=[2])
    tracker.close()
    strict.close()

    records = read_logs(logs)
    assert [r.get("i") for r in records[:2]] == [1, 2]
    assert records[0]["tags"] == "['a']" and records[1] == batch_last
    assert records[2]["double"] == 8 and records[2]["function_name"] == "<lambda>"
    assert records[3]["error"] == "bad input" and records[3]["function_name"] == "broken"
    assert read_logs(str(tmp_path / "strict"))[0]["error"] == "bad input"
    assert any("Running broken with [1]" in line for line in log_lines(logs))


def test_skip_insert_logs_the_given_keys_only(tmp_path):
    logs = str(tmp_path / "logs")
    tracker = Tracker(Tracker.SKIP_INSERT, params={"p": 1}, logs_path=logs)
    tracker.log({"a": 2, "b c": 3})
    tracker.close()
    (record,) = read_logs(logs)
    assert set(record) == {"a", "b_c", "timestamp", "track_id"}
    assert (record["a"], record["b_c"]) == (2, 3)
    assert len(Reader.read_logs(logs)) == 1


def test_values_json_cannot_hold_are_written_safely(tmp_path):
    path = str(tmp_path / "rows.jsonl")
    logs = str(tmp_path / "logs")
    tracker = Tracker(Tracker.IN_MEMORY, jsonl=path, logs_path=logs)
    tracker.log({"nan": math.nan, "inf": math.inf, "raw": b"\x00\x01", "ok": 1.5})
    (record,) = read_jsonl(path)
    assert (record["nan"], record["inf"], record["raw"], record["ok"]) == (None, None, "b'\\x00\\x01'", 1.5)
    tracker.close()
    assert read_logs(logs)[0]["nan"] is None


def test_experiment_records_span_lines_and_read_back(tmp_path):
    logs = str(tmp_path / "logs")
    logger = Logger(stdout=False, logs_path=logs)
    logger.info("a message, not a record")
    logger.experiment({"lr": 0.01, "layers": [1, 2]})
    logger.monitor([{"step": 1}, {"step": 2}])
    logger.close()
    assert len(log_lines(logs)) > 4  # the EXPERIMENT record is indented over several lines
    assert read_logs(logs) == [{"lr": 0.01, "layers": [1, 2]}, {"step": 1}, {"step": 2}]


def test_monitor_takes_a_dataframe(tmp_path):
    pandas = pytest.importorskip("pandas")
    path = str(tmp_path / "rows.jsonl")
    logger = Logger(stdout=False, jsonl=path)
    logger.monitor(pandas.DataFrame([{"a": 1, "b": "x"}, {"a": 2, "b": "y"}]))
    assert [(r["level"], r["a"], r["b"]) for r in read_jsonl(path)] == [("MONITOR", 1, "x"), ("MONITOR", 2, "y")]


def test_serialized_files_read_back(tmp_path):
    logs = str(tmp_path / "logs")
    logger = Logger(stdout=False, logs_path=logs, prettify=False)
    logger.track({"a": 1})
    logger.warning("skipped")
    logger.close()
    assert all(line.startswith('{"text":') for line in log_lines(logs))
    assert read_logs(logs) == [{"a": 1}]
    assert logger.read_structured_logs(log_files(logs)[0]) == [{"a": 1}]


def test_logs_delimiter_from_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("LOGS_DELIMITER", " ::: ")
    logs = str(tmp_path / "logs")
    tracker = Tracker(Tracker.IN_MEMORY, logs_path=logs)
    row = tracker.log({"a": 1})
    tracker.close()
    assert " ::: {" in log_lines(logs)[0] and "📁" not in log_lines(logs)[0]
    assert read_logs(logs) == [row]


def test_trackers_keep_their_sinks_apart_and_leave_loguru_alone(tmp_path, capsys):
    from loguru import logger as global_logger

    seen = []
    handler = global_logger.add(seen.append, format="{message}")
    try:
        quiet = Tracker(Tracker.IN_MEMORY, logs_path=str(tmp_path / "a"))
        loud = Tracker(Tracker.IN_MEMORY, logs_path=str(tmp_path / "b"), logs_stdout=True)
        quiet_row = quiet.log({"who": "quiet"})
        loud_row = loud.log({"who": "loud"})
        global_logger.info("the program's own message")
    finally:
        global_logger.remove(handler)
    assert read_logs(str(tmp_path / "a")) == [quiet_row]
    assert read_logs(str(tmp_path / "b")) == [loud_row]
    assert [json.loads(LINE.match(line)["message"])["who"] for line in capsys.readouterr().out.splitlines()] == ["loud"]
    assert [str(message).strip() for message in seen] == ["the program's own message"]


def test_close_detaches_the_files(tmp_path):
    logs, jsonl = str(tmp_path / "logs"), str(tmp_path / "rows.jsonl")
    logger = Logger(stdout=False, logs_path=logs, jsonl=jsonl)
    logger.track({"n": 1})
    logger.close()
    logger.track({"n": 2})
    logger.close()  # twice is fine
    assert read_logs(logs) == [{"n": 1}]
    assert [record["n"] for record in read_jsonl(jsonl)] == [1]


def test_jsonl_lines_from_threads_never_interleave(tmp_path):
    import threading

    path = str(tmp_path / "rows.jsonl")
    tracker = Tracker(Tracker.IN_MEMORY, jsonl=path)
    barrier = threading.Barrier(4)
    payload = "x" * 5000  # longer than one buffer of a text file

    def work(worker):
        barrier.wait()
        for i in range(50):
            tracker.log({"worker": worker, "i": i, "payload": payload})

    threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    records = read_jsonl(path)
    assert len(records) == 200 and all(r["payload"] == payload for r in records)
    assert sorted((r["worker"], r["i"]) for r in records) == [(w, i) for w in range(4) for i in range(50)]


def test_reader_read_logs_returns_a_frame(tmp_path):
    pytest.importorskip("pandas")
    logs = str(tmp_path / "logs")
    tracker = Tracker(Tracker.IN_MEMORY, logs_path=logs)
    tracker.log({"a": 1, "b": 2})
    tracker.logger.info("ignored")
    tracker.close()
    frame = Reader.read_logs(logs)
    assert frame[["a", "b"]].values.tolist() == [[1, 2]]
    assert Reader.read_logs(logs, limit=0).empty


def test_bad_paths_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="no log directory"):
        read_logs(str(tmp_path / "missing"))
    with pytest.raises(IsADirectoryError, match="jsonl="):
        Tracker(Tracker.IN_MEMORY, jsonl=str(tmp_path))
    with pytest.raises(ValueError, match="read_logs needs a directory"):
        Logger(stdout=False).read_logs()


def test_a_pickled_tracker_keeps_its_logs(tmp_path, db_path):
    path = str(tmp_path / "rows.jsonl")
    tracker = Tracker(db_path, jsonl=path)
    clone = pickle.loads(pickle.dumps(tracker))
    row = clone.log({"from": "clone"})
    assert read_jsonl(path)[0]["track_id"] == row["track_id"] == tracker.track_id


def test_log_takes_data_as_a_keyword(db_path):
    tracker = Tracker(db_path)
    row = tracker.log(data={"a": 1})
    assert read_rows(db_path)[0]["a"] == 1 and row["a"] == 1
    with pytest.raises(TypeError, match="unexpected keyword argument 'values'"):
        tracker.log(values={"a": 1})
    with pytest.raises(TypeError, match="exactly one argument"):
        tracker.log({"a": 1}, data={"a": 2})
    assert len(read_rows(db_path)) == 1


def test_read_log_skips_what_is_not_a_record(tmp_path):
    path = tmp_path / "x.log"
    path.write_text(
        "2026-01-01 00:00:00.000 | INFO     | m:f:1!📁!hello\n"
        "Traceback (most recent call last):\n"
        "2026-01-01 00:00:00.000 | TRACKING | m:f:1!📁!{\"a\":1}\n"
        "2026-01-01 00:00:00.000 | INFO     | m:f:1!📁!42\n",
        encoding="utf-8",
    )
    assert read_log(str(path)) == [{"a": 1}]


def test_sinks_stay_apart_on_a_loguru_without_its_constructor(tmp_path, monkeypatch):
    # Should loguru's logger constructor change, the global logger is shared and each
    # Logger's handlers take only its own records.
    from loguru import _logger as internals

    def changed(*args, **kwargs):
        raise TypeError("Core() takes other arguments now")

    monkeypatch.setattr(internals, "Core", changed)
    first = Logger(stdout=False, logs_path=str(tmp_path / "a"))
    second = Logger(stdout=False, logs_path=str(tmp_path / "b"))
    first.track({"who": 1})
    second.track({"who": 2})
    first.close()
    second.close()
    assert read_logs(str(tmp_path / "a")) == [{"who": 1}]
    assert read_logs(str(tmp_path / "b")) == [{"who": 2}]


def test_bad_records_are_named_and_kept_methods_keep_their_tracker(tmp_path):
    logger = Logger(stdout=False, jsonl=str(tmp_path / "rows.jsonl"))
    with pytest.raises(TypeError, match="a dict, a list of dicts or a DataFrame, not int"):
        logger.monitor(3)
    # as with any method, a bound log() keeps its tracker (xetrack's tests chain
    # Tracker(..., logs_path=...).log(...)); dropping both frees and closes it
    jsonl = str(tmp_path / "other.jsonl")
    log = Tracker(Tracker.IN_MEMORY, jsonl=jsonl, track_id="kept").log
    import gc

    gc.collect()
    assert log({"a": 1})["a"] == 1
    freed = weakref.ref(log.__self__)
    del log
    assert freed() is None  # no reference cycle: freed without the collector
    assert [record["a"] for record in read_jsonl(jsonl)] == [1]
