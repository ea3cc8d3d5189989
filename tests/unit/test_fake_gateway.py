"""The fake gateway: scripted behaviors, idempotency, time from requests, refunds, thread safety."""

from __future__ import annotations

import random
import sys
import threading
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import pytest

from billing.domain.errors import CurrencyMismatch, InvalidArgument
from billing.domain.money import Money
from billing.domain.payments import DeclineKind, PaymentResult, PaymentStatus
from billing.ports import (
    ChargeRequest,
    PaymentGateway,
    RefundRequest,
    RefundResult,
    RefundStatus,
    SyncRequest,
)
from billing.testing import Behavior, FakeGateway

AT = datetime(2026, 2, 1, 12, tzinfo=UTC)
AMOUNT = Money.of("15000", "CLP")


def charge(
    gateway: FakeGateway,
    key: str,
    customer: str = "cus_1",
    *,
    amount: Money = AMOUNT,
    at: datetime = AT,
) -> PaymentResult:
    return gateway.charge(
        ChargeRequest(
            idempotency_key=key,
            amount=amount,
            customer_id=customer,
            payment_method="pm_fake",
            description="Pro plan, February",
            at=at,
        )
    )


def sync(
    gateway: FakeGateway, key: str, customer: str = "cus_1", *, at: datetime = AT
) -> PaymentResult | None:
    return gateway.sync(
        SyncRequest(idempotency_key=key, reference=None, amount=AMOUNT, customer_id=customer, at=at)
    )


def synced_status(gateway: FakeGateway, key: str, *, at: datetime) -> PaymentStatus:
    result = sync(gateway, key, at=at)
    assert result is not None
    return result.status


def refund(
    gateway: FakeGateway, key: str, reference: str | None, amount: Money, *, at: datetime = AT
) -> RefundResult:
    assert reference is not None
    return gateway.refund(
        RefundRequest(idempotency_key=key, reference=reference, amount=amount, at=at)
    )


def scripted(
    behavior: Behavior | str | Sequence[Behavior | str],
    pending_for: timedelta = timedelta(days=2),
) -> FakeGateway:
    gateway = FakeGateway(pending_for=pending_for)
    gateway.script("cus_1", behavior)
    return gateway


def test_it_is_a_payment_gateway_named_fake_unless_told_otherwise():
    gateway: PaymentGateway = FakeGateway()
    assert gateway.name == "fake"
    assert FakeGateway(name="sandbox").name == "sandbox"


# -- one test per behavior -----------------------------------------------------------------------


def test_approve_succeeds_with_a_numbered_reference():
    gateway = FakeGateway()
    assert charge(gateway, "in_1-1") == PaymentResult.succeeded(reference="fake_ch_1")
    assert charge(gateway, "in_2-1").reference == "fake_ch_2"
    assert [taken.reference for taken in gateway.charges_taken()] == ["fake_ch_1", "fake_ch_2"]


def test_decline_soft_is_a_soft_failure_for_insufficient_funds():
    gateway = scripted(Behavior.DECLINE_SOFT)
    result = charge(gateway, "in_1-1")
    assert result.status is PaymentStatus.FAILED
    assert result.decline is DeclineKind.SOFT
    assert result.code == "insufficient_funds"
    assert gateway.charges_taken() == []
    assert gateway.total_charged("cus_1") is None


def test_decline_hard_is_a_hard_failure_for_a_stolen_card():
    gateway = scripted("decline_hard")
    result = charge(gateway, "in_1-1")
    assert result.status is PaymentStatus.FAILED
    assert result.decline is DeclineKind.HARD
    assert result.code == "stolen_card"
    assert gateway.charges_taken() == []


def test_timeout_takes_the_money_but_answers_unknown_and_sync_reconciles_it():
    gateway = scripted(Behavior.TIMEOUT)
    result = charge(gateway, "in_1-1")
    assert result.status is PaymentStatus.UNKNOWN
    assert result.reference is None
    [taken] = gateway.charges_taken("cus_1")
    assert (taken.idempotency_key, taken.amount, taken.behavior) == ("in_1-1", AMOUNT, "timeout")
    assert sync(gateway, "in_1-1") == PaymentResult.succeeded(reference=taken.reference)


