"""Khipu (Chile) as a :class:`billing.ports.PaymentGateway`: pay-by-link bank transfers.

Every charge is a Khipu payment (``POST /payments``) the customer pays later by following its
``payment_url``; the adapter answers ``requires_action`` with that link and the ``payment_id``.
Requests are signed with the receiver's secret (:mod:`adapters.khipu._wire`). The rules the port
asks for, and how the adapter meets them on an API that has no lookup by ``transaction_id``:

* **once per key**: ``transaction_id`` = the idempotency key, and the adapter keeps a journal of
  the keys it sent (key → ``payment_id``, or "in doubt" while an answer is missing). A repeated
  key is answered from the payment the journal names, never with a new payment.
* **unknown outcomes**: a timeout or a 503 after the request left is ``UNKNOWN`` and leaves the
  key in doubt. Khipu cannot be asked "which payment has this ``transaction_id``?", so ``sync``
  answers ``UNKNOWN`` for a key in doubt until the payment's notification names it
  (:meth:`KhipuGateway.parse_notification` records it) or until its link has surely expired:
  the link was only ever in the lost answer, so nobody can have paid it, and the charge is then
  an ``expired`` soft decline. ``sync`` answers ``None`` only for a key this adapter never sent.
* **expiry** is judged by the gateway's clock: the ``Date`` header of Khipu's answer.
* **withdrawing a link** (``cancel_link``) is ``DELETE /payments/{id}``, which Khipu allows only
  while the payment is ``pending`` and which cannot be undone; a refused delete is looked up to
  say what became of the payment (a payment Khipu no longer has was deleted before).
* **secrets**: the secret lives in a :class:`~adapters._http.Secret` and only signs requests.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Generator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import quote

import httpx

from adapters._http import (
    HttpGateway,
    NeverSent,
    OutcomeUnknown,
    Secret,
    new_client,
    parse_json,
    send,
)
from adapters.khipu import _wire as wire
from billing.domain.errors import GatewayAuthenticationFailed, GatewayError
from billing.domain.payments import DeclineKind, ErrorCode, PaymentResult, PaymentStatus
from billing.ports import (
    AttachRequest,
    CancelLinkRequest,
    Capability,
    ChargeRequest,
    CustomerRequest,
    Enrollment,
    EnrollmentRequest,
    EnrollmentResult,
    LinkCancellation,
    LinkCancellationStatus,
    Notification,
    NotificationFacts,
    RefundRequest,
    RefundResult,
    RefundStatus,
    StoredMethod,
    SyncRequest,
)

__all__ = ["API_URL", "DEFAULT_LINK_LIFETIME", "KhipuGateway", "from_environment"]

API_URL = "https://khipu.com/api/2.0"
"""Khipu's API 2.0 base URL (outside the seed: ``khipu.md`` Appendix A)."""
DEFAULT_LINK_LIFETIME = timedelta(days=3)
"""How long a payment link stays payable unless configured (``expires_date`` = ``at`` + it)."""

_log = logging.getLogger("adapters.khipu")
_IN_DOUBT = ""


class _SignedAuth(httpx.Auth):
    """Khipu's request signature over the URL as sent, its query and its form body."""

    requires_request_body = True

    def __init__(self, receiver_id: str, secret: Secret) -> None:
        self._receiver_id = receiver_id
        self._secret = secret

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        url = str(request.url.copy_with(query=None, fragment=None))
        params = list(request.url.params.multi_items())
        content = request.content
        if content:
            from urllib.parse import parse_qsl

            params += parse_qsl(content.decode("utf-8"), keep_blank_values=True)
        request.headers["Authorization"] = wire.authorization(
            self._receiver_id, self._secret.reveal(), request.method, url, params
        )
        yield request

    def __repr__(self) -> str:
        return "_SignedAuth('***')"


@dataclass(frozen=True, slots=True)
class _Answer:
    status: int
    body: Any
    date: datetime | None

    @property
    def ok(self) -> bool:
        return self.status == 200

    def message(self) -> str:
        if isinstance(self.body, Mapping):
            text = str(self.body.get("message") or "")
            errors = self.body.get("errors")
            if isinstance(errors, list):
                text += "; " + ", ".join(
                    f"{item.get('field')}: {item.get('message')}"
                    for item in errors
                    if isinstance(item, Mapping)
                )
            return text[:500]
        return f"HTTP {self.status} without a Khipu error body"


