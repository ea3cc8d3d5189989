"""Payments: when each attempt was last sent (its billing instant, or the check that resent it).

Reviewed by hand. An unsettled attempt is checked again after a back-off that grows with the
time since it was last sent; counting from its billing instant made a resent attempt whose
answer was lost, in catch-up billing, wait a whole day. Existing rows take their billing instant.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02 12:45:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel  # autogenerate renders sqlmodel's column types
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("payments", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("sent_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True)
        )
    op.execute("UPDATE payments SET sent_at = created_at")
    with op.batch_alter_table("payments", schema=None) as batch_op:
        batch_op.alter_column(
            "sent_at", existing_type=sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False
        )


def downgrade() -> None:
    with op.batch_alter_table("payments", schema=None) as batch_op:
        batch_op.drop_column("sent_at")
