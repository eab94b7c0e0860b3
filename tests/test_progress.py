"""The progress display of run_multiple: whole lines when stderr is not a terminal, one
updating line on a terminal, statuses counted apart (cancelled is not failed).

The notebook widget is tested in tests/test_progress_notebook.py.
"""

from __future__ import annotations

import io
import os
import pty
import re
import select
import subprocess
import sys
import time
import types

import pytest
from conftest import child_env

from xetrack_c import ExperimentSpec, run_multiple
from xetrack_c.run import progress as progress_module
from xetrack_c.run.progress import Progress

pytestmark = pytest.mark.slow  # left out of the jobs that re-run the suite (.ci/run)

LINE = re.compile(r"^run_multiple \d+/\d+ \(\d+ completed, \d+ failed(, \d+ timeout)?"
                  r"(, \d+ cancelled)?(, \d+ abandoned threads)?\) \d+\.\d tasks/s "
                  r"ETA (\d+:)?\d\d:\d\d$")


def boom(config):
    raise ValueError("boom")


def double(config):
    return config["x"] * 2


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


# A batch in a child interpreter whose stderr is a file: 24 tasks of 50 ms, one at a
# time, lines at most every 0.3 s.
BATCH = """
import sys, time
from xetrack_c import ExperimentSpec, run_multiple
from xetrack_c.run.progress import Progress

Progress.LINE_INTERVAL = 0.3
if sys.argv[1] == "no-tqdm":
    sys.modules["tqdm"] = None
progress = {"on": True, "default": None}[sys.argv[2]]

def task(config):
    time.sleep(0.05)
    if config["i"] == 5:
        raise ValueError("one failure")
    return config["i"]

start = time.monotonic()
results = run_multiple([ExperimentSpec(function=task, config={"i": i}) for i in range(24)], 1,
                       progress=progress)
print(time.monotonic() - start, [r.status for r in results].count("completed"))
"""


def run_batch(tmp_path, tqdm: str, progress: str):
    script = tmp_path / "batch.py"
    script.write_text(BATCH)
    err_path = tmp_path / "stderr.txt"
    with open(err_path, "wb") as err:
        proc = subprocess.run([sys.executable, str(script), tqdm, progress], env=child_env(),
                              stdout=subprocess.PIPE, stderr=err, timeout=120, check=True,
                              text=True)
    elapsed, completed = proc.stdout.split()
    return err_path.read_bytes().decode(), float(elapsed), int(completed)


@pytest.mark.parametrize("tqdm", ["tqdm-if-installed", "no-tqdm"])
def test_redirected_stderr_gets_whole_lines_at_a_bounded_rate(tmp_path, tqdm):
    err, elapsed, completed = run_batch(tmp_path, tqdm, "on")
    assert completed == 23
    assert "\r" not in err and "\x1b" not in err
    assert err.endswith("\n")
    lines = err.splitlines()
    assert all(LINE.match(line) for line in lines), lines
    assert lines[-1].startswith("run_multiple 24/24 (23 completed, 1 failed)")
    assert 2 <= len(lines) <= elapsed / 0.3 + 1  # 0.3 s apart at least, then the last one


def test_redirected_stderr_gets_nothing_by_default(tmp_path):
    err, _, completed = run_batch(tmp_path, "tqdm-if-installed", "default")
    assert completed == 23
    assert err == ""


def test_terminal_gets_one_updating_line(tmp_path):
    script = tmp_path / "batch.py"
    script.write_text(BATCH)
    leader, follower = pty.openpty()
    proc = subprocess.Popen([sys.executable, str(script), "no-tqdm", "default"],
                            env=child_env(), stdout=subprocess.PIPE, stderr=follower)
    os.close(follower)
    seen = b""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        ready, _, _ = select.select([leader], [], [], 1.0)
        if ready:
            try:
                chunk = os.read(leader, 4096)
            except OSError:  # the child closed its end
                break
            if not chunk:
                break
            seen += chunk
        elif proc.poll() is not None:
            break
    os.close(leader)
    proc.communicate(timeout=60)
    text = seen.decode()
    assert text.count("\n") == 1 and text.endswith("\n")  # the display is one line
    assert text.startswith("\rrun_multiple ") and "\x1b[K" in text
    assert "\rrun_multiple 24/24 (23 completed, 1 failed)" in text


def test_cancelled_is_not_failed(capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "tqdm", None)
    specs = [ExperimentSpec(function=double, config={"x": 1}),
             ExperimentSpec(function=boom, config={"x": 1})]
    specs += [ExperimentSpec(function=double, config={"x": i}) for i in range(3)]
    results = run_multiple(specs, 1, fail_fast=True, progress=True)
    assert [r.status for r in results] == ["completed", "failed"] + ["cancelled"] * 3
    err = capsys.readouterr().err
    assert err.splitlines()[-1].startswith("run_multiple 5/5 (1 completed, 1 failed, "
                                           "3 cancelled) ")


def test_counts_apart_and_abandoned_threads():
    stream = io.StringIO()
    display = Progress(6, stream=stream, use_tqdm=False)
    for status in ("completed", "skipped", "failed", "timeout", "cancelled"):
        display.update(status)
    display.update("cancelled", abandoned=2)
    assert (display.completed, display.failed, display.counts["timeout"],
            display.counts["cancelled"], display.abandoned) == (2, 1, 1, 2, 2)
    display.close()
    (line,) = stream.getvalue().splitlines()  # drawn once: the last task
    assert line.startswith("run_multiple 6/6 (2 completed, 1 failed, 1 timeout, 2 cancelled, "
                           "2 abandoned threads) ")


def test_interrupted_batch_writes_its_last_counts_on_close():
    stream = io.StringIO()
    display = Progress(10, stream=stream, use_tqdm=False)
    display.update("completed")
    display.close()
    assert stream.getvalue().startswith("run_multiple 1/10 (1 completed, 0 failed) ")
    assert stream.getvalue().count("\n") == 1


def test_terminal_line_redraws_in_place():
    stream = Terminal()
    display = Progress(2, stream=stream, use_tqdm=False)
    display.update("completed")
    display.update("failed")
    display.close()
    text = stream.getvalue()
    assert text.startswith("\r") and text.endswith("\n") and text.count("\n") == 1


def test_notebook_detection(monkeypatch):
    assert not progress_module.in_notebook()  # pytest is no kernel

    class ZMQInteractiveShell:
        pass

    fake = types.ModuleType("IPython")
    fake.get_ipython = ZMQInteractiveShell  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "IPython", fake)
    assert progress_module.in_notebook()
    assert progress_module.shown_by_default()

    class TerminalInteractiveShell:
        pass

    fake.get_ipython = TerminalInteractiveShell  # type: ignore[attr-defined]
    assert not progress_module.in_notebook()  # IPython in a terminal is not a notebook
