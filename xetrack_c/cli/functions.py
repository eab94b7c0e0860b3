"""xetrack's ``xetrack.cli`` command functions (``head``, ``tail``, ``copy``, ...) as Python
callables that run the matching ``xt`` command.

xetrack 0.7 defines each command as a function of ``xetrack.cli`` that a script may import
and call (``from xetrack.cli import tail; tail("results.db", n=3)``). Each function here
takes the same arguments, in the same order, turns them into the command line of ``xt``
and runs it in this process: the output goes to standard output as the command prints it.
An option is passed on only when given; ``True``/``False`` become ``--name``/``--no-name``
and a list repeats its option. A command that fails (exit status not 0) raises
:class:`CommandError` after ``xt`` has printed its message to standard error.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Callable, Dict, List, Sequence, Tuple


class CommandError(RuntimeError):
    """An ``xt`` command run from Python failed; ``status`` is its exit status."""

    def __init__(self, argv: "List[str]", status: int) -> None:
        super().__init__(f"xt {' '.join(argv[:2])} failed with exit status {status} "
                         "(its message is above, on standard error)")
        self.argv = argv
        self.status = status


# function name -> (the xt command words, xetrack's positional parameters, in order)
COMMANDS: "Dict[str, Tuple[Tuple[str, ...], Tuple[str, ...]]]" = {
    "head": (("head",), ("db",)),
    "tail": (("tail",), ("db",)),
    "columns": (("columns",), ("db",)),
    "copy": (("copy",), ("source", "target")),
    "delete": (("delete",), ("db", "track_id")),
    "set": (("set",), ("db", "key", "value")),
    "ls": (("ls",), ("db", "column")),
    "sql": (("sql",), ("db", "query")),
    "cache_delete": (("cache", "delete"), ("cache_path", "track_id")),
    "cache_ls": (("cache", "ls"), ("cache_path",)),
    "export": (("assets", "export"), ("db", "key", "output")),
    "assets_delete": (("assets", "delete"), ("db", "asset")),
    "assets_ls": (("assets", "ls"), ("db",)),
    "hist": (("plot", "hist"), ("db", "column")),
    "scatter": (("plot", "scatter"), ("db", "x", "y")),
    "describe": (("stats", "describe"), ("db",)),
    "top": (("stats", "top"), ("db", "column")),
    "bottom": (("stats", "bottom"), ("db", "column")),
}


def command_line(name: str, args: "Sequence[Any]", options: "Dict[str, Any]") -> "List[str]":
    """The ``xt`` arguments for ``name(*args, **options)``, xetrack's signature."""
    words, positional = COMMANDS[name]
    if len(args) > len(positional):
        raise TypeError(f"{name}() takes at most {len(positional)} positional arguments "
                        f"({', '.join(positional)}), {len(args)} given")
    values = dict(zip(positional, args, strict=False))  # checked above: args is not longer
    for key in positional[len(args):]:
        if key in options:
            values[key] = options.pop(key)
    argv = list(words)
    for key in positional:
        value = values.get(key)
        if value is None:
            if key == "column" and name == "ls":
                continue  # xt ls DB lists the columns
            raise TypeError(f"{name}() is missing its argument {key!r}")
        argv.append(str(value))
    for key, value in options.items():
        if value is None:
            continue
        flag = "--" + key.replace("_", "-")
        if value is True:
            argv.append(flag)
        elif value is False:
            argv.append("--no-" + key.replace("_", "-"))
        elif isinstance(value, (list, tuple)):
            for item in value:
                argv += [flag, str(item)]
        else:
            argv += [flag, str(value)]
    return argv


def _make(name: str) -> "Callable[..., None]":
    def command(*args: "Any", **options: "Any") -> None:
        from xetrack_c.cli.commands import main

        argv = command_line(name, args, options)
        status = main(argv)
        if status:
            raise CommandError(argv, status)

    words, positional = COMMANDS[name]
    command.__name__ = command.__qualname__ = name
    command.__doc__ = (f"Run ``xt {' '.join(words)}`` with {', '.join(positional)} and the "
                       "options given as keywords (xetrack's signature); raise CommandError "
                       "if it fails.")
    return command


FUNCTIONS: "Dict[str, Callable[..., None]]" = {name: _make(name) for name in COMMANDS}
