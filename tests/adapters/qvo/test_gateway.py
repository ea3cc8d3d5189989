"""QvoGateway against FakeQvo: every operation, declines, unknown outcomes, lookups, retries,
bad credentials, and no secret in logs, reprs or exceptions.

Most tests run in process (:class:`billing.testing.asgi.InProcessTransport`); the last ones run over
loopback sockets, where httpx and httpcore log for real.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from adapters.qvo import FakeQvo, QvoGateway, from_environment
from adapters.qvo._wire import APPROVING_CARD, REJECTING_CARD, SANDBOX_URL
from adapters.qvo.fake import Outcome
from billing.domain.errors import GatewayAuthenticationFailed, GatewayError
from billing.domain.money import Money
from billing.domain.payments import DeclineKind, ErrorCode, PaymentResult, PaymentStatus
from billing.ports import (
    AttachRequest,
    Capability,
    ChargeRequest,
    CustomerRequest,
    EnrollmentRequest,
    EnrollmentResult,
    EnrollmentStatus,
    Notification,
    RefundRequest,
    RefundResult,
    RefundStatus,
    SyncRequest,
)
from billing.testing.asgi import InProcessTransport, serve

TOKEN = "qvo-test-token-5b8e1c"
BAD_TOKEN = "qvo-wrong-token-91f2aa"
AT = datetime(2026, 2, 1, 12, tzinfo=UTC)
AMOUNT = Money.of("15000", "CLP")
RETURN_URL = "https://shop.example/qvo/back"


class Clock:
    """The fake's time, moved by hand."""

    def __init__(self) -> None:
        self.now = datetime(2026, 2, 1, 12, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


class Hooked(httpx.BaseTransport):
    """A transport that runs ``before`` on each request, then passes it on; ``refuse`` says
    which requests are refused once, before they leave (a connection refused)."""

    def __init__(
        self,
        inner: httpx.BaseTransport,
        before: Callable[[httpx.Request], None] = lambda request: None,
        refuse: Callable[[httpx.Request], bool] = lambda request: False,
    ) -> None:
        self.inner = inner
        self.before = before
        self.refuse = refuse
        self.attempts: list[str] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.attempts.append(f"{request.method} {request.url.path}")
        if self.refuse(request):
            raise httpx.ConnectError("connection refused", request=request)
        self.before(request)
        return self.inner.handle_request(request)

    def close(self) -> None:
        self.inner.close()


def on_charge(request: httpx.Request) -> bool:
    return request.method == "POST" and request.url.path.endswith("/charge")


@dataclass(frozen=True)
class Payer:
    customer_id: str
    reference: str
    card: str


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def fake(clock: Clock) -> FakeQvo:
    return FakeQvo(TOKEN, clock=clock)


@pytest.fixture
def gateway(fake: FakeQvo) -> Iterator[QvoGateway]:
    with QvoGateway(TOKEN, transport=InProcessTransport(fake.app)) as gateway:
        yield gateway


@pytest.fixture
def browser(fake: FakeQvo) -> Iterator[httpx.Client]:
    with httpx.Client(transport=InProcessTransport(fake.app)) as client:
        yield client


def register(gateway: QvoGateway, customer_id: str = "cust-1", **fields: Any) -> str:
    return gateway.register_customer(CustomerRequest(customer_id=customer_id, **fields))


def enroll(
    gateway: QvoGateway, browser: httpx.Client, reference: str, **form: str
) -> EnrollmentResult:
    enrollment = gateway.start_enrollment(
        EnrollmentRequest(customer_id="cust", customer_reference=reference, return_url=RETURN_URL)
    )
    back = browser.post(enrollment.redirect_url, data={"card_number": APPROVING_CARD, **form})
    assert back.status_code == 302
    assert back.headers["location"] == f"{RETURN_URL}?uid={enrollment.reference}"
    return gateway.complete_enrollment(reference, enrollment.reference)


def new_payer(
    gateway: QvoGateway, browser: httpx.Client, customer_id: str = "cust-1", **form: str
) -> Payer:
    reference = register(gateway, customer_id)
    result = enroll(gateway, browser, reference, **form)
    assert result.method is not None
    return Payer(customer_id, reference, result.method.reference)


@pytest.fixture
def payer(gateway: QvoGateway, browser: httpx.Client) -> Payer:
    return new_payer(gateway, browser)


def charge(
    gateway: QvoGateway, payer: Payer, key: str = "inv_1-1", amount: Money = AMOUNT
) -> PaymentResult:
    return gateway.charge(
        ChargeRequest(
            idempotency_key=key,
            amount=amount,
            customer_id=payer.customer_id,
            payment_method=payer.card,
            description="Plan Oro",
            at=AT,
            customer_reference=payer.reference,
        )
    )


def sync(
    gateway: QvoGateway, payer: Payer, key: str = "inv_1-1", reference: str | None = None
) -> PaymentResult | None:
    return gateway.sync(
        SyncRequest(
            idempotency_key=key,
            reference=reference,
            amount=AMOUNT,
            customer_id=payer.customer_id,
            at=AT,
            customer_reference=payer.reference,
        )
    )


def refund(gateway: QvoGateway, reference: str, amount: Money = AMOUNT) -> RefundResult:
    return gateway.refund(
        RefundRequest(idempotency_key="ref-1", reference=reference, amount=amount, at=AT)
    )


def hooked_gateway(fake: FakeQvo, **hooks: Any) -> tuple[QvoGateway, Hooked]:
    transport = Hooked(InProcessTransport(fake.app), **hooks)
    return QvoGateway(TOKEN, transport=transport), transport


# -- identity -----------------------------------------------------------------------------------


def test_capabilities_are_what_qvo_offers(gateway: QvoGateway) -> None:
    assert gateway.name == "qvo"
    assert gateway.capabilities == {
        Capability.CUSTOMERS,
        Capability.CARD_ENROLLMENT,
        Capability.STORED_CARD_CHARGES,
        Capability.REFUNDS,
        Capability.NOTIFICATIONS,
    }


def test_card_tokens_are_not_supported(gateway: QvoGateway) -> None:
    with pytest.raises(GatewayError) as raised:
        gateway.attach_payment_method(
            AttachRequest(customer_id="c", customer_reference="cus_1", token="tok")
        )
    assert raised.value.code == "invalid_request"


def test_from_environment_needs_a_token() -> None:
    assert from_environment({}) is None
    with from_environment({"BILLING_QVO_API_TOKEN": TOKEN}) as gateway:  # type: ignore[union-attr]
        assert repr(gateway) == f"QvoGateway(name='qvo', base_url='{SANDBOX_URL}')"
    env = {"BILLING_QVO_API_TOKEN": TOKEN, "BILLING_QVO_BASE_URL": "https://api.qvo.cl/"}
    with from_environment(env) as gateway:  # type: ignore[union-attr]
        assert "https://api.qvo.cl'" in repr(gateway)


# -- customers ----------------------------------------------------------------------------------


def test_a_customer_is_registered_with_our_id_in_its_metadata(
    gateway: QvoGateway, fake: FakeQvo
) -> None:
    reference = register(gateway, email="jon@thewatch.org", name="Jon Snow")
    assert reference.startswith("cus_")
    customer = fake.events()[0]["data"]["customer"]
    assert (customer["id"], customer["email"], customer["name"]) == (
        reference,
        "jon@thewatch.org",
        "Jon Snow",
    )
    assert customer["metadata"] == {"billing_customer_id": "cust-1"}


def test_a_customer_without_email_gets_a_placeholder(gateway: QvoGateway, fake: FakeQvo) -> None:
    register(gateway, "cust-7")
    assert fake.events()[0]["data"]["customer"]["email"] == "cust-7@customers.invalid"


def test_registering_again_returns_the_same_customer(gateway: QvoGateway, fake: FakeQvo) -> None:
    first = register(gateway, email="jon@thewatch.org")
    assert register(gateway, email="jon@thewatch.org") == first
    assert fake.requests("create_customer") == 2
    assert len([e for e in fake.events() if e["type"] == "customer.created"]) == 1


def test_another_customers_email_is_a_duplicate(gateway: QvoGateway) -> None:
    register(gateway, "cust-1", email="shared@example.cl")
    with pytest.raises(GatewayError) as raised:
        register(gateway, "cust-2", email="shared@example.cl")
    assert raised.value.code == "duplicate_request"


# -- enrollment ---------------------------------------------------------------------------------


def test_an_enrollment_sends_the_customer_to_the_hosted_page(
    gateway: QvoGateway, clock: Clock
) -> None:
    enrollment = gateway.start_enrollment(
        EnrollmentRequest(
            customer_id="cust-1", customer_reference=register(gateway), return_url=RETURN_URL
        )
    )
    assert enrollment.reference.startswith("woi_")
    assert enrollment.redirect_url == (
        f"{SANDBOX_URL}/webpay_oneclick/init_inscription/{enrollment.reference}"
    )
    assert enrollment.expires_at == clock.now + timedelta(minutes=10)


def test_an_enrollment_is_pending_until_the_customer_finishes(gateway: QvoGateway) -> None:
    reference = register(gateway)
    enrollment = gateway.start_enrollment(
        EnrollmentRequest(customer_id="cust-1", customer_reference=reference, return_url=RETURN_URL)
    )
    result = gateway.complete_enrollment(reference, enrollment.reference)
    assert result.status is EnrollmentStatus.PENDING


def test_the_approvable_test_card_is_stored(gateway: QvoGateway, browser: httpx.Client) -> None:
    result = enroll(gateway, browser, register(gateway))
    assert result.status is EnrollmentStatus.SUCCEEDED
    assert result.method is not None
    assert result.method.reference.startswith("woc_")
    assert result.method.label == "VISA ****6623"


@pytest.mark.parametrize(
    "form",
    [{"card_number": REJECTING_CARD}, {"decision": "reject"}, {"card_number": "4111111111111111"}],
)
def test_refused_cards_fail_the_enrollment(
    gateway: QvoGateway, browser: httpx.Client, form: dict[str, str]
) -> None:
    result = enroll(gateway, browser, register(gateway), **form)
    assert result.status is EnrollmentStatus.FAILED
    assert result.method is None
    assert result.message


def test_an_enrollment_needs_the_qvo_customer(gateway: QvoGateway) -> None:
    with pytest.raises(GatewayError) as raised:
        gateway.start_enrollment(
            EnrollmentRequest(customer_id="c", customer_reference=None, return_url=RETURN_URL)
        )
    assert raised.value.code == "invalid_request"
    with pytest.raises(GatewayError) as unknown:
        gateway.complete_enrollment(register(gateway), "woi_unknown")
    assert unknown.value.code == "not_found"


# -- charges ------------------------------------------------------------------------------------


def test_an_approved_charge(gateway: QvoGateway, fake: FakeQvo, payer: Payer) -> None:
    result = charge(gateway, payer)
    assert result.status is PaymentStatus.SUCCEEDED
    assert result.reference is not None
    assert result.reference.startswith("trx_")
    (transaction,) = fake.transactions(payer.reference)
    assert (transaction["amount"], transaction["description"]) == (15000, "Plan Oro [inv_1-1]")


def test_a_key_is_charged_once(gateway: QvoGateway, fake: FakeQvo, payer: Payer) -> None:
    first, second = charge(gateway, payer), charge(gateway, payer)
    assert first.reference == second.reference
    assert fake.requests("charge") == 1
    assert len(fake.transactions()) == 1


DECLINES: list[tuple[Outcome, ErrorCode, DeclineKind]] = [
    ("rejected", ErrorCode.CARD_DECLINED, DeclineKind.SOFT),
    ("insufficient_funds", ErrorCode.INSUFFICIENT_FUNDS, DeclineKind.SOFT),
    ("expired_card", ErrorCode.EXPIRED_CARD, DeclineKind.HARD),
    ("stolen_card", ErrorCode.LOST_OR_STOLEN, DeclineKind.HARD),
    ("fraud", ErrorCode.FRAUD_SUSPECTED, DeclineKind.HARD),
    ("unable_to_charge", ErrorCode.PAYMENT_METHOD_UNSUPPORTED, DeclineKind.HARD),
]


@pytest.mark.parametrize("decline_as", ["error", "transaction"])
@pytest.mark.parametrize(("outcome", "error", "kind"), DECLINES)
def test_a_declined_charge_is_a_failed_result(
    gateway: QvoGateway,
    fake: FakeQvo,
    payer: Payer,
    decline_as: Any,
    outcome: Outcome,
    error: ErrorCode,
    kind: DeclineKind,
) -> None:
    fake.decline_as = decline_as
    fake.rules.decline_next(payer.card, 1, outcome)
    result = charge(gateway, payer)
    assert (result.status, result.error, result.decline) == (PaymentStatus.FAILED, error, kind)
    assert result.reference == fake.transactions()[0]["id"]


def test_a_declined_card_approves_once_its_rule_is_spent(
    gateway: QvoGateway, fake: FakeQvo, payer: Payer
) -> None:
    fake.rules.decline_next(payer.card)
    assert charge(gateway, payer, "inv_1-1").status is PaymentStatus.FAILED
    assert charge(gateway, payer, "inv_1-2").status is PaymentStatus.SUCCEEDED


def test_a_charge_awaiting_webpay_is_pending_until_settled(
    gateway: QvoGateway, fake: FakeQvo, payer: Payer
) -> None:
    fake.rules.queue(payer.card, "waiting_response")
    result = charge(gateway, payer)
    assert result.status is PaymentStatus.PENDING
    assert result.reference is not None
    fake.settle(result.reference, "successful")
    settled = sync(gateway, payer, reference=result.reference)
    assert settled is not None
    assert settled.status is PaymentStatus.SUCCEEDED


def test_a_charge_left_waiting_twenty_minutes_times_out(
    gateway: QvoGateway, fake: FakeQvo, payer: Payer, clock: Clock
) -> None:
    fake.rules.queue(payer.card, "waiting_response")
    reference = charge(gateway, payer).reference
    clock.now += timedelta(minutes=21)
    result = sync(gateway, payer, reference=reference)
    assert result is not None
    assert (result.status, result.error, result.code) == (
        PaymentStatus.FAILED,
        ErrorCode.PROCESSING_ERROR,
        "response_timeout",
    )
    assert fake.event_for(str(reference))["type"] == "transaction.response_timeout"  # type: ignore[index]


def test_a_card_that_pays_late_is_pending_then_paid(
    gateway: QvoGateway, fake: FakeQvo, payer: Payer, clock: Clock
) -> None:
    fake.rules.always(payer.card, "pay_late")
    pending = charge(gateway, payer)
    assert pending.status is PaymentStatus.PENDING
    clock.now += timedelta(minutes=10)
    paid = sync(gateway, payer, reference=pending.reference)
    assert paid is not None
    assert (paid.status, paid.reference) == (PaymentStatus.SUCCEEDED, pending.reference)
    assert fake.event_for(str(pending.reference))["type"] == "transaction.payment_succeeded"  # type: ignore[index]


def test_a_card_whose_answers_are_lost_is_unknown_then_found(
    gateway: QvoGateway, fake: FakeQvo, browser: httpx.Client, payer: Payer
) -> None:
    fake.rules.always(payer.card, "timeout")
    lost = charge(gateway, payer)
    assert (lost.status, lost.error) == (PaymentStatus.UNKNOWN, ErrorCode.GATEWAY_TIMEOUT)
    found = sync(gateway, payer)
    assert found is not None
    assert found.status is PaymentStatus.SUCCEEDED
    other = new_payer(gateway, browser, "cust-2")
    assert charge(gateway, other, "inv_2-1").status is PaymentStatus.SUCCEEDED


@pytest.mark.parametrize(
    ("amount", "reference"), [(Money.of("10", "USD"), "cus_1"), (AMOUNT, None)]
)
def test_a_charge_qvo_cannot_take_fails_without_a_request(
    gateway: QvoGateway, fake: FakeQvo, amount: Money, reference: str | None
) -> None:
    result = gateway.charge(
        ChargeRequest(
            idempotency_key="k",
            amount=amount,
            customer_id="c",
            payment_method="woc_1",
            description="d",
            at=AT,
            customer_reference=reference,
        )
    )
    assert (result.status, result.error) == (PaymentStatus.FAILED, ErrorCode.INVALID_REQUEST)
    assert fake.request_counts() == {}


def test_a_card_qvo_does_not_know_is_a_hard_failure(gateway: QvoGateway, payer: Payer) -> None:
    result = charge(gateway, Payer(payer.customer_id, payer.reference, "woc_gone"))
    assert (result.status, result.error, result.decline) == (
        PaymentStatus.FAILED,
        ErrorCode.NOT_FOUND,
        DeclineKind.HARD,
    )


# -- unknown outcomes ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fault", "error", "committed"),
    [
        ("charge_timeouts", ErrorCode.GATEWAY_TIMEOUT, True),
        ("server_errors", ErrorCode.GATEWAY_UNAVAILABLE, False),
        ("html_errors", ErrorCode.GATEWAY_UNAVAILABLE, False),
        ("dropped_connections", ErrorCode.GATEWAY_TIMEOUT, False),
    ],
)
def test_a_fault_on_the_charge_leaves_it_unknown(
    fake: FakeQvo, browser: httpx.Client, fault: str, error: ErrorCode, committed: bool
) -> None:
    gateway, _ = hooked_gateway(
        fake, before=lambda r: fake.set_faults(**{fault: 1}) if on_charge(r) else None
    )
    with gateway:
        payer = new_payer(gateway, browser)
        result = charge(gateway, payer)
        assert (result.status, result.error) == (PaymentStatus.UNKNOWN, error)
        assert result.decline is None
        assert fake.requests("charge") == 1
        found = sync(gateway, payer)
    if committed:
        assert found is not None
        assert found.status is PaymentStatus.SUCCEEDED
    else:
        assert found is None


