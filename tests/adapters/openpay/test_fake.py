"""FakeOpenpay's fidelity to the document: auth, error objects, validation, state, webhooks,
faults, and a served fake under load."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Iterator, Mapping
from dataclasses import replace
from datetime import datetime
from decimal import Decimal
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from adapters.openpay import FakeOpenpay, fake_app
from adapters.openpay import _wire as wire
from adapters.openpay.fake import (
    DEFAULT_MERCHANT_ID,
    DEFAULT_PRIVATE_KEY,
    MEXICO,
    STOLEN_CARD,
    Delivery,
)
from adapters.openpay.simulation import simulation
from billing.domain.errors import GatewayAuthenticationFailed, InvalidArgument
from billing.domain.money import Money
from billing.domain.payments import ErrorCode
from billing.ports import AttachRequest, ChargeRequest, CustomerRequest
from billing.testing import Behavior
from billing.testing.asgi import InProcessTransport, serve

MERCHANT = "mfakeopenpay00000001"
KEY = "sk_0a1b2c3d4e5f60718293a4b5c6d7e8f9"
PUBLIC = "pk_0a1b2c3d4e5f60718293a4b5c6d7e8f9"
V1 = f"/v1/{MERCHANT}"
CARD = {
    "card_number": "4111111111111111",
    "holder_name": "Juan Perez Ramirez",
    "expiration_year": "40",
    "expiration_month": "12",
    "cvv2": "110",
}


class Receiver:
    """Collects the notifications the fake delivers (an in-process webhook endpoint)."""

    def __init__(self, status: int = 200) -> None:
        self.status = status
        self.calls: list[tuple[str, dict[str, str], bytes]] = []

    async def __call__(self, url: str, headers: Mapping[str, str], body: bytes) -> int:
        self.calls.append((url, dict(headers), body))
        return self.status

    def types(self) -> list[str]:
        return [str(wire.loads(body)["type"]) for _, _, body in self.calls]  # type: ignore[index]


@pytest.fixture
def receiver() -> Receiver:
    return Receiver()


@pytest.fixture
def fake(receiver: Receiver) -> FakeOpenpay:
    return FakeOpenpay(MERCHANT, KEY, public_key=PUBLIC, deliver=receiver)


def client_for(fake: FakeOpenpay, key: str | None = KEY) -> httpx.Client:
    return httpx.Client(
        base_url="https://sandbox-api.openpay.mx",
        auth=None if key is None else (key, ""),
        transport=InProcessTransport(fake.app),
    )


@pytest.fixture
def api(fake: FakeOpenpay) -> Iterator[httpx.Client]:
    with client_for(fake) as client:
        yield client


def ok(response: httpx.Response) -> Any:
    assert response.status_code == 200, response.text
    return wire.loads(response.content)


def assert_error(response: httpx.Response, code: int) -> dict[str, Any]:
    """The response is Openpay's error object for ``code`` with the documented HTTP status."""
    rule = wire.ERRORS[code]
    assert response.status_code == rule.http_status, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert set(body) == {"category", "description", "http_code", "error_code", "request_id"}
    assert (body["error_code"], body["http_code"]) == (code, rule.http_status)
    assert body["category"] in ("request", "gateway", "internal")
    assert len(body["request_id"]) == 36
    return dict(body)


def customer(api: httpx.Client, external: str | None = None) -> str:
    body: dict[str, Any] = {"name": "Juan", "email": "juan@empresa.com.mx"}
    if external is not None:
        body["external_id"] = external
    return str(ok(api.post(f"{V1}/customers", json=body))["id"])


def token(api: httpx.Client, **changes: str) -> str:
    return str(ok(api.post(f"{V1}/tokens", json=CARD | changes))["id"])


def card(api: httpx.Client, customer_id: str, **changes: str) -> str:
    body = {"token_id": token(api, **changes), "device_session_id": "kR1MiQhz2otdIuUl"}
    return str(ok(api.post(f"{V1}/customers/{customer_id}/cards", json=body))["id"])


def charge_body(source: str, order: str | None = None, amount: str = "100.00") -> bytes:
    body: dict[str, Any] = {
        "source_id": source,
        "method": "card",
        "amount": Decimal(amount),
        "currency": "MXN",
        "description": "Cargo inicial a mi cuenta",
        "device_session_id": "kR1MiQhz2otdIuUlQkbEyitIqVMiI16f",
    }
    if order is not None:
        body["order_id"] = order
    return wire.dumps(body)


def charge(
    api: httpx.Client, customer_id: str | None, source: str, order: str | None = None, **kw: str
) -> httpx.Response:
    scope = V1 if customer_id is None else f"{V1}/customers/{customer_id}"
    return api.post(
        f"{scope}/charges",
        content=charge_body(source, order, **kw),
        headers={"content-type": "application/json"},
    )


# -- authentication and the error object -----------------------------------------------------------


