"""FakeKhipu: a stateful Khipu (REST API 2.0) for tests and demos, as a starlette ASGI app.

It implements the endpoints of the seed document (``shared/reference/khipu.md`` §3-§4):
``GET /banks``, ``POST /payments``, ``GET /payments?notification_token=``, ``GET /payments/{id}``,
``DELETE /payments/{id}``, ``POST /payments/{id}/confirm``, ``POST /payments/{id}/refunds``,
``POST /receivers`` and ``GET /merchants/{id}/paymentMethods``, served both at the root and under
``/api/2.0`` (Khipu's base path), each with and without a trailing slash (``pykhipu`` adds one).
Every request must carry ``Authorization: <receiver_id>:<signature>``, verified over the URL the
client actually called (scheme, host, port and path, see :mod:`adapters.khipu._wire`); bodies are
``application/x-www-form-urlencoded``; answers are JSON with only the documented statuses: 200,
400 (``ValidationError``), 403 (``AuthorizationError``) and 503 (``ServiceError``). Every answer
carries a ``Date`` header from the fake's clock (the adapter judges link expiry by it).

The customer's side (paying a link, late or on time, refusing it, letting it expire), faults
(:class:`billing.testing.asgi.Faults`), notification faults (:class:`WebhookFaults`) and the books
are reachable from Python and from control endpoints under ``/_fake`` (JSON), so a test or a demo
in another process can act as the customer.

Choices where the document is silent (each also in ``docs/adapters/khipu.md``):

* ids: ``payment_id`` is 12 lowercase alphanumerics, ``notification_token`` 64 alphanumerics;
* ``expires_date`` defaults to one day after creation; one already past is accepted (the link
  is born expired);
* a ``pending`` payment past ``expires_date`` can no longer be paid, except "late" (a transfer
  the bank confirms after the expiry: ``out_of_date_conciliation: true``); it stays ``pending``;
* an unknown or deleted payment (GET, DELETE, confirm, refunds) and an unknown notification token
  answer 400 with ``errors[{field, message}]`` (there is no documented 404);
* ``DELETE`` of a payment that is no longer ``pending`` (``verifying``, ``done``) answers 400
  with an error on ``id`` ("Solo se pueden borrar pagos pendientes de pagar"); a ``pending`` one,
  even past its ``expires_date``, is deleted, and nobody can pay it any more;
* refunds: only ``done`` payments not yet settled (``confirm``ed), partial ones allowed while
  their sum stays within the amount; a whole refund makes ``status_detail`` ``reversed``;
* a notification is a form POST ``notification_token=…&api_version=1.3`` to the payment's
  ``notify_url`` (else the receiver's), sent when the payment becomes ``done``, before the answer
  to the request that caused it (tests stay deterministic).
"""

from __future__ import annotations

import asyncio
import os
import random
import string
import threading
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from email.utils import format_datetime
from typing import Any
from urllib.parse import parse_qsl, urlencode

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from adapters.khipu import _wire as wire
from billing.testing.asgi import Faults, dropped

__all__ = [
    "DEFAULT_RECEIVER_ID",
    "DEFAULT_SECRET",
    "PAYER_BEHAVIORS",
    "ApiFaults",
    "Delivery",
    "FakeKhipu",
    "WebhookFaults",
    "create_app",
    "fake_app",
]

DEFAULT_RECEIVER_ID = "100001"
"""The fake's receiver id unless configured (``BILLING_KHIPU_FAKE_RECEIVER_ID``)."""
DEFAULT_SECRET = "fake-khipu-secret-0123456789abcdef"
"""The fake's secret unless configured (``BILLING_KHIPU_FAKE_SECRET``); a test credential."""

PAYER_BEHAVIORS = frozenset({"pay", "pay_late", "ignore", "reject", "abuse", "lose"})
"""What a scripted payer (by ``payer_email``) does with each new link: ``pay`` it at once,
start the transfer at once and have it confirmed ``pay_late`` after expiry, ``ignore`` it (it
expires), ``reject`` it (``rejected-by-payer``), mark it as ``abuse``, or ``lose``: the
creation's answer is lost, then the payer pays it (they got the link by other means)."""

_ALNUM = string.ascii_lowercase + string.digits
_TOKEN_CHARS = string.ascii_letters + string.digits
_DEFAULT_LIFETIME = timedelta(days=1)
_PAYMENT_URL = "https://khipu.com/payment/info/"
_MAX_BODY = 1_000_000
_AMOUNT = r"^\d+(\.\d{1,4})?$"
_DECIMALS = {"CLP": 0, "USD": 2, "ARS": 2, "EUR": 2}

