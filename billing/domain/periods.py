"""The billing calendar: intervals, periods and the anchor they are counted from.

Period ``k`` of a subscription is computed from its anchor alone, never by chaining "+1 month"
onto the previous period: an anchor on January 31 gives Jan 31, Feb 28 (29 in leap years),
Mar 31, Apr 30, May 31... and never drifts to the 28th.

Periods are counted in the customer's wall-clock time (their IANA timezone), so a monthly period
starts at the same local hour every month, across daylight-saving changes. A local time that does
not exist (skipped by a DST change) moves forward by the size of the gap; an ambiguous one (repeated
when clocks go back) takes its first occurrence. Periods are half-open, ``[start, end)``: the end of
period ``k`` is the start of period ``k + 1``, so they tile time with no gap and no overlap.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from functools import lru_cache
from zoneinfo import ZoneInfo

from dateutil.relativedelta import relativedelta

from billing.domain import _checks
from billing.domain.errors import InvalidArgument


class IntervalUnit(StrEnum):
    """The calendar unit a plan bills by."""

    DAY = "day"
    """Calendar days in the customer's timezone."""
    WEEK = "week"
    """Seven calendar days."""
    MONTH = "month"
    """Calendar months; an anchor past a short month's end is clamped to that month's last day."""
    YEAR = "year"
    """Calendar years; a February 29 anchor bills on February 28 in common years."""


@dataclass(frozen=True, slots=True)
class Interval:
    """A billing interval: ``count`` times a calendar ``unit`` (``Interval.of("month", 3)``)."""

    unit: IntervalUnit
    count: int = 1

    def __post_init__(self) -> None:
        if not isinstance(self.unit, IntervalUnit):
            raise InvalidArgument("interval", "must be one of day, week, month, year", self.unit)
        _checks.integer("interval_count", self.count, minimum=1)

    @classmethod
    def of(cls, unit: str | IntervalUnit, count: int = 1) -> Interval:
        """Parse a unit name (``day``, ``week``, ``month`` or ``year``) and a count >= 1."""
        return cls(_checks.member(IntervalUnit, unit, "interval"), count)

    def times(self, k: int) -> relativedelta:
        """The calendar distance of ``k`` intervals."""
        n = k * self.count
        match self.unit:
            case IntervalUnit.DAY:
                return relativedelta(days=n)
            case IntervalUnit.WEEK:
                return relativedelta(days=7 * n)
            case IntervalUnit.MONTH:
                return relativedelta(months=n)
            case IntervalUnit.YEAR:
                return relativedelta(years=n)

    def __str__(self) -> str:
        return f"{self.count} {self.unit}" + ("s" if self.count > 1 else "")


@dataclass(frozen=True, slots=True)
class Period:
    """A half-open span of time ``[start, end)`` between two aware instants."""

    start: datetime
    end: datetime

    def __post_init__(self) -> None:
        object.__setattr__(self, "start", _checks.aware("start", self.start))
        object.__setattr__(self, "end", _checks.aware("end", self.end))
        if self.end < self.start:
            raise InvalidArgument("end", "must not be before start", self.end)

    def contains(self, at: datetime) -> bool:
        return self.start <= at < self.end

    @property
    def duration(self) -> timedelta:
        return self.end - self.start

    def __str__(self) -> str:
        return f"[{self.start.isoformat()}, {self.end.isoformat()})"


def wall_shift(at: datetime, timezone: ZoneInfo, delta: relativedelta) -> datetime:
    """``at`` moved by a calendar distance on the wall clock of ``timezone``.

    ``2026-03-31 09:00 America/Santiago`` plus one month is ``2026-04-30 09:00`` local time
    whatever the DST offsets on either side.
    """
    at = _checks.aware("at", at)
    if not delta:
        return at
    wall = at.astimezone(timezone).replace(tzinfo=None)
    return localize(wall + delta, timezone)


def localize(wall: datetime, timezone: ZoneInfo) -> datetime:
    """The UTC instant a wall-clock time names in ``timezone``.

    A time inside a DST gap moves forward by the gap; an ambiguous time (clocks going back) takes
    the occurrence ``wall.fold`` names: the first unless it is 1.
    """
    first = wall.replace(tzinfo=timezone, fold=0).astimezone(UTC)
    second = wall.replace(tzinfo=timezone, fold=1).astimezone(UTC)
    if first > second:  # a gap: fold=0 reads it with the offset before the change, i.e. later
        return first
    return second if wall.fold else first


@lru_cache(maxsize=8192)
def _boundary(anchor: datetime, interval: Interval, timezone: ZoneInfo, k: int) -> datetime:
    """A calendar's boundary ``k``, remembered: a billing step asks for the same few several
    times (the due instant, the period billed, the next one), and each is a timezone
    conversion."""
    return wall_shift(anchor, timezone, interval.times(k))


@dataclass(frozen=True, slots=True)
class BillingCalendar:
    """The periods of one subscription: ``interval`` steps from ``anchor`` in ``timezone``.

    Boundaries are UTC instants; show them in the customer's timezone with ``astimezone``.
    """

    anchor: datetime
    interval: Interval
    timezone: ZoneInfo

    def __post_init__(self) -> None:
        object.__setattr__(self, "anchor", _checks.aware("anchor", self.anchor))
        object.__setattr__(self, "timezone", _checks.timezone(self.timezone))
        if not isinstance(self.interval, Interval):
            raise InvalidArgument("interval", "must be an Interval", self.interval)

    @staticmethod
    @lru_cache(maxsize=8192)
    def of(anchor: datetime, interval: Interval, timezone: ZoneInfo) -> BillingCalendar:
        """The calendar, shared by every caller that asks for the same one (a billing step
        asks for a subscription's calendar several times)."""
        return BillingCalendar(anchor, interval, timezone)

    def boundary(self, k: int) -> datetime:
        """The start of period ``k`` (period 0 starts at the anchor)."""
        return _boundary(self.anchor, self.interval, self.timezone, k)

    def period(self, k: int) -> Period:
        """Period ``k``: from boundary ``k`` up to, not including, boundary ``k + 1``."""
        return Period(self.boundary(k), self.boundary(k + 1))

    def billable(self, k: int) -> int:
        """The first period from ``k`` on that has time in it.

        A period is empty only when the timezone skipped its whole wall-clock span: Samoa
        (``Pacific/Apia``) skipped December 30, 2011, so a daily period for that day starts and
        ends at the same instant. Such a period is never billed; the next one is.
        """
        while self.boundary(k + 1) <= self.boundary(k):
            k += 1
        return k

    def index_at(self, at: datetime) -> int:
        """The ``k`` whose period contains ``at`` (negative before the anchor)."""
        at = _checks.aware("at", at)
        k = self._estimate(at)
        while self.boundary(k) > at:
            k -= 1
        while self.boundary(k + 1) <= at:
            k += 1
        return k

    def period_at(self, at: datetime) -> Period:
        return self.period(self.index_at(at))

    def _estimate(self, at: datetime) -> int:
        start = self.anchor.astimezone(self.timezone)
        local = at.astimezone(self.timezone)
        match self.interval.unit:
            case IntervalUnit.DAY | IntervalUnit.WEEK:
                size = self.interval.count * (7 if self.interval.unit is IntervalUnit.WEEK else 1)
                return (local.date() - start.date()).days // size
            case IntervalUnit.MONTH | IntervalUnit.YEAR:
                size = self.interval.count * (12 if self.interval.unit is IntervalUnit.YEAR else 1)
                months = (local.year - start.year) * 12 + local.month - start.month
                return months // size
