"""The subscription lifecycle, driven through whole billing histories."""

from __future__ import annotations

from dataclasses import replace
from datetime import date, datetime, timedelta
from fractions import Fraction
from zoneinfo import ZoneInfo

import pytest

from billing.domain.catalog import Plan
from billing.domain.customers import Customer
from billing.domain.dunning import RetryPolicy
from billing.domain.errors import IllegalTransition, InvalidArgument, NaiveDatetime, PlanUnavailable
from billing.domain.exchange import ExchangeRate, TableExchangeRates
from billing.domain.invoices import Invoice, InvoiceReason, InvoiceStatus, LineKind
from billing.domain.money import Money
from billing.domain.payments import DeclineKind, PaymentResult
from billing.domain.renewals import advance
from billing.domain.subscriptions import (
    Subscription,
    SubscriptionStatus,
    cancel,
    pause,
    resume,
    subscribe,
)
from billing.store import codec
from tests.world import World, iva

SCL = ZoneInfo("America/Santiago")
MEX = ZoneInfo("America/Mexico_City")
S = SubscriptionStatus


def clp(amount: int | str) -> Money:
    return Money.of(amount, "CLP")


def oro(**overrides: object) -> Plan:
    values: dict[str, object] = {
        "code": "oro",
        "name": "Plan Oro",
        "price": "15000",
        "currency": "CLP",
        "retry": RetryPolicy.of([1, 3, 5]),
    }
    values.update(overrides)
    return Plan.of(**values)  # type: ignore[arg-type]


def world(plan: Plan | None = None, *, at: datetime | None = None, **kwargs: object) -> World:
    return World(
        customer=Customer.of("c1", "America/Santiago"),
        plan=plan or oro(),
        now=at or datetime(2026, 1, 31, 12, tzinfo=SCL),
        **kwargs,  # type: ignore[arg-type]
    )


def decline(kind: DeclineKind = DeclineKind.SOFT):
    def pay(invoice: Invoice, attempt: int) -> PaymentResult:
        return PaymentResult.failed(kind, code="51")

    return pay


def local_days(invoices: list[Invoice]) -> list[date]:
    return [i.period.start.astimezone(SCL).date() for i in invoices if i.period is not None]


# -- starting ---------------------------------------------------------------------------------


def test_a_subscription_starting_now_bills_its_first_period_at_once():
    w = world()
    sub = w.subscribe()
    assert sub.status is S.ACTIVE
    [invoice] = w.issued()
    assert invoice.status is InvoiceStatus.PAID
    assert invoice.reason is InvoiceReason.SUBSCRIPTION_START
    assert invoice.total == clp(15000)
    assert w.names()[:2] == ["subscription.created", "subscription.activated"]


def test_a_future_start_is_scheduled_and_bills_nothing_until_it_arrives():
    w = world()
    sub = w.subscribe(start=datetime(2026, 3, 1, tzinfo=SCL))
    assert sub.status is S.SCHEDULED
    assert w.issued() == []
    w.run_until(datetime(2026, 3, 1, tzinfo=SCL))
    assert w.sub.status is S.ACTIVE
    assert local_days(w.issued()) == [date(2026, 3, 1)]


def test_an_anchor_on_the_31st_bills_month_ends_and_comes_back_to_the_31st():
    w = world()
    w.subscribe()
    w.run_until(datetime(2026, 5, 31, 12, tzinfo=SCL))
    assert local_days(w.issued()) == [
        date(2026, 1, 31),
        date(2026, 2, 28),
        date(2026, 3, 31),
        date(2026, 4, 30),
        date(2026, 5, 31),
    ]


def test_openpay_trial_of_30_days_charges_first_on_the_day_after_the_last_trial_day():
    # Openpay: created 2013-12-13 on a plan with trial_days 30 -> trial_end_date 2014-01-11,
    # charge_date 2014-01-12.
    plan = Plan.of(
        code="curso", name="Curso de ingles", price="150.00", currency="MXN", trial_days=30
    )
    w = World(
        customer=Customer.of("c1", "America/Mexico_City"),
        plan=plan,
        now=datetime(2013, 12, 13, 12, 39, 46, tzinfo=MEX),
    )
    sub = w.subscribe()
    assert sub.status is S.TRIALING
    assert sub.trial_end is not None
    charge_date = sub.trial_end.astimezone(MEX).date()
    assert charge_date == date(2014, 1, 12)
    assert charge_date - timedelta(days=1) == date(2014, 1, 11)  # Openpay's trial_end_date
    w.run_until(datetime(2014, 1, 12, 12, 39, 45, tzinfo=MEX))
    assert w.issued() == []
    w.run_until(datetime(2014, 1, 12, 12, 39, 46, tzinfo=MEX))
    [first] = w.issued()
    assert first.created_at.astimezone(MEX).date() == date(2014, 1, 12)
    assert first.total == Money.of("150.00", "MXN")
    assert w.sub.status is S.ACTIVE


