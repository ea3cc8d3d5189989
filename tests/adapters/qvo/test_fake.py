"""FakeQvo's fidelity to QVO's document: authentication, error bodies and statuses, objects,
pagination and filters, the hosted inscription page, events, webhooks with faults, faults,
control endpoints, and a served fake under 200 concurrent slow requests."""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from adapters.qvo import FakeQvo, create_app, fake_app
from adapters.qvo._wire import APPROVING_CARD, DOCUMENT_TOKEN, REJECTING_CARD
from adapters.qvo.fake import new_id
from billing.testing.asgi import InProcessTransport, serve

TOKEN = "fake-qvo-token"
BASE = "https://playground.qvo.cl"
RETURN_URL = "https://shop.example/back"
ID = r"[A-Za-z0-9_-]{22}"
DATETIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
CUSTOMER_KEYS = {
    "id",
    "default_payment_method",
    "name",
    "email",
    "phone",
    "metadata",
    "address",
    "credits",
    "created_at",
    "updated_at",
    "subscriptions",
    "cards",
    "transactions",
}
TRANSACTION_KEYS = {
    "id",
    "created_at",
    "updated_at",
    "amount",
    "currency",
    "description",
    "gateway",
    "credits",
    "status",
    "customer",
    "payment",
    "refund",
    "transable",
    "gateway_response",
}


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 2, 1, 12, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def fake(clock: Clock) -> FakeQvo:
    return FakeQvo(TOKEN, clock=clock)


@pytest.fixture
def api(fake: FakeQvo) -> Iterator[httpx.Client]:
    """A client of the fake's API with the right token."""
    transport = InProcessTransport(fake.app)
    headers = {"Authorization": f"Bearer {TOKEN}"}
    with httpx.Client(base_url=BASE, transport=transport, headers=headers) as client:
        yield client


def error(response: httpx.Response) -> dict[str, Any]:
    body = response.json()
    assert set(body) == {"error"}
    assert set(body["error"]) <= {"type", "message", "param"}
    return dict(body["error"])


def customer(api: httpx.Client, email: str = "jon@thewatch.org", **fields: Any) -> dict[str, Any]:
    response = api.post("/customers", json={"email": email, **fields})
    assert response.status_code == 201
    return dict(response.json())


def inscription(api: httpx.Client, customer_id: str, return_url: str = RETURN_URL) -> Any:
    response = api.post(
        f"/customers/{customer_id}/cards/inscriptions", json={"return_url": return_url}
    )
    assert response.status_code == 201
    return response.json()


def card(api: httpx.Client, customer_id: str, **form: str) -> str:
    """Enroll the approvable test card through the hosted page; the card's id."""
    started = inscription(api, customer_id)
    page = api.post(started["redirect_url"], data={"card_number": APPROVING_CARD, **form})
    assert page.status_code == 302
    done = api.get(f"/customers/{customer_id}/cards/inscriptions/{started['inscription_uid']}")
    return str(done.json()["card"]["id"])


def charge(api: httpx.Client, customer_id: str, card_id: str, amount: Any = 3000) -> httpx.Response:
    return api.post(
        f"/customers/{customer_id}/cards/{card_id}/charge",
        json={"amount": amount, "description": "For the watch"},
    )


@pytest.fixture
def payer(api: httpx.Client) -> tuple[str, str]:
    customer_id = customer(api)["id"]
    return customer_id, card(api, customer_id)


# -- authentication and errors ------------------------------------------------------------------


@pytest.mark.parametrize(
    "authorization",
    [None, f"Bearer: {TOKEN}", f"bearer {TOKEN}", f"Bearer  {TOKEN}", f"Token {TOKEN}", "Bearer x"],
)
def test_anything_but_the_exact_bearer_token_is_401(
    fake: FakeQvo, authorization: str | None
) -> None:
    headers = {"Authorization": authorization} if authorization else {}
    with httpx.Client(transport=InProcessTransport(fake.app)) as client:
        response = client.get(f"{BASE}/customers", headers=headers)
    assert response.status_code == 401
    assert error(response)["type"] == "authentication_error"
    assert TOKEN not in response.text


