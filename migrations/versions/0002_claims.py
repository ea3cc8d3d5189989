"""Claims on subscriptions and events, and what event delivery needs.

Written by hand. Subscriptions get ``claimed_by`` / ``claimed_until`` (the worker billing one now,
and when its lease lapses). Events get their delivery ``stream`` (backfilled from the
subscription, or the subscription of the invoice it names, else the customer, else ``engine``),
a delivery count, a retry time, the last
error, and a claim of their own.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22 20:27:36.066132
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel  # autogenerate renders sqlmodel's column types
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("subscriptions", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("claimed_by", sqlmodel.sql.sqltypes.AutoString(length=128), nullable=True)
        )
        batch_op.add_column(
            sa.Column("claimed_until", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True)
        )

    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column(
                "stream",
                sqlmodel.sql.sqltypes.AutoString(length=80),
                nullable=False,
                server_default="engine",
            )
        )
        batch_op.add_column(
            sa.Column("deliveries", sa.Integer(), nullable=False, server_default="0")
        )
        batch_op.add_column(
            sa.Column("deliver_after", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True)
        )
        batch_op.add_column(sa.Column("last_error", sa.Text(), nullable=True))
        batch_op.add_column(
            sa.Column("claimed_by", sqlmodel.sql.sqltypes.AutoString(length=128), nullable=True)
        )
        batch_op.add_column(
            sa.Column("claimed_until", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True)
        )

    op.execute(
        "UPDATE events SET stream = 'subscription:' || subscription_id "
        "WHERE subscription_id IS NOT NULL"
    )
    # payment events of 0001 named only their invoice: stream them with its subscription
    invoice_subscription = (
        "(SELECT invoices.subscription_id FROM invoices WHERE invoices.id = events.invoice_id)"
    )
    op.execute(
        f"UPDATE events SET stream = 'subscription:' || {invoice_subscription} "
        f"WHERE subscription_id IS NULL AND {invoice_subscription} IS NOT NULL"
    )
    op.execute(
        "UPDATE events SET stream = 'customer:' || customer_id "
        "WHERE stream = 'engine' AND customer_id IS NOT NULL"
    )

    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.alter_column("stream", server_default=None)
        batch_op.alter_column("deliveries", server_default=None)
        batch_op.create_index("ix_events_stream_seq", ["stream", "seq"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.drop_index("ix_events_stream_seq")
        batch_op.drop_column("claimed_until")
        batch_op.drop_column("claimed_by")
        batch_op.drop_column("last_error")
        batch_op.drop_column("deliver_after")
        batch_op.drop_column("deliveries")
        batch_op.drop_column("stream")

    with op.batch_alter_table("subscriptions", schema=None) as batch_op:
        batch_op.drop_column("claimed_until")
        batch_op.drop_column("claimed_by")