def test_every_call_needs_the_private_key_with_an_empty_password(fake: FakeOpenpay) -> None:
    with client_for(fake, None) as anonymous:
        assert_error(anonymous.get(f"{V1}/customers"), 1002)
        for header in (
            "Basic " + base64.b64encode(f"{KEY}:secret".encode()).decode(),
            "Basic " + base64.b64encode(KEY.encode()).decode(),
            "Basic !!!not-base64",
            "Bearer " + KEY,
        ):
            response = anonymous.get(f"{V1}/customers", headers={"authorization": header})
            assert_error(response, 1002)
    with client_for(fake, "sk_other") as wrong:
        assert_error(wrong.get(f"{V1}/customers"), 1002)
    with client_for(fake) as right:
        assert_error(right.get("/v1/mothermerchant000001/customers"), 1002)
        assert right.get(f"{V1}/customers").json() == []


def test_the_public_key_may_only_make_tokens_and_cards(
    fake: FakeOpenpay, api: httpx.Client
) -> None:
    customer_id = customer(api)
    with client_for(fake, PUBLIC) as browser:
        token_id = ok(browser.post(f"{V1}/tokens", json=CARD))["id"]
        assert_error(browser.get(f"{V1}/tokens/{token_id}"), 1010)
        assert_error(browser.post(f"{V1}/customers", json={"name": "x", "email": "x@y.mx"}), 1010)
        body = {"token_id": token_id, "device_session_id": "d"}
        ok(browser.post(f"{V1}/customers/{customer_id}/cards", json=body))


def test_unknown_paths_and_methods_answer_the_error_object(api: httpx.Client) -> None:
    assert_error(api.get(f"{V1}/nothing/here"), 1005)
    assert_error(api.patch(f"{V1}/customers"), 1005)


def test_malformed_bodies_are_1001(api: httpx.Client) -> None:
    headers = {"content-type": "application/json"}
    assert_error(api.post(f"{V1}/customers", content=b"{not json", headers=headers), 1001)
    assert_error(api.post(f"{V1}/customers", content=b"[1, 2]", headers=headers), 1001)
    assert_error(api.post(f"{V1}/customers", content=b"x" * 1_000_001, headers=headers), 1009)


def test_the_documents_curl_example_works_with_the_default_fake() -> None:
    app = fake_app({})
    with httpx.Client(
        base_url="https://sandbox-api.openpay.mx",
        auth=(DEFAULT_PRIVATE_KEY, ""),
        transport=InProcessTransport(app),
    ) as client:
        body = {
            "name": "customer name",
            "email": "customer_email@me.com",
            "requires_account": False,
        }
        created = ok(client.post(f"/v1/{DEFAULT_MERCHANT_ID}/customers", json=body))
        assert created["name"] == "customer name"
        assert "balance" not in created
        assert ok(client.get(f"/v1/{DEFAULT_MERCHANT_ID}"))["id"] == DEFAULT_MERCHANT_ID


def test_fake_app_takes_credentials_from_the_environment() -> None:
    env = {"BILLING_OPENPAY_FAKE_MERCHANT_ID": MERCHANT, "BILLING_OPENPAY_FAKE_PRIVATE_KEY": KEY}
    with httpx.Client(
        base_url="https://x", auth=(KEY, ""), transport=InProcessTransport(fake_app(env))
    ) as client:
        assert client.get(f"{V1}/customers").status_code == 200


# -- customers -------------------------------------------------------------------------------------


def test_customers_crud(api: httpx.Client) -> None:
    body = {
        "name": "Rodrigo",
        "email": "r@payments.com",
        "external_id": "cliente1",
        "phone_number": "44",
    }
    created = ok(api.post(f"{V1}/customers", json=body))
    customer_id = created["id"]
    assert (len(customer_id), customer_id.isalnum(), customer_id.islower()) == (20, True, True)
    assert created["balance"] == Decimal("0.00")
    assert datetime.fromisoformat(created["creation_date"]).utcoffset() == MEXICO.utcoffset(None)
    assert ok(api.get(f"{V1}/customers/{customer_id}")) == created
    updated = ok(api.put(f"{V1}/customers/{customer_id}", json={"name": "Ro", "email": "r@p.mx"}))
    assert (updated["name"], updated["phone_number"]) == ("Ro", "44")
    deleted = api.delete(f"{V1}/customers/{customer_id}")
    assert (deleted.status_code, deleted.content) == (204, b"")
    assert_error(api.get(f"{V1}/customers/{customer_id}"), 1005)
    assert_error(api.delete(f"{V1}/customers/{customer_id}"), 1005)


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"email": "a@b.mx"}, 1001),
        ({"name": "a"}, 1001),
        ({"name": "a", "email": "not-an-email"}, 1003),
        ({"name": "a" * 101, "email": "a@b.mx"}, 1001),
        ({"name": "a", "email": "a@b.mx", "requires_account": "no"}, 1001),
        ({"name": "a", "email": "a@b.mx", "address": {"line1": "x"}}, 1001),
    ],
)
def test_customer_validation(api: httpx.Client, body: dict[str, Any], code: int) -> None:
    assert_error(api.post(f"{V1}/customers", json=body), code)


