"""All four gateway adapters in one billing history, every piece a real process: ``billing
fake-gateways serve`` (with credentials that are not the fakes' defaults, which only its banner
tells), ``billing worker --once --now`` passes on a test clock, and this process as the host
application, on one shared database.

QVO and Openpay charge stored cards (a Webpay Oneclick inscription, an openpay.js token).
Khipu and Payvalida collect through payment links: each charge answers ``requires_action``
with a link, and the fakes are scripted so that every payer pays each link as soon as it
exists. Nobody receives the gateways' notifications here (the host has no webhook endpoint,
and the worker never has one), so every link payment is settled by reconciliation: the
worker's check of the unsettled attempt asks the gateway (``sync``), which is also how a
lost notification is recovered in production.

The plans are daily, and the history starts a day ago, because Payvalida's fake refuses a link
that expires more than 30 days after its own (wall) clock: the test clock stays near it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest

from adapters.payvalida._wire import order_id
from adapters.qvo._wire import APPROVING_CARD
from billing.bootstrap import discover_gateways, open_engine
from billing.clock import ManualClock
from billing.domain.catalog import Plan
from billing.domain.invoices import Invoice, InvoiceReason, InvoiceStatus
from billing.domain.payments import PaymentAttempt, PaymentStatus
from billing.engine import Engine
from tests.e2e.test_cli import CUSTOM_CREDENTIALS, Banner, fake_gateways

ROOT = Path(__file__).resolve().parents[2]
CUSTOMERS = 2
"""Per gateway."""

PLANS = {
    "qvo": Plan.of(code="diario-clp", name="Diario", price="15000", currency="CLP", interval="day"),
    "khipu": Plan.of(
        code="diario-clp", name="Diario", price="15000", currency="CLP", interval="day"
    ),
    "openpay": Plan.of(
        code="diario-mxn", name="Diario", price="499.90", currency="MXN", interval="day"
    ),
    "payvalida": Plan.of(
        code="diario-cop", name="Diario", price="45000", currency="COP", interval="day"
    ),
}
TIMEZONES = {
    "qvo": "America/Santiago",
    "khipu": "America/Santiago",
    "openpay": "America/Mexico_City",
    "payvalida": "America/Bogota",
}
LINKS = ("khipu", "payvalida")
"""The gateways that collect through payment links."""
SECRETS = [
    value
    for key, value in CUSTOM_CREDENTIALS.items()
    if key.endswith(("_TOKEN", "_PRIVATE_KEY", "_SECRET", "_HASH"))
]


@pytest.fixture(scope="module")
def fakes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Banner]:
    """The four fakes, served by one ``billing fake-gateways serve`` on a free port."""
    log = tmp_path_factory.mktemp("fakes") / "serve.err"
    with fake_gateways(log, env=CUSTOM_CREDENTIALS) as (banner, _):
        yield banner


class Host:
    """The host application: its engine on the shared database, a browser, and the fakes'
    control endpoints (acting as the payers)."""

    def __init__(self, fakes: Banner, browser: httpx.Client) -> None:
        self.fakes = fakes
        self.env = fakes.environment  # everything a worker needs, as the banner printed it
        self.browser = browser

    def store_method(self, engine: Engine, customer: str, gateway: str) -> None:
        """Give the customer a way to pay on ``gateway``, the gateway's own way."""
        url = self.fakes.urls[gateway]
        if gateway == "qvo":  # a Webpay Oneclick inscription, the card typed on its page
            enrollment = engine.start_payment_method_enrollment(
                customer, gateway="qvo", return_url="https://saas.example/cards/back"
            )
            page = self.browser.post(enrollment.redirect_url, data={"card_number": APPROVING_CARD})
            assert page.status_code == 302, page.text
            done = engine.complete_payment_method_enrollment("qvo", enrollment.reference)
            assert done.status.value == "succeeded"
        elif gateway == "openpay":  # a token, made as openpay.js makes one
            merchant = self.env["BILLING_OPENPAY_MERCHANT_ID"]
            made = self.browser.post(
                f"{url}/v1/{merchant}/tokens",
                auth=(self.env["BILLING_OPENPAY_PRIVATE_KEY"], ""),
                json={
                    "card_number": "4111111111111111",
                    "holder_name": "Cliente Prueba",
                    "expiration_month": "12",
                    "expiration_year": "40",
                    "cvv2": "123",
                },
            )
            made.raise_for_status()
            engine.add_payment_method(customer, gateway="openpay", token=made.json()["id"])
        else:  # the payer's e-mail, scripted at the fake to pay each link at once
            email = payer(customer)
            script = (
                {"payer_email": email, "behavior": "pay"}
                if gateway == "khipu"
                else {"email": email, "pay": "now"}
            )
            self.browser.post(f"{url}/_fake/payers", json=script).raise_for_status()
            engine.add_payment_method(customer, gateway=gateway, token=email)

    def worker_once(self, database_url: str, now: datetime) -> subprocess.CompletedProcess[str]:
        env = {key: value for key, value in os.environ.items() if not key.startswith("BILLING_")}
        env.update(self.env, BILLING_DATABASE_URL=database_url)
        return subprocess.run(
            [sys.executable, "-m", "billing", "worker", "--once", "--now", now.isoformat()],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )

    def books(self, gateway: str) -> list[dict[str, Any]]:
        """The fake's own record of every charge, whoever made it: ``{key, status, amount}``,
        the key being the engine's idempotency key (the QVO description's ``[key]``, Openpay's
        ``order_id``, Khipu's ``transaction_id``; a Payvalida order code is derived from it)."""
        url, env = self.fakes.urls[gateway], self.env
        if gateway == "qvo":
            answer = self.browser.get(
                f"{url}/transactions",
                headers={"Authorization": f"Bearer {env['BILLING_QVO_API_TOKEN']}"},
                params={"per_page": 100},
            )
            return [
                {
                    "key": item["description"].rsplit("[", 1)[-1].rstrip("]"),
                    "status": item["status"],
                    "amount": item["amount"],
                }
                for item in _json(answer)
            ]
        if gateway == "openpay":
            answer = self.browser.get(
                f"{url}/v1/{env['BILLING_OPENPAY_MERCHANT_ID']}/charges",
                auth=(env["BILLING_OPENPAY_PRIVATE_KEY"], ""),
                params={"limit": 100},
            )
            return [
                {"key": item["order_id"], "status": item["status"], "amount": item["amount"]}
                for item in _json(answer)
            ]
        if gateway == "khipu":
            return [
                {"key": item["transaction_id"], "status": item["status"], "amount": item["amount"]}
                for item in _json(self.browser.get(f"{url}/_fake/payments"))
            ]
        orders = _json(self.browser.get(f"{url}/_fake/orders"))
        return [
            {
                "order": code,
                "email": item["EMAIL"],
                "status": item["STATE"],
                "paid": len(item["PAYMENTS"]),
            }
            for code, item in orders.items()
        ]


