"""Playing the story: set the world up, move twelve months through it, and gather what happened."""

from __future__ import annotations

import shutil
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import Table, func, select

from billing.clock import ManualClock
from billing.demo import story
from billing.demo.world import (
    NotificationsApp,
    Payers,
    World,
    refused,
    run_until,
    world,
)
from billing.domain.invoices import Invoice, InvoiceStatus
from billing.domain.money import Money
from billing.domain.payments import PaymentStatus
from billing.engine import Engine
from billing.reports import Report, build_report, write_report
from billing.services.audit import AuditReport, Books
from billing.store.tables import InboxRow
from billing.store.unit_of_work import StoredEvent

DATABASE = "billing-demo.db"
REPORT = "billing-report"
TITLE = "billing demo: a year of four Latin American gateways"


@dataclass(frozen=True, slots=True)
class Entry:
    """A line of the timeline."""

    at: datetime
    customer: str | None
    gateway: str | None
    text: str
    story: bool = False
    """A turn of the story (what the demo did), rather than something the engine recorded."""


@dataclass(frozen=True, slots=True)
class Line:
    """One customer in a gateway's table."""

    customer: str
    plan: str
    status: str
    invoices: int
    paid: int
    books: Books
    currency: str


@dataclass(frozen=True, slots=True)
class Notifications:
    """What one gateway's notifications did."""

    gateway: str
    posted: int
    answered_ok: int
    outcomes: dict[str, int]
    links_paid: int
    settled_by_notification: int


@dataclass
class Outcome:
    """Everything the demo shows, gathered before the engine closed."""

    directory: Path
    database: Path
    start: datetime
    end: datetime
    timeline: list[Entry] = field(default_factory=list)
    gateways: dict[str, list[Line]] = field(default_factory=dict)
    notifications: list[Notifications] = field(default_factory=list)
    audit: AuditReport | None = None
    report: Report | None = None
    index: Path | None = None
    stops: int = 0
    seconds: float = 0.0


def previous_demo(directory: Path) -> list[Path]:
    """What a previous demo left in ``directory``."""
    return [path for path in (directory / DATABASE, directory / REPORT) if path.exists()]


def clear(directory: Path) -> None:
    """Remove what a previous demo left in ``directory`` (its database and its report)."""
    for suffix in ("", "-wal", "-shm", "-journal"):
        (directory / f"{DATABASE}{suffix}").unlink(missing_ok=True)
    report = directory / REPORT
    if report.is_dir():
        shutil.rmtree(report)
    elif report.exists():
        report.unlink()


def play(
    directory: Path,
    notifications_app: NotificationsApp,
    *,
    progress: Callable[[str], None] = lambda line: None,
    stop: Callable[[], bool] = lambda: False,
) -> Outcome:
    """Run the whole demo in ``directory`` (which holds no previous demo) and return what
    happened. Everything it starts is stopped before it returns, whether it ends well or not."""
    began = time.monotonic()
    start = story.start_after(datetime.now(UTC))
    end = story.end_of(start)
    database = directory / DATABASE
    outcome = Outcome(directory=directory, database=database, start=start, end=end)
    clock = ManualClock(start)
    progress("starting the fake gateways and the webhook endpoint on loopback...")
    with world(
        f"sqlite:///{database}",
        clock,
        story.uf_rates(start),
        notifications_app,
        story.GATEWAYS,
        stop,
    ) as here:
        progress(f"fakes on {here.fakes_url}/<gateway>, webhooks on {here.inbox_url}/<gateway>")
        payers, cards = _set_up(here, outcome)
        progress(f"{len(story.CUSTOMERS)} customers subscribed; billing {story.MONTHS} months...")
        stops: list[datetime] = []
        for beat in story.BEATS:
            here.check()
            at = beat.at(start)
            run_until(here, payers, at, stops=stops)
            _turn(here, payers, cards, beat, outcome)
            progress(f"{_day(at, story.SANTIAGO)} {beat.customer}: {beat.says}")
        run_until(here, payers, end, stops=stops)
        outcome.stops = len(stops)
        progress(f"{len(stops)} stops of the test clock; gathering what happened...")
        _gather(here, payers, outcome)
        here.check()
        outcome.report, outcome.index = _report(here.engine, start, end, directory / REPORT)
        here.check()
    outcome.seconds = time.monotonic() - began
    return outcome


