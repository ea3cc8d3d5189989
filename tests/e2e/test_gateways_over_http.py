"""QVO and Openpay end to end, the way a SaaS company runs them: ``billing fake-gateways serve``
in one process, a host application in this one, and ``billing worker --once`` in another, every
charge a real HTTP request through the real adapter. The worker finds the adapters through
their entry points and the environment, exactly as in production.

The host stores the cards (a Webpay Oneclick inscription for QVO, a token for Openpay) and bills
the first month at an instant a month and a half ago; the worker then renews every
subscription. One customer's card is made to decline at the fake first: the worker's renewal
is declined into dunning, and a new card pays it. A refund, and QVO's webhook delivered twice,
go through the host's engine.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from adapters.openpay.fake import DEFAULT_MERCHANT_ID, DEFAULT_PRIVATE_KEY
from adapters.qvo._wire import APPROVING_CARD
from adapters.qvo.fake import DEFAULT_TOKEN
from billing.bootstrap import discover_gateways, open_engine
from billing.clock import ManualClock, SystemClock
from billing.domain.catalog import Plan
from billing.domain.dunning import RetryPolicy
from billing.domain.invoices import InvoiceStatus
from billing.domain.payments import PaymentStatus
from billing.domain.subscriptions import SubscriptionStatus
from billing.engine import Engine
from billing.ports import PaymentGateway
from billing.services.notifications import NotificationStatus

ROOT = Path(__file__).resolve().parents[2]
STARTED = datetime.now(UTC) - timedelta(days=45)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture(scope="module")
def fakes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``billing fake-gateways serve`` on a free port; yields its base URL."""
    port = _free_port()
    log = tmp_path_factory.mktemp("fakes") / "serve.log"
    with log.open("w") as output:
        server = subprocess.Popen(
            [sys.executable, "-m", "billing", "fake-gateways", "serve", "--port", str(port)],
            cwd=ROOT,
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            httpx.get(f"{url}/qvo/_fake/faults", timeout=1).raise_for_status()
            break
        except httpx.HTTPError:
            if time.monotonic() > deadline or server.poll() is not None:
                server.kill()
                started = log.read_text()
                raise AssertionError(f"the fake gateways did not start: {started}") from None
            time.sleep(0.1)
    yield url
    server.terminate()
    server.wait(timeout=10)


def environment(fakes: str) -> dict[str, str]:
    """What a worker needs to reach both gateways (the served fakes' default credentials)."""
    return {
        "BILLING_QVO_API_TOKEN": DEFAULT_TOKEN,
        "BILLING_QVO_BASE_URL": f"{fakes}/qvo",
        "BILLING_OPENPAY_MERCHANT_ID": DEFAULT_MERCHANT_ID,
        "BILLING_OPENPAY_PRIVATE_KEY": DEFAULT_PRIVATE_KEY,
        "BILLING_OPENPAY_BASE_URL": f"{fakes}/openpay",
    }


@dataclass
class Host:
    """The host application's side: its engine on the shared database, and a browser."""

    url: str
    fakes: str
    browser: httpx.Client
    gateways: list[PaymentGateway] = field(default_factory=list)

    def engine(self, clock: ManualClock | SystemClock) -> Engine:
        gateways = discover_gateways(environment(self.fakes))
        self.gateways += gateways
        return open_engine(self.url, clock=clock, gateways=gateways)

    def store_card(self, engine: Engine, customer: str, gateway: str, card: str) -> str:
        """Store a card the gateway's way; returns the gateway's card id."""
        if gateway == "qvo":
            enrollment = engine.start_payment_method_enrollment(
                customer, gateway="qvo", return_url="https://saas.example/cards/back"
            )
            page = self.browser.post(enrollment.redirect_url, data={"card_number": card})
            assert page.status_code == 302, page.text
            done = engine.complete_payment_method_enrollment("qvo", enrollment.reference)
            assert done.status.value == "succeeded"
        else:
            tokens = f"{self.fakes}/openpay/v1/{DEFAULT_MERCHANT_ID}/tokens"
            made = self.browser.post(
                tokens,
                auth=(DEFAULT_PRIVATE_KEY, ""),
                json={
                    "card_number": card,
                    "holder_name": "Cliente Prueba",
                    "expiration_month": "12",
                    "expiration_year": "40",
                    "cvv2": "123",
                },
            )
            made.raise_for_status()
            engine.replace_payment_method(customer, gateway="openpay", token=made.json()["id"])
        return engine.payment_methods(customer)[-1].token

    def decline(self, gateway: str, card: str, customer: str) -> None:
        """Make the fake decline this card's next charge (its control endpoint)."""
        if gateway == "qvo":
            rule = {"card_id": card, "outcome": "insufficient_funds", "times": 1}
            self.browser.post(f"{self.fakes}/qvo/_fake/rules", json=rule).raise_for_status()
        else:
            rule = {"external_id": customer, "error_code": 3003, "count": 1}
            self.browser.post(f"{self.fakes}/openpay/_fake/rules", json=rule).raise_for_status()

    def worker_once(self) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, **environment(self.fakes), "BILLING_DATABASE_URL": self.url}
        return subprocess.run(
            [sys.executable, "-m", "billing", "worker", "--once", "--database-url", self.url],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )


