"""FakeOpenpay: a stateful Openpay server for tests, as a starlette ASGI app.

It implements the documented endpoints (``shared/reference/openpay.md`` §5) a card-on-file
integration and Openpay's client libraries use: the merchant, customers (CRUD and list), tokens
(as openpay.js makes them), cards from a token or raw data (merchant and customer level), card
charges (merchant and customer level, get, list with the documented filters, refund) and webhooks
(create with verification, get, list, delete) with delivery of charge notifications. It enforces
what the document fixes: HTTP Basic with the private key and an empty password, the merchant id in
the path, the error object and its HTTP statuses, ``order_id`` uniqueness (1006), card validation
(Luhn 2004, expiry 2005, CVV2 2006), and keeps everything in memory behind one lock.

Outcomes come from test cards (:data:`TEST_CARDS`) and from rules per card or per customer
(:meth:`FakeOpenpay.decline_next`, :meth:`FakeOpenpay.lose_next`), faults from
:class:`billing.testing.asgi.Faults` and :class:`WebhookFaults`; both are reachable from Python
and from control endpoints under ``/_fake`` (for a fake served over sockets).

Choices where the document is silent (each also in ``docs/adapters/openpay.md``):

* success answers are ``200`` with the object; a DELETE answers ``204`` with an empty body;
* a merchant id in the path that is not this fake's answers ``401``/1002, like a wrong key (the
  pair is what authenticates); the public key may only create tokens and cards (else 1010);
* a declined charge is kept as a ``failed`` transaction (its ``error_message`` is the code's
  description) and uses up its ``order_id``; the answer is the error object (402 or 412);
* a token is single-use: a second use answers 1003 (422); a used token can still be read;
* refunding a charge twice, or one that is not ``completed``, answers 3006 (412); an ``amount``
  other than the whole charge answers 1003, unless the fake is built with ``partial_refunds``;
* a refunded charge keeps ``status: completed`` with the nested ``refund`` (as the example);
* lists are newest first (customers and webhooks too), ``creation[gte]``/``creation[lte]`` are
  inclusive, ``limit`` is 1 to 100;
* notifications are ``{type, event_date, transaction}`` JSON POSTs with the webhook's Basic
  credentials, sent before the answer to the request that caused them (so tests are
  deterministic), and only to ``verified`` webhooks: a webhook is verified when its URL answered
  the ``verification`` POST (``{type, event_date, verification_code}``) with a 2xx;
* only card charges are simulated: ``store``/``bank_account`` methods and ``capture: false``
  answer 1003.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import operator
import os
import random
import string
import threading
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field, fields
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal, InvalidOperation
from typing import Any, TypeVar

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from adapters.openpay import _wire as wire
from billing.testing.asgi import Faults, dropped

__all__ = [
    "DEFAULT_MERCHANT_ID",
    "DEFAULT_PRIVATE_KEY",
    "EVENT_TYPES",
    "STOLEN_CARD",
    "TEST_CARDS",
    "Delivery",
    "FakeOpenpay",
    "WebhookFaults",
    "create_app",
    "fake_app",
]

DEFAULT_MERCHANT_ID = "mzdtln0bmtms6o3kck8f"
"""The document's example merchant id, so its curl examples work against the fake."""
DEFAULT_PRIVATE_KEY = "sk_e568c42a6c384b7ab02cd47d2e407cab"
"""The document's example private key (a sandbox example, published in the document)."""

MEXICO = timezone(timedelta(hours=-6), "CST")
"""Openpay's dates carry Mexico City's offset (``-06:00``; no daylight saving since 2022)."""


def _luhn_ok(number: str) -> bool:
    total = 0
    for position, char in enumerate(reversed(number)):
        digit = int(char)
        if position % 2 == 1:
            digit = digit * 2 - 9 if digit > 4 else digit * 2
        total += digit
    return total % 10 == 0


def _with_check_digit(body: str) -> str:
    """``body`` followed by the Luhn check digit that makes it valid."""
    return next(body + digit for digit in string.digits if _luhn_ok(body + digit))


_RULE_CODES = frozenset(
    {1007, 1008, 4001, 3001, 3002, 3003, 3004, 3005, 3006, 3008, 3009, 3010, 3011, 3012}
)
"""The codes a rule may make a charge fail with: the card declines and refusals of §4.2."""

_CODED = (3001, 3002, 3003, 3004, 3005, 3006, 3008, 3009, 3010, 3011, 3012)

TEST_CARDS: Mapping[str, int | None] = {
    # Approved: the document's example card and the common sandbox numbers.
    "4111111111111111": None,
    "4242424242424242": None,
    "5555555555554444": None,
    "343434343434343": None,  # the document's Amex example
    # Declined, as Openpay's sandbox does (gateway-libraries.md §4.1).
    "4222222222222220": 3001,
    "4444444444444448": 3003,
    # This fake's own: 40000000000 + the error code + a check digit (4000000000030041 = 3004).
    **{_with_check_digit(f"40000000000{code}"): code for code in _CODED},
}
"""Card number → the error code a charge on it answers (``None``: approved). Every one of
them is a test number, refused with 2007 by a fake built with ``sandbox=False``."""

STOLEN_CARD = _with_check_digit("400000000003004")
"""A card whose charges answer 3004 (stolen): this fake's hard decline."""

EVENT_TYPES = (
    "charge.refunded",
    "charge.failed",
    "charge.cancelled",
    "charge.created",
    "charge.succeeded",
    "charge.rescored.to.decline",
    "subscription.charge.failed",
    "payout.created",
    "payout.succeeded",
    "payout.failed",
    "transfer.succeeded",
    "fee.succeeded",
    "fee.refund.succeeded",
    "spei.received",
    "chargeback.created",
    "chargeback.rejected",
    "chargeback.accepted",
    "order.created",
    "order.activated",
    "order.payment.received",
    "order.completed",
    "order.expired",
    "order.cancelled",
    "order.payment.cancelled",
    "verification",
)
"""Every event type of the document's table (§17.2), plus ``verification``."""

_BRANDS = {
    "visa": ("debit", "BANAMEX", "002"),
    "mastercard": ("credit", "BBVA BANCOMER", "012"),
    "american_express": ("credit", "AMERICAN EXPRESS", "103"),
    "carnet": ("debit", "DESCONOCIDO", "000"),
}
_MAX_BODY = 1_000_000
_LOSABLE = {"charges.create": "charge_timeouts", "charges.refund": "refund_timeouts"}
"""The operations whose committed answers a fault may lose, and that fault's name."""
_TARGETS = ("card_id", "card_number", "customer_id", "external_id")
_ALNUM = string.ascii_lowercase + string.digits
_CENT = Decimal("0.01")

T = TypeVar("T")
Deliver = Callable[[str, Mapping[str, str], bytes], Awaitable[int]]
"""Sends one notification (URL, headers, body) and returns the HTTP status (0: no answer)."""


async def _post(url: str, headers: Mapping[str, str], body: bytes) -> int:
    """The default delivery: a real HTTP POST (10 s timeout)."""
    async with httpx.AsyncClient(timeout=10.0) as client:
        response = await client.post(url, content=body, headers=dict(headers))
        return response.status_code


