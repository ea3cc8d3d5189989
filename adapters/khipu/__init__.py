"""Khipu (Chile): the gateway adapter and its fake server.

:class:`KhipuGateway` implements :class:`billing.ports.PaymentGateway` over Khipu's REST API 2.0
(pay-by-link bank transfers: signed requests, payments, notification tokens, refunds);
:func:`from_environment` builds one from ``BILLING_KHIPU_*`` variables (the ``billing.gateways``
entry point). :class:`FakeKhipu` and :func:`create_app` are a faithful local stand-in for Khipu;
:func:`fake_app` serves a default one (the ``billing.fake_gateways`` entry point);
:mod:`adapters.khipu.simulation` runs the adapter against it for scenarios. See
``docs/adapters/khipu.md``.
"""

import os
from collections.abc import Mapping
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


def fake_worker_environment(
    base_url: str, environ: Mapping[str, str] | None = None
) -> dict[str, str]:
    """What a worker needs to charge through :func:`fake_app`'s fake served at ``base_url``:
    the variables :func:`from_environment` reads, with the credentials the fake accepts (as
    :func:`fake_app` reads them: ``BILLING_KHIPU_FAKE_RECEIVER_ID`` and
    ``BILLING_KHIPU_FAKE_SECRET``, else the fake's defaults). ``billing fake-gateways serve``
    prints them."""
    from adapters.khipu.fake import DEFAULT_RECEIVER_ID, DEFAULT_SECRET

    env = os.environ if environ is None else environ
    return {
        "BILLING_KHIPU_RECEIVER_ID": (
            env.get("BILLING_KHIPU_FAKE_RECEIVER_ID") or DEFAULT_RECEIVER_ID
        ),
        "BILLING_KHIPU_SECRET": env.get("BILLING_KHIPU_FAKE_SECRET") or DEFAULT_SECRET,
        "BILLING_KHIPU_URL": f"{base_url}/api/2.0",  # the fake also answers at its root
    }


__all__ = [
    "FakeKhipu",
    "KhipuGateway",
    "create_app",
    "fake_app",
    "fake_worker_environment",
    "from_environment",
]
