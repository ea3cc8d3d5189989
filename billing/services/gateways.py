"""The configured gateways as use cases need them: found by name, checked for a capability
before use, and with each customer registered at the gateway before anything else."""

from __future__ import annotations

from billing.domain.errors import ConcurrentUpdate, InvalidArgument
from billing.ports import Capability, CustomerRequest, PaymentGateway
from billing.services.context import Context, log


def gateway(ctx: Context, name: str) -> PaymentGateway:
    """The configured gateway called ``name``, or an error naming the ones there are."""
    found = ctx.gateways.get(name) if isinstance(name, str) else None
    if found is None:
        configured = ", ".join(sorted(ctx.gateways)) or "none"
        raise InvalidArgument("gateway", f"must be a configured gateway ({configured})", name)
    return found


def require(port: PaymentGateway, capability: Capability, doing: str) -> None:
    """Refuse to use what a gateway does not declare it can do."""
    if capability not in port.capabilities:
        rule = f"must be a gateway that can {doing}; {port.name} lacks {capability.value}"
        raise InvalidArgument("gateway", rule, port.name)


def customer_reference(ctx: Context, port: PaymentGateway, customer_id: str) -> str | None:
    """The customer's id at the gateway, registering them there first if the gateway keeps
    customers (``None`` for gateways that do not).

    The gateway gets the customer's ``name`` and ``email`` metadata, which QVO and Openpay
    require. Two concurrent first registrations leave one unused customer at the gateway; the
    engine keeps the first one saved.
    """
    with ctx.store.transaction() as tx:
        customer = tx.customer(customer_id)
        known = tx.gateway_customer(customer_id, port.name)
    if known is not None or Capability.CUSTOMERS not in port.capabilities:
        return known
    reference = port.register_customer(
        CustomerRequest(
            customer_id=customer_id,
            name=customer.metadata.get("name"),
            email=customer.metadata.get("email"),
            metadata=customer.metadata,
        )
    )
    try:
        with ctx.store.transaction() as tx:
            tx.add_gateway_customer(customer_id, port.name, reference, ctx.clock.now())
    except ConcurrentUpdate:
        with ctx.store.transaction() as tx:
            saved = tx.gateway_customer(customer_id, port.name)
        log.warning(
            "gateway.customer_registered_twice gateway=%s customer=%s unused=%s",
            port.name,
            customer_id,
            reference,
        )
        assert saved is not None
        return saved
    return reference