def test_an_explicit_trial_end_overrides_the_plans_trial_days():
    w = world(oro(trial_days=30))
    sub = w.subscribe(trial_end=datetime(2026, 2, 5, 12, tzinfo=SCL))
    assert sub.trial_end == datetime(2026, 2, 5, 12, tzinfo=SCL)
    w.run_until(datetime(2026, 2, 5, 12, tzinfo=SCL))
    assert local_days(w.issued()) == [date(2026, 2, 5)]


def test_a_trial_end_in_the_past_means_no_trial():
    w = world(oro(trial_days=30))
    sub = w.subscribe(trial_end=datetime(2026, 1, 1, tzinfo=SCL))
    assert sub.trial_end is None
    assert sub.status is S.ACTIVE
    assert len(w.issued()) == 1


def test_a_free_plan_activates_without_a_charge():
    w = world(oro(price="0"))
    sub = w.subscribe()
    assert sub.status is S.ACTIVE
    [invoice] = w.issued()
    assert invoice.total == clp(0)
    assert invoice.status is InvoiceStatus.PAID
    assert w.attempts == []


def test_a_first_period_fully_covered_by_credit_activates_without_a_charge():
    w = world()
    w.grant_credit(clp(20000))
    w.subscribe()
    [invoice] = w.issued()
    assert invoice.status is InvoiceStatus.PAID
    assert invoice.total == clp(0)
    assert invoice.credit_applied == clp(15000)
    assert w.attempts == []
    assert w.balance == clp(5000)


def test_credit_is_consumed_before_charging_the_rest():
    w = world()
    w.grant_credit(clp(4000))
    w.subscribe(tax=iva())
    [invoice] = w.issued()
    assert [line.kind for line in invoice.lines] == [LineKind.PLAN, LineKind.TAX, LineKind.CREDIT]
    assert invoice.total == clp(17850 - 4000)
    assert w.attempts[0].amount == clp(13850)


def test_an_inactive_plan_takes_no_new_subscription():
    w = world(oro().deactivated())
    with pytest.raises(PlanUnavailable) as error:
        w.subscribe()
    assert error.value.field == "plan"


def test_an_inactive_plan_keeps_billing_its_existing_subscriptions():
    w = world()
    w.subscribe()
    w.subscription = replace(w.sub, plan=w.sub.plan.deactivated())
    w.run_until(datetime(2026, 3, 31, 12, tzinfo=SCL))
    assert len(w.issued()) == 3


def test_subscribe_refuses_a_naive_start():
    with pytest.raises(NaiveDatetime) as error:
        subscribe(
            id="s",
            customer=Customer.of("c", "America/Santiago"),
            plan=oro(),
            now=datetime(2026, 1, 1, tzinfo=SCL),
            start=datetime(2026, 2, 1),
        )
    assert error.value.field == "start"


def test_subscribe_refuses_a_cycle_count_of_zero():
    with pytest.raises(InvalidArgument) as error:
        world().subscribe(cycles=0)
    assert error.value.field == "cycles"


# -- taxes, cycles, UF ------------------------------------------------------------------------


def test_qvo_tax_example_charges_11900_for_a_10000_plan_at_19_percent():
    w = world(oro(price="10000"))
    w.subscribe(tax=iva())
    [invoice] = w.issued()
    assert invoice.total == clp(11900)
    assert [(line.kind, line.amount) for line in invoice.lines] == [
        (LineKind.PLAN, clp(10000)),
        (LineKind.TAX, clp(1900)),
    ]


def test_an_inclusive_tax_shows_the_net_price_and_the_tax_summing_to_the_price():
    w = world(oro(price="11900"))
    w.subscribe(tax=iva(inclusive=True))
    [invoice] = w.issued()
    assert invoice.total == clp(11900)
    assert [line.amount for line in invoice.lines] == [clp(10000), clp(1900)]


def test_a_cycle_count_ends_the_subscription_after_that_many_periods():
    w = world(oro(cycles=3))
    w.subscribe()
    w.run_until(datetime(2027, 1, 1, tzinfo=SCL))
    assert w.sub.status is S.ENDED
    assert w.sub.ended_at == datetime(2026, 4, 30, 12, tzinfo=SCL)
    assert len(w.issued()) == 3
    assert w.names()[-1] == "subscription.ended"


