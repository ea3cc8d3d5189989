"""A report as rich tables, each narrow enough for an 80-column terminal.

The same rows feed the HTML page (:mod:`billing.reports.files`): :func:`sections` returns each
table as a title, column names and rows of text, so the console and the page never disagree.
"""

from __future__ import annotations

from dataclasses import dataclass

from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from billing.reports.model import BOOK_FIELDS, Report, money, percent

FINDINGS_SHOWN = 20
"""Audit findings listed (the count says how many there are)."""


@dataclass(frozen=True, slots=True)
class Section:
    """One table of a report, as text."""

    title: str
    columns: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]
    note: str = ""
    numeric: tuple[bool, ...] = ()
    """Per column: right-aligned (a figure) or not."""


def _count(value: int) -> str:
    return f"{value:,}"


def sections(report: Report) -> list[Section]:
    """Every table of the report, in order."""
    found: list[Section] = []
    if report.parameters:
        found.append(Section("Parameters", ("parameter", "value"), report.parameters))
    for currency in report.currencies:
        rows = tuple(
            (
                month.label,
                money(month.invoiced.get(currency, 0), currency),
                money(month.collected.get(currency, 0), currency),
                money(month.mrr.get(currency, 0), currency),
            )
            for month in report.months
        )
        moved = any(m.invoiced.get(currency) or m.collected.get(currency) for m in report.months)
        if not moved and not any(m.mrr.get(currency) for m in report.months):
            continue
        note = (
            "collected: payments captured, net of refunds; MRR: plan prices of active and "
            "past-due subscriptions, per month"
        )
        if not moved:
            note = (
                f"plans priced in {currency} are charged in another currency (UF plans in "
                "CLP): their MRR is here, their invoices and payments in that currency's table"
            )
        found.append(
            Section(
                f"{currency} by month",
                ("month", "invoiced", "collected", "MRR at end"),
                rows,
                note=note,
                numeric=(False, True, True, True),
            )
        )
    found.append(
        Section(
            "Subscriptions by month",
            ("month", "new", "churned", "paying at end", "churn rate"),
            tuple(
                (
                    month.label,
                    _count(month.new),
                    _count(month.churned),
                    _count(month.paying),
                    percent(month.churn_rate),
                )
                for month in report.months
            ),
            note="churn rate: churned / (live at the month's start + new in it)",
            numeric=(False, True, True, True, True),
        )
    )
    found.append(
        Section(
            "Invoices by status",
            ("status", "currency", "invoices", "total"),
            tuple(
                (row.status, row.currency, _count(row.count), money(row.total, row.currency))
                for row in report.invoices
            ),
            numeric=(False, False, True, True),
        )
    )
    dunning, churn = report.dunning, report.churn
    found.append(
        Section(
            "Dunning and churn",
            ("figure", "value"),
            (
                ("invoices that entered dunning", _count(dunning.entered)),
                ("recovered (paid)", _count(dunning.recovered)),
                ("still being collected", _count(dunning.collecting)),
                ("written off", _count(dunning.written_off)),
                ("voided into debt", _count(dunning.voided)),
                ("dunning recovery rate", percent(dunning.recovery_rate)),
                ("subscriptions live at the start", _count(churn.live_at_start)),
                ("new subscriptions", _count(churn.new)),
                ("churned (canceled or ended)", _count(churn.churned)),
                ("live at the end", _count(churn.live_at_end)),
                ("churn rate", percent(churn.rate)),
            ),
            note="entered dunning: had a failed payment attempt; churn rate: churned / "
            "(live at the start + new)",
            numeric=(False, True),
        )
    )
    if report.balances:
        found.append(
            Section(
                "Outstanding at the end",
                ("currency", "customer credit", "debt carried", "open invoices"),
                tuple(
                    (
                        b.currency,
                        money(b.credit, b.currency),
                        money(b.debt, b.currency),
                        money(b.open_invoices, b.currency),
                    )
                    for b in report.balances
                ),
                numeric=(False, True, True, True),
            )
        )
    audit = report.audit
    codes = tuple(audit.books)
    verdict = "balanced" if audit.balanced else f"NOT balanced: {len(audit.findings)} finding(s)"
    found.append(
        Section(
            f"Audit: {verdict}",
            ("books", *codes),
            tuple(
                (name.replace("_", " "), *(money(audit.books[c][name], c) for c in codes))
                for name in BOOK_FIELDS
            ),
            note="invoiced = captured + credit applied + open + written off, per customer "
            "and currency (engine.audit())",
            numeric=(False, *(True for _ in codes)),
        )
    )
    if audit.findings:
        shown = audit.findings[:FINDINGS_SHOWN]
        more = len(audit.findings) - len(shown)
        found.append(
            Section(
                "Audit findings",
                ("finding",),
                tuple((finding,) for finding in shown),
                note=f"and {more} more" if more else "",
            )
        )
    return found


def print_report(report: Report, console: Console) -> None:
    """Print ``report`` as rich tables (each fits 80 columns)."""
    console.print(f"[bold]{escape(report.title)}[/bold]")
    console.print(
        f"{report.start:%Y-%m-%d %H:%M} to {report.end:%Y-%m-%d %H:%M} UTC, by UTC month",
        style="dim",
    )
    for section in sections(report):
        table = Table(
            title=section.title,
            title_justify="left",
            title_style="bold",
            box=box.SIMPLE_HEAD,
            caption=section.note or None,
            caption_justify="left",
            caption_style="dim",
            padding=(0, 1),
        )
        numeric = section.numeric or tuple(False for _ in section.columns)
        for column, right in zip(section.columns, numeric, strict=True):
            table.add_column(column, justify="right" if right else "left", overflow="fold")
        for row in section.rows:
            table.add_row(*(escape(cell) for cell in row))
        console.print(table)
