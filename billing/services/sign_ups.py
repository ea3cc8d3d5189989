"""Many sign-ups at once: customers, their cards and their subscriptions, written together.

:meth:`billing.Engine.sign_up_many` is the bulk form of ``create_customer``,
``add_payment_method`` and ``subscribe``, for a host that brings many customers at once (an
import from another billing system, a launch, a simulation). It keeps their rules and costs a
small fraction of their time per customer:

1. Every sign-up is checked before anything is sent or written: ids, timezones, tokens, the
   plan (it exists, takes new subscriptions, is charged in a currency the gateway takes), and
   that a first period due now has a card to be paid with. One bad sign-up refuses the call,
   naming its place (``sign_ups[3].plan: ...``); so do ids the database already holds.
2. Customers are registered at their gateways and their cards stored there, up to ``threads``
   calls at once, outside any transaction. A failed call refuses the call and nothing is
   written (what the gateway stored before it stays there unused, as when a single
   ``add_payment_method`` cannot write).
3. One transaction writes every row with bulk statements. The subscriptions whose first period
   is due now are written claimed by this engine, so no worker bills them meanwhile.
4. The batched billing run (:mod:`billing.services.batch_run`) bills those first periods, a
   batch at a time, and releases them. A crash before it finishes, or a call so large that the
   claims' lease (``Settings.lease_seconds``) lapses first, leaves the rest due: their claims
   lapse and any worker bills them.

A retry of a call that failed is safe: nothing was written. A retry of one that wrote is
refused (its ids exist), and whatever it left due is billed by the workers.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import select

from billing.domain import _checks
from billing.domain import subscriptions as domain
from billing.domain.catalog import Plan
from billing.domain.customers import Customer, PaymentMethod
from billing.domain.errors import AlreadyExists, InvalidArgument, NotFound
from billing.domain.events import Event
from billing.domain.subscriptions import Subscription
from billing.domain.taxes import TaxRate
from billing.ports import AttachRequest, Capability, CustomerRequest, PaymentGateway
from billing.services.batch_run import _map, _pool, _work_batch, release
from billing.services.billing_run import RunReport
from billing.services.context import Context, new_id
from billing.services.gateways import gateway, require
from billing.store import mapping
from billing.store.batch import bulk_insert
from billing.store.tables import metadata as schema

_CUSTOMERS = schema.tables["customers"]
_METHODS = schema.tables["payment_methods"]
_GATEWAY_CUSTOMERS = schema.tables["gateway_customers"]
_SUBSCRIPTIONS = schema.tables["subscriptions"]
_DEBTS = schema.tables["subscription_debts"]
_IDS_AT_ONCE = 500


@dataclass(frozen=True, slots=True, kw_only=True)
class SignUp:
    """One new customer with one subscription, and the card it is paid with.

    The fields mean what the same arguments of :meth:`~billing.Engine.create_customer`,
    :meth:`~billing.Engine.add_payment_method` and :meth:`~billing.Engine.subscribe` mean.
    Without ``gateway`` and ``token`` the customer has no payment method: the subscription
    must then start later, have a trial, or be on a free plan.
    """

    timezone: str
    plan: str
    customer_id: str | None = None
    metadata: Mapping[str, str] | None = None
    gateway: str | None = None
    token: str | None = None
    label: str | None = None
    subscription_id: str | None = None
    start: datetime | None = None
    trial_end: datetime | None = None
    cycles: int | None = None
    tax: TaxRate | None = None
    prorate: bool = True


@dataclass(frozen=True, slots=True)
class SignUpReport:
    """What :meth:`~billing.Engine.sign_up_many` did."""

    customers: tuple[str, ...]
    """The customers' ids, in the order of the sign-ups."""
    subscriptions: tuple[str, ...]
    """The subscriptions' ids, in the same order."""
    billed: RunReport = field(default_factory=RunReport)
    """The billing of the first periods due at once (``claimed`` of them)."""


@dataclass(slots=True)
class _Planned:
    """A sign-up, checked: what to send to its gateway and what to write."""

    customer: Customer
    subscription: Subscription
    events: tuple[Event, ...]
    method: PaymentMethod | None
    port: PaymentGateway | None
    gateway_customer: str | None = None


