"""Openpay's wire format, as pure functions: request bodies, response parsing, error mapping.

Nothing here does I/O, reads a clock or draws a random number: every function is a golden-tested
translation between the engine's types (:mod:`billing.ports`) and Openpay's JSON (the seed document
``001_4328152d5317c677.txt``, digested in ``shared/reference/openpay.md``).

Amounts
    Openpay takes ``amount`` as a JSON *number* with at most two decimals (``100.00``). Money is
    integer minor units, so :func:`amount` turns it into an exact :class:`~decimal.Decimal` with two
    decimal places (``Decimal(minor).scaleb(-2)``: 10 minor units are ``0.10``), and :func:`dumps`
    writes a ``Decimal`` as its own number text. No float is ever involved, so ``1234567.89``
    goes out as ``1234567.89``, never ``1234567.8900000001``. Responses are read back with
    ``parse_float=Decimal`` (:func:`loads`) for the same reason.

Errors and statuses
    Every error code of the document (§4.2) has a row in :data:`ERRORS`; every transaction status
    has one in :data:`STATUSES`. See their docstrings for the tables, and the comments on each row
    for the assumptions where the document is silent.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from enum import StrEnum
from typing import Any

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
    NotificationFacts,
    RefundResult,
    StoredMethod,
)

__all__ = [
    "CURRENCIES",
    "DESCRIPTION_MAX",
    "ERRORS",
    "ORDER_ID_MAX",
    "STATUSES",
    "ApiError",
    "ErrorRule",
    "NotANotification",
    "Outcome",
    "amount",
    "basic_authorization",
    "card_body",
    "charge_body",
    "charge_result",
    "customer_body",
    "device_session_id",
    "dumps",
    "error_result",
    "external_id",
    "find_order",
    "loads",
    "notification_facts",
    "order_id",
    "parse_error",
    "placeholder_email",
    "refund_body",
    "refund_result",
    "rule_for",
    "same_card",
    "scrub",
    "split_token",
    "stored_method",
    "to_money",
]

ORDER_ID_MAX = 100
"""``order_id`` is "longitud = 100" (§3.7: a maximum)."""
DESCRIPTION_MAX = 250
"""``description`` is "longitud = 250" on charges and refunds."""
_TEXT_MAX = 100
"""``name``, ``email`` and ``external_id`` of a customer are "longitud = 100"."""
_DEVICE_SESSION_LENGTH = 32
"""The document's example device session ids have 32 characters."""

CURRENCIES = frozenset({"MXN", "USD"})
"""The only charge currencies the document allows (§3.4); both have two decimals."""


# -- JSON ------------------------------------------------------------------------------------------


def dumps(value: Any) -> bytes:
    """Exact JSON: like :func:`json.dumps`, but a ``Decimal`` is written as its own number text
    (``Decimal("0.10")`` becomes ``0.10``). Floats are refused: an amount must never be one."""
    return _encode(value).encode("utf-8")


def _encode(value: Any) -> str:
    if isinstance(value, Decimal):
        if not value.is_finite():
            raise ValueError("a JSON number must be finite")
        return format(value, "f")
    if isinstance(value, float):
        raise TypeError("floats are not written to Openpay: use Decimal")
    if value is None or isinstance(value, bool | int | str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, Mapping):
        items = (
            f"{json.dumps(str(key), ensure_ascii=False)}:{_encode(v)}" for key, v in value.items()
        )
        return "{" + ",".join(items) + "}"
    if isinstance(value, list | tuple):
        return "[" + ",".join(_encode(item) for item in value) + "]"
    raise TypeError(f"cannot write {type(value).__name__} as JSON")


def loads(content: bytes) -> Any | None:
    """The JSON in ``content`` with exact decimals, or ``None`` when it is not JSON (an HTML
    error page, an empty body)."""
    try:
        return json.loads(content, parse_float=Decimal)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None


# -- amounts ---------------------------------------------------------------------------------------


