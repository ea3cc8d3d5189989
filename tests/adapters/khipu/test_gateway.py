"""KhipuGateway against FakeKhipu, in process unless said otherwise."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from adapters.khipu import FakeKhipu, KhipuGateway, from_environment
from adapters.khipu import _wire as wire
from billing.domain.errors import GatewayAuthenticationFailed, GatewayError
from billing.domain.money import Money
from billing.domain.payments import DeclineKind, ErrorCode, PaymentStatus, RefundStatus
from billing.ports import (
    AttachRequest,
    CancelLinkRequest,
    Capability,
    ChargeRequest,
    LinkCancellationStatus,
    Notification,
    RefundRequest,
    SyncRequest,
)
from billing.testing.asgi import InProcessTransport, serve

RECEIVER = "123456"
SECRET = "test-khipu-secret-9f2c1e0b7a6d4c3b"
AT = datetime(2026, 3, 2, 15, tzinfo=UTC)
AMOUNT = Money.of("15000", "CLP")
PAYER = "ana@example.cl"
BASE = "https://khipu.com/api/2.0"


class Clock:
    def __init__(self) -> None:
        self.now = AT - timedelta(minutes=1)

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def fake() -> FakeKhipu:
    return FakeKhipu(RECEIVER, SECRET, clock=Clock(), seed=7)


@pytest.fixture
def gateway(fake: FakeKhipu) -> Iterator[KhipuGateway]:
    with KhipuGateway(
        RECEIVER,
        SECRET,
        base_url=BASE,
        transport=InProcessTransport(fake.app),
        link_lifetime=timedelta(days=1),
        notify_url="https://shop.example/khipu",
    ) as gateway:
        yield gateway


def charge(key: str = "inv_1-1", method: str = PAYER) -> ChargeRequest:
    return ChargeRequest(
        idempotency_key=key,
        amount=AMOUNT,
        customer_id="c1",
        payment_method=method,
        description="Plan Oro, marzo",
        at=AT,
    )


def sync(key: str = "inv_1-1", reference: str | None = None) -> SyncRequest:
    return SyncRequest(
        idempotency_key=key, reference=reference, amount=AMOUNT, customer_id="c1", at=AT
    )


def test_capabilities_and_attach(gateway: KhipuGateway):
    assert Capability.PAY_BY_LINK in gateway.capabilities
    assert Capability.SIGNED_NOTIFICATIONS not in gateway.capabilities
    assert gateway.currencies == {"CLP"}
    stored = gateway.attach_payment_method(
        AttachRequest(customer_id="c1", customer_reference=None, token=PAYER)
    )
    assert (stored.reference, stored.label) == (PAYER, f"Khipu {PAYER}")
    with pytest.raises(GatewayError) as bad:
        gateway.attach_payment_method(
            AttachRequest(customer_id="c1", customer_reference=None, token="not-an-email")
        )
    assert bad.value.code == "invalid_request"


def test_charge_is_a_link_and_a_repeated_key_is_the_same_payment(gateway, fake):
    first = gateway.charge(charge())
    assert first.status is PaymentStatus.REQUIRES_ACTION
    assert first.reference
    assert first.action_url
    assert first.reference in first.action_url
    again = gateway.charge(charge())
    assert (again.status, again.reference) == (PaymentStatus.REQUIRES_ACTION, first.reference)
    books = fake.payments("inv_1-1")
    assert len(books) == 1
    assert books[0]["payer_email"] == PAYER
    assert books[0]["amount"] == 15000
    assert books[0]["expires_date"] == "2026-03-03T15:00:00Z"


def test_sync_states_pending_paid(gateway, fake):
    assert gateway.sync(sync()) is None
    sent = gateway.charge(charge())
    assert gateway.sync(sync()).status is PaymentStatus.REQUIRES_ACTION
    fake.verify(sent.reference)
    assert gateway.sync(sync()).status is PaymentStatus.PENDING
    fake.pay(sent.reference)
    found = gateway.sync(sync(reference=sent.reference))
    assert (found.status, found.reference) == (PaymentStatus.SUCCEEDED, sent.reference)
    assert fake.deliveries[0].url == "https://shop.example/khipu"


def test_an_expired_link_is_a_soft_payer_abandoned_decline_and_a_late_payment_succeeds(
    gateway, fake
):
    sent = gateway.charge(charge())
    fake.expire(sent.reference)
    expired = gateway.sync(sync())
    assert (expired.status, expired.decline, expired.code, expired.error) == (
        PaymentStatus.FAILED,
        DeclineKind.SOFT,
        "expired",
        ErrorCode.PAYER_ABANDONED,
    )
    assert expired.reference == sent.reference
    with pytest.raises(ValueError, match="expired"):
        fake.pay(sent.reference)
    fake.pay(sent.reference, late=True)
    assert gateway.sync(sync()).status is PaymentStatus.SUCCEEDED
    assert fake.payment(sent.reference)["out_of_date_conciliation"] is True


def test_a_deleted_payment_reads_as_abandoned(gateway, fake):
    sent = gateway.charge(charge())
    client = httpx.Client(transport=InProcessTransport(fake.app))
    url = f"{BASE}/payments/{sent.reference}"
    with client:
        response = client.delete(
            url, headers={"Authorization": wire.authorization(RECEIVER, SECRET, "DELETE", url)}
        )
    assert response.status_code == 200
    result = gateway.sync(sync(reference=sent.reference))
    assert (result.status, result.error) == (PaymentStatus.FAILED, ErrorCode.PAYER_ABANDONED)


def test_refunds_partial_whole_and_idempotent(gateway, fake):
    sent = gateway.charge(charge())
    fake.pay(sent.reference)
    part = RefundRequest(
        idempotency_key="re_1", reference=sent.reference, amount=Money.of("5000", "CLP"), at=AT
    )
    assert gateway.refund(part).status is RefundStatus.SUCCEEDED
    assert gateway.refund(part).status is RefundStatus.SUCCEEDED
    assert len(fake.refunds) == 1, "a repeated key refunds nothing more"
    too_much = RefundRequest(idempotency_key="re_2", reference=sent.reference, amount=AMOUNT, at=AT)
    assert gateway.refund(too_much).status is RefundStatus.FAILED
    rest = RefundRequest(
        idempotency_key="re_3", reference=sent.reference, amount=Money.of("10000", "CLP"), at=AT
    )
    fake.inject(refund_timeouts=1)
    assert gateway.refund(rest).status is RefundStatus.UNKNOWN
    assert gateway.refund(rest).status is RefundStatus.SUCCEEDED, "reversed: the lost one happened"
    assert len(fake.refunds) == 2
    assert gateway.sync(sync()).status is PaymentStatus.SUCCEEDED


def test_notifications_genuine_duplicate_forged_and_garbage(gateway, fake):
    sent = gateway.charge(charge())
    fake.inject(duplicates=1)
    fake.pay(sent.reference)
    assert len(fake.deliveries) == 2
    first, second = (Notification(headers=item.headers, body=item.body) for item in fake.deliveries)
    facts = gateway.parse_notification(first)
    assert facts.event_id == gateway.parse_notification(second).event_id
    assert (facts.charge_reference, facts.idempotency_key, facts.kind) == (
        sent.reference,
        "inv_1-1",
        "payment.done",
    )
    headers, body = fake.notification(sent.reference, forged=True)
    for refused in (body, b"<html>", b"notification_token=abc&api_version=1.0"):
        with pytest.raises(GatewayError) as error:
            gateway.parse_notification(Notification(headers=headers, body=refused))
        assert error.value.code == "invalid_request"


def test_a_lost_answer_is_unknown_then_found_through_the_notification(gateway, fake):
    fake.inject(charge_timeouts=1)
    lost = gateway.charge(charge())
    assert (lost.status, lost.error) == (PaymentStatus.UNKNOWN, ErrorCode.GATEWAY_TIMEOUT)
    pending = gateway.sync(sync())
    assert pending is not None, "never None"
    assert pending.status is PaymentStatus.UNKNOWN
    again = gateway.charge(charge())
    assert again.status is PaymentStatus.UNKNOWN
    assert len(fake.payments("inv_1-1")) == 1, "never a second payment for the key"
    (payment,) = fake.payments("inv_1-1")
    fake.pay(payment["payment_id"])
    gateway.parse_notification(Notification(headers={}, body=fake.deliveries[-1].body))
    found = gateway.sync(sync())
    assert (found.status, found.reference) == (PaymentStatus.SUCCEEDED, payment["payment_id"])


def test_a_lost_answer_whose_link_expired_unseen_is_abandoned(gateway, fake):
    fake.inject(charge_timeouts=1)
    gateway.charge(charge())
    later = SyncRequest(
        idempotency_key="inv_1-1",
        reference=None,
        amount=AMOUNT,
        customer_id="c1",
        at=AT + timedelta(days=2),
    )
    result = gateway.sync(later)
    assert (result.status, result.error) == (PaymentStatus.FAILED, ErrorCode.PAYER_ABANDONED)


def another_process(fake: FakeKhipu) -> KhipuGateway:
    """A second adapter on the same Khipu account: another worker process, or this one after a
    restart, which never saw the first one's requests."""
    return KhipuGateway(
        RECEIVER,
        SECRET,
        base_url=BASE,
        transport=InProcessTransport(fake.app),
        link_lifetime=timedelta(days=1),
    )


