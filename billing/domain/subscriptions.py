"""Subscriptions: the state machine, and the operations a customer or a payment can trigger.

States and every allowed move (:data:`TRANSITIONS` is the single source; anything else raises
:class:`~billing.domain.errors.IllegalTransition`)::

    scheduled ─start, trial─> trialing ─trial ends, period 0 billed─> active
    scheduled ─start, no trial, period 0 billed─────────────────────> active

    active ───payment declined, retries left───> past_due ──retry paid──> active
    active, past_due ─retries run out, policy "unpaid"──> unpaid ─new card, paid─> active
    active, past_due ─retries run out, policy "canceled"─> canceled
    active, past_due ─retries run out, policy "past_due"─> past_due (balance carried as debt)
    active ─pause─> paused ─resume─> active
    active, past_due, paused ─cycle count reached─> ended
    any but canceled and ended ─cancel (now, or at the end of the period)─> canceled

* ``scheduled``: created, its start not yet reached (QVO's ``inactive``).
* ``trialing``: inside a trial; nothing is charged until it ends.
* ``active``: its current period is billed; a renewal's first payment may be in flight.
* ``past_due``: a payment failed and retries are scheduled (or, with the ``past_due`` policy, the
  unpaid balance rides on the next invoice).
* ``unpaid``: retries ran out; billing stops until the payment method is replaced and the
  outstanding invoice is paid, which reactivates it.
* ``paused``: billing stopped by request; resuming bills the rest of the period then current.
* ``canceled`` and ``ended`` are final. A final subscription holds no debt: it is invoiced on a
  final invoice when the subscription stops (or written off, :class:`~billing.domain.ledger.
  FinalDebt`), and its open invoices go on being collected on their retry schedules.

Every invoice that is declined follows the plan's retry policy until it is paid or the policy
resolves it. The subscription's status follows the one invoice its dunning is about (the first
declined while it was active or past due); any other (declined while paused, while another was in
dunning, or left open when the subscription stopped) is collected on its own schedule in
:attr:`Subscription.collections`, without changing the status.

Every operation is a pure function: it takes the subscription and ``at`` and returns an
:class:`Outcome` (the new subscription, the events, and any invoice to issue) without changing
anything. Operations take effect at ``at``; billing that fell due before ``at`` must be run first
(:func:`billing.domain.renewals.advance`), and an operation refuses to jump over it.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime
from enum import StrEnum
from zoneinfo import ZoneInfo

from dateutil.relativedelta import relativedelta

from billing.domain import _checks
from billing.domain.catalog import Plan
from billing.domain.customers import Customer
from billing.domain.dunning import AfterRetries
from billing.domain.errors import IllegalTransition, InvalidArgument, PlanUnavailable
from billing.domain.events import (
    CreditForfeited,
    CreditGranted,
    CreditSource,
    Event,
    InvoiceAwaitingPaymentMethod,
    SubscriptionActivated,
    SubscriptionCanceled,
    SubscriptionCancelScheduled,
    SubscriptionCreated,
    SubscriptionDebtInvoiced,
    SubscriptionDebtWrittenOff,
    SubscriptionPastDue,
    SubscriptionPaused,
    SubscriptionResumed,
    SubscriptionUnpaid,
)
from billing.domain.invoices import Invoice, InvoiceDraft, InvoiceReason, InvoiceStatus, compose
from billing.domain.ledger import DebtItem, DebtKind, FinalDebt, HeldCredit
from billing.domain.money import Money
from billing.domain.payments import DeclineKind
from billing.domain.periods import BillingCalendar, Period, wall_shift
from billing.domain.taxes import TaxRate


class SubscriptionStatus(StrEnum):
    """Where a subscription is in its life; see the module docstring for the diagram."""

    SCHEDULED = "scheduled"
    """Created; its start is not reached yet."""
    TRIALING = "trialing"
    """In its trial: nothing is charged until the trial ends."""
    ACTIVE = "active"
    """Billing normally."""
    PAST_DUE = "past_due"
    """A payment failed; dunning is under way."""
    UNPAID = "unpaid"
    """Dunning ran out; billing stopped until it is paid with a new payment method."""
    PAUSED = "paused"
    """Billing stopped by request until resumed."""
    CANCELED = "canceled"
    """Canceled (final)."""
    ENDED = "ended"
    """Ran its cycle count out (final)."""


_S = SubscriptionStatus
TRANSITIONS: dict[SubscriptionStatus, frozenset[SubscriptionStatus]] = {
    _S.SCHEDULED: frozenset({_S.TRIALING, _S.ACTIVE, _S.CANCELED}),
    _S.TRIALING: frozenset({_S.ACTIVE, _S.CANCELED}),
    _S.ACTIVE: frozenset({_S.PAST_DUE, _S.UNPAID, _S.PAUSED, _S.CANCELED, _S.ENDED}),
    _S.PAST_DUE: frozenset({_S.ACTIVE, _S.UNPAID, _S.CANCELED, _S.ENDED}),
    _S.UNPAID: frozenset({_S.ACTIVE, _S.CANCELED}),
    _S.PAUSED: frozenset({_S.ACTIVE, _S.CANCELED, _S.ENDED}),
    _S.CANCELED: frozenset(),
    _S.ENDED: frozenset(),
}
"""Every status change the engine can make; staying in the same status is always allowed."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Dunning:
    """The collection of one invoice after a failed payment."""

    invoice_id: str
    failed_attempts: int
    retry_at: datetime | None
    """When the next attempt is due; ``None`` while one is in flight, or once retries ran out and
    the invoice waits for a new payment method."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Subscription:
    """A customer's subscription to a plan; change it only through this module's operations."""

    id: str
    customer_id: str
    plan: Plan
    timezone: ZoneInfo
    status: SubscriptionStatus
    created_at: datetime
    start: datetime
    trial_end: datetime | None
    """The first instant after the trial, or ``None`` without a trial."""
    cycles: int | None
    """The number of periods it lasts, or ``None`` until canceled."""
    tax: TaxRate | None = None
    prorate: bool = True
    current_index: int | None = None
    """The index of the last period billed (0 is the first), ``None`` before the first."""
    cancel_at_period_end: bool = False
    canceled_at: datetime | None = None
    ended_at: datetime | None = None
    paused_at: datetime | None = None
    resume_at: datetime | None = None
    """When a pause ends by itself, if it does."""
    resume_from: datetime | None = None
    """Billing resumes at this instant with the rest of the period then current."""
    dunning: Dunning | None = None
    """The collection that drives the status (``past_due``, ``unpaid``)."""
    collections: tuple[Dunning, ...] = ()
    """Other declined invoices of this subscription, each collected on its own retry schedule."""
    debt: tuple[DebtItem, ...] = ()
    held_credit: tuple[HeldCredit, ...] = ()
    """Credit a downgrade earned for time not paid yet (see :class:`HeldCredit`)."""
    period_price: Money | None = None
    """The price the current period's plan was billed at, in the charge currency: what unused
    time is credited at on a plan change (for a UF plan, that day's rate, not the change's)."""
    not_before: datetime | None = None
    """Nothing falls due before this instant: a renewal held back by dunning is billed when the
    dunning ends, not at the period's end that passed meanwhile."""
    _due: list[datetime | None] = field(default_factory=list, init=False, repr=False, compare=False)
    """:attr:`due_at`, once worked out: a billing step asks for it several times, and each time
    is a few timezone conversions. Not a value of the subscription (a copy starts without it)."""

    @property
    def anchor(self) -> datetime:
        """The instant periods are counted from: the end of the trial, or the start."""
        return self.trial_end or self.start

    @property
    def calendar(self) -> BillingCalendar:
        return BillingCalendar.of(self.anchor, self.plan.interval, self.timezone)

    @property
    def ends_at(self) -> datetime | None:
        """When the cycle count runs out: the end of period ``cycles - 1``."""
        return None if self.cycles is None else self.calendar.boundary(self.cycles)

    @property
    def current_period(self) -> Period | None:
        """The last period billed (the one being served while active)."""
        return None if self.current_index is None else self.calendar.period(self.current_index)

    @property
    def debt_total(self) -> Money:
        return sum((item.amount for item in self.debt), Money.zero(self.plan.billing_currency))

    @property
    def due_at(self) -> datetime | None:
        """When something next falls due for this subscription, or ``None`` if nothing will."""
        if not self._due:
            self._due.append(_earliest(self._status_due(), *(c.retry_at for c in self.collections)))
        return self._due[0]

    def _status_due(self) -> datetime | None:
        period = self.current_period
        retry_at = self.dunning.retry_at if self.dunning else None
        match self.status:
            case _S.SCHEDULED:
                return self.start
            case _S.TRIALING:
                return self.trial_end
            case _S.ACTIVE:
                assert period is not None
                return _latest(self.resume_from or period.end, self.not_before)
            case _S.PAST_DUE:
                assert period is not None
                # while a retry is pending, the renewal waits; a cancellation or an end does not
                waits = self.dunning is not None and not self.cancel_at_period_end
                ends = period.end == self.ends_at
                end = _latest(period.end, self.not_before)
                return _earliest(retry_at, None if waits and not ends else end)
            case _S.PAUSED:
                return _earliest(self.resume_at, self.ends_at)
            case _S.UNPAID:
                cancel_at = period.end if period and self.cancel_at_period_end else None
                return _earliest(retry_at, cancel_at)
            case _:
                return None

    def is_final(self) -> bool:
        return self.status in (_S.CANCELED, _S.ENDED)


