"""Customers, the timezone their billing calendar runs in, and their payment methods."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from types import MappingProxyType
from zoneinfo import ZoneInfo

from billing.domain import _checks
from billing.domain.errors import InvalidArgument


@dataclass(frozen=True, slots=True, kw_only=True)
class Customer:
    """A customer: an id chosen by the host, an IANA timezone, and free-form metadata."""

    id: str
    timezone: ZoneInfo
    metadata: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))

    def __post_init__(self) -> None:
        _checks.identifier("id", self.id)
        _checks.timezone(self.timezone)
        for key, value in self.metadata.items():
            if not isinstance(key, str) or not isinstance(value, str):
                raise InvalidArgument("metadata", "must map strings to strings", {key: value})

    @classmethod
    def of(cls, id: str, timezone: str, metadata: Mapping[str, str] | None = None) -> Customer:
        """Build a customer, validating the timezone name (``America/Santiago``)."""
        return cls(
            id=id,
            timezone=_checks.timezone(timezone),
            metadata=MappingProxyType(dict(metadata or {})),
        )


_CARD_LIKE = re.compile(r"^[\d -]{12,23}$")


def _looks_like_a_card_number(token: str) -> bool:
    """True for 13 to 19 digits (spaces and dashes allowed) that pass the Luhn check."""
    if not _CARD_LIKE.match(token):
        return False
    digits = [int(c) for c in token if c.isdigit()]
    if not 13 <= len(digits) <= 19:
        return False
    checksum = 0
    for position, digit in enumerate(reversed(digits)):
        if position % 2:
            digit = digit * 2 - 9 if digit > 4 else digit * 2
        checksum += digit
    return checksum % 10 == 0


@dataclass(frozen=True, slots=True, kw_only=True)
class PaymentMethod:
    """A customer's way to pay, as a gateway's token or reference.

    The engine never accepts or stores card numbers or CVVs: card data goes from the customer to
    the gateway (a hosted page, a tokenization script), and the engine keeps only what the gateway
    gives back. A token that looks like a card number is refused.
    """

    id: str
    customer_id: str
    gateway: str
    token: str
    label: str | None = None
    is_default: bool = True
    created_at: datetime

    def __post_init__(self) -> None:
        _checks.identifier("id", self.id)
        _checks.identifier("customer_id", self.customer_id)
        _checks.text("gateway", self.gateway, max_length=32)
        _checks.text("token", self.token, max_length=_checks.NAME_LENGTH)
        _checks.flag("is_default", self.is_default)
        if _looks_like_a_card_number(self.token):
            raise InvalidArgument(
                "token", "must be a gateway token or reference, never a card number"
            )
        if self.label is not None:
            _checks.text("label", self.label, max_length=_checks.NAME_LENGTH)
        object.__setattr__(self, "created_at", _checks.aware("created_at", self.created_at))


class EnrollmentStatus(StrEnum):
    """Where storing a card through a gateway's own page stands."""

    PENDING = "pending"
    """The customer has not finished on the gateway's page yet."""
    SUCCEEDED = "succeeded"
    """The card is stored and became the customer's default payment method."""
    FAILED = "failed"
    """The customer or the bank refused; nothing is stored."""


@dataclass(frozen=True, slots=True, kw_only=True)
class CardEnrollment:
    """A card being stored through a gateway's page (QVO's card inscription): send the customer
    to ``redirect_url``, then complete it when they come back (or the gateway notifies)."""

    gateway: str
    reference: str
    """The gateway's id for the enrollment."""
    customer_id: str
    status: EnrollmentStatus
    redirect_url: str
    created_at: datetime
    completed_at: datetime | None = None
    payment_method_id: str | None = None
    """The payment method it stored, once it succeeded."""
