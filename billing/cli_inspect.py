"""``billing subscriptions``, ``invoices``, ``payments`` and ``events``: what a database holds,
read through the engine's public API, without migrating or changing anything.

Each prints a table that fits 80 columns, or with ``--json`` one JSON document: amounts as
decimal strings beside their currency, instants in ISO 8601 with their offset.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from contextlib import AbstractContextManager
from datetime import UTC, tzinfo
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.text import Text

from billing.cli_render import all_events, describe_event, table_of
from billing.cli_support import (
    DATABASE_URL_HELP,
    ExitCode,
    database_url,
    fail,
    instant,
    money,
    reading,
    zone_label,
)
from billing.domain import _checks
from billing.domain.errors import BillingError, NotFound
from billing.domain.invoices import Invoice, InvoiceStatus
from billing.domain.money import Currency, Money
from billing.domain.payments import PaymentAttempt, PaymentStatus
from billing.domain.subscriptions import Subscription, SubscriptionStatus
from billing.engine import Engine
from billing.store.unit_of_work import StoredEvent

T = TypeVar("T")

DatabaseUrl = Annotated[str | None, typer.Option("--database-url", help=DATABASE_URL_HELP)]
Customer = Annotated[str | None, typer.Option(help="Only this customer's (its id).")]
SubscriptionId = Annotated[
    str | None, typer.Option("--subscription", help="Only this subscription's (its id).")
]


def _not_negative(value: int) -> int:
    if value < 0:
        raise typer.BadParameter(f"must be 0 or more (got {value})")
    return value


Limit = Annotated[
    int,
    typer.Option(help="Show at most this many, the latest; 0 shows all.", callback=_not_negative),
]
AsJson = Annotated[bool, typer.Option("--json", help="Print one JSON document instead of a table.")]
Timezone = Annotated[
    str,
    typer.Option(help="Show instants in this IANA timezone (the JSON keeps them as stored)."),
]


def register(app: typer.Typer) -> None:
    """Add the inspection commands to ``app``."""
    panel = "Inspect a database (read-only)"
    app.command("subscriptions", rich_help_panel=panel)(subscriptions)
    app.command("invoices", rich_help_panel=panel)(invoices)
    app.command("payments", rich_help_panel=panel)(payments)
    app.command("events", rich_help_panel=panel)(events)


def subscriptions(
    customer: Customer = None,
    status: Annotated[
        SubscriptionStatus | None,
        typer.Option(help="Only those in this status.", case_sensitive=False),
    ] = None,
    plan: Annotated[str | None, typer.Option(help="Only those on this plan (its code).")] = None,
    limit: Limit = 50,
    as_json: AsJson = False,
    timezone: Timezone = "UTC",
    database_url: DatabaseUrl = None,
) -> None:
    """List subscriptions: status, plan, current period, and what each still owes."""
    zone = _zone(timezone)
    with _reading(database_url) as engine:
        _exists(engine, customer=customer)
        found = [
            s
            for s in engine.subscriptions(customer)
            if (status is None or s.status is status) and (plan is None or s.plan.code == plan)
        ]
        shown, total = _latest(found, limit)
        owed = _owed(engine.invoices(customer_id=customer))
    if as_json:
        _print_json("subscriptions", [_subscription_json(s, owed) for s in shown])
        return
    table = table_of(
        f"Subscriptions (times in {zone_label(zone)})",
        "subscription",
        "status",
        "period ends",
        "owes",
        whole=("period ends",),
        widths={"subscription": 26, "status": 10},
    )
    for s in shown:
        period = s.current_period
        status_text = s.status.value + (
            "\n(cancels at period end)" if s.cancel_at_period_end else ""
        )
        due = owed.get(s.id)
        open_invoices = f"{money(due[0])} ({', '.join(due[1])})" if due else "nothing"
        table.add_row(
            f"{s.id}\ncustomer {s.customer_id}\nplan {s.plan.code}",
            status_text,
            instant(period.end, zone) if period else "",
            f"open invoices: {open_invoices}\ndebt not yet invoiced: {money(s.debt_total)}",
        )
    _print(table, len(shown), total, "subscriptions")


def invoices(
    customer: Customer = None,
    subscription: SubscriptionId = None,
    status: Annotated[
        InvoiceStatus | None, typer.Option(help="Only those in this status.", case_sensitive=False)
    ] = None,
    limit: Limit = 50,
    as_json: AsJson = False,
    timezone: Timezone = "UTC",
    database_url: DatabaseUrl = None,
) -> None:
    """List invoices in the order they were issued: totals, what is still due, and status."""
    zone = _zone(timezone)
    with _reading(database_url) as engine:
        _exists(engine, customer=customer, subscription=subscription)
        found = [
            i
            for i in engine.invoices(customer_id=customer, subscription_id=subscription)
            if status is None or i.status is status
        ]
        shown, total = _latest(found, limit)
    if as_json:
        _print_json("invoices", [_invoice_json(i) for i in shown])
        return
    table = table_of(
        f"Invoices (times in {zone_label(zone)})",
        "invoice",
        "issued",
        "total",
        "status",
        right=("total",),
        whole=("issued", "total"),
        widths={"invoice": 26},
    )
    for i in shown:
        due = _amount_due(i)
        whose = i.subscription_id or f"customer {i.customer_id}"
        table.add_row(
            f"{i.number or i.id}\n{whose}\n{i.reason.value.replace('_', ' ')}",
            instant(i.finalized_at or i.created_at, zone),
            money(i.total),
            i.status.value + (f"\ndue {money(due)}" if due.is_positive() else ""),
        )
    _print(table, len(shown), total, "invoices")


def payments(
    customer: Customer = None,
    subscription: SubscriptionId = None,
    invoice: Annotated[
        str | None, typer.Option(help="Only this invoice's (its number, INV-000002, or id).")
    ] = None,
    status: Annotated[
        PaymentStatus | None, typer.Option(help="Only those in this status.", case_sensitive=False)
    ] = None,
    limit: Limit = 50,
    as_json: AsJson = False,
    timezone: Timezone = "UTC",
    database_url: DatabaseUrl = None,
) -> None:
    """List payment attempts, failed ones included, in the order they were made."""
    zone = _zone(timezone)
    with _reading(database_url) as engine:
        _exists(engine, customer=customer, subscription=subscription)
        invoice_id = _invoice_id(engine, invoice) if invoice else None
        numbers = {i.id: i.number for i in engine.invoices(customer_id=customer)}
        found = [
            p
            for p in engine.payments(
                invoice_id=invoice_id, customer_id=customer, subscription_id=subscription
            )
            if status is None or p.status is status
        ]
        shown, total = _latest(found, limit)
    if as_json:
        _print_json("payments", [_payment_json(p, numbers) for p in shown])
        return
    table = table_of(
        f"Payment attempts (times in {zone_label(zone)})",
        "at",
        "attempt",
        "amount",
        "status",
        "error",
        right=("amount",),
        whole=("at", "attempt", "amount", "status"),
    )
    for p in shown:
        table.add_row(
            instant(p.created_at, zone),
            f"{numbers.get(p.invoice_id) or p.invoice_id} #{p.number}\nvia {p.gateway or 'none'}",
            money(p.amount),
            p.status.value,
            _error_text(p),
        )
    _print(table, len(shown), total, "payment attempts")


def events(
    customer: Customer = None,
    subscription: SubscriptionId = None,
    invoice: Annotated[
        str | None, typer.Option(help="Only this invoice's (its number, INV-000002, or id).")
    ] = None,
    name: Annotated[
        str | None,
        typer.Option(
            help="Only events of this name, or starting with it (payment., invoice.paid)."
        ),
    ] = None,
    pending: Annotated[
        bool, typer.Option("--pending", help="Only events the host has not acknowledged yet.")
    ] = False,
    after: Annotated[
        int, typer.Option(help="Only events after this sequence number.", callback=_not_negative)
    ] = 0,
    limit: Limit = 50,
    as_json: AsJson = False,
    timezone: Timezone = "UTC",
    database_url: DatabaseUrl = None,
) -> None:
    """List recorded events in order, each with what it says (amounts, codes, instants).

    --customer takes the events of the customer's subscriptions too.
    """
    zone = _zone(timezone)
    with _reading(database_url) as engine:
        _exists(engine, customer=customer, subscription=subscription)
        invoice_id = _invoice_id(engine, invoice) if invoice else None
        numbers = {i.id: i.number for i in engine.invoices()}
        theirs = {s.id for s in engine.subscriptions(customer)} if customer else set()

        def wanted(event: StoredEvent) -> bool:
            return (
                (
                    customer is None
                    or event.customer_id == customer
                    or event.subscription_id in theirs
                )
                and (subscription is None or event.subscription_id == subscription)
                and (invoice_id is None or event.invoice_id == invoice_id)
                and (name is None or event.name == name or event.name.startswith(name))
            )

        found = [e for e in all_events(engine, after=after, pending_only=pending) if wanted(e)]
        shown, total = _latest(found, limit)
    if as_json:
        _print_json("events", [_event_json(e) for e in shown])
        return
    table = table_of(
        f"Events (times in {zone_label(zone)})",
        "seq",
        "at",
        "event",
        right=("seq",),
        whole=("seq", "at"),
    )
    for e in shown:
        whose = e.subscription_id or (f"customer {e.customer_id}" if e.customer_id else "")
        table.add_row(
            str(e.seq),
            instant(e.at, zone),
            Text.assemble((e.name, "bold"), f" {whose}\n", describe_event(e, numbers, zone)),
        )
    _print(table, len(shown), total, "events")


# -- shared --------------------------------------------------------------------------------------


def _reading(given: str | None) -> AbstractContextManager[Engine]:
    return reading(database_url(given))


def _zone(name: str) -> tzinfo:
    if name.upper() == "UTC":
        return UTC
    try:
        return _checks.timezone(name)
    except BillingError as exc:
        fail(ExitCode.USAGE, f"--timezone: {exc}")


def _exists(
    engine: Engine, *, customer: str | None = None, subscription: str | None = None
) -> None:
    """A filter that names nobody is a mistake (a typo, another database), not an empty list."""
    try:
        if customer is not None:
            engine.customer(customer)
        if subscription is not None:
            engine.subscription(subscription)
    except NotFound as exc:
        option = "--customer" if exc.entity == "customer" else "--subscription"
        fail(ExitCode.USAGE, f"{option}: {exc} in this database")


def _invoice_id(engine: Engine, given: str) -> str:
    try:
        return engine.invoice_by_number(given).id
    except NotFound:
        pass
    try:
        return engine.invoice(given).id
    except NotFound:
        fail(
            ExitCode.USAGE,
            f"--invoice: no invoice numbered or with the id {given!r} in this database",
        )


def _error_text(p: PaymentAttempt) -> str:
    """A declined attempt's codes: the gateway's own, and the normalised one if it differs."""
    error = p.error.value if p.error else None
    if p.code and error and p.code != error:
        return f"{p.code} ({error})"
    return p.code or error or ""


def _latest(found: Sequence[T], limit: int) -> tuple[Sequence[T], int]:
    return (found[-limit:] if limit else found), len(found)


def _print(table: Any, shown: int, total: int, what: str) -> None:
    console = Console()
    if not total:
        console.print(f"no {what} match")
        return
    console.print(table)
    if shown < total:
        Console(stderr=True).print(
            f"[dim]the latest {shown} of {total} {what}; --limit 0 shows them all[/dim]"
        )


def _print_json(key: str, items: Iterable[dict[str, Any]]) -> None:
    typer.echo(json.dumps({key: list(items)}, indent=2, ensure_ascii=False))


def _iso(value: Any) -> str | None:
    return None if value is None else value.isoformat()


def _amount_due(invoice: Invoice) -> Money:
    """What is still owed on an invoice: its total while open or uncollectible, else 0."""
    open_ = invoice.status in (InvoiceStatus.OPEN, InvoiceStatus.UNCOLLECTIBLE)
    return invoice.total if open_ else Money.zero(invoice.currency)


Owed = dict[str, tuple[Money, list[str]]]
"""By subscription: what it owes on its open invoices, and their numbers."""


def _owed(all_invoices: Iterable[Invoice]) -> Owed:
    owed: Owed = {}
    for invoice in all_invoices:
        due = _amount_due(invoice)
        if invoice.subscription_id is None or not due.is_positive():
            continue
        if invoice.subscription_id in owed:
            total, numbers = owed[invoice.subscription_id]
            due, numbers = total + due, [*numbers]
        else:
            numbers = []
        owed[invoice.subscription_id] = (due, [*numbers, invoice.number or invoice.id])
    return owed


def _subscription_json(s: Subscription, owed: Owed) -> dict[str, Any]:
    period = s.current_period
    due = owed.get(s.id)
    currency = s.plan.billing_currency.code
    return {
        "id": s.id,
        "customer": s.customer_id,
        "plan": s.plan.code,
        "status": s.status.value,
        "timezone": s.timezone.key,
        "created_at": _iso(s.created_at),
        "start": _iso(s.start),
        "trial_end": _iso(s.trial_end),
        "current_period_start": _iso(period.start if period else None),
        "current_period_end": _iso(period.end if period else None),
        "cancel_at_period_end": s.cancel_at_period_end,
        "canceled_at": _iso(s.canceled_at),
        "ended_at": _iso(s.ended_at),
        "paused_at": _iso(s.paused_at),
        "resume_at": _iso(s.resume_at),
        "currency": currency,
        "owed": due[0].to_decimal_string() if due else "0",
        "owed_invoices": due[1] if due else [],
        "debt": s.debt_total.to_decimal_string(),
    }


def _invoice_json(i: Invoice) -> dict[str, Any]:
    return {
        "id": i.id,
        "number": i.number,
        "customer": i.customer_id,
        "subscription": i.subscription_id,
        "status": i.status.value,
        "reason": i.reason.value,
        "currency": i.currency.code,
        "period_start": _iso(i.period.start if i.period else None),
        "period_end": _iso(i.period.end if i.period else None),
        "created_at": _iso(i.created_at),
        "issued_at": _iso(i.finalized_at),
        "paid_at": _iso(i.paid_at),
        "closed_at": _iso(i.closed_at),
        "lines": [
            {
                "kind": line.kind.value,
                "description": line.description,
                "amount": line.amount.to_decimal_string(),
            }
            for line in i.lines
        ],
        "total": i.total.to_decimal_string(),
        "amount_due": _amount_due(i).to_decimal_string(),
    }


def _payment_json(p: PaymentAttempt, numbers: dict[str, str | None]) -> dict[str, Any]:
    return {
        "id": p.id,
        "invoice": numbers.get(p.invoice_id),
        "invoice_id": p.invoice_id,
        "subscription": p.subscription_id,
        "customer": p.customer_id,
        "attempt": p.number,
        "amount": p.amount.to_decimal_string(),
        "currency": p.amount.currency.code,
        "status": p.status.value,
        "gateway": p.gateway,
        "error_code": p.code,
        "error": p.error.value if p.error else None,
        "decline": p.decline.value if p.decline else None,
        "reference": p.reference,
        "created_at": _iso(p.created_at),
        "updated_at": _iso(p.updated_at),
    }


def _event_json(e: StoredEvent) -> dict[str, Any]:
    return {
        "seq": e.seq,
        "id": e.id,
        "name": e.name,
        "at": _iso(e.at),
        "subscription": e.subscription_id,
        "customer": e.customer_id,
        "invoice_id": e.invoice_id,
        "acknowledged_at": _iso(e.acknowledged_at),
        "payload": _plain_money(e.payload),
    }


def _plain_money(value: Any) -> Any:
    """An event's payload with each amount as ``{"amount": "16875", "currency": "CLP"}``."""
    if isinstance(value, dict):
        if set(value) == {"minor", "currency"}:
            amount = Money(int(value["minor"]), Currency.of(str(value["currency"])))
            return {"amount": amount.to_decimal_string(), "currency": amount.currency.code}
        return {key: _plain_money(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_plain_money(item) for item in value]
    return value
