"""The ports the engine needs from the outside world: a payment gateway and a clock.

Each port is a contract written as docstrings. Implementations: :class:`billing.testing.FakeGateway`
(in process, scriptable), the gateway adapters in ``adapters/`` (QVO, Openpay, Khipu, Payvalida),
and :mod:`billing.clock` for clocks. ``tests/contract`` holds the conformance suite every gateway
must pass unchanged.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from types import MappingProxyType
from typing import Protocol

from billing.domain.customers import EnrollmentStatus
from billing.domain.errors import InvalidArgument
from billing.domain.money import Money
from billing.domain.payments import ErrorCode, PaymentResult, RefundStatus

__all__ = [
    "AttachRequest",
    "CancelLinkRequest",
    "Capability",
    "ChargeRequest",
    "Clock",
    "CustomerRequest",
    "Enrollment",
    "EnrollmentRequest",
    "EnrollmentResult",
    "EnrollmentStatus",
    "ErrorCode",
    "LinkCancellation",
    "LinkCancellationStatus",
    "Notification",
    "NotificationFacts",
    "PaymentGateway",
    "PaymentResult",
    "RefundRequest",
    "RefundResult",
    "RefundStatus",
    "StoredMethod",
    "SyncRequest",
]


def _empty() -> Mapping[str, str]:
    return MappingProxyType({})


class Capability(StrEnum):
    """What a gateway can do; the engine checks a capability before it uses it."""

    CUSTOMERS = "customers"
    """The gateway keeps customer records: :meth:`PaymentGateway.register_customer` comes first."""
    CARD_TOKENS = "card_tokens"
    """:meth:`PaymentGateway.attach_payment_method` turns a token from the gateway's own card form
    into a stored card."""
    CARD_ENROLLMENT = "card_enrollment"
    """:meth:`PaymentGateway.start_enrollment` sends the customer to the gateway's page to store a
    card, and :meth:`PaymentGateway.complete_enrollment` collects it afterwards."""
    STORED_CARD_CHARGES = "stored_card_charges"
    """A stored payment method is charged without the customer present (renewals)."""
    REDIRECT_PAYMENTS = "redirect_payments"
    """A charge may need the customer to follow a link (``requires_action`` with a URL)."""
    PAY_BY_LINK = "pay_by_link"
    """Every charge is a payment the customer completes later through a link (Khipu,
    Payvalida): ``charge`` answers ``requires_action`` with the link (``action_url``) and the
    gateway's id for the payment; the payment settles when the customer pays (a notification,
    or ``sync``), and an unpaid link that expires is a soft decline (``payer_abandoned``).
    :meth:`PaymentGateway.attach_payment_method` takes the payer's e-mail address as the token
    and stores it as the payment method the links are sent to."""
    REFUNDS = "refunds"
    """A succeeded charge can be refunded in full."""
    PARTIAL_REFUNDS = "partial_refunds"
    """Part of a succeeded charge can be refunded."""
    NOTIFICATIONS = "notifications"
    """:meth:`PaymentGateway.parse_notification` understands the gateway's webhooks."""
    SIGNED_NOTIFICATIONS = "signed_notifications"
    """Notifications carry a signature the adapter verifies, refusing a forged one outright. The
    engine re-fetches the charge a notification names before believing it either way."""
    NOTIFICATION_LOOKUP = "notification_lookup"
    """Reading a notification asks the gateway (Khipu's notification token is looked up): the
    intake keeps such a notification before reading it when it must answer fast
    (``process_now=False``). Without it, :meth:`PaymentGateway.parse_notification` calls out
    to nobody."""
    IDEMPOTENT_CHARGES = "idempotent_charges"
    """The gateway itself refuses a second charge with the same reference (Openpay's
    ``order_id``); without it, the adapter looks a timed-out charge up before any new one."""
    LINK_CANCELLATION = "link_cancellation"
    """:meth:`PaymentGateway.cancel_link` withdraws a payment link nobody has paid (Khipu's
    ``DELETE /payments/{id}``, Payvalida's order deletion), so the customer can no longer pay
    it. The engine withdraws the live link of an invoice settled another way; without this
    capability such a link stays payable, and money paid through it becomes the customer's
    credit."""


@dataclass(frozen=True, slots=True, kw_only=True)
class CustomerRequest:
    """Register an engine customer at the gateway."""

    customer_id: str
    name: str | None = None
    email: str | None = None
    metadata: Mapping[str, str] = field(default_factory=_empty)


@dataclass(frozen=True, slots=True, kw_only=True)
class AttachRequest:
    """Store the payment method a gateway token stands for, on the gateway's customer."""

    customer_id: str
    customer_reference: str | None
    """The gateway's id for the customer (``None`` for gateways without customers)."""
    token: str


