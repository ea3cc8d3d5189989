"""An in-process payment gateway whose answers are scripted per customer.

:class:`FakeGateway` implements :class:`~billing.ports.PaymentGateway` for the engine's tests,
simulations and users' own tests. Each customer follows a :class:`Behavior` (or a sequence of
them, one per new charge, the last repeating); customers never scripted follow the default:

* ``approve``: the charge succeeds at once with reference ``fake_ch_<n>``.
* ``decline_soft``: a soft decline, code ``insufficient_funds`` (retrying may help).
* ``decline_hard``: a hard decline, code ``stolen_card`` (retrying cannot help).
* ``timeout``: the money IS taken, but the answer is lost: ``charge`` returns ``UNKNOWN`` and a
  later ``sync`` (or a repeat of the key) returns ``SUCCEEDED`` with the reference.
* ``pay_late``: ``PENDING`` until ``pending_for`` after the charge's ``at``, then ``SUCCEEDED``.
* ``never_pay``: ``PENDING`` until ``pending_for`` after the charge's ``at``, then a soft
  decline with code ``expired``.
* ``pay_by_link``: ``REQUIRES_ACTION`` with a link to pay at (``action_url``), and the customer
  pays it ``pending_for`` after the charge's ``at``: then ``SUCCEEDED``.
* ``link_expires``: ``REQUIRES_ACTION`` with a link nobody pays; ``pending_for`` after the charge's
  ``at`` it expires, a soft decline (``payer_abandoned``, code ``expired``), unless
  :meth:`FakeGateway.pay_expired_link` has it paid late.

A link still waiting for the customer can be withdrawn (:meth:`FakeGateway.cancel_link`): nobody
can pay it any more, and ``sync`` answers a soft decline (``payer_abandoned``, code
``canceled``), as Payvalida does for a deleted order.

Time only ever comes from the requests' ``at``, never from the system clock: a pending charge
settles when a ``sync``, a repeated ``charge`` or a ``refund`` at or after its due time looks at
it, exactly as a test clock would make it.
"""

from __future__ import annotations

import json
import threading
import time
from abc import ABC, abstractmethod
from collections import Counter, deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum

from billing.domain import _checks
from billing.domain.currencies import EXPONENTS, UNITS_OF_ACCOUNT
from billing.domain.errors import GatewayError, InvalidArgument
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


class Behavior(StrEnum):
    """What the fake gateway does with a customer's next new charge."""

    APPROVE = "approve"
    """Succeeds at once."""
    DECLINE_SOFT = "decline_soft"
    """Fails with a soft decline (``insufficient_funds``)."""
    DECLINE_HARD = "decline_hard"
    """Fails with a hard decline (``stolen_card``)."""
    TIMEOUT = "timeout"
    """Takes the money but loses the answer: ``UNKNOWN`` now, ``SUCCEEDED`` on sync."""
    PAY_LATE = "pay_late"
    """``PENDING``, then ``SUCCEEDED`` once ``pending_for`` has passed."""
    NEVER_PAY = "never_pay"
    """``PENDING``, then a soft decline (``expired``) once ``pending_for`` has passed."""
    PAY_BY_LINK = "pay_by_link"
    """``REQUIRES_ACTION`` with a link, paid once ``pending_for`` has passed."""
    LINK_EXPIRES = "link_expires"
    """``REQUIRES_ACTION`` with a link, expired (a soft decline) once ``pending_for`` has passed."""


_SETTLES_LATER = {
    Behavior.PAY_LATE: PaymentStatus.PENDING,
    Behavior.NEVER_PAY: PaymentStatus.PENDING,
    Behavior.PAY_BY_LINK: PaymentStatus.REQUIRES_ACTION,
    Behavior.LINK_EXPIRES: PaymentStatus.REQUIRES_ACTION,
}
"""The behaviors whose charges wait ``pending_for``, and the status they wait in."""


