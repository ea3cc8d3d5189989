"""The ``billing`` command."""

from __future__ import annotations

from typing import Annotated

import typer

from billing import __version__

app = typer.Typer(
    name="billing",
    help="A subscription billing engine: plans, periods, proration, taxes, credit, debt, dunning.",
    no_args_is_help=True,
    add_completion=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"billing {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version."),
    ] = False,
) -> None:
    """A subscription billing engine for Python."""


def main() -> None:
    """Entry point of the ``billing`` console script."""
    app()
