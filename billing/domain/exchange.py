"""Exchange rates, for plans priced in one currency and charged in another.

The Chilean UF (ISO 4217 ``CLF``) is the usual case: a plan costs ``0.5`` UF and each charge is
made in pesos (``CLP``) at the UF value of the charge date. The engine asks an
:class:`ExchangeRates` for the rate; :class:`TableExchangeRates` is the implementation shipped for
tests, simulations and hosts that load the UF series themselves.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from fractions import Fraction
from typing import Protocol

from billing.domain.errors import ExchangeRateNotFound, InvalidArgument
from billing.domain.money import Currency, Exact, Money, Rounding, exact, round_fraction


class ExchangeRates(Protocol):
    """Where the engine gets the value of one unit of ``source`` in ``target`` on a date."""

    def rate(self, source: Currency, target: Currency, on: date) -> Decimal:
        """Units of ``target`` per one unit of ``source`` valid on ``on``.

        :raises ExchangeRateNotFound: when no rate for the pair is known on that date.
        """
        ...


@dataclass(frozen=True, slots=True, kw_only=True)
class ExchangeRate:
    """One published rate: ``1 source = rate target`` from ``valid_from`` on."""

    valid_from: date
    source: Currency
    target: Currency
    rate: Decimal

    @classmethod
    def of(cls, valid_from: date, source: str, target: str, rate: Exact) -> ExchangeRate:
        """Build and validate a rate (positive, exact, between two distinct currencies)."""
        if not isinstance(valid_from, date):
            raise InvalidArgument("date", "must be a date", valid_from)
        value = exact(rate, "rate")
        if value <= 0:
            raise InvalidArgument("rate", "must be > 0", rate)
        pair = Currency.of(source), Currency.of(target)
        if pair[0] == pair[1]:
            raise InvalidArgument("target", "must differ from the source currency", target)
        return cls(valid_from=valid_from, source=pair[0], target=pair[1], rate=value)


class TableExchangeRates:
    """Rates from a table: the rate for a date is the latest one published on or before it.

    A daily series such as the UF works as is; a table with one row per month applies each row
    until the next one.
    """

    def __init__(self, rates: Iterable[ExchangeRate] = ()) -> None:
        self._series: dict[tuple[Currency, Currency], list[tuple[date, Decimal]]] = {}
        for entry in rates:
            series = self._series.setdefault((entry.source, entry.target), [])
            series.append((entry.valid_from, entry.rate))
        for key, series in self._series.items():
            series.sort()
            days = [day for day, _ in series]
            if len(set(days)) != len(days):
                raise InvalidArgument("rates", f"holds two {key[0]}->{key[1]} rates for one date")

    def rate(self, source: Currency, target: Currency, on: date) -> Decimal:
        series = self._series.get((source, target), [])
        index = bisect.bisect_right(series, on, key=lambda row: row[0])
        if index == 0:
            raise ExchangeRateNotFound(source.code, target.code, on)
        return series[index - 1][1]


def convert(
    money: Money,
    target: Currency,
    rates: ExchangeRates,
    on: date,
    rounding: Rounding = Rounding.HALF_UP,
) -> Money:
    """``money`` in ``target`` at the rate valid on ``on``, rounded once to ``target``'s unit."""
    if money.currency == target:
        return money
    rate = Fraction(rates.rate(money.currency, target, on))
    shift = Fraction(10) ** (target.exponent - money.currency.exponent)
    return Money(round_fraction(money.minor * rate * shift, rounding), target)
