"""The database tables, as sqlmodel classes (``<Thing>Row``, plural table names).

Money is stored as integer minor units (``BIGINT``) plus an ISO 4217 code, never as ``NUMERIC``
(SQLite stores it as a float); ``currencies`` records the exponent each currency was stored with.
Instants are timezone-aware UTC (sqlmodel's ``UTCDateTime`` refuses naive values). Unique
constraints back the money rules: one invoice per subscription period and reason (for the invoices
that bill a period), one payment attempt per idempotency key, one per invoice and attempt number.

The alembic migrations in ``migrations/`` create exactly these tables; a test compares them.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, Column, Index, Integer, Text, UniqueConstraint, text
from sqlmodel import Field, SQLModel

SQLModel.metadata.naming_convention = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}
metadata = SQLModel.metadata


_SEQUENCE = BigInteger().with_variant(Integer, "sqlite")  # SQLite autoincrements INTEGER keys only


def _money() -> Any:
    return Field(sa_type=BigInteger)


class CurrencyRow(SQLModel, table=True):
    """The exponent a currency's amounts are stored with in this database (recorded on first
    use); the engine refuses to open a database whose record disagrees with its own table."""

    __tablename__ = "currencies"

    code: str = Field(primary_key=True, max_length=3)
    exponent: int
    recorded_at: datetime


class CustomerRow(SQLModel, table=True):
    __tablename__ = "customers"

    id: str = Field(primary_key=True, max_length=64)
    timezone: str = Field(max_length=64)
    attributes: dict[str, str] = Field(sa_column=Column("metadata", JSON, nullable=False))
    created_at: datetime


class PaymentMethodRow(SQLModel, table=True):
    __tablename__ = "payment_methods"

    id: str = Field(primary_key=True, max_length=64)
    customer_id: str = Field(foreign_key="customers.id", index=True, max_length=64)
    gateway: str = Field(max_length=32)
    token: str = Field(max_length=255)
    label: str | None = Field(default=None, max_length=255)
    is_default: bool
    created_at: datetime
    detached_at: datetime | None = None


class GatewayCustomerRow(SQLModel, table=True):
    """A customer's id at a gateway that keeps customers."""

    __tablename__ = "gateway_customers"

    customer_id: str = Field(primary_key=True, foreign_key="customers.id", max_length=64)
    gateway: str = Field(primary_key=True, max_length=32)
    reference: str = Field(max_length=128)
    created_at: datetime


class EnrollmentRow(SQLModel, table=True):
    """A card being stored through a gateway's own page."""

    __tablename__ = "enrollments"

    gateway: str = Field(primary_key=True, max_length=32)
    reference: str = Field(primary_key=True, max_length=128)
    customer_id: str = Field(foreign_key="customers.id", index=True, max_length=64)
    status: str = Field(max_length=16)
    redirect_url: str = Field(sa_type=Text)
    created_at: datetime
    completed_at: datetime | None = None
    payment_method_id: str | None = Field(default=None, max_length=64)


class NotificationRow(SQLModel, table=True):
    """A gateway notification as received: the key makes each one processed once."""

    __tablename__ = "gateway_notifications"

    gateway: str = Field(primary_key=True, max_length=32)
    event_id: str = Field(primary_key=True, max_length=255)
    kind: str = Field(max_length=64)
    charge_reference: str | None = Field(default=None, max_length=128)
    idempotency_key: str | None = Field(default=None, max_length=128)
    payment_id: str | None = Field(default=None, max_length=64)
    status: str = Field(max_length=16)
    body: str = Field(sa_type=Text)
    received_at: datetime


