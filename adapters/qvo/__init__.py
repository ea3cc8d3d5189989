"""QVO (Chile): the payment gateway adapter and its fake server.

:class:`QvoGateway` implements :class:`billing.ports.PaymentGateway` over QVO's REST API
(customers, Webpay Oneclick card inscriptions, stored-card charges, full refunds, webhooks);
:func:`from_environment` builds one from ``BILLING_QVO_API_TOKEN`` (the ``billing.gateways``
entry point). :class:`FakeQvo` and :func:`create_app` are a faithful local stand-in for QVO;
:func:`fake_app` serves a default one (the ``billing.fake_gateways`` entry point). See
``docs/adapters/qvo.md``.
"""

from typing import Any

from adapters.qvo.gateway import QvoGateway, from_environment

_FAKE = frozenset({"FakeQvo", "create_app", "fake_app"})


def __getattr__(attribute: str) -> Any:
    """The fake server's names, imported on first use: a worker that only charges through the
    adapter never loads starlette or uvicorn."""
    if attribute in _FAKE:
        from adapters.qvo import fake

        return getattr(fake, attribute)
    raise AttributeError(f"module {__name__!r} has no attribute {attribute!r}")


__all__ = ["FakeQvo", "QvoGateway", "create_app", "fake_app", "from_environment"]
