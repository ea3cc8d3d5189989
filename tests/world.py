"""A tiny in-memory world that drives the pure domain the way the engine will.

It issues invoices with gap-free numbers, consumes and grants credit, makes payment attempts whose
results a test scripts per attempt, and records every event and every status change. Domain tests
and property tests share it so that each exercises whole billing histories, not single calls.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from billing.domain.catalog import Plan
from billing.domain.customers import Customer
from billing.domain.events import Event
from billing.domain.exchange import ExchangeRates
from billing.domain.invoices import Invoice, InvoiceStatus, invoice_number
from billing.domain.ledger import CreditBalance
from billing.domain.money import Money
from billing.domain.payments import PaymentAttempt, PaymentResult, PaymentStatus
from billing.domain.plan_changes import PlanChange, change_plan
from billing.domain.proration import ProrationBehavior, ProrationUnit
from billing.domain.renewals import advance
from billing.domain.subscriptions import (
    Outcome,
    Subscription,
    SubscriptionStatus,
    cancel,
    pause,
    payment_failed,
    payment_succeeded,
    replace_payment_method,
    resume,
    subscribe,
)
from billing.domain.taxes import TaxRate

Payer = Callable[[Invoice, int], PaymentResult]


def approve(invoice: Invoice, attempt: int) -> PaymentResult:
    return PaymentResult.succeeded(reference=f"ch-{invoice.id}-{attempt}")


@dataclass
class World:
    customer: Customer
    plan: Plan
    now: datetime
    pay: Payer = approve
    rates: ExchangeRates | None = None
    unit: ProrationUnit = ProrationUnit.SECOND
    credit: CreditBalance | None = None
    subscription: Subscription | None = None
    invoices: dict[str, Invoice] = field(default_factory=dict)
    attempts: list[PaymentAttempt] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    statuses: list[tuple[SubscriptionStatus, SubscriptionStatus]] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.credit is None:
            self.credit = CreditBalance.empty(self.plan.billing_currency)

    # -- commands -------------------------------------------------------------------------
    def subscribe(self, **kwargs: object) -> Subscription:
        outcome = subscribe(
            id="sub_1", customer=self.customer, plan=self.plan, now=self.now, **kwargs
        )  # type: ignore[arg-type]
        self.subscription = outcome.subscription
        self.events.extend(outcome.events)
        self.run_until(self.now)
        return self.sub

    @property
    def sub(self) -> Subscription:
        assert self.subscription is not None
        return self.subscription

    def run_until(self, when: datetime) -> None:
        """Bill everything that falls due up to ``when``, in order, then move the clock there."""
        while True:
            outcome = advance(
                self.sub, now=when, credit=self.balance, rates=self.rates, unit=self.unit
            )
            if outcome is None:
                break
            at = self.sub.due_at
            assert at is not None
            self.now = max(self.now, at)
            self.apply(outcome, at)
        self.now = max(self.now, when)

    def change_plan(
        self, plan: Plan, behavior: ProrationBehavior = ProrationBehavior.CARRY_DEBT
    ) -> PlanChange:
        unpaid = [
            invoice.id
            for invoice in self.invoices.values()
            if invoice.status in (InvoiceStatus.OPEN, InvoiceStatus.UNCOLLECTIBLE)
        ]
        change = change_plan(
            self.sub,
            plan,
            at=self.now,
            behavior=behavior,
            unit=self.unit,
            rates=self.rates,
            credit=self.balance,
            unpaid=unpaid,
        )
        self.apply(change.outcome, self.now)
        return change

    def cancel(self, at_period_end: bool = True) -> None:
        outcome = cancel(self.sub, at=self.now, at_period_end=at_period_end, credit=self.balance)
        self.apply(outcome, self.now)

    def pause(self, resume_at: datetime | None = None) -> None:
        self.apply(pause(self.sub, at=self.now, resume_at=resume_at), self.now)

    def resume(self) -> None:
        self.apply(resume(self.sub, at=self.now), self.now)
        self.run_until(self.now)

    def replace_payment_method(self, pay: Payer) -> None:
        self.pay = pay
        self.apply(replace_payment_method(self.sub, at=self.now), self.now)
        self.run_until(self.now)

    def grant_credit(self, amount: Money) -> None:
        assert self.credit is not None
        self.credit = self.credit.grant(amount)

    # -- plumbing -------------------------------------------------------------------------
    @property
    def balance(self) -> Money:
        """The customer's credit balance."""
        assert self.credit is not None
        return self.credit.amount

    def apply(self, outcome: Outcome, at: datetime) -> None:
        before = self.sub.status
        self.subscription = outcome.subscription
        if before is not self.sub.status:
            self.statuses.append((before, self.sub.status))
        self.events.extend(outcome.events)
        if outcome.credit_change is not None:
            assert self.credit is not None
            self.credit = self.credit.apply(outcome.credit_change)
        if outcome.updated_invoice is not None:
            self.invoices[outcome.updated_invoice.id] = outcome.updated_invoice
        if outcome.invoice is not None:
            sequence = len(self.invoices) + 1
            draft = Invoice.from_draft(outcome.invoice, id=f"in_{sequence}", at=at)
            invoice, events = draft.finalize(number=invoice_number("INV", sequence), at=at)
            self.invoices[invoice.id] = invoice
            self.events.extend(events)
            if invoice.status is InvoiceStatus.OPEN:
                self.attempt(invoice, at)
        if outcome.retry_invoice_id is not None:
            self.attempt(self.invoices[outcome.retry_invoice_id], at)

    def attempt(self, invoice: Invoice, at: datetime) -> None:
        number = 1 + sum(1 for a in self.attempts if a.invoice_id == invoice.id)
        attempt = PaymentAttempt(
            id=f"pay_{len(self.attempts) + 1}",
            invoice_id=invoice.id,
            number=number,
            amount=invoice.total,
            created_at=at,
        )
        result = self.pay(invoice, number)
        attempt, events = attempt.record(result, at=at)
        self.attempts.append(attempt)
        self.events.extend(events)
        if result.status is PaymentStatus.SUCCEEDED:
            self.apply(payment_succeeded(self.sub, invoice, at=at), at)
        elif result.status is PaymentStatus.FAILED:
            assert result.decline is not None
            outcome = payment_failed(
                self.sub,
                invoice,
                attempt=number,
                decline=result.decline,
                at=at,
                credit=self.balance,
            )
            self.apply(outcome, at)

    # -- reading --------------------------------------------------------------------------
    def issued(self) -> list[Invoice]:
        return sorted(self.invoices.values(), key=lambda i: int(i.id.split("_")[1]))

    def names(self) -> list[str]:
        return [event.name for event in self.events]


def iva(percent: str = "19", inclusive: bool = False) -> TaxRate:
    return TaxRate.of("IVA", percent, inclusive=inclusive)
