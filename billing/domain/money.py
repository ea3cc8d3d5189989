"""Money: an integer number of minor units in one ISO 4217 currency.

The rules, each pinned by a test:

* amounts are exact: built from ``Decimal``, ``int`` or a decimal string, never from a float;
* a currency's exponent comes from the engine's pinned table (:mod:`billing.domain.currencies`:
  CLP 0, COP 0, MXN 2, USD 2, CLF 4), never from whatever library version happens to be
  installed;
* arithmetic and comparison happen within one currency only;
* every rounding names its mode (:class:`Rounding`, half-up unless said otherwise);
* splitting an amount (:meth:`Money.allocate`, :meth:`Money.split`) never creates or loses a
  minor unit.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from enum import StrEnum
from fractions import Fraction
from functools import cache
from typing import TypeAlias

from billing.domain.currencies import EXPONENTS
from billing.domain.errors import (
    CurrencyMismatch,
    FloatNotAllowed,
    InvalidArgument,
    UnknownCurrency,
)

Exact: TypeAlias = Decimal | int | str
"""What an exact quantity may be built from: never a float."""

Ratio: TypeAlias = Fraction | Decimal | int | str
"""An exact scaling factor, such as a proration fraction or a tax rate."""


class Rounding(StrEnum):
    """How a fraction of a minor unit becomes a whole one."""

    HALF_UP = "half_up"
    """Halves away from zero (2.5 -> 3, -2.5 -> -3); the Chilean SII rule and the default."""
    HALF_EVEN = "half_even"
    """Halves to the even neighbour (2.5 -> 2, 3.5 -> 4): banker's rounding."""
    HALF_DOWN = "half_down"
    """Halves towards zero (2.5 -> 2, -2.5 -> -2)."""
    UP = "up"
    """Away from zero (2.1 -> 3, -2.1 -> -3)."""
    DOWN = "down"
    """Towards zero, i.e. truncation (2.9 -> 2, -2.9 -> -2)."""
    CEILING = "ceiling"
    """Towards positive infinity (2.1 -> 3, -2.9 -> -2)."""
    FLOOR = "floor"
    """Towards negative infinity (2.9 -> 2, -2.1 -> -3)."""


def round_fraction(value: Fraction, rounding: Rounding) -> int:
    """Round an exact fraction to an integer with the named mode."""
    floor = math.floor(value)
    remainder = value - floor
    if remainder == 0:
        return floor
    ceiling = floor + 1
    match rounding:
        case Rounding.FLOOR:
            return floor
        case Rounding.CEILING:
            return ceiling
        case Rounding.DOWN:
            return floor if value > 0 else ceiling
        case Rounding.UP:
            return ceiling if value > 0 else floor
    half = Fraction(1, 2)
    if remainder != half:
        return ceiling if remainder > half else floor
    match rounding:
        case Rounding.HALF_UP:
            return ceiling if value > 0 else floor
        case Rounding.HALF_DOWN:
            return floor if value > 0 else ceiling
        case _:  # HALF_EVEN
            return floor if floor % 2 == 0 else ceiling


def apportion(target: int, shares: Sequence[Fraction]) -> list[int]:
    """Whole numbers summing exactly to ``target``, each within one unit of its exact share.

    Largest remainder method: every share is floored, then the units still missing go one by one
    to the shares with the largest fractional parts (earlier shares first on ties). Deterministic,
    and it never creates or loses a unit. ``target`` should be the rounding of ``sum(shares)``.
    """
    if not shares:
        if target != 0:
            raise InvalidArgument("shares", "must not be empty when there is an amount to split")
        return []
    floors = [math.floor(share) for share in shares]
    missing = target - sum(floors)
    by_remainder = sorted(range(len(shares)), key=lambda i: (-(shares[i] - floors[i]), i))
    step = 1 if missing >= 0 else -1
    if step < 0:
        by_remainder.reverse()
    for turn in range(abs(missing)):
        floors[by_remainder[turn % len(shares)]] += step
    return floors


def exact(value: object, field: str) -> Decimal:
    """Parse an exact decimal quantity, refusing floats, booleans and non-numbers."""
    if isinstance(value, bool):
        raise InvalidArgument(field, "must be a Decimal, an int or a decimal string", value)
    if isinstance(value, float):
        raise FloatNotAllowed(field, value)
    if isinstance(value, Decimal):
        result = value
    elif isinstance(value, int):
        result = Decimal(value)
    elif isinstance(value, str):
        try:
            result = Decimal(value.strip())
        except InvalidOperation:
            raise InvalidArgument(
                field, "must be a decimal number such as 15000.0", value
            ) from None
    else:
        raise InvalidArgument(field, "must be a Decimal, an int or a decimal string", value)
    if not result.is_finite():
        raise InvalidArgument(field, "must be a finite number", value)
    return result


def exact_ratio(value: object, field: str) -> Fraction:
    """Parse an exact ratio: a ``Fraction`` or anything :func:`exact` accepts."""
    if isinstance(value, Fraction):
        return value
    return Fraction(exact(value, field))


@dataclass(frozen=True, slots=True)
class Currency:
    """An ISO 4217 currency and its exponent (the number of digits of its minor unit)."""

    code: str
    exponent: int

    @classmethod
    def of(cls, code: str | Currency) -> Currency:
        """The currency for an ISO 4217 code, with the engine's exponent for it."""
        if isinstance(code, Currency):
            return code
        return _currency(code)

    def __str__(self) -> str:
        return self.code


@cache
def _currency(code: object) -> Currency:
    if not isinstance(code, str) or code not in EXPONENTS:
        raise UnknownCurrency(code)
    return Currency(code=code, exponent=EXPONENTS[code])


