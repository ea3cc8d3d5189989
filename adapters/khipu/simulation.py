"""Khipu for scenarios and simulations: :class:`KhipuGateway` against a :class:`FakeKhipu`.

The ``billing.simulations`` entry point. Khipu is pay-by-link: a customer's "card token" is the
payer's e-mail address, and the customer's behaviour is a script the fake follows for every
link sent to that address (the fake acts as the customer, then notifies):

* ``approve``, ``pay_by_link``: the payer pays each link at once (``done``);
* ``never_pay``, ``link_expires``, ``decline_soft``: links are ignored and expire unpaid (an
  ``expired`` soft decline, ``payer_abandoned``, once the engine's clock passes the expiry);
* ``pay_late``: the transfer starts at once (``verifying``: pending) and the bank confirms it
  after the link expired (``done`` with ``out_of_date_conciliation``);
* ``decline_hard``: the payer marks the charge as abuse (``marked-as-abuse``: a hard decline,
  ``fraud_suspected``);
* ``timeout``: the answer to the payment's creation is lost and the payer pays the link anyway;
  the adapter learns the payment from its notification (:meth:`KhipuSimulation.notification`).

The fake's clock is the engine's (``clock``), so links expire as scenario time passes.

It is a :class:`~billing.testing.simulation.LinkSimulation`: :meth:`KhipuSimulation.pay_link`
acts as the customer on one link (on time, or late after it expired), and every notification the
fake sends (when a payment becomes ``done``; Khipu notifies nothing else) is kept until
:meth:`KhipuSimulation.take_notifications` hands it over, as the host's endpoint receives it.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Mapping
from contextlib import ExitStack
from datetime import datetime
from typing import TYPE_CHECKING

from adapters.khipu.fake import DEFAULT_RECEIVER_ID, DEFAULT_SECRET, FakeKhipu
from adapters.khipu.gateway import API_URL, KhipuGateway
from billing.domain.errors import InvalidArgument
from billing.ports import Notification
from billing.testing import Behavior
from billing.testing.asgi import InProcessTransport, serve
from billing.testing.simulation import LinkSimulation

__all__ = ["SCRIPTS", "KhipuSimulation", "simulation"]

SCRIPTS: dict[Behavior, str] = {
    Behavior.APPROVE: "pay",
    Behavior.PAY_BY_LINK: "pay",
    Behavior.NEVER_PAY: "ignore",
    Behavior.LINK_EXPIRES: "ignore",
    Behavior.DECLINE_SOFT: "ignore",
    Behavior.PAY_LATE: "pay_late",
    Behavior.DECLINE_HARD: "abuse",
    Behavior.TIMEOUT: "lose",
}
"""The fake's payer script for each behavior (:data:`adapters.khipu.fake.PAYER_BEHAVIORS`)."""

NOTIFY_URL = "https://host.invalid/webhooks/khipu"
"""Where the fake addresses its notifications; none is POSTed: the simulation keeps them."""


def _email(customer_id: str) -> str:
    local = re.sub(r"[^A-Za-z0-9._-]", "-", customer_id)[:60] or "payer"
    return f"{local}@payers.khipu.invalid"


class KhipuSimulation:
    """A Khipu adapter on its own fake, each engine customer a scripted payer."""

    currency = "CLP"

    def __init__(
        self, *, loopback: bool = True, clock: Callable[[], datetime] | None = None
    ) -> None:
        self._outbox: list[Notification] = []
        self._outbox_lock = threading.Lock()
        self.fake = FakeKhipu(clock=clock, deliver=self._keep, notify_url=NOTIFY_URL)
        self._loopback = loopback
        self._stack = ExitStack()
        self._url = (
            self._stack.enter_context(serve(self.fake.app)) + "/api/2.0" if loopback else API_URL
        )
        self._gateway = self._new_gateway(DEFAULT_SECRET)

    def _new_gateway(self, secret: str) -> KhipuGateway:
        transport = None if self._loopback else InProcessTransport(self.fake.app)
        gateway = KhipuGateway(
            DEFAULT_RECEIVER_ID, secret, base_url=self._url, transport=transport, timeout=10.0
        )
        self._stack.callback(gateway.close)
        return gateway

    @property
    def gateway(self) -> KhipuGateway:
        return self._gateway

    def card_token(self, customer_id: str, behavior: Behavior) -> str:
        """The payer's e-mail address (Khipu's "payment method"), scripted as ``behavior``."""
        self.script(customer_id, behavior)
        return _email(customer_id)

    def fill_enrollment(self, customer_id: str, redirect_url: str, behavior: Behavior) -> None:
        raise InvalidArgument("gateway", "must enrol cards on its own page; khipu sends links")

    def script(self, customer_id: str, behavior: Behavior) -> None:
        self.fake.script_payer(_email(customer_id), SCRIPTS[Behavior(behavior)])

    def charges_taken(self, customer_id: str) -> int:
        return self.fake.paid(_email(customer_id))

    def _latest(self, customer_id: str) -> str:
        email = _email(customer_id)
        mine = [item for item in self.fake.payments() if item["payer_email"] == email]
        if not mine:
            raise LookupError(f"Khipu has no payment of {customer_id}")
        return str(mine[-1]["payment_id"])

    def notification(self, customer_id: str) -> Notification:
        headers, body = self.fake.notification(self._latest(customer_id))
        return Notification(headers=headers, body=body)

    def forged_notification(self, customer_id: str) -> Notification:
        headers, body = self.fake.notification(self._latest(customer_id), forged=True)
        return Notification(headers=headers, body=body)

    def pay_link(self, reference: str, *, late: bool = False) -> None:
        """Act as the payer: pay the payment ``reference`` (``late``: although it expired, a
        transfer confirmed after the expiry); the fake notifies at once.

        :raises InvalidArgument: when the payment cannot be paid (unknown, already paid,
            refused, expired without ``late``)."""
        try:
            self.fake.pay(reference, late=late)
        except ValueError as exc:
            raise InvalidArgument(
                "reference", f"must be a payable link ({exc})", reference
            ) from exc

    async def _keep(self, url: str, headers: Mapping[str, str], body: bytes) -> int:
        """The fake's delivery: keep the notification for :meth:`take_notifications`."""
        with self._outbox_lock:
            self._outbox.append(Notification(headers=dict(headers), body=body))
        return 200

    def take_notifications(self) -> list[Notification]:
        with self._outbox_lock:
            taken, self._outbox = self._outbox, []
        return taken

    def lose_next_refund_answer(self) -> None:
        self.fake.inject(refund_timeouts=1)

    def with_bad_credentials(self) -> KhipuGateway:
        return self._new_gateway("wrong-" + "0" * 32)

    def close(self) -> None:
        self._stack.close()


def simulation(
    *, loopback: bool = True, clock: Callable[[], datetime] | None = None
) -> KhipuSimulation:
    """The ``billing.simulations`` entry point."""
    return KhipuSimulation(loopback=loopback, clock=clock)


if TYPE_CHECKING:

    def _conforms(sim: KhipuSimulation) -> LinkSimulation:
        """mypy checks here that the simulation implements the whole protocol."""
        return sim