class _ApiError(Exception):
    """An Openpay error answer (§4.1); ``committed`` when state changed before it (a decline)."""

    def __init__(
        self,
        code: int,
        description: str | None = None,
        *,
        events: list[_Event] | None = None,
        committed: bool = False,
        lose: bool = False,
    ) -> None:
        rule = wire.ERRORS[code]
        self.code = code
        self.rule = rule
        self.description = description or rule.description
        self.events = events or []
        self.committed = committed
        self.lose = lose
        super().__init__(self.description)


@dataclass(frozen=True, slots=True)
class _Event:
    """A notification ready to go: its type and its encoded body."""

    type: str
    body: bytes


@dataclass(slots=True)
class _Reply:
    status: int
    payload: Any = None
    events: list[_Event] = field(default_factory=list)
    committed: bool = False
    lose: bool = False
    """Lose the answer after the commit (a ``lose_next`` rule)."""


@dataclass
class WebhookFaults:
    """Faults in notification delivery; changed under the fake's lock (:meth:`FakeOpenpay.inject`
    or ``POST /_fake/webhooks/faults``)."""

    duplicates: int = 0
    """The next N notifications are delivered twice."""
    hold: bool = False
    """Notifications wait in :attr:`FakeOpenpay.held` until released (late, or out of order
    when released in reverse)."""


@dataclass
class Delivery:
    """One notification POST (or one waiting to be made)."""

    webhook_id: str
    url: str
    event_type: str
    headers: dict[str, str]
    body: bytes
    status: int | None = None
    """The receiver's HTTP status; 0 when it did not answer; ``None`` while held."""


@dataclass
class _Customer:
    id: str
    seq: int
    created: datetime
    name: str
    email: str
    last_name: str | None
    phone_number: str | None
    external_id: str | None
    address: Any
    requires_account: bool
    clabe: str
    status: str = "active"

    def json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "id": self.id,
            "creation_date": _date(self.created),
            "name": self.name,
            "last_name": self.last_name,
            "email": self.email,
            "phone_number": self.phone_number,
            "external_id": self.external_id,
            "status": self.status,
            "address": self.address,
            "clabe": self.clabe,
            "store": {
                "reference": f"OPENPAY{self.id[:10].upper()}",
                "barcode_url": (
                    f"https://sandbox-api.openpay.mx/barcode/OPENPAY{self.id[:10].upper()}"
                    "?width=1&height=45&text=false"
                ),
            },
        }
        if self.requires_account:
            data["balance"] = Decimal("0.00")
        return data


@dataclass
class _CardData:
    """Card data as sent (the number stays inside the fake; answers mask it)."""

    number: str
    holder_name: str
    expiration_month: str
    expiration_year: str
    address: Any

    @property
    def brand(self) -> str:
        return _brand(self.number)

    def masked(self) -> str:
        return f"{self.number[:6]}{'X' * (len(self.number) - 10)}{self.number[-4:]}"


@dataclass
class _Card:
    id: str
    seq: int
    created: datetime
    data: _CardData
    customer_id: str | None
    deleted: bool = False

    def json(self) -> dict[str, Any]:
        kind, bank, code = _BRANDS[self.data.brand]
        return {
            "id": self.id,
            "type": kind,
            "brand": self.data.brand,
            "address": self.data.address,
            "card_number": self.data.masked(),
            "holder_name": self.data.holder_name,
            "expiration_year": self.data.expiration_year,
            "expiration_month": self.data.expiration_month,
            "allows_charges": True,
            "allows_payouts": kind == "debit",
            "creation_date": _date(self.created),
            "bank_name": bank,
            "bank_code": code,
            "customer_id": self.customer_id,
            "points_card": False,
        }


@dataclass
class _Token:
    id: str
    created: datetime
    data: _CardData
    used: bool = False

    def json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "card": {
                "card_number": self.data.masked(),
                "holder_name": self.data.holder_name,
                "expiration_year": self.data.expiration_year,
                "expiration_month": self.data.expiration_month,
                "address": self.data.address,
                "creation_date": _date(self.created),
                "brand": self.data.brand,
                "points_card": False,
            },
        }


@dataclass
class _Charge:
    id: str
    seq: int
    created: datetime
    amount: Decimal
    currency: str
    description: str
    order_id: str | None
    customer_id: str | None
    card: dict[str, Any]
    card_id: str | None
    status: str
    error_message: str | None
    authorization: str | None
    metadata: Any
    refund: dict[str, Any] | None = None

    def json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "id": self.id,
            "amount": self.amount,
            "authorization": self.authorization,
            "method": "card",
            "operation_type": "in",
            "transaction_type": "charge",
            "card": self.card,
            "status": self.status,
            "currency": self.currency,
            "creation_date": _date(self.created),
            "operation_date": _date(self.created),
            "description": self.description,
            "error_message": self.error_message,
            "order_id": self.order_id,
            "customer_id": self.customer_id,
        }
        if self.refund is not None:
            data["refund"] = self.refund
        if self.metadata is not None:
            data["metadata"] = self.metadata
        return data


@dataclass
class _Webhook:
    id: str
    seq: int
    created: datetime
    url: str
    user: str | None
    password: str | None
    event_types: list[str]
    status: str = "unverified"

    def json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "url": self.url,
            "user": self.user,
            "event_types": list(self.event_types),
            "status": self.status,
        }

    def headers(self) -> dict[str, str]:
        headers = {"content-type": "application/json", "user-agent": "Openpay fake webhooks"}
        if self.user is not None:
            pair = f"{self.user}:{self.password or ''}".encode()
            headers["authorization"] = "Basic " + base64.b64encode(pair).decode("ascii")
        return headers


@dataclass
class _Rule:
    """What the next charges on a card or of a customer do: answer ``code`` (an error code;
    ``None`` approves, :data:`_AS_CARD` goes as the card's number says), then lose the answer
    if ``lose``. ``remaining`` ``None``: every charge until the rule is cleared."""

    code: int | str | None
    remaining: int | None
    lose: bool = False
    card_id: str | None = None
    card_number: str | None = None
    customer_id: str | None = None
    external_id: str | None = None

    def targets(self) -> list[str | None]:
        return [self.card_id, self.card_number, self.customer_id, self.external_id]

    def matches(self, card_id: str | None, number: str, customer: _Customer | None) -> bool:
        if self.remaining is not None and self.remaining < 1:
            return False
        if self.card_id is not None or self.card_number is not None:
            return self.card_id == card_id or self.card_number == number
        if customer is None:
            return False
        if self.customer_id is not None:
            return self.customer_id == customer.id
        return self.external_id == customer.external_id

    def use(self) -> None:
        if self.remaining is not None:
            self.remaining -= 1


_AS_CARD = "card"
"""A rule code meaning: the outcome the card's number gives (:data:`TEST_CARDS`)."""


@dataclass(frozen=True, slots=True)
class _Call:
    """What a handler gets: path parameters, query and JSON body."""

    params: Mapping[str, str]
    query: Mapping[str, str]
    body: Mapping[str, Any]