def test_a_uf_plan_is_charged_in_pesos_at_the_rate_of_each_charge_date():
    rates = TableExchangeRates(
        [
            ExchangeRate.of(date(2026, 1, 1), "CLF", "CLP", "39000.50"),
            ExchangeRate.of(date(2026, 2, 15), "CLF", "CLP", "39100"),
        ]
    )
    plan = Plan.of(code="uf", name="Plan UF", price="0.5", currency="CLF", charge_currency="CLP")
    w = world(plan, rates=rates)
    w.subscribe()
    w.run_until(datetime(2026, 2, 28, 12, tzinfo=SCL))
    assert [invoice.total for invoice in w.issued()] == [clp(19500), clp(19550)]


# -- dunning ----------------------------------------------------------------------------------


def test_soft_declines_follow_the_retry_schedule_then_the_subscription_is_unpaid():
    w = world(pay=decline())
    w.subscribe()
    assert w.sub.status is S.PAST_DUE
    w.run_until(datetime(2026, 3, 15, tzinfo=SCL))
    attempts = [a.created_at - w.attempts[0].created_at for a in w.attempts]
    assert attempts == [timedelta(0), timedelta(days=1), timedelta(days=4), timedelta(days=9)]
    assert w.sub.status is S.UNPAID
    assert w.issued()[0].status is InvoiceStatus.OPEN
    assert len(w.issued()) == 1  # an unpaid subscription stops renewing
    assert "subscription.unpaid" in w.names()


def test_a_hard_decline_stops_the_retries_at_once():
    w = world(pay=decline(DeclineKind.HARD))
    w.subscribe()
    assert w.sub.status is S.UNPAID
    w.run_until(datetime(2026, 3, 15, tzinfo=SCL))
    assert len(w.attempts) == 1


def test_a_retry_that_succeeds_makes_the_subscription_active_again():
    outcomes = iter([PaymentResult.failed(DeclineKind.SOFT), PaymentResult.succeeded()])
    w = world(pay=lambda invoice, attempt: next(outcomes))
    w.subscribe()
    assert w.sub.status is S.PAST_DUE
    w.run_until(datetime(2026, 2, 2, tzinfo=SCL))
    assert w.sub.status is S.ACTIVE
    assert w.issued()[0].status is InvoiceStatus.PAID
    assert w.statuses == [(S.SCHEDULED, S.ACTIVE), (S.ACTIVE, S.PAST_DUE), (S.PAST_DUE, S.ACTIVE)]


def test_retries_running_out_with_the_cancel_policy_cancel_and_write_the_invoice_off():
    w = world(oro(retry=RetryPolicy.openpay(2, "cancelled")), pay=decline())
    w.subscribe()
    w.run_until(datetime(2026, 3, 1, tzinfo=SCL))
    assert len(w.attempts) == 3
    assert w.sub.status is S.CANCELED
    assert w.issued()[0].status is InvoiceStatus.UNCOLLECTIBLE


def test_retries_running_out_with_the_past_due_policy_carry_the_balance_to_the_next_invoice():
    w = world(oro(retry=RetryPolicy.of([1], then="past_due")), pay=decline())
    w.subscribe(tax=iva())
    w.run_until(datetime(2026, 2, 10, tzinfo=SCL))
    assert w.sub.status is S.PAST_DUE
    assert w.issued()[0].status is InvoiceStatus.VOID
    w.pay = lambda invoice, attempt: PaymentResult.succeeded()
    w.run_until(datetime(2026, 2, 28, 12, tzinfo=SCL))
    second = w.issued()[1]
    debt = [line for line in second.lines if line.kind is LineKind.DEBT]
    assert [line.amount for line in debt] == [clp(17850)]
    assert second.total == clp(17850 * 2)  # the carried balance is not taxed twice
    assert w.sub.status is S.ACTIVE


def test_an_unpaid_subscription_is_reactivated_by_a_new_payment_method_and_a_paid_invoice():
    w = world(pay=decline(DeclineKind.HARD))
    w.subscribe()
    assert w.sub.status is S.UNPAID
    w.run_until(datetime(2026, 2, 10, tzinfo=SCL))
    w.replace_payment_method(lambda invoice, attempt: PaymentResult.succeeded())
    assert w.sub.status is S.ACTIVE
    assert w.issued()[0].status is InvoiceStatus.PAID
    assert len(w.issued()) == 1  # still inside the period the invoice paid for


