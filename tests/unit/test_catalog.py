"""Plans and customers: construction and validation."""

from __future__ import annotations

from datetime import date

import pytest

from billing.domain.catalog import Plan, PlanStatus
from billing.domain.customers import Customer
from billing.domain.errors import FloatNotAllowed, InvalidArgument, UnknownCurrency, UnknownTimezone
from billing.domain.money import Money
from billing.domain.periods import Interval, IntervalUnit


def plan(**overrides: object) -> Plan:
    values: dict[str, object] = {
        "code": "oro",
        "name": "Plan Oro",
        "price": "15000.0",
        "currency": "CLP",
    }
    values.update(overrides)
    return Plan.of(**values)  # type: ignore[arg-type]


def test_a_plan_defaults_to_a_monthly_active_plan_without_trial():
    oro = plan()
    assert oro.price == Money.of("15000", "CLP")
    assert oro.interval == Interval(IntervalUnit.MONTH, 1)
    assert oro.trial_days == 0
    assert oro.cycles is None
    assert oro.status is PlanStatus.ACTIVE
    assert oro.billing_currency.code == "CLP"


def test_deactivating_a_plan_closes_it_to_new_subscriptions():
    assert not plan().deactivated().is_active


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"price": "-1"}, "price"),
        ({"price": 15000.0}, "amount"),
        ({"currency": "XYZ"}, "currency"),
        ({"interval_count": 0}, "interval_count"),
        ({"interval": "fortnight"}, "interval"),
        ({"trial_days": -1}, "trial_days"),
        ({"cycles": 0}, "cycles"),
        ({"code": " "}, "code"),
        ({"name": ""}, "name"),
        ({"status": "deleted"}, "status"),
        ({"charge_currency": "UF"}, "currency"),
    ],
)
def test_a_plan_refuses_bad_input_naming_the_field(overrides: dict[str, object], field: str):
    with pytest.raises(InvalidArgument) as error:
        plan(**overrides)
    assert error.value.field == field


def test_a_float_price_is_refused_as_a_type_error_too():
    with pytest.raises(TypeError):
        plan(price=15000.0)
    with pytest.raises(FloatNotAllowed):
        plan(price=0.1)


def test_an_unknown_currency_is_its_own_error():
    with pytest.raises(UnknownCurrency):
        plan(currency="UF")


def test_a_plan_priced_in_uf_needs_rates_to_be_charged_in_pesos():
    uf = plan(price="0.5", currency="CLF", charge_currency="CLP")
    with pytest.raises(InvalidArgument) as error:
        uf.price_on(date(2026, 1, 1), None)
    assert error.value.field == "rates"


def test_a_customer_needs_an_iana_timezone():
    assert Customer.of("c1", "America/Bogota").timezone.key == "America/Bogota"
    with pytest.raises(UnknownTimezone) as error:
        Customer.of("c1", "Mars/Olympus")
    assert error.value.field == "timezone"


def test_customer_metadata_maps_strings_to_strings():
    with pytest.raises(InvalidArgument) as error:
        Customer.of("c1", "UTC", {"plan": 3})  # type: ignore[dict-item]
    assert error.value.field == "metadata"
