"""The exponent each currency is stored with lives with the data (finding 0 of issue 9).

A database records the exponent of every currency it holds on first use; an engine whose own
exponent differs refuses to open it, naming the conversion; ``billing currencies rescale``
converts every stored amount of that currency in one transaction, or refuses and changes nothing.
Databases written before revision 0004 stored COP with 2 decimals (what babel 2.18 said).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from sqlalchemy import Engine, text
from typer.testing import CliRunner

from billing import open_engine
from billing.cli import app
from billing.clock import ManualClock
from billing.domain.catalog import Plan
from billing.domain.errors import CurrencyExponentChanged, InvalidArgument
from billing.domain.money import Money
from billing.store import currencies
from billing.store.database import connect, downgrade, upgrade
from billing.testing import FakeGateway

NOW = datetime(2026, 3, 2, 13, tzinfo=UTC)


@pytest.fixture
def db(database_url: str) -> Iterator[Engine]:
    engine = connect(database_url)
    yield engine
    engine.dispose()


def test_a_database_records_each_currency_on_first_use(database_url: str, db: Engine):
    with open_engine(database_url, clock=ManualClock(NOW), gateways=[FakeGateway()]) as engine:
        assert currencies.recorded(db) == {}
        engine.create_plan(Plan.of(code="uf", name="UF", price="0.5", currency="CLF"))
        engine.create_customer(customer_id="c1", timezone="America/Bogota")
        engine.grant_credit("c1", Money.of("15000", "COP"))
    assert currencies.recorded(db) == {"CLF": 4, "CLP": 0, "COP": 0}


def _cop_written_before_0004(db: Engine, total_minor: int) -> None:
    """A database at revision 0003 holding a COP plan, invoice and credit in centavos."""
    downgrade(db, "0003")
    with db.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO plans (code, name, price_minor, price_currency, charge_currency,"
                " interval, interval_count, trial_days, status, retry_delays_seconds,"
                " retry_max_attempts, retry_then, created_at) VALUES ('oro', 'Oro', 1000000,"
                " 'COP', 'COP', 'month', 1, 0, 'active', '[]', 1, 'unpaid', :at)"
            ),
            {"at": NOW},
        )
        connection.execute(
            text(
                "INSERT INTO customers (id, timezone, metadata, created_at)"
                " VALUES ('c1', 'America/Bogota', '{}', :at)"
            ),
            {"at": NOW},
        )
        connection.execute(
            text(
                "INSERT INTO credit_balances (customer_id, currency, amount_minor, updated_at)"
                " VALUES ('c1', 'COP', 250000, :at)"
            ),
            {"at": NOW},
        )
        connection.execute(
            text(
                "INSERT INTO invoices (id, number, customer_id, currency, reason, status,"
                " total_minor, created_at) VALUES ('in_1', 'INV-000001', 'c1', 'COP',"
                " 'subscription_start', 'open', :total, :at)"
            ),
            {"at": NOW, "total": total_minor},
        )
        connection.execute(
            text(
                "INSERT INTO invoice_lines (invoice_id, position, kind, description,"
                " amount_minor, taxable) VALUES ('in_1', 0, 'plan', 'Oro', :total, false)"
            ),
            {"total": total_minor},
        )
    upgrade(db)


def test_cop_stored_with_centavos_is_refused_naming_the_conversion(database_url: str, db: Engine):
    _cop_written_before_0004(db, 1190000)
    assert currencies.recorded(db) == {"COP": 2}
    with pytest.raises(CurrencyExponentChanged) as refused:
        open_engine(database_url, clock=ManualClock(NOW), gateways=[])
    message = str(refused.value)
    assert "COP amounts with 2 decimal places" in message
    assert "100 times larger" in message
    assert "billing currencies rescale COP" in message


def test_rescaling_converts_every_stored_amount_and_the_engine_opens(database_url: str, db: Engine):
    _cop_written_before_0004(db, 1190000)
    done = currencies.rescale(db, "COP")
    assert (done.stored, done.exponent) == (2, 0)
    with open_engine(database_url, clock=ManualClock(NOW), gateways=[]) as engine:
        assert engine.plan("oro").price == Money.of("10000", "COP")
        assert engine.credit_balance("c1", "COP").amount == Money.of("2500", "COP")
        [invoice] = engine.invoices()
        assert invoice.total == Money.of("11900", "COP")
        assert [line.amount for line in invoice.lines] == [Money.of("11900", "COP")]


def test_rescaling_refuses_amounts_with_centavos_and_changes_nothing(db: Engine):
    _cop_written_before_0004(db, 1190050)  # 11900.50 COP has no whole-peso form
    with pytest.raises(InvalidArgument) as refused:
        currencies.rescale(db, "COP")
    assert "2 stored amount(s)" in str(refused.value)  # the invoice's total and its line
    assert currencies.recorded(db) == {"COP": 2}
    with db.connect() as connection:
        assert connection.execute(text("SELECT total_minor FROM invoices")).scalar_one() == 1190050


def test_the_cli_shows_and_rescales_stored_currencies(database_url: str, db: Engine):
    _cop_written_before_0004(db, 1190000)
    runner = CliRunner()
    shown = runner.invoke(app, ["currencies", "show", "--database-url", database_url])
    assert shown.exit_code == 0, shown.output
    assert "COP" in shown.output
    assert "rescale" in shown.output
    done = runner.invoke(app, ["currencies", "rescale", "cop", "--database-url", database_url])
    assert done.exit_code == 0, done.output
    assert "converted from 2 to 0 decimals" in done.output
    again = runner.invoke(app, ["currencies", "rescale", "COP", "--database-url", database_url])
    assert "nothing to do" in again.output
    unknown = runner.invoke(app, ["currencies", "rescale", "XYZ", "--database-url", database_url])
    assert unknown.exit_code == 2
    assert "currency" in unknown.output
