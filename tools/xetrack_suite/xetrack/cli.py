"""``xetrack.cli``: xetrack_c's ``xt`` under xetrack's module name.

Every public name of :mod:`xetrack_c.cli` is re-exported. The one adapter is ``app``:
xetrack's tests call ``typer.testing.CliRunner().invoke(app, args)``, so ``app`` is a
``typer`` command that takes every argument unparsed and hands it to
:func:`xetrack_c.cli.main`, whose exit status becomes the command's. ``typer`` is imported
only when ``app`` is first used; without it, only the tests that use ``app`` fail.
"""

from __future__ import annotations

from typing import Any

import xetrack_c.cli
from xetrack_c.cli import *  # noqa: F401,F403


def _typer_app() -> Any:
    """A typer application whose only command passes its arguments to ``xt``."""
    import typer

    # typer reads the command's (string) annotations in this module's namespace
    globals()["typer"] = typer
    application = typer.Typer(add_completion=False)

    @application.command(
        context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
        add_help_option=False,
    )
    def xt(ctx: typer.Context) -> None:
        """Run ``xt`` with the arguments as given."""
        status = xetrack_c.cli.main(list(ctx.args))
        if status:
            raise typer.Exit(code=status)

    return application


def __getattr__(name: str) -> Any:
    """``app`` (built on first use), else any other name of :mod:`xetrack_c.cli`."""
    if name == "app":
        application = _typer_app()
        globals()["app"] = application
        return application
    return getattr(xetrack_c.cli, name)
