"""FakeKhipu's HTTP surface: signatures over the URL called, documented errors, controls."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import httpx
import pytest

from adapters.khipu import _wire as wire
from adapters.khipu.fake import FakeKhipu, fake_app
from billing.testing.asgi import InProcessTransport, mounted, serve

RECEIVER, SECRET = "123456", "fake-test-secret-0001"
NOW = datetime(2026, 3, 2, 15, tzinfo=UTC)


@pytest.fixture
def fake() -> FakeKhipu:
    return FakeKhipu(RECEIVER, SECRET, clock=lambda: NOW, seed=1)


@pytest.fixture
def client(fake: FakeKhipu) -> Iterator[httpx.Client]:
    with httpx.Client(transport=InProcessTransport(fake.app)) as client:
        yield client


def signed(method: str, url: str, params=None, *, secret: str = SECRET, signed_url=None):
    return {
        "Authorization": wire.authorization(RECEIVER, secret, method, signed_url or url, params)
    }


def test_bad_missing_and_wrong_url_signatures_are_403(client):
    url = "https://khipu.com/api/2.0/banks"
    assert client.get(url, headers=signed("GET", url)).status_code == 200
    for headers in (
        {},
        signed("GET", url, secret="nope"),
        signed("GET", url, signed_url="https://khipu.com/api/2.0/banks2"),
        signed("GET", url, signed_url="http://khipu.com/api/2.0/banks"),
    ):
        response = client.get(url, headers=headers)
        assert response.status_code == 403
        assert set(response.json()) == {"status", "message"}
        assert response.json()["status"] == 403


def test_create_validates_and_answers_the_create_model(client, fake):
    url = "https://khipu.com/api/2.0/payments"
    bad = {"subject": "x", "currency": "CLP", "amount": "1.000,5"}
    response = client.post(url, data=bad, headers=signed("POST", url, bad))
    assert response.status_code == 400
    assert response.json()["errors"][0]["field"] == "amount"
    good = {"subject": "Plan", "currency": "CLP", "amount": "1000", "transaction_id": "t1"}
    response = client.post(url, data=good, headers=signed("POST", url, good))
    assert response.status_code == 200
    assert set(response.json()) == {
        "payment_id",
        "payment_url",
        "simplified_transfer_url",
        "transfer_url",
        "webpay_url",
        "app_url",
        "ready_for_terminal",
    }
    payment_id = response.json()["payment_id"]
    assert len(payment_id) == 12
    assert payment_id.isalnum()
    assert response.headers["date"].endswith("GMT")
    token = fake.payment(payment_id)["notification_token"]
    assert len(token) == 64
    query = {"notification_token": token}
    response = client.get(url, params=query, headers=signed("GET", url, query))
    assert response.json()["payment_id"] == payment_id
    unknown = {"notification_token": "x" * 64}
    response = client.get(url, params=unknown, headers=signed("GET", url, unknown))
    assert response.status_code == 400


def test_unknown_paths_and_server_errors_use_documented_statuses(client, fake):
    url = "https://khipu.com/api/2.0/nothing"
    assert client.get(url, headers=signed("GET", url)).status_code == 400
    fake.inject(server_errors=1)
    url = "https://khipu.com/api/2.0/banks"
    response = client.get(url, headers=signed("GET", url))
    assert (response.status_code, response.json()["status"]) == (503, 503)


def test_controls_act_as_the_customer_over_sockets(fake):
    seen: list[bytes] = []

    async def deliver(url, headers, body):
        seen.append(body)
        return 200

    fake._deliver = deliver
    with serve(mounted({"khipu": fake.app})) as root, httpx.Client(timeout=10) as client:
        url = f"{root}/khipu/api/2.0/payments"
        form = {
            "subject": "Plan",
            "currency": "CLP",
            "amount": "1000",
            "transaction_id": "t9",
            "notify_url": "https://shop.example/n",
        }
        response = client.post(url, data=form, headers=signed("POST", url, form))
        assert response.status_code == 200, response.text
        payment_id = response.json()["payment_id"]
        client.post(f"{root}/khipu/_fake/webhooks/faults", json={"hold": True}).raise_for_status()
        client.post(f"{root}/khipu/_fake/pay", json={"transaction_id": "t9"}).raise_for_status()
        assert seen == []
        client.post(f"{root}/khipu/_fake/webhooks/release", json={}).raise_for_status()
        assert len(seen) == 1
        assert b"api_version=1.3" in seen[0]
        books = client.get(f"{root}/khipu/_fake/payments", params={"transaction_id": "t9"}).json()
        assert books[0]["status"] == "done"
        assert books[0]["payment_id"] == payment_id
        again = client.post(f"{root}/khipu/_fake/pay", json={"payment_id": payment_id})
        assert again.status_code == 400


def test_fake_app_reads_its_credentials(monkeypatch: pytest.MonkeyPatch):
    app = fake_app({"BILLING_KHIPU_FAKE_RECEIVER_ID": "777", "BILLING_KHIPU_FAKE_SECRET": "zz"})
    with httpx.Client(transport=InProcessTransport(app)) as client:
        url = "https://khipu.com/banks"
        good = {"Authorization": wire.authorization("777", "zz", "GET", url)}
        assert client.get(url, headers=good).status_code == 200


def test_delete_takes_only_a_pending_payment_and_a_deleted_one_is_gone(client, fake):
    url = "https://khipu.com/api/2.0/payments"
    ids = []
    for tid in ("t1", "t2", "t3"):
        form = {"subject": "Plan", "currency": "CLP", "amount": "1000", "transaction_id": tid}
        ids.append(client.post(url, data=form, headers=signed("POST", url, form)).json())
    pending, paid, verifying = (created["payment_id"] for created in ids)
    fake.pay(paid)
    fake.verify(verifying)

    def delete(payment_id: str) -> httpx.Response:
        target = f"{url}/{payment_id}"
        return client.delete(target, headers=signed("DELETE", target))

    assert delete(pending).status_code == 200
    assert delete(pending).status_code == 400, "gone: a deleted payment is unknown"
    for refused in (paid, verifying):
        response = delete(refused)
        assert response.status_code == 400
        assert response.json()["errors"] == [
            {"field": "id", "message": "Solo se pueden borrar pagos pendientes de pagar"}
        ]
    target = f"{url}/{pending}"
    assert client.get(target, headers=signed("GET", target)).status_code == 400
    with pytest.raises(ValueError, match="no payment"):
        fake.pay(pending)
    assert client.post("http://fake/_fake/pay", json={"payment_id": pending}).status_code == 400
    assert [p["deleted"] for p in fake.payments()] == [True, False, False]
    assert fake.paid() == 1


def test_a_lost_delete_answer_still_deletes(client, fake):
    url = "https://khipu.com/api/2.0/payments"
    form = {"subject": "Plan", "currency": "CLP", "amount": "1000"}
    payment_id = client.post(url, data=form, headers=signed("POST", url, form)).json()["payment_id"]
    assert client.post("http://fake/_fake/faults", json={"delete_timeouts": 1}).status_code == 200
    target = f"{url}/{payment_id}"
    with pytest.raises(httpx.ReadTimeout):
        client.delete(target, headers=signed("DELETE", target))
    assert fake.payments()[0]["deleted"] is True
    assert client.get("http://fake/_fake/faults").json()["delete_timeouts"] == 0
