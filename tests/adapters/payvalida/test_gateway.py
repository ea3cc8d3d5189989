"""PayvalidaGateway against FakePayvalida, in process (``InProcessTransport``) unless said
otherwise."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import httpx
import pytest

from adapters.payvalida import FakePayvalida, PayvalidaGateway, from_environment
from adapters.payvalida import _wire as wire
from billing.domain.errors import GatewayAuthenticationFailed, GatewayError
from billing.domain.money import Money
from billing.domain.payments import DeclineKind, ErrorCode, PaymentStatus
from billing.ports import (
    AttachRequest,
    CancelLinkRequest,
    Capability,
    ChargeRequest,
    CustomerRequest,
    LinkCancellationStatus,
    Notification,
    RefundRequest,
    SyncRequest,
)
from billing.testing.asgi import InProcessTransport, serve

MERCHANT = "testmerchant"
SECRET = "gw_fixed_hash_0123456789abcdef"
NOTE_SECRET = "gw_notification_hash_9876"
AT = datetime(2026, 2, 1, 12, tzinfo=UTC)
AMOUNT = Money.of("45000", "COP")
EMAIL = "payer@example.com"
SANDBOX = "https://api-test.payvalida.com"


class Clock:
    def __init__(self, now: datetime = AT) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def fake(clock: Clock) -> FakePayvalida:
    return FakePayvalida(MERCHANT, SECRET, notification_hash=NOTE_SECRET, now=clock, seed=3)


def make_gateway(
    fake: FakePayvalida,
    secret: str = SECRET,
    *,
    base_url: str = SANDBOX,
    transport: httpx.BaseTransport | None = None,
    **options: object,
) -> PayvalidaGateway:
    return PayvalidaGateway(
        MERCHANT,
        secret,
        notification_hash=NOTE_SECRET,
        base_url=base_url,
        transport=transport if transport is not None else InProcessTransport(fake.app),
        timeout=10.0,
        **options,  # type: ignore[arg-type]
    )


@pytest.fixture
def gateway(fake: FakePayvalida) -> Iterator[PayvalidaGateway]:
    with make_gateway(fake) as gateway:
        yield gateway


def charge(key: str = "inv_1-1", amount: Money = AMOUNT, email: str = EMAIL) -> ChargeRequest:
    return ChargeRequest(
        idempotency_key=key,
        amount=amount,
        customer_id="cus_1",
        payment_method=email,
        description="Plan mensual, enero",
        at=AT,
    )


def sync(key: str = "inv_1-1", reference: str | None = None) -> SyncRequest:
    return SyncRequest(
        idempotency_key=key, reference=reference, amount=AMOUNT, customer_id="cus_1", at=AT
    )


def notification(fake: FakePayvalida, reference: str, *, forged: bool = False) -> Notification:
    headers, body = fake.notification(reference, forged=forged)
    return Notification(headers=headers, body=body)


# -- configuration -----------------------------------------------------------------------------


def test_capabilities_and_currency() -> None:
    assert PayvalidaGateway.capabilities == {
        Capability.PAY_BY_LINK,
        Capability.REDIRECT_PAYMENTS,
        Capability.NOTIFICATIONS,
        Capability.SIGNED_NOTIFICATIONS,
        Capability.IDEMPOTENT_CHARGES,
        Capability.LINK_CANCELLATION,
    }
    assert PayvalidaGateway.currencies == {"COP"}


def test_from_environment() -> None:
    assert from_environment({}) is None
    assert from_environment({"BILLING_PAYVALIDA_MERCHANT": "m"}) is None
    gateway = from_environment(
        {
            "BILLING_PAYVALIDA_MERCHANT": "m",
            "BILLING_PAYVALIDA_FIXED_HASH": "h",
            "BILLING_PAYVALIDA_URL": "http://127.0.0.1:8765/payvalida",
            "BILLING_PAYVALIDA_LINK_DAYS": "30",
            "BILLING_PAYVALIDA_NOTIFY_URL": "https://shop.example.com/hooks/payvalida",
        }
    )
    assert gateway is not None
    with gateway:
        assert gateway.link_days == 30
        assert gateway.notify_url == "https://shop.example.com/hooks/payvalida"
        assert "127.0.0.1:8765" in repr(gateway)
    with pytest.raises(ValueError, match="1 to 30"):
        from_environment(
            {
                "BILLING_PAYVALIDA_MERCHANT": "m",
                "BILLING_PAYVALIDA_FIXED_HASH": "h",
                "BILLING_PAYVALIDA_LINK_DAYS": "31",
            }
        )
    with pytest.raises(ValueError, match="sha256 or sha512"):
        from_environment(
            {
                "BILLING_PAYVALIDA_MERCHANT": "m",
                "BILLING_PAYVALIDA_FIXED_HASH": "h",
                "BILLING_PAYVALIDA_NOTIFICATION_ALGORITHM": "md5",
            }
        )


def test_nothing_secret_in_repr_or_logs(
    gateway: PayvalidaGateway, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="adapters.payvalida")
    result = gateway.charge(charge())
    gateway.sync(sync(reference=result.reference))
    shown = repr(gateway) + caplog.text
    assert SECRET not in shown
    assert NOTE_SECRET not in shown
    assert wire.order_checksum(EMAIL, 343, result.reference or "", "COP", "45000", SECRET) not in (
        shown
    )


def test_unsupported_operations_raise_invalid_request(gateway: PayvalidaGateway) -> None:
    with pytest.raises(GatewayError) as raised:
        gateway.register_customer(CustomerRequest(customer_id="c"))
    assert raised.value.code == "invalid_request"
    with pytest.raises(GatewayError):
        gateway.refund(RefundRequest(idempotency_key="r", reference="x", amount=AMOUNT, at=AT))


def test_attach_takes_the_payers_email(gateway: PayvalidaGateway, fake: FakePayvalida) -> None:
    method = gateway.attach_payment_method(
        AttachRequest(customer_id="c", customer_reference=None, token=" payer@example.com ")
    )
    assert (method.reference, method.label) == (EMAIL, "Payvalida payer@example.com")
    with pytest.raises(GatewayError) as raised:
        gateway.attach_payment_method(
            AttachRequest(customer_id="c", customer_reference=None, token="not-an-email")
        )
    assert raised.value.code == "invalid_request"
    assert fake.received("orders.create") == 0


# -- charges -----------------------------------------------------------------------------------


def test_a_charge_is_an_order_that_requires_action(
    gateway: PayvalidaGateway, fake: FakePayvalida
) -> None:
    result = gateway.charge(charge())
    assert result.status is PaymentStatus.REQUIRES_ACTION
    assert result.reference == wire.order_id("inv_1-1")
    assert result.action_url is not None
    assert "/checkout?token=" in result.action_url
    order = fake.order(result.reference)
    assert order["STATE"] == "PENDIENTE"
    assert (order["AMOUNT"], order["EMAIL"]) == ("45000.00", EMAIL)
    assert order["DESCRIPTION"] == "Plan mensual enero"
    assert order["EXPIRATION"] == "08/02/2026"


def test_a_repeated_key_answers_the_first_order(
    gateway: PayvalidaGateway, fake: FakePayvalida
) -> None:
    first = gateway.charge(charge())
    again = gateway.charge(charge())
    assert again == first
    assert fake.received("orders.create") == 2
    assert len(fake.orders()) == 1
    fake.pay(first.reference or "")
    paid = gateway.charge(charge())
    assert (paid.status, paid.reference) == (PaymentStatus.SUCCEEDED, first.reference)


def test_link_lifetime_is_configurable(fake: FakePayvalida) -> None:
    with make_gateway(fake, link_days=30) as gateway:
        result = gateway.charge(charge())
    assert fake.order(result.reference or "")["EXPIRATION"] == "03/03/2026"


def test_charges_it_cannot_send_are_refused_before_sending(
    gateway: PayvalidaGateway, fake: FakePayvalida
) -> None:
    usd = gateway.charge(charge(amount=Money.of("10.00", "USD")))
    assert (usd.status, usd.error) == (PaymentStatus.FAILED, ErrorCode.INVALID_REQUEST)
    no_email = gateway.charge(charge(email="card_123"))
    assert no_email.error is ErrorCode.NO_PAYMENT_METHOD
    zero = gateway.charge(charge(amount=Money.zero("COP")))
    assert zero.status is PaymentStatus.FAILED
    assert fake.received("orders.create") == 0


def test_a_refusal_of_the_order_is_a_failed_invalid_request(
    gateway: PayvalidaGateway, fake: FakePayvalida, clock: Clock
) -> None:
    clock.now = AT + timedelta(days=20)  # the fake's today is after the order's last day
    result = gateway.charge(charge())
    assert (result.status, result.code) == (PaymentStatus.FAILED, "0032")
    assert result.error is ErrorCode.INVALID_REQUEST


def test_bad_credentials_are_unknown_authentication_error(fake: FakePayvalida) -> None:
    with make_gateway(fake, "wrong") as gateway:
        result = gateway.charge(charge())
        assert (result.status, result.error) == (
            PaymentStatus.UNKNOWN,
            ErrorCode.AUTHENTICATION_ERROR,
        )
        assert result.code == "0025"
        with pytest.raises(GatewayAuthenticationFailed):
            gateway.sync(sync())
    other = PayvalidaGateway(
        "stranger", SECRET, base_url=SANDBOX, transport=InProcessTransport(fake.app)
    )
    with other:
        assert other.charge(charge()).error is ErrorCode.AUTHENTICATION_ERROR


def test_a_lost_answer_is_unknown_and_sync_finds_the_one_order(
    gateway: PayvalidaGateway, fake: FakePayvalida
) -> None:
    fake.inject(charge_timeouts=1)
    lost = gateway.charge(charge())
    assert (lost.status, lost.error) == (PaymentStatus.UNKNOWN, ErrorCode.GATEWAY_TIMEOUT)
    assert lost.reference == wire.order_id("inv_1-1"), "a notification can name the attempt"
    found = gateway.sync(sync())
    assert found is not None
    assert found.status is PaymentStatus.REQUIRES_ACTION
    assert found.reference == wire.order_id("inv_1-1")
    again = gateway.charge(charge())
    assert again.reference == found.reference
    assert len(fake.orders()) == 1


@pytest.mark.parametrize("fault", ["server_errors", "html_errors", "dropped_connections"])
def test_a_5xx_or_a_broken_answer_is_unknown(
    gateway: PayvalidaGateway, fake: FakePayvalida, fault: str
) -> None:
    fake.inject(**{fault: 1})
    result = gateway.charge(charge())
    assert result.status is PaymentStatus.UNKNOWN
    assert result.error in (ErrorCode.GATEWAY_UNAVAILABLE, ErrorCode.GATEWAY_TIMEOUT)
    assert result.reference == wire.order_id("inv_1-1")
    assert gateway.sync(sync(reference=result.reference)) is None  # nothing was made
    assert gateway.charge(charge()).status is PaymentStatus.REQUIRES_ACTION


def test_sync_raises_while_payvalida_fails(gateway: PayvalidaGateway, fake: FakePayvalida) -> None:
    fake.inject(server_errors=1)
    with pytest.raises(GatewayError) as raised:
        gateway.sync(sync())
    assert raised.value.retryable


def test_a_gateway_that_never_accepts_the_connection_is_unknown(fake: FakePayvalida) -> None:
    with make_gateway(fake, base_url="http://127.0.0.1:9", transport=httpx.HTTPTransport()) as gw:
        result = gw.charge(charge())
        assert (result.status, result.error) == (
            PaymentStatus.UNKNOWN,
            ErrorCode.GATEWAY_UNAVAILABLE,
        )
        with pytest.raises(GatewayError):
            gw.sync(sync())


# -- sync --------------------------------------------------------------------------------------


def test_sync_follows_the_order(
    gateway: PayvalidaGateway, fake: FakePayvalida, clock: Clock
) -> None:
    assert gateway.sync(sync()) is None
    first = gateway.charge(charge())
    pending = gateway.sync(sync(reference=first.reference))
    assert pending is not None
    assert pending.status is PaymentStatus.REQUIRES_ACTION
    assert pending.action_url == first.action_url
    fake.pay(first.reference or "")
    paid = gateway.sync(sync())
    assert paid is not None
    assert paid.status is PaymentStatus.SUCCEEDED

    gateway.charge(charge("inv_1-2"))
    clock.now = AT + timedelta(days=8)  # past the 7-day link
    expired = gateway.sync(sync("inv_1-2"))
    assert expired is not None
    assert expired.status is PaymentStatus.FAILED
    assert (expired.decline, expired.error, expired.code) == (
        DeclineKind.SOFT,
        ErrorCode.PAYER_ABANDONED,
        "expired",
    )
    fake.pay(wire.order_id("inv_1-2"), late=True)
    late = gateway.sync(sync("inv_1-2"))
    assert late is not None
    assert late.status is PaymentStatus.SUCCEEDED


def test_a_deleted_order_is_abandoned(gateway: PayvalidaGateway) -> None:
    first = gateway.charge(charge())
    assert gateway.cancel(first.reference or "")
    assert not gateway.cancel(first.reference or "")
    result = gateway.sync(sync())
    assert result is not None
    assert result.error is ErrorCode.PAYER_ABANDONED
    assert result.code == "cancelled"


def test_sync_falls_back_to_the_key_for_a_wrong_reference(gateway: PayvalidaGateway) -> None:
    gateway.charge(charge())
    found = gateway.sync(sync(reference="someotherorder"))
    assert found is not None
    assert found.reference == wire.order_id("inv_1-1")


# -- notifications -----------------------------------------------------------------------------


def test_a_genuine_notification_verifies(gateway: PayvalidaGateway, fake: FakePayvalida) -> None:
    first = gateway.charge(charge())
    (delivery,) = fake.pay(first.reference or "")
    facts = gateway.parse_notification(Notification(headers=delivery.headers, body=delivery.body))
    assert facts.verified
    assert facts.charge_reference == first.reference
    assert facts.kind == "order.approved"
    duplicate = gateway.parse_notification(notification(fake, first.reference or ""))
    assert duplicate.event_id == facts.event_id


def test_forged_and_tampered_notifications_are_refused(
    gateway: PayvalidaGateway, fake: FakePayvalida
) -> None:
    first = gateway.charge(charge())
    with pytest.raises(GatewayError) as raised:
        gateway.parse_notification(notification(fake, first.reference or "", forged=True))
    assert raised.value.code == "invalid_request"
    fake.expire(first.reference or "")
    genuine = notification(fake, first.reference or "")
    tampered = genuine.body.replace(b'"cancelled"', b'"approved"')
    with pytest.raises(GatewayError):
        gateway.parse_notification(Notification(headers=genuine.headers, body=tampered))
    with pytest.raises(GatewayError):
        gateway.parse_notification(Notification(headers={}, body=b"<html></html>"))
    assert gateway.parse_notification(genuine).kind == "order.cancelled"


def test_recurrent_payments_map_to_their_order(
    gateway: PayvalidaGateway, fake: FakePayvalida
) -> None:
    body = wire.order_body(
        merchant=MERCHANT, fixed_hash=SECRET, email=EMAIL, order="monthly7", amount="30000",
        description="Recurrente", expiration=AT.date(), recurrent=True,
    )  # fmt: skip
    with httpx.Client(base_url=SANDBOX, transport=InProcessTransport(fake.app)) as client:
        assert client.post("/api/v3/porders", json=body).json()["CODE"] == "0000"
    first = fake.pay("monthly7")[0]
    second = fake.pay("monthly7")[0]
    facts = [
        gateway.parse_notification(Notification(headers=d.headers, body=d.body))
        for d in (first, second)
    ]
    assert [f.charge_reference for f in facts] == ["monthly7", "monthly7"]
    assert [f.event_id for f in facts] == ["monthly7_1:approved", "monthly7_2:approved"]


def test_notifications_reach_a_host_over_sockets(fake: FakePayvalida) -> None:
    """The fake POSTs to a real notify URL; the host verifies each one with the adapter."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route

    seen: list[str] = []
    with (
        serve(fake.app) as url,
        make_gateway(fake, base_url=url, transport=httpx.HTTPTransport()) as gateway,
    ):

        async def receive(request: Request) -> PlainTextResponse:
            body = await request.body()
            try:
                facts = gateway.parse_notification(
                    Notification(headers=dict(request.headers), body=body)
                )
            except GatewayError:
                return PlainTextResponse("ERROR", 400)
            seen.append(facts.event_id)
            return PlainTextResponse("OK")

        host = Starlette(routes=[Route("/hooks", receive, methods=["POST"])])
        with serve(host) as host_url:
            fake.notify_url = f"{host_url}/hooks"
            result = gateway.charge(charge())
            with httpx.Client(base_url=url, timeout=10) as client:
                client.post("/_fake/notifications/forge", json={"order": result.reference})
                client.post("/_fake/pay", json={"order": result.reference})
            assert seen == [f"{result.reference}:approved"]
            assert [d.http_status for d in fake.sent] == [400, 200]


