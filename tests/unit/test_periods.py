"""The billing calendar: intervals, periods, anchors, DST gaps and folds, and the errors it raises.

Every instant the domain returns is in UTC. A test compares instants directly (aware datetimes
compare by instant) or looks at the customer's wall clock with ``.astimezone(zone)``.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from dateutil.relativedelta import relativedelta

from billing.domain.errors import InvalidArgument, NaiveDatetime, UnknownTimezone
from billing.domain.periods import (
    BillingCalendar,
    Interval,
    IntervalUnit,
    Period,
    localize,
    wall_shift,
)

SANTIAGO = ZoneInfo("America/Santiago")
NEW_YORK = ZoneInfo("America/New_York")
TOKYO = ZoneInfo("Asia/Tokyo")
MICROSECOND = timedelta(microseconds=1)


def monthly_from_january_31_in_santiago() -> BillingCalendar:
    return BillingCalendar(
        datetime(2026, 1, 31, 12, tzinfo=SANTIAGO), Interval.of("month"), SANTIAGO
    )


def local_starts(calendar: BillingCalendar, ks: range) -> list[datetime]:
    """The starts of periods ``ks`` as naive wall-clock times in the calendar's timezone."""
    return [calendar.boundary(k).astimezone(calendar.timezone).replace(tzinfo=None) for k in ks]


# Monthly periods and the end of the month


def test_an_anchor_on_the_31st_bills_on_the_last_day_of_short_months_at_the_same_local_hour():
    calendar = monthly_from_january_31_in_santiago()

    assert local_starts(calendar, range(5)) == [
        datetime(2026, 1, 31, 12),
        datetime(2026, 2, 28, 12),
        datetime(2026, 3, 31, 12),
        datetime(2026, 4, 30, 12),
        datetime(2026, 5, 31, 12),
    ]


def test_monthly_starts_stay_at_noon_local_across_chiles_april_dst_change():
    calendar = monthly_from_january_31_in_santiago()

    # Summer time (UTC-3) until 2026-04-05, then standard time (UTC-4).
    assert calendar.boundary(2) == datetime(2026, 3, 31, 15, tzinfo=UTC)
    assert calendar.boundary(3) == datetime(2026, 4, 30, 16, tzinfo=UTC)


def test_the_period_that_contains_chiles_april_dst_change_lasts_721_hours():
    calendar = monthly_from_january_31_in_santiago()

    assert calendar.period(1).duration == timedelta(hours=31 * 24)
    assert calendar.period(2).duration == timedelta(hours=721)
    assert calendar.period(3).duration == timedelta(hours=31 * 24)


def test_in_a_leap_year_an_anchor_on_january_31_bills_on_february_29():
    calendar = BillingCalendar(
        datetime(2024, 1, 31, 12, tzinfo=SANTIAGO), Interval.of("month"), SANTIAGO
    )

    assert local_starts(calendar, range(3)) == [
        datetime(2024, 1, 31, 12),
        datetime(2024, 2, 29, 12),
        datetime(2024, 3, 31, 12),
    ]


def test_a_yearly_anchor_on_february_29_bills_on_february_28_in_common_years():
    calendar = BillingCalendar(
        datetime(2024, 2, 29, 9, tzinfo=SANTIAGO), Interval.of("year"), SANTIAGO
    )

    assert local_starts(calendar, range(5)) == [
        datetime(2024, 2, 29, 9),
        datetime(2025, 2, 28, 9),
        datetime(2026, 2, 28, 9),
        datetime(2027, 2, 28, 9),
        datetime(2028, 2, 29, 9),
    ]


def test_a_count_of_three_months_bills_quarterly_from_the_anchor():
    calendar = BillingCalendar(
        datetime(2026, 1, 31, 12, tzinfo=SANTIAGO), Interval.of("month", 3), SANTIAGO
    )

    assert local_starts(calendar, range(5)) == [
        datetime(2026, 1, 31, 12),
        datetime(2026, 4, 30, 12),
        datetime(2026, 7, 31, 12),
        datetime(2026, 10, 31, 12),
        datetime(2027, 1, 31, 12),
    ]


