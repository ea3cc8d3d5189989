"""Use cases on subscriptions: subscribe, change plan (and preview), cancel, pause, resume.

Each one first runs the subscription's work due by now (the domain refuses an operation that would
jump over due billing), then makes its change in one transaction, then collects any invoice the
change made.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from billing.domain import _checks
from billing.domain import subscriptions as domain
from billing.domain.errors import InvalidArgument
from billing.domain.plan_changes import PlanChange, change_plan
from billing.domain.proration import ProrationBehavior
from billing.domain.subscriptions import Outcome, Subscription
from billing.domain.taxes import TaxRate
from billing.services.billing_run import apply, run_subscription, send
from billing.services.context import Claim, Context, new_id
from billing.store.unit_of_work import Tx


def subscribe(
    ctx: Context,
    claim: Claim | None,
    *,
    customer_id: str,
    plan_code: str,
    subscription_id: str | None,
    start: datetime | None,
    trial_end: datetime | None,
    cycles: int | None,
    tax: TaxRate | None,
    prorate: bool,
) -> Subscription:
    """Create a subscription and bill whatever is due at once (a start now, without a trial).

    Like QVO, a subscription that must be paid at once needs a default payment method (or credit)
    unless its plan is free.
    """
    if subscription_id is not None:
        _checks.identifier("subscription_id", subscription_id)
    now = ctx.clock.now()
    with ctx.store.transaction() as tx:
        customer = tx.customer(customer_id)
        plan = tx.plan(plan_code)
        outcome = domain.subscribe(
            id=new_id("sub") if subscription_id is None else subscription_id,
            customer=customer,
            plan=plan,
            now=now,
            start=start,
            trial_end=trial_end,
            cycles=cycles,
            tax=tax,
            prorate=prorate,
        )
        subscription = outcome.subscription
        pays_now = subscription.start <= now and subscription.trial_end is None
        if (
            pays_now
            and not plan.is_free
            and tx.default_payment_method(customer.id) is None
            and tx.credit(customer.id, plan.billing_currency).amount.is_zero()
        ):
            rule = "needs a default payment method (or credit) to pay the first period now"
            raise InvalidArgument("customer", rule, customer.id)
        tx.add_subscription(subscription)
        tx.record(outcome.events)
        if claim is not None:
            claim.remember(tx, subscription)
    run_subscription(ctx, subscription.id, now)
    return read(ctx, subscription.id)


def read(ctx: Context, subscription_id: str) -> Subscription:
    with ctx.store.transaction() as tx:
        return tx.subscription(subscription_id).subscription


def command(
    ctx: Context,
    claim: Claim | None,
    subscription_id: str,
    operation: Callable[[Tx, Subscription, datetime], Outcome],
) -> Subscription:
    """Run due work, apply one operation in a transaction, then collect what it invoiced."""
    now = ctx.clock.now()
    run_subscription(ctx, subscription_id, now)
    with ctx.store.transaction() as tx:
        loaded = tx.subscription(subscription_id)
        outcome = operation(tx, loaded.subscription, now)
        _, sends = apply(ctx, tx, loaded, outcome, now)
        if claim is not None:
            claim.remember(tx, outcome.subscription)
    send(ctx, sends, now)
    run_subscription(ctx, subscription_id, now)
    return read(ctx, subscription_id)


def plan_change(
    ctx: Context,
    tx: Tx,
    subscription: Subscription,
    plan_code: str,
    behavior: ProrationBehavior,
    at: datetime,
) -> PlanChange:
    credit = tx.credit(subscription.customer_id, subscription.plan.billing_currency).amount
    return change_plan(
        subscription,
        tx.plan(plan_code),
        at=at,
        behavior=behavior,
        unit=ctx.proration,
        rates=ctx.rates,
        credit=credit,
    )


def preview_change(
    ctx: Context, subscription_id: str, plan_code: str, behavior: ProrationBehavior
) -> PlanChange:
    """The exact lines a plan change would make now, changing nothing."""
    now = ctx.clock.now()
    run_subscription(ctx, subscription_id, now)
    with ctx.store.transaction() as tx:
        subscription = tx.subscription(subscription_id).subscription
        return plan_change(ctx, tx, subscription, plan_code, behavior, now)
