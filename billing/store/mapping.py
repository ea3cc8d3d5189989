"""Rows to domain values and back: the one place that knows both shapes."""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal
from functools import lru_cache
from types import MappingProxyType
from typing import Any

from billing.domain import _checks
from billing.domain.catalog import Plan, PlanStatus
from billing.domain.currencies import UNITS_OF_ACCOUNT
from billing.domain.customers import CardEnrollment, Customer, EnrollmentStatus, PaymentMethod
from billing.domain.dunning import AfterRetries, RetryPolicy
from billing.domain.invoices import Invoice, InvoiceLine, InvoiceReason, InvoiceStatus, LineKind
from billing.domain.ledger import DebtItem, DebtKind, HeldCredit
from billing.domain.money import Currency, Money, Rounding
from billing.domain.payments import DeclineKind, ErrorCode, PaymentAttempt, PaymentStatus
from billing.domain.periods import Interval, IntervalUnit, Period
from billing.domain.subscriptions import Dunning, Subscription, SubscriptionStatus
from billing.domain.taxes import TaxRate, TaxRounding
from billing.store.tables import (
    CustomerRow,
    DebtRow,
    EnrollmentRow,
    InvoiceLineRow,
    InvoiceRow,
    PaymentMethodRow,
    PaymentRow,
    PlanRow,
    SubscriptionRow,
)


def _period(start: datetime | None, end: datetime | None) -> Period | None:
    return None if start is None or end is None else Period(start, end)


def customer_row(customer: Customer, created_at: datetime) -> CustomerRow:
    fields = customer_fields(customer, created_at)
    attributes = fields.pop("metadata")
    return CustomerRow(**fields, attributes=attributes)


def customer_fields(customer: Customer, created_at: datetime) -> dict[str, Any]:
    """The columns of a customer's row, by column name."""
    return {
        "id": customer.id,
        "timezone": customer.timezone.key,
        "metadata": dict(customer.metadata),
        "created_at": created_at,
    }


def customer(row: CustomerRow) -> Customer:
    return Customer(
        id=row.id,
        timezone=_checks.timezone(row.timezone),
        metadata=MappingProxyType(dict(row.attributes)),
    )


def payment_method_row(method: PaymentMethod) -> PaymentMethodRow:
    return PaymentMethodRow(**payment_method_fields(method))


def payment_method_fields(method: PaymentMethod) -> dict[str, Any]:
    """The columns of a payment method's row (the rest keep their defaults)."""
    return {
        "id": method.id,
        "customer_id": method.customer_id,
        "gateway": method.gateway,
        "token": method.token,
        "label": method.label,
        "is_default": method.is_default,
        "created_at": method.created_at,
    }


def plan_row(plan: Plan, created_at: datetime) -> PlanRow:
    policy = plan.retry_policy
    return PlanRow(
        code=plan.code,
        name=plan.name,
        price_minor=plan.price.minor,
        price_currency=plan.price.currency.code,
        charge_currency=plan.billing_currency.code,
        interval=plan.interval.unit.value,
        interval_count=plan.interval.count,
        trial_days=plan.trial_days,
        cycles=plan.cycles,
        status=plan.status.value,
        retry_delays_seconds=[int(delay.total_seconds()) for delay in policy.delays],
        retry_max_attempts=policy.max_attempts,
        retry_then=policy.then.value,
        created_at=created_at,
    )


def plan(row: PlanRow) -> Plan:
    price = Money(row.price_minor, Currency.of(row.price_currency))
    return Plan(
        code=row.code,
        name=row.name,
        price=price,
        interval=Interval(IntervalUnit(row.interval), row.interval_count),
        trial_days=row.trial_days,
        cycles=row.cycles,
        status=PlanStatus(row.status),
        retry_policy=RetryPolicy(
            delays=tuple(timedelta(seconds=s) for s in row.retry_delays_seconds),
            max_attempts=row.retry_max_attempts,
            then=AfterRetries(row.retry_then),
        ),
        charge_currency=None
        if row.charge_currency == row.price_currency and row.price_currency not in UNITS_OF_ACCOUNT
        else Currency.of(row.charge_currency),
    )


