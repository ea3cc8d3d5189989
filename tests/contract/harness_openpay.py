"""The conformance harness for Openpay: :class:`OpenpayGateway` against :class:`FakeOpenpay`.

In process (``InProcessTransport``, no socket) or over loopback (the fake served by uvicorn). A
payer is made the way a real integration makes one: the gateway registers the customer, a
"browser" client makes a token from the chosen test card through the fake's ``/tokens`` (as
openpay.js does), and the gateway stores the card from it. The fake is steered through its
``/_fake`` control endpoints, so the same code drives both modes.
"""

from __future__ import annotations

import uuid
from contextlib import ExitStack

import httpx

from adapters.openpay import FakeOpenpay, OpenpayGateway
from adapters.openpay import _wire as wire
from adapters.openpay.fake import STOLEN_CARD
from billing.domain.money import Money
from billing.domain.payments import ErrorCode
from billing.ports import AttachRequest, CustomerRequest, Notification
from billing.testing.asgi import InProcessTransport, serve
from tests.contract.harness import Behavior, Expectations, Mode, Payer

MERCHANT_ID = "mharnessopenpay00001"
PRIVATE_KEY = "sk_harness0000000000000000000000a"
BAD_KEY = "sk_wrong000000000000000000000000000"
SANDBOX = "https://sandbox-api.openpay.mx"

CARDS: dict[Behavior, str] = {
    "approve": "4111111111111111",
    "soft_decline": "4222222222222220",  # 3001: card_declined (soft)
    "hard_decline": STOLEN_CARD,  # 3004: lost_or_stolen (hard)
    "soft_then_approve": "4111111111111111",  # plus a rule: the first charge answers 3001
}


class OpenpayHarness:
    """One Openpay gateway over a fresh :class:`FakeOpenpay`."""

    name = "openpay"

    def __init__(self, mode: Mode = "in_process") -> None:
        self.mode = mode
        self.fake = FakeOpenpay(MERCHANT_ID, PRIVATE_KEY)
        self._stack = ExitStack()
        self._base_url = (
            SANDBOX if mode == "in_process" else self._stack.enter_context(serve(self.fake.app))
        )
        self.gateway = self._gateway(PRIVATE_KEY)
        self._browser = httpx.Client(
            base_url=self._base_url,
            auth=(PRIVATE_KEY, ""),
            transport=self._transport(),
            timeout=10.0,
        )
        self._stack.callback(self._browser.close)
        self.amount = Money.of("150.00", "MXN")
        self.secrets = (
            PRIVATE_KEY,
            BAD_KEY,
            wire.basic_authorization(PRIVATE_KEY),
            wire.basic_authorization(PRIVATE_KEY).removeprefix("Basic "),
            *sorted(set(CARDS.values())),
        )
        self.expectations = Expectations(
            soft_decline=ErrorCode.CARD_DECLINED,
            hard_decline=ErrorCode.LOST_OR_STOLEN,
            partial_refunds=False,
            notifications=True,
        )

    def _transport(self) -> httpx.BaseTransport | None:
        return InProcessTransport(self.fake.app) if self.mode == "in_process" else None

    def _gateway(self, key: str) -> OpenpayGateway:
        gateway = OpenpayGateway(
            MERCHANT_ID, key, base_url=self._base_url, transport=self._transport(), timeout=10.0
        )
        self._stack.callback(gateway.close)
        return gateway

    def _control(self, path: str, body: dict[str, object]) -> None:
        response = self._browser.post(f"/_fake/{path}", json=body)
        response.raise_for_status()

    def payer(self, behavior: Behavior) -> Payer:
        customer_id = f"cus_{uuid.uuid4().hex[:12]}"
        reference = self.gateway.register_customer(
            CustomerRequest(customer_id=customer_id, name="Harness Payer")
        )
        token = self._token(CARDS[behavior])
        method = self.gateway.attach_payment_method(
            AttachRequest(customer_id=customer_id, customer_reference=reference, token=token)
        )
        if behavior == "soft_then_approve":
            self._control("rules", {"card_id": method.reference, "error_code": 3001, "count": 1})
        return Payer(customer_id, reference, method.reference)

    def _token(self, number: str) -> str:
        response = self._browser.post(
            f"/v1/{MERCHANT_ID}/tokens",
            json={
                "card_number": number,
                "holder_name": "Harness Payer",
                "expiration_month": "12",
                "expiration_year": "40",
                "cvv2": "123",
            },
        )
        response.raise_for_status()
        return str(response.json()["id"])

    def lose_next_answer(self) -> None:
        self._control("faults", {"charge_timeouts": 1})

    def charges_taken(self, payer: Payer) -> int:
        return self.fake.charges_taken(payer.customer_reference)

    def notification(self, charge_reference: str) -> Notification:
        headers, body = self.fake.notification(charge_reference)
        return Notification(headers=headers, body=body)

    def forged_notification(self, charge_reference: str) -> Notification:
        headers, body = self.fake.notification(
            charge_reference, event_type="charge.succeeded", status="completed"
        )
        return Notification(headers=headers, body=body)

    def with_bad_credentials(self) -> OpenpayGateway:
        return self._gateway(BAD_KEY)

    def close(self) -> None:
        self._stack.close()
