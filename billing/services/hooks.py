"""Instrumentation hooks: points in a billing run where a host can observe what happens.

A host can count or trace the work through them, and the fault-injection tests kill a worker at
each of them. Their order for one payment is: ``claimed`` (a batch of subscriptions), then
``attempt_written`` (the attempt and its idempotency key are committed), then
``gateway_answered`` (the gateway's result is in hand, nothing recorded yet), then
``before_outcome_commit`` (the outcome is written but its transaction not yet committed).
Hooks must not raise; the default ones do nothing.
"""

from __future__ import annotations

from collections.abc import Sequence

from billing.domain.payments import PaymentResult


class Hooks:
    """No-op hooks; subclass and override the points you want to observe."""

    def claimed(self, subscription_ids: Sequence[str]) -> None:
        """A billing run claimed these subscriptions."""

    def attempt_written(self, payment_id: str) -> None:
        """A payment attempt was committed; the gateway is about to be called."""

    def gateway_answered(self, payment_id: str, result: PaymentResult) -> None:
        """The gateway answered; the answer is not recorded yet."""

    def before_outcome_commit(self, payment_id: str) -> None:
        """A payment's outcome is written in a transaction about to commit."""
