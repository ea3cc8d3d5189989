"""How ``billing`` shows what happened: events in words, a scenario's story as a timeline, and
the progress of a long scenario run.

Built on the engine's public reading API (``engine.events()``, ``engine.invoices()``...) and on
the scenario report (:func:`billing.scenarios.run_scenario`); every table fits 80 columns
without cutting an instant, an amount or an error code.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime, tzinfo
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from rich import box
from rich.console import Console, Group
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from billing.bootstrap import open_engine
from billing.cli_support import instant, payload_money, zone_label
from billing.clock import SystemClock
from billing.config import Settings
from billing.domain.errors import BillingError
from billing.engine import Engine
from billing.scenarios import Scenario
from billing.store.unit_of_work import StoredEvent

__all__ = [
    "ScenarioProgress",
    "all_events",
    "describe_event",
    "render_scenario",
    "scenario_zone",
    "table_of",
    "timeline",
]


def all_events(
    engine: Engine, *, after: int = 0, pending_only: bool = False
) -> Iterator[StoredEvent]:
    """Every event recorded after sequence number ``after``, in order, a page at a time."""
    while batch := engine.events(after=after, limit=500, pending_only=pending_only):
        yield from batch
        after = batch[-1].seq


# -- events in words -----------------------------------------------------------------------------


def describe_event(
    event: StoredEvent, numbers: Mapping[str, str | None], zone: tzinfo = UTC
) -> str:
    """What an event says, in a few words with its amounts: ``plan oro -> platino: debt +16875
    CLP``, ``INV-000003 attempt 2: 59500 CLP declined (soft): insufficient_funds``."""
    p = event.payload

    def invoice(key: str = "invoice_id") -> str:
        value = p.get(key) or event.invoice_id
        return (numbers.get(str(value)) or str(value)) if value else "an invoice"

    def at(key: str) -> str:
        value = p.get(key)
        return instant(datetime.fromisoformat(value), zone) if isinstance(value, str) else ""

    def amount(key: str = "amount") -> str:
        return payload_money(p.get(key))

    name = event.name
    match name:
        case "subscription.created":
            text = f"subscribed to {p.get('plan_code')}"
            if p.get("trial_end"):
                text += f", trial until {at('trial_end')}"
            if p.get("start") and datetime.fromisoformat(str(p["start"])) != event.at:
                text += f", starting {at('start')}"
            return text
        case "subscription.trial_started":
            return f"trial started, until {at('trial_end')}"
        case "subscription.activated":
            return "active"
        case "subscription.renewed":
            period = p.get("period") or {}
            start = _date(period.get("start"), zone)
            end = _date(period.get("end"), zone)
            return f"renewed: period {int(p.get('period_index', 0)) + 1}, {start} to {end}"
        case "subscription.past_due":
            retry = f"next retry {at('retry_at')}" if p.get("retry_at") else "no retry left"
            return f"past due: {invoice()} unpaid, {retry}"
        case "subscription.unpaid":
            return f"unpaid: retries of {invoice()} ran out"
        case "subscription.paused":
            until = f" until {at('resume_at')}" if p.get("resume_at") else ""
            return f"paused{until}"
        case "subscription.resumed":
            return "resumed"
        case "subscription.cancel_scheduled":
            return f"cancellation scheduled for {at('cancel_at')}"
        case "subscription.canceled":
            return "canceled"
        case "subscription.ended":
            return "ended: its cycles ran out"
        case "subscription.plan_changed":
            parts = [
                f"{label} {amount(key)}"
                for key, label in (
                    ("debt_added", "debt +"),
                    ("debt_canceled", "debt canceled"),
                    ("credit_granted", "credit +"),
                    ("credit_held", "credit held"),
                )
                if _nonzero(p.get(key))
            ]
            parts = [part.replace("+ ", "+") for part in parts]
            changes = f": {', '.join(parts)}" if parts else ""
            return f"plan {p.get('from_plan')} -> {p.get('to_plan')}{changes}"
        case "subscription.debt_invoiced":
            return f"debt {amount()} moved to the new invoice"
        case "subscription.debt_written_off":
            return f"debt {amount()} written off"
        case "invoice.created":
            return f"{p.get('number') or invoice()} issued: {amount('total')}"
        case "invoice.paid":
            return f"{invoice()} paid"
        case "invoice.uncollectible":
            return f"{invoice()} uncollectible"
        case "invoice.voided":
            return f"{invoice()} voided"
        case "invoice.awaiting_payment_method":
            return f"{invoice()} open, waiting for a new payment method"
        case "payment.succeeded":
            return f"{invoice()} attempt {p.get('attempt')}: {amount()} paid"
        case "payment.failed":
            code, error = p.get("code"), p.get("error")
            codes = f"{code} ({error})" if code and error and code != error else code or error
            why = f": {codes}" if codes else ""
            decline = p.get("decline")
            return f"{invoice()} attempt {p.get('attempt')}: {amount()} declined ({decline}){why}"
        case "payment.pending":
            return f"{invoice()} attempt {p.get('attempt')}: {amount()} pending"
        case "payment.requires_action":
            return (
                f"{invoice()} attempt {p.get('attempt')}: {amount()} waits for the customer (link)"
            )
        case "payment.link_canceled":
            settled = p.get("invoice_status") or "settled"
            return f"{invoice()} attempt {p.get('attempt')}: link withdrawn ({settled} otherwise)"
        case "payment.unknown":
            return (
                f"{invoice()} attempt {p.get('attempt')}: {amount()} outcome unknown, to reconcile"
            )
        case "payment.refunded":
            return f"refund of {amount()} on {invoice()}"
        case "refund.failed":
            code = f": {p.get('code')}" if p.get("code") else ""
            return f"refund of {amount()} on {invoice()} failed{code}"
        case "credit.granted":
            source = p.get("source") or "grant"
            reason = p.get("reason")
            why = f"{source}: {reason}" if reason and reason != source else str(source)
            return f"credit +{amount()} ({why})"
        case "credit.withdrawn":
            return f"credit -{amount()} taken back ({p.get('reason') or 'refunded'})"
        case "credit.forfeited":
            return f"held credit {amount()} forfeited ({invoice()} was not paid)"
    return name


def _nonzero(value: Any) -> bool:
    return isinstance(value, dict) and int(value.get("minor", 0)) != 0


def _date(value: Any, zone: tzinfo) -> str:
    if not isinstance(value, str):
        return "?"
    return datetime.fromisoformat(value).astimezone(zone).date().isoformat()


# -- a scenario's report as tables ---------------------------------------------------------------


def scenario_zone(scenario: Scenario) -> tzinfo:
    """The zone a scenario's instants are shown in: its customers' timezone when they share
    one, else UTC."""
    zones = {customer.timezone for customer in scenario.customers}
    return ZoneInfo(zones.pop()) if len(zones) == 1 else UTC


def table_of(
    title: str,
    *columns: str,
    right: Sequence[str] = (),
    whole: Sequence[str] = (),
    widths: Mapping[str, int] | None = None,
) -> Table:
    """A table for an 80-column terminal: one space between columns; the ``whole`` columns
    (instants, amounts, codes) never wrap, those given ``widths`` have that width, and the
    others share the rest, wrapping between words (an over-long word, such as an id, folds
    onto the next line rather than being cut)."""
    table = Table(
        title=title,
        title_justify="left",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
        collapse_padding=True,
    )
    for column in columns:
        table.add_column(
            column,
            overflow="fold",
            no_wrap=column in whole,
            width=(widths or {}).get(column),
            justify="right" if column in right else "left",
        )
    return table


def render_scenario(
    report: Mapping[str, Any], scenario: Scenario, events: Sequence[StoredEvent]
) -> Group:
    """A scenario's story: what happened, in time order (the events timeline), then the
    invoices, each subscription's state with what it still owes, and each customer's credit."""
    zone = scenario_zone(scenario)
    where = zone_label(zone)
    header = Text.assemble(
        (report["scenario"], "bold"),
        f"\nfrom {instant(scenario.start, zone)} to {instant(scenario.until, zone)}; "
        f"times in {where}",
    )
    numbers = {
        str(event.payload.get("invoice_id")): str(event.payload.get("number"))
        for event in events
        if event.name == "invoice.created"
    }
    return Group(
        header,
        timeline(events, numbers, zone),
        _invoices(report, zone),
        _subscriptions(report, zone),
        _customers(report),
    )


def timeline(events: Sequence[StoredEvent], numbers: Mapping[str, str], zone: tzinfo) -> Table:
    """Every event in time order, the instant written once for the events at one instant."""
    table = table_of("What happened", "when", "sub", "what")
    table.columns[0].no_wrap = True
    previous = ("", "")
    for event in sorted(events, key=lambda e: (e.at, e.seq)):
        when = instant(event.at, zone)
        who = event.subscription_id or event.customer_id or ""
        table.add_row(
            "" if when == previous[0] else when,
            "" if (when, who) == previous else who,
            describe_event(event, numbers, zone),
        )
        previous = (when, who)
    return table


def _invoices(report: Mapping[str, Any], zone: tzinfo) -> Table:
    table = table_of(
        "Invoices", "number", "sub", "period", "lines", "total", "status", right=("total",)
    )
    for invoice in report["invoices"]:
        start, end = invoice["period_start"], invoice["period_end"]
        period = (
            f"{_date(start, zone)} to {_date(end, zone)}" if start and end else invoice["reason"]
        )
        lines = "\n".join(f"{line['kind']} {line['amount']}" for line in invoice["lines"])
        status = invoice["status"]
        if Decimal(invoice["amount_due"]):
            status += f"\ndue {invoice['amount_due']}"
        table.add_row(
            invoice["number"],
            invoice["subscription"] or "",
            period,
            lines,
            f"{invoice['total']} {invoice['currency']}",
            status,
        )
    return table


def _subscriptions(report: Mapping[str, Any], zone: tzinfo) -> Table:
    """Each subscription now, with what it owes: the open invoices' amounts due, and apart from
    them the debt carried to its next invoice (never a bare "debt 0" beside an open invoice)."""
    table = table_of(
        "Subscriptions now",
        "sub",
        "plan",
        "status",
        "current period",
        "owed on open invoices",
        "debt for next invoice",
    )
    currencies = {i["subscription"]: i["currency"] for i in report["invoices"]}
    for sub in report["subscriptions"]:
        currency = currencies.get(sub["ref"], "")
        due = [
            i
            for i in report["invoices"]
            if i["subscription"] == sub["ref"] and Decimal(i["amount_due"])
        ]
        total = sum((Decimal(i["amount_due"]) for i in due), Decimal(0))
        owed = f"{total} {currency}\n({', '.join(i['number'] for i in due)})" if due else "nothing"
        start, end = sub["current_period_start"], sub["current_period_end"]
        period = f"{_date(start, zone)} to {_date(end, zone)}" if start and end else ""
        status = sub["status"]
        if sub.get("cancel_at_period_end") and status not in ("canceled", "ended"):
            status += "\n(cancels at period end)"
        table.add_row(
            sub["ref"], sub["plan"], status, period, owed, f"{sub['debt']} {currency}".strip()
        )
    return table


def _customers(report: Mapping[str, Any]) -> Table:
    table = table_of("Customers now", "customer", "credit balance", right=("credit balance",))
    for customer in report["customers"]:
        table.add_row(customer["ref"], f"{customer['credit_balance']} {customer['currency']}")
    return table


# -- progress of a long run ----------------------------------------------------------------------


@dataclass
class _Position:
    at: datetime | None = None
    events: int = 0


class ScenarioProgress:
    """Shows how far a scenario run is, on standard error, while it runs on ``url``.

    A thread reads the run's database through its own engine (only reading, a page of new
    events at a time) and shows the instant the scenario's clock has reached, between
    ``start`` and ``until``. It shows nothing on a console that is not a terminal.
    """

    def __init__(
        self, url: str, start: datetime, until: datetime, console: Console, *, every: float = 0.25
    ) -> None:
        self.url = url
        self.start = start
        self.until = until
        self.console = console
        self.every = every
        self.position = _Position()
        self._after = 0
        self._stop = threading.Event()
        self._engine: Engine | None = None

    def fraction(self) -> float:
        """How far the run's clock is between ``start`` and ``until``, from 0 to 1."""
        if self.position.at is None:
            return 0.0
        span = (self.until - self.start).total_seconds()
        done = (self.position.at - self.start).total_seconds()
        return 1.0 if span <= 0 else min(max(done / span, 0.0), 1.0)

    def poll(self) -> None:
        """Read the events recorded since the last poll (nothing while the database is not
        migrated yet)."""
        if self._engine is None:
            try:
                self._engine = open_engine(
                    self.url, clock=SystemClock(), gateways=[], settings=Settings()
                )
            except BillingError:
                return
        with suppress(BillingError):
            for event in all_events(self._engine, after=self._after):
                self._after = event.seq
                self.position.events += 1
                if self.position.at is None or event.at > self.position.at:
                    self.position.at = event.at

    @contextmanager
    def showing(self) -> Iterator[ScenarioProgress]:
        """Show the progress while the block runs (on a terminal only)."""
        if not self.console.is_terminal:
            yield self
            return
        progress = Progress(
            TextColumn("[dim]billing[/dim]"),
            BarColumn(bar_width=30),
            TextColumn("{task.description}"),
            TimeElapsedColumn(),
            console=self.console,
            transient=True,
        )
        task = progress.add_task("starting", total=1.0)

        def watch() -> None:
            while not self._stop.wait(self.every):
                with suppress(Exception):  # a progress bar never interrupts the run it shows
                    self.poll()
                at = self.position.at
                where = at.astimezone(UTC).strftime("%Y-%m-%d") if at else "starting"
                progress.update(
                    task,
                    completed=self.fraction(),
                    description=f"{where}, {self.position.events} events",
                )

        thread = threading.Thread(target=watch, name="scenario-progress", daemon=True)
        with progress:
            thread.start()
            try:
                yield self
            finally:
                self._stop.set()
                thread.join(timeout=5)
                self.close()

    def close(self) -> None:
        if self._engine is not None:
            self._engine.close()
            self._engine = None