def amount(money: Money) -> Decimal:
    """``money`` as Openpay's amount: an exact decimal with two places (``0.10``, ``1234567.89``).

    :raises ValueError: for a currency Openpay does not charge in (only MXN and USD, §3.4).
    """
    if money.currency.code not in CURRENCIES:
        raise ValueError(f"Openpay charges only in {', '.join(sorted(CURRENCIES))}")
    return Decimal(money.minor).scaleb(-money.currency.exponent)


def to_money(value: object, currency: object) -> Money | None:
    """An amount from a response (a ``Decimal`` or an int, as :func:`loads` gives them) as
    Money, or ``None`` if either part is missing or malformed."""
    if isinstance(value, bool) or not isinstance(value, Decimal | int):
        return None
    if not isinstance(currency, str) or currency not in CURRENCIES:
        return None
    return Money.of(Decimal(value), currency)


# -- references derived from the engine's ids ------------------------------------------------------


def _bounded(value: str, limit: int, prefix: str) -> str:
    """``value`` itself when it fits in ``limit`` characters, else a stable digest of it."""
    if len(value) <= limit:
        return value
    return f"{prefix}{hashlib.sha256(value.encode()).hexdigest()}"


def order_id(idempotency_key: str) -> str:
    """The ``order_id`` for an engine idempotency key.

    The key itself when it fits in 100 characters (the documented maximum). A longer key becomes
    ``sha256-<64 hex digits>`` of the key: stable, so a resend still hits Openpay's uniqueness
    check (1006), and 71 characters long. Such an order id cannot be turned back into the key,
    so a notification about it carries the digest as its ``idempotency_key``.
    """
    return _bounded(idempotency_key, ORDER_ID_MAX, "sha256-")


def external_id(customer_id: str) -> str:
    """The customer's ``external_id``: the engine's id, or its digest past 100 characters."""
    return _bounded(customer_id, _TEXT_MAX, "sha256-")


def placeholder_email(customer_id: str) -> str:
    """The email sent for a customer the engine has none for (Openpay requires one, §9.2).

    Deterministic, so a retried registration sends the same body, and under the reserved
    ``.invalid`` top-level domain (RFC 2606), so nothing is ever delivered to it.
    """
    digest = hashlib.sha256(customer_id.encode()).hexdigest()[:24]
    return f"customer-{digest}@billing.invalid"


def device_session_id(seed: str) -> str:
    """A placeholder ``device_session_id``: the document makes it required on card charges and on
    cards made from tokens (§7.1, §11.3), but a renewal has no browser to take it from. It is
    32 lowercase hex characters (the document's examples are 32 long) derived from ``seed``
    (the order id or the token), so a resend carries the same one."""
    digest = hashlib.sha256(f"billing-device-session:{seed}".encode()).hexdigest()
    return digest[:_DEVICE_SESSION_LENGTH]


def split_token(token: str) -> tuple[str, str | None]:
    """A token from the engine, ``<token_id>`` or ``<token_id>:<device_session_id>``.

    openpay.js gives the browser both a token id and a device session id; a host that has the
    real device session id passes it after a colon (Openpay ids are alphanumeric, so the colon
    cannot be part of one).
    """
    token_id, _, session = token.partition(":")
    return token_id, (session or None)


# -- request bodies --------------------------------------------------------------------------------


def _clip(text: str, limit: int) -> str:
    return text[:limit]


def customer_body(request: CustomerRequest) -> dict[str, Any]:
    """``POST /customers`` (§9.2) for an engine customer.

    ``name`` and ``email`` are required by Openpay: a missing name becomes the engine's customer
    id, a missing email :func:`placeholder_email`. ``external_id`` is the engine's id, so a
    retried registration meets 2003 instead of creating a twin. ``requires_account`` is
    ``false``: the engine never keeps a balance at Openpay. ``metadata`` has no Openpay field and
    is not sent.
    """
    return {
        "external_id": external_id(request.customer_id),
        "name": _clip(request.name or request.customer_id, _TEXT_MAX),
        "email": _clip(request.email or placeholder_email(request.customer_id), _TEXT_MAX),
        "requires_account": False,
    }


def card_body(token: str) -> dict[str, Any]:
    """``POST /customers/{id}/cards`` from a token (§11.3): ``token_id`` and the required
    ``device_session_id`` (the one given with the token, else :func:`device_session_id`)."""
    token_id, session = split_token(token)
    return {"token_id": token_id, "device_session_id": session or device_session_id(token_id)}


