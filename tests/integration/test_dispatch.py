"""Event dispatch: each event reaches the host's handlers at least once (once, without crashes),
in order within its stream, under a stable id; a failing handler holds back only its own stream,
and is retried after a back-off; several engines dispatching at once keep every stream in order.
"""

from __future__ import annotations

import random
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from itertools import pairwise

import pytest
from sqlalchemy import create_engine, select
from sqlmodel import col

from billing.bootstrap import open_engine
from billing.config import Settings
from billing.domain.catalog import Plan
from billing.domain.money import Money
from billing.engine import Engine
from billing.services.dispatch import Handlers, retry_delay
from billing.store.database import normalize_url
from billing.store.tables import EventRow
from billing.store.unit_of_work import StoredEvent
from tests.integration.conftest import SCL, Billing

ORO = Plan.of(code="oro", name="Plan Oro", price="10000", currency="CLP")
FIRST_PERIOD_END = datetime(2026, 2, 28, 12, tzinfo=SCL)
SECOND_PERIOD_END = datetime(2026, 3, 31, 12, tzinfo=SCL)


def stream(event: StoredEvent) -> str:
    """The delivery stream the engine files an event under (its ``events.stream`` column)."""
    if event.subscription_id is not None:
        return f"subscription:{event.subscription_id}"
    if event.customer_id is not None:
        return f"customer:{event.customer_id}"
    return "engine"


def owner(engine: Engine, event: StoredEvent) -> str:
    """Whose event it is for the host: its subscription, including the payments of the
    subscription's invoices (whose payloads name only the invoice), else its customer."""
    subscription_id = event.subscription_id
    if subscription_id is None and event.invoice_id is not None:
        subscription_id = engine.invoice(event.invoice_id).subscription_id
    if subscription_id is not None:
        return f"subscription:{subscription_id}"
    return f"customer:{event.customer_id}"


def stored_streams(billing: Billing) -> dict[int, str]:
    """Every event's stream as stored: seq -> stream."""
    database = create_engine(normalize_url(billing.url))
    try:
        with database.connect() as connection:
            rows = connection.execute(select(EventRow.seq, EventRow.stream)).all()
    finally:
        database.dispose()
    return {int(seq): str(name) for seq, name in rows}


def every_event(engine: Engine, *, pending_only: bool = True) -> list[StoredEvent]:
    events: list[StoredEvent] = []
    while page := engine.events(
        after=events[-1].seq if events else 0, limit=50, pending_only=pending_only
    ):
        events.extend(page)
    return events


def make_history(billing: Billing, subscriptions: int = 3, *, renewals: int = 1) -> None:
    """Subscriptions paid at once, renewed ``renewals`` times, and one customer's credit."""
    billing.engine.create_plan(ORO)
    for n in range(subscriptions):
        billing.customer(f"c{n}")
        billing.engine.subscribe(f"c{n}", "oro", subscription_id=f"s{n}")
    for end in (FIRST_PERIOD_END, SECOND_PERIOD_END)[:renewals]:
        billing.run_until(end)
    billing.engine.grant_credit("c0", Money.of("500", "CLP"))  # a customer's stream


def in_order_per_stream(delivered: list[StoredEvent]) -> dict[str, list[int]]:
    per_stream: dict[str, list[int]] = defaultdict(list)
    for event in delivered:
        per_stream[stream(event)].append(event.seq)
    return per_stream


def row(billing: Billing, event_id: str) -> EventRow:
    database = create_engine(normalize_url(billing.url))
    try:
        with database.connect() as connection:
            found = connection.execute(select(EventRow).where(col(EventRow.id) == event_id)).one()
    finally:
        database.dispose()
    return EventRow(**found._asdict())


def utc(value: datetime | None) -> datetime | None:
    """SQLite hands naive UTC back to a plain connection; PostgreSQL aware values."""
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=UTC)


# -- one engine --------------------------------------------------------------------------------


