"""A payment link that expired unpaid and was paid after all (a transfer started in time and
confirmed after the expiry) is still the customer's money: it pays the invoice if it is still
open, and becomes the customer's credit if the invoice was settled another way."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import pytest

from billing import open_engine
from billing.clock import ManualClock
from billing.config import Settings
from billing.domain.catalog import Plan
from billing.domain.dunning import RetryPolicy
from billing.domain.errors import InvalidArgument
from billing.domain.invoices import InvoiceStatus
from billing.domain.money import Money
from billing.domain.payments import ErrorCode, PaymentStatus
from billing.domain.subscriptions import SubscriptionStatus
from billing.services.notifications import NotificationStatus
from billing.testing import Behavior, FakeGateway
from tests.integration.conftest import START, Billing
from tests.integration.test_money_rules import balanced


def notify(billing: Billing, reference: str, event: str):
    notification = billing.fake.notification(reference, event)
    return billing.engine.receive_notification(
        "fake", headers=notification.headers, body=notification.body
    )


@pytest.fixture
def links(database_url: str) -> Iterator[Billing]:
    clock = ManualClock(START)
    fake = FakeGateway(pending_for=timedelta(days=2))
    engine = open_engine(database_url, clock=clock, gateways=[fake], settings=Settings(threads=1))
    retry = RetryPolicy.of([3, 3], then="canceled")
    engine.create_plan(Plan.of(code="mes", name="Mes", price="10000", currency="CLP", retry=retry))
    yield Billing(engine=engine, clock=clock, fake=fake, url=database_url)
    engine.close()


def expired_first_link(links: Billing, *, then: Behavior) -> tuple[str, str]:
    """Subscribe with a link that expires unpaid; the retry's link behaves as ``then``.
    Returns the subscription and the expired attempt's gateway reference."""
    links.customer("c1")
    links.fake.script("c1", [Behavior.LINK_EXPIRES, then])
    subscription = links.engine.subscribe("c1", "mes")
    links.run_until(START + timedelta(days=3, hours=12))  # checked: expired (on day 2 or 3)
    [expired] = links.engine.payments(subscription_id=subscription.id)
    assert expired.status is PaymentStatus.FAILED
    assert expired.error is ErrorCode.PAYER_ABANDONED
    assert expired.reference is not None
    return subscription.id, expired.reference


def test_an_expired_link_paid_late_pays_the_invoice_still_open(links: Billing):
    subscription_id, reference = expired_first_link(links, then=Behavior.LINK_EXPIRES)
    links.fake.pay_expired_link(reference, links.clock.now())

    receipt = notify(links, reference, "evt_late")

    assert receipt.status is NotificationStatus.PROCESSED
    assert receipt.payment_status is PaymentStatus.SUCCEEDED
    [invoice] = links.engine.invoices(subscription_id=subscription_id)
    assert invoice.status is InvoiceStatus.PAID
    assert links.engine.subscription(subscription_id).status is SubscriptionStatus.ACTIVE
    names = [e.name for e in links.engine.events(limit=100)]
    assert names.count("payment.succeeded") == 1
    assert notify(links, reference, "evt_late").status is NotificationStatus.DUPLICATE
    links.run_until(START + timedelta(days=15))  # no retry of a paid invoice
    assert len(links.engine.payments(subscription_id=subscription_id)) == 1
    assert links.engine.credit_balance("c1", "CLP").amount == Money.of("0", "CLP")
    balanced(links.engine)


def test_an_expired_link_paid_late_after_the_retry_paid_becomes_credit(links: Billing):
    subscription_id, reference = expired_first_link(links, then=Behavior.APPROVE)
    links.run_until(START + timedelta(days=8))  # the retry is charged and paid
    [invoice] = links.engine.invoices(subscription_id=subscription_id)
    assert invoice.status is InvoiceStatus.PAID
    links.fake.pay_expired_link(reference, links.clock.now())

    receipt = notify(links, reference, "evt_late")

    assert receipt.payment_status is PaymentStatus.SUCCEEDED
    assert links.engine.credit_balance("c1", "CLP").amount == Money.of("10000", "CLP")
    assert len(links.fake.charges_taken("c1")) == 2
    balanced(links.engine)


def test_a_notification_about_an_expired_link_nobody_paid_changes_nothing(links: Billing):
    subscription_id, reference = expired_first_link(links, then=Behavior.LINK_EXPIRES)

    receipt = notify(links, reference, "evt_noise")

    assert receipt.status is NotificationStatus.PROCESSED
    assert receipt.payment_status is PaymentStatus.FAILED
    [invoice] = links.engine.invoices(subscription_id=subscription_id)
    assert invoice.status is InvoiceStatus.OPEN
    balanced(links.engine)


