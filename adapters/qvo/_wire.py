"""QVO's wire format, as pure functions: request bodies, response parsers, the error mapping.

Nothing here does I/O; :mod:`adapters.qvo.gateway` sends what these functions build and hands
back what QVO answered. The source of truth is QVO's Spanish API document
(``seeds/000_198b4920f8b96452.txt``) and its English digest (``reference/qvo.md``); where they
are silent, the choice is ours and a comment says so (``docs/adapters/qvo.md`` lists them all).

How QVO's answers become the engine's words
===========================================

Transaction ``status`` (a charge's result, from a 2xx body, a lookup or a webhook):

====================  =================  ==========================  =======  ===================
QVO status            PaymentStatus      ErrorCode                   decline  why
====================  =================  ==========================  =======  ===================
``successful``        succeeded          --                          --       paid
``refunded``          succeeded          --                          --       it was paid; the
                                                                              refund is separate
``waiting_response``  pending            --                          --       QVO awaits Webpay
``rejected``          failed             card_declined (refined by   soft     "rechazado por la
                                         the gateway_response                 vía de pago"
                                         message, table below)
``unable_to_charge``  failed             payment_method_unsupported  hard     the route could not
                                                                              charge this card
``response_timeout``  failed             processing_error            soft     QVO gave up after
                                                                              20 minutes
anything else         unknown            processing_error            --       not in the document
====================  =================  ==========================  =======  ===================

A ``rejected`` transaction's ``gateway_response.message`` (and a declined charge's error
message) is searched, case-insensitively, for these words (our assumption: the document only
says error details appear there):

=======================================================  ====================  =======
words (English, Spanish)                                  ErrorCode             decline
=======================================================  ====================  =======
insufficient, fondos insuficientes, saldo insuficiente    insufficient_funds    soft
expired, vencida, expirada                                expired_card          hard
stolen, lost, robada, extraviada, perdida                 lost_or_stolen        hard
fraud, fraude                                             fraud_suspected       hard
(none of these)                                           card_declined         soft
=======================================================  ====================  =======

Error bodies ``{"error": {"type", "message", "param"}}`` and HTTP statuses; the first row that
matches wins. A charge turns the code into a result (last column); every other operation raises
:class:`~billing.domain.errors.GatewayError` with the code
(:class:`~billing.domain.errors.GatewayAuthenticationFailed` for ``authentication_error``):

=========================================  ======================  ===========================
QVO type / HTTP status                     ErrorCode               a charge's result
=========================================  ======================  ===========================
401, 403, ``authentication_error`` (also   authentication_error    unknown (never a decline)
spelled ``authentication error``)
429, ``rate_limit_error``                  rate_limited            unknown
504                                        gateway_timeout         unknown
500, 502, 503, other 5xx, ``api_error``    gateway_unavailable     unknown
404, 410                                   not_found               failed, hard (the card or
                                                                   customer is gone)
422 on a charge                            card_declined (refined  failed, soft (QVO answers a
                                           by the message)         failed payment with a 4xx)
400, 405, 406, 418, 422 elsewhere, other   invalid_request         failed, soft (our request
4xx, ``invalid_request_error``                                     was wrong, not the card)
a 2xx or 3xx that is not QVO's JSON        gateway_unavailable     unknown
=========================================  ======================  ===========================

Before trusting an error body for a charge, the gateway looks the charge up by its key: a
declined charge that left a ``rejected`` transaction is mapped from that transaction.

Inscription (card enrollment) ``status``: ``succeeded`` -> succeeded (with the card),
``failed`` -> failed (with the error's message), anything else (the document names no other
status; the fake answers ``waiting_response`` before the customer finishes) -> pending.
"""

from __future__ import annotations

import json
import re
import urllib.parse
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from billing.domain.errors import GatewayAuthenticationFailed, GatewayError, InvalidArgument
from billing.domain.money import Money
from billing.domain.payments import (
    DECLINE_OF,
    DeclineKind,
    ErrorCode,
    PaymentResult,
    PaymentStatus,
    RefundStatus,
)
from billing.ports import (
    ChargeRequest,
    CustomerRequest,
    Enrollment,
    EnrollmentResult,
    EnrollmentStatus,
    NotificationFacts,
    RefundResult,
    StoredMethod,
)

