"""Scenario files: parsed into frozen values, and every error names the file, line and field."""

from __future__ import annotations

import dataclasses
import json
import pickle
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from billing.domain.catalog import Plan
from billing.domain.dunning import AfterRetries, RetryPolicy
from billing.domain.errors import (
    BillingError,
    FloatNotAllowed,
    InvalidArgument,
    NaiveDatetime,
    UnknownCurrency,
    UnknownTimezone,
)
from billing.domain.exchange import ExchangeRate
from billing.domain.money import Currency, Money
from billing.domain.proration import ProrationBehavior, ProrationUnit
from billing.domain.taxes import TaxRate, TaxRounding
from billing.scenarios.file import (
    CustomerSpec,
    EventSpec,
    Scenario,
    ScenarioError,
    SubscriptionSpec,
    load_scenario,
    read_scenario,
)

# The example of the format, as documented, with a platino plan so the change_plan ref resolves.
EXAMPLE = """\
name: upgrade in the middle of a period
start: "2026-01-31T12:00:00+00:00"      # the clock starts here
until: "2026-06-01T00:00:00+00:00"      # everything due up to this instant is billed
proration: second
exchange_rates:
  - {date: "2026-01-01", from: CLF, to: CLP, rate: "39000.50"}
plans:
  - {code: oro, name: Plan Oro, price: "15000", currency: CLP, interval: month,
     interval_count: 1, trial_days: 0, cycles: 12,
     retry: {delays_days: [1, 3, 5], then: unpaid}}
  - {code: platino, name: Plan Platino, price: "50000", currency: CLP}
customers:
  - {ref: c1, timezone: America/Santiago, gateway: fake, payment: approve, credit: "0"}
subscriptions:
  - {ref: s1, customer: c1, plan: oro, start: "2026-01-31T12:00:00+00:00",
     trial_end: null, tax: {name: IVA, percent: "19", inclusive: false}, prorate: true}
events:
  - {at: "2026-02-15T00:00:00+00:00", change_plan: {subscription: s1, plan: platino}}
  - {at: "2026-03-20T00:00:00+00:00", set_payment: {customer: c1, payment: decline_soft}}
  - {at: "2026-04-02T00:00:00+00:00", cancel: {subscription: s1, at_period_end: true}}
"""

# One line per key where it matters, so each error's line number is pinned (numbers at the right).
FIXTURE = """\
name: upgrade in the middle of a period
start: "2026-01-31T12:00:00+00:00"
until: "2026-06-01T00:00:00+00:00"
proration: day
exchange_rates:
  - {date: "2026-01-01", from: CLF, to: CLP, rate: "39000.50"}
plans:
  - code: oro
    name: Plan Oro
    price: "15000"
    currency: CLP
    interval: month
    interval_count: 1
    trial_days: 0
    cycles: 12
    retry: {delays_days: [1, 3, 5], then: unpaid}
  - {code: platino, name: Plan Platino, price: "50000", currency: CLP}
  - {code: uf, name: Plan UF, price: "0.5", currency: CLF, charge_currency: CLP}
customers:
  - {ref: c1, timezone: America/Santiago, gateway: fake, payment: approve, credit: "0"}
  - {ref: c2, timezone: America/Mexico_City}
subscriptions:
  - ref: s1
    customer: c1
    plan: oro
    start: "2026-01-31T12:00:00+00:00"
    trial_end: null
    tax: {name: IVA, percent: "19", inclusive: false}
    prorate: true
  - {ref: s2, customer: c2, plan: uf, cycles: 3}
events:
  - at: "2026-02-15T00:00:00+00:00"
    change_plan: {subscription: s1, plan: platino}
  - {at: "2026-03-20T00:00:00+00:00", set_payment: {customer: c1, payment: decline_soft}}
  - {at: "2026-04-02T00:00:00+00:00", cancel: {subscription: s1, at_period_end: true}}
"""
#  1 name            8 plans[0]        20 customers[0]     32 events[0].at
#  2 start          10 plans[0].price  21 customers[1]     33 events[0].change_plan
#  3 until          11 .currency       23 subscriptions[0] 34 events[1]
#  6 exchange_rates 14 .trial_days     25 .plan            35 events[2]
#                   16 .retry          26 .start 28 .tax 29 .prorate


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(UTC)


def edited(old: str, new: str, text: str = FIXTURE) -> str:
    assert text.count(old) == 1, old
    return text.replace(old, new)


def refused(text: str) -> ScenarioError:
    with pytest.raises(ScenarioError) as caught:
        load_scenario(text, "scenario.yaml")
    return caught.value


# --- what a valid file gives -------------------------------------------------------------------