@dataclass(frozen=True, slots=True, kw_only=True)
class StoredMethod:
    """A payment method the gateway stores: the engine keeps only these references."""

    reference: str
    """The gateway's id for the stored method (a card id)."""
    label: str | None = None
    """Something to show the customer, such as ``VISA ****6623`` (never the full number)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class EnrollmentRequest:
    """Start storing a card through the gateway's own page."""

    customer_id: str
    customer_reference: str | None
    return_url: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Enrollment:
    """An enrollment under way: send the customer to ``redirect_url``."""

    reference: str
    redirect_url: str
    expires_at: datetime | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class EnrollmentResult:
    status: EnrollmentStatus
    method: StoredMethod | None = None
    message: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class ChargeRequest:
    """Take ``amount`` from a customer's payment method, once per ``idempotency_key``."""

    idempotency_key: str
    """``<invoice id>-<attempt number>``: the same key always means the same charge."""
    amount: Money
    customer_id: str
    payment_method: str
    """The gateway's reference for the stored payment method; never a card number."""
    description: str
    at: datetime
    """The engine's instant for this attempt (a test clock's time in simulations)."""
    customer_reference: str | None = None
    """The gateway's id for the customer, for gateways with customers."""
    metadata: Mapping[str, str] = field(default_factory=_empty)
    first_sent_at: datetime | None = None
    """When the engine first sent this key, on a resend or a question about it (``None`` on the
    first send). The engine's database is the record every process shares: an adapter whose
    gateway cannot look a charge up by key trusts it rather than a memory of its own (another
    process, or this one before a restart, may have sent it)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class SyncRequest:
    """Ask what became of the charge sent with ``idempotency_key``."""

    idempotency_key: str
    reference: str | None
    """The gateway's id for the charge, if an earlier answer (or a notification) gave one."""
    amount: Money
    customer_id: str
    at: datetime
    customer_reference: str | None = None
    payment_method: str | None = None
    first_sent_at: datetime | None = None
    """When the engine first sent this key, on a resend or a question about it (``None`` on the
    first send). The engine's database is the record every process shares: an adapter whose
    gateway cannot look a charge up by key trusts it rather than a memory of its own (another
    process, or this one before a restart, may have sent it)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class RefundRequest:
    """Give back ``amount`` of the charge ``reference``, once per ``idempotency_key``."""

    idempotency_key: str
    reference: str
    amount: Money
    at: datetime
    customer_reference: str | None = None
    first_sent_at: datetime | None = None
    """When the engine first sent this key, on a resend or a question about it (``None`` on the
    first send). The engine's database is the record every process shares: an adapter whose
    gateway cannot look a refund up by key trusts it rather than a memory of its own (another
    process, or this one before a restart, may have sent it)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class RefundResult:
    status: RefundStatus
    reference: str | None = None
    code: str | None = None
    message: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class CancelLinkRequest:
    """Withdraw the payment link of the charge sent with ``idempotency_key`` (its invoice was
    settled another way), so that nobody can pay it any more."""

    idempotency_key: str
    reference: str
    """The gateway's id for the payment whose link is withdrawn (the attempt's reference)."""
    amount: Money
    customer_id: str
    at: datetime
    """The engine's instant (a test clock's time in simulations)."""
    customer_reference: str | None = None


class LinkCancellationStatus(StrEnum):
    """Whether a payment link could be withdrawn."""

    CANCELED = "canceled"
    """The link is withdrawn: nobody can pay it any more. Also the answer for a link withdrawn
    before (a repeated request) and for one the gateway does not know (nothing to pay)."""
    TOO_LATE = "too_late"
    """The payment is no longer waiting for the customer, so its link cannot be withdrawn: it
    was paid, is being paid (a transfer being verified), expired or was refused.
    :attr:`LinkCancellation.payment` says which."""


@dataclass(frozen=True, slots=True, kw_only=True)
class LinkCancellation:
    """A gateway's answer to :meth:`PaymentGateway.cancel_link`."""

    status: LinkCancellationStatus
    payment: PaymentResult | None = None
    """With ``TOO_LATE``: what became of the payment, as :meth:`PaymentGateway.sync` would say
    (``SUCCEEDED`` when the customer paid first). ``None`` with ``CANCELED``."""
    code: str | None = None
    """The gateway's own code for its answer, kept for people, never parsed."""
    message: str | None = None

    def __post_init__(self) -> None:
        if (self.status is LinkCancellationStatus.TOO_LATE) != (self.payment is not None):
            raise InvalidArgument(
                "payment", "is required when it is too late to cancel, and only then"
            )


@dataclass(frozen=True, slots=True, kw_only=True)
class Notification:
    """A webhook as the host received it: untrusted until verified."""

    headers: Mapping[str, str]
    body: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class NotificationFacts:
    """What a notification claims, before anyone believes it."""

    event_id: str
    """The gateway's id for the notification (deduplication key); stable across redeliveries."""
    kind: str
    """The gateway's event type, such as ``charge.succeeded``."""
    charge_reference: str | None = None
    """The gateway's id of the charge it is about, if any."""
    idempotency_key: str | None = None
    """Our reference for that charge, when the gateway echoes it (Openpay's ``order_id``)."""
    verified: bool = False
    """True only when the adapter checked a signature (a bad one raises instead). Either way the
    engine re-fetches the charge with ``sync`` before changing a payment."""


