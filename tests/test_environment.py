"""``Tracker(log_environment=True)``: host, Python, package versions and git commit as params
of every row."""

from __future__ import annotations

import platform
import shutil
import socket
import subprocess
from importlib import metadata
from pathlib import Path

import pytest

from xetrack_c import Reader, Tracker

GIT = shutil.which("git")


def test_recorded_on_every_row(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.chdir(tmp_path)  # not a git work tree: no commit
    path = str(tmp_path / "env.db")
    tracker = Tracker(path, params={"lr": 0.1}, log_environment=True)
    tracker.log({"loss": 1.0})
    tracker.log({"loss": 0.5})
    tracker.close()
    frame = Reader(path).to_df()
    assert len(frame) == 2
    assert set(frame["env_host"]) == {socket.gethostname()}
    assert set(frame["env_python"]) == {platform.python_version()}
    assert set(frame["env_numpy"]) == {metadata.version("numpy")}
    assert set(frame["env_pandas"]) == {metadata.version("pandas")}
    assert frame["env_xetrack_c"].notna().all()
    assert "git_commit_hash" not in frame.columns
    assert list(frame["lr"]) == [0.1, 0.1]


def test_off_by_default(tmp_path: Path):
    tracker = Tracker(str(tmp_path / "plain.db"))
    tracker.log({"loss": 1.0})
    assert not [name for name in tracker.to_df().columns if name.startswith("env_")]
    tracker.close()


def test_own_params_win(tmp_path: Path):
    tracker = Tracker(Tracker.IN_MEMORY, params={"env_host": "renamed"}, log_environment=True)
    assert tracker.params["env_host"] == "renamed"
    assert tracker.params["env_python"] == platform.python_version()
    tracker.close()


@pytest.mark.skipif(GIT is None, reason="git is not installed")
def test_git_commit_of_the_current_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    repo = tmp_path / "repo"
    repo.mkdir()
    for args in (["init", "-q"], ["-c", "user.name=t", "-c", "user.email=t@example.org",
                                  "commit", "-q", "--allow-empty", "-m", "first"]):
        subprocess.run([GIT, *args], cwd=repo, check=True, capture_output=True)
    head = subprocess.run([GIT, "rev-parse", "HEAD"], cwd=repo, check=True, capture_output=True,
                          text=True).stdout.strip()
    monkeypatch.chdir(repo)
    tracker = Tracker(str(tmp_path / "git.db"), log_environment=True)
    tracker.log({"loss": 1.0})
    tracker.close()
    assert list(Reader(str(tmp_path / "git.db")).to_df()["git_commit_hash"]) == [head]
