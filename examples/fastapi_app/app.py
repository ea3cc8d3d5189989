"""A FastAPI app that embeds the billing engine: a SaaS backend's billing API.

Run it (see README.md)::

    BILLING_EXAMPLE_FAKE=1 uvicorn app:app --reload

What it shows:

* **One engine per process**, opened by the app's lifespan and closed with it.
* **Settings from the environment**: ``BILLING_DATABASE_URL`` (default: the SQLite file
  ``billing_example.db``), the gateways configured by their own variables (docs/operations.md),
  or the in-process fake gateway with ``BILLING_EXAMPLE_FAKE=1``.
* **An HTTP API** over the engine: customers, payment methods (a gateway's card token, never
  card data), plans, subscribe, change plan, cancel, a customer's subscriptions and invoices.
  Money is ``{"amount": "11888", "currency": "CLP"}``: a decimal string, never a float.
* **Idempotency**: the ``Idempotency-Key`` header of every POST is the engine's
  ``idempotency_key``, so a client that retries gets the first answer back and nothing twice.
* **Errors** mapped to HTTP: a bad argument is 422 naming the field and the rule, a missing
  record 404, a reused key with other arguments 409...
* **Webhooks**: ``billing.web.notifications_app(engine)`` mounted at ``/billing/notifications``.
* **Events to the host**: a background loop delivers the engine's events to this app's handlers
  (``engine.dispatch``); one of them queues a welcome e-mail per ``subscription.created``, in the
  host's own table.
"""

import asyncio
import logging
import os
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Header, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict
from sqlalchemy import Column, MetaData, String, Table, create_engine, insert, select
from sqlalchemy.exc import IntegrityError
from starlette.types import Receive, Scope, Send

from billing import (
    AlreadyExists,
    BillingError,
    Clock,
    ConcurrentUpdate,
    CurrencyMismatch,
    Customer,
    Engine,
    GatewayError,
    IdempotencyConflict,
    IllegalTransition,
    InvalidArgument,
    Invoice,
    Money,
    NotFound,
    PaymentAttempt,
    PaymentGateway,
    PaymentMethod,
    Plan,
    Subscription,
    TaxRate,
    open_engine,
)
from billing.store.unit_of_work import StoredEvent
from billing.testing import FakeGateway
from billing.web import notifications_app

log = logging.getLogger("example")

# -- settings ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class ExampleSettings:
    """This app's settings; :meth:`from_env` reads them from the environment."""

    database_url: str = "sqlite:///billing_example.db"
    """The billing engine's database (``BILLING_DATABASE_URL``)."""
    host_database_url: str = "sqlite:///example_host.db"
    """The host's own database, where its welcome e-mails are queued
    (``EXAMPLE_HOST_DATABASE_URL``)."""
    fake_gateway: bool = False
    """Charge through the in-process fake gateway (``BILLING_EXAMPLE_FAKE=1``) instead of the
    gateways the environment configures."""
    dispatch_seconds: float = 2.0
    """How often the events are delivered to the handlers (``BILLING_EXAMPLE_DISPATCH_SECONDS``);
    ``0`` leaves delivery to ``billing worker --handlers``."""

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> "ExampleSettings":
        env = os.environ if environ is None else environ
        fake = env.get("BILLING_EXAMPLE_FAKE", "0")
        if fake not in ("0", "1"):
            raise InvalidArgument("BILLING_EXAMPLE_FAKE", "must be 0 or 1", fake)
        every = env.get("BILLING_EXAMPLE_DISPATCH_SECONDS", str(cls.dispatch_seconds))
        try:
            seconds = float(every)
        except ValueError:
            seconds = -1.0
        if not 0 <= seconds <= 3600:
            rule = "must be a number of seconds from 0 to 3600"
            raise InvalidArgument("BILLING_EXAMPLE_DISPATCH_SECONDS", rule, every)
        return cls(
            database_url=env.get("BILLING_DATABASE_URL") or cls.database_url,
            host_database_url=env.get("EXAMPLE_HOST_DATABASE_URL") or cls.host_database_url,
            fake_gateway=fake == "1",
            dispatch_seconds=seconds,
        )


