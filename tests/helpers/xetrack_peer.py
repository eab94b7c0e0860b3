"""Finding an interpreter that can ``import xetrack`` (0.7), for the tests that move files
between xetrack_c and xetrack.

The interpreter running the tests is tried first, then the one named by ``$XETRACK_PYTHON``.
No path on any particular machine is assumed, so a skipped test says what to set, not where
it looked.
"""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Dict, Optional

ENV_VAR = "XETRACK_PYTHON"


def skip_reason() -> str:
    """Why a test that needs xetrack 0.7 skips, and how to run it."""
    return (f"xetrack 0.7 is not importable: set {ENV_VAR} to an interpreter that has "
            f"xetrack 0.7 (or install xetrack==0.7.* here)")


def find_xetrack_python(env: Optional[Dict[str, str]] = None) -> Optional[str]:
    """The first of this interpreter and ``$XETRACK_PYTHON`` that imports xetrack, or None.

    Args:
        env: the environment the child runs with (it must find this worktree's xetrack_c).
    """
    for python in (sys.executable, os.environ.get(ENV_VAR, "")):
        if not python or not os.path.exists(python):
            continue
        proc = subprocess.run([python, "-c", "import xetrack, xetrack.reader"], env=env,
                              capture_output=True, timeout=120)
        if proc.returncode == 0:
            return python
    return None
