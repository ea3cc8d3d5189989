from __future__ import annotations

import subprocess
import sys
from decimal import Decimal
from fractions import Fraction

import pytest

from billing.domain.errors import (
    CurrencyMismatch,
    FloatNotAllowed,
    InvalidArgument,
    UnknownCurrency,
)
from billing.domain.money import Currency, Money, Rounding, apportion, round_fraction


def clp(minor: int) -> Money:
    return Money.from_minor(minor, "CLP")


@pytest.mark.parametrize(
    ("code", "exponent"),
    [("CLP", 0), ("CLF", 4), ("MXN", 2), ("COP", 0), ("USD", 2), ("HUF", 2), ("IDR", 2)],
)
def test_a_currency_takes_its_exponent_from_the_engines_pinned_table(
    code: str, exponent: int
) -> None:
    assert Currency.of(code) == Currency(code=code, exponent=exponent)


def test_colombian_pesos_are_whole_pesos_whatever_babel_says() -> None:
    with pytest.raises(InvalidArgument) as raised:
        Money.of("11900.50", "COP")
    assert raised.value.field == "amount"
    assert Money.of("11900", "COP").minor == 11900


def test_the_exponents_do_not_depend_on_any_installed_library() -> None:
    # a fresh interpreter where babel cannot even be imported still knows every exponent
    code = (
        "import sys; sys.modules['babel'] = None; "
        "from billing.domain.money import Currency; "
        "print(Currency.of('COP').exponent, Currency.of('CLF').exponent)"
    )
    shown = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert shown.stdout.split() == ["0", "4"]


@pytest.mark.parametrize(
    ("amount", "code", "minor"),
    [
        (Decimal("15000"), "CLP", 15000),
        (15000, "CLP", 15000),
        ("15000.0", "CLP", 15000),
        ("150.00", "MXN", 15000),
        (Decimal("150.5"), "MXN", 15050),
        (7, "USD", 700),
        ("0.5", "CLF", 5000),
        ("-12.34", "USD", -1234),
        ("-12", "COP", -12),
    ],
)
def test_money_is_built_from_an_exact_amount_in_major_units(
    amount: Decimal | int | str, code: str, minor: int
) -> None:
    assert Money.of(amount, code) == Money.from_minor(minor, code)


def test_money_refuses_a_float_and_names_the_field() -> None:
    with pytest.raises(FloatNotAllowed) as raised:
        Money.of(150.0, "MXN")
    assert isinstance(raised.value, TypeError)
    assert raised.value.field == "amount"
    assert "float" in raised.value.rule


def test_money_refuses_a_bool_amount() -> None:
    with pytest.raises(InvalidArgument) as raised:
        Money.of(True, "CLP")
    assert raised.value.field == "amount"


def test_money_refuses_a_string_that_is_not_a_number() -> None:
    with pytest.raises(InvalidArgument) as raised:
        Money.of("quince mil", "CLP")
    assert raised.value.field == "amount"


@pytest.mark.parametrize("code", ["XYZ", "UF", 123])
def test_money_refuses_an_unknown_currency(code: object) -> None:
    with pytest.raises(UnknownCurrency) as raised:
        Money.of("1", code)  # type: ignore[arg-type]
    assert raised.value.field == "currency"
    assert raised.value.value == code


def test_money_refuses_more_decimals_than_the_currency_has() -> None:
    with pytest.raises(InvalidArgument) as raised:
        Money.of("15000.5", "CLP")
    assert raised.value.field == "amount"
    assert "rounding" in raised.value.rule


@pytest.mark.parametrize(
    ("rounding", "minor"),
    [
        (Rounding.HALF_UP, 15001),
        (Rounding.HALF_EVEN, 15000),
        (Rounding.HALF_DOWN, 15000),
        (Rounding.CEILING, 15001),
        (Rounding.FLOOR, 15000),
    ],
)
def test_money_rounds_extra_decimals_only_with_the_named_mode(
    rounding: Rounding, minor: int
) -> None:
    assert Money.of("150.005", "MXN", rounding=rounding) == Money.from_minor(minor, "MXN")


def test_money_adds_and_subtracts_within_one_currency() -> None:
    assert clp(10000) + clp(1900) == clp(11900)
    assert clp(10000) - clp(11900) == clp(-1900)
    assert -clp(5) == clp(-5)
    assert abs(clp(-5)) == clp(5)


