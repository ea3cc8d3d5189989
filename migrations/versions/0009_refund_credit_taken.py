"""Refunds: the credit a refund took back from the customer.

Reviewed by hand. A refund of money that had become the customer's credit (a payment that
arrived for an invoice already settled, an overpayment) takes that credit back when it is made;
``credit_taken_minor`` remembers how much, to return it if the gateway refuses the refund.
Existing refunds took none.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-03 13:30:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("refunds", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("credit_taken_minor", sa.BigInteger(), nullable=False, server_default="0")
        )
    with op.batch_alter_table("refunds", schema=None) as batch_op:
        batch_op.alter_column("credit_taken_minor", server_default=None)


def downgrade() -> None:
    with op.batch_alter_table("refunds", schema=None) as batch_op:
        batch_op.drop_column("credit_taken_minor")