# -- plans and updates -------------------------------------------------------------------------


def test_register_plan(gateway: PayvalidaGateway, fake: FakePayvalida) -> None:
    plan = gateway.register_plan(
        interval="month", interval_count=3, amount=Money.of("12000", "COP"), description="Plan"
    )
    stored = fake.plans()[plan]
    assert (stored["interval"], stored["interval_count"], stored["amount"]) == (
        "month",
        "3",
        "12000",
    )
    with pytest.raises(GatewayError):
        gateway.register_plan(interval="year", interval_count=1, amount=AMOUNT)
    with make_gateway(fake, "wrong") as bad, pytest.raises(GatewayAuthenticationFailed):
        bad.register_plan(interval="day", interval_count=1, amount=AMOUNT)


def test_an_open_amount_order_updated_then_paid(
    gateway: PayvalidaGateway, fake: FakePayvalida
) -> None:
    """PATCH an adapter's order into an open-amount one, as the documented update allows."""
    first = gateway.charge(charge())
    body = wire.order_body(
        merchant=MERCHANT, fixed_hash=SECRET, email=EMAIL, order=first.reference or "",
        amount="0", description="Abierta", expiration=AT.date() + timedelta(days=3),
    )  # fmt: skip
    with httpx.Client(base_url=SANDBOX, transport=InProcessTransport(fake.app)) as client:
        answer = client.patch("/api/v3/porders", json=body).json()
    assert (answer["CODE"], answer["DATA"]["Monto"]) == ("0000", "0.00")
    (delivery,) = fake.pay(first.reference or "", amount=Decimal("50000"))
    assert b'"amount":"50000.00"' in delivery.body
    paid = gateway.sync(sync())
    assert paid is not None
    assert paid.status is PaymentStatus.SUCCEEDED


