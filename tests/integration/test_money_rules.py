"""One named regression test per way an adversarial review made the engine create or lose money
(issue 9), through the public API on SQLite and PostgreSQL. Each also checks the whole books
(:meth:`Engine.audit`). The races (credit, refunds) are in ``test_races.py``; the currency
exponents in ``test_currencies.py``.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy
from sqlalchemy import func, select

from billing import open_engine
from billing.clock import ManualClock
from billing.config import Settings
from billing.domain.catalog import Plan
from billing.domain.dunning import RetryPolicy
from billing.domain.errors import ExchangeRateNotFound, InvalidArgument
from billing.domain.exchange import ExchangeRate, TableExchangeRates
from billing.domain.invoices import InvoiceReason, InvoiceStatus
from billing.domain.money import Money, Rounding
from billing.domain.payments import PaymentStatus
from billing.domain.subscriptions import SubscriptionStatus
from billing.domain.taxes import TaxRate
from billing.engine import Engine
from billing.store.tables import metadata
from billing.testing import Behavior, FakeGateway
from tests.integration.conftest import SCL, START, Billing

MARCH = datetime(2026, 3, 1, 12, tzinfo=SCL)
"""A 31-day period from here: [Mar 1 12:00, Apr 1 12:00) -03, no DST change inside."""
MID_MARCH = datetime(2026, 3, 17, 0, tzinfo=SCL)
"""15.5 of its 31 days left: exactly half."""
APRIL = datetime(2026, 4, 1, 12, tzinfo=SCL)
IVA = TaxRate.of("IVA", "19")
ORO = Plan.of(code="oro", name="Oro", price="15000", currency="CLP")
PLATINO = Plan.of(code="platino", name="Platino", price="50000", currency="CLP")
BRONCE = Plan.of(code="bronce", name="Bronce", price="5000", currency="CLP")


def clp(amount: int) -> Money:
    return Money.of(amount, "CLP")


def balanced(engine: Engine) -> None:
    report = engine.audit()
    assert report.balanced, "\n".join(map(str, report.findings))


def plans(billing: Billing, *more: Plan) -> None:
    for plan in (ORO, PLATINO, BRONCE, *more):
        billing.engine.create_plan(plan)


def kinds(invoice_lines: object) -> list[tuple[str, int]]:
    return [(line.kind.value, line.amount.minor) for line in invoice_lines]  # type: ignore[attr-defined]


@pytest.fixture
def march(billing: Billing) -> Billing:
    billing.clock.set(MARCH)
    return billing


def table_rows(url: str) -> dict[str, int]:
    db = sqlalchemy.create_engine(url)
    try:
        with db.connect() as connection:
            return {
                table.name: connection.execute(select(func.count()).select_from(table)).scalar_one()
                for table in metadata.sorted_tables
            }
    finally:
        db.dispose()


# -- 2: debt is never dropped when a subscription stops -----------------------------------------


def test_upgrade_debt_is_invoiced_on_a_final_invoice_when_canceled_at_period_end(march: Billing):
    plans(march)
    march.customer("c1")
    subscription = march.engine.subscribe("c1", "oro", tax=IVA)
    march.run_until(MID_MARCH)
    march.engine.change_plan(subscription.id, "platino")  # (50000 - 15000) x 1/2 = 17500 debt
    march.engine.cancel(subscription.id)
    march.run_until(APRIL)
    stopped = march.engine.subscription(subscription.id)
    assert (stopped.status, stopped.debt) == (SubscriptionStatus.CANCELED, ())
    final = march.engine.invoices(subscription_id=subscription.id)[-1]
    assert final.reason is InvoiceReason.FINAL
    assert kinds(final.lines) == [("debt", 17500), ("tax", 3325)]  # 19 % of 17500
    assert (final.total, final.status, final.finalized_at) == (
        clp(20825),
        InvoiceStatus.PAID,
        APRIL,
    )
    balanced(march.engine)


def test_debt_is_invoiced_when_the_cycle_count_runs_out(march: Billing):
    plans(march)
    march.customer("c1")
    subscription = march.engine.subscribe("c1", "oro", cycles=1)
    march.run_until(MID_MARCH)
    march.engine.change_plan(subscription.id, "platino")
    march.run_until(APRIL)
    ended = march.engine.subscription(subscription.id)
    assert (ended.status, ended.debt) == (SubscriptionStatus.ENDED, ())
    final = march.engine.invoices(subscription_id=subscription.id)[-1]
    assert (final.reason, kinds(final.lines)) == (InvoiceReason.FINAL, [("debt", 17500)])
    balanced(march.engine)


def test_a_voided_balance_carried_as_debt_is_invoiced_when_the_subscription_is_canceled(
    march: Billing,
):
    carry = Plan.of(
        code="carry", name="Carry", price="10000", currency="CLP",
        retry=RetryPolicy.no_retries(then="past_due"),
    )  # fmt: skip
    march.engine.create_plan(carry)
    march.customer("c1", payment="decline_soft")
    subscription = march.engine.subscribe("c1", "carry")
    [voided] = march.engine.invoices(subscription_id=subscription.id)
    assert voided.status is InvoiceStatus.VOID
    assert march.engine.subscription(subscription.id).debt_total == clp(10000)
    march.engine.cancel(subscription.id, at_period_end=False)
    stopped = march.engine.subscription(subscription.id)
    assert (stopped.status, stopped.debt) == (SubscriptionStatus.CANCELED, ())
    final = march.engine.invoices(subscription_id=subscription.id)[-1]
    assert (final.reason, kinds(final.lines)) == (InvoiceReason.FINAL, [("debt", 10000)])
    # the card still declines and the policy has no retries: on a stopped subscription that
    # writes the final invoice off (it cannot be carried any further), visibly
    assert final.status is InvoiceStatus.UNCOLLECTIBLE
    balanced(march.engine)


def test_the_host_may_write_stopped_debt_off_with_an_event(march: Billing):
    engine = open_engine(
        march.url,
        clock=march.clock,
        gateways=[march.fake],
        settings=Settings(threads=1, final_debt="write_off"),
    )
    try:
        for plan in (ORO, PLATINO):
            engine.create_plan(plan)
        engine.create_customer(customer_id="c1", timezone="America/Santiago")
        engine.add_payment_method("c1", gateway="fake", token="tok_c1")
        subscription = engine.subscribe("c1", "oro")
        march.clock.set(MID_MARCH)
        engine.run_due()
        engine.change_plan(subscription.id, "platino")
        engine.cancel(subscription.id, at_period_end=False)
        assert engine.subscription(subscription.id).debt == ()
        assert [i.reason for i in engine.invoices()] == [InvoiceReason.SUBSCRIPTION_START]
        [written_off] = [
            e for e in engine.events(limit=100) if e.name == "subscription.debt_written_off"
        ]
        assert written_off.payload["amount"] == {"minor": 17500, "currency": "CLP"}
        balanced(engine)
    finally:
        engine.close()


# -- 3: no credit for time nobody paid for -----------------------------------------------------


def test_a_downgrade_while_the_period_is_unpaid_holds_its_credit_until_it_is_paid(march: Billing):
    plans(march)
    march.customer("c1", payment="pay_late")  # pending for two days, then paid
    subscription = march.engine.subscribe("c1", "oro")
    march.engine.change_plan(subscription.id, "bronce")  # 10000 of unused time, unpaid yet
    assert march.engine.credit_balance("c1", "CLP").amount == clp(0)
    [changed] = [e for e in march.engine.events(limit=100) if e.name == "subscription.plan_changed"]
    assert changed.payload["credit_held"]["minor"] == 10000
    march.run_until(MARCH + timedelta(days=3))
    assert march.engine.invoices(subscription_id=subscription.id)[0].status is InvoiceStatus.PAID
    assert march.engine.credit_balance("c1", "CLP").amount == clp(10000)
    balanced(march.engine)


def test_credit_held_for_an_invoice_that_is_written_off_is_forfeited(march: Billing):
    give_up = Plan.of(
        code="give_up", name="Give up", price="60000", currency="CLP",
        retry=RetryPolicy.no_retries(then="canceled"),
    )  # fmt: skip
    small = Plan.of(
        code="small", name="Small", price="6530", currency="CLP", retry=give_up.retry_policy
    )
    march.engine.create_plan(give_up)
    march.engine.create_plan(small)
    march.customer("c1", payment="never_pay")
    subscription = march.engine.subscribe("c1", "give_up")
    march.engine.change_plan(subscription.id, "small")
    march.run_until(MARCH + timedelta(days=3))  # the payment expires: written off, canceled
    [invoice] = march.engine.invoices(subscription_id=subscription.id)
    assert invoice.status is InvoiceStatus.UNCOLLECTIBLE
    assert march.engine.credit_balance("c1", "CLP").amount == clp(0)  # not 53470
    [forfeited] = [e for e in march.engine.events(limit=100) if e.name == "credit.forfeited"]
    assert forfeited.payload["amount"]["minor"] == 53470
    balanced(march.engine)


# -- 4: every declined invoice is collected until paid or resolved -----------------------------


def test_a_plan_change_invoice_declined_while_the_renewal_is_in_dunning_is_retried(
    billing: Billing,
):
    suave = Plan.of(
        code="suave", name="Suave", price="10000", currency="CLP",
        retry=RetryPolicy.of([1, 2], then="unpaid"),
    )  # fmt: skip
    mas = Plan.of(code="mas", name="Mas", price="20000", currency="CLP", retry=suave.retry_policy)
    billing.engine.create_plan(suave)
    billing.engine.create_plan(mas)
    billing.clock.set(MARCH)
    billing.customer("c1")
    billing.fake.script("c1", [Behavior.APPROVE, Behavior.LINK_EXPIRES])
    subscription = billing.engine.subscribe("c1", "suave")
    billing.run_until(APRIL)  # the renewal's payment link is out
    billing.engine.change_plan(subscription.id, "mas", behavior="invoice_now")  # another link
    renewal, upgrade = billing.engine.invoices(subscription_id=subscription.id)[1:]
    for days in range(1, 12):  # both links expire; each invoice follows the retry policy
        billing.run_until(APRIL + timedelta(days=days))
        balanced(billing.engine)
    assert billing.engine.subscription(subscription.id).status is SubscriptionStatus.UNPAID
    attempts = {i.id: len(billing.engine.payments(invoice_id=i.id)) for i in (renewal, upgrade)}
    assert attempts == {renewal.id: 3, upgrade.id: 3}
    names = [e.name for e in billing.engine.events(limit=200)]
    assert "invoice.awaiting_payment_method" in names  # the upgrade's: left to a new card
    billing.fake.script("c1", Behavior.APPROVE)
    billing.engine.replace_payment_method("c1", gateway="fake", token="tok_new")
    statuses = [i.status for i in billing.engine.invoices(subscription_id=subscription.id)]
    assert InvoiceStatus.OPEN not in statuses
    assert billing.engine.subscription(subscription.id).status is SubscriptionStatus.ACTIVE
    balanced(billing.engine)


def test_a_renewal_declined_while_paused_is_retried(march: Billing):
    plans(march)
    march.customer("c1")
    march.fake.script("c1", [Behavior.APPROVE, Behavior.NEVER_PAY, Behavior.APPROVE])
    subscription = march.engine.subscribe("c1", "oro")
    march.run_until(APRIL)
    march.engine.pause(subscription.id)
    march.run_until(APRIL + timedelta(days=20))  # expired on Apr 3, retried 8 days later: paid
    renewal = march.engine.invoices(subscription_id=subscription.id)[1]
    assert renewal.status is InvoiceStatus.PAID
    assert [p.status for p in march.engine.payments(invoice_id=renewal.id)] == [
        PaymentStatus.FAILED,
        PaymentStatus.SUCCEEDED,
    ]
    assert march.engine.subscription(subscription.id).status is SubscriptionStatus.PAUSED
    balanced(march.engine)


def test_the_last_invoice_is_still_collected_when_the_cycle_count_ends_during_dunning(
    march: Billing,
):
    patient = Plan.of(
        code="patient", name="Patient", price="10000", currency="CLP",
        retry=RetryPolicy.of([20, 20], then="unpaid"),
    )  # fmt: skip
    march.engine.create_plan(patient)
    march.customer("c1")
    march.fake.script("c1", [Behavior.APPROVE, Behavior.DECLINE_SOFT])
    subscription = march.engine.subscribe("c1", "patient", cycles=2)
    may = datetime(2026, 5, 1, 12, tzinfo=SCL)
    march.run_until(may)  # declined Apr 1 and Apr 21; it ends May 1 with a retry left
    ended = march.engine.subscription(subscription.id)
    assert (ended.status, ended.dunning) == (SubscriptionStatus.ENDED, None)
    assert [c.failed_attempts for c in ended.collections] == [2]
    march.fake.script("c1", Behavior.APPROVE)
    march.run_until(may + timedelta(days=30))  # the retry on May 11 is paid
    renewal = march.engine.invoices(subscription_id=subscription.id)[1]
    assert renewal.status is InvoiceStatus.PAID
    assert len(march.engine.payments(invoice_id=renewal.id)) == 3
    balanced(march.engine)


# -- 5: a failed subscribe writes nothing; a stuck subscription can be canceled -----------------


@pytest.fixture
def uf_engine(march: Billing) -> Iterator[Engine]:
    """An engine whose UF series starts two days after March 1st."""
    rates = TableExchangeRates(
        [ExchangeRate.of(datetime(2026, 3, 3).date(), "CLF", "CLP", "39000")]
    )
    engine = open_engine(
        march.url, clock=march.clock, gateways=[march.fake], rates=rates,
        settings=Settings(threads=1),
    )  # fmt: skip
    engine.create_plan(Plan.of(code="uf", name="UF", price="1", currency="CLF"))
    engine.create_customer(customer_id="c1", timezone="America/Santiago")
    engine.add_payment_method("c1", gateway="fake", token="tok_c1")
    yield engine
    engine.close()


def test_a_subscribe_that_cannot_price_its_first_invoice_writes_nothing(
    march: Billing, uf_engine: Engine
):
    before = table_rows(march.url)
    with pytest.raises(ExchangeRateNotFound):
        uf_engine.subscribe("c1", "uf", idempotency_key="first")
    assert table_rows(march.url) == before
    march.clock.set(MARCH + timedelta(days=2))  # the key was not taken: the call can be made
    subscription = uf_engine.subscribe("c1", "uf", idempotency_key="first")
    assert subscription.status is SubscriptionStatus.ACTIVE
    balanced(uf_engine)


def test_a_subscription_whose_billing_is_stuck_can_still_be_canceled(
    march: Billing, uf_engine: Engine
):
    start = MARCH + timedelta(hours=1)
    subscription = uf_engine.subscribe("c1", "uf", start=start)
    march.clock.set(MARCH + timedelta(hours=5))
    assert uf_engine.run_due().failed == [subscription.id]  # no UF rate before Mar 3
    canceled = uf_engine.cancel(subscription.id, at_period_end=False)
    assert (canceled.status, canceled.canceled_at) == (SubscriptionStatus.CANCELED, start)
    assert uf_engine.invoices() == []
    assert uf_engine.run_due().failed == []
    balanced(uf_engine)


# -- 6: the in-memory URL bills renewals ------------------------------------------------------


def test_an_in_memory_engine_bills_renewals_from_its_worker_threads():
    clock = ManualClock(MARCH)
    with open_engine(
        "sqlite:///:memory:", clock=clock, gateways=[FakeGateway()], migrate=True
    ) as engine:
        assert engine.settings.threads > 1
        engine.create_plan(ORO)
        for n in range(5):
            engine.create_customer(customer_id=f"c{n}", timezone="America/Santiago")
            engine.add_payment_method(f"c{n}", gateway="fake", token=f"tok_{n}")
            engine.subscribe(f"c{n}", "oro")
        clock.set(APRIL)
        report = engine.run_due()
        assert (report.steps, report.failed, report.contended) == (5, [], [])
        assert len(engine.invoices()) == 10
        balanced(engine)


# -- 7: a calendar day the timezone skipped ----------------------------------------------------


def test_a_day_samoa_skipped_is_not_billed_and_billing_goes_on(billing: Billing):
    apia = ZoneInfo("Pacific/Apia")
    start = datetime(2011, 12, 28, 12, tzinfo=apia)
    engine = open_engine(
        billing.url, clock=ManualClock(start), gateways=[billing.fake],
        settings=Settings(threads=1),
    )  # fmt: skip
    try:
        engine.create_plan(
            Plan.of(code="daily", name="Daily", price="1000", currency="CLP", interval="day")
        )
        engine.create_customer(customer_id="c1", timezone="Pacific/Apia")
        engine.add_payment_method("c1", gateway="fake", token="tok_c1")
        subscription = engine.subscribe("c1", "daily")
        for day in range(1, 6):
            engine.clock.set(start + timedelta(days=day))  # type: ignore[attr-defined]
            engine.run_due()
        periods = [
            (i.period.start.astimezone(apia).date().isoformat(), i.period.duration)
            for i in engine.invoices(subscription_id=subscription.id)
            if i.period is not None
        ]
        day = timedelta(days=1)
        # Dec 30 does not exist in Apia: Dec 29 12:00 (-10) to Dec 31 12:00 (+14) is one day
        assert periods == [
            ("2011-12-28", day),
            ("2011-12-29", day),
            ("2011-12-31", day),
            ("2012-01-01", day),
            ("2012-01-02", day),
        ]
        assert engine.run_due().failed == []
        balanced(engine)
    finally:
        engine.close()


# -- 8: a tax's rounding mode is kept -----------------------------------------------------------


def test_a_tax_rounded_down_is_invoiced_rounded_down(billing: Billing):
    billing.engine.create_plan(Plan.of(code="mini", name="Mini", price="150", currency="CLP"))
    billing.customer("c1")
    tax = TaxRate.of("IVA", "19", mode="down")
    subscription = billing.engine.subscribe("c1", "mini", tax=tax)
    assert billing.engine.subscription(subscription.id).tax == tax
    [invoice] = billing.engine.invoices(subscription_id=subscription.id)
    assert kinds(invoice.lines) == [("plan", 150), ("tax", 28)]  # 28.5 rounded down
    billing.run_until(billing.clock.now() + timedelta(days=31))
    assert kinds(billing.engine.invoices(subscription_id=subscription.id)[1].lines)[-1] == (
        "tax",
        28,
    )
    assert tax.mode is Rounding.DOWN
    balanced(billing.engine)


# -- 9: two plan changes invoiced at one instant ------------------------------------------------


def test_two_plan_changes_invoiced_at_the_same_instant_are_both_made(march: Billing):
    plans(march)
    march.customer("c1")
    subscription = march.engine.subscribe("c1", "bronce")
    march.run_until(MID_MARCH)
    march.engine.change_plan(subscription.id, "oro", behavior="invoice_now")
    march.engine.change_plan(subscription.id, "platino", behavior="invoice_now")
    assert march.engine.subscription(subscription.id).plan.code == "platino"
    changes = [
        i.total
        for i in march.engine.invoices(subscription_id=subscription.id)
        if i.reason is InvoiceReason.PLAN_CHANGE
    ]
    assert changes == [clp(5000), clp(17500)]  # (15000-5000)/2, (50000-15000)/2
    balanced(march.engine)


# -- 10: no start in the past -------------------------------------------------------------------


def test_a_start_in_the_past_is_refused_and_writes_nothing(march: Billing):
    plans(march)
    march.customer("c1")
    before = table_rows(march.url)
    with pytest.raises(InvalidArgument) as refused:
        march.engine.subscribe("c1", "oro", start=MARCH - timedelta(days=365))
    assert refused.value.field == "start"
    assert table_rows(march.url) == before


# -- 11: UF proration credits what was billed -------------------------------------------------


def test_unused_uf_time_is_credited_at_the_rate_it_was_billed(march: Billing):
    rates = TableExchangeRates(
        [
            ExchangeRate.of(MARCH.date(), "CLF", "CLP", "39000"),
            ExchangeRate.of(MID_MARCH.date(), "CLF", "CLP", "40000"),
        ]
    )
    engine = open_engine(
        march.url, clock=march.clock, gateways=[march.fake], rates=rates,
        settings=Settings(threads=1),
    )  # fmt: skip
    try:
        engine.create_plan(Plan.of(code="uf2", name="Dos UF", price="2", currency="CLF"))
        engine.create_plan(Plan.of(code="uf1", name="Una UF", price="1", currency="CLF"))
        engine.create_customer(customer_id="c1", timezone="America/Santiago")
        engine.add_payment_method("c1", gateway="fake", token="tok_c1")
        subscription = engine.subscribe("c1", "uf2")  # 2 x 39000 = 78000 CLP
        march.clock.set(MID_MARCH)
        engine.run_due()
        change = engine.preview_change(subscription.id, "uf1")
        assert kinds(change.lines) == [
            ("proration_credit", -39000),  # half of the 78000 billed, not half of 2 x 40000
            ("proration_charge", 20000),  # the new plan at today's rate: half of 40000
        ]
        engine.change_plan(subscription.id, "uf1")
        assert engine.credit_balance("c1", "CLP").amount == clp(19000)
        balanced(engine)
    finally:
        engine.close()


# -- 12: the renewal that carries a voided balance is dated when it is made -------------------


def test_the_renewal_carrying_a_voided_balance_is_made_when_the_balance_is_voided(
    march: Billing,
):
    slow = Plan.of(
        code="slow", name="Slow", price="10000", currency="CLP",
        retry=RetryPolicy.of([20, 20], then="past_due"),
    )  # fmt: skip
    march.engine.create_plan(slow)
    march.customer("c1", payment="decline_soft")
    subscription = march.engine.subscribe("c1", "slow")
    march.run_until(datetime(2026, 4, 20, tzinfo=SCL))  # retries on Mar 21 and Apr 10
    first, renewal = march.engine.invoices(subscription_id=subscription.id)
    assert first.status is InvoiceStatus.VOID
    voided_at = MARCH.astimezone(UTC) + timedelta(days=40)  # retries wait in real time
    assert first.closed_at == voided_at
    assert renewal.finalized_at == voided_at  # not back on Apr 1
    assert kinds(renewal.lines) == [("plan", 10000), ("debt", 10000)]
    balanced(march.engine)


# -- 14: a UF plan charges pesos; a currency the gateway cannot take is refused --------------


def test_a_uf_plan_charges_pesos_unless_told_otherwise():
    uf = Plan.of(code="uf", name="UF", price="0.5", currency="CLF")
    assert uf.billing_currency.code == "CLP"
    told = Plan.of(code="ufx", name="UF", price="0.5", currency="CLF", charge_currency="CLF")
    assert told.billing_currency.code == "CLF"


def test_a_plan_its_customers_gateway_cannot_charge_is_refused_when_subscribed(billing: Billing):
    billing.engine.create_plan(
        Plan.of(code="ufx", name="UF", price="0.5", currency="CLF", charge_currency="CLF")
    )
    billing.customer("c1")
    before = table_rows(billing.url)
    with pytest.raises(InvalidArgument) as refused:
        billing.engine.subscribe("c1", "ufx")
    assert refused.value.field == "plan"
    assert "CLF" in str(refused.value)
    assert table_rows(billing.url) == before


# -- 15: a full refund gives back the credit the invoice used ---------------------------------


def test_a_full_refund_gives_back_the_credit_the_invoice_used(billing: Billing):
    billing.engine.create_plan(ORO)
    billing.customer("c1")
    billing.engine.grant_credit("c1", clp(4000))
    subscription = billing.engine.subscribe("c1", "oro")  # 15000 - 4000 of credit = 11000
    [payment] = billing.engine.payments(subscription_id=subscription.id)
    assert payment.amount == clp(11000)
    billing.engine.refund(payment.id, amount=clp(3000))
    assert billing.engine.credit_balance("c1", "CLP").amount == clp(0)  # not refunded in full
    billing.engine.refund(payment.id)
    assert billing.engine.credit_balance("c1", "CLP").amount == clp(4000)
    balanced(billing.engine)


def test_a_host_may_keep_the_credit_of_refunded_invoices(billing: Billing):
    engine = open_engine(
        billing.url, clock=billing.clock, gateways=[billing.fake],
        settings=Settings(threads=1, refunds_return_credit=False),
    )  # fmt: skip
    try:
        engine.create_plan(ORO)
        engine.create_customer(customer_id="c1", timezone="America/Santiago")
        engine.add_payment_method("c1", gateway="fake", token="tok_c1")
        engine.grant_credit("c1", clp(4000))
        subscription = engine.subscribe("c1", "oro")
        [payment] = engine.payments(subscription_id=subscription.id)
        engine.refund(payment.id)
        assert engine.credit_balance("c1", "CLP").amount == clp(0)
        balanced(engine)
    finally:
        engine.close()


def test_a_first_charge_with_no_payment_method_schedules_its_retry_for_the_worker(
    billing: Billing,
):
    """Credit lets a customer without a card subscribe; the first charge fails at once (no
    payment method), and its retry must be when the engine next has work, or no worker runs it."""
    retry = RetryPolicy.of([3, 1, 15])
    billing.engine.create_plan(
        Plan.of(code="m", name="M", price="10000", currency="CLP", retry=retry)
    )
    billing.engine.create_customer(customer_id="c1", timezone="America/Santiago")
    billing.engine.grant_credit("c1", Money.of("1000", "CLP"))

    subscription = billing.engine.subscribe("c1", "m")

    assert subscription.status is SubscriptionStatus.PAST_DUE
    assert subscription.due_at == START + timedelta(days=3)
    assert billing.engine.next_run_at() == subscription.due_at
    billing.engine.add_payment_method("c1", gateway="fake", token="tok_c1")
    billing.run_until(START + timedelta(days=3, hours=1))
    [invoice] = billing.engine.invoices(subscription_id=subscription.id)
    assert invoice.status is InvoiceStatus.PAID, "the worker retried it on time"
    balanced(billing.engine)