def test_only_an_expired_link_can_be_paid_late_at_the_fake(links: Billing):
    links.customer("c1")
    links.fake.script("c1", Behavior.DECLINE_SOFT)
    links.engine.subscribe("c1", "mes")
    [declined] = links.engine.payments(customer_id="c1")
    assert declined.reference is not None
    with pytest.raises(InvalidArgument, match="must be a payment link that expired"):
        links.fake.pay_expired_link(declined.reference, links.clock.now())


def test_an_expired_link_paid_late_whose_notification_never_came_is_found_by_reconcile(
    links: Billing,
):
    subscription_id, reference = expired_first_link(links, then=Behavior.LINK_EXPIRES)
    assert links.engine.reconcile().late_payment_checks == 1  # asked: not paid
    links.fake.pay_expired_link(reference, links.clock.now())

    assert links.engine.reconcile().late_payment_checks == 0, "not again before its back-off"
    links.clock.advance(timedelta(days=1))
    report = links.engine.reconcile()

    assert report.late_payment_checks == 1
    [invoice] = links.engine.invoices(subscription_id=subscription_id)
    assert invoice.status is InvoiceStatus.PAID
    [paid, *retries] = links.engine.payments(subscription_id=subscription_id)
    assert paid.status is PaymentStatus.SUCCEEDED
    assert all(retry.status is not PaymentStatus.SUCCEEDED for retry in retries)
    names = [e.name for e in links.engine.events(limit=100)]
    assert names.count("payment.succeeded") == 1
    links.clock.advance(timedelta(days=2))
    assert links.engine.reconcile().late_payment_checks == 0, "a paid link is not asked again"
    balanced(links.engine)


def test_expired_links_are_asked_about_only_for_the_configured_days(database_url: str):
    clock = ManualClock(START)
    fake = FakeGateway(pending_for=timedelta(days=2))
    settings = Settings(threads=1, late_payment_days=5)
    with open_engine(database_url, clock=clock, gateways=[fake], settings=settings) as engine:
        links = Billing(engine=engine, clock=clock, fake=fake, url=database_url)
        retry = RetryPolicy.of([30], then="canceled")
        engine.create_plan(
            Plan.of(code="mes", name="Mes", price="10000", currency="CLP", retry=retry)
        )
        expired_first_link(links, then=Behavior.LINK_EXPIRES)
        [expired] = engine.payments(customer_id="c1")
        assert expired.updated_at is not None
        checks = []
        while clock.now() < expired.updated_at + timedelta(days=7):  # a day at a time
            clock.advance(timedelta(days=1))
            if engine.reconcile().late_payment_checks:
                checks.append(clock.now() - expired.updated_at)
        assert len(checks) >= 3, checks
        assert max(checks) <= timedelta(days=5), "never past the configured days"
        balanced(engine)


def test_a_late_payment_that_reactivates_a_subscription_bills_the_rest_of_its_period_at_once(
    database_url: str,
):
    """An unpaid subscription whose expired link is paid late, after its period: the invoice
    is paid, the subscription active again, and the rest of the current period is invoiced and
    charged as the notification is processed, not left due for the next call to find (a plan
    change refused then would have billed it, and so written, though it failed)."""
    clock = ManualClock(START)
    fake = FakeGateway(pending_for=timedelta(days=2))
    engine = open_engine(database_url, clock=clock, gateways=[fake], settings=Settings(threads=1))
    retry = RetryPolicy.of([], then="unpaid")
    engine.create_plan(Plan.of(code="mes", name="Mes", price="10000", currency="CLP", retry=retry))
    billing = Billing(engine=engine, clock=clock, fake=fake, url=database_url)
    billing.customer("c1")
    fake.script("c1", [Behavior.LINK_EXPIRES, Behavior.APPROVE])
    subscription = engine.subscribe("c1", "mes").id
    billing.run_until(START + timedelta(days=40))
    assert engine.subscription(subscription).status is SubscriptionStatus.UNPAID
    [expired] = engine.payments(subscription_id=subscription)
    assert expired.reference is not None
    fake.pay_expired_link(expired.reference, clock.now())

    notify(billing, expired.reference, "evt_late")

    assert engine.subscription(subscription).status is SubscriptionStatus.ACTIVE
    reasons = [(i.reason.value, i.status) for i in engine.invoices(subscription_id=subscription)]
    assert reasons == [("subscription_start", InvoiceStatus.PAID), ("resume", InvoiceStatus.PAID)]
    due = engine.next_run_at()
    assert due is None or due > clock.now()
    balanced(engine)
    engine.close()