def subscription_fields(subscription: Subscription) -> dict[str, Any]:
    """Every column of a subscription's row but ``version`` (the store manages it)."""
    tax, dunning = subscription.tax, subscription.dunning
    return {
        "id": subscription.id,
        "customer_id": subscription.customer_id,
        "plan_code": subscription.plan.code,
        "timezone": subscription.timezone.key,
        "status": subscription.status.value,
        "created_at": subscription.created_at,
        "start": subscription.start,
        "trial_end": subscription.trial_end,
        "cycles": subscription.cycles,
        "tax_name": tax.name if tax else None,
        "tax_percent": str(tax.percent) if tax else None,
        "tax_inclusive": tax.inclusive if tax else None,
        "tax_rounding": tax.rounding.value if tax else None,
        "tax_mode": tax.mode.value if tax else None,
        "prorate": subscription.prorate,
        "current_index": subscription.current_index,
        "cancel_at_period_end": subscription.cancel_at_period_end,
        "canceled_at": subscription.canceled_at,
        "ended_at": subscription.ended_at,
        "paused_at": subscription.paused_at,
        "resume_at": subscription.resume_at,
        "resume_from": subscription.resume_from,
        "dunning_invoice_id": dunning.invoice_id if dunning else None,
        "dunning_failed_attempts": dunning.failed_attempts if dunning else None,
        "dunning_retry_at": dunning.retry_at if dunning else None,
        "collections": [
            {
                "invoice_id": c.invoice_id,
                "failed_attempts": c.failed_attempts,
                "retry_at": None if c.retry_at is None else c.retry_at.isoformat(),
            }
            for c in subscription.collections
        ]
        or None,
        "held_credit": [
            {
                "amount_minor": held.amount.minor,
                "currency": held.amount.currency.code,
                "waiting_on": list(held.waiting_on),
                "description": held.description,
            }
            for held in subscription.held_credit
        ]
        or None,
        "period_price_minor": None
        if subscription.period_price is None
        else subscription.period_price.minor,
        "not_before": subscription.not_before,
    }


def debt_rows(subscription: Subscription) -> list[DebtRow]:
    return [DebtRow(**fields) for fields in debt_fields(subscription)]


def debt_fields(subscription: Subscription) -> list[dict[str, Any]]:
    """The columns of a subscription's debt rows (the key left to the database)."""
    return [
        {
            "subscription_id": subscription.id,
            "position": position,
            "kind": item.kind.value,
            "amount_minor": item.amount.minor,
            "currency": item.amount.currency.code,
            "description": item.description,
            "period_start": item.period.start if item.period else None,
            "period_end": item.period.end if item.period else None,
            "source": item.source,
        }
        for position, item in enumerate(subscription.debt)
    ]


@lru_cache(maxsize=1024)
def _tax(name: str, percent: str, inclusive: bool, rounding: str, mode: str) -> TaxRate:
    """A tax rate as stored; most subscriptions share a few, so each is built once."""
    return TaxRate(
        name=name,
        percent=Decimal(percent),
        inclusive=inclusive,
        rounding=TaxRounding(rounding),
        mode=Rounding(mode),
    )


def subscription(row: SubscriptionRow, plan_of_it: Plan, debts: list[DebtRow]) -> Subscription:
    tax = None
    if row.tax_name is not None:
        assert row.tax_percent is not None
        assert row.tax_inclusive is not None
        tax = _tax(
            row.tax_name,
            row.tax_percent,
            row.tax_inclusive,
            row.tax_rounding or TaxRounding.PER_INVOICE,
            row.tax_mode or Rounding.HALF_UP,
        )
    dunning = None
    if row.dunning_invoice_id is not None:
        dunning = Dunning(
            invoice_id=row.dunning_invoice_id,
            failed_attempts=row.dunning_failed_attempts or 0,
            retry_at=row.dunning_retry_at,
        )
    return Subscription(
        id=row.id,
        customer_id=row.customer_id,
        plan=plan_of_it,
        timezone=_checks.timezone(row.timezone),
        status=SubscriptionStatus(row.status),
        created_at=row.created_at,
        start=row.start,
        trial_end=row.trial_end,
        cycles=row.cycles,
        tax=tax,
        prorate=row.prorate,
        current_index=row.current_index,
        cancel_at_period_end=row.cancel_at_period_end,
        canceled_at=row.canceled_at,
        ended_at=row.ended_at,
        paused_at=row.paused_at,
        resume_at=row.resume_at,
        resume_from=row.resume_from,
        dunning=dunning,
        collections=tuple(
            Dunning(
                invoice_id=c["invoice_id"],
                failed_attempts=c["failed_attempts"],
                retry_at=None if c["retry_at"] is None else datetime.fromisoformat(c["retry_at"]),
            )
            for c in row.collections or ()
        ),
        held_credit=tuple(
            HeldCredit(
                amount=Money(held["amount_minor"], Currency.of(held["currency"])),
                waiting_on=tuple(held["waiting_on"]),
                description=held["description"],
            )
            for held in row.held_credit or ()
        ),
        period_price=None
        if row.period_price_minor is None
        else Money(row.period_price_minor, plan_of_it.billing_currency),
        not_before=row.not_before,
        debt=tuple(
            DebtItem(
                kind=DebtKind(debt.kind),
                amount=Money(debt.amount_minor, Currency.of(debt.currency)),
                description=debt.description,
                period=_period(debt.period_start, debt.period_end),
                source=debt.source,
            )
            for debt in sorted(debts, key=lambda d: d.position)
        ),
    )


