"""Plan changes: proration into debt, credit or an invoice, and the preview."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from billing.domain.catalog import Plan
from billing.domain.customers import Customer
from billing.domain.errors import (
    IllegalTransition,
    InvalidArgument,
    PlanChangeNotAllowed,
    PlanUnavailable,
)
from billing.domain.invoices import InvoiceReason, InvoiceStatus, LineKind
from billing.domain.money import Money
from billing.domain.payments import DeclineKind, PaymentResult
from billing.domain.plan_changes import change_plan
from billing.domain.proration import ProrationBehavior, ProrationUnit
from tests.world import World, iva

SCL = ZoneInfo("America/Santiago")


def clp(amount: int) -> Money:
    return Money.of(amount, "CLP")


ORO = Plan.of(code="oro", name="Plan Oro", price="15000", currency="CLP")
PLATINO = Plan.of(code="platino", name="Plan Platino", price="50000", currency="CLP")
BRONCE = Plan.of(code="bronce", name="Plan Bronce", price="5000", currency="CLP")


def world(plan: Plan = ORO, **kwargs: object) -> World:
    return World(
        customer=Customer.of("c1", "America/Santiago"),
        plan=plan,
        now=datetime(2026, 3, 1, tzinfo=SCL),
        **kwargs,  # type: ignore[arg-type]
    )


def test_qvo_example_upgrade_at_the_start_of_the_period_is_a_debt_of_35000():
    w = world()
    w.subscribe()
    change = w.change_plan(PLATINO)
    assert change.debt_added == clp(35000)
    assert w.sub.debt_total == clp(35000)
    assert w.sub.plan.code == "platino"
    assert w.sub.current_period == change.quote.period if change.quote else False
    assert len(w.issued()) == 1  # nothing is charged until the renewal


def test_an_upgrade_mid_period_carries_the_prorated_difference_to_the_next_renewal():
    w = world()
    w.subscribe(tax=iva())
    w.run_until(datetime(2026, 3, 16, 12, tzinfo=SCL))
    change = w.change_plan(PLATINO)
    # 15 days and 12 hours remain of the 31-day period March 1 00:00 - April 1 00:00
    assert change.quote is not None
    assert change.quote.fraction == pytest.approx(15.5 / 31)
    assert [line.amount for line in change.lines] == [clp(-7500), clp(25000)]
    assert change.debt_added == clp(17500)
    w.run_until(datetime(2026, 4, 1, tzinfo=SCL))
    renewal = w.issued()[1]
    assert [(line.kind, line.amount) for line in renewal.lines] == [
        (LineKind.PLAN, clp(50000)),
        (LineKind.DEBT, clp(17500)),
        (LineKind.TAX, clp(12825)),  # 19 % of 67500: the debt is taxed when it is invoiced
    ]
    assert w.sub.debt == ()


def test_an_upgrade_can_be_invoiced_and_charged_at_once():
    w = world()
    w.subscribe(tax=iva())
    w.run_until(datetime(2026, 3, 16, 12, tzinfo=SCL))
    change = w.change_plan(PLATINO, ProrationBehavior.INVOICE_NOW)
    assert change.debt_added == clp(0)
    invoice = w.issued()[1]
    assert invoice.reason is InvoiceReason.PLAN_CHANGE
    assert invoice.status is InvoiceStatus.PAID
    assert [(line.kind, line.amount) for line in invoice.lines] == [
        (LineKind.PRORATION_CREDIT, clp(-7500)),
        (LineKind.PRORATION_CHARGE, clp(25000)),
        (LineKind.TAX, clp(3325)),
    ]
    assert invoice.total == clp(20825)
    assert w.sub.debt == ()


def test_a_downgrade_gives_credit_with_its_tax_taken_off_the_next_charges():
    w = world(PLATINO)
    w.subscribe(tax=iva())
    w.run_until(datetime(2026, 3, 16, 12, tzinfo=SCL))
    change = w.change_plan(BRONCE)
    # unused platino 25000, new bronce 2500: 22500 net, 26775 with 19 % IVA
    assert change.credit_granted == clp(26775)
    assert w.balance == clp(26775)
    w.run_until(datetime(2026, 4, 1, tzinfo=SCL))
    renewal = w.issued()[1]
    assert renewal.total == clp(0)  # 5950 covered by credit
    assert renewal.credit_applied == clp(5950)
    assert w.balance == clp(26775 - 5950)


def test_a_downgrade_first_cancels_debt_carried_from_an_earlier_upgrade():
    w = world()
    w.subscribe()
    w.change_plan(PLATINO)  # debt 35000
    change = w.change_plan(BRONCE)  # worth -45000: cancels the 35000, 10000 left as credit
    assert w.sub.debt == ()
    assert change.credit_granted == clp(10000)


def test_a_change_to_the_same_plan_is_worth_exactly_zero():
    w = world()
    w.subscribe(tax=iva())
    w.run_until(datetime(2026, 3, 9, 7, 13, tzinfo=SCL))
    change = w.change_plan(ORO)
    assert change.quote is not None
    assert change.quote.net == clp(0)
    assert change.debt_added == clp(0)
    assert change.credit_granted == clp(0)


def test_prorate_false_changes_the_plan_with_no_adjustment():
    w = world()
    w.subscribe(prorate=False)
    w.run_until(datetime(2026, 3, 16, tzinfo=SCL))
    change = w.change_plan(PLATINO)
    assert change.quote is None
    assert change.lines == ()
    assert w.sub.debt == ()
    w.run_until(datetime(2026, 4, 1, tzinfo=SCL))
    assert w.issued()[1].total == clp(50000)


def test_proration_by_the_day_counts_calendar_days_including_the_day_of_the_change():
    w = world(unit=ProrationUnit.DAY)
    w.subscribe()
    w.run_until(datetime(2026, 3, 16, 23, 59, tzinfo=SCL))
    change = w.change_plan(PLATINO)
    assert change.quote is not None
    assert change.quote.fraction == pytest.approx(16 / 31)
    # each line is rounded on its own: 50000 x 16/31 = 25806.45 and 15000 x 16/31 = 7741.94
    assert [line.amount for line in change.lines] == [clp(-7742), clp(25806)]
    assert change.debt_added == clp(18064)


def test_a_change_during_the_trial_swaps_the_plan_without_proration():
    w = world(Plan.of(code="oro", name="Plan Oro", price="15000", currency="CLP", trial_days=10))
    w.subscribe()
    change = w.change_plan(PLATINO)
    assert change.quote is None
    w.run_until(datetime(2026, 3, 11, tzinfo=SCL))
    assert w.issued()[0].total == clp(50000)


def test_the_preview_is_the_same_change_without_applying_it():
    w = world()
    w.subscribe()
    w.run_until(datetime(2026, 3, 16, 12, tzinfo=SCL))
    before = w.sub
    preview = change_plan(before, PLATINO, at=w.now)
    assert w.sub is before
    applied = w.change_plan(PLATINO)
    assert preview.lines == applied.lines
    assert preview.debt_added == applied.debt_added


def test_a_plan_with_another_interval_cannot_be_prorated():
    yearly = Plan.of(code="anual", name="Anual", price="150000", currency="CLP", interval="year")
    w = world()
    w.subscribe()
    with pytest.raises(PlanChangeNotAllowed) as error:
        w.change_plan(yearly)
    assert error.value.field == "plan"
    assert "month" in error.value.rule


def test_a_plan_in_another_currency_cannot_be_prorated():
    w = world()
    w.subscribe()
    with pytest.raises(PlanChangeNotAllowed):
        w.change_plan(Plan.of(code="usd", name="USD", price="20", currency="USD"))


def test_an_inactive_plan_cannot_be_changed_to():
    w = world()
    w.subscribe()
    with pytest.raises(PlanUnavailable):
        w.change_plan(PLATINO.deactivated())


def test_a_past_due_subscription_cannot_change_plan():
    w = world(pay=lambda invoice, attempt: PaymentResult.failed(DeclineKind.SOFT))
    w.subscribe()
    with pytest.raises(IllegalTransition) as error:
        w.change_plan(PLATINO)
    assert error.value.status == "past_due"


def test_an_unknown_proration_behavior_is_refused_naming_the_field():
    w = world()
    w.subscribe()
    with pytest.raises(InvalidArgument) as error:
        change_plan(w.sub, PLATINO, at=w.now, behavior="sometimes")  # type: ignore[arg-type]
    assert error.value.field == "behavior"
    assert "carry_debt" in error.value.rule