def charge_body(request: ChargeRequest) -> dict[str, Any]:
    """``POST /customers/{id}/charges`` with a stored card (§7.1).

    ``order_id`` is :func:`order_id` of the idempotency key (Openpay refuses a second charge with
    it: 1006). ``capture`` is left to its default (``true``: charge now). ``metadata`` is not sent:
    Openpay's anti-fraud fields have strict key and value rules (§7.5) the engine's free-form
    metadata does not follow.
    """
    order = order_id(request.idempotency_key)
    return {
        "method": "card",
        "source_id": request.payment_method,
        "amount": amount(request.amount),
        "currency": request.amount.currency.code,
        "description": _clip(request.description or order, DESCRIPTION_MAX),
        "order_id": order,
        "device_session_id": device_session_id(order),
    }


def refund_body(idempotency_key: str) -> dict[str, Any]:
    """``POST .../charges/{id}/refund`` (§7.7): only a ``description``, which names the engine's
    key for the people reading the dashboard. The document has no ``amount``: a refund is always
    for the whole charge."""
    return {"description": _clip(f"refund {idempotency_key}", DESCRIPTION_MAX)}


# -- errors ----------------------------------------------------------------------------------------


class Outcome(StrEnum):
    """What an error answer means for the operation that got it."""

    DECLINE = "decline"
    """The payment method was refused: a charge is ``FAILED`` with the row's decline kind."""
    REFUSED = "refused"
    """Openpay refused the request itself and did nothing: a charge is ``FAILED`` (soft, the card
    is not at fault, and dunning retries give an operator time to fix the cause)."""
    UNKNOWN = "unknown"
    """It may or may not have happened: a charge is ``UNKNOWN``, to be looked up."""
    DUPLICATE = "duplicate"
    """The ``order_id`` was used before: look the first charge up and answer with it."""
    AUTHENTICATION = "authentication"
    """Our credentials were refused: ``UNKNOWN`` for a charge, an exception elsewhere."""


@dataclass(frozen=True, slots=True)
class ErrorRule:
    """One row of Openpay's error table (§4.2), and what it means here."""

    code: int
    http_status: int
    category: str
    """The error object's ``category`` the fake answers with: ``request``, ``gateway`` (card
    declines, as ActiveMerchant's recorded 3001 shows) or ``internal``."""
    description: str
    """English wording, used by the fake and recognised in a failed transaction's
    ``error_message``."""
    spanish: str
    """The document's own wording (also recognised in ``error_message``)."""
    error: ErrorCode
    outcome: Outcome

    @property
    def decline(self) -> DeclineKind:
        """The decline kind of a charge failed with this code (soft unless the card is done)."""
        return DECLINE_OF.get(self.error, DeclineKind.SOFT)


def _rule(
    code: int,
    http_status: int,
    category: str,
    description: str,
    spanish: str,
    error: ErrorCode,
    outcome: Outcome,
) -> tuple[int, ErrorRule]:
    return code, ErrorRule(code, http_status, category, description, spanish, error, outcome)


_E = ErrorCode
_O = Outcome

