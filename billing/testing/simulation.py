"""Gateways a scenario (or a simulation) bills through, with each customer's way to pay scripted.

A scenario file names a gateway per customer (``gateway: fake``, ``qvo``, ``openpay``). For each
name, :func:`simulation` loads a :class:`GatewaySimulation` from the ``billing.simulations``
entry-point group: the gateway to give the engine, and the means to give a customer a payment
method that pays as a :class:`~billing.testing.Behavior` says. ``fake`` is the in-process
:class:`~billing.testing.FakeGateway`; ``qvo`` and ``openpay`` (stored cards), ``khipu`` and
``payvalida`` (payment links) run their real adapters against their fake servers over HTTP on
loopback, so a scenario exercises the whole path.

A gateway that collects through payment links
(:attr:`~billing.ports.Capability.PAY_BY_LINK`) needs two more levers, those of
:class:`LinkSimulation`: the customer paying a given link (on time or late), and the
notifications the gateway sent, to hand to the engine as the host's webhook endpoint would.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from datetime import datetime
from importlib.metadata import entry_points
from typing import Protocol, runtime_checkable

from billing.domain.errors import InvalidArgument
from billing.ports import Capability, Notification, PaymentGateway
from billing.testing.fake_gateway import Behavior, FakeGateway

GROUP = "billing.simulations"
"""The entry-point group of gateway simulations: ``name = "module:factory"``, where
``factory(*, loopback: bool, clock: Callable[[], datetime] | None)`` returns a
:class:`GatewaySimulation` (see :func:`simulation`)."""


class GatewaySimulation(Protocol):
    """A gateway to bill through, and a scripted customer on the other side of it.

    A gateway with :attr:`~billing.ports.Capability.CARD_TOKENS` gets a payment method from
    :meth:`card_token`; one with :attr:`~billing.ports.Capability.CARD_ENROLLMENT` through an
    enrollment whose page :meth:`fill_enrollment` fills in.
    """

    @property
    def gateway(self) -> PaymentGateway:
        """The gateway for the engine (a real adapter, pointed at a fake server)."""
        ...

    @property
    def currency(self) -> str:
        """The currency the gateway charges in (``CLP`` for QVO, ``MXN`` for Openpay)."""
        ...

    def card_token(self, customer_id: str, behavior: Behavior) -> str:
        """A token, as the gateway's card form would give it, for a new card of this customer
        that pays as ``behavior`` says."""
        ...

    def fill_enrollment(self, customer_id: str, redirect_url: str, behavior: Behavior) -> None:
        """Act as the customer on the gateway's enrollment page: enter a new card that pays as
        ``behavior`` says."""
        ...

    def script(self, customer_id: str, behavior: Behavior) -> None:
        """From now on, every card of this customer pays as ``behavior`` says."""
        ...

    def charges_taken(self, customer_id: str) -> int:
        """How many charges took money from this customer, as the gateway's books show."""
        ...

    def notification(self, customer_id: str) -> Notification:
        """The webhook the gateway sends about this customer's latest charge, as the host's
        endpoint receives it (gateways with :attr:`~billing.ports.Capability.NOTIFICATIONS`)."""
        ...

    def forged_notification(self, customer_id: str) -> Notification:
        """A webhook shaped exactly like a genuine one, claiming that this customer's latest
        charge succeeded, that the gateway never sent."""
        ...

    def lose_next_refund_answer(self) -> None:
        """Make the gateway take the next refund, then lose its answer (a timeout)."""
        ...

    def with_bad_credentials(self) -> PaymentGateway:
        """The same gateway configured with credentials the gateway refuses."""
        ...

    def close(self) -> None:
        """Stop any server the simulation started."""
        ...


