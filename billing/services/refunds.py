"""Refunds: give back part or all of a succeeded payment through its gateway."""

from __future__ import annotations

from billing.domain.errors import IllegalTransition, InvalidArgument
from billing.domain.events import Event, PaymentRefunded, RefundFailed
from billing.domain.money import Money
from billing.domain.payments import PaymentStatus, Refund, RefundStatus, refund_amount
from billing.ports import Capability, RefundRequest, RefundResult
from billing.services.context import Claim, Context, log, new_id
from billing.services.gateways import gateway, require
from billing.store import mapping
from billing.store.tables import RefundRow


def refund(ctx: Context, claim: Claim | None, *, payment_id: str, amount: Money | None) -> Refund:
    """Refund ``amount`` (all that is left by default) of a succeeded payment.

    The refund is written with its own idempotency key before the gateway is called, so a repeat
    cannot refund twice; a refund whose answer was lost stays ``unknown`` and counts as refunded
    until someone checks it with the gateway.
    """
    now = ctx.clock.now()
    with ctx.store.transaction() as tx:
        row = tx.payment_row(payment_id)
        if row.status != PaymentStatus.SUCCEEDED.value or row.reference is None:
            raise IllegalTransition("payment", payment_id, row.status, "be refunded")
        port = gateway(ctx, row.gateway or "")
        require(port, Capability.REFUNDS, "refund")
        paid = mapping.payment(row).amount
        refunded = Money(tx.refunded(payment_id), paid.currency)
        given = refund_amount(paid=paid, refunded=refunded, wanted=amount)
        if given != paid - refunded and Capability.PARTIAL_REFUNDS not in port.capabilities:
            rule = f"must be all that is left ({paid - refunded}): {port.name} refunds only whole"
            raise InvalidArgument("amount", f"{rule} payments", amount)
        number = len(tx.refund_rows(payment_id)) + 1
        refund_row = RefundRow(
            id=new_id("re"),
            payment_id=payment_id,
            idempotency_key=f"{row.idempotency_key}-refund-{number}",
            amount_minor=given.minor,
            currency=given.currency.code,
            status=RefundStatus.CREATED.value,
            created_at=now,
        )
        tx.session.add(refund_row)
        request = RefundRequest(
            idempotency_key=refund_row.idempotency_key,
            reference=row.reference,
            amount=given,
            at=now,
            customer_reference=tx.gateway_customer(row.customer_id, port.name),
        )
        invoice_id, subscription_id, customer_id = (
            row.invoice_id,
            row.subscription_id,
            row.customer_id,
        )
        if claim is not None:
            claim.remember(tx, _refund(refund_row, invoice_id))
    try:
        result = port.refund(request)
    except Exception as exc:
        log.warning("gateway.refund_raised payment=%s error=%s", payment_id, type(exc).__name__)
        result = RefundResult(status=RefundStatus.UNKNOWN, message=type(exc).__name__)
    with ctx.store.transaction() as tx:
        saved = tx.session.get(RefundRow, refund_row.id)
        assert saved is not None
        saved.status = result.status.value
        saved.reference = result.reference
        saved.code = result.code
        saved.message = None if result.message is None else result.message[:255]
        saved.updated_at = now
        done = _refund(saved, invoice_id)
        event: Event
        if result.status is RefundStatus.FAILED:
            event = RefundFailed(
                at=now,
                refund_id=saved.id,
                payment_id=payment_id,
                invoice_id=invoice_id,
                subscription_id=subscription_id,
                customer_id=customer_id,
                amount=given,
                code=result.code,
            )
        else:
            event = PaymentRefunded(
                at=now,
                refund_id=saved.id,
                payment_id=payment_id,
                invoice_id=invoice_id,
                subscription_id=subscription_id,
                customer_id=customer_id,
                amount=given,
            )
        tx.record([event])
    return done


def _refund(row: RefundRow, invoice_id: str) -> Refund:
    return Refund(
        id=row.id,
        payment_id=row.payment_id,
        invoice_id=invoice_id,
        amount=Money.from_minor(row.amount_minor, row.currency),
        status=RefundStatus(row.status),
        created_at=row.created_at,
        reference=row.reference,
        code=row.code,
    )
