"""The conformance harness for Payvalida: :class:`PayvalidaGateway` against
:class:`FakePayvalida`.

In process (``InProcessTransport``, no socket) or over loopback (the fake served by uvicorn).
Payvalida is pay by link: a payer is an e-mail address the gateway stores as the payment method,
and every charge is an order the customer pays (or lets expire) through its link. The suite pays
and expires links with :meth:`PayvalidaHarness.pay_link` and
:meth:`PayvalidaHarness.expire_link`, through the fake's ``/_fake`` control endpoints, so the
same code drives both modes. The card behaviors of :class:`~tests.contract.harness.Behavior` do
not apply: every payer's links wait for the suite.
"""

from __future__ import annotations

import uuid
from contextlib import ExitStack
from datetime import UTC, datetime

import httpx

from adapters.payvalida.fake import FakePayvalida
from adapters.payvalida.gateway import PayvalidaGateway
from billing.domain.money import Money
from billing.domain.payments import ErrorCode
from billing.ports import AttachRequest, Notification
from billing.testing.asgi import InProcessTransport, serve
from tests.contract.harness import Behavior, Expectations, Mode, Payer

MERCHANT = "harnesspayvalida"
FIXED_HASH = "harness_fixed_hash_0000000000000000000000000000000a"
NOTIFICATION_HASH = "harness_notification_hash_000000000000000000000000b"
BAD_HASH = "harness_wrong_hash_00000000000000000000000000000000c"
SANDBOX = "https://api-test.payvalida.com"
START = datetime(2026, 3, 2, 15, tzinfo=UTC)
"""The fake's time at first: the conformance suite's instant (its charges' ``at``), so the
links the suite makes are checked against the same day. Move it with :attr:`clock`."""


class HarnessClock:
    """The fake's clock: set by the suite, never by the wall."""

    def __init__(self, now: datetime = START) -> None:
        self.now = now

    def set(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


class PayvalidaHarness:
    """One Payvalida gateway over a fresh :class:`FakePayvalida`."""

    name = "payvalida"

    def __init__(self, mode: Mode = "in_process") -> None:
        self.mode = mode
        self.clock = HarnessClock()
        self.fake = FakePayvalida(
            MERCHANT, FIXED_HASH, notification_hash=NOTIFICATION_HASH, now=self.clock
        )
        self._stack = ExitStack()
        self._base_url = (
            SANDBOX if mode == "in_process" else self._stack.enter_context(serve(self.fake.app))
        )
        self.gateway = self._gateway(FIXED_HASH)
        self._browser = httpx.Client(
            base_url=self._base_url, transport=self._transport(), timeout=10.0
        )
        self._stack.callback(self._browser.close)
        self.amount = Money.of("45000", "COP")
        self.secrets = (FIXED_HASH, NOTIFICATION_HASH, BAD_HASH)
        self.expectations = Expectations(
            soft_decline=ErrorCode.PAYER_ABANDONED,
            hard_decline=ErrorCode.PAYER_ABANDONED,
            partial_refunds=False,
            notifications=True,
            pay_by_link=True,
        )

    def _transport(self) -> httpx.BaseTransport | None:
        return InProcessTransport(self.fake.app) if self.mode == "in_process" else None

    def _gateway(self, fixed_hash: str) -> PayvalidaGateway:
        gateway = PayvalidaGateway(
            MERCHANT,
            fixed_hash,
            notification_hash=NOTIFICATION_HASH,
            base_url=self._base_url,
            transport=self._transport(),
            timeout=10.0,
        )
        self._stack.callback(gateway.close)
        return gateway

    def _control(self, path: str, body: dict[str, object]) -> None:
        response = self._browser.post(f"/_fake/{path}", json=body)
        response.raise_for_status()

    def payer(self, behavior: Behavior) -> Payer:
        """A new payer: an e-mail address stored as the payment method (the behavior does not
        apply; links wait for :meth:`pay_link` or :meth:`expire_link`)."""
        customer_id = f"cus_{uuid.uuid4().hex[:12]}"
        email = f"{customer_id.replace('_', '.')}@payers.example.com"
        method = self.gateway.attach_payment_method(
            AttachRequest(customer_id=customer_id, customer_reference=None, token=email)
        )
        return Payer(customer_id, None, method.reference)

    def pay_link(self, charge_reference: str, *, late: bool = False) -> None:
        self._control("pay", {"order": charge_reference, "late": late})

    def expire_link(self, charge_reference: str) -> None:
        self._control("expire", {"order": charge_reference})

    def lose_next_answer(self) -> None:
        self._control("faults", {"charge_timeouts": 1})

    def charges_taken(self, payer: Payer) -> int:
        return self.fake.payments_by(payer.payment_method)

    def notification(self, charge_reference: str) -> Notification:
        headers, body = self.fake.notification(charge_reference)
        return Notification(headers=headers, body=body)

    def forged_notification(self, charge_reference: str) -> Notification:
        headers, body = self.fake.notification(charge_reference, forged=True)
        return Notification(headers=headers, body=body)

    def with_bad_credentials(self) -> PayvalidaGateway:
        return self._gateway(BAD_HASH)

    def close(self) -> None:
        self._stack.close()
