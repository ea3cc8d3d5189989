"""The fake gateway's outcomes through the engine: approvals, declines and dunning, lost answers
reconciled without charging twice, late payments, refunds, and the payment attempts' keys."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy
from sqlalchemy import select

from billing.domain.catalog import Plan
from billing.domain.dunning import RetryPolicy
from billing.domain.errors import InvalidArgument
from billing.domain.invoices import InvoiceStatus
from billing.domain.money import Money
from billing.domain.payments import DeclineKind, PaymentStatus, RefundStatus
from billing.domain.subscriptions import SubscriptionStatus
from billing.store.tables import PaymentRow, RefundRow
from tests.integration.conftest import SCL, START, Billing

ORO = Plan.of(code="oro", name="Plan Oro", price="10000", currency="CLP")
SUAVE = Plan.of(
    code="suave",
    name="Plan Suave",
    price="10000",
    currency="CLP",
    retry=RetryPolicy.of([1, 2, 3], then="unpaid"),
)
PRUEBA = Plan.of(code="prueba", name="Plan Prueba", price="5000", currency="CLP", trial_days=14)
TEN_THOUSAND = Money.of("10000", "CLP")

# An unsettled attempt is checked 1, 2, 4, ... 2048 minutes after it was made (the wait doubles
# with its age), then once a day: the first check past the fake's 2 pending days is at 3488 min.
FIRST_CHECK_AFTER_TWO_DAYS = timedelta(minutes=2048 + 24 * 60)


def payment_keys(billing: Billing) -> list[tuple[str, int, str]]:
    """(invoice id, attempt number, idempotency key) of every stored payment attempt."""
    db = sqlalchemy.create_engine(billing.url)
    try:
        with db.connect() as connection:
            query = select(PaymentRow.invoice_id, PaymentRow.number, PaymentRow.idempotency_key)
            ordered = query.order_by(PaymentRow.created_at, PaymentRow.number)
            return [tuple(row) for row in connection.execute(ordered).all()]
    finally:
        db.dispose()


def test_an_approved_charge_pays_the_first_invoice_at_once(billing: Billing):
    billing.engine.create_plan(ORO)
    billing.customer("c1", payment="approve")
    subscription = billing.engine.subscribe("c1", "oro")
    assert subscription.status is SubscriptionStatus.ACTIVE
    [invoice] = billing.engine.invoices(subscription_id=subscription.id)
    assert invoice.status is InvoiceStatus.PAID
    assert invoice.paid_at == START
    [payment] = billing.engine.payments(subscription_id=subscription.id)
    assert payment.invoice_id == invoice.id
    assert (payment.number, payment.status, payment.amount) == (
        1,
        PaymentStatus.SUCCEEDED,
        TEN_THOUSAND,
    )
    assert (payment.gateway, payment.reference, payment.decline, payment.code) == (
        "fake",
        "fake_ch_1",
        None,
        None,
    )
    assert payment.created_at == START
    assert billing.fake.calls == Counter({f"{invoice.id}-1": 1})
    [taken] = billing.fake.charges_taken("c1")
    assert (taken.idempotency_key, taken.amount, taken.reference, taken.at) == (
        f"{invoice.id}-1",
        TEN_THOUSAND,
        "fake_ch_1",
        START,
    )


def test_a_soft_decline_is_retried_on_the_plans_schedule_until_the_subscription_is_unpaid(
    billing: Billing,
):
    billing.engine.create_plan(SUAVE)
    billing.customer("c1", payment="decline_soft")
    subscription = billing.engine.subscribe("c1", "suave")
    assert subscription.status is SubscriptionStatus.PAST_DUE
    assert subscription.dunning is not None
    assert subscription.dunning.retry_at == START + timedelta(days=1)

    billing.run_until(START + timedelta(days=5))
    assert billing.engine.subscription(subscription.id).status is SubscriptionStatus.PAST_DUE
    assert len(billing.engine.payments(subscription_id=subscription.id)) == 3

    billing.run_until(START + timedelta(days=20))
    after = billing.engine.subscription(subscription.id)
    assert after.status is SubscriptionStatus.UNPAID
    [invoice] = billing.engine.invoices(subscription_id=subscription.id)
    assert invoice.status is InvoiceStatus.OPEN
    payments = billing.engine.payments(subscription_id=subscription.id)
    # Attempt 1 at once, then the delays 1, 2 and 3 days after each failure.
    assert [p.created_at for p in payments] == [
        START,
        START + timedelta(days=1),
        START + timedelta(days=3),
        START + timedelta(days=6),
    ]
    assert [p.number for p in payments] == [1, 2, 3, 4]
    assert {(p.status, p.decline, p.code) for p in payments} == {
        (PaymentStatus.FAILED, DeclineKind.SOFT, "insufficient_funds")
    }
    assert billing.fake.calls == Counter({f"{invoice.id}-{n}": 1 for n in (1, 2, 3, 4)})
    assert billing.fake.charges_taken() == []


def test_a_hard_decline_stops_collecting_at_once(billing: Billing):
    billing.engine.create_plan(ORO)
    billing.customer("c1", payment="decline_hard")
    subscription = billing.engine.subscribe("c1", "oro")
    assert subscription.status is SubscriptionStatus.UNPAID
    billing.run_until(START + timedelta(days=40))
    [payment] = billing.engine.payments(subscription_id=subscription.id)
    assert (payment.status, payment.decline, payment.code) == (
        PaymentStatus.FAILED,
        DeclineKind.HARD,
        "stolen_card",
    )
    assert billing.engine.subscription(subscription.id).status is SubscriptionStatus.UNPAID
    assert billing.fake.calls == Counter({f"{payment.invoice_id}-1": 1})
    assert billing.fake.charges_taken() == []


def test_a_lost_answer_is_unknown_until_sync_finds_the_charge_and_nothing_is_charged_twice(
    billing: Billing,
):
    billing.engine.create_plan(ORO)
    billing.customer("c1", payment="timeout")
    subscription = billing.engine.subscribe("c1", "oro")
    [unknown] = billing.engine.payments(subscription_id=subscription.id)
    assert (unknown.status, unknown.code, unknown.reference) == (
        PaymentStatus.UNKNOWN,
        "timeout",
        None,
    )
    assert billing.engine.invoice(unknown.invoice_id).status is InvoiceStatus.OPEN
    billing.engine.run_due()  # the first check is a minute later: nothing is asked yet
    assert billing.engine.payments(subscription_id=subscription.id) == [unknown]

    billing.run_until(START + timedelta(minutes=1))
    [synced] = billing.engine.payments(subscription_id=subscription.id)
    assert (synced.id, synced.status, synced.reference) == (
        unknown.id,
        PaymentStatus.SUCCEEDED,
        "fake_ch_1",
    )
    assert synced.updated_at == START + timedelta(minutes=1)
    assert billing.engine.invoice(unknown.invoice_id).status is InvoiceStatus.PAID

    billing.run_until(datetime(2026, 2, 28, 12, 1, tzinfo=SCL))  # the renewal times out too
    payments = billing.engine.payments(subscription_id=subscription.id)
    keys = [f"{p.invoice_id}-{p.number}" for p in payments]
    assert [p.status for p in payments] == [PaymentStatus.SUCCEEDED] * 2
    assert billing.fake.calls == Counter(dict.fromkeys(keys, 1))
    assert [t.idempotency_key for t in billing.fake.charges_taken()] == keys


def test_a_late_payment_is_pending_and_settles_when_a_check_after_two_days_finds_it_paid(
    billing: Billing,
):
    billing.engine.create_plan(ORO)
    billing.customer("c1", payment="pay_late")
    subscription = billing.engine.subscribe("c1", "oro")
    assert subscription.status is SubscriptionStatus.ACTIVE
    [pending] = billing.engine.payments(subscription_id=subscription.id)
    assert pending.status is PaymentStatus.PENDING
    assert billing.fake.charges_taken() == []

    billing.run_until(START + timedelta(days=2))
    [still] = billing.engine.payments(subscription_id=subscription.id)
    assert still.status is PaymentStatus.PENDING
    assert billing.engine.invoice(pending.invoice_id).status is InvoiceStatus.OPEN

    billing.run_until(START + timedelta(days=3))
    [paid] = billing.engine.payments(subscription_id=subscription.id)
    assert (paid.status, paid.reference) == (PaymentStatus.SUCCEEDED, "fake_ch_1")
    assert paid.updated_at == START + FIRST_CHECK_AFTER_TWO_DAYS
    invoice = billing.engine.invoice(pending.invoice_id)
    assert (invoice.status, invoice.paid_at) == (
        InvoiceStatus.PAID,
        START + FIRST_CHECK_AFTER_TWO_DAYS,
    )
    assert billing.fake.calls == Counter({f"{pending.invoice_id}-1": 1})
    assert len(billing.fake.charges_taken()) == 1


def test_a_payment_never_completed_fails_as_expired_after_two_days_and_starts_dunning(
    billing: Billing,
):
    billing.engine.create_plan(ORO)
    billing.customer("c1", payment="never_pay")
    subscription = billing.engine.subscribe("c1", "oro")
    [pending] = billing.engine.payments(subscription_id=subscription.id)
    assert pending.status is PaymentStatus.PENDING

    billing.run_until(START + timedelta(days=3))
    [expired] = billing.engine.payments(subscription_id=subscription.id)
    failed_at = START + FIRST_CHECK_AFTER_TWO_DAYS
    assert (expired.status, expired.decline, expired.code, expired.updated_at) == (
        PaymentStatus.FAILED,
        DeclineKind.SOFT,
        "expired",
        failed_at,
    )
    after = billing.engine.subscription(subscription.id)
    assert after.status is SubscriptionStatus.PAST_DUE
    assert after.dunning is not None
    assert (after.dunning.invoice_id, after.dunning.failed_attempts, after.dunning.retry_at) == (
        pending.invoice_id,
        1,
        failed_at + timedelta(days=8),  # the plan's default schedule: Kill Bill's 8 days
    )
    assert billing.engine.invoice(pending.invoice_id).status is InvoiceStatus.OPEN
    assert billing.fake.charges_taken() == []


def test_a_trial_without_payment_method_fails_its_first_charge_without_calling_the_gateway(
    billing: Billing,
):
    billing.engine.create_plan(PRUEBA)
    billing.engine.create_customer(customer_id="c1", timezone="America/Santiago")
    subscription = billing.engine.subscribe("c1", "prueba")
    assert subscription.status is SubscriptionStatus.TRIALING
    assert subscription.trial_end == START + timedelta(days=14)
    assert billing.engine.payments(subscription_id=subscription.id) == []

    billing.run_until(START + timedelta(days=14))
    [payment] = billing.engine.payments(subscription_id=subscription.id)
    assert (payment.status, payment.decline, payment.code, payment.gateway) == (
        PaymentStatus.FAILED,
        DeclineKind.SOFT,
        "no_payment_method",
        None,
    )
    assert payment.created_at == START + timedelta(days=14)
    assert payment.amount == Money.of("5000", "CLP")
    assert billing.engine.subscription(subscription.id).status is SubscriptionStatus.PAST_DUE
    assert billing.fake.calls == Counter()


def test_a_payment_is_refunded_in_part_then_in_full(billing: Billing):
    billing.engine.create_plan(ORO)
    billing.customer("c1")
    subscription = billing.engine.subscribe("c1", "oro")
    [payment] = billing.engine.payments(subscription_id=subscription.id)

    partial = billing.engine.refund(payment.id, amount=Money.of("3000", "CLP"))
    assert (partial.payment_id, partial.invoice_id) == (payment.id, payment.invoice_id)
    assert (partial.status, partial.amount, partial.reference, partial.code) == (
        RefundStatus.SUCCEEDED,
        Money.of("3000", "CLP"),
        "fake_re_1",
        None,
    )
    rest = billing.engine.refund(payment.id)
    assert (rest.status, rest.amount, rest.reference) == (
        RefundStatus.SUCCEEDED,
        Money.of("7000", "CLP"),
        "fake_re_2",
    )
    [taken] = billing.fake.charges_taken("c1")
    assert taken.refunded == TEN_THOUSAND
    assert billing.engine.invoice(payment.invoice_id).status is InvoiceStatus.PAID

    refunded = [e for e in billing.engine.events() if e.name == "payment.refunded"]
    assert [e.payload for e in refunded] == [
        {
            "at": START.astimezone(UTC).isoformat(),
            "refund_id": refund.id,
            "payment_id": payment.id,
            "invoice_id": payment.invoice_id,
            "subscription_id": payment.subscription_id,
            "customer_id": "c1",
            "amount": {"minor": refund.amount.minor, "currency": "CLP"},
        }
        for refund in (partial, rest)
    ]
    db = sqlalchemy.create_engine(billing.url)
    with db.connect() as connection:
        keys = connection.execute(
            select(RefundRow.idempotency_key).order_by(RefundRow.created_at, RefundRow.id)
        ).scalars()
        assert sorted(keys) == [f"{payment.invoice_id}-1-refund-{n}" for n in (1, 2)]
    db.dispose()


def test_payments_lists_failed_attempts_too_in_the_order_they_were_made(billing: Billing):
    billing.engine.create_plan(ORO)
    billing.customer("c1")
    billing.fake.script("c1", ["decline_soft", "approve"])
    billing.customer("c2", payment="decline_hard")
    first = billing.engine.subscribe("c1", "oro")
    second = billing.engine.subscribe("c2", "oro")
    billing.run_until(START + timedelta(days=8))

    mine = billing.engine.payments(customer_id="c1")
    assert [(p.number, p.status, p.code) for p in mine] == [
        (1, PaymentStatus.FAILED, "insufficient_funds"),
        (2, PaymentStatus.SUCCEEDED, None),
    ]
    assert [p.created_at for p in mine] == [START, START + timedelta(days=8)]
    assert billing.engine.payments(subscription_id=first.id) == mine
    assert billing.engine.payments(invoice_id=mine[0].invoice_id) == mine
    assert billing.engine.subscription(first.id).status is SubscriptionStatus.ACTIVE
    [theirs] = billing.engine.payments(subscription_id=second.id)
    assert theirs.status is PaymentStatus.FAILED
    assert [p.id for p in billing.engine.payments()] == [mine[0].id, theirs.id, mine[1].id]


def test_payment_idempotency_keys_are_the_invoice_and_attempt_number_and_unique(
    billing: Billing,
):
    billing.engine.create_plan(SUAVE)
    billing.customer("c1")
    billing.customer("c2", payment="decline_soft")
    billing.engine.subscribe("c1", "suave")
    billing.engine.subscribe("c2", "suave")
    billing.run_until(datetime(2026, 4, 30, 12, tzinfo=SCL))

    stored = payment_keys(billing)
    assert len(stored) == 4 + 4  # c1: four monthly invoices; c2: one invoice, four attempts
    assert [key for _, _, key in stored] == [f"{inv}-{n}" for inv, n, _ in stored]
    assert len({key for _, _, key in stored}) == len(stored)
    assert billing.fake.calls == Counter({key: 1 for _, _, key in stored})
    by_invoice: dict[str, list[int]] = {}
    for invoice_id, number, _ in stored:
        by_invoice.setdefault(invoice_id, []).append(number)
    assert sorted(by_invoice.values()) == [[1], [1], [1], [1], [1, 2, 3, 4]]


def _refunded_events(billing: Billing) -> list[str]:
    return [e.payload["refund_id"] for e in billing.engine.events() if e.name == "payment.refunded"]


def test_a_refund_whose_answer_was_lost_is_reconciled_into_one_refund(billing: Billing):
    billing.engine.create_plan(ORO)
    billing.customer("c1")
    [payment] = billing.engine.payments(subscription_id=billing.engine.subscribe("c1", "oro").id)
    billing.fake.lose_refund_answers()

    lost = billing.engine.refund(payment.id)
    assert (lost.status, lost.reference) == (RefundStatus.UNKNOWN, None)
    assert billing.fake.refunds_made() == 1, "the money went back; only the answer was lost"
    assert _refunded_events(billing) == [], "nothing is announced before the gateway says so"
    key = f"{payment.invoice_id}-1-refund-1"

    # not asked again while the first call could still be under way
    assert billing.engine.reconcile().refund_checks == 0
    billing.clock.set(START + timedelta(minutes=2))
    assert billing.engine.reconcile().refund_checks == 1

    [settled] = billing.engine.refunds(payment.id)
    assert (settled.id, settled.status, settled.reference) == (
        lost.id,
        RefundStatus.SUCCEEDED,
        "fake_re_1",
    )
    assert billing.fake.refund_calls == Counter({key: 2})
    assert billing.fake.refunds_made() == 1
    assert _refunded_events(billing) == [lost.id]
    billing.clock.set(START + timedelta(days=3))
    assert billing.engine.reconcile().refund_checks == 0, "a settled refund is never asked again"


def test_refunds_checked_together_are_settled_in_the_order_they_were_asked(billing: Billing):
    billing.engine.create_plan(ORO)
    payments = []
    for n in range(6):
        billing.customer(f"c{n}")
        subscription = billing.engine.subscribe(f"c{n}", "oro")
        payments.extend(billing.engine.payments(subscription_id=subscription.id))
    billing.fake.lose_refund_answers(len(payments))
    asked = []
    for n, payment in enumerate(payments):  # one a second: their ids are random
        billing.clock.set(START + timedelta(seconds=n))
        asked.append(billing.engine.refund(payment.id).id)

    billing.clock.set(START + timedelta(minutes=5))
    assert billing.engine.reconcile().refund_checks == len(asked)
    assert _refunded_events(billing) == asked, "a replay of one history records them alike"


def test_a_refund_request_that_never_arrived_is_sent_again_with_its_key(billing: Billing):
    billing.engine.create_plan(ORO)
    billing.customer("c1")
    [payment] = billing.engine.payments(subscription_id=billing.engine.subscribe("c1", "oro").id)
    billing.fake.lose_refund_answers(2, before_refunding=True)

    lost = billing.engine.refund(payment.id, amount=Money.of("4000", "CLP"))
    assert lost.status is RefundStatus.UNKNOWN
    with pytest.raises(InvalidArgument) as refused:
        billing.engine.refund(payment.id, amount=Money.of("7000", "CLP"))
    assert refused.value.field == "amount", "an unknown refund counts until it is settled"

    billing.clock.set(START + timedelta(minutes=2))
    billing.engine.reconcile()  # the second lost request: still unknown, asked later again
    assert billing.engine.refunds(payment.id)[0].status is RefundStatus.UNKNOWN
    assert billing.engine.reconcile().refund_checks == 0, "backs off before asking again"
    billing.clock.set(START + timedelta(minutes=5))
    assert billing.engine.reconcile().refund_checks == 1

    [settled] = billing.engine.refunds(payment.id)
    assert (settled.status, settled.amount) == (RefundStatus.SUCCEEDED, Money.of("4000", "CLP"))
    assert billing.fake.refunds_made() == 1
    [taken] = billing.fake.charges_taken("c1")
    assert taken.refunded == Money.of("4000", "CLP")
    assert _refunded_events(billing) == [lost.id]