def test_the_documented_example_parses_into_the_expected_values():
    scenario = load_scenario(EXAMPLE, "example.yaml")

    assert scenario == Scenario(
        name="upgrade in the middle of a period",
        start=datetime(2026, 1, 31, 12, tzinfo=UTC),
        until=datetime(2026, 6, 1, tzinfo=UTC),
        proration=ProrationUnit.SECOND,
        exchange_rates=(ExchangeRate.of(date(2026, 1, 1), "CLF", "CLP", "39000.50"),),
        plans=(
            Plan.of(
                code="oro",
                name="Plan Oro",
                price="15000",
                currency="CLP",
                interval="month",
                interval_count=1,
                trial_days=0,
                cycles=12,
                retry=RetryPolicy.of([1, 3, 5], then="unpaid"),
            ),
            Plan.of(code="platino", name="Plan Platino", price="50000", currency="CLP"),
        ),
        customers=(
            CustomerSpec(
                ref="c1",
                timezone="America/Santiago",
                gateway="fake",
                payment="approve",
                credit=Decimal("0"),
                line=13,
            ),
        ),
        subscriptions=(
            SubscriptionSpec(
                ref="s1",
                customer="c1",
                plan="oro",
                start=datetime(2026, 1, 31, 12, tzinfo=UTC),
                trial_end=None,
                tax=TaxRate.of("IVA", "19", inclusive=False),
                prorate=True,
                cycles=None,
                line=15,
            ),
        ),
        events=(
            EventSpec(
                at=datetime(2026, 2, 15, tzinfo=UTC),
                action="change_plan",
                args={"subscription": "s1", "plan": "platino"},
                idempotency_key=None,
                line=18,
            ),
            EventSpec(
                at=datetime(2026, 3, 20, tzinfo=UTC),
                action="set_payment",
                args={"customer": "c1", "payment": "decline_soft"},
                idempotency_key=None,
                line=19,
            ),
            EventSpec(
                at=datetime(2026, 4, 2, tzinfo=UTC),
                action="cancel",
                args={"subscription": "s1", "at_period_end": True},
                idempotency_key=None,
                line=20,
            ),
        ),
        source="example.yaml",
    )
    oro = scenario.plans[0]
    assert oro.price == Money.of("15000", "CLP")
    assert oro.retry_policy.max_attempts == 4
    assert oro.retry_policy.then is AfterRetries.UNPAID


def test_the_values_are_frozen():
    scenario = load_scenario(EXAMPLE)
    with pytest.raises(dataclasses.FrozenInstanceError):
        scenario.name = "other"  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        scenario.customers[0].payment = "never_pay"  # type: ignore[misc]
    with pytest.raises(TypeError):
        scenario.events[0].args["plan"] = "oro"  # type: ignore[index]
    assert isinstance(scenario.plans, tuple)
    assert isinstance(scenario.events, tuple)


def test_defaults_fill_the_optional_keys():
    scenario = load_scenario(FIXTURE)
    c2 = scenario.customers[1]
    assert (c2.gateway, c2.payment, c2.credit) == ("fake", "approve", Decimal(0))
    s2 = scenario.subscriptions[1]
    assert s2.start == scenario.start  # defaults to the scenario's start
    assert (s2.tax, s2.prorate, s2.cycles, s2.trial_end) == (None, True, 3, None)
    uf = scenario.plans[2]
    assert uf.price == Money.of("0.5", "CLF")
    assert uf.billing_currency == Currency.of("CLP")
    assert uf.retry_policy == RetryPolicy.killbill()
    assert scenario.proration is ProrationUnit.DAY


@pytest.mark.parametrize("gateway", ["khipu", "payvalida"])
def test_the_pay_by_link_gateways_are_accepted(gateway: str):
    scenario = load_scenario(FIXTURE.replace("gateway: fake", f"gateway: {gateway}"))
    assert (scenario.customers[0].gateway, scenario.customers[1].gateway) == (gateway, "fake")


def test_json_is_accepted_as_yaml():
    document = {
        "name": "json",
        "start": "2026-01-31T12:00:00Z",
        "until": "2026-03-01T00:00:00-03:00",
        "plans": [
            {
                "code": "oro",
                "name": "Plan Oro",
                "price": 15000,
                "currency": "CLP",
                "retry": {"delays_days": [1, 3, 5], "then": "canceled", "max_attempts": 3},
            }
        ],
        "customers": [{"ref": "c1", "timezone": "America/Santiago", "credit": "2500"}],
        "subscriptions": [
            {
                "ref": "s1",
                "customer": "c1",
                "plan": "oro",
                "tax": {"name": "IVA", "percent": "19", "rounding": "per_line"},
                "prorate": False,
            }
        ],
        "events": [
            {"at": "2026-02-10T00:00:00Z", "grant_credit": {"customer": "c1", "amount": "100"}}
        ],
    }
    for text in (json.dumps(document, indent=2), json.dumps(document, separators=(",", ":"))):
        scenario = load_scenario(text, "scenario.json")
        assert scenario.until == datetime(2026, 3, 1, 3, tzinfo=UTC)
        assert scenario.plans[0].retry_policy == RetryPolicy.of(
            [1, 3, 5], then="canceled", max_attempts=3
        )
        assert scenario.customers[0].credit == Decimal("2500")
        tax = scenario.subscriptions[0].tax
        assert tax is not None
        assert tax.rounding is TaxRounding.PER_LINE
        assert scenario.subscriptions[0].prorate is False
        assert scenario.events[0].args == {"customer": "c1", "amount": Decimal("100")}

    error = refused(json.dumps(document, indent=2).replace('"price": 15000', '"price": 15000.5'))
    assert (error.line, error.field) == (9, "plans[0].price")


def test_events_are_sorted_by_time_keeping_the_file_order_of_equal_instants():
    events = """\
events:
  - {at: "2026-03-01T00:00:00+00:00", resume: {subscription: s1}, idempotency_key: third}
  - {at: "2026-02-01T00:00:00+00:00", pause: {subscription: s1}, idempotency_key: first}
  - {at: "2026-02-01T00:00:00+00:00", set_payment: {customer: c1, payment: timeout}}
  - {at: "2026-02-01T00:00:00-03:00", grant_credit: {customer: c1, amount: 5}}
  - {at: "2026-01-31T21:00:00-03:00", cancel: {subscription: s1}}
"""
    scenario = load_scenario(FIXTURE.split("events:\n")[0] + events)
    assert [(e.action, e.idempotency_key, e.line) for e in scenario.events] == [
        ("pause", "first", 33),
        ("set_payment", None, 34),
        ("cancel", None, 36),  # the same instant as the two above, written later in the file
        ("grant_credit", None, 35),
        ("resume", "third", 32),
    ]