def _date(moment: datetime) -> str:
    return moment.isoformat(timespec="seconds")


def _brand(number: str) -> str:
    if number.startswith("4"):
        return "visa"
    if number[:2] in ("34", "37"):
        return "american_express"
    if number[:1] == "5" or 2221 <= int(number[:4]) <= 2720:
        return "mastercard"
    return "carnet"


class FakeOpenpay:
    """An in-memory Openpay merchant account behind an ASGI app (:attr:`app`).

    Thread-safe: the state, the faults and the rules change only under one lock, so tests may
    drive it from Python while a served copy answers over sockets. Nothing here logs, and its
    repr shows no key and no card.
    """

    def __init__(
        self,
        merchant_id: str = DEFAULT_MERCHANT_ID,
        private_key: str = DEFAULT_PRIVATE_KEY,
        *,
        public_key: str | None = None,
        sandbox: bool = True,
        partial_refunds: bool = False,
        faults: Faults | None = None,
        deliver: Deliver | None = None,
        now: Callable[[], datetime] | None = None,
        seed: int | None = None,
    ) -> None:
        self.merchant_id = merchant_id
        self._private_key = private_key
        self._public_key = public_key
        self.sandbox = sandbox
        self.partial_refunds = partial_refunds
        self.faults = faults or Faults()
        self.webhook_faults = WebhookFaults()
        self._deliver = deliver or _post
        self._now = now or (lambda: datetime.now(MEXICO))
        self._random = random.Random(seed)
        self._lock = threading.RLock()
        self._seq = 0
        self._customers: dict[str, _Customer] = {}
        self._cards: dict[str, _Card] = {}
        self._tokens: dict[str, _Token] = {}
        self._charges: dict[str, _Charge] = {}
        self._orders: set[str] = set()
        self._webhooks: dict[str, _Webhook] = {}
        self._rules: list[_Rule] = []
        self._received: Counter[str] = Counter()
        self.deliveries: list[Delivery] = []
        """Every notification POST made, in order (a duplicate appears twice)."""
        self.held: list[Delivery] = []
        """Notifications waiting for :meth:`release_webhooks` (``WebhookFaults.hold``)."""
        self.app = create_app(self)
        """The ASGI app."""

    def __repr__(self) -> str:
        with self._lock:
            return (
                f"FakeOpenpay(merchant_id={self.merchant_id!r}, customers={len(self._customers)}, "
                f"charges={len(self._charges)})"
            )

    # -- Python controls ---------------------------------------------------------------------------

    def inject(self, **faults: int | float | bool) -> None:
        """Set faults by name: any field of :class:`~billing.testing.asgi.Faults` (``latency`` in
        seconds, counts for the others) or of :class:`WebhookFaults`."""
        names = Faults.settable()
        hooks = {item.name for item in fields(WebhookFaults)}
        with self._lock:
            for name, value in faults.items():
                if name in names:
                    setattr(self.faults, name, value)
                elif name in hooks:
                    setattr(self.webhook_faults, name, value)
                else:
                    raise ValueError(f"no fault named {name!r}")

    def decline_next(self, *, code: int = 3001, times: int | None = 1, **card: str) -> None:
        """Make the next ``times`` charges (``None``: every one until :meth:`clear_rules`) fail
        with ``code`` (a 3xxx card code, 1007, 1008 or 4001), whatever the card's number would
        do. Name the card (``card_id=`` or ``card_number=``) or the customer (``customer_id=``,
        Openpay's id, or ``external_id=``, the engine's). The oldest matching rule applies."""
        if code not in _RULE_CODES:
            raise ValueError(f"{code} is not an Openpay decline code ({sorted(_RULE_CODES)})")
        self._add_rule(_Rule(code, times, False, **card))

    def approve_next(self, *, times: int | None = 1, lose: bool = False, **card: str) -> None:
        """Make the next ``times`` charges succeed whatever the card's number would do (and,
        with ``lose``, lose their answers after the commit). Named as for :meth:`decline_next`."""
        self._add_rule(_Rule(None, times, lose, **card))

    def lose_next(self, *, times: int | None = 1, **card: str) -> None:
        """Make the next ``times`` charges go as the card's number says, then lose their
        answers (a timeout after the commit). Named as for :meth:`decline_next`."""
        self._add_rule(_Rule(_AS_CARD, times, True, **card))

    def _add_rule(self, rule: _Rule) -> None:
        if sum(item is not None for item in rule.targets()) != 1:
            raise ValueError("name one card_id, card_number, customer_id or external_id")
        if rule.remaining is not None and rule.remaining < 1:
            raise ValueError("times must be >= 1, or None for every charge")
        with self._lock:
            self._rules.append(rule)

    def clear_rules(self, **target: str) -> None:
        """Forget every rule, or only those naming one target (``external_id="cus_1"``...)."""
        with self._lock:
            self._rules = [
                rule
                for rule in self._rules
                if target and any(getattr(rule, key) != value for key, value in target.items())
            ]

    def customer_for(self, external_id: str) -> str | None:
        """The Openpay id of the active customer with this ``external_id`` (the engine's id,
        for customers the adapter registered)."""
        with self._lock:
            for customer in self._customers.values():
                if customer.external_id == external_id and customer.status == "active":
                    return customer.id
            return None

    def latest_charge(self, customer_id: str) -> str | None:
        """The id of a customer's newest charge, if any."""
        with self._lock:
            charges = [item for item in self._charges.values() if item.customer_id == customer_id]
            return max(charges, key=lambda item: item.seq).id if charges else None

    def received(self, operation: str) -> int:
        """How many requests for an operation (``charges.create``, ``customers.create``...)
        arrived, faulted ones included."""
        with self._lock:
            return self._received[operation]

    def charge(self, charge_id: str) -> dict[str, Any]:
        """A charge as the API shows it (a copy)."""
        with self._lock:
            return self._charges[charge_id].json()

    def charges_taken(self, customer_id: str | None = None) -> int:
        """How many charges took money (``completed``, refunded or not), for one customer or
        all."""
        with self._lock:
            return sum(
                1
                for charge in self._charges.values()
                if charge.status == "completed"
                and (customer_id is None or charge.customer_id == customer_id)
            )

    def notification(
        self, charge_id: str, *, event_type: str | None = None, status: str | None = None
    ) -> tuple[dict[str, str], bytes]:
        """The headers and body this fake would POST about a charge now (a refunded charge:
        ``charge.refunded``; else by status). ``status`` overrides the transaction's status
        (with ``event_type``, that makes a forged one shaped exactly like a genuine one)."""
        with self._lock:
            charge = self._charges[charge_id]
            transaction = charge.json()
            kind = event_type or _event_type(charge)
            refunded = None if charge.refund is None else charge.refund["operation_date"]
        if status is not None:
            transaction["status"] = status
            if status == "completed":
                transaction["error_message"] = None
                transaction["authorization"] = transaction["authorization"] or "801585"
        when = refunded if kind == "charge.refunded" and refunded else transaction["operation_date"]
        body = wire.dumps({"type": kind, "event_date": when, "transaction": transaction})
        return {"content-type": "application/json"}, body

    def release_webhooks(self, *, reverse: bool = False) -> list[Delivery]:
        """Deliver the held notifications now (newest first when ``reverse``: out of order).
        Call it from a thread with no running event loop; in one, await :meth:`release`."""
        return asyncio.run(self.release(reverse=reverse))

    async def release(self, *, reverse: bool = False) -> list[Delivery]:
        """Deliver the held notifications (the async form of :meth:`release_webhooks`)."""
        with self._lock:
            waiting, self.held = self.held, []
        if reverse:
            waiting.reverse()
        for delivery in waiting:
            await self._send(delivery)
        return waiting

    # -- the HTTP surface: plumbing ----------------------------------------------------------------

    def _endpoint(
        self,
        operation: str,
        handler: Callable[[_Call], Awaitable[_Reply]],
        *,
        public: bool = False,
    ) -> Callable[[Request], Awaitable[Response]]:
        """An API endpoint: count it, apply faults, authenticate, parse, handle, notify."""

        async def answer(request: Request) -> Response:
            with self._lock:
                self._received[operation] += 1
            early = await self._before()
            if early is not None:
                return early
            try:
                self._authenticate(request, public=public)
                call = _Call(request.path_params, request.query_params, await _body(request))
                reply = await handler(call)
            except _ApiError as error:
                reply = _Reply(error.rule.http_status, self._error(error), error.events)
                reply.committed, reply.lose = error.committed, error.lose
            await self._notify(reply.events)
            with self._lock:
                timeouts = _LOSABLE.get(operation)
                lose = reply.lose or (
                    reply.committed and timeouts is not None and self.faults.take(timeouts)
                )
            if lose:
                return dropped()
            if reply.status == 204:
                return Response(status_code=204)
            return _json(reply.status, reply.payload)

        return answer

    async def _before(self) -> Response | None:
        """Latency, then the request-level faults (each taken under the lock)."""
        await self.faults.delay()
        with self._lock:
            early = self.faults.early_answer()
            if early is not None:
                return early
            if self.faults.take("server_errors"):
                return _json(500, self._error(_ApiError(1000)))
        return None

    def _authenticate(self, request: Request, *, public: bool) -> None:
        """HTTP Basic, the key as user name and an empty password (§2); the merchant id in the
        path must be this fake's (else 1002 too: the pair authenticates)."""
        key = _basic_user(request.headers.get("authorization"))
        if key is not None and key == self._public_key:
            if not public:
                raise _ApiError(1010)
        elif key is None or key != self._private_key:
            raise _ApiError(1002)
        if request.path_params.get("merchant_id") != self.merchant_id:
            raise _ApiError(1002)

    def _error(self, error: _ApiError) -> dict[str, Any]:
        with self._lock:
            request_id = str(uuid.UUID(int=self._random.getrandbits(128), version=4))
        return {
            "category": error.rule.category,
            "description": error.description,
            "http_code": error.rule.http_status,
            "error_code": error.code,
            "request_id": request_id,
        }

    def _next(self, prefix: str) -> tuple[str, int, datetime]:
        """A new id like Openpay's (20 lowercase alphanumerics with a prefix), a sequence
        number (the newest-first order) and the time; call under the lock."""
        self._seq += 1
        tail = "".join(self._random.choice(_ALNUM) for _ in range(20 - len(prefix)))
        return prefix + tail, self._seq, self._now()

    # -- notifications -----------------------------------------------------------------------------

    def _event(self, kind: str, charge: _Charge, when: datetime) -> _Event:
        """A notification about a charge as it is now (call under the lock)."""
        body = {"type": kind, "event_date": _date(when), "transaction": charge.json()}
        return _Event(kind, wire.dumps(body))

    async def _notify(self, events: list[_Event]) -> None:
        """Queue each event for every verified webhook that wants it, then deliver what is not
        held (twice while ``duplicates`` lasts)."""
        ready: list[Delivery] = []
        with self._lock:
            for event in events:
                for hook in self._webhooks.values():
                    if hook.status != "verified" or event.type not in hook.event_types:
                        continue
                    delivery = Delivery(hook.id, hook.url, event.type, hook.headers(), event.body)
                    if self.webhook_faults.hold:
                        self.held.append(delivery)
                        continue
                    ready.append(delivery)
                    if self.webhook_faults.duplicates > 0:
                        self.webhook_faults.duplicates -= 1
                        ready.append(
                            Delivery(hook.id, hook.url, event.type, hook.headers(), event.body)
                        )
        for delivery in ready:
            await self._send(delivery)

    async def _send(self, delivery: Delivery) -> None:
        try:
            delivery.status = await self._deliver(delivery.url, delivery.headers, delivery.body)
        except (httpx.HTTPError, OSError):
            delivery.status = 0
        with self._lock:
            self.deliveries.append(delivery)

    # -- merchant ----------------------------------------------------------------------------------

    async def _get_merchant(self, call: _Call) -> _Reply:
        return _Reply(
            200,
            {
                "id": self.merchant_id,
                "name": "Openpay fake merchant",
                "email": "merchant@billing.invalid",
                "phone": "(442) 258-1039",
                "status": "active",
                "balance": Decimal("0.00"),
                "clabe": "646180109400135624",
                "creation_date": _date(self._now()),
            },
        )

    # -- customers ---------------------------------------------------------------------------------

    def _customer(self, customer_id: str) -> _Customer:
        customer = self._customers.get(customer_id)
        if customer is None or customer.status != "active":
            raise _ApiError(1005, f"The customer with id '{customer_id}' does not exist")
        return customer

    async def _create_customer(self, call: _Call) -> _Reply:
        body = call.body
        name, email = _required_text(body, "name", 100), _email(body)
        external = _optional_text(body, "external_id", 100)
        requires_account = body.get("requires_account", True)
        if not isinstance(requires_account, bool):
            raise _ApiError(1001, "requires_account must be a boolean")
        address = _address(body.get("address"))
        with self._lock:
            if external is not None and any(
                item.external_id == external and item.status == "active"
                for item in self._customers.values()
            ):
                raise _ApiError(2003)
            customer_id, seq, created = self._next("a")
            customer = _Customer(
                id=customer_id,
                seq=seq,
                created=created,
                name=name,
                email=email,
                last_name=_optional_text(body, "last_name", 100),
                phone_number=_optional_text(body, "phone_number", 100),
                external_id=external,
                address=address,
                requires_account=requires_account,
                clabe=f"6461801094{seq:08d}",
            )
            self._customers[customer_id] = customer
            return _Reply(200, customer.json())

    async def _get_customer(self, call: _Call) -> _Reply:
        with self._lock:
            return _Reply(200, self._customer(call.params["customer_id"]).json())

    async def _update_customer(self, call: _Call) -> _Reply:
        """PUT: ``name`` and ``email`` required; the other documented fields are replaced when
        sent and kept when not (the document does not say)."""
        body = call.body
        name, email = _required_text(body, "name", 100), _email(body)
        with self._lock:
            customer = self._customer(call.params["customer_id"])
            customer.name, customer.email = name, email
            if "last_name" in body:
                customer.last_name = _optional_text(body, "last_name", 100)
            if "phone_number" in body:
                customer.phone_number = _optional_text(body, "phone_number", 100)
            if "address" in body:
                customer.address = _address(body["address"])
            return _Reply(200, customer.json())

    async def _delete_customer(self, call: _Call) -> _Reply:
        with self._lock:
            self._customer(call.params["customer_id"]).status = "deleted"
            return _Reply(204)

    async def _list_customers(self, call: _Call) -> _Reply:
        with self._lock:
            items = [item for item in self._customers.values() if item.status == "active"]
            return _Reply(200, [item.json() for item in _page(items, call.query)])

    # -- tokens and cards --------------------------------------------------------------------------

    def _card_data(self, body: Mapping[str, Any]) -> _CardData:
        """Validate card data (§11.2): required fields (1001), CVV2 (2006), the number's format
        (1001) and check digit (2004), the expiry (1001 malformed, 2005 past), test numbers in
        production (2007)."""
        holder = _required_text(body, "holder_name", 80)
        number = _digits(body.get("card_number"), "card_number")
        cvv = body.get("cvv2")
        if cvv is None or cvv == "":
            raise _ApiError(2006)
        cvv_text = _digits(cvv, "cvv2")
        if not 13 <= len(number) <= 19:
            raise _ApiError(1001, "card_number must have 16 or 19 digits")
        if not _luhn_ok(number):
            raise _ApiError(2004)
        if not 3 <= len(cvv_text) <= 4:
            raise _ApiError(1001, "cvv2 must have 3 or 4 digits")
        month_text = _digits(body.get("expiration_month"), "expiration_month")
        year_text = _digits(body.get("expiration_year"), "expiration_year")
        month = int(month_text)
        if not 1 <= month <= 12 or len(year_text) not in (2, 4):
            raise _ApiError(1001, "the expiration date is not valid")
        year = int(year_text) + (2000 if len(year_text) == 2 else 0)
        today = self._now()
        if (year, month) < (today.year, today.month):
            raise _ApiError(2005)
        if not self.sandbox and number in TEST_CARDS:
            raise _ApiError(2007)
        return _CardData(
            number, holder, month_text.zfill(2), year_text, _address(body.get("address"))
        )

    async def _create_token(self, call: _Call) -> _Reply:
        data = self._card_data(call.body)
        with self._lock:
            token_id, _, created = self._next("tok")
            token = _Token(token_id, created, data)
            self._tokens[token_id] = token
            return _Reply(200, token.json())

    async def _get_token(self, call: _Call) -> _Reply:
        with self._lock:
            token = self._tokens.get(call.params["token_id"])
            if token is None:
                raise _ApiError(
                    1005, f"The token with id '{call.params['token_id']}' does not exist"
                )
            return _Reply(200, token.json())

    def _spend_token(self, token_id: object) -> _CardData:
        """The card data of an unused token, which is now used (call under the lock)."""
        token = self._tokens.get(token_id) if isinstance(token_id, str) else None
        if token is None:
            raise _ApiError(1005, f"The token with id '{token_id}' does not exist")
        if token.used:
            raise _ApiError(1003, "The token has already been used")
        token.used = True
        return token.data

    async def _create_card(self, call: _Call) -> _Reply:
        """From ``token_id`` + ``device_session_id`` (§11.3) or raw data (§11.2); a number the
        customer already has answers 2002 (checked before the token is spent)."""
        body = call.body
        customer_id = call.params.get("customer_id")
        from_token = "token_id" in body
        if from_token:
            _required_text(body, "device_session_id", 255)
        raw = None if from_token else self._card_data(body)
        with self._lock:
            if customer_id is not None:
                self._customer(customer_id)
            if from_token:
                token = (
                    self._tokens.get(body["token_id"])
                    if isinstance(body["token_id"], str)
                    else None
                )
                if token is not None:
                    self._refuse_duplicate(customer_id, token.data.number)
                data = self._spend_token(body["token_id"])
            else:
                assert raw is not None
                data = raw
                self._refuse_duplicate(customer_id, data.number)
            card_id, seq, created = self._next("k")
            card = _Card(card_id, seq, created, data, customer_id)
            self._cards[card_id] = card
            return _Reply(200, card.json())

    def _refuse_duplicate(self, customer_id: str | None, number: str) -> None:
        if customer_id is not None and any(
            card.customer_id == customer_id and not card.deleted and card.data.number == number
            for card in self._cards.values()
        ):
            raise _ApiError(2002)

    def _card(self, card_id: str, customer_id: str | None) -> _Card:
        card = self._cards.get(card_id)
        if card is None or card.deleted or card.customer_id != customer_id:
            raise _ApiError(1005, f"The card with id '{card_id}' does not exist")
        return card

    async def _get_card(self, call: _Call) -> _Reply:
        with self._lock:
            customer_id = call.params.get("customer_id")
            if customer_id is not None:
                self._customer(customer_id)
            return _Reply(200, self._card(call.params["card_id"], customer_id).json())

    async def _delete_card(self, call: _Call) -> _Reply:
        with self._lock:
            customer_id = call.params.get("customer_id")
            if customer_id is not None:
                self._customer(customer_id)
            self._card(call.params["card_id"], customer_id).deleted = True
            return _Reply(204)

    async def _list_cards(self, call: _Call) -> _Reply:
        with self._lock:
            customer_id = call.params.get("customer_id")
            if customer_id is not None:
                self._customer(customer_id)
            items = [
                card
                for card in self._cards.values()
                if card.customer_id == customer_id and not card.deleted
            ]
            return _Reply(200, [item.json() for item in _page(items, call.query)])

    # -- charges -----------------------------------------------------------------------------------

    async def _create_charge(self, call: _Call) -> _Reply:
        """A card charge (§7.1, §7.2) at merchant or customer level. Commits a ``completed`` or
        ``failed`` transaction; a failure answers the code's error object."""
        body = call.body
        customer_id = call.params.get("customer_id")
        with self._lock:
            if customer_id is not None:
                self._customer(customer_id)
            amount, currency, description, order = _charge_fields(body)
            if order is not None and order in self._orders:
                raise _ApiError(1006)
            card, card_id, data = self._charge_source(body, customer_id)
            owner = None if customer_id is None else self._customers[customer_id]
            code, lose = self._outcome(card_id, data.number, owner)
            charge_id, seq, created = self._next("tr")
            charge = _Charge(
                id=charge_id,
                seq=seq,
                created=created,
                amount=amount,
                currency=currency,
                description=description,
                order_id=order,
                customer_id=customer_id,
                card=card,
                card_id=card_id,
                status="completed" if code is None else "failed",
                error_message=None if code is None else wire.ERRORS[code].description,
                authorization=None,
                metadata=body.get("metadata"),
            )
            if code is None:
                charge.authorization = f"{self._random.randrange(10**6):06d}"
            self._charges[charge_id] = charge
            if order is not None:
                self._orders.add(order)
            kind = "charge.succeeded" if code is None else "charge.failed"
            event = self._event(kind, charge, created)
            if code is not None:
                raise _ApiError(code, events=[event], committed=True, lose=lose)
            return _Reply(200, charge.json(), [event], committed=True, lose=lose)

    def _charge_source(
        self, body: Mapping[str, Any], customer_id: str | None
    ) -> tuple[dict[str, Any], str | None, _CardData]:
        """The card a charge takes the money from: ``source_id`` (a stored card of the same
        scope, or an unused token) or raw ``card`` data (used once, not stored)."""
        source = body.get("source_id")
        if "card" in body and source is None:
            raw = body["card"]
            if not isinstance(raw, Mapping):
                raise _ApiError(1001, "card must be an object")
            data = self._card_data(raw)
            return _charge_card(data), None, data
        if not isinstance(source, str) or not source:
            raise _ApiError(1001, "source_id or card is required")
        stored = self._cards.get(source)
        if stored is not None and not stored.deleted and stored.customer_id == customer_id:
            card = stored.json()
            card.pop("customer_id", None)
            card.pop("points_card", None)
            return card, stored.id, stored.data
        if source in self._tokens:
            data = self._spend_token(source)
            return _charge_card(data), None, data
        raise _ApiError(1005, f"The card with id '{source}' does not exist")

    def _outcome(
        self, card_id: str | None, number: str, customer: _Customer | None
    ) -> tuple[int | None, bool]:
        """The error code a charge gets (``None``: approved), from the oldest matching rule or
        else the test card table, and whether its answer is lost."""
        for rule in self._rules:
            if rule.matches(card_id, number, customer):
                rule.use()
                code = TEST_CARDS.get(number) if rule.code == _AS_CARD else rule.code
                return (code if isinstance(code, int) else None), rule.lose
        return TEST_CARDS.get(number), False

    def _charge_in_scope(self, charge_id: str, customer_id: str | None) -> _Charge:
        """A charge by id: any at merchant level (§7.8), only the customer's at customer level."""
        charge = self._charges.get(charge_id)
        if charge is None or (customer_id is not None and charge.customer_id != customer_id):
            raise _ApiError(1005, f"The transaction with id '{charge_id}' does not exist")
        return charge

    async def _get_charge(self, call: _Call) -> _Reply:
        with self._lock:
            customer_id = call.params.get("customer_id")
            if customer_id is not None:
                self._customer(customer_id)
            return _Reply(200, self._charge_in_scope(call.params["charge_id"], customer_id).json())

    async def _list_charges(self, call: _Call) -> _Reply:
        """Newest first, with the ``creation`` and ``amount`` filters, ``offset`` and ``limit``;
        at merchant level every charge of the account (customers' included)."""
        with self._lock:
            customer_id = call.params.get("customer_id")
            if customer_id is not None:
                self._customer(customer_id)
            items = [
                charge
                for charge in self._charges.values()
                if customer_id is None or charge.customer_id == customer_id
            ]
            page = _page(items, call.query, amount=lambda charge: charge.amount)
            return _Reply(200, [item.json() for item in page])

    async def _refund_charge(self, call: _Call) -> _Reply:
        """Refund a ``completed`` card charge once (§7.7): the whole amount, or with
        ``partial_refunds`` an ``amount`` up to it. Answers the charge with its ``refund``."""
        body = call.body
        description = _optional_text(body, "description", 250)
        with self._lock:
            customer_id = call.params.get("customer_id")
            if customer_id is not None:
                self._customer(customer_id)
            charge = self._charge_in_scope(call.params["charge_id"], customer_id)
            if charge.status != "completed" or charge.refund is not None:
                raise _ApiError(3006, "The transaction cannot be refunded")
            amount = self._refund_amount(body, charge)
            refund_id, _, created = self._next("tr")
            charge.refund = {
                "id": refund_id,
                "amount": amount,
                "authorization": charge.authorization,
                "method": "card",
                "operation_type": "out",
                "transaction_type": "refund",
                "status": "completed",
                "currency": charge.currency,
                "creation_date": _date(created),
                "operation_date": _date(created),
                "description": description,
                "error_message": None,
                "order_id": None,
                "customer_id": charge.customer_id,
            }
            event = self._event("charge.refunded", charge, created)
            return _Reply(200, charge.json(), [event], committed=True)

    def _refund_amount(self, body: Mapping[str, Any], charge: _Charge) -> Decimal:
        if "amount" not in body:
            return charge.amount
        amount = _amount(body["amount"])
        if not self.partial_refunds and amount != charge.amount:
            raise _ApiError(1003, "The refund is always for the whole charge")
        if amount > charge.amount:
            raise _ApiError(1003, "The refund amount is greater than the charge")
        return amount

    # -- webhooks ----------------------------------------------------------------------------------

    async def _create_webhook(self, call: _Call) -> _Reply:
        """Store the webhook and verify it: a ``verification`` POST to its URL; a 2xx makes it
        ``verified``."""
        body = call.body
        url = _required_text(body, "url", 500)
        if not url.startswith(("http://", "https://")):
            raise _ApiError(1003, "url must be an http or https URL")
        kinds = body.get("event_types", list(EVENT_TYPES))
        if not isinstance(kinds, list) or not all(isinstance(kind, str) for kind in kinds):
            raise _ApiError(1001, "event_types must be a list of strings")
        unknown = sorted(set(kinds) - set(EVENT_TYPES))
        if unknown:
            raise _ApiError(1003, f"Unknown event types: {', '.join(unknown)}")
        with self._lock:
            hook_id, seq, created = self._next("w")
            hook = _Webhook(
                id=hook_id,
                seq=seq,
                created=created,
                url=url,
                user=_optional_text(body, "user", 100),
                password=_optional_text(body, "password", 100),
                event_types=list(kinds),
            )
            self._webhooks[hook_id] = hook
            code = "".join(
                self._random.choice(string.ascii_letters + string.digits) for _ in range(8)
            )
        verification = wire.dumps(
            {"type": "verification", "event_date": _date(created), "verification_code": code}
        )
        delivery = Delivery(hook_id, url, "verification", hook.headers(), verification)
        await self._send(delivery)
        with self._lock:
            hook.status = "verified" if 200 <= (delivery.status or 0) < 300 else "unverified"
            return _Reply(200, hook.json())

    def _webhook(self, hook_id: str) -> _Webhook:
        hook = self._webhooks.get(hook_id)
        if hook is None:
            raise _ApiError(1005, f"The webhook with id '{hook_id}' does not exist")
        return hook

    async def _get_webhook(self, call: _Call) -> _Reply:
        with self._lock:
            return _Reply(200, self._webhook(call.params["webhook_id"]).json())

    async def _delete_webhook(self, call: _Call) -> _Reply:
        with self._lock:
            self._webhook(call.params["webhook_id"])
            del self._webhooks[call.params["webhook_id"]]
            return _Reply(204)

    async def _list_webhooks(self, call: _Call) -> _Reply:
        with self._lock:
            items = sorted(self._webhooks.values(), key=lambda hook: -hook.seq)
            return _Reply(200, [item.json() for item in items])

    # -- control endpoints (no authentication, no faults) ------------------------------------------

    async def _control_endpoint(self, request: Request) -> Response:
        """``/_fake/...``: faults, rules, webhook faults, releases, deliveries and counters."""
        action = request.path_params["action"]
        content = await request.body()
        data = wire.loads(content) if content.strip() else {}
        if not isinstance(data, Mapping):
            return _json(400, {"error": "the body must be a JSON object"})
        try:
            return await self._control(request.method, action, data)
        except (ValueError, TypeError, KeyError) as exc:
            return _json(400, {"error": f"{type(exc).__name__}: {exc}"})

    async def _control(self, method: str, action: str, data: Mapping[str, Any]) -> Response:
        match method, action:
            case "POST", "faults" | "webhooks/faults":
                self.inject(**{str(key): _plain(value) for key, value in data.items()})
                return _json(200, self._controls())
            case "GET", "faults":
                return _json(200, self._controls())
            case "POST", "rules":
                self._control_rule(data)
                return _json(200, {"rules": len(self._rules)})
            case "DELETE", "rules":
                self.clear_rules(**{key: str(data[key]) for key in _TARGETS if key in data})
                return _json(200, {"rules": 0})
            case "POST", "webhooks/release":
                released = await self.release(reverse=bool(data.get("reverse", False)))
                return _json(200, {"released": len(released)})
            case "GET", "webhooks/deliveries":
                with self._lock:
                    shown = [_delivery_json(item) for item in self.deliveries]
                return _json(200, shown)
            case "GET", "received":
                with self._lock:
                    return _json(200, dict(self._received))
        return _json(404, {"error": f"no control {method} /_fake/{action}"})

    def _control_rule(self, data: Mapping[str, Any]) -> None:
        """``POST /_fake/rules``: ``{"error_code": 3001 | "action": "approve" | "lose",
        "lose": bool, "count": n | null, "card_id" | "card_number" | "customer_id" |
        "external_id": ...}``."""
        count = data.get("count", 1)
        times = None if count is None else int(count)
        target = {key: str(data[key]) for key in _TARGETS if data.get(key) is not None}
        action = data.get("action", "decline")
        if action == "approve":
            self.approve_next(times=times, lose=bool(data.get("lose", False)), **target)
        elif action == "lose":
            self.lose_next(times=times, **target)
        elif action == "decline":
            self.decline_next(code=int(data.get("error_code", 3001)), times=times, **target)
        else:
            raise ValueError(f"no rule action {action!r}")

    def _controls(self) -> dict[str, Any]:
        with self._lock:
            faults = {item.name: _exact(getattr(self.faults, item.name)) for item in fields(Faults)}
            hooks = {
                item.name: getattr(self.webhook_faults, item.name) for item in fields(WebhookFaults)
            }
            return {**faults, **hooks, "held": len(self.held)}


