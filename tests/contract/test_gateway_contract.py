"""The contract every payment gateway must pass: :class:`billing.ports.PaymentGateway`'s rules.

Each implementation plugs in through a :class:`Harness`: the gateway, an amount it accepts, and
functions giving a payer (customer id and payment method token) that the gateway will approve,
soft-decline or hard-decline. Adding an implementation is one entry in :data:`HARNESSES`; a
harness that needs a sandbox can ``pytest.skip`` from its factory when credentials are missing.
Keys are random so that suites against a real sandbox can run again and again.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest

from billing.domain.errors import GatewayError, InvalidArgument
from billing.domain.money import Money
from billing.domain.payments import DeclineKind, ErrorCode, PaymentResult, PaymentStatus
from billing.ports import (
    CancelLinkRequest,
    Capability,
    ChargeRequest,
    LinkCancellation,
    LinkCancellationStatus,
    PaymentGateway,
    RefundRequest,
    RefundResult,
    RefundStatus,
    SyncRequest,
)
from billing.testing import Behavior, FakeGateway

AT = datetime(2026, 2, 1, 12, tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class Payer:
    """Who pays: the gateway's customer id and payment method token."""

    customer_id: str
    payment_method: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Harness:
    """What the contract suite needs to drive one gateway implementation."""

    gateway: PaymentGateway
    amount: Money
    """An amount the gateway accepts for a charge (above any minimum, in its currency)."""
    approving: Callable[[], Payer]
    soft_declining: Callable[[], Payer]
    hard_declining: Callable[[], Payer]
    charges_for: Callable[[str], int] | None = None
    """How many charges took money from a customer, if the harness can tell."""


def fake_harness() -> Harness:
    gateway = FakeGateway()
    gateway.script("cus_soft", Behavior.DECLINE_SOFT)
    gateway.script("cus_hard", Behavior.DECLINE_HARD)
    return Harness(
        gateway=gateway,
        amount=Money.of("15000", "CLP"),
        approving=lambda: Payer("cus_ok", "pm_fake"),
        soft_declining=lambda: Payer("cus_soft", "pm_fake"),
        hard_declining=lambda: Payer("cus_hard", "pm_fake"),
        charges_for=lambda customer: len(gateway.charges_taken(customer)),
    )


HARNESSES = [
    pytest.param(fake_harness, id="fake"),
]
"""One entry per implementation: a factory building a fresh harness for each test."""


@pytest.fixture(params=HARNESSES)
def harness(request: pytest.FixtureRequest) -> Harness:
    factory: Callable[[], Harness] = request.param
    return factory()


def new_key() -> str:
    return f"contract-{uuid.uuid4().hex}"


def charge(harness: Harness, payer: Payer, key: str) -> PaymentResult:
    return harness.gateway.charge(
        ChargeRequest(
            idempotency_key=key,
            amount=harness.amount,
            customer_id=payer.customer_id,
            payment_method=payer.payment_method,
            description="billing contract suite",
            at=AT,
        )
    )


def sync(harness: Harness, payer: Payer, key: str, reference: str | None) -> PaymentResult | None:
    return harness.gateway.sync(
        SyncRequest(
            idempotency_key=key,
            reference=reference,
            amount=harness.amount,
            customer_id=payer.customer_id,
            at=AT,
        )
    )


def refund(harness: Harness, reference: str, amount: Money, key: str | None = None) -> RefundResult:
    return harness.gateway.refund(
        RefundRequest(idempotency_key=key or new_key(), reference=reference, amount=amount, at=AT)
    )


def succeeded_charge(harness: Harness) -> str:
    result = charge(harness, harness.approving(), new_key())
    assert result.status is PaymentStatus.SUCCEEDED
    assert result.reference
    return result.reference


ACCEPTED = {RefundStatus.SUCCEEDED, RefundStatus.PENDING}
"""A refund the gateway took on; some settle refunds later (``PENDING``)."""


def test_the_gateway_has_a_name(harness: Harness):
    assert isinstance(harness.gateway.name, str)
    assert harness.gateway.name


def test_an_approving_charge_succeeds_with_a_reference(harness: Harness):
    result = charge(harness, harness.approving(), new_key())
    assert result.status is PaymentStatus.SUCCEEDED
    assert result.decline is None
    assert result.reference