def _earliest(*times: datetime | None) -> datetime | None:
    known = [t for t in times if t is not None]
    return min(known) if known else None


def _latest(first: datetime, second: datetime | None) -> datetime:
    return first if second is None else max(first, second)


@dataclass(frozen=True, slots=True, kw_only=True)
class Outcome:
    """What an operation decided: the new subscription and what else must happen with it."""

    subscription: Subscription
    events: tuple[Event, ...] = ()
    invoice: InvoiceDraft | None = None
    """A new invoice to number and finalize."""
    credit_change: Money | None = None
    """The change to the customer's credit balance: negative when used, positive when granted."""
    updated_invoice: Invoice | None = None
    """An existing invoice whose status changed."""
    retry_invoice_id: str | None = None
    """A payment attempt on this invoice is due now."""


def move(subscription: Subscription, to: SubscriptionStatus, action: str) -> Subscription:
    """The subscription in status ``to``, if the transition table allows it."""
    if to is not subscription.status and to not in TRANSITIONS[subscription.status]:
        raise IllegalTransition("subscription", subscription.id, subscription.status, action)
    return replace(subscription, status=to)


def require_current(subscription: Subscription, at: datetime) -> datetime:
    """``at`` in UTC; refuses an operation at ``at`` while billing due by then has not been run."""
    at = _checks.aware("at", at)
    due = subscription.due_at
    if due is not None and due <= at:
        raise InvalidArgument(
            "at",
            f"billing due at {due.isoformat()} must be run before an operation at this time",
            at,
        )
    return at