def test_a_reactivation_after_the_period_bills_the_rest_of_the_current_period():
    w = world(pay=decline(DeclineKind.HARD))
    w.subscribe()
    w.run_until(datetime(2026, 3, 14, 12, tzinfo=SCL))
    w.replace_payment_method(lambda invoice, attempt: PaymentResult.succeeded())
    first, rest = w.issued()
    assert first.status is InvoiceStatus.PAID
    assert rest.reason is InvoiceReason.RESUME
    assert rest.period is not None
    assert rest.period.start == datetime(2026, 3, 14, 12, tzinfo=SCL)
    assert rest.period.end == datetime(2026, 3, 31, 12, tzinfo=SCL)
    seconds = rest.period.duration // timedelta(seconds=1)
    assert rest.total == clp(15000).scaled(Fraction(seconds, 31 * 24 * 3600))
    assert rest.total == clp(8226)  # 17 of 31 days


def test_a_failed_reactivation_leaves_the_subscription_unpaid():
    w = world(pay=decline(DeclineKind.HARD))
    w.subscribe()
    w.replace_payment_method(decline())
    assert w.sub.status is S.UNPAID
    assert len(w.attempts) == 2


# -- cancel, pause, resume --------------------------------------------------------------------


def test_cancel_at_period_end_keeps_the_subscription_active_until_the_period_ends():
    w = world()
    w.subscribe()
    w.run_until(datetime(2026, 2, 10, tzinfo=SCL))
    w.cancel()
    assert w.sub.status is S.ACTIVE
    assert w.sub.cancel_at_period_end
    w.run_until(datetime(2026, 6, 1, tzinfo=SCL))
    assert w.sub.status is S.CANCELED
    assert w.sub.canceled_at == datetime(2026, 2, 28, 12, tzinfo=SCL)
    assert len(w.issued()) == 1


def test_cancel_now_stops_billing_at_once():
    w = world()
    w.subscribe()
    w.run_until(datetime(2026, 2, 10, tzinfo=SCL))
    w.cancel(at_period_end=False)
    assert w.sub.status is S.CANCELED
    assert w.sub.canceled_at == datetime(2026, 2, 10, tzinfo=SCL)
    assert w.sub.due_at is None


def test_a_trial_canceled_at_period_end_ends_without_a_charge():
    w = world(oro(trial_days=14))
    w.subscribe()
    w.cancel()
    w.run_until(datetime(2026, 3, 1, tzinfo=SCL))
    assert w.sub.status is S.CANCELED
    assert w.issued() == []


def test_a_scheduled_subscription_is_canceled_at_once_even_when_asked_for_period_end():
    w = world()
    w.subscribe(start=datetime(2026, 3, 1, tzinfo=SCL))
    w.cancel(at_period_end=True)
    assert w.sub.status is S.CANCELED


def test_a_pause_and_resume_inside_one_period_bills_nothing_extra():
    w = world()
    w.subscribe()
    w.run_until(datetime(2026, 2, 5, tzinfo=SCL))
    w.pause()
    w.run_until(datetime(2026, 2, 20, tzinfo=SCL))
    w.resume()
    assert w.sub.status is S.ACTIVE
    assert len(w.issued()) == 1
    w.run_until(datetime(2026, 2, 28, 12, tzinfo=SCL))
    assert len(w.issued()) == 2


def test_a_resume_in_a_later_period_bills_the_rest_of_that_period_prorated():
    w = world()
    w.subscribe()
    w.run_until(datetime(2026, 2, 5, tzinfo=SCL))
    w.pause()
    w.run_until(datetime(2026, 4, 15, 12, tzinfo=SCL))
    assert len(w.issued()) == 1  # nothing billed while paused
    w.resume()
    rest = w.issued()[1]
    assert rest.reason is InvoiceReason.RESUME
    assert rest.period is not None
    assert rest.period.end == datetime(2026, 4, 30, 12, tzinfo=SCL)
    # 360 of the period's 721 hours: Chile's clocks went back an hour on April 5th
    assert rest.period.duration == timedelta(hours=360)
    assert rest.total == clp(7490)


def test_a_resume_without_proration_bills_the_whole_current_period():
    w = world()
    w.subscribe(prorate=False)
    w.run_until(datetime(2026, 2, 5, tzinfo=SCL))
    w.pause()
    w.run_until(datetime(2026, 4, 15, 12, tzinfo=SCL))
    w.resume()
    assert w.issued()[1].total == clp(15000)