BehaviorLike = Behavior | str
"""A :class:`Behavior` or its string value (scenario files use the strings)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class TakenCharge:
    """A charge that moved money, as the fake gateway's books show it."""

    idempotency_key: str
    customer_id: str
    amount: Money
    reference: str
    at: datetime
    """When the charge was sent (the request's ``at``), in UTC."""
    behavior: Behavior
    refunded: Money
    """How much of it has been refunded so far."""


@dataclass(slots=True, kw_only=True)
class _Charge:
    """The gateway-side state of one charge (one idempotency key); guarded by the lock."""

    key: str
    customer_id: str
    amount: Money
    reference: str
    behavior: Behavior
    at: datetime
    due: datetime
    status: PaymentStatus
    decline: DeclineKind | None = None
    error: ErrorCode | None = None
    code: str | None = None
    message: str | None = None
    canceled: bool = False
    """Its link was withdrawn (:meth:`FakeGateway.cancel_link`): nobody can pay it any more."""
    refunded: Money = field(init=False)

    def __post_init__(self) -> None:
        self.refunded = Money.zero(self.amount.currency)

    def cancel(self) -> None:
        """Withdraw the link: a soft decline nobody can pay (as a deleted Payvalida order)."""
        self.canceled = True
        self.status = PaymentStatus.FAILED
        self.decline = DeclineKind.SOFT
        self.error = ErrorCode.PAYER_ABANDONED
        self.code = "canceled"
        self.message = "the payment link was withdrawn by the merchant (fake cancel_link)"

    def observe(self, at: datetime) -> PaymentResult:
        """The charge's current result as seen at ``at``, settling it if it is due."""
        waiting = self.status in (PaymentStatus.PENDING, PaymentStatus.REQUIRES_ACTION)
        if waiting and at >= self.due:
            if self.behavior in (Behavior.PAY_LATE, Behavior.PAY_BY_LINK):
                self.status = PaymentStatus.SUCCEEDED
            else:
                self.status = PaymentStatus.FAILED
                self.decline = DeclineKind.SOFT
                self.error = ErrorCode.PAYER_ABANDONED
                self.code = "expired"
                self.message = "the payment was never completed (fake never_pay)"
        link = self.status is PaymentStatus.REQUIRES_ACTION
        return PaymentResult(
            status=self.status,
            decline=self.decline,
            code=self.code,
            message=self.message,
            reference=self.reference,
            error=self.error,
            action_url=f"https://fake.invalid/pay/{self.reference}" if link else None,
        )

    def taken(self) -> TakenCharge:
        return TakenCharge(
            idempotency_key=self.key,
            customer_id=self.customer_id,
            amount=self.amount,
            reference=self.reference,
            at=self.at,
            behavior=self.behavior,
            refunded=self.refunded,
        )


@dataclass(frozen=True, slots=True)
class _Refund:
    """A refund request as first received, and the answer it got."""

    reference: str
    amount: Money
    result: RefundResult


_DECLINES: dict[Behavior, tuple[ErrorCode, str, str]] = {
    Behavior.DECLINE_SOFT: (
        ErrorCode.INSUFFICIENT_FUNDS,
        "insufficient_funds",
        "the card has insufficient funds (fake decline_soft)",
    ),
    Behavior.DECLINE_HARD: (
        ErrorCode.LOST_OR_STOLEN,
        "stolen_card",
        "the card was reported stolen (fake decline_hard)",
    ),
}


def _behavior(value: object) -> Behavior:
    return _checks.member(Behavior, value, "payment")


