"""Refunds: give back part or all of a succeeded payment through its gateway, exactly once.

A refund is written with its own idempotency key, and a ``check_at``, before the gateway is
called. A refund whose answer was lost (``unknown``), that the gateway has not settled
(``pending``), or whose call never happened (``created``, after a crash) is asked about again
by the reconcile job once its ``check_at`` passes: the same request is sent with the same key,
which every gateway answers with what became of the first one (the port's rule), so money goes
back once. Until it is settled, an unsettled refund counts as refunded: nothing more of that
payment can be refunded meanwhile. Refunds of one invoice's payments are written and settled one
at a time (the invoice's payment rows are locked), so two concurrent partial refunds are both
made, one after the other.

An invoice whose payments are refunded in full gives back, as customer credit, the credit it used
(QVO refunds "the full amount paid and the corresponding credits");
``Settings.refunds_return_credit`` turns that off.

Money that arrived after its invoice was settled became the customer's credit (an overpayment).
A refund of the invoice's payments draws on that money first and takes its credit back when it
is made (``credit.withdrawn``), or is refused if the customer spent it meanwhile; a refund the
gateway then refuses returns it. So money is never both refunded and kept as credit.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from billing.domain.errors import IllegalTransition, InvalidArgument
from billing.domain.events import (
    CreditSource,
    CreditWithdrawn,
    Event,
    PaymentRefunded,
    RefundFailed,
)
from billing.domain.invoices import InvoiceStatus
from billing.domain.money import Money
from billing.domain.payments import PaymentStatus, Refund, RefundStatus, refund_amount
from billing.ports import Capability, PaymentGateway, RefundRequest, RefundResult
from billing.services.billing_run import credit_back, next_check
from billing.services.context import Claim, Context, log, new_id
from billing.services.gateways import gateway, require
from billing.store import mapping
from billing.store.tables import PaymentRow, RefundRow
from billing.store.unit_of_work import UNSETTLED_REFUNDS, Tx

_ANNOUNCED = (RefundStatus.SUCCEEDED.value, RefundStatus.PENDING.value)
"""Statuses whose ``payment.refunded`` event was recorded when the refund reached them."""


def refund(ctx: Context, claim: Claim | None, *, payment_id: str, amount: Money | None) -> Refund:
    """Refund ``amount`` (all that is left by default) of a succeeded payment."""
    now = ctx.clock.now()
    with ctx.store.transaction() as tx:
        row = _locked(tx, payment_id)  # one refund of an invoice's payments at a time
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
        take = Money(min(given.minor, _overpaid_left(tx, row.invoice_id)), given.currency)
        if take.is_positive():
            left = tx.credit(row.customer_id, take.currency, lock=True).amount
            if left < take:
                rule = (
                    f"must be at most {given - (take - left)}: {take} of it is money that became "
                    f"the customer's credit (it came after the invoice was settled), and only "
                    f"{left} of that credit is left"
                )
                raise InvalidArgument("amount", rule, amount)
        number = len(tx.refund_rows(payment_id)) + 1
        refund_row = RefundRow(
            id=new_id("re"),
            payment_id=payment_id,
            idempotency_key=f"{row.idempotency_key}-refund-{number}",
            amount_minor=given.minor,
            currency=given.currency.code,
            status=RefundStatus.CREATED.value,
            created_at=now,
            check_at=now + ctx.settings.unanswered_after,  # once this call is surely over
            credit_taken_minor=take.minor,
        )
        tx.session.add(refund_row)
        if take.is_positive():
            invoice = tx.invoice(row.invoice_id)
            tx.withdraw(
                CreditWithdrawn(
                    at=now,
                    customer_id=row.customer_id,
                    amount=take,
                    reason=f"money paid after {invoice.number} was settled, now refunded",
                    refund_id=refund_row.id,
                    payment_id=payment_id,
                    invoice_id=row.invoice_id,
                    subscription_id=row.subscription_id,
                )
            )
        request = _request(tx, refund_row, row, now)
        if claim is not None:
            claim.remember(tx, _refund(refund_row, row.invoice_id))
    result = _ask(port, request)
    with ctx.store.transaction() as tx:
        return _record(ctx, tx, refund_row.id, result, now)


def reconcile(ctx: Context, now: datetime, *, stop: Callable[[], bool], batch: int) -> int:
    """Ask the gateways again about every unsettled refund due for a check; returns how many
    were asked. Safe to run in several processes at once: each refund is taken by one."""
    asked = 0
    while not stop():
        with ctx.store.transaction() as tx:
            taken = tx.claim_refund_checks(
                now=now, until=now + ctx.settings.unanswered_after, limit=batch
            )
        if not taken:
            break
        for refund_id in taken:
            if stop():
                break  # the rest stay taken until ``until``, then fall due again
            _check(ctx, refund_id, now)
            asked += 1
    return asked


def refunds_of(ctx: Context, payment_id: str) -> list[Refund]:
    """A payment's refunds, oldest first."""
    with ctx.store.transaction() as tx:
        payment = tx.payment_row(payment_id)
        return [_refund(row, payment.invoice_id) for row in tx.refund_rows(payment_id)]


