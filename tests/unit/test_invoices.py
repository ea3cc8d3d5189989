"""Invoices: numbering, finalizing, immutability and the status lifecycle."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from billing.domain.errors import InvalidArgument, InvoiceImmutable
from billing.domain.invoices import (
    Invoice,
    InvoiceLine,
    InvoiceReason,
    InvoiceStatus,
    LineKind,
    invoice_number,
)
from billing.domain.money import Currency, Money

AT = datetime(2026, 1, 31, 15, tzinfo=UTC)
CLP = Currency.of("CLP")


def line(amount: int, kind: LineKind = LineKind.PLAN) -> InvoiceLine:
    return InvoiceLine(kind=kind, description="Plan Oro", amount=Money(amount, CLP), taxable=True)


def draft(*amounts: int) -> Invoice:
    return Invoice(
        id="in_1",
        customer_id="c1",
        subscription_id="s1",
        currency=CLP,
        reason=InvoiceReason.RENEWAL,
        period=None,
        lines=tuple(line(a) for a in amounts),
        created_at=AT,
    )


def test_invoice_numbers_are_zero_padded_and_deterministic():
    assert invoice_number("INV", 7) == "INV-000007"
    assert invoice_number("F", 1234567) == "F-1234567"


def test_invoice_numbers_start_at_one():
    with pytest.raises(InvalidArgument) as error:
        invoice_number("INV", 0)
    assert error.value.field == "sequence"


def test_the_total_is_the_sum_of_the_lines():
    assert draft(15000, 2850).total == Money(17850, CLP)


def test_finalizing_numbers_the_invoice_and_opens_it():
    invoice, events = draft(15000).finalize(number="INV-000001", at=AT)
    assert invoice.status is InvoiceStatus.OPEN
    assert invoice.number == "INV-000001"
    assert invoice.finalized_at == AT
    assert [event.name for event in events] == ["invoice.created"]


def test_an_invoice_with_nothing_to_pay_is_paid_when_finalized():
    invoice, events = draft(0).finalize(number="INV-000001", at=AT)
    assert invoice.status is InvoiceStatus.PAID
    assert invoice.paid_at == AT
    assert [event.name for event in events] == ["invoice.created", "invoice.paid"]


def test_a_draft_takes_more_lines_but_a_finalized_invoice_is_immutable():
    extended = draft(15000).with_line(line(1000))
    assert extended.total == Money(16000, CLP)
    final, _ = extended.finalize(number="INV-000001", at=AT)
    with pytest.raises(InvoiceImmutable) as error:
        final.with_line(line(1))
    assert error.value.status == "open"


def test_an_invoice_cannot_be_finalized_twice():
    final, _ = draft(15000).finalize(number="INV-000001", at=AT)
    with pytest.raises(InvoiceImmutable):
        final.finalize(number="INV-000002", at=AT)


def test_a_negative_total_cannot_be_finalized():
    with pytest.raises(InvalidArgument) as error:
        draft(-5).finalize(number="INV-000001", at=AT)
    assert error.value.field == "lines"


def test_an_open_invoice_can_be_paid_written_off_or_voided():
    final, _ = draft(15000).finalize(number="INV-000001", at=AT)
    assert final.pay(at=AT)[0].status is InvoiceStatus.PAID
    assert final.mark_uncollectible(at=AT)[0].status is InvoiceStatus.UNCOLLECTIBLE
    assert final.void(at=AT)[0].status is InvoiceStatus.VOID


def test_an_uncollectible_invoice_can_still_be_paid():
    final, _ = draft(15000).finalize(number="INV-000001", at=AT)
    written_off, _ = final.mark_uncollectible(at=AT)
    paid, events = written_off.pay(at=AT)
    assert paid.status is InvoiceStatus.PAID
    assert [event.name for event in events] == ["invoice.paid"]


def test_a_paid_invoice_can_be_neither_voided_nor_paid_again():
    paid, _ = draft(15000).finalize(number="INV-000001", at=AT)[0].pay(at=AT)
    with pytest.raises(InvoiceImmutable):
        paid.void(at=AT)
    with pytest.raises(InvoiceImmutable):
        paid.pay(at=AT)


def test_a_draft_cannot_be_paid_before_it_is_finalized():
    with pytest.raises(InvoiceImmutable):
        draft(15000).pay(at=AT)


def test_lines_in_another_currency_are_refused():
    with pytest.raises(InvalidArgument):
        draft(15000).with_line(
            InvoiceLine(kind=LineKind.PLAN, description="x", amount=Money.of("1", "USD"))
        )


def test_a_naive_creation_time_is_refused():
    with pytest.raises(InvalidArgument) as error:
        Invoice(
            id="in_1",
            customer_id="c1",
            subscription_id=None,
            currency=CLP,
            reason=InvoiceReason.RENEWAL,
            period=None,
            lines=(),
            created_at=datetime(2026, 1, 1),
        )
    assert error.value.field == "created_at"
