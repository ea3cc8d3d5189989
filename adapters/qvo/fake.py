"""FakeQvo: a stateful stand-in for QVO's API, faithful to its document, for offline tests.

:class:`FakeQvo` keeps customers, cards, inscriptions, transactions, events and webhook
subscriptions (thread-safe); :func:`create_app` serves it as an ASGI (starlette) app, in
process through :class:`billing.testing.asgi.InProcessTransport` or over sockets with
:func:`billing.testing.asgi.serve`. Every handler is async and sleeps with ``asyncio.sleep``, so one
served fake sustains hundreds of concurrent slow requests.

QVO's endpoints served (``Authorization: Bearer <token>`` exactly, else a 401 error body):

* customers: ``POST/GET /customers``, ``GET/PUT/DELETE /customers/{id}``;
* inscriptions: ``POST /customers/{id}/cards/inscriptions``,
  ``GET /customers/{id}/cards/inscriptions/{uid}``, and the hosted page
  ``GET/POST /webpay_oneclick/init_inscription/{uid}`` (a form: ``card_number``, optional
  ``decision=reject`` and ``payment_type=debit``; it redirects to ``return_url?uid=...``);
* cards: ``GET /customers/{id}/cards``, ``GET/DELETE /customers/{id}/cards/{card}``,
  ``POST /customers/{id}/cards/{card}/charge``;
* transactions: ``GET /transactions``, ``GET /transactions/{id}``,
  ``POST /transactions/{id}/refund``;
* events: ``GET /events``, ``GET /events/{id}``.

Lists take ``page`` (1-based), ``per_page`` (default 20, at most 100), ``where`` (JSON; ``<``,
``<=``, ``>``, ``>=``, ``=``, ``!``, and ``like`` with SQL wildcards ``%`` and ``_``, on the
resource's own scalar attributes, all rules combined with AND) and ``order_by``
(``"<attribute> ASC|DESC"``); they answer a bare JSON array, newest first by default, with
``X-Page``, ``X-Per-Page`` and ``X-Total``. Parameters may come as JSON, as a form, or in the
query string (QVO's own examples use all three).

Outcomes: the sandbox's test cards decide inscriptions (``4051885600446623`` approves unless the
form says ``decision=reject``; ``5186059559590568`` always rejects); :class:`ChargeRules`
decides charges per card (``fake.rules.decline_next(card_id, 1, "rejected")``...). A declined
charge leaves a ``rejected`` (or ``unable_to_charge``) transaction and, by default, answers a
422 error (``decline_as="transaction"`` answers the transaction instead).

Faults (:class:`billing.testing.asgi.Faults`, ``fake.faults``): latency, charge_timeouts and
refund_timeouts (committed, then the answer is lost), server_errors (QVO's 500 body, nothing
done), html_errors, dropped_connections. Webhook faults (``fake.webhook_faults``): duplicates,
hold (delivered late, once released), out_of_order.

Control endpoints, for a fake served over sockets (no authentication; they are not QVO's):
``GET/POST /_fake/faults``, ``POST/DELETE /_fake/rules`` (``{"card_id", "outcome", "times"}``,
``times`` null for always), ``GET /_fake/requests``, ``POST /_fake/webhooks`` (``{"url"}``),
``POST /_fake/webhooks/faults``, ``POST /_fake/webhooks/release``,
``POST /_fake/webhooks/deliver`` (``{"url"}`` optional), and
``POST /_fake/transactions/{id}/settle`` (``{"status"}``).

Where QVO's document is silent, the fake's choices are listed in ``docs/adapters/qvo.md``.
"""

from __future__ import annotations

import base64
import copy
import hmac
import json
import os
import re
import secrets
import threading
import urllib.parse
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from functools import cached_property
from html import escape
from typing import Any, Generic, Literal, TypeVar, get_args

import anyio.to_thread
import httpx
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from adapters.qvo import _wire as wire
from billing.testing.asgi import Faults, dropped

__all__ = [
    "DEFAULT_TOKEN",
    "ChargeRules",
    "Delivery",
    "FakeQvo",
    "Outcome",
    "QvoApiError",
    "WebhookFaults",
    "create_app",
    "fake_app",
    "new_id",
]

DEFAULT_TOKEN = wire.DOCUMENT_TOKEN
"""The token a fake accepts unless given another: the example token of QVO's document."""
INSCRIPTION_TTL = timedelta(minutes=10)
"""How long an inscription waits for the customer (the document's example shows 10 minutes)."""
WAITING_TIMEOUT = timedelta(minutes=20)
PAY_LATE_AFTER = timedelta(minutes=10)
"""When a ``pay_late`` charge's transaction leaves ``waiting_response`` for ``successful``."""
"""After this long in ``waiting_response``, a transaction becomes ``response_timeout``."""
WEBHOOK_RETRY_WINDOW = timedelta(days=7)
"""Undelivered events are retried for this long, then never sent again (the document's rule)."""
DEFAULT_PER_PAGE = 20
MAX_PER_PAGE = 100
GATEWAY = "webpay_oneclick"

Outcome = Literal[
    "approve",
    "rejected",
    "insufficient_funds",
    "expired_card",
    "stolen_card",
    "fraud",
    "unable_to_charge",
    "waiting_response",
    "pay_late",
    "timeout",
]
"""What a charge on a card does: approve, decline in one of several ways, wait (for ever:
``waiting_response`` becomes ``response_timeout`` after 20 minutes; or ``pay_late``: it becomes
``successful`` after 10), or ``timeout``: approve, then lose the answer (this card's
``charge_timeouts``)."""

_OUTCOMES: Mapping[str, tuple[str, str, str]] = {
    "approve": ("successful", "success", "successful transaction"),
    "rejected": ("rejected", "rejected", "transaction rejected by the issuer"),
    "insufficient_funds": ("rejected", "rejected", "rejected: insufficient funds"),
    "expired_card": ("rejected", "rejected", "rejected: expired card"),
    "stolen_card": ("rejected", "rejected", "rejected: card reported stolen"),
    "fraud": ("rejected", "rejected", "rejected: suspected fraud"),
    "unable_to_charge": ("unable_to_charge", "error", "the payment route could not charge"),
    "waiting_response": ("waiting_response", "waiting", "waiting for the payment route"),
    "pay_late": ("waiting_response", "waiting", "waiting for the payment route"),
    "timeout": ("successful", "success", "successful transaction"),
}
"""Each outcome's transaction status, and its ``gateway_response`` status and message."""

_SETTLEMENTS = ("successful", "rejected", "unable_to_charge")
_FIELDS: Mapping[str, frozenset[str]] = {
    "customers": frozenset({"id", "name", "email", "phone", "credits", "created_at", "updated_at"}),
    "cards": frozenset(
        {"id", "last_4_digits", "card_type", "payment_type", "failure_count", "created_at"}
    ),
    "transactions": frozenset(
        {
            "id",
            "amount",
            "currency",
            "description",
            "gateway",
            "credits",
            "status",
            "created_at",
            "updated_at",
        }
    ),
    "events": frozenset({"id", "type", "created_at"}),
}
"""The scalar attributes each list can filter and sort on (nested ones are not filterable)."""
_OPERATORS = frozenset({"<", "<=", ">", ">=", "=", "like", "!"})


