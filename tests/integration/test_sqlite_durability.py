"""How an engine writes a SQLite file: durable (WAL) by default, or as scratch."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import text

from billing.bootstrap import open_engine
from billing.clock import ManualClock
from billing.config import Settings
from billing.domain.catalog import Plan
from billing.domain.errors import InvalidArgument
from billing.testing import FakeGateway


def _pragmas(url: str, settings: Settings) -> tuple[str, int]:
    with (
        open_engine(url, gateways=[], settings=settings, migrate=True) as engine,
        engine.store.engine.connect() as connection,
    ):
        journal = connection.execute(text("PRAGMA journal_mode")).scalar_one()
        synchronous = connection.execute(text("PRAGMA synchronous")).scalar_one()
    return journal, synchronous


def test_a_sqlite_file_is_durable_by_default_and_scratch_when_asked(tmp_path: Path):
    url = f"sqlite:///{tmp_path / 'billing.db'}"
    assert _pragmas(url, Settings()) == ("wal", 1)  # 1: NORMAL
    assert _pragmas(url, Settings(durable=False)) == ("memory", 0)  # 0: OFF
    assert _pragmas(url, Settings()) == ("wal", 1)  # and durable again, reopened


def test_a_scratch_file_bills_and_reopens_durable_with_everything_in_it(tmp_path: Path):
    url = f"sqlite:///{tmp_path / 'scratch.db'}"
    start = datetime(2026, 1, 1, tzinfo=UTC)
    with open_engine(
        url,
        clock=ManualClock(start),
        gateways=[FakeGateway()],
        settings=Settings(durable=False),
        migrate=True,
    ) as engine:
        engine.create_plan(Plan.of(code="pro", name="Pro", price="10000", currency="CLP"))
        engine.create_customer(timezone="America/Santiago", customer_id="c1")
        engine.add_payment_method("c1", gateway="fake", token="tok_ok")
        engine.subscribe("c1", "pro")
    with open_engine(url, gateways=[], settings=Settings()) as engine:
        assert [invoice.total.minor for invoice in engine.invoices(customer_id="c1")] == [10000]
        assert engine.audit().balanced


@pytest.mark.parametrize("value", ["no", 0, None])
def test_durable_must_be_true_or_false(value: object):
    with pytest.raises(InvalidArgument, match="durable"):
        Settings(durable=value)  # type: ignore[arg-type]


def test_durable_comes_from_the_environment():
    assert Settings.from_env({"BILLING_DURABLE": "false"}).durable is False
    assert Settings.from_env({}).durable is True
    with pytest.raises(InvalidArgument, match="BILLING_DURABLE"):
        Settings.from_env({"BILLING_DURABLE": "maybe"})
