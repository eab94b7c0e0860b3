"""``xt``: the command line of xetrack_c (entry point ``xetrack_c.cli:main``).

Public: :func:`main`. The modules under it are private:

- ``commands``: one function per command, and the dispatch that runs it;
- ``parser``: the argument parser (builds only the sub-parser of the command being run);
- ``db``: database access through the C core, without pandas or numpy;
- ``render``: Markdown tables and JSON;
- ``runs``, ``stats``, ``plot``, ``copy``: the commands that need more than one query.

Nothing here is imported by ``import xetrack_c``; :func:`main` loads the commands on its
first call.
"""

from __future__ import annotations

from typing import Optional, Sequence

__all__ = ["main"]


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run ``xt`` with ``argv`` (default: ``sys.argv[1:]``); return the exit status."""
    from xetrack_c.cli.commands import main as run_command

    return run_command(argv)