def test_a_duplicate_external_id_is_2003(api: httpx.Client) -> None:
    customer(api, external="cliente1")
    assert_error(
        api.post(
            f"{V1}/customers", json={"name": "a", "email": "a@b.mx", "external_id": "cliente1"}
        ),
        2003,
    )


def test_lists_are_newest_first_with_offset_limit_and_creation_filters(api: httpx.Client) -> None:
    ids = [customer(api) for _ in range(12)]
    assert [item["id"] for item in ok(api.get(f"{V1}/customers"))] == ids[::-1][:10]
    page = ok(api.get(f"{V1}/customers", params={"offset": "10", "limit": "5"}))
    assert [item["id"] for item in page] == ids[::-1][10:]
    today = datetime.now(MEXICO).date().isoformat()
    assert len(ok(api.get(f"{V1}/customers?creation[gte]={today}&limit=100"))) == 12
    assert len(ok(api.get(f"{V1}/customers?creation%5Blte%5D={today}&limit=100"))) == 12
    assert ok(api.get(f"{V1}/customers", params={"creation": "2014-05-20"})) == []
    for query in ("limit=0", "limit=101", "offset=-1", "creation=yesterday"):
        assert_error(api.get(f"{V1}/customers?{query}"), 1001)


# -- tokens and cards ------------------------------------------------------------------------------


def test_a_token_masks_the_number(api: httpx.Client) -> None:
    created = ok(api.post(f"{V1}/tokens", json=CARD))
    assert created["id"].startswith("tok")
    assert created["card"]["card_number"] == "411111XXXXXX1111"
    assert created["card"]["brand"] == "visa"
    assert ok(api.get(f"{V1}/tokens/{created['id']}")) == created
    assert "4111111111111111" not in api.get(f"{V1}/tokens/{created['id']}").text


@pytest.mark.parametrize(
    ("changes", "code"),
    [
        ({"card_number": "4111111111111112"}, 2004),
        ({"expiration_year": "20"}, 2005),
        ({"expiration_year": "2020"}, 2005),
        ({"cvv2": ""}, 2006),
        ({"card_number": "4111-1111-1111-1111"}, 1001),
        ({"card_number": "411111111111"}, 1001),
        ({"expiration_month": "13"}, 1001),
        ({"expiration_year": "402"}, 1001),
        ({"cvv2": "12"}, 1001),
        ({"holder_name": ""}, 1001),
    ],
)
def test_card_validation(api: httpx.Client, changes: dict[str, str], code: int) -> None:
    assert_error(api.post(f"{V1}/tokens", json=CARD | changes), code)
    assert_error(api.post(f"{V1}/cards", json=CARD | changes), code)


def test_a_missing_cvv2_is_2006(api: httpx.Client) -> None:
    body = {key: value for key, value in CARD.items() if key != "cvv2"}
    assert_error(api.post(f"{V1}/tokens", json=body), 2006)


def test_test_cards_are_refused_in_production() -> None:
    fake = FakeOpenpay(MERCHANT, KEY, sandbox=False)
    with client_for(fake) as api:
        assert_error(api.post(f"{V1}/tokens", json=CARD), 2007)
        ok(api.post(f"{V1}/tokens", json=CARD | {"card_number": "4917484589897107"}))


def test_cards_from_tokens_at_customer_level(api: httpx.Client) -> None:
    customer_id = customer(api)
    token_id = token(api)
    body = {"token_id": token_id, "device_session_id": "8VIoXj0hN5dswYHQ9X1mVCiB72M7FY9o"}
    assert_error(api.post(f"{V1}/customers/{customer_id}/cards", json={"token_id": token_id}), 1001)
    created = ok(api.post(f"{V1}/customers/{customer_id}/cards", json=body))
    assert (created["customer_id"], created["card_number"]) == (customer_id, "411111XXXXXX1111")
    assert created["id"].startswith("k")
    assert_error(api.post(f"{V1}/customers/{customer_id}/cards", json=body), 2002)
    other = customer(api)
    assert_error(api.post(f"{V1}/customers/{other}/cards", json=body), 1003)
    listed = ok(api.get(f"{V1}/customers/{customer_id}/cards"))
    assert [item["id"] for item in listed] == [created["id"]]
    assert ok(api.get(f"{V1}/customers/{customer_id}/cards/{created['id']}")) == created
    assert_error(api.get(f"{V1}/customers/{other}/cards/{created['id']}"), 1005)
    assert api.delete(f"{V1}/customers/{customer_id}/cards/{created['id']}").status_code == 204
    assert_error(api.get(f"{V1}/customers/{customer_id}/cards/{created['id']}"), 1005)
    assert_error(
        api.post(f"{V1}/customers/{customer_id}/cards", json=body | {"token_id": "tokx"}), 1005
    )


def test_cards_from_raw_data_at_merchant_level(api: httpx.Client) -> None:
    created = ok(api.post(f"{V1}/cards", json=CARD))
    assert created["customer_id"] is None
    assert [item["id"] for item in ok(api.get(f"{V1}/cards"))] == [created["id"]]
    amex = ok(
        api.post(f"{V1}/cards", json=CARD | {"card_number": "343434343434343", "cvv2": "1234"})
    )
    assert (amex["brand"], amex["card_number"]) == ("american_express", "343434XXXXX4343")
    assert api.delete(f"{V1}/cards/{created['id']}").status_code == 204


