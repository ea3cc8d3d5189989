"""The engine on SQLite and PostgreSQL: the public API, end to end with the fake gateway."""

from __future__ import annotations

from datetime import datetime

import pytest

from adapters.qvo import QvoGateway
from billing.bootstrap import open_engine
from billing.domain.catalog import Plan
from billing.domain.invoices import InvoiceStatus
from billing.domain.money import Money
from billing.domain.subscriptions import SubscriptionStatus, cancel
from billing.domain.taxes import TaxRate
from billing.store.tables import SubscriptionRow
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


def test_a_subscription_read_again_in_the_transaction_that_saved_it_is_the_saved_one(
    billing: Billing,
):
    billing.engine.create_plan(Plan.of(code="oro", name="Plan Oro", price="10000", currency="CLP"))
    billing.customer("c1")
    sub = billing.engine.subscribe("c1", "oro")
    store = billing.engine._ctx.store
    with store.transaction() as tx:
        held = tx.session.get(SubscriptionRow, sub.id)  # the session keeps the row it read
        loaded = tx.subscription(sub.id)
        canceled = cancel(loaded.subscription, at=billing.clock.now(), at_period_end=False)
        tx.save_subscription(loaded, canceled.subscription)
        again = tx.subscription(sub.id)
        assert again.subscription.status is SubscriptionStatus.CANCELED
        assert again.version == loaded.version + 1
        assert again.next_run_at is None
        assert held is not None


def test_an_engine_closes_the_gateways_it_discovered_and_only_those(
    billing: Billing, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setenv("BILLING_QVO_API_TOKEN", "a-token")
    discovered = open_engine(billing.url)
    given = QvoGateway("a-token")
    passed = open_engine(billing.url, gateways=[given])
    qvo = discovered.gateways["qvo"]
    assert isinstance(qvo, QvoGateway)
    discovered.close()
    passed.close()
    assert qvo._client.is_closed
    assert not given._client.is_closed, "a gateway passed in stays the caller's to close"
    given.close()
