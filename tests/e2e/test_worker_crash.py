"""A worker SIGKILLed mid-run, then others take over: nothing charged twice, nothing missed.

The crashing worker is ``tests/e2e/crash_worker.py``: it kills itself the nth time one of the
instrumentation hooks fires (after a claim, after an attempt is written, once the gateway
answered, just before an outcome commits). Then ordinary ``billing worker --once`` processes run
until the work is done: the dead worker's claims lapse after the lease, and its unsettled
attempt is reconciled with the gateway (``sync``, or a send with the same idempotency key when the
gateway never got it).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, func, select
from sqlmodel import col

from billing.bootstrap import open_engine
from billing.clock import ManualClock
from billing.domain.catalog import Plan
from billing.store.tables import InvoiceRow, PaymentRow, SubscriptionRow
from billing.testing import FakeGateway, serve

CRASH_WORKER = Path(__file__).with_name("crash_worker.py")
NEVER_FIRED = 3  # crash_worker's exit code when the point never fired
LEASE = 1.0
RECONCILE_AFTER = 1.0
GATEWAY_TIMEOUT = 1.0  # an unanswered attempt is checked after the lease and this
MAX_WAIT = 5.0  # the longest a pass waits for claims to lapse and checks to come due
PASSES = 10
TIMEOUT = 30
CUSTOMERS = 4
UNSETTLED = ("created", "pending", "requires_action", "unknown")

# claimed fires once per batch of BATCH; the other points once per payment
BATCH = 4
CRASHES = [
    ("claimed", 3),
    ("attempt_written", 5),
    ("gateway_answered", 5),
    ("before_outcome_commit", 5),
]


def _populate(database_url: str, subscriptions: int) -> list[str]:
    """Monthly subscriptions that started a minute after an instant a day ago: all due now."""
    then = datetime.now(UTC) - timedelta(days=1)
    ids = [f"s{s}" for s in range(subscriptions)]
    with open_engine(database_url, clock=ManualClock(then), gateways=[FakeGateway()]) as engine:
        engine.create_plan(Plan.of(code="oro", name="Plan Oro", price="10000", currency="CLP"))
        for c in range(CUSTOMERS):
            engine.create_customer(customer_id=f"c{c}", timezone="America/Santiago")
            engine.add_payment_method(f"c{c}", gateway="fake", token=f"tok_c{c}")
        for s, subscription_id in enumerate(ids):
            engine.subscribe(
                f"c{s % CUSTOMERS}",
                "oro",
                subscription_id=subscription_id,
                start=then + timedelta(minutes=1),
            )
    return ids


def _environment(database_url: str, gateway_url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BILLING_")}
    env.update(
        BILLING_DATABASE_URL=database_url,
        BILLING_FAKE_GATEWAY_URL=gateway_url,
        BILLING_LEASE_SECONDS=str(LEASE),
        BILLING_RECONCILE_AFTER_SECONDS=str(RECONCILE_AFTER),
        BILLING_GATEWAY_TIMEOUT_SECONDS=str(GATEWAY_TIMEOUT),
        BILLING_THREADS="1",
        BILLING_BATCH_SIZE=str(BATCH),
    )
    return env


def _crash_command(point: str, nth: int) -> list[str]:
    return [sys.executable, str(CRASH_WORKER), point, str(nth)]


WORKER = [sys.executable, "-m", "billing", "worker", "--once", "--log-level", "warning"]


def _crashed(result: subprocess.CompletedProcess[str] | Any) -> dict[str, Any]:
    """Check that a crash worker died by SIGKILL at its point, and return what it printed."""
    stdout, stderr = result.stdout, result.stderr
    assert result.returncode != NEVER_FIRED, f"the crash point never fired: {stderr}"
    assert result.returncode == -signal.SIGKILL, (result.returncode, stdout, stderr)
    lines = [line for line in stdout.splitlines() if line.startswith("{")]
    assert len(lines) == 1, stdout
    return json.loads(lines[0])


@dataclass
class State:
    due: int
    unsettled: int
    claimed: int
    invoices: list[Any]
    payments: list[Any]
    subscriptions: list[Any]

    @property
    def done(self) -> bool:
        return self.due == 0 and self.unsettled == 0


def _state(database_url: str) -> State:
    database = create_engine(database_url)
    try:
        with database.connect() as connection:
            now = datetime.now(UTC)
            due = connection.execute(
                select(func.count())
                .select_from(SubscriptionRow)
                .where(col(SubscriptionRow.next_run_at) <= now)
            ).scalar_one()
            unsettled = connection.execute(
                select(func.count())
                .select_from(PaymentRow)
                .where(col(PaymentRow.status).in_(UNSETTLED))
            ).scalar_one()
            claimed = connection.execute(
                select(func.count())
                .select_from(SubscriptionRow)
                .where(col(SubscriptionRow.claimed_by).is_not(None))
            ).scalar_one()
            invoices = list(connection.execute(select(InvoiceRow)).all())
            payments = list(connection.execute(select(PaymentRow)).all())
            subscriptions = list(connection.execute(select(SubscriptionRow)).all())
    finally:
        database.dispose()
    return State(due, unsettled, claimed, invoices, payments, subscriptions)


def _takeover_at(state: State) -> datetime | None:
    """When every claim held has lapsed and every unsettled attempt is due for its check."""
    times = [s.claimed_until for s in state.subscriptions if s.claimed_by is not None]
    times += [p.check_at for p in state.payments if p.status in UNSETTLED]
    return max((t for t in times if t is not None), default=None)


def _left(state: State) -> str:
    now = datetime.now(UTC)
    due = [
        (s.id, s.next_run_at, s.claimed_by)
        for s in state.subscriptions
        if s.next_run_at is not None and s.next_run_at <= now
    ]
    unsettled = [(p.id, p.status, p.check_at) for p in state.payments if p.status in UNSETTLED]
    return f"at {now}: due {due}, unsettled {unsettled}"


def _finish(env: dict[str, str], database_url: str) -> tuple[State, int]:
    """Run ordinary one-pass workers until all is done, each once the dead worker's claims have
    lapsed and the unsettled attempts are due for their check (or after at most MAX_WAIT)."""
    state = _state(database_url)
    for passes in range(1, PASSES + 1):
        until = _takeover_at(state)
        wait = 0.0 if until is None else (until - datetime.now(UTC)).total_seconds() + 0.1
        time.sleep(min(max(wait, 0.1), MAX_WAIT))
        result = subprocess.run(WORKER, env=env, capture_output=True, text=True, timeout=TIMEOUT)
        assert result.returncode == 0, result.stderr
        state = _state(database_url)
        if state.done:
            print(f"done after {passes} pass(es) of {WORKER[2:]}")
            return state, passes
    pytest.fail(f"still work left after {PASSES} passes: {_left(state)}")


def _invoice_of(key: str, invoices: dict[str, int]) -> str | None:
    return next((invoice for invoice in invoices if key.startswith(f"{invoice}-")), None)


def _check_books(fake: FakeGateway, state: State, subscriptions: list[str]) -> None:
    """Exactly one charge per subscription, all recorded: the invariants after any crash."""
    # one invoice per subscription, all paid
    assert Counter(invoice.subscription_id for invoice in state.invoices) == Counter(
        dict.fromkeys(subscriptions, 1)
    )
    unpaid = [(i.id, i.status) for i in state.invoices if i.status != "paid"]
    assert unpaid == []
    totals = {invoice.id: invoice.total_minor for invoice in state.invoices}

    # the fake took exactly one charge per invoice (keys are "<invoice id>-<attempt>"), of its
    # total; no key charged twice
    taken = fake.charges_taken()
    twice = [k for k, n in Counter(c.idempotency_key for c in taken).items() if n > 1]
    assert twice == []
    invoice_of = {
        charge.idempotency_key: _invoice_of(charge.idempotency_key, totals) for charge in taken
    }
    assert Counter(invoice_of.values()) == Counter(dict.fromkeys(totals, 1))
    for charge in taken:
        assert charge.amount.minor == totals[invoice_of[charge.idempotency_key]]
    assert Counter(charge.customer_id for charge in taken) == Counter(
        {f"c{c}": len(subscriptions) // CUSTOMERS for c in range(CUSTOMERS)}
    )

    # one attempt per invoice, succeeded, with the reference of the charge the fake took
    references = {charge.idempotency_key: charge.reference for charge in taken}
    assert Counter(payment.invoice_id for payment in state.payments) == Counter(
        dict.fromkeys(totals, 1)
    )
    wrong = [
        (p.id, p.idempotency_key, p.status, p.reference)
        for p in state.payments
        if p.status != "succeeded" or p.reference != references.get(p.idempotency_key)
    ]
    assert wrong == []
    # every key the gateway was sent is one of those attempts'
    assert set(fake.calls) == {payment.idempotency_key for payment in state.payments}

    # nothing due, nothing unsettled, no claim held, every subscription billing normally
    assert (state.due, state.unsettled, state.claimed) == (0, 0, 0)
    assert {s.id: s.status for s in state.subscriptions} == dict.fromkeys(subscriptions, "active")
    assert all(s.next_run_at is not None for s in state.subscriptions)


def _check_lost_answer(fake: FakeGateway, state: State, crash: dict[str, Any]) -> None:
    """The attempt the dead worker was sending ended succeeded, charged once, reconciled."""
    if crash["point"] == "claimed":
        claimed = set(crash["subscriptions"])
        assert len(claimed) == BATCH
        billed = {invoice.subscription_id for invoice in state.invoices}
        assert claimed <= billed
        return
    payment = next(p for p in state.payments if p.id == crash["payment"])
    assert payment.status == "succeeded"
    assert payment.reference is not None
    [charge] = [c for c in fake.charges_taken() if c.idempotency_key == payment.idempotency_key]
    assert payment.reference == charge.reference
    if crash["point"] == "gateway_answered":
        assert crash["reference"] == charge.reference  # the answer the dead worker held
    # never sent before the crash (attempt_written), then sent once with its key; or sent once
    # and its outcome lost (gateway_answered, before_outcome_commit), then found with sync
    assert fake.calls[payment.idempotency_key] == 1


@pytest.mark.parametrize(("point", "nth"), CRASHES, ids=[point for point, _ in CRASHES])
def test_a_worker_killed_mid_run_leaves_nothing_double_charged_or_missed(
    database_url: str, point: str, nth: int
) -> None:
    subscriptions = _populate(database_url, 20)
    fake = FakeGateway()
    with serve(fake) as url:
        env = _environment(database_url, url)
        result = subprocess.run(
            _crash_command(point, nth), env=env, capture_output=True, text=True, timeout=TIMEOUT
        )
        crash = _crashed(result)
        assert crash["point"] == point

        # the crash left work behind: what it held, and the rest it never got to
        before = _state(database_url)
        assert not before.done
        assert before.claimed >= 1
        if point != "claimed":
            [lost] = [p for p in before.payments if p.id == crash["payment"]]
            assert lost.status == "created"  # its answer, if any, was never recorded

        state, _ = _finish(env, database_url)
        _check_books(fake, state, subscriptions)
        _check_lost_answer(fake, state, crash)


def test_a_worker_killed_while_another_runs_leaves_nothing_double_charged_or_missed(
    database_url: str,
) -> None:
    subscriptions = _populate(database_url, 40)
    fake = FakeGateway(latency=timedelta(milliseconds=50))  # both workers take a while
    with serve(fake) as url:
        env = _environment(database_url, url)
        crashing = subprocess.Popen(
            _crash_command("attempt_written", 8),
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        other = subprocess.Popen(
            WORKER, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        crash_out, crash_err = crashing.communicate(timeout=TIMEOUT)
        overlapped = other.poll() is None  # the other worker was still at work at the crash
        _, other_err = other.communicate(timeout=TIMEOUT)
        assert other.returncode == 0, other_err
        crash = _crashed(subprocess.CompletedProcess([], crashing.returncode, crash_out, crash_err))
        assert overlapped

        state, _ = _finish(env, database_url)
        _check_books(fake, state, subscriptions)
        _check_lost_answer(fake, state, crash)
