"""OpenpayGateway against FakeOpenpay, in process (``InProcessTransport``) unless said otherwise."""

from __future__ import annotations

import base64
import logging
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from decimal import Decimal

import httpx
import pytest

from adapters.openpay import FakeOpenpay, OpenpayGateway, from_environment
from adapters.openpay import _wire as wire
from adapters.openpay.fake import STOLEN_CARD, TEST_CARDS
from billing.domain.errors import GatewayAuthenticationFailed, GatewayError
from billing.domain.money import Money
from billing.domain.payments import DeclineKind, ErrorCode, PaymentStatus, RefundStatus
from billing.ports import (
    AttachRequest,
    Capability,
    ChargeRequest,
    CustomerRequest,
    EnrollmentRequest,
    Notification,
    RefundRequest,
    SyncRequest,
)
from billing.testing.asgi import InProcessTransport, serve

MERCHANT = "mtestopenpay00000001"
KEY = "sk_9f2c1e0b7a6d4c3b2a1908f7e6d5c4b3"
AT = datetime(2026, 2, 1, 12, tzinfo=UTC)
AMOUNT = Money.of("150.10", "MXN")
APPROVE = "4111111111111111"


class Refusing(httpx.BaseTransport):
    """Refuses the first ``refusals`` connections (the request never left), then forwards."""

    def __init__(self, inner: httpx.BaseTransport, refusals: int) -> None:
        self.inner, self.refusals, self.attempts = inner, refusals, 0

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.attempts += 1
        if self.refusals > 0:
            self.refusals -= 1
            raise httpx.ConnectError("connection refused", request=request)
        return self.inner.handle_request(request)

    def close(self) -> None:
        self.inner.close()


class LosingAnswers(httpx.BaseTransport):
    """Forwards every request, then loses the answer of the next one ``lose`` matches."""

    def __init__(self, inner: httpx.BaseTransport, lose: Callable[[httpx.Request], bool]) -> None:
        self.inner, self.lose, self.armed = inner, lose, True

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = self.inner.handle_request(request)
        if self.armed and self.lose(request):
            self.armed = False
            raise httpx.ReadTimeout("answer lost", request=request)
        return response

    def close(self) -> None:
        self.inner.close()


@pytest.fixture
def fake() -> FakeOpenpay:
    return FakeOpenpay(MERCHANT, KEY)


@pytest.fixture
def gateway(fake: FakeOpenpay) -> Iterator[OpenpayGateway]:
    with OpenpayGateway(MERCHANT, KEY, transport=InProcessTransport(fake.app)) as gateway:
        yield gateway


@pytest.fixture
def browser(fake: FakeOpenpay) -> Iterator[httpx.Client]:
    """What openpay.js does in the customer's browser: card data in, a token out."""
    with httpx.Client(
        base_url="https://sandbox-api.openpay.mx",
        auth=(KEY, ""),
        transport=InProcessTransport(fake.app),
    ) as client:
        yield client


def make_token(browser: httpx.Client, number: str = APPROVE) -> str:
    response = browser.post(
        f"/v1/{MERCHANT}/tokens",
        json={
            "card_number": number,
            "holder_name": "Ana Ruiz",
            "expiration_month": "12",
            "expiration_year": "40",
            "cvv2": "123",
        },
    )
    assert response.status_code == 200, response.text
    return str(response.json()["id"])


def make_payer(
    gateway: OpenpayGateway, browser: httpx.Client, number: str = APPROVE, customer: str = "cus_1"
) -> tuple[str, str]:
    """A registered customer with a stored card: (customer reference, card id)."""
    reference = gateway.register_customer(CustomerRequest(customer_id=customer, name="Ana Ruiz"))
    method = gateway.attach_payment_method(
        AttachRequest(
            customer_id=customer, customer_reference=reference, token=make_token(browser, number)
        )
    )
    return reference, method.reference


