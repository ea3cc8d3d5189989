"""Retry (dunning) policies: when to try a declined payment again, and when to give up.

A policy is a schedule of delays, a maximum number of attempts (the first one included) and what
happens to the subscription when they run out. After attempt ``n`` fails with a soft decline, the
next attempt is due ``delays[n - 1]`` later (the last delay repeats if the maximum asks for more
attempts than there are delays). A hard decline (stolen or expired card, closed account...) stops
the retries at once: trying the same card again cannot succeed.

Presets:

* :meth:`RetryPolicy.killbill` - Kill Bill's default, retries 8, 8 and 8 days apart.
* :meth:`RetryPolicy.eight_in_two_weeks` - 8 retries within two weeks (Stripe's recommendation).
* :meth:`RetryPolicy.openpay` - Openpay's ``retry_times`` and ``status_after_retry`` (Openpay does
  not publish its spacing; one day apart unless told otherwise).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from billing.domain import _checks
from billing.domain.errors import InvalidArgument
from billing.domain.payments import DeclineKind


class AfterRetries(StrEnum):
    """What a subscription becomes when its retries run out."""

    UNPAID = "unpaid"
    """Billing stops until the payment method is replaced and the invoice is paid."""
    CANCELED = "canceled"
    """The subscription is canceled."""
    PAST_DUE = "past_due"
    """It stays past due and keeps renewing; the unpaid amount is carried to the next invoice."""

    @classmethod
    def parse(cls, value: str | AfterRetries, field: str = "retry.then") -> AfterRetries:
        """Accept ``unpaid``, ``canceled`` (or Openpay's ``cancelled``) and ``past_due``."""
        if value == "cancelled":
            return cls.CANCELED
        return _checks.member(cls, value, field)


@dataclass(frozen=True, slots=True, kw_only=True)
class RetryDecision:
    """What to do after a failed attempt: retry at ``retry_at``, or give up (``retry_at`` None)."""

    retry_at: datetime | None
    then: AfterRetries

    @property
    def exhausted(self) -> bool:
        return self.retry_at is None


@dataclass(frozen=True, slots=True, kw_only=True)
class RetryPolicy:
    """A dunning schedule; see the module docstring."""

    delays: tuple[timedelta, ...]
    max_attempts: int
    then: AfterRetries = AfterRetries.UNPAID

    def __post_init__(self) -> None:
        _checks.integer("retry.max_attempts", self.max_attempts, minimum=1)
        for delay in self.delays:
            if not isinstance(delay, timedelta) or delay <= timedelta(0):
                raise InvalidArgument("retry.delays", "must all be positive durations", delay)
        if self.max_attempts > 1 and not self.delays:
            raise InvalidArgument("retry.delays", "must hold at least one delay to retry at all")
        AfterRetries(self.then)

    @classmethod
    def of(
        cls,
        delays_days: Sequence[int],
        *,
        then: str | AfterRetries = AfterRetries.UNPAID,
        max_attempts: int | None = None,
    ) -> RetryPolicy:
        """Delays in whole days; by default one attempt per delay plus the first."""
        days = [_checks.integer("retry.delays_days", d, minimum=1) for d in delays_days]
        return cls(
            delays=tuple(timedelta(days=d) for d in days),
            max_attempts=len(days) + 1 if max_attempts is None else max_attempts,
            then=AfterRetries.parse(then),
        )

    @classmethod
    def killbill(cls) -> RetryPolicy:
        """Kill Bill's default ``payment.retry.days=8,8,8``: three retries, eight days apart."""
        return cls.of([8, 8, 8])

    @classmethod
    def eight_in_two_weeks(cls, then: str | AfterRetries = AfterRetries.UNPAID) -> RetryPolicy:
        """Eight retries within 14 days of the first failure (Stripe's recommended default)."""
        return cls.of([1, 1, 2, 2, 2, 2, 2, 2], then=then)

    @classmethod
    def openpay(
        cls, retry_times: int, status_after_retry: str, every: timedelta = timedelta(days=1)
    ) -> RetryPolicy:
        """Openpay's plan fields: ``retry_times`` retries, then ``unpaid`` or ``cancelled``."""
        _checks.integer("retry_times", retry_times, minimum=0)
        then = AfterRetries.parse(status_after_retry, "status_after_retry")
        if then is AfterRetries.PAST_DUE:
            raise InvalidArgument(
                "status_after_retry", "must be unpaid or cancelled", status_after_retry
            )
        return cls(delays=(every,) if retry_times else (), max_attempts=retry_times + 1, then=then)

    @classmethod
    def no_retries(cls, then: str | AfterRetries = AfterRetries.UNPAID) -> RetryPolicy:
        """Give up after the first failed attempt."""
        return cls(delays=(), max_attempts=1, then=AfterRetries.parse(then))

    def decide(self, *, attempt: int, decline: DeclineKind, failed_at: datetime) -> RetryDecision:
        """After attempt number ``attempt`` failed at ``failed_at``: when to retry, if at all."""
        _checks.integer("attempt", attempt, minimum=1)
        failed_at = _checks.aware("failed_at", failed_at)
        if decline is DeclineKind.HARD or attempt >= self.max_attempts:
            return RetryDecision(retry_at=None, then=self.then)
        delay = self.delays[min(attempt, len(self.delays)) - 1]
        return RetryDecision(retry_at=failed_at + delay, then=self.then)

    def describe(self) -> str:
        days = ", ".join(f"{d / timedelta(days=1):g}" for d in self.delays) or "none"
        return f"up to {self.max_attempts} attempts, delays (days): {days}; then {self.then}"