def _set_up(here: World, outcome: Outcome) -> tuple[Payers, dict[str, str]]:
    """Plans, customers with their way to pay, and their subscriptions, all starting now."""
    engine, fakes = here.engine, here.fakes
    fakes.follow(here.clock.now())  # Payvalida refuses a link that expires 30 days past its clock
    cards: dict[str, str] = {}
    with refused("setting the demo up"):
        for plan in story.PLANS:
            engine.create_plan(plan)
        for customer in story.CUSTOMERS:
            engine.create_customer(
                customer_id=customer.id,
                timezone=customer.timezone,
                metadata={"name": customer.name, "email": customer.email},
            )
            if customer.gateway == "qvo":  # typed on Webpay's page, never given to the engine
                cards[customer.id] = fakes.enroll_card(engine, customer.id)
                continue
            token = (
                fakes.openpay_token(customer.name)  # made in the browser, as openpay.js does
                if customer.gateway == "openpay"
                else customer.email  # a pay-by-link gateway's "payment method"
            )
            method = engine.add_payment_method(customer.id, gateway=customer.gateway, token=token)
            cards[customer.id] = method.token
        for customer in story.CUSTOMERS:
            engine.subscribe(
                customer.id,
                customer.plan,
                subscription_id=_subscription(customer.id),
                tax=customer.tax,
            )
    habits = {c.id: c.habit for c in story.CUSTOMERS if c.habit is not None}
    payers = Payers(engine, fakes, habits)
    payers.watch()
    return payers, cards


def _subscription(customer: str) -> str:
    return f"sub-{customer}"


def _turn(
    here: World, payers: Payers, cards: dict[str, str], beat: story.Beat, outcome: Outcome
) -> None:
    """Play one turn of the story at the clock's time."""
    engine, fakes = here.engine, here.fakes
    customer = _customer(beat.customer)
    subscription = _subscription(customer.id)
    outcome.timeline.append(
        Entry(here.clock.now(), customer.id, customer.gateway, beat.says, story=True)
    )
    with refused(f"{customer.id}: {beat.turn.value}"):
        match beat.turn:
            case story.Turn.UPGRADE | story.Turn.DOWNGRADE:
                assert beat.plan is not None
                engine.change_plan(subscription, beat.plan)
            case story.Turn.DECLINES | story.Turn.DECLINES_FOR_GOOD:
                times = beat.times if beat.turn is story.Turn.DECLINES else None
                if customer.gateway == "qvo":
                    fakes.decline_qvo(cards[customer.id], times)
                else:
                    fakes.decline_openpay(customer.id, times)
            case story.Turn.REFUND:
                invoice = engine.invoices(customer_id=customer.id)[beat.invoice]
                [paid] = [
                    p
                    for p in engine.payments(invoice_id=invoice.id)
                    if p.status is PaymentStatus.SUCCEEDED
                ]
                engine.refund(paid.id)
            case story.Turn.CANCEL:
                engine.cancel(subscription, at_period_end=True)
            case story.Turn.HOLD_NOTIFICATIONS | story.Turn.RELEASE_NOTIFICATIONS:
                fakes.hold_notifications(
                    customer.gateway, beat.turn is story.Turn.HOLD_NOTIFICATIONS
                )
    payers.watch()


def _customer(customer_id: str) -> story.Customer:
    [found] = [c for c in story.CUSTOMERS if c.id == customer_id]
    return found


