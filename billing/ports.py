"""The ports the engine needs from the outside world: a payment gateway and a clock.

Each port is a contract written as docstrings. Implementations: :class:`billing.testing.FakeGateway`
(in process, scriptable), the gateway adapters in ``adapters/`` (QVO, Openpay, Khipu, Payvalida),
and :mod:`billing.clock` for clocks.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from types import MappingProxyType
from typing import Protocol

from billing.domain.money import Money
from billing.domain.payments import PaymentResult, RefundStatus

__all__ = [
    "ChargeRequest",
    "Clock",
    "PaymentGateway",
    "PaymentResult",
    "RefundRequest",
    "RefundResult",
    "RefundStatus",
    "SyncRequest",
]


@dataclass(frozen=True, slots=True, kw_only=True)
class ChargeRequest:
    """Take ``amount`` from a customer's payment method, once per ``idempotency_key``."""

    idempotency_key: str
    """``<invoice id>-<attempt number>``: the same key always means the same charge."""
    amount: Money
    customer_id: str
    payment_method: str
    """The gateway's token or reference for the payment method; never a card number."""
    description: str
    at: datetime
    """The engine's instant for this attempt (a test clock's time in simulations)."""
    metadata: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))


@dataclass(frozen=True, slots=True, kw_only=True)
class SyncRequest:
    """Ask what became of the charge sent with ``idempotency_key``."""

    idempotency_key: str
    reference: str | None
    """The gateway's id for the charge, if an earlier answer gave one."""
    amount: Money
    customer_id: str
    at: datetime


@dataclass(frozen=True, slots=True, kw_only=True)
class RefundRequest:
    """Give back ``amount`` of the charge ``reference``, once per ``idempotency_key``."""

    idempotency_key: str
    reference: str
    amount: Money
    at: datetime


@dataclass(frozen=True, slots=True, kw_only=True)
class RefundResult:
    status: RefundStatus
    reference: str | None = None
    code: str | None = None
    message: str | None = None


class PaymentGateway(Protocol):
    """A payment gateway, in the engine's words.

    Contract for every implementation (the contract suite in ``tests/contract`` checks it):

    * A decline is a result (:attr:`PaymentStatus.FAILED <billing.domain.payments.PaymentStatus>`
      with a soft or hard :class:`~billing.domain.payments.DeclineKind`), never an exception.
    * ``charge`` is idempotent on ``idempotency_key``: sending the same key again must not charge
      again; it returns what became of the first charge. The engine never reuses a key with a
      different amount or customer; an implementation may refuse that as a programming error.
    * When the outcome cannot be known (a timeout after the request left, a dropped connection),
      ``charge`` returns ``UNKNOWN``. The engine treats an exception raised by ``charge`` the same
      way: it never charges again blindly, it asks :meth:`sync`.
    * ``sync`` answers ``None`` only when the gateway never received a charge with that key, which
      makes it safe for the engine to send the charge again with the same key.
    """

    @property
    def name(self) -> str:
        """The gateway's name as payment methods refer to it (``"fake"``, ``"qvo"``...)."""
        ...

    def charge(self, request: ChargeRequest) -> PaymentResult:
        """Charge once per key; see the class docstring for the rules."""
        ...

    def sync(self, request: SyncRequest) -> PaymentResult | None:
        """The current result of the charge sent with this key, or ``None`` if none arrived."""
        ...

    def refund(self, request: RefundRequest) -> RefundResult:
        """Refund part or all of a settled charge, once per key."""
        ...


class Clock(Protocol):
    """Where the engine gets the time; it never reads the system clock itself."""

    def now(self) -> datetime:
        """The current instant, timezone-aware."""
        ...
