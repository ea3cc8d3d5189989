"""Billing what is due, and collecting invoices through the gateways, exactly once.

The rules of one subscription's work, which a batch (:mod:`billing.services.batch_run`, the
billing run) and a single subscription (:func:`run_subscription`, the API's immediate operations,
or one set aside from its batch) share: :func:`apply` saves a step's outcome, :func:`open_attempt`
writes an attempt, :func:`record` saves a gateway's answer, :func:`reconcile` asks about an
unsettled attempt. One subscription's work is done in time order: each due step (a start, a
trial's end, a renewal, a retry, a cancellation or end, a resume) and each check of an unsettled
payment.

A step is one transaction that saves the new state, the invoice it makes, the events, and the
payment attempt that will collect the invoice, with its idempotency key. The gateway is called
after that transaction commits, outside any transaction, and only while the run still holds its
claim; its answer is committed afterwards. An attempt whose outcome is unknown (no answer yet, a
timeout, a crash before or after sending) is never charged again blindly: once its
``check_at`` passes it is reconciled by asking the gateway (``sync``), and sent again with the
same key only if the gateway never received it. Unique constraints and optimistic versions back
all of this up when two processes race.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from billing.domain.customers import PaymentMethod
from billing.domain.errors import BillingError, ConcurrentUpdate
from billing.domain.events import CreditGranted, CreditSource, Event
from billing.domain.invoices import Invoice, InvoiceStatus
from billing.domain.money import Money
from billing.domain.payments import (
    DeclineKind,
    ErrorCode,
    PaymentResult,
    PaymentStatus,
    idempotency_key,
)
from billing.domain.renewals import advance
from billing.domain.subscriptions import Outcome, Subscription, payment_failed, payment_succeeded
from billing.ports import ChargeRequest, PaymentGateway, SyncRequest
from billing.services.context import Context, log, new_id
from billing.store import mapping
from billing.store.tables import PaymentRow
from billing.store.unit_of_work import UNSETTLED, Loaded, Tx

_OPEN = (InvoiceStatus.OPEN, InvoiceStatus.UNCOLLECTIBLE)
_CHECK_MAX = timedelta(days=1)


@dataclass(frozen=True, slots=True)
class PendingCharge:
    """A committed payment attempt, ready to go to its gateway."""

    payment_id: str
    gateway: str
    request: ChargeRequest
    subscription_id: str | None = None


@dataclass
class RunReport:
    """What a billing run did; safe to update from the run's threads."""

    steps: int = 0
    payments: int = 0
    checks: int = 0
    refund_checks: int = 0
    """Unsettled refunds asked about again (reconcile runs only)."""
    late_payment_checks: int = 0
    """Expired payment links asked about a late payment (reconcile runs only)."""
    link_cancellations: int = 0
    """Live payment links of invoices settled another way that their gateways were asked to
    withdraw (reconcile runs only, :mod:`billing.services.links`)."""
    claimed: int = 0
    contended: list[str] = field(default_factory=list)
    """Subscriptions another process changed first; left for a later run."""
    failed: list[str] = field(default_factory=list)
    """Subscriptions whose work raised an error; the run went on without them."""
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def count(self, name: str, by: int = 1) -> None:
        with self._lock:
            setattr(self, name, getattr(self, name) + by)

    def note(self, name: str, subscription_id: str) -> None:
        with self._lock:
            getattr(self, name).append(subscription_id)


def next_check(ctx: Context, sent_at: datetime, at: datetime) -> datetime:
    """When to ask again, after a check at ``at``, about an unsettled payment: back off with the
    time since it was last sent (not since its billing instant, which catch-up billing puts far
    in the past), from the reconcile delay up to a day."""
    first = ctx.settings.reconcile_after
    return at + min(max(at - sent_at, first), max(first, _CHECK_MAX))


# -- saving outcomes ------------------------------------------------------------------------


def apply(
    ctx: Context, tx: Tx, loaded: Loaded, outcome: Outcome, at: datetime
) -> tuple[Loaded, list[PendingCharge]]:
    """Save an outcome: the subscription, credit, invoices, events, and payment attempts.

    Returns the saved subscription and the attempts to send once the transaction commits.
    """
    subscription = outcome.subscription
    saved = tx.save_subscription(loaded, subscription, refresh=False)
    events: list[Event] = list(outcome.events)
    collect: list[str] = []
    if outcome.credit_change is not None:
        tx.change_credit(subscription.customer_id, outcome.credit_change, at)
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
    sends = [payment for invoice_id in collect for payment in open_attempt(ctx, tx, invoice_id, at)]
    # the new attempts' checks count too, and an attempt that failed at once (no payment method)
    # saved the subscription again, with its retry: read it back rather than use ``subscription``
    tx.refresh_next_run(subscription.id)
    return saved, sends


