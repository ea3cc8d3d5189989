"""What every use case needs: the store, the clock, the gateways, and idempotency keys."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import secrets
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import TypeVar

from billing.config import Settings
from billing.domain.errors import IdempotencyConflict, InvalidArgument
from billing.domain.exchange import ExchangeRates
from billing.domain.ledger import FinalDebt
from billing.domain.proration import ProrationUnit
from billing.ports import Clock, PaymentGateway
from billing.services.hooks import Hooks
from billing.store import codec
from billing.store.unit_of_work import Store, Tx

T = TypeVar("T")

log = logging.getLogger("billing")


def new_id(prefix: str) -> str:
    """A new random id such as ``sub_Hn4KU4mU5Gtym0RulcVOEw`` (16 random bytes)."""
    return f"{prefix}_{secrets.token_urlsafe(16)}"


def worker_name() -> str:
    """A name for this process in claims and logs: ``host:pid:random``."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


@dataclass
class Context:
    """The dependencies of the use cases, built once by the composition root."""

    store: Store
    clock: Clock
    gateways: Mapping[str, PaymentGateway] = field(default_factory=dict)
    rates: ExchangeRates | None = None
    settings: Settings = field(default_factory=Settings)
    hooks: Hooks = field(default_factory=Hooks)
    worker: str = field(default_factory=worker_name)
    """Who this engine is in claims: several engines on one database must differ."""

    @property
    def proration(self) -> ProrationUnit:
        return ProrationUnit(self.settings.proration)

    @property
    def final_debt(self) -> FinalDebt:
        return FinalDebt(self.settings.final_debt)


@dataclass(slots=True)
class Claim:
    """An idempotency key taken by a call: the call's transaction records its result under it."""

    key: str
    operation: str
    fingerprint: str
    at: datetime
    remembered: object = None
    """The encoded result :meth:`remember` recorded."""

    def remember(self, tx: Tx, result: object) -> None:
        """Record ``result`` as this call's result, in the transaction that makes the change.

        A concurrent call with the same key fails to insert the same row, so at most one of them
        changes anything.
        """
        self.remembered = codec.encode(result)
        tx.remember(self.key, self.operation, self.fingerprint, self.remembered, self.at)


def _fingerprint(operation: str, arguments: Mapping[str, object]) -> str:
    """A digest of the call; arguments the codec cannot encode (bad input) count by their repr,
    so the operation itself gets to refuse them with a typed error."""
    encoded = {}
    for name, value in arguments.items():
        try:
            encoded[name] = codec.encode(value)
        except TypeError:
            encoded[name] = repr(value)
    document = {"operation": operation, "arguments": encoded}
    return hashlib.sha256(json.dumps(document, sort_keys=True).encode()).hexdigest()


def once(
    ctx: Context,
    key: str | None,
    operation: str,
    arguments: Mapping[str, object],
    kind: type[T],
    run: Callable[[Claim | None], T],
) -> T:
    """Run a state-changing call at most once per idempotency key.

    Without a key, ``run`` runs. With a key seen before, the first call's result is returned and
    nothing changes; a key first used for another operation or other arguments is refused with
    :class:`IdempotencyConflict`. ``run`` must call :meth:`Claim.remember` inside the transaction
    that makes its change; the result is updated once the whole call (billing and payment
    included) is done.
    """
    if key is None:
        return run(None)
    if not isinstance(key, str) or not key.strip() or len(key) > 255:
        rule = "must be a non-empty string of at most 255 characters"
        raise InvalidArgument("idempotency_key", rule, key)
    fingerprint = _fingerprint(operation, arguments)
    with ctx.store.transaction() as tx:
        row = tx.idempotency(key)
        if row is not None:
            if row.operation != operation or row.fingerprint != fingerprint:
                raise IdempotencyConflict(key, operation)
            return codec.decode(kind, row.result)
    claim = Claim(key, operation, fingerprint, ctx.clock.now())
    result = run(claim)
    encoded = codec.encode(result)
    if encoded != claim.remembered:  # the billing and payment after the change changed it
        with ctx.store.transaction() as tx:
            tx.update_remembered(key, encoded)
    return result
