"""Withdrawing the payment links of invoices settled another way, at their gateways.

A pay-by-link gateway (:attr:`~billing.ports.Capability.PAY_BY_LINK`) answers a charge with a link
the customer pays later; the attempt waits in ``requires_action``. When its invoice is settled
another way while the link is still live (paid by an earlier link the customer paid late, say,
or voided), the customer can still pay the link, and that money would become the customer's
credit as an overpayment. So the reconcile job withdraws such links at gateways that can
(:attr:`~billing.ports.Capability.LINK_CANCELLATION`), one transaction per step and the gateway
called outside any:

1. a claim (:meth:`~billing.store.unit_of_work.Tx.claim_superseded_links`) finds the live links
   whose invoice is ``paid`` or ``void``, and takes them until a lease lapses by moving their
   ``link_cancel_at``: workers pass over each other's links;
2. the gateway is asked to withdraw the link (:meth:`~billing.ports.PaymentGateway.cancel_link`);
3. its answer is recorded on the locked attempt, if the attempt is still a live link:
   ``CANCELED`` makes it ``canceled``, with a ``payment.link_canceled`` event; ``TOO_LATE`` is
   recorded as any answer of the gateway's (:func:`~billing.services.billing_run.record`): a
   link the customer paid first is a succeeded payment, and, its invoice being settled, the
   customer's credit (an overpayment).

A gateway that fails (a timeout, a 5xx) writes nothing: the claim lapses and a later reconcile
asks again, which is safe because withdrawing a link is idempotent. A crash anywhere leaves
either the link live with a lapsing claim (asked again), or the gateway's answer recorded. Two
workers holding one link (a lapsed claim) both ask the gateway and record one answer: the
second finds the attempt settled and changes nothing. An uncollectible (written-off) invoice
can still be paid, so its link stays live.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from billing.domain.errors import BillingError
from billing.domain.payments import PaymentStatus
from billing.ports import (
    CancelLinkRequest,
    Capability,
    LinkCancellation,
    LinkCancellationStatus,
    PaymentGateway,
)
from billing.services.billing_run import record, send
from billing.services.context import Context, log
from billing.store import mapping
from billing.store.tables import PaymentRow
from billing.store.unit_of_work import Tx

_LIVE = PaymentStatus.REQUIRES_ACTION.value


def withdraw_superseded(
    ctx: Context, now: datetime, *, stop: Callable[[], bool], batch: int
) -> int:
    """Ask the gateways to withdraw every live payment link whose invoice was settled another
    way, and record their answers; returns how many links were asked about. Safe to run in
    several processes at once: each link is taken by one."""
    gateways = sorted(
        name
        for name, port in ctx.gateways.items()
        if Capability.LINK_CANCELLATION in port.capabilities
    )
    if not gateways:
        return 0
    asked = 0
    while not stop():
        with ctx.store.transaction() as tx:
            taken = tx.claim_superseded_links(
                now=now, until=now + ctx.settings.unanswered_after, gateways=gateways, limit=batch
            )
        if not taken:
            break
        for payment_id in taken:
            if stop():
                break  # the rest stay taken until their claim lapses, then fall due again
            try:
                if _withdraw(ctx, payment_id, now):
                    asked += 1
            except BillingError as exc:  # its claim lapses and a later reconcile tries again
                log.warning("payment.link_cancel_failed payment=%s error=%s", payment_id, exc)
    return asked


def _withdraw(ctx: Context, payment_id: str, now: datetime) -> bool:
    """Withdraw one claimed link; whether its gateway was asked."""
    with ctx.store.transaction() as tx:
        row = tx.payment_row(payment_id)
        port = ctx.gateways.get(row.gateway or "")
        if row.status != _LIVE or row.reference is None or port is None:
            return False  # settled since it was claimed: nothing to withdraw
        request = _request(tx, row, now)
    answer = _ask(port, request)
    if answer is None:
        return True
    with ctx.store.transaction() as tx:
        row = tx.payment_row(payment_id, lock=True)
        if answer.status is LinkCancellationStatus.CANCELED:
            _canceled(tx, row, now)
            follow = []
        else:
            assert answer.payment is not None  # LinkCancellation checks it
            follow = record(ctx, tx, row, answer.payment, now)
            if row.status != _LIVE:
                row.link_cancel_at = None
            log.info(
                "payment.link_cancel_too_late payment=%s status=%s", row.id, answer.payment.status
            )
    send(ctx, follow, now)
    return True


def _request(tx: Tx, row: PaymentRow, at: datetime) -> CancelLinkRequest:
    assert row.reference is not None
    return CancelLinkRequest(
        idempotency_key=row.idempotency_key,
        reference=row.reference,
        amount=mapping.payment(row).amount,
        customer_id=row.customer_id,
        customer_reference=tx.gateway_customer(row.customer_id, row.gateway or ""),
        at=at,
    )


def _ask(port: PaymentGateway, request: CancelLinkRequest) -> LinkCancellation | None:
    """The gateway's answer, or ``None`` when it failed (nothing is known: ask again later)."""
    try:
        return port.cancel_link(request)
    except Exception as exc:
        log.warning(
            "gateway.cancel_link_raised gateway=%s key=%s error=%s",
            port.name,
            request.idempotency_key,
            type(exc).__name__,
        )
        return None


def _canceled(tx: Tx, row: PaymentRow, at: datetime) -> None:
    """Record a withdrawn link on its locked attempt, unless the attempt settled meanwhile (an
    answer recorded concurrently stands)."""
    row.link_cancel_at = None
    attempt = mapping.payment(row)
    if attempt.status is not PaymentStatus.REQUIRES_ACTION:
        log.warning("payment.link_canceled_after_settling payment=%s status=%s", row.id, row.status)
        return
    invoice = tx.invoice(row.invoice_id)
    canceled, events = attempt.cancel_link(at=at, invoice_status=invoice.status.value)
    tx.save_payment(row, canceled, None)
    tx.record(events)
    log.info("payment.link_canceled payment=%s invoice=%s", row.id, row.invoice_id)