@pytest.mark.parametrize(
    "operation",
    [
        lambda a, b: a + b,
        lambda a, b: a - b,
        lambda a, b: a < b,
        lambda a, b: a <= b,
        lambda a, b: a > b,
        lambda a, b: a >= b,
    ],
    ids=["add", "sub", "lt", "le", "gt", "ge"],
)
def test_money_refuses_arithmetic_and_comparison_across_currencies(operation) -> None:
    with pytest.raises(CurrencyMismatch) as raised:
        operation(clp(100), Money.from_minor(100, "MXN"))
    assert isinstance(raised.value, TypeError)
    assert (raised.value.left, raised.value.right) == ("CLP", "MXN")


def test_money_compares_within_one_currency() -> None:
    assert clp(1) < clp(2)
    assert clp(2) <= clp(2)
    assert clp(3) > clp(2)
    assert clp(2) >= clp(2)
    assert max(clp(1), clp(3), clp(2)) == clp(3)


def test_sum_of_a_list_of_money_is_money() -> None:
    assert sum([clp(100), clp(200), clp(-50)]) == clp(250)


def test_money_multiplies_by_a_whole_number_on_either_side() -> None:
    assert clp(1500) * 3 == clp(4500)
    assert 3 * clp(1500) == clp(4500)


def test_money_refuses_to_multiply_by_a_float() -> None:
    with pytest.raises(FloatNotAllowed) as raised:
        clp(1500) * 1.5
    assert raised.value.field == "factor"


@pytest.mark.parametrize(
    ("minor", "ratio", "rounding", "expected"),
    [
        (1000, Fraction(1, 3), Rounding.HALF_UP, 333),
        (125, Decimal("0.1"), Rounding.HALF_UP, 13),
        (125, "0.1", Rounding.HALF_EVEN, 12),
        (135, "0.1", Rounding.HALF_EVEN, 14),
        (125, "0.1", Rounding.HALF_DOWN, 12),
        (-125, "0.1", Rounding.HALF_UP, -13),
        (-125, "0.1", Rounding.FLOOR, -13),
        (-125, "0.1", Rounding.CEILING, -12),
        (999, Fraction(1, 1000), Rounding.UP, 1),
        (999, Fraction(1, 1000), Rounding.DOWN, 0),
        (7, 2, Rounding.HALF_UP, 14),
    ],
)
def test_scaled_rounds_once_with_the_named_mode(
    minor: int, ratio: object, rounding: Rounding, expected: int
) -> None:
    assert clp(minor).scaled(ratio, rounding) == clp(expected)  # type: ignore[arg-type]


def test_scaled_rounds_half_up_by_default() -> None:
    assert clp(125).scaled("0.1") == clp(13)
    assert clp(-125).scaled("0.1") == clp(-13)


def test_scaled_refuses_a_float_ratio() -> None:
    with pytest.raises(FloatNotAllowed) as raised:
        clp(100).scaled(0.5)  # type: ignore[arg-type]
    assert raised.value.field == "ratio"


def test_split_gives_the_leftover_units_to_the_first_parts() -> None:
    assert clp(100).split(3) == [clp(34), clp(33), clp(33)]


def test_split_of_a_negative_amount_mirrors_the_positive_one() -> None:
    assert clp(-100).split(3) == [clp(-34), clp(-33), clp(-33)]


def test_split_into_one_part_returns_the_whole_amount() -> None:
    assert clp(101).split(1) == [clp(101)]


@pytest.mark.parametrize("parts", [0, -1, True, "3"])
def test_split_refuses_fewer_than_one_part(parts: object) -> None:
    with pytest.raises(InvalidArgument) as raised:
        clp(100).split(parts)  # type: ignore[arg-type]
    assert raised.value.field == "parts"


def test_allocate_follows_the_weights_and_loses_no_unit() -> None:
    assert clp(100).allocate([1, 1, 1]) == [clp(34), clp(33), clp(33)]
    assert clp(1000).allocate([Decimal("0.7"), Decimal("0.3")]) == [clp(700), clp(300)]
    assert clp(10).allocate([0, 1, 2]) == [clp(0), clp(3), clp(7)]
    assert clp(-10).allocate([0, 1, 2]) == [clp(0), clp(-3), clp(-7)]


@pytest.mark.parametrize("weights", [[], [1, -1], [0, 0], [Decimal(0)]])
def test_allocate_refuses_weights_that_are_empty_negative_or_all_zero(weights: list) -> None:
    with pytest.raises(InvalidArgument) as raised:
        clp(100).allocate(weights)
    assert raised.value.field == "weights"