def test_a_lost_answer_is_never_retried_automatically(
    gateway: QvoGateway, fake: FakeQvo, payer: Payer
) -> None:
    fake.add_faults(charge_timeouts=1)
    assert charge(gateway, payer).status is PaymentStatus.UNKNOWN
    assert fake.requests("charge") == 1
    again = charge(gateway, payer)
    assert again.status is PaymentStatus.SUCCEEDED
    assert fake.requests("charge") == 1
    assert len(fake.transactions()) == 1


def test_a_failed_key_lookup_leaves_the_charge_unknown_and_unsent(
    gateway: QvoGateway, fake: FakeQvo, payer: Payer
) -> None:
    fake.add_faults(server_errors=1)
    result = charge(gateway, payer)
    assert (result.status, result.error) == (PaymentStatus.UNKNOWN, ErrorCode.GATEWAY_UNAVAILABLE)
    assert fake.requests("charge") == 0


def test_a_refused_connection_is_retried_once(fake: FakeQvo, browser: httpx.Client) -> None:
    refused: list[bool] = []

    def refuse_first_charge(request: httpx.Request) -> bool:
        if on_charge(request) and not refused:
            refused.append(True)
            return True
        return False

    gateway, transport = hooked_gateway(fake, refuse=refuse_first_charge)
    with gateway:
        result = charge(gateway, new_payer(gateway, browser))
    assert result.status is PaymentStatus.SUCCEEDED
    sent = [attempt for attempt in transport.attempts if attempt.endswith("/charge")]
    assert len(sent) == 2  # refused once before leaving, then sent
    assert fake.requests("charge") == 1


