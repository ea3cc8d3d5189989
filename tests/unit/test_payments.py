"""Payment attempts: idempotency keys and the results they record."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from billing.domain.errors import IllegalTransition, InvalidArgument
from billing.domain.money import Money
from billing.domain.payments import (
    DeclineKind,
    ErrorCode,
    PaymentAttempt,
    PaymentResult,
    PaymentStatus,
    idempotency_key,
)

AT = datetime(2026, 2, 1, tzinfo=UTC)


def attempt(number: int = 1) -> PaymentAttempt:
    return PaymentAttempt(
        id="pay_1", invoice_id="in_1", number=number, amount=Money.of("15000", "CLP"), created_at=AT
    )


def test_the_idempotency_key_comes_from_the_invoice_and_the_attempt_number():
    assert idempotency_key("in_1", 3) == "in_1-3"
    assert attempt(2).idempotency_key == "in_1-2"


def test_a_new_attempt_is_created_before_the_gateway_answers():
    assert attempt().status is PaymentStatus.CREATED


def test_a_success_is_recorded_with_the_gateway_reference():
    done, events = attempt().record(PaymentResult.succeeded(reference="trx_1"), at=AT)
    assert done.status is PaymentStatus.SUCCEEDED
    assert done.reference == "trx_1"
    assert [event.name for event in events] == ["payment.succeeded"]


def test_a_decline_is_a_result_with_its_kind_and_code():
    done, events = attempt().record(
        PaymentResult.failed(DeclineKind.HARD, code="stolen_card"), at=AT
    )
    assert done.status is PaymentStatus.FAILED
    assert done.decline is DeclineKind.HARD
    assert events[0].payload()["decline"] == "hard"
    assert events[0].payload()["code"] == "stolen_card"
    assert events[0].payload()["error"] is None


def test_a_declines_event_carries_its_normalised_error():
    result = PaymentResult.declined(ErrorCode.INSUFFICIENT_FUNDS, code="51", message="sin fondos")
    _, [event] = attempt().record(result, at=AT)
    payload = event.payload()
    assert (payload["decline"], payload["code"], payload["error"]) == (
        "soft",
        "51",
        "insufficient_funds",
    )


def test_an_action_needed_event_carries_the_customers_link():
    link = "https://pay.example/checkout/abc"
    result = PaymentResult(status=PaymentStatus.REQUIRES_ACTION, action_url=link)
    waiting, [event] = attempt().record(result, at=AT)
    assert waiting.action_url == link
    assert (event.name, event.payload()["action_url"]) == ("payment.requires_action", link)


@pytest.mark.parametrize(
    ("status", "name"),
    [
        (PaymentStatus.PENDING, "payment.pending"),
        (PaymentStatus.REQUIRES_ACTION, "payment.requires_action"),
        (PaymentStatus.UNKNOWN, "payment.unknown"),
    ],
)
def test_an_unsettled_result_can_be_followed_by_another(status: PaymentStatus, name: str):
    waiting, events = attempt().record(PaymentResult(status=status), at=AT)
    assert [event.name for event in events] == [name]
    settled, _ = waiting.record(PaymentResult.succeeded(), at=AT)
    assert settled.status is PaymentStatus.SUCCEEDED


def test_a_settled_attempt_refuses_another_result():
    done, _ = attempt().record(PaymentResult.succeeded(), at=AT)
    with pytest.raises(IllegalTransition):
        done.record(PaymentResult.failed(DeclineKind.SOFT), at=AT)


def test_a_failed_result_needs_a_decline_kind_and_only_a_failed_one_has_one():
    with pytest.raises(InvalidArgument):
        PaymentResult(status=PaymentStatus.FAILED)
    with pytest.raises(InvalidArgument):
        PaymentResult(status=PaymentStatus.SUCCEEDED, decline=DeclineKind.SOFT)


def test_an_attempt_needs_something_to_pay():
    with pytest.raises(InvalidArgument) as error:
        PaymentAttempt(id="p", invoice_id="i", number=1, amount=Money.of("0", "CLP"), created_at=AT)
    assert error.value.field == "amount"


def test_attempt_numbers_start_at_one():
    with pytest.raises(InvalidArgument) as error:
        attempt(0)
    assert error.value.field == "number"