def _event_type(charge: _Charge) -> str:
    if charge.refund is not None:
        return "charge.refunded"
    return {
        "completed": "charge.succeeded",
        "failed": "charge.failed",
        "in_progress": "charge.created",
        "cancelled": "charge.cancelled",
    }.get(charge.status, "charge.created")


def _charge_card(data: _CardData) -> dict[str, Any]:
    """The ``card`` of a charge made from a token or raw data (it has no id: not stored)."""
    kind, bank, code = _BRANDS[data.brand]
    card: dict[str, Any] = {
        "type": kind,
        "brand": data.brand,
        "address": data.address,
        "card_number": data.masked(),
        "holder_name": data.holder_name,
        "expiration_year": data.expiration_year,
        "expiration_month": data.expiration_month,
        "allows_charges": True,
        "allows_payouts": kind == "debit",
        "bank_name": bank,
        "bank_code": code,
    }
    return card


def _delivery_json(delivery: Delivery) -> dict[str, Any]:
    return {
        "webhook_id": delivery.webhook_id,
        "url": delivery.url,
        "type": delivery.event_type,
        "status": delivery.status,
        "body": delivery.body.decode("utf-8"),
    }


def _plain(value: object) -> int | float | bool:
    if isinstance(value, bool | int):
        return value
    if isinstance(value, Decimal):
        return float(value)  # a latency in seconds; never an amount
    raise ValueError(f"a fault is a number or a boolean, not {value!r}")