def test_the_exact_bearer_token_is_accepted(api: httpx.Client) -> None:
    response = api.get("/customers")
    assert (response.status_code, response.json()) == (200, [])


def test_a_format_other_than_json_is_406(api: httpx.Client) -> None:
    response = api.get("/customers", headers={"Accept": "text/html"})
    assert response.status_code == 406
    assert error(response)["type"] == "invalid_request_error"


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("GET", "/plans", 404),
        ("POST", "/webpay_plus/charge", 404),
        ("DELETE", "/transactions", 405),
    ],
)
def test_unknown_routes_and_methods_answer_qvos_error_body(
    api: httpx.Client, method: str, path: str, status: int
) -> None:
    response = api.request(method, path)
    assert response.status_code == status
    assert error(response)["type"] == "invalid_request_error"


def test_ids_look_like_qvos() -> None:
    for prefix in ("cus", "woc", "woi", "trx", "evt"):
        assert re.fullmatch(rf"{prefix}_{ID}", new_id(prefix))


# -- customers ----------------------------------------------------------------------------------


def test_a_created_customer_has_the_documents_shape(api: httpx.Client) -> None:
    created = customer(api, phone="+56987654321", metadata={"role": "Lord Commander"})
    assert set(created) == CUSTOMER_KEYS
    assert re.fullmatch(rf"cus_{ID}", created["id"])
    assert (created["credits"], created["subscriptions"], created["cards"]) == (0, [], [])
    assert created["default_payment_method"] is None
    assert created["metadata"] == {"role": "Lord Commander"}
    assert DATETIME.match(created["created_at"])


def test_email_is_required_as_in_the_documents_error_example(api: httpx.Client) -> None:
    response = api.post("/customers", json={"name": "Tyrion Lannister"})
    assert response.status_code == 400
    assert error(response) == {
        "type": "invalid_request_error",
        "message": "email parameter required",
        "param": "email",
    }


def test_email_is_unique(api: httpx.Client) -> None:
    customer(api, "theimp@lannistercorp.gov")
    response = api.post("/customers", json={"email": "TheImp@lannistercorp.gov"})
    assert response.status_code == 400
    assert error(response)["param"] == "email"


def test_form_and_query_string_parameters_are_accepted(api: httpx.Client) -> None:
    form = api.post(
        "/customers", data={"email": "a@b.cl", "name": "Ana", "metadata[role]": "admin"}
    )
    assert form.status_code == 201
    assert form.json()["metadata"] == {"role": "admin"}
    query = api.post("/customers", params={"email": "c@d.cl", "phone": "+56911111111"})
    assert query.status_code == 201
    assert query.json()["phone"] == "+56911111111"


def test_a_customer_is_read_updated_and_deleted_with_events(
    api: httpx.Client, fake: FakeQvo
) -> None:
    created = customer(api, name="Arya Stark")
    path = f"/customers/{created['id']}"
    assert api.get(path).json() == created
    updated = api.put(path, json={"nombre": "No One", "phone": "+56900000000"}).json()
    assert (updated["name"], updated["phone"], updated["email"]) == (
        "No One",
        "+56900000000",
        created["email"],
    )
    assert api.delete(path).status_code == 204
    assert api.get(path).status_code == 404
    events = fake.events()
    assert [e["type"] for e in events] == [
        "customer.created",
        "customer.updated",
        "customer.deleted",
    ]
    assert events[1]["previous"]["customer"]["name"] == "Arya Stark"
    assert events[1]["data"]["customer"]["name"] == "No One"


def test_the_default_payment_method_must_be_the_customers_card(api: httpx.Client) -> None:
    created = customer(api)
    response = api.put(f"/customers/{created['id']}", json={"default_payment_method_id": "woc_x"})
    assert response.status_code == 400
    assert error(response)["param"] == "default_payment_method_id"


# -- lists --------------------------------------------------------------------------------------