def test_pay_late_is_pending_until_pending_for_has_passed_by_the_requests_clock():
    gateway = scripted(Behavior.PAY_LATE, pending_for=timedelta(days=3))
    first = charge(gateway, "in_1-1")
    assert first.status is PaymentStatus.PENDING
    assert first.reference == "fake_ch_1"
    due = AT + timedelta(days=3)
    assert synced_status(gateway, "in_1-1", at=due - timedelta(microseconds=1)) == "pending"
    assert gateway.charges_taken() == []
    assert sync(gateway, "in_1-1", at=due) == PaymentResult.succeeded(reference="fake_ch_1")
    assert gateway.total_charged("cus_1") == AMOUNT


def test_never_pay_expires_as_a_soft_decline_after_pending_for():
    gateway = scripted(Behavior.NEVER_PAY)  # pending_for defaults to two days
    assert charge(gateway, "in_1-1").status is PaymentStatus.PENDING
    still = sync(gateway, "in_1-1", at=AT + timedelta(days=2) - timedelta(seconds=1))
    assert still is not None
    assert still.status is PaymentStatus.PENDING
    expired = sync(gateway, "in_1-1", at=AT + timedelta(days=2))
    assert expired is not None
    assert expired.status is PaymentStatus.FAILED
    assert expired.decline is DeclineKind.SOFT
    assert expired.code == "expired"
    assert gateway.charges_taken() == []


def test_a_settled_charge_stays_settled_whatever_the_time_of_a_later_request():
    gateway = scripted(Behavior.PAY_LATE)
    charge(gateway, "in_1-1")
    assert synced_status(gateway, "in_1-1", at=AT + timedelta(days=5)) == "succeeded"
    assert synced_status(gateway, "in_1-1", at=AT) == "succeeded"


def test_the_default_behavior_applies_to_customers_never_scripted():
    gateway = FakeGateway(default=Behavior.DECLINE_SOFT)
    gateway.script("cus_good", Behavior.APPROVE)
    assert charge(gateway, "in_1-1", "cus_other").decline is DeclineKind.SOFT
    assert charge(gateway, "in_2-1", "cus_good").status is PaymentStatus.SUCCEEDED


# -- idempotency ---------------------------------------------------------------------------------


def test_a_repeated_key_charges_once_and_every_call_is_counted():
    gateway = FakeGateway()
    results = [charge(gateway, "in_1-1") for _ in range(3)]
    assert results == [PaymentResult.succeeded(reference="fake_ch_1")] * 3
    assert gateway.calls["in_1-1"] == 3
    assert len(gateway.charges_taken()) == 1
    assert gateway.total_charged() == AMOUNT


def test_a_repeated_timeout_key_answers_what_became_of_the_charge():
    gateway = scripted(Behavior.TIMEOUT)
    assert charge(gateway, "in_1-1").status is PaymentStatus.UNKNOWN
    assert charge(gateway, "in_1-1") == PaymentResult.succeeded(reference="fake_ch_1")
    assert len(gateway.charges_taken()) == 1


def test_a_repeated_pending_key_settles_with_the_repeats_time():
    gateway = scripted(Behavior.PAY_LATE)
    charge(gateway, "in_1-1")
    assert charge(gateway, "in_1-1", at=AT + timedelta(days=1)).status is PaymentStatus.PENDING
    assert charge(gateway, "in_1-1", at=AT + timedelta(days=2)).status is PaymentStatus.SUCCEEDED


def test_a_repeated_key_does_not_consume_a_scripted_behavior():
    gateway = scripted([Behavior.DECLINE_SOFT, Behavior.APPROVE])
    assert charge(gateway, "in_1-1").decline is DeclineKind.SOFT
    assert charge(gateway, "in_1-1").decline is DeclineKind.SOFT
    assert charge(gateway, "in_1-2").status is PaymentStatus.SUCCEEDED