def new_id(prefix: str) -> str:
    """An id like QVO's: ``<prefix>_`` and 22 URL-safe base64 characters (16 random bytes)."""
    return f"{prefix}_" + base64.urlsafe_b64encode(secrets.token_bytes(16)).decode()[:22]


class QvoApiError(Exception):
    """An error QVO answers: an HTTP status and ``{"error": {"type", "message", "param"}}``."""

    def __init__(
        self, status: int, message: str, *, kind: str = "invalid_request_error", param: str = ""
    ) -> None:
        super().__init__(message)
        self.status = status
        self.kind = kind
        self.message = message
        self.param = param

    def body(self) -> dict[str, Any]:
        error: dict[str, Any] = {"type": self.kind, "message": self.message}
        if self.param:
            error["param"] = self.param
        return {"error": error}

    def response(self) -> Response:
        return JSONResponse(self.body(), status_code=self.status)


def _not_found(what: str, param: str) -> QvoApiError:
    return QvoApiError(404, f"{what} not found", param=param)


# -- rules, webhook faults, deliveries ----------------------------------------------------------


class ChargeRules:
    """What each card's next charges do (thread-safe). A card's queued outcomes come first,
    one per charge; then its standing outcome; cards without rules approve."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._queued: dict[str, deque[Outcome]] = {}
        self._standing: dict[str, Outcome] = {}

    def queue(self, card_id: str, outcome: Outcome, times: int = 1) -> None:
        """The card's next ``times`` charges (after those already queued) do ``outcome``."""
        _check_outcome(outcome)
        if times < 1:
            raise ValueError("times must be >= 1")
        with self._lock:
            self._queued.setdefault(card_id, deque()).extend([outcome] * times)

    def decline_next(self, card_id: str, n: int = 1, kind: Outcome = "rejected") -> None:
        """The card's next ``n`` charges are declined as ``kind`` (then it approves again)."""
        if kind == "approve":
            raise ValueError("a decline cannot be 'approve'")
        self.queue(card_id, kind, n)

    def always(self, card_id: str, outcome: Outcome) -> None:
        """Every charge on the card does ``outcome`` once its queue is empty."""
        _check_outcome(outcome)
        with self._lock:
            self._standing[card_id] = outcome

    def take(self, card_id: str) -> Outcome:
        """The outcome of the card's next charge (using up a queued one)."""
        with self._lock:
            queued = self._queued.get(card_id)
            if queued:
                return queued.popleft()
            return self._standing.get(card_id, "approve")

    def clear(self) -> None:
        """Forget every rule: all cards approve."""
        with self._lock:
            self._queued.clear()
            self._standing.clear()


def _check_outcome(outcome: object) -> None:
    if outcome not in get_args(Outcome):
        raise ValueError(f"unknown outcome {outcome!r}; one of {', '.join(get_args(Outcome))}")


@dataclass
class WebhookFaults:
    """Webhook faults: ``duplicates`` (the next N deliveries are POSTed twice), ``hold`` (the next
    N events are held back until :meth:`FakeQvo.release_webhooks`), ``out_of_order`` (each
    delivery round sends its events newest first)."""

    duplicates: int = 0
    hold: int = 0
    out_of_order: bool = False


@dataclass(frozen=True, slots=True)
class Delivery:
    """One webhook POST: the event, the URL, and the HTTP status (or the transport error)."""

    event_id: str
    url: str
    status: int | None
    error: str | None = None


# -- records ------------------------------------------------------------------------------------


@dataclass
class _Customer:
    id: str
    email: str
    name: str | None
    phone: str | None
    metadata: dict[str, Any] | None
    address: dict[str, Any] | None
    created_at: datetime
    updated_at: datetime
    seq: int
    default_card: str | None = None
    cards: list[str] = field(default_factory=list)
    transactions: list[str] = field(default_factory=list)


@dataclass
class _Card:
    id: str
    customer_id: str
    last4: str
    card_type: str
    payment_type: str
    created_at: datetime
    seq: int
    failure_count: int = 0


@dataclass
class _Inscription:
    uid: str
    customer_id: str
    return_url: str
    created_at: datetime
    updated_at: datetime
    expires_at: datetime
    status: str = "waiting_response"
    card_id: str | None = None
    error: dict[str, str] | None = None


@dataclass
class _Transaction:
    id: str
    customer: dict[str, Any]
    card: dict[str, Any]
    amount: int
    description: str | None
    status: str
    response: tuple[str, str]
    created_at: datetime
    updated_at: datetime
    seq: int
    refund: dict[str, Any] | None = None
    settles_at: datetime | None = None
    """When a ``pay_late`` transaction becomes successful."""


# -- the fake -----------------------------------------------------------------------------------


