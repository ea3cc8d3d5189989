"""Payvalida for scenarios and simulations: :class:`PayvalidaGateway` against a
:class:`FakePayvalida`.

The ``billing.simulations`` entry point. Payvalida is pay by link: the "card token" a customer
gets is their e-mail address (what the engine attaches as the payment method), and how they
treat each link the engine sends follows a script of the fake on that address, one per
:class:`~billing.testing.Behavior`:

* ``approve``, ``pay_by_link``: the customer pays each link as soon as it exists (through the
  fake's customer path; the fake then notifies): ``requires_action`` at first, ``succeeded`` on
  the next sync;
* ``never_pay``, ``link_expires``, ``decline_soft``: links expire unpaid (a soft decline,
  ``payer_abandoned``, once the scenario clock passes the link's last day);
* ``pay_late``: each link is paid after it expired (``succeeded`` after the expiry);
* ``timeout``: the customer pays at once, and the answer to each order's creation is lost
  (``unknown`` at first; the engine's sync finds the one order, paid);
* ``decline_hard``: refused with :class:`~billing.domain.errors.InvalidArgument`: a link cannot
  be declined for good, Payvalida has nothing that stops retries.

It is a :class:`~billing.testing.simulation.LinkSimulation`: :meth:`PayvalidaSimulation.pay_link`
acts as the customer on one link (on time, or late after it expired), and every notification the
fake sends (``approved`` when an order is paid, ``cancelled`` when it expires) is kept until
:meth:`PayvalidaSimulation.take_notifications` hands it over, as the host's endpoint receives it.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Mapping
from contextlib import ExitStack
from datetime import datetime
from typing import TYPE_CHECKING

import httpx

from adapters.payvalida import _wire as wire
from adapters.payvalida.fake import DEFAULT_FIXED_HASH, DEFAULT_MERCHANT, FakePayvalida, PayWhen
from adapters.payvalida.gateway import PayvalidaGateway
from billing.domain.errors import InvalidArgument
from billing.ports import Notification
from billing.testing import Behavior
from billing.testing.asgi import InProcessTransport, serve
from billing.testing.simulation import LinkSimulation

__all__ = ["SCRIPTS", "PayvalidaSimulation", "simulation"]

SCRIPTS: dict[Behavior, tuple[PayWhen, bool]] = {
    Behavior.APPROVE: ("now", False),
    Behavior.PAY_BY_LINK: ("now", False),
    Behavior.NEVER_PAY: ("never", False),
    Behavior.LINK_EXPIRES: ("never", False),
    Behavior.DECLINE_SOFT: ("never", False),
    Behavior.PAY_LATE: ("late", False),
    Behavior.TIMEOUT: ("now", True),
}
"""Each behavior's script on the fake: when the payer pays, and whether answers are lost."""

NOTIFY_URL = "https://host.invalid/webhooks/payvalida"
"""Where the fake addresses its notifications; none is POSTed: the simulation keeps them."""

_UNSAFE = re.compile(r"[^a-z0-9.+\-]+")


def payer_email(customer_id: str) -> str:
    """The e-mail address a simulated customer pays from."""
    local = _UNSAFE.sub("-", customer_id.lower()).strip(".-")[:48] or "payer"
    return f"{local}@payers.example.com"


