"""The scenario recorder (billing.testing.recorder): what a history did, written as a scenario
file that billing.scenarios reads (settings, customers without a payment method, subscriptions
made later, every event the machine makes), with what the format cannot say marked as comments."""

from __future__ import annotations

import dataclasses
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta

from billing.config import Settings
from billing.domain.catalog import Plan
from billing.domain.dunning import RetryPolicy
from billing.domain.exchange import ExchangeRate
from billing.domain.taxes import TaxRate
from billing.scenarios import load_scenario
from billing.scenarios.file import SETTINGS
from billing.testing.machine import _REPLAY_NEUTRAL
from billing.testing.recorder import DIFFERS, ScenarioRecorder

START = datetime(2026, 1, 31, 15, 0, tzinfo=UTC)


def _recorded() -> ScenarioRecorder:
    recorder = ScenarioRecorder("recorded", START, proration="day")
    recorder.add_plan(Plan.of(code="oro", name="Oro", price="15000", currency="CLP"))
    recorder.add_plan(Plan.of(code="plata", name="Plata", price="9000", currency="CLP"))
    recorder.add_plan(Plan.of(code="uf", name="UF", price="0.5", currency="CLF"))
    recorder.add_rates(
        ExchangeRate.of(date(2026, 1, 1) + timedelta(days=n), "CLF", "CLP", "39000")
        for n in range(90)
    )
    recorder.add_customer("c1", "America/Santiago", payment="decline_soft")
    recorder.add_customer("c2", "America/Bogota", note="approximately: it had no card")
    tax = TaxRate.of("IVA", "19", inclusive=True, rounding="per_line", mode="half_even")
    recorder.add_subscription("s1", "c1", "oro", start=START, tax=tax, cycles=3, prorate=False)
    later = START + timedelta(days=40)
    recorder.add_subscription("s2", "c2", "uf", start=later)  # after the end: left out
    at = START + timedelta(days=3)
    recorder.add_event(
        at, "change_plan", {"subscription": "s1", "plan": "plata", "behavior": "none"}
    )
    recorder.add_omitted(at, "a reconciliation")
    recorder.add_event(at, "cancel", {"subscription": "s2", "at_period_end": True})
    recorder.add_event(at, "grant_credit", {"customer": "c1", "amount": "500"}, currency="MXN")
    recorder.add_event(at, "refund", {"invoice": "INV-000001"}, note="the answer was lost")
    recorder.note("final_debt: write_off (a scenario runs with invoice)")
    return recorder


def test_a_recorded_history_reads_back_as_a_scenario():
    text = _recorded().text(START + timedelta(days=10), header=["Replay it."])
    scenario = load_scenario(text)
    assert scenario.proration.value == "day"
    assert [plan.code for plan in scenario.plans] == ["oro", "plata"]  # the ones used
    assert scenario.exchange_rates == ()  # no plan in use needs them
    [s1] = scenario.subscriptions
    assert (s1.ref, s1.cycles, s1.prorate, s1.tax) == (
        "s1",
        3,
        False,
        TaxRate.of("IVA", "19", inclusive=True, rounding="per_line", mode="half_even"),
    )
    assert [event.action for event in scenario.events] == ["change_plan", "grant_credit", "refund"]
    assert [customer.payment for customer in scenario.customers] == ["decline_soft", "approve"]


def test_what_the_format_cannot_say_is_marked_in_comments():
    recorder = _recorded()
    text = recorder.text(START + timedelta(days=10), header=["Replay it."])
    assert text.startswith("# Replay it.\n")
    assert "#   - final_debt: write_off (a scenario runs with invoice)" in text
    assert "# approximately: it had no card" in text
    assert "# not replayed: a reconciliation" in text
    assert "# left out: s2, to start at 2026-03-12T15:00:00+00:00" in text
    assert "# left out: cancel of s2, which never started" in text
    assert "# approximately: the answer was lost" in text
    assert DIFFERS in text
    assert "approximately: granted in" not in text  # a grant carries its currency


def test_a_grant_is_written_with_its_currency():
    scenario = load_scenario(_recorded().text(START + timedelta(days=10)))
    [grant] = [event for event in scenario.events if event.action == "grant_credit"]
    assert dict(grant.args) == {"customer": "c1", "amount": 500, "currency": "MXN"}


def test_rates_are_written_for_the_plans_that_need_them_around_the_history():
    recorder = _recorded()
    document = recorder.document(START + timedelta(days=50))  # s2, on the UF plan, started
    dates = [rate["date"] for rate in document["exchange_rates"]]
    assert dates[0] == "2026-01-28"  # the latest one before the margin, then each day
    assert dates[-1] == (START + timedelta(days=52)).date().isoformat()
    scenario = load_scenario(recorder.text(START + timedelta(days=50)))
    assert [s.ref for s in scenario.subscriptions] == ["s1", "s2"]


def test_a_history_that_ended_at_its_start_still_has_an_end_after_it():
    recorder = ScenarioRecorder("empty", START)
    recorder.add_plan(Plan.of(code="oro", name="Oro", price="1", currency="CLP"))
    text = recorder.text(START)
    scenario = load_scenario(text)
    assert scenario.until > scenario.start
    assert DIFFERS not in text


def test_a_retry_delay_of_part_of_a_day_is_written_in_seconds():
    policy = RetryPolicy(delays=(timedelta(hours=12), timedelta(days=2)), max_attempts=3)
    plan = replace(Plan.of(code="p", name="P", price="5", currency="CLP"), retry_policy=policy)
    recorder = ScenarioRecorder("retry", START)
    recorder.add_plan(plan)
    text = recorder.text(START + timedelta(days=1))
    assert "delays_seconds: [43200, 172800]" in text
    assert "approximately" not in text
    [read] = load_scenario(text).plans
    assert read == plan


