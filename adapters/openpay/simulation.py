"""Openpay for scenarios and simulations: :class:`OpenpayGateway` against a :class:`FakeOpenpay`.

The ``billing.simulations`` entry point. Cards are stored as a real customer stores them: a
token is made through the fake's ``/tokens`` (as openpay.js does in the browser), and the engine
attaches it. How each customer's charges then go follows a standing rule of the fake on the
customer's ``external_id`` (the engine's customer id, which the adapter registers), one per
:class:`~billing.testing.Behavior`.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import ExitStack
from datetime import datetime

import httpx

from adapters.openpay.fake import (
    DEFAULT_MERCHANT_ID,
    DEFAULT_PRIVATE_KEY,
    MEXICO,
    STOLEN_CARD,
    FakeOpenpay,
)
from adapters.openpay.gateway import SANDBOX_URL, OpenpayGateway
from billing.domain.errors import InvalidArgument
from billing.ports import Notification
from billing.testing import Behavior
from billing.testing.asgi import InProcessTransport, serve

__all__ = ["CARDS", "OpenpaySimulation", "simulation"]

CARDS: dict[Behavior, str] = {
    Behavior.APPROVE: "4111111111111111",
    Behavior.DECLINE_SOFT: "4444444444444448",  # 3003 insufficient funds, soft
    Behavior.DECLINE_HARD: STOLEN_CARD,  # 3004 stolen, hard
    Behavior.TIMEOUT: "4111111111111111",  # approved, its answers lost (by the rule)
}
"""The test card each behavior's token is made from. ``pay_late`` and ``never_pay`` have none:
Openpay's card charges settle at once."""


class OpenpaySimulation:
    """An Openpay adapter on its own fake, with each engine customer's charges scripted."""

    currency = "MXN"

    def __init__(
        self, *, loopback: bool = True, clock: Callable[[], datetime] | None = None
    ) -> None:
        now = None if clock is None else (lambda: clock().astimezone(MEXICO))
        self.fake = FakeOpenpay(now=now)
        self._loopback = loopback
        self._stack = ExitStack()
        self._url = self._stack.enter_context(serve(self.fake.app)) if loopback else SANDBOX_URL
        self._browser = self._stack.enter_context(
            httpx.Client(
                base_url=self._url,
                auth=(DEFAULT_PRIVATE_KEY, ""),
                transport=self._transport(),
                timeout=10.0,
            )
        )
        self._gateway = self._new_gateway(DEFAULT_PRIVATE_KEY)

    def _transport(self) -> httpx.BaseTransport | None:
        return None if self._loopback else InProcessTransport(self.fake.app)

    def _new_gateway(self, key: str) -> OpenpayGateway:
        gateway = OpenpayGateway(
            DEFAULT_MERCHANT_ID, key, base_url=self._url, transport=self._transport(), timeout=10
        )
        self._stack.callback(gateway.close)
        return gateway

    @property
    def gateway(self) -> OpenpayGateway:
        """The adapter the engine bills through."""
        return self._gateway

    def card_token(self, customer_id: str, behavior: Behavior) -> str:
        """A token, made as openpay.js makes one, for a new card that pays as ``behavior``
        says; the customer is scripted so from now on."""
        self.script(customer_id, behavior)
        card = {
            "card_number": CARDS[Behavior(behavior)],
            "holder_name": f"Cliente {customer_id}"[:80],
            "expiration_month": "12",
            "expiration_year": "40",
            "cvv2": "123",
        }
        response = self._browser.post(f"/v1/{DEFAULT_MERCHANT_ID}/tokens", json=card)
        response.raise_for_status()
        return str(response.json()["id"])

    def fill_enrollment(self, customer_id: str, redirect_url: str, behavior: Behavior) -> None:
        raise InvalidArgument("gateway", "must enrol cards on its own page; openpay takes tokens")

    def script(self, customer_id: str, behavior: Behavior) -> None:
        """From now on, every charge of this customer goes as ``behavior`` says."""
        behavior = Behavior(behavior)
        if behavior not in CARDS:
            known = ", ".join(b.value for b in CARDS)
            rule = f"must be one Openpay card charges can show ({known}): they never wait"
            raise InvalidArgument("payment", rule, behavior.value)
        self.fake.clear_rules(external_id=customer_id)
        if behavior is Behavior.DECLINE_SOFT:
            self.fake.decline_next(code=3003, times=None, external_id=customer_id)
        elif behavior is Behavior.DECLINE_HARD:
            self.fake.decline_next(code=3004, times=None, external_id=customer_id)
        else:
            lose = behavior is Behavior.TIMEOUT
            self.fake.approve_next(times=None, lose=lose, external_id=customer_id)

    def charges_taken(self, customer_id: str) -> int:
        reference = self.fake.customer_for(customer_id)
        return 0 if reference is None else self.fake.charges_taken(reference)

    def _latest(self, customer_id: str) -> str:
        reference = self.fake.customer_for(customer_id)
        charge = None if reference is None else self.fake.latest_charge(reference)
        if charge is None:
            raise LookupError(f"Openpay has no charge of {customer_id}")
        return charge

    def notification(self, customer_id: str) -> Notification:
        """The webhook the fake sends about this customer's latest charge."""
        headers, body = self.fake.notification(self._latest(customer_id))
        return Notification(headers=headers, body=body)

    def forged_notification(self, customer_id: str) -> Notification:
        """The same shape, claiming the latest charge succeeded."""
        headers, body = self.fake.notification(
            self._latest(customer_id), event_type="charge.succeeded", status="completed"
        )
        return Notification(headers=headers, body=body)

    def lose_next_refund_answer(self) -> None:
        self.fake.inject(refund_timeouts=1)

    def with_bad_credentials(self) -> OpenpayGateway:
        return self._new_gateway("sk_" + "0" * 32)

    def close(self) -> None:
        """Close the clients and stop the server, if any."""
        self._stack.close()


def simulation(
    *, loopback: bool = True, clock: Callable[[], datetime] | None = None
) -> OpenpaySimulation:
    """The ``billing.simulations`` entry point."""
    return OpenpaySimulation(loopback=loopback, clock=clock)
