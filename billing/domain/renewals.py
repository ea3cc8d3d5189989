"""What falls due for a subscription as time passes, and what happens then.

:func:`advance` processes the one thing that falls due next (at ``subscription.due_at``) if it is
due by ``now``, and returns its :class:`~billing.domain.subscriptions.Outcome`. Calling it until it
returns ``None`` bills everything due, in order: a scheduled start (which may open a trial), a trial
end, a renewal, a dunning retry, a cancellation at period end, the end of the cycle count, a
scheduled resume, and the rest of a period after a resume.

Billing is in advance: period ``k`` is invoiced at its start, for its whole length. Each invoice
carries the subscription's debt, is taxed with the subscription's rate, and consumes the
customer's credit before anything is charged. A period the customer's timezone skipped entirely
has no time in it and is not billed (:meth:`~billing.domain.periods.BillingCalendar.billable`).
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime

from billing.domain import _checks
from billing.domain.errors import InvalidArgument
from billing.domain.events import (
    Event,
    SubscriptionActivated,
    SubscriptionDebtInvoiced,
    SubscriptionEnded,
    SubscriptionRenewed,
    SubscriptionTrialStarted,
)
from billing.domain.exchange import ExchangeRates
from billing.domain.invoices import InvoiceDraft, InvoiceLine, InvoiceReason, LineKind, compose
from billing.domain.ledger import FinalDebt
from billing.domain.money import Money
from billing.domain.periods import Period
from billing.domain.proration import ProrationUnit, remaining_fraction
from billing.domain.subscriptions import (
    Dunning,
    Outcome,
    Subscription,
    SubscriptionStatus,
    cancel_now,
    excess_credit,
    move,
    resume_due,
    stopped,
)

_S = SubscriptionStatus


def advance(
    subscription: Subscription,
    *,
    now: datetime,
    credit: Money | None = None,
    rates: ExchangeRates | None = None,
    unit: ProrationUnit = ProrationUnit.SECOND,
    final_debt: FinalDebt = FinalDebt.INVOICE,
) -> Outcome | None:
    """Process what falls due next, if it is due by ``now``; ``None`` when nothing is.

    ``credit`` is the customer's credit balance in the plan's charge currency (consumed by an
    invoice this step makes); ``rates`` converts the price of a plan priced in another currency;
    ``unit`` counts the part of a period billed after a resume; ``final_debt`` says what becomes of
    the debt of a subscription that stops.
    """
    now = _checks.aware("now", now)
    if credit is not None and not isinstance(credit, Money):
        raise InvalidArgument("credit", "must be Money in the plan's charge currency", credit)
    unit = _checks.member(ProrationUnit, unit, "unit")
    at = subscription.due_at
    if at is None or at > now:
        return None
    s = subscription
    for collection in s.collections:
        if collection.retry_at == at:
            others = tuple(c for c in s.collections if c is not collection)
            waiting = replace(collection, retry_at=None)
            return Outcome(
                subscription=replace(s, collections=(*others, waiting)),
                retry_invoice_id=collection.invoice_id,
            )
    final_debt = FinalDebt(final_debt)
    bill = _Biller(s, at, credit, rates, unit)

    def stop() -> Outcome:
        return cancel_now(s, at, credit=credit, final_debt=final_debt)

    def end() -> Outcome:
        return _end(s, at, credit, final_debt)

    match s.status:
        case _S.SCHEDULED if s.trial_end is not None:
            trialing = move(s, _S.TRIALING, "start a trial")
            started = SubscriptionTrialStarted(at=at, subscription_id=s.id, trial_end=s.trial_end)
            return Outcome(subscription=trialing, events=(started,))
        case _S.SCHEDULED:
            return bill.period(0)
        case _S.TRIALING if s.cancel_at_period_end:
            return stop()
        case _S.TRIALING:
            return bill.period(0)
        case _S.ACTIVE if s.resume_from is not None:
            if s.ends_at is not None and at >= s.ends_at:
                return end()
            return bill.period(s.calendar.index_at(at), rest_from=at)
        case _S.ACTIVE | _S.PAST_DUE:
            if s.dunning is not None and s.dunning.retry_at == at:
                return _retry(s, s.dunning)
            if s.cancel_at_period_end:
                return stop()
            if s.ends_at is not None and at >= s.ends_at:
                return end()
            assert s.current_index is not None
            return bill.period(s.current_index + 1)
        case _S.PAUSED:
            if s.ends_at is not None and at >= s.ends_at:
                return end()
            return resume_due(s, at)
        case _S.UNPAID if s.dunning is not None and s.dunning.retry_at == at:
            return _retry(s, s.dunning)
        case _S.UNPAID:
            return stop()  # a cancellation at the end of the period it was in
    return None  # pragma: no cover - a final status has only collections due


class _Biller:
    """Makes the invoice of one period for one subscription at one instant."""

    def __init__(
        self,
        subscription: Subscription,
        at: datetime,
        credit: Money | None,
        rates: ExchangeRates | None,
        unit: ProrationUnit,
    ) -> None:
        self.s = subscription
        self.at = at
        self.credit = credit
        self.rates = rates
        self.unit = unit

    def period(self, k: int, rest_from: datetime | None = None) -> Outcome:
        """Invoice period ``k`` (or its rest from ``rest_from``) and mark it billed."""
        s, plan = self.s, self.s.plan
        k = s.calendar.billable(k)
        full = s.calendar.period(k)
        covered = full if rest_from is None else Period(rest_from, full.end)
        period_price = plan.price_on(self.at.astimezone(s.timezone).date(), self.rates)
        price = period_price
        if rest_from is not None and s.prorate:
            price = price.scaled(
                remaining_fraction(full, rest_from, unit=self.unit, timezone=s.timezone)
            )
        charge = InvoiceLine(
            kind=LineKind.PLAN,
            description=f"{plan.name}, {_dates(covered, s)}",
            amount=price,
            period=covered,
            taxable=True,
        )
        currency = plan.billing_currency
        lines, credit_change = compose(
            [charge, *(item.as_line() for item in s.debt)],
            currency=currency,
            tax=s.tax,
            credit=self.credit if self.credit is not None else Money.zero(currency),
        )
        if rest_from is not None:
            reason = InvoiceReason.RESUME
        else:
            reason = InvoiceReason.SUBSCRIPTION_START if k == 0 else InvoiceReason.RENEWAL
        draft = InvoiceDraft(
            customer_id=s.customer_id,
            subscription_id=s.id,
            currency=currency,
            reason=reason,
            period=covered,
            lines=lines,
        )
        status = _S.PAST_DUE if s.status is _S.PAST_DUE else _S.ACTIVE
        billed = replace(
            move(s, status, "bill a period"),
            current_index=k,
            debt=(),
            resume_from=None,
            period_price=period_price,
        )
        events: list[Event] = []
        if s.status in (_S.SCHEDULED, _S.TRIALING):
            events.append(SubscriptionActivated(at=self.at, subscription_id=s.id))
        elif reason is InvoiceReason.RENEWAL:
            events.append(
                SubscriptionRenewed(at=self.at, subscription_id=s.id, period_index=k, period=full)
            )
        if s.debt:
            events.append(
                SubscriptionDebtInvoiced(at=self.at, subscription_id=s.id, amount=s.debt_total)
            )
        events.extend(excess_credit(s, credit_change, self.at))
        return Outcome(
            subscription=billed,
            events=tuple(events),
            invoice=draft,
            credit_change=None if credit_change.is_zero() else credit_change,
        )


def _dates(period: Period, subscription: Subscription) -> str:
    start, end = (
        moment.astimezone(subscription.timezone).date() for moment in (period.start, period.end)
    )
    return f"{start.isoformat()} to {end.isoformat()}"


def _retry(subscription: Subscription, dunning: Dunning) -> Outcome:
    """A retry is due: the engine makes the next payment attempt on the invoice."""
    waiting = replace(subscription, dunning=replace(dunning, retry_at=None))
    return Outcome(subscription=waiting, retry_invoice_id=dunning.invoice_id)


def _end(
    subscription: Subscription, at: datetime, credit: Money | None, final_debt: FinalDebt
) -> Outcome:
    ended = replace(move(subscription, _S.ENDED, "end"), ended_at=at, resume_from=None)
    event = SubscriptionEnded(at=at, subscription_id=subscription.id)
    return stopped(ended, at, (event,), credit=credit, final_debt=final_debt)