class FakeQvo:
    """QVO's state and rules, behind :func:`create_app`.

    ``token`` is the one API token accepted; ``clock`` gives the fake's time (UTC ``now`` by
    default; pass a test clock to move inscriptions and pending transactions on);
    ``decline_as`` is how a declined charge is answered: QVO's 422 error (the document's "si
    falla, se retornará un error") or the ``rejected`` transaction itself.
    """

    def __init__(
        self,
        token: str = DEFAULT_TOKEN,
        *,
        clock: Callable[[], datetime] | None = None,
        decline_as: Literal["error", "transaction"] = "error",
        webhook_urls: tuple[str, ...] = (),
    ) -> None:
        if not token:
            raise ValueError("the fake needs a token to accept")
        self._token = token
        self._clock = clock or (lambda: datetime.now(UTC))
        self.decline_as = decline_as
        self.faults = Faults()
        self.rules = ChargeRules()
        self.webhook_faults = WebhookFaults()
        self._lock = threading.RLock()
        self._seq = 0
        self._customers: dict[str, _Customer] = {}
        self._cards: dict[str, _Card] = {}
        self._inscriptions: dict[str, _Inscription] = {}
        self._transactions: dict[str, _Transaction] = {}
        self._events: list[dict[str, Any]] = []
        self._open: set[str] = set()  # inscriptions still waiting for the customer
        self._waiting: set[str] = set()  # transactions still waiting_response
        self._requests: Counter[str] = Counter()
        self._webhook_urls: list[str] = list(webhook_urls)
        self._acked: dict[str, set[str]] = {}
        self._held: set[str] = set()

    def __repr__(self) -> str:
        return f"FakeQvo(customers={len(self._customers)}, transactions={len(self._transactions)})"

    @cached_property
    def app(self) -> Starlette:
        """The ASGI app serving this fake (built once)."""
        return create_app(self)

    # -- inspection and levers for tests ------------------------------------------------------

    def requests(self, operation: str) -> int:
        """How many requests reached an operation (``"charge"``, ``"list_transactions"``...)."""
        with self._lock:
            return self._requests[operation]

    def request_counts(self) -> dict[str, int]:
        with self._lock:
            return dict(self._requests)

    def transactions(self, customer_id: str | None = None) -> list[dict[str, Any]]:
        """The transactions as QVO renders them, oldest first (a customer's only, if given)."""
        with self._state():
            return [
                self._render_transaction(item)
                for item in sorted(self._transactions.values(), key=lambda t: t.seq)
                if customer_id is None or item.customer["id"] == customer_id
            ]

    def events(self) -> list[dict[str, Any]]:
        """Every event, oldest first."""
        with self._state():
            return copy.deepcopy(self._events)

    def event_for(self, transaction_id: str) -> dict[str, Any] | None:
        """The latest event about a transaction (what its webhook carries), if any."""
        about = [event for event in self.events() if _transaction_id(event) == transaction_id]
        return about[-1] if about else None

    def set_faults(self, **values: float) -> Faults:
        """Set fault counters (and ``latency``) at once, under the fake's lock."""
        with self._lock:
            for name, value in values.items():
                if name not in Faults.settable():
                    raise ValueError(f"unknown fault {name!r}")
                setattr(self.faults, name, float(value) if name == "latency" else int(value))
            return copy.copy(self.faults)

    def take_fault(self, name: str) -> bool:
        """Use one occurrence of a fault counter, under the fake's lock."""
        with self._lock:
            return self.faults.take(name)

    def add_faults(self, **counts: int) -> None:
        """Add occurrences to fault counters, under the fake's lock."""
        with self._lock:
            for name, count in counts.items():
                self.set_faults(**{name: int(getattr(self.faults, name)) + count})

    def settle(self, transaction_id: str, status: str) -> dict[str, Any]:
        """Settle a ``waiting_response`` transaction as Webpay would, with its event."""
        if status not in _SETTLEMENTS:
            raise ValueError(f"a transaction settles as one of {', '.join(_SETTLEMENTS)}")
        with self._state():
            item = self._transactions.get(transaction_id)
            if item is None or item.status != "waiting_response":
                raise ValueError("only a waiting_response transaction can be settled")
            outcome = "approve" if status == "successful" else status
            item.status, gateway_status, message = _OUTCOMES[outcome]
            item.response = (gateway_status, message)
            self._waiting.discard(transaction_id)
            item.updated_at = self._now()
            self._settled(item)
            return self._render_transaction(item)

    # -- webhooks ----------------------------------------------------------------------------

    def subscribe_webhook(self, url: str) -> None:
        """Deliver events to ``url`` too (QVO registers URLs in its dashboard)."""
        with self._lock:
            if url not in self._webhook_urls:
                self._webhook_urls.append(url)

    def release_webhooks(self) -> None:
        """Let held events go out on the next delivery (they arrive late)."""
        with self._lock:
            self._held.clear()

    def deliver_webhooks(
        self,
        url: str | None = None,
        *,
        transport: httpx.BaseTransport | None = None,
        timeout: float = 5.0,
    ) -> list[Delivery]:
        """POST every pending event (not yet acknowledged by the URL, not held, younger than
        seven days) to ``url``, or to every subscribed URL. Only an exact 200 acknowledges.

        ``transport`` reaches the receivers another way (in process, in tests); it stays open.
        """
        urls = [url] if url else self._subscribed()
        deliveries: list[Delivery] = []
        client = httpx.Client(transport=transport, timeout=timeout)
        try:
            for target in urls:
                deliveries.extend(self._deliver_to(client, target))
        finally:
            if transport is None:
                client.close()
        return deliveries

    def _subscribed(self) -> list[str]:
        with self._lock:
            return list(self._webhook_urls)

    def _pending(self, url: str) -> list[tuple[dict[str, Any], int]]:
        """The events to send to ``url`` now, each with how many times to send it."""
        with self._state():
            oldest = self._now() - WEBHOOK_RETRY_WINDOW
            acked = self._acked.setdefault(url, set())
            pending = [
                event
                for event in self._events
                if event["id"] not in acked
                and event["id"] not in self._held
                and _created(event) >= oldest
            ]
            if self.webhook_faults.out_of_order:
                pending.reverse()
            plan: list[tuple[dict[str, Any], int]] = []
            for event in pending:
                twice = self.webhook_faults.duplicates > 0
                self.webhook_faults.duplicates -= int(twice)
                plan.append((copy.deepcopy(event), 2 if twice else 1))
            return plan

    def _deliver_to(self, client: httpx.Client, url: str) -> list[Delivery]:
        deliveries: list[Delivery] = []
        for event, times in self._pending(url):
            for _ in range(times):
                delivery = _post_event(client, url, event)
                deliveries.append(delivery)
                if delivery.status == 200:
                    with self._lock:
                        self._acked[url].add(event["id"])
        return deliveries

    # -- customers ---------------------------------------------------------------------------

    def create_customer(self, params: Mapping[str, Any]) -> dict[str, Any]:
        email = _text(params, "email", required=True)
        with self._state():
            self._check_email_free(email)
            now = self._now()
            customer = _Customer(
                id=new_id("cus"),
                email=email,
                name=_text(params, "name"),
                phone=_text(params, "phone"),
                metadata=_hash(params, "metadata"),
                address=_hash(params, "address"),
                created_at=now,
                updated_at=now,
                seq=self._next_seq(),
            )
            self._customers[customer.id] = customer
            rendered = self._render_customer(customer)
            self._emit("customer.created", {"customer": rendered})
            return rendered

    def get_customer(self, customer_id: str) -> dict[str, Any]:
        with self._state():
            return self._render_customer(self._customer(customer_id))

    def update_customer(self, customer_id: str, params: Mapping[str, Any]) -> dict[str, Any]:
        with self._state():
            customer = self._customer(customer_id)
            before = self._render_customer(customer)
            self._apply_update(customer, params)
            customer.updated_at = self._now()
            rendered = self._render_customer(customer)
            self._emit("customer.updated", {"customer": rendered}, {"customer": before})
            return rendered

    def _apply_update(self, customer: _Customer, params: Mapping[str, Any]) -> None:
        """PUT semantics: any parameter not given stays as it was (``nombre`` means ``name``).
        Everything is checked before anything changes, so a refused update changes nothing."""
        email = _text(params, "email")
        if email is not None and email.lower() != customer.email.lower():
            self._check_email_free(email)
        default = _text(params, "default_payment_method_id")
        if default is not None and default not in customer.cards:
            raise QvoApiError(
                400,
                "default_payment_method_id must be one of the customer's cards",
                param="default_payment_method_id",
            )
        hashes = {name: _hash(params, name) for name in ("metadata", "address") if name in params}
        customer.email = email or customer.email
        customer.name = _text(params, "name") or _text(params, "nombre") or customer.name
        customer.phone = _text(params, "phone") or customer.phone
        customer.default_card = default or customer.default_card
        for name, value in hashes.items():
            setattr(customer, name, value)

    def delete_customer(self, customer_id: str) -> None:
        with self._state():
            customer = self._customer(customer_id)
            rendered = self._render_customer(customer)
            for card_id in customer.cards:
                self._cards.pop(card_id, None)
            del self._customers[customer_id]
            self._emit("customer.deleted", {"customer": rendered})

    def list_customers(self, query: Mapping[str, Any]) -> tuple[list[dict[str, Any]], Headers]:
        with self._state():
            kind = _Kind(
                _FIELDS["customers"], _seq, _attribute({"credits": 0}), self._render_customer
            )
            return _page(self._customers.values(), kind, query)

    # -- inscriptions and the hosted page ------------------------------------------------------

    def create_inscription(
        self, customer_id: str, params: Mapping[str, Any], base_url: str
    ) -> dict[str, Any]:
        return_url = _text(params, "return_url", required=True)
        if urllib.parse.urlsplit(return_url).scheme not in ("http", "https"):
            raise QvoApiError(400, "return_url must be an http(s) URL", param="return_url")
        with self._state():
            self._customer(customer_id)
            now = self._now()
            inscription = _Inscription(
                uid=new_id("woi"),
                customer_id=customer_id,
                return_url=return_url,
                created_at=now,
                updated_at=now,
                expires_at=now + INSCRIPTION_TTL,
            )
            self._inscriptions[inscription.uid] = inscription
            self._open.add(inscription.uid)
            return {
                "inscription_uid": inscription.uid,
                "redirect_url": f"{base_url.rstrip('/')}/webpay_oneclick/init_inscription/"
                f"{inscription.uid}",
                "expiration_date": wire.format_datetime(inscription.expires_at),
            }

    def get_inscription(self, customer_id: str, uid: str) -> dict[str, Any]:
        with self._state():
            inscription = self._inscriptions.get(uid)
            if inscription is None or inscription.customer_id != customer_id:
                raise _not_found("inscription", "inscription_uid")
            return self._render_inscription(inscription)

    def inscription(self, uid: str) -> dict[str, Any]:
        """An inscription as QVO renders it, with the id of its customer (for tests).

        :raises KeyError: for an unknown inscription.
        """
        with self._state():
            inscription = self._inscriptions[uid]
            return {**self._render_inscription(inscription), "customer_id": inscription.customer_id}

    def inscription_open(self, uid: str) -> bool:
        """Whether the hosted page for this inscription still takes a card."""
        with self._state():
            inscription = self._inscriptions.get(uid)
            return inscription is not None and inscription.status == "waiting_response"

    def complete_inscription(self, uid: str, form: Mapping[str, str]) -> str:
        """The test bank's answer to the hosted form; returns where to send the customer back.

        :raises KeyError: for an unknown inscription.
        """
        with self._state():
            inscription = self._inscriptions[uid]
            if inscription.status == "waiting_response":
                self._decide(inscription, form)
                self._open.discard(uid)
            separator = "&" if urllib.parse.urlsplit(inscription.return_url).query else "?"
            return f"{inscription.return_url}{separator}uid={uid}"

    def _decide(self, inscription: _Inscription, form: Mapping[str, str]) -> None:
        number = re.sub(r"\D", "", form.get("card_number", ""))
        refusal = _card_refusal(number, form.get("decision", "approve"))
        customer = self._customers.get(inscription.customer_id)
        if refusal is None and customer is None:
            refusal = "the customer no longer exists"
        inscription.updated_at = self._now()
        if refusal is not None or customer is None:
            inscription.status = "failed"
            inscription.error = {"type": "invalid_request_error", "message": refusal or ""}
            return
        card = _Card(
            id=new_id("woc"),
            customer_id=customer.id,
            last4=number[-4:],
            card_type="Visa",
            payment_type="DB" if form.get("payment_type") == "debit" else "CD",
            created_at=self._now(),
            seq=self._next_seq(),
        )
        self._cards[card.id] = card
        customer.cards.append(card.id)
        # Our assumption: a customer's first card becomes the default payment method.
        customer.default_card = customer.default_card or card.id
        inscription.status, inscription.card_id = "succeeded", card.id
        self._emit(
            "customer.card.created",
            {"card": _render_card(card), "customer": _summary(customer)},
        )

    # -- cards and charges -------------------------------------------------------------------

    def get_card(self, customer_id: str, card_id: str) -> dict[str, Any]:
        with self._state():
            return _render_card(self._card(customer_id, card_id))

    def list_cards(
        self, customer_id: str, query: Mapping[str, Any]
    ) -> tuple[list[dict[str, Any]], Headers]:
        with self._state():
            customer = self._customer(customer_id)
            cards = [self._cards[c] for c in customer.cards]
            return _page(cards, _Kind(_FIELDS["cards"], _seq, _card_field, _render_card), query)

    def delete_card(self, customer_id: str, card_id: str) -> None:
        with self._state():
            card = self._card(customer_id, card_id)
            customer = self._customers[customer_id]
            customer.cards.remove(card_id)
            if customer.default_card == card_id:
                customer.default_card = customer.cards[0] if customer.cards else None
            del self._cards[card_id]
            self._emit(
                "customer.card.deleted",
                {"card": _render_card(card), "customer": _summary(customer)},
            )

    def charge(
        self, customer_id: str, card_id: str, params: Mapping[str, Any]
    ) -> tuple[int, dict[str, Any], bool]:
        """Charge a stored card: the status, the body, and whether the answer must be lost."""
        amount = _amount(params)
        description = _text(params, "description")
        with self._state():
            card = self._card(customer_id, card_id)
            customer = self._customers[customer_id]
            outcome = self.rules.take(card_id)
            status, gateway_status, message = _OUTCOMES[outcome]
            now = self._now()
            item = _Transaction(
                id=new_id("trx"),
                customer=_summary(customer),
                card={**_render_card(card)},
                amount=amount,
                description=description,
                status=status,
                response=(gateway_status, message),
                created_at=now,
                updated_at=now,
                seq=self._next_seq(),
                settles_at=now + PAY_LATE_AFTER if outcome == "pay_late" else None,
            )
            self._transactions[item.id] = item
            customer.transactions.append(item.id)
            if status == "waiting_response":
                self._waiting.add(item.id)
            else:
                self._settled(item)
            lose = outcome == "timeout" or self.faults.take("charge_timeouts")
            rendered = self._render_transaction(item)
        if status in ("rejected", "unable_to_charge") and self.decline_as == "error":
            return 422, QvoApiError(422, message).body(), lose
        return 201, rendered, lose

    # -- transactions and refunds ------------------------------------------------------------

    def get_transaction(self, transaction_id: str) -> dict[str, Any]:
        with self._state():
            return self._render_transaction(self._transaction(transaction_id))

    def list_transactions(self, query: Mapping[str, Any]) -> tuple[list[dict[str, Any]], Headers]:
        with self._state():
            constants = {"currency": wire.CURRENCY, "gateway": GATEWAY, "credits": 0}
            kind = _Kind(
                _FIELDS["transactions"], _seq, _attribute(constants), self._render_transaction
            )
            return _page(self._transactions.values(), kind, query)

    def refund(self, transaction_id: str) -> dict[str, Any]:
        """Refund the whole transaction (QVO ignores any ``amount``): only a successful credit
        payment can be refunded."""
        with self._state():
            item = self._transaction(transaction_id)
            if item.status != "successful":
                raise QvoApiError(400, f"the transaction is {item.status}: it cannot be refunded")
            if item.card.get("payment_type") != "CD":
                raise QvoApiError(400, "refunds are supported only for credit payments")
            before = self._render_transaction(item)
            item.status, item.updated_at = "refunded", self._now()
            item.refund = {"amount": item.amount, "created_at": wire.format_datetime(self._now())}
            rendered = self._render_transaction(item)
            self._emit("transaction.refunded", {"transaction": rendered}, {"transaction": before})
            return rendered

    # -- events ------------------------------------------------------------------------------

    def get_event(self, event_id: str) -> dict[str, Any]:
        with self._state():
            for event in self._events:
                if event["id"] == event_id:
                    return copy.deepcopy(event)
        raise _not_found("event", "event_id")

    def list_events(self, query: Mapping[str, Any]) -> tuple[list[dict[str, Any]], Headers]:
        with self._state():
            kind: _Kind[tuple[int, dict[str, Any]]] = _Kind(
                _FIELDS["events"],
                lambda pair: pair[0],
                lambda pair, name: pair[1].get(name),
                lambda pair: copy.deepcopy(pair[1]),
            )
            return _page(list(enumerate(self._events)), kind, query)

    # -- the HTTP front door -----------------------------------------------------------------

    async def intercept(self, request: Request, operation: str) -> Response | None:
        """What happens before an API handler: latency, counting, faults, format, credentials.
        A response ends the request there."""
        await self.faults.delay()
        with self._lock:
            self._requests[operation] += 1
            early = self.faults.early_answer()
            if early is not None:
                return early
        accept = request.headers.get("accept", "*/*").lower()
        if not any(kind in accept for kind in ("json", "*/*", "application/*")):
            return QvoApiError(406, "the API answers only JSON").response()
        if not self._authorized(request):
            return QvoApiError(401, "invalid API token", kind="authentication_error").response()
        with self._lock:
            if self.faults.take("server_errors"):
                return QvoApiError(500, "internal server error", kind="api_error").response()
        return None

    def _authorized(self, request: Request) -> bool:
        given = request.headers.get("authorization", "").encode()
        return hmac.compare_digest(given, f"Bearer {self._token}".encode())

    # -- internals ---------------------------------------------------------------------------

    @contextmanager
    def _state(self) -> Iterator[None]:
        """The lock, with time-driven changes applied first (expiries and timeouts)."""
        with self._lock:
            self._tick()
            yield

    def _tick(self) -> None:
        now = self._now()
        self._expire_inscriptions(now)
        self._move_waiting(now)

    def _expire_inscriptions(self, now: datetime) -> None:
        for uid in [u for u in self._open if now >= self._inscriptions[u].expires_at]:
            self._open.discard(uid)
            inscription = self._inscriptions[uid]
            inscription.status, inscription.updated_at = "failed", now
            inscription.error = {
                "type": "invalid_request_error",
                "message": "the inscription expired",
            }

    def _move_waiting(self, now: datetime) -> None:
        """Pending transactions move on: ``pay_late`` ones are paid after 10 minutes, the rest
        time out after 20 (``response_timeout``)."""
        for item in [self._transactions[key] for key in self._waiting]:
            if item.settles_at is not None and now >= item.settles_at:
                item.status, item.updated_at = "successful", now
                item.response = _OUTCOMES["approve"][1:]
            elif now - item.created_at >= WAITING_TIMEOUT:
                item.status, item.updated_at = "response_timeout", now
                item.response = ("timeout", "no answer from the payment route in 20 minutes")
            else:
                continue
            self._waiting.discard(item.id)
            if item.status == "successful":
                self._settled(item)
            else:
                rendered = self._render_transaction(item)
                self._emit("transaction.response_timeout", {"transaction": rendered})

    def _now(self) -> datetime:
        return self._clock().astimezone(UTC)

    def _next_seq(self) -> int:
        self._seq += 1
        return self._seq

    def _emit(
        self, kind: str, data: dict[str, Any], previous: dict[str, Any] | None = None
    ) -> None:
        event: dict[str, Any] = {
            "id": new_id("evt"),
            "type": kind,
            "data": copy.deepcopy(data),
            "previous": copy.deepcopy(previous),
            "created_at": wire.format_datetime(self._now()),
        }
        self._events.append(event)
        if self.webhook_faults.hold > 0:
            self.webhook_faults.hold -= 1
            self._held.add(event["id"])

    def _settled(self, item: _Transaction) -> None:
        """A transaction's result is known: the card's failure count moves (up on a failure,
        back to 0 on a success, as the document says) and the event is created."""
        card = self._cards.get(str(item.card["id"]))
        if card is not None:
            card.failure_count = 0 if item.status == "successful" else card.failure_count + 1
        self._transaction_event(item)

    def _transaction_event(self, item: _Transaction) -> None:
        kind = {
            "successful": "transaction.payment_succeeded",
            "rejected": "transaction.payment_failed",
            "unable_to_charge": "transaction.payment_failed",
        }[item.status]
        self._emit(kind, {"transaction": self._render_transaction(item)})

    def _check_email_free(self, email: str) -> None:
        if any(c.email.lower() == email.lower() for c in self._customers.values()):
            raise QvoApiError(400, "a customer with this email already exists", param="email")

    def _customer(self, customer_id: str) -> _Customer:
        customer = self._customers.get(customer_id)
        if customer is None:
            raise _not_found("customer", "customer_id")
        return customer

    def _card(self, customer_id: str, card_id: str) -> _Card:
        self._customer(customer_id)
        card = self._cards.get(card_id)
        if card is None or card.customer_id != customer_id:
            raise _not_found("card", "card_id")
        return card

    def _transaction(self, transaction_id: str) -> _Transaction:
        item = self._transactions.get(transaction_id)
        if item is None:
            raise _not_found("transaction", "transaction_id")
        return item

    def _render_customer(self, customer: _Customer) -> dict[str, Any]:
        cards = [_render_card(self._cards[c], brief=True) for c in customer.cards]
        default = self._cards.get(customer.default_card or "")
        own = [self._transactions[t] for t in reversed(customer.transactions)]
        return {
            "id": customer.id,
            "default_payment_method": _render_card(default, brief=True) if default else None,
            "name": customer.name,
            "email": customer.email,
            "phone": customer.phone,
            "metadata": copy.deepcopy(customer.metadata),
            "address": copy.deepcopy(customer.address),
            "credits": 0,
            "created_at": wire.format_datetime(customer.created_at),
            "updated_at": wire.format_datetime(customer.updated_at),
            "subscriptions": [],
            "cards": cards,
            "transactions": [
                {
                    "id": t.id,
                    "amount": t.amount,
                    "gateway": GATEWAY,
                    "credits": 0,
                    "status": t.status,
                    "created_at": wire.format_datetime(t.created_at),
                }
                for t in own
            ],
        }

    def _render_inscription(self, inscription: _Inscription) -> dict[str, Any]:
        rendered: dict[str, Any] = {"uid": inscription.uid, "status": inscription.status}
        card = self._cards.get(inscription.card_id or "")
        if inscription.status == "succeeded" and card is not None:
            rendered["card"] = _render_card(card)
        if inscription.error is not None:
            rendered["error"] = dict(inscription.error)
        rendered["created_at"] = wire.format_datetime(inscription.created_at)
        rendered["updated_at"] = wire.format_datetime(inscription.updated_at)
        return rendered

    def _render_transaction(self, item: _Transaction) -> dict[str, Any]:
        paid = item.status in ("successful", "refunded")
        card = item.card
        payment = {
            "amount": item.amount,
            "gateway": GATEWAY,
            "payment_type": "credit" if card.get("payment_type") == "CD" else "debit",
            "fee": _fee(item.amount),
            "installments": 0,
            "payment_method": {
                k: card[k] for k in ("id", "last_4_digits", "card_type", "payment_type")
            },
        }
        return {
            "id": item.id,
            "created_at": wire.format_datetime(item.created_at),
            "updated_at": wire.format_datetime(item.updated_at),
            "amount": item.amount,
            "currency": wire.CURRENCY,
            "description": item.description,
            "gateway": GATEWAY,
            "credits": 0,
            "status": item.status,
            "customer": copy.deepcopy(item.customer),
            "payment": payment if paid else None,
            "refund": copy.deepcopy(item.refund),
            "transable": None,
            "gateway_response": {"status": item.response[0], "message": item.response[1]},
        }


