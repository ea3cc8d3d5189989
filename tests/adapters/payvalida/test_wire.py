"""Payvalida's wire rules: golden checksum vectors from the documents, and the value forms."""

from __future__ import annotations

import hashlib
from datetime import UTC, date, datetime
from decimal import Decimal

import pytest

from adapters.payvalida import _wire as wire
from adapters.payvalida.fake import DEFAULT_FIXED_HASH
from billing.domain.money import Money
from billing.domain.payments import DeclineKind, ErrorCode, PaymentStatus

GO_FIXED_HASH = DEFAULT_FIXED_HASH
"""Seed 003's Go sample ``fixedHash`` literal."""

# -- golden vectors ----------------------------------------------------------------------------


def test_the_go_samples_fixed_hash_is_the_documents_literal() -> None:
    assert GO_FIXED_HASH.startswith("xxccc_b0b20707cca2b283")
    assert GO_FIXED_HASH.endswith("e86a82c38")
    assert len(GO_FIXED_HASH) == 6 + 128


def test_order_checksum_of_the_curl_examples_fields() -> None:
    """Seed 003: email + country + order + money + amount + FIXED_HASH, over the curl example's
    values and the Go sample's secret (inputs only in the seed: the reference digest's
    recomputed value, pinned)."""
    assert wire.order_checksum(
        "someone@example.com", 343, "999999991", "COP", "9500", GO_FIXED_HASH
    ) == (
        "05d154c9a3366c079b597102920b3603dac204dbad6910abd637bf9991c90e2be56aa40231c92a02dc5f"
        "647a7faa824c71fe074bc29045000f1db2ade2779f69"
    )


def test_order_checksum_is_the_plain_concatenation_the_go_code_hashes() -> None:
    text = "someone@example.com" + "343" + "test42" + "COP" + "20000" + GO_FIXED_HASH
    expected = hashlib.sha512(text.encode()).hexdigest()
    ours = wire.order_checksum(
        "someone@example.com", "343", "test42", "COP", "20000", GO_FIXED_HASH
    )
    assert ours == expected


def test_the_amount_is_hashed_as_sent() -> None:
    first = wire.order_checksum("a@b.co", 343, "o1", "COP", "10000", "s")
    assert first != wire.order_checksum("a@b.co", 343, "o1", "COP", "10000.00", "s")


def test_plan_checksum_of_seed_004s_go_sample() -> None:
    """Seed 004: merchant + amount + interval + interval_count + FIXED_HASH (checksum order,
    not table order), with the Go sample's placeholder secret (inputs only: pinned)."""
    assert wire.plan_checksum("kuanto", "12000", "month", "1", "FIXED_HASH") == (
        "a906c3d352687b94b5ad5545e989b6528c5c198b063bca071798813008dd1846cc0346ce2b31cd508be5"
        "988c47cfc564fdbfa6554560737807eac001f20427ca"
    )


def test_seed_004s_curl_example_checksum_reproduces_without_interval_count() -> None:
    """The example's own checksum is SHA512(kuanto + 12000 + month + seed 003's fixedHash):
    the published value, reproduced exactly, with the option that leaves interval_count out."""
    published = (
        "3f3c826799c2cef777b19cafe7bfa38ec7d334111a4d38f54848ba29ec2050a9ca10e945159098cea1f4"
        "67b9a297643505fc9a8e2b907889376c45ab121ca3a8"
    )
    rules = wire.ChecksumRules(plan_interval_count=False)
    assert wire.plan_checksum("kuanto", "12000", "month", "1", GO_FIXED_HASH, rules=rules) == (
        published
    )
    assert wire.plan_checksum("kuanto", "12000", "month", "1", GO_FIXED_HASH) != published


def test_query_checksum_reproduces_the_consult_pages_example() -> None:
    """Payvalida's "Consultar" example: order 9022932, merchant kuanto, with seed 003's
    fixedHash; the page shows the digest in upper case."""
    published = (
        "7CA708050F7F5B3EB5B9FD271D375DCEFCA71BDEFDF91C96A4C38F906EFA133E95675D332279C89F999B"
        "1909ECF2EBCA7EC177ACED6EA56D1A72244145E377B7"
    )
    upper = wire.ChecksumRules(uppercase=True)
    assert wire.lookup_checksum("9022932", "kuanto", GO_FIXED_HASH, rules=upper) == published
    assert wire.lookup_checksum("9022932", "kuanto", GO_FIXED_HASH) == published.lower()


def test_seed_003s_uppercase_example_is_not_reproducible() -> None:
    """Its secret is unknown: the example is no test vector (reference §3), only a case hint."""
    published = "1AC89E7089355B5069222C01779431A192FC4D459C25584D69B64ABBF605FE7CB54A015296A39D234CA9B94FF9F068423AC1E00F5A319EB18F2167B97C8A0BB1"  # noqa: E501
    ours = wire.order_checksum(
        "someone@example.com", 343, "999999991", "COP", "9500", GO_FIXED_HASH
    )
    assert not wire.checksums_equal(published, ours)


def test_notification_checksums_pinned() -> None:
    """po_id + status + secret (inputs only in the documents: pinned)."""
    assert wire.notification_checksum("999999991", "approved", "FIXED_HASH") == (
        "22b8d33778fe531e497edc26e4ad1ff4a3ed43df1b0ae881e892615f1b28e4ff"
    )
    sha512 = wire.ChecksumRules(notification_algorithm="sha512")
    assert wire.notification_checksum("999999991_2", "approved", "FIXED_HASH", rules=sha512) == (
        "82ab36b4bddaf4bc1af1343cee521a7638d45e07c29028ee1f4f15758e0049d8ea01210e778c358fe2d6"
        "a438903b38be874f47eb0664d037d64bdf7a27d01b7b"
    )


