"""The fake gateway over HTTP: one :class:`FakeGateway` shared by several processes.

Tests that run several worker processes serve one fake on loopback with :func:`serve` and point
each worker at it (``BILLING_FAKE_GATEWAY_URL``); the workers reach it through
:class:`RemoteFakeGateway`. The fake's books (calls per idempotency key, charges taken) stay in
the serving process, where the test reads them; a test in another process reads them with
``GET /books`` (:meth:`RemoteFakeGateway.books`).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx

from billing.domain.money import Money
from billing.domain.payments import (
    DeclineKind,
    ErrorCode,
    PaymentResult,
    PaymentStatus,
    RefundStatus,
)
from billing.ports import ChargeRequest, RefundRequest, RefundResult, SyncRequest
from billing.testing.fake_gateway import CardOnFile, FakeGateway


def _money(data: Mapping[str, Any]) -> Money:
    return Money.from_minor(int(data["minor"]), str(data["currency"]))


def _money_json(money: Money) -> dict[str, Any]:
    return {"minor": money.minor, "currency": money.currency.code}


def _result_json(result: PaymentResult | None) -> dict[str, Any] | None:
    if result is None:
        return None
    return {
        "status": result.status.value,
        "decline": None if result.decline is None else result.decline.value,
        "code": result.code,
        "message": result.message,
        "reference": result.reference,
        "error": None if result.error is None else result.error.value,
        "action_url": result.action_url,
    }


def _result(data: Mapping[str, Any] | None) -> PaymentResult | None:
    if data is None:
        return None
    return PaymentResult(
        status=PaymentStatus(data["status"]),
        decline=None if data["decline"] is None else DeclineKind(data["decline"]),
        code=data["code"],
        message=data["message"],
        reference=data["reference"],
        error=None if data["error"] is None else ErrorCode(data["error"]),
        action_url=data.get("action_url"),
    )


class _Handler(BaseHTTPRequestHandler):
    fake: FakeGateway
    disable_nagle_algorithm = True  # answer at once: small writes must not wait for ACKs

    def do_GET(self) -> None:
        if self.path != "/books":
            self._reply(404, {"error": f"no route {self.path}"})
            return
        self._reply(200, books(self.fake))

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
        try:
            answer = self._route(self.path, body)
        except Exception as exc:  # the fake refuses bad requests; report them, do not crash
            self._reply(400, {"error": f"{type(exc).__name__}: {exc}"})
            return
        self._reply(200, answer)

    def _route(self, path: str, body: dict[str, Any]) -> object:
        fake = self.fake
        match path:
            case "/charge":
                request = ChargeRequest(
                    idempotency_key=body["idempotency_key"],
                    amount=_money(body["amount"]),
                    customer_id=body["customer_id"],
                    payment_method=body["payment_method"],
                    description=body["description"],
                    at=datetime.fromisoformat(body["at"]),
                    metadata=body.get("metadata") or {},
                )
                return _result_json(fake.charge(request))
            case "/sync":
                sync = SyncRequest(
                    idempotency_key=body["idempotency_key"],
                    reference=body["reference"],
                    amount=_money(body["amount"]),
                    customer_id=body["customer_id"],
                    at=datetime.fromisoformat(body["at"]),
                )
                return _result_json(fake.sync(sync))
            case "/refund":
                refund = fake.refund(
                    RefundRequest(
                        idempotency_key=body["idempotency_key"],
                        reference=body["reference"],
                        amount=_money(body["amount"]),
                        at=datetime.fromisoformat(body["at"]),
                    )
                )
                return {
                    "status": refund.status.value,
                    "reference": refund.reference,
                    "code": refund.code,
                    "message": refund.message,
                }
            case "/script":
                fake.script(body["customer_id"], body["behavior"])
                return {}
        raise LookupError(f"no route {path}")

    def _reply(self, status: int, answer: object) -> None:
        data = json.dumps(answer).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: object) -> None:
        """Quiet: the fake serves thousands of requests in a test."""


def books(fake: FakeGateway) -> dict[str, Any]:
    """The fake's books as JSON: calls per idempotency key, and every charge that took money."""
    return {
        "calls": dict(fake.calls),
        "charges": [
            {
                "idempotency_key": charge.idempotency_key,
                "customer_id": charge.customer_id,
                "amount": _money_json(charge.amount),
                "refunded": _money_json(charge.refunded),
                "reference": charge.reference,
                "at": charge.at.isoformat(),
            }
            for charge in fake.charges_taken()
        ],
    }


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 1024
    """Connections waiting to be accepted: a worker opens hundreds at once (the default, 5,
    drops the rest, and their clients wait a second before trying again)."""