def _exact(value: object) -> object:
    return Decimal(str(value)) if isinstance(value, float) else value


# -- request parsing -------------------------------------------------------------------------------


async def _body(request: Request) -> Mapping[str, Any]:
    """The JSON object a POST or PUT carries (1001 when it is not one, 1009 when too big)."""
    if request.method not in ("POST", "PUT"):
        return {}
    content = await request.body()
    if len(content) > _MAX_BODY:
        raise _ApiError(1009)
    if not content.strip():
        return {}
    data = wire.loads(content)
    if not isinstance(data, Mapping):
        raise _ApiError(1001, "The request body is not a JSON object")
    return data


def _basic_user(header: str | None) -> str | None:
    """The user name of an HTTP Basic header whose password is empty, else ``None``."""
    if not header or not header.startswith("Basic "):
        return None
    try:
        decoded = base64.b64decode(header[6:].strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    user, colon, password = decoded.partition(":")
    return user if colon and not password and user else None


def _required_text(body: Mapping[str, Any], name: str, limit: int) -> str:
    value = body.get(name)
    if not isinstance(value, str) or not value.strip():
        raise _ApiError(1001, f"{name} is required")
    if len(value) > limit:
        raise _ApiError(1001, f"{name} must have at most {limit} characters")
    return value


def _optional_text(body: Mapping[str, Any], name: str, limit: int) -> str | None:
    value = body.get(name)
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > limit:
        raise _ApiError(1001, f"{name} must be a string of at most {limit} characters")
    return value


def _email(body: Mapping[str, Any]) -> str:
    email = _required_text(body, "email", 100)
    local, at, domain = email.partition("@")
    if not at or not local or "." not in domain:
        raise _ApiError(1003, "email is not a valid email address")
    return email


def _digits(value: object, name: str) -> str:
    """A numeric field sent as digits (a string, as the examples do, or a number)."""
    text = str(value) if isinstance(value, int) and not isinstance(value, bool) else value
    if not isinstance(text, str) or not text.isdigit():
        raise _ApiError(1001, f"{name} must be numeric")
    return text


_ADDRESS_REQUIRED = ("line1", "postal_code", "state", "city", "country_code")


def _address(value: object) -> Any:
    if value is None:
        return None
    if not isinstance(value, Mapping) or not all(
        isinstance(value.get(key), str) and value.get(key) for key in _ADDRESS_REQUIRED
    ):
        raise _ApiError(1001, "address needs line1, postal_code, state, city and country_code")
    return dict(value)


def _amount(value: object) -> Decimal:
    """A JSON number > 0 with at most two decimals (§3.4): 1001 if not a number, 1003 if not
    positive or too precise."""
    if isinstance(value, bool) or not isinstance(value, Decimal | int):
        raise _ApiError(1001, "amount must be a number")
    amount = Decimal(value)
    if amount <= 0 or amount != amount.quantize(_CENT):
        raise _ApiError(1003, "amount must be greater than zero with at most two decimals")
    return amount.quantize(_CENT)


def _charge_fields(body: Mapping[str, Any]) -> tuple[Decimal, str, str, str | None]:
    """Validate a card charge's fields (§7.1): amount, currency, description, order_id,
    device_session_id, method, capture."""
    method = body.get("method")
    if method != "card":
        if method in ("store", "bank_account"):
            raise _ApiError(1003, f"method {method} is not simulated by this fake")
        raise _ApiError(1001, "method must be card, store or bank_account")
    if body.get("capture", True) is not True:
        raise _ApiError(1003, "capture=false (pre-authorization) is not simulated by this fake")
    amount = _amount(body.get("amount"))
    currency = body.get("currency", "MXN")
    if currency not in wire.CURRENCIES:
        raise _ApiError(1003, "currency must be MXN or USD")
    description = _required_text(body, "description", 250)
    order = _optional_text(body, "order_id", wire.ORDER_ID_MAX)
    _required_text(body, "device_session_id", 255)
    metadata = body.get("metadata")
    if metadata is not None and not isinstance(metadata, Mapping):
        raise _ApiError(1001, "metadata must be an object")
    return amount, str(currency), description, order


def _date_filter(query: Mapping[str, str], name: str) -> date | None:
    text = query.get(name)
    if text is None:
        return None
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise _ApiError(1001, f"{name} must be a date yyyy-mm-dd") from None


def _number_filter(query: Mapping[str, str], name: str, low: int, high: int | None) -> int | None:
    text = query.get(name)
    if text is None:
        return None
    if not text.isdigit() or int(text) < low or (high is not None and int(text) > high):
        bound = f"{low} to {high}" if high is not None else f">= {low}"
        raise _ApiError(1001, f"{name} must be a number {bound}")
    return int(text)


def _amount_filter(query: Mapping[str, str], name: str) -> Decimal | None:
    text = query.get(name)
    if text is None:
        return None
    try:
        return Decimal(text)
    except InvalidOperation:
        raise _ApiError(1001, f"{name} must be a number") from None


def _page(
    items: Iterable[T],
    query: Mapping[str, str],
    *,
    amount: Callable[[T], Decimal] | None = None,
) -> list[T]:
    """The documented list filters (§3.8), newest first: ``creation`` (=, ``[gte]``,
    ``[lte]``, inclusive), ``amount`` likewise (charges), then ``offset`` and ``limit``."""
    offset = _number_filter(query, "offset", 0, None) or 0
    limit = _number_filter(query, "limit", 1, 100) or 10
    checks: list[Callable[[Any], bool]] = []
    for suffix, test in _COMPARISONS:
        day = _date_filter(query, f"creation{suffix}")
        if day is not None:
            checks.append(_check(lambda item: item.created.date(), test, day))
        wanted = _amount_filter(query, f"amount{suffix}") if amount is not None else None
        if wanted is not None and amount is not None:
            checks.append(_check(amount, test, wanted))
    chosen = [item for item in items if all(check(item) for check in checks)]
    chosen.sort(key=lambda item: -_seq(item))
    return chosen[offset : offset + limit]


def _seq(item: object) -> int:
    return int(getattr(item, "seq", 0))


def _check(
    value: Callable[[Any], Any], test: Callable[[Any, Any], bool], wanted: object
) -> Callable[[Any], bool]:
    """A list filter: ``test(value(item), wanted)``."""
    return lambda item: test(value(item), wanted)


_COMPARISONS: tuple[tuple[str, Callable[[Any, Any], bool]], ...] = (
    ("", operator.eq),
    ("[gte]", operator.ge),
    ("[lte]", operator.le),
)


def _json(status: int, payload: Any) -> Response:
    return Response(wire.dumps(payload), status_code=status, media_type="application/json")


# -- the app ---------------------------------------------------------------------------------------


def create_app(fake: FakeOpenpay) -> Starlette:
    """The ASGI app serving ``fake``: the API under ``/v1/{merchant_id}``, controls under
    ``/_fake``, and Openpay's error object for any other path (1005)."""
    base = "/v1/{merchant_id}"
    customer = base + "/customers/{customer_id}"
    api = [
        ("merchant.get", "GET", base, fake._get_merchant, False),
        ("customers.create", "POST", base + "/customers", fake._create_customer, False),
        ("customers.list", "GET", base + "/customers", fake._list_customers, False),
        ("customers.get", "GET", customer, fake._get_customer, False),
        ("customers.update", "PUT", customer, fake._update_customer, False),
        ("customers.delete", "DELETE", customer, fake._delete_customer, False),
        ("tokens.create", "POST", base + "/tokens", fake._create_token, True),
        ("tokens.get", "GET", base + "/tokens/{token_id}", fake._get_token, False),
        ("webhooks.create", "POST", base + "/webhooks", fake._create_webhook, False),
        ("webhooks.list", "GET", base + "/webhooks", fake._list_webhooks, False),
        ("webhooks.get", "GET", base + "/webhooks/{webhook_id}", fake._get_webhook, False),
        ("webhooks.delete", "DELETE", base + "/webhooks/{webhook_id}", fake._delete_webhook, False),
    ]
    for scope in (base, customer):
        api += [
            ("cards.create", "POST", scope + "/cards", fake._create_card, True),
            ("cards.list", "GET", scope + "/cards", fake._list_cards, False),
            ("cards.get", "GET", scope + "/cards/{card_id}", fake._get_card, False),
            ("cards.delete", "DELETE", scope + "/cards/{card_id}", fake._delete_card, False),
            ("charges.create", "POST", scope + "/charges", fake._create_charge, False),
            ("charges.list", "GET", scope + "/charges", fake._list_charges, False),
            ("charges.get", "GET", scope + "/charges/{charge_id}", fake._get_charge, False),
            (
                "charges.refund",
                "POST",
                scope + "/charges/{charge_id}/refund",
                fake._refund_charge,
                False,
            ),
        ]
    routes = [
        Route(path, fake._endpoint(name, handler, public=public), methods=[method])
        for name, method, path, handler, public in api
    ]
    routes.append(
        Route("/_fake/{action:path}", fake._control_endpoint, methods=["GET", "POST", "DELETE"])
    )

    async def not_found(request: Request, exc: Exception) -> Response:
        return _json(404, fake._error(_ApiError(1005)))

    return Starlette(routes=routes, exception_handlers={404: not_found, 405: not_found})


def fake_app(environ: Mapping[str, str] | None = None) -> Starlette:
    """A default fake for ``billing fake-gateways serve``: credentials from
    ``BILLING_OPENPAY_FAKE_MERCHANT_ID`` and ``BILLING_OPENPAY_FAKE_PRIVATE_KEY``, else the
    document's example pair (:data:`DEFAULT_MERCHANT_ID`, :data:`DEFAULT_PRIVATE_KEY`)."""
    env = os.environ if environ is None else environ
    fake = FakeOpenpay(
        env.get("BILLING_OPENPAY_FAKE_MERCHANT_ID") or DEFAULT_MERCHANT_ID,
        env.get("BILLING_OPENPAY_FAKE_PRIVATE_KEY") or DEFAULT_PRIVATE_KEY,
    )
    return fake.app
