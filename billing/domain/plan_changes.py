"""Plan changes, with proration (on by default, as in QVO).

Inside a running period, changing plan at ``t`` is worth the new plan for the rest of the period
minus the unused rest of the old one (:func:`billing.domain.proration.quote`). Then:

* **upgrade** (worth more than zero): by default the difference becomes subscription debt,
  collected with the next renewal and taxed then (QVO's ``debt``); with
  :attr:`ProrationBehavior.INVOICE_NOW` it is invoiced at once, taxed, after the customer's credit;
* **downgrade** (worth less than zero): the difference first cancels any debt still carried from an
  earlier change; what is left is given to the customer as credit, tax included (the customer paid
  the tax on it), and taken off the next charges. Credit comes only from time that was paid: while
  an invoice of the subscription is unpaid (a payment pending, awaiting the customer's action,
  unknown, or declined and in dunning), the credit is held back until those invoices are paid, and
  forfeited if one of them is written off or voided (:class:`~billing.domain.ledger.HeldCredit`);
* ``prorate=False`` on the subscription, or :attr:`ProrationBehavior.NONE`, changes the plan with
  no adjustment.

A change before the first period is billed (scheduled, trialing) swaps the plan with no
adjustment; the first invoice uses the new plan. The new plan must be active and bill on the same
interval in the same currency. Unused time is credited at the price the period was billed at
(:attr:`~billing.domain.subscriptions.Subscription.period_price`): for a UF plan, the rate of the
day it was billed, not the rate of the day of the change. :func:`change_plan` is pure, so calling
it and discarding the result is the preview: the lines it returns are exactly those the change
makes.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, replace
from datetime import datetime

from billing.domain import _checks
from billing.domain.catalog import Plan
from billing.domain.errors import (
    IllegalTransition,
    InvalidArgument,
    PlanChangeNotAllowed,
    PlanUnavailable,
)
from billing.domain.events import CreditGranted, CreditSource, Event, SubscriptionPlanChanged
from billing.domain.exchange import ExchangeRates
from billing.domain.invoices import InvoiceDraft, InvoiceLine, InvoiceReason, compose
from billing.domain.ledger import DebtItem, DebtKind, HeldCredit
from billing.domain.money import Money
from billing.domain.proration import ProrationBehavior, ProrationQuote, ProrationUnit, quote
from billing.domain.subscriptions import (
    Outcome,
    Subscription,
    SubscriptionStatus,
    excess_credit,
    require_current,
)

_S = SubscriptionStatus


@dataclass(frozen=True, slots=True, kw_only=True)
class PlanChange:
    """A plan change: the new subscription, the proration lines, and what they turned into."""

    subscription: Subscription
    event: SubscriptionPlanChanged
    quote: ProrationQuote | None
    """The proration, or ``None`` when the change makes no adjustment."""
    debt_added: Money
    credit_granted: Money
    """Credit given now for paid, unused time."""
    credit_held: Money
    """Credit for unused time held back until the subscription's unpaid invoices are paid."""
    invoice: InvoiceDraft | None = None
    """An invoice to issue now (upgrade with :attr:`ProrationBehavior.INVOICE_NOW`)."""
    credit_change: Money | None = None
    """The net change to the customer's credit balance (granted, or used by the invoice)."""
    credit_events: tuple[Event, ...] = ()

    @property
    def outcome(self) -> Outcome:
        """The change as the uniform result every subscription operation returns."""
        return Outcome(
            subscription=self.subscription,
            events=(self.event, *self.credit_events),
            invoice=self.invoice,
            credit_change=self.credit_change,
        )

    @property
    def lines(self) -> tuple[InvoiceLine, ...]:
        """The exact lines the change makes: the invoice's, or the proration lines."""
        if self.invoice is not None:
            return self.invoice.lines
        return self.quote.lines if self.quote is not None else ()


