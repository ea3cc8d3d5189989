"""Khipu's wire format (REST API 2.0), as pure functions: signing, amounts, dates, statuses.

Nothing here does I/O or reads a clock: every function is a golden-tested translation between
the engine's types (:mod:`billing.ports`) and Khipu's form bodies and JSON (the seed document
``002_db3a92c89cd9fda7.txt``, digested in ``shared/reference/khipu.md``).

Signing (``gateway-libraries.md`` §4.2, Khipu's "Firmar peticiones de la API")
    ``Authorization: <receiver_id>:<hex HMAC-SHA256(secret, to_sign)>`` where ``to_sign`` is
    ``METHOD & pct(full URL without query)`` followed by ``& pct(key) = pct(value)`` for every
    parameter, sorted by key. ``pct`` is RFC 3986 percent-encoding (only ``A-Z a-z 0-9 - . _ ~``
    stay as they are). Query and form parameters are merged and sorted together (Khipu's PHP and
    Ruby clients); :func:`verify` also accepts the ``pykhipu`` order (query sorted, then form
    sorted), which differs only when a request has both.

Amounts
    A decimal string with ``.`` and no thousands separator (CLP: no decimals); never a float.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from urllib.parse import parse_qsl, quote

from billing.domain.money import Money
from billing.domain.payments import DeclineKind, ErrorCode, PaymentResult, PaymentStatus

__all__ = [
    "CURRENCIES",
    "NOTIFY_API_VERSION",
    "NotANotification",
    "amount_text",
    "authorization",
    "format_date",
    "notification_token",
    "parse_date",
    "payment_result",
    "pct",
    "sign",
    "string_to_sign",
    "to_money",
    "valid_email",
    "verify",
]

CURRENCIES = frozenset({"CLP"})
"""The currencies the adapter charges in. The seed gives no list (ISO-4217 codes, §1); Khipu is a
Chilean bank-transfer service, so only ``CLP`` (0 decimals) is declared (**assumption**)."""

NOTIFY_API_VERSION = "1.3"
"""The notification API whose ``notification_token`` ``GET /payments`` accepts ("1.3 o
superior", seed endpoint #2)."""

SUBJECT_MAX = 255
"""The adapter clips ``subject`` to this many characters (the seed gives no maximum)."""

Params = Mapping[str, str] | Iterable[tuple[str, str]]

_EMAIL = re.compile(
    r"^[^@\s,;<>()\[\]\\\"]+@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)+$"
)
_TOKEN = re.compile(r"^[A-Za-z0-9]{1,256}$")


def pct(text: str) -> str:
    """RFC 3986 percent-encoding (PHP's ``rawurlencode``): only ``A-Za-z0-9-._~`` are kept."""
    return quote(text, safe="-._~")


def _pairs(params: Params | None) -> list[tuple[str, str]]:
    if params is None:
        return []
    items = params.items() if isinstance(params, Mapping) else params
    return [(str(key), str(value)) for key, value in items]


def string_to_sign(
    method: str, url: str, params: Params | None = None, *, data: Params | None = None
) -> str:
    """The string Khipu signs: the method, the full URL (no query) and the parameters.

    Without ``data``, ``params`` (query and form merged) are sorted together (Khipu's clients);
    with ``data``, ``params`` sorted then ``data`` sorted (``pykhipu``'s order).
    """
    parts = [method.upper(), pct(url)]
    groups = [_pairs(params)] if data is None else [_pairs(params), _pairs(data)]
    for group in groups:
        encoded = sorted((pct(key), pct(value)) for key, value in group)
        parts += [f"{key}={value}" for key, value in encoded]
    return "&".join(parts)


def sign(secret: str, to_sign: str) -> str:
    """Lowercase hex HMAC-SHA256 of ``to_sign`` keyed with the receiver's secret."""
    return hmac.new(secret.encode(), to_sign.encode("utf-8"), hashlib.sha256).hexdigest()


def authorization(
    receiver_id: str, secret: str, method: str, url: str, params: Params | None = None
) -> str:
    """The ``Authorization`` header value: ``<receiver_id>:<signature>``."""
    return f"{receiver_id}:{sign(secret, string_to_sign(method, url, params))}"


def verify(
    header: str | None,
    receiver_id: str,
    secret: str,
    method: str,
    url: str,
    query: Sequence[tuple[str, str]],
    form: Sequence[tuple[str, str]],
) -> bool:
    """Whether ``header`` signs this request for this receiver (in constant time). Accepts the
    merged order and, when the request has both query and form parameters, pykhipu's order."""
    if not header or ":" not in header:
        return False
    claimed_id, _, claimed = header.partition(":")
    candidates = [string_to_sign(method, url, [*query, *form])]
    if query and form:
        candidates.append(string_to_sign(method, url, query, data=form))
    good = False
    for candidate in candidates:
        good |= hmac.compare_digest(claimed.encode(), sign(secret, candidate).encode())
    return good and hmac.compare_digest(claimed_id.encode(), receiver_id.encode())


def amount_text(money: Money) -> str:
    """An amount as Khipu takes it: ``.`` as the decimal separator, no thousands separator,
    exactly the currency's decimals (``15000`` for CLP)."""
    return format(money.amount, "f")


def to_money(value: object, currency: object) -> Money | None:
    """An amount from Khipu's JSON (a number read as a :class:`Decimal`, or a string), or
    ``None`` when it is not one in a known currency."""
    if isinstance(value, bool) or not isinstance(currency, str):
        return None
    if not isinstance(value, (int, str, Decimal)):
        return None
    try:
        exact = Decimal(str(value))
        return Money.of(exact.normalize() if exact == exact.to_integral() else exact, currency)
    except (InvalidOperation, ValueError, ArithmeticError, Exception):
        return None


def format_date(moment: datetime) -> str:
    """ISO-8601 in UTC with a ``Z`` (``2017-03-01T13:00:00Z``), as the seed's examples."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_date(value: object) -> datetime | None:
    """An ISO-8601 instant (``Z`` or an offset; a naive one is taken as UTC), else ``None``."""
    if not isinstance(value, str) or not value.strip():
        return None
    try:
        parsed = datetime.fromisoformat(value.strip().replace("z", "Z"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def valid_email(text: str) -> bool:
    """A plausible single e-mail address (``payer_email``)."""
    return len(text) <= 254 and _EMAIL.match(text) is not None


class NotANotification(ValueError):
    """A webhook body that is not a Khipu notification (API 1.3)."""


def notification_token(body: bytes) -> str:
    """The ``notification_token`` of a notification's form body (``api_version`` 1.3 or later).

    :raises NotANotification: for anything else.
    """
    try:
        text = body.decode("utf-8")
        fields = dict(parse_qsl(text, keep_blank_values=True, strict_parsing=True))
    except (UnicodeDecodeError, ValueError) as exc:
        raise NotANotification("the body is not a form") from exc
    token = fields.get("notification_token", "")
    if not _TOKEN.match(token):
        raise NotANotification("no alphanumeric notification_token")
    version = fields.get("api_version", NOTIFY_API_VERSION)
    try:
        major, minor = (int(part) for part in version.split(".")[:2])
    except ValueError as exc:
        raise NotANotification(f"api_version {version!r} is not a version") from exc
    if (major, minor) < (1, 3):
        raise NotANotification(f"api_version {version} has no notification_token lookup")
    return token


_FAILED_DETAIL: dict[str, tuple[DeclineKind, ErrorCode]] = {
    "rejected-by-payer": (DeclineKind.SOFT, ErrorCode.PAYER_ABANDONED),
    "marked-as-abuse": (DeclineKind.HARD, ErrorCode.FRAUD_SUSPECTED),
}
"""``status_detail`` values that say the payer will not pay (whatever the ``status``, which the
seed does not fix): "declared they will not pay" is a soft decline (a later link may be paid),
"not paying and the charge was unsolicited" a hard one (**assumptions**)."""


def _text(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def expired_result(reference: str | None, message: str) -> PaymentResult:
    """A link that expired unpaid: a soft decline, ``payer_abandoned``."""
    return PaymentResult.failed(
        DeclineKind.SOFT,
        "expired",
        message,
        error=ErrorCode.PAYER_ABANDONED,
        reference=reference,
    )


def payment_result(payment: Mapping[str, object], now: datetime) -> PaymentResult:
    """A ``PaymentsResponse`` in the engine's words, ``now`` being the gateway's time.

    ``done`` → succeeded (also when conciliated after expiry, ``out_of_date_conciliation``);
    ``verifying`` → pending (a transfer is under way, even past expiry); ``pending`` →
    requires_action with ``payment_url`` until ``expires_date``, then an ``expired`` soft
    decline (``payer_abandoned``); a payer's refusal (``status_detail``) → failed.
    """
    reference = _text(payment.get("payment_id"))
    status = payment.get("status")
    detail = payment.get("status_detail")
    if isinstance(detail, str) and detail in _FAILED_DETAIL:
        kind, error = _FAILED_DETAIL[detail]
        return PaymentResult.failed(
            kind,
            detail,
            f"the payer refused the payment ({detail})",
            error=error,
            reference=reference,
        )
    if status == "done":
        return PaymentResult(status=PaymentStatus.SUCCEEDED, reference=reference)
    if status == "verifying":
        return PaymentResult(
            status=PaymentStatus.PENDING,
            reference=reference,
            message="Khipu is verifying the transfer",
        )
    if status == "pending":
        expires = parse_date(payment.get("expires_date"))
        if expires is not None and expires <= now:
            return expired_result(reference, "the payment link expired unpaid")
        return PaymentResult(
            status=PaymentStatus.REQUIRES_ACTION,
            reference=reference,
            action_url=_text(payment.get("payment_url")),
            message="waiting for the payer to follow the link",
        )
    return PaymentResult(
        status=PaymentStatus.UNKNOWN,
        reference=reference,
        error=ErrorCode.GATEWAY_UNAVAILABLE,
        message=f"Khipu answered an unknown payment status {status!r}",
    )
