"""QVO (Chile): the payment gateway adapter and its fake server.

:class:`QvoGateway` implements :class:`billing.ports.PaymentGateway` over QVO's REST API
(customers, Webpay Oneclick card inscriptions, stored-card charges, full refunds, webhooks);
:func:`from_environment` builds one from ``BILLING_QVO_API_TOKEN`` (the ``billing.gateways``
entry point). :class:`FakeQvo` and :func:`create_app` are a faithful local stand-in for QVO;
:func:`fake_app` serves a default one (the ``billing.fake_gateways`` entry point). See
``docs/adapters/qvo.md``.
"""

import os
from collections.abc import Mapping
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


def fake_worker_environment(
    base_url: str, environ: Mapping[str, str] | None = None
) -> dict[str, str]:
    """What a worker needs to charge through :func:`fake_app`'s fake served at ``base_url``:
    the variables :func:`from_environment` reads, with the token the fake accepts (as
    :func:`fake_app` reads it: ``BILLING_QVO_FAKE_TOKEN``, else the fake's default).
    ``billing fake-gateways serve`` prints them."""
    from adapters.qvo.fake import DEFAULT_TOKEN

    env = os.environ if environ is None else environ
    return {
        "BILLING_QVO_API_TOKEN": env.get("BILLING_QVO_FAKE_TOKEN") or DEFAULT_TOKEN,
        "BILLING_QVO_BASE_URL": base_url,
    }


__all__ = [
    "FakeQvo",
    "QvoGateway",
    "create_app",
    "fake_app",
    "fake_worker_environment",
    "from_environment",
]