class KhipuGateway(HttpGateway):
    """Khipu's REST API 2.0 behind :class:`billing.ports.PaymentGateway` (thread-safe)."""

    label = "Khipu"

    capabilities: frozenset[Capability] = frozenset(
        {
            Capability.PAY_BY_LINK,
            Capability.REDIRECT_PAYMENTS,
            Capability.NOTIFICATIONS,
            Capability.NOTIFICATION_LOOKUP,
            Capability.REFUNDS,
            Capability.PARTIAL_REFUNDS,
            Capability.LINK_CANCELLATION,
        }
    )
    """No customers, cards or enrollment (Khipu has none); ``PARTIAL_REFUNDS``: the refund takes
    an optional ``amount``; ``NOTIFICATION_LOOKUP``: a notification is read by looking its token
    up; ``LINK_CANCELLATION``: ``DELETE /payments/{id}``; no ``SIGNED_NOTIFICATIONS`` (a
    notification carries only a token) and no ``IDEMPOTENT_CHARGES`` (nothing says Khipu refuses
    a repeated ``transaction_id``)."""
    currencies: frozenset[str] = wire.CURRENCIES

    def __init__(
        self,
        receiver_id: str,
        secret: str,
        *,
        base_url: str = API_URL,
        notify_url: str | None = None,
        return_url: str | None = None,
        cancel_url: str | None = None,
        link_lifetime: timedelta = DEFAULT_LINK_LIFETIME,
        timeout: float = 30.0,
        transport: httpx.BaseTransport | None = None,
        name: str = "khipu",
    ) -> None:
        if not receiver_id:
            raise ValueError("a Khipu receiver id is required")
        if link_lifetime <= timedelta(0):
            raise ValueError("the link lifetime must be positive")
        self._name = name
        self._receiver_id = receiver_id
        self._secret = Secret(secret)
        self._base_url = base_url.rstrip("/")
        self._notify_url = notify_url
        self._return_url = return_url
        self._cancel_url = cancel_url
        self.link_lifetime = link_lifetime
        self._lock = threading.Lock()
        self._journal: dict[str, str] = {}
        self._doubt_since: dict[str, datetime] = {}
        self._never_sent: set[str] = set()
        """Keys (of charges and refunds) whose request surely never reached Khipu: the only
        ones sent again when the engine says it sent them before."""
        self._refunds: dict[str, RefundResult] = {}
        self._client = new_client(
            self._base_url + "/",
            auth=_SignedAuth(receiver_id, self._secret),
            headers={
                "Content-Type": "application/x-www-form-urlencoded",
                "Accept": "application/json",
            },
            timeout=timeout,
            transport=transport,
        )

    # -- plumbing --------------------------------------------------------------------------------

    def __repr__(self) -> str:
        return (
            f"KhipuGateway(name={self._name!r}, receiver_id={self._receiver_id!r}, "
            f"base_url={self._base_url!r})"
        )

    def _exchange(
        self,
        operation: str,
        method: str,
        path: str,
        *,
        form: Mapping[str, str] | None = None,
        params: Mapping[str, str] | None = None,
    ) -> _Answer:
        """:raises NeverSent: / :raises OutcomeUnknown: as :func:`adapters._http.send`."""
        url = self._base_url + path
        try:
            response = send(self._client, method, url, data=form, params=params)
        except (NeverSent, OutcomeUnknown) as exc:
            _log.warning("khipu %s: %s %s failed: %s", operation, method, path, type(exc).__name__)
            raise
        _log.debug("khipu %s: %s %s -> %s", operation, method, path, response.status_code)
        return _Answer(response.status_code, parse_json(response), _server_time(response))

    def _call(self, operation: str, method: str, path: str, **kwargs: Any) -> _Answer:
        try:
            return self._exchange(operation, method, path, **kwargs)
        except (NeverSent, OutcomeUnknown) as exc:
            raise self._unanswered(operation, exc) from exc

    def _failure(self, operation: str, answer: _Answer) -> GatewayError:
        message = f"{operation}: {self._safe(answer.message())} (HTTP {answer.status})"
        if answer.status == 403:
            return GatewayAuthenticationFailed(self._name, message, raw_code="403")
        if answer.status == 400:
            return GatewayError(self._name, "invalid_request", message, raw_code="400")
        return GatewayError(
            self._name,
            ErrorCode.GATEWAY_UNAVAILABLE.value,
            message,
            raw_code=str(answer.status),
            retryable=True,
        )

    def _safe(self, text: str) -> str:
        return text.replace(self._secret.reveal(), "***")

    @staticmethod
    def _path(*parts: str) -> str:
        return "/" + "/".join(quote(part, safe="") for part in parts)

    def _unsupported(self, what: str) -> GatewayError:
        return GatewayError(self._name, "invalid_request", f"Khipu has no {what}")

    # -- customers and payment methods -----------------------------------------------------------

    def register_customer(self, request: CustomerRequest) -> str:
        raise self._unsupported("customer records (pay-by-link: the payer's e-mail is the method)")

    def attach_payment_method(self, request: AttachRequest) -> StoredMethod:
        """The token is the payer's e-mail address; it becomes the stored method (no call)."""
        email = request.token.strip()
        if not wire.valid_email(email):
            raise GatewayError(
                self._name, "invalid_request", "the token must be the payer's e-mail address"
            )
        return StoredMethod(reference=email, label=f"Khipu {email}")

    def start_enrollment(self, request: EnrollmentRequest) -> Enrollment:
        raise self._unsupported("card enrollment pages")

    def complete_enrollment(
        self, customer_reference: str | None, reference: str
    ) -> EnrollmentResult:
        raise self._unsupported("card enrollment pages")

    # -- charges ---------------------------------------------------------------------------------

    def _form(self, request: ChargeRequest) -> dict[str, str]:
        form = {
            "subject": (request.description or request.idempotency_key)[: wire.SUBJECT_MAX],
            "currency": request.amount.currency.code,
            "amount": wire.amount_text(request.amount),
            "transaction_id": request.idempotency_key,
            "payer_email": request.payment_method,
            "expires_date": wire.format_date(request.at + self.link_lifetime),
            "notify_api_version": wire.NOTIFY_API_VERSION,
        }
        for name, value in (
            ("notify_url", self._notify_url),
            ("return_url", self._return_url),
            ("cancel_url", self._cancel_url),
        ):
            if value:
                form[name] = value
        return form

    def charge(self, request: ChargeRequest) -> PaymentResult:
        """``POST /payments`` with ``transaction_id`` = the key; ``requires_action`` with the
        payment's link. A key already sent is answered from its payment (never a second one)."""
        code = request.amount.currency.code
        if code not in self.currencies:
            return PaymentResult.failed(
                DeclineKind.SOFT,
                "currency",
                f"Khipu does not charge in {code}",
                error=ErrorCode.INVALID_REQUEST,
            )
        if not wire.valid_email(request.payment_method):
            return PaymentResult.failed(
                DeclineKind.HARD,
                "payer_email",
                "the payment method is not an e-mail address",
                error=ErrorCode.PAYMENT_METHOD_UNSUPPORTED,
            )
        key = request.idempotency_key
        with self._lock:
            known = self._journal.get(key)
            fresh = request.first_sent_at is None or key in self._never_sent
            if known is None and fresh:
                self._journal[key] = _IN_DOUBT
                self._doubt_since[key] = request.at
                self._never_sent.discard(key)
        if known is not None:
            return self._resend(key, known, request.at)
        if not fresh:  # sent before by another process (or before a restart): never again
            return self._in_doubt(key, request.at, request.first_sent_at)
        try:
            answer = self._exchange("charge", "POST", "/payments", form=self._form(request))
        except NeverSent:
            self._forget(key)
            return _unknown(ErrorCode.GATEWAY_UNAVAILABLE, "the charge never reached Khipu")
        except OutcomeUnknown:
            return _unknown(ErrorCode.GATEWAY_TIMEOUT, "Khipu did not answer the charge")
        if answer.ok and isinstance(answer.body, Mapping):
            payment_id = answer.body.get("payment_id")
            url = answer.body.get("payment_url")
            if isinstance(payment_id, str) and payment_id:
                self._remember(key, payment_id)
                return PaymentResult(
                    status=PaymentStatus.REQUIRES_ACTION,
                    reference=payment_id,
                    action_url=url if isinstance(url, str) else None,
                    message="waiting for the payer to follow the link",
                )
        if answer.status == 403:
            self._forget(key)
            return _unknown(ErrorCode.AUTHENTICATION_ERROR, "Khipu refused our credentials")
        if answer.status == 400:
            self._forget(key)
            return PaymentResult.failed(
                DeclineKind.HARD,
                "invalid_request",
                self._safe(answer.message()),
                error=ErrorCode.INVALID_REQUEST,
            )
        return _unknown(
            ErrorCode.GATEWAY_UNAVAILABLE,
            f"Khipu answered HTTP {answer.status}; the payment may exist",
        )

    def _resend(self, key: str, known: str, at: datetime) -> PaymentResult:
        if known == _IN_DOUBT:
            return self._in_doubt(key, at)
        try:
            return self._read(known, at)
        except GatewayError as exc:
            return _unknown(ErrorCode.GATEWAY_TIMEOUT, f"looking the payment up failed: {exc.code}")

    def _remember(self, key: str, payment_id: str) -> None:
        with self._lock:
            self._journal[key] = payment_id
            self._doubt_since.pop(key, None)

    def _forget(self, key: str) -> None:
        """The charge surely never reached Khipu (or was refused): it may be sent again."""
        with self._lock:
            if self._journal.get(key) == _IN_DOUBT:
                del self._journal[key]
                self._doubt_since.pop(key, None)
            self._never_sent.add(key)

    def _in_doubt(
        self, key: str, at: datetime, first_sent_at: datetime | None = None
    ) -> PaymentResult:
        with self._lock:
            since = self._doubt_since.get(key) or first_sent_at or at
        if at > since + self.link_lifetime + timedelta(minutes=5):
            return wire.expired_result(
                None, "the payment's answer was lost and its link has expired unseen"
            )
        return _unknown(
            ErrorCode.GATEWAY_TIMEOUT,
            "Khipu's answer was lost and it has no lookup by transaction_id; waiting for the "
            "payment's notification",
        )

    def _read(self, payment_id: str, at: datetime) -> PaymentResult:
        answer = self._call("sync", "GET", self._path("payments", payment_id))
        if answer.status == 400:
            return wire.expired_result(payment_id, "Khipu no longer has the payment (deleted)")
        if not answer.ok or not isinstance(answer.body, Mapping):
            raise self._failure("sync", answer)
        return wire.payment_result(answer.body, answer.date or at)

    def sync(self, request: SyncRequest) -> PaymentResult | None:
        """By ``payment_id`` (the reference, or the journal's); ``UNKNOWN`` for a key in doubt,
        here or because the engine sent it before (``first_sent_at``) and Khipu cannot be asked
        by key; ``None`` only for a key surely never received."""
        key = request.idempotency_key
        with self._lock:
            known = self._journal.get(key)
            never_sent = key in self._never_sent
        reference = request.reference or (known or None)
        if reference:
            return self._read(reference, request.at)
        if known == _IN_DOUBT or (request.first_sent_at is not None and not never_sent):
            return self._in_doubt(key, request.at, request.first_sent_at)
        return None

    # -- withdrawing a link -----------------------------------------------------------------------

    def cancel_link(self, request: CancelLinkRequest) -> LinkCancellation:
        """``DELETE /payments/{id}`` ("Solo se pueden borrar pagos que estén pendientes de
        pagar. Esta operación no puede deshacerse."): ``CANCELED`` on 200. A refusal (400) is
        looked up with ``GET /payments/{id}``: a payment Khipu no longer has was deleted before
        (a repeat after a lost answer), ``CANCELED`` again; one no longer ``pending`` is
        ``TOO_LATE`` with its result (``done``: succeeded; ``verifying``: pending).

        :raises GatewayAuthenticationFailed: on 403.
        :raises GatewayError: retryable when Khipu did not answer or failed (503); the engine
            asks again later, which is safe: a deleted payment stays deleted.
        """
        path = self._path("payments", request.reference)
        answer = self._call("cancel_link", "DELETE", path)
        if answer.ok:
            return LinkCancellation(
                status=LinkCancellationStatus.CANCELED,
                message=self._safe(answer.message()) or "Khipu deleted the payment",
            )
        if answer.status != 400:
            raise self._failure("cancel_link", answer)
        refusal = self._safe(answer.message())
        found = self._call("cancel_link", "GET", path)
        if found.status == 400:
            return LinkCancellation(
                status=LinkCancellationStatus.CANCELED,
                code="400",
                message="Khipu no longer has the payment (deleted before)",
            )
        if not found.ok or not isinstance(found.body, Mapping):
            raise self._failure("cancel_link", found)
        result = wire.payment_result(found.body, found.date or request.at)
        if result.status is PaymentStatus.REQUIRES_ACTION:
            raise GatewayError(
                self._name,
                "invalid_request",
                f"cancel_link: Khipu refused to delete a pending payment: {refusal}",
                raw_code="400",
            )
        return LinkCancellation(
            status=LinkCancellationStatus.TOO_LATE, payment=result, code="400", message=refusal
        )

    # -- refunds ---------------------------------------------------------------------------------

    def refund(self, request: RefundRequest) -> RefundResult:
        """``POST /payments/{id}/refunds`` with ``amount``; a repeated key answers the first
        request's outcome (a lost whole refund is recognised by ``status_detail: reversed``)."""
        key = request.idempotency_key
        with self._lock:
            first = self._refunds.get(key)
            elsewhere = request.first_sent_at is not None and key not in self._never_sent
        if first is None and elsewhere:  # sent before by another process, or before a restart
            first = RefundResult(
                status=RefundStatus.UNKNOWN, message="sent before; Khipu lists no refunds"
            )
        if first is not None and first.status is not RefundStatus.UNKNOWN:
            return first
        if first is not None:
            return self._recover_refund(request, first)
        try:
            answer = self._exchange(
                "refund",
                "POST",
                self._path("payments", request.reference, "refunds"),
                form={"amount": wire.amount_text(request.amount)},
            )
        except NeverSent as exc:
            with self._lock:
                self._never_sent.add(key)
            raise GatewayError(
                self._name,
                ErrorCode.GATEWAY_UNAVAILABLE.value,
                "refund: the request never reached Khipu",
                retryable=True,
            ) from exc
        except OutcomeUnknown:
            return self._keep(
                key,
                RefundResult(
                    status=RefundStatus.UNKNOWN, message="Khipu did not answer the refund"
                ),
            )
        if answer.status == 403:
            raise self._failure("refund", answer)
        if answer.ok:
            result = RefundResult(status=RefundStatus.SUCCEEDED, reference=request.reference)
        elif answer.status == 400:
            result = RefundResult(
                status=RefundStatus.FAILED,
                code="invalid_request",
                message=self._safe(answer.message()),
            )
        else:
            result = RefundResult(
                status=RefundStatus.UNKNOWN,
                code=f"http_{answer.status}",
                message="Khipu failed the refund; it may have happened",
            )
        return self._keep(key, result)

    def _keep(self, key: str, result: RefundResult) -> RefundResult:
        with self._lock:
            self._refunds[key] = result
        return result

    def _recover_refund(self, request: RefundRequest, first: RefundResult) -> RefundResult:
        """A repeated key whose first answer was lost: a payment now ``reversed`` was refunded
        whole; anything else stays unknown (Khipu lists no refunds; never refund twice)."""
        answer = self._call("refund", "GET", self._path("payments", request.reference))
        if answer.ok and isinstance(answer.body, Mapping):
            if answer.body.get("status_detail") == "reversed":
                return self._keep(
                    request.idempotency_key,
                    RefundResult(status=RefundStatus.SUCCEEDED, reference=request.reference),
                )
        elif answer.status == 403:
            raise self._failure("refund", answer)
        return first

    # -- notifications ---------------------------------------------------------------------------

    def parse_notification(self, notification: Notification) -> NotificationFacts:
        """A 1.3 notification (``notification_token``), trusted only through the signed
        ``GET /payments?notification_token=``: a token Khipu does not know is refused
        (``invalid_request``), as is a payment of another receiver."""
        try:
            token = wire.notification_token(notification.body)
        except wire.NotANotification as exc:
            raise GatewayError(
                self._name, "invalid_request", f"not a Khipu notification: {exc}"
            ) from exc
        answer = self._call(
            "parse_notification", "GET", "/payments", params={"notification_token": token}
        )
        if answer.status == 400:
            raise GatewayError(
                self._name, "invalid_request", "Khipu does not know this notification token"
            )
        if not answer.ok or not isinstance(answer.body, Mapping):
            raise self._failure("parse_notification", answer)
        payment = answer.body
        if str(payment.get("receiver_id")) != self._receiver_id:
            raise GatewayError(
                self._name, "invalid_request", "the notification is about another receiver"
            )
        payment_id = payment.get("payment_id")
        if not isinstance(payment_id, str) or not payment_id:
            raise self._failure("parse_notification", answer)
        key = payment.get("transaction_id")
        key = key if isinstance(key, str) and key else None
        if key is not None:
            with self._lock:
                if self._journal.get(key) in (None, _IN_DOUBT):
                    self._journal[key] = payment_id
                    self._doubt_since.pop(key, None)
        status = payment.get("status")
        return NotificationFacts(
            event_id=f"khipu:{token}",
            kind=f"payment.{status}" if isinstance(status, str) else "payment",
            charge_reference=payment_id,
            idempotency_key=key,
            verified=False,
        )


