from __future__ import annotations

from decimal import Decimal

import pytest

from billing.domain.errors import FloatNotAllowed, InvalidArgument
from billing.domain.invoices import InvoiceLine, LineKind, compose
from billing.domain.money import Currency, Money
from billing.domain.taxes import TaxRate, TaxRounding

CLP = Currency.of("CLP")
MXN = Currency.of("MXN")
IVA = TaxRate.of("IVA", "19")
IVA_INCLUDED = TaxRate.of("IVA", "19", inclusive=True)


def line(minor: int, currency: str = "CLP", *, taxable: bool = True, kind=LineKind.PLAN):
    return InvoiceLine(
        kind=kind,
        description="Plan Pro",
        amount=Money.from_minor(minor, currency),
        taxable=taxable,
    )


def amounts(lines: list[InvoiceLine] | tuple[InvoiceLine, ...]) -> list[int]:
    return [each.amount.minor for each in lines]


def total(lines: list[InvoiceLine] | tuple[InvoiceLine, ...], currency: str = "CLP") -> Money:
    return sum((each.amount for each in lines), Money.zero(currency))


def test_qvo_example_ten_thousand_pesos_at_19_percent_exclusive_charges_11900() -> None:
    charges = [line(10000)]
    lines, tax_lines = IVA.apply(charges)
    assert lines == charges
    assert len(tax_lines) == 1
    (tax,) = tax_lines
    assert tax.kind is LineKind.TAX
    assert tax.amount == Money.of("1900", "CLP")
    assert "IVA" in tax.description
    assert tax.description == "IVA 19%"
    assert tax.taxable is False
    assert total(lines + tax_lines) == Money.of("11900", "CLP")


def test_an_inclusive_rate_restates_the_line_net_and_adds_the_tax_inside_it() -> None:
    lines, tax_lines = IVA_INCLUDED.apply([line(11900)])
    assert amounts(lines) == [10000]
    assert amounts(tax_lines) == [1900]
    assert tax_lines[0].description == "IVA 19% (included)"
    assert total(lines + tax_lines) == Money.of("11900", "CLP")


def test_per_invoice_rounding_taxes_the_sum_of_three_small_lines_once() -> None:
    rate = TaxRate.of("IVA", "16")
    lines, tax_lines = rate.apply([line(3, "MXN")] * 3)
    assert amounts(lines) == [3, 3, 3]
    assert amounts(tax_lines) == [1]
    assert tax_lines[0].amount == Money.of("0.01", "MXN")


def test_per_line_rounding_gives_each_small_line_its_own_zero_tax() -> None:
    rate = TaxRate.of("IVA", "16", rounding=TaxRounding.PER_LINE)
    lines, tax_lines = rate.apply([line(3, "MXN")] * 3)
    assert amounts(lines) == [3, 3, 3]
    assert [each.amount for each in tax_lines] == [Money.of("0.00", "MXN")] * 3
    assert {each.kind for each in tax_lines} == {LineKind.TAX}


def test_per_line_rounding_accepts_its_name_as_a_string() -> None:
    assert TaxRate.of("IVA", "16", rounding="per_line").rounding is TaxRounding.PER_LINE


def test_an_unknown_rounding_rule_is_refused() -> None:
    with pytest.raises(InvalidArgument) as raised:
        TaxRate.of("IVA", "16", rounding="per_customer")
    assert raised.value.field == "tax.rounding"


def test_an_inclusive_tax_per_invoice_is_shared_back_by_largest_remainder() -> None:
    charges = [line(1000), line(1000), line(1000)]
    lines, tax_lines = IVA_INCLUDED.apply(charges)
    assert amounts(tax_lines) == [479]
    assert amounts(lines) == [840, 840, 841]
    assert total(lines + tax_lines) == Money.of("3000", "CLP")


def test_an_inclusive_tax_per_line_restates_each_line_by_its_own_tax() -> None:
    rate = TaxRate.of("IVA", "19", inclusive=True, rounding=TaxRounding.PER_LINE)
    lines, tax_lines = rate.apply([line(1000), line(1000), line(1000)])
    assert amounts(tax_lines) == [160, 160, 160]
    assert amounts(lines) == [840, 840, 840]
    assert total(lines + tax_lines) == Money.of("3000", "CLP")