def test_lists_paginate_newest_first_with_headers(api: httpx.Client, clock: Clock) -> None:
    for number in range(25):
        customer(api, f"c{number:02d}@example.cl")
        clock.now += timedelta(seconds=1)
    first = api.get("/customers", params={"page": 1, "per_page": 10})
    assert [c["email"] for c in first.json()][:2] == ["c24@example.cl", "c23@example.cl"]
    assert (first.headers["X-Page"], first.headers["X-Per-Page"], first.headers["X-Total"]) == (
        "1",
        "10",
        "25",
    )
    assert len(api.get("/customers", params={"page": 3, "per_page": 10}).json()) == 5
    assert api.get("/customers", params={"page": 4, "per_page": 10}).json() == []
    oldest = api.get("/customers", params={"order_by": "created_at ASC"}).json()
    assert oldest[0]["email"] == "c00@example.cl"
    assert len(oldest) == 20  # the default per_page
    assert api.get("/customers", params={"per_page": 500}).headers["X-Per-Page"] == "100"


@pytest.mark.parametrize(
    "params",
    [{"page": 0}, {"per_page": "ten"}, {"order_by": "created_at"}, {"order_by": "cards ASC"},
     {"where": "{not json"}, {"where": '{"customer": {"=": 1}}'}, {"where": '{"amount": 5}'},
     {"where": '{"amount": {"~": 5}}'}, {"where": '["amount"]'}],
)  # fmt: skip
def test_bad_list_parameters_are_400(api: httpx.Client, params: dict[str, Any]) -> None:
    response = api.get("/transactions", params=params)
    assert response.status_code == 400
    assert error(response)["param"] in ("page", "per_page", "order_by", "where")


def test_where_filters_with_every_operator(
    api: httpx.Client, fake: FakeQvo, payer: tuple[str, str]
) -> None:
    customer_id, card_id = payer
    for amount in (500, 1000, 3000, 7999, 8000):
        charge(api, customer_id, card_id, amount)
    fake.rules.decline_next(card_id)
    charge(api, customer_id, card_id, 2000)

    def amounts(where: dict[str, Any], **params: Any) -> list[int]:
        found = api.get("/transactions", params={"where": json.dumps(where), **params})
        assert found.status_code == 200
        return [t["amount"] for t in found.json()]

    documented = {"amount": {">=": 1000, "<": 8000}, "status": {"=": "successful"}}
    assert amounts(documented) == [7999, 3000, 1000]
    assert amounts({"amount": {">": 2000}}, order_by="amount ASC") == [3000, 7999, 8000]
    assert amounts({"amount": {"<=": 1000}}) == [1000, 500]
    assert amounts({"status": {"!": "successful"}}) == [2000]
    assert amounts({"description": {"like": "For%watch"}, "amount": {"=": 500}}) == [500]
    assert amounts({"description": {"like": "for%"}}) == []  # LIKE is case-sensitive
    assert amounts({"description": {"like": "For the watc_"}, "amount": {"=": "3000"}}) == [3000]


# -- inscriptions and the hosted page -----------------------------------------------------------


def test_an_inscription_starts_with_the_documents_three_fields(
    api: httpx.Client, clock: Clock
) -> None:
    started = inscription(api, customer(api)["id"])
    assert set(started) == {"inscription_uid", "redirect_url", "expiration_date"}
    assert re.fullmatch(rf"woi_{ID}", started["inscription_uid"])
    assert started["redirect_url"] == (
        f"{BASE}/webpay_oneclick/init_inscription/{started['inscription_uid']}"
    )
    assert started["expiration_date"] == "2026-02-01T12:10:00.000Z"


def test_an_inscription_needs_a_return_url(api: httpx.Client) -> None:
    response = api.post(f"/customers/{customer(api)['id']}/cards/inscriptions", json={})
    assert response.status_code == 400
    assert error(response)["param"] == "return_url"


