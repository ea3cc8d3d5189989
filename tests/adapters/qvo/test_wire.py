"""QVO's wire format: bodies built, answers parsed, and every row of the mapping tables.

Golden values come from QVO's document (``seeds/000_198b4920f8b96452.txt``): its example
transaction (with the document's own trailing comma), inscription, event and error bodies.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest

from adapters.qvo import _wire as wire
from billing.domain.errors import GatewayAuthenticationFailed, GatewayError, InvalidArgument
from billing.domain.money import Money
from billing.domain.payments import DeclineKind, ErrorCode, PaymentStatus, RefundStatus
from billing.ports import ChargeRequest, CustomerRequest, EnrollmentStatus

AT = datetime(2026, 2, 1, 12, tzinfo=UTC)

# The document's transaction object example, verbatim: note the trailing comma after "address".
DOCUMENT_TRANSACTION = b"""{
"id": "trx_Vk7WJYL-wYi4bjXmAaLyaw",
"created_at": "2017-05-17T19:12:57.759Z",
"amount": 3000,
"currency": "CLP",
"description": "For the Watch",
"gateway": "webpay_oneclick",
"credits": 0,
"status": "successful",
"customer": {
"id": "cus_qos_6r3-4I4zIiou2BVMHg",
"name": "Jon Snow",
"email": "lordcommander@thewatch.org",
"phone": null,
"metadata": null,
"address": null,
},
"payment": {
"amount": 3000,
"gateway": "webpay_oneclick",
"payment_type": "credit",
"fee": 106,
"installments": 0,
"payment_method": {
"id": "woc_m_c3zyh5BEl8EITxvLbMzw",
"last_4_digits": "4242",
"card_type": "VISA",
"payment_type": "CD"
}
},
"refund": null,
"gateway_response": {
"status": "success",
"message": "successful transaction"
}
}"""

DOCUMENT_INSCRIPTION = {
    "uid": "woi_WZa9DgYQPzPtUqMsQdoNhQ",
    "status": "succeeded",
    "card": {
        "id": "woc_bMz2iAH1mJ8M4cvv0b7IMA",
        "last_4_digits": "6623",
        "card_type": "Visa",
        "payment_type": "CD",
        "failure_count": 0,
        "created_at": "2017-05-19T17:07:01.924Z",
    },
    "created_at": "2017-05-19T17:05:20.820Z",
    "updated_at": "2017-05-19T17:07:01.953Z",
}

DOCUMENT_EVENT = {
    "id": "evt_fdyXA5uWS9F8mEwMXBPcNg",
    "type": "customer.updated",
    "data": {"customer": {"id": "cus_hi9ycVF8p9WYLrvWkCCilg", "name": "No One"}},
    "previous": {"customer": {"id": "cus_hi9ycVF8p9WYLrvWkCCilg", "name": "Arya Stark"}},
    "created_at": "2017-05-22T20:55:47.872Z",
}


def transaction(status: str, message: str = "", **extra: Any) -> dict[str, Any]:
    return {
        "id": "trx_1",
        "status": status,
        "gateway_response": {"status": "x", "message": message},
        **extra,
    }


def charge_request(**changes: Any) -> ChargeRequest:
    values: dict[str, Any] = {
        "idempotency_key": "inv_42-1",
        "amount": Money.of("15000", "CLP"),
        "customer_id": "cust-1",
        "payment_method": "woc_card",
        "description": "Plan Oro, February",
        "at": AT,
        "customer_reference": "cus_1",
    }
    return ChargeRequest(**{**values, **changes})


# -- values -------------------------------------------------------------------------------------


def test_amounts_are_whole_pesos() -> None:
    assert wire.amount_of(Money.of("15000", "CLP")) == 15000


@pytest.mark.parametrize("money", [Money.of("10.00", "USD"), Money.zero("CLP")])
def test_amounts_qvo_cannot_take_are_refused(money: Money) -> None:
    with pytest.raises(InvalidArgument):
        wire.amount_of(money)


@pytest.mark.parametrize(
    ("value", "expected"),
    [(3000, 3000), ("3000", 3000), ("3000.0", 3000), ("3000.5", None), (True, None), (None, None)],
)
def test_integers_are_read_as_qvo_may_send_them(value: object, expected: int | None) -> None:
    assert wire.integer(value) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [("15000.0", Decimal("15000.0")), ("19.0", Decimal("19.0")), (3000, Decimal(3000))],
)
def test_decimals_arrive_as_strings(value: object, expected: Decimal) -> None:
    assert wire.decimal(value) == expected


@pytest.mark.parametrize("value", ["abc", "NaN", None, False, [1]])
def test_non_decimals_are_none(value: object) -> None:
    assert wire.decimal(value) is None


def test_datetimes_are_utc_with_milliseconds() -> None:
    instant = datetime(2017, 5, 17, 19, 12, 57, 759000, tzinfo=UTC)
    assert wire.format_datetime(instant) == "2017-05-17T19:12:57.759Z"
    assert wire.parse_datetime("2017-05-17T19:12:57.759Z") == instant
    assert wire.parse_datetime("2017-05-19T01:37:44Z") == datetime(
        2017, 5, 19, 1, 37, 44, tzinfo=UTC
    )
    assert wire.parse_datetime("yesterday") is None


def test_paths_encode_each_id() -> None:
    assert wire.path("customers", "cus_a/b", "cards") == "/customers/cus_a%2Fb/cards"


# -- JSON ---------------------------------------------------------------------------------------


def test_the_documents_transaction_example_parses_despite_its_trailing_comma() -> None:
    parsed = wire.decode_json(DOCUMENT_TRANSACTION)
    assert isinstance(parsed, dict)
    assert parsed["customer"]["address"] is None
    assert parsed["payment"]["fee"] == 106


def test_commas_inside_strings_survive_the_tolerant_parse() -> None:
    assert wire.decode_json(b'{"a": "x,}", "b": [1, 2,],}') == {"a": "x,}", "b": [1, 2]}


@pytest.mark.parametrize("body", [b"<html>502 Bad Gateway</html>", b"", b"\xff\xfe", b"  "])
def test_bodies_that_are_not_json_are_none(body: bytes) -> None:
    assert wire.decode_json(body) is None


# -- the key in the description -----------------------------------------------------------------


def test_the_key_travels_at_the_end_of_the_description() -> None:
    description = wire.described("Plan Oro", "inv_42-1")
    assert description == "Plan Oro [inv_42-1]"
    assert wire.carries_key(description, "inv_42-1")
    assert not wire.carries_key(description, "inv_42-12")
    assert not wire.carries_key(None, "inv_42-1")
    assert wire.key_in(description) == "inv_42-1"
    assert wire.key_in("For the watch") is None


# -- request bodies -----------------------------------------------------------------------------


def test_customer_body_with_an_email() -> None:
    request = CustomerRequest(customer_id="cust-1", name="Jon Snow", email="jon@thewatch.org")
    assert wire.customer_body(request) == {
        "email": "jon@thewatch.org",
        "name": "Jon Snow",
        "metadata": {"billing_customer_id": "cust-1"},
    }


def test_customer_body_without_an_email_uses_a_placeholder() -> None:
    request = CustomerRequest(customer_id="cust/1 ñ", metadata={"plan": "oro"})
    assert wire.customer_body(request) == {
        "email": "cust-1--@customers.invalid",
        "name": "cust/1 ñ",
        "metadata": {"plan": "oro", "billing_customer_id": "cust/1 ñ"},
    }


def test_inscription_body() -> None:
    assert wire.inscription_body("https://shop.example/back") == {
        "return_url": "https://shop.example/back"
    }


def test_charge_body_is_an_integer_amount_and_the_keyed_description() -> None:
    assert wire.charge_body(charge_request()) == {
        "amount": 15000,
        "description": "Plan Oro, February [inv_42-1]",
    }


def test_key_lookup_filters_by_description_and_amount_newest_first() -> None:
    assert wire.key_lookup_params("inv_42-1", 15000, 2) == {
        "where": '{"description":{"like":"%[inv_42-1]"},"amount":{"=":15000}}',
        "order_by": "created_at DESC",
        "page": "2",
        "per_page": "100",
    }
    assert json.loads(wire.key_lookup_params("k", None, 1)["where"]) == {
        "description": {"like": "%[k]"}
    }


def test_customer_lookup_is_by_email() -> None:
    assert wire.customer_lookup_params("a@b.cl") == {"where": '{"email":{"=":"a@b.cl"}}'}


@pytest.mark.parametrize(
    ("page", "returned", "total", "more"),
    [(1, 100, "250", True), (3, 50, "250", False), (1, 100, None, True), (1, 40, None, False),
     (1, 0, "250", False), (2, 100, "200", False)],
)  # fmt: skip
def test_pages_follow_x_total_or_a_short_page(
    page: int, returned: int, total: str | None, more: bool
) -> None:
    assert wire.has_more_pages(page, returned, total) is more


# -- responses ----------------------------------------------------------------------------------


def test_the_documents_inscription_creation_answer() -> None:
    enrollment = wire.parse_enrollment(
        {
            "inscription_uid": "woi_WZa9DgYQPzPtUqMsQdoNhQ",
            "redirect_url": "https://api.qvo.cl/webpay_oneclick/init_inscription/woi_WZa9DgYQPzPtUqMsQdoNhQ",
            "expiration_date": "2017-05-19T17:15:20.832Z",
        }
    )
    assert enrollment.reference == "woi_WZa9DgYQPzPtUqMsQdoNhQ"
    assert enrollment.redirect_url.endswith("/init_inscription/woi_WZa9DgYQPzPtUqMsQdoNhQ")
    assert enrollment.expires_at == datetime(2017, 5, 19, 17, 15, 20, 832000, tzinfo=UTC)


@pytest.mark.parametrize("body", [{"redirect_url": "x"}, {"inscription_uid": "woi_1"}, [], None])
def test_an_inscription_answer_without_id_or_url_is_refused(body: object) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - the message varies with the missing part
        wire.parse_enrollment(body)


def test_the_documents_succeeded_inscription_gives_a_labelled_card() -> None:
    result = wire.parse_inscription(DOCUMENT_INSCRIPTION)
    assert result.status is EnrollmentStatus.SUCCEEDED
    assert result.method is not None
    assert result.method.reference == "woc_bMz2iAH1mJ8M4cvv0b7IMA"
    assert result.method.label == "VISA ****6623"


@pytest.mark.parametrize(
    ("error", "message"),
    [({"type": "invalid_request_error", "message": "rechazada"}, "rechazada"),
     ("tarjeta rechazada", "tarjeta rechazada"), (None, "the inscription failed")],
)  # fmt: skip
def test_a_failed_inscription_carries_its_error(error: object, message: str) -> None:
    result = wire.parse_inscription({"uid": "woi_1", "status": "failed", "error": error})
    assert result.status is EnrollmentStatus.FAILED
    assert result.message == message


@pytest.mark.parametrize("status", ["waiting_response", "pending", None])
def test_an_inscription_in_any_other_status_is_pending(status: str | None) -> None:
    result = wire.parse_inscription({"uid": "woi_1", "status": status})
    assert result.status is EnrollmentStatus.PENDING


@pytest.mark.parametrize(
    ("card", "label"),
    [({"id": "woc_1", "card_type": "VISA", "last_4_digits": "4242"}, "VISA ****4242"),
     ({"id": "woc_1", "card_type": "Visa", "last_4_digits": "6623"}, "VISA ****6623"),
     ({"id": "woc_1", "card_type": "MasterCard", "last_4_digits": "0568"}, "MASTERCARD ****0568"),
     ({"id": "woc_1"}, "CARD")],
)  # fmt: skip
def test_card_labels_ignore_the_documents_case_quirk(card: dict[str, Any], label: str) -> None:
    assert wire.stored_method(card).label == label


def test_a_created_customers_id() -> None:
    assert (
        wire.parse_customer_id({"id": "cus_I-ZNs9TlY2FmdOUByQ5Ieg"}) == "cus_I-ZNs9TlY2FmdOUByQ5Ieg"
    )
    with pytest.raises(ValueError, match="not a QVO customer"):
        wire.parse_customer_id({"error": {}})


def test_the_customer_registered_for_our_id_is_found_among_those_with_the_email() -> None:
    ours = {"id": "cus_ours", "metadata": {"billing_customer_id": "cust-1"}}
    theirs = {"id": "cus_theirs", "metadata": None}
    assert wire.owned_customer([theirs, ours], "cust-1") == ("cus_ours", True)
    assert wire.owned_customer([theirs], "cust-1") == (None, True)
    assert wire.owned_customer([], "cust-1") == (None, False)


def test_the_documents_transaction_is_a_success_with_its_reference() -> None:
    parsed = wire.decode_json(DOCUMENT_TRANSACTION)
    assert isinstance(parsed, dict)
    result = wire.transaction_result(parsed)
    assert result.status is PaymentStatus.SUCCEEDED
    assert result.reference == "trx_Vk7WJYL-wYi4bjXmAaLyaw"


TRANSACTION_ROWS = [
    ("successful", PaymentStatus.SUCCEEDED, None, None),
    ("refunded", PaymentStatus.SUCCEEDED, None, None),
    ("waiting_response", PaymentStatus.PENDING, None, None),
    ("rejected", PaymentStatus.FAILED, ErrorCode.CARD_DECLINED, DeclineKind.SOFT),
    (
        "unable_to_charge",
        PaymentStatus.FAILED,
        ErrorCode.PAYMENT_METHOD_UNSUPPORTED,
        DeclineKind.HARD,
    ),
    ("response_timeout", PaymentStatus.FAILED, ErrorCode.PROCESSING_ERROR, DeclineKind.SOFT),
    ("something_new", PaymentStatus.UNKNOWN, ErrorCode.PROCESSING_ERROR, None),
]


def test_the_status_table_covers_every_documented_transaction_status() -> None:
    documented = {"successful", "rejected", "unable_to_charge", "refunded"}
    documented |= {"waiting_response", "response_timeout"}
    assert set(wire.TRANSACTION_STATUSES) == documented
    assert {row[0] for row in TRANSACTION_ROWS} >= documented


@pytest.mark.parametrize(("status", "expected", "error", "decline"), TRANSACTION_ROWS)
def test_each_transaction_status_maps_to_the_engines_words(
    status: str,
    expected: PaymentStatus,
    error: ErrorCode | None,
    decline: DeclineKind | None,
) -> None:
    result = wire.transaction_result(transaction(status, "transaction rejected by the issuer"))
    assert (result.status, result.error, result.decline) == (expected, error, decline)
    assert result.reference == "trx_1"


REASON_ROWS = [
    ("rejected: insufficient funds", ErrorCode.INSUFFICIENT_FUNDS, DeclineKind.SOFT),
    ("Fondos insuficientes", ErrorCode.INSUFFICIENT_FUNDS, DeclineKind.SOFT),
    ("saldo insuficiente", ErrorCode.INSUFFICIENT_FUNDS, DeclineKind.SOFT),
    ("expired card", ErrorCode.EXPIRED_CARD, DeclineKind.HARD),
    ("Tarjeta vencida", ErrorCode.EXPIRED_CARD, DeclineKind.HARD),
    ("tarjeta expirada", ErrorCode.EXPIRED_CARD, DeclineKind.HARD),
    ("card reported stolen", ErrorCode.LOST_OR_STOLEN, DeclineKind.HARD),
    ("lost card", ErrorCode.LOST_OR_STOLEN, DeclineKind.HARD),
    ("Tarjeta robada", ErrorCode.LOST_OR_STOLEN, DeclineKind.HARD),
    ("tarjeta extraviada", ErrorCode.LOST_OR_STOLEN, DeclineKind.HARD),
    ("tarjeta perdida", ErrorCode.LOST_OR_STOLEN, DeclineKind.HARD),
    ("suspected fraud", ErrorCode.FRAUD_SUSPECTED, DeclineKind.HARD),
    ("sospecha de fraude", ErrorCode.FRAUD_SUSPECTED, DeclineKind.HARD),
    ("rechazada por el emisor", ErrorCode.CARD_DECLINED, DeclineKind.SOFT),
]


def test_the_reason_table_is_exercised_word_by_word() -> None:
    words = {word for words, _ in wire.REJECTION_REASONS for word in words}
    assert all(any(word in text.lower() for text, _, _ in REASON_ROWS) for word in words)


@pytest.mark.parametrize(("message", "error", "decline"), REASON_ROWS)
def test_a_rejections_message_refines_the_decline(
    message: str, error: ErrorCode, decline: DeclineKind
) -> None:
    result = wire.transaction_result(transaction("rejected", message))
    assert (result.error, result.decline, result.code, result.message) == (
        error,
        decline,
        "rejected",
        message,
    )


def test_unable_to_charge_is_not_refined_by_its_message() -> None:
    result = wire.transaction_result(transaction("unable_to_charge", "insufficient funds"))
    assert result.error is ErrorCode.PAYMENT_METHOD_UNSUPPORTED


def test_a_transaction_is_an_object_with_a_status() -> None:
    assert wire.parse_transaction({"id": "trx_1", "status": "successful"})["id"] == "trx_1"
    bodies: list[object] = [{"id": "trx_1"}, [], None, {"status": 3}]
    for body in bodies:
        with pytest.raises(ValueError, match="not a QVO transaction"):
            wire.parse_transaction(body)


def test_the_key_lookup_prefers_a_paid_transaction_then_a_pending_one() -> None:
    found = [
        {"id": "trx_new", "status": "rejected", "description": "x [k-1]"},
        {"id": "trx_wait", "status": "waiting_response", "description": "x [k-1]"},
        {"id": "trx_paid", "status": "successful", "description": "x [k-1]"},
        {"id": "trx_other", "status": "successful", "description": "x [k-10]"},
    ]
    assert wire.pick_transaction(found, "k-1") == found[2]
    assert wire.pick_transaction(found[:2], "k-1") == found[1]
    assert wire.pick_transaction(found[:1], "k-1") == found[0]
    assert wire.pick_transaction(found[3:], "k-1") is None


# -- errors -------------------------------------------------------------------------------------


def test_the_documents_error_example_is_parsed() -> None:
    body = {
        "error": {
            "type": "invalid_request_error",
            "message": "amount parameter required",
            "param": "amount",
        }
    }
    error = wire.parse_error(400, body)
    assert error == wire.QvoError(
        400, "invalid_request_error", "amount parameter required", "amount"
    )
    assert error.describe() == (
        "HTTP 400: invalid_request_error: amount parameter required (param amount)"
    )


def test_an_error_without_qvos_body_keeps_its_status() -> None:
    assert wire.parse_error(502, None) == wire.QvoError(502)
    assert wire.QvoError(502).describe() == "HTTP 502: no message"


STATUS_ROWS = [
    (400, ErrorCode.INVALID_REQUEST, ErrorCode.INVALID_REQUEST),
    (401, ErrorCode.AUTHENTICATION_ERROR, ErrorCode.AUTHENTICATION_ERROR),
    (403, ErrorCode.AUTHENTICATION_ERROR, ErrorCode.AUTHENTICATION_ERROR),
    (404, ErrorCode.NOT_FOUND, ErrorCode.NOT_FOUND),
    (405, ErrorCode.INVALID_REQUEST, ErrorCode.INVALID_REQUEST),
    (406, ErrorCode.INVALID_REQUEST, ErrorCode.INVALID_REQUEST),
    (410, ErrorCode.NOT_FOUND, ErrorCode.NOT_FOUND),
    (418, ErrorCode.INVALID_REQUEST, ErrorCode.INVALID_REQUEST),
    (422, ErrorCode.INVALID_REQUEST, ErrorCode.CARD_DECLINED),
    (429, ErrorCode.RATE_LIMITED, ErrorCode.RATE_LIMITED),
    (500, ErrorCode.GATEWAY_UNAVAILABLE, ErrorCode.GATEWAY_UNAVAILABLE),
    (502, ErrorCode.GATEWAY_UNAVAILABLE, ErrorCode.GATEWAY_UNAVAILABLE),
    (503, ErrorCode.GATEWAY_UNAVAILABLE, ErrorCode.GATEWAY_UNAVAILABLE),
    (504, ErrorCode.GATEWAY_TIMEOUT, ErrorCode.GATEWAY_TIMEOUT),
    (409, ErrorCode.INVALID_REQUEST, ErrorCode.INVALID_REQUEST),
    (599, ErrorCode.GATEWAY_UNAVAILABLE, ErrorCode.GATEWAY_UNAVAILABLE),
    (302, ErrorCode.GATEWAY_UNAVAILABLE, ErrorCode.GATEWAY_UNAVAILABLE),
]


def test_the_status_rows_cover_every_documented_http_status() -> None:
    documented = {400, 401, 403, 404, 405, 406, 410, 418, 422, 429, 500, 503}
    assert documented <= set(wire.HTTP_STATUSES) <= {row[0] for row in STATUS_ROWS}


@pytest.mark.parametrize(("status", "elsewhere", "charging"), STATUS_ROWS)
def test_each_http_status_without_a_body(
    status: int, elsewhere: ErrorCode, charging: ErrorCode
) -> None:
    error = wire.QvoError(status)
    assert wire.classify(error) is elsewhere
    assert wire.classify(error, charging=True) is charging


TYPE_ROWS = [
    ("api_error", ErrorCode.GATEWAY_UNAVAILABLE),
    ("authentication_error", ErrorCode.AUTHENTICATION_ERROR),
    ("authentication error", ErrorCode.AUTHENTICATION_ERROR),
    ("invalid_request_error", ErrorCode.INVALID_REQUEST),
    ("rate_limit_error", ErrorCode.RATE_LIMITED),
    ("card_error", ErrorCode.INVALID_REQUEST),
]


def test_the_type_rows_cover_every_documented_error_type() -> None:
    assert set(wire.ERROR_TYPES) <= {row[0] for row in TYPE_ROWS}


@pytest.mark.parametrize(("kind", "expected"), TYPE_ROWS)
def test_each_error_type_on_a_400(kind: str, expected: ErrorCode) -> None:
    assert wire.classify(wire.QvoError(400, kind, "m")) is expected


def test_a_declined_charges_422_is_refined_by_its_message() -> None:
    error = wire.QvoError(422, "invalid_request_error", "Tarjeta robada")
    assert wire.classify(error, charging=True) is ErrorCode.LOST_OR_STOLEN
    assert wire.classify(error) is ErrorCode.INVALID_REQUEST


CHARGE_ERROR_ROWS = [
    (401, "authentication_error", "", PaymentStatus.UNKNOWN, ErrorCode.AUTHENTICATION_ERROR, None),
    (403, None, "", PaymentStatus.UNKNOWN, ErrorCode.AUTHENTICATION_ERROR, None),
    (429, "rate_limit_error", "", PaymentStatus.UNKNOWN, ErrorCode.RATE_LIMITED, None),
    (500, "api_error", "", PaymentStatus.UNKNOWN, ErrorCode.GATEWAY_UNAVAILABLE, None),
    (503, None, "", PaymentStatus.UNKNOWN, ErrorCode.GATEWAY_UNAVAILABLE, None),
    (504, None, "", PaymentStatus.UNKNOWN, ErrorCode.GATEWAY_TIMEOUT, None),
    (404, "invalid_request_error", "", PaymentStatus.FAILED, ErrorCode.NOT_FOUND, DeclineKind.HARD),
    (410, None, "", PaymentStatus.FAILED, ErrorCode.NOT_FOUND, DeclineKind.HARD),
    (422, "invalid_request_error", "rechazada", PaymentStatus.FAILED, ErrorCode.CARD_DECLINED,
     DeclineKind.SOFT),
    (422, "invalid_request_error", "expired card", PaymentStatus.FAILED, ErrorCode.EXPIRED_CARD,
     DeclineKind.HARD),
    (400, "invalid_request_error", "", PaymentStatus.FAILED, ErrorCode.INVALID_REQUEST,
     DeclineKind.SOFT),
]  # fmt: skip


@pytest.mark.parametrize(
    ("status", "kind", "message", "result", "error", "decline"), CHARGE_ERROR_ROWS
)
def test_each_error_as_a_charges_result(
    status: int,
    kind: str | None,
    message: str,
    result: PaymentStatus,
    error: ErrorCode,
    decline: DeclineKind | None,
) -> None:
    mapped = wire.charge_error_result(wire.QvoError(status, kind, message or None))
    assert (mapped.status, mapped.error, mapped.decline) == (result, error, decline)
    assert mapped.code == (kind or f"http_{status}")


def test_credentials_refused_raise_authentication_failed_outside_charges() -> None:
    error = wire.gateway_error("qvo", wire.QvoError(401, "authentication error", "bad token"))
    assert isinstance(error, GatewayAuthenticationFailed)
    assert error.code == "authentication_error"
    assert error.raw_code == "authentication error"


@pytest.mark.parametrize(
    ("status", "code", "retryable"),
    [(503, "gateway_unavailable", True), (429, "rate_limited", True), (404, "not_found", False),
     (400, "invalid_request", False), (504, "gateway_timeout", True)],
)  # fmt: skip
def test_other_errors_raise_gateway_errors(status: int, code: str, retryable: bool) -> None:
    error = wire.gateway_error("qvo", wire.QvoError(status, None, "m"))
    assert type(error) is GatewayError
    assert (error.code, error.retryable, error.raw_code) == (code, retryable, f"http_{status}")


def test_a_refunded_transaction_is_a_successful_refund() -> None:
    refund = wire.refund_result({"id": "trx_1", "status": "refunded", "refund": {"amount": 3000}})
    assert (refund.status, refund.reference) == (RefundStatus.SUCCEEDED, "trx_1")
    assert wire.refund_result({"id": "trx_1", "status": "successful"}).status is RefundStatus.FAILED
    assert wire.refund_result(None).status is RefundStatus.UNKNOWN


@pytest.mark.parametrize(
    ("status", "expected"),
    [(400, RefundStatus.FAILED), (404, RefundStatus.FAILED), (500, RefundStatus.UNKNOWN),
     (429, RefundStatus.UNKNOWN)],
)  # fmt: skip
def test_refund_errors(status: int, expected: RefundStatus) -> None:
    assert wire.refund_error_result(wire.QvoError(status)).status is expected


def test_the_module_docstring_tables_name_every_mapped_value() -> None:
    doc = wire.__doc__ or ""
    for name in [*wire.TRANSACTION_STATUSES, *wire.ERROR_TYPES]:
        assert name in doc, name
    for status in wire.HTTP_STATUSES:
        assert str(status) in doc, status


# -- notifications ------------------------------------------------------------------------------


def test_the_documents_event_is_read_unverified() -> None:
    facts = wire.notification_facts(json.dumps(DOCUMENT_EVENT).encode())
    assert (facts.event_id, facts.kind) == ("evt_fdyXA5uWS9F8mEwMXBPcNg", "customer.updated")
    assert facts.charge_reference is None
    assert facts.verified is False


def test_a_transaction_event_names_the_charge_and_our_key() -> None:
    event = {
        "id": "evt_1",
        "type": "transaction.payment_succeeded",
        "data": {"transaction": {"id": "trx_1", "description": "Plan Oro [inv_42-1]"}},
        "previous": None,
        "created_at": "2026-02-01T12:00:00.000Z",
    }
    facts = wire.notification_facts(json.dumps(event).encode())
    assert (facts.charge_reference, facts.idempotency_key) == ("trx_1", "inv_42-1")


@pytest.mark.parametrize(
    "body",
    [b"not json", b"[]", b'{"type": "x", "data": {}, "created_at": "t"}',
     b'{"id": "evt_1", "type": "x", "created_at": "t"}',
     b'{"type": "charge.succeeded", "event_date": "t", "transaction": {"id": "tr"}}',
     b'{"id": "evt_1", "type": "x", "data": {}}'],
)  # fmt: skip
def test_bodies_that_are_not_qvo_events_are_refused(body: bytes) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - the message names what is missing
        wire.notification_facts(body)


def test_the_fifteen_documented_event_types() -> None:
    assert len(set(wire.EVENT_TYPES)) == 15