def _check(ctx: Context, refund_id: str, now: datetime) -> None:
    with ctx.store.transaction() as tx:
        row = tx.refund_row(refund_id)
        payment = tx.payment_row(row.payment_id)
        port = ctx.gateways.get(payment.gateway or "")
        if port is None or payment.reference is None:
            log.warning("refund.no_gateway refund=%s gateway=%s", refund_id, payment.gateway)
            row.check_at = next_check(ctx, row.created_at, now)
            return
        request = _request(tx, row, payment, now, again=True)
    result = _ask(port, request)
    with ctx.store.transaction() as tx:
        _record(ctx, tx, refund_id, result, now)


def _request(
    tx: Tx, row: RefundRow, payment: PaymentRow, at: datetime, *, again: bool = False
) -> RefundRequest:
    """The refund's request; ``again`` when it is sent again (a check of an unsettled one)."""
    return RefundRequest(
        idempotency_key=row.idempotency_key,
        reference=payment.reference or "",  # callers checked: only succeeded charges refund
        amount=Money.from_minor(row.amount_minor, row.currency),
        at=at,
        customer_reference=tx.gateway_customer(payment.customer_id, payment.gateway or ""),
        first_sent_at=row.created_at if again else None,
    )


def _ask(port: PaymentGateway, request: RefundRequest) -> RefundResult:
    """The gateway's answer; one that raises leaves the refund unknown, to be asked again."""
    try:
        return port.refund(request)
    except Exception as exc:
        log.warning(
            "gateway.refund_raised gateway=%s key=%s error=%s",
            port.name,
            request.idempotency_key,
            type(exc).__name__,
        )
        return RefundResult(status=RefundStatus.UNKNOWN, message=type(exc).__name__)


def _locked(tx: Tx, payment_id: str) -> PaymentRow:
    """A payment's row, with every attempt of its invoice locked (in id order, by every
    refund alike): what a refund takes or gives back depends on all of them."""
    invoice_id = tx.payment_row(payment_id).invoice_id
    return next(row for row in tx.lock_invoice_payments(invoice_id) if row.id == payment_id)


def _overpaid_left(tx: Tx, invoice_id: str) -> int:
    """Money of an invoice (in minor units) that became the customer's credit, having come
    after the invoice was settled (an overpayment), and that no refund has taken back yet. A
    refund of any of the invoice's payments draws on it first, and takes that credit back."""
    invoice = tx.invoice(invoice_id)
    succeeded = [
        row
        for row in tx.payment_rows(invoice_id=invoice_id)
        if row.status == PaymentStatus.SUCCEEDED.value
    ]
    captured = sum(row.amount_minor for row in succeeded)
    kept = invoice.total.minor if invoice.status is InvoiceStatus.PAID else 0
    taken = sum(
        refund.credit_taken_minor
        for row in succeeded
        for refund in tx.refund_rows(row.id)
        if refund.status != RefundStatus.FAILED.value
    )
    return max(0, captured - kept - taken)