def test_lines_that_are_not_taxable_are_left_alone() -> None:
    debt = line(5000, taxable=False, kind=LineKind.DEBT)
    lines, tax_lines = IVA_INCLUDED.apply([debt, line(11900)])
    assert lines[0] is debt
    assert amounts(lines) == [5000, 10000]
    assert amounts(tax_lines) == [1900]


def test_a_set_of_lines_with_nothing_taxable_gets_no_tax_line() -> None:
    debt = line(5000, taxable=False, kind=LineKind.DEBT)
    assert IVA.apply([debt]) == ([debt], [])
    assert IVA.apply([]) == ([], [])


@pytest.mark.parametrize("percent", ["100.01", "101", "-0.01", -1])
def test_a_percent_outside_0_to_100_is_refused(percent: object) -> None:
    with pytest.raises(InvalidArgument) as raised:
        TaxRate.of("IVA", percent)  # type: ignore[arg-type]
    assert raised.value.field == "tax.percent"


def test_a_float_percent_is_refused() -> None:
    with pytest.raises(FloatNotAllowed) as raised:
        TaxRate.of("IVA", 19.0)  # type: ignore[arg-type]
    assert raised.value.field == "tax.percent"


@pytest.mark.parametrize(("percent", "tax"), [("0", 0), ("100", 10000), (Decimal("19.0"), 1900)])
def test_zero_and_one_hundred_percent_are_accepted(percent: object, tax: int) -> None:
    rate = TaxRate.of("IVA", percent)  # type: ignore[arg-type]
    assert amounts(rate.apply([line(10000)])[1]) == [tax]


def test_a_tax_needs_a_name() -> None:
    with pytest.raises(InvalidArgument) as raised:
        TaxRate.of(" ", "19")
    assert raised.value.field == "tax.name"


def test_gross_adds_the_tax_when_exclusive_and_not_when_inclusive() -> None:
    assert IVA.gross(Money.of("10000", "CLP")) == Money.of("11900", "CLP")
    assert IVA_INCLUDED.gross(Money.of("11900", "CLP")) == Money.of("11900", "CLP")
    assert TaxRate.of("IVA", "16").gross(Money.of("0.03", "MXN")) == Money.of("0.03", "MXN")
    assert TaxRate.of("IVA", "16").gross(Money.of("0.04", "MXN")) == Money.of("0.05", "MXN")


def test_compose_consumes_credit_before_charging() -> None:
    lines, change = compose([line(10000)], currency=CLP, tax=IVA, credit=Money.of("2000", "CLP"))
    assert amounts(lines) == [10000, 1900, -2000]
    assert [each.kind for each in lines] == [LineKind.PLAN, LineKind.TAX, LineKind.CREDIT]
    assert change == Money.of("-2000", "CLP")
    assert total(lines) == Money.of("9900", "CLP")


def test_compose_with_more_credit_than_the_total_charges_nothing() -> None:
    lines, change = compose([line(10000)], currency=CLP, tax=IVA, credit=Money.of("50000", "CLP"))
    assert amounts(lines) == [10000, 1900, -11900]
    assert change == Money.of("-11900", "CLP")
    assert total(lines) == Money.zero("CLP")


def test_compose_moves_charges_below_zero_to_the_credit_balance() -> None:
    charges = [line(3000), line(-5000, kind=LineKind.PRORATION_CREDIT)]
    lines, change = compose(charges, currency=CLP, tax=None, credit=Money.of("700", "CLP"))
    assert amounts(lines) == [3000, -5000, 2000]
    assert lines[-1].kind is LineKind.CREDIT
    assert change == Money.of("2000", "CLP")
    assert total(lines) == Money.zero("CLP")


def test_compose_without_credit_or_tax_returns_the_charges() -> None:
    lines, change = compose([line(10000)], currency=CLP, tax=None, credit=Money.zero("CLP"))
    assert amounts(lines) == [10000]
    assert change == Money.zero("CLP")


def test_compose_refuses_a_charge_in_another_currency() -> None:
    with pytest.raises(InvalidArgument) as raised:
        compose([line(10000), line(100, "MXN")], currency=CLP, tax=None, credit=Money.zero("CLP"))
    assert raised.value.field == "lines"


@pytest.mark.parametrize("credit", [Money.zero("MXN"), Money.of("-1", "CLP")])
def test_compose_refuses_credit_that_is_negative_or_in_another_currency(credit: Money) -> None:
    with pytest.raises(InvalidArgument) as raised:
        compose([line(10000)], currency=CLP, tax=None, credit=credit)
    assert raised.value.field == "credit"
