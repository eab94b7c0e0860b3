"""A task module that takes 1.5 s to import in a process backend's warm server (and no time
anywhere else): tasks with a shorter timeout time out while the server is still busy."""

from __future__ import annotations

import os
import sys
import time

if "--server" in sys.argv:
    time.sleep(1.5)


def where(config):
    """(ppid, x) of the worker that ran this task."""
    return os.getppid(), config["x"]