def test_a_gateway_that_cannot_be_reached_is_unknown(fake: FakeQvo) -> None:
    gateway, transport = hooked_gateway(fake, refuse=lambda request: True)
    with gateway:
        result = charge(gateway, Payer("c", "cus_1", "woc_1"))
    assert (result.status, result.error) == (PaymentStatus.UNKNOWN, ErrorCode.GATEWAY_UNAVAILABLE)
    assert len(transport.attempts) == 3
    assert fake.request_counts() == {}


# -- sync ---------------------------------------------------------------------------------------


def test_sync_finds_a_timed_out_charge_by_its_key(
    gateway: QvoGateway, fake: FakeQvo, payer: Payer
) -> None:
    fake.add_faults(charge_timeouts=1)
    assert charge(gateway, payer, "inv_9-1").reference is None
    found = sync(gateway, payer, "inv_9-1")
    assert found is not None
    assert found.status is PaymentStatus.SUCCEEDED
    assert found.reference == fake.transactions()[0]["id"]


def test_sync_answers_none_for_a_key_never_sent(gateway: QvoGateway, payer: Payer) -> None:
    charge(gateway, payer, "inv_9-1")
    assert sync(gateway, payer, "inv_9-10") is None
    assert sync(gateway, payer, "inv_8-1") is None


