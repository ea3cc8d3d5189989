"""Gateway notifications (webhooks): an inbox that keeps each one first, then acts on it once.

Intake (:func:`receive`) keeps the notification exactly as it arrived (headers and body) in the
inbox and commits, so the host can answer the gateway at once; a body received again is the same
inbox row and is answered ``duplicate``. Gateways that sign their notifications have the
signature checked first, locally: a forged one is refused and nothing is kept.

Processing (:func:`process`, right after intake or later by the worker: :func:`process_due`)
claims the inbox row with a lease, so one engine does it; reads it with the adapter; asks the
gateway itself what became of the charge it names (``sync``) and records that answer, never the
notification's word, in one transaction with the notification's event id (a second notification
with the same event id is a ``duplicate``, even one with another body). A notification that
cannot be read, or that names nothing the engine tracks, changes nothing. When the gateway cannot
be asked, the row waits and is tried again with a back-off; the reconciliation job remains the
safety net for notifications that never come.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from billing.domain import _checks
from billing.domain.errors import AlreadyExists, ConcurrentUpdate, GatewayError, InvalidArgument
from billing.domain.payments import ErrorCode, PaymentStatus
from billing.ports import Capability, Notification, NotificationFacts, PaymentGateway
from billing.services.billing_run import bill_due_now, record, send, verify
from billing.services.context import Context, log, new_id
from billing.services.dispatch import retry_delay
from billing.services.gateways import gateway, require
from billing.store.tables import InboxRow, NotificationRow
from billing.store.unit_of_work import INBOX_RECEIVED, UNSETTLED

MAX_BODY_BYTES = 256 * 1024
"""The largest notification body the intake keeps; a larger one is refused."""

MAX_ATTEMPTS = 25
"""How many times processing is tried (back-off 1 s, 2 s, 4 s... up to an hour: about a day)
before the notification is left ``failed`` for a person to look at."""

_UNKEPT_HEADERS = frozenset({"authorization", "proxy-authorization", "cookie"})
"""Credentials a host's endpoint may receive; the inbox never keeps them."""


class NotificationStatus(StrEnum):
    """What the intake did with a notification."""

    RECEIVED = "received"
    """Kept in the inbox, not processed yet: processing comes next, or the worker retries it."""
    PROCESSED = "processed"
    """Checked with the gateway; the payment it names now shows what the gateway says."""
    DUPLICATE = "duplicate"
    """Received before (the same body, or the same event id): nothing was done again."""
    IGNORED = "ignored"
    """Readable, but about nothing the engine tracks, or not confirmed by the gateway."""
    REJECTED = "rejected"
    """Not this gateway's, malformed, or with a bad signature: it changed nothing."""
    FAILED = "failed"
    """Processing failed every retry; kept in the inbox for a person to look at."""


@dataclass(frozen=True, slots=True, kw_only=True)
class NotificationReceipt:
    """The intake's answer; a host's webhook endpoint answers 2xx unless ``REJECTED``."""

    status: NotificationStatus
    gateway: str
    notification_id: str | None = None
    """The inbox row that keeps it (``None`` when it was refused before being kept)."""
    event_id: str | None = None
    kind: str | None = None
    payment_id: str | None = None
    payment_status: PaymentStatus | None = None
    """The payment's status after the intake, when the notification named one of ours."""
    message: str | None = None


def receive(
    ctx: Context,
    *,
    gateway_name: str,
    headers: Mapping[str, str],
    body: bytes,
    process_now: bool = True,
) -> NotificationReceipt:
    """Read a notification, keep it in the inbox and, with ``process_now``, process it at once.

    Answers ``rejected`` (nothing kept) for a body that is too large, not UTF-8 text, unreadable
    or with a bad signature; ``duplicate`` for a body kept before; ``received`` when it is kept
    but not processed (``process_now=False``, or the gateway could not be asked: the worker
    tries it again); otherwise what :func:`process` answers. With ``process_now=False``, a
    gateway whose notifications are read by asking it (``NOTIFICATION_LOOKUP``) has them kept
    unread, and rejected when processed if unreadable.
    """
    port = gateway(ctx, gateway_name)
    require(port, Capability.NOTIFICATIONS, "send notifications")
    if not isinstance(headers, Mapping):
        raise InvalidArgument("headers", "must be a mapping of header names to values", headers)
    if not isinstance(body, bytes):
        raise InvalidArgument("body", "must be the request body as bytes", type(body).__name__)
    facts = None
    read_now = process_now or Capability.NOTIFICATION_LOOKUP not in port.capabilities
    try:
        text = _text(body)
        if read_now:
            facts = _read(port, headers, body)
    except GatewayError as exc:
        if not _refused(exc):  # the gateway could not be asked: kept unread, read later
            process_now = False
        else:
            log.warning("notification.rejected gateway=%s reason=%s", port.name, exc)
            return NotificationReceipt(
                status=NotificationStatus.REJECTED, gateway=port.name, message=str(exc)
            )
    now = ctx.clock.now()
    row = InboxRow(
        id=new_id("ntf"),
        gateway=port.name,
        digest=hashlib.sha256(body).hexdigest(),
        headers={
            str(name): str(value)
            for name, value in headers.items()
            if str(name).lower() not in _UNKEPT_HEADERS
        },
        body=text,
        received_at=now,
        status=INBOX_RECEIVED,
        next_attempt_at=now,
        event_id=None if facts is None else facts.event_id,
    )
    try:
        with ctx.store.transaction() as tx:
            tx.add_to_inbox(row)
    except AlreadyExists:
        with ctx.store.transaction() as tx:
            kept = tx.inbox_row_for(port.name, row.digest)
        log.info("notification.duplicate gateway=%s", port.name)
        return NotificationReceipt(
            status=NotificationStatus.DUPLICATE,
            gateway=port.name,
            notification_id=None if kept is None else kept.id,
            event_id=None if kept is None else kept.event_id,
            payment_id=None if kept is None else kept.payment_id,
        )
    log.info("notification.kept gateway=%s notification=%s", port.name, row.id)
    if not process_now:
        return NotificationReceipt(
            status=NotificationStatus.RECEIVED,
            gateway=port.name,
            notification_id=row.id,
            event_id=row.event_id,
        )
    return process(ctx, row.id, facts=facts)


