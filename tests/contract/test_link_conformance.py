"""The conformance suite of pay-by-link gateways (Khipu, Payvalida): every charge is a payment
the customer completes later through a link.

Runs unchanged over every harness in :data:`LINK_HARNESSES`; the card-on-file gateways have their
own suite (``test_gateway_conformance.py``). Where link gateways legitimately differ (refunds,
signed notifications), the test reads the declared capabilities, never the gateway's name.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Iterator

import httpx
import pytest

from billing.domain.errors import GatewayError
from billing.domain.payments import DeclineKind, ErrorCode, PaymentStatus
from billing.ports import (
    AttachRequest,
    CancelLinkRequest,
    Capability,
    ChargeRequest,
    LinkCancellationStatus,
    Notification,
    RefundRequest,
    RefundStatus,
)
from tests.contract.harness import AT, Harness, Mode, Payer, charge_request, sync_request
from tests.contract.harness_khipu import KhipuHarness
from tests.contract.harness_payvalida import PayvalidaHarness

LINK_HARNESSES: dict[str, Callable[[Mode], Harness]] = {
    "khipu": KhipuHarness,
    "payvalida": PayvalidaHarness,
}
"""One entry per pay-by-link adapter: a factory building a fresh harness on a fresh fake."""


@pytest.fixture(params=list(LINK_HARNESSES))
def harness(request: pytest.FixtureRequest) -> Iterator[Harness]:
    built = LINK_HARNESSES[request.param]("in_process")
    yield built
    built.close()


def link(harness: Harness, payer: Payer, request: ChargeRequest | None = None) -> str:
    """Charge: a link to pay at, and the gateway's id for the payment."""
    result = harness.gateway.charge(request or charge_request(harness, payer))
    assert result.status is PaymentStatus.REQUIRES_ACTION
    assert result.action_url is not None
    assert result.action_url.startswith(("https://", "http://"))
    assert result.reference
    return result.reference


def test_the_gateway_declares_pay_by_link_and_no_stored_cards(harness: Harness):
    capabilities = harness.gateway.capabilities
    assert harness.expectations.pay_by_link
    assert {Capability.PAY_BY_LINK, Capability.REDIRECT_PAYMENTS} <= capabilities
    assert Capability.STORED_CARD_CHARGES not in capabilities
    assert (Capability.NOTIFICATIONS in capabilities) is harness.expectations.notifications


def test_the_payment_method_is_the_payers_email_and_a_bad_one_is_refused(harness: Harness):
    payer = harness.payer("approve")
    assert "@" in payer.payment_method
    with pytest.raises(GatewayError) as refused:
        harness.gateway.attach_payment_method(
            AttachRequest(customer_id="c", customer_reference=None, token="not an e-mail")
        )
    assert refused.value.code == ErrorCode.INVALID_REQUEST


def test_a_charge_is_a_link_and_a_repeated_key_is_the_same_link(harness: Harness):
    payer = harness.payer("approve")
    request = charge_request(harness, payer)
    first = link(harness, payer, request)
    assert link(harness, payer, request) == first, "one payment per key"
    found = harness.gateway.sync(sync_request(request, first))
    assert found is not None
    assert found.status is PaymentStatus.REQUIRES_ACTION
    assert harness.charges_taken(payer) == 0, "nothing is taken before the customer pays"


def test_sync_is_none_for_a_key_never_sent(harness: Harness):
    payer = harness.payer("approve")
    assert harness.gateway.sync(sync_request(charge_request(harness, payer))) is None


def test_a_paid_link_succeeds_once(harness: Harness):
    payer = harness.payer("approve")
    request = charge_request(harness, payer)
    reference = link(harness, payer, request)
    harness.pay_link(reference)
    paid = harness.gateway.sync(sync_request(request, reference))
    assert paid is not None
    assert paid.status is PaymentStatus.SUCCEEDED
    assert paid.reference == reference
    assert harness.charges_taken(payer) == 1
    assert link_again_is_settled(harness, request, reference)


def link_again_is_settled(harness: Harness, request: ChargeRequest, reference: str) -> bool:
    again = harness.gateway.charge(request)
    return again.status is PaymentStatus.SUCCEEDED and again.reference == reference