@runtime_checkable
class LinkSimulation(GatewaySimulation, Protocol):
    """The simulation of a gateway that collects through payment links
    (:attr:`~billing.ports.Capability.PAY_BY_LINK`): every charge is a link the scripted customer
    pays (or not) later, and the gateway notifies the host when it is paid (or expires).

    The customer's "card token" (:meth:`card_token`) is the payer's e-mail address, the payment
    method links are sent to. Notifications the gateway sends are kept, in order, until
    :meth:`take_notifications` hands them over: a scenario delivers them to
    :meth:`~billing.engine.Engine.receive_notification`, a test may drop, replay or reorder them.
    """

    def pay_link(self, reference: str, *, late: bool = False) -> None:
        """Act as the customer: pay the link of the charge the gateway calls ``reference`` (the
        attempt's reference). ``late``: although it expired unpaid (a transfer the bank
        confirmed after the expiry). The gateway then notifies (see
        :meth:`take_notifications`)."""
        ...

    def take_notifications(self) -> list[Notification]:
        """Every notification the gateway sent since the last call, oldest first, as the host's
        webhook endpoint receives them (the gateway saw each answered ``200``)."""
        ...


def link_simulation(sim: GatewaySimulation) -> LinkSimulation | None:
    """``sim`` as a :class:`LinkSimulation` when its gateway collects through payment links, else
    ``None``.

    :raises InvalidArgument: for a pay-by-link gateway whose simulation lacks the levers.
    """
    if Capability.PAY_BY_LINK not in sim.gateway.capabilities:
        return None
    if not isinstance(sim, LinkSimulation):
        rule = "must simulate its payers (pay_link, take_notifications): it sends payment links"
        raise InvalidArgument("gateway", rule, sim.gateway.name)
    return sim


class FakeSimulation:
    """The in-process :class:`FakeGateway`: a token is a name, and behaviors are per customer."""

    def __init__(self, fake: FakeGateway | None = None) -> None:
        self.fake = fake or FakeGateway()
        self._cards: defaultdict[str, int] = defaultdict(int)

    @property
    def gateway(self) -> PaymentGateway:
        return self.fake

    @property
    def currency(self) -> str:
        return "CLP"

    def card_token(self, customer_id: str, behavior: Behavior) -> str:
        self.fake.script(customer_id, behavior)
        self._cards[customer_id] += 1
        count = self._cards[customer_id]
        return f"tok_{customer_id}" if count == 1 else f"tok_{customer_id}_{count}"

    def fill_enrollment(self, customer_id: str, redirect_url: str, behavior: Behavior) -> None:
        raise InvalidArgument("gateway", "must enrol cards on its own page; fake takes tokens")

    def script(self, customer_id: str, behavior: Behavior) -> None:
        self.fake.script(customer_id, behavior)

    def charges_taken(self, customer_id: str) -> int:
        return len(self.fake.charges_taken(customer_id))

    def notification(self, customer_id: str) -> Notification:
        raise InvalidArgument("gateway", "must send notifications; fake sends none")

    def forged_notification(self, customer_id: str) -> Notification:
        raise InvalidArgument("gateway", "must send notifications; fake sends none")

    def lose_next_refund_answer(self) -> None:
        self.fake.lose_refund_answers()

    def with_bad_credentials(self) -> PaymentGateway:
        raise InvalidArgument("gateway", "must have credentials; fake has none")

    def close(self) -> None:
        """Nothing to stop."""


def _loaded(name: str, loopback: bool, clock: Callable[[], datetime] | None) -> GatewaySimulation:
    (entry,) = entry_points(group=GROUP, name=name)
    factory: Callable[..., GatewaySimulation] = entry.load()
    return factory(loopback=loopback, clock=clock)


def names() -> list[str]:
    """The gateways with an installed simulation."""
    return sorted({"fake", *(entry.name for entry in entry_points(group=GROUP))})


def simulation(
    name: str, *, loopback: bool = True, clock: Callable[[], datetime] | None = None
) -> GatewaySimulation:
    """Start the simulation of the gateway called ``name``: its adapter talks to its fake
    server over HTTP on loopback, or in process without sockets if not ``loopback`` (the
    in-process ``fake`` has no server either way). ``clock`` is the fake server's time (the
    engine's test clock in a scenario), for payments that settle later."""
    if name == "fake":
        return FakeSimulation()
    if name not in names():
        known = ", ".join(names())
        raise InvalidArgument("gateway", f"must be a gateway with a simulation ({known})", name)
    return _loaded(name, loopback, clock)