ERRORS: Mapping[int, ErrorRule] = dict(
    [
        # -- General -------------------------------------------------------------------------------
        # A 500 may come after the charge was made: unknown, resolved by looking it up.
        _rule(1000, 500, "internal", "Internal server error, contact support",
              "Ocurrió un error interno en el servidor de Openpay",
              _E.GATEWAY_UNAVAILABLE, _O.UNKNOWN),
        _rule(1001, 400, "request", "The request is not JSON, or has malformed or missing fields",
              "El formato de la petición no es JSON, los campos no tienen el formato correcto, "
              "o la petición no tiene campos que son requeridos.",
              _E.INVALID_REQUEST, _O.REFUSED),
        _rule(1002, 401, "request", "The api key or merchant id are invalid",
              "La llamada no esta autenticada o la autenticación es incorrecta.",
              _E.AUTHENTICATION_ERROR, _O.AUTHENTICATION),
        _rule(1003, 422, "request", "One or more parameters have invalid values",
              "La operación no se pudo completar por que el valor de uno o más de los "
              "parametros no es correcto.",
              _E.INVALID_REQUEST, _O.REFUSED),
        # "A service needed to process the transaction is unavailable": a 503, so unknown like
        # any 5xx (the port's rule), even though it most likely did nothing.
        _rule(1004, 503, "internal", "A required service is not available",
              "Un servicio necesario para el procesamiento de la transacción no se encuentra "
              "disponible.",
              _E.GATEWAY_UNAVAILABLE, _O.UNKNOWN),
        # A charge on a deleted card or customer: nothing to charge, refused (soft).
        _rule(1005, 404, "request", "The requested resource does not exist",
              "Uno de los recursos requeridos no existe.",
              _E.NOT_FOUND, _O.REFUSED),
        _rule(1006, 409, "request", "The order_id has already been processed",
              "Ya existe una transacción con el mismo ID de orden.",
              _E.DUPLICATE_REQUEST, _O.DUPLICATE),
        # The funds transfer from the card was not accepted: an unexplained decline, soft.
        _rule(1007, 402, "gateway", "The funds transfer was not accepted",
              "La transferencia de fondos entre una cuenta de banco o tarjeta y la cuenta de "
              "Openpay no fue aceptada.",
              _E.CARD_DECLINED, _O.DECLINE),
        # A deactivated account (the merchant's or the customer's): not the card's fault, and it
        # may be reactivated, so a soft processing error.
        _rule(1008, 423, "request", "One of the accounts is deactivated",
              "Una de las cuentas requeridas en la petición se encuentra desactivada.",
              _E.PROCESSING_ERROR, _O.DECLINE),
        _rule(1009, 413, "request", "The request body is too large",
              "El cuerpo de la petición es demasiado grande.",
              _E.INVALID_REQUEST, _O.REFUSED),
        # The public key where the private one is needed: a credentials problem.
        _rule(1010, 403, "request", "The public key cannot be used for this operation",
              "Se esta utilizando la llave pública para hacer una llamada que requiere la llave "
              "privada, o bien, se esta usando la llave privada desde JavaScript.",
              _E.AUTHENTICATION_ERROR, _O.AUTHENTICATION),
        # -- Storage -------------------------------------------------------------------------------
        _rule(2001, 409, "request", "The bank account is already registered on the customer",
              "La cuenta de banco con esta CLABE ya se encuentra registrada en el cliente.",
              _E.DUPLICATE_REQUEST, _O.REFUSED),
        # The adapter resolves 2002 and 2003 to the existing card or customer.
        _rule(2002, 409, "request", "The card is already registered on the customer",
              "La tarjeta con este número ya se encuentra registrada en el cliente.",
              _E.DUPLICATE_REQUEST, _O.REFUSED),
        _rule(2003, 409, "request", "A customer with this external id already exists",
              "El cliente con este identificador externo (External ID) ya existe.",
              _E.DUPLICATE_REQUEST, _O.REFUSED),
        _rule(2004, 422, "request", "The card number check digit is invalid",
              "El dígito verificador del número de tarjeta es inválido de acuerdo al algoritmo "
              "Luhn.",
              _E.INVALID_CARD_DATA, _O.DECLINE),
        _rule(2005, 400, "request", "The card expiration date has passed",
              "La fecha de expiración de la tarjeta es anterior a la fecha actual.",
              _E.EXPIRED_CARD, _O.DECLINE),
        _rule(2006, 400, "request", "The card security code (CVV2) is required",
              "El código de seguridad de la tarjeta (CVV2) no fue proporcionado.",
              _E.INVALID_CARD_DATA, _O.DECLINE),
        # A sandbox test card in production: this card can never be charged here.
        _rule(2007, 412, "request", "The card number is a test card and only works in sandbox",
              "El número de tarjeta es de prueba, solamente puede usarse en Sandbox.",
              _E.PAYMENT_METHOD_UNSUPPORTED, _O.DECLINE),
        # -- Cards ---------------------------------------------------------------------------------
        _rule(3001, 402, "gateway", "The card was declined",
              "La tarjeta fue declinada.",
              _E.CARD_DECLINED, _O.DECLINE),
        _rule(3002, 402, "gateway", "The card has expired",
              "La tarjeta ha expirado.",
              _E.EXPIRED_CARD, _O.DECLINE),
        _rule(3003, 402, "gateway", "The card doesn't have sufficient funds",
              "La tarjeta no tiene fondos suficientes.",
              _E.INSUFFICIENT_FUNDS, _O.DECLINE),
        _rule(3004, 402, "gateway", "The card was reported as stolen",
              "La tarjeta ha sido identificada como una tarjeta robada.",
              _E.LOST_OR_STOLEN, _O.DECLINE),
        _rule(3005, 402, "gateway", "The card was identified as fraudulent",
              "La tarjeta ha sido identificada como una tarjeta fraudulenta.",
              _E.FRAUD_SUSPECTED, _O.DECLINE),
        # "Not allowed for this customer or this transaction": a business rule, not the card;
        # soft. (The fake also answers it for refunding a charge twice.)
        _rule(3006, 412, "request", "The operation is not allowed for this customer or transaction",
              "La operación no esta permitida para este cliente o esta transacción.",
              _E.PROCESSING_ERROR, _O.DECLINE),
        _rule(3008, 412, "gateway", "The card is not supported for online transactions",
              "La tarjeta no es soportada en transacciones en linea.",
              _E.PAYMENT_METHOD_UNSUPPORTED, _O.DECLINE),
        _rule(3009, 402, "gateway", "The card was reported as lost",
              "La tarjeta fue reportada como perdida.",
              _E.LOST_OR_STOLEN, _O.DECLINE),
        _rule(3010, 402, "gateway", "The bank has restricted the card",
              "El banco ha restringido la tarjeta.",
              _E.CARD_RESTRICTED, _O.DECLINE),
        _rule(3011, 402, "gateway", "The bank has requested the card to be retained",
              "El banco ha solicitado que la tarjeta sea retenida. Contacte al banco.",
              _E.CARD_RESTRICTED, _O.DECLINE),
        # The customer must call the bank: ErrorCode.CARD_RESTRICTED says exactly that (hard:
        # the engine stops retrying a card that needs the customer first).
        _rule(3012, 412, "gateway", "Bank authorization is required for this charge",
              "Se requiere solicitar al banco autorización para realizar este pago.",
              _E.CARD_RESTRICTED, _O.DECLINE),
        # -- Accounts ------------------------------------------------------------------------------
        # The merchant's Openpay account lacks funds (payouts): not the card; soft.
        _rule(4001, 412, "request", "The Openpay account doesn't have sufficient funds",
              "La cuenta de Openpay no tiene fondos suficientes.",
              _E.PROCESSING_ERROR, _O.DECLINE),
    ]
)  # fmt: skip
"""Every error code of the document (§4.2; there is no 3007), and what it means here.

=====  ====  ==========================  ======  ==============
code   HTTP  ErrorCode                   kind    outcome
=====  ====  ==========================  ======  ==============
1000   500   gateway_unavailable         --      unknown
1001   400   invalid_request             soft    refused
1002   401   authentication_error        --      authentication
1003   422   invalid_request             soft    refused
1004   503   gateway_unavailable         --      unknown
1005   404   not_found                   soft    refused
1006   409   duplicate_request           --      duplicate
1007   402   card_declined               soft    decline
1008   423   processing_error            soft    decline
1009   413   invalid_request             soft    refused
1010   403   authentication_error        --      authentication
2001   409   duplicate_request           soft    refused
2002   409   duplicate_request           soft    refused
2003   409   duplicate_request           soft    refused
2004   422   invalid_card_data           hard    decline
2005   400   expired_card                hard    decline
2006   400   invalid_card_data           hard    decline
2007   412   payment_method_unsupported  hard    decline
3001   402   card_declined               soft    decline
3002   402   expired_card                hard    decline
3003   402   insufficient_funds          soft    decline
3004   402   lost_or_stolen              hard    decline
3005   402   fraud_suspected             hard    decline
3006   412   processing_error            soft    decline
3008   412   payment_method_unsupported  hard    decline
3009   402   lost_or_stolen              hard    decline
3010   402   card_restricted             hard    decline
3011   402   card_restricted             hard    decline
3012   412   card_restricted             hard    decline
4001   412   processing_error            soft    decline
=====  ====  ==========================  ======  ==============

A code not in the table is classified by its HTTP status (:func:`rule_for`).
"""


