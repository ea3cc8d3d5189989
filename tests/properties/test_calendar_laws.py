"""Laws of the billing calendar and of proration, for any anchor, interval and IANA timezone.

Anchors come from ``st.datetimes`` in the drawn zone, which deliberately lands near the zone's
offset transitions (inside DST gaps, and on both occurrences of an ambiguous time) often enough
to matter. Expected local dates are computed here with plain month arithmetic, and whether a wall
time exists is asked of ``zoneinfo`` directly, so the laws do not lean on the code under test.
"""

from __future__ import annotations

import zoneinfo
from calendar import monthrange
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

from hypothesis import assume, example, given
from hypothesis import strategies as st

from billing.domain.money import Money
from billing.domain.periods import BillingCalendar, Interval, IntervalUnit
from billing.domain.proration import ProrationUnit, quote, remaining_fraction

MICROSECOND = timedelta(microseconds=1)
TEN_YEARS = timedelta(days=3653)
MOST_BOUNDARIES = 400
FIRST = datetime(2012, 1, 1)
LAST = datetime(2040, 12, 31, 23, 59, 59, 999999)

# st.timezones() draws ZoneInfo objects for the keys of st.timezone_keys(), including "posix/..."
# and "right/..." copies of the system zones; the "right/" ones count leap seconds, which no
# customer's clock does. Draw the same keys without those prefixes, kept to the plain IANA keys
# of zoneinfo.available_timezones(). (Filtering st.timezones() itself gives the same zones, but
# builds a ZoneInfo for every rejected key on every draw, which made this file four times slower.)
AVAILABLE = frozenset(zoneinfo.available_timezones())
zones = st.timezone_keys(allow_prefix=False).filter(AVAILABLE.__contains__).map(ZoneInfo)


@st.composite
def calendars(draw: st.DrawFn) -> BillingCalendar:
    zone = draw(zones)
    anchor = draw(st.datetimes(min_value=FIRST, max_value=LAST, timezones=st.just(zone)))
    return BillingCalendar(
        anchor, Interval(draw(st.sampled_from(IntervalUnit)), draw(st.integers(1, 12))), zone
    )


def ten_years_of_boundaries(calendar: BillingCalendar) -> list[datetime]:
    """Boundaries 0, 1, ... up to the first one at least ten years after the anchor, or the
    first :data:`MOST_BOUNDARIES` of them: over a year of daily periods, so every DST change
    of the year is crossed, without walking 3,653 days for each drawn daily calendar."""
    bounds = [calendar.boundary(0)]
    while bounds[-1] < calendar.anchor + TEN_YEARS and len(bounds) <= MOST_BOUNDARIES:
        bounds.append(calendar.boundary(len(bounds)))
        assert bounds[-2] < bounds[-1]  # strictly increasing (and so the loop ends)
    return bounds


def shifted_date(start: date, unit: IntervalUnit, steps: int) -> date:
    """``start`` moved ``steps`` units on the calendar, clamping to the end of a short month."""
    match unit:
        case IntervalUnit.DAY:
            return start + timedelta(days=steps)
        case IntervalUnit.WEEK:
            return start + timedelta(days=7 * steps)
    months = start.month - 1 + steps * (12 if unit is IntervalUnit.YEAR else 1)
    year, month = start.year + months // 12, months % 12 + 1
    return date(year, month, min(start.day, monthrange(year, month)[1]))


def exists(wall: datetime, zone: ZoneInfo) -> bool:
    """Whether the naive wall time ``wall`` is shown by the clocks of ``zone`` at some instant."""
    return any(
        wall.replace(tzinfo=zone, fold=fold).astimezone(UTC).astimezone(zone).replace(tzinfo=None)
        == wall
        for fold in (0, 1)
    )


def gap(wall: datetime, zone: ZoneInfo) -> timedelta:
    """How far the clocks jumped over a wall time that does not exist (PEP 495 offsets)."""
    after = wall.replace(tzinfo=zone, fold=1).utcoffset()
    before = wall.replace(tzinfo=zone, fold=0).utcoffset()
    assert after is not None
    assert before is not None
    return after - before


def local_wall(instant: datetime, zone: ZoneInfo) -> datetime:
    return instant.astimezone(zone).replace(tzinfo=None)


def assert_shown_at(instant: datetime, wall: datetime, zone: ZoneInfo) -> None:
    """``instant`` shows ``wall`` on the zone's clocks, or, if ``wall`` was skipped by a
    change of offset, ``wall`` moved forward by the size of the gap."""
    if exists(wall, zone):
        assert local_wall(instant, zone) == wall
    else:
        assert gap(wall, zone) > timedelta(0)
        assert local_wall(instant, zone) == wall + gap(wall, zone)


# Periods


@given(calendars())
def test_periods_tile_ten_years_with_no_gap_and_no_overlap(calendar):
    bounds = ten_years_of_boundaries(calendar)

    for k in range(len(bounds) - 1):
        period = calendar.period(k)
        assert period.start == bounds[k]
        assert period.end == bounds[k + 1]
        assert period.start < period.end
        assert period.end == calendar.period(k + 1).start


@given(calendars())
def test_each_period_maps_its_first_and_last_microsecond_to_its_own_index(calendar):
    bounds = ten_years_of_boundaries(calendar)

    for k in range(len(bounds) - 1):
        assert calendar.index_at(bounds[k]) == k
        assert calendar.index_at(bounds[k + 1] - MICROSECOND) == k
        assert calendar.period_at(bounds[k]) == calendar.period(k)


