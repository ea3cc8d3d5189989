"""Khipu (Chile): the gateway adapter and its fake server.

:class:`KhipuGateway` implements :class:`billing.ports.PaymentGateway` over Khipu's REST API 2.0
(pay-by-link bank transfers: signed requests, payments, notification tokens, refunds);
:func:`from_environment` builds one from ``BILLING_KHIPU_*`` variables (the ``billing.gateways``
entry point). :class:`FakeKhipu` and :func:`create_app` are a faithful local stand-in for Khipu;
:func:`fake_app` serves a default one (the ``billing.fake_gateways`` entry point);
:mod:`adapters.khipu.simulation` runs the adapter against it for scenarios. See
``docs/adapters/khipu.md``.
"""

from typing import Any

from adapters.khipu.gateway import KhipuGateway, from_environment

_FAKE = frozenset({"FakeKhipu", "create_app", "fake_app"})


def __getattr__(attribute: str) -> Any:
    """The fake server's names, imported on first use: a worker that only charges through the
    adapter never loads starlette or uvicorn."""
    if attribute in _FAKE:
        from adapters.khipu import fake

        return getattr(fake, attribute)
    raise AttributeError(f"module {__name__!r} has no attribute {attribute!r}")


__all__ = ["FakeKhipu", "KhipuGateway", "create_app", "fake_app", "from_environment"]
