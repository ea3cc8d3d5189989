"""Proration: the fraction of a period that remains, and what a plan change inside it is worth."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from fractions import Fraction
from zoneinfo import ZoneInfo

import pytest

from billing.domain.errors import NaiveDatetime
from billing.domain.invoices import LineKind
from billing.domain.money import Money, Rounding
from billing.domain.periods import Period
from billing.domain.proration import ProrationUnit, quote, remaining_fraction

SANTIAGO = ZoneInfo("America/Santiago")
NEW_YORK = ZoneInfo("America/New_York")
SECOND = ProrationUnit.SECOND
DAY = ProrationUnit.DAY

# 2026-01-31 12:00 to 2026-02-28 12:00 in Santiago (UTC-3 throughout): 28 days.
FEBRUARY = Period(datetime(2026, 1, 31, 15, tzinfo=UTC), datetime(2026, 2, 28, 15, tzinfo=UTC))
FEBRUARY_SECONDS = 28 * 24 * 3600


def clp(amount: int) -> Money:
    return Money.of(amount, "CLP")


# By the second


def test_the_whole_period_remains_at_its_start():
    assert remaining_fraction(FEBRUARY, FEBRUARY.start, unit=SECOND, timezone=SANTIAGO) == 1


def test_the_whole_period_remains_before_its_start():
    at = FEBRUARY.start - timedelta(days=3)

    assert remaining_fraction(FEBRUARY, at, unit=SECOND, timezone=SANTIAGO) == 1


def test_nothing_remains_at_the_end_of_the_period_or_after_it():
    assert remaining_fraction(FEBRUARY, FEBRUARY.end, unit=SECOND, timezone=SANTIAGO) == 0
    assert (
        remaining_fraction(
            FEBRUARY, FEBRUARY.end + timedelta(seconds=1), unit=SECOND, timezone=SANTIAGO
        )
        == 0
    )


def test_inside_the_period_the_fraction_is_the_seconds_left_over_the_seconds_in_the_period():
    at = FEBRUARY.start + timedelta(days=1, seconds=1)

    assert remaining_fraction(FEBRUARY, at, unit=SECOND, timezone=SANTIAGO) == Fraction(
        FEBRUARY_SECONDS - 86401, FEBRUARY_SECONDS
    )


def test_the_fraction_counts_whole_seconds_left_dropping_a_partial_second():
    at = FEBRUARY.start + timedelta(milliseconds=500)

    assert remaining_fraction(FEBRUARY, at, unit=SECOND, timezone=SANTIAGO) == Fraction(
        FEBRUARY_SECONDS - 1, FEBRUARY_SECONDS
    )


def test_a_23_hour_dst_day_weighs_23_real_hours():
    # New York springs forward on 2026-03-08: 00:00 EST to 00:00 EDT the next day is 23 hours.
    day = Period(datetime(2026, 3, 8, 5, tzinfo=UTC), datetime(2026, 3, 9, 4, tzinfo=UTC))
    three_am_local = datetime(2026, 3, 8, 3, tzinfo=NEW_YORK)  # two real hours in

    assert remaining_fraction(day, three_am_local, unit=SECOND, timezone=NEW_YORK) == Fraction(
        21, 23
    )


def test_a_25_hour_dst_day_weighs_25_real_hours():
    # New York falls back on 2026-11-01: 00:00 EDT to 00:00 EST the next day is 25 hours.
    day = Period(datetime(2026, 11, 1, 4, tzinfo=UTC), datetime(2026, 11, 2, 5, tzinfo=UTC))
    noon_local = datetime(2026, 11, 1, 12, tzinfo=NEW_YORK)  # thirteen real hours in

    assert remaining_fraction(day, noon_local, unit=SECOND, timezone=NEW_YORK) == Fraction(12, 25)


def test_a_month_with_chiles_april_dst_change_weighs_721_hours():
    # 2026-03-31 12:00 (UTC-3) to 2026-04-30 12:00 (UTC-4).
    april = Period(datetime(2026, 3, 31, 15, tzinfo=UTC), datetime(2026, 4, 30, 16, tzinfo=UTC))
    midnight_local = datetime(2026, 4, 30, 0, tzinfo=SANTIAGO)

    assert remaining_fraction(april, midnight_local, unit=SECOND, timezone=SANTIAGO) == Fraction(
        12, 721
    )


def test_the_instant_of_the_change_may_be_given_in_any_timezone():
    at = datetime(2026, 2, 14, 12, tzinfo=SANTIAGO)

    assert remaining_fraction(
        FEBRUARY, at.astimezone(ZoneInfo("Asia/Tokyo")), unit=SECOND, timezone=SANTIAGO
    ) == Fraction(1, 2)


def test_a_naive_instant_of_change_is_refused():
    with pytest.raises(NaiveDatetime) as raised:
        remaining_fraction(FEBRUARY, datetime(2026, 2, 14), unit=SECOND, timezone=SANTIAGO)

    assert raised.value.field == "at"


def test_a_period_shorter_than_a_second_still_has_a_fraction_between_zero_and_one():
    # Period accepts any span with end >= start; the contract is 1 at the start, 0 at the end.
    start = datetime(2026, 2, 1, tzinfo=UTC)
    blink = Period(start, start + timedelta(milliseconds=500))

    fraction = remaining_fraction(
        blink, start + timedelta(milliseconds=100), unit=SECOND, timezone=SANTIAGO
    )

    assert 0 <= fraction <= 1


# By the day


def test_by_the_day_the_day_of_the_change_counts_as_remaining():
    at = datetime(2026, 2, 15, 0, 0, tzinfo=SANTIAGO)

    assert remaining_fraction(FEBRUARY, at, unit=DAY, timezone=SANTIAGO) == Fraction(13, 28)


def test_by_the_day_a_change_late_on_the_first_day_leaves_the_whole_period():
    at = datetime(2026, 1, 31, 23, 59, tzinfo=SANTIAGO)

    assert remaining_fraction(FEBRUARY, at, unit=DAY, timezone=SANTIAGO) == 1


def test_by_the_day_a_change_on_the_last_day_before_the_end_leaves_nothing():
    at = datetime(2026, 2, 28, 8, 0, tzinfo=SANTIAGO)

    assert remaining_fraction(FEBRUARY, at, unit=DAY, timezone=SANTIAGO) == 0


def test_by_the_day_days_are_counted_on_the_customers_calendar_not_utcs():
    # 2026-02-15 02:00 UTC is still February 14 (23:00) in Santiago.
    at = datetime(2026, 2, 15, 2, tzinfo=UTC)

    assert remaining_fraction(FEBRUARY, at, unit=DAY, timezone=SANTIAGO) == Fraction(14, 28)
    assert remaining_fraction(FEBRUARY, at, unit=DAY, timezone=UTC) == Fraction(13, 28)


def test_by_the_day_a_dst_change_does_not_change_the_count_of_days():
    april = Period(datetime(2026, 3, 31, 15, tzinfo=UTC), datetime(2026, 4, 30, 16, tzinfo=UTC))
    at = datetime(2026, 4, 5, 0, 0, tzinfo=SANTIAGO)

    assert remaining_fraction(april, at, unit=DAY, timezone=SANTIAGO) == Fraction(25, 30)


# Quotes


def test_a_change_at_the_very_start_of_the_period_credits_the_old_price_and_charges_the_new():
    # QVO's worked example: oro (15000 CLP) to platino (50000 CLP) leaves a debt of 35000.
    change = quote(
        old_name="oro",
        old_price=clp(15000),
        new_name="platino",
        new_price=clp(50000),
        period=FEBRUARY,
        at=FEBRUARY.start,
        unit=SECOND,
        timezone=SANTIAGO,
    )

    assert change.fraction == 1
    assert change.net == clp(35000)
    assert change.credit.kind is LineKind.PRORATION_CREDIT
    assert change.credit.amount == clp(-15000)
    assert change.charge.kind is LineKind.PRORATION_CHARGE
    assert change.charge.amount == clp(50000)
    assert change.lines == (change.credit, change.charge)


def test_a_quotes_lines_name_the_plans_cover_the_rest_of_the_period_and_are_taxable():
    at = datetime(2026, 2, 14, 12, tzinfo=SANTIAGO)

    change = quote(
        old_name="oro",
        old_price=clp(15000),
        new_name="platino",
        new_price=clp(50000),
        period=FEBRUARY,
        at=at,
        unit=SECOND,
        timezone=SANTIAGO,
    )

    rest = Period(datetime(2026, 2, 14, 15, tzinfo=UTC), FEBRUARY.end)
    assert change.period == rest
    assert change.credit.period == rest
    assert change.charge.period == rest
    assert change.credit.description == "Unused time on oro"
    assert change.charge.description == "Remaining time on platino"
    assert change.credit.taxable
    assert change.charge.taxable


def test_a_change_before_the_period_starts_covers_the_whole_period():
    change = quote(
        old_name="oro",
        old_price=clp(15000),
        new_name="platino",
        new_price=clp(50000),
        period=FEBRUARY,
        at=FEBRUARY.start - timedelta(hours=1),
        unit=SECOND,
        timezone=SANTIAGO,
    )

    assert change.period == FEBRUARY
    assert change.net == clp(35000)


def test_a_mid_period_quote_rounds_each_line_half_up_on_its_own():
    # Exactly half of February remains: 15001 / 2 = 7500.5 rounds to a credit of 7501.
    at = datetime(2026, 2, 14, 12, tzinfo=SANTIAGO)

    change = quote(
        old_name="oro",
        old_price=clp(15001),
        new_name="platino",
        new_price=clp(50000),
        period=FEBRUARY,
        at=at,
        unit=SECOND,
        timezone=SANTIAGO,
    )

    assert change.fraction == Fraction(1, 2)
    assert change.credit.amount == clp(-7501)
    assert change.charge.amount == clp(25000)
    # Rounding the difference once (34999 / 2 = 17499.5) would give 17500.
    assert change.net == clp(17499)
    assert change.net == change.charge.amount + change.credit.amount


def test_a_mid_period_quote_rounds_both_halves_away_from_zero():
    at = datetime(2026, 2, 14, 12, tzinfo=SANTIAGO)

    change = quote(
        old_name="oro",
        old_price=clp(15001),
        new_name="platino",
        new_price=clp(50001),
        period=FEBRUARY,
        at=at,
        unit=SECOND,
        timezone=SANTIAGO,
    )

    assert change.credit.amount == clp(-7501)
    assert change.charge.amount == clp(25001)
    assert change.net == clp(17500)


def test_a_quote_by_the_day_prorates_by_calendar_days_left():
    at = datetime(2026, 2, 15, 0, 0, tzinfo=SANTIAGO)

    change = quote(
        old_name="oro",
        old_price=clp(15000),
        new_name="platino",
        new_price=clp(50000),
        period=FEBRUARY,
        at=at,
        unit=DAY,
        timezone=SANTIAGO,
    )

    # 15000 x 13/28 = 6964.29 and 50000 x 13/28 = 23214.29
    assert change.fraction == Fraction(13, 28)
    assert change.credit.amount == clp(-6964)
    assert change.charge.amount == clp(23214)
    assert change.net == clp(16250)


def test_a_quote_can_name_another_rounding():
    at = datetime(2026, 2, 14, 12, tzinfo=SANTIAGO)

    change = quote(
        old_name="oro",
        old_price=clp(15001),
        new_name="platino",
        new_price=clp(50001),
        period=FEBRUARY,
        at=at,
        unit=SECOND,
        timezone=SANTIAGO,
        rounding=Rounding.HALF_EVEN,
    )

    assert change.credit.amount == clp(-7500)
    assert change.charge.amount == clp(25000)
    assert change.net == clp(17500)


def test_a_downgrade_quotes_a_negative_net():
    at = datetime(2026, 2, 14, 12, tzinfo=SANTIAGO)

    change = quote(
        old_name="platino",
        old_price=clp(50000),
        new_name="oro",
        new_price=clp(15000),
        period=FEBRUARY,
        at=at,
        unit=SECOND,
        timezone=SANTIAGO,
    )

    assert change.credit.amount == clp(-25000)
    assert change.charge.amount == clp(7500)
    assert change.net == clp(-17500)


def test_quoting_the_same_price_on_both_sides_is_exactly_zero():
    at = datetime(2026, 2, 14, 12, tzinfo=SANTIAGO)

    change = quote(
        old_name="oro",
        old_price=clp(15001),
        new_name="oro anual",
        new_price=clp(15001),
        period=FEBRUARY,
        at=at,
        unit=SECOND,
        timezone=SANTIAGO,
    )

    assert change.credit.amount == clp(-7501)
    assert change.charge.amount == clp(7501)
    assert change.net == Money.zero("CLP")


def test_quoting_the_same_price_in_centavos_is_exactly_zero():
    at = datetime(2026, 2, 15, 0, 0, tzinfo=SANTIAGO)
    price = Money.of("199.99", "MXN")

    change = quote(
        old_name="basico",
        old_price=price,
        new_name="basico plus",
        new_price=price,
        period=FEBRUARY,
        at=at,
        unit=DAY,
        timezone=SANTIAGO,
    )

    # 19999 centavos x 13/28 = 9285.25, rounded to 9285 on both lines.
    assert change.charge.amount == Money.from_minor(9285, "MXN")
    assert change.credit.amount == Money.from_minor(-9285, "MXN")
    assert change.net == Money.zero("MXN")
