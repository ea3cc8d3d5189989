"""Four worker processes over 400 due subscriptions: each is charged exactly once."""

from __future__ import annotations

import multiprocessing
import os
import subprocess
import sys
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import create_engine, func, select
from sqlmodel import col

from billing.bootstrap import open_engine
from billing.clock import ManualClock
from billing.domain.catalog import Plan
from billing.store.tables import InvoiceRow, PaymentRow, SubscriptionRow
from billing.testing import FakeGateway, serve

SUBSCRIPTIONS = 400
CUSTOMERS = 100
WORKERS = 4


def _populate(database_url: str) -> datetime:
    """400 subscriptions that started a minute after an instant a day ago: all due now.

    The subscriptions are made by two processes at once (one per core), through the engine.
    """
    then = datetime.now(UTC) - timedelta(days=1)
    with open_engine(database_url, clock=ManualClock(then), gateways=[FakeGateway()]) as engine:
        engine.create_plan(Plan.of(code="oro", name="Plan Oro", price="10000", currency="CLP"))
        for c in range(CUSTOMERS):
            engine.create_customer(customer_id=f"c{c}", timezone="America/Santiago")
            engine.add_payment_method(f"c{c}", gateway="fake", token=f"tok_c{c}")
    halves = [(database_url, then, part, SUBSCRIPTIONS, 2) for part in range(2)]
    with ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("spawn")) as pool:
        list(pool.map(_subscribe, halves))
    return then


def _subscribe(job: tuple[str, datetime, int, int, int]) -> None:
    """Subscriptions ``first``, ``first + step``, ... below ``stop`` (in a pool process)."""
    database_url, then, first, stop, step = job
    with open_engine(database_url, clock=ManualClock(then), gateways=[FakeGateway()]) as engine:
        for s in range(first, stop, step):
            engine.subscribe(
                f"c{s % CUSTOMERS}",
                "oro",
                subscription_id=f"s{s}",
                start=then + timedelta(minutes=1),
            )


@pytest.mark.slow
def test_four_workers_charge_each_of_four_hundred_subscriptions_exactly_once(database_url):
    _populate(database_url)
    fake = FakeGateway()
    with serve(fake) as url:
        env = {**os.environ, "BILLING_DATABASE_URL": database_url, "BILLING_FAKE_GATEWAY_URL": url}
        command = [sys.executable, "-m", "billing", "worker", "--once", "--threads", "8"]
        command += ["--batch", "50", "--log-level", "warning"]
        workers = [
            subprocess.Popen(
                command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
            )
            for _ in range(WORKERS)
        ]
        outputs = [worker.communicate(timeout=600) for worker in workers]
    for worker, (_, stderr) in zip(workers, outputs, strict=True):
        assert worker.returncode == 0, stderr

    calls = fake.calls
    assert len(calls) == SUBSCRIPTIONS
    assert set(calls.values()) == {1}  # every idempotency key sent exactly once
    taken = fake.charges_taken()
    assert len(taken) == SUBSCRIPTIONS
    assert Counter(charge.customer_id for charge in taken) == Counter(
        {f"c{c}": SUBSCRIPTIONS // CUSTOMERS for c in range(CUSTOMERS)}
    )

    database = create_engine(database_url)
    with database.connect() as connection:
        invoices = connection.execute(select(func.count()).select_from(InvoiceRow)).scalar()
        paid = connection.execute(
            select(func.count())
            .select_from(PaymentRow)
            .where(col(PaymentRow.status) == "succeeded")
        ).scalar()
        attempts = connection.execute(select(func.count()).select_from(PaymentRow)).scalar()
        due = connection.execute(
            select(func.count())
            .select_from(SubscriptionRow)
            .where(col(SubscriptionRow.next_run_at) <= datetime.now(UTC))
        ).scalar()
        claimed = connection.execute(
            select(func.count())
            .select_from(SubscriptionRow)
            .where(col(SubscriptionRow.claimed_by).is_not(None))
        ).scalar()
    database.dispose()
    assert (invoices, attempts, paid) == (SUBSCRIPTIONS, SUBSCRIPTIONS, SUBSCRIPTIONS)
    assert due == 0  # nothing due left
    assert claimed == 0  # every claim released
