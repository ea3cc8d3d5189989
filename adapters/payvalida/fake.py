"""FakePayvalida: a stateful Payvalida server for tests and demos, as a starlette ASGI app.

It implements the purchase-order API the seeds and ``shared/reference/payvalida.md`` describe:
create (``POST /api/v3/porders``), update (``PATCH /api/v3/porders``, seed 003), query and
delete (``GET``/``DELETE /api/v3/porders/{order}``), plan registration
(``POST /v4/subscriptions/plans``, seed 004), a checkout page per order, and checksummed
notifications POSTed to a notify URL when an order is paid or expires. It enforces what the
documents fix: the ``CODE``/``DESC``/``DATA`` envelope, the merchant and the SHA-512 checksums
(``0018``, ``0025``), the order code's characters and uniqueness (``0042``; a payment
``reference`` in use: ``0043``), ``DD/MM/AAAA`` expirations no earlier than today and at most 30
days ahead (``0031``, ``0032``, ``0024``), open-amount (``"0"``) and recurrent orders (each
payment notified as ``order_<n>``). State lives in memory behind one lock; time comes from the
clock given to the constructor (plus :meth:`FakePayvalida.advance`), so expiry follows a test
clock.

Acting as the customer (from Python or, for a fake served in another process, from control
endpoints under ``/_fake``): pay an order's link (``late``: even though it expired), expire it,
move the clock, read the books (orders and the notifications sent), and script a payer
(:meth:`FakePayvalida.script_payer`: pay every link at once, after it expires, or never; lose the
answers). Faults come from :class:`billing.testing.asgi.Faults` (``charge_timeouts`` loses the
answer of a committed order creation) and :class:`NotificationFaults` (duplicate and held
notifications; held ones are released late, optionally out of order); forged notifications are
one call away.

Choices where the documents are silent (each also in ``docs/adapters/payvalida.md``):

* success is HTTP 200; a refusal is HTTP 400 with its ``CODE``; an injected server error is
  HTTP 500 with ``0009``; the creation's ``Operacion`` is ``"CREADA"`` (an update's is the
  documented ``"ACTUALIZADA"``);
* a query of an unknown order answers ``0041`` (its wording covers "not registered");
* a delete (``DELETE /api/v3/porders/{order}?merchant=…&checksum=…``, Payvalida's "Eliminar"
  page) takes only a pending order (``CANCELADA``: its link stops working, it can no longer be
  paid, not even late); any other, or an unknown one, answers ``0041`` ("Order is not registered
  or are APPROVED, EXPIRED or CANCELLED");
* an order expires at the end of its ``expiration`` day in Bogotá (UTC-5); expiry is noticed on
  the next request or control call, and notified ``cancelled``; a delete (``CANCELADA``) is not
  notified (Payvalida's notification page);
* notifications are JSON POSTs of ``pv_po_id``, ``po_id``, ``status``, ``amount``,
  ``iso_currency``, ``pv_payment`` and ``pv_checksum``, sent before the answer to the request
  (or control call) that caused them; the first payment of a recurrent order is ``order_1``;
* a paid recurrent order shows ``APROBADA`` and can still be paid again; it never expires.
"""

from __future__ import annotations

import html
import os
import random
import secrets
import string
import threading
import uuid
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any, Literal
from urllib.parse import parse_qsl

import anyio.to_thread
import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route

from adapters.payvalida import _wire as wire
from billing.testing.asgi import Faults, dropped

__all__ = [
    "DEFAULT_FIXED_HASH",
    "DEFAULT_MERCHANT",
    "ApiFaults",
    "Delivery",
    "FakePayvalida",
    "NotificationFaults",
    "create_app",
    "fake_app",
]

DEFAULT_MERCHANT = "kuanto"
"""The merchant of every example in the seeds."""
DEFAULT_FIXED_HASH = (
    "xxccc_b0b20707cca2b283b5844e77cadf2b5813bd923362b91583c95b736c8763937c0e0df27e9b730c40"
    "4eeac6484666430f6042c043089135e8d3e76f2e86a82c38"
)
"""The ``fixedHash`` literal of seed 003's Go sample (published in the document)."""

Deliver = Callable[[str, Mapping[str, str], bytes], int]
"""Sends one notification (URL, headers, body) and returns the HTTP status (0: no answer)."""
PayWhen = Literal["now", "late", "never"]

_MAX_BODY = 1_000_000
_TOKEN = string.ascii_letters + string.digits
_CURRENCIES = frozenset({"COP", "USD"})
_INTERVALS = frozenset({"month", "week", "day"})


def _post(url: str, headers: Mapping[str, str], body: bytes) -> int:
    """The default delivery: a real HTTP POST (10 s timeout)."""
    with httpx.Client(timeout=10.0) as client:
        return client.post(url, content=body, headers=dict(headers)).status_code


class _Refusal(Exception):
    """A Payvalida refusal: an envelope with a non-``0000`` code."""

    def __init__(self, code: str, detail: str | None = None, *, status: int = 400) -> None:
        self.code = code
        self.status = status
        description = wire.CODES.get(code, "Error")
        self.description = f"{description}: {detail}" if detail else description
        super().__init__(self.description)