def _fallback(http_status: int) -> ErrorRule:
    """A rule for an answer without a known ``error_code`` (assumptions, by HTTP status)."""
    if http_status >= 500:
        error, outcome = _E.GATEWAY_UNAVAILABLE, _O.UNKNOWN
    elif http_status in (401, 403):
        error, outcome = _E.AUTHENTICATION_ERROR, _O.AUTHENTICATION
    elif http_status == 402:
        error, outcome = _E.CARD_DECLINED, _O.DECLINE
    elif http_status == 404:
        error, outcome = _E.NOT_FOUND, _O.REFUSED
    elif http_status == 429:
        error, outcome = _E.RATE_LIMITED, _O.REFUSED
    elif 400 <= http_status < 500:
        error, outcome = _E.INVALID_REQUEST, _O.REFUSED
    else:  # a 1xx/2xx/3xx that is not a usable answer
        error, outcome = _E.GATEWAY_UNAVAILABLE, _O.UNKNOWN
    return ErrorRule(0, http_status, "unknown", "unrecognised answer", "", error, outcome)


@dataclass(frozen=True, slots=True)
class ApiError:
    """Openpay's error object (§4.1), as far as it came back."""

    http_status: int
    code: int | None
    description: str
    category: str | None = None
    request_id: str | None = None