def charge(key: str, customer: str | None, card: str, amount: Money = AMOUNT) -> ChargeRequest:
    return ChargeRequest(
        idempotency_key=key,
        amount=amount,
        customer_id="cus_1",
        payment_method=card,
        description="Invoice INV-1",
        at=AT,
        customer_reference=customer,
    )


def sync(key: str, customer: str | None, reference: str | None = None) -> SyncRequest:
    return SyncRequest(
        idempotency_key=key,
        reference=reference,
        amount=AMOUNT,
        customer_id="cus_1",
        at=AT,
        customer_reference=customer,
    )


def refund(reference: str, customer: str | None, amount: Money = AMOUNT) -> RefundRequest:
    return RefundRequest(
        idempotency_key=f"{reference}-refund-1",
        reference=reference,
        amount=amount,
        at=AT,
        customer_reference=customer,
    )


# -- shape -----------------------------------------------------------------------------------------


def test_capabilities_are_what_the_document_allows() -> None:
    assert OpenpayGateway.capabilities == {
        Capability.CUSTOMERS,
        Capability.CARD_TOKENS,
        Capability.STORED_CARD_CHARGES,
        Capability.REFUNDS,
        Capability.NOTIFICATIONS,
        Capability.IDEMPOTENT_CHARGES,
    }


def test_enrollment_is_not_supported(gateway: OpenpayGateway) -> None:
    with pytest.raises(GatewayError) as raised:
        gateway.start_enrollment(
            EnrollmentRequest(customer_id="c", customer_reference="a", return_url="https://x")
        )
    assert raised.value.code == "invalid_request"
    with pytest.raises(GatewayError, match="enrollment"):
        gateway.complete_enrollment("a", "e")


def test_from_environment_needs_both_credentials() -> None:
    assert from_environment({}) is None
    assert from_environment({"BILLING_OPENPAY_MERCHANT_ID": MERCHANT}) is None
    env = {"BILLING_OPENPAY_MERCHANT_ID": MERCHANT, "BILLING_OPENPAY_PRIVATE_KEY": KEY}
    sandbox = from_environment(env)
    production = from_environment(env | {"BILLING_OPENPAY_BASE_URL": "https://api.openpay.mx"})
    assert sandbox is not None
    assert production is not None
    with sandbox, production:
        assert sandbox.name == "openpay"
        assert "base_url='https://sandbox-api.openpay.mx'" in repr(sandbox)
        assert "base_url='https://api.openpay.mx'" in repr(production)


# -- customers and cards ---------------------------------------------------------------------------


def test_register_customer_creates_one_with_the_engines_id(
    gateway: OpenpayGateway, browser: httpx.Client
) -> None:
    reference = gateway.register_customer(CustomerRequest(customer_id="cus_1"))
    customer = browser.get(f"/v1/{MERCHANT}/customers/{reference}").json()
    assert customer["external_id"] == "cus_1"
    assert customer["name"] == "cus_1"
    assert customer["email"] == wire.placeholder_email("cus_1")
    assert len(reference) == 20
    assert reference.isalnum()
    assert reference.islower()


def test_registering_again_answers_the_first_customer(
    gateway: OpenpayGateway, fake: FakeOpenpay, browser: httpx.Client
) -> None:
    first = gateway.register_customer(CustomerRequest(customer_id="cus_1", email="a@b.mx"))
    for number in range(3):
        gateway.register_customer(CustomerRequest(customer_id=f"other_{number}"))
    assert gateway.register_customer(CustomerRequest(customer_id="cus_1")) == first
    assert len(browser.get(f"/v1/{MERCHANT}/customers", params={"limit": "100"}).json()) == 4
    assert fake.received("customers.create") == 5


