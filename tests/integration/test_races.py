"""Races on one balance, one payment or one claim, replayed deterministically on PostgreSQL (READ
COMMITTED).

One thread is held at a chosen SQL statement (a SQLAlchemy ``after_cursor_execute`` listener)
while another runs; the held one goes on only once the other has finished or is waiting on a row
lock (read from ``pg_stat_activity``), so each test always replays the same interleaving, however
busy the machine is. SQLite is left out on purpose: every transaction there starts with ``BEGIN
IMMEDIATE`` and holds the database's one write lock, so two never interleave.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from typing import Any

import pytest
import sqlalchemy
from sqlalchemy import event, text

from billing import open_engine
from billing.clock import ManualClock
from billing.config import Settings
from billing.domain.catalog import Plan
from billing.domain.errors import ConcurrentUpdate
from billing.domain.money import Money
from billing.domain.payments import RefundStatus
from billing.engine import Engine
from billing.testing import FakeGateway
from tests.integration.conftest import SCL

START = datetime(2026, 3, 1, 12, tzinfo=SCL)
ORO = Plan.of(code="oro", name="Oro", price="10000", currency="CLP")
PLATINO = Plan.of(code="platino", name="Platino", price="30000", currency="CLP")


def clp(amount: int) -> Money:
    return Money.of(amount, "CLP")


class Held:
    """Runs a call in a thread of its own, holding it right after its first statement that
    matches ``pattern`` (its first read or write of the contended row) until :meth:`go`."""

    def __init__(self, engine: Engine, pattern: str, call: Callable[[], Any]) -> None:
        self._pattern = re.compile(pattern, re.IGNORECASE | re.DOTALL)
        self._call = call
        self._engine = engine.store.engine
        self.reached = threading.Event()
        self._go = threading.Event()
        self.result: Any = None
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)
        event.listen(self._engine, "after_cursor_execute", self._hook)
        self._thread.start()
        assert self.reached.wait(30), f"the call never ran a statement matching {pattern!r}"

    def _hook(self, *args: Any) -> None:
        statement = args[2]
        if (
            threading.current_thread() is self._thread
            and not self.reached.is_set()
            and self._pattern.search(statement)
        ):
            self.reached.set()
            assert self._go.wait(60), "never released"

    def _run(self) -> None:
        try:
            self.result = self._call()
        except BaseException as exc:  # reported by go()
            self.error = exc

    def go(self) -> Any:
        self._go.set()
        self._thread.join(60)
        event.remove(self._engine, "after_cursor_execute", self._hook)
        if self.error is not None:
            raise self.error
        return self.result


class Other:
    """Another call, in its own thread, run until it finished or waits on a row lock."""

    def __init__(self, admin: sqlalchemy.Engine, call: Callable[[], Any]) -> None:
        self.result: Any = None
        self.error: BaseException | None = None
        self.blocked = False
        thread = threading.Thread(target=self._run, args=(call,), daemon=True)
        thread.start()
        deadline = time.monotonic() + 60
        while thread.is_alive() and time.monotonic() < deadline:
            if _waiting_on_a_lock(admin):
                self.blocked = True
                break
            time.sleep(0.01)
        self._thread = thread

    def _run(self, call: Callable[[], Any]) -> None:
        try:
            self.result = call()
        except BaseException as exc:
            self.error = exc

    def done(self) -> Any:
        self._thread.join(60)
        if self.error is not None:
            raise self.error
        return self.result


def _waiting_on_a_lock(admin: sqlalchemy.Engine) -> bool:
    with admin.connect() as connection:
        return bool(
            connection.execute(
                text(
                    "SELECT count(*) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND wait_event_type = 'Lock'"
                )
            ).scalar_one()
        )


@pytest.fixture
def engine(postgres_url: str) -> Iterator[Engine]:
    clock = ManualClock(START)
    with open_engine(
        postgres_url, clock=clock, gateways=[FakeGateway()], settings=Settings(threads=1)
    ) as opened:
        for plan in (ORO, PLATINO):
            opened.create_plan(plan)
        opened.create_customer(customer_id="c1", timezone="America/Santiago")
        opened.add_payment_method("c1", gateway="fake", token="tok_c1")
        yield opened


@pytest.fixture
def admin(postgres_url: str) -> Iterator[sqlalchemy.Engine]:
    db = sqlalchemy.create_engine(postgres_url)
    yield db
    db.dispose()


def credit(engine: Engine) -> Money:
    return engine.credit_balance("c1", "CLP").amount


def books_balance(engine: Engine) -> None:
    report = engine.audit()
    assert report.balanced, "\n".join(map(str, report.findings))


def renewal_due(engine: Engine) -> None:
    """A subscription paid for March, and the clock at its renewal; 10000 of credit."""
    engine.subscribe("c1", "oro")
    engine.grant_credit("c1", clp(10000))
    engine.clock.set(datetime(2026, 4, 1, 12, tzinfo=SCL))  # type: ignore[attr-defined]


def test_a_grant_racing_a_renewal_that_spends_the_credit_is_not_lost(
    engine: Engine, admin: sqlalchemy.Engine
):
    renewal_due(engine)
    renewal = Held(engine, r"FROM credit_balances.*FOR UPDATE", engine.run_due)
    grant = Other(admin, lambda: engine.grant_credit("c1", clp(5000)))
    renewal.go()
    grant.done()
    assert credit(engine) == clp(5000)  # 10000 spent by the renewal, then 5000 granted
    books_balance(engine)


def test_a_renewal_racing_a_grant_sees_the_granted_credit(engine: Engine, admin: sqlalchemy.Engine):
    renewal_due(engine)
    grant = Held(engine, r"credit_balances", lambda: engine.grant_credit("c1", clp(5000)))
    renewal = Other(admin, engine.run_due)
    grant.go()
    renewal.done()
    assert credit(engine) == clp(5000)  # 15000 - 10000
    books_balance(engine)


def test_two_racing_grants_both_count(engine: Engine, admin: sqlalchemy.Engine):
    engine.grant_credit("c1", clp(1000))
    first = Held(engine, r"credit_balances", lambda: engine.grant_credit("c1", clp(2000)))
    second = Other(admin, lambda: engine.grant_credit("c1", clp(4000)))
    first.go()
    second.done()
    assert credit(engine) == clp(7000)
    books_balance(engine)


def test_a_plan_change_invoiced_at_once_and_another_renewal_never_spend_the_same_credit(
    engine: Engine, admin: sqlalchemy.Engine
):
    changing = engine.subscribe("c1", "oro")
    engine.clock.set(START + timedelta(days=10))  # type: ignore[attr-defined]
    engine.create_customer(customer_id="c0", timezone="America/Santiago")  # a clock tick's work
    renewing = engine.subscribe("c1", "oro")  # renews on April 11
    engine.grant_credit("c1", clp(10000))
    engine.clock.set(datetime(2026, 4, 1, 12, tzinfo=SCL))  # type: ignore[attr-defined]
    engine.run_due()  # March's renewal of the first one spends the 10000
    engine.grant_credit("c1", clp(12000))
    engine.clock.set(datetime(2026, 4, 11, 12, tzinfo=SCL))  # type: ignore[attr-defined]
    change = Held(
        engine,
        r"FROM credit_balances",
        lambda: engine.change_plan(changing.id, "platino", behavior="invoice_now"),
    )
    renewal = Other(admin, engine.run_due)  # the second one's renewal wants the credit too
    change.go()
    renewal.done()
    used = sum(i.credit_applied.minor for i in engine.invoices(customer_id="c1"))
    assert used == 22000  # every peso granted was spent once, never twice
    assert credit(engine) == clp(0)
    assert engine.subscription(renewing.id).current_index == 1
    books_balance(engine)


def test_two_concurrent_partial_refunds_of_one_payment_both_succeed(
    engine: Engine, admin: sqlalchemy.Engine
):
    subscription = engine.subscribe("c1", "oro")
    [payment] = engine.payments(subscription_id=subscription.id)
    first = Held(
        engine,
        r"FROM refunds.*ORDER BY",  # it has counted the refunds before it: its key is chosen
        lambda: engine.refund(payment.id, amount=clp(3000)),
    )
    second = Other(admin, lambda: engine.refund(payment.id, amount=clp(4000)))
    refunds = [first.go(), second.done()]
    assert sorted(r.amount.minor for r in refunds) == [3000, 4000]
    assert {r.status for r in refunds} == {RefundStatus.SUCCEEDED}
    assert len(engine.refunds(payment.id)) == 2
    books_balance(engine)


def test_a_key_taken_by_a_concurrent_call_is_a_billing_error_never_a_driver_one(
    engine: Engine, admin: sqlalchemy.Engine
):
    first = Held(
        engine,
        r"FROM customers",
        lambda: engine.create_customer(customer_id="twice", timezone="UTC"),
    )
    Other(admin, lambda: engine.create_customer(customer_id="twice", timezone="UTC")).done()
    with pytest.raises(ConcurrentUpdate):
        first.go()
    assert engine.customer("twice").id == "twice"


# -- the billing loop ---------------------------------------------------------------------------


def test_an_outcome_recorded_by_a_worker_whose_claim_lapsed_and_by_its_successor_is_one_fact(
    engine: Engine, postgres_url: str, admin: sqlalchemy.Engine
):
    """Worker A charges and is slow to record the answer; its claim lapses and worker B, taking
    the subscription over, learns the same outcome from the gateway. One payment.succeeded."""
    clock = engine.clock
    assert isinstance(clock, ManualClock)
    [fake] = engine.gateways.values()
    subscription = engine.subscribe("c1", "oro")
    clock.set(datetime(2026, 4, 1, 12, tzinfo=SCL))
    with open_engine(postgres_url, clock=clock, gateways=[fake]) as successor:
        slow = Held(engine, r"FROM payments\s+WHERE payments\.id (=|IN)", engine.run_due)
        clock.advance(engine.settings.unanswered_after)  # A's claim lapses; the attempt is due
        taking_over = Other(admin, successor.reconcile)
        slow.go()
        taking_over.done()
    [_, renewal] = engine.invoices(subscription_id=subscription.id)
    [attempt] = engine.payments(invoice_id=renewal.id)
    assert fake.calls[attempt.idempotency_key] == 1
    succeeded = [
        e
        for e in engine.events(limit=500)
        if e.name == "payment.succeeded" and e.payload["payment_id"] == attempt.id
    ]
    assert len(succeeded) == 1
    assert credit(engine) == clp(0)  # not a second payment credited as an overpayment
    books_balance(engine)


def test_releasing_claims_never_waits_on_a_row_another_transaction_holds(
    engine: Engine, admin: sqlalchemy.Engine
):
    """Releases take rows in id order and skip locked ones, so they cannot deadlock with other
    workers claiming and releasing the same rows in other orders."""
    clock = engine.clock
    assert isinstance(clock, ManualClock)
    subscription = engine.subscribe("c1", "oro")
    store = engine.store
    with store.transaction() as tx:
        tx.session.execute(
            text("UPDATE subscriptions SET claimed_by = 'gone', claimed_until = :t"),
            {"t": clock.now() - timedelta(seconds=1)},
        )
    with admin.connect() as holder:
        holder.execute(
            text("SELECT id FROM subscriptions WHERE id = :id FOR UPDATE"),
            {"id": subscription.id},
        )
        sweeping = Other(admin, engine.reconcile)
        assert not sweeping.blocked
        sweeping.done()

        def release() -> None:
            with store.transaction() as tx:
                tx.release("gone", [subscription.id])

        releasing = Other(admin, release)
        assert not releasing.blocked
        releasing.done()
        holder.rollback()
