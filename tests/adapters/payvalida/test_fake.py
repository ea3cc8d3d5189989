"""FakePayvalida over raw HTTP: what it enforces, its levers and its books."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
import pytest

from adapters.payvalida import FakePayvalida, fake_app
from adapters.payvalida import _wire as wire
from adapters.payvalida.fake import DEFAULT_FIXED_HASH, DEFAULT_MERCHANT
from billing.testing.asgi import InProcessTransport, mounted, serve

MERCHANT = "testmerchant"
SECRET = "test_fixed_hash_0123456789"
NOTE_SECRET = "test_notification_hash_42"
AT = datetime(2026, 2, 1, 12, tzinfo=UTC)


class Clock:
    def __init__(self, now: datetime = AT) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


class Inbox:
    """A notify URL: records every POST and answers 200."""

    def __init__(self) -> None:
        self.received: list[tuple[str, bytes]] = []

    def __call__(self, url: str, headers: Mapping[str, str], body: bytes) -> int:
        self.received.append((url, body))
        return 200

    def bodies(self) -> list[dict[str, Any]]:
        return [json.loads(body) for _, body in self.received]


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def inbox() -> Inbox:
    return Inbox()


@pytest.fixture
def fake(clock: Clock, inbox: Inbox) -> FakePayvalida:
    return FakePayvalida(
        MERCHANT,
        SECRET,
        notification_hash=NOTE_SECRET,
        notify_url="https://merchant.example.com/payvalida",
        deliver=inbox,
        now=clock,
        seed=1,
    )


@pytest.fixture
def client(fake: FakePayvalida) -> Iterator[httpx.Client]:
    with httpx.Client(
        base_url="https://api-test.payvalida.com", transport=InProcessTransport(fake.app)
    ) as client:
        yield client


def order(
    number: str = "ord1",
    *,
    amount: str = "9500",
    expires: date = date(2026, 2, 8),
    secret: str = SECRET,
    **extra: Any,
) -> dict[str, Any]:
    body = wire.order_body(
        merchant=MERCHANT,
        fixed_hash=secret,
        email="payer@example.com",
        order=number,
        amount=amount,
        description="Orden de prueba",
        expiration=expires,
    )
    body.update(extra)
    return body


def lookup(number: str, secret: str = SECRET) -> dict[str, str]:
    return {"merchant": MERCHANT, "checksum": wire.lookup_checksum(number, MERCHANT, secret)}


def create(client: httpx.Client, body: dict[str, Any]) -> httpx.Response:
    return client.post("/api/v3/porders", json=body)


def state(client: httpx.Client, number: str) -> str:
    response = client.get(f"/api/v3/porders/{number}", params=lookup(number))
    return str(response.json()["DATA"]["STATE"])


# -- orders ------------------------------------------------------------------------------------


def test_create_answers_the_documented_envelope(client: httpx.Client) -> None:
    response = create(client, order(reference="46534512"))
    assert response.status_code == 200
    answer = response.json()
    assert (answer["CODE"], answer["DESC"]) == ("0000", "OK")
    data = answer["DATA"]
    assert data["OrdenID"] == "ord1"
    assert data["Monto"] == "9,500.00"
    assert data["Referencia"] == "46534512"
    assert data["PVordenID"].isdigit()
    assert data["Operacion"] == "CREADA"
    assert "/checkout?token=" in data["checkout"]


def test_a_checksum_made_with_another_secret_is_refused_0025(
    client: httpx.Client, fake: FakePayvalida
) -> None:
    response = create(client, order(secret="not-the-secret"))
    assert response.status_code == 400
    assert response.json()["CODE"] == "0025"
    assert fake.orders() == {}


def test_a_tampered_amount_breaks_the_checksum(client: httpx.Client) -> None:
    body = order()
    body["amount"] = "1"
    assert create(client, body).json()["CODE"] == "0025"


def test_an_uppercase_checksum_is_accepted(client: httpx.Client) -> None:
    body = order()
    body["checksum"] = body["checksum"].upper()
    assert create(client, body).json()["CODE"] == "0000"


def test_a_numeric_country_and_amount_hash_as_their_digits(client: httpx.Client) -> None:
    body = order()
    body["amount"] = 9500
    body["country"] = 343
    assert create(client, body).json()["CODE"] == "0000"


def test_an_unknown_merchant_is_0018(client: httpx.Client) -> None:
    body = order()
    body["merchant"] = "someoneelse"
    assert create(client, body).json()["CODE"] == "0018"


def test_the_same_order_code_twice_is_0042(client: httpx.Client, fake: FakePayvalida) -> None:
    assert create(client, order()).json()["CODE"] == "0000"
    assert create(client, order()).json()["CODE"] == "0042"
    assert len(fake.orders()) == 1


def test_a_payment_reference_in_use_is_0043(client: httpx.Client) -> None:
    assert create(client, order("ord1", reference="111")).json()["CODE"] == "0000"
    assert create(client, order("ord2", reference="111")).json()["CODE"] == "0043"


@pytest.mark.parametrize(
    ("change", "code"),
    [
        ({"expiration": "2026-02-08"}, "0031"),
        ({"expiration": "31/01/2026"}, "0032"),
        ({"expiration": "04/03/2026"}, "0024"),
        ({"description": ""}, "0029"),
        ({"language": "fr"}, "0011"),
        ({"recurrent": "yes"}, "0011"),
    ],
)
def test_order_fields_are_validated(
    client: httpx.Client, change: dict[str, Any], code: str
) -> None:
    assert create(client, order(**change)).json()["CODE"] == code


def test_thirty_days_ahead_and_today_are_allowed(client: httpx.Client) -> None:
    assert create(client, order("a1", expires=date(2026, 3, 3))).json()["CODE"] == "0000"
    assert create(client, order("a2", expires=date(2026, 2, 1))).json()["CODE"] == "0000"


@pytest.mark.parametrize(("number", "field_code"), [("ord_1", "0011"), ("ord-1", "0011")])
def test_order_codes_without_underscores_or_special_characters(
    client: httpx.Client, number: str, field_code: str
) -> None:
    assert create(client, order(number)).json()["CODE"] == field_code


def test_a_currency_or_country_it_does_not_take(client: httpx.Client) -> None:
    body = wire.order_body(
        merchant=MERCHANT, fixed_hash=SECRET, email="p@example.com", order="o1", amount="5",
        description="d", expiration=date(2026, 2, 8), money="EUR",
    )  # fmt: skip
    assert create(client, body).json()["CODE"] == "0023"
    body = wire.order_body(
        merchant=MERCHANT, fixed_hash=SECRET, email="p@example.com", order="o1", amount="5",
        description="d", expiration=date(2026, 2, 8), country=170,
    )  # fmt: skip
    assert create(client, body).json()["CODE"] == "0022"


def test_query_shows_the_consult_pages_fields(client: httpx.Client) -> None:
    create(client, order())
    data = client.get("/api/v3/porders/ord1", params=lookup("ord1")).json()["DATA"]
    assert data["STATE"] == "PENDIENTE"
    assert (data["ORDER"], data["AMOUNT"], data["CURRENCY"]) == ("ord1", "9500.00", "COP")
    assert data["EMAIL"] == "payer@example.com"
    assert data["CREATION_DATE"] == "2026-02-01 07:00:00"
    assert data["LIFE_TIME"] == "185h"  # to the end of 08/02 in Bogotá
    assert data["TRANSACTION"] == {}


def test_query_needs_its_own_checksum_and_knows_no_stranger(client: httpx.Client) -> None:
    create(client, order())
    bad = client.get("/api/v3/porders/ord1", params=lookup("ord1", secret="x"))
    assert bad.json()["CODE"] == "0025"
    missing = client.get("/api/v3/porders/nope", params=lookup("nope"))
    assert missing.json()["CODE"] == "0041"


def test_patch_updates_a_pending_order(client: httpx.Client) -> None:
    create(client, order())
    response = client.patch("/api/v3/porders", json=order(amount="12000"))
    assert response.json()["CODE"] == "0000"
    assert response.json()["DATA"]["Operacion"] == "ACTUALIZADA"
    assert response.json()["DATA"]["Monto"] == "12,000.00"
    data = client.get("/api/v3/porders/ord1", params=lookup("ord1")).json()["DATA"]
    assert data["AMOUNT"] == "12000.00"


def test_patch_refuses_a_paid_or_unknown_order_0041(
    client: httpx.Client, fake: FakePayvalida
) -> None:
    assert client.patch("/api/v3/porders", json=order()).json()["CODE"] == "0041"
    create(client, order())
    fake.pay("ord1")
    assert client.patch("/api/v3/porders", json=order(amount="1")).json()["CODE"] == "0041"


def test_patch_checks_the_checksum(client: httpx.Client) -> None:
    create(client, order())
    assert client.patch("/api/v3/porders", json=order(secret="x")).json()["CODE"] == "0025"


def test_delete_cancels_a_pending_order_without_notifying(
    client: httpx.Client, inbox: Inbox
) -> None:
    create(client, order())
    response = client.delete("/api/v3/porders/ord1", params=lookup("ord1"))
    assert response.json()["CODE"] == "0000"
    assert state(client, "ord1") == "CANCELADA"
    assert client.delete("/api/v3/porders/ord1", params=lookup("ord1")).json()["CODE"] == "0041"
    assert inbox.received == []


# -- paying, expiry and notifications ----------------------------------------------------------


def test_paying_notifies_with_a_verifiable_checksum(
    client: httpx.Client, fake: FakePayvalida, inbox: Inbox
) -> None:
    create(client, order())
    fake.pay("ord1")
    assert state(client, "ord1") == "APROBADA"
    (note,) = inbox.bodies()
    assert note["po_id"] == "ord1"
    assert note["status"] == "approved"
    assert (note["amount"], note["iso_currency"]) == ("9500.00", "COP")
    expected = wire.notification_checksum("ord1", "approved", NOTE_SECRET)
    assert note["pv_checksum"] == expected
    assert inbox.received[0][0] == "https://merchant.example.com/payvalida"


def test_an_open_amount_order_notifies_what_was_paid(
    client: httpx.Client, fake: FakePayvalida, inbox: Inbox
) -> None:
    create(client, order(amount="0"))
    with pytest.raises(ValueError, match="open-amount"):
        fake.pay("ord1")
    fake.pay("ord1", amount="15000")
    assert inbox.bodies()[0]["amount"] == "15000.00"


def test_a_fixed_amount_order_takes_only_its_amount(
    client: httpx.Client, fake: FakePayvalida
) -> None:
    create(client, order())
    with pytest.raises(ValueError, match="not"):
        fake.pay("ord1", amount="1")


def test_a_recurrent_order_is_paid_many_times_as_order_n(
    client: httpx.Client, fake: FakePayvalida, inbox: Inbox, clock: Clock
) -> None:
    create(client, order(recurrent=True))
    fake.pay("ord1")
    clock.now += timedelta(days=60)  # recurrent orders never expire
    fake.pay("ord1")
    assert [note["po_id"] for note in inbox.bodies()] == ["ord1_1", "ord1_2"]
    assert fake.payments_by("payer@example.com") == 2
    facts = wire.notification_facts(inbox.received[1][1], NOTE_SECRET)
    assert (facts.charge_reference, facts.event_id) == ("ord1", "ord1_2:approved")


def test_orders_expire_with_the_clock_and_are_notified_cancelled(
    client: httpx.Client, fake: FakePayvalida, inbox: Inbox, clock: Clock
) -> None:
    create(client, order(expires=date(2026, 2, 3)))
    clock.now = datetime(2026, 2, 4, 4, 59, tzinfo=UTC)  # 23:59 on the 3rd in Bogotá
    assert state(client, "ord1") == "PENDIENTE"
    clock.now = datetime(2026, 2, 4, 5, 0, tzinfo=UTC)
    assert state(client, "ord1") == "VENCIDA"
    assert [(n["po_id"], n["status"]) for n in inbox.bodies()] == [("ord1", "cancelled")]
    with pytest.raises(ValueError, match="expired"):
        fake.pay("ord1")
    fake.pay("ord1", late=True)
    assert state(client, "ord1") == "APROBADA"
    assert fake.order("ord1")["PAYMENTS"][0]["late"] is True


def test_a_late_payer_pays_once_the_link_expired(
    client: httpx.Client, fake: FakePayvalida, inbox: Inbox
) -> None:
    fake.script_payer("payer@example.com", pay="late")
    create(client, order(expires=date(2026, 2, 3)))
    fake.advance(timedelta(days=3))
    assert state(client, "ord1") == "APROBADA"
    assert [n["status"] for n in inbox.bodies()] == ["approved"]


def test_a_prompt_payer_pays_as_the_order_is_made(
    client: httpx.Client, fake: FakePayvalida
) -> None:
    fake.script_payer("payer@example.com", pay="now")
    assert create(client, order()).json()["CODE"] == "0000"
    assert state(client, "ord1") == "APROBADA"


def test_duplicate_held_and_reordered_notifications(
    client: httpx.Client, fake: FakePayvalida, inbox: Inbox
) -> None:
    create(client, order("a1"))
    create(client, order("a2"))
    create(client, order("a3"))
    fake.inject(duplicates=1)
    fake.pay("a1")
    assert [n["po_id"] for n in inbox.bodies()] == ["a1", "a1"]
    fake.inject(hold=True)
    fake.pay("a2")
    fake.pay("a3")
    assert len(inbox.received) == 2
    assert len(fake.held) == 2
    fake.inject(hold=False)
    fake.release_notifications(reverse=True)
    assert [n["po_id"] for n in inbox.bodies()] == ["a1", "a1", "a3", "a2"]
    fake.resend("a1")
    assert inbox.bodies()[-1]["po_id"] == "a1"


def test_a_forged_notification_has_the_shape_and_not_the_checksum(
    client: httpx.Client, fake: FakePayvalida, inbox: Inbox
) -> None:
    create(client, order())
    fake.forge("ord1")
    (note,) = inbox.bodies()
    assert set(note) == {
        "pv_po_id", "po_id", "status", "amount", "iso_currency", "pv_payment", "pv_checksum",
    }  # fmt: skip
    assert note["status"] == "approved"
    assert note["pv_checksum"] != wire.notification_checksum("ord1", "approved", NOTE_SECRET)
    assert fake.sent[0].forged


# -- plans -------------------------------------------------------------------------------------


def plan(secret: str = SECRET, **change: Any) -> dict[str, Any]:
    body = wire.plan_body(
        merchant=MERCHANT, fixed_hash=secret, interval="month", interval_count="1", amount="12000"
    )
    body.update(change)
    return body


def test_plan_registration(client: httpx.Client, fake: FakePayvalida) -> None:
    response = client.post("/v4/subscriptions/plans", json={**plan(), "timestamp": 1686943428})
    answer = response.json()
    assert answer["CODE"] == "0000"
    data = answer["DATA"]
    assert (data["interval"], data["interval_count"], data["amount"]) == ("month", "1", "12000")
    assert (data["description"], data["method"]) == ("", "")
    assert data["id"] in fake.plans()


def test_plan_checksum_and_fields_are_enforced(client: httpx.Client) -> None:
    assert client.post("/v4/subscriptions/plans", json=plan("x")).json()["CODE"] == "0025"
    tampered = plan()
    tampered["interval_count"] = "3"
    assert client.post("/v4/subscriptions/plans", json=tampered).json()["CODE"] == "0025"
    yearly = wire.plan_body(
        merchant=MERCHANT, fixed_hash=SECRET, interval="year", interval_count="1", amount="5"
    )
    assert client.post("/v4/subscriptions/plans", json=yearly).json()["CODE"] == "0011"
    cents = wire.plan_body(
        merchant=MERCHANT, fixed_hash=SECRET, interval="day", interval_count="1", amount="5.123"
    )
    assert client.post("/v4/subscriptions/plans", json=cents).json()["CODE"] == "0021"


def test_seed_004s_example_body_is_accepted_by_a_fake_following_the_example() -> None:
    rules = wire.ChecksumRules(plan_interval_count=False)
    fake = FakePayvalida(DEFAULT_MERCHANT, DEFAULT_FIXED_HASH, rules=rules)
    example = {
        "merchant": "kuanto",
        "interval": "month",
        "timestamp": 1686943428,
        "interval_count": "1",
        "amount": "12000",
        "description": "",
        "checksum": "3f3c826799c2cef777b19cafe7bfa38ec7d334111a4d38f54848ba29ec2050a9ca10e945159098cea1f467b9a297643505fc9a8e2b907889376c45ab121ca3a8",  # noqa: E501
    }
    with httpx.Client(
        base_url="https://api-test.payvalida.com", transport=InProcessTransport(fake.app)
    ) as client:
        assert client.post("/v4/subscriptions/plans", json=example).json()["CODE"] == "0000"


# -- faults, controls, app ---------------------------------------------------------------------


def test_faults(client: httpx.Client, fake: FakePayvalida) -> None:
    fake.inject(server_errors=1)
    response = create(client, order())
    assert (response.status_code, response.json()["CODE"]) == (500, "0009")
    assert fake.orders() == {}
    fake.inject(charge_timeouts=1)
    with pytest.raises(httpx.ReadTimeout):
        create(client, order())
    assert state(client, "ord1") == "PENDIENTE"
    fake.inject(html_errors=1)
    assert client.get("/api/v3/porders/ord1", params=lookup("ord1")).status_code == 502
    with pytest.raises(ValueError, match="no fault"):
        fake.inject(nothing=1)


def test_control_endpoints_over_sockets(fake: FakePayvalida, inbox: Inbox) -> None:
    with serve(fake.app) as url, httpx.Client(base_url=url, timeout=10) as client:
        assert create(client, order("o1")).json()["CODE"] == "0000"
        assert create(client, order("o2")).json()["CODE"] == "0000"
        paid = client.post("/_fake/pay", json={"order": "o1"}).json()
        assert paid["order"]["STATE"] == "APROBADA"
        assert paid["notifications"][0]["po_id"] == "o1"
        assert client.post("/_fake/expire", json={"order": "o2"}).json()["order"]["STATE"] == (
            "VENCIDA"
        )
        late = client.post("/_fake/pay", json={"order": "o2", "late": True})
        assert late.json()["order"]["STATE"] == "APROBADA"
        books = client.get("/_fake/orders").json()
        assert set(books) == {"o1", "o2"}
        assert client.get("/_fake/orders/o1").json()["STATE"] == "APROBADA"
        assert len(client.get("/_fake/notifications").json()) == 3
        moved = client.post("/_fake/advance", json={"days": 2}).json()
        assert moved["now"].startswith("2026-02-03")
        assert client.post("/_fake/pay", json={"order": "nope"}).status_code == 400
        assert client.post("/_fake/faults", json={"server_errors": 1}).json()["server_errors"] == 1
        assert client.post("/_fake/notify_url", json={"url": ""}).json() == {"url": None}
        client.post("/_fake/payers", json={"email": "payer@example.com", "pay": "now"})
        assert client.get("/_fake/nothing").status_code == 404


def test_the_checkout_page_takes_a_payment(client: httpx.Client) -> None:
    link = create(client, order()).json()["DATA"]["checkout"]
    page = client.get(link)
    assert page.status_code == 200
    assert "ord1" in page.text
    assert client.post(link).status_code == 200
    assert state(client, "ord1") == "APROBADA"
    assert client.post(link).status_code == 409
    assert client.get("/checkout?token=nope").status_code == 404


def test_checkout_links_can_look_like_the_sandboxes() -> None:
    fake = FakePayvalida(
        MERCHANT, SECRET, checkout_base="sandbox-checkout.payvalida.com", now=Clock()
    )
    with httpx.Client(
        base_url="https://api-test.payvalida.com", transport=InProcessTransport(fake.app)
    ) as client:
        link = create(client, order()).json()["DATA"]["checkout"]
    assert link.startswith("sandbox-checkout.payvalida.com?token=")


def test_links_of_a_mounted_fake_keep_the_mount(fake: FakePayvalida) -> None:
    app = mounted({"payvalida": fake.app})
    with httpx.Client(base_url="http://fakes", transport=InProcessTransport(app)) as client:
        link = client.post("/payvalida/api/v3/porders", json=order()).json()["DATA"]["checkout"]
        assert link.startswith("http://fakes/payvalida/checkout?token=")
        assert client.post(link).status_code == 200
    assert fake.state("ord1") == "APROBADA"


def test_an_unknown_path_answers_the_envelope(client: httpx.Client) -> None:
    response = client.get("/api/v9/nothing")
    assert (response.status_code, response.json()["CODE"]) == (404, "0011")


def test_fake_app_reads_its_credentials_from_the_environment() -> None:
    app = fake_app(
        {"BILLING_PAYVALIDA_FAKE_MERCHANT": "m1", "BILLING_PAYVALIDA_FAKE_FIXED_HASH": "h1"}
    )
    body = wire.order_body(
        merchant="m1", fixed_hash="h1", email="p@example.com", order="o1", amount="5",
        description="d", expiration=datetime.now(wire.BOGOTA).date() + timedelta(days=1),
    )  # fmt: skip
    with httpx.Client(base_url="http://fake", transport=InProcessTransport(app)) as client:
        assert create(client, body).json()["CODE"] == "0000"
    default = fake_app({})
    assert default is not app


def test_repr_shows_no_secret(fake: FakePayvalida) -> None:
    assert SECRET not in repr(fake)
    assert NOTE_SECRET not in repr(fake)


def test_notification_for_each_state(client: httpx.Client, fake: FakePayvalida) -> None:
    create(client, order())
    _, body = fake.notification("ord1")
    assert json.loads(body)["status"] == "pending"
    fake.expire("ord1")
    _, body = fake.notification("ord1")
    assert json.loads(body)["status"] == "cancelled"
    assert Decimal(json.loads(body)["amount"]) == Decimal("9500")


def test_delete_refuses_a_paid_or_expired_order_with_0041_and_checks_the_checksum(
    client: httpx.Client, fake: FakePayvalida
) -> None:
    create(client, order())
    create(client, order("ord2"))
    fake.pay("ord1")
    fake.expire("ord2")
    for number in ("ord1", "ord2", "unknown1"):
        refused = client.delete(f"/api/v3/porders/{number}", params=lookup(number))
        assert refused.json()["CODE"] == "0041"
    assert (state(client, "ord1"), state(client, "ord2")) == ("APROBADA", "VENCIDA")
    create(client, order("ord3"))
    forged = client.delete("/api/v3/porders/ord3", params=lookup("ord3", secret="x"))
    assert forged.json()["CODE"] == "0025"
    assert state(client, "ord3") == "PENDIENTE"


def test_a_deleted_order_cannot_be_paid_even_late_and_a_lost_answer_still_deletes(
    client: httpx.Client, fake: FakePayvalida
) -> None:
    create(client, order())
    fake.inject(delete_timeouts=1)
    with pytest.raises(httpx.ReadTimeout):
        client.delete("/api/v3/porders/ord1", params=lookup("ord1"))
    assert state(client, "ord1") == "CANCELADA"
    with pytest.raises(ValueError, match="CANCELADA"):
        fake.pay("ord1", late=True)
    assert client.post("/_fake/pay", json={"order": "ord1"}).status_code == 400
    assert client.get("/_fake/faults").json()["delete_timeouts"] == 0