@dataclass
class NotificationFaults:
    """Notification faults (set with :meth:`FakePayvalida.inject` or ``POST /_fake/faults``)."""

    duplicates: int = 0
    """The next N notifications are delivered twice."""
    hold: bool = False
    """Keep notifications until :meth:`FakePayvalida.release_notifications` (late delivery;
    ``reverse`` releases them out of order)."""


@dataclass
class ApiFaults:
    """Faults of this fake's own operations (set like the others, with ``inject``)."""

    delete_timeouts: int = 0
    """The next N deletes of a pending order lose their answer (the order is deleted)."""


@dataclass
class Delivery:
    """One notification, as sent (or recorded, with no notify URL)."""

    po_id: str
    status: str
    body: bytes
    headers: dict[str, str] = field(default_factory=lambda: {"content-type": "application/json"})
    forged: bool = False
    url: str | None = None
    http_status: int | None = None
    """The receiver's answer (``None``: no notify URL; ``0``: no answer)."""

    def json(self) -> dict[str, Any]:
        return {
            "po_id": self.po_id,
            "status": self.status,
            "forged": self.forged,
            "url": self.url,
            "http_status": self.http_status,
            "body": self.body.decode("utf-8"),
        }


@dataclass
class _Payment:
    po_id: str
    amount: Decimal
    at: datetime
    late: bool
    method: str


@dataclass
class _Order:
    order: str
    code: int
    reference: str
    token: str
    email: str
    country: int
    currency: str
    amount: Decimal
    description: str
    method: str
    language: str
    recurrent: bool
    expiration: date | None
    iva: str
    created: datetime
    updated: datetime
    state: str = wire.PENDING
    payments: list[_Payment] = field(default_factory=list)
    extra: dict[str, str] = field(default_factory=dict)
    checkout: str = ""

    @property
    def open_amount(self) -> bool:
        return self.amount == 0


@dataclass
class _PayerScript:
    pay: PayWhen = "never"
    lose: bool = False


@dataclass
class _Reply:
    status: int
    payload: Any
    deliveries: list[Delivery] = field(default_factory=list)
    committed: bool = False
    lose: bool = False


def _stamp(moment: datetime) -> str:
    return moment.astimezone(wire.BOGOTA).strftime("%Y-%m-%d %H:%M:%S")


def _envelope(code: str, description: str, data: Any) -> dict[str, Any]:
    return {"CODE": code, "DESC": description, "DATA": data}


def _json(status: int, payload: Any) -> Response:
    return Response(wire.dumps(payload), status_code=status, media_type="application/json")


