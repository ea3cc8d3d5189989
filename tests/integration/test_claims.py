"""Claims on subscriptions: two engines on one database (two workers) never bill the same
subscription at once; a claim lasts until its lease lapses; billing runs release what they
claimed; and the hooks fire in their documented order for one payment."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

import pytest
from sqlalchemy import Engine as SqlEngine
from sqlalchemy import create_engine, select
from sqlmodel import col

from billing.bootstrap import open_engine
from billing.clock import ManualClock
from billing.config import Settings
from billing.domain.catalog import Plan
from billing.domain.payments import PaymentResult, PaymentStatus
from billing.engine import Engine
from billing.services.hooks import Hooks
from billing.store.database import normalize_url
from billing.store.tables import InvoiceRow, PaymentRow, SubscriptionRow
from billing.store.unit_of_work import Store
from billing.testing import FakeGateway
from tests.integration.conftest import START

ORO = Plan.of(code="oro", name="Plan Oro", price="10000", currency="CLP")
LEASE = timedelta(seconds=30)


@dataclass
class Pair:
    """Two engines (two workers) on one database, reading one manual clock."""

    a: Engine
    b: Engine
    clock: ManualClock
    fake: FakeGateway
    url: str


def _store(engine: Engine) -> Store:
    return engine._ctx.store  # the engine's own store: the claims API lives on its transactions


def claim_due(engine: Engine, *, limit: int = 100, checks_only: bool = False) -> list[str]:
    """What a billing run does first: claim due subscriptions under this engine's name."""
    now = engine.clock.now()
    with _store(engine).transaction() as tx:
        return tx.claim_due(
            engine.worker,
            now=now,
            wall_now=now,
            lease_until=now + engine.settings.lease,
            limit=limit,
            checks_only=checks_only,
        )


def claims(engine: Engine) -> dict[str, str | None]:
    with _store(engine).transaction() as tx:
        return {subscription_id: worker for subscription_id, worker, _ in tx.claims()}


def release(engine: Engine, subscription_ids: Sequence[str]) -> None:
    with _store(engine).transaction() as tx:
        tx.release(engine.worker, subscription_ids)


def release_expired(engine: Engine) -> int:
    with _store(engine).transaction() as tx:
        return tx.release_expired(engine.clock.now())


def open_pair(url: str, *, settings: Settings, hooks: Hooks | None = None) -> Pair:
    clock = ManualClock(START)
    fake = FakeGateway()
    a = open_engine(url, clock=clock, gateways=[fake], settings=settings, hooks=hooks)
    b = open_engine(url, clock=clock, gateways=[fake], settings=settings)
    assert a.worker != b.worker
    return Pair(a=a, b=b, clock=clock, fake=fake, url=url)


@pytest.fixture
def pair(database_url: str) -> Iterator[Pair]:
    pair = open_pair(database_url, settings=Settings(lease_seconds=LEASE.total_seconds()))
    yield pair
    pair.a.close()
    pair.b.close()


def populate(engine: Engine, count: int, *, customers: int = 4, prefix: str = "s") -> list[str]:
    """``count`` subscriptions starting a minute from now, so not yet due."""
    engine.create_plan(ORO)
    for c in range(customers):
        engine.create_customer(customer_id=f"c{c}", timezone="America/Santiago")
        engine.add_payment_method(f"c{c}", gateway="fake", token=f"tok_c{c}")
    start = engine.clock.now() + timedelta(minutes=1)
    ids = [f"{prefix}{n}" for n in range(count)]
    for n, subscription_id in enumerate(ids):
        engine.subscribe(f"c{n % customers}", "oro", subscription_id=subscription_id, start=start)
    return ids


def due(pair: Pair, count: int) -> list[str]:
    ids = populate(pair.a, count)
    pair.clock.advance(timedelta(minutes=2))
    return ids


def reader(url: str) -> SqlEngine:
    """A plain connection that reads what is committed, beside the engines' own pools."""
    return create_engine(normalize_url(url))


