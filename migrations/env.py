"""Alembic environment: the billing tables, batch mode for SQLite, and the engine's connection.

``billing migrate`` builds the configuration in code (no alembic.ini) and passes the SQLAlchemy
engine in ``config.attributes["engine"]``.
"""

from __future__ import annotations

from typing import Any

from alembic import context
from sqlalchemy import Connection, Engine

from billing.store.tables import metadata

config = context.config


def run_migrations() -> None:
    engine = config.attributes.get("engine")
    if not isinstance(engine, Engine):
        raise RuntimeError("run migrations through `billing migrate --database-url URL`")
    with engine.connect() as connection:
        sqlite = connection.dialect.name == "sqlite"
        if sqlite:
            # batch mode rebuilds a SQLite table by copying it, which foreign keys pointing at
            # it would refuse: they are off meanwhile, and checked once the migrations are done
            _pragma(connection, "foreign_keys=OFF")
        try:
            context.configure(
                connection=connection,
                target_metadata=metadata,
                render_as_batch=True,
                compare_type=True,
            )
            with context.begin_transaction():
                context.run_migrations()
                if sqlite and connection.exec_driver_sql("PRAGMA foreign_key_check").first():
                    raise RuntimeError("a migration left rows whose foreign keys point nowhere")
            connection.commit()
        finally:
            if sqlite:
                _pragma(connection, "foreign_keys=ON")


def _pragma(connection: Connection, setting: str) -> None:
    """Set a SQLite pragma outside any transaction (inside one, foreign_keys is ignored)."""
    raw: Any = connection.connection.driver_connection
    raw.execute(f"PRAGMA {setting}")


run_migrations()
