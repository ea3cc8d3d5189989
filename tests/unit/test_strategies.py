"""The public hypothesis strategies (billing.testing.strategies): every generated scenario file
parses, a few replay with every operation accepted and the books balanced, and the values they
draw are what the engine takes."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from billing.bootstrap import open_engine
from billing.clock import ManualClock
from billing.domain import _checks
from billing.domain.catalog import Plan
from billing.domain.taxes import TaxRate
from billing.scenarios import load_scenario, run_scenario
from billing.testing import Behavior
from billing.testing import strategies as bst
from billing.testing.recorder import dump_scenario, plan_entry

START = datetime(2026, 1, 31, 15, 0, tzinfo=UTC)


@settings(max_examples=60, deadline=None)
@given(bst.scenarios())
def test_every_generated_scenario_parses(document: dict[str, object]):
    scenario = load_scenario(dump_scenario(document))
    assert scenario.start < scenario.until
    assert [event.at for event in scenario.events] == sorted(event.at for event in scenario.events)


@settings(
    max_examples=4,
    deadline=None,
    derandomize=True,
    database=None,
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(document=bst.scenarios(days=(15, 40), max_operations=6))
def test_a_few_generated_scenarios_replay_with_every_operation_accepted_and_balance(
    document: dict[str, object], tmp_path: Path
):
    scenario = load_scenario(dump_scenario(document))
    path = tmp_path / f"replay-{uuid.uuid4().hex}.db"
    run_scenario(scenario, database_url=f"sqlite:///{path}")  # a refused step raises
    with open_engine(f"sqlite:///{path}", clock=ManualClock(scenario.until), gateways=[]) as engine:
        report = engine.audit()
    assert report.balanced, report.findings


@settings(max_examples=40, deadline=None)
@given(bst.plans())
def test_a_generated_plan_reads_back_from_a_scenario_file_as_the_same_plan(plan: Plan):
    document = {
        "name": "one plan",
        "start": START.isoformat(),
        "until": (START + timedelta(days=1)).isoformat(),
        "exchange_rates": [{"date": "2026-01-01", "from": "CLF", "to": "CLP", "rate": "39000"}],
        "plans": [plan_entry(plan)],
        "customers": [],
        "subscriptions": [],
    }
    [read] = load_scenario(dump_scenario(document)).plans
    assert read == plan


@settings(max_examples=40, deadline=None)
@given(bst.customers(ref="c7"), bst.taxes(), bst.timezones())
def test_customers_taxes_and_timezones_are_what_the_engine_takes(
    customer: bst.CustomerDraft, tax: TaxRate, zone: str
):
    assert customer.ref == "c7"
    assert isinstance(customer.payment, Behavior)
    _checks.timezone(customer.timezone)
    _checks.timezone(zone)
    assert TaxRate.of(tax.name, tax.percent, inclusive=tax.inclusive) is not None
    assert 0 <= tax.percent <= 100


@settings(max_examples=40, deadline=None)
@given(st.data())
def test_subscriptions_start_within_the_window_on_one_of_the_plans(data: st.DataObject):
    catalog = [data.draw(bst.plans(code=code)) for code in ("a", "b")]
    until = START + timedelta(days=60)
    draft = data.draw(
        bst.subscriptions(ref="s9", customer="c2", plans=catalog, start=START, until=until)
    )
    assert (draft.ref, draft.customer) == ("s9", "c2")
    assert draft.plan in {"a", "b"}
    assert START <= draft.start < until
    assert draft.trial_end is None or draft.trial_end > draft.start
