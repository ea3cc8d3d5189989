"""Domain events: frozen, past-tense facts that every state change records.

The domain returns them next to the new state; the engine stores them in the same transaction
(an outbox) and delivers them to the host in order. Each class has a stable dotted ``name`` such as
``subscription.renewed``; hosts should match on it rather than on the Python class.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from datetime import datetime
from enum import Enum, StrEnum
from typing import Any, ClassVar

from billing.domain.money import Money
from billing.domain.periods import Period


@dataclass(frozen=True, slots=True, kw_only=True)
class Event:
    """Something that happened at ``at``."""

    name: ClassVar[str] = "event"
    at: datetime

    def payload(self) -> dict[str, Any]:
        """The event's fields as JSON-ready values (money as minor units and currency)."""
        return {f.name: _plain(getattr(self, f.name)) for f in fields(self)}


def _plain(value: object) -> object:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Money):
        return {"minor": value.minor, "currency": value.currency.code}
    if isinstance(value, Period):
        return {"start": value.start.isoformat(), "end": value.end.isoformat()}
    if isinstance(value, Enum):
        return value.value
    return value


@dataclass(frozen=True, slots=True, kw_only=True)
class SubscriptionEvent(Event):
    subscription_id: str


@dataclass(frozen=True, slots=True, kw_only=True)
class SubscriptionCreated(SubscriptionEvent):
    name: ClassVar[str] = "subscription.created"
    customer_id: str
    plan_code: str
    start: datetime
    trial_end: datetime | None


@dataclass(frozen=True, slots=True, kw_only=True)
class SubscriptionTrialStarted(SubscriptionEvent):
    name: ClassVar[str] = "subscription.trial_started"
    trial_end: datetime


@dataclass(frozen=True, slots=True, kw_only=True)
class SubscriptionActivated(SubscriptionEvent):
    """The subscription became active: its first period was billed, or it recovered."""

    name: ClassVar[str] = "subscription.activated"


@dataclass(frozen=True, slots=True, kw_only=True)
class SubscriptionRenewed(SubscriptionEvent):
    name: ClassVar[str] = "subscription.renewed"
    period_index: int
    period: Period


@dataclass(frozen=True, slots=True, kw_only=True)
class SubscriptionPastDue(SubscriptionEvent):
    name: ClassVar[str] = "subscription.past_due"
    invoice_id: str
    retry_at: datetime | None


@dataclass(frozen=True, slots=True, kw_only=True)
class SubscriptionUnpaid(SubscriptionEvent):
    name: ClassVar[str] = "subscription.unpaid"
    invoice_id: str


@dataclass(frozen=True, slots=True, kw_only=True)
class SubscriptionPaused(SubscriptionEvent):
    name: ClassVar[str] = "subscription.paused"
    resume_at: datetime | None


@dataclass(frozen=True, slots=True, kw_only=True)
class SubscriptionResumed(SubscriptionEvent):
    name: ClassVar[str] = "subscription.resumed"


@dataclass(frozen=True, slots=True, kw_only=True)
class SubscriptionCancelScheduled(SubscriptionEvent):
    """A cancellation at the end of the current period was requested."""

    name: ClassVar[str] = "subscription.cancel_scheduled"
    cancel_at: datetime


@dataclass(frozen=True, slots=True, kw_only=True)
class SubscriptionCanceled(SubscriptionEvent):
    name: ClassVar[str] = "subscription.canceled"


@dataclass(frozen=True, slots=True, kw_only=True)
class SubscriptionEnded(SubscriptionEvent):
    """The subscription ran its cycle count out."""

    name: ClassVar[str] = "subscription.ended"


@dataclass(frozen=True, slots=True, kw_only=True)
class SubscriptionPlanChanged(SubscriptionEvent):
    name: ClassVar[str] = "subscription.plan_changed"
    from_plan: str
    to_plan: str
    debt_added: Money
    """The upgrade's difference carried as debt."""
    debt_canceled: Money
    """Debt from earlier changes that this downgrade canceled."""
    credit_granted: Money
    """Credit given at once for paid, unused time."""
    credit_held: Money
    """Credit for unused time held back until the subscription's unpaid invoices are paid."""


@dataclass(frozen=True, slots=True, kw_only=True)
class SubscriptionDebtInvoiced(SubscriptionEvent):
    """The subscription's debt left it for the invoice made at the same instant (a renewal, a
    resume, or the final invoice); ``amount`` is the debt as carried, before any tax."""

    name: ClassVar[str] = "subscription.debt_invoiced"
    amount: Money


@dataclass(frozen=True, slots=True, kw_only=True)
class SubscriptionDebtWrittenOff(SubscriptionEvent):
    """A stopped subscription's debt was written off instead of invoiced (the host's choice)."""

    name: ClassVar[str] = "subscription.debt_written_off"
    amount: Money


@dataclass(frozen=True, slots=True, kw_only=True)
class InvoiceEvent(Event):
    invoice_id: str
    subscription_id: str | None