def test_each_event_reaches_its_name_handlers_and_the_star_handlers_once_in_order(billing):
    make_history(billing, renewals=1)
    engine = billing.engine
    pending = every_event(engine)
    assert stored_streams(billing) == {e.seq: stream(e) for e in pending}
    everything: list[StoredEvent] = []
    paid: list[StoredEvent] = []
    never: list[StoredEvent] = []
    handlers: Handlers = {
        "*": [everything.append],
        "invoice.paid": [paid.append],
        "no.such.event": [never.append],
    }

    report = engine.dispatch(handlers)

    assert (report.delivered, report.failed) == (len(pending), 0)
    assert Counter(e.id for e in everything) == Counter(e.id for e in pending)
    assert set(Counter(e.id for e in everything).values()) == {1}
    assert sorted(e.id for e in paid) == sorted(e.id for e in pending if e.name == "invoice.paid")
    assert len(paid) == 6  # three first invoices and three renewals
    assert never == []
    for seqs in in_order_per_stream(everything).values():
        assert seqs == sorted(seqs)
    by_id = {e.id: e for e in pending}
    for event in everything:  # the same event as the outbox lists, under the same id
        listed = by_id[event.id]
        assert (event.seq, event.name, event.payload, event.deliveries) == (
            listed.seq,
            listed.name,
            listed.payload,
            0,
        )
    assert engine.events() == []  # delivered means acknowledged
    assert all(e.acknowledged_at is not None for e in every_event(engine, pending_only=False))
    assert [e.name for e in everything if e.subscription_id == "s1"] == [
        "subscription.created",
        "subscription.activated",
        "invoice.created",
        "payment.succeeded",
        "invoice.paid",
        "subscription.renewed",
        "invoice.created",
        "payment.succeeded",
        "invoice.paid",
    ]
    again = engine.dispatch(handlers)
    assert (again.delivered, again.failed) == (0, 0)
    assert len(everything) == len(pending)


def test_events_the_host_acknowledged_are_not_dispatched_and_leave_the_pending_list(billing):
    make_history(billing, subscriptions=2, renewals=0)
    engine = billing.engine
    pending = every_event(engine)
    acknowledged = [e.id for e in pending if e.subscription_id == "s0"]
    assert engine.acknowledge(acknowledged) == len(acknowledged)
    assert [e.id for e in every_event(engine)] == [
        e.id for e in pending if e.id not in acknowledged
    ]
    seen: list[StoredEvent] = []
    engine.dispatch({"*": [seen.append]})
    assert sorted(e.id for e in seen) == sorted(e.id for e in pending if e.id not in acknowledged)
    assert engine.events() == []
    assert engine.acknowledge([e.id for e in pending]) == 0  # all acknowledged already


