"""The exponent each currency's amounts are stored with, recorded in the database with the data.

Money is stored as integer minor units, so an amount means something only together with the
exponent it was written with. The first write in a currency records that exponent in
``currencies``; opening an engine compares every record with the engine's own table
(:data:`~billing.domain.currencies.EXPONENTS`) and refuses a database that disagrees
(:class:`~billing.domain.errors.CurrencyExponentChanged`), before anything is read or written.
:func:`rescale` is the migration that error names: it converts every stored amount of a currency
to the engine's exponent, in one transaction, or refuses and changes nothing.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Column, Connection, Engine, Table, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session
from sqlmodel import SQLModel

from billing.domain.currencies import EXPONENTS
from billing.domain.errors import CurrencyExponentChanged, InvalidArgument, NotFound
from billing.domain.money import Currency
from billing.store.database import shown
from billing.store.tables import (
    CreditBalanceRow,
    CurrencyRow,
    DebtRow,
    EventRow,
    IdempotencyRow,
    InvoiceLineRow,
    InvoiceRow,
    PaymentRow,
    PlanRow,
    RefundRow,
    SubscriptionRow,
)


def _table(row: type[SQLModel]) -> Table:
    table: Table = row.__table__  # type: ignore[attr-defined]
    return table


def recorded(engine: Engine) -> dict[str, int]:
    """The exponent the database records for each currency it holds."""
    table = _table(CurrencyRow)
    with engine.connect() as connection:
        query = select(table.c.code, table.c.exponent).order_by(table.c.code)
        return {row.code: row.exponent for row in connection.execute(query)}


def verify(engine: Engine) -> set[str]:
    """Refuse a database that records another exponent than the engine's for a currency;
    returns the currencies it records."""
    stored = recorded(engine)
    for code, exponent in stored.items():
        ours = EXPONENTS.get(code, -1)
        if ours != exponent:
            raise CurrencyExponentChanged(shown(engine.url), code, exponent, ours)
    return set(stored)


def record(session: Session, currency: Currency) -> None:
    """Record the exponent of a currency about to be stored, if it is the first time."""
    table = _table(CurrencyRow)
    dialect = postgresql if session.get_bind().dialect.name == "postgresql" else sqlite
    session.execute(
        dialect.insert(table)
        .values(code=currency.code, exponent=currency.exponent, recorded_at=datetime.now(UTC))
        .on_conflict_do_nothing(index_elements=["code"])
    )
    stored = session.execute(
        select(table.c.exponent).where(table.c.code == currency.code)
    ).scalar_one()
    if stored != currency.exponent:  # another engine version recorded it meanwhile
        url = session.get_bind().engine.url
        raise CurrencyExponentChanged(shown(url), currency.code, stored, currency.exponent)


@dataclass(frozen=True, slots=True)
class Rescaled:
    """What :func:`rescale` converted."""

    code: str
    stored: int
    """The exponent the amounts were stored with."""
    exponent: int
    """The engine's exponent, which they are stored with now."""
    amounts: int
    """How many stored amounts (columns and JSON documents) changed."""


def rescale(engine: Engine, code: str) -> Rescaled:
    """Convert every stored amount of ``code`` to the engine's exponent, in one transaction.

    Amounts are multiplied by a power of ten when the engine has more decimals, and divided when
    it has fewer; a division that is not exact (an amount with cents, for pesos billed whole)
    refuses the whole conversion with :class:`~billing.domain.errors.InvalidArgument`, naming
    how many amounts are in the way. Events and idempotency results keep their JSON shape: the
    ``{"minor", "currency"}`` values in them are converted too.
    """
    if code not in EXPONENTS:
        raise InvalidArgument("currency", "must be an ISO 4217 code the engine knows", code)
    target = EXPONENTS[code]
    with engine.begin() as connection:
        recorded = _table(CurrencyRow)
        stored = connection.execute(
            select(recorded.c.exponent).where(recorded.c.code == code).with_for_update()
        ).scalar_one_or_none()
        if stored is None:
            raise NotFound("stored currency", code)
        if stored == target:
            return Rescaled(code, stored, target, 0)
        convert = _converter(stored, target)
        columns = list(_money_columns(code))
        if stored > target:
            factor = 10 ** (stored - target)
            inexact = sum(
                len(connection.execute(select(column).where(where, column % factor != 0)).all())
                for column, where in columns
            )
            inexact += sum(1 for _ in _json_amounts(connection, code, factor))
            if inexact:
                raise InvalidArgument(
                    "currency",
                    f"has {inexact} stored amount(s) with digits below its new unit "
                    f"(10^-{target}); they cannot be converted exactly",
                    code,
                )
        changed = 0
        for column, where in columns:
            result = connection.execute(
                update(column.table).where(where).values({column.key: convert(column)})
            )
            changed += int(result.rowcount)
        changed += _rescale_json(connection, code, stored, target)
        connection.execute(
            update(recorded)
            .where(recorded.c.code == code)
            .values(exponent=target, recorded_at=datetime.now(UTC))
        )
    return Rescaled(code, stored, target, changed)