# -- charges ---------------------------------------------------------------------------------------


def test_a_card_charge_answers_the_documented_transaction(api: httpx.Client) -> None:
    customer_id = customer(api)
    card_id = card(api, customer_id)
    created = ok(charge(api, customer_id, card_id, "oid-00051"))
    assert created["id"].startswith("tr")
    assert (created["status"], created["method"], created["transaction_type"]) == (
        "completed",
        "card",
        "charge",
    )
    assert created["amount"] == Decimal("100.00")
    assert b'"amount":100.00' in charge(api, customer_id, card_id, "oid-00052").content
    assert created["card"]["id"] == card_id
    assert (created["order_id"], created["customer_id"]) == ("oid-00051", customer_id)
    assert len(created["authorization"]) == 6
    assert ok(api.get(f"{V1}/customers/{customer_id}/charges/{created['id']}")) == created
    assert ok(api.get(f"{V1}/charges/{created['id']}")) == created
    assert_error(api.get(f"{V1}/customers/{customer(api)}/charges/{created['id']}"), 1005)


def test_order_ids_are_unique_across_all_transactions(api: httpx.Client) -> None:
    first, second = customer(api), customer(api)
    ok(charge(api, first, card(api, first), "oid-1"))
    assert_error(
        charge(api, first, card(api, first, card_number="4242424242424242"), "oid-1"), 1006
    )
    assert_error(charge(api, second, card(api, second), "oid-1"), 1006)
    merchant_card = ok(api.post(f"{V1}/cards", json=CARD))["id"]
    assert_error(charge(api, None, merchant_card, "oid-1"), 1006)
    ok(charge(api, None, merchant_card))
    ok(charge(api, None, merchant_card))


def test_a_decline_is_the_error_object_and_a_failed_transaction(api: httpx.Client) -> None:
    customer_id = customer(api)
    card_id = card(api, customer_id, card_number="4222222222222220")
    body = assert_error(charge(api, customer_id, card_id, "oid-1"), 3001)
    assert (body["category"], body["description"]) == ("gateway", "The card was declined")
    (failed,) = ok(api.get(f"{V1}/customers/{customer_id}/charges"))
    assert (failed["status"], failed["error_message"], failed["order_id"]) == (
        "failed",
        "The card was declined",
        "oid-1",
    )
    assert failed["authorization"] is None
    assert_error(charge(api, customer_id, card_id, "oid-1"), 1006)


@pytest.mark.parametrize(
    ("number", "code"),
    [("4444444444444448", 3003), (STOLEN_CARD, 3004), ("4000000000030124", 3012)],
)
def test_test_cards_decline_with_their_code(api: httpx.Client, number: str, code: int) -> None:
    customer_id = customer(api)
    assert_error(charge(api, customer_id, card(api, customer_id, card_number=number)), code)


def test_rules_decline_the_next_charges_of_a_card(fake: FakeOpenpay, api: httpx.Client) -> None:
    customer_id = customer(api)
    card_id = card(api, customer_id)
    fake.decline_next(card_id=card_id, code=3003, times=2)
    ok(api.post("/_fake/rules", json={"card_number": "4111111111111111", "error_code": 3005}))
    assert_error(charge(api, customer_id, card_id), 3003)
    assert_error(charge(api, customer_id, card_id), 3003)
    assert_error(charge(api, customer_id, card_id), 3005)
    ok(charge(api, customer_id, card_id))
    assert ok(api.delete("/_fake/rules")) == {"rules": 0}
    with pytest.raises(ValueError, match="decline code"):
        fake.decline_next(card_id=card_id, code=1001)
    with pytest.raises(
        ValueError, match="name one card_id, card_number, customer_id or external_id"
    ):
        fake.decline_next(code=3001)
    with pytest.raises(ValueError, match="times"):
        fake.decline_next(code=3001, card_id=card_id, times=0)
    assert api.post("/_fake/rules", json={"error_code": 2004, "card_id": "k"}).status_code == 400


def test_standing_rules_script_a_customer_until_cleared(
    fake: FakeOpenpay, api: httpx.Client
) -> None:
    customer_id = customer(api, external="cus_engine_1")
    other = customer(api)
    assert fake.customer_for("cus_engine_1") == customer_id
    assert fake.customer_for("nobody") is None
    assert fake.latest_charge(customer_id) is None
    body = {"customer_id": customer_id, "error_code": 3004, "count": None}
    assert ok(api.post("/_fake/rules", json=body)) == {"rules": 1}
    mine = card(api, customer_id)
    assert_error(charge(api, customer_id, mine), 3004)
    assert_error(charge(api, customer_id, mine), 3004)
    assert_error(
        charge(api, customer_id, card(api, customer_id, card_number="4242424242424242")), 3004
    )
    theirs = card(api, other)
    ok(charge(api, other, theirs))
    fake.decline_next(customer_id=other, code=3001)
    api.request("DELETE", "/_fake/rules", json={"customer_id": customer_id})
    paid = ok(charge(api, customer_id, mine))
    assert fake.latest_charge(customer_id) == paid["id"]
    assert_error(charge(api, other, theirs), 3001)


