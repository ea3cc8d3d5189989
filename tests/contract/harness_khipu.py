"""The conformance harness for Khipu: :class:`KhipuGateway` against :class:`FakeKhipu`.

Khipu is pay-by-link: a payer is an e-mail address (the stored "payment method"), every charge
answers ``requires_action`` with a link, and the suite pays or expires links with
:meth:`KhipuHarness.pay_link` and :meth:`KhipuHarness.expire_link`, which act as the customer
through the fake's ``/_fake`` control endpoints (the same code in process and over loopback).

The fake's clock is a manual one starting long before any charge's ``at``, so a link stays open
until :meth:`expire_link` moves the fake's time past its expiry.
"""

from __future__ import annotations

import uuid
from contextlib import ExitStack
from datetime import UTC, datetime, timedelta

import httpx

from adapters.khipu import FakeKhipu, KhipuGateway
from adapters.khipu.gateway import API_URL
from billing.domain.money import Money
from billing.domain.payments import ErrorCode
from billing.ports import AttachRequest, Notification
from billing.testing.asgi import InProcessTransport, serve
from tests.contract.harness import Behavior, Expectations, Mode, Payer

RECEIVER_ID = "424242"
SECRET = "harness-khipu-secret-000000000000a"
BAD_SECRET = "harness-khipu-wrong-0000000000000b"
START = datetime(2020, 1, 1, tzinfo=UTC)

SCRIPTS: dict[Behavior, str | None] = {
    "approve": None,  # the suite pays with pay_link
    "soft_decline": "ignore",
    "hard_decline": "abuse",
    "soft_then_approve": None,
}


class KhipuHarness:
    """One Khipu gateway over a fresh :class:`FakeKhipu`."""

    name = "khipu"

    def __init__(self, mode: Mode = "in_process") -> None:
        self.mode = mode
        self.fake = FakeKhipu(RECEIVER_ID, SECRET, clock=lambda: START)
        self._stack = ExitStack()
        root = None if mode == "in_process" else self._stack.enter_context(serve(self.fake.app))
        self._base_url = API_URL if root is None else root + "/api/2.0"
        self._control_url = "https://khipu.com" if root is None else root
        self.gateway = self._gateway(SECRET)
        self._browser = httpx.Client(
            base_url=self._control_url, transport=self._transport(), timeout=10.0
        )
        self._stack.callback(self._browser.close)
        self.amount = Money.of("15000", "CLP")
        self.secrets = (SECRET, BAD_SECRET)
        self.expectations = Expectations(
            soft_decline=ErrorCode.PAYER_ABANDONED,
            hard_decline=ErrorCode.FRAUD_SUSPECTED,
            partial_refunds=True,
            notifications=True,
            pay_by_link=True,
        )

    def _transport(self) -> httpx.BaseTransport | None:
        return InProcessTransport(self.fake.app) if self.mode == "in_process" else None

    def _gateway(self, secret: str) -> KhipuGateway:
        gateway = KhipuGateway(
            RECEIVER_ID,
            secret,
            base_url=self._base_url,
            transport=self._transport(),
            timeout=10.0,
            link_lifetime=timedelta(days=1),
        )
        self._stack.callback(gateway.close)
        return gateway

    def _control(self, method: str, path: str, body: dict[str, object] | None = None) -> object:
        response = self._browser.request(method, f"/_fake/{path}", json=body)
        response.raise_for_status()
        return response.json()

    def payer(self, behavior: Behavior) -> Payer:
        customer_id = f"cus_{uuid.uuid4().hex[:12]}"
        email = f"{customer_id}@payers.khipu.invalid"
        script = SCRIPTS[behavior]
        if script is not None:
            self._control("POST", "payers", {"payer_email": email, "behavior": script})
        method = self.gateway.attach_payment_method(
            AttachRequest(customer_id=customer_id, customer_reference=None, token=email)
        )
        return Payer(customer_id, None, method.reference)

    def pay_link(self, charge_reference: str, *, late: bool = False) -> None:
        self._control("POST", "pay", {"payment_id": charge_reference, "late": late})

    def expire_link(self, charge_reference: str) -> None:
        self._control("POST", "expire", {"payment_id": charge_reference})

    def lose_next_answer(self) -> None:
        self._control("POST", "faults", {"charge_timeouts": 1})

    def charges_taken(self, payer: Payer) -> int:
        return self.fake.paid(payer.payment_method)

    def notification(self, charge_reference: str) -> Notification:
        headers, body = self.fake.notification(charge_reference)
        return Notification(headers=headers, body=body)

    def forged_notification(self, charge_reference: str) -> Notification:
        headers, body = self.fake.notification(charge_reference, forged=True)
        return Notification(headers=headers, body=body)

    def with_bad_credentials(self) -> KhipuGateway:
        return self._gateway(BAD_SECRET)

    def close(self) -> None:
        self._stack.close()