def test_period_k_is_counted_from_the_anchor_and_never_chained_from_the_previous_period():
    calendar = monthly_from_january_31_in_santiago()
    chained = wall_shift(calendar.boundary(3), SANTIAGO, relativedelta(months=1))

    assert calendar.boundary(3).astimezone(SANTIAGO).replace(tzinfo=None) == datetime(
        2026, 4, 30, 12
    )
    assert calendar.boundary(4).astimezone(SANTIAGO).replace(tzinfo=None) == datetime(
        2026, 5, 31, 12
    )
    assert chained.astimezone(SANTIAGO).replace(tzinfo=None) == datetime(2026, 5, 30, 12)


def test_period_k_ends_where_period_k_plus_one_starts():
    calendar = monthly_from_january_31_in_santiago()

    assert calendar.period(0) == Period(
        datetime(2026, 1, 31, 15, tzinfo=UTC), datetime(2026, 2, 28, 15, tzinfo=UTC)
    )
    assert calendar.period(0).end == calendar.period(1).start


def test_period_zero_starts_at_the_anchor():
    calendar = monthly_from_january_31_in_santiago()

    assert calendar.boundary(0) == datetime(2026, 1, 31, 15, tzinfo=UTC)
    assert calendar.period(0).start == calendar.anchor


def test_an_anchor_at_the_second_1_30_of_a_fall_back_night_starts_period_zero_at_the_anchor():
    # 01:30 happens twice on 2026-11-01 in New York: first in EDT (05:30 UTC), then in EST
    # (06:30 UTC). A subscription that starts at the second one must not bill from an hour
    # before it started.
    anchor = datetime(2026, 11, 1, 1, 30, tzinfo=NEW_YORK, fold=1)
    calendar = BillingCalendar(anchor, Interval.of("month"), NEW_YORK)

    assert calendar.anchor == datetime(2026, 11, 1, 6, 30, tzinfo=UTC)
    assert calendar.boundary(0) == datetime(2026, 11, 1, 6, 30, tzinfo=UTC)


def test_periods_before_the_anchor_count_back_from_it():
    calendar = monthly_from_january_31_in_santiago()

    assert local_starts(calendar, range(-2, 0)) == [
        datetime(2025, 11, 30, 12),
        datetime(2025, 12, 31, 12),
    ]


# Weeks and days


def test_a_weekly_interval_steps_seven_calendar_days_at_the_same_local_time_across_dst():
    calendar = BillingCalendar(
        datetime(2026, 3, 2, 9, tzinfo=NEW_YORK), Interval.of("week"), NEW_YORK
    )

    assert local_starts(calendar, range(3)) == [
        datetime(2026, 3, 2, 9),
        datetime(2026, 3, 9, 9),
        datetime(2026, 3, 16, 9),
    ]
    assert calendar.period(0).duration == timedelta(hours=7 * 24 - 1)
    assert calendar.period(1).duration == timedelta(hours=7 * 24)


def test_a_daily_interval_steps_one_calendar_day_so_new_yorks_spring_forward_day_lasts_23_hours():
    calendar = BillingCalendar(
        datetime(2026, 3, 7, 9, tzinfo=NEW_YORK), Interval.of("day"), NEW_YORK
    )

    assert calendar.boundary(1) == datetime(2026, 3, 8, 13, tzinfo=UTC)
    assert calendar.period(0).duration == timedelta(hours=23)
    assert calendar.period(1).duration == timedelta(hours=24)


def test_a_count_of_two_weeks_bills_every_fourteen_days():
    calendar = BillingCalendar(datetime(2026, 1, 5, 8, tzinfo=TOKYO), Interval.of("week", 2), TOKYO)

    assert local_starts(calendar, range(3)) == [
        datetime(2026, 1, 5, 8),
        datetime(2026, 1, 19, 8),
        datetime(2026, 2, 2, 8),
    ]


