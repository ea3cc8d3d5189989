from __future__ import annotations

from datetime import date
from decimal import Decimal

import pytest

from billing.domain.errors import (
    ExchangeRateNotFound,
    FloatNotAllowed,
    InvalidArgument,
    UnknownCurrency,
)
from billing.domain.exchange import ExchangeRate, TableExchangeRates, convert
from billing.domain.money import Currency, Money, Rounding

CLF = Currency.of("CLF")
CLP = Currency.of("CLP")
USD = Currency.of("USD")


def uf_table() -> TableExchangeRates:
    return TableExchangeRates(
        [
            ExchangeRate.of(date(2024, 1, 10), "CLF", "CLP", "36500.00"),
            ExchangeRate.of(date(2024, 1, 1), "CLF", "CLP", "36000.00"),
            ExchangeRate.of(date(2024, 2, 1), "CLF", "CLP", "39000.50"),
        ]
    )


def test_an_exchange_rate_keeps_its_exact_value_and_currencies() -> None:
    rate = ExchangeRate.of(date(2024, 1, 1), "CLF", "CLP", "39000.50")
    assert rate == ExchangeRate(
        valid_from=date(2024, 1, 1), source=CLF, target=CLP, rate=Decimal("39000.50")
    )


@pytest.mark.parametrize("value", ["0", "-1", 0, Decimal("-0.0001")])
def test_an_exchange_rate_must_be_positive(value: object) -> None:
    with pytest.raises(InvalidArgument) as raised:
        ExchangeRate.of(date(2024, 1, 1), "CLF", "CLP", value)  # type: ignore[arg-type]
    assert raised.value.field == "rate"


def test_an_exchange_rate_refuses_a_float() -> None:
    with pytest.raises(FloatNotAllowed) as raised:
        ExchangeRate.of(date(2024, 1, 1), "CLF", "CLP", 39000.5)  # type: ignore[arg-type]
    assert raised.value.field == "rate"


def test_an_exchange_rate_needs_two_different_currencies() -> None:
    with pytest.raises(InvalidArgument) as raised:
        ExchangeRate.of(date(2024, 1, 1), "CLP", "CLP", "1")
    assert raised.value.field == "target"


@pytest.mark.parametrize(("source", "target"), [("UF", "CLP"), ("CLF", "XYZ")])
def test_an_exchange_rate_refuses_an_unknown_currency(source: str, target: str) -> None:
    with pytest.raises(UnknownCurrency) as raised:
        ExchangeRate.of(date(2024, 1, 1), source, target, "1")
    assert raised.value.field == "currency"


def test_an_exchange_rate_needs_a_date() -> None:
    with pytest.raises(InvalidArgument) as raised:
        ExchangeRate.of("2024-01-01", "CLF", "CLP", "1")  # type: ignore[arg-type]
    assert raised.value.field == "date"


@pytest.mark.parametrize(
    ("on", "expected"),
    [
        (date(2024, 1, 1), Decimal("36000.00")),
        (date(2024, 1, 9), Decimal("36000.00")),
        (date(2024, 1, 10), Decimal("36500.00")),
        (date(2024, 1, 31), Decimal("36500.00")),
        (date(2024, 2, 1), Decimal("39000.50")),
        (date(2030, 1, 1), Decimal("39000.50")),
    ],
)
def test_the_table_gives_the_latest_rate_on_or_before_the_date(on: date, expected: Decimal) -> None:
    assert uf_table().rate(CLF, CLP, on) == expected


def test_the_table_has_no_rate_before_its_first_one() -> None:
    with pytest.raises(ExchangeRateNotFound) as raised:
        uf_table().rate(CLF, CLP, date(2023, 12, 31))
    assert isinstance(raised.value, LookupError)
    assert (raised.value.source, raised.value.target, raised.value.on) == (
        "CLF",
        "CLP",
        date(2023, 12, 31),
    )


@pytest.mark.parametrize(("source", "target"), [(USD, CLP), (CLP, CLF)])
def test_the_table_has_no_rate_for_a_pair_it_was_not_given(
    source: Currency, target: Currency
) -> None:
    with pytest.raises(ExchangeRateNotFound) as raised:
        uf_table().rate(source, target, date(2024, 6, 1))
    assert (raised.value.source, raised.value.target) == (source.code, target.code)


def test_the_table_refuses_two_rates_for_one_pair_on_one_date() -> None:
    with pytest.raises(InvalidArgument) as raised:
        TableExchangeRates(
            [
                ExchangeRate.of(date(2024, 1, 1), "CLF", "CLP", "36000"),
                ExchangeRate.of(date(2024, 1, 1), "CLF", "CLP", "36001"),
            ]
        )
    assert raised.value.field == "rates"


def test_the_table_accepts_one_date_for_two_different_pairs() -> None:
    table = TableExchangeRates(
        [
            ExchangeRate.of(date(2024, 1, 1), "CLF", "CLP", "36000"),
            ExchangeRate.of(date(2024, 1, 1), "USD", "CLP", "900"),
        ]
    )
    assert table.rate(USD, CLP, date(2024, 1, 1)) == Decimal("900")
    assert table.rate(CLF, CLP, date(2024, 1, 1)) == Decimal("36000")


def test_half_a_uf_is_converted_to_whole_pesos_half_up() -> None:
    converted = convert(Money.of("0.5", "CLF"), CLP, uf_table(), date(2024, 2, 15))
    assert converted == Money.of("19500", "CLP")


@pytest.mark.parametrize(
    ("rounding", "pesos"),
    [
        (Rounding.HALF_UP, 19501),
        (Rounding.HALF_EVEN, 19500),
        (Rounding.HALF_DOWN, 19500),
        (Rounding.FLOOR, 19500),
        (Rounding.CEILING, 19501),
    ],
)
def test_the_rounding_mode_decides_a_conversion_that_lands_on_half_a_peso(
    rounding: Rounding, pesos: int
) -> None:
    rates = TableExchangeRates([ExchangeRate.of(date(2024, 1, 1), "CLF", "CLP", "39001")])
    converted = convert(Money.of("0.5", "CLF"), CLP, rates, date(2024, 1, 1), rounding)
    assert converted == Money.from_minor(pesos, "CLP")


def test_converting_pesos_to_uf_keeps_four_decimals() -> None:
    rates = TableExchangeRates([ExchangeRate.of(date(2024, 1, 1), "CLP", "CLF", "0.00002564")])
    converted = convert(Money.of("19500", "CLP"), CLF, rates, date(2024, 1, 1))
    assert converted == Money.of("0.5000", "CLF")


def test_converting_to_the_same_currency_returns_the_amount_unchanged() -> None:
    money = Money.of("19500", "CLP")
    assert convert(money, CLP, TableExchangeRates(), date(2024, 1, 1)) is money


def test_converting_without_a_rate_raises_rate_not_found() -> None:
    with pytest.raises(ExchangeRateNotFound):
        convert(Money.of("1", "USD"), CLP, uf_table(), date(2024, 1, 1))