Headers = dict[str, str]


def _seq(record: _Customer | _Card | _Transaction) -> int:
    return record.seq


def _card_field(card: _Card, name: str) -> Any:
    return _render_card(card).get(name)


def _render_card(card: _Card, *, brief: bool = False) -> dict[str, Any]:
    rendered: dict[str, Any] = {
        "id": card.id,
        "last_4_digits": card.last4,
        "card_type": card.card_type,
        "payment_type": card.payment_type,
        "failure_count": card.failure_count,
    }
    if not brief:
        rendered["created_at"] = wire.format_datetime(card.created_at)
    return rendered


def _summary(customer: _Customer) -> dict[str, Any]:
    """A customer as transactions and card events show it."""
    return {
        "id": customer.id,
        "name": customer.name,
        "email": customer.email,
        "phone": customer.phone,
        "metadata": copy.deepcopy(customer.metadata),
        "address": copy.deepcopy(customer.address),
    }


def _transaction_id(event: Mapping[str, Any]) -> str | None:
    """The id of the transaction an event is about, if it is about one."""
    transaction = event["data"].get("transaction")
    return str(transaction["id"]) if isinstance(transaction, dict) else None


def _created(event: Mapping[str, Any]) -> datetime:
    return wire.parse_datetime(event.get("created_at")) or datetime.min.replace(tzinfo=UTC)


