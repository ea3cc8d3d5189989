"""Payvalida (Colombia) as a :class:`billing.ports.PaymentGateway`: pay by link.

Every charge is a purchase order (``POST /api/v3/porders``) that the customer pays later through
its ``checkout`` link, at any of Payvalida's collection networks. There are no cards and no
customers: the payment method is the payer's e-mail address. The rules the port asks for, and
how Payvalida meets them:

* **once per key**: the order code (``order``) is derived from the engine's idempotency key
  (:func:`adapters.payvalida._wire.order_id`), and Payvalida keeps order codes unique. A resend
  meets ``0042`` (or ``0043``), and the adapter answers with the first order, looked up
  (``GET /api/v3/porders/{order}``); it never makes a second one.
* **unknown outcomes**: a timeout, a reset, a 5xx or a body that is not Payvalida's envelope is
  ``UNKNOWN``; only a refused connection is retried (:func:`adapters._http.send`). The result
  still carries the order code as its ``reference`` (ours, known before sending), so a
  notification about the order finds the attempt; :meth:`sync` resolves it by that code, which
  is also known from the key alone.
* **settling**: a pending order is ``requires_action`` with its link; paid (even after it
  expired) is succeeded; expired or deleted unpaid is a soft decline, ``payer_abandoned``.
* **withdrawing a link** (``cancel_link``): the order is deleted (``DELETE
  /api/v3/porders/{order}``, Payvalida's "Eliminar" page, outside the seeds), which only a
  pending order allows; a refused delete (``0041``) is looked up to say what became of it.
* **notifications**: ``pv_checksum`` is verified in constant time; one that does not verify is
  refused (``invalid_request``).
* **secrets**: ``FIXED_HASH`` and the notification secret live in :class:`~adapters._http.Secret`
  and only ever enter checksums; the checksums themselves are never logged.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

import httpx

from adapters._http import HttpGateway, NeverSent, OutcomeUnknown, Secret, new_client, send
from adapters.payvalida import _wire as wire
from billing.domain.errors import GatewayAuthenticationFailed, GatewayError
from billing.domain.money import Money
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
    StoredMethod,
    SyncRequest,
)

__all__ = ["DEFAULT_LINK_DAYS", "PayvalidaGateway", "from_environment"]

DEFAULT_LINK_DAYS = 7
"""How long a payment link stays payable, in days (1 to 30), unless configured."""

_log = logging.getLogger("adapters.payvalida")


class _Answer:
    """An HTTP answer: its status and Payvalida's envelope (``None`` when it is not one)."""

    __slots__ = ("envelope", "status")

    def __init__(self, status: int, envelope: wire.Envelope | None) -> None:
        self.status = status
        self.envelope = envelope

    @property
    def broken(self) -> bool:
        """A 5xx, or a body that is not the envelope: the outcome is unknown."""
        return self.status >= 500 or self.envelope is None