def _as_sent(value: object) -> str | None:
    """A body value as the string that was sent (a JSON number as its digits)."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, (str, int, Decimal)):
        return str(value)
    return None


class FakePayvalida:
    """A Payvalida merchant account in memory, served by :attr:`app`.

    Thread-safe: state, faults and scripts change only under one lock, so tests may drive it
    from Python while a served copy answers over sockets. Nothing here logs, and its repr shows
    no secret.
    """

    def __init__(
        self,
        merchant: str = DEFAULT_MERCHANT,
        fixed_hash: str = DEFAULT_FIXED_HASH,
        *,
        notification_hash: str | None = None,
        notify_url: str | None = None,
        rules: wire.ChecksumRules = wire.DEFAULT_RULES,
        faults: Faults | None = None,
        deliver: Deliver | None = None,
        now: Callable[[], datetime] | None = None,
        checkout_base: str | None = None,
        seed: int | None = None,
    ) -> None:
        self.merchant = merchant
        self._fixed_hash = fixed_hash
        self._notification_hash = notification_hash or fixed_hash
        self.notify_url = notify_url
        """Where notifications are POSTed (``None``: they are only recorded)."""
        self.rules = rules
        self.faults = faults or Faults()
        self.api_faults = ApiFaults()
        self.notification_faults = NotificationFaults()
        self._deliver = deliver or _post
        self._clock = now or (lambda: datetime.now(wire.BOGOTA))
        self._offset = timedelta()
        self.checkout_base = checkout_base
        """The checkout links' base (``sandbox-checkout.payvalida.com`` to look like the
        sandbox); by default this fake's own ``/checkout`` page."""
        self._random = random.Random(seed)
        self._lock = threading.RLock()
        self._code = 1_934_651
        self._orders: dict[str, _Order] = {}
        self._expiring: dict[str, _Order] = {}
        """Pending orders that can expire (not recurrent): what :meth:`_expire_due` scans."""
        self._tokens: dict[str, str] = {}
        self._plans: dict[str, dict[str, str]] = {}
        self._payers: dict[str, _PayerScript] = {}
        self._received: Counter[str] = Counter()
        self.sent: list[Delivery] = []
        """Every notification delivered (or recorded without a URL), in order; a duplicate
        appears twice."""
        self.held: list[Delivery] = []
        """Notifications waiting for :meth:`release_notifications`."""
        self.app = create_app(self)
        """The ASGI app."""

    def __repr__(self) -> str:
        with self._lock:
            return f"FakePayvalida(merchant={self.merchant!r}, orders={len(self._orders)})"

    # -- time --------------------------------------------------------------------------------------

    def now(self) -> datetime:
        """The fake's time, in Bogotá: the clock plus every :meth:`advance`."""
        return (self._clock() + self._offset).astimezone(wire.BOGOTA)

    def today(self) -> date:
        return self.now().date()

    def advance(self, delta: timedelta) -> list[Delivery]:
        """Move the fake's time forward; orders whose day passed expire (and are notified)."""
        with self._lock:
            self._offset += delta
        return self._settle()

    # -- Python controls ---------------------------------------------------------------------------

    def inject(self, **faults: int | float | bool) -> None:
        """Set faults by name: any field of :class:`~billing.testing.asgi.Faults`, of
        :class:`ApiFaults` or of :class:`NotificationFaults`."""
        names = Faults.settable()
        own = {item.name for item in fields(ApiFaults)}
        notes = {item.name for item in fields(NotificationFaults)}
        with self._lock:
            for name, value in faults.items():
                if name in names:
                    setattr(self.faults, name, value)
                elif name in own:
                    setattr(self.api_faults, name, value)
                elif name in notes:
                    setattr(self.notification_faults, name, value)
                else:
                    raise ValueError(f"no fault named {name!r}")

    def script_payer(self, email: str, *, pay: PayWhen = "never", lose: bool = False) -> None:
        """How the customer with this e-mail treats each new link: pay it at once (``now``),
        once it has expired (``late``: paid after the expiry), or ``never``; with ``lose``, the
        answer to the creation of each of their orders is lost after the commit."""
        if pay not in ("now", "late", "never"):
            raise ValueError("pay must be now, late or never")
        with self._lock:
            self._payers[email.lower()] = _PayerScript(pay, lose)

    def pay(
        self,
        order: str,
        *,
        late: bool = False,
        amount: Decimal | str | None = None,
        method: str = "PSE",
    ) -> list[Delivery]:
        """Act as the customer: pay the order through its link (``late``: even though it
        expired). Open-amount orders need ``amount``. Returns the notifications sent."""
        with self._lock:
            deliveries = self._expire_due()
            paid = None if amount is None else Decimal(str(amount))
            deliveries.append(self._pay_locked(order, late=late, amount=paid, method=method))
        self._dispatch(deliveries)
        return deliveries

    def expire(self, order: str) -> list[Delivery]:
        """Let the order's link expire unpaid now (``VENCIDA``, notified ``cancelled``)."""
        with self._lock:
            deliveries = self._expire_due()
            found = self._order(order)
            if found.state != wire.PENDING:
                raise ValueError(f"order {order} is {found.state}, not pending")
            deliveries.append(self._expire_locked(found))
        self._dispatch(deliveries)
        return deliveries

    def order(self, order: str) -> dict[str, Any]:
        """The order as a query shows it, plus its payments (a copy)."""
        with self._lock:
            found = self._order(order)
            data = self._data(found)
            data["PAYMENTS"] = [
                {"po_id": p.po_id, "amount": f"{p.amount:.2f}", "late": p.late}
                for p in found.payments
            ]
            data["RECURRENT"] = found.recurrent
            data["EXPIRATION"] = (
                None if found.expiration is None else wire.expiration_text(found.expiration)
            )
            return data

    def orders(self) -> dict[str, dict[str, Any]]:
        """Every order, by code (see :meth:`order`)."""
        with self._lock:
            return {code: self.order(code) for code in self._orders}

    def state(self, order: str) -> str:
        with self._lock:
            return self._order(order).state

    def latest_order(self, email: str) -> str | None:
        """The code of the newest order for this payer, if any."""
        with self._lock:
            mine = [item for item in self._orders.values() if item.email.lower() == email.lower()]
            return max(mine, key=lambda item: item.code).order if mine else None

    def payments_by(self, email: str) -> int:
        """How many payments this payer made (each payment of a recurrent order counts)."""
        with self._lock:
            return sum(
                len(item.payments)
                for item in self._orders.values()
                if item.email.lower() == email.lower() and item.state != wire.ANNULLED
            )

    def received(self, operation: str) -> int:
        """How many requests for an operation (``orders.create``, ``orders.get``...) arrived."""
        with self._lock:
            return self._received[operation]

    def notification(
        self, reference: str, *, status: str | None = None, forged: bool = False
    ) -> tuple[dict[str, str], bytes]:
        """The headers and body of the notification about an order (or one payment,
        ``order_<n>``) as the host receives it: ``approved`` for a paid one (its latest
        payment), ``cancelled`` for an expired or annulled one, ``pending`` (this fake's own)
        for one still open. ``forged``: the same shape, claiming ``status`` (``approved`` by
        default), with a checksum made without the secret."""
        with self._lock:
            delivery = self._notification_locked(reference, status=status, forged=forged)
        return dict(delivery.headers), delivery.body

    def resend(self, reference: str, *, status: str | None = None) -> list[Delivery]:
        """Deliver the genuine notification about this order (or payment) again: a duplicate,
        or a late one."""
        with self._lock:
            delivery = self._notification_locked(reference, status=status, forged=False)
        self._dispatch([delivery])
        return [delivery]

    def forge(self, reference: str, *, status: str = "approved") -> list[Delivery]:
        """POST a forged notification (right shape, wrong checksum) to the notify URL."""
        with self._lock:
            delivery = self._notification_locked(reference, status=status, forged=True)
        self._dispatch([delivery])
        return [delivery]

    def release_notifications(self, *, reverse: bool = False) -> list[Delivery]:
        """Deliver the held notifications now (newest first when ``reverse``: out of order)."""
        with self._lock:
            waiting, self.held = self.held, []
        if reverse:
            waiting.reverse()
        for delivery in waiting:
            self._send(delivery)
        return waiting

    # -- state (call under the lock) ---------------------------------------------------------------

    def _order(self, order: str) -> _Order:
        found = self._orders.get(order)
        if found is None:
            raise KeyError(f"no order {order}")
        return found

    def _expire_due(self) -> list[Delivery]:
        """Orders whose last day has passed: expired, or paid late by a ``late`` payer."""
        today = self.today()
        due: list[Delivery] = []
        for item in list(self._expiring.values()):
            if item.state != wire.PENDING or item.recurrent or item.expiration is None:
                del self._expiring[item.order]
                continue
            if item.expiration >= today:
                continue
            script = self._payers.get(item.email.lower())
            if script is not None and script.pay == "late" and not item.open_amount:
                due.append(self._pay_locked(item.order, late=True, amount=None, method="PSE"))
            else:
                due.append(self._expire_locked(item))
            self._expiring.pop(item.order, None)
        return due

    def _expire_locked(self, item: _Order) -> Delivery:
        item.state = wire.EXPIRED
        item.updated = self.now()
        return self._delivery(item, item.order, wire.NOTIFIED_CANCELLED, item.amount)

    def _pay_locked(
        self, order: str, *, late: bool, amount: Decimal | None, method: str
    ) -> Delivery:
        item = self._order(order)
        if item.state == wire.EXPIRED and not late:
            raise ValueError(f"order {order} expired; pay it late or not at all")
        if item.state == wire.APPROVED and not item.recurrent:
            raise ValueError(f"order {order} is already paid")
        if item.state in (wire.CANCELLED, wire.ANNULLED):
            raise ValueError(f"order {order} is {item.state}")
        if item.open_amount:
            if amount is None or amount <= 0:
                raise ValueError(f"order {order} is open-amount: say how much is paid")
        elif amount is not None and amount != item.amount:
            raise ValueError(f"order {order} is for {item.amount}, not {amount}")
        paid = item.amount if amount is None else amount
        po_id = f"{order}_{len(item.payments) + 1}" if item.recurrent else order
        when = self.now()
        item.payments.append(_Payment(po_id, paid, when, late, method))
        item.state = wire.APPROVED
        item.updated = when
        return self._delivery(item, po_id, wire.NOTIFIED_APPROVED, paid)

    def _delivery(
        self, item: _Order, po_id: str, status: str, amount: Decimal, *, forged: bool = False
    ) -> Delivery:
        secret = self._notification_hash
        if forged:
            secret = "forged-" + secrets.token_hex(8)
        method = item.payments[-1].method if item.payments else ""
        body = wire.notification_body(
            pv_po_id=item.code,
            po_id=po_id,
            status=status,
            amount=amount,
            currency=item.currency,
            payment=method,
            secret=secret,
            rules=self.rules,
        )
        return Delivery(po_id, status, body, forged=forged)

    def _notification_locked(self, reference: str, *, status: str | None, forged: bool) -> Delivery:
        base, number = wire.split_po_id(reference)
        if reference in self._orders:
            base, number = reference, None
        item = self._order(base)
        payment = None
        if number is not None:
            payment = next((p for p in item.payments if p.po_id == reference), None)
            if payment is None:
                raise KeyError(f"no payment {reference}")
        elif item.payments:
            payment = item.payments[-1]
        if status is None:
            if forged or item.state == wire.APPROVED:
                status = wire.NOTIFIED_APPROVED
            elif item.state in (wire.EXPIRED, wire.ANNULLED):
                status = wire.NOTIFIED_CANCELLED
            else:
                status = "pending"
        if status == wire.NOTIFIED_APPROVED and payment is not None:
            po_id, amount = payment.po_id, payment.amount
        else:
            po_id = reference if number is not None else base
            if item.recurrent and number is None and forged:
                po_id = f"{base}_{len(item.payments) + 1}"
            amount = item.amount
        return self._delivery(item, po_id, status, amount, forged=forged)

    # -- notification delivery ---------------------------------------------------------------------

    def _settle(self) -> list[Delivery]:
        with self._lock:
            due = self._expire_due()
        self._dispatch(due)
        return due

    def _dispatch(self, deliveries: list[Delivery]) -> None:
        """Deliver (or hold, or duplicate) each notification; call without the lock."""
        ready: list[Delivery] = []
        with self._lock:
            for delivery in deliveries:
                if self.notification_faults.hold:
                    self.held.append(delivery)
                    continue
                ready.append(delivery)
                if self.notification_faults.duplicates > 0:
                    self.notification_faults.duplicates -= 1
                    ready.append(replace(delivery, headers=dict(delivery.headers)))
        for delivery in ready:
            self._send(delivery)

    def _send(self, delivery: Delivery) -> None:
        with self._lock:
            url = self.notify_url
        delivery.url = url
        if url is not None:
            try:
                delivery.http_status = self._deliver(url, delivery.headers, delivery.body)
            except (httpx.HTTPError, OSError):
                delivery.http_status = 0
        with self._lock:
            self.sent.append(delivery)

    async def _dispatch_async(self, deliveries: list[Delivery]) -> None:
        if deliveries:
            await anyio.to_thread.run_sync(self._dispatch, deliveries)

    # -- the HTTP surface: plumbing ----------------------------------------------------------------

    def _endpoint(
        self, operation: str, handler: Callable[[Request, Mapping[str, Any]], _Reply]
    ) -> Callable[[Request], Any]:
        """An API endpoint: count it, apply faults, expire what is due, handle, notify."""

        async def answer(request: Request) -> Response:
            with self._lock:
                self._received[operation] += 1
            await self.faults.delay()
            with self._lock:
                early = self.faults.early_answer()
                if early is None and self.faults.take("server_errors"):
                    early = _json(500, _envelope("0009", wire.CODES["0009"], {}))
                due = [] if early is not None else self._expire_due()
            if early is not None:
                return early
            await self._dispatch_async(due)
            try:
                body = await _body(request) if request.method in ("POST", "PATCH") else {}
                reply = handler(request, body)
            except _Refusal as refusal:
                reply = _Reply(refusal.status, _envelope(refusal.code, refusal.description, {}))
            await self._dispatch_async(reply.deliveries)
            with self._lock:
                lose = reply.lose or (
                    reply.committed
                    and operation == "orders.create"
                    and self.faults.take("charge_timeouts")
                )
                deleted = reply.committed and operation == "orders.delete"
                if deleted and self.api_faults.delete_timeouts > 0:
                    self.api_faults.delete_timeouts -= 1
                    lose = True
            if lose:
                return dropped()
            return _json(reply.status, reply.payload)

        return answer

    def _check_merchant(self, merchant: object) -> None:
        if not isinstance(merchant, str) or not merchant:
            raise _Refusal("0017")
        if merchant != self.merchant:
            raise _Refusal("0018")

    def _check_sum(self, given: object, expected: str) -> None:
        if not wire.checksums_equal(given, expected):
            raise _Refusal("0025")

    def _checkout(self, request: Request, item: _Order) -> str:
        if self.checkout_base:
            return f"{self.checkout_base}?token={item.token}"
        base = str(request.base_url).rstrip("/")
        mount = str(request.scope.get("root_path") or "").rstrip("/")
        if mount and not base.endswith(mount):
            base += mount  # served under /payvalida by ``billing fake-gateways serve``
        return f"{base}/checkout?token={item.token}"

    def _data(self, item: _Order) -> dict[str, Any]:
        """An order as the query shows it (Payvalida's "Consultar" page)."""
        if item.expiration is None:
            lifetime = ""
        else:
            end = datetime.combine(item.expiration + timedelta(days=1), datetime.min.time())
            hours = (end.replace(tzinfo=wire.BOGOTA) - item.created).total_seconds() // 3600
            lifetime = f"{int(max(hours, 0))}h"
        last = item.payments[-1] if item.payments else None
        transaction: dict[str, Any] = {}
        if last is not None and item.state in (wire.APPROVED, wire.ANNULLED):
            transaction = {
                "DATE": last.at.astimezone(wire.BOGOTA).strftime("%Y-%m-%dT%H:%M:%S%z"),
                "RESPONSE_CODE": wire.APPROVED,
                "AMOUNT": f"{last.amount:.2f}",
            }
        return {
            "CURRENCY": item.currency,
            "NOTIFICATION_RESPONSE": "",
            "UDPATE_DATE": _stamp(item.updated),
            "CREATION_DATE": _stamp(item.created),
            "STATE": item.state,
            "PAYMNENT_METHOD": last.method if last is not None else "",
            "EMAIL": item.email,
            "LIFE_TIME": lifetime,
            "ORDER": item.order,
            "CODE": item.code,
            "AMOUNT": f"{item.amount:.2f}",
            "DESCRIPTION": item.description,
            "REFERENCE": item.reference,
            "checkout": item.checkout,
            "TRANSACTION": transaction,
        }

    def _order_reply(self, item: _Order, operation: str) -> dict[str, Any]:
        return _envelope(
            wire.OK,
            "OK",
            {
                "OrdenID": item.order,
                "Monto": wire.monto(item.amount),
                "PVordenID": str(item.code),
                "Referencia": item.reference,
                "Operacion": operation,
                "checkout": item.checkout,
            },
        )

    # -- orders ------------------------------------------------------------------------------------

    def _order_fields(self, body: Mapping[str, Any]) -> dict[str, Any]:
        """An order body checked in Payvalida's order: merchant, checksum, then the fields."""
        self._check_merchant(body.get("merchant"))
        email = _as_sent(body.get("email")) or ""
        country_text = _as_sent(body.get("country")) or ""
        order = _as_sent(body.get("order")) or ""
        money = _as_sent(body.get("money")) or ""
        amount_text = _as_sent(body.get("amount")) or ""
        if not country_text.isdigit():
            raise _Refusal("0022")
        expected = wire.order_checksum(
            email, int(country_text), order, money, amount_text, self._fixed_hash, rules=self.rules
        )
        self._check_sum(body.get("checksum"), expected)
        if not wire.valid_email(email):
            raise _Refusal("0011", "email")
        if int(country_text) != wire.COLOMBIA:
            raise _Refusal("0022")
        if not wire.valid_order(order):
            raise _Refusal("0011", "order: 1 to 20 letters and digits")
        if money not in _CURRENCIES:
            raise _Refusal("0023")
        amount = wire.parse_amount(amount_text)
        if amount is None or "," in amount_text:
            raise _Refusal("0021")
        description = body.get("description")
        if not isinstance(description, str) or not description.strip():
            raise _Refusal("0029")
        recurrent = body.get("recurrent", False)
        if not isinstance(recurrent, bool):
            raise _Refusal("0011", "recurrent")
        language = body.get("language") or "es"
        if language not in ("es", "en"):
            raise _Refusal("0011", "language: es or en")
        expiration = self._expiration(body.get("expiration"), recurrent)
        reference = _as_sent(body.get("reference")) or ""
        if reference and not reference.isdigit():
            raise _Refusal("0011", "reference")
        iva = _as_sent(body.get("iva")) or "0"
        if wire.parse_amount(iva) is None:
            raise _Refusal("0011", "iva")
        extra = {
            key: str(body[key])
            for key in ("user_di", "user_type_di", "user_name", "redirect_timeout")
            if isinstance(body.get(key), str)
        }
        return {
            "email": email,
            "country": int(country_text),
            "order": order,
            "currency": money,
            "amount": amount,
            "description": description.strip()[:500],
            "recurrent": recurrent,
            "language": language,
            "expiration": expiration,
            "reference": reference,
            "iva": iva,
            "method": str(body.get("method") or ""),
            "extra": extra,
        }

    def _expiration(self, value: object, recurrent: bool) -> date | None:
        if value in (None, "") and recurrent:
            return None
        day = wire.parse_expiration(value)
        if day is None:
            raise _Refusal("0031")
        today = self.today()
        if day < today:
            raise _Refusal("0032")
        if day > today + timedelta(days=wire.MAX_LINK_DAYS):
            raise _Refusal("0024")
        return day

    def _reference_taken(self, reference: str, besides: str | None = None) -> bool:
        return any(
            item.reference == reference and item.state == wire.PENDING and item.order != besides
            for item in self._orders.values()
        )

    def _create_order(self, request: Request, body: Mapping[str, Any]) -> _Reply:
        values = self._order_fields(body)
        deliveries: list[Delivery] = []
        with self._lock:
            if values["order"] in self._orders:
                raise _Refusal("0042")
            reference = values.pop("reference")
            if reference and self._reference_taken(reference):
                raise _Refusal("0043")
            self._code += 1
            if not reference:
                reference = str(self._random.randint(10_000_000, 99_999_999))
                while self._reference_taken(reference):
                    reference = str(self._random.randint(10_000_000, 99_999_999))
            token = "".join(self._random.choice(_TOKEN) for _ in range(32))
            now = self.now()
            item = _Order(
                code=self._code, reference=reference, token=token, created=now, updated=now,
                **values,
            )  # fmt: skip
            item.checkout = self._checkout(request, item)
            self._orders[item.order] = item
            self._expiring[item.order] = item
            self._tokens[token] = item.order
            script = self._payers.get(item.email.lower())
            if script is not None and script.pay == "now" and not item.open_amount:
                deliveries.append(
                    self._pay_locked(item.order, late=False, amount=None, method="PSE")
                )
            payload = self._order_reply(item, "CREADA")
        lose = script is not None and script.lose
        return _Reply(200, payload, deliveries, committed=True, lose=lose)

    def _update_order(self, request: Request, body: Mapping[str, Any]) -> _Reply:
        values = self._order_fields(body)
        with self._lock:
            item = self._orders.get(values["order"])
            if item is None or item.state != wire.PENDING:
                raise _Refusal(wire.NOT_FOUND)
            reference = values.pop("reference")
            if reference and self._reference_taken(reference, besides=item.order):
                raise _Refusal("0043")
            for name, value in values.items():
                setattr(item, name, value)
            if reference:
                item.reference = reference
            item.updated = self.now()
            self._expiring[item.order] = item
            payload = self._order_reply(item, "ACTUALIZADA")
        return _Reply(200, payload)

    def _lookup(self, request: Request) -> _Order | None:
        order = request.path_params["order"]
        self._check_merchant(request.query_params.get("merchant"))
        expected = wire.lookup_checksum(order, self.merchant, self._fixed_hash, rules=self.rules)
        self._check_sum(request.query_params.get("checksum"), expected)
        return self._orders.get(order)

    def _get_order(self, request: Request, body: Mapping[str, Any]) -> _Reply:
        with self._lock:
            item = self._lookup(request)
            if item is None:
                raise _Refusal(wire.NOT_FOUND)
            return _Reply(200, _envelope(wire.OK, "OK", self._data(item)))

    def _delete_order(self, request: Request, body: Mapping[str, Any]) -> _Reply:
        with self._lock:
            item = self._lookup(request)
            if item is None or item.state != wire.PENDING:
                raise _Refusal(wire.NOT_FOUND)
            item.state = wire.CANCELLED
            item.updated = self.now()
            self._expiring.pop(item.order, None)
            data = {"ORDER": item.order, "CODE": item.code, "STATE": item.state}
            return _Reply(200, _envelope(wire.OK, "OK", data), committed=True)

    # -- plans -------------------------------------------------------------------------------------

    def _create_plan(self, request: Request, body: Mapping[str, Any]) -> _Reply:
        self._check_merchant(body.get("merchant"))
        values = {
            name: _as_sent(body.get(name)) or ""
            for name in ("interval", "interval_count", "amount")
        }
        expected = wire.plan_checksum(
            self.merchant,
            values["amount"],
            values["interval"],
            values["interval_count"],
            self._fixed_hash,
            rules=self.rules,
        )
        self._check_sum(body.get("checksum"), expected)
        if values["interval"] not in _INTERVALS:
            raise _Refusal("0011", "interval: month, week or day")
        count = values["interval_count"]
        if not count.isdigit() or int(count) < 1:
            raise _Refusal("0011", "interval_count: a positive whole number")
        amount = wire.parse_amount(values["amount"])
        if amount is None or amount <= 0 or "," in values["amount"]:
            raise _Refusal("0021")
        description = body.get("description", "")
        if not isinstance(description, str):
            raise _Refusal("0011", "description")
        method = body.get("method") or ""
        with self._lock:
            plan = str(uuid.UUID(int=self._random.getrandbits(128), version=4))
            data = {
                "id": plan,
                "interval": values["interval"],
                "interval_count": count,
                "amount": values["amount"],
                "description": description,
                "method": str(method),
            }
            self._plans[plan] = data
        return _Reply(200, _envelope(wire.OK, "OK", data))

    def plans(self) -> dict[str, dict[str, str]]:
        with self._lock:
            return {key: dict(value) for key, value in self._plans.items()}

    # -- the checkout page (a person paying through the link) --------------------------------------

    async def _checkout_page(self, request: Request) -> Response:
        await anyio.to_thread.run_sync(self._settle)
        token = request.query_params.get("token", "")
        with self._lock:
            code = self._tokens.get(token)
            item = None if code is None else self._orders[code]
            if item is None:
                return HTMLResponse("<h1>Orden no encontrada</h1>", 404)
            order, state = item.order, item.state
            amount, description = item.amount, item.description
        if request.method == "POST":
            form = dict(parse_qsl((await request.body()).decode("utf-8", "replace")))
            paid = form.get("amount") or None
            try:
                await anyio.to_thread.run_sync(lambda: self.pay(order, amount=paid))
            except (ValueError, KeyError, ArithmeticError) as exc:
                return HTMLResponse(f"<p>{html.escape(str(exc))}</p>", 409)
            return HTMLResponse("<h1>Pago aprobado</h1>")
        field_html = '<input name="amount" placeholder="monto">' if amount == 0 else ""
        page = (
            f"<h1>Payvalida (fake)</h1><p>Orden {html.escape(order)}: "
            f"{html.escape(description)}, {wire.monto(amount)}, {state}</p>"
            f'<form method="post">{field_html}<button>Pagar</button></form>'
        )
        return HTMLResponse(page)

    # -- control endpoints (no checksum, no faults) ------------------------------------------------

    async def _control_endpoint(self, request: Request) -> Response:
        """``/_fake/...``: act as the customer, move time, read the books, faults."""
        action = request.path_params["action"]
        content = await request.body()
        data = wire.loads(content) if content.strip() else {}
        if not isinstance(data, Mapping):
            return _json(400, {"error": "the body must be a JSON object"})
        try:
            return await anyio.to_thread.run_sync(self._control, request.method, action, data)
        except (ValueError, TypeError, KeyError, ArithmeticError) as exc:
            return _json(400, {"error": f"{type(exc).__name__}: {exc}"})

    def _control(self, method: str, action: str, data: Mapping[str, Any]) -> Response:
        if method == "GET" and action.startswith("orders/"):
            return _json(200, self.order(action.removeprefix("orders/")))
        match method, action:
            case "POST", "faults":
                self.inject(**{str(key): _plain(value) for key, value in data.items()})
                return _json(200, self._controls())
            case "GET", "faults":
                return _json(200, self._controls())
            case "POST", "payers":
                pay = str(data.get("pay", "never"))
                if pay not in ("now", "late", "never"):
                    raise ValueError("pay must be now, late or never")
                self.script_payer(str(data["email"]), pay=pay, lose=bool(data.get("lose", False)))  # type: ignore[arg-type]
                return _json(200, {"email": data["email"], "pay": pay})
            case "POST", "pay":
                amount = data.get("amount")
                sent = self.pay(
                    str(data["order"]),
                    late=bool(data.get("late", False)),
                    amount=None if amount is None else str(amount),
                    method=str(data.get("method", "PSE")),
                )
                return _json(
                    200, {"order": self.order(str(data["order"])), "notifications": _shown(sent)}
                )
            case "POST", "expire":
                sent = self.expire(str(data["order"]))
                return _json(
                    200, {"order": self.order(str(data["order"])), "notifications": _shown(sent)}
                )
            case "POST", "advance":
                delta = timedelta(
                    days=float(data.get("days", 0)),
                    hours=float(data.get("hours", 0)),
                    seconds=float(data.get("seconds", 0)),
                )
                if delta < timedelta():
                    raise ValueError("time only moves forward")
                sent = self.advance(delta)
                return _json(200, {"now": self.now().isoformat(), "notifications": _shown(sent)})
            case "GET", "now":
                return _json(200, {"now": self.now().isoformat()})
            case "GET", "orders":
                self._settle()
                return _json(200, self.orders())
            case "GET", "notifications":
                with self._lock:
                    return _json(200, _shown(self.sent))
            case "POST", "notify_url":
                url = data.get("url")
                with self._lock:
                    self.notify_url = None if url in (None, "") else str(url)
                return _json(200, {"url": self.notify_url})
            case "POST", "notifications/release":
                released = self.release_notifications(reverse=bool(data.get("reverse", False)))
                return _json(200, {"released": _shown(released)})
            case "POST", "notifications/resend":
                status = data.get("status")
                sent = self.resend(
                    str(data["po_id"]), status=None if status is None else str(status)
                )
                return _json(200, {"notifications": _shown(sent)})
            case "POST", "notifications/forge":
                sent = self.forge(str(data["order"]), status=str(data.get("status", "approved")))
                return _json(200, {"notifications": _shown(sent)})
            case "GET", "received":
                with self._lock:
                    return _json(200, dict(self._received))
        return _json(404, {"error": f"no control {method} /_fake/{action}"})

    def _controls(self) -> dict[str, Any]:
        with self._lock:
            faults = {item.name: getattr(self.faults, item.name) for item in fields(Faults)}
            own = {item.name: getattr(self.api_faults, item.name) for item in fields(ApiFaults)}
            notes = {
                item.name: getattr(self.notification_faults, item.name)
                for item in fields(NotificationFaults)
            }
            return {**faults, **own, **notes, "held": len(self.held)}