def test_an_interval_times_k_is_k_times_its_count_of_units():
    assert Interval.of("day", 5).times(3) == relativedelta(days=15)
    assert Interval.of("week", 2).times(3) == relativedelta(days=42)
    assert Interval.of("month", 3).times(-2) == relativedelta(months=-6)
    assert Interval.of("year").times(4) == relativedelta(years=4)


def test_an_interval_reads_as_its_count_and_unit():
    assert str(Interval.of("month")) == "1 month"
    assert str(Interval.of("month", 3)) == "3 months"
    assert Interval.of(IntervalUnit.WEEK, 2) == Interval(IntervalUnit.WEEK, 2)


# Local times that do not exist, or exist twice


def test_a_start_in_santiagos_september_gap_moves_forward_by_the_gap():
    # Chile moves its clocks from 00:00 to 01:00 on 2026-09-06: midnight does not exist.
    calendar = BillingCalendar(
        datetime(2026, 9, 5, 0, 0, tzinfo=SANTIAGO), Interval.of("day"), SANTIAGO
    )

    assert local_starts(calendar, range(3)) == [
        datetime(2026, 9, 5, 0, 0),
        datetime(2026, 9, 6, 1, 0),
        datetime(2026, 9, 7, 0, 0),
    ]
    assert calendar.boundary(1) == datetime(2026, 9, 6, 4, 0, tzinfo=UTC)
    assert calendar.period(0).duration == timedelta(hours=24)
    assert calendar.period(1).duration == timedelta(hours=23)


def test_a_start_at_2_30_on_new_yorks_spring_forward_day_moves_to_3_30():
    calendar = BillingCalendar(
        datetime(2026, 2, 8, 2, 30, tzinfo=NEW_YORK), Interval.of("month"), NEW_YORK
    )

    assert calendar.boundary(1) == datetime(2026, 3, 8, 7, 30, tzinfo=UTC)
    assert local_starts(calendar, range(3)) == [
        datetime(2026, 2, 8, 2, 30),
        datetime(2026, 3, 8, 3, 30),
        datetime(2026, 4, 8, 2, 30),
    ]


def test_an_ambiguous_start_on_new_yorks_fall_back_night_takes_its_first_occurrence():
    calendar = BillingCalendar(
        datetime(2026, 10, 1, 1, 30, tzinfo=NEW_YORK), Interval.of("month"), NEW_YORK
    )

    # 01:30 EDT (UTC-4), not the second 01:30 in EST (06:30 UTC).
    assert calendar.boundary(1) == datetime(2026, 11, 1, 5, 30, tzinfo=UTC)


def test_a_later_ambiguous_start_takes_its_first_occurrence_even_if_the_anchor_was_the_second():
    # The anchor is the second 01:30 of 2025-11-02 (EST, 06:30 UTC). Fifty-two weeks on,
    # 2026-11-01 01:30 is ambiguous again; like every ambiguous start it takes the first one.
    anchor = datetime(2025, 11, 2, 1, 30, tzinfo=NEW_YORK, fold=1)
    calendar = BillingCalendar(anchor, Interval.of("week"), NEW_YORK)

    assert calendar.boundary(52) == datetime(2026, 11, 1, 5, 30, tzinfo=UTC)


def test_localize_moves_a_time_in_a_gap_forward_and_takes_the_first_of_two_ambiguous_times():
    assert localize(datetime(2026, 9, 6, 0, 0), SANTIAGO) == datetime(2026, 9, 6, 4, 0, tzinfo=UTC)
    assert localize(datetime(2026, 3, 8, 2, 30), NEW_YORK) == datetime(
        2026, 3, 8, 7, 30, tzinfo=UTC
    )
    assert localize(datetime(2026, 11, 1, 1, 30), NEW_YORK) == datetime(
        2026, 11, 1, 5, 30, tzinfo=UTC
    )
    assert localize(datetime(2026, 7, 1, 12, 0), NEW_YORK) == datetime(
        2026, 7, 1, 16, 0, tzinfo=UTC
    )


def test_localize_returns_a_utc_instant():
    assert localize(datetime(2026, 7, 1, 12, 0), SANTIAGO).tzinfo is UTC