def test_hex_is_always_128_digits_even_with_leading_zeros() -> None:
    for index in range(300):
        assert len(wire.sha512_hex(str(index), "s")) == 128


def test_checksums_compare_in_either_case_and_refuse_junk() -> None:
    digest = wire.sha512_hex("x")
    assert wire.checksums_equal(digest.upper(), digest)
    assert not wire.checksums_equal(digest[:-1] + "0", digest) or digest.endswith("0")
    assert not wire.checksums_equal(None, digest)
    assert not wire.checksums_equal("ñ" * 128, digest)


# -- values ------------------------------------------------------------------------------------


def test_order_ids_are_short_alphanumeric_and_stable() -> None:
    for key in ("inv_123-1", "0f9c2c8e-5d7a-4a43-9b1e-7c1f1f3b2a10-12", "ñ-1", "x" * 300):
        order = wire.order_id(key)
        assert wire.valid_order(order)
        assert len(order) <= 20
        assert order == wire.order_id(key)
    assert wire.order_id("a-1") != wire.order_id("a1")
    assert wire.order_id("inv_123-1") == "inv1231d2d96c4ed5d7"


@pytest.mark.parametrize("order", ["a_1", "a-1", "", "x" * 21, "ñ"])
def test_invalid_order_codes(order: str) -> None:
    assert not wire.valid_order(order)


def test_amounts_in_and_out() -> None:
    assert wire.amount_text(Money.of("9500", "COP")) == "9500"
    assert wire.parse_amount("9,500.00") == Decimal("9500.00")
    assert wire.parse_amount("120.00") == Decimal("120.00")
    assert wire.parse_amount("1.234") is None
    assert wire.parse_amount("-1") is None
    assert wire.parse_amount(True) is None
    assert wire.monto(Decimal("9500")) == "9,500.00"


def test_expiration_dates() -> None:
    assert wire.expiration_text(date(2020, 12, 27)) == "27/12/2020"
    assert wire.parse_expiration("27/12/2020") == date(2020, 12, 27)
    assert wire.parse_expiration("2020-12-27") is None
    assert wire.parse_expiration("31/02/2026") is None
    # 03:00 UTC is still the previous day in Bogotá
    assert wire.expiration_for(datetime(2026, 2, 1, 3, tzinfo=UTC), 7) == date(2026, 2, 7)


def test_descriptions_lose_special_characters() -> None:
    assert wire.plain_text("Factura #12 — año 2026!") == "Factura 12 ano 2026"
    assert wire.plain_text("###") == "Cobro"


def test_checkout_links_get_a_scheme() -> None:
    assert wire.checkout_url("sandbox-checkout.payvalida.com?token=x") == (
        "https://sandbox-checkout.payvalida.com?token=x"
    )
    assert wire.checkout_url("http://127.0.0.1:1/checkout?token=x") == (
        "http://127.0.0.1:1/checkout?token=x"
    )
    assert wire.checkout_url("") is None


def test_recurrent_po_ids_split_on_the_last_underscore() -> None:
    assert wire.split_po_id("999999991_3") == ("999999991", 3)
    assert wire.split_po_id("999999991") == ("999999991", None)
    assert wire.split_po_id("abc_") == ("abc_", None)


def test_order_states_map_to_results() -> None:
    data = {"STATE": "PENDIENTE", "checkout": "sandbox-checkout.payvalida.com?token=t"}
    pending = wire.order_result(data, "o1")
    assert pending.status is PaymentStatus.REQUIRES_ACTION
    assert pending.action_url == "https://sandbox-checkout.payvalida.com?token=t"
    assert wire.order_result({"STATE": "APROBADA"}, "o1").status is PaymentStatus.SUCCEEDED
    for state, code in (("VENCIDA", "expired"), ("CANCELADA", "cancelled")):
        failed = wire.order_result({"STATE": state}, "o1")
        assert failed.decline is DeclineKind.SOFT
        assert failed.error is ErrorCode.PAYER_ABANDONED
        assert (failed.code, failed.reference) == (code, "o1")
    assert wire.order_result({"STATE": "RARA"}, "o1").status is PaymentStatus.PENDING


def test_notification_facts_from_json_and_form() -> None:
    body = wire.notification_body(
        pv_po_id=7, po_id="ord1_2", status="approved", amount=Decimal("9500"),
        currency="COP", payment="PSE", secret="s",
    )  # fmt: skip
    facts = wire.notification_facts(body, "s")
    assert (facts.event_id, facts.kind, facts.charge_reference) == (
        "ord1_2:approved",
        "order.approved",
        "ord1",
    )
    assert facts.verified
    checksum = wire.notification_checksum("ord1", "cancelled", "s")
    form = f"pv_po_id=7&po_id=ord1&status=cancelled&pv_checksum={checksum.upper()}".encode()
    assert wire.notification_facts(form, "s").event_id == "ord1:cancelled"
    with pytest.raises(wire.NotANotification):
        wire.notification_facts(body, "other")
    with pytest.raises(wire.NotANotification):
        wire.notification_facts(b"{}", "s")
    with pytest.raises(wire.NotANotification):
        wire.notification_facts(b"\xff\xfe", "s")
