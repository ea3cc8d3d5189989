"""The webhook endpoints a host mounts: the ASGI app of ``billing.web`` (over Starlette's test
client) and the Django view of ``docs/notifications.md`` (run from the page itself)."""

from __future__ import annotations

import asyncio
import re
import sys
import types
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from sqlalchemy import create_engine, text
from starlette.applications import Starlette

from billing import open_engine
from billing.clock import ManualClock
from billing.config import Settings
from billing.domain.catalog import Plan
from billing.domain.errors import InvalidArgument
from billing.domain.payments import PaymentStatus
from billing.engine import Engine
from billing.ports import Notification
from billing.testing import Behavior, FakeGateway
from billing.web import notifications_app
from tests.integration.conftest import START

DOCS = Path(__file__).parents[2] / "docs" / "notifications.md"


@pytest.fixture
def fake() -> FakeGateway:
    return FakeGateway(pending_for=timedelta(hours=1))


@pytest.fixture
def engine(sqlite_url: str, fake: FakeGateway) -> Iterator[Engine]:
    engine = open_engine(
        sqlite_url, clock=ManualClock(START), gateways=[fake], settings=Settings(threads=1)
    )
    engine.create_plan(Plan.of(code="mes", name="Mes", price="10000", currency="CLP"))
    yield engine
    engine.close()


def paid_link(engine: Engine, fake: FakeGateway) -> tuple[str, Notification]:
    """A subscription whose payment link was paid; its id and the gateway's notification."""
    engine.create_customer(customer_id="c1", timezone="America/Santiago")
    engine.add_payment_method("c1", gateway="fake", token="tok_c1")
    fake.script("c1", Behavior.PAY_BY_LINK)
    subscription = engine.subscribe("c1", "mes")
    [payment] = engine.payments(subscription_id=subscription.id)
    assert payment.reference is not None
    engine.clock.advance(timedelta(hours=2))  # type: ignore[attr-defined]
    return subscription.id, fake.notification(payment.reference, "evt_1")


class Client:
    """Requests to an ASGI app in this thread, over httpx's ASGI transport (each one waits for
    the app's background tasks, as a server runs them after the answer)."""

    def __init__(self, app: Starlette) -> None:
        self.app = app

    def request(self, method: str, path: str, **options: object) -> httpx.Response:
        async def send() -> httpx.Response:
            transport = httpx.ASGITransport(app=self.app)
            async with httpx.AsyncClient(transport=transport, base_url="http://host") as client:
                return await client.request(method, path, **options)  # type: ignore[arg-type]

        return asyncio.run(send())

    def post(self, path: str, **options: object) -> httpx.Response:
        return self.request("POST", path, **options)

    def get(self, path: str) -> httpx.Response:
        return self.request("GET", path)


def status_of(engine: Engine, subscription_id: str) -> PaymentStatus:
    [payment] = engine.payments(subscription_id=subscription_id)
    return payment.status


def kept(url: str) -> int:
    database = create_engine(url)
    try:
        with database.connect() as connection:
            return int(connection.scalar(text("SELECT count(*) FROM notification_inbox")) or 0)
    finally:
        database.dispose()


@pytest.mark.parametrize("process", ["background", "inline"])
def test_a_notification_posted_to_its_gateways_path_is_answered_ok_and_settles_the_payment(
    engine: Engine, fake: FakeGateway, process: str
):
    subscription_id, webhook = paid_link(engine, fake)
    client = Client(notifications_app(engine, process=process))  # type: ignore[arg-type]

    response = client.post("/fake", content=webhook.body, headers=dict(webhook.headers))

    assert (response.status_code, response.text) == (200, "OK")
    assert status_of(engine, subscription_id) is PaymentStatus.SUCCEEDED  # after the answer
    again = client.post("/fake", content=webhook.body, headers=dict(webhook.headers))
    assert (again.status_code, again.text) == (200, "OK")
    names = [event.name for event in engine.events(limit=100)]
    assert names.count("payment.succeeded") == 1


async def chunks(*parts: bytes) -> AsyncIterator[bytes]:
    for part in parts:
        yield part


