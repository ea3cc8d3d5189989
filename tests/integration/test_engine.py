"""The engine on SQLite and PostgreSQL: the public API, end to end with the fake gateway."""

from __future__ import annotations

from datetime import datetime

from billing.domain.catalog import Plan
from billing.domain.invoices import InvoiceStatus
from billing.domain.money import Money
from billing.domain.subscriptions import SubscriptionStatus
from billing.domain.taxes import TaxRate
from tests.integration.conftest import SCL, Billing


def test_a_subscription_bills_its_first_period_and_renews(billing: Billing):
    billing.engine.create_plan(Plan.of(code="oro", name="Plan Oro", price="10000", currency="CLP"))
    billing.customer("c1")
    sub = billing.engine.subscribe("c1", "oro", tax=TaxRate.of("IVA", "19"))
    assert sub.status is SubscriptionStatus.ACTIVE
    billing.run_until(datetime(2026, 3, 31, 12, tzinfo=SCL))
    invoices = billing.engine.invoices(subscription_id=sub.id)
    assert [i.number for i in invoices] == ["INV-000001", "INV-000002", "INV-000003"]
    assert all(i.status is InvoiceStatus.PAID for i in invoices)
    assert [i.total for i in invoices] == [Money.of("11900", "CLP")] * 3