# -- over loopback -----------------------------------------------------------------------------


def test_the_whole_path_over_loopback(fake: FakePayvalida) -> None:
    with (
        serve(fake.app) as url,
        make_gateway(fake, base_url=url, transport=httpx.HTTPTransport()) as gateway,
    ):
        first = gateway.charge(charge())
        assert first.status is PaymentStatus.REQUIRES_ACTION
        assert first.action_url is not None
        assert first.action_url.startswith(url)
        assert gateway.charge(charge()) == first
        fake.inject(charge_timeouts=1)
        lost = gateway.charge(charge("inv_1-2"))
        assert lost.status is PaymentStatus.UNKNOWN
        found = gateway.sync(sync("inv_1-2"))
        assert found is not None
        assert found.status is PaymentStatus.REQUIRES_ACTION
        with httpx.Client(timeout=10) as browser:
            assert browser.post(first.action_url).status_code == 200
        paid = gateway.sync(sync())
        assert paid is not None
        assert paid.status is PaymentStatus.SUCCEEDED


# -- withdrawing a link (cancel_link: deleting the order) --------------------------------------


def cancel(reference: str, key: str = "inv_1-1") -> CancelLinkRequest:
    return CancelLinkRequest(
        idempotency_key=key, reference=reference, amount=AMOUNT, customer_id="cus_1", at=AT
    )


