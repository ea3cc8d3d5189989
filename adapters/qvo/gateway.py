"""QVO (Chile) as a :class:`billing.ports.PaymentGateway`.

QVO keeps customers, stores cards only through Webpay Oneclick inscriptions (the customer types
the card on Webpay's page, never here), charges a stored card synchronously, and refunds a
charge in full. It has no idempotency keys and signs no webhooks, so:

* every charge carries the engine's key at the end of its description, and before sending a
  charge the gateway looks for a transaction with that key (``GET /transactions`` filtered by
  description): a key is charged at most once, and :meth:`QvoGateway.sync` finds a charge whose
  answer was lost;
* a webhook is only a hint (``verified=False``): the engine re-fetches the transaction.

Requests are retried only when they surely never left (:func:`adapters._http.send`). The API
token lives in a :class:`~adapters._http.Secret` and is added to each request by an
:class:`httpx.Auth`, so it is in no repr, log line or exception.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Generator, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import httpx

from adapters._http import HttpGateway, NeverSent, OutcomeUnknown, Secret, new_client, send
from adapters.qvo import _wire as wire
from billing.domain.errors import GatewayError, InvalidArgument
from billing.domain.payments import DeclineKind, ErrorCode, PaymentResult
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

__all__ = ["QvoGateway", "from_environment"]

_log = logging.getLogger(__name__)
_T = TypeVar("_T")

_MAX_LOOKUP_PAGES = 20
"""How many pages of matching transactions a key lookup reads at most (2000 transactions)."""


class _BearerToken(httpx.Auth):
    """``Authorization: Bearer <token>`` on every request, from a secret that never shows."""

    def __init__(self, token: Secret) -> None:
        self._token = token

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        request.headers["Authorization"] = f"Bearer {self._token.reveal()}"
        yield request

    def __repr__(self) -> str:
        return "_BearerToken(***)"


@dataclass(frozen=True, slots=True)
class _Reply:
    """QVO's answer: the status, the body as JSON (None when it is not JSON), the headers."""

    status: int
    body: Any
    headers: httpx.Headers

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    def error(self) -> wire.QvoError:
        return wire.parse_error(self.status, self.body)


