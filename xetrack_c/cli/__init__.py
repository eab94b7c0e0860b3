"""``xt``: the command line of xetrack_c (entry point ``xetrack_c.cli:main``).

Public: :func:`main`, and xetrack's command functions (``head``, ``tail``, ``copy``, ...,
``cache_ls``, ``assets_ls``, ``hist``, ``describe``: see ``functions``), which run the
matching command from Python. The modules under it are private:

- ``commands``: one function per command, and the dispatch that runs it;
- ``parser``: the argument parser (builds only the sub-parser of the command being run);
- ``db``: database access through the C core, without pandas or numpy;
- ``render``: Markdown tables and JSON;
- ``runs``, ``stats``, ``plot``, ``merge_db`` (``xt copy``): the commands that need more than one query;
- ``functions``: the command functions, loaded on first use.

Nothing here is imported by ``import xetrack_c``; :func:`main` loads the commands on its
first call.
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

__all__ = ["main", "CommandError", "head", "tail", "columns", "copy", "delete", "set", "ls",
           "sql", "cache_delete", "cache_ls", "export", "assets_delete", "assets_ls", "hist",
           "scatter", "describe", "top", "bottom"]


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run ``xt`` with ``argv`` (default: ``sys.argv[1:]``); return the exit status."""
    from xetrack_c.cli.commands import main as run_command

    return run_command(argv)


def __getattr__(name: str) -> Any:
    """xetrack's command functions, loaded on first use (``xt`` itself never needs them)."""
    if name == "CommandError" or name in __all__[2:]:
        from xetrack_c.cli import functions

        value = functions.CommandError if name == "CommandError" else functions.FUNCTIONS[name]
        globals()[name] = value
        return value
    raise AttributeError(f"module 'xetrack_c.cli' has no attribute {name!r}")