@contextmanager
def serve(fake: FakeGateway, host: str = "127.0.0.1", port: int = 0) -> Iterator[str]:
    """Serve ``fake`` on ``host:port`` (a free port by default) and yield its base URL."""
    handler = type("FakeHandler", (_Handler,), {"fake": fake})
    server = _Server((host, port), handler)
    thread = threading.Thread(target=server.serve_forever, name="fake-gateway", daemon=True)
    thread.start()
    try:
        yield f"http://{host}:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


class RemoteFakeGateway(CardOnFile):
    """A :class:`~billing.ports.PaymentGateway` that forwards to a fake served by :func:`serve`."""

    def __init__(self, url: str, *, name: str = "fake", client: httpx.Client | None = None) -> None:
        self._name = name
        self._owns_client = client is None
        self._client = client or httpx.Client(
            base_url=url,
            timeout=60.0,
            limits=httpx.Limits(max_connections=None, max_keepalive_connections=256),
        )

    @property
    def name(self) -> str:
        return self._name

    def close(self) -> None:
        """Close the HTTP client this gateway made (a client passed in stays the caller's)."""
        if self._owns_client:
            self._client.close()

    def books(self) -> dict[str, Any]:
        """The served fake's books (see :func:`books`), from any process."""
        response = self._client.get("/books")
        response.raise_for_status()
        return response.json()  # type: ignore[no-any-return]

    def _post(self, path: str, body: dict[str, Any]) -> Any:
        response = self._client.post(path, json=body)
        response.raise_for_status()
        return response.json()

    def charge(self, request: ChargeRequest) -> PaymentResult:
        answer = self._post(
            "/charge",
            {
                "idempotency_key": request.idempotency_key,
                "amount": _money_json(request.amount),
                "customer_id": request.customer_id,
                "payment_method": request.payment_method,
                "description": request.description,
                "at": request.at.isoformat(),
                "metadata": dict(request.metadata),
            },
        )
        result = _result(answer)
        assert result is not None
        return result

    def sync(self, request: SyncRequest) -> PaymentResult | None:
        return _result(
            self._post(
                "/sync",
                {
                    "idempotency_key": request.idempotency_key,
                    "reference": request.reference,
                    "amount": _money_json(request.amount),
                    "customer_id": request.customer_id,
                    "at": request.at.isoformat(),
                },
            )
        )

    def refund(self, request: RefundRequest) -> RefundResult:
        answer = self._post(
            "/refund",
            {
                "idempotency_key": request.idempotency_key,
                "reference": request.reference,
                "amount": _money_json(request.amount),
                "at": request.at.isoformat(),
            },
        )
        return RefundResult(
            status=RefundStatus(answer["status"]),
            reference=answer["reference"],
            code=answer["code"],
            message=answer["message"],
        )

    def script(self, customer_id: str, behavior: str | list[str]) -> None:
        """Script the served fake for a customer (see :meth:`FakeGateway.script`)."""
        self._post("/script", {"customer_id": customer_id, "behavior": behavior})


def from_environment(environ: Mapping[str, str]) -> FakeGateway | RemoteFakeGateway | None:
    """The fake gateway a worker should use, from its environment (the ``billing.gateways``
    entry point): ``BILLING_FAKE_GATEWAY_URL`` reaches a served fake; ``BILLING_FAKE_GATEWAY``
    set to a behavior (``approve``...) makes an in-process one; otherwise there is none."""
    url = environ.get("BILLING_FAKE_GATEWAY_URL")
    if url:
        return RemoteFakeGateway(url)
    behavior = environ.get("BILLING_FAKE_GATEWAY")
    if behavior:
        return FakeGateway(default=behavior)
    return None
