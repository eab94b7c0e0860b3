"""Running the real ``xt`` in a child process, and databases to run it on."""

from __future__ import annotations

import fcntl
import json
import os
import pty
import select
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import pytest
from conftest import child_env

# Runs xt's main() like the console script does, then reports on stderr whether pandas
# got imported along the way.
PROBE = (
    "import sys\n"
    "from xetrack_c.cli import main\n"
    "code = main(sys.argv[1:])\n"
    "sys.stdout.flush()\n"
    "sys.stderr.write('PANDAS_IMPORTED=%s\\n' % ('pandas' in sys.modules))\n"
    "sys.exit(code)\n"
)


class Result:
    """What one xt run did."""

    def __init__(self, proc: subprocess.CompletedProcess) -> None:
        self.code = proc.returncode
        self.out = proc.stdout
        self.err = proc.stderr

    def json(self) -> Any:
        return json.loads(self.out)

    def table(self) -> List[Dict[str, str]]:
        """The Markdown table on stdout as dicts of stripped cell texts."""
        return parse_markdown(self.out)

    def __repr__(self) -> str:
        return f"Result(code={self.code}, out={self.out!r}, err={self.err!r})"


def parse_markdown(text: str) -> List[Dict[str, str]]:
    lines = [line for line in text.splitlines() if line.startswith("|")]
    assert len(lines) >= 2, f"no Markdown table in {text!r}"
    header = [cell.strip() for cell in lines[0].strip("|").split("|")]
    assert set(lines[1]) <= set("|-:"), f"bad rule line {lines[1]!r}"
    return [dict(zip(header, (cell.strip() for cell in line.strip("|").split(" | ")), strict=True))
            for line in lines[2:]]


def run(command: Sequence[str], args: Sequence[str], cwd: Path,
        env_extra: Optional[Dict[str, str]] = None, timeout: float = 60) -> Result:
    env = child_env()
    env.update(env_extra or {})
    try:
        proc = subprocess.run([*command, *args], cwd=str(cwd), env=env, capture_output=True,
                              text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        pytest.fail(f"xt {' '.join(args)} did not finish within {timeout}s")
    return Result(proc)


def run_in_terminal(command: Sequence[str], cwd: Path, columns: int, answer: Optional[str],
                    timeout: float) -> Result:
    """Run ``command`` with stdin and stdout on a pty of ``columns`` columns, echo off."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, columns, 0, 0))
    attrs = termios.tcgetattr(slave)
    attrs[3] &= ~termios.ECHO  # what is typed does not come back as output
    termios.tcsetattr(slave, termios.TCSANOW, attrs)
    env = child_env()
    env.pop("COLUMNS", None)  # the width comes from the terminal itself
    env.pop("LINES", None)
    proc = subprocess.Popen(list(command), cwd=str(cwd), env=env, stdin=slave, stdout=slave,
                            stderr=subprocess.PIPE)
    os.close(slave)
    if answer is not None:
        os.write(master, answer.encode() + b"\n")
    output = bytearray()
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.1)
            if ready:
                try:
                    data = os.read(master, 65536)
                except OSError:  # EIO: the child exited and closed the terminal
                    break
                if not data:
                    break
                output += data
            elif proc.poll() is not None:
                break
        else:
            proc.kill()
            pytest.fail(f"{' '.join(command)} did not finish within {timeout}s")
        err = proc.stderr.read() if proc.stderr else b""
        code = proc.wait(timeout)
    finally:
        os.close(master)
    return Result(subprocess.CompletedProcess(
        list(command), code, output.decode().replace("\r\n", "\n"), err.decode()))


class Xt:
    """``xt(*args)``: run ``python -m xetrack_c *args`` in ``cwd``."""

    def __init__(self, cwd: Path) -> None:
        self.cwd = cwd

    def __call__(self, *args: str, env: Optional[Dict[str, str]] = None) -> Result:
        return run([sys.executable, "-m", "xetrack_c"], args, self.cwd, env)

    def probe(self, *args: str) -> Result:
        """Run through main() and report whether pandas was imported."""
        return run([sys.executable, "-c", PROBE], args, self.cwd)

    def ok(self, *args: str, env: Optional[Dict[str, str]] = None) -> Result:
        result = self(*args, env=env)
        assert result.code == 0, result
        assert "Traceback" not in result.err, result
        return result

    def fails(self, *args: str, env: Optional[Dict[str, str]] = None) -> Result:
        """Run a command that must fail as a user error: status 1, one line, no traceback."""
        result = self(*args, env=env)
        assert result.code == 1, result
        assert "Traceback" not in result.err, result
        lines = result.err.strip().splitlines()
        assert len(lines) == 1, result
        assert lines[0].startswith("xt"), result
        return result

    def usage_fails(self, *args: str) -> Result:
        """Run a command line that is wrong in itself: status 2, one line, no traceback."""
        result = self(*args)
        assert result.code == 2, result
        assert "Traceback" not in result.err, result
        lines = result.err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("xt"), result
        return result

    def in_terminal(self, *args: str, columns: int = 80, answer: Optional[str] = None,
                    timeout: float = 60) -> Result:
        """Run ``xt`` with stdin and stdout on a pseudo-terminal ``columns`` wide (stderr
        stays a pipe), typing ``answer`` and Enter when given."""
        return run_in_terminal([sys.executable, "-m", "xetrack_c", *args], self.cwd, columns,
                               answer, timeout)


def make_db(path: str) -> None:
    """Two runs in table "default" (run-a: n=0..3, run-b: n=4..6) and one row in "other"."""
    from xetrack_c import Tracker

    tracker = Tracker(path, params={"model": "alpha"}, track_id="run-a")
    for n in range(4):
        tracker.log({"n": n, "acc": n / 10, "name": f"item{n}"})
    tracker.close()
    tracker = Tracker(path, params={"model": "beta"}, track_id="run-b")
    for n in range(4, 7):
        tracker.log({"n": n, "acc": n / 10, "name": f"item{n}" if n != 5 else "item4"})
    tracker.close()
    other = Tracker(path, table="other", track_id="run-c")
    other.log({"score": 42})
    other.close()


# Fixtures of the xt tests (loaded for every test module through conftest's pytest_plugins).
@pytest.fixture
def xt(tmp_path: Path) -> Xt:
    return Xt(tmp_path)


@pytest.fixture
def db(tmp_path: Path) -> str:
    path = str(tmp_path / "track.db")
    make_db(path)
    return path
