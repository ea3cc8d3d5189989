"""The FastAPI example (``examples/fastapi_app/app.py``), run as its README runs it: its lifespan
opens the engine on a real SQLite file, requests go through its HTTP API (httpx's ASGI
transport), a gateway's webhook is posted to its notifications path, and its background loop
delivers the events to the host's handler."""

from __future__ import annotations

import asyncio
import importlib.util
import sys
import time
from collections.abc import Awaitable, Callable
from datetime import timedelta
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest

from billing.clock import ManualClock
from billing.engine import Engine
from billing.testing import Behavior, FakeGateway
from tests.integration.conftest import START

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "fastapi_app" / "app.py"


@pytest.fixture(scope="module")
def example() -> ModuleType:
    """The example's module, imported from its file (``examples/`` is not a package)."""
    spec = importlib.util.spec_from_file_location("billing_fastapi_example", EXAMPLE)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def floats_in(value: object) -> list[float]:
    """Every float anywhere in a decoded JSON document (money must never be one)."""
    if isinstance(value, float):
        return [value]
    if isinstance(value, dict):
        return [found for item in value.values() for found in floats_in(item)]
    if isinstance(value, list):
        return [found for item in value for found in floats_in(item)]
    return []


Scenario = Callable[[httpx.AsyncClient, Any], Awaitable[None]]


def run(
    example: ModuleType, tmp_path: Path, sqlite_url: str, fake: FakeGateway, scenario: Scenario
):
    """Start the app (its lifespan: engine, host, event delivery every 20 ms), run
    ``scenario`` against it, and stop it."""
    settings = example.ExampleSettings(
        database_url=sqlite_url,
        host_database_url=f"sqlite:///{tmp_path / 'host.db'}",
        dispatch_seconds=0.02,
    )
    app = example.create_app(settings, clock=ManualClock(START), gateways=[fake])

    async def main() -> None:
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://host") as client:
                await scenario(client, app)

    asyncio.run(main())


