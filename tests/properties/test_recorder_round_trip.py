"""A history of :class:`BillingMachine` that uses what scenario files once could not say, written
by its recorder and replayed by ``billing.scenarios``: the replay meets the ``expect`` section
(what the engine held at the end of the history), and nothing is marked approximate.

The history is driven rule by rule (inside a hypothesis test, which the machine's rules need for
their draws and events), with a state where every draw has one answer, so it is the same history
on every run: engine settings other than the defaults, a fake gateway whose charges wait a day, a
customer without a payment method, a subscription made later in the history, credit in another
currency, refunds of a chosen attempt whose answers the gateway loses (one of them refused while
the loss was armed), reconciliations, and expired links paid late with their notification
delivered twice or lost.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import yaml
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from billing.domain.catalog import Plan
from billing.domain.dunning import RetryPolicy
from billing.domain.payments import PaymentStatus
from billing.engine import Engine
from billing.scenarios import load_scenario, mismatches, run_scenario
from billing.testing import Behavior
from billing.testing.machine import BillingMachine
from billing.testing.recorder import DIFFERS

START = datetime(2026, 1, 31, 15, 0, tzinfo=UTC)
ORO = Plan.of(code="oro", name="Oro", price="15000", currency="CLP", retry=RetryPolicy.of([1, 3]))
USD = Plan.of(code="usd", name="Dollars", price="20", currency="USD")


class Recorded(BillingMachine):
    """The machine with a fixed catalog and a fake gateway whose waiting charges wait a day."""

    catalog = (ORO, USD)
    pending_for = timedelta(days=1)


def _history(data: st.DataObject) -> Recorded:
    machine = Recorded()
    santiago = "America/Santiago"
    machine.open(
        start=START,
        first=[
            (santiago, Behavior.LINK_EXPIRES, 0),  # c1: links that expire unpaid
            (santiago, Behavior.APPROVE, 0),  # c2: pays at once
            (santiago, Behavior.LINK_EXPIRES, 0),  # c3: links that expire unpaid too
        ],
        rates_after=0,
        retry=RetryPolicy.of([1, 3]),
        daily_retry=RetryPolicy.of([1]),
        final_debt="write_off",
        refunds_return_credit=False,
        proration="day",
        batch=1,  # each subscription alone: the replay must do the same (its events in order)
    )
    # c2's payment is the only one that succeeded: refund all of it, losing the answer after the
    # gateway refunded; then again, which the engine refuses (nothing left) with a loss armed
    machine.refund(data, whole=True, lose_answer="after")
    machine.refund(data, whole=True, lose_answer="before")
    machine.time_passes(timedelta(hours=7))
    machine.reconcile()  # the check of the lost refund loses its answer too (the armed loss)
    machine.time_passes(timedelta(days=1))
    machine.reconcile()  # now it is known: refunded
    # a customer without a payment method, with credit in pesos, on a dollar plan with a trial
    c4 = machine.new_customer(santiago, None)
    machine.grant_credit(c4, 500)
    machine.subscribe(c4, 1, timedelta(days=3), None, None, None, True)
    # c1's and c3's first links expired a day after they were sent, and the engine saw it: one
    # is paid late with its notification delivered twice, the other with it lost
    machine.time_passes(timedelta(days=1))
    machine.an_expired_link_is_paid_late(data, "twice")
    machine.an_expired_link_is_paid_late(data, "lost")  # found by a reconciliation
    machine.time_passes(timedelta(days=32))
    return machine


class OnKhipu(BillingMachine):
    """The machine on Khipu's simulation (its real adapter, in process), pesos only."""

    gateway = "khipu"
    catalog = (ORO,)


