"""A live payment link whose invoice was settled another way is withdrawn at its gateway.

Before the engine withdrew such links, the customer could still pay them, and the engine turned
that money into credit as an overpayment. In today's engine an invoice with a live link is
settled another way when an earlier link of the same invoice, expired unpaid, is paid late (a
new card, credit or a cancellation leave the invoice open, and the link goes on collecting it);
the tests also void or pay an invoice directly in the store, as another settlement would.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import datetime, timedelta

import pytest

from billing import open_engine
from billing.clock import ManualClock
from billing.config import Settings
from billing.domain.catalog import Plan
from billing.domain.dunning import RetryPolicy
from billing.domain.errors import IllegalTransition, InvalidArgument
from billing.domain.invoices import InvoiceStatus
from billing.domain.money import Money
from billing.domain.payments import PaymentAttempt, PaymentStatus
from billing.engine import Engine
from billing.ports import Capability
from billing.services.hooks import Hooks
from billing.testing import Behavior, FakeGateway
from tests.integration.conftest import START, Billing
from tests.integration.test_money_rules import balanced

SETTINGS = Settings(threads=1)
LEASE = SETTINGS.unanswered_after
"""How long a worker's claim on a link lasts: a link it failed to withdraw is asked again after."""


def engine_on(url: str, clock: ManualClock, fake: FakeGateway) -> Engine:
    return open_engine(url, clock=clock, gateways=[fake], settings=SETTINGS)


@pytest.fixture
def links(database_url: str) -> Iterator[Billing]:
    clock = ManualClock(START)
    fake = FakeGateway(pending_for=timedelta(days=2))
    engine = engine_on(database_url, clock, fake)
    retry = RetryPolicy.of([3, 3], then="canceled")
    engine.create_plan(Plan.of(code="mes", name="Mes", price="10000", currency="CLP", retry=retry))
    yield Billing(engine=engine, clock=clock, fake=fake, url=database_url)
    engine.close()


def notify(links: Billing, reference: str, event: str) -> None:
    notification = links.fake.notification(reference, event)
    links.engine.receive_notification("fake", headers=notification.headers, body=notification.body)


def live_retry_link(links: Billing, *, then: Behavior) -> tuple[str, PaymentAttempt, str]:
    """A first link that expired unpaid, and the retry's link, live, behaving as ``then``; the
    clock stays at the instant the retry's link was sent. Returns the subscription, the live
    attempt and the expired link's reference."""
    links.customer("c1")
    links.fake.script("c1", [Behavior.LINK_EXPIRES, then])
    subscription = links.engine.subscribe("c1", "mes").id
    while len(links.engine.payments(subscription_id=subscription)) < 2:
        due = links.engine.next_run_at()
        assert due is not None
        assert due < START + timedelta(days=10)
        links.run_until(max(due, links.clock.now()))
    expired, live = links.engine.payments(subscription_id=subscription)
    assert expired.status is PaymentStatus.FAILED
    assert expired.reference is not None
    assert live.status is PaymentStatus.REQUIRES_ACTION
    assert live.reference is not None
    return subscription, live, expired.reference


def paid_by_the_expired_link(links: Billing, *, then: Behavior) -> tuple[str, PaymentAttempt]:
    """:func:`live_retry_link`, then the expired link is paid late and its notification pays the
    invoice: the retry's link is live on a paid invoice."""
    subscription, live, expired = live_retry_link(links, then=then)
    links.fake.pay_expired_link(expired, links.clock.now())
    notify(links, expired, "evt_late")
    [invoice] = links.engine.invoices(subscription_id=subscription)
    assert invoice.status is InvoiceStatus.PAID
    return subscription, live


def attempt(engine: Engine, payment_id: str) -> PaymentAttempt:
    [found] = [p for p in engine.payments() if p.id == payment_id]
    return found


def names(engine: Engine) -> list[str]:
    return [e.name for e in engine.events(limit=1000, pending_only=False)]