class CardOnFile(ABC):
    """The gateway operations around charges, as the fakes do them: customers are the engine's,
    and a token is the stored card itself. No enrollment pages and no notifications."""

    capabilities: frozenset[Capability] = frozenset(
        {
            Capability.CARD_TOKENS,
            Capability.STORED_CARD_CHARGES,
            Capability.REFUNDS,
            Capability.PARTIAL_REFUNDS,
            Capability.IDEMPOTENT_CHARGES,
        }
    )

    currencies: frozenset[str] = frozenset(EXPONENTS) - frozenset(UNITS_OF_ACCOUNT)
    """Every currency that is paid in: no gateway takes a unit of account such as the UF."""

    @property
    @abstractmethod
    def name(self) -> str:
        """The gateway's name."""

    def register_customer(self, request: CustomerRequest) -> str:
        """The fake keeps no customers: the gateway's id is the engine's."""
        return request.customer_id

    def attach_payment_method(self, request: AttachRequest) -> StoredMethod:
        """The token is the stored card."""
        return StoredMethod(reference=request.token, label=f"{self.name} card")

    def start_enrollment(self, request: EnrollmentRequest) -> Enrollment:
        raise GatewayError(self.name, "invalid_request", "this fake has no enrollment pages")

    def complete_enrollment(
        self, customer_reference: str | None, reference: str
    ) -> EnrollmentResult:
        raise GatewayError(self.name, "invalid_request", "this fake has no enrollment pages")

    def parse_notification(self, notification: Notification) -> NotificationFacts:
        raise GatewayError(self.name, "invalid_request", "this fake sends no notifications")

    def cancel_link(self, request: CancelLinkRequest) -> LinkCancellation:
        raise GatewayError(self.name, "invalid_request", "this fake cannot withdraw links")

    def close(self) -> None:  # noqa: B027 - the in-memory fakes have nothing to release
        """Nothing to release."""