def _text(body: bytes) -> str:
    if len(body) > MAX_BODY_BYTES:
        raise GatewayError("intake", "invalid_request", f"larger than {MAX_BODY_BYTES} bytes")
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError:
        raise GatewayError("intake", "invalid_request", "the body is not UTF-8 text") from None


def _refused(exc: GatewayError) -> bool:
    """Whether a notification was refused for what it is (unreadable, forged), rather than
    left unread because the gateway could not be asked."""
    return not exc.retryable and exc.code == ErrorCode.INVALID_REQUEST.value


def _read(port: PaymentGateway, headers: Mapping[str, str], body: bytes) -> NotificationFacts:
    facts = port.parse_notification(Notification(headers=dict(headers), body=body))
    _checks.text("event_id", facts.event_id, max_length=255)
    return facts


def process(
    ctx: Context, notification_id: str, *, facts: NotificationFacts | None = None
) -> NotificationReceipt:
    """Process one notification kept in the inbox (``facts``: as the intake just read it),
    unless another engine is processing it or it was processed before (then the receipt says
    what was done).

    Raises nothing for a gateway that cannot be asked, or a payment recorded concurrently: the
    notification stays ``received`` and is tried again after a back-off.
    """
    receipt, _ = _take(ctx, notification_id, facts)
    return receipt


def _take(
    ctx: Context, notification_id: str, facts: NotificationFacts | None
) -> tuple[NotificationReceipt, bool]:
    """Process a notification if this engine can claim it; the receipt, and whether it did."""
    now = ctx.clock.now()
    with ctx.store.transaction() as tx:
        taken = tx.claim_inbox(notification_id, ctx.worker, now=now, until=now + ctx.settings.lease)
        row = tx.inbox_row(notification_id)
        kept = _kept(row)
    if not taken:
        return kept, False
    port = gateway(ctx, row.gateway)
    try:
        return _process(ctx, port, row, now, facts), True
    except (GatewayError, ConcurrentUpdate) as exc:
        return _later(ctx, row, now, exc), True


def process_due(ctx: Context, now: datetime, *, stop: Callable[[], bool], limit: int = 100) -> int:
    """Process the inbox's waiting notifications (of the gateways this engine has), oldest
    first, until none is due or ``stop`` says so; returns how many were settled."""
    settled = 0
    tried: set[str] = set()
    while not stop():
        with ctx.store.transaction() as tx:
            due = [
                inbox_id
                for inbox_id in tx.due_in_inbox(now, limit, gateways=sorted(ctx.gateways))
                if inbox_id not in tried
            ]
        if not due:
            return settled
        for inbox_id in due:
            if stop():
                break
            tried.add(inbox_id)
            receipt, taken = _take(ctx, inbox_id, None)
            settled += taken and receipt.status is not NotificationStatus.RECEIVED
    return settled


