"""Faults an independent crash test found in the billing loop, each reproduced on its own."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import create_engine, select
from sqlmodel import col

from billing.bootstrap import open_engine
from billing.clock import ManualClock
from billing.config import Settings
from billing.domain.catalog import Plan
from billing.domain.dunning import RetryPolicy
from billing.domain.invoices import InvoiceStatus
from billing.domain.payments import PaymentStatus
from billing.domain.subscriptions import SubscriptionStatus
from billing.services.hooks import Hooks
from billing.store.database import normalize_url
from billing.store.tables import PaymentRow
from billing.testing import FakeGateway
from billing.testing.fake_gateway import Behavior
from tests.integration.conftest import SCL

JANUARY = datetime(2026, 1, 10, 12, tzinfo=SCL)
ORO = Plan.of(code="oro", name="Plan Oro", price="10000", currency="CLP")


class KilledBeforeSending(Hooks):
    """The worker dies once, right after committing attempt number ``at_call``."""

    def __init__(self, at_call: int) -> None:
        self.calls = 0
        self.at_call = at_call

    def attempt_written(self, payment_id: str) -> None:
        self.calls += 1
        if self.calls == self.at_call:
            raise RuntimeError("killed before sending")


def check_at(url: str, payment_id: str) -> datetime:
    database = create_engine(normalize_url(url))
    with database.connect() as connection:
        value = connection.execute(
            select(col(PaymentRow.check_at)).where(col(PaymentRow.id) == payment_id)
        ).scalar_one()
    database.dispose()
    return value  # type: ignore[no-any-return]


def test_a_resent_attempt_whose_answer_is_lost_is_checked_again_soon_not_a_day_later(
    database_url: str,
):
    clock = ManualClock(JANUARY)
    fake = FakeGateway()
    settings = Settings(threads=1)
    hooks = KilledBeforeSending(at_call=2)  # the first renewal's attempt, in catch-up billing
    with open_engine(
        database_url, clock=clock, gateways=[fake], settings=settings, hooks=hooks
    ) as engine:
        engine.create_plan(ORO)
        engine.create_customer(customer_id="c1", timezone="America/Santiago")
        engine.add_payment_method("c1", gateway="fake", token="tok_c1")
        subscription = engine.subscribe("c1", "oro")
        clock.set(JANUARY + timedelta(days=95))  # three renewals due at once: catch-up billing
        report = engine.run_due()
        assert report.failed == [subscription.id]  # the worker "died" before sending
        [_, renewal] = engine.invoices(subscription_id=subscription.id)
        [attempt] = engine.payments(invoice_id=renewal.id)
        assert attempt.status is PaymentStatus.CREATED
        fake.script("c1", Behavior.TIMEOUT)  # the resend takes the money, its answer is lost
        clock.advance(settings.unanswered_after)
        engine.reconcile()  # never received: sent again, with the same key
        assert fake.calls[attempt.idempotency_key] == 1
        [attempt] = engine.payments(invoice_id=renewal.id)
        assert attempt.status is PaymentStatus.UNKNOWN
        # sent a moment ago, not months ago (its billing instant): asked about again soon
        assert check_at(database_url, attempt.id) == clock.now() + settings.reconcile_after
        clock.advance(settings.reconcile_after)
        engine.reconcile()
        [attempt] = engine.payments(invoice_id=renewal.id)
        assert attempt.status is PaymentStatus.SUCCEEDED


def test_a_decline_learned_late_after_a_crash_runs_dunning_on_the_billing_schedule(
    database_url: str,
):
    """The first renewal's attempt is never sent (a crash) in catch-up billing; the resend, at
    its check, is declined. Dunning counts from the billing instant (bounded by what the
    subscription did since), not from the wall clock: the first retry, long due, goes at once."""
    clock = ManualClock(JANUARY)
    fake = FakeGateway()
    settings = Settings(threads=1)
    suave = Plan.of(
        code="suave", name="Suave", price="10000", currency="CLP",
        retry=RetryPolicy.of([1, 2], then="unpaid"),
    )  # fmt: skip
    with open_engine(
        database_url, clock=clock, gateways=[fake], settings=settings, hooks=KilledBeforeSending(2)
    ) as engine:
        engine.create_plan(suave)
        engine.create_customer(customer_id="c1", timezone="America/Santiago")
        engine.add_payment_method("c1", gateway="fake", token="tok_c1")
        subscription = engine.subscribe("c1", "suave")
        clock.set(JANUARY + timedelta(days=95))  # renewals of Feb, Mar and Apr 10 are due
        engine.run_due()  # killed before sending February's attempt
        # March's and April's renewals are charged first (due before the check), then February's
        # resend is declined, then its first retry
        fake.script(
            "c1", [Behavior.APPROVE, Behavior.APPROVE, Behavior.DECLINE_SOFT, Behavior.APPROVE]
        )
        clock.advance(settings.unanswered_after)
        engine.run_due()
        february = engine.invoices(subscription_id=subscription.id)[1]
        attempts = engine.payments(invoice_id=february.id)
        assert [a.status for a in attempts] == [PaymentStatus.FAILED, PaymentStatus.SUCCEEDED]
        assert engine.invoice(february.id).status is InvoiceStatus.PAID
        assert engine.subscription(subscription.id).status is SubscriptionStatus.ACTIVE
        report = engine.audit()
        assert report.balanced, "\n".join(map(str, report.findings))