def invoice_row(invoice: Invoice) -> InvoiceRow:
    return InvoiceRow(**invoice_fields(invoice))


def invoice_fields(invoice: Invoice) -> dict[str, Any]:
    """The columns of an invoice's row."""
    assert invoice.number is not None, "only finalized invoices are stored"
    return {
        "id": invoice.id,
        "number": invoice.number,
        "customer_id": invoice.customer_id,
        "subscription_id": invoice.subscription_id,
        "currency": invoice.currency.code,
        "reason": invoice.reason.value,
        "period_start": invoice.period.start if invoice.period else None,
        "period_end": invoice.period.end if invoice.period else None,
        "status": invoice.status.value,
        "total_minor": invoice.total.minor,
        "created_at": invoice.created_at,
        "finalized_at": invoice.finalized_at,
        "paid_at": invoice.paid_at,
        "closed_at": invoice.closed_at,
    }


def line_rows(invoice: Invoice) -> list[InvoiceLineRow]:
    return [InvoiceLineRow(**fields) for fields in line_fields(invoice)]


def line_fields(invoice: Invoice) -> list[dict[str, Any]]:
    """The columns of an invoice's line rows (the key left to the database)."""
    return [
        {
            "invoice_id": invoice.id,
            "position": position,
            "kind": line.kind.value,
            "description": line.description,
            "amount_minor": line.amount.minor,
            "period_start": line.period.start if line.period else None,
            "period_end": line.period.end if line.period else None,
            "taxable": line.taxable,
        }
        for position, line in enumerate(invoice.lines)
    ]


def invoice(row: InvoiceRow, lines: list[InvoiceLineRow]) -> Invoice:
    currency = Currency.of(row.currency)
    return Invoice(
        id=row.id,
        customer_id=row.customer_id,
        subscription_id=row.subscription_id,
        currency=currency,
        reason=InvoiceReason(row.reason),
        period=_period(row.period_start, row.period_end),
        lines=tuple(
            InvoiceLine(
                kind=LineKind(line.kind),
                description=line.description,
                amount=Money(line.amount_minor, currency),
                period=_period(line.period_start, line.period_end),
                taxable=line.taxable,
            )
            for line in sorted(lines, key=lambda line: line.position)
        ),
        created_at=row.created_at,
        status=InvoiceStatus(row.status),
        number=row.number,
        finalized_at=row.finalized_at,
        paid_at=row.paid_at,
        closed_at=row.closed_at,
    )


def payment(row: PaymentRow) -> PaymentAttempt:
    return PaymentAttempt(
        id=row.id,
        invoice_id=row.invoice_id,
        number=row.number,
        amount=Money(row.amount_minor, Currency.of(row.currency)),
        created_at=row.created_at,
        status=PaymentStatus(row.status),
        decline=None if row.decline is None else DeclineKind(row.decline),
        code=row.code,
        message=row.message,
        reference=row.reference,
        updated_at=row.updated_at,
        subscription_id=row.subscription_id,
        customer_id=row.customer_id,
        gateway=row.gateway,
        error=None if row.error is None else ErrorCode(row.error),
        action_url=row.action_url,
    )


def apply_payment(row: PaymentRow, attempt: PaymentAttempt) -> None:
    """Copy an attempt's outcome onto its row."""
    row.status = attempt.status.value
    row.decline = None if attempt.decline is None else attempt.decline.value
    row.code = attempt.code
    row.message = None if attempt.message is None else attempt.message[:255]
    row.reference = attempt.reference
    row.error = None if attempt.error is None else attempt.error.value
    row.action_url = attempt.action_url
    row.updated_at = attempt.updated_at


def enrollment_row(enrollment: CardEnrollment) -> EnrollmentRow:
    return EnrollmentRow(
        gateway=enrollment.gateway,
        reference=enrollment.reference,
        customer_id=enrollment.customer_id,
        status=enrollment.status.value,
        redirect_url=enrollment.redirect_url,
        created_at=enrollment.created_at,
        completed_at=enrollment.completed_at,
        payment_method_id=enrollment.payment_method_id,
    )


def enrollment(row: EnrollmentRow) -> CardEnrollment:
    return CardEnrollment(
        gateway=row.gateway,
        reference=row.reference,
        customer_id=row.customer_id,
        status=EnrollmentStatus(row.status),
        redirect_url=row.redirect_url,
        created_at=row.created_at,
        completed_at=row.completed_at,
        payment_method_id=row.payment_method_id,
    )
