"""A refund of money that had become credit takes that credit back (never both).

An invoice paid by a retry is paid again when the customer pays its first, expired link late:
those second 15000 CLP become the customer's credit (an overpayment). Refunding them used to
give the money back and leave the credit, which then paid the next invoice: money created.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import pytest
from sqlalchemy import delete, update

from billing import open_engine
from billing.clock import ManualClock
from billing.config import Settings
from billing.domain.catalog import Plan
from billing.domain.dunning import RetryPolicy
from billing.domain.errors import InvalidArgument
from billing.domain.money import Money
from billing.domain.payments import PaymentAttempt, PaymentStatus, RefundStatus
from billing.ports import RefundRequest, RefundResult
from billing.store.tables import metadata
from billing.testing import Behavior, FakeGateway
from tests.integration.conftest import START, Billing
from tests.integration.test_money_rules import balanced

CLP = "CLP"


class Refusing(FakeGateway):
    """The fake, refusing every refund."""

    def refund(self, request: RefundRequest) -> RefundResult:
        return RefundResult(status=RefundStatus.FAILED, code="refund_refused")


def _billing(url: str, fake: FakeGateway) -> Billing:
    clock = ManualClock(START)
    engine = open_engine(url, clock=clock, gateways=[fake], settings=Settings(threads=1))
    retry = RetryPolicy.of([1], then="unpaid")
    engine.create_plan(Plan.of(code="oro", name="Oro", price="15000", currency=CLP, retry=retry))
    return Billing(engine=engine, clock=clock, fake=fake, url=url)


@pytest.fixture
def overpaid(request: pytest.FixtureRequest, database_url: str) -> Iterator[Billing]:
    """c1's first invoice paid by the retry on a card, then again by its first link, paid late:
    15000 CLP of c1's credit come from INV-000001. On a gateway that ``refuses`` refunds if the
    test asks for one."""
    fake = Refusing if getattr(request, "param", "refunds") == "refuses" else FakeGateway
    billing = _billing(database_url, fake(pending_for=timedelta(days=1)))
    engine = billing.engine
    billing.customer("c1")
    billing.fake.script("c1", [Behavior.LINK_EXPIRES, Behavior.APPROVE])
    subscription = engine.subscribe("c1", "oro").id
    while len(engine.payments(subscription_id=subscription)) < 2:
        due = engine.next_run_at()
        assert due is not None
        billing.run_until(max(due, billing.clock.now()))
    first = engine.payments(subscription_id=subscription)[0]
    assert first.reference is not None
    billing.fake.pay_expired_link(first.reference, billing.clock.now())
    notification = billing.fake.notification(first.reference, "evt_late")
    engine.receive_notification("fake", headers=notification.headers, body=notification.body)
    assert engine.credit_balance("c1", CLP).amount == Money.of(15000, CLP)
    yield billing
    engine.close()


def _succeeded(billing: Billing) -> list[PaymentAttempt]:
    return [p for p in billing.engine.payments() if p.status is PaymentStatus.SUCCEEDED]


@pytest.mark.parametrize("overpaid", ["refunds", "refuses"], indirect=True)
def test_refunding_money_that_became_credit_takes_the_credit_back(overpaid: Billing):
    engine = overpaid.engine
    late, paying = sorted(_succeeded(overpaid), key=lambda p: p.number)
    refused = isinstance(overpaid.fake, Refusing)

    refund = engine.refund(late.id, amount=Money.of(6000, CLP))

    left = Money.of(15000 if refused else 9000, CLP)
    assert engine.credit_balance("c1", CLP).amount == left
    names = [e.name for e in engine.events(limit=1000)]
    assert "credit.withdrawn" in names
    assert refund.status is (RefundStatus.FAILED if refused else RefundStatus.SUCCEEDED)
    balanced(engine)
    if refused:  # the refused refund's credit came back, once
        return
    engine.refund(paying.id)  # the rest of the overpayment first, then INV-000001's own money
    assert engine.credit_balance("c1", CLP).amount == Money.zero(CLP)
    balanced(engine)
    overpaid.run_until(START + timedelta(days=40))  # the renewal finds no credit to use
    renewal = engine.invoices(customer_id="c1")[-1]
    assert renewal.number == "INV-000002"
    assert renewal.credit_applied == Money.zero(CLP)
    balanced(engine)


def test_a_refund_of_credit_the_customer_spent_is_refused(overpaid: Billing):
    engine = overpaid.engine
    overpaid.run_until(START + timedelta(days=40))  # INV-000002 spends the 15000 of credit
    assert engine.credit_balance("c1", CLP).amount == Money.zero(CLP)
    late = sorted(_succeeded(overpaid), key=lambda p: p.number)[1]

    with pytest.raises(InvalidArgument, match="must be at most 0 CLP") as raised:
        engine.refund(late.id)
    assert raised.value.field == "amount"
    assert engine.refunds(late.id) == []
    balanced(engine)


def test_the_audit_finds_money_both_refunded_and_kept_as_credit(overpaid: Billing):
    engine = overpaid.engine
    late = sorted(_succeeded(overpaid), key=lambda p: p.number)[1]
    engine.refund(late.id)
    balanced(engine)
    events, balances = metadata.tables["events"], metadata.tables["credit_balances"]
    with engine.store.engine.begin() as connection:  # as the engine did before this rule
        connection.execute(delete(events).where(events.c.name == "credit.withdrawn"))
        connection.execute(update(balances).values(amount_minor=15000))
    findings = {(f.rule, f.subject) for f in engine.audit().findings}
    assert ("refunds", "INV-000001") in findings


def test_an_invoice_refunded_in_full_gives_back_its_credit_once_whatever_is_paid_after(
    database_url: str,
):
    """INV-000001 used 5000 CLP of credit and was paid by its retry; refunded in full, its
    credit came back. Then its first link, expired, was paid late: 10000 CLP of overpayment,
    credit too. Refunding that gives back no credit a second time, and the audit agrees at
    every step (it used to judge "in full" against every payment, the late one included)."""
    billing = _billing(database_url, FakeGateway())
    engine = billing.engine
    billing.customer("c1")
    engine.grant_credit("c1", Money.of(5000, CLP))
    billing.fake.script("c1", [Behavior.LINK_EXPIRES, Behavior.APPROVE])
    subscription = engine.subscribe("c1", "oro").id
    while engine.invoices(customer_id="c1")[0].status.value != "paid":
        billing.run_until(max(engine.next_run_at() or START, billing.clock.now()))
    link, paying = sorted(engine.payments(subscription_id=subscription), key=lambda p: p.number)

    engine.refund(paying.id)
    assert engine.credit_balance("c1", CLP).amount == Money.of(5000, CLP)
    balanced(engine)
    assert link.reference is not None
    billing.fake.pay_expired_link(link.reference, billing.clock.now())
    notification = billing.fake.notification(link.reference, "evt_late")
    engine.receive_notification("fake", headers=notification.headers, body=notification.body)
    assert engine.credit_balance("c1", CLP).amount == Money.of(15000, CLP)
    balanced(engine)
    engine.refund(link.id)  # the overpayment: its credit is taken back, none is given
    assert engine.credit_balance("c1", CLP).amount == Money.of(5000, CLP)
    balanced(engine)
    engine.close()