def _shown(deliveries: list[Delivery]) -> list[dict[str, Any]]:
    return [item.json() for item in deliveries]


def _plain(value: object) -> int | float | bool:
    if isinstance(value, bool | int):
        return value
    if isinstance(value, Decimal):
        return float(value)  # latency in seconds: not money
    raise ValueError(f"a fault is a number or a boolean, not {value!r}")


async def _body(request: Request) -> Mapping[str, Any]:
    content = await request.body()
    if len(content) > _MAX_BODY:
        raise _Refusal("0011", "the body is too large")
    parsed = wire.loads(content)
    if not isinstance(parsed, Mapping):
        raise _Refusal("0011", "the body must be a JSON object")
    return parsed


def create_app(fake: FakePayvalida) -> Starlette:
    """The ASGI app serving ``fake``: the orders and plans API, the checkout page, controls
    under ``/_fake``, and Payvalida's envelope (``0011``) for any other path."""
    orders = wire.ORDERS_PATH
    api = [
        ("orders.create", "POST", orders, fake._create_order),
        ("orders.update", "PATCH", orders, fake._update_order),
        ("orders.get", "GET", orders + "/{order}", fake._get_order),
        ("orders.delete", "DELETE", orders + "/{order}", fake._delete_order),
        ("plans.create", "POST", wire.PLANS_PATH, fake._create_plan),
    ]
    routes = [
        Route(path, fake._endpoint(name, handler), methods=[method])
        for name, method, path, handler in api
    ]
    routes.append(Route("/checkout", fake._checkout_page, methods=["GET", "POST"]))
    routes.append(
        Route("/_fake/{action:path}", fake._control_endpoint, methods=["GET", "POST", "DELETE"])
    )

    async def not_found(request: Request, exc: Exception) -> Response:
        return _json(404, _envelope("0011", "Error in the content: no such endpoint", {}))

    return Starlette(routes=routes, exception_handlers={404: not_found, 405: not_found})