def _server_time(response: httpx.Response) -> datetime | None:
    """Khipu's time from the answer's ``Date`` header (the last one, should a proxy or server
    add its own before the application's), or ``None``."""
    values = response.headers.get_list("date")
    if not values:
        return None
    try:
        moment = parsedate_to_datetime(values[-1])
    except (TypeError, ValueError, IndexError):
        return None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _unknown(error: ErrorCode, message: str) -> PaymentResult:
    return PaymentResult(status=PaymentStatus.UNKNOWN, error=error, message=message)


def from_environment(environ: Mapping[str, str]) -> KhipuGateway | None:
    """The gateway the environment configures (the ``billing.gateways`` entry point), or
    ``None`` without credentials: ``BILLING_KHIPU_RECEIVER_ID`` and ``BILLING_KHIPU_SECRET``,
    with optional ``BILLING_KHIPU_URL`` (Khipu's API 2.0 by default),
    ``BILLING_KHIPU_NOTIFY_URL``, ``BILLING_KHIPU_RETURN_URL``, ``BILLING_KHIPU_CANCEL_URL`` and
    ``BILLING_KHIPU_LINK_HOURS`` (how long a link stays payable; 72 by default)."""
    receiver_id = environ.get("BILLING_KHIPU_RECEIVER_ID", "").strip()
    secret = environ.get("BILLING_KHIPU_SECRET", "").strip()
    if not receiver_id or not secret:
        return None
    hours = environ.get("BILLING_KHIPU_LINK_HOURS", "").strip()
    lifetime = DEFAULT_LINK_LIFETIME
    if hours:
        try:
            lifetime = timedelta(hours=float(hours))
        except ValueError as exc:
            raise ValueError("BILLING_KHIPU_LINK_HOURS must be a number of hours") from exc
    return KhipuGateway(
        receiver_id,
        secret,
        base_url=environ.get("BILLING_KHIPU_URL", "").strip() or API_URL,
        notify_url=environ.get("BILLING_KHIPU_NOTIFY_URL", "").strip() or None,
        return_url=environ.get("BILLING_KHIPU_RETURN_URL", "").strip() or None,
        cancel_url=environ.get("BILLING_KHIPU_CANCEL_URL", "").strip() or None,
        link_lifetime=lifetime,
    )
