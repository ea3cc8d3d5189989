"""Payment attempts and the results a gateway gives for them.

A payment attempt is written, with its idempotency key, before anything is sent to a gateway; the
key is derived from the invoice and the attempt number (``<invoice id>-<n>``), so a resend after a
crash carries the same key and a gateway that honours keys cannot charge twice. The attempt then
records what the gateway answered. A decline is a result, not an error::

    created ──> succeeded | failed | pending | requires_action | unknown
    pending, requires_action, unknown ──> succeeded | failed | pending | requires_action | unknown
    requires_action ──cancel_link──> canceled

``unknown`` (a timeout, a crash after sending) is never charged again blindly: it is reconciled by
asking the gateway what happened. ``canceled`` is a payment link the engine withdrew at its
gateway because its invoice was settled another way (:meth:`PaymentAttempt.cancel_link`).
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
    PaymentLinkCanceled,
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
    CANCELED = "canceled"
    """A payment link the engine withdrew at its gateway, its invoice having been settled
    another way: nothing was taken, and nobody can pay the link any more."""


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


class ErrorCode(StrEnum):
    """What went wrong with a payment, normalised across gateways (each adapter maps its codes).

    :data:`DECLINE_OF` gives the decline kind of the codes that are declines.
    """

    CARD_DECLINED = "card_declined"
    """The issuer declined without saying why; retrying later may work."""
    INSUFFICIENT_FUNDS = "insufficient_funds"
    """Not enough funds or credit now; retrying later may work."""
    EXPIRED_CARD = "expired_card"
    """The card has expired: a new one is needed."""
    INVALID_CARD_DATA = "invalid_card_data"
    """A wrong number, CVV or date: a new payment method is needed."""
    LOST_OR_STOLEN = "lost_or_stolen"
    """Reported lost or stolen: never charge it again."""
    FRAUD_SUSPECTED = "fraud_suspected"
    """Refused as fraud: never charge it again."""
    CARD_RESTRICTED = "card_restricted"
    """The bank restricted or asked to retain the card, or needs the customer to call it."""
    PAYMENT_METHOD_UNSUPPORTED = "payment_method_unsupported"
    """The method cannot be charged this way (not for online use, not this gateway...)."""
    AUTHENTICATION_REQUIRED = "authentication_required"
    """The customer must authenticate (3-D Secure) or act before it can be paid."""
    PAYER_ABANDONED = "payer_abandoned"
    """A payment by link was not completed in time."""
    NO_PAYMENT_METHOD = "no_payment_method"
    """The customer has no payment method to charge."""
    DUPLICATE_REQUEST = "duplicate_request"
    """The gateway already has an operation with this reference: look it up."""
    INVALID_REQUEST = "invalid_request"
    """The gateway refused the request itself (a bug or a misconfiguration here)."""
    NOT_FOUND = "not_found"
    """The gateway does not know the resource."""
    AUTHENTICATION_ERROR = "authentication_error"
    """The gateway refused our credentials: a configuration problem, never a decline."""
    RATE_LIMITED = "rate_limited"
    """Too many requests: try again later."""
    GATEWAY_UNAVAILABLE = "gateway_unavailable"
    """The gateway failed or is down; the operation may or may not have happened."""
    GATEWAY_TIMEOUT = "gateway_timeout"
    """No answer in time; the outcome is unknown until looked up."""
    PROCESSING_ERROR = "processing_error"
    """Another processing failure the gateway reported."""


DECLINE_OF: dict[ErrorCode, DeclineKind] = {
    ErrorCode.CARD_DECLINED: DeclineKind.SOFT,
    ErrorCode.INSUFFICIENT_FUNDS: DeclineKind.SOFT,
    ErrorCode.PROCESSING_ERROR: DeclineKind.SOFT,
    ErrorCode.NO_PAYMENT_METHOD: DeclineKind.SOFT,
    ErrorCode.PAYER_ABANDONED: DeclineKind.SOFT,
    ErrorCode.AUTHENTICATION_REQUIRED: DeclineKind.SOFT,
    ErrorCode.EXPIRED_CARD: DeclineKind.HARD,
    ErrorCode.INVALID_CARD_DATA: DeclineKind.HARD,
    ErrorCode.LOST_OR_STOLEN: DeclineKind.HARD,
    ErrorCode.FRAUD_SUSPECTED: DeclineKind.HARD,
    ErrorCode.CARD_RESTRICTED: DeclineKind.HARD,
    ErrorCode.PAYMENT_METHOD_UNSUPPORTED: DeclineKind.HARD,
}
"""The decline kind of each error that is a decline of the payment method (the rest are not)."""


_SETTLED = frozenset({PaymentStatus.SUCCEEDED, PaymentStatus.FAILED, PaymentStatus.CANCELED})


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
    error: ErrorCode | None = None
    """The normalised reason of a failure (or of an unknown outcome)."""
    action_url: str | None = None
    """Where the customer must go when the status is ``requires_action``."""

    def __post_init__(self) -> None:
        if self.status is PaymentStatus.CREATED:
            raise InvalidArgument("status", "a gateway result cannot be 'created'")
        if self.status is PaymentStatus.CANCELED:
            raise InvalidArgument(
                "status", "a gateway result cannot be 'canceled' (a withdrawn link is recorded)"
            )
        if (self.status is PaymentStatus.FAILED) != (self.decline is not None):
            raise InvalidArgument("decline", "is required for a failed result and only for one")

    @classmethod
    def succeeded(cls, reference: str | None = None) -> PaymentResult:
        return cls(status=PaymentStatus.SUCCEEDED, reference=reference)

    @classmethod
    def failed(
        cls,
        decline: DeclineKind,
        code: str | None = None,
        message: str | None = None,
        *,
        error: ErrorCode | None = None,
        reference: str | None = None,
    ) -> PaymentResult:
        return cls(
            status=PaymentStatus.FAILED,
            decline=decline,
            code=code,
            message=message,
            error=error,
            reference=reference,
        )

    @classmethod
    def declined(
        cls,
        error: ErrorCode,
        *,
        code: str | None = None,
        message: str | None = None,
        reference: str | None = None,
    ) -> PaymentResult:
        """A failure whose decline kind follows from its normalised error (:data:`DECLINE_OF`)."""
        decline = DECLINE_OF.get(error)
        if decline is None:
            raise InvalidArgument("error", "must be a decline of the payment method", error)
        return cls.failed(decline, code, message, error=error, reference=reference)


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
    error: ErrorCode | None = None
    action_url: str | None = None

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

    def may_be_paid_late(self) -> bool:
        """Whether the gateway may still report this attempt paid: a payment link that expired
        unpaid (``payer_abandoned``) can be completed afterwards (a bank transfer started in time
        and confirmed after the expiry). Such money is still the customer's payment."""
        return self.status is PaymentStatus.FAILED and self.error is ErrorCode.PAYER_ABANDONED

    def accepts(self, result: PaymentResult) -> bool:
        """Whether :meth:`record` takes this answer: any, while unsettled; once settled, only a
        success of a link that expired unpaid and was paid after all (:meth:`may_be_paid_late`)."""
        if not self.is_settled():
            return True
        return self.may_be_paid_late() and result.status is PaymentStatus.SUCCEEDED

    def record(self, result: PaymentResult, *, at: datetime) -> tuple[PaymentAttempt, list[Event]]:
        """The attempt after the gateway's answer (one it :meth:`accepts`), and the event that
        tells it."""
        if not self.accepts(result):
            raise IllegalTransition("payment", self.id, self.status, f"record {result.status}")
        at = _checks.aware("at", at)
        updated = replace(
            self,
            status=result.status,
            decline=result.decline,
            code=result.code,
            message=result.message,
            reference=result.reference or self.reference,
            error=result.error,
            action_url=result.action_url,
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
                error=None if result.error is None else result.error.value,
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
            if isinstance(event, PaymentRequiresAction):
                event = replace(event, action_url=result.action_url)
        return updated, [event]

    def cancel_link(
        self, *, at: datetime, invoice_status: str
    ) -> tuple[PaymentAttempt, list[Event]]:
        """The attempt after its gateway withdrew its payment link (the invoice was settled
        another way: ``invoice_status``), and the event that tells it. Only a link still waiting
        for the customer (``requires_action``) is withdrawn."""
        if self.status is not PaymentStatus.REQUIRES_ACTION:
            raise IllegalTransition("payment", self.id, self.status, "cancel its link")
        at = _checks.aware("at", at)
        canceled = replace(self, status=PaymentStatus.CANCELED, action_url=None, updated_at=at)
        event = PaymentLinkCanceled(
            at=at,
            payment_id=self.id,
            invoice_id=self.invoice_id,
            subscription_id=self.subscription_id,
            customer_id=self.customer_id,
            attempt=self.number,
            amount=self.amount,
            invoice_status=invoice_status,
        )
        return canceled, [event]


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