# Finding the period of an instant


def test_index_at_finds_the_period_that_contains_an_instant():
    calendar = monthly_from_january_31_in_santiago()

    assert calendar.index_at(datetime(2026, 2, 14, 9, tzinfo=SANTIAGO)) == 0
    assert calendar.index_at(datetime(2026, 4, 15, tzinfo=UTC)) == 2
    assert calendar.index_at(datetime(2027, 1, 1, tzinfo=TOKYO)) == 11


def test_an_instant_exactly_on_a_boundary_belongs_to_the_later_period():
    calendar = monthly_from_january_31_in_santiago()
    boundary = datetime(2026, 2, 28, 15, tzinfo=UTC)

    assert calendar.index_at(boundary) == 1
    assert calendar.index_at(boundary - MICROSECOND) == 0
    assert calendar.index_at(calendar.anchor) == 0


def test_an_instant_before_the_anchor_has_a_negative_index():
    calendar = monthly_from_january_31_in_santiago()

    assert calendar.index_at(calendar.anchor - MICROSECOND) == -1
    assert calendar.index_at(datetime(2025, 2, 10, tzinfo=UTC)) == -12
    assert calendar.index_at(datetime(2025, 1, 15, tzinfo=UTC)) == -13


def test_period_at_returns_the_whole_period_containing_an_instant():
    calendar = monthly_from_january_31_in_santiago()

    assert calendar.period_at(datetime(2026, 4, 5, 12, tzinfo=SANTIAGO)) == Period(
        datetime(2026, 3, 31, 15, tzinfo=UTC), datetime(2026, 4, 30, 16, tzinfo=UTC)
    )
    assert calendar.period_at(datetime(2026, 1, 1, tzinfo=UTC)) == Period(
        datetime(2025, 12, 31, 15, tzinfo=UTC), datetime(2026, 1, 31, 15, tzinfo=UTC)
    )


def test_index_at_finds_the_right_period_on_both_sides_of_a_gap_shifted_boundary():
    calendar = BillingCalendar(
        datetime(2026, 2, 8, 2, 30, tzinfo=NEW_YORK), Interval.of("month"), NEW_YORK
    )
    shifted = datetime(2026, 3, 8, 7, 30, tzinfo=UTC)  # 03:30 EDT, pushed out of the gap

    assert calendar.index_at(shifted - MICROSECOND) == 0
    assert calendar.index_at(shifted) == 1


# wall_shift


def test_wall_shift_keeps_the_local_wall_time_across_a_dst_change():
    shifted = wall_shift(
        datetime(2026, 3, 31, 9, tzinfo=SANTIAGO), SANTIAGO, relativedelta(months=1)
    )

    assert shifted == datetime(2026, 4, 30, 13, tzinfo=UTC)
    assert shifted.astimezone(SANTIAGO).replace(tzinfo=None) == datetime(2026, 4, 30, 9)


def test_wall_shift_by_one_day_over_spring_forward_moves_23_real_hours():
    start = datetime(2026, 3, 7, 12, tzinfo=NEW_YORK)

    shifted = wall_shift(start, NEW_YORK, relativedelta(days=1))

    assert shifted == datetime(2026, 3, 8, 16, tzinfo=UTC)
    assert shifted - start == timedelta(hours=23)


def test_wall_shift_reads_the_wall_clock_of_the_given_timezone_not_of_the_instant():
    # 2026-01-31 02:00 UTC is still January 30, 23:00 in Santiago: one month on is February 28,
    # 23:00 there (March 1 in UTC), not February 28 in UTC.
    shifted = wall_shift(datetime(2026, 1, 31, 2, tzinfo=UTC), SANTIAGO, relativedelta(months=1))

    assert shifted == datetime(2026, 3, 1, 2, tzinfo=UTC)
    assert shifted.astimezone(SANTIAGO).replace(tzinfo=None) == datetime(2026, 2, 28, 23)