def test_sync_reads_a_known_reference_directly(
    gateway: QvoGateway, fake: FakeQvo, payer: Payer
) -> None:
    reference = charge(gateway, payer).reference
    listed = fake.requests("list_transactions")
    result = sync(gateway, payer, reference=reference)
    assert result is not None
    assert result.reference == reference
    assert fake.requests("list_transactions") == listed
    assert sync(gateway, payer, "never-sent", reference="trx_unknown") is None


def test_sync_walks_every_page_of_the_lookup(
    gateway: QvoGateway, fake: FakeQvo, payer: Payer
) -> None:
    body = {"amount": 15000, "description": "Plan Oro [inv_5-1]"}
    fake.charge(payer.reference, payer.card, body)  # the oldest: the one that was paid
    fake.rules.always(payer.card, "rejected")
    for _ in range(150):
        fake.charge(payer.reference, payer.card, body)
    result = sync(gateway, payer, "inv_5-1")
    assert result is not None
    assert result.status is PaymentStatus.SUCCEEDED
    assert fake.requests("list_transactions") == 2


def test_sync_raises_when_qvo_cannot_answer(
    gateway: QvoGateway, fake: FakeQvo, payer: Payer
) -> None:
    fake.add_faults(server_errors=1)
    with pytest.raises(GatewayError) as raised:
        sync(gateway, payer)
    assert (raised.value.code, raised.value.retryable) == ("gateway_unavailable", True)