class Recorder(httpx.BaseTransport):
    """The fake's transport, keeping every request sent."""

    def __init__(self, fake: FakePayvalida) -> None:
        self.inner = InProcessTransport(fake.app)
        self.sent: list[httpx.Request] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.sent.append(request)
        return self.inner.handle_request(request)


def test_cancel_link_deletes_the_pending_order_with_its_checksum(fake: FakePayvalida) -> None:
    recorder = Recorder(fake)
    with make_gateway(fake, transport=recorder) as gateway:
        first = gateway.charge(charge())
        order = wire.order_id("inv_1-1")
        assert first.reference == order

        withdrawn = gateway.cancel_link(cancel(order))

        assert withdrawn.status is LinkCancellationStatus.CANCELED
        assert withdrawn.code == "0000"
        [deleted] = [r for r in recorder.sent if r.method == "DELETE"]
        assert deleted.url.path == f"/api/v3/porders/{order}"
        assert dict(deleted.url.params) == {
            "merchant": MERCHANT,
            "checksum": wire.sha512_hex(order, MERCHANT, SECRET),
        }
        assert deleted.content == b""
    assert fake.state(order) == wire.CANCELLED
    with pytest.raises(ValueError, match="CANCELADA"):
        fake.pay(order)
    with pytest.raises(ValueError, match="CANCELADA"):
        fake.pay(order, late=True)
    assert fake.payments_by(EMAIL) == 0