def test_a_key_sent_again_for_another_amount_or_customer_is_refused():
    gateway = FakeGateway()
    charge(gateway, "in_1-1")
    with pytest.raises(InvalidArgument) as error:
        charge(gateway, "in_1-1", amount=Money.of("1", "CLP"))
    assert error.value.field == "idempotency_key"
    with pytest.raises(InvalidArgument):
        charge(gateway, "in_1-1", "cus_2")
    assert len(gateway.charges_taken()) == 1


def test_sync_of_a_key_never_charged_is_none():
    gateway = FakeGateway()
    assert sync(gateway, "in_1-1") is None
    assert gateway.calls["in_1-1"] == 0


def test_sync_of_a_decline_repeats_the_decline():
    gateway = scripted(Behavior.DECLINE_HARD)
    assert sync(gateway, "in_1-1") is None
    first = charge(gateway, "in_1-1")
    assert sync(gateway, "in_1-1") == first


# -- sequences -----------------------------------------------------------------------------------


def test_a_sequence_is_consumed_one_behavior_per_new_charge_and_its_last_one_repeats():
    gateway = scripted(["decline_soft", Behavior.TIMEOUT, "approve"])
    statuses = [charge(gateway, f"in_1-{n}").status for n in range(1, 6)]
    assert statuses == [
        PaymentStatus.FAILED,
        PaymentStatus.UNKNOWN,
        PaymentStatus.SUCCEEDED,
        PaymentStatus.SUCCEEDED,
        PaymentStatus.SUCCEEDED,
    ]
    assert [taken.behavior for taken in gateway.charges_taken()] == [
        "timeout",
        "approve",
        "approve",
        "approve",
    ]


def test_scripts_are_per_customer_and_a_new_script_replaces_the_old_one():
    gateway = FakeGateway()
    gateway.script("cus_1", [Behavior.DECLINE_SOFT, Behavior.DECLINE_HARD])
    gateway.script("cus_2", Behavior.DECLINE_HARD)
    assert charge(gateway, "a-1", "cus_1").decline is DeclineKind.SOFT
    assert charge(gateway, "b-1", "cus_2").decline is DeclineKind.HARD
    gateway.script("cus_1", Behavior.APPROVE)
    assert charge(gateway, "a-2", "cus_1").status is PaymentStatus.SUCCEEDED


# -- errors --------------------------------------------------------------------------------------


@pytest.mark.parametrize("behavior", ["explode", ["approve", "explode"], 3])
def test_an_unknown_behavior_is_refused_naming_the_field_and_the_allowed_values(behavior: object):
    with pytest.raises(InvalidArgument) as error:
        FakeGateway().script("cus_1", behavior)  # type: ignore[arg-type]
    assert error.value.field == "payment"
    assert "approve, decline_soft, decline_hard, timeout, pay_late, never_pay" in str(error.value)


def test_an_unknown_default_or_an_empty_sequence_is_refused():
    with pytest.raises(InvalidArgument) as error:
        FakeGateway(default="later")
    assert error.value.field == "payment"
    with pytest.raises(InvalidArgument) as error:
        FakeGateway().script("cus_1", [])
    assert error.value.field == "payment"


def test_a_negative_pending_for_or_a_naive_time_is_refused():
    with pytest.raises(InvalidArgument) as error:
        FakeGateway(pending_for=timedelta(days=-1))
    assert error.value.field == "pending_for"
    with pytest.raises(InvalidArgument) as error:
        charge(FakeGateway(), "in_1-1", at=datetime(2026, 2, 1))
    assert error.value.field == "at"


# -- refunds -------------------------------------------------------------------------------------


def test_a_full_refund_succeeds_with_a_numbered_reference():
    gateway = FakeGateway()
    reference = charge(gateway, "in_1-1").reference
    result = refund(gateway, "re_1", reference, AMOUNT)
    assert result == RefundResult(status=RefundStatus.SUCCEEDED, reference="fake_re_1")
    [taken] = gateway.charges_taken()
    assert taken.refunded == AMOUNT
    assert gateway.total_charged() == AMOUNT  # before refunds