def test_a_link_that_expires_unpaid_is_a_soft_decline_of_an_abandoned_payment(harness: Harness):
    payer = harness.payer("approve")
    request = charge_request(harness, payer)
    reference = link(harness, payer, request)
    harness.expire_link(reference)
    expired = harness.gateway.sync(sync_request(request, reference))
    assert expired is not None
    assert expired.status is PaymentStatus.FAILED
    assert expired.decline is DeclineKind.SOFT
    assert expired.error is ErrorCode.PAYER_ABANDONED
    assert harness.charges_taken(payer) == 0


def test_a_link_paid_after_its_expiry_reads_succeeded(harness: Harness):
    payer = harness.payer("approve")
    request = charge_request(harness, payer)
    reference = link(harness, payer, request)
    harness.expire_link(reference)
    harness.pay_link(reference, late=True)
    late = harness.gateway.sync(sync_request(request, reference))
    assert late is not None
    assert late.status is PaymentStatus.SUCCEEDED
    assert harness.charges_taken(payer) == 1


def test_a_notification_names_its_payment_with_a_stable_id(harness: Harness):
    payer = harness.payer("approve")
    reference = link(harness, payer)
    harness.pay_link(reference)
    webhook = harness.notification(reference)
    facts = harness.gateway.parse_notification(webhook)
    again = harness.gateway.parse_notification(webhook)
    assert facts.event_id
    assert again.event_id == facts.event_id, "a redelivery is recognisable"
    assert facts.charge_reference == reference
    if Capability.SIGNED_NOTIFICATIONS not in harness.gateway.capabilities:
        assert facts.verified is False, "unsigned: the engine must re-fetch before believing"


def test_a_forged_notification_is_refused_or_never_verified(harness: Harness):
    payer = harness.payer("approve")
    reference = link(harness, payer)
    try:
        facts = harness.gateway.parse_notification(harness.forged_notification(reference))
    except GatewayError as refused:
        code = refused.code
    else:
        assert facts.verified is False
        return
    assert code == ErrorCode.INVALID_REQUEST


def test_a_body_that_is_not_a_notification_is_refused(harness: Harness):
    with pytest.raises(GatewayError) as refused:
        harness.gateway.parse_notification(
            Notification(headers={"content-type": "text/html"}, body=b"<html>")
        )
    assert refused.value.code == ErrorCode.INVALID_REQUEST


def test_a_paid_link_is_refunded_once_where_refunds_are_declared(harness: Harness):
    if Capability.REFUNDS not in harness.gateway.capabilities:
        with pytest.raises(GatewayError):
            harness.gateway.refund(
                RefundRequest(idempotency_key="re_x", reference="x", amount=harness.amount, at=AT)
            )
        return
    payer = harness.payer("approve")
    reference = link(harness, payer)
    harness.pay_link(reference)
    request = RefundRequest(
        idempotency_key=f"re_{uuid.uuid4().hex[:16]}", reference=reference,
        amount=harness.amount, at=AT,
    )  # fmt: skip
    assert harness.gateway.refund(request).status is RefundStatus.SUCCEEDED
    assert harness.gateway.refund(request).status is RefundStatus.SUCCEEDED, "same key, same"


def test_bad_credentials_are_an_authentication_error_never_a_decline(harness: Harness):
    payer = harness.payer("approve")
    result = harness.with_bad_credentials().charge(charge_request(harness, payer))
    assert result.status is PaymentStatus.UNKNOWN
    assert result.error is ErrorCode.AUTHENTICATION_ERROR
    assert result.decline is None


def test_no_secret_reaches_logs_or_reprs(harness: Harness, caplog: pytest.LogCaptureFixture):
    caplog.set_level(logging.DEBUG)
    payer = harness.payer("approve")
    reference = link(harness, payer)
    harness.gateway.sync(sync_request(charge_request(harness, payer), reference))
    bad = harness.with_bad_credentials()
    bad.charge(charge_request(harness, payer))
    seen = caplog.text + repr(harness.gateway) + repr(bad)
    for secret in harness.secrets:
        assert secret not in seen


def cancel_request(request: ChargeRequest, reference: str) -> CancelLinkRequest:
    """Withdraw the link of the charge ``request`` made."""
    return CancelLinkRequest(
        idempotency_key=request.idempotency_key,
        reference=reference,
        amount=request.amount,
        customer_id=request.customer_id,
        customer_reference=request.customer_reference,
        at=request.at,
    )