def test_cancel_link_again_is_canceled_and_sync_says_deleted(gateway: PayvalidaGateway) -> None:
    order = gateway.charge(charge()).reference or ""
    assert gateway.cancel_link(cancel(order)).status is LinkCancellationStatus.CANCELED
    again = gateway.cancel_link(cancel(order))
    assert again.status is LinkCancellationStatus.CANCELED, "deleted before: a repeat"
    assert again.code == wire.NOT_FOUND
    result = gateway.sync(sync())
    assert result is not None
    assert (result.status, result.error, result.code) == (
        PaymentStatus.FAILED,
        ErrorCode.PAYER_ABANDONED,
        "cancelled",
    )
    unknown = gateway.cancel_link(cancel("neverregistered1"))
    assert unknown.status is LinkCancellationStatus.CANCELED, "nothing to pay"


def test_cancel_link_of_a_paid_order_is_too_late_and_says_it_succeeded(
    gateway: PayvalidaGateway, fake: FakePayvalida
) -> None:
    order = gateway.charge(charge()).reference or ""
    fake.pay(order)

    answer = gateway.cancel_link(cancel(order))

    assert answer.status is LinkCancellationStatus.TOO_LATE
    assert answer.code == wire.NOT_FOUND
    assert answer.payment is not None
    assert (answer.payment.status, answer.payment.reference) == (PaymentStatus.SUCCEEDED, order)
    assert fake.state(order) == wire.APPROVED


