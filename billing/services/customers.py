"""Use cases on customers: create, payment methods, credit; and plans."""

from __future__ import annotations

from collections.abc import Mapping

from billing.domain import _checks
from billing.domain.catalog import Plan
from billing.domain.customers import Customer, PaymentMethod
from billing.domain.errors import InvalidArgument
from billing.domain.events import CreditGranted
from billing.domain.ledger import CreditBalance
from billing.domain.money import Money
from billing.domain.subscriptions import SubscriptionStatus, replace_payment_method
from billing.services.billing_run import apply, run_subscription, send
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


def add_payment_method(
    ctx: Context,
    claim: Claim | None,
    *,
    customer_id: str,
    gateway: str,
    token: str,
    label: str | None,
    default: bool,
) -> PaymentMethod:
    """Attach a gateway token to a customer (never card data); it becomes the default if asked."""
    _checks.flag("default", default)
    if gateway not in ctx.gateways:
        configured = ", ".join(sorted(ctx.gateways)) or "none"
        raise InvalidArgument("gateway", f"must be a configured gateway ({configured})", gateway)
    method = PaymentMethod(
        id=new_id("pm"),
        customer_id=customer_id,
        gateway=gateway,
        token=token,
        label=label,
        is_default=default,
        created_at=ctx.clock.now(),
    )
    with ctx.store.transaction() as tx:
        tx.customer(customer_id)
        tx.add_payment_method(method)
        if claim is not None:
            claim.remember(tx, method)
    return method


def replace_default_payment_method(
    ctx: Context,
    claim: Claim | None,
    *,
    customer_id: str,
    gateway: str,
    token: str,
    label: str | None,
) -> PaymentMethod:
    """A new default payment method; invoices in dunning are retried with it at once.

    This reactivates an unpaid subscription when the retried invoice is paid.
    """
    method = add_payment_method(
        ctx, claim, customer_id=customer_id, gateway=gateway, token=token, label=label, default=True
    )
    now = ctx.clock.now()
    with ctx.store.transaction() as tx:
        in_dunning = [
            s.id
            for s in tx.subscriptions(customer_id)
            if s.status in (SubscriptionStatus.PAST_DUE, SubscriptionStatus.UNPAID)
        ]
    for subscription_id in in_dunning:
        run_subscription(ctx, subscription_id, now)
        with ctx.store.transaction() as tx:
            loaded = tx.subscription(subscription_id)
            outcome = replace_payment_method(loaded.subscription, at=now)
            _, sends = apply(ctx, tx, loaded, outcome, now)
        send(ctx, sends, now)
        run_subscription(ctx, subscription_id, now)
    return method


def grant_credit(
    ctx: Context, claim: Claim | None, *, customer_id: str, amount: Money, reason: str
) -> CreditBalance:
    """Add credit to a customer's balance; it is consumed before any charge."""
    if not isinstance(amount, Money) or not amount.is_positive():
        raise InvalidArgument("amount", "must be a positive amount of Money", amount)
    now = ctx.clock.now()
    with ctx.store.transaction() as tx:
        tx.customer(customer_id)
        balance = tx.change_credit(customer_id, amount, now)
        tx.record([CreditGranted(at=now, customer_id=customer_id, amount=amount, reason=reason)])
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