def open_attempt(ctx: Context, tx: Tx, invoice_id: str, at: datetime) -> list[PendingCharge]:
    """Write the next payment attempt on an invoice, with its idempotency key.

    Returns the attempt to send, or nothing: when the invoice is settled, when an attempt is
    still unsettled (never two at once), or when there is no payment method to charge (then the
    attempt fails at once, without a gateway, and dunning follows).
    """
    invoice = tx.invoice(invoice_id)
    attempts = tx.payment_rows(invoice_id=invoice_id)
    if invoice.status not in _OPEN or any(row.status in UNSETTLED for row in attempts):
        return []
    method = tx.default_payment_method(invoice.customer_id)
    gateway = ctx.gateways.get(method.gateway) if method is not None else None
    refusal = _refusal(method, gateway, invoice)
    number = len(attempts) + 1
    row = tx.add_payment(
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
        sent_at=at,  # sent on the billing schedule; a resend at a check moves it
        # its call may be in flight until the sender's lease plus the gateway's timeout have
        # passed, in real time: only then is asking the gateway (and maybe resending) safe
        check_at=max(at, ctx.clock.now()) + ctx.settings.unanswered_after,
    )
    if refusal is not None or method is None:
        return record(ctx, tx, row, refusal or _NO_METHOD, at)
    request = _charge_request(tx, row, invoice, method, at)
    return [PendingCharge(row.id, method.gateway, request, invoice.subscription_id)]


_NO_METHOD = PaymentResult.failed(
    DeclineKind.SOFT, code="no_payment_method", error=ErrorCode.NO_PAYMENT_METHOD
)
_NOT_SENT = PaymentResult.failed(
    DeclineKind.SOFT,
    code="invoice_settled",
    message="never sent: its invoice was settled another way before it could be",
)


def _refusal(
    method: PaymentMethod | None, gateway: PaymentGateway | None, invoice: Invoice
) -> PaymentResult | None:
    """Why an attempt fails without reaching a gateway, if it must."""
    if method is None:
        return _NO_METHOD
    if gateway is None:
        return PaymentResult.failed(DeclineKind.SOFT, code="gateway_not_configured")
    if invoice.currency.code not in gateway.currencies:
        return PaymentResult.failed(
            DeclineKind.HARD,
            code="currency_not_supported",
            message=f"{gateway.name} does not charge in {invoice.currency.code}",
            error=ErrorCode.PAYMENT_METHOD_UNSUPPORTED,
        )
    return None