def test_attach_stores_the_tokens_card(gateway: OpenpayGateway, browser: httpx.Client) -> None:
    reference = gateway.register_customer(CustomerRequest(customer_id="cus_1"))
    method = gateway.attach_payment_method(
        AttachRequest(customer_id="cus_1", customer_reference=reference, token=make_token(browser))
    )
    assert method.label == "visa ****1111"
    card = browser.get(f"/v1/{MERCHANT}/customers/{reference}/cards/{method.reference}").json()
    assert card["card_number"] == "411111XXXXXX1111"


def test_attaching_the_same_token_again_answers_the_stored_card(
    gateway: OpenpayGateway, browser: httpx.Client
) -> None:
    reference = gateway.register_customer(CustomerRequest(customer_id="cus_1"))
    gateway.attach_payment_method(
        AttachRequest(customer_id="cus_1", customer_reference=reference, token=make_token(browser))
    )
    request = AttachRequest(
        customer_id="cus_1", customer_reference=reference, token=make_token(browser)
    )
    first = gateway.attach_payment_method(request)
    assert gateway.attach_payment_method(request) == first


def test_attach_with_an_unknown_token_raises_not_found(gateway: OpenpayGateway) -> None:
    reference = gateway.register_customer(CustomerRequest(customer_id="cus_1"))
    with pytest.raises(GatewayError) as raised:
        gateway.attach_payment_method(
            AttachRequest(customer_id="cus_1", customer_reference=reference, token="tokmissing")
        )
    assert (raised.value.code, raised.value.raw_code) == ("not_found", "1005")


# -- charges ---------------------------------------------------------------------------------------


def test_a_charge_on_the_approving_card_succeeds(
    gateway: OpenpayGateway, fake: FakeOpenpay, browser: httpx.Client
) -> None:
    customer, card = make_payer(gateway, browser)
    result = gateway.charge(charge("inv_1-1", customer, card))
    assert result.status is PaymentStatus.SUCCEEDED
    assert result.reference is not None
    stored = fake.charge(result.reference)
    assert (stored["order_id"], stored["amount"], stored["currency"]) == (
        "inv_1-1",
        Decimal("150.10"),
        "MXN",
    )
    assert stored["card"]["id"] == card
    assert fake.charges_taken(customer) == 1


DECLINES = [
    ("4222222222222220", ErrorCode.CARD_DECLINED, DeclineKind.SOFT, "3001"),
    ("4444444444444448", ErrorCode.INSUFFICIENT_FUNDS, DeclineKind.SOFT, "3003"),
    (STOLEN_CARD, ErrorCode.LOST_OR_STOLEN, DeclineKind.HARD, "3004"),
    *(
        (number, wire.ERRORS[code].error, wire.ERRORS[code].decline, str(code))
        for number, code in TEST_CARDS.items()
        if code is not None and number.startswith("40000000000")
    ),
]


@pytest.mark.parametrize(("number", "error", "kind", "code"), DECLINES)
def test_each_test_card_declines_as_mapped(
    gateway: OpenpayGateway,
    fake: FakeOpenpay,
    browser: httpx.Client,
    number: str,
    error: ErrorCode,
    kind: DeclineKind,
    code: str,
) -> None:
    customer, card = make_payer(gateway, browser, number)
    result = gateway.charge(charge("inv_1-1", customer, card))
    assert (result.status, result.error, result.decline, result.code) == (
        PaymentStatus.FAILED,
        error,
        kind,
        code,
    )
    assert result.reference is not None, "the failed transaction is found by its order_id"
    assert fake.charge(result.reference)["status"] == "failed"
    assert gateway.sync(sync("inv_1-1", customer, result.reference)) == result
    assert fake.charges_taken(customer) == 0


def test_a_repeated_key_answers_the_first_charge_without_charging_again(
    gateway: OpenpayGateway, fake: FakeOpenpay, browser: httpx.Client
) -> None:
    customer, card = make_payer(gateway, browser)
    first = gateway.charge(charge("inv_1-1", customer, card))
    assert gateway.charge(charge("inv_1-1", customer, card)) == first
    assert fake.received("charges.create") == 2
    assert fake.charges_taken(customer) == 1