class PayvalidaGateway(HttpGateway):
    """Payvalida's purchase orders behind :class:`billing.ports.PaymentGateway` (thread-safe:
    one ``httpx.Client`` shared by every call)."""

    label = "Payvalida"

    capabilities: frozenset[Capability] = frozenset(
        {
            Capability.PAY_BY_LINK,
            Capability.REDIRECT_PAYMENTS,
            Capability.NOTIFICATIONS,
            Capability.SIGNED_NOTIFICATIONS,
            Capability.IDEMPOTENT_CHARGES,
            Capability.LINK_CANCELLATION,
        }
    )
    """No ``REFUNDS`` (the documents have no refund call), no customers, no cards;
    ``LINK_CANCELLATION`` deletes the pending order (outside the seeds: see :meth:`cancel_link`)."""
    currencies: frozenset[str] = wire.CURRENCIES

    def __init__(
        self,
        merchant: str,
        fixed_hash: str,
        *,
        notification_hash: str | None = None,
        base_url: str = wire.SANDBOX_URL,
        link_days: int = DEFAULT_LINK_DAYS,
        notify_url: str | None = None,
        rules: wire.ChecksumRules = wire.DEFAULT_RULES,
        timeout: float = 30.0,
        transport: httpx.BaseTransport | None = None,
        name: str = "payvalida",
    ) -> None:
        if not merchant:
            raise ValueError("a Payvalida merchant is required")
        if not 1 <= link_days <= wire.MAX_LINK_DAYS:
            raise ValueError(f"link_days must be 1 to {wire.MAX_LINK_DAYS}")
        self._name = name
        self._merchant = merchant
        self._fixed_hash = Secret(fixed_hash)
        self._notification_hash = Secret(notification_hash or fixed_hash)
        self._base_url = base_url
        self.link_days = link_days
        self.notify_url = notify_url
        """Where Payvalida should POST notifications: registered with Payvalida (its merchant
        module), not sent with orders (no order field carries it)."""
        self._rules = rules
        self._client = new_client(
            base_url,
            headers={"Content-Type": "application/json", "Accept": "application/json"},
            timeout=timeout,
            transport=transport,
        )

    # -- plumbing ----------------------------------------------------------------------------------

    def __repr__(self) -> str:
        return (
            f"PayvalidaGateway(name={self._name!r}, merchant={self._merchant!r}, "
            f"base_url={self._base_url!r}, link_days={self.link_days})"
        )

    def _exchange(
        self,
        operation: str,
        method: str,
        path: str,
        *,
        body: Mapping[str, Any] | None = None,
        params: Mapping[str, str] | None = None,
    ) -> _Answer:
        """One request, retried only while it surely never left.

        :raises NeverSent: every try was refused before sending.
        :raises OutcomeUnknown: the request may have arrived and no answer came back.
        """
        content = None if body is None else wire.dumps(body)
        try:
            response = send(self._client, method, path, content=content, params=params)
        except (NeverSent, OutcomeUnknown) as exc:
            _log.warning("payvalida %s: %s failed: %s", operation, method, type(exc).__name__)
            raise
        answer = _Answer(response.status_code, wire.envelope(wire.loads(response.content)))
        code = None if answer.envelope is None else answer.envelope.code
        _log.debug("payvalida %s: %s -> %s %s", operation, method, response.status_code, code)
        return answer

    def _call(
        self,
        operation: str,
        method: str,
        path: str,
        *,
        body: Mapping[str, Any] | None = None,
        params: Mapping[str, str] | None = None,
    ) -> wire.Envelope:
        """:meth:`_exchange` for operations other than a charge: failures raise."""
        try:
            answer = self._exchange(operation, method, path, body=body, params=params)
        except (NeverSent, OutcomeUnknown) as exc:
            raise self._unanswered(operation, exc) from exc
        if answer.broken or answer.envelope is None:
            raise GatewayError(
                self._name,
                ErrorCode.GATEWAY_UNAVAILABLE.value,
                f"{operation}: Payvalida answered HTTP {answer.status} without its envelope",
                retryable=True,
            )
        return answer.envelope

    def _failure(self, operation: str, answer: wire.Envelope) -> GatewayError:
        message = f"{operation}: Payvalida answered {answer.code} ({answer.description[:120]})"
        if answer.code in wire.AUTHENTICATION_CODES:
            return GatewayAuthenticationFailed(self._name, message, raw_code=answer.code)
        retryable = answer.code in wire.RETRY_CODES
        error = ErrorCode.PROCESSING_ERROR if retryable else ErrorCode.INVALID_REQUEST
        return GatewayError(
            self._name, error.value, message, raw_code=answer.code, retryable=retryable
        )

    # -- payment methods ---------------------------------------------------------------------------

    def register_customer(self, request: CustomerRequest) -> str:
        """Not supported: Payvalida keeps no customer records (an order carries the e-mail)."""
        raise GatewayError(self._name, "invalid_request", "Payvalida has no customer records")

    def attach_payment_method(self, request: AttachRequest) -> StoredMethod:
        """The token is the payer's e-mail address, where links go; nothing is sent."""
        email = request.token.strip()
        if not wire.valid_email(email):
            raise GatewayError(
                self._name, "invalid_request", "the token must be the payer's e-mail address"
            )
        return StoredMethod(reference=email, label=f"Payvalida {email}")

    def start_enrollment(self, request: EnrollmentRequest) -> Enrollment:
        raise GatewayError(self._name, "invalid_request", "Payvalida has no card enrollment")

    def complete_enrollment(
        self, customer_reference: str | None, reference: str
    ) -> EnrollmentResult:
        raise GatewayError(self._name, "invalid_request", "Payvalida has no card enrollment")

    # -- charges -----------------------------------------------------------------------------------

    def charge(self, request: ChargeRequest) -> PaymentResult:
        """Create the order for this key (``POST /api/v3/porders``) and answer with its link:
        ``requires_action``, ``reference`` = the order code, ``action_url`` = ``checkout``."""
        refused = self._refuse(request.amount, request.payment_method)
        if refused is not None:
            return refused
        order = wire.order_id(request.idempotency_key)
        body = wire.order_body(
            merchant=self._merchant,
            fixed_hash=self._fixed_hash.reveal(),
            email=request.payment_method,
            order=order,
            amount=wire.amount_text(request.amount),
            money=request.amount.currency.code,
            description=wire.plain_text(request.description),
            expiration=wire.expiration_for(request.at, self.link_days),
            rules=self._rules,
        )
        try:
            answer = self._exchange("charge", "POST", wire.ORDERS_PATH, body=body)
        except NeverSent:
            return _unknown(
                ErrorCode.GATEWAY_UNAVAILABLE, "the order never reached Payvalida", order
            )
        except OutcomeUnknown:
            return _unknown(ErrorCode.GATEWAY_TIMEOUT, "Payvalida did not answer the order", order)
        envelope = answer.envelope
        if answer.broken or envelope is None:
            return _unknown(
                ErrorCode.GATEWAY_UNAVAILABLE,
                f"Payvalida answered HTTP {answer.status} without its envelope",
                order,
            )
        if envelope.ok:
            return PaymentResult(
                status=PaymentStatus.REQUIRES_ACTION,
                reference=order,
                action_url=wire.checkout_url(envelope.data.get("checkout")),
            )
        return self._charge_error(envelope, order)

    def _refuse(self, amount: Money, email: str) -> PaymentResult | None:
        """A charge Payvalida cannot take, refused before anything is sent."""
        if amount.currency.code not in self.currencies:
            return PaymentResult.failed(
                DeclineKind.SOFT,
                "currency",
                f"Payvalida charges in {', '.join(sorted(self.currencies))} only",
                error=ErrorCode.INVALID_REQUEST,
            )
        if not amount.is_positive():
            return PaymentResult.failed(
                DeclineKind.SOFT, "amount", "the amount must be positive",
                error=ErrorCode.INVALID_REQUEST,
            )  # fmt: skip
        if not wire.valid_email(email):
            return PaymentResult.failed(
                DeclineKind.SOFT,
                "email",
                "the payment method is not a payer e-mail address",
                error=ErrorCode.NO_PAYMENT_METHOD,
            )
        return None

    def _charge_error(self, envelope: wire.Envelope, order: str) -> PaymentResult:
        code = envelope.code
        description = envelope.description[:120]
        if code in wire.DUPLICATE_CODES:
            try:
                first = self._query("charge", order)
            except GatewayError as exc:
                _log.warning("payvalida charge: looking the order up failed: %s", exc.code)
                first = None
            if first is not None:
                return wire.order_result(first, order)
            return _unknown(
                ErrorCode.DUPLICATE_REQUEST,
                f"Payvalida has this order ({code}) but the lookup failed",
                order,
            )
        if code in wire.AUTHENTICATION_CODES:
            return PaymentResult(
                status=PaymentStatus.UNKNOWN,
                code=code,
                message=f"Payvalida refused our credentials: {description}",
                error=ErrorCode.AUTHENTICATION_ERROR,
                reference=order,
            )
        if code in wire.RETRY_CODES:
            return PaymentResult(
                status=PaymentStatus.UNKNOWN,
                code=code,
                message=description,
                error=ErrorCode.PROCESSING_ERROR,
                reference=order,
            )
        return PaymentResult.failed(
            DeclineKind.SOFT, code, description, error=ErrorCode.INVALID_REQUEST
        )

    def _query(self, operation: str, order: str) -> Mapping[str, Any] | None:
        """``GET /api/v3/porders/{order}``: the order's ``DATA``, or ``None`` when Payvalida has
        no such order (``0041``)."""
        params = {
            "merchant": self._merchant,
            "checksum": wire.lookup_checksum(
                order, self._merchant, self._fixed_hash.reveal(), rules=self._rules
            ),
        }
        path = f"{wire.ORDERS_PATH}/{quote(order, safe='')}"
        envelope = self._call(operation, "GET", path, params=params)
        if envelope.ok:
            return envelope.data
        if envelope.code == wire.NOT_FOUND:
            return None
        raise self._failure(operation, envelope)

    def sync(self, request: SyncRequest) -> PaymentResult | None:
        """The order of this key, queried by its code; ``None`` only when Payvalida answers
        that it has no such order."""
        order = request.reference or wire.order_id(request.idempotency_key)
        found = self._query("sync", order)
        if found is None and order != wire.order_id(request.idempotency_key):
            order = wire.order_id(request.idempotency_key)
            found = self._query("sync", order)
        return None if found is None else wire.order_result(found, order)

    def cancel_link(self, request: CancelLinkRequest) -> LinkCancellation:
        """Delete the pending order ``reference`` (:meth:`cancel`): ``CANCELED`` on ``0000``.
        A refusal (``0041``: no pending order with that code) is looked up: an order deleted
        before (``CANCELADA``, a repeat after a lost answer) or one Payvalida never registered
        is ``CANCELED``; a paid (``APROBADA``, ``ANULADA``) or expired (``VENCIDA``) one is
        ``TOO_LATE`` with its result (an expired order can still be paid late).

        :raises GatewayAuthenticationFailed: for a checksum or merchant Payvalida refuses.
        :raises GatewayError: retryable when Payvalida did not answer or failed; the engine
            asks again later, which is safe: a deleted order stays deleted.
        """
        order = request.reference
        if self.cancel(order):
            return LinkCancellation(status=LinkCancellationStatus.CANCELED, code=wire.OK)
        found = self._query("cancel_link", order)
        if found is None or found.get("STATE") == wire.CANCELLED:
            return LinkCancellation(
                status=LinkCancellationStatus.CANCELED,
                code=wire.NOT_FOUND,
                message="the order was deleted before" if found else "Payvalida has no such order",
            )
        result = wire.order_result(found, order)
        if result.status is PaymentStatus.REQUIRES_ACTION:
            raise GatewayError(
                self._name,
                "invalid_request",
                f"cancel_link: Payvalida refused to delete pending order {order}",
                raw_code=wire.NOT_FOUND,
            )
        return LinkCancellation(
            status=LinkCancellationStatus.TOO_LATE,
            payment=result,
            code=wire.NOT_FOUND,
            message=f"the order is {str(found.get('STATE'))[:40]}, no longer pending",
        )

    def cancel(self, order: str) -> bool:
        """Delete a pending order (``DELETE /api/v3/porders/{order}`` with ``merchant`` and
        ``checksum`` = ``SHA512(order + merchant + FIXED_HASH)`` in the query): its link stops
        working (``CANCELADA``). ``False`` when it is no longer pending (paid, expired, deleted)
        or unknown (``0041``)."""
        params = {
            "merchant": self._merchant,
            "checksum": wire.lookup_checksum(
                order, self._merchant, self._fixed_hash.reveal(), rules=self._rules
            ),
        }
        path = f"{wire.ORDERS_PATH}/{quote(order, safe='')}"
        envelope = self._call("cancel", "DELETE", path, params=params)
        if envelope.ok:
            return True
        if envelope.code == wire.NOT_FOUND:
            return False
        raise self._failure("cancel", envelope)

    def register_plan(
        self,
        *,
        interval: str,
        interval_count: int,
        amount: Money,
        description: str = "",
        method: str = "",
    ) -> str:
        """Register a subscription plan (``POST /v4/subscriptions/plans``, seed 004) and return
        its ``id``. Plans only: assigning one to a customer is not documented."""
        if interval not in ("month", "week", "day"):
            raise GatewayError(self._name, "invalid_request", "interval: month, week or day")
        if interval_count < 1:
            raise GatewayError(self._name, "invalid_request", "interval_count must be >= 1")
        body = wire.plan_body(
            merchant=self._merchant,
            fixed_hash=self._fixed_hash.reveal(),
            interval=interval,
            interval_count=str(interval_count),
            amount=wire.amount_text(amount),
            description=wire.plain_text(description, default="") if description else "",
            method=method,
            rules=self._rules,
        )
        envelope = self._call("register_plan", "POST", wire.PLANS_PATH, body=body)
        if not envelope.ok:
            raise self._failure("register_plan", envelope)
        plan = envelope.data.get("id")
        if not isinstance(plan, str) or not plan:
            raise GatewayError(
                self._name, ErrorCode.GATEWAY_UNAVAILABLE.value, "register_plan: no plan id"
            )
        return plan

    # -- refunds -----------------------------------------------------------------------------------

    def refund(self, request: RefundRequest) -> RefundResult:
        """Not supported: the documents have no refund call."""
        raise GatewayError(self._name, "invalid_request", "Payvalida refunds are not supported")

    # -- notifications -----------------------------------------------------------------------------

    def parse_notification(self, notification: Notification) -> NotificationFacts:
        """What a notification claims, its ``pv_checksum`` verified (constant time); a body that
        is not one, or does not verify, raises ``invalid_request``."""
        try:
            return wire.notification_facts(
                notification.body, self._notification_hash.reveal(), rules=self._rules
            )
        except wire.NotANotification as exc:
            raise GatewayError(
                self._name, "invalid_request", f"not a genuine Payvalida notification: {exc}"
            ) from exc


