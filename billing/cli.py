"""The ``billing`` command."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from billing import __version__
from billing.domain import _checks
from billing.domain.errors import BillingError
from billing.domain.periods import BillingCalendar, Interval

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


@app.command()
def calendar(
    anchor: Annotated[
        str, typer.Option(help="The first period's start, ISO 8601 with an offset.")
    ] = "2026-01-31T12:00:00-03:00",
    interval: Annotated[str, typer.Option(help="day, week, month or year.")] = "month",
    count: Annotated[int, typer.Option(help="Intervals per period.")] = 1,
    timezone: Annotated[
        str, typer.Option(help="The customer's IANA timezone.")
    ] = "America/Santiago",
    periods: Annotated[int, typer.Option(help="How many periods to show.")] = 12,
) -> None:
    """Print the billing periods of an anchor: month ends, leap years and DST included."""
    console = Console()
    try:
        start = _checks.aware("anchor", datetime.fromisoformat(anchor))
        cal = BillingCalendar(start, Interval.of(interval, count), _checks.timezone(timezone))
        _checks.integer("periods", periods, minimum=1)
    except ValueError as exc:
        message = str(exc) if isinstance(exc, BillingError) else f"anchor: {exc}"
        console.print(f"[red]error:[/red] {message}")
        raise typer.Exit(code=2) from None
    table = Table(title=f"Every {cal.interval} from {start.isoformat()} in {timezone}")
    for column in ("#", "start (local)", "end (local)", "days", "hours"):
        table.add_column(column, justify="right" if column in ("#", "days", "hours") else "left")
    for k in range(periods):
        period = cal.period(k)
        local_start, local_end = (
            period.start.astimezone(cal.timezone),
            period.end.astimezone(cal.timezone),
        )
        table.add_row(
            str(k),
            local_start.isoformat(),
            local_end.isoformat(),
            str((local_end.date() - local_start.date()).days),
            f"{period.duration.total_seconds() / 3600:g}",
        )
    console.print(table)


def main() -> None:
    """Entry point of the ``billing`` console script."""
    app()