def test_allocate_refuses_a_float_weight() -> None:
    with pytest.raises(FloatNotAllowed) as raised:
        clp(100).allocate([0.5, 0.5])  # type: ignore[list-item]
    assert raised.value.field == "weights"


@pytest.mark.parametrize(
    ("money", "text", "amount"),
    [
        (Money.from_minor(15000, "MXN"), "150.00", Decimal("150.00")),
        (Money.from_minor(15000, "CLP"), "15000", Decimal("15000")),
        (Money.from_minor(5000, "CLF"), "0.5000", Decimal("0.5000")),
        (Money.from_minor(-5, "USD"), "-0.05", Decimal("-0.05")),
        (Money.zero("COP"), "0", Decimal("0")),
    ],
)
def test_money_shows_exactly_the_currency_s_decimals(
    money: Money, text: str, amount: Decimal
) -> None:
    assert money.to_decimal_string() == text
    assert str(money) == f"{text} {money.currency.code}"
    assert money.amount == amount
    assert money.amount.as_tuple().exponent == -money.currency.exponent


def test_amount_keeps_every_digit_of_a_very_large_amount() -> None:
    money = Money.from_minor(10**30 + 1, "MXN")
    assert money.to_decimal_string() == "10000000000000000000000000000.01"
    assert money.amount == Decimal("10000000000000000000000000000.01")


def test_money_refuses_a_float_or_bool_count_of_minor_units() -> None:
    with pytest.raises(FloatNotAllowed):
        Money(1.0, Currency.of("CLP"))  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument) as raised:
        Money(True, Currency.of("CLP"))
    assert raised.value.field == "minor"


_ROUNDING_TABLE: dict[str, tuple[int, int, int, int, int, int, int]] = {
    # value: HALF_UP, HALF_EVEN, HALF_DOWN, UP, DOWN, CEILING, FLOOR
    "5/2": (3, 2, 2, 3, 2, 3, 2),
    "-5/2": (-3, -2, -2, -3, -2, -2, -3),
    "7/2": (4, 4, 3, 4, 3, 4, 3),
    "-7/2": (-4, -4, -3, -4, -3, -3, -4),
    "1/2": (1, 0, 0, 1, 0, 1, 0),
    "-1/2": (-1, 0, 0, -1, 0, 0, -1),
    "21/10": (2, 2, 2, 3, 2, 3, 2),
    "-21/10": (-2, -2, -2, -3, -2, -2, -3),
    "29/10": (3, 3, 3, 3, 2, 3, 2),
    "-29/10": (-3, -3, -3, -3, -2, -2, -3),
    "2": (2, 2, 2, 2, 2, 2, 2),
    "-2": (-2, -2, -2, -2, -2, -2, -2),
    "0": (0, 0, 0, 0, 0, 0, 0),
}
_MODES = (
    Rounding.HALF_UP,
    Rounding.HALF_EVEN,
    Rounding.HALF_DOWN,
    Rounding.UP,
    Rounding.DOWN,
    Rounding.CEILING,
    Rounding.FLOOR,
)


@pytest.mark.parametrize(
    ("value", "rounding", "expected"),
    [
        pytest.param(Fraction(value), mode, row[i], id=f"{value}-{mode}")
        for value, row in _ROUNDING_TABLE.items()
        for i, mode in enumerate(_MODES)
    ],
)
def test_round_fraction_follows_each_mode(
    value: Fraction, rounding: Rounding, expected: int
) -> None:
    assert round_fraction(value, rounding) == expected


def test_the_rounding_table_covers_every_mode() -> None:
    assert set(_MODES) == set(Rounding)


def test_apportion_sums_exactly_to_the_target_by_largest_remainder() -> None:
    shares = [Fraction(10, 3), Fraction(10, 3), Fraction(10, 3)]
    assert apportion(10, shares) == [4, 3, 3]
    assert apportion(3, [Fraction(1, 10), Fraction(19, 10), Fraction(1, 1)]) == [0, 2, 1]
    assert apportion(2, [Fraction(1, 2), Fraction(3, 4), Fraction(3, 4)]) == [0, 1, 1]


def test_apportion_of_nothing_is_nothing_and_of_something_needs_shares() -> None:
    assert apportion(0, []) == []
    with pytest.raises(InvalidArgument) as raised:
        apportion(1, [])
    assert raised.value.field == "shares"
