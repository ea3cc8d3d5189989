"""Openpay (Mexico): the gateway adapter and its fake server.

:class:`OpenpayGateway` implements :class:`billing.ports.PaymentGateway` over Openpay's REST API
(customers, cards from openpay.js tokens, stored-card charges, whole refunds, webhooks);
:func:`from_environment` builds one from ``BILLING_OPENPAY_*`` variables (the ``billing.gateways``
entry point). :class:`FakeOpenpay` and :func:`create_app` are a faithful local stand-in for
Openpay; :func:`fake_app` serves a default one (the ``billing.fake_gateways`` entry point);
:mod:`adapters.openpay.simulation` runs the adapter against it for scenarios. See
``docs/adapters/openpay.md``.
"""

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


__all__ = ["FakeOpenpay", "OpenpayGateway", "create_app", "fake_app", "from_environment"]