def withdraws_links(harness: Harness) -> bool:
    """Whether the gateway declares link withdrawal; one that does not refuses it."""
    if Capability.LINK_CANCELLATION in harness.gateway.capabilities:
        return True
    payer = harness.payer("approve")
    request = charge_request(harness, payer)
    with pytest.raises(GatewayError) as refused:
        harness.gateway.cancel_link(cancel_request(request, link(harness, payer, request)))
    assert refused.value.code == ErrorCode.INVALID_REQUEST
    return False


def test_a_live_link_is_withdrawn_and_can_no_longer_be_paid(harness: Harness):
    if not withdraws_links(harness):
        return
    payer = harness.payer("approve")
    request = charge_request(harness, payer)
    reference = link(harness, payer, request)

    withdrawn = harness.gateway.cancel_link(cancel_request(request, reference))

    assert withdrawn.status is LinkCancellationStatus.CANCELED
    assert withdrawn.payment is None
    again = harness.gateway.cancel_link(cancel_request(request, reference))
    assert again.status is LinkCancellationStatus.CANCELED, "withdrawing is idempotent"
    with pytest.raises(httpx.HTTPStatusError):
        harness.pay_link(reference)
    with pytest.raises(httpx.HTTPStatusError):
        harness.pay_link(reference, late=True)
    found = harness.gateway.sync(sync_request(request, reference))
    assert found is not None
    assert found.status is PaymentStatus.FAILED, "a withdrawn link is a payment never made"
    assert found.error is ErrorCode.PAYER_ABANDONED
    assert harness.charges_taken(payer) == 0


def test_withdrawing_a_paid_link_is_too_late_and_says_it_succeeded(harness: Harness):
    if not withdraws_links(harness):
        return
    payer = harness.payer("approve")
    request = charge_request(harness, payer)
    reference = link(harness, payer, request)
    harness.pay_link(reference)

    answer = harness.gateway.cancel_link(cancel_request(request, reference))

    assert answer.status is LinkCancellationStatus.TOO_LATE
    assert answer.payment is not None
    assert answer.payment.status is PaymentStatus.SUCCEEDED
    assert answer.payment.reference == reference
    assert harness.charges_taken(payer) == 1, "nothing was undone"


def test_withdrawing_an_expired_link_never_makes_it_paid(harness: Harness):
    if not withdraws_links(harness):
        return
    payer = harness.payer("approve")
    request = charge_request(harness, payer)
    reference = link(harness, payer, request)
    harness.expire_link(reference)

    answer = harness.gateway.cancel_link(cancel_request(request, reference))

    if answer.status is LinkCancellationStatus.TOO_LATE:  # the gateway keeps expired links
        assert answer.payment is not None
        assert answer.payment.status is PaymentStatus.FAILED
        assert answer.payment.error is ErrorCode.PAYER_ABANDONED
    else:  # the gateway deleted it: not even a late payment can complete it now
        with pytest.raises(httpx.HTTPStatusError):
            harness.pay_link(reference, late=True)
    assert harness.charges_taken(payer) == 0


@pytest.mark.parametrize("name", list(LINK_HARNESSES))
def test_the_link_flow_holds_over_loopback_sockets(name: str):
    harness = LINK_HARNESSES[name]("loopback")
    try:
        payer = harness.payer("approve")
        request = charge_request(harness, payer)
        reference = link(harness, payer, request)
        assert link(harness, payer, request) == reference
        harness.pay_link(reference)
        paid = harness.gateway.sync(sync_request(request, reference))
        assert paid is not None
        assert paid.status is PaymentStatus.SUCCEEDED
        facts = harness.gateway.parse_notification(harness.notification(reference))
        assert facts.charge_reference == reference
        assert harness.charges_taken(payer) == 1
        if Capability.LINK_CANCELLATION in harness.gateway.capabilities:
            other = charge_request(harness, payer)
            live = link(harness, payer, other)
            withdrawn = harness.gateway.cancel_link(cancel_request(other, live))
            assert withdrawn.status is LinkCancellationStatus.CANCELED
            paid_already = harness.gateway.cancel_link(cancel_request(request, reference))
            assert paid_already.status is LinkCancellationStatus.TOO_LATE
    finally:
        harness.close()
