"""The notification inbox: a notification is kept as it arrived before anything else, answered at
once when the host asks for that, and processed exactly once: redelivered, delivered to several
engines at the same moment, or retried after the gateway could not be asked."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from datetime import timedelta

import pytest
from sqlalchemy import create_engine, func, select

from billing import open_engine
from billing.clock import ManualClock
from billing.config import Settings
from billing.domain.catalog import Plan
from billing.domain.payments import PaymentStatus
from billing.engine import Engine
from billing.ports import Notification, PaymentResult, SyncRequest
from billing.services.notifications import MAX_BODY_BYTES, NotificationStatus
from billing.store.tables import InboxRow, NotificationRow
from billing.testing import Behavior, FakeGateway
from tests.integration.conftest import START
from tests.integration.test_money_rules import balanced


class FlakyFake(FakeGateway):
    """The fake gateway, which cannot be asked about a charge while ``down``."""

    down = False

    def sync(self, request: SyncRequest) -> PaymentResult | None:
        if self.down:
            return PaymentResult(status=PaymentStatus.UNKNOWN, message="the gateway is down")
        return super().sync(request)


@pytest.fixture
def fake() -> FlakyFake:
    return FlakyFake(pending_for=timedelta(hours=1))


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(START)


def engine_on(url: str, clock: ManualClock, fake: FakeGateway) -> Engine:
    return open_engine(url, clock=clock, gateways=[fake], settings=Settings(threads=1))


@pytest.fixture
def engine(database_url: str, clock: ManualClock, fake: FlakyFake) -> Iterator[Engine]:
    engine = engine_on(database_url, clock, fake)
    engine.create_plan(Plan.of(code="mes", name="Mes", price="10000", currency="CLP"))
    yield engine
    engine.close()


def paid_link(
    engine: Engine, fake: FakeGateway, clock: ManualClock, customer: str = "c1"
) -> tuple[str, str]:
    """A subscription whose first payment link the customer paid (an hour later; the engine
    has not heard yet); returns the subscription's id and the charge's reference at the
    gateway, which its notification names."""
    engine.create_customer(customer_id=customer, timezone="America/Santiago")
    engine.add_payment_method(customer, gateway="fake", token=f"tok_{customer}")
    fake.script(customer, Behavior.PAY_BY_LINK)
    subscription = engine.subscribe(customer, "mes")
    [payment] = engine.payments(subscription_id=subscription.id)
    assert payment.status is PaymentStatus.REQUIRES_ACTION
    assert payment.reference is not None
    clock.advance(timedelta(hours=2))
    return subscription.id, payment.reference


def payment_status(engine: Engine, subscription_id: str) -> PaymentStatus:
    [payment] = engine.payments(subscription_id=subscription_id)
    return payment.status


def inbox(url: str) -> list[InboxRow]:
    database = create_engine(url)
    try:
        with database.connect() as connection:
            rows = connection.execute(select(InboxRow).order_by(InboxRow.received_at)).all()
            return [InboxRow.model_validate(row._mapping) for row in rows]
    finally:
        database.dispose()


def recorded_notifications(url: str) -> int:
    database = create_engine(url)
    try:
        with database.connect() as connection:
            return int(connection.scalar(select(func.count()).select_from(NotificationRow)) or 0)
    finally:
        database.dispose()


def deliver(engine: Engine, notification: Notification, **options: bool):
    return engine.receive_notification(
        "fake", headers=notification.headers, body=notification.body, **options
    )


def test_a_notification_kept_unprocessed_is_answered_at_once_and_processed_by_the_worker(
    engine: Engine, fake: FlakyFake, clock: ManualClock, database_url: str
):
    subscription_id, reference = paid_link(engine, fake, clock)
    webhook = fake.notification(reference)
    headers = {**webhook.headers, "Authorization": "Basic c2VjcmV0"}

    receipt = engine.receive_notification(
        "fake", headers=headers, body=webhook.body, process_now=False
    )

    assert receipt.status is NotificationStatus.RECEIVED
    assert receipt.notification_id is not None
    assert payment_status(engine, subscription_id) is PaymentStatus.REQUIRES_ACTION, "not yet"
    [kept] = inbox(database_url)
    assert (kept.status, kept.body.encode(), kept.event_id) == (
        "received",
        webhook.body,
        receipt.event_id,
    )
    assert "Authorization" not in kept.headers, "credentials are never kept"

    assert engine.process_notifications() == 1
    assert payment_status(engine, subscription_id) is PaymentStatus.SUCCEEDED
    [kept] = inbox(database_url)
    [payment] = engine.payments(subscription_id=subscription_id)
    assert (kept.status, kept.payment_id) == ("processed", payment.id)
    assert engine.process_notifications() == 0
    again = engine.process_notification(receipt.notification_id)
    assert again.status is NotificationStatus.PROCESSED, "the receipt of what was done"
    assert [e.name for e in engine.events(limit=100)].count("payment.succeeded") == 1
    balanced(engine)


def test_the_same_body_again_is_a_duplicate_kept_once(
    engine: Engine, fake: FlakyFake, clock: ManualClock, database_url: str
):
    _, reference = paid_link(engine, fake, clock)
    webhook = fake.notification(reference, "evt_1")
    first = deliver(engine, webhook, process_now=False)

    again = deliver(engine, webhook)

    assert again.status is NotificationStatus.DUPLICATE
    assert again.notification_id == first.notification_id
    assert len(inbox(database_url)) == 1


def test_a_notification_the_gateway_cannot_confirm_waits_and_is_retried_with_a_back_off(
    engine: Engine, fake: FlakyFake, clock: ManualClock, database_url: str
):
    subscription_id, reference = paid_link(engine, fake, clock)
    fake.down = True

    receipt = deliver(engine, fake.notification(reference))

    assert receipt.status is NotificationStatus.RECEIVED, "kept: the host answers 2xx"
    [kept] = inbox(database_url)
    assert (kept.status, kept.attempts) == ("received", 1)
    assert kept.next_attempt_at > clock.now()
    assert engine.process_notifications() == 0, "not before its back-off"
    fake.down = False
    clock.advance(timedelta(seconds=2))
    assert engine.process_notifications() == 1
    assert payment_status(engine, subscription_id) is PaymentStatus.SUCCEEDED
    assert recorded_notifications(database_url) == 1


def test_a_second_notification_of_an_event_in_another_body_is_a_duplicate(
    engine: Engine, fake: FlakyFake, clock: ManualClock, database_url: str
):
    _, reference = paid_link(engine, fake, clock)
    first = deliver(engine, fake.notification(reference, "evt_1"))
    other_body = fake.notification(reference, "evt_1")
    other_body = Notification(headers=other_body.headers, body=other_body.body + b"\n")

    again = deliver(engine, other_body)

    assert first.status is NotificationStatus.PROCESSED
    assert again.status is NotificationStatus.DUPLICATE
    assert [row.status for row in inbox(database_url)] == ["processed", "duplicate"]


@pytest.mark.parametrize(
    ("body", "reason"),
    [(b"x" * (MAX_BODY_BYTES + 1), "larger than"), (b"\xff\xfe", "UTF-8"), (b"{}", "fake")],
)
def test_an_unacceptable_notification_is_rejected_and_kept_nowhere(
    engine: Engine, database_url: str, body: bytes, reason: str
):
    receipt = engine.receive_notification("fake", headers={}, body=body, process_now=False)

    assert receipt.status is NotificationStatus.REJECTED
    assert reason in (receipt.message or "")
    assert inbox(database_url) == []


def at_once(count: int, action: Callable[[int], object]) -> list[object]:
    """Run ``action(i)`` for ``count`` threads released at the same moment."""
    barrier = threading.Barrier(count)
    results: list[object] = [None] * count

    def run(index: int) -> None:
        barrier.wait()
        try:
            results[index] = action(index)
        except Exception as exc:  # reported by the assertion below
            results[index] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return results


def test_the_same_notification_delivered_to_several_engines_at_once_is_processed_once(
    engine: Engine, fake: FlakyFake, clock: ManualClock, database_url: str
):
    subscription_id, reference = paid_link(engine, fake, clock)
    webhook = fake.notification(reference, "evt_1")
    engines = [engine_on(database_url, clock, fake) for _ in range(4)]
    try:
        receipts = at_once(4, lambda i: deliver(engines[i], webhook))
    finally:
        for other in engines:
            other.close()

    statuses = sorted(getattr(r, "status", r) for r in receipts)  # type: ignore[arg-type]
    assert statuses == ["duplicate", "duplicate", "duplicate", "processed"], receipts
    assert payment_status(engine, subscription_id) is PaymentStatus.SUCCEEDED
    assert [e.name for e in engine.events(limit=100)].count("payment.succeeded") == 1
    assert recorded_notifications(database_url) == 1
    balanced(engine)


def test_notifications_about_one_payment_processed_by_several_engines_at_once_record_it_once(
    engine: Engine, fake: FlakyFake, clock: ManualClock, database_url: str
):
    subscription_ids, references = zip(
        *(paid_link(engine, fake, clock, customer) for customer in ("c1", "c2")), strict=True
    )
    for reference in references:  # two events for each payment, kept for the worker
        for event in ("a", "b"):
            kept = deliver(
                engine, fake.notification(reference, f"{reference}_{event}"), process_now=False
            )
            assert kept.status is NotificationStatus.RECEIVED
    engines = [engine_on(database_url, clock, fake) for _ in range(3)]
    try:
        settled = at_once(3, lambda i: engines[i].process_notifications())
    finally:
        for other in engines:
            other.close()

    assert sum(settled) == 4, settled  # type: ignore[arg-type]
    rows = inbox(database_url)
    assert [(row.status, row.attempts) for row in rows] == [("processed", 1)] * 4, "each once"
    assert recorded_notifications(database_url) == 4
    for subscription_id in subscription_ids:
        assert payment_status(engine, subscription_id) is PaymentStatus.SUCCEEDED
    assert [e.name for e in engine.events(limit=100)].count("payment.succeeded") == 2
    balanced(engine)
