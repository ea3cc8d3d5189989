"""Running a scenario on the test clock, and reporting what happened.

The runner puts the scenario's plans, customers and subscriptions on an engine whose clock starts
at ``start``, moves the clock from one due instant to the next (so everything due on the way is
billed in time order, across all subscriptions), applies each event at its instant, and bills
everything due up to ``until``. Customers pay through the in-process fake gateway, scripted with
their ``payment`` behavior.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from billing.bootstrap import open_engine
from billing.clock import ManualClock
from billing.config import Settings
from billing.domain.errors import BillingError, IllegalTransition
from billing.domain.exchange import TableExchangeRates
from billing.domain.invoices import Invoice, InvoiceStatus, LineKind
from billing.domain.money import Currency, Money
from billing.domain.payments import PaymentStatus
from billing.domain.proration import ProrationBehavior
from billing.engine import Engine
from billing.scenarios.file import EventSpec, Scenario, ScenarioError
from billing.testing import FakeGateway

Report = dict[str, Any]


def advance(engine: Engine, clock: ManualClock, until: datetime) -> None:
    """Move ``clock`` to ``until``, stopping at every instant work falls due on the way."""
    while (due := engine.next_run_at()) is not None and due <= until:
        clock.set(max(due, clock.now()))
        engine.run_due()
    clock.set(until)
    engine.run_due()


@contextmanager
def _engine(
    scenario: Scenario, clock: ManualClock, fake: FakeGateway, url: str | None
) -> Iterator[Engine]:
    # one thread: subscriptions due at one instant are billed in a fixed order (invoice numbers)
    settings = Settings(proration=scenario.proration.value, threads=1)
    rates = TableExchangeRates(scenario.exchange_rates)
    if url is not None:
        with open_engine(
            url, clock=clock, gateways=[fake], rates=rates, settings=settings, migrate=True
        ) as engine:
            yield engine
        return
    with tempfile.TemporaryDirectory(prefix="billing-scenario-") as directory:
        database = f"sqlite:///{Path(directory) / 'scenario.db'}"
        with open_engine(
            database, clock=clock, gateways=[fake], rates=rates, settings=settings, migrate=True
        ) as engine:
            yield engine


def run_scenario(scenario: Scenario, *, database_url: str | None = None) -> Report:
    """Replay ``scenario`` and return its report (see :func:`report`).

    It runs on a temporary SQLite database unless ``database_url`` names one.

    :raises ScenarioError: when the engine refuses a subscription or an event, naming its line.
    """
    clock = ManualClock(scenario.start)
    fake = FakeGateway()
    currencies = _customer_currencies(scenario)
    with _engine(scenario, clock, fake, database_url) as engine:
        for plan in scenario.plans:
            engine.create_plan(plan)
        for customer in scenario.customers:
            with _refusals(scenario, customer.line, "customers"):
                engine.create_customer(customer_id=customer.ref, timezone=customer.timezone)
                engine.add_payment_method(customer.ref, gateway="fake", token=f"tok_{customer.ref}")
                fake.script(customer.ref, customer.payment)
                if customer.credit > 0:
                    credit = Money.of(customer.credit, currencies[customer.ref])
                    engine.grant_credit(customer.ref, credit, reason="scenario")
        for spec in scenario.subscriptions:
            with _refusals(scenario, spec.line, "subscriptions"):
                engine.subscribe(
                    spec.customer,
                    spec.plan,
                    subscription_id=spec.ref,
                    start=spec.start,
                    trial_end=spec.trial_end,
                    cycles=spec.cycles,
                    tax=spec.tax,
                    prorate=spec.prorate,
                )
        for count, event in enumerate(scenario.events, start=1):
            advance(engine, clock, event.at)
            with _refusals(scenario, event.line, f"events.{event.action}"):
                _apply(engine, fake, currencies, event, count)
        advance(engine, clock, scenario.until)
        return report(engine, scenario)


@contextmanager
def _refusals(scenario: Scenario, line: int, field: str) -> Iterator[None]:
    """Turn the engine's refusal of a scenario step into an error naming the step's line."""
    try:
        yield
    except ScenarioError:
        raise
    except BillingError as exc:
        raise ScenarioError(scenario.source, line, field, f"refused by the engine: {exc}") from exc


def _customer_currencies(scenario: Scenario) -> dict[str, Currency]:
    """The currency of each customer's credit: that of its first subscription's plan."""
    plans = {plan.code: plan for plan in scenario.plans}
    currencies: dict[str, Currency] = {}
    for spec in scenario.subscriptions:
        currencies.setdefault(spec.customer, plans[spec.plan].billing_currency)
    default = scenario.plans[0].billing_currency
    return {customer.ref: currencies.get(customer.ref, default) for customer in scenario.customers}


def _apply(
    engine: Engine,
    fake: FakeGateway,
    currencies: Mapping[str, Currency],
    event: EventSpec,
    count: int,
) -> None:
    args, key = event.args, event.idempotency_key
    match event.action:
        case "change_plan":
            engine.change_plan(
                str(args["subscription"]),
                str(args["plan"]),
                behavior=str(args.get("behavior", ProrationBehavior.CARRY_DEBT)),
                idempotency_key=key,
            )
        case "set_payment":
            fake.script(str(args["customer"]), str(args["payment"]))
        case "cancel":
            at_period_end = args.get("at_period_end", True)
            engine.cancel(
                str(args["subscription"]), at_period_end=bool(at_period_end), idempotency_key=key
            )
        case "pause":
            resume_at = args.get("resume_at")
            assert resume_at is None or isinstance(resume_at, datetime)
            engine.pause(str(args["subscription"]), resume_at=resume_at, idempotency_key=key)
        case "resume":
            engine.resume(str(args["subscription"]), idempotency_key=key)
        case "grant_credit":
            customer = str(args["customer"])
            amount = Money.of(_decimal(args["amount"]), currencies[customer])
            engine.grant_credit(customer, amount, reason="scenario", idempotency_key=key)
        case "refund":
            invoice = engine.invoice_by_number(str(args["invoice"]))
            paid = [
                p
                for p in engine.payments(invoice_id=invoice.id)
                if p.status is PaymentStatus.SUCCEEDED
            ]
            if not paid:
                raise IllegalTransition(
                    "invoice",
                    invoice.number or invoice.id,
                    invoice.status,
                    "be refunded (it has no succeeded payment)",
                )
            given = args.get("amount")
            engine.refund(
                paid[-1].id,
                amount=None if given is None else Money.of(_decimal(given), invoice.currency),
                idempotency_key=key,
            )
        case "replace_payment_method":
            customer = str(args["customer"])
            fake.script(customer, str(args["payment"]))
            engine.replace_payment_method(
                customer, gateway="fake", token=f"tok_{customer}_{count}", idempotency_key=key
            )


def _decimal(value: object) -> Decimal:
    assert isinstance(value, Decimal | int | str)
    return Decimal(value)


def _instant(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def report(engine: Engine, scenario: Scenario) -> Report:
    """What happened: every invoice and payment attempt, and each subscription and customer now.

    Amounts are decimal strings in major units; instants are ISO 8601 in UTC.
    """
    invoices = engine.invoices()
    numbers = {invoice.id: invoice.number for invoice in invoices}
    return {
        "scenario": scenario.name,
        "invoices": [_invoice(invoice) for invoice in invoices],
        "payments": [
            {
                "at": _instant(p.created_at),
                "invoice": numbers[p.invoice_id],
                "subscription": p.subscription_id,
                "attempt": p.number,
                "amount": p.amount.to_decimal_string(),
                "currency": p.amount.currency.code,
                "status": p.status.value,
                "error_code": p.code,
            }
            for p in engine.payments()
        ],
        "subscriptions": [
            {
                "ref": s.id,
                "status": s.status.value,
                "plan": s.plan.code,
                "current_period_start": _instant(
                    s.current_period.start if s.current_period else None
                ),
                "current_period_end": _instant(s.current_period.end if s.current_period else None),
                "cancel_at_period_end": s.cancel_at_period_end,
                "debt": s.debt_total.to_decimal_string(),
            }
            for s in engine.subscriptions()
        ],
        "customers": [
            {
                "ref": c.ref,
                "credit_balance": balance.amount.to_decimal_string(),
                "currency": balance.amount.currency.code,
            }
            for c in scenario.customers
            for balance in (
                engine.credit_balances(c.ref)
                or [engine.credit_balance(c.ref, _customer_currencies(scenario)[c.ref].code)]
            )
        ],
        "events": [
            {"at": _instant(e.at), "name": e.name, "subscription": e.subscription_id}
            for e in _all_events(engine)
        ],
    }


def _all_events(engine: Engine) -> Iterator[Any]:
    after = 0
    while batch := engine.events(after=after, limit=500, pending_only=False):
        yield from batch
        after = batch[-1].seq


def _invoice(invoice: Invoice) -> dict[str, Any]:
    zero = Money.zero(invoice.currency)

    def total(*kinds: LineKind) -> str:
        return sum(
            (line.amount for line in invoice.lines if line.kind in kinds), zero
        ).to_decimal_string()

    open_ = invoice.status in (InvoiceStatus.OPEN, InvoiceStatus.UNCOLLECTIBLE)
    return {
        "number": invoice.number,
        "subscription": invoice.subscription_id,
        "customer": invoice.customer_id,
        "currency": invoice.currency.code,
        "status": invoice.status.value,
        "reason": invoice.reason.value,
        "period_start": _instant(invoice.period.start if invoice.period else None),
        "period_end": _instant(invoice.period.end if invoice.period else None),
        "issued_at": _instant(invoice.finalized_at),
        "lines": [
            {
                "kind": line.kind.value,
                "description": line.description,
                "amount": line.amount.to_decimal_string(),
                "period_start": _instant(line.period.start if line.period else None),
                "period_end": _instant(line.period.end if line.period else None),
            }
            for line in invoice.lines
        ],
        "subtotal": total(
            LineKind.PLAN, LineKind.PRORATION_CHARGE, LineKind.PRORATION_CREDIT, LineKind.DEBT
        ),
        "tax": total(LineKind.TAX),
        "credit": total(LineKind.CREDIT),
        "total": invoice.total.to_decimal_string(),
        "amount_due": invoice.total.to_decimal_string() if open_ else zero.to_decimal_string(),
    }
