"""``Engine.audit`` finds each broken money rule in a database someone tampered with.

A history with credit, a plan change, a decline and a refund is billed, audited clean, and then
one row is changed behind the engine's back: the audit must name the rule that breaks.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

import pytest
from sqlalchemy import Connection, delete, insert, select, update

from billing import Money, Plan, TaxRate
from billing.store.tables import metadata

from .conftest import START, Billing

T = metadata.tables


@pytest.fixture
def history(billing: Billing) -> Billing:
    engine = billing.engine
    engine.create_plan(Plan.of(code="oro", name="Oro", price="15000", currency="CLP"))
    engine.create_plan(Plan.of(code="platino", name="Platino", price="50000", currency="CLP"))
    billing.customer("c1")
    engine.grant_credit("c1", Money.of(2000, "CLP"), reason="welcome")
    engine.subscribe("c1", "oro", subscription_id="s1", tax=TaxRate.of("IVA", "19"))
    billing.clock.set(START + timedelta(days=10))
    engine.change_plan("s1", "platino")
    billing.customer("c2", payment="decline_soft")
    engine.subscribe("c2", "oro", subscription_id="s2")
    billing.run_until(START + timedelta(days=45))
    paid = [p for p in engine.payments(customer_id="c1") if p.status.value == "succeeded"]
    engine.refund(paid[0].id, amount=Money.of(1000, "CLP"))
    report = engine.audit()
    assert report.balanced, "\n".join(map(str, report.findings))
    assert report.books[("c1", "CLP")].credit_applied == 2000
    return billing


def _first(connection: Connection, table: str, *where: object) -> str:
    column = T[table].c.seq if table == "events" else T[table].c.id
    return str(connection.execute(select(column).where(*where).order_by(column)).scalars().first())


def _paid_less(c: Connection) -> None:
    payment = _first(c, "payments", T["payments"].c.status == "succeeded")
    c.execute(
        update(T["payments"])
        .where(T["payments"].c.id == payment)
        .values(amount_minor=T["payments"].c.amount_minor - 1)
    )


def _line_changed(c: Connection) -> None:
    line = _first(c, "invoice_lines", T["invoice_lines"].c.kind == "plan")
    c.execute(
        update(T["invoice_lines"])
        .where(T["invoice_lines"].c.id == int(line))
        .values(amount_minor=T["invoice_lines"].c.amount_minor + 100)
    )


def _credit_line_dropped(c: Connection) -> None:
    c.execute(delete(T["invoice_lines"]).where(T["invoice_lines"].c.kind == "credit"))


def _credit_invented(c: Connection) -> None:
    c.execute(
        update(T["credit_balances"])
        .where(T["credit_balances"].c.customer_id == "c1")
        .values(amount_minor=T["credit_balances"].c.amount_minor + 500)
    )


def _attempts_gone(c: Connection) -> None:
    open_ = select(T["invoices"].c.id).where(T["invoices"].c.status == "open")
    c.execute(delete(T["payments"]).where(T["payments"].c.invoice_id.in_(open_)))
    c.execute(update(T["subscriptions"]).values(dunning_invoice_id=None, collections=None))


def _event_back_in_time(c: Connection) -> None:
    last = c.execute(
        select(T["events"])
        .where(T["events"].c.subscription_id == "s1")
        .order_by(T["events"].c.seq.desc())
    ).first()
    assert last is not None
    row = dict(last._mapping)
    row.pop("seq")
    row.update(id="evt_tampered", name="subscription.renewed", at=START - timedelta(days=1))
    c.execute(insert(T["events"]).values(**row))


def _refunded_twice(c: Connection) -> None:
    refund = c.execute(select(T["refunds"])).first()
    assert refund is not None
    row = dict(refund._mapping)
    row.update(id="re_tampered", amount_minor=10**9)
    for key in ("idempotency_key", "reference"):
        if key in row and row[key] is not None:
            row[key] = f"{row[key]}_tampered"
    c.execute(insert(T["refunds"]).values(**row))


@pytest.mark.parametrize(
    ("tamper", "rule"),
    [
        (_paid_less, "payments"),
        (_line_changed, "conservation"),
        (_credit_line_dropped, "credit"),
        (_credit_invented, "credit"),
        (_attempts_gone, "orphan"),
        (_event_back_in_time, "event_order"),
        (_refunded_twice, "refunds"),
    ],
)
def test_the_audit_names_the_broken_rule(
    history: Billing, tamper: Callable[[Connection], None], rule: str
) -> None:
    with history.engine.store.engine.begin() as connection:
        tamper(connection)
    report = history.engine.audit()
    assert not report.balanced
    assert rule in {finding.rule for finding in report.findings}, report.findings