class PaymentGateway(Protocol):
    """A payment gateway, in the engine's words.

    Contract for every implementation (the conformance suite in ``tests/contract`` checks it):

    * ``capabilities`` says truly what the gateway can do; the operations of a capability it does
      not declare raise :class:`~billing.domain.errors.GatewayError` with code
      ``invalid_request`` and are never called by the engine.
    * A decline is a result (``FAILED`` with a soft or hard
      :class:`~billing.domain.payments.DeclineKind` and a normalised
      :class:`~billing.domain.payments.ErrorCode`), never an exception. Bad credentials are never a
      decline: ``charge`` answers ``UNKNOWN`` with ``authentication_error``, other operations raise
      :class:`~billing.domain.errors.GatewayAuthenticationFailed`.
    * ``charge`` never charges twice for one ``idempotency_key``: sending it again returns what
      became of the first charge (the engine never reuses a key with another amount or customer).
    * When the outcome cannot be known (a timeout after the request left, a dropped connection,
      a 5xx), ``charge`` returns ``UNKNOWN``. It retries by itself only when the request surely
      never left (connection refused). The engine treats an exception from ``charge`` as
      ``UNKNOWN`` too: it never charges again blindly, it asks :meth:`sync`.
    * ``sync`` answers ``None`` only when the gateway has no charge for that key, which makes it
      safe for the engine to send the charge again with the same key.
    * ``cancel_link`` is idempotent: withdrawing a link withdrawn before answers ``CANCELED``
      again. When the payment is no longer waiting for the customer it answers ``TOO_LATE`` with
      what became of it, never an exception; when the outcome cannot be known (a timeout, a
      5xx) it raises a retryable :class:`~billing.domain.errors.GatewayError`, and the engine
      asks again later.
    * Nothing secret (credentials, card numbers, CVVs) appears in logs, reprs or exceptions.
    """

    @property
    def name(self) -> str:
        """The gateway's name as payment methods refer to it (``"fake"``, ``"qvo"``...)."""
        ...

    @property
    def capabilities(self) -> frozenset[Capability]:
        """What this gateway can do."""
        ...

    @property
    def currencies(self) -> frozenset[str]:
        """The ISO 4217 codes it charges in (QVO: ``CLP``; Openpay: ``MXN`` and ``USD``). The
        engine refuses a subscription whose invoices its customer's gateway cannot charge, and
        never sends it a charge in another currency."""
        ...

    def register_customer(self, request: CustomerRequest) -> str:
        """Create the customer at the gateway and return the gateway's id for it
        (:attr:`Capability.CUSTOMERS`)."""
        ...

    def attach_payment_method(self, request: AttachRequest) -> StoredMethod:
        """Store the card a gateway token stands for (:attr:`Capability.CARD_TOKENS`)."""
        ...

    def start_enrollment(self, request: EnrollmentRequest) -> Enrollment:
        """Begin storing a card through the gateway's page (:attr:`Capability.CARD_ENROLLMENT`)."""
        ...

    def complete_enrollment(
        self, customer_reference: str | None, reference: str
    ) -> EnrollmentResult:
        """What became of an enrollment (:attr:`Capability.CARD_ENROLLMENT`)."""
        ...

    def charge(self, request: ChargeRequest) -> PaymentResult:
        """Charge once per key; see the class docstring for the rules."""
        ...

    def sync(self, request: SyncRequest) -> PaymentResult | None:
        """The current result of the charge sent with this key, or ``None`` if none arrived."""
        ...

    def refund(self, request: RefundRequest) -> RefundResult:
        """Refund part or all of a settled charge, once per key (:attr:`Capability.REFUNDS`): a
        repeated key answers what became of the first request (the engine repeats a refund whose
        answer was lost)."""
        ...

    def cancel_link(self, request: CancelLinkRequest) -> LinkCancellation:
        """Withdraw the payment link of a charge that still waits for the customer, so nobody
        can pay it any more (:attr:`Capability.LINK_CANCELLATION`); ``TOO_LATE`` with the
        payment's result when it no longer waits (paid: ``SUCCEEDED``). Idempotent."""
        ...

    def parse_notification(self, notification: Notification) -> NotificationFacts:
        """Read a webhook (:attr:`Capability.NOTIFICATIONS`); raises
        :class:`~billing.domain.errors.GatewayError` (``invalid_request``) for one that is not
        this gateway's."""
        ...

    def close(self) -> None:
        """Release the gateway's connections (an engine that owns the gateway calls it)."""
        ...


class Clock(Protocol):
    """Where the engine gets the time; it never reads the system clock itself."""

    def now(self) -> datetime:
        """The current instant, timezone-aware."""
        ...
