"""Payment methods: gateway customers, tokens stored through the gateway, cards enrolled on the
gateway's own page, and the retry of invoices in dunning when a new default arrives.

The engine keeps only what a gateway gives back (its customer id, its stored card's id and a
label); card data never passes through it.
"""

from __future__ import annotations

import dataclasses
from urllib.parse import urlsplit

from billing.domain import _checks
from billing.domain.customers import CardEnrollment, EnrollmentStatus, PaymentMethod
from billing.domain.errors import GatewayError, InvalidArgument
from billing.domain.subscriptions import replace_payment_method
from billing.ports import AttachRequest, Capability, EnrollmentRequest
from billing.services.billing_run import apply, run_unless_stuck, send
from billing.services.context import Claim, Context, new_id
from billing.services.gateways import customer_reference, gateway, require


def add_payment_method(
    ctx: Context,
    claim: Claim | None,
    *,
    customer_id: str,
    gateway_name: str,
    token: str,
    label: str | None,
    default: bool,
) -> PaymentMethod:
    """Store the card a gateway token stands for, at the gateway, and keep its reference.

    The token comes from the gateway's own card form (Openpay.js, a hosted page); a token that
    looks like a card number is refused before anything is sent.
    """
    _checks.flag("default", default)
    port = gateway(ctx, gateway_name)
    method = PaymentMethod(  # validates the token and the label before the gateway sees them
        id=new_id("pm"),
        customer_id=customer_id,
        gateway=port.name,
        token=token,
        label=label,
        is_default=default,
        created_at=ctx.clock.now(),
    )
    if Capability.PAY_BY_LINK not in port.capabilities:  # its token is the payer's e-mail
        require(port, Capability.CARD_TOKENS, "store a card from a token (use an enrollment)")
    stored = port.attach_payment_method(
        AttachRequest(
            customer_id=customer_id,
            customer_reference=customer_reference(ctx, port, customer_id),
            token=token,
        )
    )
    method = dataclasses.replace(method, token=stored.reference, label=label or stored.label)
    with ctx.store.transaction() as tx:
        tx.add_payment_method(method)
        if claim is not None:
            claim.remember(tx, method)
    return method


def replace_default_payment_method(
    ctx: Context,
    claim: Claim | None,
    *,
    customer_id: str,
    gateway_name: str,
    token: str,
    label: str | None,
) -> PaymentMethod:
    """A new default payment method; every open invoice of the customer is retried with it at
    once (in dunning, collected on their own, or waiting for a new payment method).

    This reactivates an unpaid subscription when the retried invoice is paid.
    """
    method = add_payment_method(
        ctx,
        claim,
        customer_id=customer_id,
        gateway_name=gateway_name,
        token=token,
        label=label,
        default=True,
    )
    retry_dunning(ctx, customer_id)
    return method


def retry_dunning(ctx: Context, customer_id: str) -> None:
    """Retry at once, with the customer's new default method, every invoice still collected:
    those in dunning, and those of any subscription (stopped ones too) collected on their own."""
    now = ctx.clock.now()
    with ctx.store.transaction() as tx:
        in_dunning = [
            s.id for s in tx.subscriptions(customer_id) if s.dunning is not None or s.collections
        ]
    for subscription_id in in_dunning:
        run_unless_stuck(ctx, subscription_id, now, why="retry")
        with ctx.store.transaction() as tx:
            loaded = tx.subscription(subscription_id)
            outcome = replace_payment_method(loaded.subscription, at=now)
            _, sends = apply(ctx, tx, loaded, outcome, now)
        send(ctx, sends, now)
        # a reactivation may bill the rest of a period now; a subscription whose billing is
        # stuck (no UF rate yet) still got its invoices retried with the new method
        run_unless_stuck(ctx, subscription_id, now, why="retry")


def start_enrollment(
    ctx: Context, claim: Claim | None, *, customer_id: str, gateway_name: str, return_url: str
) -> CardEnrollment:
    """Begin storing a card on the gateway's own page: send the customer to the result's
    ``redirect_url``; the gateway sends them back to ``return_url``."""
    port = gateway(ctx, gateway_name)
    _checks.text("return_url", return_url, max_length=2000)
    if urlsplit(return_url).scheme not in ("http", "https") or not urlsplit(return_url).netloc:
        raise InvalidArgument("return_url", "must be an absolute http(s) URL", return_url)
    require(port, Capability.CARD_ENROLLMENT, "enrol a card on its own page")
    started = port.start_enrollment(
        EnrollmentRequest(
            customer_id=customer_id,
            customer_reference=customer_reference(ctx, port, customer_id),
            return_url=return_url,
        )
    )
    enrollment = CardEnrollment(
        gateway=port.name,
        reference=started.reference,
        customer_id=customer_id,
        status=EnrollmentStatus.PENDING,
        redirect_url=started.redirect_url,
        created_at=ctx.clock.now(),
    )
    with ctx.store.transaction() as tx:
        tx.add_enrollment(enrollment)
        if claim is not None:
            claim.remember(tx, enrollment)
    return enrollment


def complete_enrollment(
    ctx: Context, claim: Claim | None, *, gateway_name: str, reference: str
) -> CardEnrollment:
    """Ask the gateway how an enrollment ended; a stored card becomes the customer's default
    payment method and invoices in dunning are retried with it. Completing twice (the return
    page and a notification racing) stores the card once."""
    port = gateway(ctx, gateway_name)
    _checks.text("reference", reference, max_length=128)
    with ctx.store.transaction() as tx:
        enrollment = tx.enrollment(port.name, reference)
        known = tx.gateway_customer(enrollment.customer_id, port.name)
    if enrollment.status is not EnrollmentStatus.PENDING:
        return enrollment
    result = port.complete_enrollment(known, reference)
    if result.status is EnrollmentStatus.PENDING:
        return enrollment
    now = ctx.clock.now()
    method = None
    if result.status is EnrollmentStatus.SUCCEEDED:
        if result.method is None:
            raise GatewayError(port.name, "processing_error", "a stored card without a reference")
        method = PaymentMethod(
            id=new_id("pm"),
            customer_id=enrollment.customer_id,
            gateway=port.name,
            token=result.method.reference,
            label=result.method.label,
            is_default=True,
            created_at=now,
        )
    with ctx.store.transaction() as tx:
        won = tx.finish_enrollment(
            port.name, reference, result.status, now, None if method is None else method.id
        )
        if won and method is not None:
            tx.add_payment_method(method)
        finished = tx.enrollment(port.name, reference)
        if claim is not None:
            claim.remember(tx, finished)
    if won and method is not None:
        retry_dunning(ctx, enrollment.customer_id)
    return finished