def _fee(amount: int) -> int:
    """QVO's fee "plus IVA"; the formula is ours, fitted to the document's 106 on 3000."""
    return round(amount * 0.0297 * 1.19)


def _card_refusal(number: str, decision: str) -> str | None:
    """Why the test bank refuses a card at inscription (None: it is enrolled)."""
    if number == wire.REJECTING_CARD:
        return "the test bank always rejects this card"
    if number != wire.APPROVING_CARD:
        return "only the sandbox's test cards can be enrolled"
    if decision == "reject":
        return "the cardholder rejected the inscription at the test bank"
    return None


def _post_event(client: httpx.Client, url: str, event: Mapping[str, Any]) -> Delivery:
    try:
        response = client.post(
            url,
            content=json.dumps(event, separators=(",", ":")).encode(),
            headers={"Content-Type": "application/json"},
        )
    except httpx.HTTPError as exc:
        return Delivery(event_id=event["id"], url=url, status=None, error=type(exc).__name__)
    return Delivery(event_id=event["id"], url=url, status=response.status_code)


# -- parameters ---------------------------------------------------------------------------------


def _text(params: Mapping[str, Any], name: str, *, required: bool = False) -> Any:
    value = params.get(name)
    if value is None or value == "":
        if required:
            raise QvoApiError(400, f"{name} parameter required", param=name)
        return None
    if not isinstance(value, str):
        raise QvoApiError(400, f"{name} must be a string", param=name)
    return value