def test_event_arguments_are_typed():
    events = """\
events:
  - {at: "2026-02-01T00:00:00+00:00", pause: {subscription: s1, resume_at: "2026-02-20T00:00:00Z"}}
  - at: 2026-02-21T00:00:00Z
    change_plan: {subscription: s1, plan: platino, behavior: invoice_now}
  - {at: "2026-02-22T00:00:00+00:00", refund: {invoice: INV-000002, amount: "1000.5"}}
  - {at: "2026-02-23T00:00:00+00:00", refund: {invoice: INV-000003}}
  - {at: "2026-02-24T00:00:00+00:00", replace_payment_method: {customer: c2, payment: pay_late}}
  - {at: "2026-02-25T00:00:00+00:00", cancel: {subscription: s2, at_period_end: false}}
  - {at: "2026-02-26T00:00:00+00:00", pause: {subscription: s2, resume_at: null}}
"""
    scenario = load_scenario(FIXTURE.split("events:\n")[0] + events)
    assert [dict(e.args) for e in scenario.events] == [
        {"subscription": "s1", "resume_at": datetime(2026, 2, 20, tzinfo=UTC)},
        {"subscription": "s1", "plan": "platino", "behavior": ProrationBehavior.INVOICE_NOW},
        {"invoice": "INV-000002", "amount": Decimal("1000.5")},
        {"invoice": "INV-000003"},
        {"customer": "c2", "payment": "pay_late"},
        {"subscription": "s2", "at_period_end": False},
        {"subscription": "s2"},
    ]
    assert scenario.events[1].at == datetime(2026, 2, 21, tzinfo=UTC)  # an unquoted aware stamp


def test_instants_are_kept_in_utc():
    scenario = load_scenario(
        edited(
            'start: "2026-01-31T12:00:00+00:00"\nuntil', 'start: "2026-01-31T09:00:00-03:00"\nuntil'
        )
    )
    assert scenario.start == datetime(2026, 1, 31, 12, tzinfo=UTC)
    assert scenario.start.tzinfo is UTC


def test_read_scenario_reads_a_file_and_names_it_in_errors(tmp_path: Path):
    path = tmp_path / "upgrade.yaml"
    path.write_text(EXAMPLE, encoding="utf-8")
    assert read_scenario(path) == load_scenario(EXAMPLE, str(path))

    path.write_text(edited('price: "15000"', 'price: "-1"', EXAMPLE), encoding="utf-8")
    with pytest.raises(ScenarioError) as caught:
        read_scenario(str(path))
    assert caught.value.source == str(path)
    assert str(caught.value).startswith(f"{path}:8: plans[0].price: must be >= 0")


# --- every error names the line and the field --------------------------------------------------


def test_the_error_is_in_the_engine_error_tree_and_reads_file_line_field_rule():
    error = refused(edited('price: "15000"', 'price: "-1"'))
    assert isinstance(error, InvalidArgument)
    assert isinstance(error, BillingError)
    assert isinstance(error, ValueError)
    assert (error.source, error.line, error.field, error.rule) == (
        "scenario.yaml",
        10,
        "plans[0].price",
        "must be >= 0",
    )
    assert str(error) == "scenario.yaml:10: plans[0].price: must be >= 0 (got '-1')"
    copy = pickle.loads(pickle.dumps(error))
    assert (str(copy), copy.line, copy.field) == (str(error), 10, "plans[0].price")


def test_the_default_source_is_named():
    error = refused(edited('price: "15000"', 'price: "-1"'))
    assert error.source == "scenario.yaml"
    with pytest.raises(ScenarioError, match=r"^<scenario>:10: "):
        load_scenario(edited('price: "15000"', 'price: "-1"'))