# -- refunds ------------------------------------------------------------------------------------


def test_a_full_refund(gateway: QvoGateway, fake: FakeQvo, payer: Payer) -> None:
    reference = str(charge(gateway, payer).reference)
    result = refund(gateway, reference)
    assert (result.status, result.reference) == (RefundStatus.SUCCEEDED, reference)
    assert fake.transactions()[0]["refund"]["amount"] == 15000


def test_a_repeated_refund_does_not_refund_twice(
    gateway: QvoGateway, fake: FakeQvo, payer: Payer
) -> None:
    reference = str(charge(gateway, payer).reference)
    refund(gateway, reference)
    assert refund(gateway, reference).status is RefundStatus.SUCCEEDED
    assert fake.requests("refund") == 1


def test_a_partial_refund_is_refused_without_calling_qvo(
    gateway: QvoGateway, fake: FakeQvo, payer: Payer
) -> None:
    reference = str(charge(gateway, payer).reference)
    result = refund(gateway, reference, Money.of("5000", "CLP"))
    assert (result.status, result.code) == (RefundStatus.FAILED, "partial_refund_unsupported")
    assert fake.requests("refund") == 0


def test_refunds_qvo_refuses(gateway: QvoGateway, fake: FakeQvo, browser: httpx.Client) -> None:
    debit = new_payer(gateway, browser, "cust-debit", payment_type="debit")
    refused = refund(gateway, str(charge(gateway, debit).reference))
    assert (refused.status, refused.code) == (RefundStatus.FAILED, "invalid_request")
    assert "credit" in str(refused.message)
    fake.rules.decline_next(debit.card)
    declined = refund(gateway, str(charge(gateway, debit, "inv_2-1").reference))
    assert (declined.status, declined.code) == (RefundStatus.FAILED, "not_refundable")
    unknown = refund(gateway, "trx_unknown")
    assert (unknown.status, unknown.code) == (RefundStatus.FAILED, "not_found")


