"""QVO for scenarios and simulations: :class:`QvoGateway` against a :class:`FakeQvo`.

The ``billing.simulations`` entry point. Cards are stored as a real customer stores them: the
engine starts a Webpay Oneclick inscription, and :meth:`QvoSimulation.fill_enrollment` posts the
sandbox's approving test card to the fake's hosted page. How each card then pays follows the
fake's charge rules, one per :class:`~billing.testing.Behavior`.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from contextlib import ExitStack
from datetime import datetime
from typing import Any

import httpx

from adapters.qvo import _wire as wire
from adapters.qvo.fake import FakeQvo, Outcome
from adapters.qvo.gateway import QvoGateway
from billing.domain.errors import InvalidArgument
from billing.ports import Notification
from billing.testing import Behavior
from billing.testing.asgi import InProcessTransport, serve

TOKEN = "qvo-simulation-token"

OUTCOMES: dict[Behavior, Outcome] = {
    Behavior.APPROVE: "approve",
    Behavior.DECLINE_SOFT: "insufficient_funds",
    Behavior.DECLINE_HARD: "stolen_card",
    Behavior.TIMEOUT: "timeout",
    Behavior.PAY_LATE: "pay_late",
    Behavior.NEVER_PAY: "waiting_response",
}
"""Each behavior as the fake's standing rule for a card. QVO charges stored cards without the
customer: it has no payment links (``pay_by_link``, ``link_expires``)."""


def _outcome(behavior: Behavior) -> Outcome:
    outcome = OUTCOMES.get(Behavior(behavior))
    if outcome is None:
        known = ", ".join(b.value for b in OUTCOMES)
        rule = f"must be one QVO card charges can show ({known}): QVO sends no payment links"
        raise InvalidArgument("payment", rule, Behavior(behavior).value)
    return outcome


class QvoSimulation:
    """A QVO adapter on its own fake, with each engine customer's cards scripted."""

    currency = "CLP"

    def __init__(
        self, *, loopback: bool = True, clock: Callable[[], datetime] | None = None
    ) -> None:
        self.fake = FakeQvo(TOKEN, clock=clock)
        self._stack = ExitStack()
        self._loopback = loopback
        self._base_url = (
            self._stack.enter_context(serve(self.fake.app)) if loopback else wire.SANDBOX_URL
        )
        self._browser = self._stack.enter_context(httpx.Client(transport=self._transport()))
        self._gateway = self._new_gateway(TOKEN)
        self._customers: dict[str, str] = {}  # engine customer -> QVO customer
        self._cards: dict[str, list[str]] = {}  # engine customer -> its cards

    def _transport(self) -> httpx.BaseTransport | None:
        return None if self._loopback else InProcessTransport(self.fake.app)

    def _new_gateway(self, token: str) -> QvoGateway:
        gateway = QvoGateway(token, base_url=self._base_url, transport=self._transport())
        self._stack.callback(gateway.close)
        return gateway

    @property
    def gateway(self) -> QvoGateway:
        return self._gateway

    def card_token(self, customer_id: str, behavior: Behavior) -> str:
        raise InvalidArgument("gateway", "must take card tokens; qvo stores cards by inscription")

    def fill_enrollment(self, customer_id: str, redirect_url: str, behavior: Behavior) -> None:
        """Post the approving test card on the inscription's hosted page."""
        back = self._browser.post(redirect_url, data={"card_number": wire.APPROVING_CARD})
        if back.status_code != 302:
            raise RuntimeError(f"the hosted page answered {back.status_code}: {back.text[:200]}")
        inscription = self.fake.inscription(redirect_url.rsplit("/", 1)[-1])
        self._customers[customer_id] = inscription["customer_id"]
        card = inscription["card"]["id"]
        self._cards.setdefault(customer_id, []).append(card)
        self.fake.rules.always(card, _outcome(behavior))

    def script(self, customer_id: str, behavior: Behavior) -> None:
        for card in self._cards.get(customer_id, []):
            self.fake.rules.always(card, _outcome(behavior))

    def charges_taken(self, customer_id: str) -> int:
        return sum(
            1
            for transaction in self._transactions(customer_id)
            if transaction["status"] in ("successful", "refunded")
        )

    def _transactions(self, customer_id: str) -> list[dict[str, Any]]:
        reference = self._customers.get(customer_id)
        return [] if reference is None else self.fake.transactions(reference)

    def _latest_event(self, customer_id: str) -> dict[str, Any]:
        transactions = self._transactions(customer_id)
        event = self.fake.event_for(transactions[-1]["id"]) if transactions else None
        if event is None:
            raise LookupError(f"QVO has no event about a charge of {customer_id}")
        return event

    def notification(self, customer_id: str) -> Notification:
        return as_received(self._latest_event(customer_id))

    def forged_notification(self, customer_id: str) -> Notification:
        genuine = self._latest_event(customer_id)
        transaction = dict(genuine["data"]["transaction"])
        transaction["status"] = "successful"
        transaction["gateway_response"] = {"status": "success", "message": "successful transaction"}
        return as_received(
            {
                **genuine,
                "id": f"evt_{uuid.uuid4().hex[:22]}",
                "type": "transaction.payment_succeeded",
                "data": {"transaction": transaction},
            }
        )

    def lose_next_refund_answer(self) -> None:
        self.fake.add_faults(refund_timeouts=1)

    def with_bad_credentials(self) -> QvoGateway:
        return self._new_gateway("not-the-token")

    def close(self) -> None:
        self._stack.close()


def as_received(event: dict[str, Any]) -> Notification:
    """An event as QVO POSTs it to a webhook endpoint."""
    return Notification(
        headers={"content-type": "application/json", "user-agent": "QVO-Webhooks"},
        body=json.dumps(event, separators=(",", ":")).encode(),
    )


def simulation(
    *, loopback: bool = True, clock: Callable[[], datetime] | None = None
) -> QvoSimulation:
    """The ``billing.simulations`` entry point."""
    return QvoSimulation(loopback=loopback, clock=clock)