def subscribe(
    *,
    id: str,
    customer: Customer,
    plan: Plan,
    now: datetime,
    start: datetime | None = None,
    trial_end: datetime | None = None,
    cycles: int | None = None,
    tax: TaxRate | None = None,
    prorate: bool = True,
) -> Outcome:
    """A new subscription of ``customer`` to ``plan``, ``scheduled`` to start at ``start``.

    Billing starts with the first call to :func:`~billing.domain.renewals.advance` at or after
    ``start`` (the engine makes it at once when ``start`` is now). The trial comes from an explicit
    ``trial_end`` if one is given (one not after ``start`` or ``now`` means no trial), otherwise
    from the plan's trial days, counted on the customer's wall clock. ``cycles`` overrides the
    plan's default cycle count. A ``start`` in the past is refused.
    """
    _checks.identifier("id", id)
    now = _checks.aware("now", now)
    start = now if start is None else _checks.aware("start", start)
    if start < now:
        # QVO: the start must be in the future. A past start would bill (and charge) every
        # period since then in one call, and skip the checks made for a start now.
        raise InvalidArgument("start", "must not be in the past (leave it out to start now)", start)
    if not plan.is_active:
        raise PlanUnavailable(plan.code)
    if trial_end is not None:
        trial_end = _checks.aware("trial_end", trial_end)
        trial = trial_end if trial_end > max(start, now) else None
    elif plan.trial_days:
        trial = wall_shift(start, customer.timezone, relativedelta(days=plan.trial_days))
    else:
        trial = None
    if cycles is not None:
        _checks.integer("cycles", cycles, minimum=1)
    if tax is not None and not isinstance(tax, TaxRate):
        raise InvalidArgument("tax", "must be a TaxRate", tax)
    if not isinstance(prorate, bool):
        raise InvalidArgument("prorate", "must be true or false", prorate)
    subscription = Subscription(
        id=id,
        customer_id=customer.id,
        plan=plan,
        timezone=customer.timezone,
        status=_S.SCHEDULED,
        created_at=now,
        start=start,
        trial_end=trial,
        cycles=plan.cycles if cycles is None else cycles,
        tax=tax,
        prorate=prorate,
    )
    created = SubscriptionCreated(
        at=now,
        subscription_id=id,
        customer_id=customer.id,
        plan_code=plan.code,
        start=start,
        trial_end=trial,
    )
    return Outcome(subscription=subscription, events=(created,))