class FakeGateway(CardOnFile):
    """A scriptable, thread-safe, in-memory :class:`~billing.ports.PaymentGateway`.

    ``default`` is what customers never scripted get; ``pending_for`` is how long ``pay_late``
    and ``never_pay`` charges stay pending, measured with the requests' ``at``; ``latency`` makes
    every charge take that long in real time (for tests of slow gateways).

    It sends unsigned notifications (:meth:`notification`): a JSON body naming a charge, which
    the engine, as for every gateway, believes only after asking ``sync``; and it withdraws the
    links of ``pay_by_link`` and ``link_expires`` charges (:meth:`cancel_link`).
    """

    capabilities = CardOnFile.capabilities | {
        Capability.NOTIFICATIONS,
        Capability.LINK_CANCELLATION,
    }

    def __init__(
        self,
        *,
        name: str = "fake",
        default: BehaviorLike = Behavior.APPROVE,
        pending_for: timedelta = timedelta(days=2),
        latency: timedelta = timedelta(0),
    ) -> None:
        if not isinstance(pending_for, timedelta) or pending_for < timedelta(0):
            raise InvalidArgument("pending_for", "must be a timedelta >= 0", pending_for)
        if not isinstance(latency, timedelta) or latency < timedelta(0):
            raise InvalidArgument("latency", "must be a timedelta >= 0", latency)
        self.latency = latency
        self._name = _checks.text("name", name)
        self._default = _behavior(default)
        self._pending_for = pending_for
        self._lock = threading.Lock()
        self._scripts: dict[str, deque[Behavior]] = {}
        self._charges: dict[str, _Charge] = {}
        self._by_reference: dict[str, _Charge] = {}
        self._refunds: dict[str, _Refund] = {}
        self._calls: Counter[str] = Counter()
        self._charge_count = 0
        self._refund_count = 0
        self._refund_calls: Counter[str] = Counter()
        self._refund_faults: deque[str] = deque()
        self._notification_count = 0
        self._cancel_calls: Counter[str] = Counter()
        self._cancel_faults: deque[str] = deque()

    @property
    def name(self) -> str:
        """The gateway's name, ``"fake"`` unless given another."""
        return self._name

    # -- scripting -------------------------------------------------------------------------------

    def script(self, customer_id: str, behavior: BehaviorLike | Sequence[BehaviorLike]) -> None:
        """Set what the customer's next new charges do, replacing any earlier script.

        A sequence is consumed one behavior per new idempotency key; its last one repeats.
        """
        if isinstance(behavior, str) or not isinstance(behavior, Sequence):
            queue = deque([_behavior(behavior)])
        else:
            queue = deque(_behavior(item) for item in behavior)
            if not queue:
                raise InvalidArgument("payment", "must name at least one behavior", behavior)
        with self._lock:
            self._scripts[customer_id] = queue

    def _next_behavior(self, customer_id: str) -> Behavior:
        queue = self._scripts.get(customer_id)
        if queue is None:
            return self._default
        return queue.popleft() if len(queue) > 1 else queue[0]

    # -- the PaymentGateway protocol -------------------------------------------------------------

    def charge(self, request: ChargeRequest) -> PaymentResult:
        """Charge once per key: a repeated key charges nothing and answers as :meth:`sync`.

        Raises :class:`~billing.domain.errors.InvalidArgument` if a key comes back with another
        customer or amount: the same key must always mean the same charge.
        """
        at = _checks.aware("at", request.at)
        if self.latency:
            time.sleep(self.latency.total_seconds())  # a slow gateway, in real time
        with self._lock:
            self._calls[request.idempotency_key] += 1
            existing = self._charges.get(request.idempotency_key)
            if existing is not None:
                if (existing.customer_id, existing.amount) != (request.customer_id, request.amount):
                    raise InvalidArgument(
                        "idempotency_key",
                        f"was first sent for {existing.customer_id} {existing.amount}; "
                        "the same key must always mean the same charge",
                        request.idempotency_key,
                    )
                return existing.observe(at)
            behavior = self._next_behavior(request.customer_id)
            self._charge_count += 1
            charge = _Charge(
                key=request.idempotency_key,
                customer_id=request.customer_id,
                amount=request.amount,
                reference=f"fake_ch_{self._charge_count}",
                behavior=behavior,
                at=at,
                due=at + self._pending_for,
                status=PaymentStatus.SUCCEEDED,
            )
            if behavior in _DECLINES:
                charge.status = PaymentStatus.FAILED
                charge.error, charge.code, charge.message = _DECLINES[behavior]
                charge.decline = DECLINE_OF[charge.error]
            elif behavior in _SETTLES_LATER:
                charge.status = _SETTLES_LATER[behavior]
            self._charges[charge.key] = charge
            self._by_reference[charge.reference] = charge
            if behavior is Behavior.TIMEOUT:
                return PaymentResult(
                    status=PaymentStatus.UNKNOWN,
                    error=ErrorCode.GATEWAY_TIMEOUT,
                    code="timeout",
                    message="the gateway did not answer in time (fake timeout)",
                )
            return charge.observe(at)

    def sync(self, request: SyncRequest) -> PaymentResult | None:
        """The current result of the charge sent with this key, or ``None`` if none arrived."""
        at = _checks.aware("at", request.at)
        with self._lock:
            charge = self._charges.get(request.idempotency_key)
            return None if charge is None else charge.observe(at)

    def lose_refund_answers(self, count: int = 1, *, before_refunding: bool = False) -> None:
        """Make the next ``count`` refund calls raise :class:`TimeoutError`: after the money went
        back (a lost answer), or with ``before_refunding`` before anything happened (a request
        that never arrived). Sending the same key again then answers truly."""
        _checks.integer("count", count, minimum=1)
        with self._lock:
            self._refund_faults.extend(["before" if before_refunding else "after"] * count)

    def refund(self, request: RefundRequest) -> RefundResult:
        """Refund part or all of a succeeded charge, once per key.

        Refused (``FAILED``, code ``invalid_refund``) for an unknown or unsettled charge, an amount
        that is not positive, in another currency, or more than is left to refund. A repeated key
        returns the first answer and refunds nothing more.
        """
        at = _checks.aware("at", request.at)
        with self._lock:
            self._refund_calls[request.idempotency_key] += 1
            fault = self._refund_faults.popleft() if self._refund_faults else None
            if fault == "before":
                raise TimeoutError("the fake lost the refund request")
            result = self._refund_once(request, at)
            if fault == "after":
                raise TimeoutError("the fake refunded, then lost the answer")
            return result

    def _refund_once(self, request: RefundRequest, at: datetime) -> RefundResult:
        """The refund for this key (called under the lock): the first answer on a repeat."""
        earlier = self._refunds.get(request.idempotency_key)
        if earlier is not None:
            if (earlier.reference, earlier.amount) != (request.reference, request.amount):
                raise InvalidArgument(
                    "idempotency_key",
                    f"was first sent to refund {earlier.amount} of {earlier.reference}; "
                    "the same key must always mean the same refund",
                    request.idempotency_key,
                )
            return earlier.result
        result = self._refund(request, at)
        self._refunds[request.idempotency_key] = _Refund(request.reference, request.amount, result)
        return result

    def _refund(self, request: RefundRequest, at: datetime) -> RefundResult:
        charge = self._by_reference.get(request.reference)
        if charge is None:
            return _refused(f"no charge has reference {request.reference!r}")
        status = charge.observe(at).status
        if status is not PaymentStatus.SUCCEEDED:
            return _refused(f"charge {charge.reference} is {status}; only succeeded ones refund")
        if request.amount.currency != charge.amount.currency:
            return _refused(f"charge {charge.reference} is in {charge.amount.currency}")
        if not request.amount.is_positive():
            return _refused("the amount must be positive")
        left = charge.amount - charge.refunded
        if request.amount > left:
            return _refused(f"only {left} of charge {charge.reference} is left to refund")
        charge.refunded += request.amount
        self._refund_count += 1
        return RefundResult(
            status=RefundStatus.SUCCEEDED, reference=f"fake_re_{self._refund_count}"
        )

    def lose_link_cancellation_answers(
        self, count: int = 1, *, before_canceling: bool = False
    ) -> None:
        """Make the next ``count`` ``cancel_link`` calls raise :class:`TimeoutError`: after the
        link was withdrawn (a lost answer), or with ``before_canceling`` before anything
        happened. Asking again then answers truly."""
        _checks.integer("count", count, minimum=1)
        with self._lock:
            self._cancel_faults.extend(["before" if before_canceling else "after"] * count)

    def cancel_link(self, request: CancelLinkRequest) -> LinkCancellation:
        """Withdraw the link of the charge ``reference`` while it waits for the customer
        (``requires_action``, as seen at the request's ``at``): nobody can pay it any more.

        ``CANCELED`` again for a link withdrawn before, and for a reference this fake never
        gave (nothing to pay); ``TOO_LATE`` with the charge's result for any other (paid,
        pending, expired or declined).
        """
        at = _checks.aware("at", request.at)
        with self._lock:
            self._cancel_calls[request.reference] += 1
            fault = self._cancel_faults.popleft() if self._cancel_faults else None
            if fault == "before":
                raise TimeoutError("the fake lost the link cancellation request")
            answer = self._cancel_once(request.reference, at)
            if fault == "after":
                raise TimeoutError("the fake withdrew the link, then lost the answer")
            return answer

    def _cancel_once(self, reference: str, at: datetime) -> LinkCancellation:
        """Withdraw a link (called under the lock)."""
        charge = self._by_reference.get(reference)
        if charge is None or charge.canceled:
            return LinkCancellation(status=LinkCancellationStatus.CANCELED)
        result = charge.observe(at)
        if result.status is not PaymentStatus.REQUIRES_ACTION:
            return LinkCancellation(
                status=LinkCancellationStatus.TOO_LATE,
                payment=result,
                code=result.status.value,
                message=f"charge {reference} is {result.status}; only a live link is withdrawn",
            )
        charge.cancel()
        return LinkCancellation(status=LinkCancellationStatus.CANCELED)

    def notification(self, reference: str, event_id: str | None = None) -> Notification:
        """The notification this fake sends about the charge ``reference``, as a host receives
        it; ``event_id`` names it (a new id by default; the same one for a redelivery)."""
        with self._lock:
            self._notification_count += 1
            count = self._notification_count
        event = event_id or f"fake_evt_{count}"
        body = {"id": event, "type": "charge.updated", "charge": reference}
        return Notification(
            headers={"content-type": "application/json"}, body=json.dumps(body).encode()
        )

    def parse_notification(self, notification: Notification) -> NotificationFacts:
        """Read a notification made by :meth:`notification`."""
        try:
            body = json.loads(notification.body)
            event_id, kind, charge = body["id"], body["type"], body["charge"]
        except (ValueError, TypeError, KeyError) as exc:
            raise GatewayError(self.name, "invalid_request", "not a fake notification") from exc
        if not all(isinstance(value, str) and value for value in (event_id, kind, charge)):
            raise GatewayError(self.name, "invalid_request", "not a fake notification")
        return NotificationFacts(event_id=event_id, kind=kind, charge_reference=charge)

    def pay_link(self, reference: str, at: datetime) -> None:
        """Act as a customer paying the live link of the charge ``reference`` at ``at``, before
        its time: the charge took the money, and ``sync`` says so.

        Raises :class:`~billing.domain.errors.InvalidArgument` for a charge that is not a link
        waiting for the customer (paid, expired or withdrawn).
        """
        at = _checks.aware("at", at)
        with self._lock:
            charge = self._by_reference.get(reference)
            if charge is None or charge.observe(at).status is not PaymentStatus.REQUIRES_ACTION:
                raise InvalidArgument("reference", "must be a live payment link", reference)
            charge.status = PaymentStatus.SUCCEEDED

    def pay_expired_link(self, reference: str, at: datetime) -> None:
        """Act as a customer whose payment of an expired link was confirmed after all (a
        transfer started in time): the charge ``reference``, expired as seen at ``at``, now took
        the money, and ``sync`` says so.

        Raises :class:`~billing.domain.errors.InvalidArgument` for a charge that is not an
        expired link (a withdrawn one cannot be paid either).
        """
        at = _checks.aware("at", at)
        with self._lock:
            charge = self._by_reference.get(reference)
            if (
                charge is None
                or charge.canceled
                or charge.observe(at).error is not ErrorCode.PAYER_ABANDONED
            ):
                raise InvalidArgument("reference", "must be a payment link that expired", reference)
            charge.status = PaymentStatus.SUCCEEDED
            charge.decline = charge.error = charge.code = charge.message = None

    # -- reading the books -----------------------------------------------------------------------

    @property
    def calls(self) -> Counter[str]:
        """How many times ``charge`` was called per idempotency key, repeats included (a copy)."""
        with self._lock:
            return Counter(self._calls)

    @property
    def link_cancellation_calls(self) -> Counter[str]:
        """How many times ``cancel_link`` was called per charge reference (a copy)."""
        with self._lock:
            return Counter(self._cancel_calls)

    def link_canceled(self, reference: str) -> bool:
        """Whether the link of the charge ``reference`` was withdrawn."""
        with self._lock:
            charge = self._by_reference.get(reference)
            return charge is not None and charge.canceled

    @property
    def refund_calls(self) -> Counter[str]:
        """How many times ``refund`` was called per idempotency key, repeats included (a copy)."""
        with self._lock:
            return Counter(self._refund_calls)

    def refunds_made(self) -> int:
        """How many refunds moved money back (repeats of a key count once)."""
        with self._lock:
            return self._refund_count

    def charges_taken(self, customer_id: str | None = None) -> list[TakenCharge]:
        """The charges that moved money, in the order they were sent, for one customer or all.

        A ``timeout`` charge counts at once; a ``pay_late`` one once a request has seen it settle.
        """
        with self._lock:
            return [
                charge.taken()
                for charge in self._charges.values()
                if charge.status is PaymentStatus.SUCCEEDED
                and (customer_id is None or charge.customer_id == customer_id)
            ]

    def total_charged(self, customer_id: str | None = None) -> Money | None:
        """The sum of :meth:`charges_taken` before refunds, or ``None`` if nothing was taken.

        Raises :class:`~billing.domain.errors.CurrencyMismatch` if the charges mix currencies.
        """
        taken = self.charges_taken(customer_id)
        if not taken:
            return None
        return sum((charge.amount for charge in taken[1:]), taken[0].amount)


def _refused(message: str) -> RefundResult:
    return RefundResult(status=RefundStatus.FAILED, code="invalid_refund", message=message)
