"""The conformance suite, at the port: every gateway adapter keeps :class:`PaymentGateway`'s rules.

Parametrised over every adapter's harness (``harness_<gateway>.py``), on its fake server in
process, and once more over real sockets on loopback. A new adapter adds its harness to
:data:`HARNESSES` and passes this file unchanged; where gateways legitimately differ, the test
reads the harness's :class:`~tests.contract.harness.Expectations` or the gateway's declared
capabilities, never its name. ``test_engine_conformance.py`` runs the same flows through the
engine.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Iterator

import pytest

from billing.domain.currencies import EXPONENTS, UNITS_OF_ACCOUNT
from billing.domain.errors import GatewayAuthenticationFailed, GatewayError
from billing.domain.payments import DECLINE_OF, DeclineKind, ErrorCode, PaymentStatus
from billing.ports import (
    AttachRequest,
    Capability,
    CustomerRequest,
    EnrollmentRequest,
    Notification,
    RefundRequest,
    RefundStatus,
)
from tests.contract.harness import AT, Harness, Mode, Payer, charge_request, sync_request
from tests.contract.harness_openpay import OpenpayHarness
from tests.contract.harness_qvo import QvoHarness

HARNESSES: dict[str, Callable[[Mode], Harness]] = {
    "qvo": QvoHarness,
    "openpay": OpenpayHarness,
}
"""One entry per adapter: a factory building a fresh harness on a fresh fake."""


@pytest.fixture(params=[(name, "in_process") for name in HARNESSES], ids=lambda p: p[0])
def harness(request: pytest.FixtureRequest) -> Iterator[Harness]:
    name, mode = request.param
    built = HARNESSES[name](mode)
    yield built
    built.close()


def refund(harness: Harness, reference: str, payer: Payer, amount=None) -> RefundRequest:
    return RefundRequest(
        idempotency_key=f"re_{uuid.uuid4().hex[:16]}",
        reference=reference,
        amount=amount or harness.amount,
        at=AT,
        customer_reference=payer.customer_reference,
    )


# -- what the gateway says it can do ----------------------------------------------------------


def test_the_gateway_names_itself_and_declares_card_on_file_charges(harness: Harness):
    assert harness.gateway.name == harness.name
    capabilities = harness.gateway.capabilities
    assert Capability.STORED_CARD_CHARGES in capabilities
    assert {Capability.CARD_TOKENS, Capability.CARD_ENROLLMENT} & capabilities, (
        "a card-on-file gateway stores cards one way or the other"
    )
    assert (Capability.PARTIAL_REFUNDS in capabilities) is harness.expectations.partial_refunds
    assert (Capability.NOTIFICATIONS in capabilities) is harness.expectations.notifications


def test_the_gateway_declares_the_currencies_it_charges_in_and_never_a_unit_of_account(
    harness: Harness,
):
    currencies = harness.gateway.currencies
    assert harness.amount.currency.code in currencies
    assert currencies <= set(EXPONENTS)
    assert not currencies & set(UNITS_OF_ACCOUNT)  # nobody pays in UF


def test_operations_of_undeclared_capabilities_refuse_without_calling_out(harness: Harness):
    """The capability list is checked against the code: what is not declared is refused."""
    capabilities = harness.gateway.capabilities
    undeclared: list[Callable[[], object]] = []
    if Capability.CARD_TOKENS not in capabilities:
        undeclared.append(
            lambda: harness.gateway.attach_payment_method(
                AttachRequest(customer_id="c", customer_reference="r", token="tok_x")
            )
        )
    if Capability.CARD_ENROLLMENT not in capabilities:
        undeclared.append(
            lambda: harness.gateway.start_enrollment(
                EnrollmentRequest(
                    customer_id="c", customer_reference="r", return_url="https://x.example/r"
                )
            )
        )
    if Capability.NOTIFICATIONS not in capabilities:
        undeclared.append(
            lambda: harness.gateway.parse_notification(Notification(headers={}, body=b"{}"))
        )
    assert undeclared, "every card-on-file adapter leaves at least one way of storing cards out"
    for operation in undeclared:
        with pytest.raises(GatewayError) as refused:
            operation()
        assert refused.value.code == ErrorCode.INVALID_REQUEST


def test_declared_customers_are_registered_with_a_gateway_id(harness: Harness):
    payer = harness.payer("approve")
    if Capability.CUSTOMERS in harness.gateway.capabilities:
        assert payer.customer_reference
    assert payer.payment_method


# -- charges ----------------------------------------------------------------------------------


def test_an_approved_charge_succeeds_with_a_reference(harness: Harness):
    payer = harness.payer("approve")
    result = harness.gateway.charge(charge_request(harness, payer))
    assert result.status is PaymentStatus.SUCCEEDED
    assert result.reference
    assert (result.decline, result.error) == (None, None)
    assert harness.charges_taken(payer) == 1


def test_repeating_a_key_never_charges_twice(harness: Harness):
    payer = harness.payer("approve")
    request = charge_request(harness, payer)
    first = harness.gateway.charge(request)
    again = harness.gateway.charge(request)
    assert (again.status, again.reference) == (PaymentStatus.SUCCEEDED, first.reference)
    assert harness.charges_taken(payer) == 1


def test_a_soft_decline_is_a_result_and_a_retry_can_succeed(harness: Harness):
    payer = harness.payer("soft_then_approve")
    declined = harness.gateway.charge(
        charge_request(harness, payer, f"in_{uuid.uuid4().hex[:8]}-1")
    )
    assert (declined.status, declined.decline) == (PaymentStatus.FAILED, DeclineKind.SOFT)
    assert declined.error is harness.expectations.soft_decline
    assert DECLINE_OF[declined.error] is DeclineKind.SOFT
    assert declined.code, "the gateway's raw code is kept"
    retried = harness.gateway.charge(charge_request(harness, payer, f"in_{uuid.uuid4().hex[:8]}-2"))
    assert retried.status is PaymentStatus.SUCCEEDED
    assert harness.charges_taken(payer) == 1


def test_a_hard_decline_is_a_result_of_the_hard_kind(harness: Harness):
    payer = harness.payer("hard_decline")
    result = harness.gateway.charge(charge_request(harness, payer))
    assert (result.status, result.decline) == (PaymentStatus.FAILED, DeclineKind.HARD)
    assert result.error is harness.expectations.hard_decline
    assert harness.charges_taken(payer) == 0


def test_sync_reports_a_charge_and_none_for_a_key_never_sent(harness: Harness):
    payer = harness.payer("approve")
    request = charge_request(harness, payer)
    assert harness.gateway.sync(sync_request(request)) is None, "nothing was sent with this key yet"
    sent = harness.gateway.charge(request)
    found = harness.gateway.sync(sync_request(request))
    assert found is not None
    assert (found.status, found.reference) == (PaymentStatus.SUCCEEDED, sent.reference)
    by_reference = harness.gateway.sync(sync_request(request, sent.reference))
    assert by_reference is not None
    assert by_reference.reference == sent.reference


def test_a_lost_answer_is_unknown_and_a_lookup_finds_the_one_charge(harness: Harness):
    payer = harness.payer("approve")
    request = charge_request(harness, payer)
    harness.lose_next_answer()
    lost = harness.gateway.charge(request)
    assert lost.status is PaymentStatus.UNKNOWN
    found = harness.gateway.sync(sync_request(request))
    assert found is not None
    assert found.status is PaymentStatus.SUCCEEDED
    assert found.reference
    assert harness.charges_taken(payer) == 1, "the lost charge was taken once"


# -- refunds ----------------------------------------------------------------------------------


def test_a_full_refund_succeeds_once(harness: Harness):
    payer = harness.payer("approve")
    paid = harness.gateway.charge(charge_request(harness, payer))
    assert paid.reference
    request = refund(harness, paid.reference, payer)
    first = harness.gateway.refund(request)
    assert first.status is RefundStatus.SUCCEEDED
    assert harness.gateway.refund(request).status is RefundStatus.SUCCEEDED, "same key, same answer"


def test_partial_refunds_follow_the_declared_capability(harness: Harness):
    payer = harness.payer("approve")
    paid = harness.gateway.charge(charge_request(harness, payer))
    assert paid.reference
    part = harness.amount.allocate([1, 9])[0]
    result = harness.gateway.refund(refund(harness, paid.reference, payer, part))
    if harness.expectations.partial_refunds:
        assert result.status is RefundStatus.SUCCEEDED
    else:
        assert result.status is RefundStatus.FAILED


# -- notifications ----------------------------------------------------------------------------


def test_a_notification_names_its_charge_with_a_stable_id(harness: Harness):
    payer = harness.payer("approve")
    paid = harness.gateway.charge(charge_request(harness, payer))
    assert paid.reference
    webhook = harness.notification(paid.reference)
    facts = harness.gateway.parse_notification(webhook)
    again = harness.gateway.parse_notification(webhook)
    assert facts.event_id
    assert again.event_id == facts.event_id, "a redelivery is recognisable"
    assert facts.charge_reference == paid.reference
    if Capability.SIGNED_NOTIFICATIONS not in harness.gateway.capabilities:
        assert facts.verified is False, "unsigned: the engine must re-fetch before believing"


def test_a_forged_notification_is_never_taken_as_verified(harness: Harness):
    payer = harness.payer("approve")
    paid = harness.gateway.charge(charge_request(harness, payer))
    assert paid.reference
    forged = harness.forged_notification(paid.reference)
    try:
        facts = harness.gateway.parse_notification(forged)
    except GatewayError:
        return  # a signing gateway refuses it outright
    assert facts.verified is False


def test_a_body_that_is_not_a_notification_is_refused(harness: Harness):
    with pytest.raises(GatewayError) as refused:
        harness.gateway.parse_notification(
            Notification(headers={"content-type": "application/json"}, body=b"<html>")
        )
    assert refused.value.code == ErrorCode.INVALID_REQUEST


# -- credentials and secrets ------------------------------------------------------------------


def test_bad_credentials_are_an_authentication_error_never_a_decline(harness: Harness):
    payer = harness.payer("approve")
    bad = harness.with_bad_credentials()
    with pytest.raises(GatewayAuthenticationFailed):
        bad.register_customer(CustomerRequest(customer_id="c-bad", email="bad@example.com"))
    result = bad.charge(charge_request(harness, payer))
    assert result.status is PaymentStatus.UNKNOWN
    assert result.error is ErrorCode.AUTHENTICATION_ERROR
    assert result.decline is None
    assert harness.charges_taken(payer) == 0


def test_no_secret_reaches_logs_or_reprs(harness: Harness, caplog: pytest.LogCaptureFixture):
    caplog.set_level(logging.DEBUG)
    payer = harness.payer("soft_then_approve")
    harness.gateway.charge(charge_request(harness, payer))
    harness.lose_next_answer()
    lost = charge_request(harness, payer)
    harness.gateway.charge(lost)
    harness.gateway.sync(sync_request(lost))
    bad = harness.with_bad_credentials()
    bad.charge(charge_request(harness, payer))
    seen = caplog.text + repr(harness.gateway) + repr(bad)
    for secret in harness.secrets:
        assert secret not in seen


# -- over real sockets ------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(HARNESSES))
def test_the_main_rules_hold_over_loopback_sockets(name: str):
    harness = HARNESSES[name]("loopback")
    try:
        payer = harness.payer("soft_then_approve")
        declined = harness.gateway.charge(charge_request(harness, payer))
        assert declined.decline is DeclineKind.SOFT
        request = charge_request(harness, payer)
        harness.lose_next_answer()
        assert harness.gateway.charge(request).status is PaymentStatus.UNKNOWN
        found = harness.gateway.sync(sync_request(request))
        assert found is not None
        assert found.status is PaymentStatus.SUCCEEDED
        assert harness.charges_taken(payer) == 1
    finally:
        harness.close()