CATALOG = (
    Plan.of(code="basico", name="Básico", price="9990", currency="CLP"),
    Plan.of(code="pro", name="Pro", price="19990", currency="CLP"),
)
"""The plans this SaaS sells; :func:`seed_plans` creates them once."""


def open_billing(
    settings: ExampleSettings,
    *,
    clock: Clock | None = None,
    gateways: Iterable[PaymentGateway] | None = None,
) -> Engine:
    """The engine for this process: on ``settings.database_url``, charging through
    ``gateways`` (the fake one with ``BILLING_EXAMPLE_FAKE=1``; otherwise those the environment
    configures). ``clock`` is for tests (a ``ManualClock``); the default is the system clock."""
    if gateways is None and settings.fake_gateway:
        gateways = [FakeGateway()]
    # migrate=True keeps the example one command away from running; in production run
    # `billing migrate` as a deploy step instead, before the new code starts.
    engine = open_engine(settings.database_url, clock=clock, gateways=gateways, migrate=True)
    seed_plans(engine)
    return engine


def seed_plans(engine: Engine) -> None:
    """Create the catalog's plans; an idempotency key per plan makes every later start a
    no-op (and a changed price an ``IdempotencyConflict``: plans are not edited in place)."""
    for plan in CATALOG:
        engine.create_plan(plan, idempotency_key=f"example-catalog-{plan.code}")


# -- the host's side of events ----------------------------------------------------------------

host_metadata = MetaData()
welcome_emails = Table(
    "welcome_emails",
    host_metadata,
    Column("event_id", String(64), primary_key=True),  # at-least-once delivery: dedupe on it
    Column("customer_id", String(64), nullable=False),
    Column("subscription_id", String(64), nullable=False),
    Column("plan_code", String(64), nullable=False),
    Column("queued_at", String(40), nullable=False),  # ISO 8601 with its offset
)


class Host:
    """The host application's own data: here, the welcome e-mails it queued."""

    def __init__(self, database_url: str) -> None:
        self.database = create_engine(database_url)
        host_metadata.create_all(self.database)

    def close(self) -> None:
        self.database.dispose()

    def send_welcome_email(self, event: StoredEvent) -> None:
        """The handler of ``subscription.created``: queue one welcome e-mail per event.

        Events arrive at least once (a crash after the handler and before the acknowledgement
        delivers one again), so the event's id is the row's key: a redelivery queues nothing.
        """
        row = {
            "event_id": event.id,
            "customer_id": event.payload["customer_id"],
            "subscription_id": event.payload["subscription_id"],
            "plan_code": event.payload["plan_code"],
            "queued_at": event.at.isoformat(),
        }
        try:
            with self.database.begin() as connection:
                connection.execute(insert(welcome_emails).values(**row))
        except IntegrityError:
            log.info("welcome_email.already_queued event_id=%s", event.id)
            return
        log.info("welcome_email.queued customer=%s", row["customer_id"])

    def welcome_emails(self, customer_id: str | None = None) -> list[dict[str, Any]]:
        query = select(welcome_emails).order_by(welcome_emails.c.queued_at)
        if customer_id is not None:
            query = query.where(welcome_emails.c.customer_id == customer_id)
        with self.database.connect() as connection:
            return [dict(row._mapping) for row in connection.execute(query)]

    def handlers(self) -> dict[str, list[Callable[[StoredEvent], None]]]:
        """What ``engine.dispatch`` delivers to: event names (or ``"*"``) to handlers."""
        return {"subscription.created": [self.send_welcome_email]}


async def deliver_events(
    engine: Engine,
    handlers: Mapping[str, Sequence[Callable[[StoredEvent], None]]],
    every: float,
    stop: asyncio.Event,
) -> None:
    """Deliver the engine's events to ``handlers`` every ``every`` seconds until ``stop``.

    ``engine.dispatch`` claims the events it delivers, so several web processes (and workers
    with ``--handlers``) can run this at once: each event reaches the handlers once, in order
    per subscription, and one that fails is retried later without holding back the others.
    """
    while not stop.is_set():
        try:
            await asyncio.to_thread(engine.dispatch, handlers)
        except BillingError:  # the database is unreachable: try again on the next round
            log.exception("events.dispatch_failed")
        with suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=every)


