"""The demo's world: the four gateways' fake servers and the host's webhook endpoint on loopback,
the engine on its SQLite file, the payers, and the test clock that moves them all.

Nothing here imports an adapter. The fakes are the ``billing.fake_gateways`` entry points, each
served under ``/<gateway>`` of one local server; the adapters are built by
:func:`billing.bootstrap.discover_gateways` from the variables each fake's package gives for it
(``fake_worker_environment(base_url)``), exactly as a worker would be configured. The demo then
acts through the fakes' control endpoints (``/_fake/...``): it types a card on QVO's page, makes
an Openpay token as openpay.js would, tells a card to decline, pays a payment link as the payer,
and moves the Khipu and Payvalida fakes' clocks along with the test clock (their links expire by
their own clocks). QVO's and Openpay's fakes have no clock control: they keep the wall clock,
which only their own records' timestamps show.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable, Iterator, Mapping, MutableMapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from importlib.metadata import entry_points
from typing import Any, Literal, Protocol

import httpx

from billing.bootstrap import discover_gateways, open_engine
from billing.clock import ManualClock
from billing.config import Settings
from billing.demo.story import Habit
from billing.domain.errors import BillingError
from billing.domain.exchange import ExchangeRates
from billing.domain.payments import PaymentAttempt, PaymentStatus
from billing.engine import Engine
from billing.ports import PaymentGateway

FAKE_GATEWAYS = "billing.fake_gateways"
"""The entry-point group of the gateways' fake servers (see ``billing fake-gateways serve``)."""

QVO_APPROVING_CARD = "4051885600446623"
"""The QVO sandbox's test card that its inscription page accepts (QVO's own document)."""
OPENPAY_TEST_CARD = "4111111111111111"
"""Openpay's sandbox Visa test card."""
RETURN_URL = "https://saas.example/cards/back"
"""Where QVO's inscription page sends the customer back to (never followed here)."""

RECONCILE_AFTER = timedelta(hours=1)
"""How long an unsettled payment waits before the engine first asks its gateway about it (the
engine's default is a minute). The demo's payers pay their links within the hour, so their
notifications settle them, and the test clock makes far fewer stops."""

FOLLOW_WITHIN = timedelta(minutes=1)
"""The Khipu and Payvalida fakes' clocks are moved when they are this far behind the test clock
(links last days: a minute's difference changes nothing, and saves two requests a stop)."""

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Any]
Send = Callable[[Message], Any]


class NotificationsApp(Protocol):
    """``billing.web.notifications_app``: the ASGI app of the host's webhook endpoints. The
    ``billing`` command passes it in: the demo and ``billing.web`` are independent layers."""

    def __call__(
        self, engine: Engine, *, process: Literal["background", "inline"] = ...
    ) -> Any: ...


class DemoError(Exception):
    """The demo cannot go on; the message is one line for the person who ran it."""


class Interrupted(Exception):
    """The person who ran the demo asked it to stop (Ctrl-C)."""


@dataclass(frozen=True, slots=True)
class Delivery:
    """A notification a gateway POSTed to the host's endpoint, and the answer it got."""

    at: datetime
    gateway: str
    status: int


class Inbox:
    """The host's webhook endpoint, served before the engine exists (the gateways must know its
    URL to be built): it answers 503 until :attr:`app` is set to ``billing.web``'s app, and
    records every delivery with the test clock's time and the HTTP status answered."""

    def __init__(self, clock: ManualClock) -> None:
        self.app: Any = None
        self.deliveries: list[Delivery] = []
        self._clock = clock

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        if self.app is None:
            await send({"type": "http.response.start", "status": 503, "headers": []})
            await send({"type": "http.response.body", "body": b"ERROR: not ready"})
            return
        answered: list[int] = []

        async def recorded(message: Message) -> None:
            if message["type"] == "http.response.start":
                answered.append(int(message["status"]))
            await send(message)

        await self.app(scope, receive, recorded)
        gateway = str(scope.get("path", "")).strip("/").split("/")[-1]
        self.deliveries.append(Delivery(self._clock.now(), gateway, answered[0] if answered else 0))


