"""Git facts about the code being run, at xetrack's public path ``xetrack.git``.

Both functions answer quietly: None or an empty list when there is no repository or no git,
so a script records what it can. ``Tracker(git_root=...)`` is stricter and raises instead
(see :mod:`xetrack_c._git`).
"""

from __future__ import annotations

import subprocess
from typing import List, Optional

__all__ = ["get_commit_hash", "get_commit_tags"]


def _git(args: List[str], git_root: str) -> Optional[str]:
    """The output of ``git <args>`` run in ``git_root``, or None if git fails or is missing."""
    try:
        done = subprocess.run(["git", *args], cwd=git_root, check=True, capture_output=True, text=True)
    except (subprocess.CalledProcessError, FileNotFoundError, NotADirectoryError):
        return None
    return done.stdout


def get_commit_hash(path: Optional[str] = None, git_root: str = ".") -> Optional[str]:
    """The 40-digit hash of the current commit of the repository at ``git_root``; with
    ``path`` (relative to ``git_root``), of the last commit that changed that path. None when
    ``git_root`` is not in a repository, git is not installed, or no commit touched ``path``.
    """
    if path:
        out = _git(["log", "-1", "--format=%H", "--", path], git_root)  # git runs in git_root
    else:
        out = _git(["rev-parse", "HEAD"], git_root)
    commit = (out or "").strip()
    return commit or None


def get_commit_tags(git_root: str = ".") -> List[str]:
    """The tags that point at the current commit of the repository at ``git_root`` (empty
    when there are none or there is no repository)."""
    out = _git(["tag", "--points-at", "HEAD"], git_root)
    return [tag for tag in out.splitlines() if tag] if out else []
