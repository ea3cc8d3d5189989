"""Payment attempts and the results a gateway gives for them.

A payment attempt is written, with its idempotency key, before anything is sent to a gateway; the
key is derived from the invoice and the attempt number (``<invoice id>-<n>``), so a resend after a
crash carries the same key and a gateway that honours keys cannot charge twice. The attempt then
records what the gateway answered. A decline is a result, not an error::

    created ──> succeeded | failed | pending | requires_action | unknown
    pending, requires_action, unknown ──> succeeded | failed | pending | requires_action | unknown

``unknown`` (a timeout, a crash after sending) is never charged again blindly: it is reconciled by
asking the gateway what happened.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from enum import StrEnum

from billing.domain import _checks
from billing.domain.errors import IllegalTransition, InvalidArgument
from billing.domain.events import (
    Event,
    PaymentEvent,
    PaymentFailed,
    PaymentPending,
    PaymentRequiresAction,
    PaymentSucceeded,
    PaymentUnknown,
)
from billing.domain.money import Money


class PaymentStatus(StrEnum):
    """What is known about a payment attempt."""

    CREATED = "created"
    """Written with its idempotency key; the gateway has not answered yet."""
    SUCCEEDED = "succeeded"
    """The money was taken."""
    FAILED = "failed"
    """The gateway declined; see the decline kind."""
    PENDING = "pending"
    """Accepted by the gateway, to be settled later (a bank transfer, a pay-by-link)."""
    REQUIRES_ACTION = "requires_action"
    """The customer must act (authenticate, follow a link) before it can settle."""
    UNKNOWN = "unknown"
    """The outcome is not known (timeout, crash after sending); to be reconciled."""


class DeclineKind(StrEnum):
    """Whether retrying a declined payment can help."""

    SOFT = "soft"
    """Insufficient funds, a temporary issuer problem...: retried on the dunning schedule."""
    HARD = "hard"
    """Stolen, lost or expired card, closed account, fraud...: retries stop at once."""


class RefundStatus(StrEnum):
    """What became of a refund."""

    CREATED = "created"
    """Written with its idempotency key; the gateway has not answered yet."""
    SUCCEEDED = "succeeded"
    """The money is on its way back."""
    FAILED = "failed"
    """The gateway refused the refund; nothing moved."""
    PENDING = "pending"
    """Accepted by the gateway, to be settled later."""
    UNKNOWN = "unknown"
    """The gateway's answer was lost; ask the gateway before refunding again."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Refund:
    """Money given back from a succeeded payment; the invoice stays paid."""

    id: str
    payment_id: str
    invoice_id: str
    amount: Money
    status: RefundStatus
    created_at: datetime
    reference: str | None = None
    code: str | None = None


_SETTLED = frozenset({PaymentStatus.SUCCEEDED, PaymentStatus.FAILED})


@dataclass(frozen=True, slots=True, kw_only=True)
class PaymentResult:
    """A gateway's answer for one attempt, in the engine's words."""

    status: PaymentStatus
    decline: DeclineKind | None = None
    code: str | None = None
    """The gateway's own code for a decline or an error, kept for people, never parsed."""
    message: str | None = None
    reference: str | None = None
    """The gateway's id for the charge, used to reconcile and refund."""

    def __post_init__(self) -> None:
        if self.status is PaymentStatus.CREATED:
            raise InvalidArgument("status", "a gateway result cannot be 'created'")
        if (self.status is PaymentStatus.FAILED) != (self.decline is not None):
            raise InvalidArgument("decline", "is required for a failed result and only for one")

    @classmethod
    def succeeded(cls, reference: str | None = None) -> PaymentResult:
        return cls(status=PaymentStatus.SUCCEEDED, reference=reference)

    @classmethod
    def failed(
        cls, decline: DeclineKind, code: str | None = None, message: str | None = None
    ) -> PaymentResult:
        return cls(status=PaymentStatus.FAILED, decline=decline, code=code, message=message)


