"""Real worker processes billing months on a test clock (``billing worker --once --now``), with
the fake gateway's books read over HTTP."""

from __future__ import annotations

import os
import subprocess
import sys
from collections import Counter
from datetime import UTC, datetime, timedelta

from billing.bootstrap import open_engine
from billing.clock import ManualClock
from billing.domain.catalog import Plan
from billing.testing import FakeGateway, serve
from billing.testing.fake_server import RemoteFakeGateway

T0 = datetime(2026, 1, 10, 12, tzinfo=UTC)
SUBSCRIPTIONS = 12


def worker(database_url: str, fake_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "BILLING_DATABASE_URL": database_url, "BILLING_FAKE_GATEWAY_URL": fake_url}
    return subprocess.run(
        [sys.executable, "-m", "billing", "worker", "--once", "--log-level", "warning", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_two_workers_bill_three_months_on_a_test_clock(sqlite_url: str):
    with open_engine(sqlite_url, clock=ManualClock(T0), gateways=[FakeGateway()]) as engine:
        engine.create_plan(Plan.of(code="oro", name="Oro", price="10000", currency="CLP"))
        for n in range(SUBSCRIPTIONS):
            engine.create_customer(customer_id=f"c{n}", timezone="America/Santiago")
            engine.add_payment_method(f"c{n}", gateway="fake", token=f"tok_{n}")
            engine.subscribe(f"c{n}", "oro", start=T0 + timedelta(minutes=1))
    fake = FakeGateway()
    with serve(fake) as url:
        for month in range(3):
            now = (T0 + timedelta(days=31 * month, minutes=2)).isoformat()
            pair = [
                subprocess.Popen(
                    [sys.executable, "-m", "billing", "worker", "--once", "--now", now],
                    env={
                        **os.environ,
                        "BILLING_DATABASE_URL": sqlite_url,
                        "BILLING_FAKE_GATEWAY_URL": url,
                    },
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    text=True,
                )
                for _ in range(2)
            ]
            for process in pair:
                _, stderr = process.communicate(timeout=120)
                assert process.returncode == 0, stderr
        books = RemoteFakeGateway(url).books()
    assert set(books["calls"].values()) == {1}  # every key sent once
    charges = Counter(charge["customer_id"] for charge in books["charges"])
    assert charges == Counter({f"c{n}": 3 for n in range(SUBSCRIPTIONS)})
    assert len(fake.charges_taken()) == 3 * SUBSCRIPTIONS  # the books over HTTP are the fake's


def test_now_needs_once_and_an_aware_instant(sqlite_url: str):
    with serve(FakeGateway()) as url:
        naive = worker(sqlite_url, url, "--now", "2026-02-01T12:00:00")
        garbled = worker(sqlite_url, url, "--now", "next tuesday")
        env = {**os.environ, "BILLING_DATABASE_URL": sqlite_url}
        continuous = subprocess.run(
            [sys.executable, "-m", "billing", "worker", "--now", "2026-02-01T12:00:00Z"],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
    for result, rule in (
        (naive, "timezone-aware"),
        (garbled, "ISO 8601"),
        (continuous, "--once"),
    ):
        assert result.returncode == 2, result.stderr
        assert "--now" in result.stderr
        assert rule in result.stderr
        assert "Traceback" not in result.stderr
