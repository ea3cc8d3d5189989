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


__all__ = ["FakePayvalida", "PayvalidaGateway", "create_app", "fake_app", "from_environment"]