__all__ = [
    "APPROVING_CARD",
    "CURRENCY",
    "CUSTOMER_ID_METADATA",
    "DOCUMENT_TOKEN",
    "ERROR_TYPES",
    "EVENT_TYPES",
    "HTTP_STATUSES",
    "LOOKUP_PAGE_SIZE",
    "PRODUCTION_URL",
    "REJECTING_CARD",
    "REJECTION_REASONS",
    "SANDBOX_URL",
    "TRANSACTION_STATUSES",
    "Mapped",
    "QvoError",
    "amount_of",
    "card_label",
    "carries_key",
    "charge_body",
    "charge_error_result",
    "classify",
    "customer_body",
    "customer_lookup_params",
    "decimal",
    "decode_json",
    "described",
    "format_datetime",
    "gateway_error",
    "has_more_pages",
    "inscription_body",
    "integer",
    "key_in",
    "key_lookup_params",
    "notification_facts",
    "owned_customer",
    "parse_customer_id",
    "parse_datetime",
    "parse_enrollment",
    "parse_error",
    "parse_inscription",
    "parse_transaction",
    "path",
    "pick_transaction",
    "placeholder_email",
    "refund_error_result",
    "refund_result",
    "stored_method",
    "transaction_result",
    "unknown_result",
]

SANDBOX_URL = "https://playground.qvo.cl"
"""QVO's sandbox ("playground"): the same API, no real money."""
PRODUCTION_URL = "https://api.qvo.cl"
"""QVO's production API (stated only through the document's examples)."""
CURRENCY = "CLP"
"""The one currency a card charge takes: the charge endpoint has no currency parameter, and
customer credits are "en CLP" (our reading: charges are in whole Chilean pesos)."""
APPROVING_CARD = "4051885600446623"
"""The sandbox's VISA test card: the test bank lets the customer approve or reject it."""
REJECTING_CARD = "5186059559590568"
"""The sandbox's MasterCard test card: always rejected."""
DOCUMENT_TOKEN = (
    "eyJ0eXAiOiJKV1QiLCJhbGciOiJIUzI1NiJ9.eyJuYW1lIjoiVGVzdCBjb21tZXJjZSIsImFwaV90b2tlbiI6dHJ1ZX0"
    ".AXt3ep_r23w9rSPTv-AnK42s2m-1O0okMYrYYDlRyXA"
)
"""The example API token printed in QVO's document (a public test value, not a credential)."""
CUSTOMER_ID_METADATA = "billing_customer_id"
"""The metadata key that records the engine's customer id on a QVO customer (our convention),
so that a registration repeated after a lost answer finds the customer it created."""
LOOKUP_PAGE_SIZE = 100
"""Entries per page when looking a charge up; QVO states no default or maximum ``per_page``."""

EVENT_TYPES = (
    "customer.created",
    "customer.updated",
    "customer.deleted",
    "plan.created",
    "plan.updated",
    "plan.deleted",
    "customer.card.created",
    "customer.card.deleted",
    "customer.subscription.created",
    "customer.subscription.updated",
    "customer.subscription.deleted",
    "transaction.payment_succeeded",
    "transaction.payment_failed",
    "transaction.refunded",
    "transaction.response_timeout",
)
"""Every event type QVO's document lists (all fifteen)."""


@dataclass(frozen=True, slots=True)
class Mapped:
    """One row of a mapping table: the engine's status, normalised error and decline kind."""

    status: PaymentStatus
    error: ErrorCode | None = None
    decline: DeclineKind | None = None


TRANSACTION_STATUSES: Mapping[str, Mapped] = {
    "successful": Mapped(PaymentStatus.SUCCEEDED),
    # A refunded transaction was paid first; the refund is a separate fact the engine records.
    "refunded": Mapped(PaymentStatus.SUCCEEDED),
    # Waiting for Webpay's answer; QVO moves it on, or to response_timeout after 20 minutes.
    "waiting_response": Mapped(PaymentStatus.PENDING),
    # "Rechazado por la vía de pago": an issuer decline; the document gives no reason codes,
    # so the default is the soft card_declined (REJECTION_REASONS may refine it).
    "rejected": Mapped(PaymentStatus.FAILED, ErrorCode.CARD_DECLINED, DeclineKind.SOFT),
    # "Un problema con la vía de pago": the stored Oneclick card cannot be charged through its
    # route (our reading, after gateway-libraries.md §2.1: "hard-ish"); a new card is needed.
    "unable_to_charge": Mapped(
        PaymentStatus.FAILED, ErrorCode.PAYMENT_METHOD_UNSUPPORTED, DeclineKind.HARD
    ),
    # QVO's own terminal verdict after 20 minutes in waiting_response; the document names no
    # transition out of it, so a new attempt (a new key) on the dunning schedule is safe.
    "response_timeout": Mapped(PaymentStatus.FAILED, ErrorCode.PROCESSING_ERROR, DeclineKind.SOFT),
}
"""Every transaction status QVO's document lists, in the engine's words."""