async def until(check: Callable[[], Awaitable[bool]], seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not await check():
        assert time.monotonic() < deadline, "the background delivery did not catch up"
        await asyncio.sleep(0.02)


def test_subscribe_retry_errors_webhook_and_events_through_the_example_app(
    example: ModuleType, tmp_path: Path, sqlite_url: str
):
    fake = FakeGateway(pending_for=timedelta(hours=1))
    answers: list[object] = []

    async def scenario(client: httpx.AsyncClient, app: Any) -> None:
        engine: Engine = app.state.engine

        async def post(path: str, body: object, key: str | None = None) -> httpx.Response:
            headers = {} if key is None else {"Idempotency-Key": key}
            response = await client.post(path, json=body, headers=headers)
            answers.append(response.json())
            return response

        # a customer, a card token from the gateway's form, the catalog
        customer = await post(
            "/customers",
            {"customer_id": "c1", "timezone": "America/Santiago", "email": "ana@example.cl"},
        )
        assert customer.status_code == 201, customer.text
        method = await post("/customers/c1/payment-methods", {"gateway": "fake", "token": "tok"})
        assert method.status_code == 201, method.text
        assert method.json()["default"] is True
        plans = (await client.get("/plans")).json()
        assert {plan["code"]: plan["price"] for plan in plans} == {
            "basico": {"amount": "9990", "currency": "CLP"},
            "pro": {"amount": "19990", "currency": "CLP"},
        }

        # subscribe, with 19 % IVA: the first invoice is billed and paid at once
        order = {
            "customer_id": "c1",
            "plan_code": "basico",
            "tax": {"name": "IVA", "percent": "19"},
        }
        first = await post("/subscriptions", order, key="order-1")
        assert first.status_code == 201, first.text
        subscription = first.json()
        assert subscription["status"] == "active"
        assert subscription["latest_payment"]["status"] == "succeeded"
        assert subscription["latest_payment"]["amount"] == {"amount": "11888", "currency": "CLP"}

        # the client retries (its connection dropped): the same subscription, nothing twice
        again = await post("/subscriptions", order, key="order-1")
        assert again.status_code == 201
        assert again.json()["id"] == subscription["id"]
        assert len(engine.subscriptions("c1")) == 1
        assert sum(fake.calls.values()) == 1
        # the same key for another order is refused
        other = await post("/subscriptions", {**order, "plan_code": "pro"}, key="order-1")
        assert (other.status_code, other.json()["error"]) == (409, "idempotency_conflict")

        # bad requests name the field and the rule
        zone = await post("/customers", {"customer_id": "c9", "timezone": "Mars/Olympus"})
        assert zone.status_code == 422
        assert (zone.json()["field"], zone.json()["error"]) == ("timezone", "invalid_argument")
        assert "IANA" in zone.json()["rule"]
        percent = await post("/subscriptions", {**order, "tax": {"name": "IVA", "percent": 19.5}})
        assert (percent.status_code, percent.json()["field"]) == (422, "tax.percent")
        card = await post(
            "/customers/c1/payment-methods", {"gateway": "fake", "token": "4111111111111111"}
        )
        assert (card.status_code, card.json()["field"]) == (422, "token")
        missing = await post("/subscriptions", {"customer_id": "nobody", "plan_code": "basico"})
        assert (missing.status_code, missing.json()["entity"]) == (404, "customer")

        # upgrade, then cancel at the period's end
        upgrade = await post(
            f"/subscriptions/{subscription['id']}/change-plan", {"plan_code": "pro"}
        )
        assert upgrade.status_code == 200, upgrade.text
        assert upgrade.json()["plan"] == "pro"
        assert upgrade.json()["debt"]["currency"] == "CLP"  # the prorated difference, as debt
        canceled = await post(f"/subscriptions/{subscription['id']}/cancel", {})
        assert canceled.status_code == 200
        assert canceled.json()["cancel_at_period_end"] is True
        listed = (await client.get("/customers/c1/subscriptions")).json()
        assert [(s["id"], s["plan"]) for s in listed] == [(subscription["id"], "pro")]
        invoices = (await client.get("/customers/c1/invoices")).json()
        assert [(i["status"], i["total"]["amount"]) for i in invoices] == [("paid", "11888")]
        answers.extend([plans, listed, invoices])

        # a payment link, paid an hour later: the gateway's webhook settles it
        await post("/customers", {"customer_id": "c2", "timezone": "America/Santiago"})
        await post("/customers/c2/payment-methods", {"gateway": "fake", "token": "tok_2"})
        fake.script("c2", Behavior.PAY_BY_LINK)
        linked = await post("/subscriptions", {"customer_id": "c2", "plan_code": "pro"}, key="o-2")
        payment = linked.json()["latest_payment"]
        assert payment["status"] == "requires_action"
        assert payment["action_url"].startswith("https://")
        engine.clock.advance(timedelta(hours=2))  # type: ignore[attr-defined]
        [attempt] = engine.payments(subscription_id=linked.json()["id"])
        assert attempt.reference is not None
        webhook = fake.notification(attempt.reference)
        intake = await client.post(
            "/billing/notifications/fake", content=webhook.body, headers=dict(webhook.headers)
        )
        assert (intake.status_code, intake.text) == (200, "OK")
        c2_invoices = (await client.get("/customers/c2/invoices")).json()
        assert [(i["status"], i["total"]["amount"]) for i in c2_invoices] == [("paid", "19990")]
        answers.append(c2_invoices)

        # events to the host: one welcome e-mail per subscription, once
        async def caught_up() -> bool:
            return not await asyncio.to_thread(engine.events)

        await until(caught_up)
        emails = (await client.get("/welcome-emails")).json()
        assert sorted((e["customer_id"], e["plan_code"]) for e in emails) == [
            ("c1", "basico"),
            ("c2", "pro"),
        ]
        created = [
            event
            for event in engine.events(pending_only=False, limit=1000)
            if event.name == "subscription.created"
        ]
        assert sorted(event.id for event in created) == sorted(e["event_id"] for e in emails)
        assert [event.deliveries for event in created] == [1, 1]
        answers.append(emails)

    run(example, tmp_path, sqlite_url, fake, scenario)

    assert floats_in(answers) == []


def test_settings_come_from_the_environment_and_bad_values_name_the_variable(
    example: ModuleType,
):
    settings = example.ExampleSettings.from_env(
        {"BILLING_DATABASE_URL": "sqlite:///x.db", "BILLING_EXAMPLE_FAKE": "1"}
    )
    assert (settings.database_url, settings.fake_gateway) == ("sqlite:///x.db", True)
    assert example.ExampleSettings.from_env({}).database_url == "sqlite:///billing_example.db"
    with pytest.raises(ValueError, match="BILLING_EXAMPLE_FAKE"):
        example.ExampleSettings.from_env({"BILLING_EXAMPLE_FAKE": "yes"})
    with pytest.raises(ValueError, match="BILLING_EXAMPLE_DISPATCH_SECONDS"):
        example.ExampleSettings.from_env({"BILLING_EXAMPLE_DISPATCH_SECONDS": "soon"})


def test_the_fake_gateway_and_the_catalog_come_with_billing_example_fake(
    example: ModuleType, sqlite_url: str
):
    settings = example.ExampleSettings.from_env(
        {"BILLING_DATABASE_URL": sqlite_url, "BILLING_EXAMPLE_FAKE": "1"}
    )
    engine = example.open_billing(settings)
    try:
        assert list(engine.gateways) == ["fake"]
        assert [plan.code for plan in engine.plans()] == ["basico", "pro"]
    finally:
        engine.close()
    again = example.open_billing(settings)  # a restart seeds nothing twice
    try:
        assert [plan.code for plan in again.plans()] == ["basico", "pro"]
    finally:
        again.close()
