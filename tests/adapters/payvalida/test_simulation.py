"""The Payvalida simulation: scripted payers on the fake, the adapter in front."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from adapters.payvalida.simulation import PayvalidaSimulation, payer_email, simulation
from billing.domain.errors import GatewayError, InvalidArgument
from billing.domain.money import Money
from billing.domain.payments import ErrorCode, PaymentStatus
from billing.ports import AttachRequest, ChargeRequest, PaymentGateway, SyncRequest
from billing.testing import Behavior

AT = datetime(2026, 3, 1, 15, tzinfo=UTC)
AMOUNT = Money.of("39900", "COP")


class Clock:
    def __init__(self) -> None:
        self.now = AT

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def sim(clock: Clock) -> Iterator[PayvalidaSimulation]:
    made = simulation(loopback=False, clock=clock)
    yield made
    made.close()


def bill(
    gateway: PaymentGateway, token: str, key: str, customer: str
) -> tuple[ChargeRequest, SyncRequest]:
    method = gateway.attach_payment_method(
        AttachRequest(customer_id=customer, customer_reference=None, token=token)
    )
    request = ChargeRequest(
        idempotency_key=key,
        amount=AMOUNT,
        customer_id=customer,
        payment_method=method.reference,
        description="Suscripcion",
        at=AT,
    )
    return request, SyncRequest(
        idempotency_key=key, reference=None, amount=AMOUNT, customer_id=customer, at=AT
    )


@pytest.mark.parametrize("behavior", [Behavior.APPROVE, Behavior.PAY_BY_LINK])
def test_prompt_payers_pay_each_link(sim: PayvalidaSimulation, behavior: Behavior) -> None:
    token = sim.card_token("cus_A", behavior)
    assert token == payer_email("cus_A")
    request, status = bill(sim.gateway, token, "inv-1", "cus_A")
    first = sim.gateway.charge(request)
    assert first.status is PaymentStatus.REQUIRES_ACTION
    settled = sim.gateway.sync(status)
    assert settled is not None
    assert settled.status is PaymentStatus.SUCCEEDED
    assert sim.charges_taken("cus_A") == 1
    facts = sim.gateway.parse_notification(sim.notification("cus_A"))
    assert facts.verified
    assert facts.charge_reference == first.reference
    with pytest.raises(GatewayError):
        sim.gateway.parse_notification(sim.forged_notification("cus_A"))


@pytest.mark.parametrize(
    "behavior", [Behavior.NEVER_PAY, Behavior.LINK_EXPIRES, Behavior.DECLINE_SOFT]
)
def test_links_expire_unpaid(sim: PayvalidaSimulation, clock: Clock, behavior: Behavior) -> None:
    request, status = bill(sim.gateway, sim.card_token("cus_B", behavior), "inv-2", "cus_B")
    assert sim.gateway.charge(request).status is PaymentStatus.REQUIRES_ACTION
    clock.now = AT + timedelta(days=8)
    result = sim.gateway.sync(status)
    assert result is not None
    assert result.error is ErrorCode.PAYER_ABANDONED
    assert sim.charges_taken("cus_B") == 0


def test_late_payers_pay_after_the_expiry(sim: PayvalidaSimulation, clock: Clock) -> None:
    request, status = bill(sim.gateway, sim.card_token("cus_C", Behavior.PAY_LATE), "k", "cus_C")
    sim.gateway.charge(request)
    pending = sim.gateway.sync(status)
    assert pending is not None
    assert pending.status is PaymentStatus.REQUIRES_ACTION
    clock.now = AT + timedelta(days=8)
    late = sim.gateway.sync(status)
    assert late is not None
    assert late.status is PaymentStatus.SUCCEEDED


def test_timeouts_lose_the_answer_and_sync_finds_the_payment(sim: PayvalidaSimulation) -> None:
    request, status = bill(sim.gateway, sim.card_token("cus_D", Behavior.TIMEOUT), "k", "cus_D")
    assert sim.gateway.charge(request).status is PaymentStatus.UNKNOWN
    found = sim.gateway.sync(status)
    assert found is not None
    assert found.status is PaymentStatus.SUCCEEDED
    assert sim.charges_taken("cus_D") == 1


def test_hard_declines_cannot_be_scripted(sim: PayvalidaSimulation) -> None:
    with pytest.raises(InvalidArgument):
        sim.card_token("cus_E", Behavior.DECLINE_HARD)
    with pytest.raises(InvalidArgument):
        sim.fill_enrollment("cus_E", "https://x", Behavior.APPROVE)
    with pytest.raises(InvalidArgument):
        sim.lose_next_refund_answer()
    with pytest.raises(LookupError):
        sim.notification("cus_nobody")


def test_bad_credentials_and_currency(sim: PayvalidaSimulation) -> None:
    assert sim.currency == "COP"
    request, _ = bill(sim.gateway, sim.card_token("cus_F", Behavior.APPROVE), "k", "cus_F")
    result = sim.with_bad_credentials().charge(request)
    assert result.error is ErrorCode.AUTHENTICATION_ERROR


def test_over_loopback(clock: Clock) -> None:
    sim = simulation(loopback=True, clock=clock)
    try:
        request, status = bill(sim.gateway, sim.card_token("c G", Behavior.APPROVE), "k", "c G")
        assert sim.gateway.charge(request).status is PaymentStatus.REQUIRES_ACTION
        found = sim.gateway.sync(status)
        assert found is not None
        assert found.status is PaymentStatus.SUCCEEDED
    finally:
        sim.close()