def _json(answer: httpx.Response) -> Any:
    answer.raise_for_status()
    return json.loads(answer.text, parse_float=Decimal)  # money is never a float


def payer(customer: str) -> str:
    return f"{customer}@payers.example.com"


@pytest.fixture
def host(fakes: Banner) -> Iterator[Host]:
    with httpx.Client(timeout=10) as browser:
        yield Host(fakes, browser)


def test_a_worker_bills_renewals_through_all_four_gateways_once_each(database_url: str, host: Host):
    run = uuid.uuid4().hex[:8]  # the fakes serve both databases' runs: keep their books apart
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(days=1, minutes=10)
    # (the subscriptions start a day and a bit ago: their first renewal is due about now)
    customers = {gateway: [f"{gateway}-{n}-{run}" for n in range(CUSTOMERS)] for gateway in PLANS}
    adapters = discover_gateways(host.env)  # the host's, configured as the worker's are
    try:
        assert sorted(adapter.name for adapter in adapters) == sorted(PLANS)
        with open_engine(database_url, clock=ManualClock(start), gateways=adapters) as engine:
            for plan in {plan.code: plan for plan in PLANS.values()}.values():
                engine.create_plan(plan)
            for gateway, ids in customers.items():
                for customer in ids:
                    engine.create_customer(
                        customer_id=customer,
                        timezone=TIMEZONES[gateway],
                        metadata={"name": customer, "email": f"{customer}@example.com"},
                    )
                    host.store_method(engine, customer, gateway)
                    engine.subscribe(customer, PLANS[gateway].code, subscription_id=f"s-{customer}")
            # the first invoices: cards are charged at once; a link waits for its payer
            for gateway, ids in customers.items():
                for customer in ids:
                    [first] = engine.payments(customer_id=customer)
                    if gateway in LINKS:
                        assert first.status is PaymentStatus.REQUIRES_ACTION, first
                        assert first.action_url, first
                    else:
                        assert first.status is PaymentStatus.SUCCEEDED, first
            renewal = max(
                invoice.period.end
                for invoice in engine.invoices()
                if invoice.period is not None and invoice.customer_id.endswith(run)
            )
            assert renewal <= start + timedelta(days=1, hours=1)  # a DST change moves it an hour

            # The worker, on a test clock: the renewals fall due, and the link payments (the
            # first invoices', sent by this host, and the renewals') are checked with their
            # gateways. Notifications go nowhere here (as when they are lost), so only those
            # checks (sync) can settle a link payment. A pass a minute past the renewals
            # usually does it all (a check falls due a minute after its charge, and the pass
            # works until nothing is due); further passes, minutes apart, only if not.
            at = renewal + timedelta(minutes=1)
            for _ in range(4):
                ran = host.worker_once(database_url, at)
                assert ran.returncode == 0, ran.stderr
                for secret in SECRETS:
                    assert secret not in ran.stderr + ran.stdout
                if all(
                    _settled(engine, customer) for ids in customers.values() for customer in ids
                ):
                    break
                at += timedelta(minutes=5)

            billed: dict[str, list[tuple[Invoice, PaymentAttempt]]] = {}
            for gateway, ids in customers.items():
                billed[gateway] = []
                for customer in ids:
                    invoices = engine.invoices(customer_id=customer)
                    assert [invoice.reason for invoice in invoices] == [
                        InvoiceReason.SUBSCRIPTION_START,
                        InvoiceReason.RENEWAL,
                    ], customer
                    for invoice in invoices:
                        assert invoice.status is InvoiceStatus.PAID, (gateway, invoice)
                        [payment] = engine.payments(invoice_id=invoice.id)  # paid exactly once
                        assert payment.status is PaymentStatus.SUCCEEDED, (gateway, payment)
                        assert (payment.gateway, payment.amount) == (gateway, invoice.total)
                        billed[gateway].append((invoice, payment))
                references = [payment.reference for _, payment in billed[gateway]]
                assert None not in references
                assert len(set(references)) == len(references) == 2 * CUSTOMERS
            report = engine.audit()
            assert report.balanced, report.findings
    finally:
        for adapter in adapters:
            adapter.close()

    # The gateways' own books: each invoice charged once, and paid.
    ours = {invoice.id for pairs in billed.values() for invoice, _ in pairs}
    for gateway in ("qvo", "openpay", "khipu"):
        charges = [item for item in host.books(gateway) if item["key"].rsplit("-", 1)[0] in ours]
        keys = Counter(item["key"] for item in charges)
        expected = {payment.idempotency_key: invoice for invoice, payment in billed[gateway]}
        assert keys == Counter(expected.keys()), gateway  # no key charged twice, no other key
        for item in charges:
            invoice = expected[item["key"]]
            assert Decimal(str(item["amount"])) == invoice.total.amount, (gateway, item)
            assert item["status"] == {"qvo": "successful", "openpay": "completed"}.get(
                gateway, "done"
            ), (gateway, item)
    payers = {payer(customer) for customer in customers["payvalida"]}
    orders = {item["order"]: item for item in host.books("payvalida") if item["email"] in payers}
    # one order per attempt (its code is derived from the key), each paid once
    assert set(orders) == {order_id(payment.idempotency_key) for _, payment in billed["payvalida"]}
    for order in orders.values():
        assert (order["status"], order["paid"]) == ("APROBADA", 1), order


def _settled(engine: Engine, customer: str) -> bool:
    invoices = engine.invoices(customer_id=customer)
    return len(invoices) == 2 and all(i.status is InvoiceStatus.PAID for i in invoices)