class Fakes:
    """The fake servers' control endpoints: the demo acting as the customers and moving time."""

    def __init__(self, client: httpx.Client, urls: Mapping[str, str], env: Mapping[str, str]):
        self._client = client
        self.urls = dict(urls)
        self._env = dict(env)
        self._ahead = timedelta(0)
        """How far the Khipu and Payvalida fakes' clocks were moved past the wall clock."""

    def _post(self, gateway: str, path: str, **kwargs: Any) -> httpx.Response:
        answer = self._client.post(f"{self.urls[gateway]}{path}", **kwargs)
        if answer.status_code >= 400:
            raise DemoError(
                f"{gateway}'s fake refused POST {path}: {answer.status_code} {answer.text[:200]}"
            )
        return answer

    def follow(self, now: datetime) -> None:
        """Move the fakes that have a clock control to ``now`` (they only move forward)."""
        ahead = now - datetime.now(UTC)
        move = (ahead - self._ahead).total_seconds()
        if move < FOLLOW_WITHIN.total_seconds():  # (the wall clock moves them a little too)
            return
        self._post("khipu", "/_fake/clock", json={"advance_seconds": move})
        self._post("payvalida", "/_fake/advance", json={"seconds": move})
        self._ahead = ahead

    def notify(self, gateway: str, url: str) -> None:
        """Make Payvalida's fake POST its notifications to ``url`` (Payvalida's notification URL
        is registered with the merchant, not sent with orders; Khipu's goes with each payment,
        from ``BILLING_KHIPU_NOTIFY_URL``)."""
        self._post(gateway, "/_fake/notify_url", json={"url": url})

    def enroll_card(self, engine: Engine, customer: str) -> str:
        """A QVO card through Webpay Oneclick's inscription page: the card is typed on the
        gateway's page, never given to the engine. Returns the card's reference."""
        enrollment = engine.start_payment_method_enrollment(
            customer, gateway="qvo", return_url=RETURN_URL
        )
        page = self._client.post(enrollment.redirect_url, data={"card_number": QVO_APPROVING_CARD})
        if page.status_code != 302:
            raise DemoError(f"QVO's inscription page refused the card: {page.status_code}")
        done = engine.complete_payment_method_enrollment("qvo", enrollment.reference)
        if done.status.value != "succeeded":
            raise DemoError(f"QVO's inscription ended {done.status.value}")
        [method] = engine.payment_methods(customer)
        return method.token

    def openpay_token(self, holder: str) -> str:
        """A card token made as openpay.js makes one in the customer's browser."""
        merchant = self._env["BILLING_OPENPAY_MERCHANT_ID"]
        answer = self._post(
            "openpay",
            f"/v1/{merchant}/tokens",
            auth=(self._env["BILLING_OPENPAY_PRIVATE_KEY"], ""),
            json={
                "card_number": OPENPAY_TEST_CARD,
                "holder_name": holder,
                "expiration_month": "12",
                "expiration_year": "40",
                "cvv2": "123",
            },
        )
        return str(answer.json()["id"])

    def decline_qvo(self, card: str, times: int | None) -> None:
        """The QVO card's next ``times`` charges (all, if ``None``) are rejected for lack of
        funds."""
        self._post(
            "qvo",
            "/_fake/rules",
            json={"card_id": card, "outcome": "insufficient_funds", "times": times},
        )

    def decline_openpay(self, customer: str, times: int | None) -> None:
        """The Openpay customer's next ``times`` charges (all, if ``None``) are declined
        (3001)."""
        self._post(
            "openpay",
            "/_fake/rules",
            json={"error_code": 3001, "count": times, "external_id": customer},
        )

    def hold_notifications(self, gateway: str, hold: bool) -> None:
        """Make Khipu's fake hold its notifications back (``hold``), or deliver the held ones
        now and stop holding."""
        self._post(gateway, "/_fake/webhooks/faults", json={"hold": hold})
        if not hold:
            self._post(gateway, "/_fake/webhooks/release", json={})

    def pay_link(self, gateway: str, reference: str) -> None:
        """Act as the payer: pay the link of the payment the gateway calls ``reference``. The
        fake notifies the host's endpoint before it answers."""
        if gateway == "khipu":
            self._post("khipu", "/_fake/pay", json={"payment_id": reference})
        else:
            self._post("payvalida", "/_fake/pay", json={"order": reference})


@dataclass
class Paid:
    """A link the demo paid as the payer, and whether the notification alone settled it."""

    at: datetime
    customer: str
    gateway: str
    payment_id: str
    invoice_id: str
    by_notification: bool