def test_a_repeated_key_of_a_declined_charge_answers_the_decline(
    gateway: OpenpayGateway, fake: FakeOpenpay, browser: httpx.Client
) -> None:
    customer, card = make_payer(gateway, browser, STOLEN_CARD)
    first = gateway.charge(charge("inv_1-1", customer, card))
    again = gateway.charge(charge("inv_1-1", customer, card))
    assert (again.status, again.error, again.reference) == (
        PaymentStatus.FAILED,
        ErrorCode.LOST_OR_STOLEN,
        first.reference,
    )


def test_a_rule_soft_declines_once_then_the_card_approves(
    gateway: OpenpayGateway, fake: FakeOpenpay, browser: httpx.Client
) -> None:
    customer, card = make_payer(gateway, browser)
    fake.decline_next(card_id=card, code=3003)
    assert gateway.charge(charge("inv_1-1", customer, card)).error is ErrorCode.INSUFFICIENT_FUNDS
    assert gateway.charge(charge("inv_1-2", customer, card)).status is PaymentStatus.SUCCEEDED


def test_a_charge_on_another_customers_card_is_refused(
    gateway: OpenpayGateway, browser: httpx.Client
) -> None:
    _, card = make_payer(gateway, browser)
    other = gateway.register_customer(CustomerRequest(customer_id="cus_2"))
    result = gateway.charge(charge("inv_1-1", other, card))
    assert (result.status, result.decline, result.error, result.code) == (
        PaymentStatus.FAILED,
        DeclineKind.SOFT,
        ErrorCode.NOT_FOUND,
        "1005",
    )


def test_a_currency_openpay_does_not_take_is_refused_before_sending(
    gateway: OpenpayGateway, fake: FakeOpenpay, browser: httpx.Client
) -> None:
    customer, card = make_payer(gateway, browser)
    result = gateway.charge(charge("inv_1-1", customer, card, Money.of("1000", "CLP")))
    assert (result.status, result.error) == (PaymentStatus.FAILED, ErrorCode.INVALID_REQUEST)
    assert fake.received("charges.create") == 0


def test_merchant_level_cards_and_charges(
    gateway: OpenpayGateway, fake: FakeOpenpay, browser: httpx.Client
) -> None:
    method = gateway.attach_payment_method(
        AttachRequest(customer_id="cus_1", customer_reference=None, token=make_token(browser))
    )
    result = gateway.charge(charge("inv_1-1", None, method.reference))
    assert result.status is PaymentStatus.SUCCEEDED
    assert gateway.sync(sync("inv_1-1", None)) == result
    assert fake.charges_taken() == 1


# -- unknown outcomes ------------------------------------------------------------------------------

FAULTS = [
    ("charge_timeouts", ErrorCode.GATEWAY_TIMEOUT, True),
    ("dropped_connections", ErrorCode.GATEWAY_TIMEOUT, False),
    ("server_errors", ErrorCode.GATEWAY_UNAVAILABLE, False),
    ("html_errors", ErrorCode.GATEWAY_UNAVAILABLE, False),
]


@pytest.mark.parametrize(("fault", "error", "committed"), FAULTS)
def test_each_fault_is_an_unknown_outcome_that_sync_resolves(
    gateway: OpenpayGateway,
    fake: FakeOpenpay,
    browser: httpx.Client,
    fault: str,
    error: ErrorCode,
    committed: bool,
) -> None:
    customer, card = make_payer(gateway, browser)
    fake.inject(**{fault: 1})
    result = gateway.charge(charge("inv_1-1", customer, card))
    assert (result.status, result.error, result.decline) == (PaymentStatus.UNKNOWN, error, None)
    assert fake.received("charges.create") == 1, "no automatic retry after the request left"
    found = gateway.sync(sync("inv_1-1", customer))
    if committed:
        assert found is not None
        assert found.status is PaymentStatus.SUCCEEDED
        assert gateway.charge(charge("inv_1-1", customer, card)) == found
    else:
        assert found is None
        assert gateway.charge(charge("inv_1-1", customer, card)).status is PaymentStatus.SUCCEEDED
    assert fake.charges_taken(customer) == 1