REJECTION_REASONS: tuple[tuple[tuple[str, ...], ErrorCode], ...] = (
    (("insufficient", "fondos insuficientes", "saldo insuficiente"), ErrorCode.INSUFFICIENT_FUNDS),
    (("expired", "vencida", "expirada"), ErrorCode.EXPIRED_CARD),
    (("stolen", "lost", "robada", "extraviada", "perdida"), ErrorCode.LOST_OR_STOLEN),
    (("fraud", "fraude"), ErrorCode.FRAUD_SUSPECTED),
)
"""Words in a rejection's message that name a more precise decline (our assumption)."""

ERROR_TYPES: Mapping[str, ErrorCode] = {
    "api_error": ErrorCode.GATEWAY_UNAVAILABLE,
    "authentication_error": ErrorCode.AUTHENTICATION_ERROR,
    # The document writes this type with a space; accept both spellings.
    "authentication error": ErrorCode.AUTHENTICATION_ERROR,
    "invalid_request_error": ErrorCode.INVALID_REQUEST,
    "rate_limit_error": ErrorCode.RATE_LIMITED,
}
"""Every error type QVO's document lists."""

HTTP_STATUSES: Mapping[int, ErrorCode] = {
    400: ErrorCode.INVALID_REQUEST,
    401: ErrorCode.AUTHENTICATION_ERROR,
    # "No tienes permiso": our credentials may not do this, a configuration problem like a 401.
    403: ErrorCode.AUTHENTICATION_ERROR,
    404: ErrorCode.NOT_FOUND,
    405: ErrorCode.INVALID_REQUEST,
    406: ErrorCode.INVALID_REQUEST,
    # "Removed from our servers": for us, the resource is gone.
    410: ErrorCode.NOT_FOUND,
    # The document's joke entry; if it ever comes, our request was not one QVO serves.
    418: ErrorCode.INVALID_REQUEST,
    # "No podemos procesar tu solicitud": a failed payment on a charge (see classify).
    422: ErrorCode.INVALID_REQUEST,
    429: ErrorCode.RATE_LIMITED,
    500: ErrorCode.GATEWAY_UNAVAILABLE,
    502: ErrorCode.GATEWAY_UNAVAILABLE,
    503: ErrorCode.GATEWAY_UNAVAILABLE,
    504: ErrorCode.GATEWAY_TIMEOUT,
}
"""Every HTTP status QVO's document lists, plus the proxies' 502 and 504."""

_RETRYABLE = frozenset(
    {ErrorCode.RATE_LIMITED, ErrorCode.GATEWAY_UNAVAILABLE, ErrorCode.GATEWAY_TIMEOUT}
)
_UNKNOWN_OUTCOMES = _RETRYABLE | {ErrorCode.AUTHENTICATION_ERROR}


# -- values ------------------------------------------------------------------------------------


def amount_of(money: Money) -> int:
    """The integer QVO expects for ``money``: whole Chilean pesos (CLP has no minor unit).

    :raises InvalidArgument: for another currency, or an amount that is not positive.
    """
    if money.currency.code != CURRENCY:
        raise InvalidArgument("amount", f"QVO charges only {CURRENCY}", money.currency.code)
    if not money.is_positive():
        raise InvalidArgument("amount", "must be > 0", str(money))
    return money.minor  # CLP's exponent is 0: minor units are pesos


def integer(value: object) -> int | None:
    """An integer field as QVO may send it (``3000``, ``"3000"``, ``"3000.0"``), else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    number = decimal(value)
    if number is None or number != number.to_integral_value():
        return None
    return int(number)


def decimal(value: object) -> Decimal | None:
    """A decimal field as QVO sends it: a JSON string such as ``"15000.0"`` (or a number)."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int | float | str):
        try:
            number = Decimal(str(value).strip())
        except InvalidOperation:
            return None
        return number if number.is_finite() else None
    return None