# -- exclusive claims --------------------------------------------------------------------------


def test_concurrent_claims_from_two_engines_never_hand_one_subscription_to_two_claimers(pair):
    ids = due(pair, 40)
    threads, start = 8, threading.Barrier(8)
    taken: list[list[tuple[str, str]]] = [[] for _ in range(threads)]
    errors: list[BaseException] = []

    def claimer(index: int) -> None:
        engine = pair.a if index % 2 == 0 else pair.b
        try:
            start.wait()
            while batch := claim_due(engine, limit=3):
                taken[index].extend((engine.worker, subscription_id) for subscription_id in batch)
        except BaseException as exc:  # reported below, with the thread's claims
            errors.append(exc)

    workers = [threading.Thread(target=claimer, args=(i,)) for i in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=60)
    assert not errors, errors
    every = [claim for claims_of_one in taken for claim in claims_of_one]
    counts = Counter(subscription_id for _, subscription_id in every)
    assert sorted(counts) == sorted(ids)
    assert set(counts.values()) == {1}, [s for s, n in counts.items() if n > 1]
    # the database agrees with what each claimer was handed
    assert claims(pair.a) == {s: w for w, s in every}


def test_a_claim_is_exclusive_until_its_lease_lapses_then_another_worker_takes_it_over(pair):
    ids = due(pair, 5)
    assert sorted(claim_due(pair.a)) == sorted(ids)
    assert claim_due(pair.b) == []
    pair.clock.advance(LEASE - timedelta(seconds=1))
    assert claim_due(pair.b) == []
    pair.clock.advance(timedelta(seconds=1))  # claimed_until itself: still held
    assert claim_due(pair.b) == []
    assert claim_due(pair.a) == []  # not even its own worker claims it twice
    pair.clock.advance(timedelta(seconds=1))
    assert sorted(claim_due(pair.b)) == sorted(ids)
    assert set(claims(pair.a).values()) == {pair.b.worker}
    with _store(pair.a).transaction() as tx:
        assert not any(tx.holds_claim(s, pair.a.worker, pair.clock.now()) for s in ids)
        assert all(tx.holds_claim(s, pair.b.worker, pair.clock.now()) for s in ids)


def test_release_frees_only_the_workers_own_claims(pair):
    ids = due(pair, 10)
    mine = claim_due(pair.a, limit=4)
    theirs = claim_due(pair.b, limit=4)
    assert len(mine) == len(theirs) == 4
    assert not set(mine) & set(theirs)
    release(pair.a, ids)  # asks for everything: only its own four go
    held = claims(pair.a)
    assert all(held[s] is None for s in mine)
    assert all(held[s] == pair.b.worker for s in theirs)
    assert sorted(claim_due(pair.b)) == sorted(set(ids) - set(theirs))


def test_a_released_claim_that_another_worker_took_over_stays_with_that_worker(pair):
    ids = due(pair, 3)
    claim_due(pair.a)
    pair.clock.advance(LEASE + timedelta(seconds=1))
    assert sorted(claim_due(pair.b)) == sorted(ids)
    release(pair.a, ids)  # a late release by the worker that lost its lease
    assert set(claims(pair.a).values()) == {pair.b.worker}


def test_release_expired_clears_only_lapsed_claims(pair):
    ids = due(pair, 6)
    early = claim_due(pair.a, limit=3)
    pair.clock.advance(timedelta(seconds=20))
    late = claim_due(pair.b, limit=3)
    assert sorted(early + late) == sorted(ids)
    assert release_expired(pair.a) == 0
    pair.clock.advance(timedelta(seconds=15))  # a's lease lapsed 5 s ago, b's has 15 s left
    assert release_expired(pair.b) == 3
    held = claims(pair.a)
    assert all(held[s] is None for s in early)
    assert all(held[s] == pair.b.worker for s in late)
    assert release_expired(pair.a) == 0
    pair.clock.advance(LEASE)
    pair.a.reconcile()  # the worker's reconcile job clears lapsed claims too
    assert set(claims(pair.a).values()) == {None}