def change_plan(
    subscription: Subscription,
    plan: Plan,
    *,
    at: datetime,
    behavior: ProrationBehavior = ProrationBehavior.CARRY_DEBT,
    unit: ProrationUnit = ProrationUnit.SECOND,
    rates: ExchangeRates | None = None,
    credit: Money | None = None,
    unpaid: Collection[str] = (),
) -> PlanChange:
    """Move ``subscription`` to ``plan`` at ``at``; see the module docstring for the rules.

    ``credit`` is the customer's credit balance, used only by an invoice made at once; ``unpaid``
    names the subscription's invoices not paid yet (credit for unused time waits for them).
    """
    s = subscription
    at = require_current(s, at)
    if not isinstance(plan, Plan):
        raise InvalidArgument("plan", "must be a Plan", plan)
    behavior = _checks.member(ProrationBehavior, behavior, "behavior")
    unit = _checks.member(ProrationUnit, unit, "unit")
    if s.status not in (_S.SCHEDULED, _S.TRIALING, _S.ACTIVE):
        raise IllegalTransition("subscription", s.id, s.status, "change plan")
    if not plan.is_active:
        raise PlanUnavailable(plan.code)
    if plan.interval != s.plan.interval:
        raise PlanChangeNotAllowed(
            "plan", f"must bill every {s.plan.interval} like {s.plan.code}", plan.code
        )
    if plan.billing_currency != s.plan.billing_currency:
        raise PlanChangeNotAllowed(
            "plan", f"must charge in {s.plan.billing_currency} like {s.plan.code}", plan.code
        )
    currency = plan.billing_currency
    zero = Money.zero(currency)
    changed = replace(s, plan=plan)
    period = s.current_period
    if (
        s.status is not _S.ACTIVE
        or period is None
        or not s.prorate
        or behavior is ProrationBehavior.NONE
    ):
        return _result(s, changed, at, None)
    day = at.astimezone(s.timezone).date()
    new_price = plan.price_on(day, rates)
    proration = quote(
        old_name=s.plan.name,
        old_price=s.period_price if s.period_price is not None else s.plan.price_on(day, rates),
        new_name=plan.name,
        new_price=new_price,
        period=period,
        at=at,
        unit=unit,
        timezone=s.timezone,
    )
    changed = replace(changed, period_price=new_price)
    net = proration.net
    if net.is_positive() and behavior is ProrationBehavior.INVOICE_NOW:
        lines, credit_change = compose(
            proration.lines,
            currency=currency,
            tax=s.tax,
            credit=credit if credit is not None else zero,
        )
        draft = InvoiceDraft(
            customer_id=s.customer_id,
            subscription_id=s.id,
            currency=currency,
            reason=InvoiceReason.PLAN_CHANGE,
            period=proration.period,
            lines=lines,
        )
        excess = excess_credit(s, credit_change, at)
        return _result(
            s, changed, at, proration, invoice=draft, credit_change=credit_change, events=excess
        )
    if net.is_positive():
        debt = DebtItem(
            kind=DebtKind.PRORATION,
            amount=net,
            description=f"Plan change from {s.plan.name} to {plan.name}",
            period=proration.period,
        )
        changed = replace(changed, debt=(*s.debt, debt))
        return _result(s, changed, at, proration, debt_added=net)
    remaining_debt, left = _offset_proration_debt(s.debt, -net)
    canceled = -net - left
    earned = s.tax.gross(left) if s.tax is not None and left.is_positive() else left
    changed = replace(changed, debt=remaining_debt)
    description = f"Unused time on {s.plan.name} after the change to {plan.name}"
    if earned.is_positive() and unpaid:
        held = HeldCredit(amount=earned, waiting_on=tuple(unpaid), description=description)
        changed = replace(changed, held_credit=(*s.held_credit, held))
        return _result(s, changed, at, proration, debt_canceled=canceled, credit_held=earned)
    granted: tuple[Event, ...] = ()
    if earned.is_positive():
        granted = (
            CreditGranted(
                at=at,
                customer_id=s.customer_id,
                amount=earned,
                reason=description,
                source=CreditSource.PLAN_CHANGE,
                subscription_id=s.id,
            ),
        )
    return _result(
        s,
        changed,
        at,
        proration,
        debt_canceled=canceled,
        credit_granted=earned,
        credit_change=earned,
        events=granted,
    )


def _offset_proration_debt(
    debt: tuple[DebtItem, ...], amount: Money
) -> tuple[tuple[DebtItem, ...], Money]:
    """Cancel up to ``amount`` of proration debt; returns the debt left and what ``amount`` left."""
    kept: list[DebtItem] = []
    for item in debt:
        if item.kind is DebtKind.PRORATION and amount.is_positive():
            taken = min(item.amount, amount)
            amount -= taken
            if taken != item.amount:
                kept.append(replace(item, amount=item.amount - taken))
        else:
            kept.append(item)
    return tuple(kept), amount


def _result(
    before: Subscription,
    after: Subscription,
    at: datetime,
    proration: ProrationQuote | None,
    *,
    debt_added: Money | None = None,
    debt_canceled: Money | None = None,
    credit_granted: Money | None = None,
    credit_held: Money | None = None,
    invoice: InvoiceDraft | None = None,
    credit_change: Money | None = None,
    events: tuple[Event, ...] = (),
) -> PlanChange:
    zero = Money.zero(after.plan.billing_currency)
    event = SubscriptionPlanChanged(
        at=at,
        subscription_id=before.id,
        from_plan=before.plan.code,
        to_plan=after.plan.code,
        debt_added=debt_added or zero,
        debt_canceled=debt_canceled or zero,
        credit_granted=credit_granted or zero,
        credit_held=credit_held or zero,
    )
    return PlanChange(
        subscription=after,
        event=event,
        quote=proration,
        debt_added=debt_added or zero,
        credit_granted=credit_granted or zero,
        credit_held=credit_held or zero,
        invoice=invoice,
        credit_change=None if credit_change is None or credit_change.is_zero() else credit_change,
        credit_events=events,
    )
