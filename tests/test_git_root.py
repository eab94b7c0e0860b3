"""``Tracker(git_root=...)``: any directory inside a work tree, relative or absolute, records
that repository's HEAD in ``git_commit_hash``; the directory alone decides the repository."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import read_rows

from xetrack_c import Tracker

GIT = shutil.which("git")
pytestmark = pytest.mark.skipif(GIT is None, reason="git is not installed")
GIT_ENV = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.com",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.com"}


def make_repo(path: Path, message: str) -> str:
    """A repository at ``path`` with one commit and a subdirectory ``a/b``; returns HEAD."""
    env = {**os.environ, **GIT_ENV}
    path.mkdir(parents=True)
    subprocess.run([GIT, "init", "-q", str(path)], check=True, env=env)
    (path / "a" / "b").mkdir(parents=True)
    (path / "a" / "b" / "f.txt").write_text(message)
    subprocess.run([GIT, "-C", str(path), "add", "."], check=True, env=env)
    subprocess.run([GIT, "-C", str(path), "commit", "-q", "-m", message], check=True, env=env)
    return subprocess.run([GIT, "-C", str(path), "rev-parse", "HEAD"], check=True, env=env,
                          capture_output=True, text=True).stdout.strip()


@pytest.mark.parametrize("cwd,git_root", [
    ("a/b", ".."),  # xetrack's own usage: a script one level below the top
    ("a/b", "../.."),
    ("a/b", "."),
    ("", "a/b"),  # relative, below the top
    ("", "a"),
])
def test_relative_git_root_inside_the_work_tree(tmp_path, monkeypatch, cwd, git_root) -> None:
    head = make_repo(tmp_path / "repo", "one")
    monkeypatch.chdir(tmp_path / "repo" / cwd)
    db = str(tmp_path / "track.db")
    with Tracker(db, git_root=git_root) as tracker:
        assert tracker.params["git_commit_hash"] == head
        tracker.log({"x": 1})
    assert read_rows(db)[0]["git_commit_hash"] == head


def test_absolute_subdirectory(tmp_path) -> None:
    head = make_repo(tmp_path / "repo", "one")
    with Tracker(Tracker.IN_MEMORY, git_root=str(tmp_path / "repo" / "a" / "b")) as tracker:
        assert tracker.params["git_commit_hash"] == head


def test_nested_repository_below_another(tmp_path) -> None:
    outer = make_repo(tmp_path / "outer", "outer")
    inner = make_repo(tmp_path / "outer" / "vendor" / "inner", "inner")
    assert outer != inner
    with Tracker(Tracker.IN_MEMORY, git_root=str(tmp_path / "outer" / "vendor" / "inner" / "a")) as t:
        assert t.params["git_commit_hash"] == inner
    with Tracker(Tracker.IN_MEMORY, git_root=str(tmp_path / "outer" / "a")) as t:
        assert t.params["git_commit_hash"] == outer


def test_git_dir_in_the_environment_does_not_redirect(tmp_path, monkeypatch) -> None:
    wanted = make_repo(tmp_path / "wanted", "wanted")
    other = make_repo(tmp_path / "other", "other")
    # As inside a git hook of another repository.
    monkeypatch.setenv("GIT_DIR", str(tmp_path / "other" / ".git"))
    monkeypatch.setenv("GIT_WORK_TREE", str(tmp_path / "other"))
    with Tracker(Tracker.IN_MEMORY, git_root=str(tmp_path / "wanted" / "a")) as tracker:
        assert tracker.params["git_commit_hash"] == wanted != other


def test_a_missing_directory_is_a_clear_error(tmp_path) -> None:
    db = tmp_path / "track.db"
    with pytest.raises(ValueError, match="git_root='.*missing' is not a directory"):
        Tracker(str(db), git_root=str(tmp_path / "missing"))
    assert not db.exists()


def test_a_directory_outside_any_repository_warns_and_records_nothing(tmp_path, monkeypatch):
    # As xetrack (a script passing git_root='..' from a repository's top runs unchanged),
    # but said: a warning names the directory, and no git_commit_hash column is made.
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path))  # wherever tmp_path lives
    (tmp_path / "plain").mkdir()
    db = tmp_path / "track.db"
    with pytest.warns(UserWarning, match="git_root='.*plain' is not inside a git repository"):
        tracker = Tracker(str(db), git_root=str(tmp_path / "plain"))
    row = tracker.log({"a": 1})
    tracker.close()
    assert "git_commit_hash" not in row and row["a"] == 1
    assert [r["a"] for r in read_rows(str(db))] == [1]