class QvoGateway(HttpGateway):
    """QVO's API, in the engine's words (see the module docstring for how it keeps its promises).

    ``base_url`` is the sandbox by default (``https://api.qvo.cl`` is production); ``transport``
    replaces the network, for tests against :class:`~adapters.qvo.fake.FakeQvo`. Close it (or
    use it as a context manager) to release its connections.
    """

    label = "QVO"

    def __init__(
        self,
        api_token: str,
        *,
        base_url: str = wire.SANDBOX_URL,
        timeout: float = 30.0,
        transport: httpx.BaseTransport | None = None,
        name: str = "qvo",
    ) -> None:
        token = Secret(api_token)
        self._name = name
        self._base_url = base_url.rstrip("/")
        self._client = new_client(
            self._base_url,
            auth=_BearerToken(token),
            headers={"Accept": "application/json", "User-Agent": "billing-qvo-adapter"},
            timeout=timeout,
            transport=transport,
        )

    # -- identity ------------------------------------------------------------------------------

    @property
    def currencies(self) -> frozenset[str]:
        """QVO charges in Chilean pesos only (its amounts are integer pesos)."""
        return frozenset({"CLP"})

    @property
    def capabilities(self) -> frozenset[Capability]:
        """Customers, Oneclick enrollment, stored-card charges, full refunds, webhooks."""
        return frozenset(
            {
                Capability.CUSTOMERS,
                Capability.CARD_ENROLLMENT,
                Capability.STORED_CARD_CHARGES,
                Capability.REFUNDS,
                Capability.NOTIFICATIONS,
            }
        )

    def __repr__(self) -> str:
        return f"QvoGateway(name={self._name!r}, base_url={self._base_url!r})"

    # -- customers and cards -------------------------------------------------------------------

    def register_customer(self, request: CustomerRequest) -> str:
        """Create the QVO customer (``POST /customers``) and return its ``cus_`` id.

        QVO refuses a second customer with one email; when that happens, the customer holding
        the email is returned if it was registered for this engine customer (a registration
        repeated after a lost answer), otherwise ``duplicate_request`` is raised.
        """
        body = wire.customer_body(request)
        try:
            return self._parsed(wire.parse_customer_id, self._ask("POST", "/customers", json=body))
        except GatewayError as exc:
            if exc.code != ErrorCode.INVALID_REQUEST:
                raise
            found, taken = wire.owned_customer(
                self._ask("GET", "/customers", params=wire.customer_lookup_params(body["email"])),
                request.customer_id,
            )
            if found is not None:
                return found
            if taken:
                raise GatewayError(
                    self._name,
                    ErrorCode.DUPLICATE_REQUEST.value,
                    "another QVO customer already has this email",
                    raw_code=exc.raw_code,
                ) from exc
            raise

    def attach_payment_method(self, request: AttachRequest) -> StoredMethod:
        """Not supported: QVO stores cards only through Oneclick inscriptions."""
        raise GatewayError(
            self._name,
            ErrorCode.INVALID_REQUEST.value,
            "QVO stores cards only through Webpay Oneclick inscriptions (start_enrollment)",
        )

    def cancel_link(self, request: CancelLinkRequest) -> LinkCancellation:
        """Not supported: stored cards are charged at once, with no payment link to withdraw."""
        raise GatewayError(self._name, "invalid_request", "QVO has no payment links to withdraw")

    def start_enrollment(self, request: EnrollmentRequest) -> Enrollment:
        """Start a Oneclick inscription: send the customer to the returned ``redirect_url``;
        Webpay brings them back to ``return_url?uid=<reference>``."""
        customer = self._customer(request.customer_reference)
        answer = self._ask(
            "POST",
            wire.path("customers", customer, "cards", "inscriptions"),
            json=wire.inscription_body(request.return_url),
        )
        return self._parsed(wire.parse_enrollment, answer)

    def complete_enrollment(
        self, customer_reference: str | None, reference: str
    ) -> EnrollmentResult:
        """The inscription's result; a stored card's reference is its ``woc_`` id."""
        customer = self._customer(customer_reference)
        answer = self._ask(
            "GET", wire.path("customers", customer, "cards", "inscriptions", reference)
        )
        return self._parsed(wire.parse_inscription, answer)

    # -- charges -------------------------------------------------------------------------------

    def charge(self, request: ChargeRequest) -> PaymentResult:
        """Charge the stored card once for this key; never raises for QVO's answers.

        A transaction already carrying the key is answered without charging again. A lost
        answer, a 5xx or refused credentials give ``UNKNOWN``; a decline gives ``FAILED``.
        """
        try:
            body = wire.charge_body(request)
        except InvalidArgument as exc:
            return PaymentResult.failed(
                DeclineKind.SOFT, "invalid_amount", str(exc), error=ErrorCode.INVALID_REQUEST
            )
        if not request.customer_reference:
            return PaymentResult.failed(
                DeclineKind.SOFT,
                "no_customer",
                "a QVO charge needs the customer's QVO id (customer_reference)",
                error=ErrorCode.INVALID_REQUEST,
            )
        try:
            earlier = self._find_by_key(request.idempotency_key, body["amount"])
        except GatewayError as exc:
            return wire.unknown_result(ErrorCode(exc.code), f"looking the key up failed: {exc}")
        if earlier is not None:
            return wire.transaction_result(earlier)
        return self._send_charge(request, body)

    def _send_charge(self, request: ChargeRequest, body: Mapping[str, Any]) -> PaymentResult:
        route = wire.path(
            "customers", str(request.customer_reference), "cards", request.payment_method, "charge"
        )
        try:
            reply = self._send("POST", route, json=body)
        except NeverSent as exc:
            return wire.unknown_result(
                ErrorCode.GATEWAY_UNAVAILABLE, f"QVO could not be reached ({exc})"
            )
        except OutcomeUnknown as exc:
            return wire.unknown_result(ErrorCode.GATEWAY_TIMEOUT, f"QVO's answer was lost ({exc})")
        if reply.ok:
            try:
                return wire.transaction_result(wire.parse_transaction(reply.body))
            except ValueError:
                return wire.unknown_result(
                    ErrorCode.GATEWAY_UNAVAILABLE, f"HTTP {reply.status} without a transaction"
                )
        result = wire.charge_error_result(reply.error())
        if result.decline is None:
            return result
        # A declined payment may have left a transaction (with its reference and exact status).
        try:
            found = self._find_by_key(request.idempotency_key, body["amount"])
        except GatewayError:
            found = None
        return result if found is None else wire.transaction_result(found)

    def sync(self, request: SyncRequest) -> PaymentResult | None:
        """What became of the charge sent with this key: by its reference when one is known
        (``GET /transactions/{id}``), else by the key in the descriptions; None if none."""
        if request.reference:
            try:
                answer = self._ask("GET", wire.path("transactions", request.reference))
                return wire.transaction_result(self._parsed(wire.parse_transaction, answer))
            except GatewayError as exc:
                if exc.code != ErrorCode.NOT_FOUND:
                    raise
        try:
            amount: int | None = wire.amount_of(request.amount)
        except InvalidArgument:
            amount = None
        found = self._find_by_key(request.idempotency_key, amount)
        return None if found is None else wire.transaction_result(found)

    def _find_by_key(self, key: str, amount: int | None) -> Mapping[str, Any] | None:
        """The transaction whose description carries ``key``, walking the filtered pages."""
        matches: list[object] = []
        for page in range(1, _MAX_LOOKUP_PAGES + 1):
            reply = self._reply(
                "GET", "/transactions", params=wire.key_lookup_params(key, amount, page)
            )
            if not isinstance(reply.body, list):
                raise GatewayError(
                    self._name,
                    ErrorCode.GATEWAY_UNAVAILABLE.value,
                    "QVO's transaction list is not an array",
                    retryable=True,
                )
            matches.extend(reply.body)
            if not wire.has_more_pages(page, len(reply.body), reply.headers.get("X-Total")):
                break
        return wire.pick_transaction(matches, key)

    # -- refunds -------------------------------------------------------------------------------

    def refund(self, request: RefundRequest) -> RefundResult:
        """Refund a charge in full (QVO has no partial refunds).

        The transaction is read first: one already ``refunded`` answers ``SUCCEEDED`` without
        a second refund (so a repeated request is harmless), and an amount other than the full
        charge answers ``FAILED`` (``partial_refund_unsupported``) without calling QVO. A lost
        answer to the refund itself gives ``UNKNOWN``; failing to read the transaction raises
        :class:`~billing.domain.errors.GatewayError`, since nothing was sent.
        """
        try:
            wanted = wire.amount_of(request.amount)
        except InvalidArgument as exc:
            return RefundResult(status=RefundStatus.FAILED, code="invalid_amount", message=str(exc))
        try:
            transaction = self._ask("GET", wire.path("transactions", request.reference))
        except GatewayError as exc:
            if exc.code != ErrorCode.NOT_FOUND:
                raise
            return RefundResult(status=RefundStatus.FAILED, code=exc.code, message=str(exc))
        refused = _refusal(transaction, wanted)
        if refused is not None:
            return refused
        return self._send_refund(request.reference)

    def _send_refund(self, reference: str) -> RefundResult:
        try:
            reply = self._send("POST", wire.path("transactions", reference, "refund"), json={})
        except (NeverSent, OutcomeUnknown) as exc:
            return RefundResult(
                status=RefundStatus.UNKNOWN, message=f"QVO's answer was lost ({exc})"
            )
        if reply.ok:
            return wire.refund_result(reply.body)
        error = reply.error()
        if wire.classify(error) is ErrorCode.AUTHENTICATION_ERROR:
            raise wire.gateway_error(self._name, error)
        return wire.refund_error_result(error)

    # -- notifications -------------------------------------------------------------------------

    def parse_notification(self, notification: Notification) -> NotificationFacts:
        """Read a QVO webhook (the event object as JSON); unsigned, so never ``verified``."""
        try:
            return wire.notification_facts(notification.body)
        except ValueError as exc:
            raise GatewayError(
                self._name, ErrorCode.INVALID_REQUEST.value, f"not a QVO event: {exc}"
            ) from None

    # -- HTTP ----------------------------------------------------------------------------------

    def _customer(self, reference: str | None) -> str:
        if not reference:
            raise GatewayError(
                self._name,
                ErrorCode.INVALID_REQUEST.value,
                "QVO needs the customer's QVO id (register_customer first)",
            )
        return reference

    def _send(self, method: str, route: str, **kwargs: Any) -> _Reply:
        """One request through :func:`adapters._http.send`; its exceptions pass through."""
        response = send(self._client, method, route, **kwargs)
        _log.debug("%s %s %s -> %s", self._name, method, route, response.status_code)
        return _Reply(response.status_code, wire.decode_json(response.content), response.headers)

    def _reply(self, method: str, route: str, **kwargs: Any) -> _Reply:
        """A 2xx answer, or :class:`GatewayError` for anything else (lost answers included)."""
        try:
            reply = self._send(method, route, **kwargs)
        except (NeverSent, OutcomeUnknown) as exc:
            raise self._unanswered(f"{method} {route}", exc) from None
        if not reply.ok:
            raise wire.gateway_error(self._name, reply.error())
        if reply.body is None:
            raise GatewayError(
                self._name,
                ErrorCode.GATEWAY_UNAVAILABLE.value,
                f"HTTP {reply.status} without a JSON body",
                retryable=True,
            )
        return reply

    def _ask(self, method: str, route: str, **kwargs: Any) -> Any:
        """The JSON body of a 2xx answer (see :meth:`_reply`)."""
        return self._reply(method, route, **kwargs).body

    def _parsed(self, parse: Callable[[Any], _T], body: Any) -> _T:
        """``parse(body)``; an answer that is not what QVO documents is ``gateway_unavailable``."""
        try:
            return parse(body)
        except ValueError as exc:
            raise GatewayError(
                self._name,
                ErrorCode.GATEWAY_UNAVAILABLE.value,
                f"QVO's answer was not understood: {exc}",
            ) from None


