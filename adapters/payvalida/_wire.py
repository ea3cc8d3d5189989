"""Payvalida's wire format: checksums, bodies, envelopes, order states and notifications.

Pure functions, shared by :mod:`adapters.payvalida.gateway` and the fake server. Everything here
follows ``shared/seeds/003`` (``PATCH /api/v3/porders``), ``shared/seeds/004``
(``POST /v4/subscriptions/plans``) and ``shared/reference/payvalida.md``; where the seeds are
silent, the rule chosen is a field of :class:`ChecksumRules` or a constant with a comment, and
``docs/adapters/payvalida.md`` lists every such assumption.

The checksums (reference §3) are a plain SHA-512 over the UTF-8 bytes of the fields concatenated
with no separator, each as the very string that is sent, with the merchant's ``FIXED_HASH``
appended last (not an HMAC); the output is 128 hex digits:

* an order (create and update): ``email + country + order + money + amount + FIXED_HASH``;
* a plan: ``merchant + amount + interval + interval_count + FIXED_HASH`` (not the table order;
  the seed's own example leaves ``interval_count`` out, see :class:`ChecksumRules`);
* a query or a delete of one order: ``order + merchant + FIXED_HASH`` (Payvalida's "Consultar"
  and "Eliminar" pages, outside the seeds; the query example's ``7CA70805...`` is exactly this
  over ``9022932``, ``kuanto`` and seed 003's ``fixedHash``, in upper case);
* a notification's ``pv_checksum``: ``po_id + status + FIXED_HASH_NOTIFICACION`` (Payvalida's
  notification page, outside the seeds: SHA-256 there, SHA-512 in one integration, so the
  algorithm is :attr:`ChecksumRules.notification_algorithm`).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import string
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal, InvalidOperation
from typing import Any, Literal
from urllib.parse import parse_qsl

from billing.domain.money import Money
from billing.domain.payments import DeclineKind, ErrorCode, PaymentResult, PaymentStatus
from billing.ports import NotificationFacts

__all__ = [
    "BOGOTA",
    "CODES",
    "COLOMBIA",
    "CURRENCIES",
    "PRODUCTION_URL",
    "SANDBOX_URL",
    "ChecksumRules",
    "Envelope",
    "NotANotification",
    "checksums_equal",
    "lookup_checksum",
    "notification_checksum",
    "order_checksum",
    "plan_checksum",
]

SANDBOX_URL = "https://api-test.payvalida.com"
"""The sandbox host of every example in the seeds."""
PRODUCTION_URL = "https://api.payvalida.com"
"""Production (seed 004's "Producción" line; the orders pages outside the seeds agree)."""
ORDERS_PATH = "/api/v3/porders"
PLANS_PATH = "/v4/subscriptions/plans"

COLOMBIA = 343
"""``country`` of every example (gateway-libraries.md §4.4: 343 is Colombia)."""
CURRENCIES = frozenset({"COP"})
"""What the adapter charges in. ``money`` is ``"COP"`` in every example; USD orders exist at
Payvalida but the seeds never show one, so the adapter does not offer them."""

BOGOTA = timezone(timedelta(hours=-5), "COT")
"""Colombia's time (no daylight saving): an ``expiration`` date is a day in Bogotá
(an assumption: the seeds name no time zone)."""

MAX_LINK_DAYS = 30
"""``expiration`` "No puede superar 30 días calendario" (seed 003)."""
ORDER_ID_LENGTH = 20
"""``order`` is at most 20 characters (Payvalida's update page, outside the seeds)."""

OK = "0000"

CODES: Mapping[str, str] = {
    "0000": "OK",
    "0009": "Processing error",
    "0011": "Error in the content",
    "0017": "MerchantID is not valid",
    "0018": "Merchant not register on Payvalida",
    "0019": "Not authorized merchant",
    "0020": "Recurring orders are only available for Colombia",
    "0021": "The amount is not valid",
    "0022": "Country code is not valid",
    "0023": "Currency is not valid",
    "0024": "The life time of order must be between 30m and 30d",
    "0025": "The checksum is not valid",
    "0028": "An error ocurred on transaction. Try again in a few minutes",
    "0029": "Description can not be null or empty",
    "0030": "An error occurred when registering the order. Try again in a few minutes",
    "0031": "Expiring date is not valid. Must be DDMMYYYY",
    "0032": "Expiring date must be greather that today",
    "0037": "Not authorized merchant",
    "0041": "Order is not registered or are APPROVED, EXPIRED or CANCELLED",
    "0042": "Already exist orden with same PO_ID",
    "0043": "Already exist orden with same payment reference",
}
"""The ``CODE`` values this adapter and the fake use, with Payvalida's wording (its
"Exceptions" page, outside the seeds, which only show ``0000``)."""

AUTHENTICATION_CODES = frozenset({"0017", "0018", "0019", "0025", "0037"})
"""Refusals of our identity: an unknown merchant, or a checksum made with the wrong secret."""
DUPLICATE_CODES = frozenset({"0042", "0043"})
"""An order with this ``order`` (0042) or this payment ``reference`` (0043) already exists: the
first one is looked up, never a second one made."""
RETRY_CODES = frozenset({"0009", "0028", "0030"})
""""Try again in a few minutes": whether the order was registered is unknown."""
NOT_FOUND = "0041"
"""For a query: no such order (for an update or a delete: none that is still pending)."""

PENDING = "PENDIENTE"
APPROVED = "APROBADA"
EXPIRED = "VENCIDA"
CANCELLED = "CANCELADA"
ANNULLED = "ANULADA"
STATES = (PENDING, APPROVED, EXPIRED, CANCELLED, ANNULLED)
"""An order's ``STATE`` (Payvalida's notification page, outside the seeds)."""

NOTIFIED_APPROVED = "approved"
NOTIFIED_CANCELLED = "cancelled"


# -- checksums -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class ChecksumRules:
    """What the documents leave open about checksums, as settings (defaults: the assumption)."""

    uppercase: bool = False
    """Send hex in upper case. Seed 003's Go code makes lower case while its curl example shows
    upper case; we send lower case (the reference code) and accept either when verifying."""
    plan_interval_count: bool = True
    """Whether a plan checksum includes ``interval_count``. Seed 004's formula and Go code
    include it; its curl example's checksum (``3f3c8267...``) is, we found,
    ``SHA512("kuanto" + "12000" + "month" + FIXED_HASH)`` with seed 003's ``fixedHash``:
    without it. We follow the formula (the example reproduces with ``False``)."""
    notification_algorithm: Literal["sha256", "sha512"] = "sha256"
    """The digest of a notification's ``pv_checksum``: Payvalida's notification page says
    SHA-256; one integration (gateway-libraries.md §4.4) uses SHA-512."""

    def hexdigest(self, algorithm: str, text: str) -> str:
        digest = hashlib.new(algorithm, text.encode("utf-8")).hexdigest()
        return digest.upper() if self.uppercase else digest


DEFAULT_RULES = ChecksumRules()


def sha512_hex(*parts: str, rules: ChecksumRules = DEFAULT_RULES) -> str:
    """SHA-512 over the parts concatenated with no separator (the secret is the last part)."""
    return rules.hexdigest("sha512", "".join(parts))


def order_checksum(
    email: str,
    country: int | str,
    order: str,
    money: str,
    amount: str,
    fixed_hash: str,
    *,
    rules: ChecksumRules = DEFAULT_RULES,
) -> str:
    """``SHA512(email + country + order + money + amount + FIXED_HASH)`` (seed 003): ``country``
    as its decimal digits (a JSON number in the body), ``amount`` exactly as sent."""
    return sha512_hex(email, str(int(country)), order, money, amount, fixed_hash, rules=rules)


def plan_checksum(
    merchant: str,
    amount: str,
    interval: str,
    interval_count: str,
    fixed_hash: str,
    *,
    rules: ChecksumRules = DEFAULT_RULES,
) -> str:
    """``SHA512(merchant + amount + interval + interval_count + FIXED_HASH)`` (seed 004;
    ``interval_count`` left out when :attr:`ChecksumRules.plan_interval_count` is false)."""
    count = interval_count if rules.plan_interval_count else ""
    return sha512_hex(merchant, amount, interval, count, fixed_hash, rules=rules)


def lookup_checksum(
    order: str, merchant: str, fixed_hash: str, *, rules: ChecksumRules = DEFAULT_RULES
) -> str:
    """``SHA512(order + merchant + FIXED_HASH)``: the query and the delete of one order."""
    return sha512_hex(order, merchant, fixed_hash, rules=rules)


def notification_checksum(
    po_id: str, status: str, secret: str, *, rules: ChecksumRules = DEFAULT_RULES
) -> str:
    """``pv_checksum`` = ``HASH(po_id + status + FIXED_HASH_NOTIFICACION)``."""
    return rules.hexdigest(rules.notification_algorithm, po_id + status + secret)


def checksums_equal(given: object, expected: str) -> bool:
    """A constant-time comparison of two hex checksums, either case."""
    if not isinstance(given, str) or not given.isascii():
        return False
    return hmac.compare_digest(given.lower().encode("ascii"), expected.lower().encode("ascii"))


# -- values ----------------------------------------------------------------------------------------

_EMAIL = re.compile(r"^[A-Za-z0-9._%+\-]+@[A-Za-z0-9\-]+(\.[A-Za-z0-9\-]+)*\.[A-Za-z]{2,}$")
_ORDER = re.compile(rf"^[A-Za-z0-9]{{1,{ORDER_ID_LENGTH}}}$")
_AMOUNT = re.compile(r"^\d{1,15}(\.\d{1,2})?$")


def valid_email(value: object) -> bool:
    """An address of the usual ``local@domain.tld`` shape, at most 100 characters."""
    return isinstance(value, str) and len(value) <= 100 and _EMAIL.match(value) is not None


def valid_order(value: object) -> bool:
    """``order``: letters and digits only ("No debe contener guiones bajos ni caracteres
    especiales"), 1 to 20 of them."""
    return isinstance(value, str) and _ORDER.match(value) is not None


def order_id(idempotency_key: str) -> str:
    """The ``order`` for an engine idempotency key: up to 8 of the key's letters and digits,
    then the first 12 hex digits of its SHA-256 (20 at most, deterministic, no ``_`` or other
    special character). The same key always gives the same order."""
    kept = "".join(char for char in idempotency_key if char in _ALNUM)[:8]
    return kept + hashlib.sha256(idempotency_key.encode("utf-8")).hexdigest()[:12]


_ALNUM = frozenset(string.ascii_letters + string.digits)


def amount_text(amount: Money) -> str:
    """``amount`` as sent and hashed: the major units with the currency's decimals (COP has 0
    in this engine: ``"9500"``)."""
    return str(amount.amount)


def parse_amount(value: object) -> Decimal | None:
    """A Payvalida amount (``"9500"``, ``"9,500.00"``, ``"120.00"``) as a Decimal, or ``None``."""
    if isinstance(value, bool) or not isinstance(value, (str, int, Decimal)):
        return None
    text = str(value).strip().replace(",", "")
    if not _AMOUNT.match(text):
        return None
    try:
        return Decimal(text)
    except InvalidOperation:  # pragma: no cover - the pattern already refused it
        return None


def monto(amount: Decimal) -> str:
    """``Monto`` as the response example writes it: ``"9,500.00"``."""
    return f"{amount:,.2f}"


def expiration_text(day: date) -> str:
    """``DD/MM/AAAA``."""
    return day.strftime("%d/%m/%Y")


def parse_expiration(value: object) -> date | None:
    """A ``DD/MM/AAAA`` date, or ``None``."""
    if not isinstance(value, str) or not re.fullmatch(r"\d{2}/\d{2}/\d{4}", value):
        return None
    day, month, year = (int(part) for part in value.split("/"))
    try:
        return date(year, month, day)
    except ValueError:
        return None


def expiration_for(at: datetime, days: int) -> date:
    """The day, in Bogotá, ``days`` after ``at``: a link's last day."""
    return (at.astimezone(BOGOTA) + timedelta(days=days)).date()


def plain_text(value: str, limit: int = 500, default: str = "Cobro") -> str:
    """A description without special characters ("No incluir caracteres especiales"): accents
    folded, anything but letters, digits and spaces dropped."""
    folded = unicodedata.normalize("NFKD", value).encode("ascii", "ignore").decode("ascii")
    kept = "".join(char if char.isalnum() or char == " " else " " for char in folded)
    text = " ".join(kept.split())[:limit].strip()
    return text or default


def checkout_url(value: object) -> str | None:
    """The ``checkout`` link as a URL a browser follows: the example has no scheme
    (``sandbox-checkout.payvalida.com?token=...``), so ``https://`` is added when missing."""
    if not isinstance(value, str) or not value:
        return None
    return value if "://" in value else f"https://{value}"


def split_po_id(po_id: str) -> tuple[str, int | None]:
    """``order_<n>`` (a recurrent order's n-th payment) as ``(order, n)``; a plain order as
    ``(order, None)``. Orders have no ``_``, so the last one is the separator."""
    base, separator, tail = po_id.rpartition("_")
    if separator and base and tail.isdigit():
        return base, int(tail)
    return po_id, None


# -- bodies ----------------------------------------------------------------------------------------


def order_body(
    *,
    merchant: str,
    fixed_hash: str,
    email: str,
    order: str,
    amount: str,
    description: str,
    expiration: date,
    money: str = "COP",
    country: int = COLOMBIA,
    recurrent: bool = False,
    language: str = "es",
    iva: str = "0",
    method: str = "",
    reference: str = "",
    rules: ChecksumRules = DEFAULT_RULES,
) -> dict[str, Any]:
    """A create (``POST``) or update (``PATCH``) body with its checksum. Like the Go sample's
    ``omitempty``, an empty ``method``/``reference`` and a false ``recurrent`` are left out."""
    body: dict[str, Any] = {
        "merchant": merchant,
        "email": email,
        "country": country,
        "order": order,
        "money": money,
        "amount": amount,
        "description": description,
        "language": language,
        "expiration": expiration_text(expiration),
        "iva": iva,
        "checksum": order_checksum(email, country, order, money, amount, fixed_hash, rules=rules),
    }
    if recurrent:
        body["recurrent"] = True
    if method:
        body["method"] = method
    if reference:
        body["reference"] = reference
    return body


def plan_body(
    *,
    merchant: str,
    fixed_hash: str,
    interval: str,
    interval_count: str,
    amount: str,
    description: str = "",
    method: str = "",
    rules: ChecksumRules = DEFAULT_RULES,
) -> dict[str, Any]:
    """A plan registration body (seed 004) with its checksum."""
    body: dict[str, Any] = {
        "merchant": merchant,
        "interval": interval,
        "interval_count": interval_count,
        "amount": amount,
        "description": description,
        "checksum": plan_checksum(
            merchant, amount, interval, interval_count, fixed_hash, rules=rules
        ),
    }
    if method:
        body["method"] = method
    return body


def dumps(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def loads(content: bytes) -> Any | None:
    """JSON with exact decimals, or ``None`` when it is not JSON."""
    try:
        return json.loads(content, parse_float=Decimal)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None


# -- answers ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Envelope:
    """``{"CODE", "DESC", "DATA"}``: every answer's shape (seeds 003 and 004)."""

    code: str
    description: str
    data: Mapping[str, Any]

    @property
    def ok(self) -> bool:
        return self.code == OK


def envelope(body: object) -> Envelope | None:
    """The envelope of a JSON body, or ``None`` when it is not one."""
    if not isinstance(body, Mapping) or not isinstance(body.get("CODE"), str):
        return None
    data = body.get("DATA")
    description = body.get("DESC")
    return Envelope(
        body["CODE"],
        description if isinstance(description, str) else "",
        data if isinstance(data, Mapping) else {},
    )


def order_result(data: Mapping[str, Any], order: str) -> PaymentResult:
    """A query's ``DATA`` as the engine's result for the charge ``order``.

    ``PENDIENTE``: ``requires_action`` with the link; ``APROBADA``: succeeded (a late payment
    too); ``VENCIDA`` and ``CANCELADA``: the payer never paid, a soft decline
    (``payer_abandoned``, code ``expired`` or ``cancelled``); ``ANULADA`` (paid, then annulled by
    a refund): succeeded, the money was taken and any refund is the merchant's business."""
    state = data.get("STATE")
    link = checkout_url(data.get("checkout"))
    if state == PENDING:
        return PaymentResult(status=PaymentStatus.REQUIRES_ACTION, reference=order, action_url=link)
    if state == APPROVED:
        return PaymentResult.succeeded(order)
    if state == ANNULLED:
        return PaymentResult(
            status=PaymentStatus.SUCCEEDED,
            reference=order,
            message="paid, then annulled (refunded) at Payvalida",
        )
    if state in (EXPIRED, CANCELLED):
        code = "expired" if state == EXPIRED else "cancelled"
        return PaymentResult.failed(
            DeclineKind.SOFT,
            code,
            "the link expired unpaid" if state == EXPIRED else "the order was deleted unpaid",
            error=ErrorCode.PAYER_ABANDONED,
            reference=order,
        )
    return PaymentResult(
        status=PaymentStatus.PENDING,
        reference=order,
        message=f"Payvalida order state {str(state)[:40]!r} is not one this adapter knows",
    )


# -- notifications ---------------------------------------------------------------------------------


class NotANotification(ValueError):
    """A body that is not a Payvalida notification, or whose checksum does not verify."""


def notification_fields(body: bytes) -> dict[str, str]:
    """A notification's fields, from a JSON object or a form-encoded body (the transport is
    not in the seeds; Payvalida's page shows the fields only)."""
    parsed = loads(body)
    if isinstance(parsed, Mapping):
        return {str(key): _text(value) for key, value in parsed.items()}
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise NotANotification("the body is neither JSON nor a form") from exc
    pairs = parse_qsl(text, keep_blank_values=True, strict_parsing=False)
    if not pairs:
        raise NotANotification("the body is neither JSON nor a form")
    return dict(pairs)


def _text(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def notification_body(
    *,
    pv_po_id: int,
    po_id: str,
    status: str,
    amount: Decimal,
    currency: str,
    payment: str,
    secret: str,
    rules: ChecksumRules = DEFAULT_RULES,
) -> bytes:
    """A notification as the fake POSTs it (JSON; the fields of Payvalida's page)."""
    return dumps(
        {
            "pv_po_id": pv_po_id,
            "po_id": po_id,
            "status": status,
            "amount": f"{amount:.2f}",
            "iso_currency": currency,
            "pv_payment": payment,
            "pv_checksum": notification_checksum(po_id, status, secret, rules=rules),
        }
    )


def notification_facts(
    body: bytes, secret: str, *, rules: ChecksumRules = DEFAULT_RULES
) -> NotificationFacts:
    """What a notification claims, once its ``pv_checksum`` verified (constant time).

    ``event_id`` is ``<po_id>:<status>``: stable across redeliveries, distinct for each payment
    of a recurrent order (``order_<n>``) and for an approval and a later annulment.
    ``charge_reference`` is the order (the ``_<n>`` suffix removed).

    :raises NotANotification: a body that is not one, or a checksum that does not verify.
    """
    fields = notification_fields(body)
    po_id = fields.get("po_id", "")
    status = fields.get("status", "")
    given = fields.get("pv_checksum", "")
    if not po_id or not status or not given:
        raise NotANotification("po_id, status and pv_checksum are required")
    expected = notification_checksum(po_id, status, secret, rules=rules)
    if not checksums_equal(given, expected):
        raise NotANotification("pv_checksum does not verify")
    order, _ = split_po_id(po_id)
    return NotificationFacts(
        event_id=f"{po_id}:{status}",
        kind=f"order.{status}",
        charge_reference=order,
        idempotency_key=None,
        verified=True,
    )