def test_a_lost_refund_answer_is_unknown_and_safe_to_repeat(
    fake: FakeQvo, browser: httpx.Client
) -> None:
    def lose_refund(request: httpx.Request) -> None:
        if request.url.path.endswith("/refund") and fake.requests("refund") == 0:
            fake.set_faults(dropped_connections=1)

    gateway, _ = hooked_gateway(fake, before=lose_refund)
    with gateway:
        reference = str(charge(gateway, new_payer(gateway, browser)).reference)
        assert refund(gateway, reference).status is RefundStatus.UNKNOWN
        assert refund(gateway, reference).status is RefundStatus.SUCCEEDED
    assert fake.transactions()[0]["status"] == "refunded"


# -- credentials --------------------------------------------------------------------------------


def test_bad_credentials_are_never_a_decline(fake: FakeQvo, payer: Payer) -> None:
    with QvoGateway(BAD_TOKEN, transport=InProcessTransport(fake.app)) as bad:
        result = charge(bad, payer, "inv_3-1")
        assert (result.status, result.error) == (
            PaymentStatus.UNKNOWN,
            ErrorCode.AUTHENTICATION_ERROR,
        )
        operations: list[Callable[[], object]] = [
            lambda: register(bad, "cust-2"),
            lambda: bad.complete_enrollment(payer.reference, "woi_1"),
            lambda: sync(bad, payer),
            lambda: refund(bad, "trx_1"),
        ]
        for operation in operations:
            with pytest.raises(GatewayAuthenticationFailed):
                operation()
    assert fake.requests("charge") == 0