def test_checks_only_claims_only_subscriptions_with_an_unsettled_payment_due_a_check(pair):
    engine = pair.a
    engine.create_plan(ORO)
    for ref, behavior in (("paid", "approve"), ("late", "pay_late"), ("lost", "timeout")):
        engine.create_customer(customer_id=ref, timezone="America/Santiago")
        engine.add_payment_method(ref, gateway="fake", token=f"tok_{ref}")
        pair.fake.script(ref, behavior)
        engine.subscribe(ref, "oro", subscription_id=f"s_{ref}")  # charged at once
    engine.create_customer(customer_id="due", timezone="America/Santiago")
    engine.add_payment_method("due", gateway="fake", token="tok_due")
    engine.subscribe("due", "oro", subscription_id="s_due", start=START + timedelta(minutes=1))
    statuses = {p.subscription_id: p.status for p in engine.payments()}
    assert statuses == {
        "s_paid": PaymentStatus.SUCCEEDED,
        "s_late": PaymentStatus.PENDING,
        "s_lost": PaymentStatus.UNKNOWN,
    }

    assert claim_due(engine, checks_only=True) == []  # no check is due yet
    pair.clock.advance(timedelta(minutes=2))  # past the first check and s_due's start
    checks = claim_due(pair.b, checks_only=True)
    assert sorted(checks) == ["s_late", "s_lost"]
    release(pair.b, checks)
    assert sorted(claim_due(pair.b)) == ["s_due", "s_late", "s_lost"]
    release(pair.b, ["s_due", "s_late", "s_lost"])

    report = engine.reconcile()  # checks only: asks about the two, bills nothing
    assert report.claimed == 2
    assert report.steps == 0
    assert engine.invoices(subscription_id="s_due") == []
    statuses = {p.subscription_id: p.status for p in engine.payments()}
    assert statuses["s_lost"] is PaymentStatus.SUCCEEDED
    assert statuses["s_late"] is PaymentStatus.PENDING  # still pending for two days
    assert set(claims(engine).values()) == {None}


# -- billing runs release what they claim ------------------------------------------------------


def test_run_due_bills_and_releases_everything_it_claimed(database_url):
    pair = open_pair(database_url, settings=Settings(threads=2, batch_size=4))
    try:
        ids = due(pair, 10)
        report = pair.a.run_due()
        assert report.claimed == 10
        assert report.payments == 10
        assert set(claims(pair.a).values()) == {None}
        assert len(pair.a.invoices()) == len(ids)
        assert pair.b.run_due().claimed == 0  # nothing left due
    finally:
        pair.a.close()
        pair.b.close()


def test_a_run_told_to_stop_releases_the_rest_of_its_batch_for_another_worker(database_url):
    stopping = threading.Event()

    class StopAfterClaiming(Hooks):
        def claimed(self, subscription_ids: Sequence[str]) -> None:
            stopping.set()

    settings = Settings(threads=1, batch_size=3)
    pair = open_pair(database_url, settings=settings, hooks=StopAfterClaiming())
    try:
        ids = due(pair, 6)
        report = pair.a.run_due(stop=stopping.is_set)
        assert report.claimed == 3
        assert (report.steps, report.payments) == (0, 0)
        assert set(claims(pair.a).values()) == {None}
        other = pair.b.run_due()
        assert other.claimed == 6
        assert other.payments == 6
        assert sorted(pair.fake.calls) == sorted(p.idempotency_key for p in pair.b.payments())
        assert len(pair.b.payments()) == len(ids)
    finally:
        pair.a.close()
        pair.b.close()