def cancel(
    subscription: Subscription,
    *,
    at: datetime,
    at_period_end: bool = True,
    credit: Money | None = None,
    final_debt: FinalDebt = FinalDebt.INVOICE,
) -> Outcome:
    """Cancel at the end of the current period (the default) or at once.

    A subscription that has no running period (scheduled, paused, unpaid, or past due with its
    renewal held back by dunning) is canceled at once whatever ``at_period_end`` says. A trial
    canceled at period end stops when the trial ends, without a charge. An invoice still open goes
    on being collected on its retry schedule, and the subscription's debt is invoiced on a final
    invoice (consuming ``credit``), or written off if ``final_debt`` says so.
    """
    at = require_current(subscription, at)
    if not isinstance(at_period_end, bool):
        raise InvalidArgument("at_period_end", "must be true or false", at_period_end)
    if subscription.is_final():
        raise IllegalTransition("subscription", subscription.id, subscription.status, "cancel")
    cancel_at = _period_end(subscription) if at_period_end else None
    if cancel_at is not None and cancel_at > at:
        if subscription.cancel_at_period_end:
            return Outcome(subscription=subscription)
        return Outcome(
            subscription=replace(subscription, cancel_at_period_end=True),
            events=(
                SubscriptionCancelScheduled(
                    at=at, subscription_id=subscription.id, cancel_at=cancel_at
                ),
            ),
        )
    return cancel_now(subscription, at, credit=credit, final_debt=final_debt)


def _period_end(subscription: Subscription) -> datetime | None:
    """The end of the running period (the trial's end while trialing), if one is running."""
    if subscription.status is _S.TRIALING:
        return subscription.trial_end
    if subscription.status in (_S.ACTIVE, _S.PAST_DUE) and subscription.current_period:
        return subscription.current_period.end
    return None


