"""Billing what is due, and collecting invoices through the gateways.

One subscription's work is done in time order: each due step (a start, a trial's end, a renewal, a
retry, a cancellation or end, a resume) and each check of an unsettled payment. Every step is one
transaction that saves the new state, the invoice it makes and the events. A payment is written
with its idempotency key and committed before the gateway is called, the call happens outside
any transaction, and its result is committed afterwards. An attempt whose outcome is unknown is
never charged again blindly: it is reconciled by asking the gateway (``sync``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from billing.domain.events import CreditGranted, Event
from billing.domain.invoices import Invoice, InvoiceStatus
from billing.domain.payments import (
    DeclineKind,
    PaymentResult,
    PaymentStatus,
    idempotency_key,
)
from billing.domain.renewals import advance
from billing.domain.subscriptions import Outcome, payment_failed, payment_succeeded
from billing.ports import ChargeRequest, PaymentGateway, SyncRequest
from billing.services.context import Context, log, new_id
from billing.store import mapping
from billing.store.tables import PaymentRow
from billing.store.unit_of_work import CHECK_MIN, UNSETTLED, Loaded, Tx, next_check

_OPEN = (InvoiceStatus.OPEN, InvoiceStatus.UNCOLLECTIBLE)


@dataclass
class RunReport:
    """What a billing run did."""

    steps: int = 0
    payments: int = 0
    checks: int = 0
    failed: list[str] = field(default_factory=list)
    """Subscriptions whose work raised an error; the run went on without them."""


def apply(tx: Tx, loaded: Loaded, outcome: Outcome, at: datetime) -> tuple[Loaded, list[str]]:
    """Save an outcome: the subscription, credit, invoices and events.

    Returns the saved subscription and the invoices to collect once the transaction commits.
    """
    subscription = outcome.subscription
    saved = tx.save_subscription(loaded, subscription)
    events: list[Event] = list(outcome.events)
    collect: list[str] = []
    if outcome.credit_change is not None:
        tx.change_credit(subscription.customer_id, outcome.credit_change, at)
        if outcome.credit_change.is_positive():
            events.append(
                CreditGranted(
                    at=at,
                    customer_id=subscription.customer_id,
                    amount=outcome.credit_change,
                    reason=f"subscription {subscription.id}",
                )
            )
    if outcome.updated_invoice is not None:
        tx.save_invoice(outcome.updated_invoice)
    if outcome.invoice is not None:
        draft = Invoice.from_draft(outcome.invoice, id=new_id("in"), at=at)
        invoice, invoice_events = draft.finalize(number=tx.next_invoice_number(), at=at)
        tx.add_invoice(invoice)
        events.extend(invoice_events)
        if invoice.status is InvoiceStatus.OPEN:
            collect.append(invoice.id)
    if outcome.retry_invoice_id is not None:
        collect.append(outcome.retry_invoice_id)
    tx.record(events)
    return saved, collect


def run_due(ctx: Context, now: datetime, *, batch: int = 100) -> RunReport:
    """Do all the work due by ``now``, a batch of subscriptions at a time."""
    report = RunReport()
    while True:
        with ctx.store.transaction() as tx:
            due = tx.due_subscriptions(now, batch, skip=report.failed)
        if not due:
            return report
        for subscription_id in due:
            try:
                run_subscription(ctx, subscription_id, now, report)
            except Exception:
                log.exception("billing run failed subscription=%s", subscription_id)
                report.failed.append(subscription_id)


def run_subscription(
    ctx: Context, subscription_id: str, now: datetime, report: RunReport | None = None
) -> None:
    """Do one subscription's due work up to ``now``, in time order."""
    report = report if report is not None else RunReport()
    while True:
        with ctx.store.transaction() as tx:
            loaded = tx.subscription(subscription_id)
            due = loaded.subscription.due_at
            checks = tx.payments_to_check(subscription_id, now)
            check = checks[0] if checks else None
            if check is not None and (due is None or due > now or _at(check) <= due):
                payment_id, at, collect = check.id, _at(check), []
            elif due is not None and due <= now:
                payment_id, at = None, due
                collect = _step(ctx, tx, loaded, now)
            else:
                tx.refresh_next_run(subscription_id, loaded.subscription)
                return
        if payment_id is not None:
            report.checks += 1
            reconcile(ctx, payment_id, at)
        else:
            report.steps += 1
        for invoice_id in collect:
            report.payments += 1
            charge(ctx, invoice_id, at)


def _step(ctx: Context, tx: Tx, loaded: Loaded, now: datetime) -> list[str]:
    subscription = loaded.subscription
    at = subscription.due_at
    assert at is not None
    credit = tx.credit(subscription.customer_id, subscription.plan.billing_currency).amount
    outcome = advance(subscription, now=now, credit=credit, rates=ctx.rates, unit=ctx.proration)
    assert outcome is not None
    log.info(
        "billing step subscription=%s status=%s->%s at=%s",
        subscription.id,
        subscription.status,
        outcome.subscription.status,
        at.isoformat(),
    )
    return apply(tx, loaded, outcome, at)[1]


def charge(ctx: Context, invoice_id: str, at: datetime) -> None:
    """Make the next payment attempt on an invoice, and everything it leads to."""
    queue = [invoice_id]
    while queue:
        queue.extend(_attempt(ctx, queue.pop(0), at))