def test_a_500_keeps_openpays_code(
    gateway: OpenpayGateway, fake: FakeOpenpay, browser: httpx.Client
) -> None:
    customer, card = make_payer(gateway, browser)
    fake.inject(server_errors=1)
    assert gateway.charge(charge("inv_1-1", customer, card)).code == "1000"


def test_a_refused_connection_is_retried_once_and_charges_once(fake: FakeOpenpay) -> None:
    with httpx.Client(
        base_url="https://sandbox-api.openpay.mx",
        auth=(KEY, ""),
        transport=InProcessTransport(fake.app),
    ) as browser:
        setup = OpenpayGateway(MERCHANT, KEY, transport=InProcessTransport(fake.app))
        with setup:
            customer, card = make_payer(setup, browser)
    refusing = Refusing(InProcessTransport(fake.app), refusals=1)
    with OpenpayGateway(MERCHANT, KEY, transport=refusing) as gateway:
        result = gateway.charge(charge("inv_1-1", customer, card))
    assert result.status is PaymentStatus.SUCCEEDED
    assert refusing.attempts == 2
    assert fake.received("charges.create") == 1


def test_a_gateway_that_never_accepts_the_connection_is_unknown(fake: FakeOpenpay) -> None:
    refusing = Refusing(InProcessTransport(fake.app), refusals=100)
    with OpenpayGateway(MERCHANT, KEY, transport=refusing) as gateway:
        result = gateway.charge(charge("inv_1-1", "acustomer", "kcard"))
        with pytest.raises(GatewayError) as raised:
            gateway.register_customer(CustomerRequest(customer_id="cus_1"))
    assert (result.status, result.error) == (PaymentStatus.UNKNOWN, ErrorCode.GATEWAY_UNAVAILABLE)
    assert (raised.value.code, raised.value.retryable) == ("gateway_unavailable", True)
    assert refusing.attempts == 6
    assert fake.received("charges.create") == 0


def test_sync_falls_back_to_the_order_id_for_an_unknown_reference(
    gateway: OpenpayGateway, browser: httpx.Client
) -> None:
    customer, card = make_payer(gateway, browser)
    result = gateway.charge(charge("inv_1-1", customer, card))
    assert gateway.sync(sync("inv_1-1", customer, "trnosuchcharge000000")) == result
    assert gateway.sync(sync("inv_9-1", customer, "trnosuchcharge000000")) is None


def test_sync_scans_every_page_of_the_customers_charges(
    gateway: OpenpayGateway, browser: httpx.Client
) -> None:
    customer, card = make_payer(gateway, browser)
    oldest = gateway.charge(charge("inv_0-1", customer, card, Money.of("1", "MXN")))
    for number in range(1, 121):
        gateway.charge(charge(f"inv_{number}-1", customer, card, Money.of("1", "MXN")))
    assert gateway.sync(sync("inv_0-1", customer)) == oldest
    assert gateway.sync(sync("inv_missing-1", customer)) is None


def test_a_key_longer_than_an_order_id_still_charges_once(
    gateway: OpenpayGateway, fake: FakeOpenpay, browser: httpx.Client
) -> None:
    customer, card = make_payer(gateway, browser)
    key = "inv_" + "9" * 120 + "-1"
    first = gateway.charge(charge(key, customer, card))
    assert first.reference is not None
    assert fake.charge(first.reference)["order_id"] == wire.order_id(key)
    assert gateway.charge(charge(key, customer, card)) == first
    assert gateway.sync(sync(key, customer)) == first


# -- refunds ---------------------------------------------------------------------------------------