def idempotency_key(invoice_id: str, attempt: int) -> str:
    """The key of attempt ``attempt`` on an invoice; fixed before anything is sent."""
    _checks.text("invoice_id", invoice_id)
    _checks.integer("attempt", attempt, minimum=1)
    return f"{invoice_id}-{attempt}"


@dataclass(frozen=True, slots=True, kw_only=True)
class PaymentAttempt:
    """One try at collecting an invoice's amount through a gateway."""

    id: str
    invoice_id: str
    number: int
    amount: Money
    created_at: datetime
    status: PaymentStatus = PaymentStatus.CREATED
    decline: DeclineKind | None = None
    code: str | None = None
    message: str | None = None
    reference: str | None = None
    updated_at: datetime | None = None
    subscription_id: str | None = None
    customer_id: str | None = None
    gateway: str | None = None
    """The gateway it went through; ``None`` when there was no payment method to charge."""

    def __post_init__(self) -> None:
        _checks.text("id", self.id)
        _checks.integer("number", self.number, minimum=1)
        object.__setattr__(self, "created_at", _checks.aware("created_at", self.created_at))
        if not self.amount.is_positive():
            raise InvalidArgument(
                "amount", "must be > 0 (nothing to pay needs no attempt)", self.amount
            )

    @property
    def idempotency_key(self) -> str:
        return idempotency_key(self.invoice_id, self.number)

    def is_settled(self) -> bool:
        return self.status in _SETTLED

    def record(self, result: PaymentResult, *, at: datetime) -> tuple[PaymentAttempt, list[Event]]:
        """The attempt after the gateway's answer, and the event that tells it."""
        if self.is_settled():
            raise IllegalTransition("payment", self.id, self.status, f"record {result.status}")
        at = _checks.aware("at", at)
        updated = replace(
            self,
            status=result.status,
            decline=result.decline,
            code=result.code,
            message=result.message,
            reference=result.reference or self.reference,
            updated_at=at,
        )
        event: PaymentEvent
        if result.decline is not None:
            event = PaymentFailed(
                at=at,
                payment_id=self.id,
                invoice_id=self.invoice_id,
                subscription_id=self.subscription_id,
                customer_id=self.customer_id,
                attempt=self.number,
                amount=self.amount,
                decline=result.decline.value,
                code=result.code,
            )
        else:
            event = _EVENTS[result.status](
                at=at,
                payment_id=self.id,
                invoice_id=self.invoice_id,
                subscription_id=self.subscription_id,
                customer_id=self.customer_id,
                attempt=self.number,
                amount=self.amount,
            )
        return updated, [event]


_EVENTS: dict[PaymentStatus, type[PaymentEvent]] = {
    PaymentStatus.SUCCEEDED: PaymentSucceeded,
    PaymentStatus.PENDING: PaymentPending,
    PaymentStatus.REQUIRES_ACTION: PaymentRequiresAction,
    PaymentStatus.UNKNOWN: PaymentUnknown,
}


def refund_amount(*, paid: Money, refunded: Money, wanted: Money | None) -> Money:
    """How much a refund gives back: ``wanted``, or all that is left when ``wanted`` is None.

    :raises InvalidArgument: for a non-positive amount, another currency, or more than is left.
    """
    if wanted is not None and not isinstance(wanted, Money):
        raise InvalidArgument("amount", "must be Money, such as Money.of('1000', 'CLP')", wanted)
    left = paid - refunded
    amount = left if wanted is None else wanted
    if amount.currency != paid.currency:
        raise InvalidArgument("amount", f"must be in {paid.currency}", str(amount))
    if not amount.is_positive():
        raise InvalidArgument("amount", "must be > 0 (nothing is left to refund)", str(amount))
    if amount > left:
        raise InvalidArgument("amount", f"must be at most the {left} not yet refunded", str(amount))
    return amount