def test_partial_refunds_succeed_until_the_charge_is_used_up_and_over_refunding_is_refused():
    gateway = FakeGateway()
    reference = charge(gateway, "in_1-1").reference
    assert refund(gateway, "re_1", reference, Money.of("5000", "CLP")).reference == "fake_re_1"
    assert refund(gateway, "re_2", reference, Money.of("9000", "CLP")).reference == "fake_re_2"
    over = refund(gateway, "re_3", reference, Money.of("1001", "CLP"))
    assert over.status is RefundStatus.FAILED
    assert over.code == "invalid_refund"
    assert over.message is not None
    assert "1000 CLP" in over.message
    assert refund(gateway, "re_4", reference, Money.of("1000", "CLP")).status is (
        RefundStatus.SUCCEEDED
    )
    assert gateway.charges_taken()[0].refunded == AMOUNT


def test_a_refund_of_more_than_the_charge_is_refused():
    gateway = FakeGateway()
    reference = charge(gateway, "in_1-1").reference
    result = refund(gateway, "re_1", reference, AMOUNT + Money.of("1", "CLP"))
    assert (result.status, result.code, result.reference) == (
        RefundStatus.FAILED,
        "invalid_refund",
        None,
    )
    assert gateway.charges_taken()[0].refunded == Money.zero("CLP")


def test_a_refund_of_an_unknown_reference_is_refused():
    result = refund(FakeGateway(), "re_1", "fake_ch_404", AMOUNT)
    assert result.status is RefundStatus.FAILED
    assert result.code == "invalid_refund"
    assert result.message is not None
    assert "fake_ch_404" in result.message


@pytest.mark.parametrize(
    "amount",
    [Money.zero("CLP"), Money.of("-1", "CLP"), Money.of("10", "MXN")],
    ids=["zero", "negative", "other-currency"],
)
def test_a_refund_that_is_not_positive_or_in_another_currency_is_refused(amount: Money):
    gateway = FakeGateway()
    reference = charge(gateway, "in_1-1").reference
    result = refund(gateway, "re_1", reference, amount)
    assert (result.status, result.code) == (RefundStatus.FAILED, "invalid_refund")


@pytest.mark.parametrize("behavior", [Behavior.DECLINE_SOFT, Behavior.PAY_LATE])
def test_only_a_succeeded_charge_can_be_refunded(behavior: Behavior):
    gateway = scripted(behavior)
    reference = charge(gateway, "in_1-1").reference
    assert refund(gateway, "re_1", reference, AMOUNT).status is RefundStatus.FAILED


def test_a_pay_late_charge_refunds_once_the_refunds_time_has_settled_it():
    gateway = scripted(Behavior.PAY_LATE)
    reference = charge(gateway, "in_1-1").reference
    result = refund(gateway, "re_1", reference, AMOUNT, at=AT + timedelta(days=2))
    assert result.status is RefundStatus.SUCCEEDED


def test_a_timeout_charge_can_be_refunded_before_anyone_syncs_it():
    gateway = scripted(Behavior.TIMEOUT)
    charge(gateway, "in_1-1")
    [taken] = gateway.charges_taken()
    assert refund(gateway, "re_1", taken.reference, AMOUNT).status is RefundStatus.SUCCEEDED


def test_a_repeated_refund_key_returns_the_first_answer_and_refunds_nothing_more():
    gateway = FakeGateway()
    reference = charge(gateway, "in_1-1").reference
    half = Money.of("7500", "CLP")
    first = refund(gateway, "re_1", reference, half)
    assert refund(gateway, "re_1", reference, half) == first
    assert gateway.charges_taken()[0].refunded == half
    assert refund(gateway, "re_2", reference, half).status is RefundStatus.SUCCEEDED


def test_a_repeated_refund_key_returns_even_a_refusal_unchanged():
    gateway = FakeGateway()
    refused = refund(gateway, "re_1", "fake_ch_1", AMOUNT)
    charge(gateway, "in_1-1")  # now fake_ch_1 exists
    assert refund(gateway, "re_1", "fake_ch_1", AMOUNT) == refused


def test_a_refund_key_sent_again_for_another_amount_is_refused():
    gateway = FakeGateway()
    reference = charge(gateway, "in_1-1").reference
    refund(gateway, "re_1", reference, Money.of("100", "CLP"))
    with pytest.raises(InvalidArgument) as error:
        refund(gateway, "re_1", reference, Money.of("200", "CLP"))
    assert error.value.field == "idempotency_key"


