"""The conformance suite, through the engine: every gateway adapter bills the same way.

Parametrised over every installed gateway simulation (:mod:`billing.testing.simulation`): the
real adapter talking to its gateway's fake server, in process; one class repeats the main flows
over real sockets on loopback. A fifth gateway passes this file unchanged once its adapter ships
a simulation. What gateways legitimately differ in (partial refunds, notifications) is read from
their declared capabilities, never from their names.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
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
from billing.ports import Capability, Notification
from billing.scenarios.runner import give_card
from billing.services.notifications import NotificationStatus
from billing.testing import Behavior, simulation
from billing.testing.simulation import GatewaySimulation

ADAPTERS = [name for name in simulation.names() if name != "fake"]
START = datetime(2026, 3, 2, 12, tzinfo=ZoneInfo("America/Santiago"))
LATER = timedelta(hours=2)
"""Long enough for an unanswered attempt to be due for reconciliation."""
PRICES = {"CLP": "15000", "MXN": "499.90"}


def test_every_adapter_ships_a_simulation():
    assert {"qvo", "openpay"} <= set(ADAPTERS)


@dataclass
class World:
    sim: GatewaySimulation
    engine: Engine
    clock: ManualClock
    url: str

    @property
    def price(self) -> Money:
        return Money.of(PRICES[self.sim.currency], self.sim.currency)

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

    def payments(self, subscription_id: str) -> list[PaymentAttempt]:
        return self.engine.payments(subscription_id=subscription_id)

    def status(self, subscription_id: str) -> SubscriptionStatus:
        return self.engine.subscription(subscription_id).status

    def run_until(self, when: datetime) -> None:
        while (due := self.engine.next_run_at()) is not None and due <= when:
            self.clock.set(max(due, self.clock.now()))
            self.engine.run_due()
        self.clock.set(when)
        self.engine.run_due()

    def event_names(self) -> list[str]:
        return [event.name for event in self.engine.events(limit=1000, pending_only=False)]


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


def _capable(world: World, capability: Capability) -> bool:
    return capability in world.sim.gateway.capabilities


# -- charges --------------------------------------------------------------------------------


def test_an_approved_card_pays_the_first_invoice(world: World):
    subscription = world.subscribe("c1")
    [payment] = world.payments(subscription)
    assert payment.status is PaymentStatus.SUCCEEDED
    assert payment.reference, "the gateway's charge id is kept for lookups and refunds"
    assert payment.amount == world.price
    [invoice] = world.engine.invoices(subscription_id=subscription)
    assert invoice.status is InvoiceStatus.PAID
    assert world.status(subscription) is SubscriptionStatus.ACTIVE
    assert world.sim.charges_taken("c1") == 1


def test_renewals_charge_the_stored_card_each_period(world: World):
    subscription = world.subscribe("c1")
    world.run_until(START + timedelta(days=62))
    payments = world.payments(subscription)
    assert [p.status for p in payments] == [PaymentStatus.SUCCEEDED] * 3
    assert len({p.reference for p in payments}) == 3
    assert world.sim.charges_taken("c1") == 3


def test_a_soft_decline_is_retried_and_a_later_success_recovers(world: World):
    subscription = world.subscribe("c1", Behavior.DECLINE_SOFT)
    [first] = world.payments(subscription)
    assert (first.status, first.decline) == (PaymentStatus.FAILED, DeclineKind.SOFT)
    assert first.error is not None, "a normalised error"
    assert first.code, "and the gateway's own code"
    assert world.status(subscription) is SubscriptionStatus.PAST_DUE
    world.sim.script("c1", Behavior.APPROVE)
    world.run_until(START + timedelta(days=1, hours=1))
    assert [p.status for p in world.payments(subscription)] == [
        PaymentStatus.FAILED,
        PaymentStatus.SUCCEEDED,
    ]
    assert world.status(subscription) is SubscriptionStatus.ACTIVE
    assert world.sim.charges_taken("c1") == 1


def test_a_hard_decline_stops_dunning(world: World):
    subscription = world.subscribe("c1", Behavior.DECLINE_HARD)
    [attempt] = world.payments(subscription)
    assert (attempt.status, attempt.decline) == (PaymentStatus.FAILED, DeclineKind.HARD)
    assert world.status(subscription) is SubscriptionStatus.UNPAID
    world.run_until(START + timedelta(days=10))
    assert len(world.payments(subscription)) == 1, "no retry after a hard decline"
    assert world.sim.charges_taken("c1") == 0


def test_a_new_card_on_an_unpaid_subscription_pays_it_and_reactivates_it(world: World):
    subscription = world.subscribe("c1", Behavior.DECLINE_HARD)
    assert world.status(subscription) is SubscriptionStatus.UNPAID
    give_card(world.engine, world.sim, "c1", Behavior.APPROVE, replace=True)
    assert world.status(subscription) is SubscriptionStatus.ACTIVE
    assert [p.status for p in world.payments(subscription)] == [
        PaymentStatus.FAILED,
        PaymentStatus.SUCCEEDED,
    ]
    assert world.sim.charges_taken("c1") == 1


def test_a_refund_gives_the_money_back(world: World):
    subscription = world.subscribe("c1")
    [payment] = world.payments(subscription)
    if _capable(world, Capability.PARTIAL_REFUNDS):
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
    subscription = world.subscribe("c1")
    [payment] = world.payments(subscription)
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
    if not _capable(world, Capability.NOTIFICATIONS):
        with pytest.raises(InvalidArgument):
            world.engine.receive_notification(world.sim.gateway.name, headers={}, body=b"{}")
        return
    subscription = world.subscribe("c1", Behavior.TIMEOUT)
    assert world.payments(subscription)[0].status is PaymentStatus.UNKNOWN
    webhook = world.sim.notification("c1")
    first = world.engine.receive_notification(
        world.sim.gateway.name, headers=webhook.headers, body=webhook.body
    )
    assert first.status is NotificationStatus.PROCESSED
    assert first.payment_status is PaymentStatus.SUCCEEDED
    events = world.event_names()
    again = world.engine.receive_notification(
        world.sim.gateway.name, headers=webhook.headers, body=webhook.body
    )
    assert again.status is NotificationStatus.DUPLICATE
    assert world.event_names() == events, "the second delivery changed nothing"
    assert events.count("payment.succeeded") == 1
    assert world.sim.charges_taken("c1") == 1


def test_a_forged_notification_changes_nothing(world: World):
    if not _capable(world, Capability.NOTIFICATIONS):
        pytest.skip(f"{world.sim.gateway.name} declares no notifications (checked above)")
    subscription = world.subscribe("c1", Behavior.DECLINE_SOFT)
    before = (world.payments(subscription), world.status(subscription), world.event_names())
    forged = world.sim.forged_notification("c1")
    receipt = world.engine.receive_notification(
        world.sim.gateway.name, headers=forged.headers, body=forged.body
    )
    assert receipt.status is not NotificationStatus.DUPLICATE
    assert receipt.payment_status in (None, PaymentStatus.FAILED)
    after = (world.payments(subscription), world.status(subscription), world.event_names())
    assert after == before
    assert world.sim.charges_taken("c1") == 0


def test_an_unreadable_notification_is_rejected_and_recorded_nowhere(world: World):
    if not _capable(world, Capability.NOTIFICATIONS):
        pytest.skip(f"{world.sim.gateway.name} declares no notifications (checked above)")
    garbage = Notification(headers={"content-type": "application/json"}, body=b"not json")
    receipt = world.engine.receive_notification(
        world.sim.gateway.name, headers=garbage.headers, body=garbage.body
    )
    assert receipt.status is NotificationStatus.REJECTED
    assert receipt.event_id is None


# -- credentials ----------------------------------------------------------------------------


def test_bad_credentials_are_an_error_never_a_decline(world: World, tmp_path: Path):
    subscription = world.subscribe("c1")
    [first] = world.payments(subscription)
    bad = world.sim.with_bad_credentials()
    with open_engine(world.url, clock=world.clock, gateways=[bad]) as misconfigured:
        misconfigured.create_customer(
            customer_id="c2",
            timezone="America/Santiago",
            metadata={"name": "Cliente c2", "email": "c2@example.com"},
        )
        with pytest.raises(GatewayAuthenticationFailed) as refused:
            give_card(misconfigured, world.sim, "c2", Behavior.APPROVE)
        assert refused.value.code == "authentication_error"
        assert misconfigured.payment_methods("c2") == []
        world.clock.set(START + timedelta(days=31))
        misconfigured.run_due()
        renewal = misconfigured.payments(subscription_id=subscription)[-1]
    assert renewal.id != first.id
    assert renewal.status is PaymentStatus.UNKNOWN, "not a decline: nothing is known"
    assert renewal.error is ErrorCode.AUTHENTICATION_ERROR
    assert world.status(subscription) is SubscriptionStatus.ACTIVE, "no dunning for our mistake"


# -- over real sockets ----------------------------------------------------------------------


@pytest.mark.parametrize("name", ADAPTERS)
def test_the_main_flows_over_loopback_sockets(name: str, tmp_path: Path):
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
