"""The event outbox: every state change records its events with it, in order, under stable ids
and strictly increasing sequence numbers; the host acknowledges what it has handled."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from itertools import pairwise

import pytest

from billing.domain.catalog import Plan
from billing.domain.dunning import RetryPolicy
from billing.domain.invoices import InvoiceStatus
from billing.domain.money import Money
from billing.domain.payments import PaymentStatus
from billing.domain.subscriptions import SubscriptionStatus
from billing.engine import Engine
from billing.store.unit_of_work import StoredEvent
from tests.integration.conftest import SCL, START, Billing

ORO = Plan.of(code="oro", name="Plan Oro", price="10000", currency="CLP")
ESTRICTO = Plan.of(
    code="estricto",
    name="Plan Estricto",
    price="10000",
    currency="CLP",
    retry=RetryPolicy.of([1], then="canceled"),
)

REQUIRED = {
    "subscription.created",
    "subscription.activated",
    "subscription.renewed",
    "subscription.past_due",
    "subscription.unpaid",
    "subscription.paused",
    "subscription.resumed",
    "subscription.canceled",
    "subscription.ended",
    "invoice.created",
    "invoice.paid",
    "invoice.uncollectible",
    "payment.succeeded",
    "payment.failed",
    "payment.unknown",
    # payment.requires_action is left out on purpose: the fake gateway has no behavior that
    # answers REQUIRES_ACTION, so no history run through the engine can produce it.
}

FIRST_PERIOD_END = datetime(2026, 2, 28, 12, tzinfo=SCL)
SECOND_PERIOD_END = datetime(2026, 3, 31, 12, tzinfo=SCL)
PAID_NOW = ["invoice.created", "payment.succeeded", "invoice.paid"]


def every_event(engine: Engine, *, pending_only: bool = True) -> list[StoredEvent]:
    """All events, read page by page in sequence order."""
    events: list[StoredEvent] = []
    while page := engine.events(
        after=events[-1].seq if events else 0, limit=7, pending_only=pending_only
    ):
        events.extend(page)
    return events


@dataclass
class History:
    """A history that exercises every event the engine can make, and what each step recorded."""

    billing: Billing
    recorded: list[tuple[str, list[str]]]

    @property
    def engine(self) -> Engine:
        return self.billing.engine


def _steps(billing: Billing) -> list[tuple[str, Callable[[], object], list[str]]]:
    engine = billing.engine

    def at(when: datetime, action: Callable[[], object]) -> Callable[[], object]:
        def step() -> object:
            billing.clock.set(when)
            return action()

        return step

    def first_payment_of(subscription_id: str) -> str:
        return engine.payments(subscription_id=subscription_id)[0].id

    created = ["subscription.created", "subscription.activated"]
    return [
        (
            "A subscribes and pays",
            lambda: engine.subscribe("c_ok", "oro", subscription_id="A", cycles=2),
            [*created, *PAID_NOW],
        ),
        (
            "B subscribes and its card is declined for good",
            lambda: engine.subscribe("c_hard", "oro", subscription_id="B"),
            [*created, "invoice.created", "payment.failed", "subscription.unpaid"],
        ),
        (
            "C subscribes and its card is declined for now",
            lambda: engine.subscribe("c_soft", "estricto", subscription_id="C"),
            [*created, "invoice.created", "payment.failed", "subscription.past_due"],
        ),
        (
            "D subscribes and the gateway's answer is lost",
            at(
                START + timedelta(minutes=30),
                lambda: engine.subscribe("c_lost", "oro", subscription_id="D"),
            ),
            [*created, "invoice.created", "payment.unknown"],
        ),
        (
            "D's payment is found paid a minute later",
            lambda: billing.run_until(START + timedelta(minutes=31)),
            ["payment.succeeded", "invoice.paid"],
        ),
        (
            "C's retry fails and C is canceled",
            lambda: billing.run_until(START + timedelta(days=1)),
            ["payment.failed", "invoice.uncollectible", "subscription.canceled"],
        ),
        ("A pauses", lambda: engine.pause("A"), ["subscription.paused"]),
        (
            "A resumes",
            at(START + timedelta(days=2), lambda: engine.resume("A")),
            ["subscription.resumed"],
        ),
        (
            "A renews",
            lambda: billing.run_until(FIRST_PERIOD_END),
            ["subscription.renewed", *PAID_NOW],
        ),
        (
            "D renews, the answer is lost again and found a minute later",
            lambda: billing.run_until(FIRST_PERIOD_END + timedelta(minutes=31)),
            [
                "subscription.renewed",
                "invoice.created",
                "payment.unknown",
                "payment.succeeded",
                "invoice.paid",
            ],
        ),
        (
            "A ends after its two cycles",
            lambda: billing.run_until(SECOND_PERIOD_END),
            ["subscription.ended"],
        ),
        (
            "c_ok is granted credit",
            lambda: engine.grant_credit("c_ok", Money.of("500", "CLP")),
            ["credit.granted"],
        ),
        (
            "A's first payment is partly refunded",
            lambda: engine.refund(first_payment_of("A"), amount=Money.of("1000", "CLP")),
            ["payment.refunded"],
        ),
        (
            "B is canceled",
            lambda: engine.cancel("B", at_period_end=False),
            ["subscription.canceled"],
        ),
        (
            "D is to be canceled at the end of its period",
            lambda: engine.cancel("D"),
            ["subscription.cancel_scheduled"],
        ),
    ]


@pytest.fixture
def history(billing: Billing) -> History:
    engine = billing.engine
    engine.create_plan(ORO)
    engine.create_plan(ESTRICTO)
    billing.customer("c_ok")
    billing.customer("c_hard", payment="decline_hard")
    billing.customer("c_soft", payment="decline_soft")
    billing.customer("c_lost", payment="timeout")
    assert engine.events() == []  # customers, payment methods and plans record no events
    recorded: list[tuple[str, list[str]]] = []
    for label, action, _ in _steps(billing):
        seen = every_event(engine, pending_only=False)
        action()
        after = seen[-1].seq if seen else 0
        recorded.append((label, [e.name for e in engine.events(after=after, limit=100)]))
    return History(billing, recorded)


def test_each_state_change_records_exactly_its_events_in_order(history: History):
    expected = [(label, names) for label, _, names in _steps(history.billing)]
    assert history.recorded == expected


def test_the_history_holds_every_event_a_host_needs(history: History):
    names = {event.name for event in every_event(history.engine)}
    assert REQUIRED - names == set()


def test_sequence_numbers_strictly_increase_and_reading_twice_gives_the_same_events(
    history: History,
):
    events = every_event(history.engine)
    assert len(events) == sum(len(names) for _, names in history.recorded)
    seqs = [event.seq for event in events]
    assert all(earlier < later for earlier, later in pairwise(seqs))
    assert len({event.id for event in events}) == len(events)
    assert every_event(history.engine) == events
    assert history.engine.events(limit=1000) == events
    assert [e.id for e in history.engine.events(after=seqs[9], limit=3)] == [
        e.id for e in events[10:13]
    ]


def test_events_agree_with_the_state_they_describe(history: History):
    engine = history.engine
    events = every_event(engine)

    def ids(name: str, key: str = "invoice_id") -> list[object]:
        return [event.payload[key] for event in events if event.name == name]

    invoices = engine.invoices()
    assert ids("invoice.created") == [invoice.id for invoice in invoices]
    assert sorted(ids("invoice.paid")) == sorted(
        i.id for i in invoices if i.status is InvoiceStatus.PAID
    )
    assert ids("invoice.uncollectible") == [
        i.id for i in invoices if i.status is InvoiceStatus.UNCOLLECTIBLE
    ]
    for payment in engine.payments():
        named = [e.name for e in events if e.payload.get("payment_id") == payment.id]
        settled = [name for name in named if name != "payment.refunded"]
        assert settled[-1] == f"payment.{payment.status}"
    paid = [p.id for p in engine.payments() if p.status is PaymentStatus.SUCCEEDED]
    assert sorted(ids("payment.succeeded", "payment_id")) == sorted(paid)

    final = {s.id: s for s in engine.subscriptions()}
    assert ids("subscription.created", "subscription_id") == ["A", "B", "C", "D"]
    assert {sid: final[sid].status for sid in final} == {
        "A": SubscriptionStatus.ENDED,
        "B": SubscriptionStatus.CANCELED,
        "C": SubscriptionStatus.CANCELED,
        "D": SubscriptionStatus.ACTIVE,
    }
    [ended] = [e for e in events if e.name == "subscription.ended"]
    assert (ended.subscription_id, ended.at) == ("A", final["A"].ended_at)
    canceled = {e.subscription_id: e.at for e in events if e.name == "subscription.canceled"}
    assert canceled == {"B": final["B"].canceled_at, "C": final["C"].canceled_at}


def test_acknowledged_events_leave_the_default_listing_and_count_once(history: History):
    engine = history.engine
    events = every_event(engine)
    handled, rest = events[:5], events[5:]
    assert engine.acknowledge([e.id for e in handled]) == 5
    assert every_event(engine) == rest
    assert engine.acknowledge([e.id for e in handled]) == 0
    assert engine.acknowledge([handled[0].id, rest[0].id, "evt_unknown"]) == 1
    assert every_event(engine) == rest[1:]

    listed = every_event(engine, pending_only=False)
    assert [e.id for e in listed] == [e.id for e in events]
    now = history.billing.clock.now()
    assert [e.acknowledged_at for e in listed] == [now] * 6 + [None] * (len(events) - 6)
    assert engine.acknowledge([e.id for e in listed]) == len(events) - 6
    assert engine.events() == []
    assert engine.acknowledge([]) == 0