def _unknown(error: ErrorCode, message: str, order: str) -> PaymentResult:
    """An unknown outcome, with the order code: our own id for the order, known before it was
    sent, so a notification about it finds the attempt even though the answer was lost."""
    return PaymentResult(
        status=PaymentStatus.UNKNOWN, error=error, message=message, reference=order
    )


def from_environment(environ: Mapping[str, str]) -> PayvalidaGateway | None:
    """The gateway the environment configures (the ``billing.gateways`` entry point), or
    ``None`` without credentials: ``BILLING_PAYVALIDA_MERCHANT`` and
    ``BILLING_PAYVALIDA_FIXED_HASH``, with ``BILLING_PAYVALIDA_URL`` (the sandbox by default;
    ``https://api.payvalida.com`` for production), ``BILLING_PAYVALIDA_NOTIFICATION_HASH`` (the
    notification secret; the fixed hash by default), ``BILLING_PAYVALIDA_NOTIFY_URL`` and
    ``BILLING_PAYVALIDA_LINK_DAYS`` (1 to 30; 7 by default)."""
    merchant = environ.get("BILLING_PAYVALIDA_MERCHANT", "").strip()
    fixed_hash = environ.get("BILLING_PAYVALIDA_FIXED_HASH", "").strip()
    if not merchant or not fixed_hash:
        return None
    days_text = environ.get("BILLING_PAYVALIDA_LINK_DAYS", "").strip()
    try:
        days = int(days_text) if days_text else DEFAULT_LINK_DAYS
    except ValueError:
        raise ValueError("BILLING_PAYVALIDA_LINK_DAYS must be a whole number of days") from None
    algorithm = environ.get("BILLING_PAYVALIDA_NOTIFICATION_ALGORITHM", "").strip().lower()
    if algorithm not in ("", "sha256", "sha512"):
        raise ValueError("BILLING_PAYVALIDA_NOTIFICATION_ALGORITHM must be sha256 or sha512")
    rules = wire.ChecksumRules(
        notification_algorithm="sha512" if algorithm == "sha512" else "sha256"
    )
    return PayvalidaGateway(
        merchant,
        fixed_hash,
        notification_hash=environ.get("BILLING_PAYVALIDA_NOTIFICATION_HASH", "").strip() or None,
        base_url=environ.get("BILLING_PAYVALIDA_URL", "").strip() or wire.SANDBOX_URL,
        link_days=days,
        notify_url=environ.get("BILLING_PAYVALIDA_NOTIFY_URL", "").strip() or None,
        rules=rules,
    )