def format_datetime(instant: datetime) -> str:
    """An instant the way QVO writes it: UTC, milliseconds, ``Z`` (``2017-05-17T19:12:57.759Z``)."""
    utc = instant.astimezone(UTC)
    return utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond // 1000:03d}Z"


def parse_datetime(value: object) -> datetime | None:
    """A QVO datetime (with or without milliseconds), as an aware UTC instant; else None."""
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def path(*segments: str) -> str:
    """A URL path from ids, each percent-encoded so that no id can change the route."""
    return "/" + "/".join(urllib.parse.quote(segment, safe="") for segment in segments)


# -- JSON --------------------------------------------------------------------------------------


def decode_json(content: bytes) -> Any | None:
    """A QVO body as JSON, or None when it is not JSON (an HTML error page, say).

    Tolerates the document's own quirk of a trailing comma before ``}`` or ``]`` (§13.18 of the
    digest): a body that fails strict parsing is parsed again without such commas.
    """
    try:
        text = content.decode("utf-8")
    except UnicodeDecodeError:
        return None
    if not text.strip():
        return None
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        pass
    try:
        return json.loads(_without_trailing_commas(text))
    except json.JSONDecodeError:
        return None


def _without_trailing_commas(text: str) -> str:
    """``text`` with every comma that only precedes a closing bracket removed (outside strings)."""
    out: list[str] = []
    in_string = escaped = False
    for index, char in enumerate(text):
        if in_string:
            escaped = not escaped and char == "\\"
            in_string = escaped or char != '"'
        elif char == '"':
            in_string = True
        elif char == "," and text[index + 1 :].lstrip()[:1] in ("}", "]"):
            continue
        out.append(char)
    return "".join(out)


# -- the idempotency key, carried in the description --------------------------------------------


def described(description: str, key: str) -> str:
    """The description sent with a charge: the engine's text, then its key in brackets.

    QVO has no idempotency key or metadata on charges, but it stores and returns the
    description, so the key travels there and a lookup can find the charge again.
    """
    return f"{description} [{key}]"


def carries_key(description: object, key: str) -> bool:
    """Whether a transaction's description ends with this key, as :func:`described` wrote it."""
    return isinstance(description, str) and description.endswith(f"[{key}]")


_KEY = re.compile(r"\[([^\[\]]+)\]\s*$")


def key_in(description: object) -> str | None:
    """The key at the end of a description written by :func:`described`, if any."""
    if not isinstance(description, str):
        return None
    found = _KEY.search(description)
    return found.group(1) if found else None


# -- request bodies ----------------------------------------------------------------------------


def placeholder_email(customer_id: str) -> str:
    """An address for a customer the engine knows no email for (QVO requires a unique email).

    Deterministic, so a repeated registration meets the same address; ``.invalid`` is reserved
    (RFC 2606) and can never receive mail. Characters an address cannot hold become ``-``.
    """
    local = re.sub(r"[^A-Za-z0-9._+-]", "-", customer_id).strip(".") or "customer"
    return f"{local}@customers.invalid"


def customer_body(request: CustomerRequest) -> dict[str, Any]:
    """``POST /customers``: email (required, unique), name, and metadata naming our customer."""
    return {
        "email": request.email or placeholder_email(request.customer_id),
        "name": request.name or request.customer_id,
        "metadata": {**request.metadata, CUSTOMER_ID_METADATA: request.customer_id},
    }


def inscription_body(return_url: str) -> dict[str, Any]:
    """``POST /customers/{id}/cards/inscriptions``: where Webpay sends the customer back."""
    return {"return_url": return_url}


def charge_body(request: ChargeRequest) -> dict[str, Any]:
    """``POST /customers/{id}/cards/{card}/charge``: an integer amount, and the key in the
    description (:func:`described`).

    :raises InvalidArgument: for an amount QVO cannot take (:func:`amount_of`).
    """
    return {
        "amount": amount_of(request.amount),
        "description": described(request.description, request.idempotency_key),
    }