def test_a_charge_whose_answer_was_lost_elsewhere_is_never_sent_again(gateway, fake):
    fake.inject(charge_timeouts=1)
    assert gateway.charge(charge()).status is PaymentStatus.UNKNOWN
    sent_before = replace(charge(), first_sent_at=AT)  # the engine's record of the first send
    asked = replace(sync(), first_sent_at=AT)
    with another_process(fake) as other:
        assert other.sync(replace(asked, first_sent_at=None)) is None, "what it alone knows"
        assert other.sync(asked).status is PaymentStatus.UNKNOWN, "in doubt, never None"
        assert other.charge(sent_before).status is PaymentStatus.UNKNOWN
        assert len(fake.payments("inv_1-1")) == 1, "never a second payment for the key"
        expired = other.sync(replace(asked, at=AT + timedelta(days=1, minutes=6)))
        assert (expired.status, expired.error) == (
            PaymentStatus.FAILED,
            ErrorCode.PAYER_ABANDONED,
        ), "its link expired unseen: nobody can have paid it"


class Refusing(httpx.BaseTransport):
    """Khipu unreachable (connections refused) for the next ``refusals`` connections."""

    def __init__(self, inner: httpx.BaseTransport, refusals: int) -> None:
        self.inner = inner
        self.refusals = refusals

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if self.refusals:
            self.refusals -= 1
            raise httpx.ConnectError("connection refused", request=request)
        return self.inner.handle_request(request)