def _khipu_history(data: st.DataObject) -> OnKhipu:
    machine = OnKhipu()
    santiago = "America/Santiago"
    machine.open(
        start=START,
        first=[
            (santiago, Behavior.PAY_LATE, 0),  # c1: Khipu's own late payer
            (santiago, Behavior.NEVER_PAY, 0),  # c2: lets its links expire
            (santiago, Behavior.APPROVE, 0),  # c3: pays at once
        ],
        rates_after=0,
        retry=RetryPolicy.of([1, 3]),
        daily_retry=RetryPolicy.of([1]),
        final_debt="invoice",
        refunds_return_credit=True,
        proration="second",
        batch=200,
    )
    machine.refund(data, whole=True, lose_answer="after")  # c3's payment, its answer lost
    machine.time_passes(timedelta(days=1))
    machine.reconcile()  # Khipu shows the payment reversed: refunded
    machine.time_passes(timedelta(days=3))  # the links expired (c2's) or were paid late (c1's)
    machine.an_expired_link_is_paid_late(data, "twice")
    machine.card_starts_to("c2", Behavior.PAY_LATE, None)
    machine.time_passes(timedelta(days=32))
    return machine


@settings(
    max_examples=1,
    database=None,
    deadline=None,
    derandomize=True,
    phases=[Phase.generate],
    suppress_health_check=list(HealthCheck),
)
@given(st.data())
def test_a_recorded_history_on_a_pay_by_link_gateway_replays_to_what_the_engine_held(
    data: st.DataObject,
) -> None:
    machine = _khipu_history(data)
    try:
        machine.the_books_balance()
        text = machine.failure_scenario()
        happened = _timeline(machine.engine)
    finally:
        machine.teardown()

    assert DIFFERS not in text
    document: dict[str, Any] = yaml.safe_load(text)
    assert [c["payment"] for c in document["customers"]] == [
        "pay_late_native",
        "never_pay",
        "approve",
    ]
    actions = [next(key for key in event if key != "at") for event in document["events"]]
    assert actions == ["refund", "reconcile", "pay_expired_link", "set_payment"], text
    assert document["events"][-1]["set_payment"]["payment"] == "pay_late_native"

    scenario = load_scenario(text, source="recorded.yaml")
    assert scenario.expect is not None
    report = run_scenario(scenario)
    assert mismatches(report, scenario.expect) == []
    replayed = [(e["at"], e["name"], e["subscription"]) for e in report["events"]]
    assert replayed == happened


def _draws(machine: Recorded) -> None:
    """Every draw of the history had one answer: the payment refunded, the link paid."""
    payments = machine.engine.payments()
    assert sum(p.status is PaymentStatus.SUCCEEDED for p in payments) >= 3


@settings(
    max_examples=1,
    database=None,
    deadline=None,
    derandomize=True,
    phases=[Phase.generate],
    suppress_health_check=list(HealthCheck),
)
@given(st.data())
def test_a_recorded_history_replays_to_what_the_engine_held(data: st.DataObject) -> None:
    machine = _history(data)
    try:
        machine.the_books_balance()
        _draws(machine)
        text = machine.failure_scenario()
        happened = _timeline(machine.engine)
    finally:
        machine.teardown()

    assert "approximately" not in text
    assert "not replayed" not in text
    assert DIFFERS not in text
    document: dict[str, Any] = yaml.safe_load(text)
    assert document["settings"] == {
        "batch_size": 1,
        "final_debt": "write_off",
        "late_payment_days": 60,
        "refunds_return_credit": False,
    }
    assert document["fake_gateway"] == {"pending_seconds": 86400}
    assert {c["ref"]: c["payment"] for c in document["customers"]}["c4"] == "none"
    actions = [next(key for key in event if key != "at") for event in document["events"]]
    for action in ("subscribe", "grant_credit", "refund", "lose_refund_answer", "reconcile"):
        assert action in actions, (action, text)
    assert actions.count("pay_expired_link") == 2, text
    refunds = [event["refund"] for event in document["events"] if "refund" in event]
    assert refunds[0]["lose_answer"] == "after"
    assert refunds[0]["attempt"] == 1

    scenario = load_scenario(text, source="recorded.yaml")
    assert scenario.expect is not None
    report = run_scenario(scenario)
    assert mismatches(report, scenario.expect) == []
    # and more than the end state: every event the engine recorded, at the same instant
    replayed = [(e["at"], e["name"], e["subscription"]) for e in report["events"]]
    assert replayed == happened


def _timeline(engine: Engine) -> list[tuple[str, str, str | None]]:
    """Every event the engine recorded, as the scenario report lists them."""
    events = engine.events(limit=10_000, pending_only=False)
    return [(e.at.isoformat(), e.name, e.subscription_id) for e in events]
