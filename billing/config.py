"""Settings: the only module that reads the environment."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, fields
from datetime import timedelta

from billing.domain.errors import InvalidArgument

DEFAULT_DATABASE_URL = "sqlite:///billing.db"
"""The embedded default: a SQLite file named ``billing.db`` in the working directory."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Settings:
    """How an engine and its worker are set up; every field has a default.

    Each field can be set from the environment as ``BILLING_<FIELD>`` (``BILLING_DATABASE_URL``,
    ``BILLING_THREADS``, ``BILLING_LEASE_SECONDS``...).
    """

    database_url: str = DEFAULT_DATABASE_URL
    proration: str = "second"
    """How the rest of a period is counted: ``second`` or ``day``."""
    invoice_prefix: str = "INV"
    batch_size: int = 500
    """How many subscriptions a billing run claims at a time (and writes together)."""
    threads: int = 64
    """How many gateway calls a billing run makes at once (a gateway that answers in 200 ms
    allows about ``threads / 0.2`` renewals per second)."""
    lease_seconds: float = 60.0
    """How long a claim lasts; a dead worker's claims are taken over after it."""
    reconcile_after_seconds: float = 60.0
    """How long an unsettled payment waits before the gateway is first asked about it."""
    gateway_timeout_seconds: float = 30.0
    """The longest a gateway call may take (adapters time out by then). An attempt written but
    never answered is checked only once its call must be over: after the lease and this."""
    tick_seconds: float = 10.0
    """How often the worker looks for due work."""
    dispatch_seconds: float = 2.0
    """How often the worker delivers events to the host's handlers."""
    final_debt: str = "invoice"
    """What becomes of a subscription's debt when it stops: ``invoice`` (a final invoice, the
    default) or ``write_off`` (dropped, with a ``subscription.debt_written_off`` event)."""
    late_payment_days: float = 7.0
    """How long after a payment link expired unpaid the worker keeps asking its gateway whether
    it was paid after all (a bank transfer started in time, whose notification never came);
    ``0`` stops asking (notifications alone then record such payments)."""
    refunds_return_credit: bool = True
    """Whether refunding a payment in full also gives back the credit its invoice used (QVO
    refunds "the full amount paid and the corresponding credits")."""
    durable: bool = True
    """Whether a SQLite database waits for the disk at each commit (WAL journal,
    ``synchronous=NORMAL``). ``False`` keeps the journal in memory and never waits
    (``journal_mode=MEMORY``, ``synchronous=OFF``): writing goes about a quarter faster, but a
    crash in the middle of a transaction can corrupt the file, so it is for scratch databases
    only (``billing simulate`` uses it for the files it creates). PostgreSQL ignores it."""

    def __post_init__(self) -> None:
        for name in ("batch_size", "threads"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InvalidArgument(name, "must be an integer >= 1", value)
        for name in (
            "lease_seconds",
            "reconcile_after_seconds",
            "gateway_timeout_seconds",
            "tick_seconds",
            "dispatch_seconds",
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
                raise InvalidArgument(name, "must be a number of seconds > 0", value)
        days = self.late_payment_days
        if isinstance(days, bool) or not isinstance(days, int | float) or not 0 <= days <= 366:
            raise InvalidArgument(
                "late_payment_days", "must be a number of days from 0 to 366", days
            )
        if self.final_debt not in ("invoice", "write_off"):
            raise InvalidArgument("final_debt", "must be invoice or write_off", self.final_debt)
        for name in ("refunds_return_credit", "durable"):
            if not isinstance(getattr(self, name), bool):
                raise InvalidArgument(name, "must be true or false", getattr(self, name))

    @property
    def lease(self) -> timedelta:
        return timedelta(seconds=self.lease_seconds)

    @property
    def late_payment(self) -> timedelta:
        return timedelta(days=self.late_payment_days)

    @property
    def reconcile_after(self) -> timedelta:
        return timedelta(seconds=self.reconcile_after_seconds)

    @property
    def unanswered_after(self) -> timedelta:
        """When an attempt that got no answer can be asked about safely: its call is over."""
        call_over = self.lease + timedelta(seconds=self.gateway_timeout_seconds)
        return max(self.reconcile_after, call_over)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: object) -> Settings:
        """Settings from ``BILLING_*`` variables, then ``overrides``, then the defaults."""
        env = os.environ if environ is None else environ
        values: dict[str, object] = {}
        for field in fields(cls):
            raw = env.get(f"BILLING_{field.name.upper()}")
            if raw:
                values[field.name] = _parse(field.name, raw, field.type)
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)  # type: ignore[arg-type]


def _parse(name: str, raw: str, kind: object) -> object:
    if kind in (bool, "bool"):
        lowered = raw.strip().lower()
        if lowered not in ("true", "false", "1", "0", "yes", "no"):
            raise InvalidArgument(f"BILLING_{name.upper()}", "must be true or false", raw)
        return lowered in ("true", "1", "yes")
    try:
        if kind in (int, "int"):
            return int(raw)
        if kind in (float, "float"):
            return float(raw)
    except ValueError:
        raise InvalidArgument(f"BILLING_{name.upper()}", "must be a number", raw) from None
    return raw
