"""What ``Tracker(log_environment=True)`` records: where and with what a run ran.

The values become params of the run, so every row carries them (as ``git_commit_hash`` does
with ``git_root=``) and a plain ``Reader.to_df()`` or ``xt head`` shows them: ``env_host``,
``env_python``, ``env_xetrack_c``, ``env_numpy``, ``env_pandas`` (each package's installed
version, left out when it is not installed) and ``git_commit_hash`` when the current directory is in a
git work tree.
"""

from __future__ import annotations

import os
import platform
import socket
import subprocess
from typing import Dict, Optional

# Packages whose versions are recorded, as env_<name>.
PACKAGES = ("xetrack_c", "numpy", "pandas")


def _version(package: str) -> Optional[str]:
    """The installed version of ``package``, read from its metadata (nothing is imported)."""
    from importlib import metadata

    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:  # not installed (or run from a source tree)
        return None


def _git_commit(directory: str) -> Optional[str]:
    """HEAD of the git work tree ``directory`` is in; None outside one or without git."""
    from xetrack_c._git import _git_environment

    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=directory, capture_output=True,
                             text=True, timeout=10, env=_git_environment(), check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    commit = out.stdout.strip()
    return commit if out.returncode == 0 and commit else None


def environment_params(directory: Optional[str] = None) -> Dict[str, str]:
    """The environment as params: host, Python, package versions, git commit."""
    params = {"env_host": socket.gethostname(),
              "env_python": platform.python_version()}
    for package in PACKAGES:
        version = _version(package)
        if version is not None:
            params[f"env_{package}"] = version
    commit = _git_commit(directory or os.getcwd())
    if commit is not None:
        params["git_commit_hash"] = commit
    return params