# -- JSON: money as strings, instants in ISO 8601 ---------------------------------------------


def money(amount: Money) -> dict[str, str]:
    return {"amount": amount.to_decimal_string(), "currency": amount.currency.code}


def instant(at: datetime | None) -> str | None:
    return None if at is None else at.isoformat()


def customer_json(customer: Customer) -> dict[str, Any]:
    return {
        "id": customer.id,
        "timezone": customer.timezone.key,
        "metadata": dict(customer.metadata),
    }


def payment_method_json(method: PaymentMethod) -> dict[str, Any]:
    # method.token is the gateway's id for the stored card; the API has no use for it
    return {
        "id": method.id,
        "gateway": method.gateway,
        "label": method.label,
        "default": method.is_default,
    }


def plan_json(plan: Plan) -> dict[str, Any]:
    return {
        "code": plan.code,
        "name": plan.name,
        "price": money(plan.price),
        "interval": str(plan.interval),
        "trial_days": plan.trial_days,
        "active": plan.is_active,
    }


def payment_json(payment: PaymentAttempt) -> dict[str, Any]:
    return {
        "id": payment.id,
        "invoice_id": payment.invoice_id,
        "status": payment.status.value,
        "amount": money(payment.amount),
        "error": None if payment.error is None else payment.error.value,
        "action_url": payment.action_url,  # a payment link: send the customer there
    }


def subscription_json(
    subscription: Subscription, payment: PaymentAttempt | None = None
) -> dict[str, Any]:
    period = subscription.current_period
    body: dict[str, Any] = {
        "id": subscription.id,
        "customer_id": subscription.customer_id,
        "plan": subscription.plan.code,
        "price": money(subscription.plan.price),
        "status": subscription.status.value,
        "current_period": None
        if period is None
        else {"start": instant(period.start), "end": instant(period.end)},
        "cancel_at_period_end": subscription.cancel_at_period_end,
        "canceled_at": instant(subscription.canceled_at),
        "debt": money(subscription.debt_total),
        "created_at": instant(subscription.created_at),
    }
    if payment is not None:
        body["latest_payment"] = payment_json(payment)
    return body


def invoice_json(invoice: Invoice) -> dict[str, Any]:
    return {
        "id": invoice.id,
        "number": invoice.number,
        "subscription_id": invoice.subscription_id,
        "status": invoice.status.value,
        "reason": invoice.reason.value,
        "total": money(invoice.total),
        "lines": [
            {"kind": line.kind.value, "description": line.description, "amount": money(line.amount)}
            for line in invoice.lines
        ],
        "created_at": instant(invoice.created_at),
        "paid_at": instant(invoice.paid_at),
    }


def latest_payment(engine: Engine, subscription_id: str) -> PaymentAttempt | None:
    payments = engine.payments(subscription_id=subscription_id)
    return payments[-1] if payments else None


# -- errors -----------------------------------------------------------------------------------


def problem(exc: BillingError) -> tuple[int, dict[str, Any]]:
    """The HTTP status and JSON body for an engine error (the most specific class first)."""
    body: dict[str, Any] = {"message": str(exc)}
    match exc:
        case InvalidArgument():
            return 422, {"error": "invalid_argument", "field": exc.field, "rule": exc.rule, **body}
        case CurrencyMismatch():
            return 422, {"error": "currency_mismatch", **body}
        case NotFound():
            return 404, {"error": "not_found", "entity": exc.entity, **body}
        case IdempotencyConflict():
            return 409, {"error": "idempotency_conflict", **body}
        case AlreadyExists():
            return 409, {"error": "already_exists", "entity": exc.entity, **body}
        case IllegalTransition():
            return 409, {"error": "illegal_transition", "status": exc.status, **body}
        case ConcurrentUpdate():  # nothing was written: retry with the same Idempotency-Key
            return 409, {"error": "concurrent_update", "retryable": True, **body}
        case GatewayError():
            details = {"gateway": exc.gateway, "code": exc.code, "retryable": exc.retryable}
            return 502, {"error": "gateway_error", **details, **body}
        case _:  # StorageError, SchemaNotReady, ExchangeRateNotFound...: not the client's fault
            log.error("billing.unavailable error=%s", exc)
            return 503, {"error": "unavailable", "message": "billing is unavailable, try again"}