def cancel_now(
    subscription: Subscription,
    at: datetime,
    *,
    credit: Money | None = None,
    final_debt: FinalDebt = FinalDebt.INVOICE,
) -> Outcome:
    """Cancel at ``at``: billing stops; open invoices go on being collected; debt is settled."""
    canceled = replace(
        move(subscription, _S.CANCELED, "cancel"), canceled_at=at, resume_at=None, resume_from=None
    )
    event = SubscriptionCanceled(at=at, subscription_id=subscription.id)
    return stopped(canceled, at, (event,), credit=credit, final_debt=final_debt)


def stopped(
    subscription: Subscription,
    at: datetime,
    events: tuple[Event, ...],
    *,
    credit: Money | None,
    final_debt: FinalDebt,
) -> Outcome:
    """The outcome of a subscription that just became final (canceled or ended).

    Its dunning goes on as one of its :attr:`~Subscription.collections`, and its debt is invoiced
    on a final invoice (after the customer's ``credit``) or written off with an event: a final
    subscription holds no debt.
    """
    s = subscription
    if s.dunning is not None:
        s = replace(s, dunning=None, collections=(*s.collections, s.dunning))
    if not s.debt:
        return Outcome(subscription=s, events=events)
    owed = s.debt_total
    s = replace(s, debt=())
    if FinalDebt(final_debt) is FinalDebt.WRITE_OFF:
        written_off = SubscriptionDebtWrittenOff(at=at, subscription_id=s.id, amount=owed)
        return Outcome(subscription=s, events=(*events, written_off))
    currency = s.plan.billing_currency
    lines, credit_change = compose(
        [item.as_line() for item in subscription.debt],
        currency=currency,
        tax=s.tax,
        credit=credit if credit is not None else Money.zero(currency),
    )
    draft = InvoiceDraft(
        customer_id=s.customer_id,
        subscription_id=s.id,
        currency=currency,
        reason=InvoiceReason.FINAL,
        period=None,
        lines=lines,
    )
    invoiced = SubscriptionDebtInvoiced(at=at, subscription_id=s.id, amount=owed)
    return Outcome(
        subscription=s,
        events=(*events, invoiced, *excess_credit(s, credit_change, at)),
        invoice=draft,
        credit_change=None if credit_change.is_zero() else credit_change,
    )


def excess_credit(subscription: Subscription, change: Money, at: datetime) -> tuple[Event, ...]:
    """The event of charges that came to less than zero on an invoice (moved to credit)."""
    if not change.is_positive():
        return ()
    return (
        CreditGranted(
            at=at,
            customer_id=subscription.customer_id,
            amount=change,
            reason=f"charges below zero on subscription {subscription.id}",
            source=CreditSource.EXCESS,
            subscription_id=subscription.id,
        ),
    )


def pause(
    subscription: Subscription, *, at: datetime, resume_at: datetime | None = None
) -> Outcome:
    """Stop billing an active subscription, until :func:`resume` or ``resume_at``.

    The period already billed stays paid; no credit is given for its rest.
    """
    at = require_current(subscription, at)
    if subscription.status is not _S.ACTIVE or subscription.cancel_at_period_end:
        action = "pause (only an active subscription that is not canceling can be paused)"
        raise IllegalTransition("subscription", subscription.id, subscription.status, action)
    if resume_at is not None:
        resume_at = _checks.aware("resume_at", resume_at)
        if resume_at <= at:
            raise InvalidArgument("resume_at", "must be after the pause", resume_at)
    paused = replace(
        move(subscription, _S.PAUSED, "pause"), paused_at=at, resume_at=resume_at, resume_from=None
    )
    return Outcome(
        subscription=paused,
        events=(SubscriptionPaused(at=at, subscription_id=subscription.id, resume_at=resume_at),),
    )


def resume(subscription: Subscription, *, at: datetime) -> Outcome:
    """Resume a paused subscription at ``at``.

    If the period billed before the pause is still running, billing simply goes on at its end.
    Otherwise the period containing ``at`` is billed from ``at`` on (prorated, or in full when the
    subscription does not prorate) by the next :func:`~billing.domain.renewals.advance`.
    """
    at = require_current(subscription, at)
    return resume_due(subscription, at)