def _refusal(transaction: Any, wanted: int) -> RefundResult | None:
    """Why a transaction cannot be refunded for ``wanted`` (None when it can be)."""
    if not isinstance(transaction, Mapping):
        return RefundResult(status=RefundStatus.FAILED, code="not_found", message="no transaction")
    status, reference = transaction.get("status"), transaction.get("id")
    ref = reference if isinstance(reference, str) else None
    if status == "refunded":
        return RefundResult(status=RefundStatus.SUCCEEDED, reference=ref)
    if status != "successful":
        return RefundResult(
            status=RefundStatus.FAILED,
            reference=ref,
            code="not_refundable",
            message=f"QVO refunds only successful transactions; this one is {status}",
        )
    if wire.integer(transaction.get("amount")) != wanted:
        return RefundResult(
            status=RefundStatus.FAILED,
            reference=ref,
            code="partial_refund_unsupported",
            message=f"QVO refunds only the full amount ({transaction.get('amount')} CLP)",
        )
    return None


def from_environment(environ: Mapping[str, str]) -> QvoGateway | None:
    """The QVO gateway the environment configures (the ``billing.gateways`` entry point):
    ``BILLING_QVO_API_TOKEN`` (required) and ``BILLING_QVO_BASE_URL`` (the sandbox by
    default); None when no token is set."""
    token = environ.get("BILLING_QVO_API_TOKEN")
    if not token:
        return None
    return QvoGateway(token, base_url=environ.get("BILLING_QVO_BASE_URL") or wire.SANDBOX_URL)