def test_malformed_requests_get_a_4xx_and_nothing_is_kept(engine: Engine, sqlite_url: str):
    client = Client(notifications_app(engine, max_body_bytes=1024))

    unreadable = client.post("/fake", content=b"not json")
    too_large = client.post("/fake", content=b"x" * 1025)
    streamed = client.post("/fake", content=chunks(b"x" * 600, b"x" * 600))  # no length
    unknown = client.post("/stripe", content=b"{}")
    wrong_method = client.get("/fake")

    assert unreadable.status_code == 400
    assert unreadable.text.startswith("ERROR: ")
    assert too_large.status_code == streamed.status_code == 413
    assert unknown.status_code == 404
    assert wrong_method.status_code == 405
    assert kept(sqlite_url) == 0


def test_an_unreachable_database_is_a_503_so_that_the_gateway_comes_again(
    engine: Engine, fake: FakeGateway, sqlite_url: str
):
    _, webhook = paid_link(engine, fake)
    database = create_engine(sqlite_url)
    with database.begin() as connection:
        connection.execute(text("ALTER TABLE notification_inbox RENAME TO gone"))
    database.dispose()
    client = Client(notifications_app(engine))

    response = client.post("/fake", content=webhook.body, headers=dict(webhook.headers))

    assert response.status_code == 503


def test_the_app_refuses_settings_it_cannot_honour(engine: Engine):
    with pytest.raises(InvalidArgument, match="process"):
        notifications_app(engine, process="later")  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument, match="max_body_bytes"):
        notifications_app(engine, max_body_bytes=10**9)


# -- the Django view of docs/notifications.md -------------------------------------------------


def django_view(engine: Engine) -> types.FunctionType:
    """The view exactly as the documentation shows it, with ``engine`` as the project's."""
    source = DOCS.read_text(encoding="utf-8")
    match = re.search(r"<!-- django-view -->\n```python\n(.*?)```", source, re.DOTALL)
    assert match, "docs/notifications.md shows the Django view"
    project = types.ModuleType("myproject")
    module = types.ModuleType("myproject.billing_engine")
    module.engine = engine  # type: ignore[attr-defined]
    sys.modules.update({"myproject": project, "myproject.billing_engine": module})
    try:
        namespace: dict[str, object] = {"__name__": "myproject.views"}
        exec(compile(match.group(1), str(DOCS), "exec"), namespace)
    finally:
        del sys.modules["myproject"], sys.modules["myproject.billing_engine"]
    view = namespace["gateway_notification"]
    assert isinstance(view, types.FunctionType)
    return view


urlpatterns: list[object] = []
"""This module is the URLconf of the Django test below."""


@pytest.fixture
def django_client(engine: Engine) -> Iterator[object]:
    import django
    from django.conf import settings
    from django.test import Client
    from django.urls import clear_url_caches, path

    if not settings.configured:
        settings.configure(
            ROOT_URLCONF=__name__, ALLOWED_HOSTS=["testserver"], MIDDLEWARE=[], DEBUG=False
        )
        django.setup()
    urlpatterns[:] = [
        path("billing/notifications/<str:gateway>", django_view(engine))  # type: ignore[arg-type]
    ]
    clear_url_caches()
    yield Client()
    urlpatterns.clear()


def test_the_documented_django_view_takes_in_notifications(
    engine: Engine, fake: FakeGateway, django_client, sqlite_url: str
):
    subscription_id, webhook = paid_link(engine, fake)
    post = django_client.post

    response = post(
        "/billing/notifications/fake", data=webhook.body, content_type="application/json"
    )
    again = post("/billing/notifications/fake", data=webhook.body, content_type="application/json")
    forged = post("/billing/notifications/fake", data=b"{}", content_type="application/json")
    unknown = post("/billing/notifications/stripe", data=b"{}", content_type="application/json")
    wrong_method = django_client.get("/billing/notifications/fake")

    assert (response.status_code, response.content) == (200, b"OK")
    assert status_of(engine, subscription_id) is PaymentStatus.SUCCEEDED
    assert again.status_code == 200
    assert forged.status_code == 400
    assert unknown.status_code == 404
    assert wrong_method.status_code == 405
    assert kept(sqlite_url) == 1