def record(
    ctx: Context,
    tx: Tx,
    row: PaymentRow,
    result: PaymentResult,
    at: datetime,
    *,
    resent: bool = False,
) -> list[PendingCharge]:
    """Save a gateway's answer, got at ``at``, and what it means for the invoice and the
    subscription.

    ``row`` must be locked (:meth:`Tx.payment_row` with ``lock``), so that of two processes
    recording one attempt's outcome, the second sees the first's: one fact, one event.
    ``resent`` says the answer is to a resend at this check, the gateway having never received
    the attempt: its checks back off from now on, and its outcome is dated as if it had been
    sent at its billing instant (never before the subscription's latest event), so that the
    dunning of an attempt a crash kept from its gateway keeps the billing schedule.
    Returns follow-up attempts to send (a reactivation can bill the rest of a period at once).
    """
    attempt = mapping.payment(row)
    if not attempt.accepts(result):
        return []  # another process recorded it first
    if resent:
        row.sent_at = at
    check_at = next_check(ctx, row.sent_at, at)
    if result.status is attempt.status:
        tx.save_payment(row, attempt, check_at)
        return []
    if resent and row.subscription_id is not None:
        latest = tx.last_event_at(row.subscription_id) or row.created_at
        at = min(at, max(row.created_at, latest))
    attempt, events = attempt.record(result, at=at)
    settled = attempt.is_settled() and row.subscription_id is not None
    # a settled attempt's subscription is saved next, which brings its next_run_at up to date
    tx.save_payment(row, attempt, check_at, refresh=not settled)
    tx.record(events)
    log.info(
        "payment.recorded payment=%s invoice=%s attempt=%s status=%s code=%s",
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
        if attempt.status is PaymentStatus.SUCCEEDED:
            _overpaid(tx, row, invoice, attempt.amount, at)
        return []
    if attempt.status is PaymentStatus.SUCCEEDED:
        outcome = payment_succeeded(loaded.subscription, invoice, at=at)
    else:
        assert attempt.decline is not None
        credit = tx.credit(row.customer_id, invoice.currency, lock=True)  # a final invoice uses it
        outcome = payment_failed(
            loaded.subscription,
            invoice,
            attempt=row.number,
            decline=attempt.decline,
            at=at,
            credit=credit.amount,
            final_debt=ctx.final_debt,
        )
    return apply(ctx, tx, loaded, outcome, at)[1]


def _overpaid(tx: Tx, row: PaymentRow, invoice: Invoice, amount: Money, at: datetime) -> None:
    """Money arrived for an invoice settled another way (paid, or voided into debt): it is still
    the customer's money, so it becomes the customer's credit."""
    log.warning("payment.settled_on_closed_invoice payment=%s invoice=%s", row.id, invoice.id)
    reason = f"payment {row.id} came after invoice {invoice.number} was {invoice.status}"
    credit_back(tx, row, invoice, amount, at, CreditSource.OVERPAYMENT, reason)


def credit_back(
    tx: Tx,
    payment: PaymentRow,
    invoice: Invoice,
    amount: Money,
    at: datetime,
    source: CreditSource,
    reason: str,
) -> None:
    """Credit the customer with money of a payment's invoice (overpaid, or given back)."""
    tx.grant(
        CreditGranted(
            at=at,
            customer_id=payment.customer_id,
            amount=amount,
            reason=reason,
            source=source,
            subscription_id=payment.subscription_id,
            invoice_id=invoice.id,
        )
    )


# -- talking to gateways --------------------------------------------------------------------


def send(
    ctx: Context,
    charges: Iterable[PendingCharge],
    at: datetime,
    *,
    deadline: datetime | None = None,
) -> int:
    """Send written attempts to their gateways and record the answers; returns how many went.

    ``deadline`` is when the sender's claim lapses: no attempt is sent after it, so a run that
    lost its claim leaves the attempt to be reconciled by whoever takes the subscription over.
    """
    queue, sent = list(charges), 0
    while queue:
        pending = queue.pop(0)
        if deadline is not None and ctx.clock.now() >= deadline:
            log.warning("billing.claim_lapsed payment=%s", pending.payment_id)
            continue
        ctx.hooks.attempt_written(pending.payment_id)
        result = _charge(ctx.gateways[pending.gateway], pending.request)
        ctx.hooks.gateway_answered(pending.payment_id, result)
        sent += 1
        queue.extend(_save_answer(ctx, pending.payment_id, result, at))
    return sent


def _save_answer(
    ctx: Context,
    payment_id: str,
    result: PaymentResult,
    at: datetime,
    *,
    resent: bool = False,
) -> list[PendingCharge]:
    with ctx.store.transaction() as tx:
        row = tx.payment_row(payment_id, lock=True)
        follow = record(ctx, tx, row, result, at, resent=resent)
        ctx.hooks.before_outcome_commit(payment_id)
    return follow


def _charge_request(
    tx: Tx,
    row: PaymentRow,
    invoice: Invoice,
    method: PaymentMethod | None,
    at: datetime,
    *,
    again: bool = False,
) -> ChargeRequest:
    """The attempt's charge; ``again`` for a resend or a question about it."""
    return ChargeRequest(
        idempotency_key=row.idempotency_key,
        amount=mapping.payment(row).amount,
        customer_id=row.customer_id,
        customer_reference=tx.gateway_customer(row.customer_id, row.gateway or ""),
        payment_method="" if method is None else method.token,
        description=f"Invoice {invoice.number}",
        at=at,
        metadata={"invoice": invoice.number or invoice.id, "attempt": str(row.number)},
        first_sent_at=row.created_at if again else None,
    )


def _charge(gateway: PaymentGateway, request: ChargeRequest) -> PaymentResult:
    """Charge; a gateway that raises is a gateway whose answer is unknown."""
    try:
        return gateway.charge(request)
    except Exception as exc:
        log.warning(
            "gateway.charge_raised gateway=%s key=%s error=%s",
            gateway.name,
            request.idempotency_key,
            type(exc).__name__,
        )
        return PaymentResult(status=PaymentStatus.UNKNOWN, message=type(exc).__name__)


def reconcile(
    ctx: Context, payment_id: str, at: datetime, *, deadline: datetime | None = None
) -> None:
    """Ask the gateway what became of an unsettled attempt, and record it.

    An attempt the gateway never received (a crash before sending, a lost claim) is sent again
    with the same idempotency key, which cannot charge twice; unless its invoice was settled
    another way meanwhile: then it fails without being sent (``invoice_settled``).
    """
    with ctx.store.transaction() as tx:
        row = tx.payment_row(payment_id)
        if row.status not in UNSETTLED:
            return
        gateway = ctx.gateways.get(row.gateway or "")
        if gateway is None:
            log.warning("reconcile.no_gateway payment=%s gateway=%s", payment_id, row.gateway)
            tx.save_payment(row, mapping.payment(row), next_check(ctx, row.sent_at, at))
            return
        invoice = tx.invoice(row.invoice_id)
        request = _charge_request(tx, row, invoice, _method(tx, row), at, again=True)
    result = _sync(gateway, request, row.reference)
    resent = result is None
    if result is None and invoice.status not in _OPEN:
        # the gateway never had it, and its invoice was settled another way meanwhile (paid by
        # an older link paid late, voided): never send it now
        result, resent = _NOT_SENT, False
    elif result is None:
        if deadline is not None and ctx.clock.now() >= deadline:
            return
        ctx.hooks.attempt_written(payment_id)
        result = _charge(gateway, request)
    ctx.hooks.gateway_answered(payment_id, result)
    send(ctx, _save_answer(ctx, payment_id, result, at, resent=resent), at, deadline=deadline)


def _sync(
    gateway: PaymentGateway, request: ChargeRequest, reference: str | None
) -> PaymentResult | None:
    """Ask what became of a charge; a gateway that raises leaves the outcome unknown."""
    try:
        return gateway.sync(
            SyncRequest(
                idempotency_key=request.idempotency_key,
                reference=reference,
                amount=request.amount,
                customer_id=request.customer_id,
                customer_reference=request.customer_reference,
                payment_method=request.payment_method or None,
                at=request.at,
                first_sent_at=request.first_sent_at,
            )
        )
    except Exception as exc:
        log.warning(
            "gateway.sync_raised gateway=%s key=%s error=%s",
            gateway.name,
            request.idempotency_key,
            type(exc).__name__,
        )
        return PaymentResult(status=PaymentStatus.UNKNOWN)


def verify(ctx: Context, payment_id: str, at: datetime) -> PaymentResult | None:
    """What the gateway says about an unsettled attempt (or an expired link, which may have been
    paid late), without ever sending it (a notification's claim is checked this way); ``None``
    if settled or unknown to the gateway."""
    with ctx.store.transaction() as tx:
        row = tx.payment_row(payment_id)
        gateway = ctx.gateways.get(row.gateway or "")
        open_to_news = row.status in UNSETTLED or mapping.payment(row).may_be_paid_late()
        if not open_to_news or gateway is None:
            return None
        invoice = tx.invoice(row.invoice_id)
        request = _charge_request(tx, row, invoice, _method(tx, row), at, again=True)
    return _sync(gateway, request, row.reference)


_LATE_FIRST = timedelta(hours=1)
_LATE_MAX = timedelta(days=1)
"""A link that expired unpaid is first asked about an hour after its expiry, then after as long
again as it has been expired, at most a day apart, for ``Settings.late_payment_days``."""


def check_late_payments(
    ctx: Context, now: datetime, *, stop: Callable[[], bool], batch: int
) -> int:
    """Ask the gateways whether recently expired payment links were paid after all (their
    notification may never come), and record those that were; returns how many were asked.
    Safe to run in several processes at once: each link is taken by one."""
    if not ctx.settings.late_payment_days:
        return 0
    asked = 0
    while not stop():
        with ctx.store.transaction() as tx:
            taken = tx.claim_late_payment_checks(
                now=now,
                since=now - ctx.settings.late_payment,
                first=_LATE_FIRST,
                until=now + ctx.settings.unanswered_after,
                limit=batch,
            )
        if not taken:
            break
        for payment_id in taken:
            if stop():
                break  # the rest stay taken until ``until``, then fall due again
            _check_late(ctx, payment_id, now)
            asked += 1
    return asked


def run_unless_stuck(ctx: Context, subscription_id: str, now: datetime, *, why: str) -> bool:
    """:func:`run_subscription`; ``False`` (logged as ``<why>.billing_stuck``) if its billing
    cannot go on now (a UF rate not known yet), whose stuck step stays due for the billing runs.
    A concurrent update is raised: another process is at the subscription."""
    try:
        run_subscription(ctx, subscription_id, now)
    except ConcurrentUpdate:
        raise
    except BillingError as exc:
        log.warning("%s.billing_stuck subscription=%s error=%s", why, subscription_id, exc)
        return False
    return True


def bill_due_now(ctx: Context, subscription_id: str | None, now: datetime) -> None:
    """After news of a payment, do its subscription's work due by ``now`` at once (a late
    payment that reactivates an unpaid subscription leaves the rest of its period to bill), so
    that the next call on the subscription does not find it due. Work that cannot be done now,
    or that another process is doing, is left to the billing runs."""
    if subscription_id is None:
        return
    try:
        run_unless_stuck(ctx, subscription_id, now, why="payment")
    except ConcurrentUpdate:
        log.info("payment.due_work_contended subscription=%s", subscription_id)


def _check_late(ctx: Context, payment_id: str, now: datetime) -> None:
    answer = verify(ctx, payment_id, now)
    with ctx.store.transaction() as tx:
        row = tx.payment_row(payment_id, lock=True)
        paid = answer is not None and answer.status is PaymentStatus.SUCCEEDED
        follow = record(ctx, tx, row, answer, now) if paid and answer is not None else []
        expired_at = row.updated_at or row.created_at
        if mapping.payment(row).may_be_paid_late():
            row.late_check_at = now + min(max(now - expired_at, _LATE_FIRST), _LATE_MAX)
        else:
            row.late_check_at = None
    send(ctx, follow, now)
    if paid:
        log.info("payment.paid_late_found payment=%s", payment_id)
        bill_due_now(ctx, row.subscription_id, now)


def _method(tx: Tx, row: PaymentRow) -> PaymentMethod | None:
    for method in tx.payment_methods(row.customer_id):
        if method.id == row.payment_method_id:
            return method
    return None


# -- billing runs ---------------------------------------------------------------------------


def bill_due(ctx: Context, tx: Tx, subscription_id: str, now: datetime) -> list[PendingCharge]:
    """Every step of a subscription due by ``now``, in this transaction (a subscribe, whose
    first invoice is written with the subscription or not at all)."""
    sends: list[PendingCharge] = []
    loaded = tx.subscription(subscription_id)
    while (due := loaded.subscription.due_at) is not None and due <= now:
        loaded, more = _step(ctx, tx, loaded, now)
        sends.extend(more)
    return sends


def run_subscription(
    ctx: Context,
    subscription_id: str,
    now: datetime,
    report: RunReport | None = None,
    *,
    deadline: datetime | None = None,
    checks_only: bool = False,
) -> Subscription | None:
    """Do one subscription's work due by ``now``, in time order (only payment checks if
    ``checks_only``); returns the subscription as the work left it, or ``None`` if the claim
    lapsed first."""
    report = report if report is not None else RunReport()
    while True:
        if deadline is not None and ctx.clock.now() >= deadline:
            # the claim lapsed: another worker may hold this subscription now
            log.warning("billing.claim_lapsed subscription=%s", subscription_id)
            return None
        with ctx.store.transaction() as tx:
            loaded = tx.subscription(subscription_id)
            due = None if checks_only else loaded.subscription.due_at
            checks = tx.payments_to_check(subscription_id, now)
            check = checks[0] if checks else None
            if check is not None and (due is None or due > now or _at(check) <= due):
                payment_id, at, sends = check.id, _at(check), []
            elif due is not None and due <= now:
                payment_id, at = None, due
                sends = _step(ctx, tx, loaded, now)[1]
            else:
                if loaded.next_run_at is None or loaded.next_run_at <= now:
                    tx.refresh_next_run(subscription_id, loaded.subscription)  # heal a stale one
                return loaded.subscription
        if payment_id is not None:
            report.count("checks")
            reconcile(ctx, payment_id, at, deadline=deadline)
        else:
            report.count("steps")
        report.count("payments", send(ctx, sends, at, deadline=deadline))


def _step(
    ctx: Context, tx: Tx, loaded: Loaded, now: datetime
) -> tuple[Loaded, list[PendingCharge]]:
    subscription = loaded.subscription
    at = subscription.due_at
    assert at is not None
    credit = tx.credit(subscription.customer_id, subscription.plan.billing_currency, lock=True)
    outcome = advance(
        subscription,
        now=now,
        credit=credit.amount,
        rates=ctx.rates,
        unit=ctx.proration,
        final_debt=ctx.final_debt,
    )
    assert outcome is not None
    log.debug(
        "billing.step subscription=%s status=%s->%s at=%s",
        subscription.id,
        subscription.status,
        outcome.subscription.status,
        at.isoformat(),
    )
    return apply(ctx, tx, loaded, outcome, at)


def _at(row: PaymentRow) -> datetime:
    assert row.check_at is not None
    return row.check_at
