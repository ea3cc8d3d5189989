"""Notifications: an inbox that keeps each one as it arrived, before it is processed.

Reviewed by hand. ``notification_inbox`` holds every notification's headers and body the moment
it is received (one row per gateway and body digest, so a redelivered body is the same row), and
what processing it did; processing is claimed with a lease and retried with a back-off.
``gateway_notifications`` stays the record of the notifications acted on, one per event id.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-03 08:20:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel  # autogenerate renders sqlmodel's column types
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "notification_inbox",
        sa.Column("id", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("gateway", sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
        sa.Column("digest", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("headers", sa.JSON(), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("received_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.Column("status", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.Column("claimed_by", sqlmodel.sql.sqltypes.AutoString(length=128), nullable=True),
        sa.Column("claimed_until", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
        sa.Column("event_id", sqlmodel.sql.sqltypes.AutoString(length=255), nullable=True),
        sa.Column("payment_id", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True),
        sa.Column("message", sa.Text(), nullable=True),
        sa.Column("processed_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_notification_inbox")),
        sa.UniqueConstraint("gateway", "digest", name=op.f("uq_notification_inbox_gateway_digest")),
    )
    op.create_index(
        "ix_notification_inbox_status_next_attempt_at",
        "notification_inbox",
        ["status", "next_attempt_at"],
        unique=False,
    )


def downgrade() -> None:
    op.drop_index("ix_notification_inbox_status_next_attempt_at", table_name="notification_inbox")
    op.drop_table("notification_inbox")