BANKS: tuple[dict[str, Any], ...] = (
    {
        "bank_id": "Bawdf",
        "name": "DemoBank",
        "message": "Banco de pruebas",
        "min_amount": 200,
        "type": "Persona",
        "parent": "",
    },
    {
        "bank_id": "bkEye",
        "name": "Banco Estado",
        "message": "",
        "min_amount": 200,
        "type": "Persona",
        "parent": "",
    },
    {
        "bank_id": "bkEyE",
        "name": "Banco Estado Empresas",
        "message": "",
        "min_amount": 200,
        "type": "Empresa",
        "parent": "bkEye",
    },
)
METHODS: tuple[dict[str, str], ...] = (
    {
        "id": "simplified_transfer",
        "name": "Transferencia simplificada",
        "logo_url": "https://khipu.com/images/simplified.png",
    },
    {
        "id": "regular_transfer",
        "name": "Transferencia normal",
        "logo_url": "https://khipu.com/images/regular.png",
    },
)

Deliver = Callable[[str, Mapping[str, str], bytes], Awaitable[int]]
"""Sends one notification (URL, headers, body) and returns the HTTP status (0: no answer)."""


async def _post(url: str, headers: Mapping[str, str], body: bytes) -> int:
    """The default delivery: a real HTTP POST (10 s timeout)."""
    async with httpx.AsyncClient(timeout=10.0) as client:
        response = await client.post(url, content=body, headers=dict(headers))
        return response.status_code


class _ApiError(Exception):
    """A documented error answer: 400 (with field errors), 403 or 503."""

    def __init__(self, status: int, message: str, errors: list[tuple[str, str]] | None = None):
        self.status = status
        self.message = message
        self.errors = errors or []
        super().__init__(message)

    def json(self) -> dict[str, Any]:
        body: dict[str, Any] = {"status": self.status, "message": self.message}
        if self.status == 400:
            body["errors"] = [{"field": name, "message": text} for name, text in self.errors]
        return body


def _invalid(name: str, text: str) -> _ApiError:
    return _ApiError(400, "Error de validación", [(name, text)])


@dataclass
class ApiFaults:
    """Faults of this fake's own operations (:meth:`FakeKhipu.inject`, ``/_fake/faults``)."""

    delete_timeouts: int = 0
    """The next N ``DELETE /payments/{id}`` that delete a payment lose their answer."""


@dataclass
class WebhookFaults:
    """Faults in notification delivery (:meth:`FakeKhipu.inject` or ``/_fake/webhooks/faults``)."""

    duplicates: int = 0
    """The next N notifications are delivered twice."""
    hold: bool = False
    """Notifications wait in :attr:`FakeKhipu.held` until released (late, or out of order when
    released in reverse)."""


@dataclass
class Delivery:
    """One notification POST (or one waiting to be made)."""

    payment_id: str
    url: str
    headers: dict[str, str]
    body: bytes
    status: int | None = None
    """The receiver's HTTP status; 0 when it did not answer; ``None`` while held."""


@dataclass
class _Payment:
    id: str
    token: str
    seq: int
    created: datetime
    expires: datetime
    fields: dict[str, str]
    amount: Decimal
    status: str = "pending"
    detail: str = "pending"
    conciliated: datetime | None = None
    late: bool = False
    deleted: bool = False
    confirmed: bool = False
    refunded: Decimal = Decimal(0)
    method: str | None = None

    def json(self, receiver_id: str) -> dict[str, Any]:
        get = self.fields.get
        url = _PAYMENT_URL + self.id
        paid = self.status == "done"
        return {
            "payment_id": self.id,
            "payment_url": url,
            "simplified_transfer_url": url + "/simplified",
            "transfer_url": url + "/transfer",
            "webpay_url": url + "/webpay",
            "app_url": f"khipu:///pos/{self.id}",
            "ready_for_terminal": False,
            "notification_token": self.token,
            "receiver_id": int(receiver_id) if receiver_id.isdigit() else receiver_id,
            "conciliation_date": None
            if self.conciliated is None
            else wire.format_date(self.conciliated),
            "subject": get("subject"),
            "amount": self.amount,
            "currency": get("currency"),
            "status": self.status,
            "status_detail": self.detail,
            "body": get("body", ""),
            "picture_url": get("picture_url", ""),
            "receipt_url": url + "/receipt" if paid else "",
            "return_url": get("return_url", ""),
            "cancel_url": get("cancel_url", ""),
            "notify_url": get("notify_url", ""),
            "notify_api_version": get("notify_api_version", wire.NOTIFY_API_VERSION),
            "expires_date": wire.format_date(self.expires),
            "attachment_urls": [],
            "bank": "DemoBank" if paid else "",
            "bank_id": "Bawdf" if paid else get("bank_id", ""),
            "payer_name": get("payer_name", "Pagador de Prueba" if paid else ""),
            "payer_email": get("payer_email", ""),
            "personal_identifier": "11.111.111-1" if paid else "",
            "bank_account_number": "001122334455" if paid else "",
            "out_of_date_conciliation": self.late,
            "transaction_id": get("transaction_id", ""),
            "custom": get("custom", ""),
            "responsible_user_email": get("responsible_user_email", ""),
            "send_reminders": get("send_reminders") == "true",
            "send_email": get("send_email") == "true",
            "payment_method": self.method or "",
            "funds_source": "",
        }