def _hash(params: Mapping[str, Any], name: str) -> dict[str, Any] | None:
    value = params.get(name)
    if value is None or value == "":
        return None
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            value = None
    if not isinstance(value, dict):
        raise QvoApiError(400, f"{name} must be a hash", param=name)
    return value


def _amount(params: Mapping[str, Any]) -> int:
    value = params.get("amount")
    if value is None or value == "":
        raise QvoApiError(400, "amount parameter required", param="amount")
    amount = value if isinstance(value, int) and not isinstance(value, bool) else None
    if isinstance(value, str) and re.fullmatch(r"\d+", value.strip()):
        amount = int(value)
    if amount is None or amount <= 0:
        raise QvoApiError(400, "amount must be a positive integer", param="amount")
    return amount


def _positive(query: Mapping[str, Any], name: str, default: int) -> int:
    value = query.get(name)
    if value is None or value == "":
        return default
    text = str(value).strip()
    if not text.isdigit() or int(text) < 1:
        raise QvoApiError(400, f"{name} must be a positive integer", param=name)
    return int(text)


_Record = TypeVar("_Record")


@dataclass(frozen=True, slots=True)
class _Kind(Generic[_Record]):
    """How a list reads its records: creation order, one scalar attribute (for ``where`` and
    ``order_by``), and the rendering (only the records on the page returned are rendered)."""

    fields: frozenset[str]
    seq: Callable[[_Record], int]
    field: Callable[[_Record, str], Any]
    render: Callable[[_Record], dict[str, Any]]


def _attribute(constants: Mapping[str, Any]) -> Callable[[object, str], Any]:
    """A record's attribute as QVO shows it: datetimes in QVO's format, constants as given."""

    def read(record: object, name: str) -> Any:
        if name in constants:
            return constants[name]
        value = getattr(record, name, None)
        return wire.format_datetime(value) if isinstance(value, datetime) else value

    return read


def _page(
    records: Iterable[_Record], kind: _Kind[_Record], query: Mapping[str, Any]
) -> tuple[list[dict[str, Any]], Headers]:
    """Filter (``where``), sort (``order_by``, newest first by default) and cut a page."""
    rules = _where(query.get("where"), kind.fields)
    field = kind.field
    kept = [r for r in records if all(test(field(r, name)) for name, test in rules)]
    attribute, descending = _order(query.get("order_by"), kind.fields)
    kept.sort(key=lambda r: (_sortable(field(r, attribute)), kind.seq(r)), reverse=descending)
    page = _positive(query, "page", 1)
    per_page = min(_positive(query, "per_page", DEFAULT_PER_PAGE), MAX_PER_PAGE)
    start = (page - 1) * per_page
    headers = {"X-Page": str(page), "X-Per-Page": str(per_page), "X-Total": str(len(kept))}
    return [kind.render(record) for record in kept[start : start + per_page]], headers


_Test = Callable[[object], bool]
_Scalar = TypeVar("_Scalar", float, str)


def _where(raw: object, fields: frozenset[str]) -> list[tuple[str, _Test]]:
    """The ``where`` hash as (attribute, test) pairs, all to hold (our reading: AND)."""
    if raw is None or raw == "":
        return []
    try:
        parsed = json.loads(raw) if isinstance(raw, str) else raw
    except json.JSONDecodeError:
        raise QvoApiError(400, "where must be a JSON hash", param="where") from None
    if not isinstance(parsed, dict):
        raise QvoApiError(400, "where must be a JSON hash", param="where")
    rules: list[tuple[str, _Test]] = []
    for attribute, operations in parsed.items():
        if attribute not in fields:
            raise QvoApiError(400, f"cannot filter on {attribute!r}", param="where")
        if not isinstance(operations, dict) or not operations:
            raise QvoApiError(400, "each where rule is a hash of operators", param="where")
        for operator, operand in operations.items():
            if operator not in _OPERATORS or isinstance(operand, dict | list):
                raise QvoApiError(400, f"invalid where operator {operator!r}", param="where")
            rules.append((attribute, _test(operator, operand)))
    return rules


def _test(operator: str, operand: Any) -> _Test:
    """One operator applied to one operand, compiled once for the whole list."""
    if operator == "like":
        pattern = _like(str(operand))
        return lambda value: isinstance(value, str) and pattern.fullmatch(value) is not None
    if operator in ("=", "!"):
        wanted = operator == "="
        return lambda value: _equal(value, operand) is wanted
    return lambda value: _compare(value, operator, operand)


