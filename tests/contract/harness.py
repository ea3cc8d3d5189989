"""What the conformance suite needs from each gateway: a harness over the gateway and its fake.

Every adapter ships one harness (``tests/contract/harness_<gateway>.py``) built on its fake
server, in process or over loopback sockets. The suite (``test_gateway_conformance.py``) runs
unchanged over every harness; the per-gateway differences live in :class:`Expectations`.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal, Protocol

from billing.domain.money import Money
from billing.domain.payments import ErrorCode
from billing.ports import ChargeRequest, Notification, PaymentGateway, SyncRequest

Behavior = Literal["approve", "soft_decline", "hard_decline", "soft_then_approve"]
"""How a payer's stored card behaves: ``soft_then_approve`` soft-declines its first charge
and approves every later one."""

Mode = Literal["in_process", "loopback"]


@dataclass(frozen=True, slots=True)
class Payer:
    """A customer registered at the gateway, with a stored card that behaves as asked."""

    customer_id: str
    """The engine's id for the customer."""
    customer_reference: str | None
    """The gateway's id for the customer (``None`` for gateways without customers)."""
    payment_method: str
    """The gateway's reference for the stored card."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Expectations:
    """Where gateways legitimately differ; the suite reads these instead of branching on names."""

    soft_decline: ErrorCode = ErrorCode.CARD_DECLINED
    """The normalised error of this harness's soft-declining card."""
    hard_decline: ErrorCode = ErrorCode.LOST_OR_STOLEN
    """The normalised error of this harness's hard-declining card."""
    partial_refunds: bool = True
    notifications: bool = True
    pay_by_link: bool = False
    """Charges are links the customer pays later (:attr:`~billing.ports.Capability.PAY_BY_LINK`):
    the suite pays or expires them with :meth:`Harness.pay_link` and :meth:`Harness.expire_link`
    instead of using stored cards that approve or decline."""
    extra: dict[str, object] = field(default_factory=dict)


class Harness(Protocol):
    """One gateway under test, with the levers the suite pulls on its fake."""

    name: str
    gateway: PaymentGateway
    amount: Money
    """An amount the gateway accepts for a charge, in its currency."""
    expectations: Expectations
    secrets: tuple[str, ...]
    """The credentials and card numbers the harness uses: none may reach a log or a repr."""

    def payer(self, behavior: Behavior) -> Payer:
        """Register a new customer at the gateway and store a card behaving as asked."""
        ...

    def pay_link(self, charge_reference: str, *, late: bool = False) -> None:
        """Act as the customer: follow the link of this charge and pay it (pay-by-link
        gateways). ``late``: complete it even though the link has expired (a transfer started
        in time that the bank confirmed after the expiry). Raises
        :class:`httpx.HTTPStatusError` when the fake refuses: the link cannot be paid (paid
        already, expired without ``late``, or withdrawn)."""
        ...

    def expire_link(self, charge_reference: str) -> None:
        """Let the link of this charge expire unpaid (the fake's clock passes its expiry)."""
        ...

    def lose_next_answer(self) -> None:
        """Make the next charge commit at the gateway and its answer get lost (a timeout)."""
        ...

    def charges_taken(self, payer: Payer) -> int:
        """How many charges took money from this payer, as the gateway's books show."""
        ...

    def notification(self, charge_reference: str) -> Notification:
        """The webhook the gateway would send about this charge, as the host receives it."""
        ...

    def forged_notification(self, charge_reference: str) -> Notification:
        """A webhook claiming this charge succeeded when the gateway never said so (for a
        declined charge), shaped exactly like a genuine one."""
        ...

    def with_bad_credentials(self) -> PaymentGateway:
        """The same gateway configured with credentials the gateway refuses."""
        ...

    def close(self) -> None:
        """Release the fake (stop its server, close clients)."""
        ...


AT = datetime(2026, 3, 2, 15, tzinfo=UTC)
"""The instant the conformance suites' requests are made at."""


def charge_request(harness: Harness, payer: Payer, key: str | None = None) -> ChargeRequest:
    """A charge of the harness's amount to ``payer`` (a new key unless ``key``)."""
    return ChargeRequest(
        idempotency_key=key or f"in_{uuid.uuid4().hex[:16]}-1",
        amount=harness.amount,
        customer_id=payer.customer_id,
        customer_reference=payer.customer_reference,
        payment_method=payer.payment_method,
        description="Plan Oro, marzo",
        at=AT,
    )


def sync_request(request: ChargeRequest, reference: str | None = None) -> SyncRequest:
    """The question about what became of ``request``."""
    return SyncRequest(
        idempotency_key=request.idempotency_key,
        reference=reference,
        amount=request.amount,
        customer_id=request.customer_id,
        customer_reference=request.customer_reference,
        payment_method=request.payment_method,
        at=request.at,
    )