def test_a_live_link_whose_invoice_was_paid_late_by_an_older_link_is_withdrawn(links: Billing):
    subscription, live = paid_by_the_expired_link(links, then=Behavior.PAY_BY_LINK)
    assert live.reference is not None

    report = links.engine.reconcile()

    assert report.link_cancellations == 1
    withdrawn = attempt(links.engine, live.id)
    assert withdrawn.status is PaymentStatus.CANCELED
    assert withdrawn.is_settled()
    assert withdrawn.action_url is None
    assert links.fake.link_canceled(live.reference)
    [event] = [e for e in links.engine.events(limit=1000) if e.name == "payment.link_canceled"]
    assert event.payload["payment_id"] == live.id
    assert event.payload["invoice_status"] == "paid"
    assert event.payload["attempt"] == 2
    assert event.subscription_id == subscription
    with pytest.raises(InvalidArgument):
        links.fake.pay_link(live.reference, links.clock.now())

    links.run_until(links.clock.now() + timedelta(days=5))  # the link was due to be paid
    links.clock.advance(timedelta(days=1))
    assert links.engine.reconcile().link_cancellations == 0, "withdrawn once"

    assert len(links.fake.charges_taken("c1")) == 1, "the invoice was paid once"
    assert links.engine.credit_balance("c1", "CLP").amount == Money.of("0", "CLP")
    assert attempt(links.engine, live.id).status is PaymentStatus.CANCELED
    assert links.fake.link_cancellation_calls[live.reference] == 1
    assert names(links.engine).count("payment.link_canceled") == 1
    assert "payment.succeeded" not in [
        e.name for e in links.engine.events(limit=1000) if e.payload.get("payment_id") == live.id
    ]
    balanced(links.engine)


def test_a_late_payment_found_by_reconcile_withdraws_the_live_link_in_the_same_pass(
    links: Billing,
):
    subscription, live, expired = live_retry_link(links, then=Behavior.PAY_BY_LINK)
    links.fake.pay_expired_link(expired, links.clock.now())  # its notification is lost

    report = links.engine.reconcile()

    assert report.late_payment_checks == 1
    assert report.link_cancellations == 1
    [invoice] = links.engine.invoices(subscription_id=subscription)
    assert invoice.status is InvoiceStatus.PAID
    assert attempt(links.engine, live.id).status is PaymentStatus.CANCELED
    assert links.engine.credit_balance("c1", "CLP").amount == Money.of("0", "CLP")
    balanced(links.engine)


def test_a_link_the_customer_paid_first_is_recorded_as_paid_and_becomes_credit(links: Billing):
    subscription, live = paid_by_the_expired_link(links, then=Behavior.LINK_EXPIRES)
    assert live.reference is not None
    links.fake.pay_link(live.reference, links.clock.now())  # just before the engine asks

    report = links.engine.reconcile()

    assert report.checks == 0, "the link's own check is not due yet: withdrawing it finds out"
    assert report.link_cancellations == 1
    paid = attempt(links.engine, live.id)
    assert paid.status is PaymentStatus.SUCCEEDED
    assert links.engine.credit_balance("c1", "CLP").amount == Money.of("10000", "CLP")
    assert "payment.link_canceled" not in names(links.engine)
    assert len(links.fake.charges_taken("c1")) == 2
    assert not links.fake.link_canceled(live.reference)
    links.clock.advance(timedelta(days=1))
    assert links.engine.reconcile().link_cancellations == 0
    [invoice] = links.engine.invoices(subscription_id=subscription)
    assert invoice.status is InvoiceStatus.PAID
    balanced(links.engine)


def test_a_link_that_expired_meanwhile_is_recorded_expired(links: Billing):
    _, live = paid_by_the_expired_link(links, then=Behavior.LINK_EXPIRES)
    links.clock.advance(timedelta(days=2, seconds=1))  # the fake expired it; the engine has not

    links.engine.run_due()  # its checks find it expired first, or the withdrawal does
    links.engine.reconcile()

    expired = attempt(links.engine, live.id)
    assert expired.status is PaymentStatus.FAILED
    assert expired.may_be_paid_late()
    assert "payment.link_canceled" not in names(links.engine)
    balanced(links.engine)


def test_a_failed_withdrawal_writes_nothing_and_is_asked_again_later(links: Billing):
    _, live = paid_by_the_expired_link(links, then=Behavior.PAY_BY_LINK)
    assert live.reference is not None
    links.fake.lose_link_cancellation_answers(before_canceling=True)
    before = names(links.engine)

    report = links.engine.reconcile()

    assert report.link_cancellations == 1, "asked"
    assert attempt(links.engine, live.id).status is PaymentStatus.REQUIRES_ACTION
    assert names(links.engine) == before, "nothing written"
    assert not links.fake.link_canceled(live.reference)
    assert links.engine.reconcile().link_cancellations == 0, "not again before its claim lapses"

    links.clock.advance(LEASE)
    assert links.engine.reconcile().link_cancellations == 1
    assert attempt(links.engine, live.id).status is PaymentStatus.CANCELED
    assert links.fake.link_canceled(live.reference)
    assert links.fake.link_cancellation_calls[live.reference] == 2
    balanced(links.engine)