def test_the_hosted_page_enrolls_the_test_card_and_sends_the_customer_back(
    api: httpx.Client, fake: FakeQvo
) -> None:
    customer_id = customer(api)["id"]
    started = inscription(api, customer_id)
    uid = started["inscription_uid"]
    page = api.get(started["redirect_url"], headers={"Authorization": ""})
    assert page.status_code == 200
    assert 'name="card_number"' in page.text
    waiting = api.get(f"/customers/{customer_id}/cards/inscriptions/{uid}").json()
    assert waiting["status"] == "waiting_response"
    back = api.post(started["redirect_url"], data={"card_number": APPROVING_CARD})
    assert (back.status_code, back.headers["location"]) == (302, f"{RETURN_URL}?uid={uid}")
    done = api.get(f"/customers/{customer_id}/cards/inscriptions/{uid}").json()
    assert (done["uid"], done["status"]) == (uid, "succeeded")
    assert {k: done["card"][k] for k in ("last_4_digits", "card_type", "payment_type")} == {
        "last_4_digits": "6623",
        "card_type": "Visa",
        "payment_type": "CD",
    }
    assert (
        api.get(f"/customers/{customer_id}").json()["default_payment_method"]["id"]
        == (done["card"]["id"])
    )
    assert fake.events()[-1]["type"] == "customer.card.created"
    assert api.get(started["redirect_url"]).status_code == 404  # the page is used up


@pytest.mark.parametrize(
    "form",
    [{"card_number": REJECTING_CARD}, {"card_number": APPROVING_CARD, "decision": "reject"},
     {"card_number": "4111 1111 1111 1111"}],
)  # fmt: skip
def test_the_test_bank_refuses_cards(api: httpx.Client, form: dict[str, str]) -> None:
    customer_id = customer(api)["id"]
    started = inscription(api, customer_id, "https://shop.example/back?from=qvo")
    back = api.post(started["redirect_url"], data=form)
    assert back.headers["location"].endswith(f"?from=qvo&uid={started['inscription_uid']}")
    done = api.get(f"/customers/{customer_id}/cards/inscriptions/{started['inscription_uid']}")
    assert done.json()["status"] == "failed"
    assert done.json()["error"]["message"]
    assert "card" not in done.json()


def test_an_inscription_expires_after_ten_minutes(api: httpx.Client, clock: Clock) -> None:
    customer_id = customer(api)["id"]
    started = inscription(api, customer_id)
    clock.now += timedelta(minutes=11)
    api.post(started["redirect_url"], data={"card_number": APPROVING_CARD})
    done = api.get(f"/customers/{customer_id}/cards/inscriptions/{started['inscription_uid']}")
    assert (done.json()["status"], done.json()["error"]["message"]) == (
        "failed",
        "the inscription expired",
    )


def test_an_inscription_belongs_to_its_customer(api: httpx.Client) -> None:
    started = inscription(api, customer(api)["id"])
    other = customer(api, "other@example.cl")["id"]
    response = api.get(f"/customers/{other}/cards/inscriptions/{started['inscription_uid']}")
    assert response.status_code == 404


# -- cards --------------------------------------------------------------------------------------


def test_cards_are_listed_read_and_deleted(api: httpx.Client, fake: FakeQvo) -> None:
    customer_id = customer(api)["id"]
    first, second = card(api, customer_id), card(api, customer_id, payment_type="debit")
    listed = api.get(f"/customers/{customer_id}/cards")
    assert [c["id"] for c in listed.json()] == [second, first]
    assert listed.headers["X-Total"] == "2"
    assert api.get(f"/customers/{customer_id}/cards/{second}").json()["payment_type"] == "DB"
    assert api.delete(f"/customers/{customer_id}/cards/{first}").status_code == 204
    assert api.get(f"/customers/{customer_id}/cards/{first}").status_code == 404
    default = api.get(f"/customers/{customer_id}").json()["default_payment_method"]
    assert default["id"] == second
    assert fake.events()[-1]["type"] == "customer.card.deleted"


# -- charges ------------------------------------------------------------------------------------