def test_approve_rules_override_the_card_and_may_lose_the_answer(
    fake: FakeOpenpay, api: httpx.Client
) -> None:
    customer_id = customer(api, external="cus_engine_1")
    declining = card(api, customer_id, card_number="4444444444444448")
    rule = {"action": "approve", "external_id": "cus_engine_1", "count": 1, "lose": True}
    ok(api.post("/_fake/rules", json=rule))
    fake.approve_next(external_id="cus_engine_1")
    with pytest.raises(httpx.ReadTimeout):
        charge(api, customer_id, declining, "oid-1")
    ok(charge(api, customer_id, declining, "oid-2"))
    assert_error(charge(api, customer_id, declining, "oid-3"), 3003)
    assert fake.charges_taken(customer_id) == 2
    assert api.post("/_fake/rules", json={"action": "maybe", "card_id": "k"}).status_code == 400


def test_lose_rules_commit_then_drop_the_answer(fake: FakeOpenpay, api: httpx.Client) -> None:
    customer_id = customer(api)
    card_id = card(api, customer_id)
    ok(api.post("/_fake/rules", json={"action": "lose", "card_id": card_id, "count": 2}))
    for order in ("oid-1", "oid-2"):
        with pytest.raises(httpx.ReadTimeout):
            charge(api, customer_id, card_id, order)
    assert_error(charge(api, customer_id, card_id, "oid-1"), 1006)
    ok(charge(api, customer_id, card_id, "oid-3"))
    fake.lose_next(card_number=STOLEN_CARD, times=None)
    stolen = card(api, customer_id, card_number=STOLEN_CARD)
    with pytest.raises(httpx.ReadTimeout):
        charge(api, customer_id, stolen, "oid-4")
    assert fake.charge(str(fake.latest_charge(customer_id)))["status"] == "failed"
    assert fake.charges_taken(customer_id) == 3


def test_tokens_and_raw_cards_can_be_charged_once_at_merchant_level(api: httpx.Client) -> None:
    token_id = token(api)
    created = ok(charge(api, None, token_id))
    assert (created["customer_id"], "id" in created["card"]) == (None, False)
    assert_error(charge(api, None, token_id), 1003)
    raw = {
        "method": "card",
        "card": CARD,
        "amount": 10,
        "description": "x",
        "device_session_id": "d",
    }
    assert ok(api.post(f"{V1}/charges", json=raw))["card"]["card_number"] == "411111XXXXXX1111"


@pytest.mark.parametrize(
    ("changes", "code"),
    [
        ({"amount": Decimal("10.505")}, 1003),
        ({"amount": Decimal("0")}, 1003),
        ({"amount": "10.00"}, 1001),
        ({"currency": "EUR"}, 1003),
        ({"method": "store"}, 1003),
        ({"method": "cash"}, 1001),
        ({"capture": False}, 1003),
        ({"description": None}, 1001),
        ({"device_session_id": None}, 1001),
        ({"source_id": None}, 1001),
        ({"source_id": "knosuchcard000000000"}, 1005),
        ({"order_id": "o" * 101}, 1001),
        ({"metadata": ["x"]}, 1001),
    ],
)
def test_charge_validation(api: httpx.Client, changes: dict[str, object], code: int) -> None:
    customer_id = customer(api)
    body = wire.loads(charge_body(card(api, customer_id)))
    assert isinstance(body, dict)
    body.update(changes)
    body = {key: value for key, value in body.items() if value is not None}
    response = api.post(
        f"{V1}/customers/{customer_id}/charges",
        content=wire.dumps(body),
        headers={"content-type": "application/json"},
    )
    assert_error(response, code)


def test_charges_of_an_unknown_customer_are_1005(api: httpx.Client) -> None:
    assert_error(charge(api, "anosuchcustomer00000", "k"), 1005)
    assert_error(api.get(f"{V1}/customers/anosuchcustomer00000/charges"), 1005)


def test_charge_lists_filter_by_amount_and_page(api: httpx.Client) -> None:
    customer_id = customer(api)
    card_id = card(api, customer_id)
    ids = [ok(charge(api, customer_id, card_id, amount=f"{n}.00"))["id"] for n in range(1, 6)]
    listed = ok(api.get(f"{V1}/customers/{customer_id}/charges?amount[gte]=2&amount[lte]=4"))
    assert [item["id"] for item in listed] == ids[3:0:-1]
    assert [item["id"] for item in ok(api.get(f"{V1}/charges?amount=5"))] == [ids[4]]
    assert len(ok(api.get(f"{V1}/charges?limit=2&offset=4"))) == 1
    assert_error(api.get(f"{V1}/charges?amount=lots"), 1001)


# -- refunds ---------------------------------------------------------------------------------------


