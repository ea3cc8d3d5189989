"""The community client ``pykhipu`` 0.1.9, unchanged, against the fake over loopback."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import pykhipu.client as pykhipu_client  # a dev dependency: never skipped
import pytest
from pykhipu.errors import AuthorizationError, ValidationError

from adapters.khipu.fake import FakeKhipu
from billing.testing.asgi import serve

RECEIVER, SECRET = "123456", "pykhipu-test-secret-01"


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeKhipu]:
    fake = FakeKhipu(RECEIVER, SECRET, clock=lambda: datetime(2026, 3, 2, 15, tzinfo=UTC))
    with serve(fake.app) as root:
        patch = pytest.MonkeyPatch()
        patch.setattr(pykhipu_client, "API_BASE", root + "/api/2.0")
        try:
            yield fake
        finally:
            patch.undo()


def client(secret: str = SECRET):
    return pykhipu_client.Client(receiver_id=RECEIVER, secret=secret)


def test_banks(fake):
    banks = client().banks.get()
    assert banks.banks


def test_create_get_by_id_and_token_refund_and_delete(fake):
    payments = client().payments
    created = payments.post(
        "Plan Oro",
        "CLP",
        "15000",
        transaction_id="inv-1",
        payer_email="ana@example.cl",
        expires_date="2026-03-05T00:00:00Z",
    )
    assert created.payment_id
    assert created.payment_url
    read = payments.get_id(created.payment_id)
    assert (read.status, read.transaction_id) == ("pending", "inv-1")
    fake.pay(created.payment_id)
    token = fake.payment(created.payment_id)["notification_token"]
    by_token = payments.get(token)
    assert (by_token.payment_id, by_token.status) == (created.payment_id, "done")
    assert payments.post_refunds(created.payment_id, "5000").message
    with pytest.raises(ValidationError):
        payments.delete(created.payment_id)  # paid: not pending
    other = payments.post("Plan Oro", "CLP", "15000", expires_date="2026-03-05T00:00:00Z")
    assert payments.delete(other.payment_id).message
    assert fake.payments()[-1]["deleted"] is True


def test_a_wrong_secret_is_refused_with_403(fake):
    with pytest.raises(AuthorizationError) as refused:
        client("wrong-secret").banks.get()
    assert refused.value.status == 403