@dataclass
class Payers:
    """The customers of pay-by-link gateways, on the other side of each link: each pays a link
    a while after it was sent (or lets it expire), as their :class:`~billing.demo.story.Habit`
    says."""

    engine: Engine
    fakes: Fakes
    habits: Mapping[str, Habit]
    """Each payer's habit, by customer id."""
    paid: list[Paid] = field(default_factory=list)
    ignored: list[PaymentAttempt] = field(default_factory=list)
    _links: dict[str, int] = field(default_factory=dict)
    _after: int = 0
    _due: dict[str, tuple[datetime, PaymentAttempt]] = field(default_factory=dict)

    def watch(self) -> None:
        """Note every new link (the engine's ``payment.requires_action`` events since the last
        look), and when it is to be paid."""
        while batch := self.engine.events(after=self._after, limit=500, pending_only=False):
            self._after = batch[-1].seq
            for event in batch:
                customer = event.customer_id or str(event.payload.get("customer_id", ""))
                if event.name != "payment.requires_action" or customer not in self.habits:
                    continue
                habit = self.habits[customer]
                attempt = self._attempt(
                    str(event.payload["invoice_id"]), str(event.payload["payment_id"])
                )
                number = self._links.get(customer, 0)
                self._links[customer] = number + 1
                if number in habit.ignores:
                    self.ignored.append(attempt)
                else:
                    self._due[attempt.id] = (event.at + habit.delay, attempt)

    def next_at(self) -> datetime | None:
        """When the next payer acts, if any is to."""
        return min((when for when, _ in self._due.values()), default=None)

    def act(self, now: datetime) -> None:
        """Pay every link due by ``now`` that still waits for its payer."""
        for attempt_id, (when, attempt) in sorted(self._due.items(), key=lambda item: item[1][0]):
            if when > now:
                continue
            del self._due[attempt_id]
            current = self._attempt(attempt.invoice_id, attempt.id)
            if current.status is not PaymentStatus.REQUIRES_ACTION or current.reference is None:
                continue
            assert current.customer_id is not None
            assert current.gateway is not None
            self.fakes.pay_link(current.gateway, current.reference)
            after = self._attempt(attempt.invoice_id, attempt.id)  # notified before the answer
            self.paid.append(
                Paid(
                    at=now,
                    customer=current.customer_id,
                    gateway=current.gateway,
                    payment_id=current.id,
                    invoice_id=current.invoice_id,
                    by_notification=after.status is PaymentStatus.SUCCEEDED,
                )
            )

    def _attempt(self, invoice_id: str, payment_id: str) -> PaymentAttempt:
        [found] = [p for p in self.engine.payments(invoice_id=invoice_id) if p.id == payment_id]
        return found


@dataclass
class World:
    """Everything the demo started, stopped when the :func:`world` block ends."""

    engine: Engine
    clock: ManualClock
    fakes: Fakes
    inbox: Inbox
    fakes_url: str
    inbox_url: str
    stop: Callable[[], bool]
    """Whether to stop (Ctrl-C was pressed): checked between steps, and by the engine's runs,
    which then end their work in hand and release the rest."""

    def check(self) -> None:
        """Stop here if asked to: :class:`Interrupted`."""
        if self.stop():
            raise Interrupted


