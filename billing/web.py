"""Webhook endpoints for the host's web app: one ASGI app (Starlette) with a path per gateway.

Mount it into a FastAPI or Starlette app::

    from billing.web import notifications_app

    app.mount("/billing/notifications", notifications_app(engine))

and give each gateway its path as the notification URL (``/billing/notifications/khipu``,
``/billing/notifications/payvalida``...). Each request is answered as soon as the notification is
kept in the engine's inbox (``process="background"``, the default: it is then processed right
after the answer, and by the worker should this process stop first), or once it is processed
(``process="inline"``). The answers:

* ``200 OK`` for a notification kept (processed or not yet) or received before;
* ``400`` for one refused (unreadable, or a bad signature), ``413`` for a body over the limit,
  ``404`` for a path that names no gateway with notifications, ``405`` for a method other than
  POST: nothing is kept;
* ``503`` when the database cannot be reached, so that the gateway delivers it again.

The body is ``OK``, or ``ERROR: <reason>`` (Payvalida's documented answers; the other gateways
read only the status). :func:`answer` gives the same status and text for a host that writes its
own endpoint, such as a Django view.
"""

from __future__ import annotations

import logging
from typing import Literal

from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from billing.domain.errors import BillingError, InvalidArgument
from billing.engine import Engine
from billing.ports import Capability
from billing.services.notifications import MAX_BODY_BYTES, NotificationReceipt, NotificationStatus

log = logging.getLogger("billing")

Processing = Literal["background", "inline"]


def answer(receipt: NotificationReceipt) -> tuple[int, str]:
    """The HTTP status and plain-text body to answer a gateway with for ``receipt``."""
    if receipt.status is NotificationStatus.REJECTED:
        return 400, f"ERROR: {receipt.message or 'rejected'}"
    return 200, "OK"


def notifications_app(
    engine: Engine,
    *,
    process: Processing = "background",
    max_body_bytes: int = MAX_BODY_BYTES,
) -> Starlette:
    """An ASGI app that takes in the notifications of every gateway of ``engine`` that sends
    them, at ``/<gateway name>``; see the module docstring."""
    if process not in ("background", "inline"):
        raise InvalidArgument("process", "must be 'background' or 'inline'", process)
    if not isinstance(max_body_bytes, int) or not 0 < max_body_bytes <= MAX_BODY_BYTES:
        rule = f"must be a whole number of bytes from 1 to {MAX_BODY_BYTES}"
        raise InvalidArgument("max_body_bytes", rule, max_body_bytes)
    names = sorted(
        name
        for name, port in engine.gateways.items()
        if Capability.NOTIFICATIONS in port.capabilities
    )

    async def receive(request: Request) -> PlainTextResponse:
        gateway = request.path_params["gateway"]
        if gateway not in names:
            return PlainTextResponse("ERROR: no such gateway", status_code=404)
        body = await _body(request, max_body_bytes)
        if body is None:
            return PlainTextResponse("ERROR: the body is too large", status_code=413)
        headers = dict(request.headers.items())
        try:
            receipt = await run_in_threadpool(
                engine.receive_notification,
                gateway,
                headers=headers,
                body=body,
                process_now=process == "inline",
            )
        except BillingError as exc:  # the database (or the gateway, reading it) is unreachable
            log.warning("notification.unavailable gateway=%s error=%s", gateway, exc)
            return PlainTextResponse("ERROR: try again later", status_code=503)
        status, text = answer(receipt)
        task = None
        if process == "background" and receipt.status is NotificationStatus.RECEIVED:
            assert receipt.notification_id is not None
            task = BackgroundTask(_process_quietly, engine, receipt.notification_id)
        return PlainTextResponse(text, status_code=status, background=task)

    return Starlette(routes=[Route("/{gateway}", receive, methods=["POST"])])


async def _body(request: Request, limit: int) -> bytes | None:
    """The request body, or ``None`` as soon as it is known to be larger than ``limit``."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        return None
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def _process_quietly(engine: Engine, notification_id: str) -> None:
    """Process a kept notification after the answer went out; a failure leaves it to the
    worker (the notification stays in the inbox)."""
    try:
        engine.process_notification(notification_id)
    except Exception:
        log.exception("notification.process_failed notification=%s", notification_id)