def parse_error(http_status: int, body: object) -> ApiError:
    """The error of a non-2xx answer; a body that is not Openpay's error object keeps only the
    HTTP status."""
    if not isinstance(body, Mapping):
        return ApiError(http_status, None, f"HTTP {http_status} without an Openpay error body")
    raw = body.get("error_code")
    code = raw if isinstance(raw, int) and not isinstance(raw, bool) else None
    description = body.get("description")
    category = body.get("category")
    request_id = body.get("request_id")
    return ApiError(
        http_status=http_status,
        code=code,
        description=scrub(description) if isinstance(description, str) else f"HTTP {http_status}",
        category=category if isinstance(category, str) else None,
        request_id=request_id if isinstance(request_id, str) else None,
    )


def rule_for(error: ApiError) -> ErrorRule:
    """The table row for an error: by ``error_code``, else by HTTP status."""
    if error.code is not None and error.code in ERRORS:
        return ERRORS[error.code]
    return _fallback(error.http_status)


def error_result(error: ApiError, *, reference: str | None = None) -> PaymentResult:
    """A charge's result for an error answer (the 1006 lookup is the gateway's business).

    ``code`` keeps Openpay's number (or ``http_<status>``), ``message`` its description.
    """
    rule = rule_for(error)
    code = str(error.code) if error.code is not None else f"http_{error.http_status}"
    if rule.outcome in (Outcome.DECLINE, Outcome.REFUSED):
        return PaymentResult.failed(
            rule.decline, code, error.description, error=rule.error, reference=reference
        )
    return PaymentResult(
        status=PaymentStatus.UNKNOWN,
        code=code,
        message=error.description,
        error=rule.error,
        reference=reference,
    )


# -- transactions ----------------------------------------------------------------------------------

