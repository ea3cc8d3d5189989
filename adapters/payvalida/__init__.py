"""Payvalida (Colombia): the gateway adapter and its fake server.

:class:`PayvalidaGateway` implements :class:`billing.ports.PaymentGateway` over Payvalida's
purchase orders (pay by link: every charge is an order the customer pays through its checkout
link; the payer's e-mail is the payment method; SHA-512 checksums; checksummed notifications);
:func:`from_environment` builds one from ``BILLING_PAYVALIDA_*`` variables (the
``billing.gateways`` entry point). :class:`FakePayvalida` and :func:`create_app` are a faithful
local stand-in for Payvalida; :func:`fake_app` serves a default one (the
``billing.fake_gateways`` entry point); :mod:`adapters.payvalida.simulation` runs the adapter
against it for scenarios. See ``docs/adapters/payvalida.md``.
"""

import os
from collections.abc import Mapping
from typing import Any

from adapters.payvalida.gateway import PayvalidaGateway, from_environment

_FAKE = frozenset({"FakePayvalida", "create_app", "fake_app"})


def __getattr__(attribute: str) -> Any:
    """The fake server's names, imported on first use: a worker that only charges through the
    adapter never loads starlette or uvicorn."""
    if attribute in _FAKE:
        from adapters.payvalida import fake

        return getattr(fake, attribute)
    raise AttributeError(f"module {__name__!r} has no attribute {attribute!r}")


def fake_worker_environment(
    base_url: str, environ: Mapping[str, str] | None = None
) -> dict[str, str]:
    """What a worker needs to charge through :func:`fake_app`'s fake served at ``base_url``:
    the variables :func:`from_environment` reads, with the credentials the fake accepts (as
    :func:`fake_app` reads them: ``BILLING_PAYVALIDA_FAKE_MERCHANT``,
    ``BILLING_PAYVALIDA_FAKE_FIXED_HASH`` and ``BILLING_PAYVALIDA_FAKE_NOTIFICATION_HASH``,
    else the fake's defaults). ``billing fake-gateways serve`` prints them."""
    from adapters.payvalida.fake import DEFAULT_FIXED_HASH, DEFAULT_MERCHANT

    env = os.environ if environ is None else environ
    variables = {
        "BILLING_PAYVALIDA_MERCHANT": (
            env.get("BILLING_PAYVALIDA_FAKE_MERCHANT") or DEFAULT_MERCHANT
        ),
        "BILLING_PAYVALIDA_FIXED_HASH": (
            env.get("BILLING_PAYVALIDA_FAKE_FIXED_HASH") or DEFAULT_FIXED_HASH
        ),
        "BILLING_PAYVALIDA_URL": base_url,
    }
    notification_hash = env.get("BILLING_PAYVALIDA_FAKE_NOTIFICATION_HASH")
    if notification_hash:  # otherwise both sides checksum notifications with the fixed hash
        variables["BILLING_PAYVALIDA_NOTIFICATION_HASH"] = notification_hash
    return variables


__all__ = [
    "FakePayvalida",
    "PayvalidaGateway",
    "create_app",
    "fake_app",
    "fake_worker_environment",
    "from_environment",
]