# (what the fixture says, what the broken file says, line, field, part of the rule)
# fmt: off
CASES = [
    pytest.param("    name: Plan Oro\n", "    name: Plan: Oro\n",
                 9, "yaml", "cannot be parsed", id="malformed yaml"),
    pytest.param("    change_plan: {subscription: s1, plan: platino}\n",
                 "    change_plan: {subscription: s1, plan: platino\n",
                 34, "yaml", "cannot be parsed", id="unclosed flow mapping"),
    pytest.param("    cycles: 12\n", "    cycles: 12\n    cycles: 6\n",
                 16, "yaml", "duplicate key 'cycles'", id="duplicate key"),
    pytest.param("    currency: CLP\n", "",
                 8, "plans[0].currency", "required key is missing", id="missing key"),
    pytest.param('until: "2026-06-01T00:00:00+00:00"\n', "",
                 1, "until", "required key is missing", id="missing top-level key"),
    pytest.param('    price: "15000"', '    pricee: "15000"',
                 10, "plans[0].pricee",
                 "unknown key; expected one of code, name, price, currency, interval",
                 id="unknown key"),
    pytest.param("proration: day", "prorate: day",
                 4, "prorate", "unknown key; expected one of name", id="unknown top-level key"),
    pytest.param("    trial_days: 0", '    trial_days: "three"',
                 14, "plans[0].trial_days", "must be an integer >= 0", id="bad type: integer"),
    pytest.param("    prorate: true", '    prorate: "yes"',
                 29, "subscriptions[0].prorate", "must be true or false", id="bad type: boolean"),
    pytest.param("    plan: oro\n", "    plan: 7\n",
                 25, "subscriptions[0].plan", "must be a non-empty string", id="bad type: ref"),
    pytest.param("exchange_rates:\n"
                 '  - {date: "2026-01-01", from: CLF, to: CLP, rate: "39000.50"}\n',
                 "exchange_rates: CLF\n",
                 5, "exchange_rates", "must be a list", id="bad type: list"),
    pytest.param('    tax: {name: IVA, percent: "19", inclusive: false}', "    tax: IVA 19",
                 28, "subscriptions[0].tax", "must be a mapping", id="bad type: mapping"),
    pytest.param("  - {ref: c2, timezone: America/Mexico_City}", "  - c2",
                 21, "customers[1]", "must be a mapping", id="bad type: list item"),
    pytest.param('    price: "15000"', "    price: 15000.5",
                 10, "plans[0].price", "never a float; decimals must be quoted", id="float money"),
    pytest.param('rate: "39000.50"', "rate: 39000.50",
                 6, "exchange_rates[0].rate", "decimals must be quoted", id="float rate"),
    pytest.param('credit: "0"', "credit: 0.0",
                 20, "customers[0].credit", "decimals must be quoted", id="float credit"),
    pytest.param('percent: "19"', "percent: 19.5",
                 28, "subscriptions[0].tax.percent", "decimals must be quoted", id="float tax"),
    pytest.param('    start: "2026-01-31T12:00:00+00:00"', '    start: "2026-01-31T12:00:00"',
                 26, "subscriptions[0].start", "naive datetimes are refused",
                 id="naive datetime string"),
    pytest.param('until: "2026-06-01T00:00:00+00:00"', "until: 2026-06-01 00:00:00",
                 3, "until", "naive datetimes are refused", id="naive unquoted timestamp"),
    pytest.param('until: "2026-06-01T00:00:00+00:00"', "until: 2026-06-01",
                 3, "until", "ISO 8601 datetime", id="a date for an instant"),
    pytest.param('until: "2026-06-01T00:00:00+00:00"', 'until: "June 1st"',
                 3, "until", "ISO 8601 datetime", id="not a datetime"),
    pytest.param('until: "2026-06-01T00:00:00+00:00"', 'until: "2026-01-31T12:00:00+00:00"',
                 3, "until", "must be after start", id="until not after start"),
    pytest.param("    currency: CLP", "    currency: ZZZ",
                 11, "plans[0].currency", "ISO 4217 currency code", id="unknown currency"),
    pytest.param("to: CLP", "to: ZZZ",
                 6, "exchange_rates[0].to", "ISO 4217 currency code",
                 id="unknown currency in a rate"),
    pytest.param("charge_currency: CLP}", "charge_currency: MXN}",
                 18, "plans[2].charge_currency", "needs CLF->MXN rates in exchange_rates",
                 id="charge currency without rates"),
    pytest.param("America/Mexico_City", "America/Gotham",
                 21, "customers[1].timezone", "IANA timezone name", id="unknown timezone"),
    pytest.param("    plan: oro\n", "    plan: diamante\n",
                 25, "subscriptions[0].plan",
                 "must name a plan of this scenario (known: oro, platino, uf)",
                 id="unknown plan ref"),
    pytest.param("customer: c2, plan: uf", "customer: c9, plan: uf",
                 30, "subscriptions[1].customer", "must name a customer",
                 id="unknown customer ref"),
    pytest.param("{subscription: s1, plan: platino}", "{subscription: s1, plan: s2}",
                 33, "events[0].change_plan.plan", "must name a plan",
                 id="change_plan target not a plan"),
    pytest.param("cancel: {subscription: s1,", "cancel: {subscription: s3,",
                 35, "events[2].cancel.subscription", "must name a subscription",
                 id="unknown event ref"),
    pytest.param("{ref: c2,", "{ref: c1,",
                 21, "customers[1].ref", "duplicate customer ref; first defined on line 20",
                 id="duplicate ref"),
    pytest.param("{code: platino,", "{code: oro,",
                 17, "plans[1].code", "duplicate plan code; first defined on line 8",
                 id="duplicate plan code"),
    pytest.param("{ref: s2,", "{ref: s1,",
                 30, "subscriptions[1].ref", "duplicate subscription ref; first defined on line 23",
                 id="duplicate subscription ref"),
    pytest.param("    change_plan: {subscription: s1, plan: platino}\n",
                 "    change_plan: {subscription: s1, plan: platino}\n"
                 "    cancel: {subscription: s1}\n",
                 34, "events[0].cancel", "an event has exactly one (this one has change_plan)",
                 id="event with two actions"),
    pytest.param("payment: decline_soft}}", "payment: decline_soft}, resume: {subscription: s1}}",
                 34, "events[1].resume", "an event has exactly one",
                 id="flow event with two actions"),
    pytest.param("    change_plan: {subscription: s1, plan: platino}\n", "",
                 32, "events[0]", "must have one action: one of change_plan",
                 id="event without an action"),
    pytest.param('  - {at: "2026-04-02T00:00:00+00:00"', '  - {at: "2026-06-01T00:00:01+00:00"',
                 35, "events[2].at", "must be within the scenario's start and until",
                 id="event after until"),
    pytest.param('  - at: "2026-02-15T00:00:00+00:00"', '  - at: "2026-01-31T11:59:59+00:00"',
                 32, "events[0].at", "must be within the scenario's start and until",
                 id="event before start"),
    pytest.param("gateway: fake", "gateway: stripe",
                 20, "customers[0].gateway",
                 "must be one of fake, khipu, openpay, payvalida, qvo",
                 id="unknown gateway"),
    pytest.param("payment: approve", "payment: maybe",
                 20, "customers[0].payment",
                 "must be one of approve, decline_soft, decline_hard, timeout, pay_late, never_pay",
                 id="bad payment behavior"),
    pytest.param("payment: decline_soft", "payment: decline_later",
                 34, "events[1].set_payment.payment", "must be one of approve",
                 id="bad payment behavior in an event"),
    pytest.param('    price: "15000"', '    price: "-1"',
                 10, "plans[0].price", "must be >= 0", id="negative price"),
    pytest.param('price: "0.5", currency: CLF', 'price: "0.00005", currency: CLF',
                 18, "plans[2].price", "CLF has 4 decimal places", id="too many decimals"),
    pytest.param('percent: "19"', 'percent: "100.5"',
                 28, "subscriptions[0].tax.percent", "must be between 0 and 100",
                 id="tax above 100"),
    pytest.param("delays_days: [1, 3, 5]", "delays_days: [1, 0, 5]",
                 16, "plans[0].retry.delays_days[1]", "must be an integer >= 1",
                 id="retry delay"),
    pytest.param("then: unpaid", "then: forgive",
                 16, "plans[0].retry.then", "must be one of unpaid, canceled, past_due",
                 id="retry then"),
    pytest.param("    cycles: 12\n", "    cycles: 12\n    status: retired\n",
                 16, "plans[0].status", "must be one of active, inactive", id="plan status"),
    pytest.param("    interval: month", "    interval: fortnight",
                 12, "plans[0].interval", "must be one of day, week, month, year", id="interval"),
    pytest.param("    interval_count: 1", "    interval_count: 0",
                 13, "plans[0].interval_count", "must be an integer >= 1", id="interval count"),
    pytest.param("proration: day", "proration: minute",
                 4, "proration", "must be one of second, day", id="proration unit"),
    pytest.param('credit: "0"', 'credit: "-5"',
                 20, "customers[0].credit", "must be >= 0", id="negative credit"),
    pytest.param('date: "2026-01-01"', 'date: "2026-02-30"',
                 6, "exchange_rates[0].date", "must be a date such as", id="bad date"),
    pytest.param('date: "2026-01-01"', "date: 2026-02-30",
                 6, "yaml", "day is out of range", id="impossible unquoted date"),
    pytest.param("    customer: c1\n", "    customer: null\n",
                 24, "subscriptions[0].customer", "must not be null", id="null required value"),
    pytest.param("    trial_end: null", '    trial_end: "2026-02-01T00:00:00"',
                 27, "subscriptions[0].trial_end", "naive datetimes are refused",
                 id="naive trial end"),
]
# fmt: on