def test_a_charge_answers_the_documents_transaction(
    api: httpx.Client, payer: tuple[str, str]
) -> None:
    response = charge(api, *payer)
    assert response.status_code == 201
    body = response.json()
    assert set(body) == TRANSACTION_KEYS
    assert re.fullmatch(rf"trx_{ID}", body["id"])
    assert (body["amount"], body["currency"], body["gateway"], body["status"]) == (
        3000,
        "CLP",
        "webpay_oneclick",
        "successful",
    )
    assert body["payment"]["fee"] == 106  # the document's example: 106 on 3000
    assert body["payment"]["payment_method"]["id"] == payer[1]
    assert body["gateway_response"] == {"status": "success", "message": "successful transaction"}


def test_a_charge_without_amount_is_the_documents_error(
    api: httpx.Client, payer: tuple[str, str]
) -> None:
    response = api.post(f"/customers/{payer[0]}/cards/{payer[1]}/charge", json={})
    assert response.status_code == 400
    assert response.json() == {
        "error": {
            "type": "invalid_request_error",
            "message": "amount parameter required",
            "param": "amount",
        }
    }


@pytest.mark.parametrize("amount", ["3000.5", 0, -5, True, "abc"])
def test_amounts_are_positive_integers(
    api: httpx.Client, payer: tuple[str, str], amount: object
) -> None:
    assert charge(api, *payer, amount=amount).status_code == 400


def test_a_form_charge_with_a_string_amount(api: httpx.Client, payer: tuple[str, str]) -> None:
    response = api.post(f"/customers/{payer[0]}/cards/{payer[1]}/charge", data={"amount": "3000"})
    assert (response.status_code, response.json()["amount"]) == (201, 3000)


def test_a_declined_charge_is_a_422_and_leaves_a_rejected_transaction(
    api: httpx.Client, fake: FakeQvo, payer: tuple[str, str]
) -> None:
    fake.rules.decline_next(payer[1], 2, "insufficient_funds")
    response = charge(api, *payer)
    assert response.status_code == 422
    assert error(response) == {
        "type": "invalid_request_error",
        "message": "rejected: insufficient funds",
    }
    charge(api, *payer)
    assert api.get(f"/customers/{payer[0]}/cards/{payer[1]}").json()["failure_count"] == 2
    assert charge(api, *payer).status_code == 201
    assert api.get(f"/customers/{payer[0]}/cards/{payer[1]}").json()["failure_count"] == 0
    statuses = [t["status"] for t in api.get("/transactions").json()]
    assert statuses == ["successful", "rejected", "rejected"]
    types = [e["type"] for e in fake.events() if e["type"].startswith("transaction.")]
    assert types == ["transaction.payment_failed"] * 2 + ["transaction.payment_succeeded"]


def test_a_decline_can_be_answered_as_the_transaction(
    api: httpx.Client, fake: FakeQvo, payer: tuple[str, str]
) -> None:
    fake.decline_as = "transaction"
    fake.rules.always(payer[1], "unable_to_charge")
    response = charge(api, *payer)
    assert (response.status_code, response.json()["status"]) == (201, "unable_to_charge")
    assert response.json()["payment"] is None


def test_charges_need_the_customers_own_card(api: httpx.Client, payer: tuple[str, str]) -> None:
    other = customer(api, "other@example.cl")["id"]
    assert error(charge(api, other, payer[1]))["param"] == "card_id"
    assert error(charge(api, "cus_unknown", payer[1]))["param"] == "customer_id"


def test_a_waiting_transaction_times_out_after_twenty_minutes(
    api: httpx.Client, fake: FakeQvo, payer: tuple[str, str], clock: Clock
) -> None:
    fake.rules.queue(payer[1], "waiting_response")
    waiting = charge(api, *payer).json()
    assert waiting["status"] == "waiting_response"
    clock.now += timedelta(minutes=19)
    assert api.get(f"/transactions/{waiting['id']}").json()["status"] == "waiting_response"
    clock.now += timedelta(minutes=2)
    assert api.get(f"/transactions/{waiting['id']}").json()["status"] == "response_timeout"
    assert fake.events()[-1]["type"] == "transaction.response_timeout"