async def billing_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, BillingError)
    status, body = problem(exc)
    return JSONResponse(body, status_code=status)


async def invalid_request(request: Request, exc: Exception) -> JSONResponse:
    """FastAPI's own validation errors, in the same shape as the engine's: the first field
    (``tax.percent``, ``idempotency-key``...) and its rule, then all of them."""
    assert isinstance(exc, RequestValidationError)
    errors = [
        {"field": ".".join(str(part) for part in error["loc"][1:]), "rule": error["msg"]}
        for error in exc.errors()
    ]
    first = errors[0] if errors else {"field": "body", "rule": "must be a JSON object"}
    return JSONResponse({"error": "invalid_request", **first, "errors": errors}, status_code=422)


# -- the API ----------------------------------------------------------------------------------


class Body(BaseModel):
    # strict: "19" is a string and 19.5 is not; unknown fields are refused, not ignored
    model_config = ConfigDict(extra="forbid", strict=True)


class NewCustomer(Body):
    timezone: str
    customer_id: str | None = None
    name: str | None = None
    email: str | None = None


class NewPaymentMethod(Body):
    gateway: str
    token: str
    """What the gateway's own card form or script gave back: never a card number."""
    label: str | None = None


class Tax(Body):
    name: str
    percent: str
    """A decimal string, such as ``"19"``."""
    inclusive: bool = False


class NewSubscription(Body):
    customer_id: str
    plan_code: str
    tax: Tax | None = None


class PlanChange(Body):
    plan_code: str
    behavior: str = "carry_debt"
    """``carry_debt`` (the difference is collected with the next renewal), ``invoice_now`` or
    ``none``."""


class Cancellation(Body):
    at_period_end: bool = True


def the_engine(request: Request) -> Engine:
    engine: Engine = request.app.state.engine
    return engine


def the_host(request: Request) -> Host:
    host: Host = request.app.state.host
    return host


Billing = Annotated[Engine, Depends(the_engine)]
HostApp = Annotated[Host, Depends(the_host)]
IdempotencyKey = Annotated[
    str | None, Header(alias="Idempotency-Key", min_length=1, max_length=255)
]