@dataclass
class _Reply:
    status: int
    payload: Any
    notify: list[str] = field(default_factory=list)
    committed: bool = False


_LOSABLE = {
    "payments.create": "charge_timeouts",
    "payments.refunds": "refund_timeouts",
    "payments.delete": "delete_timeouts",
}


class FakeKhipu:
    """An in-memory Khipu collection account (receiver) behind an ASGI app (:attr:`app`).

    Thread-safe: state, faults and scripts change only under one lock. Its repr shows no secret.
    ``clock`` is the fake's time (a callable returning an aware datetime; the wall clock by
    default); :meth:`advance` moves the fake's time forward from it.
    """

    def __init__(
        self,
        receiver_id: str = DEFAULT_RECEIVER_ID,
        secret: str = DEFAULT_SECRET,
        *,
        clock: Callable[[], datetime] | None = None,
        faults: Faults | None = None,
        deliver: Deliver | None = None,
        notify_url: str | None = None,
        seed: int | None = None,
    ) -> None:
        self.receiver_id = receiver_id
        self._secret = secret
        self._clock = clock or (lambda: datetime.now(UTC))
        self._offset = timedelta(0)
        self.faults = faults or Faults()
        self.api_faults = ApiFaults()
        self.webhook_faults = WebhookFaults()
        self._deliver = deliver or _post
        self.notify_url = notify_url
        """The receiver's default ``notify_url`` (``POST /receivers`` sets one per receiver)."""
        self._random = random.Random(seed)
        self._lock = threading.RLock()
        self._seq = 0
        self._payments: dict[str, _Payment] = {}
        self._tokens: dict[str, str] = {}
        self._payers: dict[str, str] = {}
        self._pending: list[str] = []
        self.refunds: list[dict[str, Any]] = []
        """Every refund taken: ``{payment_id, amount, at}`` (amount as a string)."""
        self.deliveries: list[Delivery] = []
        """Every notification POST made, in order (a duplicate appears twice)."""
        self.held: list[Delivery] = []
        """Notifications waiting for :meth:`release` (``WebhookFaults.hold``)."""
        self.received: dict[str, int] = {}
        self.app = create_app(self)
        """The ASGI app."""

    def __repr__(self) -> str:
        with self._lock:
            return f"FakeKhipu(receiver_id={self.receiver_id!r}, payments={len(self._payments)})"

    # -- time ------------------------------------------------------------------------------------

    def now(self) -> datetime:
        """The fake's current time."""
        with self._lock:
            return self._clock() + self._offset

    def advance(self, delta: timedelta) -> None:
        """Move the fake's time forward (links may expire, late payers complete)."""
        if delta < timedelta(0):
            raise ValueError("the fake's time only moves forward")
        with self._lock:
            self._offset += delta
            self._tick()

    # -- Python controls -------------------------------------------------------------------------

    def inject(self, **faults: int | float | bool) -> None:
        """Set faults by name: a field of :class:`Faults`, :class:`ApiFaults` or
        :class:`WebhookFaults`."""
        names = Faults.settable()
        own = {item.name for item in fields(ApiFaults)}
        hooks = {item.name for item in fields(WebhookFaults)}
        with self._lock:
            for name, value in faults.items():
                if name in names:
                    setattr(self.faults, name, value)
                elif name in own:
                    setattr(self.api_faults, name, value)
                elif name in hooks:
                    setattr(self.webhook_faults, name, value)
                else:
                    raise ValueError(f"no fault named {name!r}")

    def script_payer(self, payer_email: str, behavior: str) -> None:
        """From now on, the payer with this e-mail does ``behavior`` (:data:`PAYER_BEHAVIORS`)
        with each new payment link."""
        if behavior not in PAYER_BEHAVIORS:
            raise ValueError(f"no payer behavior {behavior!r} ({sorted(PAYER_BEHAVIORS)})")
        with self._lock:
            self._payers[payer_email.lower()] = behavior

    def payments(self, transaction_id: str | None = None) -> list[dict[str, Any]]:
        """The books: every payment (oldest first) as the API shows it, plus ``deleted``,
        ``confirmed`` and ``refunded``; only those with ``transaction_id`` when given."""
        with self._lock:
            self._tick()
            return [
                {
                    **payment.json(self.receiver_id),
                    "deleted": payment.deleted,
                    "confirmed": payment.confirmed,
                    "refunded": str(payment.refunded),
                }
                for payment in sorted(self._payments.values(), key=lambda item: item.seq)
                if transaction_id is None or payment.fields.get("transaction_id") == transaction_id
            ]

    def payment(self, payment_id: str) -> dict[str, Any]:
        """One payment as the API shows it (a copy)."""
        with self._lock:
            self._tick()
            return self._payments[payment_id].json(self.receiver_id)

    def paid(self, payer_email: str | None = None) -> int:
        """How many payments were paid (``done``), of one payer or all."""
        with self._lock:
            self._tick()
            return sum(
                1
                for payment in self._payments.values()
                if payment.status == "done"
                and (payer_email is None or payment.fields.get("payer_email") == payer_email)
            )

    def pay(self, payment_id: str, *, late: bool = False) -> None:
        """Act as the payer: pay this link now. ``late``: even though it expired (the transfer
        was confirmed after the expiry). Notifies at once; raises ``ValueError`` if it cannot
        be paid."""
        with self._lock:
            self._pay(self._live(payment_id), late=late)
        self._flush_sync()

    def verify(self, payment_id: str) -> None:
        """Act as the payer: start the transfer (``verifying``) without finishing it."""
        with self._lock:
            payment = self._live(payment_id)
            if payment.status != "pending" or self._expired(payment):
                raise ValueError(f"payment {payment_id} is not an open link")
            payment.status, payment.method = "verifying", "simplified_transfer"

    def refuse(self, payment_id: str, *, abuse: bool = False) -> None:
        """Act as the payer: declare they will not pay (``marked-as-abuse`` with ``abuse``)."""
        with self._lock:
            payment = self._live(payment_id)
            if payment.status != "pending":
                raise ValueError(f"payment {payment_id} is not pending")
            payment.detail = "marked-as-abuse" if abuse else "rejected-by-payer"

    def expire(self, payment_id: str) -> None:
        """Let this link expire: the fake's time moves just past its ``expires_date``."""
        with self._lock:
            payment = self._payments[payment_id]
            gap = payment.expires - self.now() + timedelta(seconds=1)
            if gap > timedelta(0):
                self.advance(gap)

    def notification(
        self, payment_id: str, *, forged: bool = False
    ) -> tuple[dict[str, str], bytes]:
        """The headers and form body this fake POSTs about a payment (a forged one: the same
        shape with a token Khipu never issued)."""
        with self._lock:
            token = self._payments[payment_id].token
            if forged:
                token = "".join(self._random.choice(_TOKEN_CHARS) for _ in range(64))
        return _notification(token)

    def release_webhooks(self, *, reverse: bool = False) -> list[Delivery]:
        """Deliver the held notifications now (newest first when ``reverse``). Call it from a
        thread without a running event loop; in one, await :meth:`release`."""
        return asyncio.run(self.release(reverse=reverse))

    async def release(self, *, reverse: bool = False) -> list[Delivery]:
        with self._lock:
            waiting, self.held = self.held, []
        if reverse:
            waiting.reverse()
        for delivery in waiting:
            await self._send(delivery)
        return waiting

    # -- state changes (under the lock) ----------------------------------------------------------

    def _live(self, payment_id: str) -> _Payment:
        payment = self._payments.get(payment_id)
        if payment is None or payment.deleted:
            raise ValueError(f"no payment {payment_id}")
        self._tick()
        return payment

    def _expired(self, payment: _Payment) -> bool:
        return self.now() >= payment.expires

    def _pay(self, payment: _Payment, *, late: bool) -> None:
        if payment.status == "done":
            raise ValueError(f"payment {payment.id} is already paid")
        if payment.detail in ("rejected-by-payer", "marked-as-abuse"):
            raise ValueError(f"payment {payment.id} was refused by the payer")
        expired = self._expired(payment)
        if expired and not late and payment.status != "verifying":
            raise ValueError(f"payment {payment.id} expired unpaid")
        payment.status, payment.detail = "done", "normal"
        payment.method = payment.method or "simplified_transfer"
        payment.conciliated = self.now()
        payment.late = expired
        self._pending.append(payment.id)

    def _tick(self) -> None:
        """Let time act: scripted late payers' transfers are confirmed once the link expired."""
        for payment in self._payments.values():
            script = self._payers.get(payment.fields.get("payer_email", "").lower())
            if (
                script == "pay_late"
                and payment.status == "verifying"
                and not payment.deleted
                and self._expired(payment)
            ):
                self._pay(payment, late=True)

    def _next_id(self) -> tuple[str, str, int]:
        self._seq += 1
        payment_id = "".join(self._random.choice(_ALNUM) for _ in range(12))
        token = "".join(self._random.choice(_TOKEN_CHARS) for _ in range(64))
        return payment_id, token, self._seq

    # -- notifications ---------------------------------------------------------------------------

    def _deliveries(self) -> list[Delivery]:
        """The notifications due (taken from the queue), held or ready (call under the lock)."""
        ready: list[Delivery] = []
        due, self._pending = self._pending, []
        for payment_id in due:
            payment = self._payments[payment_id]
            url = payment.fields.get("notify_url") or self.notify_url
            if not url:
                continue
            headers, body = _notification(payment.token)
            copies = 1
            if self.webhook_faults.duplicates > 0:
                self.webhook_faults.duplicates -= 1
                copies = 2
            for _ in range(copies):
                delivery = Delivery(payment_id, url, dict(headers), body)
                (self.held if self.webhook_faults.hold else ready).append(delivery)
        return ready

    async def _notify(self) -> None:
        with self._lock:
            ready = self._deliveries()
        for delivery in ready:
            await self._send(delivery)

    def _flush_sync(self) -> None:
        with self._lock:
            ready = self._deliveries()
        if not ready:
            return

        async def send_all() -> None:
            for delivery in ready:
                await self._send(delivery)

        try:
            asyncio.get_running_loop()
        except RuntimeError:
            asyncio.run(send_all())
            return
        # called from a running loop (a Python control inside an async test): deliver later
        with self._lock:
            self.held.extend(ready)

    async def _send(self, delivery: Delivery) -> None:
        try:
            delivery.status = await self._deliver(delivery.url, delivery.headers, delivery.body)
        except (httpx.HTTPError, OSError):
            delivery.status = 0
        with self._lock:
            self.deliveries.append(delivery)

    # -- the HTTP surface ------------------------------------------------------------------------

    def _endpoint(
        self, operation: str, handler: Callable[[_Call], _Reply]
    ) -> Callable[[Request], Awaitable[Response]]:
        async def answer(request: Request) -> Response:
            with self._lock:
                self.received[operation] = self.received.get(operation, 0) + 1
            await self.faults.delay()
            with self._lock:
                early = self.faults.early_answer()
                if early is None and self.faults.take("server_errors"):
                    early = self._json(503, _ApiError(503, "Error de operación").json())
            if early is not None:
                return early
            try:
                call = await _parse(request)
                self._authenticate(request, call)
                with self._lock:
                    self._tick()
                    reply = handler(call)
            except _ApiError as error:
                reply = _Reply(error.status, error.json())
            await self._notify()
            with self._lock:
                fault = _LOSABLE.get(operation)
                lose = reply.committed and fault is not None and self._take(fault)
            if lose:
                return dropped()
            return self._json(reply.status, reply.payload)

        return answer

    def _take(self, fault: str) -> bool:
        """Use one occurrence of a fault of :class:`Faults` or :class:`ApiFaults` (under the
        lock)."""
        if hasattr(self.api_faults, fault):
            left = int(getattr(self.api_faults, fault))
            if left > 0:
                setattr(self.api_faults, fault, left - 1)
            return left > 0
        return self.faults.take(fault)

    def _json(self, status: int, payload: Any) -> Response:
        return Response(
            _dumps(payload),
            status_code=status,
            media_type="application/json",
            headers={"Date": format_datetime(self.now().astimezone(UTC), usegmt=True)},
        )

    def _authenticate(self, request: Request, call: _Call) -> None:
        url = str(request.url.replace(query=""))
        url = url.split("?", 1)[0]
        if not wire.verify(
            request.headers.get("authorization"),
            self.receiver_id,
            self._secret,
            request.method,
            url,
            call.query,
            call.form,
        ):
            raise _ApiError(403, "Error de autorización: firma inválida o cobrador desconocido")

    def _payment(self, call: _Call) -> _Payment:
        payment_id = call.path.get("id", "")
        payment = self._payments.get(payment_id)
        if payment is None or payment.deleted:
            raise _invalid("id", f"No existe un pago con id {payment_id!r}")
        return payment

    def _banks(self, call: _Call) -> _Reply:
        return _Reply(200, {"banks": list(BANKS)})

    def _methods(self, call: _Call) -> _Reply:
        if call.path.get("id") != self.receiver_id:
            raise _invalid("id", "Cuenta de cobro desconocida")
        return _Reply(200, {"paymentMethods": list(METHODS)})

    def _receivers(self, call: _Call) -> _Reply:
        data = call.data
        required = (
            "admin_first_name",
            "admin_last_name",
            "admin_email",
            "country_code",
            "business_identifier",
            "business_category",
            "business_name",
            "business_phone",
            "business_address_line_1",
            "business_address_line_2",
            "business_address_line_3",
            "contact_full_name",
            "contact_job_title",
            "contact_email",
            "contact_phone",
        )
        missing = [(name, "Campo requerido") for name in required if not data.get(name)]
        if missing:
            raise _ApiError(400, "Error de validación", missing)
        receiver = str(self._random.randrange(100000, 999999))
        secret = "".join(self._random.choice(_ALNUM) for _ in range(40))
        return _Reply(200, {"receiver_id": receiver, "secret": secret})

    def _create(self, call: _Call) -> _Reply:
        data = call.data
        errors = [
            (name, "Campo requerido")
            for name in ("subject", "currency", "amount")
            if not data.get(name)
        ]
        currency = data.get("currency", "")
        amount = _amount(data.get("amount", ""), currency, errors)
        if currency and currency not in _DECIMALS:
            errors.append(("currency", f"Moneda no soportada: {currency}"))
        if data.get("send_email") == "true":
            errors += [
                (name, "Requerido cuando send_email es 'true'")
                for name in ("payer_name", "payer_email")
                if not data.get(name)
            ]
        if data.get("contract_url") and not data.get("fixed_payer_personal_identifier"):
            errors.append(("fixed_payer_personal_identifier", "Requerido con contract_url"))
        email = data.get("payer_email")
        if email and not wire.valid_email(email):
            errors.append(("payer_email", "Correo inválido"))
        now = self.now()
        expires = now + _DEFAULT_LIFETIME
        if data.get("expires_date"):
            parsed = wire.parse_date(data["expires_date"])
            if parsed is None:
                errors.append(("expires_date", "Fecha inválida (ISO-8601)"))
            else:  # one already past is accepted: the link is born expired
                expires = parsed
        for name in ("confirm_timeout_date",):
            if data.get(name) and wire.parse_date(data[name]) is None:
                errors.append((name, "Fecha inválida (ISO-8601)"))
        if len(data.get("custom", "")) > 4096:
            errors.append(("custom", "Máximo 4096 caracteres"))
        if errors or amount is None:
            raise _ApiError(400, "Error de validación", errors)
        payment_id, token, seq = self._next_id()
        payment = _Payment(payment_id, token, seq, now, expires, dict(data), amount)
        self._payments[payment_id] = payment
        self._tokens[token] = payment_id
        script = self._payers.get((email or "").lower())
        if script in ("pay", "lose"):
            self._pay(payment, late=False)
        elif script == "pay_late":
            payment.status, payment.method = "verifying", "simplified_transfer"
        elif script in ("reject", "abuse"):
            payment.detail = "marked-as-abuse" if script == "abuse" else "rejected-by-payer"
        body = payment.json(self.receiver_id)
        shown = (
            "payment_id",
            "payment_url",
            "simplified_transfer_url",
            "transfer_url",
            "webpay_url",
            "app_url",
            "ready_for_terminal",
        )
        reply = _Reply(200, {name: body[name] for name in shown}, committed=True)
        if script == "lose":
            self.faults.charge_timeouts += 1
        return reply

    def _get(self, call: _Call) -> _Reply:
        return _Reply(200, self._payment(call).json(self.receiver_id))

    def _by_token(self, call: _Call) -> _Reply:
        token = dict(call.query).get("notification_token") or call.data.get("notification_token")
        if not token:
            raise _invalid("notification_token", "Campo requerido")
        payment_id = self._tokens.get(token)
        if payment_id is None:
            raise _invalid("notification_token", "Token de notificación desconocido")
        return _Reply(200, self._payments[payment_id].json(self.receiver_id))

    def _delete(self, call: _Call) -> _Reply:
        payment = self._payment(call)
        if payment.status != "pending":
            raise _invalid("id", "Solo se pueden borrar pagos pendientes de pagar")
        payment.deleted = True
        return _Reply(200, {"message": "Pago borrado"}, committed=True)

    def _confirm(self, call: _Call) -> _Reply:
        payment = self._payment(call)
        if payment.status != "done":
            raise _invalid("id", "Solo se pueden confirmar pagos pagados")
        payment.confirmed = True
        return _Reply(200, {"message": "Pago confirmado; será rendido al día siguiente"})

    def _refund(self, call: _Call) -> _Reply:
        payment = self._payment(call)
        if payment.status != "done":
            raise _invalid("id", "Solo se pueden reembolsar pagos pagados")
        if payment.confirmed:
            raise _invalid("id", "El pago ya fue rendido; no se puede reembolsar")
        left = payment.amount - payment.refunded
        errors: list[tuple[str, str]] = []
        currency = payment.fields.get("currency", "CLP")
        amount = (
            left if not call.data.get("amount") else _amount(call.data["amount"], currency, errors)
        )
        if amount is None or errors:
            raise _ApiError(400, "Error de validación", errors)
        if amount <= 0 or amount > left:
            raise _invalid("amount", f"El monto a devolver debe estar entre 0 y {left}")
        payment.refunded += amount
        if payment.refunded == payment.amount:
            payment.detail = "reversed"
        self.refunds.append(
            {"payment_id": payment.id, "amount": str(amount), "at": wire.format_date(self.now())}
        )
        return _Reply(200, {"message": "Reembolso realizado"}, committed=True)

    # -- control endpoints -----------------------------------------------------------------------

    async def _control_endpoint(self, request: Request) -> Response:
        """``/_fake/...``: act as the payer, move time, faults, notifications, the books."""
        action = request.path_params["action"]
        content = await request.body()
        try:
            data = _loads(content) if content.strip() else {}
            if not isinstance(data, Mapping):
                raise ValueError("the body must be a JSON object")
            data = {**dict(request.query_params), **data}
            return await self._control(request.method, action, data)
        except (ValueError, TypeError, KeyError) as exc:
            return JSONResponse({"error": f"{type(exc).__name__}: {exc}"}, status_code=400)

    def _target(self, data: Mapping[str, Any]) -> str:
        """The payment a control names: ``payment_id``, or the newest with ``transaction_id``."""
        if data.get("payment_id"):
            return str(data["payment_id"])
        found = self.payments(str(data["transaction_id"]))
        if not found:
            raise KeyError(f"no payment with transaction_id {data['transaction_id']!r}")
        return str(found[-1]["payment_id"])

    async def _control(self, method: str, action: str, data: Mapping[str, Any]) -> Response:
        match method, action:
            case "POST", "pay":
                with self._lock:
                    self._pay(self._live(self._target(data)), late=bool(data.get("late", False)))
                await self._notify()
                return JSONResponse({"paid": True})
            case "POST", "verify":
                self.verify(self._target(data))
                return JSONResponse({"verifying": True})
            case "POST", "refuse":
                self.refuse(self._target(data), abuse=bool(data.get("abuse", False)))
                return JSONResponse({"refused": True})
            case "POST", "expire":
                self.expire(self._target(data))
                await self._notify()
                return JSONResponse({"now": wire.format_date(self.now())})
            case "POST", "clock":
                self.advance(timedelta(seconds=float(data.get("advance_seconds", 0))))
                await self._notify()
                return JSONResponse({"now": wire.format_date(self.now())})
            case "GET", "clock":
                return JSONResponse({"now": wire.format_date(self.now())})
            case "POST", "payers":
                self.script_payer(str(data["payer_email"]), str(data["behavior"]))
                return JSONResponse({"scripted": True})
            case "GET", "payments":
                tid = data.get("transaction_id")
                return Response(
                    _dumps(self.payments(None if tid is None else str(tid))),
                    media_type="application/json",
                )
            case "GET", "refunds":
                with self._lock:
                    return JSONResponse(list(self.refunds))
            case "GET", "notification":
                headers, body = self.notification(
                    self._target(data), forged=str(data.get("forged", "")).lower() in ("1", "true")
                )
                return JSONResponse({"headers": headers, "body": body.decode()})
            case "POST", "faults" | "webhooks/faults":
                self.inject(**{str(key): value for key, value in data.items()})
                return JSONResponse(self._controls())
            case "GET", "faults":
                return JSONResponse(self._controls())
            case "POST", "webhooks/release":
                released = await self.release(reverse=bool(data.get("reverse", False)))
                return JSONResponse({"released": len(released)})
            case "GET", "webhooks/deliveries":
                with self._lock:
                    shown = [
                        {
                            "payment_id": item.payment_id,
                            "url": item.url,
                            "body": item.body.decode(),
                            "status": item.status,
                        }
                        for item in self.deliveries
                    ]
                return JSONResponse(shown)
            case "GET", "received":
                with self._lock:
                    return JSONResponse(dict(self.received))
        return JSONResponse({"error": f"no control {method} /_fake/{action}"}, status_code=400)

    def _controls(self) -> dict[str, Any]:
        with self._lock:
            faults = {item.name: getattr(self.faults, item.name) for item in fields(Faults)}
            own = {item.name: getattr(self.api_faults, item.name) for item in fields(ApiFaults)}
            hooks = {
                item.name: getattr(self.webhook_faults, item.name) for item in fields(WebhookFaults)
            }
            return {**faults, **own, **hooks, "held": len(self.held)}