def _report(engine: Engine, start: datetime, end: datetime, folder: Path) -> tuple[Report, Path]:
    """The charts and the HTML page of :mod:`billing.reports`, as ``billing simulate`` makes
    them."""
    report = build_report(engine, start=start, end=end, title=TITLE)
    return report, write_report(report, folder)


# -- what happened -------------------------------------------------------------------------------


def _gather(here: World, payers: Payers, outcome: Outcome) -> None:
    """The timeline, the gateways' tables, the notifications and the audit, from the engine."""
    engine = here.engine
    invoices = engine.invoices()
    numbers = {invoice.id: invoice.number or invoice.id for invoice in invoices}
    outcome.timeline.extend(_events(engine, numbers))
    for attempt in payers.ignored:
        customer = _customer(attempt.customer_id or "")
        outcome.timeline.append(
            Entry(
                attempt.created_at,
                customer.id,
                customer.gateway,
                f"lets the link for {numbers[attempt.invoice_id]} expire unpaid",
                story=True,
            )
        )
    first: set[str] = set()
    for paid in payers.paid:
        number = numbers[paid.invoice_id]
        if not paid.by_notification:
            text = (
                f"pays the link for {number}; no notification came: the worker's check settles it"
            )
        elif paid.customer not in first:
            text = f"pays the link for {number} (and each later one): its notification settles it"
        else:
            continue
        first.add(paid.customer)
        outcome.timeline.append(Entry(paid.at, paid.customer, paid.gateway, text, story=True))
    outcome.timeline.sort(key=lambda entry: entry.at)
    outcome.audit = engine.audit()
    books = outcome.audit.books
    by_customer: defaultdict[str, list[Invoice]] = defaultdict(list)
    for invoice in invoices:
        by_customer[invoice.customer_id].append(invoice)
    subscriptions = {s.customer_id: s for s in engine.subscriptions()}
    for gateway in story.GATEWAYS:
        lines = []
        for customer in story.CUSTOMERS:
            if customer.gateway != gateway:
                continue
            mine = by_customer[customer.id]
            subscription = subscriptions[customer.id]
            currency = subscription.plan.billing_currency.code
            lines.append(
                Line(
                    customer=customer.id,
                    plan=subscription.plan.code,
                    status=subscription.status.value,
                    invoices=len(mine),
                    paid=sum(1 for invoice in mine if invoice.status is InvoiceStatus.PAID),
                    books=books.get((customer.id, currency), Books()),
                    currency=currency,
                )
            )
        outcome.gateways[gateway] = lines
    outcome.notifications = _notifications(here, payers)


def _events(engine: Engine, numbers: dict[str, str]) -> Iterable[Entry]:
    gateway_of = {c.id: c.gateway for c in story.CUSTOMERS}
    customer_of = {s.id: s.customer_id for s in engine.subscriptions()}
    zones = {c.id: ZoneInfo(c.timezone) for c in story.CUSTOMERS}
    taxes = {c.id: c.tax for c in story.CUSTOMERS}
    waiting: dict[str, str] = {}  # subscriptions in a trial or in dunning: what they wait for
    after = 0
    while batch := engine.events(after=after, limit=500, pending_only=False):
        after = batch[-1].seq
        for event in batch:
            customer = event.customer_id or customer_of.get(event.subscription_id or "")
            subscription = event.subscription_id or ""
            text: str | None
            if event.name == "subscription.created":
                plan = str(event.payload["plan_code"])
                text = f"subscribes to {story.offer(plan, taxes[customer or ''])}"
            elif event.name in ("subscription.trial_started", "subscription.past_due"):
                waiting[subscription] = event.name
                text = _describe(event, numbers, zones.get(customer or "", story.SANTIAGO))
            elif event.name == "subscription.activated":
                was = waiting.pop(subscription, None)
                text = {
                    "subscription.trial_started": "trial over: active, first charge paid",
                    "subscription.past_due": "recovered: active again",
                }.get(was or "")
            else:
                text = _describe(event, numbers, zones.get(customer or "", story.SANTIAGO))
            if text is not None:
                yield Entry(event.at, customer, gateway_of.get(customer or ""), text)