def create_app(
    settings: ExampleSettings | None = None,
    *,
    clock: Clock | None = None,
    gateways: Iterable[PaymentGateway] | None = None,
) -> FastAPI:
    """The app. ``settings`` default to :meth:`ExampleSettings.from_env`, read when the app
    starts; ``clock`` and ``gateways`` go to :func:`open_billing` (tests pass their own)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        chosen = settings or ExampleSettings.from_env()
        engine = await asyncio.to_thread(open_billing, chosen, clock=clock, gateways=gateways)
        host = Host(chosen.host_database_url)
        app.state.engine = engine
        app.state.host = host
        app.state.notifications = notifications_app(engine)
        stop = asyncio.Event()
        delivery = None
        if chosen.dispatch_seconds > 0:
            delivery = asyncio.create_task(
                deliver_events(engine, host.handlers(), chosen.dispatch_seconds, stop)
            )
        try:
            yield
        finally:
            stop.set()
            if delivery is not None:
                await delivery  # a delivery under way finishes before the engine closes
            engine.close()
            host.close()

    app = FastAPI(title="billing example", lifespan=lifespan)
    app.add_exception_handler(BillingError, billing_error)
    app.add_exception_handler(RequestValidationError, invalid_request)

    async def notifications(scope: Scope, receive: Receive, send: Send) -> None:
        # the engine exists once the lifespan opened it: this hands requests to its app
        await app.state.notifications(scope, receive, send)

    app.mount("/billing/notifications", notifications)

    # Endpoints are plain `def`s: the engine is synchronous (database, gateway calls), so
    # FastAPI runs them in its thread pool and the event loop never waits on them.

    @app.post("/customers", status_code=201)
    def create_customer(
        new: NewCustomer, engine: Billing, idempotency_key: IdempotencyKey = None
    ) -> dict[str, Any]:
        # QVO and Openpay need a name and an e-mail for the customers they keep
        contact = (("name", new.name), ("email", new.email))
        customer = engine.create_customer(
            customer_id=new.customer_id,
            timezone=new.timezone,
            metadata={key: value for key, value in contact if value is not None},
            idempotency_key=idempotency_key,
        )
        return customer_json(customer)

    @app.post("/customers/{customer_id}/payment-methods", status_code=201)
    def add_payment_method(
        customer_id: str,
        new: NewPaymentMethod,
        engine: Billing,
        idempotency_key: IdempotencyKey = None,
    ) -> dict[str, Any]:
        method = engine.add_payment_method(
            customer_id,
            gateway=new.gateway,
            token=new.token,
            label=new.label,
            idempotency_key=idempotency_key,
        )
        return payment_method_json(method)

    @app.get("/plans")
    def list_plans(engine: Billing) -> list[dict[str, Any]]:
        return [plan_json(plan) for plan in engine.plans() if plan.is_active]

    @app.post("/subscriptions", status_code=201)
    def subscribe(
        new: NewSubscription, engine: Billing, idempotency_key: IdempotencyKey = None
    ) -> dict[str, Any]:
        tax = None
        if new.tax is not None:
            tax = TaxRate.of(new.tax.name, new.tax.percent, inclusive=new.tax.inclusive)
        subscription = engine.subscribe(
            new.customer_id, new.plan_code, tax=tax, idempotency_key=idempotency_key
        )
        return subscription_json(subscription, latest_payment(engine, subscription.id))

    @app.post("/subscriptions/{subscription_id}/change-plan")
    def change_plan(
        subscription_id: str,
        change: PlanChange,
        engine: Billing,
        idempotency_key: IdempotencyKey = None,
    ) -> dict[str, Any]:
        subscription = engine.change_plan(
            subscription_id,
            change.plan_code,
            behavior=change.behavior,
            idempotency_key=idempotency_key,
        )
        return subscription_json(subscription, latest_payment(engine, subscription.id))

    @app.post("/subscriptions/{subscription_id}/cancel")
    def cancel(
        subscription_id: str,
        cancellation: Cancellation,
        engine: Billing,
        idempotency_key: IdempotencyKey = None,
    ) -> dict[str, Any]:
        subscription = engine.cancel(
            subscription_id,
            at_period_end=cancellation.at_period_end,
            idempotency_key=idempotency_key,
        )
        return subscription_json(subscription)

    @app.get("/customers/{customer_id}/subscriptions")
    def customer_subscriptions(customer_id: str, engine: Billing) -> list[dict[str, Any]]:
        engine.customer(customer_id)  # 404 for a customer that does not exist
        return [subscription_json(s) for s in engine.subscriptions(customer_id)]

    @app.get("/customers/{customer_id}/invoices")
    def customer_invoices(customer_id: str, engine: Billing) -> list[dict[str, Any]]:
        engine.customer(customer_id)
        return [invoice_json(invoice) for invoice in engine.invoices(customer_id=customer_id)]

    @app.get("/welcome-emails")
    def queued_welcome_emails(host: HostApp, customer_id: str | None = None) -> list[Any]:
        """The host's side of the events: the welcome e-mails its handler queued."""
        return host.welcome_emails(customer_id)

    return app


app = create_app()
"""``uvicorn app:app``: settings from the environment, read at startup."""


if __name__ == "__main__":
    import uvicorn

    logging.basicConfig(level=logging.INFO)
    uvicorn.run(app, host="127.0.0.1", port=int(os.environ.get("PORT", "8000")))