def test_a_refund_nests_in_the_charge_and_happens_once(api: httpx.Client) -> None:
    customer_id = customer(api)
    paid = ok(charge(api, customer_id, card(api, customer_id), "oid-1"))
    path = f"{V1}/customers/{customer_id}/charges/{paid['id']}/refund"
    refunded = ok(api.post(path, json={"description": "devolución"}))
    assert (refunded["id"], refunded["status"]) == (paid["id"], "completed")
    nested = refunded["refund"]
    assert (nested["transaction_type"], nested["operation_type"], nested["amount"]) == (
        "refund",
        "out",
        Decimal("100.00"),
    )
    assert (nested["order_id"], nested["description"]) == (None, "devolución")
    assert ok(api.get(f"{V1}/charges/{paid['id']}"))["refund"] == nested
    assert_error(api.post(path, json={}), 3006)


def test_refunds_of_declined_or_unknown_charges_are_refused(api: httpx.Client) -> None:
    customer_id = customer(api)
    card_id = card(api, customer_id, card_number="4222222222222220")
    charge(api, customer_id, card_id, "oid-1")
    (failed,) = ok(api.get(f"{V1}/customers/{customer_id}/charges"))
    assert_error(api.post(f"{V1}/charges/{failed['id']}/refund", json={}), 3006)
    assert_error(api.post(f"{V1}/charges/trnosuchcharge000000/refund", json={}), 1005)


def test_a_refund_amount_must_be_the_whole_charge_unless_partial_refunds(
    fake: FakeOpenpay, api: httpx.Client
) -> None:
    customer_id = customer(api)
    paid = ok(charge(api, customer_id, card(api, customer_id)))
    path = f"{V1}/charges/{paid['id']}/refund"
    assert_error(api.post(path, content=b'{"amount": 40.00}'), 1003)
    fake.partial_refunds = True
    assert_error(api.post(path, content=b'{"amount": 400.00}'), 1003)
    assert ok(api.post(path, content=b'{"amount": 40.00}'))["refund"]["amount"] == Decimal("40.00")
    assert fake.charges_taken(customer_id) == 1


# -- webhooks --------------------------------------------------------------------------------------


def order_of(notification: bytes) -> object:
    data = wire.loads(notification)
    assert isinstance(data, dict)
    return data["transaction"]["order_id"]


def webhook(api: httpx.Client, **body: object) -> dict[str, Any]:
    payload: dict[str, object] = {"url": "https://host.example/hooks", "user": "juanito"}
    payload |= {"password": "passjuanito"} | body
    return dict(ok(api.post(f"{V1}/webhooks", json=payload)))


def test_a_webhook_is_verified_by_a_request_to_its_url(
    api: httpx.Client, receiver: Receiver
) -> None:
    created = webhook(api, event_types=["charge.succeeded", "charge.refunded"])
    assert created["status"] == "verified"
    assert "password" not in created
    assert created["id"].startswith("w")
    ((url, headers, body),) = receiver.calls
    assert url == "https://host.example/hooks"
    assert headers["authorization"] == "Basic " + base64.b64encode(b"juanito:passjuanito").decode()
    verification = wire.loads(body)
    assert isinstance(verification, dict)
    assert verification["type"] == "verification"
    assert len(verification["verification_code"]) == 8
    assert ok(api.get(f"{V1}/webhooks/{created['id']}")) == created
    assert ok(api.get(f"{V1}/webhooks")) == [created]
    assert api.delete(f"{V1}/webhooks/{created['id']}").status_code == 204
    assert_error(api.get(f"{V1}/webhooks/{created['id']}"), 1005)


def test_a_url_that_does_not_answer_leaves_the_webhook_unverified_and_silent(
    fake: FakeOpenpay, api: httpx.Client, receiver: Receiver
) -> None:
    receiver.status = 500
    assert webhook(api)["status"] == "unverified"
    customer_id = customer(api)
    ok(charge(api, customer_id, card(api, customer_id)))
    assert receiver.types() == ["verification"]


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"url": "ftp://x"}, 1003),
        ({"event_types": ["charge.maybe"]}, 1003),
        ({"event_types": "x"}, 1001),
    ],
)
def test_webhook_validation(api: httpx.Client, body: dict[str, object], code: int) -> None:
    assert_error(api.post(f"{V1}/webhooks", json={"url": "https://h.example"} | body), code)


def test_charges_and_refunds_are_notified_to_subscribed_webhooks(
    fake: FakeOpenpay, api: httpx.Client, receiver: Receiver
) -> None:
    webhook(api, event_types=["charge.succeeded", "charge.failed", "charge.refunded"])
    webhook(api, url="https://other.example/hooks", event_types=["payout.succeeded"])
    customer_id = customer(api)
    paid = ok(charge(api, customer_id, card(api, customer_id), "oid-1"))
    charge(api, customer_id, card(api, customer_id, card_number=STOLEN_CARD), "oid-2")
    ok(api.post(f"{V1}/charges/{paid['id']}/refund", json={}))
    assert receiver.types() == [
        "verification",
        "verification",
        "charge.succeeded",
        "charge.failed",
        "charge.refunded",
    ]
    succeeded = receiver.calls[2][2]
    assert wire.loads(succeeded)["transaction"]["id"] == paid["id"]  # type: ignore[index]
    headers, body = fake.notification(paid["id"], event_type="charge.succeeded")
    assert headers == {"content-type": "application/json"}
    assert wire.loads(body)["transaction"]["refund"] is not None  # type: ignore[index]
    assert fake.notification(paid["id"])[1] == receiver.calls[4][2], "the same bytes"
    assert [item.event_type for item in fake.deliveries][2:] == receiver.types()[2:]


