"""Settings: the only module that reads the environment."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

DEFAULT_DATABASE_URL = "sqlite:///billing.db"
"""The embedded default: a SQLite file named ``billing.db`` in the working directory."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Settings:
    """How an engine is set up; every field has a default."""

    database_url: str = DEFAULT_DATABASE_URL
    proration: str = "second"
    invoice_prefix: str = "INV"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Settings from ``BILLING_DATABASE_URL``, ``BILLING_PRORATION`` and
        ``BILLING_INVOICE_PREFIX``, falling back to the defaults."""
        env = os.environ if environ is None else environ
        return cls(
            database_url=env.get("BILLING_DATABASE_URL") or DEFAULT_DATABASE_URL,
            proration=env.get("BILLING_PRORATION") or "second",
            invoice_prefix=env.get("BILLING_INVOICE_PREFIX") or "INV",
        )