def _attempt(ctx: Context, invoice_id: str, at: datetime) -> list[str]:
    with ctx.store.transaction() as tx:
        invoice = tx.invoice(invoice_id)
        attempts = tx.payment_rows(invoice_id=invoice_id)
        if invoice.status not in _OPEN or any(row.status in UNSETTLED for row in attempts):
            return []  # paid meanwhile, or an attempt is still out: never charge twice
        method = tx.default_payment_method(invoice.customer_id)
        gateway = ctx.gateways.get(method.gateway) if method is not None else None
        number = len(attempts) + 1
        row = PaymentRow(
            id=new_id("pay"),
            invoice_id=invoice.id,
            subscription_id=invoice.subscription_id,
            customer_id=invoice.customer_id,
            number=number,
            idempotency_key=idempotency_key(invoice.id, number),
            amount_minor=invoice.total.minor,
            currency=invoice.currency.code,
            gateway=None if method is None else method.gateway,
            payment_method_id=None if method is None else method.id,
            status=PaymentStatus.CREATED.value,
            created_at=at,
            check_at=at + CHECK_MIN,
        )
        tx.add_payment(row)
        if method is None or gateway is None:
            code = "no_payment_method" if method is None else "gateway_not_configured"
            result = PaymentResult.failed(DeclineKind.SOFT, code=code)
            return record(tx, row, result, at)
        request = ChargeRequest(
            idempotency_key=row.idempotency_key,
            amount=invoice.total,
            customer_id=invoice.customer_id,
            payment_method=method.token,
            description=f"Invoice {invoice.number}",
            at=at,
            metadata={"invoice": invoice.number or invoice.id},
        )
        payment_id = row.id
    result = _call(gateway, request)
    with ctx.store.transaction() as tx:
        return record(tx, tx.payment_row(payment_id), result, at)


def _call(gateway: PaymentGateway, request: ChargeRequest) -> PaymentResult:
    """Charge; a gateway that raises is a gateway whose answer is unknown."""
    try:
        return gateway.charge(request)
    except Exception as exc:
        log.warning(
            "gateway charge raised gateway=%s key=%s error=%s",
            gateway.name,
            request.idempotency_key,
            type(exc).__name__,
        )
        return PaymentResult(status=PaymentStatus.UNKNOWN, message=type(exc).__name__)


def record(tx: Tx, row: PaymentRow, result: PaymentResult, at: datetime) -> list[str]:
    """Save a gateway's answer and what it means for the invoice and the subscription."""
    attempt = mapping.payment(row)
    if attempt.is_settled():
        return []
    if result.status is attempt.status:
        tx.save_payment(row, attempt, next_check(row.created_at, at))
        return []
    attempt, events = attempt.record(result, at=at)
    tx.save_payment(row, attempt, next_check(row.created_at, at))
    tx.record(events)
    log.info(
        "payment payment=%s invoice=%s attempt=%s status=%s code=%s",
        row.id,
        row.invoice_id,
        row.number,
        attempt.status,
        attempt.code,
    )
    if not attempt.is_settled() or row.subscription_id is None:
        return []
    loaded = tx.subscription(row.subscription_id)
    invoice = tx.invoice(row.invoice_id)
    if invoice.status not in _OPEN:
        log.warning("payment settled on a closed invoice payment=%s invoice=%s", row.id, invoice.id)
        return []
    if attempt.status is PaymentStatus.SUCCEEDED:
        outcome = payment_succeeded(loaded.subscription, invoice, at=at)
    else:
        assert attempt.decline is not None
        outcome = payment_failed(
            loaded.subscription, invoice, attempt=row.number, decline=attempt.decline, at=at
        )
    return apply(tx, loaded, outcome, at)[1]


def reconcile(ctx: Context, payment_id: str, at: datetime) -> None:
    """Ask the gateway what became of an unsettled attempt, and record it.

    An attempt the gateway never received (a crash before sending) is sent again with the same
    idempotency key, which cannot charge twice.
    """
    with ctx.store.transaction() as tx:
        row = tx.payment_row(payment_id)
        if row.status not in UNSETTLED:
            return
        gateway = ctx.gateways.get(row.gateway or "")
        if gateway is None:
            tx.save_payment(row, mapping.payment(row), next_check(row.created_at, at))
            return
        method_token = _token(tx, row)
        amount = mapping.payment(row).amount
        sync = SyncRequest(
            idempotency_key=row.idempotency_key,
            reference=row.reference,
            amount=amount,
            customer_id=row.customer_id,
            at=at,
        )
    try:
        result = gateway.sync(sync)
    except Exception as exc:
        log.warning("gateway sync raised payment=%s error=%s", payment_id, type(exc).__name__)
        result = PaymentResult(status=PaymentStatus.UNKNOWN)
    if result is None:
        request = ChargeRequest(
            idempotency_key=sync.idempotency_key,
            amount=amount,
            customer_id=sync.customer_id,
            payment_method=method_token,
            description=f"Payment {payment_id}",
            at=at,
        )
        result = _call(gateway, request)
    with ctx.store.transaction() as tx:
        follow = record(tx, tx.payment_row(payment_id), result, at)
    for invoice_id in follow:
        charge(ctx, invoice_id, at)


def _token(tx: Tx, row: PaymentRow) -> str:
    for method in tx.payment_methods(row.customer_id):
        if method.id == row.payment_method_id:
            return method.token
    return ""


def _at(row: PaymentRow) -> datetime:
    assert row.check_at is not None
    return row.check_at
