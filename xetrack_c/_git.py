"""The current git commit of a repository, for ``Tracker(git_root=...)``."""

from __future__ import annotations

import subprocess


def commit_hash(git_root: str) -> str:
    """Return ``git rev-parse HEAD`` in ``git_root``.

    Raises:
        ValueError: ``git_root`` is not inside a git repository with a commit, or git is
            not installed.
    """
    try:
        out = subprocess.run(
            ["git", "-C", git_root, "rev-parse", "HEAD"],
            check=True,
            capture_output=True,
            text=True,
        )
    except FileNotFoundError as exc:
        raise ValueError("git_root= needs the git executable on PATH") from exc
    except subprocess.CalledProcessError as exc:
        raise ValueError(
            f"git_root={git_root!r} is not a git repository with a commit: {exc.stderr.strip()}"
        ) from exc
    return out.stdout.strip()