def test_a_lost_answer_of_a_withdrawal_leaves_the_link_unpayable_and_settles_it_once(
    links: Billing,
):
    _, live = paid_by_the_expired_link(links, then=Behavior.PAY_BY_LINK)
    assert live.reference is not None
    links.fake.lose_link_cancellation_answers()  # withdrawn at the gateway, answer lost

    links.engine.reconcile()
    assert links.fake.link_canceled(live.reference)
    assert attempt(links.engine, live.id).status is PaymentStatus.REQUIRES_ACTION

    links.clock.advance(LEASE)
    links.engine.reconcile()  # its check or a second withdrawal (idempotent) settles it
    links.run_until(links.clock.now() + timedelta(days=5))

    settled = attempt(links.engine, live.id)
    assert settled.status in (PaymentStatus.CANCELED, PaymentStatus.FAILED)
    events = links.engine.events(limit=1000)
    mine = [e.name for e in events if e.payload.get("payment_id") == live.id]
    assert sum(name in ("payment.link_canceled", "payment.failed") for name in mine) == 1
    assert len(links.fake.charges_taken("c1")) == 1
    assert links.engine.credit_balance("c1", "CLP").amount == Money.of("0", "CLP")
    balanced(links.engine)


def test_a_claim_whose_worker_died_lapses_and_the_link_is_withdrawn_then(links: Billing):
    _, live = paid_by_the_expired_link(links, then=Behavior.PAY_BY_LINK)
    now = links.clock.now()
    with links.engine.store.transaction() as tx:  # another worker claims it, then crashes
        taken = tx.claim_superseded_links(now=now, until=now + LEASE, gateways=["fake"], limit=10)
    assert taken == [live.id]

    assert links.engine.reconcile().link_cancellations == 0
    links.clock.advance(LEASE)
    assert links.engine.reconcile().link_cancellations == 1
    assert attempt(links.engine, live.id).status is PaymentStatus.CANCELED


def test_several_workers_withdraw_each_link_once(links: Billing):
    first = links.engine
    subscriptions = []
    for ref in ("c1", "c2", "c3"):
        first.create_customer(customer_id=ref, timezone="America/Santiago")
        first.add_payment_method(ref, gateway="fake", token=f"tok_{ref}")
        links.fake.script(ref, [Behavior.LINK_EXPIRES, Behavior.PAY_BY_LINK])
        subscriptions.append(first.subscribe(ref, "mes").id)
    while len(first.payments()) < 6:
        due = first.next_run_at()
        assert due is not None
        links.run_until(max(due, links.clock.now()))
    for ref in ("c1", "c2", "c3"):
        expired = first.payments(customer_id=ref)[0]
        assert expired.reference is not None
        links.fake.pay_expired_link(expired.reference, links.clock.now())
        notify(links, expired.reference, f"evt_{ref}")
    others = [engine_on(links.url, links.clock, links.fake) for _ in range(3)]
    try:
        barrier = threading.Barrier(len(others))
        reports: list[int] = []

        def work(engine: Engine) -> None:
            barrier.wait()
            reports.append(engine.reconcile().link_cancellations)

        threads = [threading.Thread(target=work, args=(engine,)) for engine in others]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        for engine in others:
            engine.close()

    assert sum(reports) == 3
    live = [p for p in first.payments() if p.number == 2]
    assert [p.status for p in live] == [PaymentStatus.CANCELED] * 3
    assert all(count == 1 for count in links.fake.link_cancellation_calls.values())
    assert names(first).count("payment.link_canceled") == 3
    balanced(first)


def test_a_link_of_a_voided_invoice_is_withdrawn_and_one_written_off_is_not(links: Billing):
    links.customer("c1")
    links.fake.script("c1", Behavior.PAY_BY_LINK)
    voided = links.engine.subscribe("c1", "mes").id
    links.customer("c2")
    links.fake.script("c2", Behavior.PAY_BY_LINK)
    written_off = links.engine.subscribe("c2", "mes").id
    now = links.clock.now()
    with links.engine.store.transaction() as tx:  # settled as another operation would
        [one] = tx.invoices(subscription_id=voided)
        tx.save_invoice(one.void(at=now)[0])
        [other] = tx.invoices(subscription_id=written_off)
        tx.save_invoice(other.mark_uncollectible(at=now)[0])

    assert links.engine.reconcile().link_cancellations == 1

    [canceled] = links.engine.payments(subscription_id=voided)
    assert canceled.status is PaymentStatus.CANCELED
    [event] = [e for e in links.engine.events(limit=1000) if e.name == "payment.link_canceled"]
    assert event.payload["invoice_status"] == "void"
    [live] = links.engine.payments(subscription_id=written_off)
    assert live.status is PaymentStatus.REQUIRES_ACTION, "a written-off invoice may still be paid"