def test_credentials_refused_on_the_charge_itself_are_unknown(
    fake: FakeQvo, browser: httpx.Client
) -> None:
    def spoil(request: httpx.Request) -> None:
        if on_charge(request):
            request.headers["Authorization"] = f"Bearer {BAD_TOKEN}"

    gateway, _ = hooked_gateway(fake, before=spoil)
    with gateway:
        result = charge(gateway, new_payer(gateway, browser))
    assert (result.status, result.error, result.decline) == (
        PaymentStatus.UNKNOWN,
        ErrorCode.AUTHENTICATION_ERROR,
        None,
    )


# -- notifications ------------------------------------------------------------------------------


def test_a_webhook_names_the_charge_and_its_key_unverified(
    gateway: QvoGateway, fake: FakeQvo, payer: Payer
) -> None:
    reference = str(charge(gateway, payer).reference)
    event = fake.event_for(reference)
    assert event is not None
    facts = gateway.parse_notification(
        Notification(headers={"content-type": "application/json"}, body=json.dumps(event).encode())
    )
    assert (facts.event_id, facts.kind) == (event["id"], "transaction.payment_succeeded")
    assert (facts.charge_reference, facts.idempotency_key) == (reference, "inv_1-1")
    assert facts.verified is False


@pytest.mark.parametrize("body", [b"{}", b"<xml/>", b'{"notification_token": "abc"}'])
def test_a_body_that_is_not_a_qvo_event_is_refused(gateway: QvoGateway, body: bytes) -> None:
    with pytest.raises(GatewayError) as raised:
        gateway.parse_notification(Notification(headers={}, body=body))
    assert raised.value.code == "invalid_request"


# -- over loopback sockets ----------------------------------------------------------------------


def test_a_served_fake_loses_a_committed_answer_and_sync_finds_it(fake: FakeQvo) -> None:
    with serve(fake.app) as url, QvoGateway(TOKEN, base_url=url) as gateway, httpx.Client() as b:
        payer = new_payer(gateway, b)
        fake.add_faults(charge_timeouts=1)
        lost = charge(gateway, payer)
        assert (lost.status, lost.error) == (PaymentStatus.UNKNOWN, ErrorCode.GATEWAY_TIMEOUT)
        found = sync(gateway, payer)
    assert found is not None
    assert found.status is PaymentStatus.SUCCEEDED


