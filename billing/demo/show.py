"""Showing what the demo did: rich tables on a console, or one JSON document."""

from __future__ import annotations

from collections import defaultdict
from typing import Any
from zoneinfo import ZoneInfo

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from billing.demo import story
from billing.demo.play import Line, Outcome, shown
from billing.domain.money import Money
from billing.reports import print_report
from billing.services.audit import Books


def _zone(customer: str | None) -> ZoneInfo:
    for c in story.CUSTOMERS:
        if c.id == customer:
            return ZoneInfo(c.timezone)
    return story.SANTIAGO


def _amount(minor: int, currency: str) -> str:
    return shown(Money.from_minor(minor, currency))


def render(outcome: Outcome, console: Console) -> None:
    """Print the timeline, a table per gateway, the notifications, the audit, the report's
    summary and where the report is."""
    start, end = (moment.astimezone(story.SANTIAGO) for moment in (outcome.start, outcome.end))
    console.print(
        f"[bold]{story.MONTHS} months of billing[/bold] on a test clock, {start:%Y-%m-%d} to "
        f"{end:%Y-%m-%d}: the real QVO, Openpay, Khipu and Payvalida adapters, talking HTTP to "
        "their fake servers on loopback."
    )
    timeline = Table(title="What happened", title_justify="left", expand=False)
    for column in ("date", "customer", "what"):
        timeline.add_column(column, no_wrap=column != "what")
    for entry in outcome.timeline:
        day = entry.at.astimezone(_zone(entry.customer)).date().isoformat()
        who = f"{entry.customer} ({entry.gateway})" if entry.gateway else entry.customer or ""
        text = escape(entry.text)
        timeline.add_row(day, who, f"[italic cyan]{text}[/italic cyan]" if entry.story else text)
    console.print(timeline)
    for gateway in story.GATEWAYS:
        console.print(_gateway_table(gateway, outcome.gateways.get(gateway, [])))
    console.print(_notifications_table(outcome))
    if outcome.report is not None:
        print_report(outcome.report, console)
    console.print(f"Report: {outcome.index}", soft_wrap=True)
    console.print(f"Database: {outcome.database}", soft_wrap=True)
    audit = outcome.audit
    if audit is not None and audit.balanced:
        console.print(
            "[bold green]Audit: balanced[/bold green] (engine.audit(): every money rule holds "
            "for every customer and currency)"
        )
    elif audit is not None:
        console.print(f"[bold red]Audit: {len(audit.findings)} finding(s)[/bold red]")
        for finding in audit.findings:
            console.print(f"  {escape(str(finding))}", soft_wrap=True)
    console.print(
        f"Done in {outcome.seconds:.1f} s ({outcome.stops} stops of the test clock); "
        "every server, thread and connection it started is stopped."
    )


def _gateway_table(gateway: str, lines: list[Line]) -> Table:
    table = Table(title=story.TITLES[gateway], title_justify="left")
    for column in ("customer", "now", "invoices", "invoiced", "collected", "refunded"):
        table.add_column(column, justify="left" if column in ("customer", "now") else "right")
    totals: defaultdict[str, list[int]] = defaultdict(lambda: [0, 0, 0, 0, 0])
    for line in lines:
        books = line.books
        table.add_row(
            line.customer,
            f"{line.plan}, {line.status}",
            f"{line.paid}/{line.invoices} paid",
            _amount(books.invoiced, line.currency),
            _amount(books.captured, line.currency),
            _amount(books.refunded, line.currency),
        )
        total = totals[line.currency]
        for k, value in enumerate(
            (line.invoices, line.paid, books.invoiced, books.captured, books.refunded)
        ):
            total[k] += value
    for currency, (count, paid, invoiced, captured, refunded) in totals.items():
        table.add_row(
            "[bold]total[/bold]",
            "",
            f"{paid}/{count} paid",
            _amount(invoiced, currency),
            _amount(captured, currency),
            _amount(refunded, currency),
        )
    return table


def _notifications_table(outcome: Outcome) -> Table:
    table = Table(
        title="Notifications POSTed by the fakes to billing.web's endpoint", title_justify="left"
    )
    columns = ("gateway", "received", "answered 200", "inbox", "links paid", "settled by them")
    for column in columns:
        table.add_column(column, justify="left" if column in ("gateway", "inbox") else "right")
    for item in outcome.notifications:
        table.add_row(
            item.gateway,
            str(item.posted),
            str(item.answered_ok),
            ", ".join(f"{count} {status}" for status, count in item.outcomes.items()),
            str(item.links_paid),
            str(item.settled_by_notification),
        )
    return table


def document(outcome: Outcome) -> dict[str, Any]:
    """The same, as one JSON document (amounts as decimal strings in major units)."""

    def books(line: Line) -> dict[str, str]:
        b: Books = line.books
        return {
            name: Money.from_minor(getattr(b, name), line.currency).to_decimal_string()
            for name in (
                "invoiced",
                "captured",
                "refunded",
                "open",
                "written_off",
                "credit_balance",
            )
        }

    audit = outcome.audit
    return {
        "database": str(outcome.database),
        "report": None if outcome.index is None else str(outcome.index),
        "start": outcome.start.isoformat(),
        "end": outcome.end.isoformat(),
        "seconds": round(outcome.seconds, 3),
        "stops": outcome.stops,
        "timeline": [
            {
                "at": entry.at.isoformat(),
                "customer": entry.customer,
                "gateway": entry.gateway,
                "what": entry.text,
                "story": entry.story,
            }
            for entry in outcome.timeline
        ],
        "gateways": {
            gateway: [
                {
                    "customer": line.customer,
                    "plan": line.plan,
                    "status": line.status,
                    "invoices": line.invoices,
                    "paid": line.paid,
                    "currency": line.currency,
                    **books(line),
                }
                for line in lines
            ]
            for gateway, lines in outcome.gateways.items()
        },
        "notifications": [
            {
                "gateway": item.gateway,
                "received": item.posted,
                "answered_ok": item.answered_ok,
                "inbox": item.outcomes,
                "links_paid": item.links_paid,
                "settled_by_notification": item.settled_by_notification,
            }
            for item in outcome.notifications
        ],
        "audit": {
            "balanced": audit is not None and audit.balanced,
            "findings": [] if audit is None else [str(f) for f in audit.findings],
        },
    }