@pytest.mark.parametrize("cancel", ["subscription", "credit"])
def test_a_link_whose_invoice_stays_open_stays_payable(links: Billing, cancel: str):
    links.customer("c1")
    links.fake.script("c1", Behavior.PAY_BY_LINK)
    subscription = links.engine.subscribe("c1", "mes").id
    if cancel == "subscription":
        links.engine.cancel(subscription, at_period_end=False)
    else:
        links.engine.grant_credit("c1", Money.of("10000", "CLP"))  # used by later invoices

    assert links.engine.reconcile().link_cancellations == 0
    links.run_until(START + timedelta(days=3))  # the customer pays the link

    [paid] = links.engine.payments(subscription_id=subscription)
    assert paid.status is PaymentStatus.SUCCEEDED
    [invoice, *_] = links.engine.invoices(subscription_id=subscription)
    assert invoice.status is InvoiceStatus.PAID
    assert "payment.link_canceled" not in names(links.engine)
    balanced(links.engine)


class NoWithdrawal(FakeGateway):
    """A link gateway that cannot withdraw links."""

    capabilities = FakeGateway.capabilities - {Capability.LINK_CANCELLATION}


def test_without_the_capability_a_paid_live_link_becomes_credit(database_url: str):
    clock = ManualClock(START)
    fake = NoWithdrawal(pending_for=timedelta(days=2))
    with engine_on(database_url, clock, fake) as engine:
        retry = RetryPolicy.of([3, 3], then="canceled")
        engine.create_plan(
            Plan.of(code="mes", name="Mes", price="10000", currency="CLP", retry=retry)
        )
        links = Billing(engine=engine, clock=clock, fake=fake, url=database_url)
        _, live = paid_by_the_expired_link(links, then=Behavior.PAY_BY_LINK)

        assert engine.reconcile().link_cancellations == 0
        links.run_until(clock.now() + timedelta(days=5))

        assert attempt(engine, live.id).status is PaymentStatus.SUCCEEDED
        assert engine.credit_balance("c1", "CLP").amount == Money.of("10000", "CLP")
        balanced(engine)


def test_only_a_live_link_can_be_canceled(links: Billing):
    links.customer("c1")
    subscription = links.engine.subscribe("c1", "mes").id
    [paid] = links.engine.payments(subscription_id=subscription)
    with pytest.raises(IllegalTransition):
        paid.cancel_link(at=datetime.now(START.tzinfo), invoice_status="paid")


class KilledBeforeTheRetry(Hooks):
    """The worker dies right after writing the second attempt, before sending it."""

    def attempt_written(self, payment_id: str) -> None:
        self.calls = getattr(self, "calls", 0) + 1
        if self.calls == 2:
            raise RuntimeError("killed before sending")


def test_an_attempt_never_sent_is_not_sent_once_its_invoice_was_paid_another_way(
    database_url: str,
):
    clock = ManualClock(START)
    fake = FakeGateway(pending_for=timedelta(days=2))
    retry = RetryPolicy.of([3, 3], then="canceled")
    with open_engine(
        database_url, clock=clock, gateways=[fake], settings=SETTINGS, hooks=KilledBeforeTheRetry()
    ) as engine:
        engine.create_plan(
            Plan.of(code="mes", name="Mes", price="10000", currency="CLP", retry=retry)
        )
        links = Billing(engine=engine, clock=clock, fake=fake, url=database_url)
        links.customer("c1")
        fake.script("c1", [Behavior.LINK_EXPIRES, Behavior.PAY_BY_LINK])
        subscription = engine.subscribe("c1", "mes").id
        while len(engine.payments(subscription_id=subscription)) < 2:
            due = engine.next_run_at()
            assert due is not None
            links.run_until(max(due, clock.now()))
        expired, unsent = engine.payments(subscription_id=subscription)
        assert unsent.status is PaymentStatus.CREATED  # written, never sent
        assert expired.reference is not None
        fake.pay_expired_link(expired.reference, clock.now())
        notify(links, expired.reference, "evt_late")
        [invoice] = engine.invoices(subscription_id=subscription)
        assert invoice.status is InvoiceStatus.PAID

        clock.advance(LEASE + timedelta(minutes=1))
        engine.reconcile()

        never = attempt(engine, unsent.id)
        assert never.status is PaymentStatus.FAILED
        assert never.code == "invoice_settled"
        assert fake.calls[unsent.idempotency_key] == 0, "a settled invoice is never charged again"
        assert len(fake.charges_taken("c1")) == 1
        assert engine.credit_balance("c1", "CLP").amount == Money.of("0", "CLP")
        balanced(engine)