class InboxRow(SQLModel, table=True):
    """A notification exactly as it arrived, stored before anything else is done with it.

    The intake answers the gateway once this row is committed; processing it (reading it,
    asking the gateway, recording the answer) is claimed like billing work, so one engine does it
    once, and retried with a back-off while the gateway cannot be asked.
    """

    __tablename__ = "notification_inbox"
    __table_args__ = (
        UniqueConstraint("gateway", "digest"),
        Index("ix_notification_inbox_status_next_attempt_at", "status", "next_attempt_at"),
    )

    id: str = Field(primary_key=True, max_length=64)
    gateway: str = Field(max_length=32)
    digest: str = Field(max_length=64)
    """SHA-256 of the body: the same body received again is the same notification."""
    headers: dict[str, str] = Field(sa_column=Column(JSON, nullable=False))
    body: str = Field(sa_type=Text)
    received_at: datetime
    status: str = Field(max_length=16)
    """``received`` until processed, then what processing did (``processed``, ``duplicate``,
    ``ignored``, ``rejected``), or ``failed`` once retries are exhausted."""
    attempts: int = 0
    next_attempt_at: datetime
    claimed_by: str | None = Field(default=None, max_length=128)
    claimed_until: datetime | None = None
    event_id: str | None = Field(default=None, max_length=255)
    payment_id: str | None = Field(default=None, max_length=64)
    message: str | None = Field(default=None, sa_type=Text)
    processed_at: datetime | None = None


class PlanRow(SQLModel, table=True):
    __tablename__ = "plans"

    code: str = Field(primary_key=True, max_length=64)
    name: str = Field(max_length=255)
    price_minor: int = _money()
    price_currency: str = Field(max_length=3)
    charge_currency: str = Field(max_length=3)
    interval: str = Field(max_length=8)
    interval_count: int
    trial_days: int
    cycles: int | None = None
    status: str = Field(max_length=16)
    retry_delays_seconds: list[int] = Field(sa_column=Column(JSON, nullable=False))
    retry_max_attempts: int
    retry_then: str = Field(max_length=16)
    created_at: datetime


class SubscriptionRow(SQLModel, table=True):
    __tablename__ = "subscriptions"
    __table_args__ = (Index("ix_subscriptions_next_run_at", "next_run_at"),)

    id: str = Field(primary_key=True, max_length=64)
    customer_id: str = Field(foreign_key="customers.id", index=True, max_length=64)
    plan_code: str = Field(foreign_key="plans.code", index=True, max_length=64)
    timezone: str = Field(max_length=64)
    status: str = Field(max_length=16)
    created_at: datetime
    start: datetime
    trial_end: datetime | None = None
    cycles: int | None = None
    tax_name: str | None = Field(default=None, max_length=64)
    tax_percent: str | None = Field(default=None, max_length=32)
    tax_inclusive: bool | None = None
    tax_rounding: str | None = Field(default=None, max_length=16)
    tax_mode: str | None = Field(default=None, max_length=16)
    """How the tax rounds a fraction of a minor unit (``half_up`` when null: rows before 0004)."""
    prorate: bool
    current_index: int | None = None
    cancel_at_period_end: bool
    canceled_at: datetime | None = None
    ended_at: datetime | None = None
    paused_at: datetime | None = None
    resume_at: datetime | None = None
    resume_from: datetime | None = None
    dunning_invoice_id: str | None = Field(default=None, max_length=64)
    dunning_failed_attempts: int | None = None
    dunning_retry_at: datetime | None = None
    collections: list[dict[str, Any]] | None = Field(
        default=None, sa_column=Column(JSON, nullable=True)
    )
    """Other declined invoices being collected: ``[{invoice_id, failed_attempts, retry_at}]``."""
    held_credit: list[dict[str, Any]] | None = Field(
        default=None, sa_column=Column(JSON, nullable=True)
    )
    """Credit held until invoices are paid: ``[{amount_minor, currency, waiting_on,
    description}]``."""
    period_price_minor: int | None = Field(default=None, sa_type=BigInteger)
    """The price the current period was billed at, in the plan's charge currency."""
    not_before: datetime | None = None
    next_run_at: datetime | None = None
    """When the engine next has work for it: a due step or a payment to reconcile."""
    version: int
    claimed_by: str | None = Field(default=None, max_length=128)
    """The worker billing it now, if any (see ``claimed_until``)."""
    claimed_until: datetime | None = None
    """When that worker's claim lapses and another may take the subscription over."""