class _QuietDisconnects(logging.Filter):
    """Keep uvicorn from logging, as an application error, a request its client gave up on: on
    Ctrl-C the demo drops the request it was making, and the fake reading its body sees the
    client go (``ClientDisconnect``)."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        return type(error).__name__ != "ClientDisconnect"


@contextmanager
def world(
    database_url: str,
    clock: ManualClock,
    rates: ExchangeRates,
    notifications_app: NotificationsApp,
    gateways: tuple[str, ...],
    stop: Callable[[], bool],
) -> Iterator[World]:
    """Serve the fakes and the host's endpoint on loopback, build the adapters for them, open
    the engine, and stop all of it (servers, threads, clients, connections) when the block ends,
    however it ends."""
    from billing.testing.asgi import mounted, serve  # starlette and uvicorn load only here

    installed = {entry.name: entry for entry in entry_points(group=FAKE_GATEWAYS)}
    missing = [name for name in gateways if name not in installed]
    if missing:
        raise DemoError(
            f"the fake servers of {', '.join(missing)} are not installed "
            f"(no {FAKE_GATEWAYS} entry point): install billing with its adapters"
        )
    with ExitStack() as stack:
        quiet = _QuietDisconnects()
        logging.getLogger("uvicorn.error").addFilter(quiet)
        stack.callback(logging.getLogger("uvicorn.error").removeFilter, quiet)
        servers = stack.enter_context(ExitStack())
        inbox = Inbox(clock)
        inbox_url = servers.enter_context(serve(inbox))
        apps = {name: installed[name].load()() for name in gateways}
        fakes_url = servers.enter_context(serve(mounted(apps)))
        urls = {name: f"{fakes_url}/{name}" for name in gateways}
        env: dict[str, str] = {}
        for name in gateways:
            module = importlib.import_module(installed[name].module)
            describe = getattr(module, "fake_worker_environment", None)
            if describe is None:
                raise DemoError(f"{name}'s package does not say how to reach its fake")
            env.update({str(k): str(v) for k, v in describe(urls[name]).items()})
        env["BILLING_KHIPU_NOTIFY_URL"] = f"{inbox_url}/khipu"
        env["BILLING_PAYVALIDA_NOTIFY_URL"] = f"{inbox_url}/payvalida"
        adapters: list[PaymentGateway] = discover_gateways(env)
        for adapter in adapters:
            stack.callback(adapter.close)
        found = {adapter.name for adapter in adapters}
        if not set(gateways) <= found:
            lacking = ", ".join(sorted(set(gateways) - found))
            raise DemoError(f"no adapter configured itself for {lacking}")
        settings = Settings(
            threads=1,  # one thread: invoices are numbered in a fixed order
            reconcile_after_seconds=RECONCILE_AFTER.total_seconds(),
        )
        engine = stack.enter_context(
            open_engine(
                database_url,
                clock=clock,
                gateways=[a for a in adapters if a.name in gateways],
                rates=rates,
                settings=settings,
                migrate=True,
            )
        )
        # the servers stop first (the fakes', then the endpoint's), so that a request in flight
        # (a notification being processed when Ctrl-C came) ends while the engine is still open
        stack.callback(servers.close)
        client = stack.enter_context(httpx.Client(timeout=30.0))
        fakes = Fakes(client, urls, env)
        fakes.notify("payvalida", f"{inbox_url}/payvalida")
        inbox.app = notifications_app(engine, process="inline")
        yield World(engine, clock, fakes, inbox, fakes_url, inbox_url, stop)


def run_until(world: World, payers: Payers, until: datetime, *, stops: list[datetime]) -> None:
    """Move the test clock to ``until``, stopping wherever work falls due or a payer acts; at
    each stop do what a worker does on its ticks (bill what is due, process notifications,
    reconcile), then let the payers act."""
    engine, clock = world.engine, world.clock
    repeats = 0
    while True:
        world.check()
        due = [when for when in (engine.next_run_at(), payers.next_at()) if when is not None]
        at = min(due, default=None)
        if at is None or at > until:
            break
        if at <= clock.now():  # due now still: the last step left it (it must not, for long)
            repeats += 1
            if repeats > 20:
                raise DemoError(f"work due at {at.isoformat()} is never done")
        else:
            repeats = 0
        step(world, payers, max(at, clock.now()))
        stops.append(clock.now())
    step(world, payers, until)
    stops.append(clock.now())


def step(world: World, payers: Payers, at: datetime) -> None:
    """One stop of the test clock, at ``at``: the gateways' clocks follow, the engine does a
    worker's work, and the payers pay the links due."""
    world.clock.set(at)
    world.fakes.follow(at)
    engine, stop = world.engine, world.stop
    failed = list(engine.run_due(stop=stop).failed)
    engine.process_notifications(stop=stop)
    failed += engine.reconcile(stop=stop).failed
    world.check()
    if failed:
        raise DemoError(f"billing failed at {at.isoformat()} for {', '.join(sorted(set(failed)))}")
    payers.watch()
    payers.act(at)


@contextmanager
def refused(what: str) -> Iterator[None]:
    """Turn the engine's refusal of a step of the story into a :class:`DemoError`."""
    try:
        yield
    except BillingError as exc:
        raise DemoError(f"{what}: {exc}") from exc
