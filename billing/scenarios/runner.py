"""Running a scenario on the test clock, and reporting what happened.

The runner puts the scenario's plans, customers and subscriptions on an engine whose clock starts
at ``start``, moves the clock from one due instant to the next (so everything due on the way is
billed in time order, across all subscriptions), applies each event at its instant, and bills
everything due up to ``until``. Customers pay through their gateway's simulation
(:mod:`billing.testing.simulation`), scripted with their ``payment`` behavior: the in-process fake,
or a real adapter talking to its gateway's fake server over loopback HTTP.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
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
from billing.ports import Capability
from billing.scenarios.file import EventSpec, Scenario, ScenarioError
from billing.testing import Behavior, simulation
from billing.testing.simulation import GatewaySimulation

Report = dict[str, Any]


def advance(engine: Engine, clock: ManualClock, until: datetime) -> None:
    """Move ``clock`` to ``until``, stopping at every instant work falls due on the way."""
    while (due := engine.next_run_at()) is not None and due <= until:
        clock.set(max(due, clock.now()))
        engine.run_due()
    clock.set(until)
    engine.run_due()


@contextmanager
def _engine(scenario: Scenario, clock: ManualClock, url: str | None) -> Iterator[_Run]:
    # one thread: subscriptions due at one instant are billed in a fixed order (invoice numbers)
    settings = Settings(proration=scenario.proration.value, threads=1)
    rates = TableExchangeRates(scenario.exchange_rates)
    with ExitStack() as stack:
        sims: dict[str, GatewaySimulation] = {}
        for name in dict.fromkeys(customer.gateway for customer in scenario.customers):
            sims[name] = simulation.simulation(name, clock=clock.now)
            stack.callback(sims[name].close)
        if url is None:
            directory = stack.enter_context(tempfile.TemporaryDirectory(prefix="billing-scenario-"))
            url = f"sqlite:///{Path(directory) / 'scenario.db'}"
        gateways = [sim.gateway for sim in sims.values()]
        engine = stack.enter_context(
            open_engine(
                url, clock=clock, gateways=gateways, rates=rates, settings=settings, migrate=True
            )
        )
        yield _Run(engine, sims, {c.ref: c.gateway for c in scenario.customers})


@dataclass
class _Run:
    """A scenario's engine, its gateways' simulations, and each customer's gateway."""

    engine: Engine
    sims: Mapping[str, GatewaySimulation]
    gateway_of: Mapping[str, str]

    def give_card(
        self, customer: str, payment: str, *, replace: bool, idempotency_key: str | None = None
    ) -> None:
        name = self.gateway_of[customer]
        give_card(
            self.engine,
            self.sims[name],
            customer,
            Behavior(payment),
            replace=replace,
            idempotency_key=idempotency_key,
        )


def give_card(
    engine: Engine,
    sim: GatewaySimulation,
    customer_id: str,
    behavior: Behavior,
    *,
    replace: bool = False,
    idempotency_key: str | None = None,
) -> None:
    """Give a customer a new default card that pays as ``behavior`` says, the way the gateway
    stores cards: from a token of its card form, or through its enrollment page. With
    ``replace``, invoices in dunning are retried with it at once."""
    name = sim.gateway.name
    if Capability.CARD_TOKENS in sim.gateway.capabilities:
        token = sim.card_token(customer_id, behavior)
        add = engine.replace_payment_method if replace else engine.add_payment_method
        add(customer_id, gateway=name, token=token, idempotency_key=idempotency_key)
        return
    enrollment = engine.start_payment_method_enrollment(
        customer_id, gateway=name, return_url=_RETURN_URL, idempotency_key=idempotency_key
    )
    sim.fill_enrollment(customer_id, enrollment.redirect_url, behavior)
    engine.complete_payment_method_enrollment(name, enrollment.reference)


_RETURN_URL = "https://scenario.invalid/cards/return"
"""Where an enrollment page would send a scenario's customer back to."""


def run_scenario(scenario: Scenario, *, database_url: str | None = None) -> Report:
    """Replay ``scenario`` and return its report (see :func:`report`).

    It runs on a temporary SQLite database unless ``database_url`` names one.

    :raises ScenarioError: when the engine refuses a subscription or an event, naming its line.
    """
    clock = ManualClock(scenario.start)
    currencies = _customer_currencies(scenario)
    with _engine(scenario, clock, database_url) as run:
        engine = run.engine
        for plan in scenario.plans:
            engine.create_plan(plan)
        for customer in scenario.customers:
            with _refusals(scenario, customer.line, "customers"):
                engine.create_customer(
                    customer_id=customer.ref,
                    timezone=customer.timezone,
                    metadata={"name": customer.ref, "email": f"{customer.ref}@scenario.invalid"},
                )
                run.give_card(customer.ref, customer.payment, replace=False)
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
        for event in scenario.events:
            advance(engine, clock, event.at)
            with _refusals(scenario, event.line, f"events.{event.action}"):
                _apply(run, currencies, event)
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


def _apply(run: _Run, currencies: Mapping[str, Currency], event: EventSpec) -> None:
    engine, args, key = run.engine, event.args, event.idempotency_key
    match event.action:
        case "change_plan":
            engine.change_plan(
                str(args["subscription"]),
                str(args["plan"]),
                behavior=str(args.get("behavior", ProrationBehavior.CARRY_DEBT)),
                idempotency_key=key,
            )
        case "set_payment":
            customer = str(args["customer"])
            run.sims[run.gateway_of[customer]].script(customer, Behavior(str(args["payment"])))
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
            run.give_card(
                str(args["customer"]), str(args["payment"]), replace=True, idempotency_key=key
            )


def _decimal(value: object) -> Decimal:
    assert isinstance(value, Decimal | int | str)
    return Decimal(value)


def _instant(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def report(engine: Engine, scenario: Scenario) -> Report:
    """What happened: every invoice, payment attempt and refund, and each subscription and
    customer now.

    Amounts are decimal strings in major units; instants are ISO 8601 in UTC.
    """
    invoices = engine.invoices()
    numbers = {invoice.id: invoice.number for invoice in invoices}
    payments = engine.payments()
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
                "error": None if p.error is None else p.error.value,
            }
            for p in payments
        ],
        "refunds": [
            {
                "at": _instant(r.created_at),
                "invoice": numbers[r.invoice_id],
                "attempt": p.number,
                "amount": r.amount.to_decimal_string(),
                "currency": r.amount.currency.code,
                "status": r.status.value,
            }
            for p in payments
            if p.status is PaymentStatus.SUCCEEDED
            for r in engine.refunds(p.id)
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