def _compare(value: object, operator: str, operand: object) -> bool:
    left, right = _comparable(value), _comparable(operand)
    if isinstance(left, float) and isinstance(right, float):
        return _ordered(left, operator, right)
    if isinstance(left, str) and isinstance(right, str):
        return _ordered(left, operator, right)
    return False


def _ordered(left: _Scalar, operator: str, right: _Scalar) -> bool:
    if operator == "<":
        return left < right
    if operator == "<=":
        return left <= right
    if operator == ">":
        return left > right
    return left >= right


def _like(pattern: str) -> re.Pattern[str]:
    """SQL LIKE, case-sensitive: ``%`` is any text, ``_`` any one character."""
    regex = "".join(
        ".*" if char == "%" else "." if char == "_" else re.escape(char) for char in pattern
    )
    return re.compile(regex, flags=re.DOTALL)


def _comparable(value: object) -> float | str | None:
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        return float(value) if re.fullmatch(r"-?\d+(\.\d+)?", value) else value
    return None


def _equal(value: object, operand: object) -> bool:
    left, right = _comparable(value), _comparable(operand)
    if left is None or right is None:
        return value == operand
    return left == right


def _order(raw: object, fields: frozenset[str]) -> tuple[str, bool]:
    if raw is None or raw == "":
        return "created_at", True
    parts = str(raw).split()
    if len(parts) != 2 or parts[0] not in fields or parts[1].upper() not in ("ASC", "DESC"):
        raise QvoApiError(400, "order_by must be '<attribute> ASC|DESC'", param="order_by")
    return parts[0], parts[1].upper() == "DESC"


def _sortable(value: object) -> tuple[int, float | str]:
    comparable = _comparable(value)
    if comparable is None:
        return (0, "")
    return (1, comparable) if isinstance(comparable, float) else (2, comparable)


async def _params(request: Request) -> dict[str, Any]:
    """A request's parameters: the query string, then a JSON or form body over it."""
    params: dict[str, Any] = dict(request.query_params)
    body = await request.body()
    if not body.strip():
        return params
    kind = request.headers.get("content-type", "")
    if "json" in kind or (not kind and body.lstrip()[:1] == b"{"):
        try:
            parsed = json.loads(body)
        except json.JSONDecodeError:
            raise QvoApiError(400, "the body is not valid JSON") from None
        if not isinstance(parsed, dict):
            raise QvoApiError(400, "the body must be a JSON object")
        params.update(parsed)
        return params
    params.update(_form(body))
    return params


def _form(body: bytes) -> dict[str, Any]:
    """A form body, with one level of brackets (``metadata[role]=x``) read as a hash."""
    params: dict[str, Any] = {}
    for key, value in urllib.parse.parse_qsl(body.decode("utf-8", "replace")):
        outer, bracket, inner = key.partition("[")
        if bracket and inner.endswith("]"):
            nested = params.setdefault(outer, {})
            if isinstance(nested, dict):
                nested[inner[:-1]] = value
        else:
            params[key] = value
    return params


# -- the app ------------------------------------------------------------------------------------

Handler = Callable[[Request, dict[str, Any]], Response]
Endpoint = Callable[[Request], Awaitable[Response]]


def _api(fake: FakeQvo, operation: str, handler: Handler) -> Endpoint:
    """An API endpoint: the front door's checks, then the handler; QVO errors as bodies."""

    async def endpoint(request: Request) -> Response:
        early = await fake.intercept(request, operation)
        if early is not None:
            return early
        try:
            return handler(request, await _params(request))
        except QvoApiError as exc:
            return exc.response()

    return endpoint


def _json(body: object, status: int = 200, headers: Headers | None = None) -> Response:
    return JSONResponse(body, status_code=status, headers=headers)


def _listed(result: tuple[list[dict[str, Any]], Headers]) -> Response:
    items, headers = result
    return _json(items, headers=headers)


def _arg(request: Request, name: str) -> str:
    return str(request.path_params[name])


class _Handlers:
    """QVO's endpoints, one method per operation (its name is the operation's, as counted by
    :meth:`FakeQvo.requests`); each takes the request and its parameters."""

    def __init__(self, fake: FakeQvo) -> None:
        self.fake = fake

    def create_customer(self, request: Request, params: dict[str, Any]) -> Response:
        return _json(self.fake.create_customer(params), 201)

    def list_customers(self, request: Request, params: dict[str, Any]) -> Response:
        return _listed(self.fake.list_customers(params))

    def get_customer(self, request: Request, params: dict[str, Any]) -> Response:
        return _json(self.fake.get_customer(_arg(request, "customer_id")))

    def update_customer(self, request: Request, params: dict[str, Any]) -> Response:
        return _json(self.fake.update_customer(_arg(request, "customer_id"), params))

    def delete_customer(self, request: Request, params: dict[str, Any]) -> Response:
        return _empty(lambda: self.fake.delete_customer(_arg(request, "customer_id")))

    def create_inscription(self, request: Request, params: dict[str, Any]) -> Response:
        # under ``billing fake-gateways serve`` the fake is mounted at /qvo: keep that prefix
        base = f"{request.url.scheme}://{request.url.netloc}{request.scope.get('root_path', '')}"
        return _json(self.fake.create_inscription(_arg(request, "customer_id"), params, base), 201)

    def get_inscription(self, request: Request, params: dict[str, Any]) -> Response:
        customer, uid = _arg(request, "customer_id"), _arg(request, "uid")
        return _json(self.fake.get_inscription(customer, uid))

    def list_cards(self, request: Request, params: dict[str, Any]) -> Response:
        return _listed(self.fake.list_cards(_arg(request, "customer_id"), params))

    def get_card(self, request: Request, params: dict[str, Any]) -> Response:
        return _json(self.fake.get_card(_arg(request, "customer_id"), _arg(request, "card_id")))

    def delete_card(self, request: Request, params: dict[str, Any]) -> Response:
        customer, card = _arg(request, "customer_id"), _arg(request, "card_id")
        return _empty(lambda: self.fake.delete_card(customer, card))

    def charge(self, request: Request, params: dict[str, Any]) -> Response:
        customer, card = _arg(request, "customer_id"), _arg(request, "card_id")
        status, body, lose = self.fake.charge(customer, card, params)
        return dropped() if lose else _json(body, status)

    def list_transactions(self, request: Request, params: dict[str, Any]) -> Response:
        return _listed(self.fake.list_transactions(params))

    def get_transaction(self, request: Request, params: dict[str, Any]) -> Response:
        return _json(self.fake.get_transaction(_arg(request, "transaction_id")))

    def refund(self, request: Request, params: dict[str, Any]) -> Response:
        body = self.fake.refund(_arg(request, "transaction_id"))
        return dropped() if self.fake.take_fault("refund_timeouts") else _json(body)

    def list_events(self, request: Request, params: dict[str, Any]) -> Response:
        return _listed(self.fake.list_events(params))

    def get_event(self, request: Request, params: dict[str, Any]) -> Response:
        return _json(self.fake.get_event(_arg(request, "event_id")))