def test_cancel_link_of_an_expired_order_is_too_late_and_expired(
    gateway: PayvalidaGateway, fake: FakePayvalida
) -> None:
    order = gateway.charge(charge()).reference or ""
    fake.expire(order)

    answer = gateway.cancel_link(cancel(order))

    assert answer.status is LinkCancellationStatus.TOO_LATE
    assert answer.payment is not None
    assert (answer.payment.status, answer.payment.error) == (
        PaymentStatus.FAILED,
        ErrorCode.PAYER_ABANDONED,
    )
    assert fake.state(order) == wire.EXPIRED, "an expired order cannot be deleted"


def test_a_lost_delete_answer_raises_and_asking_again_is_canceled(
    gateway: PayvalidaGateway, fake: FakePayvalida
) -> None:
    order = gateway.charge(charge()).reference or ""
    fake.inject(delete_timeouts=1)

    with pytest.raises(GatewayError) as lost:
        gateway.cancel_link(cancel(order))

    assert lost.value.retryable
    assert fake.state(order) == wire.CANCELLED, "Payvalida deleted it all the same"
    assert gateway.cancel_link(cancel(order)).status is LinkCancellationStatus.CANCELED


def test_cancel_link_failures_raise_and_delete_nothing(fake: FakePayvalida) -> None:
    with make_gateway(fake) as gateway:
        order = gateway.charge(charge()).reference or ""
        fake.inject(server_errors=1)
        with pytest.raises(GatewayError) as failed:
            gateway.cancel_link(cancel(order))
        assert failed.value.retryable
    with make_gateway(fake, "wrong") as bad, pytest.raises(GatewayAuthenticationFailed):
        bad.cancel_link(cancel(order))
    assert fake.state(order) == wire.PENDING


def test_cancel_link_over_loopback(fake: FakePayvalida) -> None:
    with (
        serve(fake.app) as url,
        make_gateway(fake, base_url=url, transport=httpx.HTTPTransport()) as gateway,
    ):
        live = gateway.charge(charge()).reference or ""
        paid = gateway.charge(charge("inv_1-2")).reference or ""
        fake.pay(paid)
        fake.inject(delete_timeouts=1)
        with pytest.raises(GatewayError):
            gateway.cancel_link(cancel(live))
        assert gateway.cancel_link(cancel(live)).status is LinkCancellationStatus.CANCELED
        too_late = gateway.cancel_link(cancel(paid, "inv_1-2"))
        assert too_late.status is LinkCancellationStatus.TOO_LATE
        assert too_late.payment is not None
        assert too_late.payment.status is PaymentStatus.SUCCEEDED
        with httpx.Client(timeout=10) as browser:
            page = browser.get(f"{url}/checkout", params={"token": _token(fake, live)})
            assert "CANCELADA" in page.text
            assert (
                browser.post(f"{url}/checkout", params={"token": _token(fake, live)}).status_code
                == 409
            )
    assert (fake.state(live), fake.state(paid)) == (wire.CANCELLED, wire.APPROVED)


def _token(fake: FakePayvalida, order: str) -> str:
    link = str(fake.order(order)["checkout"])
    return link.rsplit("token=", 1)[1]
