"""The conformance suite, through the engine: every gateway adapter bills the same way.

Parametrised over every installed gateway simulation (:mod:`billing.testing.simulation`): the
real adapter talking to its gateway's fake server, in process; two tests repeat the main flows
(of cards, of links) over real sockets on loopback. A fifth gateway passes this file unchanged
once its adapter ships a simulation. What gateways legitimately differ in is read from their
declared capabilities, never from their names:

* gateways that charge a stored card without the customer
  (:attr:`~billing.ports.Capability.STORED_CARD_CHARGES`: QVO, Openpay) approve, soft- and
  hard-decline cards;
* gateways that collect through payment links (:attr:`~billing.ports.Capability.PAY_BY_LINK`:
  Khipu, Payvalida) answer each charge with a link the customer pays later; the gateway notifies,
  and the test hands the notification to the engine as the host's webhook endpoint would. An
  expired link is a soft decline, so dunning sends a new link per retry;
* refunds, partial refunds and notifications are used where declared, and refused where not.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from itertools import pairwise
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from billing.bootstrap import open_engine
from billing.clock import ManualClock
from billing.config import Settings
from billing.domain.catalog import Plan
from billing.domain.dunning import RetryPolicy
from billing.domain.errors import GatewayAuthenticationFailed, InvalidArgument
from billing.domain.invoices import InvoiceStatus
from billing.domain.money import Money
from billing.domain.payments import (
    DeclineKind,
    ErrorCode,
    PaymentAttempt,
    PaymentStatus,
    RefundStatus,
)
from billing.domain.subscriptions import SubscriptionStatus
from billing.engine import Engine
from billing.ports import Capability, Notification, SyncRequest
from billing.scenarios.runner import give_card
from billing.services.notifications import NotificationReceipt, NotificationStatus
from billing.testing import Behavior, simulation
from billing.testing.simulation import GatewaySimulation, LinkSimulation, link_simulation

ADAPTERS = [name for name in simulation.names() if name != "fake"]
START = datetime(2026, 3, 2, 12, tzinfo=ZoneInfo("America/Santiago"))
LATER = timedelta(hours=2)
"""Long enough for an unanswered attempt to be due for reconciliation."""
PRICES = {"CLP": "15000", "MXN": "499.90", "COP": "39900"}


def _declared(name: str) -> frozenset[Capability]:
    """The capabilities the adapter declares (read once, at collection, from an in-process
    simulation)."""
    sim = simulation.simulation(name, loopback=False)
    try:
        return frozenset(sim.gateway.capabilities)
    finally:
        sim.close()


CAPABILITIES = {name: _declared(name) for name in ADAPTERS}
CARDS = [name for name in ADAPTERS if Capability.STORED_CARD_CHARGES in CAPABILITIES[name]]
"""Gateways that charge a stored card without the customer."""
LINKS = [name for name in ADAPTERS if Capability.PAY_BY_LINK in CAPABILITIES[name]]
"""Gateways whose every charge is a link the customer pays later."""


def test_every_adapter_ships_a_simulation():
    assert {"qvo", "openpay", "khipu", "payvalida"} <= set(ADAPTERS)
    assert set(CARDS) | set(LINKS) == set(ADAPTERS), "each gateway charges cards or sends links"
    assert not set(CARDS) & set(LINKS)
    assert {"qvo", "openpay"} <= set(CARDS)
    assert {"khipu", "payvalida"} <= set(LINKS)


@dataclass
class World:
    sim: GatewaySimulation
    engine: Engine
    clock: ManualClock
    url: str

    @property
    def price(self) -> Money:
        return Money.of(PRICES[self.sim.currency], self.sim.currency)

    @property
    def payers(self) -> LinkSimulation:
        """The simulation's payer levers (pay-by-link gateways only)."""
        links = link_simulation(self.sim)
        assert links is not None, f"{self.sim.gateway.name} sends no payment links"
        return links

    def capable(self, capability: Capability) -> bool:
        return capability in self.sim.gateway.capabilities

    def customer(self, ref: str, behavior: Behavior = Behavior.APPROVE) -> str:
        self.engine.create_customer(
            customer_id=ref,
            timezone="America/Santiago",
            metadata={"name": f"Cliente {ref}", "email": f"{ref}@example.com"},
        )
        give_card(self.engine, self.sim, ref, behavior)
        return ref

    def subscribe(self, ref: str, behavior: Behavior = Behavior.APPROVE) -> str:
        self.customer(ref, behavior)
        return self.engine.subscribe(ref, "mensual").id

    def paid_subscription(self, ref: str) -> str:
        """A subscription whose first invoice is paid: at once by a card, or by a link the
        customer pays at once, once the gateway's notification reached the engine."""
        subscription = self.subscribe(ref)
        self.deliver()
        [invoice] = self.engine.invoices(subscription_id=subscription)
        assert invoice.status is InvoiceStatus.PAID
        return subscription

    def deliver(self, notifications: list[Notification] | None = None) -> list[NotificationReceipt]:
        """Hand the engine the notifications the gateway sent (pay-by-link gateways), as the
        host's webhook endpoint would; nothing for card gateways."""
        if notifications is None:
            links = link_simulation(self.sim)
            notifications = [] if links is None else links.take_notifications()
        return [
            self.engine.receive_notification(
                self.sim.gateway.name, headers=notification.headers, body=notification.body
            )
            for notification in notifications
        ]

    def payments(self, subscription_id: str) -> list[PaymentAttempt]:
        return self.engine.payments(subscription_id=subscription_id)

    def status(self, subscription_id: str) -> SubscriptionStatus:
        return self.engine.subscription(subscription_id).status

    def run_until(self, when: datetime, *, check: Callable[[], None] | None = None) -> None:
        """Bill everything due up to ``when``, delivering the gateway's notifications after
        each step, then ``check``."""
        while (due := self.engine.next_run_at()) is not None and due <= when:
            self.clock.set(max(due, self.clock.now()))
            self.engine.run_due()
            self.deliver()
            if check is not None:
                check()
        self.clock.set(when)
        self.engine.run_due()
        self.deliver()

    def step_until(self, done: Callable[[], bool], limit: datetime) -> None:
        """Bill from one due instant to the next (delivering notifications) until ``done``."""
        while not done():
            due = self.engine.next_run_at()
            assert due is not None, "nothing left to bill"
            assert due <= limit, f"not done by {limit}"
            self.clock.set(max(due, self.clock.now()))
            self.engine.run_due()
            self.deliver()

    def event_names(self) -> list[str]:
        return [event.name for event in self.engine.events(limit=1000, pending_only=False)]

    def gateway_says(self, attempt: PaymentAttempt) -> PaymentStatus | None:
        """What the gateway itself answers about an attempt now."""
        result = self.sim.gateway.sync(
            SyncRequest(
                idempotency_key=attempt.idempotency_key,
                reference=attempt.reference,
                amount=attempt.amount,
                customer_id=attempt.customer_id or "",
                payment_method=self._method(attempt.customer_id or ""),
                at=self.clock.now(),
                first_sent_at=attempt.created_at,
            )
        )
        return None if result is None else result.status

    def _method(self, customer_id: str) -> str | None:
        methods = self.engine.payment_methods(customer_id)
        return methods[-1].token if methods else None