def test_a_pause_with_a_resume_date_resumes_by_itself():
    w = world()
    w.subscribe()
    w.run_until(datetime(2026, 2, 5, tzinfo=SCL))
    w.pause(resume_at=datetime(2026, 3, 10, tzinfo=SCL))
    w.run_until(datetime(2026, 3, 10, tzinfo=SCL))
    assert w.sub.status is S.ACTIVE
    assert w.names().count("subscription.resumed") == 1
    assert w.issued()[1].period is not None
    assert w.issued()[1].period.start == datetime(2026, 3, 10, tzinfo=SCL)


def test_a_paused_subscription_ends_when_its_cycle_count_runs_out():
    w = world(oro(cycles=2))
    w.subscribe()
    w.run_until(datetime(2026, 2, 5, tzinfo=SCL))
    w.pause()
    w.run_until(datetime(2026, 6, 1, tzinfo=SCL))
    assert w.sub.status is S.ENDED
    assert w.sub.ended_at == datetime(2026, 3, 31, 12, tzinfo=SCL)


# -- illegal transitions and out-of-order operations ------------------------------------------


def test_resuming_an_active_subscription_is_an_illegal_transition():
    w = world()
    w.subscribe()
    with pytest.raises(IllegalTransition) as error:
        resume(w.sub, at=w.now)
    assert error.value.status == "active"
    assert error.value.action == "resume"


def test_canceling_a_canceled_subscription_is_an_illegal_transition():
    w = world()
    w.subscribe()
    w.cancel(at_period_end=False)
    with pytest.raises(IllegalTransition):
        cancel(w.sub, at=w.now)


def test_pausing_a_past_due_subscription_is_an_illegal_transition():
    w = world(pay=decline())
    w.subscribe()
    with pytest.raises(IllegalTransition):
        pause(w.sub, at=w.now)


def test_pausing_refuses_a_resume_date_before_the_pause():
    w = world()
    w.subscribe()
    with pytest.raises(InvalidArgument) as error:
        pause(w.sub, at=w.now, resume_at=w.now - timedelta(days=1))
    assert error.value.field == "resume_at"


def test_an_operation_after_unbilled_due_work_is_refused():
    w = world()
    w.subscribe()
    with pytest.raises(InvalidArgument) as error:
        cancel(w.sub, at=datetime(2026, 3, 5, tzinfo=SCL))
    assert error.value.field == "at"
    assert "must be run" in error.value.rule


def test_advance_refuses_a_naive_now():
    w = world()
    w.subscribe()
    with pytest.raises(NaiveDatetime) as error:
        advance(w.sub, now=datetime(2026, 3, 1))
    assert error.value.field == "now"


def test_cancel_refuses_a_flag_that_is_not_a_boolean():
    w = world()
    w.subscribe()
    with pytest.raises(InvalidArgument) as error:
        cancel(w.sub, at=w.now, at_period_end="yes")  # type: ignore[arg-type]
    assert error.value.field == "at_period_end"


def test_a_renewal_held_back_by_dunning_is_billed_when_the_dunning_ends_not_before():
    weekly = oro(interval="week", retry=RetryPolicy.of([8]))
    outcomes = iter([PaymentResult.failed(DeclineKind.SOFT), PaymentResult.succeeded()])
    w = world(weekly, pay=lambda invoice, attempt: next(outcomes, PaymentResult.succeeded()))
    w.subscribe()
    first_attempt = w.attempts[0].created_at
    w.run_until(first_attempt + timedelta(days=7))
    assert len(w.issued()) == 1  # the renewal due on day 7 waits for the retry of day 8
    w.run_until(first_attempt + timedelta(days=8))
    renewal = w.issued()[1]
    assert renewal.period is not None
    assert renewal.period.start == first_attempt + timedelta(days=7)  # the period it covers
    assert renewal.created_at == first_attempt + timedelta(days=8)  # issued when dunning ended
    at_of_events = [event.at for event in w.events]
    assert at_of_events == sorted(at_of_events)


def test_a_changed_copy_works_out_its_own_due_instant_and_the_memo_is_not_a_value():
    w = world()
    w.subscribe()
    sub = w.sub
    assert sub.current_index is not None
    first = sub.due_at  # worked out, and kept
    later = replace(sub, current_index=sub.current_index + 1)
    assert later.due_at == sub.calendar.boundary(sub.current_index + 2) != first
    assert sub.due_at == first
    assert sub == replace(sub)  # a copy that has not worked it out yet is equal
    assert "_due" not in codec.encode(sub)
    assert codec.decode(Subscription, codec.encode(later)) == later
