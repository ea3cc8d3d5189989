"""Khipu's request signing against the published golden vectors, and the status mapping."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from adapters.khipu import _wire as wire
from billing.domain.money import Money
from billing.domain.payments import DeclineKind, ErrorCode, PaymentStatus

NOW = datetime(2026, 3, 2, 15, tzinfo=UTC)


def test_ruby_client_vector():
    to_sign = wire.string_to_sign(
        "POST", "https://khipu.com/api/2.0/bar/foo", {"a": 1, "b": "should be encoded"}
    )
    assert (
        to_sign
        == "POST&https%3A%2F%2Fkhipu.com%2Fapi%2F2.0%2Fbar%2Ffoo&a=1&b=should%20be%20encoded"
    )
    assert wire.sign("secretabc", to_sign) == (
        "74d7723c6adc69b83456eeff4bedd605da02d1bcc7a5095bf3729ea29013e2e8"
    )


def test_khipu_documentation_example():
    params = {"subject": "ejemplo de compra", "amount": "1000", "currency": "CLP"}
    to_sign = wire.string_to_sign("POST", "https://khipu.com/api/2.0/payments", params)
    assert to_sign == (
        "POST&https%3A%2F%2Fkhipu.com%2Fapi%2F2.0%2Fpayments"
        "&amount=1000&currency=CLP&subject=ejemplo%20de%20compra"
    )
    assert wire.sign("secret-key", to_sign) == (
        "8b06e63d9666201586f62440ef4e382f2ffb5f1ce122ff87a6d9b3a3064d4aff"
    )


def test_pykhipu_vectors():
    assert wire.authorization("A", "B", "GET", "/test") == (
        "A:bad6f7d155cafe89c1c69476cfc7d88891b0ed57180c2b3d004010f71f65e1eb"
    )
    params = {"test": "true", "another": "ok"}
    assert wire.authorization("A", "B", "GET", "/test", params) == (
        "A:dd561da205892eb154fd390220ca111b59412be522bdb107f95795e70f9c322d"
    )
    split = wire.string_to_sign("GET", "/test", params, data={"payload": 123})
    assert wire.sign("B", split) == (
        "5735c89d22596d6a3c4d6d904c4d1641533c39912eafca9b080804ee322441fa"
    )
    merged = wire.string_to_sign("GET", "/test", {**params, "payload": "123"})
    assert wire.sign("B", merged).startswith("82f3d26b")


def test_verify_accepts_both_orders_and_refuses_anything_else():
    query, form = [("test", "true"), ("another", "ok")], [("payload", "123")]
    merged = wire.authorization("A", "B", "GET", "/test", [*query, *form])
    split = "A:" + wire.sign("B", wire.string_to_sign("GET", "/test", query, data=form))
    for header in (merged, split):
        assert wire.verify(header, "A", "B", "GET", "/test", query, form)
    assert not wire.verify(merged, "A", "B", "GET", "/other", query, form)
    assert not wire.verify(merged.replace("A:", "Z:"), "A", "B", "GET", "/test", query, form)
    assert not wire.verify(None, "A", "B", "GET", "/test", query, form)
    assert not wire.verify("garbage", "A", "B", "GET", "/test", query, form)


def test_amounts_are_exact_text():
    assert wire.amount_text(Money.of("15000", "CLP")) == "15000"
    assert wire.to_money(15000, "CLP") == Money.of("15000", "CLP")
    assert wire.to_money(True, "CLP") is None


@pytest.mark.parametrize(
    ("payment", "status", "error"),
    [
        (
            {"status": "pending", "expires_date": "2026-03-03T00:00:00Z"},
            PaymentStatus.REQUIRES_ACTION,
            None,
        ),
        (
            {"status": "pending", "expires_date": "2026-03-01T00:00:00Z"},
            PaymentStatus.FAILED,
            ErrorCode.PAYER_ABANDONED,
        ),
        (
            {"status": "verifying", "expires_date": "2026-03-01T00:00:00Z"},
            PaymentStatus.PENDING,
            None,
        ),
        ({"status": "done", "out_of_date_conciliation": True}, PaymentStatus.SUCCEEDED, None),
        ({"status": "done", "status_detail": "reversed"}, PaymentStatus.SUCCEEDED, None),
        (
            {"status": "pending", "status_detail": "marked-as-abuse"},
            PaymentStatus.FAILED,
            ErrorCode.FRAUD_SUSPECTED,
        ),
        ({"status": "weird"}, PaymentStatus.UNKNOWN, ErrorCode.GATEWAY_UNAVAILABLE),
    ],
)
def test_payment_statuses(payment, status, error):
    result = wire.payment_result({"payment_id": "abc123def456", **payment}, NOW)
    assert (result.status, result.error) == (status, error)
    if status is PaymentStatus.FAILED and error is ErrorCode.PAYER_ABANDONED:
        assert (result.decline, result.code) == (DeclineKind.SOFT, "expired")


def test_notification_bodies():
    assert wire.notification_token(b"notification_token=abc123&api_version=1.3") == "abc123"
    for bad in (
        b"<html>",
        b"api_version=1.3",
        b"notification_token=a%20b",
        b"notification_token=abc&api_version=1.2",
        b"\xff\xfe",
    ):
        with pytest.raises(wire.NotANotification):
            wire.notification_token(bad)