def _process(
    ctx: Context,
    port: PaymentGateway,
    kept: InboxRow,
    now: datetime,
    facts: NotificationFacts | None,
) -> NotificationReceipt:
    body = kept.body.encode("utf-8")
    if facts is None:
        try:
            facts = _read(port, kept.headers, body)
        except GatewayError as exc:
            if not _refused(exc):
                raise  # the gateway could not be asked: later
            log.warning("notification.rejected gateway=%s code=%s", port.name, exc.code)
            return _settle(ctx, kept, NotificationStatus.REJECTED, now, message=str(exc))
    with ctx.store.transaction() as tx:
        seen = tx.notification_seen(port.name, facts.event_id)
        payment = tx.payment_for(
            port.name, idempotency_key=facts.idempotency_key, reference=facts.charge_reference
        )
        payment_id = None if payment is None else payment.id
    if seen:
        return _settle(ctx, kept, NotificationStatus.DUPLICATE, now, facts=facts)
    answer = None if payment_id is None else verify(ctx, payment_id, now)
    if answer is not None and answer.status is PaymentStatus.UNKNOWN:
        raise GatewayError(
            port.name, "gateway_unavailable", "could not confirm the payment", retryable=True
        )
    try:
        with ctx.store.transaction() as tx:
            row = None if payment_id is None else tx.payment_row(payment_id, lock=True)
            confirmed = row is not None and (answer is not None or row.status not in UNSETTLED)
            status = NotificationStatus.PROCESSED if confirmed else NotificationStatus.IGNORED
            tx.add_notification(_row(port.name, facts, payment_id, status, body, now))
            follow = [] if row is None or answer is None else record(ctx, tx, row, answer, now)
            after = None if row is None else PaymentStatus(row.status)
            tx.settle_inbox(
                kept.id,
                ctx.worker,
                **_outcome(status, now, facts=facts, payment_id=payment_id),
            )
    except AlreadyExists:  # the same event, in another body, recorded concurrently
        return _settle(ctx, kept, NotificationStatus.DUPLICATE, now, facts=facts)
    send(ctx, follow, now)
    if row is not None and answer is not None:
        bill_due_now(ctx, row.subscription_id, now)
    log.info(
        "notification.processed gateway=%s event=%s kind=%s status=%s payment=%s",
        port.name,
        facts.event_id,
        facts.kind,
        status,
        payment_id,
    )
    return _receipt(status, port.name, kept.id, facts, payment_id, after)


def _settle(
    ctx: Context,
    kept: InboxRow,
    status: NotificationStatus,
    now: datetime,
    *,
    facts: NotificationFacts | None = None,
    message: str | None = None,
) -> NotificationReceipt:
    """Write down a processing that changed no payment."""
    with ctx.store.transaction() as tx:
        tx.settle_inbox(kept.id, ctx.worker, **_outcome(status, now, facts=facts, message=message))
    return _receipt(status, kept.gateway, kept.id, facts, message=message)


def _later(ctx: Context, kept: InboxRow, now: datetime, exc: Exception) -> NotificationReceipt:
    """Leave a notification for a later try (or ``failed``, after the last one)."""
    attempts = kept.attempts + 1  # the claim counted this try; ``kept`` was read before it
    last = attempts >= MAX_ATTEMPTS
    status = NotificationStatus.FAILED if last else NotificationStatus.RECEIVED
    retry_at = now + retry_delay(attempts - 1)
    log.warning(
        "notification.%s gateway=%s notification=%s attempts=%s error=%s retry_at=%s",
        "failed" if last else "postponed",
        kept.gateway,
        kept.id,
        attempts,
        exc,
        None if last else retry_at.isoformat(),
    )
    try:
        with ctx.store.transaction() as tx:
            tx.settle_inbox(
                kept.id, ctx.worker, status=status.value, next_attempt_at=retry_at, message=str(exc)
            )
    except ConcurrentUpdate:  # the lease lapsed and another engine took it: theirs now
        pass
    return NotificationReceipt(
        status=status, gateway=kept.gateway, notification_id=kept.id, message=str(exc)
    )


def _outcome(
    status: NotificationStatus,
    now: datetime,
    *,
    facts: NotificationFacts | None = None,
    payment_id: str | None = None,
    message: str | None = None,
) -> dict[str, object]:
    return {
        "status": status.value,
        "processed_at": now,
        "event_id": None if facts is None else facts.event_id,
        "payment_id": payment_id,
        "message": message,
    }


def _kept(row: InboxRow) -> NotificationReceipt:
    """The receipt of a notification as the inbox has it."""
    return NotificationReceipt(
        status=NotificationStatus(row.status),
        gateway=row.gateway,
        notification_id=row.id,
        event_id=row.event_id,
        payment_id=row.payment_id,
        message=row.message,
    )


def _row(
    gateway_name: str,
    facts: NotificationFacts,
    payment_id: str | None,
    status: NotificationStatus,
    body: bytes,
    at: datetime,
) -> NotificationRow:
    return NotificationRow(
        gateway=gateway_name,
        event_id=facts.event_id,
        kind=facts.kind[:64],
        charge_reference=facts.charge_reference,
        idempotency_key=facts.idempotency_key,
        payment_id=payment_id,
        status=status.value,
        body=body.decode("utf-8", errors="replace"),
        received_at=at,
    )


def _receipt(
    status: NotificationStatus,
    gateway_name: str,
    notification_id: str,
    facts: NotificationFacts | None,
    payment_id: str | None = None,
    payment_status: PaymentStatus | None = None,
    *,
    message: str | None = None,
) -> NotificationReceipt:
    return NotificationReceipt(
        status=status,
        gateway=gateway_name,
        notification_id=notification_id,
        event_id=None if facts is None else facts.event_id,
        kind=None if facts is None else facts.kind,
        payment_id=payment_id,
        payment_status=payment_status,
        message=message,
    )
