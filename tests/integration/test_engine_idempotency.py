"""Idempotency keys on every state-changing Engine method: a repeat replays the first result and
changes nothing (rows, events, gateway calls); the key reused for other arguments or another
operation is refused with IdempotencyConflict, and changes nothing either."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime

import pytest
import sqlalchemy
from sqlalchemy import func, select

from billing.domain.catalog import Plan
from billing.domain.errors import IdempotencyConflict, NotFound
from billing.domain.money import Money
from billing.domain.subscriptions import SubscriptionStatus
from billing.domain.taxes import TaxRate
from billing.engine import Engine
from billing.store.tables import (
    CreditBalanceRow,
    CustomerRow,
    DebtRow,
    EventRow,
    IdempotencyRow,
    InvoiceLineRow,
    InvoiceRow,
    PaymentMethodRow,
    PaymentRow,
    PlanRow,
    RefundRow,
    SubscriptionRow,
)
from tests.integration.conftest import SCL, Billing

ROWS = (
    CustomerRow,
    PaymentMethodRow,
    PlanRow,
    SubscriptionRow,
    DebtRow,
    CreditBalanceRow,
    InvoiceRow,
    InvoiceLineRow,
    PaymentRow,
    RefundRow,
    EventRow,
    IdempotencyRow,
)

ORO = Plan.of(code="oro", name="Plan Oro", price="10000", currency="CLP")
PLATINO = Plan.of(code="platino", name="Plan Platino", price="20000", currency="CLP")
PRUEBA = Plan.of(code="prueba", name="Plan Prueba", price="5000", currency="CLP", trial_days=14)
KEY = "request-1"
IVA = TaxRate.of("IVA", "19")


@dataclass
class World:
    """Plans oro, platino and prueba; customer c1 paying by card with s1 on oro, active and paid;
    customer c2 whose first charge is declined for good (s2 on oro, unpaid) and whose next one is
    approved."""

    billing: Billing
    db: sqlalchemy.Engine

    @property
    def engine(self) -> Engine:
        return self.billing.engine

    def state(self) -> dict[str, object]:
        """Everything a replayed or refused call must leave as it was."""
        with self.db.connect() as connection:
            state: dict[str, object] = {
                row.__tablename__: connection.execute(
                    select(func.count()).select_from(row)
                ).scalar_one()
                for row in ROWS
            }
            state["subscriptions"] = sorted(
                connection.execute(
                    select(SubscriptionRow.id, SubscriptionRow.version, SubscriptionRow.status)
                ).all()
            )
            state["plan statuses"] = dict(
                connection.execute(select(PlanRow.code, PlanRow.status)).all()
            )
            state["credit"] = sorted(
                connection.execute(
                    select(CreditBalanceRow.customer_id, CreditBalanceRow.amount_minor)
                ).all()
            )
            state["event ids"] = list(
                connection.execute(select(EventRow.id).order_by(EventRow.seq)).scalars()
            )
        state["gateway calls"] = self.billing.fake.calls
        state["charges taken"] = [
            (charge.idempotency_key, charge.refunded)
            for charge in self.billing.fake.charges_taken()
        ]
        return state


@pytest.fixture
def world(billing: Billing) -> Iterator[World]:
    db = sqlalchemy.create_engine(billing.url)
    for plan in (ORO, PLATINO, PRUEBA):
        billing.engine.create_plan(plan)
    billing.customer("c1")
    billing.engine.subscribe("c1", "oro", subscription_id="s1")
    billing.customer("c2")
    billing.fake.script("c2", ["decline_hard", "approve"])
    billing.engine.subscribe("c2", "oro", subscription_id="s2")
    yield World(billing, db)
    db.dispose()


@dataclass(frozen=True)
class Case:
    """A call made with ``KEY``, the same call with other arguments, and what it should do."""

    operation: str
    call: Callable[[Engine, str], object]
    other_arguments: Callable[[Engine, str], object]
    prepare: Callable[[World], None] = lambda world: None
    changes: Callable[[World, object], None] = lambda world, result: None


def _charged(times: int) -> Callable[[World, object], None]:
    def check(world: World, result: object) -> None:
        assert len(world.billing.fake.charges_taken()) == times

    return check


def _is(subscription_id: str, status: SubscriptionStatus) -> Callable[[World, object], None]:
    def check(world: World, result: object) -> None:
        assert world.engine.subscription(subscription_id).status is status

    return check


def _s2_recovered(world: World, result: object) -> None:
    """The unpaid invoice was retried with the new method and paid: s2 is active again."""
    _is("s2", SubscriptionStatus.ACTIVE)(world, result)
    _charged(2)(world, result)


def _refunded_3000(world: World, result: object) -> None:
    [charge] = world.billing.fake.charges_taken("c1")
    assert charge.refunded == Money.of("3000", "CLP")


def _pause_s1(world: World) -> None:
    world.engine.pause("s1")


CASES = [
    Case(
        "create_customer",
        lambda engine, key: engine.create_customer(
            customer_id="c9", timezone="America/Santiago", idempotency_key=key
        ),
        lambda engine, key: engine.create_customer(
            customer_id="c9", timezone="America/Lima", idempotency_key=key
        ),
    ),
    Case(
        "add_payment_method",
        lambda engine, key: engine.add_payment_method(
            "c1", gateway="fake", token="tok_a", idempotency_key=key
        ),
        lambda engine, key: engine.add_payment_method(
            "c1", gateway="fake", token="tok_b", idempotency_key=key
        ),
    ),
    Case(
        "replace_payment_method",
        lambda engine, key: engine.replace_payment_method(
            "c2", gateway="fake", token="tok_new", idempotency_key=key
        ),
        lambda engine, key: engine.replace_payment_method(
            "c2", gateway="fake", token="tok_other", idempotency_key=key
        ),
        changes=_s2_recovered,
    ),
    Case(
        "grant_credit",
        lambda engine, key: engine.grant_credit("c1", Money.of("1000", "CLP"), idempotency_key=key),
        lambda engine, key: engine.grant_credit("c1", Money.of("2000", "CLP"), idempotency_key=key),
    ),
    Case(
        "create_plan",
        lambda engine, key: engine.create_plan(
            Plan.of(code="bronce", name="Bronce", price="1000", currency="CLP"),
            idempotency_key=key,
        ),
        lambda engine, key: engine.create_plan(
            Plan.of(code="bronce", name="Bronce", price="2000", currency="CLP"),
            idempotency_key=key,
        ),
    ),
    Case(
        "deactivate_plan",
        lambda engine, key: engine.deactivate_plan("prueba", idempotency_key=key),
        lambda engine, key: engine.deactivate_plan("platino", idempotency_key=key),
    ),
    Case(
        "subscribe",
        lambda engine, key: engine.subscribe("c1", "oro", tax=IVA, idempotency_key=key),
        lambda engine, key: engine.subscribe("c1", "prueba", tax=IVA, idempotency_key=key),
        changes=_charged(2),
    ),
    Case(
        "change_plan",
        lambda engine, key: engine.change_plan(
            "s1", "platino", behavior="invoice_now", idempotency_key=key
        ),
        lambda engine, key: engine.change_plan(
            "s1", "platino", behavior="carry_debt", idempotency_key=key
        ),
        changes=_charged(2),  # the upgrade's difference is invoiced and charged at once
    ),
    Case(
        "cancel",
        lambda engine, key: engine.cancel("s1", idempotency_key=key),
        lambda engine, key: engine.cancel("s1", at_period_end=False, idempotency_key=key),
    ),
    Case(
        "pause",
        lambda engine, key: engine.pause("s1", idempotency_key=key),
        lambda engine, key: engine.pause(
            "s1", resume_at=datetime(2026, 2, 10, tzinfo=SCL), idempotency_key=key
        ),
        changes=_is("s1", SubscriptionStatus.PAUSED),
    ),
    Case(
        "resume",
        lambda engine, key: engine.resume("s1", idempotency_key=key),
        lambda engine, key: engine.resume("s2", idempotency_key=key),
        prepare=_pause_s1,
        changes=_is("s1", SubscriptionStatus.ACTIVE),
    ),
    Case(
        "refund",
        lambda engine, key: engine.refund(
            engine.payments(subscription_id="s1")[0].id,
            amount=Money.of("3000", "CLP"),
            idempotency_key=key,
        ),
        lambda engine, key: engine.refund(
            engine.payments(subscription_id="s1")[0].id,
            amount=Money.of("4000", "CLP"),
            idempotency_key=key,
        ),
        changes=_refunded_3000,
    ),
]


def _another_operation(operation: str) -> Callable[[Engine, str], object]:
    """A different state-changing call that would succeed with a fresh key."""
    if operation == "grant_credit":
        return lambda engine, key: engine.create_customer(
            customer_id="c8", timezone="UTC", idempotency_key=key
        )
    return lambda engine, key: engine.grant_credit(
        "c1", Money.of("1000", "CLP"), idempotency_key=key
    )


@pytest.mark.parametrize("case", CASES, ids=[case.operation for case in CASES])
def test_a_reused_key_replays_the_first_call_and_refuses_any_other_call(world: World, case: Case):
    case.prepare(world)
    before = world.state()
    first = case.call(world.engine, KEY)
    after_first = world.state()
    assert after_first != before
    case.changes(world, first)

    # The same call again: the first result, and nothing written or charged.
    again = case.call(world.engine, KEY)
    assert again == first
    assert type(again) is type(first)
    assert world.state() == after_first

    # The same key with other arguments, or for another operation: refused, nothing changed.
    with pytest.raises(IdempotencyConflict) as other_arguments:
        case.other_arguments(world.engine, KEY)
    assert (other_arguments.value.key, other_arguments.value.operation) == (KEY, case.operation)
    assert world.state() == after_first
    with pytest.raises(IdempotencyConflict) as other_operation:
        _another_operation(case.operation)(world.engine, KEY)
    assert other_operation.value.key == KEY
    assert other_operation.value.operation != case.operation
    assert world.state() == after_first


def test_a_repeat_after_the_subscription_moved_on_still_returns_the_first_result(world: World):
    first = world.engine.subscribe("c1", "oro", subscription_id="s3", idempotency_key=KEY)
    assert (first.status, first.current_index) == (SubscriptionStatus.ACTIVE, 0)
    world.billing.run_until(datetime(2026, 3, 1, 12, tzinfo=SCL))
    assert world.engine.subscription("s3").current_index == 1
    after_renewal = world.state()
    assert world.engine.subscribe("c1", "oro", subscription_id="s3", idempotency_key=KEY) == first
    assert world.state() == after_renewal


def test_a_call_that_fails_leaves_its_key_free_for_a_corrected_retry(world: World):
    before = world.state()
    with pytest.raises(NotFound):
        world.engine.subscribe("c1", "platinum", idempotency_key=KEY)
    assert world.state() == before
    retried = world.engine.subscribe("c1", "platino", idempotency_key=KEY)
    assert retried.plan.code == "platino"
    assert world.engine.subscribe("c1", "platino", idempotency_key=KEY) == retried


def test_the_same_instant_written_in_another_timezone_is_the_same_request(world: World):
    # The engine keeps every instant in UTC; a retry that spells the start in UTC instead of
    # Santiago time asks for exactly the same subscription.
    start = datetime(2026, 3, 1, 12, tzinfo=SCL)
    first = world.engine.subscribe("c1", "prueba", start=start, idempotency_key=KEY)
    after_first = world.state()
    again = world.engine.subscribe("c1", "prueba", start=start.astimezone(UTC), idempotency_key=KEY)
    assert again == first
    assert world.state() == after_first