class PayvalidaSimulation:
    """A Payvalida adapter on its own fake, with each engine customer's links scripted."""

    currency = "COP"

    def __init__(
        self, *, loopback: bool = True, clock: Callable[[], datetime] | None = None
    ) -> None:
        self._outbox: list[Notification] = []
        self._outbox_lock = threading.Lock()
        self.fake = FakePayvalida(now=clock, notify_url=NOTIFY_URL, deliver=self._keep)
        self._loopback = loopback
        self._stack = ExitStack()
        self._url = (
            self._stack.enter_context(serve(self.fake.app)) if loopback else wire.SANDBOX_URL
        )
        self._browser = self._stack.enter_context(
            httpx.Client(base_url=self._url, transport=self._transport(), timeout=10.0)
        )
        self._gateway = self._new_gateway(DEFAULT_FIXED_HASH)

    def _transport(self) -> httpx.BaseTransport | None:
        return None if self._loopback else InProcessTransport(self.fake.app)

    def _new_gateway(self, fixed_hash: str) -> PayvalidaGateway:
        gateway = PayvalidaGateway(
            DEFAULT_MERCHANT,
            fixed_hash,
            base_url=self._url,
            transport=self._transport(),
            timeout=10,
        )
        self._stack.callback(gateway.close)
        return gateway

    @property
    def gateway(self) -> PayvalidaGateway:
        """The adapter the engine bills through."""
        return self._gateway

    def card_token(self, customer_id: str, behavior: Behavior) -> str:
        """The customer's e-mail address (Payvalida's "token"); their links are scripted to go
        as ``behavior`` says from now on."""
        self.script(customer_id, behavior)
        return payer_email(customer_id)

    def fill_enrollment(self, customer_id: str, redirect_url: str, behavior: Behavior) -> None:
        raise InvalidArgument("gateway", "must enrol cards on its own page; payvalida has none")

    def script(self, customer_id: str, behavior: Behavior) -> None:
        """From now on, every link of this customer goes as ``behavior`` says."""
        behavior = Behavior(behavior)
        if behavior not in SCRIPTS:
            known = ", ".join(item.value for item in SCRIPTS)
            rule = f"must be one a Payvalida link can show ({known}): links never hard-decline"
            raise InvalidArgument("payment", rule, behavior.value)
        pay, lose = SCRIPTS[behavior]
        self._control("payers", {"email": payer_email(customer_id), "pay": pay, "lose": lose})

    def _control(self, path: str, body: dict[str, object]) -> None:
        """Through the fake's control endpoints, as a demo in another process would."""
        response = self._browser.post(f"/_fake/{path}", json=body)
        response.raise_for_status()

    def charges_taken(self, customer_id: str) -> int:
        return self.fake.payments_by(payer_email(customer_id))

    def _latest(self, customer_id: str) -> str:
        order = self.fake.latest_order(payer_email(customer_id))
        if order is None:
            raise LookupError(f"Payvalida has no order of {customer_id}")
        return order

    def notification(self, customer_id: str) -> Notification:
        """The notification the fake sends about this customer's latest order."""
        headers, body = self.fake.notification(self._latest(customer_id))
        return Notification(headers=headers, body=body)

    def forged_notification(self, customer_id: str) -> Notification:
        """The same shape, claiming the latest order was paid, with a checksum made without
        the secret."""
        headers, body = self.fake.notification(self._latest(customer_id), forged=True)
        return Notification(headers=headers, body=body)

    def pay_link(self, reference: str, *, late: bool = False) -> None:
        """Act as the customer: pay the order ``reference`` through its link (``late``: although
        it expired), through the fake's control endpoint; the fake notifies at once.

        :raises InvalidArgument: when the order cannot be paid (unknown, already paid, expired
            without ``late``)."""
        response = self._browser.post("/_fake/pay", json={"order": reference, "late": late})
        if response.status_code == 400:
            refusal = str(response.json().get("error", response.text))
            raise InvalidArgument("reference", f"must be a payable order ({refusal})", reference)
        response.raise_for_status()

    def _keep(self, url: str, headers: Mapping[str, str], body: bytes) -> int:
        """The fake's delivery: keep the notification for :meth:`take_notifications`."""
        with self._outbox_lock:
            self._outbox.append(Notification(headers=dict(headers), body=body))
        return 200

    def take_notifications(self) -> list[Notification]:
        with self._outbox_lock:
            taken, self._outbox = self._outbox, []
        return taken

    def lose_next_refund_answer(self) -> None:
        raise InvalidArgument("gateway", "must have refunds; payvalida has none")

    def with_bad_credentials(self) -> PayvalidaGateway:
        return self._new_gateway("wrong-" + "0" * 32)

    def close(self) -> None:
        """Close the clients and stop the server, if any."""
        self._stack.close()


def simulation(
    *, loopback: bool = True, clock: Callable[[], datetime] | None = None
) -> PayvalidaSimulation:
    """The ``billing.simulations`` entry point."""
    return PayvalidaSimulation(loopback=loopback, clock=clock)


if TYPE_CHECKING:

    def _conforms(sim: PayvalidaSimulation) -> LinkSimulation:
        """mypy checks here that the simulation implements the whole protocol."""
        return sim