def key_lookup_params(key: str, amount: int | None, page: int) -> dict[str, str]:
    """``GET /transactions`` query for the charges whose description carries ``key``.

    ``like`` is read as SQL's LIKE (``%`` any text, ``_`` any character): the document names
    the operator but not its wildcards. The amount narrows the search when it is known. The
    caller still checks each description exactly (:func:`carries_key`).
    """
    where: dict[str, Any] = {"description": {"like": f"%[{key}]"}}
    if amount is not None:
        where["amount"] = {"=": amount}
    return {
        "where": json.dumps(where, separators=(",", ":")),
        "order_by": "created_at DESC",
        "page": str(page),
        "per_page": str(LOOKUP_PAGE_SIZE),
    }


def customer_lookup_params(email: str) -> dict[str, str]:
    """``GET /customers`` query for the customer with this email (emails are unique at QVO)."""
    return {"where": json.dumps({"email": {"=": email}}, separators=(",", ":"))}


def has_more_pages(page: int, returned: int, total: object) -> bool:
    """Whether a list has pages after ``page``: QVO's ``X-Total`` when it is sent, else whether
    this page was full. An empty page always ends the walk (a guard against 0-based pages)."""
    if returned == 0:
        return False
    counted = integer(total)
    if counted is not None:
        return page * LOOKUP_PAGE_SIZE < counted
    return returned >= LOOKUP_PAGE_SIZE


# -- responses ---------------------------------------------------------------------------------


def parse_customer_id(body: object) -> str:
    """The id of a created customer.

    :raises ValueError: when the body is not a QVO customer.
    """
    if isinstance(body, Mapping) and isinstance(body.get("id"), str) and body["id"]:
        return str(body["id"])
    raise ValueError("the answer is not a QVO customer")


def owned_customer(customers: object, customer_id: str) -> tuple[str | None, bool]:
    """Among customers found by email: the id of the one registered for ``customer_id``, and
    whether any customer was found at all (to tell "not there" from "someone else's")."""
    if not isinstance(customers, list):
        return None, False
    for customer in customers:
        metadata = customer.get("metadata") if isinstance(customer, Mapping) else None
        if isinstance(metadata, Mapping) and metadata.get(CUSTOMER_ID_METADATA) == customer_id:
            return parse_customer_id(customer), True
    return None, bool(customers)


def parse_enrollment(body: object) -> Enrollment:
    """An inscription under way: ``{inscription_uid, redirect_url, expiration_date}``.

    :raises ValueError: when the body lacks the id or the URL.
    """
    if not isinstance(body, Mapping):
        raise ValueError("the answer is not a QVO inscription")
    uid, url = body.get("inscription_uid"), body.get("redirect_url")
    if not isinstance(uid, str) or not uid or not isinstance(url, str) or not url:
        raise ValueError("the inscription has no inscription_uid or redirect_url")
    return Enrollment(
        reference=uid, redirect_url=url, expires_at=parse_datetime(body.get("expiration_date"))
    )


def card_label(card: Mapping[str, Any]) -> str:
    """What to show for a card: ``VISA ****6623`` (QVO writes ``VISA`` and ``Visa`` alike)."""
    brand = card.get("card_type")
    name = brand.strip().upper() if isinstance(brand, str) and brand.strip() else "CARD"
    last4 = card.get("last_4_digits")
    return f"{name} ****{last4}" if isinstance(last4, str | int) and str(last4) else name


def stored_method(card: object) -> StoredMethod:
    """A QVO card as a stored method: its ``woc_`` id and a label, never the number.

    :raises ValueError: when the card has no id.
    """
    if not isinstance(card, Mapping) or not isinstance(card.get("id"), str) or not card["id"]:
        raise ValueError("the card has no id")
    return StoredMethod(reference=str(card["id"]), label=card_label(card))


def parse_inscription(body: object) -> EnrollmentResult:
    """An inscription's result: ``succeeded`` with a card, ``failed`` with an error, else pending.

    :raises ValueError: when the body is not an inscription, or succeeded without a card.
    """
    if not isinstance(body, Mapping):
        raise ValueError("the answer is not a QVO inscription")
    status = body.get("status")
    if status == "succeeded":
        return EnrollmentResult(
            status=EnrollmentStatus.SUCCEEDED, method=stored_method(body.get("card"))
        )
    if status == "failed":
        return EnrollmentResult(
            status=EnrollmentStatus.FAILED, message=_error_text(body.get("error"))
        )
    return EnrollmentResult(status=EnrollmentStatus.PENDING, message=f"inscription is {status}")


