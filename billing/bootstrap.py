"""The composition root: the one place that picks implementations and builds an engine."""

from __future__ import annotations

from collections.abc import Iterable

from billing.clock import SystemClock
from billing.config import Settings
from billing.domain.exchange import ExchangeRates
from billing.engine import Engine
from billing.ports import Clock, PaymentGateway
from billing.store.database import connect, require_schema, upgrade
from billing.store.unit_of_work import Store


def open_engine(
    database_url: str | None = None,
    *,
    clock: Clock | None = None,
    gateways: Iterable[PaymentGateway] = (),
    rates: ExchangeRates | None = None,
    settings: Settings | None = None,
    migrate: bool = False,
) -> Engine:
    """An engine on ``database_url`` (the settings' URL, by default the SQLite file
    ``billing.db``), charging through ``gateways``.

    The database's schema must be at the engine's revision; ``migrate=True`` upgrades it first
    (as ``billing migrate`` does), otherwise a missing or older schema raises
    :class:`~billing.domain.errors.SchemaNotReady` naming the command to run.
    """
    settings = settings or Settings.from_env()
    engine = connect(database_url or settings.database_url)
    try:
        if migrate:
            upgrade(engine)
        require_schema(engine)
    except BaseException:
        engine.dispose()
        raise
    return Engine(
        Store(engine, invoice_prefix=settings.invoice_prefix),
        clock=clock or SystemClock(),
        gateways=gateways,
        rates=rates,
        proration=settings.proration,
    )
