"""Customers: who is billed, and the timezone their billing calendar runs in."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
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
        _checks.text("id", self.id)
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