@dataclass(frozen=True, slots=True, kw_only=True)
class InvoiceCreated(InvoiceEvent):
    name: ClassVar[str] = "invoice.created"
    number: str
    customer_id: str
    total: Money


@dataclass(frozen=True, slots=True, kw_only=True)
class InvoicePaid(InvoiceEvent):
    name: ClassVar[str] = "invoice.paid"


@dataclass(frozen=True, slots=True, kw_only=True)
class InvoiceUncollectible(InvoiceEvent):
    name: ClassVar[str] = "invoice.uncollectible"


@dataclass(frozen=True, slots=True, kw_only=True)
class InvoiceVoided(InvoiceEvent):
    name: ClassVar[str] = "invoice.voided"


@dataclass(frozen=True, slots=True, kw_only=True)
class InvoiceAwaitingPaymentMethod(InvoiceEvent):
    """Retries ran out on an invoice that stays open: it is tried again when the customer's
    payment method is replaced, and until then it is the host's to collect."""

    name: ClassVar[str] = "invoice.awaiting_payment_method"


@dataclass(frozen=True, slots=True, kw_only=True)
class PaymentEvent(Event):
    payment_id: str
    invoice_id: str
    subscription_id: str | None
    customer_id: str | None
    attempt: int
    amount: Money


@dataclass(frozen=True, slots=True, kw_only=True)
class PaymentSucceeded(PaymentEvent):
    name: ClassVar[str] = "payment.succeeded"


@dataclass(frozen=True, slots=True, kw_only=True)
class PaymentFailed(PaymentEvent):
    name: ClassVar[str] = "payment.failed"
    decline: str
    code: str | None
    """The gateway's own code."""
    error: str | None = None
    """The normalised :class:`~billing.domain.payments.ErrorCode`, when the gateway gave one."""


@dataclass(frozen=True, slots=True, kw_only=True)
class PaymentPending(PaymentEvent):
    name: ClassVar[str] = "payment.pending"


@dataclass(frozen=True, slots=True, kw_only=True)
class PaymentRequiresAction(PaymentEvent):
    name: ClassVar[str] = "payment.requires_action"
    action_url: str | None = None
    """Where the customer completes the payment (a pay-by-link page, 3-D Secure)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class PaymentUnknown(PaymentEvent):
    name: ClassVar[str] = "payment.unknown"


@dataclass(frozen=True, slots=True, kw_only=True)
class PaymentLinkCanceled(PaymentEvent):
    """The engine withdrew the payment link of an attempt at its gateway: the invoice was
    settled another way (``invoice_status``: ``paid`` or ``void``), and nobody can pay the link
    any more. Nothing was taken through it."""

    name: ClassVar[str] = "payment.link_canceled"
    invoice_status: str


@dataclass(frozen=True, slots=True, kw_only=True)
class PaymentRefunded(Event):
    name: ClassVar[str] = "payment.refunded"
    refund_id: str
    payment_id: str
    invoice_id: str
    subscription_id: str | None
    customer_id: str | None
    amount: Money


@dataclass(frozen=True, slots=True, kw_only=True)
class RefundFailed(Event):
    name: ClassVar[str] = "refund.failed"
    refund_id: str
    payment_id: str
    invoice_id: str
    subscription_id: str | None
    customer_id: str | None
    amount: Money
    code: str | None


class CreditSource(StrEnum):
    """Where credit came from."""

    GRANT = "grant"
    """Granted by hand (:meth:`billing.Engine.grant_credit`)."""
    PLAN_CHANGE = "plan_change"
    """The paid, unused part of a period after a downgrade."""
    EXCESS = "excess"
    """Charges that came to less than zero on an invoice."""
    REFUND = "refund"
    """Credit an invoice had used, given back when its payment was refunded in full."""
    OVERPAYMENT = "overpayment"
    """A payment that arrived for an invoice already settled another way (paid or voided)."""
    REFUND_FAILED = "refund_failed"
    """Credit a refund took back (:class:`CreditWithdrawn`), returned: the gateway refused the
    refund."""


@dataclass(frozen=True, slots=True, kw_only=True)
class CreditGranted(Event):
    """Credit was added to a customer's balance."""

    name: ClassVar[str] = "credit.granted"
    customer_id: str
    amount: Money
    reason: str
    source: CreditSource = CreditSource.GRANT
    subscription_id: str | None = None
    invoice_id: str | None = None
    """The invoice the credit comes from, if any (a refunded one, an overpaid one, the one
    whose payment released held credit)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class CreditWithdrawn(Event):
    """Credit was taken back from a customer's balance: a refund gives back money of an invoice
    that had become credit (an overpayment), so the credit goes with it."""

    name: ClassVar[str] = "credit.withdrawn"
    customer_id: str
    amount: Money
    reason: str
    refund_id: str
    payment_id: str
    invoice_id: str
    subscription_id: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class CreditForfeited(Event):
    """Credit held back for unpaid time was dropped: an invoice it waited on was written off or
    voided, so the time was never paid for."""

    name: ClassVar[str] = "credit.forfeited"
    customer_id: str
    subscription_id: str
    invoice_id: str
    amount: Money