def resume_due(subscription: Subscription, at: datetime) -> Outcome:
    """Resume at ``at`` without checking for earlier due billing (a scheduled resume)."""
    if subscription.status is not _S.PAUSED:
        raise IllegalTransition("subscription", subscription.id, subscription.status, "resume")
    resumed = replace(
        move(subscription, _S.ACTIVE, "resume"),
        paused_at=None,
        resume_at=None,
        resume_from=_resume_point(subscription, at),
    )
    return Outcome(
        subscription=resumed, events=(SubscriptionResumed(at=at, subscription_id=subscription.id),)
    )


def _resume_point(subscription: Subscription, at: datetime) -> datetime | None:
    period = subscription.current_period
    return None if period is not None and at < period.end else at


def replace_payment_method(subscription: Subscription, *, at: datetime) -> Outcome:
    """Note a new payment method: every open invoice of the subscription is retried with it now.

    That is the invoice in dunning (this is how an ``unpaid`` subscription comes back: it is
    reactivated when that payment succeeds) and every other one still being collected, including
    those waiting for a new payment method and those of a subscription that has stopped.
    """
    at = _checks.aware("at", at)
    dunning = subscription.dunning
    if dunning is not None and subscription.status in (_S.PAST_DUE, _S.UNPAID):
        dunning = replace(dunning, retry_at=at)
    collections = tuple(replace(c, retry_at=at) for c in subscription.collections)
    if dunning == subscription.dunning and collections == subscription.collections:
        return Outcome(subscription=subscription)
    return Outcome(subscription=replace(subscription, dunning=dunning, collections=collections))


def payment_succeeded(subscription: Subscription, invoice: Invoice, *, at: datetime) -> Outcome:
    """An invoice of this subscription was paid: it settles, credit held for it is released, and
    a past due or unpaid subscription whose dunning it was becomes active again."""
    _check_invoice(subscription, invoice)
    at = _checks.aware("at", at)
    paid, invoice_events = invoice.pay(at=at)
    s = _without_collection(subscription, invoice.id)
    s, released, release_events = _release_held_credit(s, invoice.id, at)
    events: list[Event] = [*invoice_events, *release_events]
    dunning = s.dunning
    collecting_it = dunning is None or dunning.invoice_id == invoice.id
    if s.status not in (_S.PAST_DUE, _S.UNPAID) or not collecting_it:
        return Outcome(
            subscription=s, events=tuple(events), updated_invoice=paid, credit_change=released
        )
    resume_from = _resume_point(s, at) if s.status is _S.UNPAID else None
    active = replace(
        move(s, _S.ACTIVE, "reactivate"),
        dunning=None,
        resume_from=resume_from,
        not_before=at,
    )
    events.append(SubscriptionActivated(at=at, subscription_id=s.id))
    return Outcome(
        subscription=active, events=tuple(events), updated_invoice=paid, credit_change=released
    )