def test_webhook_faults_duplicate_hold_and_reorder(
    fake: FakeOpenpay, api: httpx.Client, receiver: Receiver
) -> None:
    webhook(api)
    customer_id = customer(api)
    card_id = card(api, customer_id)
    fake.inject(duplicates=1)
    ok(charge(api, customer_id, card_id, "oid-1"))
    assert receiver.calls[1][2] == receiver.calls[2][2]
    ok(api.post("/_fake/webhooks/faults", json={"hold": True}))
    ok(charge(api, customer_id, card_id, "oid-2"))
    ok(charge(api, customer_id, card_id, "oid-3"))
    assert len(receiver.calls) == 3
    assert [type(item) for item in fake.held] == [Delivery, Delivery]
    fake.inject(hold=False)
    assert ok(api.post("/_fake/webhooks/release", json={"reverse": True})) == {"released": 2}
    orders = [order_of(body) for _, _, body in receiver.calls[1:]]
    assert orders == ["oid-1", "oid-1", "oid-3", "oid-2"]
    shown = ok(api.get("/_fake/webhooks/deliveries"))
    assert [item["type"] for item in shown] == ["verification"] + ["charge.succeeded"] * 4
    fake.inject(hold=True)
    ok(charge(api, customer_id, card_id, "oid-4"))
    assert [item.status for item in fake.release_webhooks()] == [200]


def test_notifications_over_real_sockets_reach_a_real_receiver() -> None:
    received: list[tuple[str | None, bytes]] = []

    async def hook(request: Request) -> Response:
        received.append((request.headers.get("authorization"), await request.body()))
        return Response(status_code=200)

    fake = FakeOpenpay(MERCHANT, KEY)
    with (
        serve(Starlette(routes=[Route("/hook", hook, methods=["POST"])])) as receiver_url,
        serve(fake.app) as url,
        httpx.Client(base_url=url, auth=(KEY, "")) as api,
    ):
        assert webhook(api, url=f"{receiver_url}/hook")["status"] == "verified"
        customer_id = customer(api)
        paid = ok(charge(api, customer_id, card(api, customer_id)))
    assert [wire.loads(body)["type"] for _, body in received] == [  # type: ignore[index]
        "verification",
        "charge.succeeded",
    ]
    assert received[1][1] == fake.notification(paid["id"])[1]
    assert received[1][0] == "Basic " + base64.b64encode(b"juanito:passjuanito").decode()


# -- faults ----------------------------------------------------------------------------------------


def test_request_faults_through_the_control_endpoint(fake: FakeOpenpay, api: httpx.Client) -> None:
    ok(api.post("/_fake/faults", json={"server_errors": 1, "html_errors": 1}))
    response = api.get(f"{V1}/customers")
    assert response.status_code == 502
    assert "text/html" in response.headers["content-type"]
    body = assert_error(api.get(f"{V1}/customers"), 1000)
    assert body["category"] == "internal"
    ok(api.get(f"{V1}/customers"))
    ok(api.post("/_fake/faults", json={"dropped_connections": 1}))
    with pytest.raises(httpx.ReadTimeout):
        api.get(f"{V1}/customers")
    assert ok(api.get("/_fake/faults"))["dropped_connections"] == 0
    assert ok(api.get("/_fake/received"))["customers.list"] == 4
    assert api.post("/_fake/faults", json={"nonsense": 1}).status_code == 400
    assert api.post("/_fake/faults", content=b"[]").status_code == 400
    assert api.get("/_fake/nothing").status_code == 404


def test_a_charge_timeout_commits_then_loses_the_answer(
    fake: FakeOpenpay, api: httpx.Client
) -> None:
    customer_id = customer(api)
    card_id = card(api, customer_id)
    fake.inject(charge_timeouts=1)
    with pytest.raises(httpx.ReadTimeout):
        charge(api, customer_id, card_id, "oid-1")
    (kept,) = ok(api.get(f"{V1}/customers/{customer_id}/charges"))
    assert (kept["order_id"], kept["status"]) == ("oid-1", "completed")
    assert fake.received("charges.create") == 1
    fake.inject(charge_timeouts=1)
    assert_error(charge(api, customer_id, card_id, "oid-1"), 1006), "nothing committed: answered"
    assert fake.faults.charge_timeouts == 1