def test_a_charge_that_surely_never_reached_khipu_is_sent_again_by_its_process(fake):
    transport = Refusing(InProcessTransport(fake.app), refusals=3)  # every try of the first
    with KhipuGateway(RECEIVER, SECRET, base_url=BASE, transport=transport) as gateway:
        never = gateway.charge(charge())
        assert (never.status, never.error) == (PaymentStatus.UNKNOWN, ErrorCode.GATEWAY_UNAVAILABLE)
        asked = replace(sync(), first_sent_at=AT)
        assert gateway.sync(asked) is None, "this process knows it never reached Khipu"
        resent = gateway.charge(replace(charge(), first_sent_at=AT))
        assert resent.status is PaymentStatus.REQUIRES_ACTION
    assert len(fake.payments("inv_1-1")) == 1


def test_a_refund_whose_answer_was_lost_elsewhere_is_never_sent_again(gateway, fake):
    sent = gateway.charge(charge())
    fake.pay(sent.reference)
    part = RefundRequest(
        idempotency_key="re_1", reference=sent.reference, amount=Money.of("5000", "CLP"), at=AT
    )
    whole = replace(part, idempotency_key="re_2", amount=Money.of("10000", "CLP"))
    fake.inject(refund_timeouts=2)
    assert gateway.refund(part).status is RefundStatus.UNKNOWN
    with another_process(fake) as other:
        again = other.refund(replace(part, first_sent_at=AT))
        assert again.status is RefundStatus.UNKNOWN, "Khipu lists no refunds: never again"
        assert gateway.refund(whole).status is RefundStatus.UNKNOWN
        recovered = other.refund(replace(whole, first_sent_at=AT))
        assert recovered.status is RefundStatus.SUCCEEDED, "reversed: the lost one happened"
    assert len(fake.refunds) == 2


