"""The current git commit of a repository, for ``Tracker(git_root=...)``.

``git_root`` may be any directory inside a work tree (its top, a subdirectory, ``'..'``),
absolute or relative to the current directory, as in xetrack: git finds the repository
from there. That directory alone decides which repository: the variables git uses to be
pointed elsewhere (``GIT_DIR``, ``GIT_WORK_TREE``, ..., set inside git hooks and by some
tools) are not passed on.
"""

from __future__ import annotations

import os
import subprocess
import warnings
from typing import Dict, Optional

# Variables that make git use another repository than the one found from git_root.
_REPOSITORY_VARIABLES = frozenset({
    "GIT_DIR", "GIT_WORK_TREE", "GIT_COMMON_DIR", "GIT_INDEX_FILE", "GIT_OBJECT_DIRECTORY",
    "GIT_ALTERNATE_OBJECT_DIRECTORIES", "GIT_NAMESPACE", "GIT_PREFIX",
})


def _git_environment() -> Dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in _REPOSITORY_VARIABLES}


def commit_hash(git_root: str) -> Optional[str]:
    """Return ``git rev-parse HEAD`` of the repository ``git_root`` is in, or None with a
    warning when it is not in one (or git is not installed): as xetrack, the run goes on
    without ``git_commit_hash``, but it is not lost silently.

    Raises:
        ValueError: ``git_root`` does not exist (a typo, most likely).
    """
    if not os.path.isdir(os.fspath(git_root)):
        raise ValueError(f"git_root={git_root!r} is not a directory: pass the repository's "
                         "directory or one below it, or leave git_root unset")
    try:
        out = subprocess.run(
            ["git", "-C", os.fspath(git_root), "rev-parse", "HEAD"],
            check=True,
            capture_output=True,
            text=True,
            env=_git_environment(),
        )
    except FileNotFoundError:
        warnings.warn("git_root= needs the git executable on PATH: git_commit_hash is not "
                      "recorded", UserWarning, stacklevel=3)
        return None
    except subprocess.CalledProcessError as exc:
        warnings.warn(
            f"git_root={git_root!r} is not inside a git repository with a commit "
            f"({exc.stderr.strip()}): git_commit_hash is not recorded; pass the repository's "
            "directory or one below it, or leave git_root unset", UserWarning, stacklevel=3)
        return None
    return out.stdout.strip()