def test_the_repr_shows_no_secrets(fake: FakeOpenpay, api: httpx.Client) -> None:
    customer_id = customer(api)
    card(api, customer_id)
    assert KEY not in repr(fake)
    assert "4111111111111111" not in repr(fake)


# -- a served fake ---------------------------------------------------------------------------------


def test_a_served_fake_sustains_200_concurrent_slow_requests() -> None:
    fake = FakeOpenpay(MERCHANT, KEY)
    fake.inject(latency=2.0)

    async def group(url: str) -> list[int]:
        """Ten concurrent requests on one client (clients, not the fake, are the slow part:
        httpx's pool gets slow past a few dozen connections)."""
        async with httpx.AsyncClient(base_url=url, auth=(KEY, ""), timeout=30.0) as client:
            responses = await asyncio.gather(*(client.get(f"{V1}/customers") for _ in range(10)))
            return [response.status_code for response in responses]

    async def burst(url: str) -> list[int]:
        groups = await asyncio.gather(*(group(url) for _ in range(20)))
        return [status for statuses in groups for status in statuses]

    with serve(fake.app) as url:
        statuses = asyncio.run(burst(url))
    assert statuses == [200] * 200
    # served one at a time, at most one request would be waiting out the latency at once
    assert fake.faults.peak_in_flight >= 150, fake.faults.peak_in_flight
    assert fake.received("customers.list") == 200


def test_a_served_fake_charges_each_order_id_once_under_concurrency() -> None:
    fake = FakeOpenpay(MERCHANT, KEY)
    with serve(fake.app) as url, httpx.Client(base_url=url, auth=(KEY, "")) as api:
        customer_id = customer(api)
        card_id = card(api, customer_id)

        async def race() -> list[int]:
            async with httpx.AsyncClient(base_url=url, auth=(KEY, ""), timeout=30.0) as client:
                body = charge_body(card_id, "oid-race")
                path = f"{V1}/customers/{customer_id}/charges"
                responses = await asyncio.gather(
                    *(client.post(path, content=body) for _ in range(50))
                )
                return sorted(response.status_code for response in responses)

        assert asyncio.run(race()) == [200] + [409] * 49
        fake.inject(charge_timeouts=1)
        with pytest.raises(httpx.RemoteProtocolError):
            charge(api, customer_id, card_id, "oid-lost")
        ok(api.post("/_fake/faults", json={"latency": 0.01}))
        assert ok(api.get("/_fake/faults"))["latency"] == Decimal("0.01")
    assert fake.charges_taken(customer_id) == 2


# -- the simulation --------------------------------------------------------------------------------


@pytest.mark.parametrize("loopback", [False, True])
def test_the_simulation_scripts_customers_by_behavior(loopback: bool) -> None:
    sim = simulation(loopback=loopback)
    try:
        gateway = sim.gateway
        outcomes, requests = {}, {}
        for behavior in ("approve", "decline_soft", "decline_hard", "timeout"):
            reference = gateway.register_customer(CustomerRequest(customer_id=behavior))
            method = gateway.attach_payment_method(
                AttachRequest(
                    customer_id=behavior,
                    customer_reference=reference,
                    token=sim.card_token(behavior, Behavior(behavior)),
                )
            )
            request = ChargeRequest(
                idempotency_key=f"{behavior}-1",
                amount=Money.of("499.90", sim.currency),
                customer_id=behavior,
                payment_method=method.reference,
                description="renewal",
                at=datetime(2026, 3, 2, tzinfo=MEXICO),
                customer_reference=reference,
            )
            requests[behavior] = request
            result = gateway.charge(request)
            outcomes[behavior] = (result.status.value, result.error, sim.charges_taken(behavior))
        assert outcomes == {
            "approve": ("succeeded", None, 1),
            "decline_soft": ("failed", ErrorCode.INSUFFICIENT_FUNDS, 0),
            "decline_hard": ("failed", ErrorCode.LOST_OR_STOLEN, 0),
            "timeout": ("unknown", ErrorCode.GATEWAY_TIMEOUT, 1),
        }
        genuine = gateway.parse_notification(sim.notification("timeout"))
        forged = gateway.parse_notification(sim.forged_notification("decline_soft"))
        assert (genuine.kind, genuine.idempotency_key) == ("charge.succeeded", "timeout-1")
        assert (forged.kind, forged.idempotency_key) == ("charge.succeeded", "decline_soft-1")
        sim.script("decline_soft", Behavior.APPROVE)
        again = replace(requests["decline_soft"], idempotency_key="decline_soft-2")
        assert gateway.charge(again).status.value == "succeeded"
        assert sim.charges_taken("decline_soft") == 1
        with pytest.raises(GatewayAuthenticationFailed):
            sim.with_bad_credentials().register_customer(CustomerRequest(customer_id="x"))
        with pytest.raises(InvalidArgument):
            sim.card_token("late", Behavior.PAY_LATE)
        with pytest.raises(InvalidArgument):
            sim.fill_enrollment("c", "https://x", Behavior.APPROVE)
        with pytest.raises(LookupError):
            sim.notification("nobody")
        assert sim.charges_taken("nobody") == 0
    finally:
        sim.close()
