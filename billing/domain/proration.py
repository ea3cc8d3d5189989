"""Proration: the part of a period that remains at an instant, and what a plan change is worth.

A plan change at instant ``t`` inside period ``[start, end)`` is worth::

    charge = new price x remaining        (a ``proration_charge`` line)
    credit = old price x remaining        (a ``proration_credit`` line, negative)
    net    = charge - credit

where ``remaining`` is the fraction of the period left at ``t``, counted

* by the second (the default, as Stripe does): whole seconds from ``t`` to ``end`` over the
  seconds in the period, so a 23-hour DST day weighs 23 hours;
* by the day: calendar days in the customer's timezone from the day of ``t`` (included) to the
  day of ``end`` (excluded), over the days in the period.

Each line is rounded on its own, half-up, to the currency's unit, so the lines always sum to the
net. A change to the same price is worth exactly zero.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from fractions import Fraction
from zoneinfo import ZoneInfo

from billing.domain import _checks
from billing.domain.invoices import InvoiceLine, LineKind
from billing.domain.money import Money, Rounding
from billing.domain.periods import Period


class ProrationUnit(StrEnum):
    """How finely the remaining part of a period is counted."""

    SECOND = "second"
    """Whole seconds of real time (the default)."""
    DAY = "day"
    """Calendar days in the customer's timezone; the day of the change counts as remaining."""


class ProrationBehavior(StrEnum):
    """What a plan change's prorated difference turns into."""

    CARRY_DEBT = "carry_debt"
    """An upgrade's difference is subscription debt, collected with the next renewal (QVO)."""
    INVOICE_NOW = "invoice_now"
    """An upgrade's difference is invoiced and charged at once."""
    NONE = "none"
    """No adjustment at all (QVO's ``prorate=false``)."""


_SECOND = timedelta(seconds=1)
_MICROSECOND = timedelta(microseconds=1)


def remaining_fraction(
    period: Period, at: datetime, *, unit: ProrationUnit, timezone: ZoneInfo
) -> Fraction:
    """The fraction of ``period`` still ahead at ``at``: 1 at its start, 0 at its end."""
    at = _checks.aware("at", at)
    if at <= period.start:
        return Fraction(1)
    if at >= period.end:
        return Fraction(0)
    if unit is ProrationUnit.DAY:
        start, now, end = (
            moment.astimezone(timezone).date() for moment in (period.start, at, period.end)
        )
        days = (end - start).days
        return Fraction((end - now).days, days) if days else Fraction(0)
    unit_of_time = _SECOND if period.duration >= _SECOND else _MICROSECOND
    return Fraction((period.end - at) // unit_of_time, period.duration // unit_of_time)


@dataclass(frozen=True, slots=True, kw_only=True)
class ProrationQuote:
    """The two lines of a plan change inside a period, and their sum."""

    period: Period
    """The rest of the period the lines cover: from the change to the period's end."""
    fraction: Fraction
    credit: InvoiceLine
    charge: InvoiceLine

    @property
    def net(self) -> Money:
        return self.charge.amount + self.credit.amount

    @property
    def lines(self) -> tuple[InvoiceLine, InvoiceLine]:
        return self.credit, self.charge


def quote(
    *,
    old_name: str,
    old_price: Money,
    new_name: str,
    new_price: Money,
    period: Period,
    at: datetime,
    unit: ProrationUnit,
    timezone: ZoneInfo,
    rounding: Rounding = Rounding.HALF_UP,
) -> ProrationQuote:
    """What changing from the old price to the new one at ``at`` inside ``period`` is worth."""
    fraction = remaining_fraction(period, at, unit=unit, timezone=timezone)
    rest = Period(min(max(at, period.start), period.end), period.end)
    return ProrationQuote(
        period=rest,
        fraction=fraction,
        credit=InvoiceLine(
            kind=LineKind.PRORATION_CREDIT,
            description=f"Unused time on {old_name}",
            amount=-old_price.scaled(fraction, rounding),
            period=rest,
            taxable=True,
        ),
        charge=InvoiceLine(
            kind=LineKind.PRORATION_CHARGE,
            description=f"Remaining time on {new_name}",
            amount=new_price.scaled(fraction, rounding),
            period=rest,
            taxable=True,
        ),
    )
