"""Clocks: the system's, and a manual one that tests and simulations move by hand."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from billing.domain import _checks
from billing.domain.errors import InvalidArgument


class SystemClock:
    """The real time, in UTC."""

    def now(self) -> datetime:
        return datetime.now(UTC)


class ManualClock:
    """A clock that stands still until moved; it never moves backwards."""

    def __init__(self, start: datetime) -> None:
        self._now = _checks.aware("start", start)

    def now(self) -> datetime:
        return self._now

    def set(self, when: datetime) -> None:
        """Move to ``when``, which must not be earlier than now."""
        when = _checks.aware("when", when)
        if when < self._now:
            raise InvalidArgument("when", "must not be earlier than the clock's time", when)
        self._now = when

    def advance(self, by: timedelta) -> None:
        """Move forward by ``by`` (zero or more)."""
        if by < timedelta(0):
            raise InvalidArgument("by", "must not be negative", by)
        self._now += by
