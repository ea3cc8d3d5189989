"""Payments: withdrawing the live payment link of an invoice settled another way.

Reviewed by hand. A payment link (an attempt in ``requires_action``) whose invoice was paid or
voided another way is withdrawn at its gateway by the worker's reconciliation.
``link_cancel_at`` is a worker's claim on such a link while it asks the gateway, and a partial
index on the attempts waiting for the customer finds them without reading every payment.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-03 10:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel  # autogenerate renders sqlmodel's column types
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_LIVE_LINK = sa.text("status = 'requires_action'")


def upgrade() -> None:
    with op.batch_alter_table("payments", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("link_cancel_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True)
        )
        batch_op.create_index(
            "ix_payments_live_links",
            ["invoice_id"],
            unique=False,
            sqlite_where=_LIVE_LINK,
            postgresql_where=_LIVE_LINK,
        )


def downgrade() -> None:
    with op.batch_alter_table("payments", schema=None) as batch_op:
        batch_op.drop_index("ix_payments_live_links")
        batch_op.drop_column("link_cancel_at")