_CUSTOMER = "/customers/{customer_id}"
_CARD = _CUSTOMER + "/cards/{card_id}"
_ROUTES = (
    ("/customers", "POST", "create_customer"),
    ("/customers", "GET", "list_customers"),
    (_CUSTOMER, "GET", "get_customer"),
    (_CUSTOMER, "PUT", "update_customer"),
    (_CUSTOMER, "DELETE", "delete_customer"),
    (_CUSTOMER + "/cards/inscriptions", "POST", "create_inscription"),
    (_CUSTOMER + "/cards/inscriptions/{uid}", "GET", "get_inscription"),
    (_CUSTOMER + "/cards", "GET", "list_cards"),
    (_CARD, "GET", "get_card"),
    (_CARD, "DELETE", "delete_card"),
    (_CARD + "/charge", "POST", "charge"),
    ("/transactions", "GET", "list_transactions"),
    ("/transactions/{transaction_id}", "GET", "get_transaction"),
    ("/transactions/{transaction_id}/refund", "POST", "refund"),
    ("/events", "GET", "list_events"),
    ("/events/{event_id}", "GET", "get_event"),
)
"""QVO's endpoints the fake serves: path, method, and operation (a :class:`_Handlers` method)."""


def _api_routes(fake: FakeQvo) -> list[Route]:
    handlers = _Handlers(fake)
    return [
        Route(path, _api(fake, operation, getattr(handlers, operation)), methods=[method])
        for path, method, operation in _ROUTES
    ]


def _empty(action: Callable[[], None]) -> Response:
    """Do ``action`` and answer "no content", as QVO's deletes do."""
    action()
    return Response(status_code=204)


_PAGE = """<!doctype html>
<html><head><title>Webpay Oneclick (QVO fake)</title></head><body>
<h1>Inscripción de tarjeta: Banco de prueba</h1>
<form method="post" action="{action}">
<label>Número de tarjeta <input name="card_number" autocomplete="off"></label>
<label>Tipo <select name="payment_type"><option value="credit">Crédito</option>
<option value="debit">Débito</option></select></label>
<label>Decisión <select name="decision"><option value="approve">Aprobar</option>
<option value="reject">Rechazar</option></select></label>
<label>RUT <input name="rut" value="11.111.111-1"></label>
<label>Clave <input name="password" type="password" value="123"></label>
<button type="submit">Inscribir</button>
</form></body></html>
"""


def _hosted_routes(fake: FakeQvo) -> list[Route]:
    """Webpay's inscription page, as the customer's browser sees it (no API token)."""

    async def show(request: Request) -> Response:
        uid = _arg(request, "uid")
        if not fake.inscription_open(uid):
            return HTMLResponse("<html><body>Inscripción no disponible</body></html>", 404)
        return HTMLResponse(_PAGE.format(action=escape(str(request.url.path))))

    async def submit(request: Request) -> Response:
        form = {k: v for k, v in _form(await request.body()).items() if isinstance(v, str)}
        try:
            back = fake.complete_inscription(_arg(request, "uid"), form)
        except KeyError:
            return HTMLResponse("<html><body>Inscripción no encontrada</body></html>", 404)
        return RedirectResponse(back, status_code=302)

    page = "/webpay_oneclick/init_inscription/{uid}"
    return [Route(page, show, methods=["GET"]), Route(page, submit, methods=["POST"])]


def _control_routes(fake: FakeQvo) -> list[Route]:
    """The test levers over HTTP, for a fake served on sockets."""

    async def faults(request: Request) -> Response:
        if request.method == "POST":
            try:
                fake.set_faults(**(await _control_body(request)))
            except (TypeError, ValueError) as exc:
                return _json({"error": str(exc)}, 400)
        return _json(asdict(fake.faults))

    async def rules(request: Request) -> Response:
        if request.method == "DELETE":
            return _empty(fake.rules.clear)
        body = await _control_body(request)
        try:
            times = body.get("times")
            if times is None:
                fake.rules.always(str(body["card_id"]), body["outcome"])
            else:
                fake.rules.queue(str(body["card_id"]), body["outcome"], int(times))
        except (KeyError, TypeError, ValueError) as exc:
            return _json({"error": str(exc)}, 400)
        return _json({"ok": True})

    async def webhooks(request: Request) -> Response:
        body = await _control_body(request)
        if not isinstance(body.get("url"), str):
            return _json({"error": "url is required"}, 400)
        fake.subscribe_webhook(body["url"])
        return _json({"ok": True})

    async def webhook_faults(request: Request) -> Response:
        for name, value in (await _control_body(request)).items():
            if name in WebhookFaults.__dataclass_fields__:
                setattr(fake.webhook_faults, name, value)
        return _json(asdict(fake.webhook_faults))

    async def release(request: Request) -> Response:
        fake.release_webhooks()
        return _json({"ok": True})

    async def deliver(request: Request) -> Response:
        url = (await _control_body(request)).get("url")
        done = await anyio.to_thread.run_sync(lambda: fake.deliver_webhooks(url))
        return _json([asdict(delivery) for delivery in done])

    async def settle(request: Request) -> Response:
        status = (await _control_body(request)).get("status")
        try:
            return _json(fake.settle(_arg(request, "transaction_id"), str(status)))
        except ValueError as exc:
            return _json({"error": str(exc)}, 400)

    async def requests(request: Request) -> Response:
        return _json(fake.request_counts())

    return [
        Route("/_fake/faults", faults, methods=["GET", "POST"]),
        Route("/_fake/rules", rules, methods=["POST", "DELETE"]),
        Route("/_fake/requests", requests, methods=["GET"]),
        Route("/_fake/webhooks", webhooks, methods=["POST"]),
        Route("/_fake/webhooks/faults", webhook_faults, methods=["POST"]),
        Route("/_fake/webhooks/release", release, methods=["POST"]),
        Route("/_fake/webhooks/deliver", deliver, methods=["POST"]),
        Route("/_fake/transactions/{transaction_id}/settle", settle, methods=["POST"]),
    ]


async def _control_body(request: Request) -> dict[str, Any]:
    body = await request.body()
    parsed = json.loads(body) if body.strip() else {}
    if not isinstance(parsed, dict):
        raise ValueError("a control body is a JSON object")
    return parsed


async def _http_error(request: Request, exc: Exception) -> Response:
    """Unknown routes and wrong methods, answered with QVO's error body."""
    status = exc.status_code if isinstance(exc, HTTPException) else 500
    messages = {404: "resource not found", 405: "method not allowed"}
    kind = "api_error" if status >= 500 else "invalid_request_error"
    return QvoApiError(status, messages.get(status, "request failed"), kind=kind).response()


def create_app(fake: FakeQvo) -> Starlette:
    """The ASGI app serving ``fake``: QVO's API, the hosted inscription page, the controls."""
    return Starlette(
        routes=[*_api_routes(fake), *_hosted_routes(fake), *_control_routes(fake)],
        exception_handlers={404: _http_error, 405: _http_error},
    )


def fake_app(environ: Mapping[str, str] | None = None) -> Starlette:
    """A default fake's app for ``billing fake-gateways serve``: it accepts the token in
    ``BILLING_QVO_FAKE_TOKEN``, else :data:`DEFAULT_TOKEN` (the document's example token)."""
    env = os.environ if environ is None else environ
    return FakeQvo(env.get("BILLING_QVO_FAKE_TOKEN") or DEFAULT_TOKEN).app