class DebtRow(SQLModel, table=True):
    __tablename__ = "subscription_debts"

    id: int | None = Field(default=None, primary_key=True)
    subscription_id: str = Field(foreign_key="subscriptions.id", index=True, max_length=64)
    position: int
    kind: str = Field(max_length=16)
    amount_minor: int = _money()
    currency: str = Field(max_length=3)
    description: str = Field(sa_type=Text)
    period_start: datetime | None = None
    period_end: datetime | None = None
    source: str | None = Field(default=None, max_length=64)


class CreditBalanceRow(SQLModel, table=True):
    __tablename__ = "credit_balances"

    customer_id: str = Field(primary_key=True, foreign_key="customers.id", max_length=64)
    currency: str = Field(primary_key=True, max_length=3)
    amount_minor: int = _money()
    updated_at: datetime


_BILLS_A_PERIOD = text("reason IN ('subscription_start', 'renewal', 'resume')")
"""The invoices that bill a period: one per period start and reason. Plan changes invoiced at
once and final invoices are not unique per instant (two changes may be made at one instant)."""


class InvoiceRow(SQLModel, table=True):
    __tablename__ = "invoices"
    __table_args__ = (
        Index(
            "uq_invoices_period",
            "subscription_id",
            "reason",
            "period_start",
            unique=True,
            sqlite_where=_BILLS_A_PERIOD,
            postgresql_where=_BILLS_A_PERIOD,
        ),
    )

    id: str = Field(primary_key=True, max_length=64)
    number: str = Field(unique=True, max_length=32)
    customer_id: str = Field(foreign_key="customers.id", index=True, max_length=64)
    subscription_id: str | None = Field(
        default=None, foreign_key="subscriptions.id", index=True, max_length=64
    )
    currency: str = Field(max_length=3)
    reason: str = Field(max_length=32)
    period_start: datetime | None = None
    period_end: datetime | None = None
    status: str = Field(max_length=16)
    total_minor: int = _money()
    created_at: datetime
    finalized_at: datetime | None = None
    paid_at: datetime | None = None
    closed_at: datetime | None = None


class InvoiceLineRow(SQLModel, table=True):
    __tablename__ = "invoice_lines"

    id: int | None = Field(default=None, primary_key=True)
    invoice_id: str = Field(foreign_key="invoices.id", index=True, max_length=64)
    position: int
    kind: str = Field(max_length=32)
    description: str = Field(sa_type=Text)
    amount_minor: int = _money()
    period_start: datetime | None = None
    period_end: datetime | None = None
    taxable: bool


_LIVE_LINK = text("status = 'requires_action'")
"""The attempts waiting for the customer (a payment link): few, among every payment ever made."""


