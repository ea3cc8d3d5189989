from __future__ import annotations

import decimal
from decimal import Decimal, localcontext
from fractions import Fraction

from hypothesis import given
from hypothesis import strategies as st

from billing.domain.invoices import InvoiceLine, LineKind, compose
from billing.domain.ledger import CreditBalance
from billing.domain.money import Currency, Money, Rounding, round_fraction
from billing.domain.taxes import TaxRate, TaxRounding

CODES = ["CLP", "CLF", "MXN", "COP", "USD"]

DECIMAL_MODES = {
    Rounding.HALF_UP: decimal.ROUND_HALF_UP,
    Rounding.HALF_EVEN: decimal.ROUND_HALF_EVEN,
    Rounding.HALF_DOWN: decimal.ROUND_HALF_DOWN,
    Rounding.UP: decimal.ROUND_UP,
    Rounding.DOWN: decimal.ROUND_DOWN,
    Rounding.CEILING: decimal.ROUND_CEILING,
    Rounding.FLOOR: decimal.ROUND_FLOOR,
}

currencies = st.sampled_from(CODES).map(Currency.of)
minors = st.integers()
small_minors = st.integers(min_value=-(10**9), max_value=10**9)
percents = st.integers(min_value=0, max_value=10000).map(lambda n: Decimal(n).scaleb(-2))


@st.composite
def moneys(draw: st.DrawFn, currency: Currency | None = None) -> Money:
    return Money(draw(minors), currency or draw(currencies))


@st.composite
def same_currency_moneys(draw: st.DrawFn, count: int) -> list[Money]:
    currency = draw(currencies)
    return [Money(draw(minors), currency) for _ in range(count)]


@st.composite
def tax_rates(draw: st.DrawFn) -> TaxRate:
    return TaxRate(
        name="IVA",
        percent=draw(percents),
        inclusive=draw(st.booleans()),
        rounding=draw(st.sampled_from(TaxRounding)),
        mode=draw(st.sampled_from(Rounding)),
    )


@st.composite
def charge_lines(draw: st.DrawFn, currency: Currency) -> list[InvoiceLine]:
    kinds = st.sampled_from([LineKind.PLAN, LineKind.PRORATION_CHARGE, LineKind.DEBT])
    return [
        InvoiceLine(
            kind=LineKind.PRORATION_CREDIT if minor < 0 else draw(kinds),
            description="charge",
            amount=Money(minor, currency),
            taxable=draw(st.booleans()),
        )
        for minor in draw(st.lists(small_minors, max_size=6))
    ]


def total(lines: list[InvoiceLine] | tuple[InvoiceLine, ...], currency: Currency) -> Money:
    return sum((line.amount for line in lines), Money.zero(currency))


@given(money=moneys(), parts=st.integers(min_value=1, max_value=50))
def test_splitting_never_creates_or_loses_a_minor_unit(money: Money, parts: int) -> None:
    pieces = money.split(parts)
    assert len(pieces) == parts
    assert sum(pieces) == money
    for piece in pieces:
        assert piece.currency == money.currency
        assert abs(piece.minor - Fraction(money.minor, parts)) < 1


@given(
    money=moneys(),
    weights=st.lists(st.integers(min_value=0, max_value=10**6), min_size=1, max_size=12).filter(
        any
    ),
)
def test_allocating_never_creates_or_loses_a_minor_unit(money: Money, weights: list[int]) -> None:
    pieces = money.allocate(weights)
    assert len(pieces) == len(weights)
    assert sum(pieces) == money
    for piece, weight in zip(pieces, weights, strict=True):
        share = Fraction(money.minor * weight, sum(weights))
        assert abs(piece.minor - share) < 1
        if weight == 0:
            assert piece.is_zero()


@given(
    numerator=st.integers(min_value=-(10**30), max_value=10**30),
    digits=st.integers(min_value=0, max_value=12),
    rounding=st.sampled_from(Rounding),
)
def test_round_fraction_agrees_with_decimal_quantize(
    numerator: int, digits: int, rounding: Rounding
) -> None:
    value = Fraction(numerator, 10**digits)
    with localcontext() as context:
        context.prec = 100
        expected = (
            Decimal(numerator)
            .scaleb(-digits)
            .quantize(Decimal(1), rounding=DECIMAL_MODES[rounding])
        )
    assert round_fraction(value, rounding) == int(expected)


@given(pair=same_currency_moneys(2))
def test_addition_is_commutative(pair: list[Money]) -> None:
    a, b = pair
    assert a + b == b + a


@given(triple=same_currency_moneys(3))
def test_addition_is_associative(triple: list[Money]) -> None:
    a, b, c = triple
    assert (a + b) + c == a + (b + c)


@given(money=moneys())
def test_zero_is_the_identity_of_addition(money: Money) -> None:
    zero = Money.zero(money.currency)
    assert money + zero == money
    assert zero + money == money
    assert money - money == zero


@given(money=moneys())
def test_an_amount_survives_a_round_trip_through_its_decimal_string(money: Money) -> None:
    assert Money.of(money.to_decimal_string(), money.currency) == money
    assert Money.of(money.amount, money.currency) == money


@given(data=st.data(), currency=currencies, rate=tax_rates())
def test_taxed_lines_sum_to_the_charges_plus_tax_or_to_the_charges_when_included(
    data: st.DataObject, currency: Currency, rate: TaxRate
) -> None:
    charges = data.draw(charge_lines(currency))
    lines, tax_lines = rate.apply(charges)
    assert len(lines) == len(charges)
    assert all(line.kind is LineKind.TAX for line in tax_lines)
    if rate.inclusive:
        assert total(lines + tax_lines, currency) == total(charges, currency)
    else:
        assert lines == charges
        assert total(lines + tax_lines, currency) == total(charges, currency) + total(
            tax_lines, currency
        )
    for before, after in zip(charges, lines, strict=True):
        if not before.taxable:
            assert after == before
    taxed = sum((Fraction(line.amount.minor) for line in charges if line.taxable), Fraction(0))
    share = Fraction(rate.percent) / (100 + Fraction(rate.percent) if rate.inclusive else 100)
    tax_count = sum(1 for line in charges if line.taxable)
    assert abs(total(tax_lines, currency).minor - taxed * share) <= max(tax_count, 1)


@given(
    data=st.data(),
    currency=currencies,
    rate=st.none() | tax_rates(),
    credit=st.integers(min_value=0, max_value=10**10),
)
def test_compose_never_charges_below_zero_and_its_lines_sum_to_the_total(
    data: st.DataObject, currency: Currency, rate: TaxRate | None, credit: int
) -> None:
    charges = data.draw(charge_lines(currency))
    lines, change = compose(charges, currency=currency, tax=rate, credit=Money(credit, currency))
    invoice_total = total(lines, currency)
    assert not invoice_total.is_negative()
    before_credit = total([line for line in lines if line.kind is not LineKind.CREDIT], currency)
    credit_lines = [line for line in lines if line.kind is LineKind.CREDIT]
    assert total(credit_lines, currency) == change
    assert invoice_total == before_credit + change
    if before_credit.is_negative():
        assert invoice_total.is_zero()
        assert change == -before_credit
    else:
        assert invoice_total.minor == max(before_credit.minor - credit, 0)
    after = CreditBalance(Money(credit, currency)).apply(change)
    assert not after.amount.is_negative()
    assert after.amount.minor == credit + change.minor
