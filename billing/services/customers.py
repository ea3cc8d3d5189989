"""Use cases on customers (create, credit) and plans; payment methods have their own module."""

from __future__ import annotations

from collections.abc import Mapping

from billing.domain import _checks
from billing.domain.catalog import Plan
from billing.domain.customers import Customer
from billing.domain.errors import InvalidArgument
from billing.domain.events import CreditGranted
from billing.domain.ledger import CreditBalance
from billing.domain.money import Money
from billing.services.context import Claim, Context, new_id


def create_customer(
    ctx: Context,
    claim: Claim | None,
    *,
    customer_id: str | None,
    timezone: str,
    metadata: Mapping[str, str] | None,
) -> Customer:
    if customer_id is not None:
        _checks.identifier("customer_id", customer_id)
    customer = Customer.of(
        new_id("cus") if customer_id is None else customer_id, timezone, metadata
    )
    with ctx.store.transaction() as tx:
        tx.add_customer(customer, ctx.clock.now())
        if claim is not None:
            claim.remember(tx, customer)
    return customer


def grant_credit(
    ctx: Context, claim: Claim | None, *, customer_id: str, amount: Money, reason: str
) -> CreditBalance:
    """Add credit to a customer's balance; it is consumed before any charge."""
    if not isinstance(amount, Money) or not amount.is_positive():
        raise InvalidArgument("amount", "must be a positive amount of Money", amount)
    now = ctx.clock.now()
    with ctx.store.transaction() as tx:
        tx.customer(customer_id)
        balance = tx.grant(
            CreditGranted(at=now, customer_id=customer_id, amount=amount, reason=reason)
        )
        if claim is not None:
            claim.remember(tx, balance)
    return balance


def create_plan(ctx: Context, claim: Claim | None, plan: Plan) -> Plan:
    with ctx.store.transaction() as tx:
        tx.add_plan(plan, ctx.clock.now())
        if claim is not None:
            claim.remember(tx, plan)
    return plan


def deactivate_plan(ctx: Context, claim: Claim | None, code: str) -> Plan:
    """Close a plan to new subscriptions; existing ones keep billing."""
    with ctx.store.transaction() as tx:
        plan = tx.plan(code).deactivated()
        tx.save_plan_status(plan)
        if claim is not None:
            claim.remember(tx, plan)
    return plan