def _error_text(error: object) -> str:
    """A failed inscription's error, whose shape the document leaves open: object or text."""
    if isinstance(error, Mapping):
        message = error.get("message") or error.get("type")
        return str(message) if message else "the inscription failed"
    return str(error) if error else "the inscription failed"


def _gateway_message(transaction: Mapping[str, Any]) -> str | None:
    response = transaction.get("gateway_response")
    if isinstance(response, Mapping) and response.get("message"):
        return str(response["message"])
    return None


def _refined(message: str | None) -> ErrorCode:
    """The decline a rejection's message names (:data:`REJECTION_REASONS`), else card_declined."""
    text = (message or "").lower()
    for words, code in REJECTION_REASONS:
        if any(word in text for word in words):
            return code
    return ErrorCode.CARD_DECLINED


def parse_transaction(body: object) -> Mapping[str, Any]:
    """A QVO transaction: an object with a status.

    :raises ValueError: when the body is not one.
    """
    if isinstance(body, Mapping) and isinstance(body.get("status"), str):
        return body
    raise ValueError("the answer is not a QVO transaction")


def transaction_result(transaction: Mapping[str, Any]) -> PaymentResult:
    """A QVO transaction as the engine's result (:data:`TRANSACTION_STATUSES`)."""
    status = transaction.get("status")
    reference = transaction.get("id") if isinstance(transaction.get("id"), str) else None
    message = _gateway_message(transaction)
    mapped = TRANSACTION_STATUSES.get(status) if isinstance(status, str) else None
    if mapped is None:
        return PaymentResult(
            status=PaymentStatus.UNKNOWN,
            code=str(status),
            message=message or "QVO answered a transaction status this adapter does not know",
            reference=reference,
            error=ErrorCode.PROCESSING_ERROR,
        )
    if mapped.status is not PaymentStatus.FAILED:
        return PaymentResult(status=mapped.status, reference=reference, message=message)
    error = _refined(message) if status == "rejected" else mapped.error
    error = error or ErrorCode.PROCESSING_ERROR
    decline = DECLINE_OF.get(error, mapped.decline or DeclineKind.SOFT)
    return PaymentResult.failed(decline, str(status), message, error=error, reference=reference)


def pick_transaction(transactions: Iterable[object], key: str) -> Mapping[str, Any] | None:
    """The transaction made for ``key`` among lookup results: its description must carry the
    key exactly. Should there ever be several, the paid one wins, then a pending one, then the
    newest (the lookup lists newest first)."""
    found = [
        item
        for item in transactions
        if isinstance(item, Mapping) and carries_key(item.get("description"), key)
    ]
    for wanted in (("successful", "refunded"), ("waiting_response",)):
        for item in found:
            if item.get("status") in wanted:
                return item
    return found[0] if found else None


# -- errors ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class QvoError:
    """A QVO error answer: the HTTP status and the ``error`` object's fields, if any."""

    status: int
    type: str | None = None
    message: str | None = None
    param: str | None = None

    def describe(self) -> str:
        """A one-line account for people (no secrets: QVO's messages name parameters only)."""
        parts = [f"HTTP {self.status}"]
        if self.type:
            parts.append(self.type)
        parts.append(self.message or "no message")
        text = ": ".join(parts)
        return f"{text} (param {self.param})" if self.param else text


def parse_error(status: int, body: object) -> QvoError:
    """The error in a non-2xx answer; a body that is not QVO's error object keeps the status."""
    error = body.get("error") if isinstance(body, Mapping) else None
    if not isinstance(error, Mapping):
        return QvoError(status=status)

    def text(name: str) -> str | None:
        value = error.get(name)
        return str(value) if isinstance(value, str | int) and str(value) else None

    return QvoError(status=status, type=text("type"), message=text("message"), param=text("param"))