def fake_app(environ: Mapping[str, str] | None = None) -> Starlette:
    """A default fake for ``billing fake-gateways serve``: the merchant and secret from
    ``BILLING_PAYVALIDA_FAKE_MERCHANT`` and ``BILLING_PAYVALIDA_FAKE_FIXED_HASH``, else the
    seeds' examples (:data:`DEFAULT_MERCHANT`, :data:`DEFAULT_FIXED_HASH`); notifications go to
    ``BILLING_PAYVALIDA_FAKE_NOTIFY_URL`` when set (or ``POST /_fake/notify_url``), checksummed
    with ``BILLING_PAYVALIDA_FAKE_NOTIFICATION_HASH`` (the fixed hash by default)."""
    env = os.environ if environ is None else environ
    fake = FakePayvalida(
        env.get("BILLING_PAYVALIDA_FAKE_MERCHANT") or DEFAULT_MERCHANT,
        env.get("BILLING_PAYVALIDA_FAKE_FIXED_HASH") or DEFAULT_FIXED_HASH,
        notification_hash=env.get("BILLING_PAYVALIDA_FAKE_NOTIFICATION_HASH") or None,
        notify_url=env.get("BILLING_PAYVALIDA_FAKE_NOTIFY_URL") or None,
    )
    return fake.app