def test_a_retry_delay_of_part_of_a_second_is_rounded_up_and_noted():
    policy = RetryPolicy(delays=(timedelta(seconds=1.5),), max_attempts=2)
    plan = replace(Plan.of(code="p", name="P", price="5", currency="CLP"), retry_policy=policy)
    recorder = ScenarioRecorder("retry", START)
    recorder.add_plan(plan)
    text = recorder.text(START + timedelta(days=1))
    assert "# approximately: p's retry delays are not whole seconds; rounded up" in text
    [read] = load_scenario(text).plans
    assert read.retry_policy.delays == (timedelta(seconds=2),)


def test_settings_and_the_fake_gateways_waiting_time_are_written():
    recorder = ScenarioRecorder("settings", START)
    recorder.add_plan(Plan.of(code="oro", name="Oro", price="1", currency="CLP"))
    recorder.setting("final_debt", "write_off")
    recorder.setting("late_payment_days", 60)
    recorder.setting("refunds_return_credit", False)
    recorder.fake_pending_for(timedelta(hours=36))
    text = recorder.text(START + timedelta(days=1))
    assert DIFFERS not in text
    scenario = load_scenario(text)
    assert dict(scenario.settings) == {
        "final_debt": "write_off",
        "late_payment_days": 60,
        "refunds_return_credit": False,
    }
    assert scenario.fake_pending_for == timedelta(hours=36)


def test_every_engine_setting_is_either_replayed_by_a_scenario_file_or_neutral():
    """A failing history's settings go into its scenario file, except those that change how
    the work is done, not what is billed: a new Settings field must be one or the other, or a
    history run with it would write a file that cannot be replayed."""
    fields = {field.name for field in dataclasses.fields(Settings)}
    assert fields == set(SETTINGS) | _REPLAY_NEUTRAL
    assert not set(SETTINGS) & _REPLAY_NEUTRAL


def test_a_waiting_time_with_a_fraction_of_a_second_is_rounded_up_and_noted():
    recorder = ScenarioRecorder("settings", START)
    recorder.fake_pending_for(timedelta(seconds=90, microseconds=1))
    text = recorder.text(START + timedelta(days=1))
    assert "fake_gateway: {pending_seconds: 91}" in text
    assert "rounded up to 91 s" in text
    assert DIFFERS in text


def test_a_subscription_made_later_is_a_subscribe_event():
    recorder = ScenarioRecorder("later", START)
    recorder.add_plan(Plan.of(code="oro", name="Oro", price="15000", currency="CLP"))
    recorder.add_plan(Plan.of(code="usd", name="Usd", price="20", currency="USD"))
    recorder.add_customer("c1", "America/Santiago", payment="none")
    made = START + timedelta(days=2)
    recorder.add_subscription("s1", "c1", "usd", start=made, created_at=made, prorate=False)
    scheduled = START + timedelta(days=30)  # starts after the history ended: kept all the same
    recorder.add_subscription("s2", "c1", "oro", start=scheduled, created_at=made)
    recorder.add_event(made, "cancel", {"subscription": "s2", "at_period_end": False})
    until = START + timedelta(days=10)
    expect = {"subscriptions": [{"ref": "s1"}, {"ref": "s2"}]}
    document = recorder.document(until, expect=expect)
    assert document["subscriptions"] == []
    assert document["events"][0] == {
        "at": made.isoformat(),
        "subscribe": {"ref": "s1", "customer": "c1", "plan": "usd", "prorate": False},
    }
    assert document["events"][1]["subscribe"]["start"] == scheduled.isoformat()
    assert [plan["code"] for plan in document["plans"]] == ["oro", "usd"]
    assert document["expect"] == expect
    text = recorder.text(until)
    assert "left out" not in text
    scenario = load_scenario(text)
    assert [event.action for event in scenario.events] == ["subscribe", "subscribe", "cancel"]
    assert scenario.customers[0].payment == "none"


def test_the_machines_events_read_back():
    recorder = ScenarioRecorder("events", START)
    recorder.add_plan(Plan.of(code="oro", name="Oro", price="15000", currency="CLP"))
    recorder.add_customer("c1", "America/Santiago", payment="pay_late_native", gateway="khipu")
    recorder.add_subscription("s1", "c1", "oro", start=START)
    at = START + timedelta(days=4)
    recorder.add_event(
        at, "refund", {"invoice": "INV-000001", "attempt": 2, "lose_answer": "after"}
    )
    recorder.add_event(at, "lose_refund_answer", {"gateway": "khipu", "when": "after"})
    recorder.add_event(at, "reconcile", {})
    recorder.add_event(
        at, "pay_expired_link", {"invoice": "INV-000001", "attempt": 1, "delivery": "lost"}
    )
    text = recorder.text(START + timedelta(days=10))
    assert DIFFERS not in text
    scenario = load_scenario(text)
    assert [(event.action, dict(event.args)) for event in scenario.events] == [
        ("refund", {"invoice": "INV-000001", "attempt": 2, "lose_answer": "after"}),
        ("lose_refund_answer", {"gateway": "khipu", "when": "after"}),
        ("reconcile", {}),
        ("pay_expired_link", {"invoice": "INV-000001", "attempt": 1, "delivery": "lost"}),
    ]