@pytest.mark.parametrize(("old", "new", "line", "field", "rule"), CASES)
def test_every_error_names_the_line_and_the_field(
    old: str, new: str, line: int, field: str, rule: str
):
    error = refused(edited(old, new))
    assert (error.line, error.field) == (line, field), str(error)
    assert rule in error.rule
    assert str(error).startswith(f"scenario.yaml:{line}: {field}: ")


def test_domain_errors_are_kept_as_the_cause():
    float_money = refused(edited('    price: "15000"', "    price: 15000.5"))
    assert isinstance(float_money.__cause__, FloatNotAllowed)
    assert "(got 15000.5)" in str(float_money)
    naive = refused(edited('    start: "2026-01-31T12:00:00+00:00"', '    start: "2026-01-31"'))
    assert isinstance(naive.__cause__, NaiveDatetime)
    currency = refused(edited("    currency: CLP", "    currency: ZZZ"))
    assert isinstance(currency.__cause__, UnknownCurrency)
    timezone = refused(edited("America/Mexico_City", "America/Gotham"))
    assert isinstance(timezone.__cause__, UnknownTimezone)


def test_an_unknown_event_key_names_the_actions():
    error = refused(edited("    change_plan: {", "    change_plans: {"))
    assert (error.line, error.field) == (33, "events[0].change_plans")
    assert error.rule.startswith("unknown key; expected at, idempotency_key and one action: ")
    assert "replace_payment_method" in error.rule


def test_unknown_and_missing_action_arguments():
    error = refused(edited("at_period_end: true}", "at_period_end: true, when: now}"))
    assert (error.line, error.field) == (35, "events[2].cancel.when")
    assert error.rule == "unknown key; expected one of subscription, at_period_end"
    error = refused(edited("{customer: c1, payment: decline_soft}", "{customer: c1}"))
    assert (error.line, error.field, error.rule) == (
        34,
        "events[1].set_payment.payment",
        "required key is missing",
    )


def test_an_item_of_a_block_list_is_named_by_its_own_line():
    text = edited(
        "    retry: {delays_days: [1, 3, 5], then: unpaid}\n",
        "    retry:\n      delays_days:\n        - 1\n        - 3\n        - -5\n",
    )
    error = refused(text)
    assert (error.line, error.field) == (20, "plans[0].retry.delays_days[2]")
    assert "(got -5)" in str(error)


def test_a_pause_must_resume_after_it_starts():
    error = refused(
        edited(
            "cancel: {subscription: s1, at_period_end: true}",
            'pause: {subscription: s1, resume_at: "2026-04-01T00:00:00+00:00"}',
        )
    )
    assert (error.line, error.field) == (35, "events[2].pause.resume_at")
    assert error.rule == "must be after the event's at"