def test_a_refund_returns_the_whole_charge_once(
    gateway: OpenpayGateway, fake: FakeOpenpay, browser: httpx.Client
) -> None:
    customer, card = make_payer(gateway, browser)
    paid = gateway.charge(charge("inv_1-1", customer, card))
    assert paid.reference is not None
    first = gateway.refund(refund(paid.reference, customer))
    assert first.status is RefundStatus.SUCCEEDED
    assert first.reference is not None
    assert gateway.refund(refund(paid.reference, customer)) == first
    assert fake.received("charges.refund") == 1
    assert fake.charge(paid.reference)["refund"]["id"] == first.reference


def test_a_partial_refund_fails_without_sending(
    gateway: OpenpayGateway, fake: FakeOpenpay, browser: httpx.Client
) -> None:
    customer, card = make_payer(gateway, browser)
    paid = gateway.charge(charge("inv_1-1", customer, card))
    assert paid.reference is not None
    refused = gateway.refund(refund(paid.reference, customer, Money.of("50.00", "MXN")))
    assert (refused.status, refused.code) == (RefundStatus.FAILED, "partial_refund_unsupported")
    assert refused.message is not None
    assert "whole charges only" in refused.message
    assert fake.received("charges.refund") == 0
    assert gateway.refund(refund(paid.reference, customer)).status is RefundStatus.SUCCEEDED


def test_refusals_of_a_refund_are_results(gateway: OpenpayGateway, browser: httpx.Client) -> None:
    customer, card = make_payer(gateway, browser, "4222222222222220")
    declined = gateway.charge(charge("inv_1-1", customer, card))
    assert declined.reference is not None
    refused = gateway.refund(refund(declined.reference, customer))
    assert (refused.status, refused.code) == (RefundStatus.FAILED, "3006")
    missing = gateway.refund(refund("trnosuchcharge000000", customer))
    assert (missing.status, missing.code) == (RefundStatus.FAILED, "1005")


def test_a_lost_refund_answer_is_unknown_and_asking_again_finds_it(fake: FakeOpenpay) -> None:
    lossy = LosingAnswers(
        InProcessTransport(fake.app), lambda request: request.url.path.endswith("/refund")
    )
    with (
        OpenpayGateway(MERCHANT, KEY, transport=lossy) as gateway,
        httpx.Client(
            base_url="https://sandbox-api.openpay.mx",
            auth=(KEY, ""),
            transport=InProcessTransport(fake.app),
        ) as browser,
    ):
        customer, card = make_payer(gateway, browser)
        paid = gateway.charge(charge("inv_1-1", customer, card))
        assert paid.reference is not None
        lost = gateway.refund(refund(paid.reference, customer))
        assert lost.status is RefundStatus.UNKNOWN
        found = gateway.refund(refund(paid.reference, customer))
    assert found.status is RefundStatus.SUCCEEDED
    assert fake.received("charges.refund") == 1


# -- credentials -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("merchant", "key"), [(MERCHANT, "sk_wrong_key_00000000000000000000"), ("mwrong", KEY)]
)
def test_bad_credentials_are_never_a_decline(fake: FakeOpenpay, merchant: str, key: str) -> None:
    with OpenpayGateway(merchant, key, transport=InProcessTransport(fake.app)) as gateway:
        result = gateway.charge(charge("inv_1-1", "acustomer", "kcard"))
        assert (result.status, result.error, result.code) == (
            PaymentStatus.UNKNOWN,
            ErrorCode.AUTHENTICATION_ERROR,
            "1002",
        )
        operations: list[Callable[[], object]] = [
            lambda: gateway.register_customer(CustomerRequest(customer_id="cus_1")),
            lambda: gateway.attach_payment_method(
                AttachRequest(customer_id="c", customer_reference="a", token="tok")
            ),
            lambda: gateway.sync(sync("inv_1-1", "acustomer")),
            lambda: gateway.sync(sync("inv_1-1", "acustomer", "trx")),
            lambda: gateway.refund(refund("trx", "acustomer")),
        ]
        for operation in operations:
            with pytest.raises(GatewayAuthenticationFailed) as raised:
                operation()
            assert raised.value.raw_code == "1002"
            assert key not in str(raised.value)