def test_a_subscription_whose_work_raises_is_still_released(database_url):
    class FailOnce(Hooks):
        failed = False

        def gateway_answered(self, payment_id: str, result: PaymentResult) -> None:
            if not FailOnce.failed:
                FailOnce.failed = True
                raise RuntimeError("a broken hook")

    pair = open_pair(database_url, settings=Settings(threads=2), hooks=FailOnce())
    try:
        due(pair, 4)
        report = pair.a.run_due()
        assert report.claimed == 4
        assert len(report.failed) == 1
        assert set(claims(pair.a).values()) == {None}
    finally:
        pair.a.close()
        pair.b.close()


# -- hooks -------------------------------------------------------------------------------------


def test_the_hooks_fire_in_order_for_one_payment_with_the_state_each_promises(database_url):
    seen: list[tuple[str, object]] = []
    database = reader(database_url)

    def committed(payment_id: str) -> tuple[str | None, str | None]:
        """The payment's committed status and its subscription's claim, from outside."""
        with database.connect() as connection:
            status = connection.execute(
                select(PaymentRow.status).where(col(PaymentRow.id) == payment_id)
            ).scalar()
            worker = connection.execute(
                select(SubscriptionRow.claimed_by).where(col(SubscriptionRow.id) == "s0")
            ).scalar()
        return status, worker

    def key(payment_id: str) -> str:
        with database.connect() as connection:
            return str(
                connection.execute(
                    select(PaymentRow.idempotency_key).where(col(PaymentRow.id) == payment_id)
                ).scalar()
            )

    class Recorder(Hooks):
        def claimed(self, subscription_ids: Sequence[str]) -> None:
            seen.append(("claimed", list(subscription_ids)))

        def attempt_written(self, payment_id: str) -> None:
            calls = pair.fake.calls[key(payment_id)]
            seen.append(("attempt_written", (payment_id, *committed(payment_id), calls)))

        def gateway_answered(self, payment_id: str, result: PaymentResult) -> None:
            calls = pair.fake.calls[key(payment_id)]
            seen.append(
                ("gateway_answered", (payment_id, *committed(payment_id), calls, result.status))
            )

        def before_outcome_commit(self, payment_id: str) -> None:
            seen.append(("before_outcome_commit", (payment_id, *committed(payment_id))))

    pair = open_pair(database_url, settings=Settings(threads=1), hooks=Recorder())
    try:
        due(pair, 1)
        pair.a.run_due()
        [payment] = pair.a.payments(subscription_id="s0")
        me = pair.a.worker
        assert seen == [
            ("claimed", ["s0"]),
            ("attempt_written", (payment.id, "created", me, 0)),
            ("gateway_answered", (payment.id, "created", me, 1, PaymentStatus.SUCCEEDED)),
            ("before_outcome_commit", (payment.id, "created", me)),  # not committed yet
        ]
        assert committed(payment.id) == ("succeeded", None)
        with database.connect() as connection:
            statuses = connection.execute(select(InvoiceRow.status)).scalars().all()
        assert statuses == ["paid"]
    finally:
        pair.a.close()
        pair.b.close()
        database.dispose()


def test_claims_hold_real_time_leases_with_a_system_clock(database_url):
    """With the system clock, a claim taken now is held for the lease and visible to both."""
    settings = Settings(lease_seconds=30)
    fake = FakeGateway()
    clock = ManualClock(datetime.now(START.tzinfo) - timedelta(days=1))
    with open_engine(database_url, clock=clock, gateways=[fake], settings=settings) as setup:
        ids = populate(setup, 3)
    with (
        open_engine(database_url, gateways=[fake], settings=settings) as a,
        open_engine(database_url, gateways=[fake], settings=settings) as b,
    ):
        assert sorted(claim_due(a)) == sorted(ids)
        assert claim_due(b) == []
        with _store(b).transaction() as tx:
            rows = {s: (w, until) for s, w, until in tx.claims()}
        for subscription_id in ids:
            worker, until = rows[subscription_id]
            assert worker == a.worker
            assert until is not None
            left = until - b.clock.now()
            assert timedelta(seconds=25) < left <= timedelta(seconds=30)
        release(a, ids)
        assert sorted(claim_due(b)) == sorted(ids)