def _world(name: str, directory: Path, *, loopback: bool) -> Iterator[World]:
    clock = ManualClock(START)
    sim = simulation.simulation(name, loopback=loopback, clock=clock.now)
    url = f"sqlite:///{directory / 'billing.db'}"
    engine = open_engine(
        url, clock=clock, gateways=[sim.gateway], settings=Settings(threads=1), migrate=True
    )
    plan = Plan.of(
        code="mensual",
        name="Plan Mensual",
        price=PRICES[sim.currency],
        currency=sim.currency,
        retry=RetryPolicy.of([1, 3], then="unpaid"),
    )
    engine.create_plan(plan)
    try:
        yield World(sim, engine, clock, url)
    finally:
        engine.close()
        sim.close()


@pytest.fixture(params=ADAPTERS)
def world(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[World]:
    yield from _world(request.param, tmp_path, loopback=False)


@pytest.fixture(params=CARDS)
def cards(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[World]:
    """A gateway that charges stored cards."""
    yield from _world(request.param, tmp_path, loopback=False)


@pytest.fixture(params=LINKS)
def links(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[World]:
    """A gateway that collects through payment links."""
    yield from _world(request.param, tmp_path, loopback=False)


# -- charges: stored cards ------------------------------------------------------------------


def test_an_approved_card_pays_the_first_invoice(cards: World):
    subscription = cards.subscribe("c1")
    [payment] = cards.payments(subscription)
    assert payment.status is PaymentStatus.SUCCEEDED
    assert payment.reference, "the gateway's charge id is kept for lookups and refunds"
    assert payment.amount == cards.price
    [invoice] = cards.engine.invoices(subscription_id=subscription)
    assert invoice.status is InvoiceStatus.PAID
    assert cards.status(subscription) is SubscriptionStatus.ACTIVE
    assert cards.sim.charges_taken("c1") == 1


def test_a_soft_decline_is_retried_and_a_later_success_recovers(cards: World):
    subscription = cards.subscribe("c1", Behavior.DECLINE_SOFT)
    [first] = cards.payments(subscription)
    assert (first.status, first.decline) == (PaymentStatus.FAILED, DeclineKind.SOFT)
    assert first.error is not None, "a normalised error"
    assert first.code, "and the gateway's own code"
    assert cards.status(subscription) is SubscriptionStatus.PAST_DUE
    cards.sim.script("c1", Behavior.APPROVE)
    cards.run_until(START + timedelta(days=1, hours=1))
    assert [p.status for p in cards.payments(subscription)] == [
        PaymentStatus.FAILED,
        PaymentStatus.SUCCEEDED,
    ]
    assert cards.status(subscription) is SubscriptionStatus.ACTIVE
    assert cards.sim.charges_taken("c1") == 1


def test_a_hard_decline_stops_dunning(cards: World):
    subscription = cards.subscribe("c1", Behavior.DECLINE_HARD)
    [attempt] = cards.payments(subscription)
    assert (attempt.status, attempt.decline) == (PaymentStatus.FAILED, DeclineKind.HARD)
    assert cards.status(subscription) is SubscriptionStatus.UNPAID
    cards.run_until(START + timedelta(days=10))
    assert len(cards.payments(subscription)) == 1, "no retry after a hard decline"
    assert cards.sim.charges_taken("c1") == 0


def test_a_new_card_on_an_unpaid_subscription_pays_it_and_reactivates_it(cards: World):
    subscription = cards.subscribe("c1", Behavior.DECLINE_HARD)
    assert cards.status(subscription) is SubscriptionStatus.UNPAID
    give_card(cards.engine, cards.sim, "c1", Behavior.APPROVE, replace=True)
    assert cards.status(subscription) is SubscriptionStatus.ACTIVE
    assert [p.status for p in cards.payments(subscription)] == [
        PaymentStatus.FAILED,
        PaymentStatus.SUCCEEDED,
    ]
    assert cards.sim.charges_taken("c1") == 1


# -- charges: payment links -----------------------------------------------------------------


def test_a_link_the_payer_pays_pays_the_invoice_once_the_gateway_notifies(links: World):
    subscription = links.subscribe("c1", Behavior.NEVER_PAY)  # the payer acts below
    [link] = links.payments(subscription)
    assert link.status is PaymentStatus.REQUIRES_ACTION
    assert link.action_url is not None
    assert link.action_url.startswith(("https://", "http://"))
    assert link.reference, "the gateway's id for the payment, for lookups and notifications"
    assert link.amount == links.price
    [invoice] = links.engine.invoices(subscription_id=subscription)
    assert invoice.status is InvoiceStatus.OPEN
    assert links.status(subscription) is SubscriptionStatus.ACTIVE, "billed in advance"
    assert links.payers.take_notifications() == [], "nothing to tell before the payer pays"

    links.payers.pay_link(link.reference)
    [receipt] = links.deliver()

    assert receipt.status is NotificationStatus.PROCESSED
    assert (receipt.payment_id, receipt.payment_status) == (link.id, PaymentStatus.SUCCEEDED)
    [paid] = links.payments(subscription)
    assert (paid.id, paid.status, paid.reference) == (
        link.id,
        PaymentStatus.SUCCEEDED,
        link.reference,
    )
    [invoice] = links.engine.invoices(subscription_id=subscription)
    assert invoice.status is InvoiceStatus.PAID
    assert links.sim.charges_taken("c1") == 1
    assert links.event_names().count("payment.succeeded") == 1


def test_an_unpaid_link_expires_into_dunning_with_one_new_link_per_retry(links: World):
    subscription = links.subscribe("c1", Behavior.NEVER_PAY)
    [invoice] = links.engine.invoices(subscription_id=subscription)

    sent: list[int] = [1]

    def one_live_link() -> None:
        attempts = links.engine.payments(invoice_id=invoice.id)
        unsettled = [a for a in attempts if not a.is_settled()]
        assert len(unsettled) <= 1, "the engine never has two attempts out for one invoice"
        if len(attempts) > sent[-1]:  # a new link was just sent: is any earlier one payable?
            sent.append(len(attempts))
            live = [a for a in attempts if links.gateway_says(a) is PaymentStatus.REQUIRES_ACTION]
            assert len(live) == 1, "the gateway has the new link, and no other payable one"

    links.run_until(START + timedelta(days=40), check=one_live_link)
    assert sent == [1, 2, 3], "each retry was checked as it was sent"

    attempts = links.payments(subscription)
    assert [(a.status, a.decline, a.error) for a in attempts] == [
        (PaymentStatus.FAILED, DeclineKind.SOFT, ErrorCode.PAYER_ABANDONED)
    ] * 3, "the first link and one per retry of the policy (1 and 3 days), each expired"
    assert len({a.reference for a in attempts}) == 3, "a new link each time"
    for earlier, retry in pairwise(attempts):
        assert earlier.updated_at is not None
        assert retry.created_at > earlier.updated_at, "a retry's link only once the last expired"
    assert links.status(subscription) is SubscriptionStatus.UNPAID
    assert links.sim.charges_taken("c1") == 0

    give_card(links.engine, links.sim, "c1", Behavior.APPROVE, replace=True)  # pays from now on
    links.deliver()
    [paid, resumed] = links.engine.invoices(subscription_id=subscription)
    assert paid.status is InvoiceStatus.PAID
    assert links.status(subscription) is SubscriptionStatus.ACTIVE
    # reactivated by that payment, the rest of its period is billed at once, with a new link,
    # which the customer pays at once too
    assert resumed.reason.value == "resume"
    links.deliver()
    statuses = {a.invoice_id: a.status for a in links.payments(subscription)[3:]}
    assert statuses == {paid.id: PaymentStatus.SUCCEEDED, resumed.id: PaymentStatus.SUCCEEDED}
    assert links.engine.invoice(resumed.id).status is InvoiceStatus.PAID
    assert links.sim.charges_taken("c1") == 2


def test_a_link_paid_after_it_expired_is_recorded_late_and_pays_the_open_invoice(links: World):
    subscription = links.subscribe("c1", Behavior.NEVER_PAY)
    links.step_until(
        lambda: links.payments(subscription)[0].is_settled(), START + timedelta(days=10)
    )
    [expired] = links.payments(subscription)
    assert expired.may_be_paid_late(), "expired unpaid: a soft decline that may still be paid"
    assert links.status(subscription) is SubscriptionStatus.PAST_DUE
    assert expired.reference is not None

    links.payers.pay_link(expired.reference, late=True)  # before the retry (a day later)
    receipts = links.deliver()

    assert [r.payment_status for r in receipts if r.payment_id == expired.id][-1:] == [
        PaymentStatus.SUCCEEDED
    ], "recorded from the notification: the engine no longer checks a failed attempt"
    [invoice] = links.engine.invoices(subscription_id=subscription)
    assert invoice.status is InvoiceStatus.PAID
    assert links.status(subscription) is SubscriptionStatus.ACTIVE
    links.run_until(links.clock.now() + timedelta(days=5))
    [paid] = links.payments(subscription)
    assert (paid.id, paid.status) == (expired.id, PaymentStatus.SUCCEEDED), "no retry, no link"
    assert links.engine.credit_balance("c1", links.sim.currency).amount.is_zero()
    assert links.sim.charges_taken("c1") == 1
    assert links.engine.audit().balanced


def test_a_live_link_of_an_invoice_paid_another_way_is_withdrawn(links: World):
    """An expired link paid late pays the invoice while the retry's link is live: the engine
    withdraws the live one where the gateway can, so the customer cannot pay twice."""
    subscription = links.subscribe("c1", Behavior.NEVER_PAY)
    links.step_until(lambda: len(links.payments(subscription)) == 2, START + timedelta(days=20))
    expired, live = links.payments(subscription)
    assert expired.reference is not None
    assert live.reference is not None
    assert live.status is PaymentStatus.REQUIRES_ACTION
    links.payers.pay_link(expired.reference, late=True)
    links.deliver()
    [invoice] = links.engine.invoices(subscription_id=subscription)
    assert invoice.status is InvoiceStatus.PAID

    report = links.engine.reconcile()

    if not links.capable(Capability.LINK_CANCELLATION):
        assert report.link_cancellations == 0
        assert links.gateway_says(live) is PaymentStatus.REQUIRES_ACTION, "still payable"
        return
    assert report.link_cancellations == 1
    [_, withdrawn] = links.payments(subscription)
    assert (withdrawn.id, withdrawn.status) == (live.id, PaymentStatus.CANCELED)
    assert links.gateway_says(withdrawn) is PaymentStatus.FAILED, "no longer payable"
    with pytest.raises(InvalidArgument):
        links.payers.pay_link(live.reference)
    assert links.event_names().count("payment.link_canceled") == 1
    links.run_until(links.clock.now() + timedelta(days=10))
    assert links.engine.reconcile().link_cancellations == 0
    assert links.sim.charges_taken("c1") == 1
    assert links.engine.credit_balance("c1", links.sim.currency).amount.is_zero()
    assert links.engine.audit().balanced


# -- charges: every gateway -----------------------------------------------------------------


def test_renewals_are_charged_each_period(world: World):
    subscription = world.paid_subscription("c1")
    world.run_until(START + timedelta(days=62))
    payments = world.payments(subscription)
    assert [p.status for p in payments] == [PaymentStatus.SUCCEEDED] * 3
    assert len({p.reference for p in payments}) == 3
    assert world.sim.charges_taken("c1") == 3


def test_a_refund_gives_the_money_back_where_refunds_are_declared(world: World):
    subscription = world.paid_subscription("c1")
    [payment] = world.payments(subscription)
    if not world.capable(Capability.REFUNDS):
        with pytest.raises(InvalidArgument) as refused:
            world.engine.refund(payment.id)
        assert refused.value.field == "gateway"
        assert world.engine.refunds(payment.id) == []
        return
    if world.capable(Capability.PARTIAL_REFUNDS):
        part = world.engine.refund(payment.id, amount=Money.of("100", world.sim.currency))
        assert part.status.value == "succeeded"
    else:
        with pytest.raises(InvalidArgument) as refused:
            world.engine.refund(payment.id, amount=Money.of("100", world.sim.currency))
        assert refused.value.field == "amount"
    rest = world.engine.refund(payment.id)
    assert rest.status.value == "succeeded"
    assert rest.reference
    assert "payment.refunded" in world.event_names()


def test_a_lost_refund_answer_is_reconciled_into_one_refund(world: World):
    subscription = world.paid_subscription("c1")
    [payment] = world.payments(subscription)
    if not world.capable(Capability.REFUNDS):
        with pytest.raises(InvalidArgument):
            world.engine.refund(payment.id)
        world.clock.set(START + LATER)
        assert world.engine.reconcile().refund_checks == 0
        return
    world.sim.lose_next_refund_answer()
    lost = world.engine.refund(payment.id)
    assert lost.status is RefundStatus.UNKNOWN, "the gateway refunded; its answer was lost"
    assert "payment.refunded" not in world.event_names()

    world.clock.set(START + LATER)
    assert world.engine.reconcile().refund_checks == 1
    [refund] = world.engine.refunds(payment.id)
    # a second refund of the whole charge would be refused: this is the first one, found again
    assert (refund.id, refund.status) == (lost.id, RefundStatus.SUCCEEDED)
    assert refund.reference
    assert world.event_names().count("payment.refunded") == 1


def test_a_lost_answer_is_reconciled_into_exactly_one_charge(world: World):
    subscription = world.subscribe("c1", Behavior.TIMEOUT)
    [payment] = world.payments(subscription)
    assert payment.status is PaymentStatus.UNKNOWN, "the charge went through, its answer not"
    world.sim.script("c1", Behavior.APPROVE)
    world.run_until(START + LATER)
    [payment] = world.payments(subscription)
    assert payment.status is PaymentStatus.SUCCEEDED
    assert payment.reference
    assert world.sim.charges_taken("c1") == 1, "reconciled by lookup, never charged again"
    assert world.status(subscription) is SubscriptionStatus.ACTIVE


# -- notifications --------------------------------------------------------------------------


def test_a_notification_delivered_twice_is_processed_once(world: World):
    if not world.capable(Capability.NOTIFICATIONS):
        with pytest.raises(InvalidArgument):
            world.engine.receive_notification(world.sim.gateway.name, headers={}, body=b"{}")
        return
    subscription = world.subscribe("c1", Behavior.TIMEOUT)
    assert world.payments(subscription)[0].status is PaymentStatus.UNKNOWN
    if world.capable(Capability.PAY_BY_LINK):
        world.payers.take_notifications()  # this test delivers the webhook itself, twice
    webhook = world.sim.notification("c1")
    [first] = world.deliver([webhook])
    assert first.status is NotificationStatus.PROCESSED
    assert first.payment_status is PaymentStatus.SUCCEEDED
    events = world.event_names()
    [again] = world.deliver([webhook])
    assert again.status is NotificationStatus.DUPLICATE
    assert world.event_names() == events, "the second delivery changed nothing"
    assert events.count("payment.succeeded") == 1
    assert world.sim.charges_taken("c1") == 1


def test_a_link_notification_replayed_is_processed_once(links: World):
    subscription = links.subscribe("c1")  # the payer pays the link at once; the gateway notifies
    sent = links.payers.take_notifications()
    assert sent, "the gateway notified the payment"
    [first, *_] = links.deliver(sent)
    assert first.status is NotificationStatus.PROCESSED
    assert first.payment_status is PaymentStatus.SUCCEEDED
    events = links.event_names()
    replayed = links.deliver(sent)
    assert {r.status for r in replayed} == {NotificationStatus.DUPLICATE}
    assert links.event_names() == events, "the replay changed nothing"
    assert events.count("payment.succeeded") == 1
    assert [p.status for p in links.payments(subscription)] == [PaymentStatus.SUCCEEDED]
    assert links.sim.charges_taken("c1") == 1


def test_a_lost_link_notification_is_recovered_by_reconciliation(links: World):
    subscription = links.subscribe("c1")  # the payer pays the link at once
    assert links.payers.take_notifications(), "sent, and lost on the way"
    [link] = links.payments(subscription)
    assert link.status is PaymentStatus.REQUIRES_ACTION, "nothing told the engine yet"

    links.clock.set(START + LATER)
    report = links.engine.reconcile()

    assert report.checks >= 1
    [paid] = links.payments(subscription)
    assert (paid.id, paid.status) == (link.id, PaymentStatus.SUCCEEDED)
    [invoice] = links.engine.invoices(subscription_id=subscription)
    assert invoice.status is InvoiceStatus.PAID
    assert links.sim.charges_taken("c1") == 1
    assert links.event_names().count("payment.succeeded") == 1


def test_a_forged_notification_changes_nothing(world: World):
    if not world.capable(Capability.NOTIFICATIONS):
        with pytest.raises(InvalidArgument):
            world.engine.receive_notification(world.sim.gateway.name, headers={}, body=b"{}")
        return
    subscription = world.subscribe("c1", Behavior.DECLINE_SOFT)  # a decline, or a link unpaid
    world.deliver()
    before = (world.payments(subscription), world.status(subscription), world.event_names())
    forged = world.sim.forged_notification("c1")
    [receipt] = world.deliver([forged])
    assert receipt.status is not NotificationStatus.DUPLICATE
    assert receipt.payment_status in (None, PaymentStatus.FAILED, PaymentStatus.REQUIRES_ACTION)
    if world.capable(Capability.SIGNED_NOTIFICATIONS):
        assert receipt.status is NotificationStatus.REJECTED, "its signature is checked first"
    after = (world.payments(subscription), world.status(subscription), world.event_names())
    assert after == before
    assert world.sim.charges_taken("c1") == 0


def test_an_unreadable_notification_is_rejected_and_recorded_nowhere(world: World):
    garbage = Notification(headers={"content-type": "application/json"}, body=b"not json")
    if not world.capable(Capability.NOTIFICATIONS):
        with pytest.raises(InvalidArgument):
            world.deliver([garbage])
        return
    [receipt] = world.deliver([garbage])
    assert receipt.status is NotificationStatus.REJECTED
    assert receipt.event_id is None


# -- credentials ----------------------------------------------------------------------------


def test_bad_credentials_are_an_error_never_a_decline(world: World):
    subscription = world.paid_subscription("c1")
    [first] = world.payments(subscription)
    bad = world.sim.with_bad_credentials()
    stores_at_the_gateway = world.capable(Capability.CARD_TOKENS) or world.capable(
        Capability.CARD_ENROLLMENT
    )
    with open_engine(world.url, clock=world.clock, gateways=[bad]) as misconfigured:
        misconfigured.create_customer(
            customer_id="c2",
            timezone="America/Santiago",
            metadata={"name": "Cliente c2", "email": "c2@example.com"},
        )
        if stores_at_the_gateway:
            with pytest.raises(GatewayAuthenticationFailed) as refused:
                give_card(misconfigured, world.sim, "c2", Behavior.APPROVE)
            assert refused.value.code == "authentication_error"
            assert misconfigured.payment_methods("c2") == []
        else:  # a payer's e-mail is kept without asking the gateway: nothing to refuse yet
            give_card(misconfigured, world.sim, "c2", Behavior.APPROVE)
            assert len(misconfigured.payment_methods("c2")) == 1
        world.clock.set(START + timedelta(days=31))
        misconfigured.run_due()
        renewal = misconfigured.payments(subscription_id=subscription)[-1]
    assert renewal.id != first.id
    assert renewal.status is PaymentStatus.UNKNOWN, "not a decline: nothing is known"
    assert renewal.error is ErrorCode.AUTHENTICATION_ERROR
    assert world.status(subscription) is SubscriptionStatus.ACTIVE, "no dunning for our mistake"


# -- over real sockets ----------------------------------------------------------------------


@pytest.mark.parametrize("name", CARDS)
def test_the_main_card_flows_over_loopback_sockets(name: str, tmp_path: Path):
    for loopback in _world(name, tmp_path, loopback=True):
        paid = loopback.subscribe("c1")
        declined = loopback.subscribe("c2", Behavior.DECLINE_SOFT)
        lost = loopback.subscribe("c3", Behavior.TIMEOUT)
        loopback.sim.script("c2", Behavior.APPROVE)
        loopback.run_until(START + timedelta(days=1, hours=1))
        assert loopback.status(paid) is SubscriptionStatus.ACTIVE
        assert [p.status for p in loopback.payments(declined)] == [
            PaymentStatus.FAILED,
            PaymentStatus.SUCCEEDED,
        ]
        assert [p.status for p in loopback.payments(lost)] == [PaymentStatus.SUCCEEDED]
        assert [loopback.sim.charges_taken(c) for c in ("c1", "c2", "c3")] == [1, 1, 1]


@pytest.mark.parametrize("name", LINKS)
def test_the_main_link_flows_over_loopback_sockets(name: str, tmp_path: Path):
    for loopback in _world(name, tmp_path, loopback=True):
        prompt = loopback.subscribe("c1")
        later = loopback.subscribe("c2", Behavior.NEVER_PAY)
        lost = loopback.subscribe("c3", Behavior.TIMEOUT)
        receipts = loopback.deliver()
        assert {r.status for r in receipts} == {NotificationStatus.PROCESSED}
        [link] = loopback.payments(later)
        assert link.status is PaymentStatus.REQUIRES_ACTION
        assert link.reference
        loopback.payers.pay_link(link.reference)
        assert [r.payment_status for r in loopback.deliver()] == [PaymentStatus.SUCCEEDED]
        for subscription in (prompt, later, lost):
            assert [p.status for p in loopback.payments(subscription)] == [PaymentStatus.SUCCEEDED]
            [invoice] = loopback.engine.invoices(subscription_id=subscription)
            assert invoice.status is InvoiceStatus.PAID
        assert [loopback.sim.charges_taken(c) for c in ("c1", "c2", "c3")] == [1, 1, 1]