def test_a_failing_handler_holds_back_only_its_own_subscription_and_is_retried_later(billing):
    make_history(billing, subscriptions=3, renewals=0)
    engine, clock = billing.engine, billing.clock
    pending = every_event(engine)
    held = [e for e in pending if e.subscription_id == "s1"]
    head = held[0]
    broken = True
    delivered: list[StoredEvent] = []
    attempts: list[StoredEvent] = []

    def handler(event: StoredEvent) -> None:
        attempts.append(event)
        if broken and event.subscription_id == "s1":
            raise RuntimeError("the host is down for s1")
        delivered.append(event)

    report = engine.dispatch({"*": [handler]})
    assert (report.delivered, report.failed) == (len(pending) - len(held), 1)
    assert [e.id for e in attempts if e.subscription_id == "s1"] == [head.id]  # only the head
    assert sorted(e.id for e in delivered) == sorted(e.id for e in pending if e not in held)
    assert [e.id for e in engine.events()] == [e.id for e in held]
    assert engine.events()[0].deliveries == 1
    stored = row(billing, head.id)
    assert stored.deliveries == 1
    assert stored.last_error == "RuntimeError: the host is down for s1"
    assert utc(stored.deliver_after) == clock.now() + timedelta(seconds=1)
    assert stored.claimed_by is None

    # not before its back-off: nothing is tried
    tried = len(attempts)
    assert engine.dispatch({"*": [handler]}).failed == 0
    assert len(attempts) == tried

    # a second failure doubles the back-off
    clock.advance(timedelta(seconds=1))
    assert engine.dispatch({"*": [handler]}).failed == 1
    stored = row(billing, head.id)
    assert stored.deliveries == 2
    assert utc(stored.deliver_after) == clock.now() + timedelta(seconds=2)

    # meanwhile another subscription's new events are delivered at once
    billing.customer("c9")
    engine.subscribe("c9", "oro", subscription_id="s9")
    newcomers = [e for e in engine.events() if e.id not in {h.id for h in held}]
    assert {e.subscription_id for e in newcomers} == {"s9"}  # its payment events too
    report = engine.dispatch({"*": [handler]})
    assert (report.delivered, report.failed) == (len(newcomers), 0)

    # the handler is fixed: still nothing before the back-off ends, then all of s1 in order
    broken = False
    assert engine.dispatch({"*": [handler]}).delivered == 0
    clock.advance(timedelta(seconds=2))
    report = engine.dispatch({"*": [handler]})
    assert (report.delivered, report.failed) == (len(held), 0)
    resumed = [e for e in delivered if e.subscription_id == "s1"]
    assert [e.id for e in resumed] == [e.id for e in held]  # same ids, seq order
    assert resumed[0].deliveries == 2  # the handler can tell a retry
    assert [e.deliveries for e in resumed[1:]] == [0] * (len(held) - 1)
    assert engine.events() == []
    assert row(billing, head.id).deliveries == 3


def test_a_subscriptions_payment_events_are_delivered_in_order_with_its_other_events(billing):
    """A payment's events belong to its invoice's subscription: a host must not hear that an
    invoice was paid (``payment.succeeded``) before it heard the invoice was created."""
    make_history(billing, subscriptions=3, renewals=1)
    engine = billing.engine
    pending = every_event(engine)
    delivered: list[StoredEvent] = []
    engine.dispatch({"*": [delivered.append]})
    assert sorted(e.seq for e in delivered) == [e.seq for e in pending]
    per_subscription: dict[str, list[int]] = defaultdict(list)
    for event in delivered:
        per_subscription[owner(engine, event)].append(event.seq)
    expected: dict[str, list[int]] = defaultdict(list)
    for event in pending:
        expected[owner(engine, event)].append(event.seq)
    assert dict(per_subscription) == dict(expected)


def test_a_failing_subscription_holds_back_its_payment_events_and_nobody_elses(billing):
    """The handler fails for everything of s0: s0's later events wait (its payments included),
    while s1's and s2's events, payments included, are all delivered."""
    make_history(billing, subscriptions=3, renewals=0)
    engine = billing.engine
    pending = every_event(engine)
    mine = [e for e in pending if owner(engine, e) == "subscription:s0"]
    assert "payment.succeeded" in [e.name for e in mine]
    tried: list[StoredEvent] = []
    delivered: list[StoredEvent] = []

    def handler(event: StoredEvent) -> None:
        tried.append(event)
        if owner(engine, event) == "subscription:s0":
            raise RuntimeError("s0 cannot be handled now")
        delivered.append(event)

    engine.dispatch({"*": [handler]})
    others = sorted(e.seq for e in pending if e not in mine)
    assert sorted(e.seq for e in delivered) == others
    assert [e.seq for e in tried if e in mine] == [mine[0].seq]  # only s0's first event