def test_amounts_must_be_positive_and_exact():
    error = refused(
        edited(
            "cancel: {subscription: s1, at_period_end: true}",
            'grant_credit: {customer: c1, amount: "0"}',
        )
    )
    assert (error.line, error.field, error.rule) == (
        35,
        "events[2].grant_credit.amount",
        "must be > 0",
    )
    error = refused(
        edited(
            "cancel: {subscription: s1, at_period_end: true}",
            "refund: {invoice: INV-000001, amount: 9.9}",
        )
    )
    assert (error.field, error.line) == ("events[2].refund.amount", 35)
    assert "quoted" in error.rule


def test_a_subscription_starts_inside_the_scenario():
    error = refused(
        edited('    start: "2026-01-31T12:00:00+00:00"', '    start: "2026-01-01T00:00:00+00:00"')
    )
    assert (error.line, error.field) == (26, "subscriptions[0].start")
    assert error.rule == "must be within the scenario's start and until"


def test_a_duplicate_exchange_rate_is_refused():
    text = edited(
        '  - {date: "2026-01-01", from: CLF, to: CLP, rate: "39000.50"}\n',
        '  - {date: "2026-01-01", from: CLF, to: CLP, rate: "39000.50"}\n'
        "  - {date: 2026-01-01, from: CLF, to: CLP, rate: 39001}\n",
    )
    error = refused(text)
    assert (error.line, error.field) == (7, "exchange_rates[1].date")
    assert "first on line 6" in error.rule


@pytest.mark.parametrize(
    ("text", "line", "rule"),
    [
        ("", 1, "must be a mapping with name, start, until"),
        ("# nothing but a comment\n", 1, "must be a mapping"),
        ("\n\n- a\n- b\n", 3, "must be a mapping"),
        ("just text", 1, "must be a mapping"),
        ("name: x\n---\nname: y\n", 2, "cannot be parsed"),
        ("name: x\nstart: \x07\n", 2, "cannot be parsed"),
        ("name: x\n  bad: indentation\n", 2, "cannot be parsed"),
    ],
)
def test_a_document_that_is_not_a_scenario_mapping(text: str, line: int, rule: str):
    error = refused(text)
    assert error.line == line, str(error)
    assert rule in error.rule


def test_an_empty_section_is_allowed_but_refs_must_then_fail():
    text = FIXTURE.split("events:\n")[0].replace(
        "customers:\n"
        '  - {ref: c1, timezone: America/Santiago, gateway: fake, payment: approve, credit: "0"}\n'
        "  - {ref: c2, timezone: America/Mexico_City}\n",
        "customers: []\n",
    )
    error = refused(text)
    assert (error.line, error.field) == (22, "subscriptions[0].customer")
    assert "(known: none)" in error.rule
    assert load_scenario(FIXTURE.split("events:\n")[0]).events == ()


def test_events_may_fall_on_the_scenario_start_and_until():
    text = edited('  - {at: "2026-04-02T00:00:00+00:00"', '  - {at: "2026-06-01T00:00:00+00:00"')
    text = edited(
        '  - at: "2026-02-15T00:00:00+00:00"', '  - at: "2026-01-31T12:00:00+00:00"', text
    )
    scenario = load_scenario(text)
    assert scenario.events[0].at == scenario.start
    assert scenario.events[-1].at == scenario.until


def test_anchors_and_merge_keys_work_and_keep_lines():
    text = edited(
        '  - {code: platino, name: Plan Platino, price: "50000", currency: CLP}\n',
        '  - &platino {code: platino, name: Plan Platino, price: "50000", currency: CLP}\n'
        "  - <<: *platino\n"
        "    code: titanio\n"
        '    price: "-3"\n',
    )
    error = refused(text)
    assert (error.line, error.field) == (20, "plans[2].price")
    scenario = load_scenario(text.replace('"-3"', '"90000"'))
    assert [plan.code for plan in scenario.plans] == ["oro", "platino", "titanio", "uf"]
    assert scenario.plans[2].name == "Plan Platino"


# --- settings, customers without a payment method, and the events of the machine's histories ---

# One line per key where it matters (numbers at the right).
HISTORY = """\
name: the forms a recorded history needs
start: "2026-01-31T12:00:00+00:00"
until: "2026-06-01T00:00:00+00:00"
settings:
  final_debt: write_off
  late_payment_days: 60
  refunds_return_credit: false
  batch_size: 1
  lease_seconds: 30.5
fake_gateway: {pending_seconds: 129600}
plans:
  - {code: oro, name: Plan Oro, price: "15000", currency: CLP,
     retry: {delays_seconds: [43200, 86400], then: canceled}}
  - {code: usd, name: Dollars, price: "20", currency: USD}
customers:
  - {ref: c1, timezone: America/Santiago, payment: none}
  - {ref: c2, timezone: America/Santiago, gateway: khipu, payment: pay_late_native}
subscriptions:
  - {ref: s1, customer: c2, plan: oro}
events:
  - at: "2026-02-01T00:00:00+00:00"
    subscribe:
      ref: s2
      customer: c1
      plan: usd
      start: "2026-02-02T00:00:00+00:00"
      trial_end: "2026-02-05T00:00:00+00:00"
      tax: {name: IVA, percent: "19"}
      prorate: false
      cycles: 2
  - {at: "2026-02-03T00:00:00+00:00", cancel: {subscription: s2}}
  - {at: "2026-02-04T00:00:00+00:00", reconcile: {}}
  - at: "2026-02-05T00:00:00+00:00"
    refund: {invoice: INV-000001, attempt: 2, amount: "100", lose_answer: before}
  - at: "2026-02-06T00:00:00+00:00"
    pay_expired_link: {invoice: INV-000001, attempt: 1, delivery: twice}
  - at: "2026-02-07T00:00:00+00:00"
    lose_refund_answer: {gateway: khipu, when: after}
  - at: "2026-02-08T00:00:00+00:00"
    grant_credit: {customer: c1, amount: "500", currency: CLP}
  - {at: "2026-02-09T00:00:00+00:00", set_payment: {customer: c2, payment: pay_late_native}}
"""
#  4 settings        13 .retry       21 events[0]     31 events[1]  33 events[3]   37 events[5]
#  5 .final_debt     16 customers[0] 22 .subscribe    32 events[2]  34 .refund     38 .lose_..
#  6 .late_payment   17 customers[1] 23 .ref 24 .customer 25 .plan 26 .start 27 .trial_end
#  7 .refunds_return 19 subscriptions[0]              28 .tax 29 .prorate 30 .cycles
#  8 .batch_size 9 .lease_seconds 10 fake_gateway     35 events[4] 36 .pay_expired_link
#                                                     39 events[6] 40 .grant_credit 41 events[7]