# -- the read API --------------------------------------------------------------------------------


def test_charges_taken_and_totals_filter_by_customer():
    gateway = FakeGateway()
    gateway.script("cus_2", Behavior.DECLINE_SOFT)
    charge(gateway, "a-1", "cus_1")
    charge(gateway, "a-2", "cus_1", at=AT + timedelta(days=31))
    charge(gateway, "b-1", "cus_2")
    taken = gateway.charges_taken("cus_1")
    assert [(t.idempotency_key, t.customer_id, t.at) for t in taken] == [
        ("a-1", "cus_1", AT),
        ("a-2", "cus_1", AT + timedelta(days=31)),
    ]
    assert gateway.total_charged("cus_1") == AMOUNT * 2
    assert gateway.total_charged("cus_2") is None
    assert gateway.charges_taken("cus_nobody") == []


def test_total_charged_refuses_to_add_currencies():
    gateway = FakeGateway()
    charge(gateway, "a-1")
    charge(gateway, "a-2", amount=Money.of("10", "MXN"))
    with pytest.raises(CurrencyMismatch):
        gateway.total_charged("cus_1")


def test_calls_is_a_copy_that_callers_cannot_corrupt():
    gateway = FakeGateway()
    charge(gateway, "in_1-1")
    gateway.calls["in_1-1"] += 10
    assert gateway.calls == {"in_1-1": 1}


# -- thread safety -------------------------------------------------------------------------------


@pytest.fixture
def busy_switching() -> Iterator[None]:
    """Switch threads far more often than usual, to shake out races."""
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    yield
    sys.setswitchinterval(interval)


@pytest.mark.usefixtures("busy_switching")
def test_concurrent_charges_take_every_key_exactly_once():
    gateway = FakeGateway()
    gateway.script("cus_late", [Behavior.TIMEOUT, Behavior.APPROVE])
    threads, per_thread = 8, 200
    start = threading.Barrier(threads)

    def work(thread: int) -> None:
        shared = list(range(per_thread))
        random.Random(thread).shuffle(shared)
        start.wait()
        for n in range(per_thread):
            charge(gateway, f"own-{thread}-{n}", f"cus_{thread}")
            charge(gateway, f"shared-{shared[n]}", "cus_late")

    with ThreadPoolExecutor(max_workers=threads) as pool:
        list(pool.map(work, range(threads)))

    taken = gateway.charges_taken()
    keys = [t.idempotency_key for t in taken]
    assert len(keys) == len(set(keys)) == threads * per_thread + per_thread
    # A key charged twice would have used up a reference number: they run 1..N without gaps.
    numbers = sorted(int(t.reference.removeprefix("fake_ch_")) for t in taken)
    assert numbers == list(range(1, len(keys) + 1))
    calls = gateway.calls
    assert all(calls[f"shared-{n}"] == threads for n in range(per_thread))
    assert all(calls[f"own-{t}-{n}"] == 1 for t in range(threads) for n in range(per_thread))
    assert sum(t.behavior is Behavior.TIMEOUT for t in taken) == 1
    assert gateway.total_charged() == AMOUNT * len(keys)


@pytest.mark.parametrize("before_refunding", [False, True], ids=["after", "before"])
def test_a_lost_refund_answer_raises_and_the_same_key_then_answers_truly(before_refunding: bool):
    gateway = FakeGateway()
    reference = charge(gateway, "in_1-1").reference
    gateway.lose_refund_answers(before_refunding=before_refunding)
    with pytest.raises(TimeoutError):
        refund(gateway, "re_1", reference, AMOUNT)
    assert gateway.refunds_made() == (0 if before_refunding else 1)
    again = refund(gateway, "re_1", reference, AMOUNT)
    assert (again.status, again.reference) == (RefundStatus.SUCCEEDED, "fake_re_1")
    assert gateway.refunds_made() == 1
    assert gateway.refund_calls["re_1"] == 2


def test_losing_refund_answers_needs_a_positive_count():
    with pytest.raises(InvalidArgument) as refused:
        FakeGateway().lose_refund_answers(0)
    assert refused.value.field == "count"