def test_a_handler_that_fails_for_a_while_is_retried_with_growing_back_off(billing):
    make_history(billing, subscriptions=1, renewals=0)
    engine, clock = billing.engine, billing.clock
    pending = every_event(engine)
    head = pending[0]
    failures = 3
    tries: list[tuple[str, int]] = []

    def flaky(event: StoredEvent) -> None:
        if event.id == head.id:
            tries.append((event.id, event.deliveries))
            if len(tries) <= failures:
                raise ConnectionError("try later")

    waits = []
    for n in range(failures):
        assert engine.dispatch({"*": [flaky]}).failed == 1
        stored = row(billing, head.id)
        after = utc(stored.deliver_after)
        assert after is not None
        waits.append(after - clock.now())
        assert stored.deliveries == n + 1
        clock.set(after)  # time passes: the event is due again exactly then
    assert waits == [retry_delay(0), retry_delay(1), retry_delay(2)]
    assert waits == [timedelta(seconds=s) for s in (1, 2, 4)]
    assert engine.dispatch({"*": [flaky]}).failed == 0
    assert tries == [(head.id, n) for n in range(failures + 1)]
    assert engine.events() == []


def test_the_back_off_is_capped_at_an_hour():
    assert retry_delay(0) == timedelta(seconds=1)
    assert retry_delay(11) == timedelta(seconds=2048)
    assert retry_delay(12) == timedelta(hours=1)
    assert retry_delay(10_000) == timedelta(hours=1)


# -- two engines -------------------------------------------------------------------------------


@pytest.fixture
def second(billing: Billing) -> Iterator[Engine]:
    engine = open_engine(
        billing.url, clock=billing.clock, gateways=[billing.fake], settings=Settings(threads=1)
    )
    assert engine.worker != billing.engine.worker
    yield engine
    engine.close()


def test_two_engines_dispatching_at_once_keep_every_stream_in_order(billing, second):
    make_history(billing, subscriptions=6, renewals=2)
    engines = [billing.engine, second]
    pending = every_event(billing.engine)
    lock = threading.Lock()
    rng = random.Random(20260131)
    attempts: list[tuple[str, str, int, str]] = []  # (worker, stream, seq, id), as they happen
    delivered: list[tuple[str, str, int, str]] = []

    def handler_for(worker: str) -> Callable[[StoredEvent], None]:
        def handle(event: StoredEvent) -> None:
            with lock:
                attempts.append((worker, stream(event), event.seq, event.id))
                fail = rng.random() < 0.2
            time.sleep(0.001)  # let the other engine interleave
            if fail:
                raise RuntimeError("flaky host")
            with lock:
                delivered.append((worker, stream(event), event.seq, event.id))

        return handle

    errors: list[BaseException] = []

    def dispatch(engine: Engine, start: threading.Barrier) -> None:
        try:
            start.wait()
            engine.dispatch({"*": [handler_for(engine.worker)]}, limit=2)
        except BaseException as exc:
            errors.append(exc)

    for _ in range(40):
        start = threading.Barrier(len(engines))
        threads = [threading.Thread(target=dispatch, args=(e, start)) for e in engines]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        assert not errors, errors
        if not billing.engine.events():
            break
        billing.clock.advance(timedelta(hours=2))  # past any back-off
    assert billing.engine.events() == []

    ids = {e.seq: e.id for e in pending}
    assert Counter(event_id for *_, event_id in delivered) == Counter(ids.values())
    per_stream: dict[str, list[int]] = defaultdict(list)
    for _, name, seq, event_id in delivered:
        assert ids[seq] == event_id  # a stable id, whoever delivers it, however often
        per_stream[name].append(seq)
    expected: dict[str, list[int]] = defaultdict(list)
    for event in pending:
        expected[stream(event)].append(event.seq)
    assert dict(per_stream) == dict(expected)  # each stream exactly in seq order
    tried: dict[str, list[int]] = defaultdict(list)
    for _, name, seq, _ in attempts:
        tried[name].append(seq)
    for seqs in tried.values():  # a retry repeats its event, never an earlier one
        assert all(a <= b for a, b in pairwise(seqs)), seqs
    assert len(attempts) > len(delivered)  # some failed and were retried
