"""Openpay (Mexico): the gateway adapter and its fake server.

:class:`OpenpayGateway` implements :class:`billing.ports.PaymentGateway` over Openpay's REST API
(customers, cards from openpay.js tokens, stored-card charges, whole refunds, webhooks);
:func:`from_environment` builds one from ``BILLING_OPENPAY_*`` variables (the ``billing.gateways``
entry point). :class:`FakeOpenpay` and :func:`create_app` are a faithful local stand-in for
Openpay; :func:`fake_app` serves a default one (the ``billing.fake_gateways`` entry point);
:mod:`adapters.openpay.simulation` runs the adapter against it for scenarios. See
``docs/adapters/openpay.md``.
"""

import os
from collections.abc import Mapping
from typing import Any

from adapters.openpay.gateway import OpenpayGateway, from_environment

_FAKE = frozenset({"FakeOpenpay", "create_app", "fake_app"})


def __getattr__(attribute: str) -> Any:
    """The fake server's names, imported on first use: a worker that only charges through the
    adapter never loads starlette or uvicorn."""
    if attribute in _FAKE:
        from adapters.openpay import fake

        return getattr(fake, attribute)
    raise AttributeError(f"module {__name__!r} has no attribute {attribute!r}")


def fake_worker_environment(
    base_url: str, environ: Mapping[str, str] | None = None
) -> dict[str, str]:
    """What a worker needs to charge through :func:`fake_app`'s fake served at ``base_url``:
    the variables :func:`from_environment` reads, with the credentials the fake accepts (as
    :func:`fake_app` reads them: ``BILLING_OPENPAY_FAKE_MERCHANT_ID`` and
    ``BILLING_OPENPAY_FAKE_PRIVATE_KEY``, else the fake's defaults). ``billing fake-gateways
    serve`` prints them."""
    from adapters.openpay.fake import DEFAULT_MERCHANT_ID, DEFAULT_PRIVATE_KEY

    env = os.environ if environ is None else environ
    return {
        "BILLING_OPENPAY_MERCHANT_ID": (
            env.get("BILLING_OPENPAY_FAKE_MERCHANT_ID") or DEFAULT_MERCHANT_ID
        ),
        "BILLING_OPENPAY_PRIVATE_KEY": (
            env.get("BILLING_OPENPAY_FAKE_PRIVATE_KEY") or DEFAULT_PRIVATE_KEY
        ),
        "BILLING_OPENPAY_BASE_URL": base_url,
    }


__all__ = [
    "FakeOpenpay",
    "OpenpayGateway",
    "create_app",
    "fake_app",
    "fake_worker_environment",
    "from_environment",
]