def test_wall_shift_returns_a_utc_instant():
    shifted = wall_shift(datetime(2026, 5, 1, 9, tzinfo=TOKYO), TOKYO, relativedelta(days=1))

    assert shifted.tzinfo is UTC
    assert shifted == datetime(2026, 5, 2, 0, tzinfo=UTC)


# Errors


def test_a_naive_anchor_is_refused_naming_the_anchor():
    with pytest.raises(NaiveDatetime) as raised:
        BillingCalendar(datetime(2026, 1, 31, 12), Interval.of("month"), SANTIAGO)

    assert raised.value.field == "anchor"


def test_a_naive_instant_is_refused_by_index_at():
    calendar = monthly_from_january_31_in_santiago()

    with pytest.raises(NaiveDatetime) as raised:
        calendar.index_at(datetime(2026, 2, 1))

    assert raised.value.field == "at"


@pytest.mark.parametrize("count", [0, -1, True, False])
def test_an_interval_count_below_one_or_a_bool_is_refused_naming_interval_count(count):
    with pytest.raises(InvalidArgument) as raised:
        Interval.of("month", count)

    assert raised.value.field == "interval_count"


def test_an_interval_count_that_is_not_an_integer_is_refused():
    with pytest.raises(InvalidArgument) as raised:
        Interval(IntervalUnit.DAY, "2")  # type: ignore[arg-type]

    assert raised.value.field == "interval_count"


def test_an_unknown_interval_unit_is_refused_naming_interval():
    with pytest.raises(InvalidArgument) as raised:
        Interval.of("fortnight")

    assert raised.value.field == "interval"
    assert raised.value.value == "fortnight"


def test_a_calendar_needs_an_interval_not_a_unit_name():
    with pytest.raises(InvalidArgument) as raised:
        BillingCalendar(datetime(2026, 1, 31, 12, tzinfo=UTC), "month", SANTIAGO)  # type: ignore[arg-type]

    assert raised.value.field == "interval"


def test_an_unknown_timezone_name_is_refused():
    with pytest.raises(UnknownTimezone) as raised:
        BillingCalendar(
            datetime(2026, 1, 31, 12, tzinfo=UTC),
            Interval.of("month"),
            "Mars/Olympus_Mons",  # type: ignore[arg-type]
        )

    assert raised.value.field == "timezone"
    assert raised.value.value == "Mars/Olympus_Mons"


def test_a_period_whose_end_precedes_its_start_is_refused():
    start = datetime(2026, 2, 1, tzinfo=UTC)

    with pytest.raises(InvalidArgument) as raised:
        Period(start, start - MICROSECOND)

    assert raised.value.field == "end"


def test_a_period_with_a_naive_start_is_refused_naming_start():
    with pytest.raises(NaiveDatetime) as raised:
        Period(datetime(2026, 2, 1), datetime(2026, 3, 1, tzinfo=UTC))

    assert raised.value.field == "start"


# Period


def test_a_period_is_half_open():
    period = Period(datetime(2026, 2, 1, tzinfo=UTC), datetime(2026, 3, 1, tzinfo=UTC))

    assert period.contains(datetime(2026, 2, 1, tzinfo=UTC))
    assert period.contains(datetime(2026, 3, 1, tzinfo=UTC) - MICROSECOND)
    assert not period.contains(datetime(2026, 3, 1, tzinfo=UTC))
    assert not period.contains(datetime(2026, 2, 1, tzinfo=UTC) - MICROSECOND)


def test_an_empty_period_contains_nothing():
    instant = datetime(2026, 2, 1, tzinfo=UTC)
    period = Period(instant, instant)

    assert period.duration == timedelta(0)
    assert not period.contains(instant)


def test_a_period_keeps_its_bounds_as_utc_instants():
    period = Period(datetime(2026, 2, 1, 9, tzinfo=TOKYO), datetime(2026, 3, 1, 9, tzinfo=TOKYO))

    assert period.start.tzinfo is UTC
    assert period.end.tzinfo is UTC
    assert period.start == datetime(2026, 2, 1, 0, tzinfo=UTC)
    assert str(period) == "[2026-02-01T00:00:00+00:00, 2026-03-01T00:00:00+00:00)"