def _converter(stored: int, target: int) -> Any:
    if target > stored:
        return lambda column: column * 10 ** (target - stored)
    return lambda column: column / 10 ** (stored - target)


def _money_columns(code: str) -> Iterator[tuple[Column[Any], Any]]:
    """Every money column, with the condition that picks the rows in ``code``."""
    plans, debts, credit = _table(PlanRow), _table(DebtRow), _table(CreditBalanceRow)
    invoices, lines = _table(InvoiceRow), _table(InvoiceLineRow)
    payments, refunds = _table(PaymentRow), _table(RefundRow)
    subscriptions = _table(SubscriptionRow)
    yield plans.c.price_minor, plans.c.price_currency == code
    yield debts.c.amount_minor, debts.c.currency == code
    yield credit.c.amount_minor, credit.c.currency == code
    yield invoices.c.total_minor, invoices.c.currency == code
    in_code = select(invoices.c.id).where(invoices.c.currency == code)
    yield lines.c.amount_minor, lines.c.invoice_id.in_(in_code)
    yield payments.c.amount_minor, payments.c.currency == code
    yield refunds.c.amount_minor, refunds.c.currency == code
    charged_in_code = select(plans.c.code).where(plans.c.charge_currency == code)
    yield subscriptions.c.period_price_minor, subscriptions.c.plan_code.in_(charged_in_code)


_DOCUMENTS: tuple[tuple[type[SQLModel], str, str], ...] = (
    (EventRow, "seq", "payload"),
    (IdempotencyRow, "key", "result"),
    (SubscriptionRow, "id", "held_credit"),
)
"""JSON columns that may hold amounts: ``{"minor", "currency"}`` or ``{"amount_minor",
"currency"}`` objects."""


def _json_amounts(connection: Connection, code: str, factor: int) -> Iterator[int]:
    """The JSON amounts in ``code`` that are not a multiple of ``factor``."""
    for row, key, column in _DOCUMENTS:
        table = _table(row)
        for _, document in connection.execute(select(table.c[key], table.c[column])):
            for amount in _amounts(document, code):
                if amount % factor:
                    yield amount


def _amounts(document: Any, code: str) -> Iterator[int]:
    if isinstance(document, dict):
        if document.get("currency") == code:
            for name in ("minor", "amount_minor"):
                if isinstance(document.get(name), int):
                    yield document[name]
        for value in document.values():
            yield from _amounts(value, code)
    elif isinstance(document, list):
        for value in document:
            yield from _amounts(value, code)


def _rescaled(document: Any, code: str, stored: int, target: int) -> Any:
    if isinstance(document, dict):
        out = {key: _rescaled(value, code, stored, target) for key, value in document.items()}
        if document.get("currency") == code:
            for name in ("minor", "amount_minor"):
                if isinstance(document.get(name), int):
                    value = document[name]
                    out[name] = (
                        value * 10 ** (target - stored)
                        if target > stored
                        else value // 10 ** (stored - target)
                    )
        return out
    if isinstance(document, list):
        return [_rescaled(value, code, stored, target) for value in document]
    return document


def _rescale_json(connection: Connection, code: str, stored: int, target: int) -> int:
    changed = 0
    for row, key, column in _DOCUMENTS:
        table = _table(row)
        for identity, document in connection.execute(select(table.c[key], table.c[column])).all():
            if not any(True for _ in _amounts(document, code)):
                continue
            connection.execute(
                update(table)
                .where(table.c[key] == identity)
                .values({column: _rescaled(document, code, stored, target)})
            )
            changed += 1
    return changed