def classify(error: QvoError, *, charging: bool = False) -> ErrorCode:
    """The normalised code of a QVO error (the module's table; the first matching row wins).

    ``charging`` says the error answers a card charge, where a 422 is a failed payment.
    """
    by_type = ERROR_TYPES.get((error.type or "").strip().lower())
    by_status = HTTP_STATUSES.get(error.status)
    for wanted in (ErrorCode.AUTHENTICATION_ERROR, ErrorCode.RATE_LIMITED):
        if wanted in (by_type, by_status):
            return wanted
    if error.status >= 500:
        return by_status or ErrorCode.GATEWAY_UNAVAILABLE
    if by_type is ErrorCode.GATEWAY_UNAVAILABLE:  # QVO blames itself, whatever the status
        return by_type
    if error.status == 422 and charging:
        return _refined(error.message)
    if 400 <= error.status < 500:
        return by_status or ErrorCode.INVALID_REQUEST
    return ErrorCode.GATEWAY_UNAVAILABLE


def gateway_error(gateway: str, error: QvoError) -> GatewayError:
    """The exception an operation other than a charge raises for a QVO error."""
    code = classify(error)
    raw = error.type or f"http_{error.status}"
    if code is ErrorCode.AUTHENTICATION_ERROR:
        return GatewayAuthenticationFailed(gateway, error.describe(), raw_code=raw)
    return GatewayError(
        gateway, code.value, error.describe(), raw_code=raw, retryable=code in _RETRYABLE
    )


def unknown_result(error: ErrorCode, message: str) -> PaymentResult:
    """A charge whose outcome is not known (no answer, a 5xx, our credentials refused)."""
    return PaymentResult(status=PaymentStatus.UNKNOWN, error=error, message=message)


def charge_error_result(error: QvoError) -> PaymentResult:
    """A charge's result from a QVO error answer (the module's table, last column)."""
    code = classify(error, charging=True)
    raw, message = error.type or f"http_{error.status}", error.describe()
    if code in _UNKNOWN_OUTCOMES:
        return PaymentResult(status=PaymentStatus.UNKNOWN, error=code, code=raw, message=message)
    if code is ErrorCode.NOT_FOUND:
        return PaymentResult.failed(DeclineKind.HARD, raw, message, error=code)
    decline = DECLINE_OF.get(code, DeclineKind.SOFT)
    return PaymentResult.failed(decline, raw, message, error=code)


def refund_result(transaction: object) -> RefundResult:
    """A refund's result from the transaction QVO answered (``refunded`` when it worked)."""
    if not isinstance(transaction, Mapping):
        return RefundResult(status=RefundStatus.UNKNOWN, message="QVO's answer was not JSON")
    reference = transaction.get("id") if isinstance(transaction.get("id"), str) else None
    status = transaction.get("status")
    if status == "refunded":
        return RefundResult(status=RefundStatus.SUCCEEDED, reference=reference)
    return RefundResult(
        status=RefundStatus.FAILED,
        reference=reference,
        code=str(status),
        message=f"QVO left the transaction {status}, not refunded",
    )


def refund_error_result(error: QvoError) -> RefundResult:
    """A refund's result from a QVO error answer: a 5xx or a rate limit leaves it unknown."""
    code = classify(error)
    status = RefundStatus.UNKNOWN if code in _RETRYABLE else RefundStatus.FAILED
    return RefundResult(status=status, code=code.value, message=error.describe())


# -- notifications -----------------------------------------------------------------------------


def notification_facts(body: bytes) -> NotificationFacts:
    """What a QVO webhook claims. QVO POSTs the event object itself
    (``{id, type, data, previous, created_at}``) and signs nothing, so ``verified`` is False and
    the engine re-fetches the transaction before believing it.

    :raises ValueError: when the body is not a QVO event.
    """
    event = decode_json(body)
    if not isinstance(event, Mapping):
        raise ValueError("the body is not a JSON object")
    event_id, kind, data = event.get("id"), event.get("type"), event.get("data")
    if not isinstance(event_id, str) or not event_id or not isinstance(kind, str) or not kind:
        raise ValueError("a QVO event has a string id and type")
    if not isinstance(data, Mapping) or "created_at" not in event:
        raise ValueError("a QVO event has a data object and a created_at")
    transaction = data.get("transaction")
    reference = description = None
    if isinstance(transaction, Mapping):
        found = transaction.get("id")
        reference = found if isinstance(found, str) and found else None
        description = transaction.get("description")
    return NotificationFacts(
        event_id=event_id,
        kind=kind,
        charge_reference=reference,
        idempotency_key=key_in(description),
        verified=False,
    )
