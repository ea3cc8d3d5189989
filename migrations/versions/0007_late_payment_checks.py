"""Payments: when to ask next whether a link that expired unpaid was paid after all.

Reviewed by hand. A payment link that expired unpaid can still be paid (a bank transfer started
in time); when its notification is lost, the worker asks the gateway for a while after the
expiry. ``late_check_at`` schedules those questions, and an index on (``error``,
``updated_at``) finds the recently expired links without reading every payment.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-03 09:10:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel  # autogenerate renders sqlmodel's column types
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("payments", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("late_check_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True)
        )
        batch_op.create_index("ix_payments_error_updated_at", ["error", "updated_at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("payments", schema=None) as batch_op:
        batch_op.drop_index("ix_payments_error_updated_at")
        batch_op.drop_column("late_check_at")
