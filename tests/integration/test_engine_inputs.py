"""Bad input to every state-changing Engine method: a typed error naming the field or the rule,
and nothing half written (row counts, subscription versions, events and gateway calls unchanged).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import TypeVar

import pytest
import sqlalchemy
from sqlalchemy import func, select

from billing.bootstrap import open_engine
from billing.domain.catalog import Plan
from billing.domain.errors import (
    AlreadyExists,
    IllegalTransition,
    InvalidArgument,
    NaiveDatetime,
    NotFound,
    PlanChangeNotAllowed,
    PlanUnavailable,
    UnknownTimezone,
)
from billing.domain.money import Money
from billing.domain.payments import PaymentStatus
from billing.domain.subscriptions import SubscriptionStatus
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
from tests.integration.conftest import START, Billing

E = TypeVar("E", bound=BaseException)

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
ANUAL = Plan.of(code="anual", name="Plan Anual", price="100000", currency="CLP", interval="year")
PRUEBA = Plan.of(code="prueba", name="Plan Prueba", price="5000", currency="CLP", trial_days=14)
PLATA = Plan.of(code="plata", name="Plan Plata", price="5000", currency="CLP")
CARD_NUMBERS = ("4111 1111 1111 1111", "4111111111111111", "4111-1111-1111-1111", "378282246310005")


@dataclass
class World:
    """Plans oro (monthly), anual (yearly) and prueba (14-day trial); customer c1 paying by card
    with subscription s1 on oro, active and paid; customer c2 whose card is declined for good."""

    billing: Billing
    db: sqlalchemy.Engine

    @property
    def engine(self) -> Engine:
        return self.billing.engine

    def state(self) -> dict[str, object]:
        """Everything a failed call must leave as it was."""
        with self.db.connect() as connection:
            state: dict[str, object] = {
                row.__tablename__: connection.execute(
                    select(func.count()).select_from(row)
                ).scalar_one()
                for row in ROWS
            }
            state["subscription versions"] = dict(
                connection.execute(select(SubscriptionRow.id, SubscriptionRow.version)).all()
            )
            state["plan statuses"] = dict(
                connection.execute(select(PlanRow.code, PlanRow.status)).all()
            )
            state["credit"] = sorted(
                connection.execute(
                    select(
                        CreditBalanceRow.customer_id,
                        CreditBalanceRow.currency,
                        CreditBalanceRow.amount_minor,
                    )
                ).all()
            )
            state["default payment methods"] = sorted(
                connection.execute(
                    select(PaymentMethodRow.id).where(PaymentMethodRow.is_default)
                ).scalars()
            )
            state["event ids"] = list(
                connection.execute(select(EventRow.id).order_by(EventRow.seq)).scalars()
            )
        state["gateway calls"] = self.billing.fake.calls
        state["charges taken"] = len(self.billing.fake.charges_taken())
        return state

    def refused(self, error: type[E], call: Callable[[], object]) -> E:
        """Run ``call``, which must raise exactly ``error`` and change nothing."""
        before = self.state()
        with pytest.raises(error) as caught:
            call()
        assert type(caught.value) is error
        assert self.state() == before
        return caught.value


@pytest.fixture
def world(billing: Billing) -> Iterator[World]:
    db = sqlalchemy.create_engine(billing.url)
    for plan in (ORO, ANUAL, PRUEBA):
        billing.engine.create_plan(plan)
    billing.customer("c1")
    billing.engine.subscribe("c1", "oro", subscription_id="s1")
    billing.customer("c2", payment="decline_hard")
    yield World(billing, db)
    db.dispose()


# -- customers ------------------------------------------------------------------------------


def test_create_customer_refuses_an_unknown_timezone(world: World):
    for name in ("Mars/Olympus_Mons", "", "../etc/passwd", "Santiago"):
        error = world.refused(
            UnknownTimezone,
            lambda name=name: world.engine.create_customer(customer_id="c9", timezone=name),
        )
        assert error.field == "timezone"
        assert error.value == name


def test_create_customer_refuses_an_id_that_is_taken(world: World):
    error = world.refused(
        AlreadyExists, lambda: world.engine.create_customer(customer_id="c1", timezone="UTC")
    )
    assert (error.entity, error.entity_id) == ("customer", "c1")
    assert world.engine.customer("c1").timezone.key == "America/Santiago"


def test_create_customer_refuses_metadata_that_is_not_strings_to_strings(world: World):
    error = world.refused(
        InvalidArgument,
        lambda: world.engine.create_customer(
            customer_id="c9", timezone="UTC", metadata={"plan": 3}
        ),
    )
    assert error.field == "metadata"


def test_create_customer_refuses_a_blank_id_instead_of_making_one_up(world: World):
    # customer_id=None asks the engine for an id; "" or "  " is the host's mistake.
    for blank in ("", "  "):
        error = world.refused(
            InvalidArgument,
            lambda blank=blank: world.engine.create_customer(customer_id=blank, timezone="UTC"),
        )
        assert error.field in ("customer_id", "id")


def test_ids_longer_than_the_database_keeps_are_refused_on_every_database(world: World):
    # customers.id, plans.code and subscriptions.id are VARCHAR(64): the engine must refuse a
    # longer one itself instead of leaving it to PostgreSQL (DataError) or SQLite (stores it).
    error = world.refused(
        InvalidArgument,
        lambda: world.engine.create_customer(customer_id="c" * 65, timezone="UTC"),
    )
    assert error.field in ("customer_id", "id")
    error = world.refused(
        InvalidArgument,
        lambda: world.engine.create_plan(
            Plan.of(code="p" * 65, name="Largo", price="1", currency="CLP")
        ),
    )
    assert error.field == "code"
    error = world.refused(
        InvalidArgument, lambda: world.engine.subscribe("c1", "oro", subscription_id="s" * 65)
    )
    assert error.field in ("subscription_id", "id")


# -- payment methods --------------------------------------------------------------------------


def test_payment_methods_refuse_a_card_number_as_token(world: World):
    before = world.engine.payment_methods("c1")
    for number in CARD_NUMBERS:
        for method in (world.engine.add_payment_method, world.engine.replace_payment_method):
            error = world.refused(
                InvalidArgument,
                lambda method=method, number=number: method("c1", gateway="fake", token=number),
            )
            assert error.field == "token"
            assert error.rule == "must be a gateway token or reference, never a card number"
    assert world.engine.payment_methods("c1") == before


def test_payment_methods_refuse_a_gateway_that_is_not_configured(world: World):
    for method in (world.engine.add_payment_method, world.engine.replace_payment_method):
        error = world.refused(
            InvalidArgument,
            lambda method=method: method("c1", gateway="stripe", token="tok_1"),
        )
        assert error.field == "gateway"
        assert error.rule == "must be a configured gateway (fake)"
        assert error.value == "stripe"


def test_payment_methods_refuse_an_unknown_customer(world: World):
    for method in (world.engine.add_payment_method, world.engine.replace_payment_method):
        error = world.refused(
            NotFound, lambda method=method: method("c9", gateway="fake", token="tok_9")
        )
        assert (error.entity, error.entity_id) == ("customer", "c9")


def test_add_payment_method_refuses_a_default_that_is_not_a_boolean(world: World):
    error = world.refused(
        InvalidArgument,
        lambda: world.engine.add_payment_method("c1", gateway="fake", token="tok_2", default="yes"),
    )
    assert error.field == "default"


# -- credit -------------------------------------------------------------------------------------


def test_grant_credit_refuses_an_amount_that_is_not_positive_money(world: World):
    for amount in (Money.of("-100", "CLP"), Money.zero("CLP"), 100, Decimal("100"), "100", 1.5):
        error = world.refused(
            InvalidArgument, lambda amount=amount: world.engine.grant_credit("c1", amount)
        )
        assert error.field == "amount"
        assert error.rule == "must be a positive amount of Money"


def test_grant_credit_refuses_a_float_amount_with_an_idempotency_key_too(world: World):
    error = world.refused(
        InvalidArgument, lambda: world.engine.grant_credit("c1", 1.5, idempotency_key="credit-1")
    )
    assert error.field == "amount"


def test_grant_credit_refuses_an_unknown_customer(world: World):
    error = world.refused(NotFound, lambda: world.engine.grant_credit("c9", Money.of("100", "CLP")))
    assert (error.entity, error.entity_id) == ("customer", "c9")


# -- plans --------------------------------------------------------------------------------------


def test_create_plan_refuses_something_that_is_not_a_plan(world: World):
    for plan in ({"code": "x", "name": "X", "price": "1", "currency": "CLP"}, "oro", None):
        error = world.refused(InvalidArgument, lambda plan=plan: world.engine.create_plan(plan))
        assert error.field == "plan"
        assert error.rule == "must be a Plan; build one with Plan.of(...)"


def test_create_plan_refuses_a_code_that_is_taken(world: World):
    cheaper = Plan.of(code="oro", name="Otro Oro", price="1", currency="CLP")
    error = world.refused(AlreadyExists, lambda: world.engine.create_plan(cheaper))
    assert (error.entity, error.entity_id) == ("plan", "oro")
    assert world.engine.plan("oro") == ORO


def test_deactivate_plan_refuses_an_unknown_code(world: World):
    error = world.refused(NotFound, lambda: world.engine.deactivate_plan("platino"))
    assert (error.entity, error.entity_id) == ("plan", "platino")


# -- subscribe ----------------------------------------------------------------------------------


def test_subscribe_refuses_an_unknown_plan_or_customer_or_a_taken_id(world: World):
    error = world.refused(NotFound, lambda: world.engine.subscribe("c1", "platino"))
    assert (error.entity, error.entity_id) == ("plan", "platino")
    error = world.refused(NotFound, lambda: world.engine.subscribe("c9", "oro"))
    assert (error.entity, error.entity_id) == ("customer", "c9")
    error = world.refused(
        AlreadyExists, lambda: world.engine.subscribe("c1", "prueba", subscription_id="s1")
    )
    assert (error.entity, error.entity_id) == ("subscription", "s1")


def test_subscribe_refuses_an_inactive_plan(world: World):
    world.engine.deactivate_plan("prueba")
    error = world.refused(PlanUnavailable, lambda: world.engine.subscribe("c1", "prueba"))
    assert error.field == "plan"
    assert error.value == "prueba"


def test_subscribe_refuses_a_naive_start_or_trial_end(world: World):
    naive = datetime(2026, 2, 15, 12)
    error = world.refused(NaiveDatetime, lambda: world.engine.subscribe("c1", "oro", start=naive))
    assert error.field == "start"
    error = world.refused(
        NaiveDatetime, lambda: world.engine.subscribe("c1", "oro", trial_end=naive)
    )
    assert error.field == "trial_end"


def test_subscribe_refuses_a_cycle_count_below_one_or_a_tax_that_is_not_a_rate(world: World):
    for cycles in (0, -1, True, "3"):
        error = world.refused(
            InvalidArgument,
            lambda cycles=cycles: world.engine.subscribe("c1", "oro", cycles=cycles),
        )
        assert error.field == "cycles"
        assert error.rule == "must be an integer >= 1"
    error = world.refused(InvalidArgument, lambda: world.engine.subscribe("c1", "oro", tax="19"))
    assert error.field == "tax"


def test_subscribe_refuses_a_customer_who_cannot_pay_a_paid_plan_now(world: World):
    world.engine.create_customer(customer_id="c3", timezone="America/Santiago")
    error = world.refused(InvalidArgument, lambda: world.engine.subscribe("c3", "oro"))
    assert error.field == "customer"
    assert error.rule == "needs a default payment method (or credit) to pay the first period now"
    assert error.value == "c3"


# -- change_plan, cancel, pause, resume ------------------------------------------------------


def test_change_plan_refuses_a_plan_it_cannot_move_to(world: World):
    world.engine.create_plan(PLATA)
    world.engine.deactivate_plan("plata")
    error = world.refused(NotFound, lambda: world.engine.change_plan("s1", "platino"))
    assert (error.entity, error.entity_id) == ("plan", "platino")
    other_interval = world.refused(
        PlanChangeNotAllowed, lambda: world.engine.change_plan("s1", "anual")
    )
    assert other_interval.field == "plan"
    assert other_interval.rule == "must bill every 1 month like oro"
    assert other_interval.value == "anual"
    inactive = world.refused(PlanUnavailable, lambda: world.engine.change_plan("s1", "plata"))
    assert (inactive.field, inactive.value) == ("plan", "plata")


def test_change_plan_refuses_an_unknown_behavior(world: World):
    world.engine.create_plan(PLATA)
    error = world.refused(
        InvalidArgument,
        lambda: world.engine.change_plan("s1", "plata", behavior="prorate_later"),
    )
    assert error.field == "behavior"
    assert error.rule == "must be one of carry_debt, invoice_now, none"


def test_commands_on_an_unknown_subscription_are_refused(world: World):
    commands: list[Callable[[], object]] = [
        lambda: world.engine.change_plan("s9", "oro"),
        lambda: world.engine.cancel("s9"),
        lambda: world.engine.pause("s9"),
        lambda: world.engine.resume("s9"),
    ]
    for command in commands:
        error = world.refused(NotFound, command)
        assert (error.entity, error.entity_id) == ("subscription", "s9")


def test_cancel_refuses_a_subscription_that_is_already_canceled(world: World):
    error = world.refused(InvalidArgument, lambda: world.engine.cancel("s1", at_period_end="no"))
    assert error.field == "at_period_end"
    world.engine.cancel("s1", at_period_end=False)
    for at_period_end in (False, True):
        error = world.refused(
            IllegalTransition,
            lambda at_period_end=at_period_end: world.engine.cancel(
                "s1", at_period_end=at_period_end
            ),
        )
        assert (error.entity, error.entity_id) == ("subscription", "s1")
        assert (error.status, error.action) == ("canceled", "cancel")


def test_pause_refuses_a_subscription_that_is_trialing_or_canceling(world: World):
    trial = world.engine.subscribe("c1", "prueba", subscription_id="t1")
    assert trial.status is SubscriptionStatus.TRIALING
    error = world.refused(IllegalTransition, lambda: world.engine.pause("t1"))
    assert (error.entity_id, error.status) == ("t1", "trialing")
    world.engine.cancel("s1")
    error = world.refused(IllegalTransition, lambda: world.engine.pause("s1"))
    assert (error.entity_id, error.status) == ("s1", "active")


def test_resume_refuses_a_subscription_that_is_not_paused(world: World):
    error = world.refused(IllegalTransition, lambda: world.engine.resume("s1"))
    assert (error.entity_id, error.status, error.action) == ("s1", "active", "resume")


def test_pause_refuses_a_resume_at_that_is_not_after_now_or_is_naive(world: World):
    for resume_at in (START - timedelta(days=1), START):
        error = world.refused(
            InvalidArgument,
            lambda resume_at=resume_at: world.engine.pause("s1", resume_at=resume_at),
        )
        assert error.field == "resume_at"
        assert error.rule == "must be after the pause"
    error = world.refused(
        NaiveDatetime, lambda: world.engine.pause("s1", resume_at=datetime(2026, 3, 1, 12))
    )
    assert error.field == "resume_at"


# -- refunds --------------------------------------------------------------------------------


def _paid(world: World) -> str:
    [payment] = world.engine.payments(subscription_id="s1")
    assert payment.status is PaymentStatus.SUCCEEDED
    assert payment.amount == Money.of("10000", "CLP")
    return payment.id


def test_refund_refuses_an_amount_it_cannot_give_back(world: World):
    payment_id = _paid(world)
    refusals = [
        (Money.of("10001", "CLP"), "must be at most the 10000 CLP not yet refunded"),
        (Money.of("10", "USD"), "must be in CLP"),
        (Money.zero("CLP"), "must be > 0 (nothing is left to refund)"),
        (Money.of("-1", "CLP"), "must be > 0 (nothing is left to refund)"),
    ]
    for amount, rule in refusals:
        error = world.refused(
            InvalidArgument, lambda amount=amount: world.engine.refund(payment_id, amount=amount)
        )
        assert (error.field, error.rule) == ("amount", rule)
    world.engine.refund(payment_id, amount=Money.of("6000", "CLP"))
    error = world.refused(
        InvalidArgument, lambda: world.engine.refund(payment_id, amount=Money.of("4001", "CLP"))
    )
    assert (error.field, error.rule) == ("amount", "must be at most the 4000 CLP not yet refunded")


def test_refund_refuses_a_failed_or_unknown_payment(world: World):
    world.engine.subscribe("c2", "oro", subscription_id="s2")
    [failed] = world.engine.payments(subscription_id="s2")
    assert failed.status is PaymentStatus.FAILED
    error = world.refused(IllegalTransition, lambda: world.engine.refund(failed.id))
    assert (error.entity, error.entity_id, error.status) == ("payment", failed.id, "failed")
    missing = world.refused(NotFound, lambda: world.engine.refund("pay_nada"))
    assert (missing.entity, missing.entity_id) == ("payment", "pay_nada")


def test_refund_refuses_a_payment_whose_gateway_is_no_longer_configured(world: World):
    payment_id = _paid(world)
    without_gateways = open_engine(world.billing.url, clock=world.billing.clock)
    try:
        error = world.refused(InvalidArgument, lambda: without_gateways.refund(payment_id))
    finally:
        without_gateways.close()
    assert (error.field, error.rule, error.value) == (
        "gateway",
        "must be a configured gateway (none)",
        "fake",
    )


def test_refund_refuses_an_amount_that_is_not_money(world: World):
    payment_id = _paid(world)
    for amount in (100, Decimal("100"), "100"):
        error = world.refused(
            InvalidArgument, lambda amount=amount: world.engine.refund(payment_id, amount=amount)
        )
        assert error.field == "amount"


# -- the billing run and events ----------------------------------------------------------------


def test_run_due_refuses_a_now_later_than_the_clock_or_naive(world: World):
    error = world.refused(
        InvalidArgument, lambda: world.engine.run_due(START + timedelta(seconds=1))
    )
    assert (error.field, error.rule) == ("now", "must not be later than the engine's clock")
    naive = world.refused(NaiveDatetime, lambda: world.engine.run_due(datetime(2026, 1, 31, 12)))
    assert naive.field == "now"


def test_events_refuses_a_negative_after_or_a_limit_below_one(world: World):
    error = world.refused(InvalidArgument, lambda: world.engine.events(after=-1))
    assert (error.field, error.rule) == ("after", "must be an integer >= 0")
    error = world.refused(InvalidArgument, lambda: world.engine.events(limit=0))
    assert (error.field, error.rule) == ("limit", "must be an integer >= 1")


def test_acknowledge_refuses_anything_but_a_collection_of_event_ids(world: World):
    # A bare id is a str, itself a sequence of one-letter "ids": it must not silently count 0.
    first = world.engine.events()[0]
    for wrong in (first.id, None):
        error = world.refused(InvalidArgument, lambda wrong=wrong: world.engine.acknowledge(wrong))
        assert error.field == "event_ids"


# -- idempotency keys -----------------------------------------------------------------------


def test_every_state_changing_method_refuses_a_blank_overlong_or_non_string_key(world: World):
    engine = world.engine
    engine.create_plan(PLATA)
    engine.subscribe("c1", "oro", subscription_id="p1")
    engine.pause("p1")
    payment_id = _paid(world)
    calls: dict[str, Callable[[object], object]] = {
        "create_customer": lambda key: engine.create_customer(
            customer_id="c9", timezone="UTC", idempotency_key=key
        ),
        "add_payment_method": lambda key: engine.add_payment_method(
            "c1", gateway="fake", token="tok_new", idempotency_key=key
        ),
        "replace_payment_method": lambda key: engine.replace_payment_method(
            "c1", gateway="fake", token="tok_new", idempotency_key=key
        ),
        "grant_credit": lambda key: engine.grant_credit(
            "c1", Money.of("100", "CLP"), idempotency_key=key
        ),
        "create_plan": lambda key: engine.create_plan(
            Plan.of(code="bronce", name="Bronce", price="1000", currency="CLP"),
            idempotency_key=key,
        ),
        "deactivate_plan": lambda key: engine.deactivate_plan("plata", idempotency_key=key),
        "subscribe": lambda key: engine.subscribe("c1", "oro", idempotency_key=key),
        "change_plan": lambda key: engine.change_plan("s1", "plata", idempotency_key=key),
        "cancel": lambda key: engine.cancel("s1", idempotency_key=key),
        "pause": lambda key: engine.pause("s1", idempotency_key=key),
        "resume": lambda key: engine.resume("p1", idempotency_key=key),
        "refund": lambda key: engine.refund(payment_id, idempotency_key=key),
    }
    for operation, call in calls.items():
        for key in ("", "   ", "k" * 256, 42):
            error = world.refused(InvalidArgument, lambda call=call, key=key: call(key))
            assert error.field == "idempotency_key", operation
            assert error.rule == "must be a non-empty string of at most 255 characters"


def test_a_key_of_exactly_255_characters_is_accepted(world: World):
    key = "k" * 255
    balance = world.engine.grant_credit("c1", Money.of("100", "CLP"), idempotency_key=key)
    assert world.engine.grant_credit("c1", Money.of("100", "CLP"), idempotency_key=key) == balance
    assert world.engine.credit_balance("c1", "CLP").amount == Money.of("100", "CLP")