STATUSES: Mapping[str, PaymentStatus] = {
    # Documented (§6.1): completed, in_progress, failed.
    "completed": PaymentStatus.SUCCEEDED,
    "in_progress": PaymentStatus.PENDING,
    "failed": PaymentStatus.FAILED,
    # Seen on a cancelled payout (§8.5) and named by charge.cancelled: a charge that never took
    # the money (an expired store or bank charge); failed, soft, payer_abandoned.
    "cancelled": PaymentStatus.FAILED,
    # Not in the document (its refunded charge keeps "completed", §7.7); if it ever appears,
    # the charge did take the money first, and refunds are tracked apart.
    "refunded": PaymentStatus.SUCCEEDED,
    # Not in the document: Openpay's later 3-D Secure status; waiting for the payer.
    "charge_pending": PaymentStatus.PENDING,
}
"""Transaction ``status`` → payment status. Any other status is ``UNKNOWN`` (never guessed).

==============  =========  ==========================================
status          result     failure detail
==============  =========  ==========================================
completed       succeeded
in_progress     pending
charge_pending  pending    (assumption: not in the document)
failed          failed     from ``error_message`` (see below)
cancelled       failed     payer_abandoned, soft (assumption)
refunded        succeeded  (assumption: not in the document)
other           unknown    looked up again later
==============  =========  ==========================================

A failed transaction carries only ``error_message`` (§6.1); it is matched against the English and
Spanish descriptions of :data:`ERRORS` (and an ``error_code`` field, if Openpay ever adds one);
an unrecognised message is a soft ``card_declined``, the safe default.
"""


def _failure(transaction: Mapping[str, Any]) -> tuple[ErrorRule | None, str | None]:
    raw = transaction.get("error_code")
    if isinstance(raw, int) and raw in ERRORS:
        return ERRORS[raw], _text(transaction.get("error_message"))
    message = _text(transaction.get("error_message"))
    if message is None:
        return None, None
    wanted = _normal(message)
    for rule in ERRORS.values():
        if wanted in (_normal(rule.description), _normal(rule.spanish)):
            return rule, message
    return None, message


def _normal(text: str) -> str:
    return " ".join(text.lower().rstrip(".").split())


def _text(value: object) -> str | None:
    return scrub(value) if isinstance(value, str) and value else None


