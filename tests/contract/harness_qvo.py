"""The QVO harness for the conformance suite: :class:`~adapters.qvo.QvoGateway` on a
:class:`~adapters.qvo.FakeQvo`, in process or over loopback sockets.

A payer is made the way a real customer is: registered through the gateway, then enrolled by
posting the sandbox's approvable test card to the fake's hosted Webpay page. Its card then
behaves as asked through the fake's charge rules: ``rejected`` transactions for soft declines
(``card_declined``), ``unable_to_charge`` for hard ones (``payment_method_unsupported``: QVO's
document names no stolen or lost card, but it does name the route's inability to charge).
In loopback mode the rules and faults go through the fake's control endpoints, as a test
driving a served fake would.
"""

from __future__ import annotations

import uuid
from contextlib import ExitStack
from typing import Any

import httpx

from adapters.qvo import FakeQvo, QvoGateway
from adapters.qvo._wire import APPROVING_CARD
from adapters.qvo.fake import Outcome
from adapters.qvo.simulation import as_received
from billing.domain.money import Money
from billing.domain.payments import ErrorCode
from billing.ports import CustomerRequest, EnrollmentRequest, EnrollmentStatus, Notification
from billing.testing.asgi import InProcessTransport, serve
from tests.contract.harness import Behavior, Expectations, Mode, Payer

TOKEN = "qvo-harness-token"
"""The token the harness's fake accepts (any non-empty string would do)."""
BAD_TOKEN = "qvo-harness-wrong-token"
IN_PROCESS_URL = "https://playground.qvo.cl"
RETURN_URL = "https://merchant.example/qvo/return"
_OUTCOMES: dict[Behavior, tuple[Outcome, int | None] | None] = {
    "approve": None,
    "soft_decline": ("rejected", None),
    "hard_decline": ("unable_to_charge", None),
    "soft_then_approve": ("rejected", 1),
}
"""Each behavior as a charge rule on the payer's card: an outcome and how many times (None:
always); approve needs no rule."""


class QvoHarness:
    """QVO under the conformance suite, on a fresh :class:`FakeQvo`."""

    name = "qvo"

    def __init__(self, mode: Mode = "in_process") -> None:
        self.mode = mode
        self.fake = FakeQvo(TOKEN)
        self.amount = Money.of("15000", "CLP")
        self.expectations = Expectations(
            soft_decline=ErrorCode.CARD_DECLINED,
            hard_decline=ErrorCode.PAYMENT_METHOD_UNSUPPORTED,
            partial_refunds=False,
            notifications=True,
            extra={"signed_notifications": False, "idempotent_charges": False},
        )
        self.secrets = (TOKEN, BAD_TOKEN, APPROVING_CARD)
        self._stack = ExitStack()
        self._base_url = (
            self._stack.enter_context(serve(self.fake.app))
            if mode == "loopback"
            else IN_PROCESS_URL
        )
        self._browser = self._stack.enter_context(httpx.Client(transport=self._transport()))
        self.gateway = self._gateway(TOKEN)

    def _transport(self) -> httpx.BaseTransport | None:
        """A fresh transport to the fake: in process, or None for real sockets."""
        return InProcessTransport(self.fake.app) if self.mode == "in_process" else None

    def _gateway(self, token: str) -> QvoGateway:
        gateway = QvoGateway(token, base_url=self._base_url, transport=self._transport())
        self._stack.callback(gateway.close)
        return gateway

    def _control(self, path: str, body: dict[str, Any]) -> Any:
        """Call one of the fake's control endpoints (loopback mode)."""
        response = self._browser.post(f"{self._base_url}/_fake/{path}", json=body)
        response.raise_for_status()
        return response.json()

    # -- the Harness protocol -----------------------------------------------------------------

    def payer(self, behavior: Behavior) -> Payer:
        """A new QVO customer with an enrolled card that behaves as asked."""
        customer_id = f"cust-{uuid.uuid4().hex[:12]}"
        reference = self.gateway.register_customer(
            CustomerRequest(customer_id=customer_id, name="Harness Payer")
        )
        card = self._enroll(customer_id, reference)
        rule = _OUTCOMES[behavior]
        if rule is not None:
            self._rule(card, *rule)
        return Payer(customer_id=customer_id, customer_reference=reference, payment_method=card)

    def _enroll(self, customer_id: str, reference: str) -> str:
        enrollment = self.gateway.start_enrollment(
            EnrollmentRequest(
                customer_id=customer_id, customer_reference=reference, return_url=RETURN_URL
            )
        )
        back = self._browser.post(enrollment.redirect_url, data={"card_number": APPROVING_CARD})
        if back.status_code != 302 or f"uid={enrollment.reference}" not in back.headers["location"]:
            raise RuntimeError(
                f"the hosted page did not send the customer back: {back.status_code}"
            )
        result = self.gateway.complete_enrollment(reference, enrollment.reference)
        if result.status is not EnrollmentStatus.SUCCEEDED or result.method is None:
            raise RuntimeError(f"the enrollment did not succeed: {result}")
        return result.method.reference

    def _rule(self, card: str, outcome: Outcome, times: int | None) -> None:
        if self.mode == "loopback":
            self._control("rules", {"card_id": card, "outcome": outcome, "times": times})
        elif times is None:
            self.fake.rules.always(card, outcome)
        else:
            self.fake.rules.queue(card, outcome, times)

    def lose_next_answer(self) -> None:
        """The next charge is committed and its answer lost (``Faults.charge_timeouts``)."""
        if self.mode == "loopback":
            current = self._browser.get(f"{self._base_url}/_fake/faults").json()
            self._control("faults", {"charge_timeouts": current["charge_timeouts"] + 1})
        else:
            self.fake.add_faults(charge_timeouts=1)

    def charges_taken(self, payer: Payer) -> int:
        """The payer's transactions that took money (successful, or refunded afterwards)."""
        return sum(
            1
            for transaction in self.fake.transactions(payer.customer_reference)
            if transaction["status"] in ("successful", "refunded")
        )

    def notification(self, charge_reference: str) -> Notification:
        """The event the fake would POST about this charge, as the host receives it."""
        event = self.fake.event_for(charge_reference)
        if event is None:
            raise LookupError(f"the fake has no event about {charge_reference}")
        return as_received(event)

    def forged_notification(self, charge_reference: str) -> Notification:
        """A ``transaction.payment_succeeded`` event, shaped like a genuine one, claiming that
        a charge QVO declined was paid (a new event id QVO never issued)."""
        genuine = self.fake.event_for(charge_reference)
        if genuine is None:
            raise LookupError(f"the fake has no event about {charge_reference}")
        transaction = dict(genuine["data"]["transaction"])
        transaction["status"] = "successful"
        transaction["gateway_response"] = {"status": "success", "message": "successful transaction"}
        forged = {
            **genuine,
            "id": f"evt_{uuid.uuid4().hex[:22]}",
            "type": "transaction.payment_succeeded",
            "data": {"transaction": transaction},
        }
        return as_received(forged)

    def with_bad_credentials(self) -> QvoGateway:
        """The same gateway with a token the fake refuses."""
        return self._gateway(BAD_TOKEN)

    def close(self) -> None:
        """Close the gateways and clients, and stop the server (loopback)."""
        self._stack.close()