@given(calendars(), st.integers(1, 5))
def test_instants_before_the_anchor_have_negative_indexes(calendar, back):
    start = calendar.boundary(-back)

    assert calendar.index_at(start) == -back
    assert calendar.index_at(calendar.anchor - MICROSECOND) == -1


@given(calendars())
@example(
    BillingCalendar(
        datetime(2026, 11, 1, 1, 30, tzinfo=ZoneInfo("America/New_York"), fold=1),
        Interval.of("month"),
        ZoneInfo("America/New_York"),
    )
)
def test_period_zero_starts_exactly_at_the_anchor(calendar):
    assert calendar.boundary(0) == calendar.anchor
    assert calendar.period(0).start == calendar.anchor


@given(calendars())
def test_every_boundary_shows_the_anchors_wall_time_unless_the_zone_skipped_it(calendar):
    zone = calendar.timezone
    anchor = local_wall(calendar.anchor, zone)
    bounds = ten_years_of_boundaries(calendar)

    for k, boundary in enumerate(bounds):
        steps = k * calendar.interval.count
        wall = datetime.combine(
            shifted_date(anchor.date(), calendar.interval.unit, steps), anchor.time()
        )
        assert_shown_at(boundary, wall, zone)


@given(calendars())
@example(
    # A weekly subscription started at the second 01:30 of New York's 2025 fall-back night: 52
    # weeks on, 2026-11-01 01:30 is ambiguous again.
    BillingCalendar(
        datetime(2025, 11, 2, 1, 30, tzinfo=ZoneInfo("America/New_York"), fold=1),
        Interval.of("week"),
        ZoneInfo("America/New_York"),
    )
)
def test_every_boundary_after_the_anchor_is_the_first_instant_to_show_its_wall_time(calendar):
    zone = calendar.timezone
    bounds = ten_years_of_boundaries(calendar)

    for boundary in bounds[1:]:
        # PEP 495: an ambiguous local time never equals an instant of another zone; compare in UTC
        assert boundary == local_wall(boundary, zone).replace(tzinfo=zone, fold=0).astimezone(UTC)


@st.composite
def anchors_on_the_31st(draw: st.DrawFn) -> tuple[ZoneInfo, datetime]:
    zone = draw(zones)
    day = date(draw(st.integers(2012, 2040)), draw(st.sampled_from([1, 3, 5, 7, 8, 10, 12])), 31)
    wall = datetime.combine(day, draw(st.times()).replace(fold=0))
    assume(exists(wall, zone))
    return zone, wall


@given(anchors_on_the_31st())
def test_a_monthly_anchor_on_the_31st_bills_on_the_31st_or_else_on_the_months_last_day(drawn):
    zone, wall = drawn
    calendar = BillingCalendar(wall.replace(tzinfo=zone), Interval.of("month"), zone)

    for k in range(121):
        months = wall.month - 1 + k
        year, month = wall.year + months // 12, months % 12 + 1
        last = monthrange(year, month)[1]
        expected = date(year, month, 31 if last == 31 else last)
        assert_shown_at(calendar.boundary(k), datetime.combine(expected, wall.time()), zone)


# Proration


@st.composite
def instants_in_order(draw: st.DrawFn):
    """A calendar period and two instants ``first <= second`` from before it to after it."""
    calendar = draw(calendars())
    period = calendar.period(draw(st.integers(-3, 30)))
    span = period.duration // MICROSECOND
    offsets = sorted(draw(st.lists(st.integers(-span, 2 * span), min_size=2, max_size=2)))
    first, second = (period.start + offset * MICROSECOND for offset in offsets)
    return calendar, period, first, second


@given(instants_in_order(), st.sampled_from(ProrationUnit))
def test_the_remaining_fraction_is_between_zero_and_one_and_never_grows_with_time(drawn, unit):
    calendar, period, first, second = drawn

    earlier = remaining_fraction(period, first, unit=unit, timezone=calendar.timezone)
    later = remaining_fraction(period, second, unit=unit, timezone=calendar.timezone)

    assert 0 <= later <= earlier <= 1


@given(calendars(), st.integers(-3, 30), st.sampled_from(ProrationUnit))
def test_the_whole_period_remains_at_its_start_and_none_at_its_end(calendar, k, unit):
    period = calendar.period(k)
    zone = calendar.timezone

    assert remaining_fraction(period, period.start, unit=unit, timezone=zone) == 1
    assert remaining_fraction(period, period.end, unit=unit, timezone=zone) == 0


@given(
    instants_in_order(),
    st.sampled_from(ProrationUnit),
    st.integers(0, 10**12),
    st.sampled_from(["CLP", "CLF", "MXN", "COP", "USD"]),
)
def test_a_quote_between_equal_prices_is_exactly_zero_at_any_instant(drawn, unit, minor, code):
    calendar, period, at, _ = drawn
    # quote() is documented for a change inside the period (or before it, which is clamped to
    # the start); an instant after the period's end is outside its domain.
    assume(at <= period.end)
    price = Money.from_minor(minor, code)

    change = quote(
        old_name="before",
        old_price=price,
        new_name="after",
        new_price=price,
        period=period,
        at=at,
        unit=unit,
        timezone=calendar.timezone,
    )

    assert change.net == Money.zero(code)
    assert change.credit.amount == -change.charge.amount
