"""Golden tests for Openpay's wire format: bodies, parsing, amounts and every mapping row."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest

from adapters.openpay import _wire as wire
from billing.domain.money import Money
from billing.domain.payments import DeclineKind, ErrorCode, PaymentStatus, RefundStatus
from billing.ports import ChargeRequest, CustomerRequest

AT = datetime(2026, 2, 1, 12, tzinfo=UTC)
DOC_KEY = "sk_e568c42a6c384b7ab02cd47d2e407cab"

# The document's example charge answer (§7.1), a refunded charge (§7.7) and card answers (§11).
DOC_CHARGE = (
    b'{ "id":"trzjaozcik8msyqshka4", "amount":100.00, "authorization":"801585", "method":"card",'
    b' "operation_type":"in", "transaction_type":"charge", "card":{ "id":"kqgykn96i7bcs1wwhvgw",'
    b' "type":"debit", "brand":"visa", "address":null, "card_number":"411111XXXXXX1111",'
    b' "holder_name":"Juan Perez Ramirez", "expiration_year":"20", "expiration_month":"12",'
    b' "allows_charges":true, "allows_payouts":true, "creation_date":"2014-05-26T11:02:16-05:00",'
    b' "bank_name":"Banamex", "bank_code":"002" }, "status":"completed", "currency":"USD",'
    b' "exchange_rate" : { "from" : "USD", "date" : "2014-11-21", "value" : 13.61, "to" : "MXN" },'
    b' "creation_date":"2014-05-26T11:02:45-05:00", "operation_date":"2014-05-26T11:02:45-05:00",'
    b' "description":"Cargo inicial a mi cuenta", "error_message":null, "order_id":"oid-00051" }'
)
DOC_REFUNDED = (
    b'{ "id":"tr6cxbcefzatd10guvvw", "amount":100.00, "authorization":"801585", "method":"card",'
    b' "operation_type":"in", "transaction_type":"charge", "status":"completed", "refund":{'
    b' "id":"trcbsmjkroqmjobxqhpb", "amount":100.00, "authorization":"801585", "method":"card",'
    b' "operation_type":"out", "transaction_type":"refund", "status":"completed",'
    b' "currency":"MXN", "creation_date":"2014-05-26T13:56:21-05:00",'
    b' "operation_date":"2014-05-26T13:56:21-05:00", "description":"devolucion",'
    b' "error_message":null, "order_id":null, "customer_id":"ag4nktpdzebjiye1tlze" },'
    b' "currency":"MXN", "order_id":"oid-00052", "customer_id":"ag4nktpdzebjiye1tlze" }'
)
DOC_CARD = (
    b'{ "id":"ktrpvymgatocelsciak7", "type":"debit", "brand":"visa",'
    b' "card_number":"411111XXXXXX1111", "holder_name":"Juan Perez Ramirez",'
    b' "expiration_year":"20", "expiration_month":"12", "allows_charges":true,'
    b' "allows_payouts":true, "creation_date":"2014-05-21T17:31:01-05:00",'
    b' "bank_name":"Banamex", "customer_id":"ag4nktpdzebjiye1tlze", "bank_code":"002" }'
)
DOC_TOKEN_CARD = (
    b'{ "type":"credit", "brand":"visa", "id":"kso4st83wxaibffyt6su", "card_number":"4242",'
    b' "holder_name":"Juan Perez Ramirez", "expiration_year":"15", "expiration_month":"12" }'
)


def money(text: str, currency: str = "MXN") -> Money:
    return Money.of(text, currency)


def request(key: str = "inv_00042-1", amount: str = "150.00") -> ChargeRequest:
    return ChargeRequest(
        idempotency_key=key,
        amount=money(amount),
        customer_id="cus_1",
        payment_method="kqgykn96i7bcs1wwhvgw",
        description="Invoice INV-42",
        at=AT,
        customer_reference="ag4nktpdzebjiye1tlze",
    )


# -- amounts and JSON ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "currency", "number"),
    [
        ("0.10", "MXN", "0.10"),
        ("0.01", "MXN", "0.01"),
        ("1", "MXN", "1.00"),
        ("150.00", "MXN", "150.00"),
        ("1234567.89", "MXN", "1234567.89"),
        ("99999999999.99", "MXN", "99999999999.99"),
        ("10.50", "USD", "10.50"),
    ],
)
def test_amounts_are_exact_numbers_with_two_decimals(text: str, currency: str, number: str) -> None:
    assert format(wire.amount(money(text, currency)), "f") == number
    assert wire.dumps({"amount": wire.amount(money(text, currency))}) == (
        b'{"amount":' + number.encode() + b"}"
    )


def test_amounts_in_other_currencies_are_refused() -> None:
    with pytest.raises(ValueError, match="MXN, USD"):
        wire.amount(money("1000", "CLP"))


def test_dumps_refuses_floats_and_writes_everything_else_as_json() -> None:
    with pytest.raises(TypeError, match="floats"):
        wire.dumps({"amount": 0.1})
    assert wire.dumps({"a": [1, True, None, "ñ"], "b": {"c": Decimal("2.50")}}) == (
        '{"a":[1,true,null,"ñ"],"b":{"c":2.50}}'.encode()
    )


def test_loads_keeps_decimals_exact_and_gives_none_for_non_json() -> None:
    assert wire.loads(b'{"amount": 1234567.89}') == {"amount": Decimal("1234567.89")}
    assert wire.loads(b"<html>502 Bad Gateway</html>") is None
    assert wire.loads(b"") is None


def test_to_money_reads_answers_amounts() -> None:
    assert wire.to_money(Decimal("100.00"), "MXN") == money("100.00")
    assert wire.to_money(150, "USD") == money("150", "USD")
    assert wire.to_money("100", "MXN") is None
    assert wire.to_money(Decimal("1"), "CLP") is None


# -- derived references ----------------------------------------------------------------------------


def test_order_id_is_the_key_up_to_100_characters_then_a_stable_digest() -> None:
    assert wire.order_id("inv_00042-1") == "inv_00042-1"
    assert wire.order_id("k" * 100) == "k" * 100
    long = wire.order_id("k" * 101)
    assert long == wire.order_id("k" * 101)
    assert long.startswith("sha256-")
    assert len(long) == 71
    assert long != wire.order_id("k" * 102)


def test_placeholders_are_deterministic() -> None:
    assert wire.placeholder_email("cus_1") == "customer-2908905ede164ca82eb939db@billing.invalid"
    assert wire.device_session_id("inv-1") == "8632a830a6d9bc005d9c2293a4b61195"
    assert wire.external_id("c" * 101).startswith("sha256-")


def test_a_token_may_carry_the_browsers_device_session_id() -> None:
    assert wire.split_token("tokgslwpdcrkhlgxqi9a") == ("tokgslwpdcrkhlgxqi9a", None)
    assert wire.split_token("tokgslwpdcrkhlgxqi9a:8VIoXj0hN5dswYHQ9X1mVCiB72M7FY9o") == (
        "tokgslwpdcrkhlgxqi9a",
        "8VIoXj0hN5dswYHQ9X1mVCiB72M7FY9o",
    )


def test_basic_authorization_uses_the_key_and_an_empty_password() -> None:
    assert wire.basic_authorization(DOC_KEY) == (
        "Basic c2tfZTU2OGM0MmE2YzM4NGI3YWIwMmNkNDdkMmU0MDdjYWI6"
    )


# -- request bodies --------------------------------------------------------------------------------


def test_charge_body_golden() -> None:
    body = wire.dumps(wire.charge_body(request(amount="1234567.89")))
    session = wire.device_session_id("inv_00042-1")
    assert body == (
        b'{"method":"card","source_id":"kqgykn96i7bcs1wwhvgw","amount":1234567.89,'
        b'"currency":"MXN","description":"Invoice INV-42","order_id":"inv_00042-1",'
        b'"device_session_id":"' + session.encode() + b'"}'
    )


def test_charge_body_clips_the_description_and_fills_an_empty_one() -> None:
    long = wire.charge_body(
        ChargeRequest(
            idempotency_key="k-1",
            amount=money("0.10"),
            customer_id="c",
            payment_method="k",
            description="x" * 300,
            at=AT,
        )
    )
    assert long["description"] == "x" * 250
    assert format(long["amount"], "f") == "0.10"
    empty = wire.charge_body(
        ChargeRequest(
            idempotency_key="k-1",
            amount=money("1"),
            customer_id="c",
            payment_method="k",
            description="",
            at=AT,
        )
    )
    assert empty["description"] == "k-1"


def test_customer_body_golden() -> None:
    body = wire.customer_body(CustomerRequest(customer_id="cus_1", name="Ana", email="a@b.mx"))
    assert wire.dumps(body) == (
        b'{"external_id":"cus_1","name":"Ana","email":"a@b.mx","requires_account":false}'
    )


def test_customer_body_fills_a_missing_name_and_email() -> None:
    body = wire.customer_body(CustomerRequest(customer_id="cus_1"))
    assert body["name"] == "cus_1"
    assert body["email"] == wire.placeholder_email("cus_1")


def test_card_body_golden() -> None:
    assert wire.card_body("tokgslwpdcrkhlgxqi9a:8VIoXj0hN5dswYHQ9X1mVCiB72M7FY9o") == {
        "token_id": "tokgslwpdcrkhlgxqi9a",
        "device_session_id": "8VIoXj0hN5dswYHQ9X1mVCiB72M7FY9o",
    }
    assert wire.card_body("tokgslwpdcrkhlgxqi9a") == {
        "token_id": "tokgslwpdcrkhlgxqi9a",
        "device_session_id": wire.device_session_id("tokgslwpdcrkhlgxqi9a"),
    }


def test_refund_body_golden() -> None:
    assert wire.dumps(wire.refund_body("inv_1-refund-1")) == (
        b'{"description":"refund inv_1-refund-1"}'
    )


# -- the error table -------------------------------------------------------------------------------

S, H = DeclineKind.SOFT, DeclineKind.HARD
D, R, U, DUP, A = (
    wire.Outcome.DECLINE,
    wire.Outcome.REFUSED,
    wire.Outcome.UNKNOWN,
    wire.Outcome.DUPLICATE,
    wire.Outcome.AUTHENTICATION,
)
E = ErrorCode

TABLE = [
    (1000, 500, E.GATEWAY_UNAVAILABLE, U, None),
    (1001, 400, E.INVALID_REQUEST, R, S),
    (1002, 401, E.AUTHENTICATION_ERROR, A, None),
    (1003, 422, E.INVALID_REQUEST, R, S),
    (1004, 503, E.GATEWAY_UNAVAILABLE, U, None),
    (1005, 404, E.NOT_FOUND, R, S),
    (1006, 409, E.DUPLICATE_REQUEST, DUP, None),
    (1007, 402, E.CARD_DECLINED, D, S),
    (1008, 423, E.PROCESSING_ERROR, D, S),
    (1009, 413, E.INVALID_REQUEST, R, S),
    (1010, 403, E.AUTHENTICATION_ERROR, A, None),
    (2001, 409, E.DUPLICATE_REQUEST, R, S),
    (2002, 409, E.DUPLICATE_REQUEST, R, S),
    (2003, 409, E.DUPLICATE_REQUEST, R, S),
    (2004, 422, E.INVALID_CARD_DATA, D, H),
    (2005, 400, E.EXPIRED_CARD, D, H),
    (2006, 400, E.INVALID_CARD_DATA, D, H),
    (2007, 412, E.PAYMENT_METHOD_UNSUPPORTED, D, H),
    (3001, 402, E.CARD_DECLINED, D, S),
    (3002, 402, E.EXPIRED_CARD, D, H),
    (3003, 402, E.INSUFFICIENT_FUNDS, D, S),
    (3004, 402, E.LOST_OR_STOLEN, D, H),
    (3005, 402, E.FRAUD_SUSPECTED, D, H),
    (3006, 412, E.PROCESSING_ERROR, D, S),
    (3008, 412, E.PAYMENT_METHOD_UNSUPPORTED, D, H),
    (3009, 402, E.LOST_OR_STOLEN, D, H),
    (3010, 402, E.CARD_RESTRICTED, D, H),
    (3011, 402, E.CARD_RESTRICTED, D, H),
    (3012, 412, E.CARD_RESTRICTED, D, H),
    (4001, 412, E.PROCESSING_ERROR, D, S),
]


def test_the_table_has_every_documented_code_and_nothing_else() -> None:
    documented = {*range(1000, 1011), *range(2001, 2008), *range(3001, 3013), 4001} - {3007}
    assert set(wire.ERRORS) == documented
    assert {row[0] for row in TABLE} == documented


@pytest.mark.parametrize(("code", "http", "error", "outcome", "kind"), TABLE)
def test_each_error_code_maps_as_documented(
    code: int,
    http: int,
    error: ErrorCode,
    outcome: wire.Outcome,
    kind: DeclineKind | None,
) -> None:
    rule = wire.ERRORS[code]
    assert (rule.code, rule.http_status, rule.error, rule.outcome) == (code, http, error, outcome)
    api_error = wire.ApiError(http, code, rule.description)
    assert wire.rule_for(api_error) is rule
    result = wire.error_result(api_error, reference="trx")
    assert result.code == str(code)
    assert result.message == rule.description
    assert result.error is error
    assert result.reference == "trx"
    if kind is None:
        assert result.status is PaymentStatus.UNKNOWN
        assert result.decline is None
    else:
        assert result.status is PaymentStatus.FAILED
        assert result.decline is kind


@pytest.mark.parametrize(
    ("http", "error", "outcome"),
    [
        (500, E.GATEWAY_UNAVAILABLE, U),
        (502, E.GATEWAY_UNAVAILABLE, U),
        (504, E.GATEWAY_UNAVAILABLE, U),
        (401, E.AUTHENTICATION_ERROR, A),
        (403, E.AUTHENTICATION_ERROR, A),
        (402, E.CARD_DECLINED, D),
        (404, E.NOT_FOUND, R),
        (429, E.RATE_LIMITED, R),
        (418, E.INVALID_REQUEST, R),
        (302, E.GATEWAY_UNAVAILABLE, U),
    ],
)
def test_an_unknown_code_is_classified_by_http_status(
    http: int, error: ErrorCode, outcome: wire.Outcome
) -> None:
    for code in (None, 9999):
        rule = wire.rule_for(wire.ApiError(http, code, "?"))
        assert (rule.error, rule.outcome) == (error, outcome)
    assert wire.error_result(wire.ApiError(http, None, "?")).code == f"http_{http}"


def test_parse_error_reads_the_documents_error_object() -> None:
    body = wire.loads(
        b'{ "category" : "request", "description" : "The customer with id'
        b' \'m4hqp35pswl02mmc567\' does not exist", "http_code" : 404, "error_code" : 1005,'
        b' "request_id" : "1981cdb8-19cb-4bad-8256-e95d58bc035c", "fraud_rules": [ "Billing <>'
        b' BIN Country for VISA/MC" ] }'
    )
    assert wire.parse_error(404, body) == wire.ApiError(
        404,
        1005,
        "The customer with id 'm4hqp35pswl02mmc567' does not exist",
        "request",
        "1981cdb8-19cb-4bad-8256-e95d58bc035c",
    )


def test_parse_error_survives_bodies_that_are_not_error_objects() -> None:
    assert wire.parse_error(502, None).code is None
    assert wire.parse_error(400, {"error_code": "1001"}).code is None
    assert wire.parse_error(402, {"error_code": 3001, "description": 5}).description == "HTTP 402"
    masked = wire.parse_error(400, {"error_code": 2004, "description": "bad 4111111111111112"})
    assert "4111111111111112" not in masked.description


# -- transactions ----------------------------------------------------------------------------------


def transaction(status: str, **extra: object) -> dict[str, object]:
    return {"id": "trx", "status": status, "order_id": "inv-1", **extra}


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        ("completed", PaymentStatus.SUCCEEDED),
        ("in_progress", PaymentStatus.PENDING),
        ("charge_pending", PaymentStatus.PENDING),
        ("refunded", PaymentStatus.SUCCEEDED),
        ("failed", PaymentStatus.FAILED),
        ("cancelled", PaymentStatus.FAILED),
        ("chargeback_pending", PaymentStatus.UNKNOWN),
    ],
)
def test_each_transaction_status_maps(status: str, expected: PaymentStatus) -> None:
    result = wire.charge_result(transaction(status))
    assert result.status is expected
    assert result.reference == "trx"


def test_a_cancelled_charge_is_a_soft_payer_abandoned_failure() -> None:
    result = wire.charge_result(transaction("cancelled"))
    assert (result.decline, result.error, result.code) == (S, E.PAYER_ABANDONED, "cancelled")


@pytest.mark.parametrize("code", sorted(wire.ERRORS))
def test_a_failed_transaction_maps_through_its_error_message(code: int) -> None:
    rule = wire.ERRORS[code]
    for message in (rule.description, rule.spanish, rule.description.upper() + "."):
        result = wire.charge_result(transaction("failed", error_message=message))
        assert (result.status, result.error, result.code) == (
            PaymentStatus.FAILED,
            rule.error,
            str(code),
        )
        assert result.decline is rule.decline


def test_a_failed_transaction_with_an_unknown_message_is_a_soft_card_decline() -> None:
    for extra in ({"error_message": "Something new"}, {}):
        result = wire.charge_result(transaction("failed", **extra))
        assert (result.decline, result.error, result.code) == (S, E.CARD_DECLINED, "failed")


def test_a_failed_transaction_with_an_error_code_field_uses_it() -> None:
    result = wire.charge_result(transaction("failed", error_code=3004, error_message="x"))
    assert (result.decline, result.error) == (H, E.LOST_OR_STOLEN)


def test_the_documents_charge_answer_is_a_success() -> None:
    answer = wire.loads(DOC_CHARGE)
    assert isinstance(answer, dict)
    result = wire.charge_result(answer)
    assert (result.status, result.reference) == (PaymentStatus.SUCCEEDED, "trzjaozcik8msyqshka4")
    assert (result.decline, result.error, result.code) == (None, None, None)


def test_find_order_picks_the_charge_with_that_order_id() -> None:
    items = [
        {"id": "a", "order_id": "other", "transaction_type": "charge"},
        {"id": "b", "order_id": "inv-1", "transaction_type": "payout"},
        {"id": "c", "order_id": "inv-1", "transaction_type": "charge"},
        "junk",
    ]
    assert wire.find_order(items, "inv-1") == items[2]
    assert wire.find_order(items, "missing") is None
    assert wire.find_order([{"id": "d", "order_id": "x"}], "x") == {"id": "d", "order_id": "x"}


# -- refunds, cards --------------------------------------------------------------------------------


def test_the_documents_refunded_charge_gives_its_refund() -> None:
    answer = wire.loads(DOC_REFUNDED)
    assert isinstance(answer, dict)
    result = wire.refund_result(answer)
    assert result is not None
    assert (result.status, result.reference) == (RefundStatus.SUCCEEDED, "trcbsmjkroqmjobxqhpb")


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        ("completed", RefundStatus.SUCCEEDED),
        ("in_progress", RefundStatus.PENDING),
        ("failed", RefundStatus.FAILED),
        ("cancelled", RefundStatus.FAILED),
        ("mystery", RefundStatus.UNKNOWN),
    ],
)
def test_each_refund_status_maps(status: str, expected: RefundStatus) -> None:
    result = wire.refund_result({"refund": {"id": "trr", "status": status}})
    assert result is not None
    assert (result.status, result.reference) == (expected, "trr")


def test_a_charge_without_refund_has_no_refund_result() -> None:
    assert wire.refund_result({"id": "trx", "status": "completed"}) is None


def test_stored_methods_show_brand_and_last_four_only() -> None:
    card, token_card = wire.loads(DOC_CARD), wire.loads(DOC_TOKEN_CARD)
    assert isinstance(card, dict)
    assert isinstance(token_card, dict)
    assert wire.stored_method(card).reference == "ktrpvymgatocelsciak7"
    assert wire.stored_method(card).label == "visa ****1111"
    assert wire.stored_method(token_card).label == "visa ****4242"
    amex = {"id": "k1", "brand": "american_express", "card_number": "343434XXXXX4343"}
    assert wire.stored_method(amex).label == "american express ****4343"
    assert wire.stored_method({"id": "k2"}).label == "card"
    with pytest.raises(ValueError, match="no id"):
        wire.stored_method({"brand": "visa"})


def test_same_card_compares_masked_data() -> None:
    token_card = {
        "card_number": "411111XXXXXX1111",
        "expiration_month": "12",
        "expiration_year": "30",
        "holder_name": "Ana",
    }
    card = token_card | {"id": "k1", "card_number": "1111"}
    assert wire.same_card(token_card, card)
    assert not wire.same_card(token_card, card | {"expiration_year": "31"})
    assert not wire.same_card(token_card, card | {"card_number": "4242"})


# -- notifications ---------------------------------------------------------------------------------

SUCCEEDED = (
    b'{"type":"charge.succeeded","event_date":"2013-11-22T11:04:49-06:00","transaction":{'
    b'"amount":2000.0,"authorization":"801585","method":"card","operation_type":"in",'
    b'"transaction_type":"charge","status":"completed","currency":"MXN",'
    b'"creation_date":"2013-11-22T11:04:49-06:00","description":"Ejemplo de cargo",'
    b'"error_message":null,"order_id":"inv_1-1","id":"tlxcm4vfjdrj1tk0iptk"}}'
)


def test_a_charge_notification_names_the_charge_and_our_key() -> None:
    facts = wire.notification_facts(SUCCEEDED)
    assert facts.event_id == "charge.succeeded:tlxcm4vfjdrj1tk0iptk:completed"
    assert facts.kind == "charge.succeeded"
    assert facts.charge_reference == "tlxcm4vfjdrj1tk0iptk"
    assert facts.idempotency_key == "inv_1-1"
    assert facts.verified is False


def test_a_redelivery_with_another_event_date_has_the_same_event_id() -> None:
    again = SUCCEEDED.replace(b"2013-11-22T11:04:49-06:00", b"2013-11-22T11:09:49-06:00", 1)
    assert wire.notification_facts(again).event_id == wire.notification_facts(SUCCEEDED).event_id


def test_a_verification_notification() -> None:
    facts = wire.notification_facts(
        b'{"type":"verification","event_date":"2014-01-01T00:00:00-06:00",'
        b'"verification_code":"a1B2c3D4"}'
    )
    assert (facts.event_id, facts.kind, facts.charge_reference) == (
        "verification:a1B2c3D4",
        "verification",
        None,
    )


def test_a_payout_notification_names_no_charge() -> None:
    facts = wire.notification_facts(
        b'{"type":"payout.succeeded","transaction":{"id":"tm1","transaction_type":"payout",'
        b'"status":"completed","order_id":null}}'
    )
    assert (facts.charge_reference, facts.idempotency_key) == (None, None)


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b"[]",
        b"{}",
        b'{"type":""}',
        b'{"type":"verification"}',
        b'{"type":"charge.succeeded"}',
        b'{"type":"charge.succeeded","transaction":{"status":"completed"}}',
        b'{"event":"charge.succeeded","data":{"id":"x"}}',
    ],
)
def test_bodies_that_are_not_openpay_notifications_are_refused(body: bytes) -> None:
    with pytest.raises(wire.NotANotification):
        wire.notification_facts(body)


def test_scrub_masks_card_numbers_only() -> None:
    assert wire.scrub("card 4111111111111111 refused") == "card ************1111 refused"
    assert wire.scrub("order inv-12345 for 150.00") == "order inv-12345 for 150.00"