@pytest.mark.parametrize(
    ("payer", "kind"),
    [("soft_declining", DeclineKind.SOFT), ("hard_declining", DeclineKind.HARD)],
)
def test_a_decline_is_a_result_with_its_kind_never_an_exception(
    harness: Harness, payer: str, kind: DeclineKind
):
    who: Payer = getattr(harness, payer)()
    result = charge(harness, who, new_key())
    assert result.status is PaymentStatus.FAILED
    assert result.decline is kind
    if harness.charges_for is not None:
        assert harness.charges_for(who.customer_id) == 0


def test_repeating_a_key_never_charges_twice(harness: Harness):
    payer, key = harness.approving(), new_key()
    before = None if harness.charges_for is None else harness.charges_for(payer.customer_id)
    first = charge(harness, payer, key)
    again = charge(harness, payer, key)
    assert first.status is again.status is PaymentStatus.SUCCEEDED
    assert again.reference == first.reference
    if harness.charges_for is not None and before is not None:
        assert harness.charges_for(payer.customer_id) == before + 1


def test_repeating_a_declined_key_repeats_the_decline(harness: Harness):
    payer, key = harness.hard_declining(), new_key()
    first = charge(harness, payer, key)
    again = charge(harness, payer, key)
    assert (again.status, again.decline) == (first.status, first.decline)


@pytest.mark.parametrize("payer", ["approving", "soft_declining", "hard_declining"])
def test_sync_after_a_charge_returns_its_result(harness: Harness, payer: str):
    who: Payer = getattr(harness, payer)()
    key = new_key()
    result = charge(harness, who, key)
    synced = sync(harness, who, key, result.reference)
    assert synced is not None
    assert (synced.status, synced.decline) == (result.status, result.decline)
    if result.reference is not None:
        assert synced.reference == result.reference


def test_sync_of_a_key_never_charged_is_none(harness: Harness):
    assert sync(harness, harness.approving(), new_key(), None) is None


def test_a_full_refund_of_a_succeeded_charge_is_accepted_and_a_further_one_refused(
    harness: Harness,
):
    reference = succeeded_charge(harness)
    assert refund(harness, reference, harness.amount).status in ACCEPTED
    one_more = Money.from_minor(1, harness.amount.currency)
    assert refund(harness, reference, one_more).status is RefundStatus.FAILED


def test_refunding_more_than_was_charged_is_refused(harness: Harness):
    reference = succeeded_charge(harness)
    too_much = harness.amount + Money.from_minor(1, harness.amount.currency)
    assert refund(harness, reference, too_much).status is RefundStatus.FAILED


def test_partial_refunds_are_accepted_up_to_the_amount_charged(harness: Harness):
    reference = succeeded_charge(harness)
    first, rest = harness.amount.split(2)
    assert refund(harness, reference, first).status in ACCEPTED
    more_than_rest = rest + Money.from_minor(1, harness.amount.currency)
    assert refund(harness, reference, more_than_rest).status is RefundStatus.FAILED
    assert refund(harness, reference, rest).status in ACCEPTED


def test_repeating_a_refund_key_refunds_once(harness: Harness):
    reference = succeeded_charge(harness)
    first, rest = harness.amount.split(2)
    key = new_key()
    answer = refund(harness, reference, first, key)
    assert answer.status in ACCEPTED
    assert refund(harness, reference, first, key).status is answer.status
    # Had the repeat refunded again, nothing (or less than ``rest``) would be left.
    assert refund(harness, reference, rest).status in ACCEPTED


# -- withdrawing payment links -----------------------------------------------------------------


def cancel_link(harness: Harness, payer: Payer, key: str, reference: str) -> LinkCancellation:
    return harness.gateway.cancel_link(
        CancelLinkRequest(
            idempotency_key=key,
            reference=reference,
            amount=harness.amount,
            customer_id=payer.customer_id,
            at=AT,
        )
    )


def test_withdrawing_a_settled_charge_is_too_late_or_refused_when_undeclared(harness: Harness):
    payer, key = harness.approving(), new_key()
    result = charge(harness, payer, key)
    assert result.reference is not None
    if Capability.LINK_CANCELLATION not in harness.gateway.capabilities:
        with pytest.raises(GatewayError) as refused:
            cancel_link(harness, payer, key, result.reference)
        assert refused.value.code == ErrorCode.INVALID_REQUEST
        return
    answer = cancel_link(harness, payer, key, result.reference)
    assert answer.status is LinkCancellationStatus.TOO_LATE
    assert answer.payment is not None
    assert (answer.payment.status, answer.payment.reference) == (result.status, result.reference)
    if harness.charges_for is not None:
        assert harness.charges_for(payer.customer_id) == 1, "nothing was undone"


