"""Retry (dunning) policies and their presets."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from billing.domain.dunning import AfterRetries, RetryPolicy
from billing.domain.errors import InvalidArgument
from billing.domain.payments import DeclineKind

FAILED = datetime(2026, 2, 1, tzinfo=UTC)


def retries(policy: RetryPolicy) -> list[timedelta]:
    """Offsets from the first failure of every retry the policy makes on soft declines."""
    offsets, attempt, at = [], 1, FAILED
    while (
        decision := policy.decide(attempt=attempt, decline=DeclineKind.SOFT, failed_at=at)
    ).retry_at:
        at = decision.retry_at
        offsets.append(at - FAILED)
        attempt += 1
    return offsets


def test_killbill_default_retries_three_times_eight_days_apart():
    assert retries(RetryPolicy.killbill()) == [timedelta(days=d) for d in (8, 16, 24)]


def test_eight_tries_in_two_weeks_retries_eight_times_within_fourteen_days():
    offsets = retries(RetryPolicy.eight_in_two_weeks())
    assert len(offsets) == 8
    assert offsets[-1] == timedelta(days=14)


def test_openpay_retry_times_counts_retries_after_the_first_attempt():
    policy = RetryPolicy.openpay(2, "cancelled")
    assert policy.max_attempts == 3
    assert policy.then is AfterRetries.CANCELED
    assert retries(policy) == [timedelta(days=1), timedelta(days=2)]


def test_openpay_status_after_retry_accepts_only_unpaid_or_cancelled():
    assert RetryPolicy.openpay(1, "unpaid").then is AfterRetries.UNPAID
    with pytest.raises(InvalidArgument) as error:
        RetryPolicy.openpay(1, "past_due")
    assert error.value.field == "status_after_retry"


def test_a_hard_decline_gives_up_at_once():
    decision = RetryPolicy.killbill().decide(attempt=1, decline=DeclineKind.HARD, failed_at=FAILED)
    assert decision.exhausted
    assert decision.then is AfterRetries.UNPAID


def test_more_attempts_than_delays_repeat_the_last_delay():
    policy = RetryPolicy.of([1, 2], max_attempts=5)
    assert retries(policy) == [timedelta(days=d) for d in (1, 3, 5, 7)]


def test_no_retries_gives_up_after_the_first_failure():
    assert retries(RetryPolicy.no_retries("canceled")) == []


def test_a_policy_needs_a_delay_to_retry():
    with pytest.raises(InvalidArgument) as error:
        RetryPolicy(delays=(), max_attempts=2)
    assert error.value.field == "retry.delays"


@pytest.mark.parametrize("delays", [[0], [-1], [True]])
def test_delays_must_be_whole_positive_days(delays: list[int]):
    with pytest.raises(InvalidArgument) as error:
        RetryPolicy.of(delays)
    assert error.value.field == "retry.delays_days"


def test_an_unknown_outcome_is_refused():
    with pytest.raises(InvalidArgument) as error:
        RetryPolicy.of([1], then="suspended")
    assert error.value.field == "retry.then"


def test_max_attempts_must_be_at_least_one():
    with pytest.raises(InvalidArgument) as error:
        RetryPolicy.of([1], max_attempts=0)
    assert error.value.field == "retry.max_attempts"


def test_a_naive_failure_time_is_refused():
    with pytest.raises(InvalidArgument):
        RetryPolicy.killbill().decide(
            attempt=1, decline=DeclineKind.SOFT, failed_at=datetime(2026, 1, 1)
        )
