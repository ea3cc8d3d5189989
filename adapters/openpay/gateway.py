"""Openpay (Mexico) as a :class:`billing.ports.PaymentGateway`.

Customers, cards stored from openpay.js tokens, and card-on-file charges, all at customer level
(``/v1/{merchant_id}/customers/{customer_id}/...``), authenticated with HTTP Basic (the private key
as the user name, an empty password). The rules the port asks for, and how Openpay meets them:

* **once per key**: the engine's idempotency key is the charge's ``order_id``, which Openpay keeps
  unique across all transactions. A resend meets error 1006 (409), and the adapter then looks the
  first charge up and answers with it; it never charges again.
* **unknown outcomes**: a timeout, a reset, a 5xx or an HTML page after the request left is
  ``UNKNOWN`` (``gateway_timeout`` or ``gateway_unavailable``); only a refused connection is
  retried (:func:`adapters._http.send`). :meth:`OpenpayGateway.sync` resolves it by the charge's
  id when known, else by scanning the customer's charges for the ``order_id`` (the document has
  no ``order_id`` filter).
* **declines are results**: Openpay answers a declined charge with an error object (402 and a
  3xxx code); :mod:`adapters.openpay._wire` maps every documented code.
* **secrets**: the private key lives in a :class:`~adapters._http.Secret` and only ever reaches
  the ``Authorization`` header; card data never passes through this adapter (tokens do).
"""

from __future__ import annotations

import logging
from collections.abc import Generator, Mapping
from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import quote

import httpx

from adapters._http import HttpGateway, NeverSent, OutcomeUnknown, Secret, new_client, send
from adapters.openpay import _wire as wire
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
    Notification,
    NotificationFacts,
    RefundRequest,
    RefundResult,
    RefundStatus,
    StoredMethod,
    SyncRequest,
)

__all__ = ["SANDBOX_URL", "OpenpayGateway", "from_environment"]

SANDBOX_URL = "https://sandbox-api.openpay.mx"
"""The sandbox base URL; production is ``https://api.openpay.mx`` with production keys (§1.1)."""

PAGE = 100
"""Items per page when the adapter scans a list (the document's maximum ``limit`` is unknown;
the fake allows up to 100)."""

_log = logging.getLogger("adapters.openpay")


class _BasicAuth(httpx.Auth):
    """Openpay's HTTP Basic authentication; the key shows itself nowhere but in the header."""

    def __init__(self, key: Secret) -> None:
        self._key = key

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        request.headers["Authorization"] = wire.basic_authorization(self._key.reveal())
        yield request

    def __repr__(self) -> str:
        return "_BasicAuth('***')"


@dataclass(frozen=True, slots=True)
class _Answer:
    """An HTTP answer from Openpay: its status and its JSON body (``None`` when not JSON)."""

    status: int
    body: Any

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    def error(self) -> wire.ApiError:
        return wire.parse_error(self.status, self.body)