# -- refunds and events -------------------------------------------------------------------------


def test_a_refund_is_full_and_happens_once(
    api: httpx.Client, fake: FakeQvo, payer: tuple[str, str]
) -> None:
    paid = charge(api, *payer).json()
    refunded = api.post(f"/transactions/{paid['id']}/refund", json={"amount": 1000})
    assert refunded.status_code == 200
    assert refunded.json()["status"] == "refunded"
    assert refunded.json()["refund"] == {"amount": 3000, "created_at": "2026-02-01T12:00:00.000Z"}
    event = fake.events()[-1]
    assert event["type"] == "transaction.refunded"
    assert event["previous"]["transaction"]["status"] == "successful"
    assert api.post(f"/transactions/{paid['id']}/refund").status_code == 400


def test_debit_payments_cannot_be_refunded(api: httpx.Client) -> None:
    customer_id = customer(api)["id"]
    paid = charge(api, customer_id, card(api, customer_id, payment_type="debit")).json()
    assert paid["payment"]["payment_type"] == "debit"
    response = api.post(f"/transactions/{paid['id']}/refund")
    assert response.status_code == 400
    assert "credit" in error(response)["message"]


def test_events_are_listed_newest_first_and_read_by_id(
    api: httpx.Client, payer: tuple[str, str]
) -> None:
    charge(api, *payer)
    events = api.get("/events").json()
    assert [e["type"] for e in events] == [
        "transaction.payment_succeeded",
        "customer.card.created",
        "customer.created",
    ]
    assert {"id", "type", "data", "previous", "created_at"} == set(events[0])
    assert api.get(f"/events/{events[1]['id']}").json() == events[1]
    assert api.get("/events/evt_unknown").status_code == 404
    only = api.get("/events", params={"where": json.dumps({"type": {"like": "customer.%"}})})
    assert only.headers["X-Total"] == "2"


# -- faults -------------------------------------------------------------------------------------


def test_a_server_error_does_nothing(api: httpx.Client, fake: FakeQvo) -> None:
    fake.set_faults(server_errors=1)
    response = api.post("/customers", json={"email": "a@b.cl"})
    assert response.status_code == 500
    assert error(response)["type"] == "api_error"
    assert api.get("/customers").json() == []


def test_an_html_error_page_does_nothing(api: httpx.Client, fake: FakeQvo) -> None:
    fake.set_faults(html_errors=1)
    response = api.post("/customers", json={"email": "a@b.cl"})
    assert response.status_code == 502
    assert response.headers["content-type"].startswith("text/html")
    assert api.get("/customers").json() == []


def test_a_dropped_connection_does_nothing(api: httpx.Client, fake: FakeQvo) -> None:
    fake.set_faults(dropped_connections=1)
    with pytest.raises(httpx.ReadTimeout):
        api.post("/customers", json={"email": "a@b.cl"})
    assert api.get("/customers").json() == []


def test_a_charge_timeout_commits_then_loses_the_answer(
    api: httpx.Client, fake: FakeQvo, payer: tuple[str, str]
) -> None:
    fake.set_faults(charge_timeouts=1)
    with pytest.raises(httpx.ReadTimeout):
        charge(api, *payer)
    assert [t["status"] for t in fake.transactions()] == ["successful"]
    assert fake.requests("charge") == 1


def test_latency_slows_the_api_but_not_the_levers(api: httpx.Client, fake: FakeQvo) -> None:
    fake.set_faults(latency=0.2)
    started = time.monotonic()
    api.get("/customers")
    assert time.monotonic() - started >= 0.2
    started = time.monotonic()
    api.get("/_fake/faults")
    assert time.monotonic() - started < 0.2


def test_an_unknown_fault_is_refused(fake: FakeQvo) -> None:
    with pytest.raises(ValueError, match="unknown fault"):
        fake.set_faults(meteor=1)