LINK_KEY = "in_link-1"


def fake_link(behavior: Behavior) -> tuple[FakeGateway, str]:
    """A fake gateway with one live link (a ``pay_by_link`` or ``link_expires`` charge)."""
    gateway = FakeGateway(pending_for=timedelta(days=2))
    gateway.script("cus_link", behavior)
    result = charge(
        Harness(
            gateway=gateway,
            amount=Money.of("15000", "CLP"),
            approving=lambda: Payer("cus_link", "pm"),
            soft_declining=lambda: Payer("cus_link", "pm"),
            hard_declining=lambda: Payer("cus_link", "pm"),
        ),
        Payer("cus_link", "pm"),
        LINK_KEY,
    )
    assert result.status is PaymentStatus.REQUIRES_ACTION
    assert result.reference is not None
    return gateway, result.reference


def fake_cancel(gateway: FakeGateway, reference: str, at: datetime = AT) -> LinkCancellation:
    return gateway.cancel_link(
        CancelLinkRequest(
            idempotency_key=LINK_KEY,
            reference=reference,
            amount=Money.of("15000", "CLP"),
            customer_id="cus_link",
            at=at,
        )
    )


def fake_sync(gateway: FakeGateway, at: datetime = AT) -> PaymentResult | None:
    return gateway.sync(
        SyncRequest(
            idempotency_key=LINK_KEY,
            reference=None,
            amount=Money.of("15000", "CLP"),
            customer_id="cus_link",
            at=at,
        )
    )


@pytest.mark.parametrize("behavior", [Behavior.PAY_BY_LINK, Behavior.LINK_EXPIRES])
def test_the_fake_withdraws_a_live_link_for_good(behavior: Behavior):
    gateway, reference = fake_link(behavior)

    assert fake_cancel(gateway, reference).status is LinkCancellationStatus.CANCELED

    assert gateway.link_canceled(reference)
    later = AT + timedelta(days=5)  # when the payer would have paid, or the link expired
    assert fake_cancel(gateway, reference, later).status is LinkCancellationStatus.CANCELED
    withdrawn = fake_sync(gateway, later)
    assert withdrawn is not None
    assert (withdrawn.status, withdrawn.error, withdrawn.code) == (
        PaymentStatus.FAILED,
        ErrorCode.PAYER_ABANDONED,
        "canceled",
    )
    with pytest.raises(InvalidArgument):
        gateway.pay_link(reference, later)
    with pytest.raises(InvalidArgument):
        gateway.pay_expired_link(reference, later)
    assert gateway.charges_taken() == []
    assert gateway.link_cancellation_calls[reference] == 2


def test_the_fake_says_too_late_for_a_link_paid_or_expired_first():
    paid, reference = fake_link(Behavior.PAY_BY_LINK)
    paid.pay_link(reference, AT)
    answer = fake_cancel(paid, reference)
    assert answer.status is LinkCancellationStatus.TOO_LATE
    assert answer.payment is not None
    assert answer.payment.status is PaymentStatus.SUCCEEDED
    assert len(paid.charges_taken()) == 1

    expired, reference = fake_link(Behavior.LINK_EXPIRES)
    answer = fake_cancel(expired, reference, AT + timedelta(days=3))
    assert answer.status is LinkCancellationStatus.TOO_LATE
    assert answer.payment is not None
    assert answer.payment.error is ErrorCode.PAYER_ABANDONED
    expired.pay_expired_link(reference, AT + timedelta(days=3))  # still payable late


def test_the_fake_loses_link_cancellation_answers_on_demand():
    gateway, reference = fake_link(Behavior.PAY_BY_LINK)
    gateway.lose_link_cancellation_answers(before_canceling=True)
    with pytest.raises(TimeoutError):
        fake_cancel(gateway, reference)
    assert not gateway.link_canceled(reference)
    gateway.lose_link_cancellation_answers()
    with pytest.raises(TimeoutError):
        fake_cancel(gateway, reference)
    assert gateway.link_canceled(reference)
    assert fake_cancel(gateway, reference).status is LinkCancellationStatus.CANCELED