def test_the_forms_of_a_recorded_history_parse_into_typed_values():
    scenario = load_scenario(HISTORY, "history.yaml")
    assert dict(scenario.settings) == {
        "final_debt": "write_off",
        "late_payment_days": 60,
        "refunds_return_credit": False,
        "batch_size": 1,
        "lease_seconds": 30.5,
    }
    assert scenario.fake_pending_for == timedelta(hours=36)
    assert scenario.plans[0].retry_policy == RetryPolicy(
        delays=(timedelta(hours=12), timedelta(days=1)), max_attempts=3, then=AfterRetries.CANCELED
    )
    assert [c.payment for c in scenario.customers] == ["none", "pay_late_native"]
    assert [(e.action, dict(e.args), e.line) for e in scenario.events] == [
        (
            "subscribe",
            {
                "ref": "s2",
                "customer": "c1",
                "plan": "usd",
                "start": datetime(2026, 2, 2, tzinfo=UTC),
                "trial_end": datetime(2026, 2, 5, tzinfo=UTC),
                "tax": TaxRate.of("IVA", "19"),
                "prorate": False,
                "cycles": 2,
            },
            21,
        ),
        ("cancel", {"subscription": "s2"}, 31),
        ("reconcile", {}, 32),
        (
            "refund",
            {
                "invoice": "INV-000001",
                "attempt": 2,
                "amount": Decimal(100),
                "lose_answer": "before",
            },
            33,
        ),
        ("pay_expired_link", {"invoice": "INV-000001", "attempt": 1, "delivery": "twice"}, 35),
        ("lose_refund_answer", {"gateway": "khipu", "when": "after"}, 37),
        ("grant_credit", {"customer": "c1", "amount": Decimal(500), "currency": "CLP"}, 39),
        ("set_payment", {"customer": "c2", "payment": "pay_late_native"}, 41),
    ]


def test_without_the_new_sections_a_scenario_has_the_defaults():
    scenario = load_scenario(FIXTURE)
    assert dict(scenario.settings) == {}
    assert scenario.fake_pending_for is None