def test_503_is_unknown_and_bad_credentials_are_authentication_errors(gateway, fake):
    fake.inject(server_errors=1)
    result = gateway.charge(charge())
    assert (result.status, result.error) == (PaymentStatus.UNKNOWN, ErrorCode.GATEWAY_UNAVAILABLE)
    with KhipuGateway(
        RECEIVER, "wrong-secret-000", base_url=BASE, transport=InProcessTransport(fake.app)
    ) as bad:
        refused = bad.charge(charge("inv_2-1"))
        assert (refused.status, refused.error, refused.decline) == (
            PaymentStatus.UNKNOWN,
            ErrorCode.AUTHENTICATION_ERROR,
            None,
        )
        with pytest.raises(GatewayAuthenticationFailed):
            bad.sync(sync(reference="abc123def456"))
        assert bad.sync(sync("inv_2-1")) is None, "a refused charge was never created"


def test_invalid_requests_are_failed_and_other_currencies_refused(gateway):
    assert gateway.charge(charge(method="nobody")).status is PaymentStatus.FAILED
    usd = ChargeRequest(
        idempotency_key="k",
        amount=Money.of("10.00", "USD"),
        customer_id="c1",
        payment_method=PAYER,
        description="x",
        at=AT,
    )
    result = gateway.charge(usd)
    assert (result.status, result.error) == (PaymentStatus.FAILED, ErrorCode.INVALID_REQUEST)


def test_no_secret_in_logs_or_reprs(gateway, fake, caplog: pytest.LogCaptureFixture):
    caplog.set_level(logging.DEBUG)
    fake.inject(charge_timeouts=1)
    gateway.charge(charge())
    gateway.sync(sync())
    assert SECRET not in caplog.text + repr(gateway) + repr(fake)


def test_from_environment():
    assert from_environment({}) is None
    with from_environment(
        {
            "BILLING_KHIPU_RECEIVER_ID": "1",
            "BILLING_KHIPU_SECRET": "s",
            "BILLING_KHIPU_LINK_HOURS": "2",
        }
    ) as built:
        assert built.link_lifetime == timedelta(hours=2)
        assert "s'" not in repr(built)


def test_over_loopback_sockets(fake):
    with (
        serve(fake.app) as root,
        KhipuGateway(
            RECEIVER,
            SECRET,
            base_url=root + "/api/2.0",
            link_lifetime=timedelta(days=1),
            timeout=10.0,
        ) as gateway,
    ):
        sent = gateway.charge(charge())
        assert sent.status is PaymentStatus.REQUIRES_ACTION
        assert gateway.charge(charge()).reference == sent.reference
        fake.expire(sent.reference)
        assert gateway.sync(sync()).error is ErrorCode.PAYER_ABANDONED
        fake.pay(sent.reference, late=True)
        assert gateway.sync(sync()).status is PaymentStatus.SUCCEEDED
        fake.inject(charge_timeouts=1)
        assert gateway.charge(charge("inv_2-1")).status is PaymentStatus.UNKNOWN
        assert len(fake.payments("inv_2-1")) == 1


# -- withdrawing a link (cancel_link: DELETE /payments/{id}) -----------------------------------


def cancel(reference: str, key: str = "inv_1-1") -> CancelLinkRequest:
    return CancelLinkRequest(
        idempotency_key=key, reference=reference, amount=AMOUNT, customer_id="c1", at=AT
    )


def delete(fake: FakeKhipu, payment_id: str) -> httpx.Response:
    """``DELETE /payments/{id}`` as Khipu's own client sends it, signed."""
    url = f"{BASE}/payments/{payment_id}"
    with httpx.Client(transport=InProcessTransport(fake.app)) as client:
        return client.delete(
            url, headers={"Authorization": wire.authorization(RECEIVER, SECRET, "DELETE", url)}
        )


def test_cancel_link_deletes_a_pending_payment_once_and_again_is_canceled(gateway, fake):
    assert Capability.LINK_CANCELLATION in gateway.capabilities
    sent = gateway.charge(charge())

    withdrawn = gateway.cancel_link(cancel(sent.reference))

    assert withdrawn.status is LinkCancellationStatus.CANCELED
    assert withdrawn.payment is None
    [book] = fake.payments("inv_1-1")
    assert book["deleted"] is True
    with pytest.raises(ValueError, match="no payment"):
        fake.pay(sent.reference)
    with pytest.raises(ValueError, match="no payment"):
        fake.pay(sent.reference, late=True)
    again = gateway.cancel_link(cancel(sent.reference))
    assert again.status is LinkCancellationStatus.CANCELED, "a repeat: Khipu no longer has it"
    assert fake.received["payments.delete"] == 2
    result = gateway.sync(sync(reference=sent.reference))
    assert (result.status, result.error) == (PaymentStatus.FAILED, ErrorCode.PAYER_ABANDONED)
    assert fake.paid(PAYER) == 0