class OpenpayGateway(HttpGateway):
    """Openpay's REST API behind :class:`billing.ports.PaymentGateway` (thread-safe: one
    ``httpx.Client`` shared by every call)."""

    label = "Openpay"

    capabilities: frozenset[Capability] = frozenset(
        {
            Capability.CUSTOMERS,
            Capability.CARD_TOKENS,
            Capability.STORED_CARD_CHARGES,
            Capability.REFUNDS,
            Capability.NOTIFICATIONS,
            Capability.IDEMPOTENT_CHARGES,
        }
    )
    """No ``PARTIAL_REFUNDS``: the document's refund has no amount, it returns the whole charge
    (§7.7). No ``SIGNED_NOTIFICATIONS``: Openpay signs nothing. No enrollment pages or redirects."""
    currencies: frozenset[str] = frozenset(wire.CURRENCIES)
    """A charge's ``currency`` is ``MXN`` or ``USD``, nothing else (§3.4)."""

    def __init__(
        self,
        merchant_id: str,
        private_key: str,
        *,
        base_url: str = SANDBOX_URL,
        timeout: float = 30.0,
        transport: httpx.BaseTransport | None = None,
        name: str = "openpay",
    ) -> None:
        if not merchant_id:
            raise ValueError("an Openpay merchant id is required")
        self._name = name
        self._merchant_id = merchant_id
        self._key = Secret(private_key)
        self._base_url = base_url
        self._client = new_client(
            base_url,
            auth=_BasicAuth(self._key),
            headers={"Content-Type": "application/json", "Accept": "application/json"},
            timeout=timeout,
            transport=transport,
        )

    # -- plumbing ----------------------------------------------------------------------------------

    def __repr__(self) -> str:
        return (
            f"OpenpayGateway(name={self._name!r}, merchant_id={self._merchant_id!r}, "
            f"base_url={self._base_url!r})"
        )

    def _path(self, *parts: str) -> str:
        """``/v1/{merchant_id}/part/part...``, each part escaped."""
        return "/".join(["", "v1", *(quote(part, safe="") for part in (self._merchant_id, *parts))])

    def _scope(self, customer_reference: str | None, *parts: str) -> str:
        """A customer-level path when the customer is known, else the merchant-level one."""
        if customer_reference:
            return self._path("customers", customer_reference, *parts)
        return self._path(*parts)

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

        :raises NeverSent: when every try was refused before sending.
        :raises OutcomeUnknown: when the request may have arrived and no answer came back.
        """
        content = None if body is None else wire.dumps(body)
        try:
            response = send(self._client, method, path, content=content, params=params)
        except (NeverSent, OutcomeUnknown) as exc:
            _log.warning(
                "openpay %s: %s %s failed: %s", operation, method, path, type(exc).__name__
            )
            raise
        _log.debug("openpay %s: %s %s -> %s", operation, method, path, response.status_code)
        return _Answer(response.status_code, wire.loads(response.content))

    def _call(
        self,
        operation: str,
        method: str,
        path: str,
        *,
        body: Mapping[str, Any] | None = None,
        params: Mapping[str, str] | None = None,
    ) -> _Answer:
        """:meth:`_exchange` for operations other than a charge: a transport failure becomes a
        retryable :class:`GatewayError`."""
        try:
            return self._exchange(operation, method, path, body=body, params=params)
        except (NeverSent, OutcomeUnknown) as exc:
            raise self._unanswered(operation, exc) from exc

    def _failure(self, operation: str, error: wire.ApiError) -> GatewayError:
        """The exception for an error answer to an operation other than a charge."""
        rule = wire.rule_for(error)
        raw = None if error.code is None else str(error.code)
        message = f"{operation}: {error.description} (HTTP {error.http_status})"
        if rule.outcome is wire.Outcome.AUTHENTICATION:
            return GatewayAuthenticationFailed(self._name, message, raw_code=raw)
        return GatewayError(
            self._name,
            rule.error.value,
            message,
            raw_code=raw,
            retryable=rule.outcome is wire.Outcome.UNKNOWN,
        )

    def _error_of(self, answer: _Answer) -> wire.ApiError:
        """The error of an answer, its description made safe to show (:meth:`_safe`)."""
        error = answer.error()
        return replace(error, description=self._safe(error.description))

    def _unavailable(self, message: str, *, retryable: bool = True) -> GatewayError:
        """Openpay failed, or answered something unreadable: the operation may have happened."""
        return GatewayError(
            self._name, ErrorCode.GATEWAY_UNAVAILABLE.value, message, retryable=retryable
        )

    def _safe(self, text: str) -> str:
        """Gateway text with card numbers masked and our key removed, should Openpay echo it."""
        return wire.scrub(text).replace(self._key.reveal(), "***")

    def _object(self, operation: str, answer: _Answer) -> Mapping[str, Any]:
        """The JSON object of a successful answer, or an error if it is not one."""
        if not answer.ok:
            raise self._failure(operation, self._error_of(answer))
        if not isinstance(answer.body, Mapping):
            raise self._unavailable(
                f"{operation}: Openpay answered HTTP {answer.status} without a JSON object"
            )
        return answer.body

    def _pages(self, operation: str, path: str) -> Generator[list[Any], None, None]:
        """Every page of a list endpoint (``offset``/``limit``, §3.8), newest first."""
        offset = 0
        while True:
            params = {"offset": str(offset), "limit": str(PAGE)}
            answer = self._call(operation, "GET", path, params=params)
            if not answer.ok:
                raise self._failure(operation, self._error_of(answer))
            if not isinstance(answer.body, list):
                raise self._unavailable(
                    f"{operation}: Openpay answered a list request without a JSON array"
                )
            yield answer.body
            if len(answer.body) < PAGE:
                return
            offset += PAGE

    # -- customers and cards -----------------------------------------------------------------------

    def register_customer(self, request: CustomerRequest) -> str:
        """``POST /customers``; a retry that meets 2003 (the ``external_id`` exists) answers
        with the customer registered the first time."""
        body = wire.customer_body(request)
        answer = self._call("register_customer", "POST", self._path("customers"), body=body)
        if not answer.ok and self._error_of(answer).code == 2003:
            existing = self._find_customer(str(body["external_id"]))
            if existing is not None:
                return existing
        return self._id(self._object("register_customer", answer), "register_customer")

    def _find_customer(self, external: str) -> str | None:
        """The id of the customer with this ``external_id`` (a scan: no such filter exists)."""
        for page in self._pages("register_customer", self._path("customers")):
            for item in page:
                if isinstance(item, Mapping) and item.get("external_id") == external:
                    return self._id(item, "register_customer")
        return None

    def _id(self, data: Mapping[str, Any], operation: str) -> str:
        value = data.get("id")
        if not isinstance(value, str) or not value:
            raise self._unavailable(f"{operation}: Openpay's answer has no id", retryable=False)
        return value

    def attach_payment_method(self, request: AttachRequest) -> StoredMethod:
        """``POST /customers/{id}/cards`` with the token (§11.3); a retry that meets 2002 (the
        card is already on the customer) answers with that card."""
        path = self._scope(request.customer_reference, "cards")
        answer = self._call(
            "attach_payment_method", "POST", path, body=wire.card_body(request.token)
        )
        if not answer.ok and self._error_of(answer).code == 2002:
            existing = self._find_card(request.customer_reference, request.token)
            if existing is not None:
                return existing
        card = self._object("attach_payment_method", answer)
        try:
            return wire.stored_method(card)
        except ValueError as exc:
            raise self._unavailable(f"attach_payment_method: {exc}", retryable=False) from exc

    def _find_card(self, customer_reference: str | None, token: str) -> StoredMethod | None:
        """The stored card a token stood for: the token's masked data against each card's."""
        token_id, _ = wire.split_token(token)
        answer = self._call("attach_payment_method", "GET", self._path("tokens", token_id))
        token_card = self._object("attach_payment_method", answer).get("card")
        if not isinstance(token_card, Mapping):
            return None
        path = self._scope(customer_reference, "cards")
        for page in self._pages("attach_payment_method", path):
            for card in page:
                if isinstance(card, Mapping) and wire.same_card(token_card, card):
                    return wire.stored_method(card)
        return None

    def cancel_link(self, request: CancelLinkRequest) -> LinkCancellation:
        """Not supported: card charges settle at once, with no payment link to withdraw."""
        raise GatewayError(self._name, "invalid_request", "Openpay has no links to withdraw")

    def start_enrollment(self, request: EnrollmentRequest) -> Enrollment:
        """Not supported: cards are stored from openpay.js tokens, with no Openpay page."""
        raise GatewayError(self._name, "invalid_request", "Openpay has no card enrollment pages")

    def complete_enrollment(
        self, customer_reference: str | None, reference: str
    ) -> EnrollmentResult:
        """Not supported (see :meth:`start_enrollment`)."""
        raise GatewayError(self._name, "invalid_request", "Openpay has no card enrollment pages")

    # -- charges -----------------------------------------------------------------------------------

    def charge(self, request: ChargeRequest) -> PaymentResult:
        """``POST /customers/{id}/charges`` with the stored card and ``order_id`` = the key."""
        try:
            body = wire.charge_body(request)
        except ValueError as exc:  # a currency Openpay does not take: refused before sending
            return PaymentResult.failed(
                DeclineKind.SOFT, "currency", str(exc), error=ErrorCode.INVALID_REQUEST
            )
        order = str(body["order_id"])
        path = self._scope(request.customer_reference, "charges")
        try:
            answer = self._exchange("charge", "POST", path, body=body)
        except NeverSent:
            return _unknown(ErrorCode.GATEWAY_UNAVAILABLE, "the charge never reached Openpay")
        except OutcomeUnknown:
            return _unknown(ErrorCode.GATEWAY_TIMEOUT, "Openpay did not answer the charge")
        if answer.ok:
            if isinstance(answer.body, Mapping):
                return wire.charge_result(answer.body)
            return _unknown(ErrorCode.GATEWAY_UNAVAILABLE, "Openpay answered without a charge")
        return self._charge_error(self._error_of(answer), order, request.customer_reference)

    def _charge_error(
        self, error: wire.ApiError, order: str, customer_reference: str | None
    ) -> PaymentResult:
        """A charge's result for an error answer: 1006 is looked up, a decline gets the failed
        transaction's id when it can be found, the rest follows the table."""
        rule = wire.rule_for(error)
        if rule.outcome is wire.Outcome.DUPLICATE:
            first = self._lookup(order, customer_reference)
            return wire.error_result(error) if first is None else wire.charge_result(first)
        if rule.outcome is wire.Outcome.DECLINE:
            first = self._lookup(order, customer_reference)
            reference = None if first is None else first.get("id")
            return wire.error_result(
                error, reference=reference if isinstance(reference, str) else None
            )
        return wire.error_result(error)

    def _lookup(self, order: str, customer_reference: str | None) -> Mapping[str, Any] | None:
        """:meth:`_find_order` for a charge's follow-up: a failure only means "not found now"."""
        try:
            return self._find_order("charge", order, customer_reference)
        except GatewayError as exc:
            _log.warning("openpay charge: looking up order %s failed: %s", order, exc.code)
            return None

    def _find_order(
        self, operation: str, order: str, customer_reference: str | None
    ) -> Mapping[str, Any] | None:
        """The charge with this ``order_id``, scanning the customer's (or the merchant's)
        charges, newest first."""
        for page in self._pages(operation, self._scope(customer_reference, "charges")):
            found = wire.find_order(page, order)
            if found is not None:
                return found
        return None

    def sync(self, request: SyncRequest) -> PaymentResult | None:
        """The charge by its id when known (``GET .../charges/{id}``), else by ``order_id``;
        ``None`` only when Openpay has no charge with that ``order_id``."""
        order = wire.order_id(request.idempotency_key)
        if request.reference:
            path = self._scope(request.customer_reference, "charges", request.reference)
            answer = self._call("sync", "GET", path)
            if answer.ok or self._error_of(answer).code != 1005:
                return wire.charge_result(self._object("sync", answer))
        found = self._find_order("sync", order, request.customer_reference)
        return None if found is None else wire.charge_result(found)

    # -- refunds -----------------------------------------------------------------------------------

    def refund(self, request: RefundRequest) -> RefundResult:
        """Refund a whole charge (``POST .../charges/{id}/refund``, §7.7).

        The charge is read first: one that already has a refund answers with it (so a repeated
        refund refunds nothing more), and an amount other than the whole charge is ``FAILED``
        (``partial_refund_unsupported``; no ``PARTIAL_REFUNDS``: the document's refund has no
        amount) without anything sent.
        """
        path = self._scope(request.customer_reference, "charges", request.reference)
        answer = self._call("refund", "GET", path)
        if not answer.ok and self._error_of(answer).code == 1005:
            return self._refund_error(self._error_of(answer))
        charge = self._object("refund", answer)
        existing = wire.refund_result(charge)
        if existing is not None:
            return existing
        refused = self._not_whole(request, charge)
        if refused is not None:
            return refused
        try:
            answer = self._exchange(
                "refund", "POST", f"{path}/refund", body=wire.refund_body(request.idempotency_key)
            )
        except NeverSent as exc:
            raise self._unavailable("refund: the request never reached Openpay") from exc
        except OutcomeUnknown:
            return RefundResult(
                status=RefundStatus.UNKNOWN, message="Openpay did not answer the refund"
            )
        if not answer.ok:
            return self._refund_error(self._error_of(answer))
        refunded = wire.refund_result(self._object("refund", answer))
        return refunded or RefundResult(
            status=RefundStatus.UNKNOWN, message="Openpay's answer has no refund"
        )

    def _not_whole(self, request: RefundRequest, charge: Mapping[str, Any]) -> RefundResult | None:
        """``FAILED`` (``partial_refund_unsupported``) unless the refund is for the whole
        charge: Openpay's refund has no amount (§7.7), and nothing is sent."""
        paid = wire.to_money(charge.get("amount"), charge.get("currency"))
        if paid == request.amount:
            return None
        shown = "an unknown amount" if paid is None else str(paid)
        return RefundResult(
            status=RefundStatus.FAILED,
            code="partial_refund_unsupported",
            message=(
                f"Openpay refunds whole charges only: charge {request.reference} is {shown}, "
                f"the refund asks for {request.amount}"
            ),
        )

    def _refund_error(self, error: wire.ApiError) -> RefundResult:
        """A refund's result for an error answer: credentials raise, a 5xx is unknown, the rest
        is a refusal (nothing moved)."""
        rule = wire.rule_for(error)
        if rule.outcome is wire.Outcome.AUTHENTICATION:
            raise self._failure("refund", error)
        status = (
            RefundStatus.UNKNOWN if rule.outcome is wire.Outcome.UNKNOWN else RefundStatus.FAILED
        )
        code = str(error.code) if error.code is not None else f"http_{error.http_status}"
        return RefundResult(status=status, code=code, message=error.description)

    # -- notifications -----------------------------------------------------------------------------

    def parse_notification(self, notification: Notification) -> NotificationFacts:
        """What an Openpay webhook claims; never ``verified`` (Openpay signs nothing, so the
        engine re-fetches the charge). Raises ``invalid_request`` for a body that is not one."""
        try:
            return wire.notification_facts(notification.body)
        except wire.NotANotification as exc:
            raise GatewayError(
                self._name, "invalid_request", f"not an Openpay notification: {exc}"
            ) from exc


def _unknown(error: ErrorCode, message: str) -> PaymentResult:
    return PaymentResult(status=PaymentStatus.UNKNOWN, error=error, message=message)


def from_environment(environ: Mapping[str, str]) -> OpenpayGateway | None:
    """The gateway the environment configures (the ``billing.gateways`` entry point), or
    ``None`` without credentials: ``BILLING_OPENPAY_MERCHANT_ID`` and
    ``BILLING_OPENPAY_PRIVATE_KEY``, with ``BILLING_OPENPAY_BASE_URL`` (the sandbox by default;
    ``https://api.openpay.mx`` for production)."""
    merchant_id = environ.get("BILLING_OPENPAY_MERCHANT_ID", "").strip()
    private_key = environ.get("BILLING_OPENPAY_PRIVATE_KEY", "").strip()
    if not merchant_id or not private_key:
        return None
    base_url = environ.get("BILLING_OPENPAY_BASE_URL", "").strip() or SANDBOX_URL
    return OpenpayGateway(merchant_id, private_key, base_url=base_url)
