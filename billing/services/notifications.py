"""Gateway notifications (webhooks): one intake that verifies each one and acts on it once.

A notification is a claim, not a fact. The adapter reads it (and checks its signature, for
gateways that sign); the engine then asks the gateway itself what became of the charge it names
(``sync``) and records that answer, never the notification's word. The notification is recorded
in the same transaction as the answer, under the gateway's event id, so a redelivery changes
nothing. A notification that cannot be read, or that names nothing the engine tracks, changes
nothing either; the reconciliation job remains the safety net for notifications that never come.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from billing.domain import _checks
from billing.domain.errors import AlreadyExists, GatewayError, InvalidArgument
from billing.domain.payments import PaymentStatus
from billing.ports import Capability, Notification, NotificationFacts
from billing.services.billing_run import record, send, verify
from billing.services.context import Context, log
from billing.services.gateways import gateway, require
from billing.store.tables import NotificationRow
from billing.store.unit_of_work import UNSETTLED


class NotificationStatus(StrEnum):
    """What the intake did with a notification."""

    PROCESSED = "processed"
    """Checked with the gateway; the payment it names now shows what the gateway says."""
    DUPLICATE = "duplicate"
    """Received before: nothing was done again."""
    IGNORED = "ignored"
    """Readable, but about nothing the engine tracks, or not confirmed by the gateway."""
    REJECTED = "rejected"
    """Not this gateway's, malformed, or with a bad signature: nothing was recorded."""


@dataclass(frozen=True, slots=True, kw_only=True)
class NotificationReceipt:
    """The intake's answer; a host's webhook endpoint answers 2xx unless ``REJECTED``."""

    status: NotificationStatus
    gateway: str
    event_id: str | None = None
    kind: str | None = None
    payment_id: str | None = None
    payment_status: PaymentStatus | None = None
    """The payment's status after the intake, when the notification named one of ours."""
    message: str | None = None


def receive(
    ctx: Context, *, gateway_name: str, headers: Mapping[str, str], body: bytes
) -> NotificationReceipt:
    """Verify a notification with the gateway and act on it once.

    Raises :class:`~billing.domain.errors.GatewayError` when the gateway cannot be asked (the
    host's endpoint should then answer 5xx, so that the gateway delivers it again), and
    :class:`~billing.domain.errors.ConcurrentUpdate` when a worker recorded the same payment at
    the same moment (likewise).
    """
    port = gateway(ctx, gateway_name)
    require(port, Capability.NOTIFICATIONS, "send notifications")
    if not isinstance(headers, Mapping):
        raise InvalidArgument("headers", "must be a mapping of header names to values", headers)
    if not isinstance(body, bytes):
        raise InvalidArgument("body", "must be the request body as bytes", type(body).__name__)
    try:
        facts = port.parse_notification(Notification(headers=dict(headers), body=body))
    except GatewayError as exc:
        log.warning("notification.rejected gateway=%s code=%s", port.name, exc.code)
        return NotificationReceipt(
            status=NotificationStatus.REJECTED, gateway=port.name, message=str(exc)
        )
    _checks.text("event_id", facts.event_id, max_length=255)
    now = ctx.clock.now()
    with ctx.store.transaction() as tx:
        if tx.notification_seen(port.name, facts.event_id):
            return _receipt(NotificationStatus.DUPLICATE, port.name, facts)
        payment = tx.payment_for(
            port.name, idempotency_key=facts.idempotency_key, reference=facts.charge_reference
        )
        payment_id = None if payment is None else payment.id
    answer = None if payment_id is None else verify(ctx, payment_id, now)
    if answer is not None and answer.status is PaymentStatus.UNKNOWN:
        raise GatewayError(port.name, "gateway_unavailable", "could not confirm the payment")
    try:
        with ctx.store.transaction() as tx:
            row = None if payment_id is None else tx.payment_row(payment_id, lock=True)
            confirmed = row is not None and (answer is not None or row.status not in UNSETTLED)
            status = NotificationStatus.PROCESSED if confirmed else NotificationStatus.IGNORED
            tx.add_notification(_row(port.name, facts, payment_id, status, body, now))
            follow = [] if row is None or answer is None else record(ctx, tx, row, answer, now)
            after = None if row is None else PaymentStatus(row.status)
    except AlreadyExists:  # the same notification, received concurrently
        return _receipt(NotificationStatus.DUPLICATE, port.name, facts)
    send(ctx, follow, now)
    log.info(
        "notification.received gateway=%s event=%s kind=%s status=%s payment=%s",
        port.name,
        facts.event_id,
        facts.kind,
        status,
        payment_id,
    )
    return _receipt(status, port.name, facts, payment_id, after)


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
    facts: NotificationFacts,
    payment_id: str | None = None,
    payment_status: PaymentStatus | None = None,
) -> NotificationReceipt:
    return NotificationReceipt(
        status=status,
        gateway=gateway_name,
        event_id=facts.event_id,
        kind=facts.kind,
        payment_id=payment_id,
        payment_status=payment_status,
    )
