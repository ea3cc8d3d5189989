"""HTTP plumbing shared by the gateway adapters: clients, safe retries, secrets.

The one rule about retries (ActiveMerchant's, and every lesson in ``gateway-libraries.md`` §2.2):
a request is retried automatically **only** when it surely never left this machine (the
connection was refused, or could not be opened in time). Anything that fails after the request
may have reached the gateway (a read timeout, a reset, a 5xx, an HTML error page) has an
**unknown** outcome: the adapter says so, and the engine looks the operation up before any new
attempt.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from types import TracebackType
from typing import Any, ClassVar, Self

import httpx

from billing.domain.errors import GatewayError
from billing.domain.payments import ErrorCode

__all__ = [
    "HttpGateway",
    "NeverSent",
    "OutcomeUnknown",
    "Secret",
    "new_client",
    "parse_json",
    "send",
]


class Secret:
    """A credential that never shows itself in a repr, a log line or an exception."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        if not isinstance(value, str) or not value:
            raise ValueError("a secret must be a non-empty string")
        self._value = value

    def reveal(self) -> str:
        """The value, for the one place that must send it (an Authorization header)."""
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__


class NeverSent(Exception):
    """The request never reached the gateway (every try was refused before sending)."""


class OutcomeUnknown(Exception):
    """The request may have reached the gateway, but no usable answer came back."""


class HttpGateway:
    """What every HTTP adapter shares: its name, the lifetime of its httpx client, and the error
    of an operation whose request never left or got no answer."""

    _name: str
    _client: httpx.Client
    label: ClassVar[str]
    """The gateway's own name, in messages (``"Khipu"``)."""

    @property
    def name(self) -> str:
        """The name payment methods refer to (the gateway's own unless given another)."""
        return self._name

    def close(self) -> None:
        """Release the HTTP connections (and the transport)."""
        self._client.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def _unanswered(self, operation: str, exc: NeverSent | OutcomeUnknown) -> GatewayError:
        """The retryable :class:`GatewayError` of an operation other than a charge whose request
        surely never left (``gateway_unavailable``) or got no answer (``gateway_timeout``: it
        may have happened)."""
        if isinstance(exc, NeverSent):
            return GatewayError(
                self._name,
                ErrorCode.GATEWAY_UNAVAILABLE.value,
                f"{operation}: the request never reached {self.label}",
                retryable=True,
            )
        return GatewayError(
            self._name,
            ErrorCode.GATEWAY_TIMEOUT.value,
            f"{operation}: {self.label} did not answer; the outcome is unknown",
            retryable=True,
        )


_NEVER_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)


def new_client(
    base_url: str,
    *,
    auth: httpx.Auth | tuple[str, str] | None = None,
    headers: Mapping[str, str] | None = None,
    timeout: float = 30.0,
    transport: httpx.BaseTransport | None = None,
) -> httpx.Client:
    """An httpx client for one gateway: a base URL, credentials, and a timeout on every step."""
    return httpx.Client(
        base_url=base_url,
        auth=auth,
        headers=dict(headers or {}),
        timeout=httpx.Timeout(timeout, connect=min(timeout, 10.0)),
        transport=transport,
        # as many connections as calls in flight: the engine bounds those (``threads``)
        limits=httpx.Limits(max_connections=None, max_keepalive_connections=64),
    )


def send(
    client: httpx.Client,
    method: str,
    url: str,
    *,
    retries: int = 2,
    backoff: float = 0.1,
    **kwargs: Any,
) -> httpx.Response:
    """Send a request, retrying only while it surely never left.

    :raises NeverSent: every try failed before the request was sent.
    :raises OutcomeUnknown: the request may have been received, and no answer came back.
    """
    for attempt in range(retries + 1):
        try:
            return client.request(method, url, **kwargs)
        except _NEVER_SENT as exc:
            if attempt == retries:
                raise NeverSent(type(exc).__name__) from None
            time.sleep(backoff * (2**attempt))
        except httpx.HTTPError as exc:  # timeouts, resets, protocol errors after sending
            raise OutcomeUnknown(type(exc).__name__) from None
    raise AssertionError("unreachable")  # pragma: no cover


def parse_json(response: httpx.Response) -> Any | None:
    """The response's JSON body, or ``None`` when it is not JSON (an HTML error page, say)."""
    try:
        return response.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None