RETRY = RetryPolicy.of([20], then="unpaid")
"""The retry of the renewal the worker sees declined falls due after the test."""
PLANS = {
    "qvo": Plan.of(code="oro", name="Plan Oro", price="15000", currency="CLP", retry=RETRY),
    "openpay": Plan.of(code="oro", name="Plan Oro", price="499.90", currency="MXN", retry=RETRY),
}
CARDS = {"qvo": APPROVING_CARD, "openpay": "4111111111111111"}


@pytest.fixture
def host(fakes: str, tmp_path: Path) -> Iterator[Host]:
    url = f"sqlite:///{tmp_path / 'billing.db'}"
    with httpx.Client(timeout=10) as browser:
        host = Host(url, fakes, browser)
        yield host
    for gateway in host.gateways:
        gateway.close()


@pytest.mark.parametrize("gateway", ["qvo", "openpay"])
def test_a_worker_bills_through_the_adapter_over_http(
    gateway: str, fakes: str, host: Host, tmp_path: Path
):
    url = host.url
    open_engine(url, migrate=True).close()
    customers = [f"{gateway}-c{n}-{tmp_path.name[-6:]}" for n in range(3)]
    cards: dict[str, str] = {}
    with host.engine(ManualClock(STARTED)) as engine:
        engine.create_plan(PLANS[gateway])
        for customer in customers:
            engine.create_customer(
                customer_id=customer,
                timezone="America/Santiago",
                metadata={"name": customer, "email": f"{customer}@example.com"},
            )
            cards[customer] = host.store_card(engine, customer, gateway, CARDS[gateway])
            engine.subscribe(customer, "oro", subscription_id=f"sub-{customer}")
        first = [p for c in customers for p in engine.payments(customer_id=c)]
        assert [p.status for p in first] == [PaymentStatus.SUCCEEDED] * 3
    declining = customers[2]
    host.decline(gateway, cards[declining], declining)

    ran = host.worker_once()
    assert ran.returncode == 0, ran.stderr
    assert DEFAULT_TOKEN not in ran.stderr
    assert DEFAULT_PRIVATE_KEY not in ran.stderr

    with host.engine(SystemClock()) as engine:
        for customer in customers[:2]:
            payments = engine.payments(customer_id=customer)
            assert [p.status for p in payments] == [PaymentStatus.SUCCEEDED] * 2, "renewed"
            assert len({p.reference for p in payments}) == 2
        [_, declined] = engine.payments(customer_id=declining)
        assert (declined.status, declined.error) == (PaymentStatus.FAILED, "insufficient_funds")
        assert engine.subscription(f"sub-{declining}").status is SubscriptionStatus.PAST_DUE

        # a new card pays the invoice in dunning at once, through the adapter
        host.store_card(engine, declining, gateway, CARDS[gateway])
        assert engine.subscription(f"sub-{declining}").status is SubscriptionStatus.ACTIVE
        [renewal] = [
            i for i in engine.invoices(customer_id=declining) if i.reason.value == "renewal"
        ]
        assert engine.invoice(renewal.id).status is InvoiceStatus.PAID

        # a refund through the adapter
        paid = engine.payments(customer_id=customers[0])[0]
        refund = engine.refund(paid.id)
        assert (refund.status.value, bool(refund.reference)) == ("succeeded", True)

        if gateway == "qvo":
            # QVO's webhook about a charge, delivered twice: checked with QVO, processed once
            events = host.browser.get(
                f"{fakes}/qvo/events",
                headers={"Authorization": f"Bearer {DEFAULT_TOKEN}"},
                params={"per_page": 100},
            ).json()
            about = next(e for e in events if e["type"].startswith("transaction."))
            body = httpx.Request("POST", "/", json=about).read()
            headers = {"content-type": "application/json"}
            once = engine.receive_notification("qvo", headers=headers, body=body)
            twice = engine.receive_notification("qvo", headers=headers, body=body)
            assert (once.status, twice.status) == (
                NotificationStatus.PROCESSED,
                NotificationStatus.DUPLICATE,
            )