@dataclass(frozen=True, slots=True)
class _Call:
    path: Mapping[str, str]
    query: list[tuple[str, str]]
    form: list[tuple[str, str]]

    @property
    def data(self) -> dict[str, str]:
        return dict(self.form)


async def _parse(request: Request) -> _Call:
    """The path, query and form parameters of a request (400 for a body that is no form)."""
    content = await request.body()
    if len(content) > _MAX_BODY:
        raise _ApiError(400, "Petición demasiado grande")
    form: list[tuple[str, str]] = []
    if content.strip():
        kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if kind not in ("", "application/x-www-form-urlencoded"):
            raise _ApiError(400, "Content-Type debe ser application/x-www-form-urlencoded")
        try:
            form = parse_qsl(content.decode("utf-8"), keep_blank_values=True, strict_parsing=True)
        except (UnicodeDecodeError, ValueError) as exc:
            raise _ApiError(400, "El cuerpo no es un formulario válido") from exc
    query = list(request.query_params.multi_items())
    return _Call(dict(request.path_params), query, form)


def _amount(text: str, currency: str, errors: list[tuple[str, str]]) -> Decimal | None:
    import re

    if not re.match(_AMOUNT, text or ""):
        errors.append(("amount", "Monto inválido: sin separador de miles, '.' decimal"))
        return None
    try:
        value = Decimal(text)
    except InvalidOperation:
        errors.append(("amount", "Monto inválido"))
        return None
    places = _DECIMALS.get(currency, 4)
    if -value.as_tuple().exponent > places:  # type: ignore[operator]
        errors.append(("amount", f"Máximo {places} decimales para {currency}"))
        return None
    if value <= 0:
        errors.append(("amount", "El monto debe ser positivo"))
        return None
    return value