def _record(ctx: Context, tx: Tx, refund_id: str, result: RefundResult, now: datetime) -> Refund:
    """Save the gateway's answer, with the event of the status it reaches (once)."""
    payment = _locked(tx, tx.refund_row(refund_id).payment_id)
    row = tx.refund_row(refund_id, fresh=True)
    if row.status not in UNSETTLED_REFUNDS:  # settled meanwhile: the first answer stands
        return _refund(row, payment.invoice_id)
    before = row.status
    row.status = result.status.value
    row.reference = result.reference or row.reference
    row.code = result.code
    row.message = None if result.message is None else result.message[:255]
    row.updated_at = now
    settled = row.status not in UNSETTLED_REFUNDS
    row.check_at = None if settled else next_check(ctx, row.created_at, now)
    event = _event(row, payment, announced=before in _ANNOUNCED, at=now)
    if event is not None:
        tx.record([event])
    if row.status == RefundStatus.SUCCEEDED.value and ctx.settings.refunds_return_credit:
        _return_credit(tx, row, payment, now)
    if row.status == RefundStatus.FAILED.value and row.credit_taken_minor:
        invoice = tx.invoice(payment.invoice_id)
        refused = Money.from_minor(row.credit_taken_minor, row.currency)
        reason = f"refund {row.id} of invoice {invoice.number} was refused: its credit returns"
        credit_back(tx, payment, invoice, refused, now, CreditSource.REFUND_FAILED, reason)
    log.info("refund.recorded refund=%s status=%s code=%s", row.id, row.status, row.code)
    return _refund(row, payment.invoice_id)


def _return_credit(tx: Tx, refund: RefundRow, payment: PaymentRow, at: datetime) -> None:
    """When ``refund`` (just succeeded) brings the refunds of an invoice's own money to all of
    it, give back the credit the invoice used. The invoice's own money is what paid it; money
    that came after it was settled became credit (an overpayment), and the part of a refund that
    took such credit back is not the invoice's: refunding it gives back no credit. The own money
    refunded only grows, and stops at what was paid, so this happens once, whatever the order of
    the payments, the overpayments and the refunds (this is called with the invoice's payments
    locked, as each refund succeeds)."""
    if refund.amount_minor <= refund.credit_taken_minor:
        return  # it gave back only money that had become credit
    tx.session.flush()
    invoice = tx.invoice(payment.invoice_id)
    used = invoice.credit_applied
    if invoice.status is not InvoiceStatus.PAID or not used.is_positive():
        return
    refunded = sum(
        row.amount_minor - row.credit_taken_minor
        for paid in tx.payment_rows(invoice_id=payment.invoice_id)
        for row in tx.refund_rows(paid.id)
        if row.status == RefundStatus.SUCCEEDED.value
    )
    if refunded != invoice.total.minor:
        return
    reason = f"credit used by invoice {invoice.number}, refunded in full"
    credit_back(tx, payment, invoice, used, at, CreditSource.REFUND, reason)


def _event(row: RefundRow, payment: PaymentRow, *, announced: bool, at: datetime) -> Event | None:
    amount = Money.from_minor(row.amount_minor, row.currency)
    if row.status == RefundStatus.FAILED.value:
        return RefundFailed(
            at=at,
            refund_id=row.id,
            payment_id=payment.id,
            invoice_id=payment.invoice_id,
            subscription_id=payment.subscription_id,
            customer_id=payment.customer_id,
            amount=amount,
            code=row.code,
        )
    if row.status in _ANNOUNCED and not announced:
        return PaymentRefunded(
            at=at,
            refund_id=row.id,
            payment_id=payment.id,
            invoice_id=payment.invoice_id,
            subscription_id=payment.subscription_id,
            customer_id=payment.customer_id,
            amount=amount,
        )
    return None


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
