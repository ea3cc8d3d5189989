"""Alembic environment: the billing tables, batch mode for SQLite, and the engine's connection.

``billing migrate`` builds the configuration in code (no alembic.ini) and passes the SQLAlchemy
engine in ``config.attributes["engine"]``.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import Engine

from billing.store.tables import metadata

config = context.config


def run_migrations() -> None:
    engine = config.attributes.get("engine")
    if not isinstance(engine, Engine):
        raise RuntimeError("run migrations through `billing migrate --database-url URL`")
    with engine.connect() as connection:
        context.configure(
            connection=connection,
            target_metadata=metadata,
            render_as_batch=True,
            compare_type=True,
        )
        with context.begin_transaction():
            context.run_migrations()
        connection.commit()


run_migrations()