def _money(value: Any) -> str:
    return shown(Money.from_minor(int(value["minor"]), str(value["currency"])))


def shown(money: Money) -> str:
    """``239,880 CLP``, ``5,990.00 MXN``."""
    return f"{money.amount:,} {money.currency.code}"


def _day(at: datetime, zone: ZoneInfo) -> str:
    return at.astimezone(zone).date().isoformat()


def _describe(event: StoredEvent, numbers: dict[str, str], zone: ZoneInfo) -> str | None:
    """The timeline's words for a notable event (dates in the customer's ``zone``), or ``None``
    for a routine one (renewals, paid invoices, links sent: the gateway tables count those)."""
    p = event.payload
    number = numbers.get(str(p.get("invoice_id", "")), "")
    match event.name:
        case "subscription.trial_started":
            first = _day(datetime.fromisoformat(p["trial_end"]), zone)
            return f"trial starts; first charge on {first}"
        case "subscription.plan_changed":
            text = f"plan {p['from_plan']} -> {p['to_plan']}"
            for key, label in (
                ("debt_added", "debt"),
                ("credit_granted", "credit"),
                ("credit_held", "credit held"),
            ):
                if int(p[key]["minor"]) > 0:
                    text += f"; {label} {_money(p[key])}"
            return text
        case "subscription.debt_invoiced":
            return f"debt of {_money(p['amount'])} invoiced with the renewal"
        case "subscription.past_due":
            retry = p.get("retry_at")
            when = f"; retry on {_day(datetime.fromisoformat(retry), zone)}" if retry else ""
            return f"past due ({number}){when}"
        case "subscription.unpaid":
            return f"unpaid: retries ran out for {number}"
        case "subscription.cancel_scheduled":
            return (
                f"cancels at the period's end, {_day(datetime.fromisoformat(p['cancel_at']), zone)}"
            )
        case "subscription.canceled":
            return "canceled"
        case "subscription.ended":
            return "ended"
        case "payment.failed":
            error = p.get("error") or p.get("code") or "declined"
            return f"{number} attempt {p['attempt']} declined: {error} ({p['decline']})"
        case "payment.refunded":
            return f"{number} refunded: {_money(p['amount'])}"
        case "refund.failed":
            return f"refund of {number} refused"
        case "credit.granted":
            return f"credit {_money(p['amount'])} granted ({p.get('source', 'grant')})"
        case "credit.forfeited":
            return f"held credit {_money(p['amount'])} forfeited"
        case "invoice.uncollectible":
            return f"{number} written off (uncollectible)"
        case "invoice.awaiting_payment_method":
            return f"{number} waits for a new payment method"
    return None


def _notifications(here: World, payers: Payers) -> list[Notifications]:
    table: Table = InboxRow.__table__  # type: ignore[attr-defined]
    with here.engine.store.engine.connect() as connection:
        rows = connection.execute(
            select(table.c.gateway, table.c.status, func.count()).group_by(
                table.c.gateway, table.c.status
            )
        ).all()
    outcomes: defaultdict[str, dict[str, int]] = defaultdict(dict)
    for gateway, status, count in rows:
        outcomes[str(gateway)][str(status)] = int(count)
    posted = Counter(delivery.gateway for delivery in here.inbox.deliveries)
    ok = Counter(d.gateway for d in here.inbox.deliveries if d.status == 200)
    paid = Counter(p.gateway for p in payers.paid)
    settled = Counter(p.gateway for p in payers.paid if p.by_notification)
    return [
        Notifications(
            gateway=gateway,
            posted=posted[gateway],
            answered_ok=ok[gateway],
            outcomes=dict(sorted(outcomes[gateway].items())),
            links_paid=paid[gateway],
            settled_by_notification=settled[gateway],
        )
        for gateway in story.GATEWAYS
        if posted[gateway] or outcomes[gateway] or paid[gateway]
    ]