def test_cancel_link_of_a_paid_payment_is_too_late_and_says_it_succeeded(gateway, fake):
    sent = gateway.charge(charge())
    fake.pay(sent.reference)
    refused = delete(fake, sent.reference)
    assert refused.status_code == 400
    assert refused.json()["errors"][0]["field"] == "id"

    answer = gateway.cancel_link(cancel(sent.reference))

    assert answer.status is LinkCancellationStatus.TOO_LATE
    assert answer.payment is not None
    assert (answer.payment.status, answer.payment.reference) == (
        PaymentStatus.SUCCEEDED,
        sent.reference,
    )
    assert answer.code == "400"
    assert fake.payments("inv_1-1")[0]["deleted"] is False
    assert fake.paid(PAYER) == 1


def test_cancel_link_of_a_transfer_being_verified_is_too_late_and_pending(gateway, fake):
    sent = gateway.charge(charge())
    fake.verify(sent.reference)

    answer = gateway.cancel_link(cancel(sent.reference))

    assert answer.status is LinkCancellationStatus.TOO_LATE
    assert answer.payment is not None
    assert answer.payment.status is PaymentStatus.PENDING
    fake.pay(sent.reference)  # the transfer is confirmed: nothing stopped it
    assert fake.paid(PAYER) == 1


def test_cancel_link_of_an_expired_pending_payment_deletes_it(gateway, fake):
    sent = gateway.charge(charge())
    fake.expire(sent.reference)

    assert gateway.cancel_link(cancel(sent.reference)).status is LinkCancellationStatus.CANCELED

    with pytest.raises(ValueError, match="no payment"):
        fake.pay(sent.reference, late=True)


def test_a_lost_delete_answer_raises_and_asking_again_is_canceled(gateway, fake):
    sent = gateway.charge(charge())
    fake.inject(delete_timeouts=1)

    with pytest.raises(GatewayError) as lost:
        gateway.cancel_link(cancel(sent.reference))

    assert lost.value.retryable
    assert lost.value.code == ErrorCode.GATEWAY_TIMEOUT
    assert fake.payments("inv_1-1")[0]["deleted"] is True, "Khipu deleted it all the same"
    assert gateway.cancel_link(cancel(sent.reference)).status is LinkCancellationStatus.CANCELED


def test_cancel_link_failures_raise_and_delete_nothing(gateway, fake):
    sent = gateway.charge(charge())
    fake.inject(server_errors=1)
    with pytest.raises(GatewayError) as failed:
        gateway.cancel_link(cancel(sent.reference))
    assert failed.value.retryable
    assert fake.payments("inv_1-1")[0]["deleted"] is False
    with (
        KhipuGateway(
            RECEIVER, "wrong-secret-000", base_url=BASE, transport=InProcessTransport(fake.app)
        ) as bad,
        pytest.raises(GatewayAuthenticationFailed),
    ):
        bad.cancel_link(cancel(sent.reference))
    assert fake.payments("inv_1-1")[0]["deleted"] is False


def test_cancel_link_over_loopback_sockets(fake):
    with (
        serve(fake.app) as root,
        KhipuGateway(RECEIVER, SECRET, base_url=root + "/api/2.0", timeout=10.0) as gateway,
    ):
        sent = gateway.charge(charge())
        paid = gateway.charge(charge("inv_2-1"))
        fake.pay(paid.reference)
        fake.inject(delete_timeouts=1)
        with pytest.raises(GatewayError):
            gateway.cancel_link(cancel(sent.reference))
        canceled = gateway.cancel_link(cancel(sent.reference))
        assert canceled.status is LinkCancellationStatus.CANCELED
        too_late = gateway.cancel_link(cancel(paid.reference, "inv_2-1"))
        assert too_late.status is LinkCancellationStatus.TOO_LATE
        assert too_late.payment is not None
        assert too_late.payment.status is PaymentStatus.SUCCEEDED
        assert [p["deleted"] for p in fake.payments()] == [True, False]