# (what HISTORY says, what the broken file says, line, field, part of the rule)
# fmt: off
HISTORY_CASES = [
    pytest.param("  batch_size: 1\n", "  batch_size: 1\n  threads: 4\n",
                 9, "settings.threads", "unknown key; expected one of final_debt",
                 id="a setting a scenario does not take"),
    pytest.param("  batch_size: 1\n", "  batch_size: 1\n  proration: day\n",
                 9, "settings.proration", "is the top-level proration key",
                 id="proration among the settings"),
    pytest.param("  late_payment_days: 60", '  late_payment_days: "soon"',
                 6, "settings.late_payment_days", "must be a number", id="setting: not a number"),
    pytest.param("  late_payment_days: 60", "  late_payment_days: 400",
                 6, "settings.late_payment_days", "must be a number of days from 0 to 366",
                 id="setting: out of range"),
    pytest.param("  final_debt: write_off", "  final_debt: forgive",
                 5, "settings.final_debt", "must be invoice or write_off", id="setting: choice"),
    pytest.param("  refunds_return_credit: false", '  refunds_return_credit: "no"',
                 7, "settings.refunds_return_credit", "must be true or false",
                 id="setting: not a boolean"),
    pytest.param("  batch_size: 1", "  batch_size: 0",
                 8, "settings.batch_size", "must be an integer >= 1", id="setting: integer"),
    pytest.param("  lease_seconds: 30.5", "  lease_seconds: true",
                 9, "settings.lease_seconds", "must be a number", id="setting: a boolean number"),
    pytest.param("  lease_seconds: 30.5", "  lease_seconds: 0",
                 9, "settings.lease_seconds", "must be a number of seconds > 0",
                 id="setting: seconds"),
    pytest.param("settings:\n  final_debt: write_off\n", "settings: write_off\n  final_debt: x\n",
                 5, "yaml", "cannot be parsed", id="settings: malformed"),
    pytest.param("fake_gateway: {pending_seconds: 129600}", "fake_gateway: {pending_seconds: -1}",
                 10, "fake_gateway.pending_seconds", "must be >= 0", id="negative pending"),
    pytest.param("fake_gateway: {pending_seconds: 129600}", "fake_gateway: {pending: 129600}",
                 10, "fake_gateway.pending", "unknown key; expected one of pending_seconds",
                 id="fake gateway: unknown key"),
    pytest.param("fake_gateway: {pending_seconds: 129600}", "fake_gateway: 2 days",
                 10, "fake_gateway", "must be a mapping", id="fake gateway: not a mapping"),
    pytest.param("delays_seconds: [43200, 86400]", "delays_seconds: [43200, 0]",
                 13, "plans[0].retry.delays_seconds[1]", "must be an integer >= 1",
                 id="retry: a delay of no seconds"),
    pytest.param("delays_seconds: [43200, 86400]", "delays_seconds: [1], delays_days: [1]",
                 13, "plans[0].retry.delays_seconds", "give delays_days or delays_seconds",
                 id="retry: two schedules"),
    pytest.param("payment: none}", "payment: nothing}",
                 16, "customers[0].payment", "must be one of approve", id="customer payment"),
    pytest.param("payment: pay_late_native}}", "payment: none}}",
                 41, "events[7].set_payment.payment", "must be one of approve",
                 id="no payment method is a customer's only"),
    pytest.param("      ref: s2\n", "      ref: s1\n",
                 23, "events[0].subscribe.ref",
                 "duplicate subscription ref; first defined on line 19", id="subscribe: old ref"),
    pytest.param("      ref: s2\n", "",
                 22, "events[0].subscribe.ref", "required key is missing",
                 id="subscribe: no ref"),
    pytest.param("      plan: usd\n", "      plan: platino\n",
                 25, "events[0].subscribe.plan", "must name a plan", id="subscribe: unknown plan"),
    pytest.param('      start: "2026-02-02T00:00:00+00:00"',
                 '      start: "2026-01-31T23:00:00+00:00"',
                 26, "events[0].subscribe.start", "must not be before the event's at",
                 id="subscribe: a start in the past"),
    pytest.param('      trial_end: "2026-02-05T00:00:00+00:00"', '      trial_end: "2026-02-05"',
                 27, "events[0].subscribe.trial_end", "naive datetimes are refused",
                 id="subscribe: a naive trial end"),
    pytest.param('      tax: {name: IVA, percent: "19"}', "      tax: {name: IVA, percent: 19.5}",
                 28, "events[0].subscribe.tax.percent", "decimals must be quoted",
                 id="subscribe: a float tax"),
    pytest.param("      prorate: false", "      prorate: 0",
                 29, "events[0].subscribe.prorate", "must be true or false",
                 id="subscribe: prorate"),
    pytest.param("      cycles: 2", "      cycles: 0",
                 30, "events[0].subscribe.cycles", "must be an integer >= 1",
                 id="subscribe: cycles"),
    pytest.param("cycles: 2\n", "cycles: 2\n      color: red\n",
                 31, "events[0].subscribe.color", "unknown key; expected one of ref, customer",
                 id="subscribe: unknown key"),
    pytest.param("reconcile: {}", "reconcile: {now: true}",
                 32, "events[2].reconcile.now", "unknown key; expected one of ", id="reconcile"),
    pytest.param("reconcile: {}", "reconcile: yes",
                 32, "events[2].reconcile", "must be a mapping", id="reconcile: not a mapping"),
    pytest.param("attempt: 2, amount", "attempt: 0, amount",
                 34, "events[3].refund.attempt", "must be an integer >= 1", id="refund: attempt"),
    pytest.param("attempt: 2, amount", 'attempt: "2nd", amount',
                 34, "events[3].refund.attempt", "must be an integer", id="refund: attempt text"),
    pytest.param("lose_answer: before}", "lose_answer: never}",
                 34, "events[3].refund.lose_answer", "must be one of after, before",
                 id="refund: lose_answer"),
    pytest.param("delivery: twice}", "delivery: thrice}",
                 36, "events[4].pay_expired_link.delivery", "must be one of once, twice, lost",
                 id="pay_expired_link: delivery"),
    pytest.param("{invoice: INV-000001, attempt: 1, delivery: twice}", "{attempt: 1}",
                 36, "events[4].pay_expired_link.invoice", "required key is missing",
                 id="pay_expired_link: no invoice"),
    pytest.param("{gateway: khipu, when: after}", "{gateway: stripe}",
                 38, "events[5].lose_refund_answer.gateway", "must be one of fake, khipu",
                 id="lose_refund_answer: unknown gateway"),
    pytest.param("{gateway: khipu, when: after}", "{gateway: khipu, when: later}",
                 38, "events[5].lose_refund_answer.when", "must be one of after, before",
                 id="lose_refund_answer: when"),
    pytest.param('amount: "500", currency: CLP}', 'amount: "500", currency: PESO}',
                 40, "events[6].grant_credit.currency", "ISO 4217 currency code",
                 id="grant_credit: currency"),
]
# fmt: on


@pytest.mark.parametrize(("old", "new", "line", "field", "rule"), HISTORY_CASES)
def test_every_error_of_the_new_forms_names_the_line_and_the_field(
    old: str, new: str, line: int, field: str, rule: str
):
    error = refused(edited(old, new, HISTORY))
    assert (error.line, error.field) == (line, field), str(error)
    assert rule in error.rule, str(error)
    assert str(error).startswith(f"scenario.yaml:{line}: {field}: ")


def test_events_can_name_a_subscription_a_subscribe_event_makes():
    text = edited(
        '  - {at: "2026-02-03T00:00:00+00:00", cancel: {subscription: s2}}',
        '  - {at: "2026-02-03T00:00:00+00:00", cancel: {subscription: s3}}',
        HISTORY,
    )
    error = refused(text)
    assert (error.line, error.field) == (31, "events[1].cancel.subscription")
    assert "(known: s1, s2)" in error.rule


def test_a_subscribe_starts_at_its_event_unless_told():
    text = edited('      start: "2026-02-02T00:00:00+00:00"\n', "", HISTORY)
    [subscribe] = [e for e in load_scenario(text).events if e.action == "subscribe"]
    assert "start" not in subscribe.args