def _id(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def charge_result(transaction: Mapping[str, Any]) -> PaymentResult:
    """A charge transaction (§6.1) as a payment result (:data:`STATUSES`)."""
    reference = _id(transaction.get("id"))
    status_text = transaction.get("status")
    status = STATUSES.get(status_text) if isinstance(status_text, str) else None
    if status is None:
        return PaymentResult(
            status=PaymentStatus.UNKNOWN,
            code=str(status_text),
            message="Openpay answered a status this adapter does not know",
            reference=reference,
        )
    if status is not PaymentStatus.FAILED:
        return PaymentResult(status=status, reference=reference)
    if status_text == "cancelled":
        return PaymentResult.declined(
            ErrorCode.PAYER_ABANDONED,
            code="cancelled",
            message=_text(transaction.get("error_message")) or "the charge was cancelled",
            reference=reference,
        )
    rule, message = _failure(transaction)
    if rule is None:
        return PaymentResult.declined(
            ErrorCode.CARD_DECLINED, code="failed", message=message, reference=reference
        )
    return PaymentResult.failed(
        rule.decline, str(rule.code), message, error=rule.error, reference=reference
    )


def find_order(transactions: Iterable[object], order: str) -> Mapping[str, Any] | None:
    """The charge with ``order_id`` ``order`` in a list answer, if any."""
    for item in transactions:
        if (
            isinstance(item, Mapping)
            and item.get("order_id") == order
            and item.get("transaction_type", "charge") == "charge"
        ):
            return item
    return None


def refund_result(charge: Mapping[str, Any]) -> RefundResult | None:
    """The refund nested in a charge (§7.7), or ``None`` when the charge has none."""
    refund = charge.get("refund")
    if not isinstance(refund, Mapping):
        return None
    reference = _id(refund.get("id"))
    status = refund.get("status")
    if status == "completed":
        return RefundResult(status=RefundStatus.SUCCEEDED, reference=reference)
    if status == "in_progress":
        return RefundResult(status=RefundStatus.PENDING, reference=reference)
    if status in ("failed", "cancelled"):
        return RefundResult(
            status=RefundStatus.FAILED,
            reference=reference,
            code=str(status),
            message=_text(refund.get("error_message")),
        )
    return RefundResult(status=RefundStatus.UNKNOWN, reference=reference, code=str(status))


# -- cards -----------------------------------------------------------------------------------------


def stored_method(card: Mapping[str, Any]) -> StoredMethod:
    """A card object (§6.2) as the engine's stored method: its id, and a label such as
    ``visa ****1111`` (the brand and the last four digits of the masked number, nothing more).

    :raises ValueError: when the card has no id.
    """
    reference = card.get("id")
    if not isinstance(reference, str) or not reference:
        raise ValueError("the card answer has no id")
    brand = card.get("brand")
    number = card.get("card_number")
    digits = re.sub(r"\D", "", number) if isinstance(number, str) else ""
    parts = [brand.replace("_", " ") if isinstance(brand, str) and brand else "card"]
    if len(digits) >= 4:
        parts.append(f"****{digits[-4:]}")
    return StoredMethod(reference=reference, label=" ".join(parts))


# -- notifications ---------------------------------------------------------------------------------


class NotANotification(ValueError):
    """The body is not an Openpay notification."""


_CHARGE_EVENTS = ("charge.", "subscription.charge.", "chargeback.")


def notification_facts(body: bytes) -> NotificationFacts:
    """What an Openpay webhook claims (``{type, event_date, transaction | verification_code}``).

    Openpay gives a notification no id, so ``event_id`` is derived from what does not change
    across redeliveries: ``<type>:<transaction id>:<transaction status>`` (a refund keeps the
    charge ``completed`` but has its own type), or ``verification:<code>``. ``event_date`` is left
    out on purpose. Nothing is signed, so ``verified`` is always false: the engine re-fetches.

    :raises NotANotification: for a body that is not one.
    """
    data = loads(body)
    if not isinstance(data, Mapping):
        raise NotANotification("the body is not a JSON object")
    kind = data.get("type")
    if not isinstance(kind, str) or not kind:
        raise NotANotification("the body has no notification type")
    if kind == "verification":
        code = data.get("verification_code")
        if not isinstance(code, str) or not code:
            raise NotANotification("a verification notification needs a verification_code")
        return NotificationFacts(event_id=f"verification:{code}", kind=kind)
    transaction = data.get("transaction")
    if not isinstance(transaction, Mapping):
        raise NotANotification("the notification has no transaction")
    reference = transaction.get("id")
    if not isinstance(reference, str) or not reference:
        raise NotANotification("the notification's transaction has no id")
    status = transaction.get("status")
    order = transaction.get("order_id")
    about_charge = transaction.get("transaction_type") == "charge" or kind.startswith(
        _CHARGE_EVENTS
    )
    return NotificationFacts(
        event_id=f"{kind}:{reference}:{status if isinstance(status, str) else ''}",
        kind=kind,
        charge_reference=reference if about_charge else None,
        idempotency_key=order if isinstance(order, str) and order else None,
        verified=False,
    )


# -- authentication --------------------------------------------------------------------------------


def basic_authorization(private_key: str) -> str:
    """The ``Authorization`` header value: HTTP Basic with the private key as the user name and
    an empty password (§2; curl's ``-u sk_...:``)."""
    return "Basic " + base64.b64encode(f"{private_key}:".encode()).decode("ascii")


def same_card(token_card: Mapping[str, Any], card: Mapping[str, Any]) -> bool:
    """Whether a stored card (§6.2) is the one a token (§18.1) stood for, as far as the masked
    data tells: the last four digits, the expiration and the holder's name all agree."""

    def digits(data: Mapping[str, Any]) -> str:
        number = data.get("card_number")
        return re.sub(r"\D", "", number)[-4:] if isinstance(number, str) else ""

    keys = ("expiration_month", "expiration_year", "holder_name")
    return (
        len(digits(card)) == 4
        and digits(card) == digits(token_card)
        and all(card.get(key) == token_card.get(key) for key in keys)
    )


# -- safety ----------------------------------------------------------------------------------------

_CARD_NUMBER = re.compile(r"(?<!\d)\d{12,19}(?!\d)")


def scrub(text: str) -> str:
    """``text`` with anything shaped like a card number (12 to 19 digits in a row) masked, for
    gateway messages that end up in results, logs and exceptions."""
    return _CARD_NUMBER.sub(lambda match: f"{'*' * (len(match[0]) - 4)}{match[0][-4:]}", text)
