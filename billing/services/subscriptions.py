"""Use cases on subscriptions: subscribe, change plan (and preview), cancel, pause, resume.

Each one first runs the subscription's work due by now (the domain refuses an operation that would
jump over due billing), then makes its change in one transaction, then collects any invoice the
change made. A subscribe is one transaction with the first period's invoice: if that invoice
cannot be made, nothing is written.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from billing.domain import _checks
from billing.domain import subscriptions as domain
from billing.domain.catalog import Plan
from billing.domain.customers import Customer
from billing.domain.errors import InvalidArgument
from billing.domain.plan_changes import PlanChange, change_plan
from billing.domain.proration import ProrationBehavior
from billing.domain.subscriptions import Outcome, Subscription
from billing.domain.taxes import TaxRate
from billing.services.billing_run import apply, bill_due, run_subscription, run_unless_stuck, send
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
    """Create a subscription and bill whatever is due at once (a start now, without a trial),
    in one transaction.

    Like QVO, a subscription that must be paid at once needs a default payment method (or credit)
    unless its plan is free, and the customer's gateway must charge in the plan's currency.
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
        _check_payable(ctx, tx, customer, plan, pays_now=subscription.anchor <= now)
        tx.add_subscription(subscription)
        tx.record(outcome.events)
        sends = bill_due(ctx, tx, subscription.id, now)
        if claim is not None:
            claim.remember(tx, subscription)
    send(ctx, sends, now)
    return run_subscription(ctx, subscription.id, now) or read(ctx, subscription.id)


def _check_payable(ctx: Context, tx: Tx, customer: Customer, plan: Plan, *, pays_now: bool) -> None:
    """Refuse a subscription its customer cannot pay: nothing to pay the first period with now,
    or a gateway that does not charge in the plan's currency."""
    method = tx.default_payment_method(customer.id)
    gateway = None if method is None else ctx.gateways.get(method.gateway)
    currency = plan.billing_currency
    if gateway is not None and currency.code not in gateway.currencies:
        takes = ", ".join(sorted(gateway.currencies))
        rule = f"must charge in a currency {gateway.name} takes ({takes})"
        raise InvalidArgument("plan", f"{rule}; it charges in {currency.code}", plan.code)
    if (
        pays_now
        and not plan.is_free
        and method is None
        and tx.credit(customer.id, currency).amount.is_zero()
    ):
        rule = "needs a default payment method (or credit) to pay the first period now"
        raise InvalidArgument("customer", rule, customer.id)


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
    return _apply(
        ctx,
        claim,
        subscription_id,
        operation,
        now,
        lambda: run_subscription(ctx, subscription_id, now),
    )


def _apply(
    ctx: Context,
    claim: Claim | None,
    subscription_id: str,
    operation: Callable[[Tx, Subscription, datetime], Outcome],
    now: datetime,
    catch_up: Callable[[], object],
) -> Subscription:
    """Apply ``operation`` in one transaction, after the subscription's work due by ``now``.

    The transaction first looks for due work (a billing step, a payment to check); if there is
    some, it changes nothing, ``catch_up`` does that work, and the operation runs in a new
    transaction. Its attempts are then sent, and what they and the change left due is done.
    """
    caught_up = False
    while True:
        with ctx.store.transaction() as tx:
            loaded = tx.subscription(subscription_id)
            if not caught_up and _work_due(tx, loaded.subscription, now):
                behind = True
            else:
                behind = False
                outcome = operation(tx, loaded.subscription, now)
                _, sends = apply(ctx, tx, loaded, outcome, now)
                if claim is not None:
                    claim.remember(tx, outcome.subscription)
                after = tx.subscription(subscription_id)
        if not behind:
            break
        catch_up()
        caught_up = True
    if not sends and (after.next_run_at is None or after.next_run_at > now):
        return after.subscription  # nothing is left to do by now: this is what was written
    send(ctx, sends, now)
    return run_subscription(ctx, subscription_id, now) or read(ctx, subscription_id)


def _work_due(tx: Tx, subscription: Subscription, now: datetime) -> bool:
    """Whether a billing step or a payment check of ``subscription`` is due by ``now``."""
    due = subscription.due_at
    return (due is not None and due <= now) or bool(tx.payments_to_check(subscription.id, now))


def cancel(
    ctx: Context, claim: Claim | None, subscription_id: str, *, at_period_end: bool
) -> Subscription:
    """Cancel now or at the end of the period, after billing what is due.

    A subscription can always be canceled: when what is due cannot be billed (no exchange rate
    for a UF renewal, say), it is canceled at the instant its billing stopped, so no time after
    the last billed period is owed.
    """
    now = ctx.clock.now()
    stuck = False

    def catch_up() -> None:
        nonlocal stuck
        stuck = not run_unless_stuck(ctx, subscription_id, now, why="cancel")

    def operation(tx: Tx, subscription: Subscription, at: datetime) -> Outcome:
        currency = subscription.plan.billing_currency
        credit = tx.credit(subscription.customer_id, currency, lock=True).amount
        due = subscription.due_at
        if stuck and due is not None and due <= at and not subscription.is_final():
            return domain.cancel_now(subscription, due, credit=credit, final_debt=ctx.final_debt)
        return domain.cancel(
            subscription,
            at=at,
            at_period_end=at_period_end,
            credit=credit,
            final_debt=ctx.final_debt,
        )

    return _apply(ctx, claim, subscription_id, operation, now, catch_up)


def plan_change(
    ctx: Context,
    tx: Tx,
    subscription: Subscription,
    plan_code: str,
    behavior: ProrationBehavior,
    at: datetime,
    *,
    lock: bool = True,
) -> PlanChange:
    """The plan change at ``at``, with the customer's credit (locked, unless only previewing)
    and the subscription's unpaid invoices (unused time is credited only once they are paid)."""
    currency = subscription.plan.billing_currency
    credit = tx.credit(subscription.customer_id, currency, lock=lock).amount
    return change_plan(
        subscription,
        tx.plan(plan_code),
        at=at,
        behavior=behavior,
        unit=ctx.proration,
        rates=ctx.rates,
        credit=credit,
        unpaid=tx.unpaid_invoices(subscription.id),
    )


def preview_change(
    ctx: Context, subscription_id: str, plan_code: str, behavior: ProrationBehavior
) -> PlanChange:
    """The exact lines a plan change would make now, changing nothing."""
    now = ctx.clock.now()
    run_subscription(ctx, subscription_id, now)
    with ctx.store.transaction() as tx:
        subscription = tx.subscription(subscription_id).subscription
        return plan_change(ctx, tx, subscription, plan_code, behavior, now, lock=False)
