"""The worker as a real process: a graceful stop with charges in flight, a lease shorter than a
gateway call, event handlers (and a crash inside one), and what the worker writes to stderr."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from pathlib import Path

import pytest
from sqlalchemy import Engine as SqlEngine
from sqlalchemy import create_engine, func, select
from sqlalchemy.engine import make_url
from sqlmodel import col

from billing.bootstrap import open_engine
from billing.clock import ManualClock
from billing.domain.catalog import Plan
from billing.store.database import normalize_url
from billing.store.tables import EventRow, PaymentRow, SubscriptionRow
from billing.testing import FakeGateway, serve

ROOT = Path(__file__).resolve().parents[2]
HANDLERS = "tests.e2e.handlers_for_test:HANDLERS"
KEY = re.compile(r"(?:^| )([a-z_]+)=")
STOP_WITHIN = 60
"""Seconds a worker may take to stop after SIGTERM: its round finishes in about three, but CI's
machine may be busy (a stop that hangs still fails)."""


def token(customer: str) -> str:
    return f"tok_secret_{customer}_4242"


def populate(database_url: str, subscriptions: int, customers: int = 2) -> list[str]:
    """Subscriptions that started a minute after an instant a day ago: all due now."""
    then = datetime.now(UTC) - timedelta(days=1)
    with open_engine(database_url, clock=ManualClock(then), gateways=[FakeGateway()]) as engine:
        engine.create_plan(Plan.of(code="oro", name="Plan Oro", price="10000", currency="CLP"))
        for c in range(customers):
            engine.create_customer(customer_id=f"c{c}", timezone="America/Santiago")
            engine.add_payment_method(f"c{c}", gateway="fake", token=token(f"c{c}"))
        ids = [f"s{s}" for s in range(subscriptions)]
        for s, subscription_id in enumerate(ids):
            engine.subscribe(
                f"c{s % customers}",
                "oro",
                subscription_id=subscription_id,
                start=then + timedelta(minutes=1),
            )
    return ids


@dataclass
class Worker:
    """A ``billing worker`` process, its output going to files."""

    process: subprocess.Popen[bytes]
    stdout: Path
    stderr: Path

    def err(self) -> str:
        return self.stderr.read_text(encoding="utf-8")

    def out(self) -> str:
        return self.stdout.read_text(encoding="utf-8")

    def wait(self, timeout: float) -> int:
        return self.process.wait(timeout=timeout)


@dataclass
class Harness:
    database_url: str
    tmp_path: Path
    fake_url: str = ""
    started: int = 0

    def env(self, **extra: str) -> dict[str, str]:
        env = {
            key: value
            for key, value in os.environ.items()
            if not key.startswith("BILLING_") or key == "BILLING_TEST_POSTGRES_URL"
        }
        env.update(
            BILLING_DATABASE_URL=self.database_url,
            BILLING_FAKE_GATEWAY_URL=self.fake_url,
            PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")])),
        )
        env.update(extra)
        return env

    def start(self, *args: str, **env: str) -> Worker:
        self.started += 1
        stdout = self.tmp_path / f"worker{self.started}.out"
        stderr = self.tmp_path / f"worker{self.started}.err"
        with stdout.open("wb") as out, stderr.open("wb") as err:
            process = subprocess.Popen(
                [sys.executable, "-m", "billing", "worker", *args],
                env=self.env(**env),
                cwd=ROOT,
                stdout=out,
                stderr=err,
            )
        return Worker(process, stdout, stderr)

    def run(self, *args: str, timeout: float = 60, **env: str) -> Worker:
        worker = self.start(*args, **env)
        worker.wait(timeout)
        return worker


@pytest.fixture
def harness(database_url: str, tmp_path: Path) -> Harness:
    return Harness(database_url, tmp_path)


@pytest.fixture
def db(database_url: str) -> Iterator[SqlEngine]:
    database = create_engine(normalize_url(database_url))
    yield database
    database.dispose()


def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting until {what}")
        time.sleep(0.05)


def payments(db: SqlEngine) -> list[tuple[str, str, str | None]]:
    """(idempotency key, status, subscription) of every payment attempt."""
    with db.connect() as connection:
        rows = connection.execute(
            select(PaymentRow.idempotency_key, PaymentRow.status, PaymentRow.subscription_id)
        ).all()
    return [(key, status, subscription) for key, status, subscription in rows]


def claimed(db: SqlEngine) -> int:
    with db.connect() as connection:
        return int(
            connection.execute(
                select(func.count())
                .select_from(SubscriptionRow)
                .where(col(SubscriptionRow.claimed_by).is_not(None))
            ).scalar_one()
        )


def events(db: SqlEngine) -> list[tuple[int, str, str, bool]]:
    """(seq, id, stream, acknowledged) of every event, in order."""
    with db.connect() as connection:
        rows = connection.execute(
            select(EventRow.seq, EventRow.id, EventRow.stream, EventRow.acknowledged_at).order_by(
                col(EventRow.seq)
            )
        ).all()
    return [(seq, event_id, stream, acked is not None) for seq, event_id, stream, acked in rows]


def handled(path: Path) -> list[tuple[int, str, str, str]]:
    """The lines the test handler wrote: (seq, id, stream, name)."""
    if not path.exists():
        return []
    lines = []
    for line in path.read_text(encoding="utf-8").splitlines():
        seq, event_id, stream, name = line.split(" ")
        lines.append((int(seq), event_id, stream, name))
    return lines


def assert_in_order_per_stream(lines: list[tuple[int, str, str, str]]) -> None:
    per_stream: dict[str, list[int]] = defaultdict(list)
    for seq, _, stream, _ in lines:
        per_stream[stream].append(seq)
    for stream, seqs in per_stream.items():
        assert all(a <= b for a, b in pairwise(seqs)), (stream, seqs)


# -- (a) a graceful stop with charges in flight ------------------------------------------------


def test_sigterm_with_charges_in_flight_finishes_them_releases_the_rest_and_exits(harness, db):
    subscriptions = populate(harness.database_url, 6)
    fake = FakeGateway(latency=timedelta(seconds=1.5))
    with serve(fake) as url:
        harness.fake_url = url
        # a batch of four, two calls at a time: the signal comes during the first two calls;
        # the batch's round finishes (its four attempts are written, so all four are sent)
        worker = harness.start("--tick", "0.2", BILLING_THREADS="2", BILLING_BATCH_SIZE="4")
        wait_until(lambda: len(payments(db)) >= 2, 30, "two charges are in flight")
        in_flight = [p for p in payments(db) if p[1] == "created"]
        assert in_flight  # written, sent, not answered yet
        worker.process.send_signal(signal.SIGTERM)
        sent = time.monotonic()
        assert worker.wait(timeout=STOP_WITHIN) == 0, worker.err()
        assert time.monotonic() - sent < STOP_WITHIN
        assert "worker.stopped" in worker.err()

        calls = fake.calls
        started = payments(db)
        assert 2 <= len(started) < len(subscriptions), started  # it stopped early
        for key, status, _ in started:
            # every attempt it started was answered and recorded; one left `created` is only
            # allowed if its gateway call never started
            assert status != "created" or calls[key] == 0, (key, status, calls)
            assert calls[key] <= 1
        assert {key for key, _, _ in started if calls[key]} >= {p[0] for p in in_flight}
        assert claimed(db) == 0  # the rest of its batch was released

        rest = harness.run("--once", timeout=60, BILLING_THREADS="2")
        assert rest.process.returncode == 0, rest.err()

    calls = fake.calls
    assert len(calls) == len(subscriptions)
    assert set(calls.values()) == {1}  # every key sent exactly once, over both workers
    assert len(fake.charges_taken()) == len(subscriptions)
    final = payments(db)
    assert sorted(s for _, _, s in final) == sorted(subscriptions)  # one attempt each
    assert {status for _, status, _ in final} == {"succeeded"}
    assert claimed(db) == 0


# -- (b) a lease that lapses during a slow gateway call ----------------------------------------


def test_a_worker_taking_over_a_lapsed_claim_does_not_charge_an_attempt_in_flight(harness, db):
    populate(harness.database_url, 1)
    fake = FakeGateway(latency=timedelta(seconds=3))
    with serve(fake) as url:
        harness.fake_url = url
        a = harness.start("--once", "--lease", "1", "--log-level", "debug")
        wait_until(lambda: len(payments(db)) == 1, 30, "worker A wrote its attempt")
        written = time.monotonic()
        time.sleep(1.2)  # A's one-second claim lapses while its gateway call goes on
        assert [status for _, status, _ in payments(db)] == ["created"]  # A's call in flight
        b = harness.run("--once", "--lease", "1", "--log-level", "debug", timeout=60)
        b_done = time.monotonic() - written
        assert a.wait(timeout=30) == 0, a.err()
        assert b.process.returncode == 0, b.err()

    calls = fake.calls
    assert len(calls) == 1
    # one call per key: B saw the unsettled attempt and left it to A; the recorded delay tells
    # whether B waited for A's three-second call (it did if it called the gateway too)
    assert set(calls.values()) == {1}, (
        calls,
        f"B finished {b_done:.1f}s after A's attempt",
        b.err(),
    )
    assert len(fake.charges_taken()) == 1
    assert [status for _, status, _ in payments(db)] == ["succeeded"]  # A's answer recorded
    assert claimed(db) == 0


# -- (c) event handlers in a worker, and a crash inside one ------------------------------------


def test_a_worker_with_handlers_delivers_every_event_in_order_per_stream(harness, db, tmp_path):
    subscriptions = populate(harness.database_url, 4)
    file = tmp_path / "events.txt"
    with serve(FakeGateway()) as url:
        harness.fake_url = url
        worker = harness.start(
            "--tick",
            "0.3",
            "--handlers",
            HANDLERS,
            BILLING_DISPATCH_SECONDS="0.3",
            BILLING_TEST_EVENTS_FILE=str(file),
        )

        def all_delivered() -> bool:
            paid = [p for p in payments(db) if p[1] == "succeeded"]
            return len(paid) == len(subscriptions) and all(acked for *_, acked in events(db))

        wait_until(all_delivered, 30, "every subscription is paid and every event delivered")
        worker.process.send_signal(signal.SIGTERM)
        assert worker.wait(timeout=STOP_WITHIN) == 0, worker.err()

    stored = events(db)
    lines = handled(file)
    assert Counter(event_id for _, event_id, _, _ in lines) == Counter(e[1] for e in stored)
    assert {(seq, event_id, stream) for seq, event_id, stream, _ in lines} == {
        (seq, event_id, stream) for seq, event_id, stream, _ in stored
    }
    assert_in_order_per_stream(lines)
    assert {name for *_, name in lines} >= {"invoice.created", "payment.succeeded", "invoice.paid"}


def test_a_worker_killed_inside_a_handler_loses_no_event_and_repeats_only_that_one(harness, db):
    populate(harness.database_url, 4)
    file = harness.tmp_path / "events.txt"
    crash_after = 7
    with serve(FakeGateway()) as url:
        harness.fake_url = url
        common = {"BILLING_TEST_EVENTS_FILE": str(file), "BILLING_LEASE_SECONDS": "1"}
        crashed = harness.run(
            "--once", "--handlers", HANDLERS, BILLING_TEST_CRASH_AFTER=str(crash_after), **common
        )
        assert crashed.process.returncode == -signal.SIGKILL, crashed.err()
        before = handled(file)
        assert len(before) == crash_after
        unacknowledged = [e for e in events(db) if not e[3]]
        assert before[-1][1] in {event_id for _, event_id, _, _ in unacknowledged}
        time.sleep(1.2)  # the dead worker's one-second claims on events lapse
        restarted = harness.run("--once", "--handlers", HANDLERS, **common)
        assert restarted.process.returncode == 0, restarted.err()

    stored = events(db)
    assert all(acked for *_, acked in stored)
    lines = handled(file)
    counts = Counter(event_id for _, event_id, _, _ in lines)
    assert set(counts) == {event_id for _, event_id, _, _ in stored}  # none lost
    assert {event_id: n for event_id, n in counts.items() if n > 1} == {before[-1][1]: 2}
    assert lines[:crash_after] == before
    assert_in_order_per_stream(lines)


# -- (d) structured logs, without secrets ------------------------------------------------------


def test_the_worker_logs_structured_lines_without_tokens_or_the_database_password(
    harness, db, database_url
):
    password = "pw-Zq8xK3-never-logged"
    if make_url(database_url).get_backend_name() == "postgresql":
        # the test server trusts local connections: the password is accepted and unused
        harness.database_url = (
            make_url(database_url).set(password=password).render_as_string(hide_password=False)
        )
    populate(harness.database_url, 4, customers=4)
    fake = FakeGateway(latency=timedelta(seconds=0.4))
    fake.script("c1", "timeout")
    fake.script("c2", "decline_hard")
    file = harness.tmp_path / "events.txt"
    with serve(fake) as url:
        harness.fake_url = url
        worker = harness.start(
            "--tick",
            "0.1",
            "--log-level",
            "debug",
            "--handlers",
            HANDLERS,
            BILLING_THREADS="2",
            BILLING_DISPATCH_SECONDS="0.2",
            BILLING_TEST_EVENTS_FILE=str(file),
            BILLING_TEST_FAIL_NAMES="invoice.paid",
        )
        wait_until(
            lambda: (
                len([p for p in payments(db) if p[1] != "created"]) == 4
                and any(name == "invoice.paid" for *_, name in handled(file))
            ),
            30,
            "every subscription's first charge is answered and a handler failed",
        )
        worker.process.send_signal(signal.SIGTERM)
        assert worker.wait(timeout=STOP_WITHIN) == 0, worker.err()
        late = datetime.now(UTC) - timedelta(hours=1)  # one more due subscription for --once
        with open_engine(
            harness.database_url, clock=ManualClock(late), gateways=[FakeGateway()]
        ) as engine:
            engine.create_customer(customer_id="c9", timezone="America/Santiago")
            engine.add_payment_method("c9", gateway="fake", token=token("c9"))
            engine.subscribe("c9", "oro", subscription_id="s9", start=late + timedelta(minutes=1))
        once = harness.run("--once", "--log-level", "debug", timeout=60)
        assert once.process.returncode == 0, once.err()

    for run in (worker, once):
        for secret in (password, *(token(f"c{c}") for c in (0, 1, 2, 3, 9))):
            assert secret not in run.err()
            assert secret not in run.out()
    stderr = worker.err()
    for event in ("worker.started", "payment.recorded", "dispatch.failed", "worker.stopped"):
        assert f"event={event}" in stderr, event
    assert "event=payment.recorded" in once.err()
    for run in (worker, once):
        lines = run.err().splitlines()
        assert lines
        unstructured = [
            line
            for line in lines
            if not (line.startswith("ts=") and " level=" in line and " event=" in line)
        ]
        # logfmt: one value per key, or a consumer keeps only one of them
        repeated = [line for line in lines if len(KEY.findall(line)) != len(set(KEY.findall(line)))]
        assert (unstructured, repeated) == ([], [])