class PaymentRow(SQLModel, table=True):
    __tablename__ = "payments"
    __table_args__ = (
        UniqueConstraint("invoice_id", "number"),
        Index("ix_payments_error_updated_at", "error", "updated_at"),
        Index(
            "ix_payments_live_links",
            "invoice_id",
            sqlite_where=_LIVE_LINK,
            postgresql_where=_LIVE_LINK,
        ),
    )

    id: str = Field(primary_key=True, max_length=64)
    invoice_id: str = Field(foreign_key="invoices.id", index=True, max_length=64)
    subscription_id: str | None = Field(default=None, max_length=64, index=True)
    customer_id: str = Field(max_length=64)
    number: int
    idempotency_key: str = Field(unique=True, max_length=128)
    amount_minor: int = _money()
    currency: str = Field(max_length=3)
    gateway: str | None = Field(default=None, max_length=32)
    payment_method_id: str | None = Field(default=None, max_length=64)
    status: str = Field(max_length=16)
    decline: str | None = Field(default=None, max_length=8)
    code: str | None = Field(default=None, max_length=64)
    message: str | None = Field(default=None, max_length=255)
    reference: str | None = Field(default=None, max_length=128, index=True)
    error: str | None = Field(default=None, max_length=32)
    """The normalised error of a failure (``billing.domain.payments.ErrorCode``)."""
    action_url: str | None = Field(default=None, sa_type=Text)
    created_at: datetime
    updated_at: datetime | None = None
    sent_at: datetime
    """When the attempt was last sent: its billing instant, or the check at which it was sent
    again because its gateway never received it. Its checks back off with the time since."""
    check_at: datetime | None = Field(default=None, index=True)
    """When to ask the gateway again about an unsettled attempt."""
    late_check_at: datetime | None = None
    """When to ask the gateway next whether a link that expired unpaid was paid after all
    (``None``: an hour after it expired)."""
    link_cancel_at: datetime | None = None
    """While a worker withdraws this live link at its gateway (its invoice was settled another
    way): when its claim lapses and the link may be taken again (``None``: never taken)."""


class RefundRow(SQLModel, table=True):
    __tablename__ = "refunds"

    id: str = Field(primary_key=True, max_length=64)
    payment_id: str = Field(foreign_key="payments.id", index=True, max_length=64)
    idempotency_key: str = Field(unique=True, max_length=128)
    amount_minor: int = _money()
    currency: str = Field(max_length=3)
    status: str = Field(max_length=16)
    reference: str | None = Field(default=None, max_length=128)
    code: str | None = Field(default=None, max_length=64)
    message: str | None = Field(default=None, max_length=255)
    created_at: datetime
    updated_at: datetime | None = None
    check_at: datetime | None = Field(default=None, index=True)
    """When to ask the gateway again about a refund without a final answer (else None)."""
    credit_taken_minor: int = Field(default=0, sa_type=BigInteger)
    """Credit this refund took back from the customer (money of an overpaid invoice that had
    become credit), returned if the gateway refuses the refund."""


class EventRow(SQLModel, table=True):
    __tablename__ = "events"
    __table_args__ = (Index("ix_events_stream_seq", "stream", "seq"),)

    seq: int | None = Field(default=None, sa_type=_SEQUENCE, primary_key=True)
    """The order events were recorded in."""
    id: str = Field(unique=True, max_length=64)
    name: str = Field(max_length=64)
    at: datetime
    subscription_id: str | None = Field(default=None, max_length=64, index=True)
    customer_id: str | None = Field(default=None, max_length=64)
    invoice_id: str | None = Field(default=None, max_length=64)
    payload: dict[str, Any] = Field(sa_column=Column(JSON, nullable=False))
    recorded_at: datetime
    acknowledged_at: datetime | None = Field(default=None, index=True)
    stream: str = Field(max_length=80)
    """Events of one stream (a subscription, else a customer) are delivered in order."""
    deliveries: int = 0
    """How many times the worker's dispatcher tried to deliver it."""
    deliver_after: datetime | None = None
    """Not before this instant: a failed delivery waits before its retry."""
    last_error: str | None = Field(default=None, sa_type=Text)
    claimed_by: str | None = Field(default=None, max_length=128)
    claimed_until: datetime | None = None


class IdempotencyRow(SQLModel, table=True):
    __tablename__ = "idempotency_keys"

    key: str = Field(primary_key=True, max_length=255)
    operation: str = Field(max_length=64)
    fingerprint: str = Field(max_length=64)
    result: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON, nullable=True))
    created_at: datetime


class SequenceRow(SQLModel, table=True):
    __tablename__ = "sequences"

    name: str = Field(primary_key=True, max_length=32)
    value: int = Field(sa_type=BigInteger)