# -- notifications ---------------------------------------------------------------------------------


def test_the_fakes_webhook_parses_into_facts() -> None:
    received: list[bytes] = []

    async def receive(url: str, headers: object, body: bytes) -> int:
        received.append(body)
        return 200

    fake = FakeOpenpay(MERCHANT, KEY, deliver=receive)
    with (
        OpenpayGateway(MERCHANT, KEY, transport=InProcessTransport(fake.app)) as gateway,
        httpx.Client(
            base_url="https://x", auth=(KEY, ""), transport=InProcessTransport(fake.app)
        ) as browser,
    ):
        browser.post(f"/v1/{MERCHANT}/webhooks", json={"url": "https://host.example/openpay"})
        customer, card = make_payer(gateway, browser)
        paid = gateway.charge(charge("inv_1-1", customer, card))
        verification, succeeded = (
            gateway.parse_notification(Notification(headers={}, body=body)) for body in received
        )
    assert verification.kind == "verification"
    assert (succeeded.kind, succeeded.charge_reference, succeeded.idempotency_key) == (
        "charge.succeeded",
        paid.reference,
        "inv_1-1",
    )
    assert succeeded.verified is False


def test_a_body_that_is_no_notification_is_invalid_request(gateway: OpenpayGateway) -> None:
    with pytest.raises(GatewayError) as raised:
        gateway.parse_notification(Notification(headers={}, body=b'{"hello": "world"}'))
    assert raised.value.code == "invalid_request"


# -- secrets ---------------------------------------------------------------------------------------


def test_no_secret_reaches_logs_reprs_or_exceptions(caplog: pytest.LogCaptureFixture) -> None:
    """A full flow over real sockets with every logger at DEBUG (httpx and httpcore included)."""
    for name in (None, "httpx", "httpcore", "adapters.openpay", "uvicorn"):
        caplog.set_level(logging.DEBUG, logger=name)
    fake = FakeOpenpay(MERCHANT, KEY)
    header = wire.basic_authorization(KEY)
    secrets = [KEY, header, header.removeprefix("Basic "), APPROVE, STOLEN_CARD, "123"]
    seen: list[str] = []
    with serve(fake.app) as url:
        with (
            OpenpayGateway(MERCHANT, KEY, base_url=url) as gateway,
            httpx.Client(base_url=url, auth=(KEY, "")) as browser,
        ):
            customer, card = make_payer(gateway, browser)
            _, stolen = make_payer(gateway, browser, STOLEN_CARD, customer="cus_2")
            paid = gateway.charge(charge("inv_1-1", customer, card))
            declined = gateway.charge(charge("inv_2-1", customer, stolen))
            fake.inject(charge_timeouts=1)
            lost = gateway.charge(charge("inv_3-1", customer, card))
            assert paid.reference is not None
            gateway.sync(sync("inv_3-1", customer))
            gateway.refund(refund(paid.reference, customer))
            seen += [repr(gateway), repr(fake), repr(paid), repr(declined), repr(lost)]
        with OpenpayGateway(MERCHANT, "sk_" + KEY[3:][::-1], base_url=url) as wrong:
            with pytest.raises(GatewayAuthenticationFailed) as raised:
                wrong.register_customer(CustomerRequest(customer_id="cus_3"))
            seen += [repr(wrong), str(raised.value), repr(raised.value)]
    seen.append(caplog.text)
    assert "POST" in caplog.text, "the flow was logged"
    text = "\n".join(seen)
    for secret in (*secrets[:5], base64.b64encode(f"{KEY}:".encode()).decode()):
        assert secret not in text
    assert "cvv2" not in text
