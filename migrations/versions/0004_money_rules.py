"""Money rules: recorded currency exponents, tax rounding modes, collections, held credit.

Reviewed by hand.

* ``currencies`` records the exponent each currency's amounts are stored with. Rows for the
  currencies already in the database are recorded with the exponents they were written with:
  those babel 2.18 gave, which is the engine's table except for COP, stored until now with 2
  decimals (the engine now bills COP in whole pesos). A database holding COP is therefore refused
  until ``billing currencies rescale COP`` converts it.
* ``subscriptions.tax_mode`` keeps a tax rate's rounding mode (rows before this revision were
  invoiced half-up, which a null means).
* ``subscriptions.collections`` and ``held_credit`` hold the declined invoices collected outside
  the subscription's dunning and the credit a downgrade holds back until invoices are paid;
  ``period_price_minor`` the price the current period was billed at (null: the plan's price).
* The one-invoice-per-period key now covers only the invoices that bill a period, so two plan
  changes invoiced at one instant are both made.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02 09:00:00
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

import sqlalchemy as sa
import sqlmodel  # autogenerate renders sqlmodel's column types
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_BILLS_A_PERIOD = sa.text("reason IN ('subscription_start', 'renewal', 'resume')")
_WRITTEN_WITH = {
    "ADP": 0, "AFN": 0, "ALL": 0, "BHD": 3, "BIF": 0, "BYR": 0, "CLF": 4, "CLP": 0,
    "DJF": 0, "ESP": 0, "GNF": 0, "IQD": 0, "IRR": 0, "ISK": 0, "ITL": 0, "JOD": 3,
    "JPY": 0, "KMF": 0, "KPW": 0, "KRW": 0, "KWD": 3, "LAK": 0, "LBP": 0, "LUF": 0,
    "LYD": 3, "MGA": 0, "MGF": 0, "MMK": 0, "MRO": 0, "OMR": 3, "PYG": 0, "RSD": 0,
    "RWF": 0, "SLL": 0, "SOS": 0, "STD": 0, "SYP": 0, "TMM": 0, "TND": 3, "TRL": 0,
    "UGX": 0, "UYI": 0, "UYW": 4, "VND": 0, "VUV": 0, "XAF": 0, "XOF": 0, "XPF": 0,
    "YER": 0, "ZMK": 0, "ZWD": 0,
}  # fmt: skip
"""The exponents data before this revision was written with (babel 2.18.0's), frozen here:
every currency not listed had 2 decimals (COP among them)."""
_MONEY = (
    ("plans", "price_currency"),
    ("plans", "charge_currency"),
    ("subscription_debts", "currency"),
    ("credit_balances", "currency"),
    ("invoices", "currency"),
    ("payments", "currency"),
    ("refunds", "currency"),
)


def upgrade() -> None:
    currencies = op.create_table(
        "currencies",
        sa.Column("code", sqlmodel.sql.sqltypes.AutoString(length=3), nullable=False),
        sa.Column("exponent", sa.Integer(), nullable=False),
        sa.Column("recorded_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("code", name=op.f("pk_currencies")),
    )
    _record_stored_currencies(currencies)
    with op.batch_alter_table("subscriptions", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("tax_mode", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=True)
        )
        batch_op.add_column(sa.Column("collections", sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column("held_credit", sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column("period_price_minor", sa.BigInteger(), nullable=True))
    with op.batch_alter_table("invoices", schema=None) as batch_op:
        batch_op.drop_constraint("uq_invoices_subscription_id_reason_period_start", type_="unique")
        batch_op.create_index(
            "uq_invoices_period",
            ["subscription_id", "reason", "period_start"],
            unique=True,
            sqlite_where=_BILLS_A_PERIOD,
            postgresql_where=_BILLS_A_PERIOD,
        )


def _record_stored_currencies(currencies: sa.Table) -> None:
    connection = op.get_bind()
    found: set[str] = set()
    for table, column in _MONEY:
        rows = connection.execute(sa.text(f"SELECT DISTINCT {column} FROM {table}"))
        found.update(row[0] for row in rows if row[0] is not None)
    now = datetime.now(UTC)
    op.bulk_insert(
        currencies,
        [
            {"code": code, "exponent": _WRITTEN_WITH.get(code, 2), "recorded_at": now}
            for code in sorted(found)
        ],
    )


def downgrade() -> None:
    with op.batch_alter_table("invoices", schema=None) as batch_op:
        batch_op.drop_index("uq_invoices_period")
        batch_op.create_unique_constraint(
            "uq_invoices_subscription_id_reason_period_start",
            ["subscription_id", "reason", "period_start"],
        )
    with op.batch_alter_table("subscriptions", schema=None) as batch_op:
        batch_op.drop_column("period_price_minor")
        batch_op.drop_column("held_credit")
        batch_op.drop_column("collections")
        batch_op.drop_column("tax_mode")
    op.drop_table("currencies")
