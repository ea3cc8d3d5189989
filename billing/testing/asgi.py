"""What the gateways' fake servers share: an in-process transport, a real server, faults.

Not imported by :mod:`billing.testing` itself: it needs starlette and uvicorn, which only the
fake servers use.

Each gateway's fake is an ASGI (starlette) app. Tests reach it in process through
:class:`InProcessTransport`, an httpx transport that runs the app without a socket, or over real
sockets on loopback with :func:`serve` (uvicorn in a thread). ``billing fake-gateways serve`` serves
every installed fake on one port, each under its own path.

Faults are injected on demand through :class:`Faults`; a fake honours them the same way in
process and over sockets:

* ``latency``: every request waits this long before it is handled;
* ``charge_timeouts``: the next N charges are committed, then their answer is lost (in process the
  client gets a ``ReadTimeout``; over sockets the connection is dropped after the commit);
* ``refund_timeouts``: the same for the next N refunds;
* ``server_errors``: the next N requests get the gateway's 500 error body, and nothing is done;
* ``html_errors``: the next N requests get an HTML error page (502), and nothing is done;
* ``dropped_connections``: the next N requests are dropped before anything is done.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field, fields
from typing import Any

import anyio.from_thread
import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.responses import HTMLResponse, Response
from starlette.routing import Mount
from starlette.types import ASGIApp

__all__ = ["DROP_HEADER", "Faults", "InProcessTransport", "dropped", "mounted", "run", "serve"]

DROP_HEADER = "x-fake-drop-connection"
"""A fake sets this header on a response whose answer must be lost (after any commit)."""


@dataclass
class Faults:
    """Faults a fake injects; counters go down as faults are served. Thread-safe enough for
    tests: each counter is read and decremented under the fake's own lock."""

    latency: float = 0.0
    charge_timeouts: int = 0
    refund_timeouts: int = 0
    server_errors: int = 0
    html_errors: int = 0
    dropped_connections: int = 0
    in_flight: int = field(default=0, init=False)
    """Requests waiting out ``latency`` right now (read-only: the fake counts them)."""
    peak_in_flight: int = field(default=0, init=False)
    """The most requests that waited out ``latency`` at once: how much concurrency the fake
    sustained."""

    @classmethod
    def settable(cls) -> frozenset[str]:
        """The faults a test may set (the counters of in-flight requests are the fake's)."""
        return frozenset(item.name for item in fields(cls) if item.init)

    def take(self, name: str) -> bool:
        """Use one of the named fault's remaining occurrences, if any."""
        left = int(getattr(self, name))
        if left > 0:
            setattr(self, name, left - 1)
            return True
        return False

    async def delay(self) -> None:
        """Wait out ``latency``, counting the requests that wait at once."""
        if self.latency <= 0:
            return
        self.in_flight += 1  # one event loop runs every request: no lock needed
        self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
        try:
            await asyncio.sleep(self.latency)
        finally:
            self.in_flight -= 1

    def early_answer(self) -> Response | None:
        """A dropped connection or an HTML error page, if one is due (call under the fake's
        lock); the gateway-specific 500 body is the fake's own."""
        if self.take("dropped_connections"):
            return dropped()
        if self.take("html_errors"):
            return HTMLResponse("<html><body><h1>502 Bad Gateway</h1></body></html>", 502)
        return None


def dropped() -> Response:
    """A response that stands for a lost answer: the transport or server drops it."""
    return Response(status_code=599, headers={DROP_HEADER: "1"})


class InProcessTransport(httpx.BaseTransport):
    """An httpx transport that runs an ASGI app in this process, with no socket.

    A response marked with :data:`DROP_HEADER` becomes an ``httpx.ReadTimeout``: the app did its
    work, and the client never heard back.
    """

    def __init__(self, app: ASGIApp) -> None:
        self._inner = httpx.ASGITransport(app=app)
        self._portal_context = anyio.from_thread.start_blocking_portal()
        self._portal = self._portal_context.__enter__()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        body = request.read()

        async def roundtrip() -> tuple[int, list[tuple[bytes, bytes]], bytes]:
            inner = httpx.Request(
                request.method, request.url, headers=request.headers, content=body
            )
            response = await self._inner.handle_async_request(inner)
            content = await response.aread()
            return response.status_code, response.headers.raw, content

        status, headers, content = self._portal.call(roundtrip)
        if any(name.lower() == DROP_HEADER.encode() for name, _ in headers):
            raise httpx.ReadTimeout("the fake dropped the answer", request=request)
        return httpx.Response(status, headers=headers, content=content, request=request)

    def close(self) -> None:
        self._portal_context.__exit__(None, None, None)


class _DropConnections:
    """ASGI middleware for real sockets: a response marked to be dropped starts, then breaks off.

    The headers of a 200 with a body length go out, and the app fails before the body: uvicorn
    closes the connection, and the client sees an incomplete answer (an unknown outcome).
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def guarded(message: Any) -> None:
            if message["type"] == "http.response.start":
                names = {name.lower() for name, _ in message.get("headers", [])}
                if DROP_HEADER.encode() in names:
                    await send(
                        {
                            "type": "http.response.start",
                            "status": 200,
                            "headers": [
                                (b"content-type", b"application/json"),
                                (b"content-length", b"64"),
                            ],
                        }
                    )
                    raise ConnectionAbortedError("the fake drops this answer")
            await send(message)

        await self.app(scope, receive, guarded)


class _QuietDrops(logging.Filter):
    """Keep uvicorn from logging the deliberate drops as application errors."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.exc_info and isinstance(record.exc_info[1], ConnectionAbortedError))


logging.getLogger("uvicorn.error").addFilter(_QuietDrops())


def _free_port(host: str) -> int:
    with socket.socket() as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


def _config(app: ASGIApp, host: str, port: int) -> uvicorn.Config:
    return uvicorn.Config(
        _DropConnections(app),
        host=host,
        port=port,
        log_level="warning",
        access_log=False,
        backlog=2048,
        limit_concurrency=None,
        timeout_keep_alive=30,
    )


@contextmanager
def serve(app: ASGIApp, host: str = "127.0.0.1", port: int | None = None) -> Iterator[str]:
    """Serve ``app`` with uvicorn on ``host:port`` (a free port by default) in a thread, and yield
    its base URL; stopped when the block ends."""
    port = port or _free_port(host)
    server = uvicorn.Server(_config(app, host, port))
    thread = threading.Thread(target=server.run, name=f"fake-{port}", daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError(f"the fake server did not start on {host}:{port}")
        time.sleep(0.01)
    try:
        yield f"http://{host}:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def mounted(apps: Mapping[str, ASGIApp]) -> Starlette:
    """One app serving each of ``apps`` under ``/<name>``."""
    return Starlette(routes=[Mount(f"/{name}", app=app) for name, app in apps.items()])


def run(app: ASGIApp, listener: socket.socket) -> None:
    """Serve ``app`` on ``listener`` (a socket already bound and listening, so that the caller
    knows the port is its own before it says so) in the foreground until interrupted (SIGINT or
    SIGTERM), which ends in :class:`KeyboardInterrupt` (exit 130 from the command line).

    uvicorn stops gracefully on the signal and then raises it again; should that second signal
    be lost (a race with asyncio's own SIGINT handling, seen once on a loaded machine), the
    interruption is raised here, so a stopped server never reads as a clean exit.
    """
    host, port = listener.getsockname()[:2]
    server = uvicorn.Server(_config(app, host, port))
    server.run(sockets=[listener])
    if server.should_exit:
        raise KeyboardInterrupt