@dataclass(frozen=True, slots=True, order=False)
class Money:
    """An amount of integer minor units in one currency: ``Money.of("15000", "CLP")``."""

    minor: int
    currency: Currency

    def __post_init__(self) -> None:
        if isinstance(self.minor, bool) or not isinstance(self.minor, int):
            if isinstance(self.minor, float):
                raise FloatNotAllowed("minor", self.minor)
            raise InvalidArgument("minor", "must be an int number of minor units", self.minor)
        if not isinstance(self.currency, Currency):
            raise InvalidArgument("currency", "must be a Currency; use Money.of(amount, code)")

    @classmethod
    def of(
        cls, amount: Exact, currency: str | Currency, *, rounding: Rounding | None = None
    ) -> Money:
        """Money from an amount in major units (``"150.00"`` MXN is 15000 minor units).

        An amount with more decimals than the currency has is refused unless ``rounding`` names
        how to round it: input is never rounded silently.
        """
        unit = Currency.of(currency)
        scaled = Fraction(exact(amount, "amount")) * 10**unit.exponent
        if scaled.denominator != 1:
            if rounding is None:
                raise InvalidArgument(
                    "amount",
                    f"{unit.code} has {unit.exponent} decimal places; pass rounding= to round",
                    amount,
                )
            return cls(round_fraction(scaled, rounding), unit)
        return cls(int(scaled), unit)

    @classmethod
    def from_minor(cls, minor: int, currency: str | Currency) -> Money:
        """Money from a count of minor units (centavos, or whole pesos for CLP)."""
        return cls(minor, Currency.of(currency))

    @classmethod
    def zero(cls, currency: str | Currency) -> Money:
        """No money, in the given currency."""
        return cls(0, Currency.of(currency))

    @property
    def amount(self) -> Decimal:
        """The amount in major units, with exactly the currency's number of decimals."""
        return Decimal(f"{self.minor}E-{self.currency.exponent}")  # exact, whatever the size

    def is_zero(self) -> bool:
        return self.minor == 0

    def is_positive(self) -> bool:
        return self.minor > 0

    def is_negative(self) -> bool:
        return self.minor < 0

    def _same(self, other: Money, operation: str) -> None:
        if self.currency != other.currency:
            raise CurrencyMismatch(self.currency.code, other.currency.code, operation)

    def __add__(self, other: object) -> Money:
        if isinstance(other, int) and not isinstance(other, bool) and other == 0:
            return self  # lets sum() start from 0
        if not isinstance(other, Money):
            return NotImplemented
        self._same(other, "add")
        return Money(self.minor + other.minor, self.currency)

    __radd__ = __add__

    def __sub__(self, other: object) -> Money:
        if not isinstance(other, Money):
            return NotImplemented
        self._same(other, "subtract")
        return Money(self.minor - other.minor, self.currency)

    def __neg__(self) -> Money:
        return Money(-self.minor, self.currency)

    def __abs__(self) -> Money:
        return Money(abs(self.minor), self.currency)

    def __mul__(self, factor: object) -> Money:
        """Multiply by a whole number; use :meth:`scaled` for fractions, which must round."""
        if isinstance(factor, float):
            raise FloatNotAllowed("factor", factor)
        if isinstance(factor, bool) or not isinstance(factor, int):
            return NotImplemented
        return Money(self.minor * factor, self.currency)

    __rmul__ = __mul__

    def _compare(self, other: object, operation: str) -> tuple[int, int]:
        if not isinstance(other, Money):
            raise TypeError(f"cannot compare Money with {type(other).__name__}")
        self._same(other, operation)
        return self.minor, other.minor

    def __lt__(self, other: object) -> bool:
        left, right = self._compare(other, "compare")
        return left < right

    def __le__(self, other: object) -> bool:
        left, right = self._compare(other, "compare")
        return left <= right

    def __gt__(self, other: object) -> bool:
        left, right = self._compare(other, "compare")
        return left > right

    def __ge__(self, other: object) -> bool:
        left, right = self._compare(other, "compare")
        return left >= right

    def scaled(self, ratio: Ratio, rounding: Rounding = Rounding.HALF_UP) -> Money:
        """This amount times an exact ratio, rounded once with the named mode."""
        exact_minor = self.minor * exact_ratio(ratio, "ratio")
        return Money(round_fraction(exact_minor, rounding), self.currency)

    def allocate(self, weights: Sequence[Ratio]) -> list[Money]:
        """Split in proportion to non-negative weights; the parts always sum to this amount."""
        parsed = [exact_ratio(weight, "weights") for weight in weights]
        if not parsed:
            raise InvalidArgument("weights", "must hold at least one weight")
        if any(weight < 0 for weight in parsed):
            raise InvalidArgument("weights", "must all be >= 0", weights)
        total = sum(parsed, Fraction(0))
        if total == 0:
            raise InvalidArgument("weights", "must not all be zero", weights)
        sign = -1 if self.minor < 0 else 1
        shares = [abs(self.minor) * weight / total for weight in parsed]
        return [Money(sign * part, self.currency) for part in apportion(abs(self.minor), shares)]

    def split(self, parts: int) -> list[Money]:
        """Split into ``parts`` near-equal amounts that sum exactly to this one."""
        if isinstance(parts, bool) or not isinstance(parts, int) or parts < 1:
            raise InvalidArgument("parts", "must be an integer >= 1", parts)
        return self.allocate([1] * parts)

    def to_decimal_string(self) -> str:
        """The amount in major units as a plain decimal string: ``"15000"``, ``"150.00"``."""
        return f"{self.amount:f}"

    def __str__(self) -> str:
        return f"{self.to_decimal_string()} {self.currency.code}"

    def __repr__(self) -> str:
        return f"Money.of({self.to_decimal_string()!r}, {self.currency.code!r})"