def payment_failed(
    subscription: Subscription,
    invoice: Invoice,
    *,
    attempt: int,
    decline: DeclineKind,
    at: datetime,
    credit: Money | None = None,
    final_debt: FinalDebt = FinalDebt.INVOICE,
) -> Outcome:
    """Attempt ``attempt`` on an invoice of this subscription was declined: run the dunning policy.

    A soft decline schedules the next retry; a hard decline, or the last attempt, applies the
    policy's outcome. For the invoice the subscription's dunning is about (the first declined
    while it was active or past due), the status follows: ``past_due`` while retries are left,
    then ``unpaid`` (the invoice stays open, billing stops), ``canceled`` (the invoice becomes
    uncollectible) or ``past_due`` (the invoice is voided and its balance becomes debt carried to
    the next invoice). Any other invoice is collected on its own schedule without changing the
    status, and when its retries run out it waits for a new payment method (``unpaid`` policy,
    with an ``invoice.awaiting_payment_method`` event), is written off (``canceled``), or is
    voided into debt (``past_due``; written off instead once the subscription has stopped).
    Credit held for an invoice that is written off or voided is forfeited.
    """
    _check_invoice(subscription, invoice)
    at = _checks.aware("at", at)
    DeclineKind(decline)
    s, dunning = subscription, subscription.dunning
    if invoice.status is not InvoiceStatus.OPEN:
        return Outcome(subscription=s)  # settled or written off already: nothing to collect
    if s.status is _S.UNPAID and dunning is not None and dunning.invoice_id == invoice.id:
        # a retry with a new payment method failed: it waits for another one
        return Outcome(subscription=replace(s, dunning=replace(dunning, failed_attempts=attempt)))
    decision = s.plan.retry_policy.decide(attempt=attempt, decline=decline, failed_at=at)
    leads = s.status in (_S.ACTIVE, _S.PAST_DUE) and (
        dunning is None or dunning.invoice_id == invoice.id
    )
    if not leads:
        return _collection_failed(s, invoice, attempt, decision.retry_at, decision.then, at)
    s = _without_collection(s, invoice.id)
    events: list[Event] = []
    if not decision.exhausted:
        past_due = replace(
            move(s, _S.PAST_DUE, "retry a payment"),
            dunning=Dunning(
                invoice_id=invoice.id, failed_attempts=attempt, retry_at=decision.retry_at
            ),
        )
        if s.status is not _S.PAST_DUE or dunning is None:
            events.append(_past_due(s, invoice, decision.retry_at, at))
        return Outcome(subscription=past_due, events=tuple(events))
    match decision.then:
        case AfterRetries.UNPAID:
            unpaid = replace(
                move(s, _S.UNPAID, "give up collecting"),
                dunning=Dunning(invoice_id=invoice.id, failed_attempts=attempt, retry_at=None),
            )
            events.append(SubscriptionUnpaid(at=at, subscription_id=s.id, invoice_id=invoice.id))
            return Outcome(subscription=unpaid, events=tuple(events))
        case AfterRetries.CANCELED:
            written_off, invoice_events = invoice.mark_uncollectible(at=at)
            s, forfeited = _forfeit_held_credit(replace(s, dunning=None), invoice.id, at)
            canceled = cancel_now(s, at, credit=credit, final_debt=final_debt)
            return replace(
                canceled,
                events=(*invoice_events, *forfeited, *canceled.events),
                updated_invoice=written_off,
            )
        case _:
            voided, invoice_events = invoice.void(at=at)
            s, forfeited = _forfeit_held_credit(s, invoice.id, at)
            past_due = replace(
                move(s, _S.PAST_DUE, "carry an unpaid balance"),
                dunning=None,
                debt=(*s.debt, _carried(invoice)),
                not_before=at,  # the renewal carrying it is made from now on, never backdated
            )
            events.extend(invoice_events)
            events.extend(forfeited)
            if s.status is not _S.PAST_DUE:
                events.append(_past_due(s, invoice, None, at))
            return Outcome(subscription=past_due, events=tuple(events), updated_invoice=voided)