def _notification(token: str) -> tuple[dict[str, str], bytes]:
    body = urlencode({"notification_token": token, "api_version": wire.NOTIFY_API_VERSION})
    return {"content-type": "application/x-www-form-urlencoded"}, body.encode()


def _plain(value: Any) -> Any:
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    raise TypeError(f"cannot encode {type(value).__name__}")


def _dumps(payload: Any) -> bytes:
    import json

    return json.dumps(payload, default=_plain, ensure_ascii=False).encode()


def _loads(content: bytes) -> Any:
    import json

    return json.loads(content, parse_float=Decimal)


def create_app(fake: FakeKhipu) -> Starlette:
    """The ASGI app serving ``fake``: the API at the root and under ``/api/2.0``, controls under
    ``/_fake``, and a 400 ``ValidationError`` for any other path or method."""
    api: list[tuple[str, str, str, Callable[[_Call], _Reply]]] = [
        ("banks.list", "GET", "/banks", fake._banks),
        ("payments.by_token", "GET", "/payments", fake._by_token),
        ("payments.create", "POST", "/payments", fake._create),
        ("payments.get", "GET", "/payments/{id}", fake._get),
        ("payments.delete", "DELETE", "/payments/{id}", fake._delete),
        ("payments.confirm", "POST", "/payments/{id}/confirm", fake._confirm),
        ("payments.refunds", "POST", "/payments/{id}/refunds", fake._refund),
        ("receivers.create", "POST", "/receivers", fake._receivers),
        ("merchants.methods", "GET", "/merchants/{id}/paymentMethods", fake._methods),
    ]
    routes = [
        Route("/_fake/{action:path}", fake._control_endpoint, methods=["GET", "POST", "DELETE"])
    ]
    for prefix in ("", "/api/2.0"):
        for name, method, path, handler in api:
            endpoint = fake._endpoint(name, handler)
            for variant in (path, path + "/"):
                routes.append(Route(prefix + variant, endpoint, methods=[method]))

    async def not_found(request: Request, exc: Exception) -> Response:
        return fake._json(400, _invalid("path", "Recurso desconocido").json())

    app = Starlette(routes=routes, exception_handlers={404: not_found, 405: not_found})
    app.router.redirect_slashes = False
    return app


def fake_app(environ: Mapping[str, str] | None = None) -> Starlette:
    """A default fake for ``billing fake-gateways serve``: credentials from
    ``BILLING_KHIPU_FAKE_RECEIVER_ID`` and ``BILLING_KHIPU_FAKE_SECRET``, else
    :data:`DEFAULT_RECEIVER_ID` and :data:`DEFAULT_SECRET`."""
    env = os.environ if environ is None else environ
    fake = FakeKhipu(
        env.get("BILLING_KHIPU_FAKE_RECEIVER_ID") or DEFAULT_RECEIVER_ID,
        env.get("BILLING_KHIPU_FAKE_SECRET") or DEFAULT_SECRET,
    )
    return fake.app
