"""The composition root: the one place that picks implementations and builds an engine."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Mapping
from importlib.metadata import entry_points

from sqlalchemy.exc import SQLAlchemyError

from billing.clock import SystemClock
from billing.config import Settings
from billing.domain.errors import StorageError
from billing.domain.exchange import ExchangeRates
from billing.engine import Engine
from billing.ports import Clock, PaymentGateway
from billing.services.hooks import Hooks
from billing.store import currencies
from billing.store.database import connect, require_schema, upgrade
from billing.store.unit_of_work import Store

log = logging.getLogger("billing.bootstrap")


def discover_gateways(environ: Mapping[str, str] | None = None) -> list[PaymentGateway]:
    """The gateways installed packages offer through the ``billing.gateways`` entry points.

    Each entry point is a callable that takes the environment and returns a configured gateway,
    or ``None`` when the environment does not configure it (no credentials, say). ``billing``
    never imports an adapter itself: an adapter package registers one of these.

    Logs each gateway loaded (``gateway.loaded``, info) and each one left out: a warning
    (``gateway.skipped``) when some of its ``BILLING_<NAME>_...`` variables are set but not
    enough to configure it (missing credentials), else an info line
    (``gateway.not_configured``); and a warning when no gateway at all is configured.
    """
    env = os.environ if environ is None else environ
    found: list[PaymentGateway] = []
    for entry in entry_points(group="billing.gateways"):
        gateway = entry.load()(env)
        if gateway is not None:
            found.append(gateway)
            log.info("gateway.loaded gateway=%s", gateway.name)
            continue
        given = _variables_set(entry.name, env)
        if given:
            log.warning(
                "gateway.skipped gateway=%s reason=missing_credentials set=%s",
                entry.name,
                ",".join(given),
            )
        else:
            log.info("gateway.not_configured gateway=%s", entry.name)
    if not found:
        log.warning('gateway.none_configured effect="no payment can be charged"')
    return found


def _variables_set(name: str, env: Mapping[str, str]) -> list[str]:
    """The variables of gateway ``name`` set in ``env`` (its fake server's own,
    ``BILLING_<NAME>_FAKE_...``, aside): names only, never their values."""
    prefix = f"BILLING_{name.upper()}_"
    return sorted(
        key
        for key, value in env.items()
        if key.startswith(prefix) and value.strip() and not key.startswith(f"{prefix}FAKE_")
    )


def open_engine(
    database_url: str | None = None,
    *,
    clock: Clock | None = None,
    gateways: Iterable[PaymentGateway] | None = None,
    rates: ExchangeRates | None = None,
    settings: Settings | None = None,
    hooks: Hooks | None = None,
    migrate: bool = False,
) -> Engine:
    """An engine on ``database_url`` (the settings' URL, by default the SQLite file
    ``billing.db``), charging through ``gateways`` (by default, those the installed packages
    configure from the environment: :func:`discover_gateways`). Gateways the engine discovered
    are closed with it; gateways passed in stay the caller's to close.

    The database's schema must be at the engine's revision; ``migrate=True`` upgrades it first
    (as ``billing migrate`` does), otherwise a missing or older schema raises
    :class:`~billing.domain.errors.SchemaNotReady` naming the command to run. A database that
    stores a currency with another exponent than this engine's raises
    :class:`~billing.domain.errors.CurrencyExponentChanged`, naming the conversion to run.
    """
    settings = settings or Settings.from_env()
    engine = connect(database_url or settings.database_url, durable=settings.durable)
    try:
        if migrate:
            upgrade(engine)
        require_schema(engine)
        recorded = currencies.verify(engine)
    except SQLAlchemyError as exc:  # unreachable, refused: never a driver's exception
        engine.dispose()
        raise StorageError(str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]) from exc
    except BaseException:
        engine.dispose()
        raise
    return Engine(
        Store(engine, invoice_prefix=settings.invoice_prefix, recorded=recorded),
        clock=clock or SystemClock(),
        gateways=discover_gateways() if gateways is None else gateways,
        owns_gateways=gateways is None,
        rates=rates,
        settings=settings,
        hooks=hooks,
    )