def _collection_failed(
    s: Subscription,
    invoice: Invoice,
    attempt: int,
    retry_at: datetime | None,
    then: AfterRetries,
    at: datetime,
) -> Outcome:
    """A declined invoice that is not the one driving the status: collect it on its own."""
    others = tuple(c for c in s.collections if c.invoice_id != invoice.id)
    if retry_at is not None:
        collecting = Dunning(invoice_id=invoice.id, failed_attempts=attempt, retry_at=retry_at)
        return Outcome(subscription=replace(s, collections=(*others, collecting)))
    if then is AfterRetries.UNPAID:
        waiting = Dunning(invoice_id=invoice.id, failed_attempts=attempt, retry_at=None)
        event = InvoiceAwaitingPaymentMethod(at=at, invoice_id=invoice.id, subscription_id=s.id)
        return Outcome(subscription=replace(s, collections=(*others, waiting)), events=(event,))
    s, forfeited = _forfeit_held_credit(replace(s, collections=others), invoice.id, at)
    if then is AfterRetries.PAST_DUE and not s.is_final():
        voided, invoice_events = invoice.void(at=at)
        carried = replace(s, debt=(*s.debt, _carried(invoice)))
        return Outcome(
            subscription=carried, events=(*invoice_events, *forfeited), updated_invoice=voided
        )
    written_off, invoice_events = invoice.mark_uncollectible(at=at)
    return Outcome(
        subscription=s, events=(*invoice_events, *forfeited), updated_invoice=written_off
    )


def _carried(invoice: Invoice) -> DebtItem:
    """The debt that carries a voided invoice's balance to the next invoice (already taxed)."""
    return DebtItem(
        kind=DebtKind.UNPAID,
        amount=invoice.total,
        description=f"Unpaid balance of invoice {invoice.number or invoice.id}",
        period=invoice.period,
        source=invoice.id,
    )


def _without_collection(subscription: Subscription, invoice_id: str) -> Subscription:
    kept = tuple(c for c in subscription.collections if c.invoice_id != invoice_id)
    return (
        subscription
        if kept == subscription.collections
        else replace(subscription, collections=kept)
    )


def _release_held_credit(
    subscription: Subscription, invoice_id: str, at: datetime
) -> tuple[Subscription, Money | None, tuple[Event, ...]]:
    """Credit held for ``invoice_id``, now paid: granted once nothing it waits on is unpaid."""
    kept: list[HeldCredit] = []
    events: list[Event] = []
    released = Money.zero(subscription.plan.billing_currency)
    for held in subscription.held_credit:
        waiting = tuple(i for i in held.waiting_on if i != invoice_id)
        if waiting:
            kept.append(replace(held, waiting_on=waiting) if waiting != held.waiting_on else held)
            continue
        released += held.amount
        events.append(
            CreditGranted(
                at=at,
                customer_id=subscription.customer_id,
                amount=held.amount,
                reason=f"{held.description}, held until invoice {invoice_id} was paid",
                source=CreditSource.PLAN_CHANGE,
                subscription_id=subscription.id,
                invoice_id=invoice_id,
            )
        )
    if not events:
        return subscription, None, ()
    return replace(subscription, held_credit=tuple(kept)), released, tuple(events)


def _forfeit_held_credit(
    subscription: Subscription, invoice_id: str, at: datetime
) -> tuple[Subscription, tuple[Event, ...]]:
    """Credit held for ``invoice_id`` is dropped: that invoice will not be paid."""
    kept = tuple(h for h in subscription.held_credit if invoice_id not in h.waiting_on)
    if len(kept) == len(subscription.held_credit):
        return subscription, ()
    events = tuple(
        CreditForfeited(
            at=at,
            customer_id=subscription.customer_id,
            subscription_id=subscription.id,
            invoice_id=invoice_id,
            amount=held.amount,
        )
        for held in subscription.held_credit
        if invoice_id in held.waiting_on
    )
    return replace(subscription, held_credit=kept), events


def _past_due(
    subscription: Subscription, invoice: Invoice, retry_at: datetime | None, at: datetime
) -> SubscriptionPastDue:
    return SubscriptionPastDue(
        at=at, subscription_id=subscription.id, invoice_id=invoice.id, retry_at=retry_at
    )


def _check_invoice(subscription: Subscription, invoice: Invoice) -> None:
    if invoice.subscription_id != subscription.id:
        raise InvalidArgument(
            "invoice", f"must belong to subscription {subscription.id}", invoice.id
        )