# -- control endpoints --------------------------------------------------------------------------


def test_faults_and_rules_are_driven_over_http(
    api: httpx.Client, fake: FakeQvo, payer: tuple[str, str]
) -> None:
    assert api.post("/_fake/faults", json={"server_errors": 1}).json()["server_errors"] == 1
    assert api.get("/customers").status_code == 500
    assert api.get("/_fake/faults").json()["server_errors"] == 0
    assert api.post("/_fake/faults", json={"meteor": 1}).status_code == 400
    rule = {"card_id": payer[1], "outcome": "rejected", "times": 1}
    assert api.post("/_fake/rules", json=rule).status_code == 200
    assert [charge(api, *payer).status_code for _ in range(2)] == [422, 201]
    assert api.post("/_fake/rules", json={**rule, "times": None}).status_code == 200
    assert charge(api, *payer).status_code == 422
    assert api.delete("/_fake/rules").status_code == 204
    assert charge(api, *payer).status_code == 201
    assert api.post("/_fake/rules", json={**rule, "outcome": "meteor"}).status_code == 400
    assert api.get("/_fake/requests").json()["charge"] == 4


def test_a_waiting_transaction_is_settled_over_http(
    api: httpx.Client, fake: FakeQvo, payer: tuple[str, str]
) -> None:
    fake.rules.queue(payer[1], "waiting_response")
    waiting = charge(api, *payer).json()
    settled = api.post(f"/_fake/transactions/{waiting['id']}/settle", json={"status": "rejected"})
    assert settled.json()["status"] == "rejected"
    assert fake.events()[-1]["type"] == "transaction.payment_failed"
    again = api.post(f"/_fake/transactions/{waiting['id']}/settle", json={"status": "successful"})
    assert again.status_code == 400


# -- webhooks -----------------------------------------------------------------------------------


class Receiver:
    """A merchant's webhook endpoint: records the events, answers the statuses it is given."""

    def __init__(self, *statuses: int) -> None:
        self.statuses = list(statuses)
        self.received: list[dict[str, Any]] = []

        async def hook(request: Request) -> Response:
            self.received.append(json.loads(await request.body()))
            return Response(status_code=self.statuses.pop(0) if self.statuses else 200)

        self.app = Starlette(routes=[Route("/hooks", hook, methods=["POST"])])

    def types(self) -> list[str]:
        return [event["type"] for event in self.received]


HOOK_URL = "https://merchant.example/hooks"


def deliver(fake: FakeQvo, receiver: Receiver) -> list[str]:
    transport = InProcessTransport(receiver.app)
    try:
        return [d.event_id for d in fake.deliver_webhooks(HOOK_URL, transport=transport)]
    finally:
        transport.close()


def test_webhooks_post_each_event_once_acknowledged(
    api: httpx.Client, fake: FakeQvo, payer: tuple[str, str]
) -> None:
    charge(api, *payer)
    receiver = Receiver()
    delivered = deliver(fake, receiver)
    assert delivered == [event["id"] for event in fake.events()]
    assert receiver.types() == [
        "customer.created",
        "customer.card.created",
        "transaction.payment_succeeded",
    ]
    assert receiver.received == fake.events()
    assert deliver(fake, receiver) == []


def test_only_an_exact_200_acknowledges_a_webhook(api: httpx.Client, fake: FakeQvo) -> None:
    customer(api)
    receiver = Receiver(201, 500)
    deliver(fake, receiver)
    deliver(fake, receiver)
    deliver(fake, receiver)
    assert receiver.types() == ["customer.created"] * 3
    assert deliver(fake, receiver) == []