def sign_up_many(ctx: Context, sign_ups: Sequence[SignUp]) -> SignUpReport:
    """Check, send, write and bill ``sign_ups``; see the module docstring."""
    if not isinstance(sign_ups, Sequence) or isinstance(sign_ups, str | bytes):
        raise InvalidArgument("sign_ups", "must be a sequence of SignUp", type(sign_ups).__name__)
    now = ctx.clock.now()
    with ctx.store.transaction() as tx:
        plans = {}
        codes = {s.plan for s in sign_ups if isinstance(s, SignUp) and isinstance(s.plan, str)}
        for code in sorted(codes):
            with contextlib.suppress(NotFound, InvalidArgument):
                plans[code] = tx.plan(code)
    planned = [_check(ctx, index, sign_up, plans, now) for index, sign_up in enumerate(sign_ups)]
    _refuse_repeats(planned)
    _refuse_existing(ctx, planned)
    with _pool(ctx.settings.threads) as pool:
        _map(pool, lambda item: _send(ctx, item), [p for p in planned if p.method is not None])
        deadline = ctx.clock.now() + ctx.settings.lease
        due = _write(ctx, planned, now, deadline)
        report = RunReport()
        for start in range(0, len(due), ctx.settings.batch_size):
            batch = due[start : start + ctx.settings.batch_size]
            report.count("claimed", len(batch))
            try:
                _work_batch(ctx, batch, now, deadline, report, False, lambda: False, pool)
            finally:
                release(ctx, batch)
    return SignUpReport(
        customers=tuple(p.customer.id for p in planned),
        subscriptions=tuple(p.subscription.id for p in planned),
        billed=report,
    )


def _check(
    ctx: Context, index: int, sign_up: object, plans: Mapping[str, Plan], now: datetime
) -> _Planned:
    """Everything about one sign-up that can be checked without the gateway."""
    where = f"sign_ups[{index}]"
    if not isinstance(sign_up, SignUp):
        raise InvalidArgument(where, "must be a SignUp", type(sign_up).__name__)
    try:
        return _plan_one(ctx, sign_up, plans, now)
    except InvalidArgument as exc:
        raise InvalidArgument(f"{where}.{exc.field}", exc.rule, exc.value) from None
    except NotFound as exc:
        raise InvalidArgument(f"{where}.plan", "must be an existing plan", exc.entity_id) from None


def _plan_one(ctx: Context, sign_up: SignUp, plans: Mapping[str, Plan], now: datetime) -> _Planned:
    for name in ("customer_id", "subscription_id"):
        value = getattr(sign_up, name)
        if value is not None:
            _checks.identifier(name, value)
    customer = Customer.of(
        new_id("cus") if sign_up.customer_id is None else sign_up.customer_id,
        sign_up.timezone,
        sign_up.metadata,
    )
    if not isinstance(sign_up.plan, str):
        raise InvalidArgument("plan", "must be a plan's code", sign_up.plan)
    plan = plans.get(sign_up.plan)
    if plan is None:
        raise NotFound("plan", sign_up.plan)
    outcome = domain.subscribe(
        id=new_id("sub") if sign_up.subscription_id is None else sign_up.subscription_id,
        customer=customer,
        plan=plan,
        now=now,
        start=sign_up.start,
        trial_end=sign_up.trial_end,
        cycles=sign_up.cycles,
        tax=sign_up.tax,
        prorate=sign_up.prorate,
    )
    subscription = outcome.subscription
    method, port = None, None
    if sign_up.gateway is not None or sign_up.token is not None:
        if sign_up.gateway is None or sign_up.token is None:
            missing = "gateway" if sign_up.gateway is None else "token"
            raise InvalidArgument(missing, "must be given with the other (a card needs both)")
        port = gateway(ctx, sign_up.gateway)
        if Capability.PAY_BY_LINK not in port.capabilities:  # its token is the payer's e-mail
            require(port, Capability.CARD_TOKENS, "store a card from a token")
        currency = plan.billing_currency
        if currency.code not in port.currencies:
            takes = ", ".join(sorted(port.currencies))
            rule = f"must charge in a currency {port.name} takes ({takes})"
            raise InvalidArgument("plan", f"{rule}; it charges in {currency.code}", plan.code)
        method = PaymentMethod(  # validates the token and the label before the gateway sees them
            id=new_id("pm"),
            customer_id=customer.id,
            gateway=port.name,
            token=sign_up.token,
            label=sign_up.label,
            is_default=True,
            created_at=now,
        )
    elif subscription.anchor <= now and not plan.is_free:
        rule = "must be given to pay the first period now (or start later, or give a trial)"
        raise InvalidArgument("token", rule)
    return _Planned(customer, subscription, outcome.events, method, port)