def test_a_slow_served_fake_times_the_client_out(fake: FakeQvo) -> None:
    with serve(fake.app) as url, QvoGateway(TOKEN, base_url=url, timeout=0.2) as gateway:
        fake.set_faults(latency=0.6)
        result = charge(gateway, Payer("c", "cus_1", "woc_1"))
        fake.set_faults(latency=0)
    assert (result.status, result.error) == (PaymentStatus.UNKNOWN, ErrorCode.GATEWAY_TIMEOUT)
    assert fake.requests("charge") == 0


def test_no_secret_reaches_logs_reprs_or_exceptions(
    fake: FakeQvo, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    for name in ("httpx", "httpcore", "adapters", "uvicorn"):
        caplog.set_level(logging.DEBUG, logger=name)
    shown: list[object] = []
    with serve(fake.app) as url, httpx.Client() as browser:
        with QvoGateway(TOKEN, base_url=url) as gateway:
            payer = new_payer(gateway, browser)
            rejected = enroll(gateway, browser, payer.reference, card_number=REJECTING_CARD)
            paid = charge(gateway, payer)
            shown += [gateway, payer, rejected, paid, sync(gateway, payer)]
            shown += [refund(gateway, str(paid.reference)), fake, vars(gateway)]
        with QvoGateway(BAD_TOKEN, base_url=url) as bad:
            shown += [bad, charge(bad, payer, "inv_2-1")]
            with pytest.raises(GatewayAuthenticationFailed) as raised:
                register(bad, "cust-2")
            shown += [raised.value, raised.value.args, raised.value.__cause__]
    seen = caplog.text + "".join(f"{item!r}{item}" for item in shown)
    assert "HTTP Request: POST" in caplog.text  # httpx did log the requests
    assert any(record.name.startswith("httpcore") for record in caplog.records)
    for secret in (TOKEN, BAD_TOKEN, APPROVING_CARD, REJECTING_CARD):
        assert secret not in seen


# -- the conformance harness --------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["in_process", "loopback"])
def test_the_conformance_harness_pulls_every_lever(mode: Any) -> None:
    from tests.contract.harness_qvo import QvoHarness

    harness = QvoHarness(mode)
    try:
        gateway, expected = harness.gateway, harness.expectations

        def pay(who: Any, key: str, through: Any = None) -> PaymentResult:
            return (through or gateway).charge(
                ChargeRequest(
                    idempotency_key=key,
                    amount=harness.amount,
                    customer_id=who.customer_id,
                    payment_method=who.payment_method,
                    description="conformance",
                    at=AT,
                    customer_reference=who.customer_reference,
                )
            )

        soft, hard = harness.payer("soft_decline"), harness.payer("hard_decline")
        assert (pay(soft, "s-1").error, pay(hard, "h-1").error) == (
            expected.soft_decline,
            expected.hard_decline,
        )
        later = harness.payer("soft_then_approve")
        assert [pay(later, f"l-{n}").status for n in (1, 2)] == [
            PaymentStatus.FAILED,
            PaymentStatus.SUCCEEDED,
        ]
        payer = harness.payer("approve")
        harness.lose_next_answer()
        assert pay(payer, "a-1").status is PaymentStatus.UNKNOWN
        paid = pay(payer, "a-1")
        assert (paid.status, harness.charges_taken(payer)) == (PaymentStatus.SUCCEEDED, 1)
        facts = gateway.parse_notification(harness.notification(str(paid.reference)))
        assert (facts.charge_reference, facts.verified) == (paid.reference, False)
        declined = str(pay(soft, "s-1").reference)
        forged = gateway.parse_notification(harness.forged_notification(declined))
        assert (forged.kind, forged.charge_reference) == ("transaction.payment_succeeded", declined)
        assert pay(payer, "b-1", harness.with_bad_credentials()).error is (
            ErrorCode.AUTHENTICATION_ERROR
        )
    finally:
        harness.close()