def test_webhook_faults_duplicate_delay_and_reorder(api: httpx.Client, fake: FakeQvo) -> None:
    receiver = Receiver()
    fake.webhook_faults.duplicates = 1
    customer(api, "one@example.cl")
    deliver(fake, receiver)
    assert receiver.types() == ["customer.created", "customer.created"]  # delivered twice
    fake.webhook_faults.hold = 1
    held = customer(api, "two@example.cl")
    customer(api, "three@example.cl")
    deliver(fake, receiver)
    fake.release_webhooks()
    deliver(fake, receiver)
    emails = [event["data"]["customer"]["email"] for event in receiver.received[2:]]
    assert emails == ["three@example.cl", held["email"]]  # the held one came late
    fake.webhook_faults.out_of_order = True
    customer(api, "four@example.cl")
    customer(api, "five@example.cl")
    deliver(fake, receiver)
    emails = [event["data"]["customer"]["email"] for event in receiver.received[4:]]
    assert emails == ["five@example.cl", "four@example.cl"]


def test_webhooks_stop_after_seven_days(api: httpx.Client, fake: FakeQvo, clock: Clock) -> None:
    customer(api)
    clock.now += timedelta(days=7, seconds=1)
    assert deliver(fake, Receiver()) == []


def test_webhooks_over_sockets_through_the_control_endpoints() -> None:
    fake, receiver = FakeQvo(TOKEN), Receiver()
    with serve(fake.app) as url, serve(receiver.app) as hooks, httpx.Client(base_url=url) as api:
        created = api.post(
            "/customers", json={"email": "a@b.cl"}, headers={"Authorization": f"Bearer {TOKEN}"}
        )
        assert created.status_code == 201
        assert api.post("/_fake/webhooks", json={"url": f"{hooks}/hooks"}).status_code == 200
        assert api.post("/_fake/webhooks/faults", json={"duplicates": 1}).status_code == 200
        deliveries = api.post("/_fake/webhooks/deliver").json()
        assert api.post("/_fake/webhooks/release").status_code == 200
    assert [d["status"] for d in deliveries] == [200, 200]
    assert receiver.types() == ["customer.created", "customer.created"]


# -- served over sockets ------------------------------------------------------------------------


def test_a_served_fake_sustains_200_concurrent_slow_requests(fake: FakeQvo) -> None:
    fake.set_faults(latency=2.0)

    async def burst(url: str) -> list[int]:
        limits = httpx.Limits(max_connections=250, max_keepalive_connections=250)
        headers = {"Authorization": f"Bearer {TOKEN}"}
        async with httpx.AsyncClient(base_url=url, limits=limits, headers=headers) as client:
            answers = await asyncio.gather(
                *(client.post("/customers", json={"email": f"c{n}@e.cl"}) for n in range(200))
            )
        return [answer.status_code for answer in answers]

    with serve(fake.app) as url:
        statuses = asyncio.run(burst(url))
    assert statuses == [201] * 200
    # served one at a time, at most one request would be waiting out the latency at once
    assert fake.faults.peak_in_flight >= 150, fake.faults.peak_in_flight
    assert len({c["id"] for c in fake.events()}) == 200


def test_a_charge_timeout_over_sockets_breaks_the_answer_off(fake: FakeQvo) -> None:
    headers = {"Authorization": f"Bearer {TOKEN}"}
    with serve(fake.app) as url, httpx.Client(base_url=url, headers=headers) as api:
        customer_id = customer(api)["id"]
        card_id = card(api, customer_id)
        fake.set_faults(charge_timeouts=1)
        with pytest.raises(httpx.RemoteProtocolError):
            charge(api, customer_id, card_id)
    assert [t["status"] for t in fake.transactions()] == ["successful"]


def test_the_default_fake_accepts_the_documents_token_or_the_configured_one() -> None:
    for app, token in (
        (fake_app({}), DOCUMENT_TOKEN),
        (fake_app({"BILLING_QVO_FAKE_TOKEN": "t"}), "t"),
    ):
        with httpx.Client(transport=InProcessTransport(app), base_url=BASE) as client:
            assert client.get("/customers", headers={"Authorization": f"Bearer {token}"}).is_success
            assert (
                client.get("/customers", headers={"Authorization": "Bearer x"}).status_code == 401
            )
    assert create_app(FakeQvo(TOKEN)).routes