def _refuse_repeats(planned: Sequence[_Planned]) -> None:
    for name, ids in (
        ("customer_id", [p.customer.id for p in planned]),
        ("subscription_id", [p.subscription.id for p in planned]),
    ):
        seen: dict[str, int] = {}
        for index, value in enumerate(ids):
            if value in seen:
                rule = f"must differ from every other sign-up's (sign_ups[{seen[value]}] has it)"
                raise InvalidArgument(f"sign_ups[{index}].{name}", rule, value)
            seen[value] = index


def _refuse_existing(ctx: Context, planned: Sequence[_Planned]) -> None:
    """Ids the database holds already refuse the call, before any gateway call."""
    for entity, table, ids in (
        ("customer", _CUSTOMERS, [p.customer.id for p in planned]),
        ("subscription", _SUBSCRIPTIONS, [p.subscription.id for p in planned]),
    ):
        with ctx.store.transaction() as tx:
            for start in range(0, len(ids), _IDS_AT_ONCE):
                chunk = ids[start : start + _IDS_AT_ONCE]
                found = tx.session.execute(
                    select(table.c.id).where(table.c.id.in_(chunk)).limit(1)
                ).first()
                if found is not None:
                    raise AlreadyExists(entity, found[0])


def _send(ctx: Context, item: _Planned) -> None:
    """Register the customer at the gateway (if it keeps customers) and store the card."""
    port, method = item.port, item.method
    assert port is not None
    assert method is not None
    customer = item.customer
    if Capability.CUSTOMERS in port.capabilities:
        item.gateway_customer = port.register_customer(
            CustomerRequest(
                customer_id=customer.id,
                name=customer.metadata.get("name"),
                email=customer.metadata.get("email"),
                metadata=customer.metadata,
            )
        )
    stored = port.attach_payment_method(
        AttachRequest(
            customer_id=customer.id, customer_reference=item.gateway_customer, token=method.token
        )
    )
    item.method = dataclasses.replace(
        method, token=stored.reference, label=method.label or stored.label
    )


def _write(
    ctx: Context, planned: Sequence[_Planned], now: datetime, deadline: datetime
) -> list[str]:
    """Write every sign-up in one transaction; returns the subscriptions due now, which are
    written claimed by this engine until ``deadline``."""
    due: list[str] = []
    subscriptions: list[dict[str, Any]] = []
    for item in planned:
        subscription = item.subscription
        claimed = subscription.due_at is not None and subscription.due_at <= now
        if claimed:
            due.append(subscription.id)
        subscriptions.append(
            {
                **mapping.subscription_fields(subscription),
                "version": 1,
                "next_run_at": subscription.due_at,
                "claimed_by": ctx.worker if claimed else None,
                "claimed_until": deadline if claimed else None,
            }
        )
    with ctx.store.batch() as tx:
        connection = tx.session.connection()
        bulk_insert(
            connection,
            _CUSTOMERS,
            [mapping.customer_fields(item.customer, now) for item in planned],
        )
        bulk_insert(
            connection,
            _GATEWAY_CUSTOMERS,
            [
                {
                    "customer_id": item.customer.id,
                    "gateway": item.port.name,
                    "reference": item.gateway_customer,
                    "created_at": now,
                }
                for item in planned
                if item.port is not None and item.gateway_customer is not None
            ],
        )
        bulk_insert(
            connection,
            _METHODS,
            [
                mapping.payment_method_fields(item.method)
                for item in planned
                if item.method is not None
            ],
        )
        bulk_insert(connection, _SUBSCRIPTIONS, subscriptions)
        bulk_insert(
            connection,
            _DEBTS,
            [row for item in planned for row in mapping.debt_fields(item.subscription)],
        )
        tx.record(event for item in planned for event in item.events)
    return due
