"""Connecting to the database, migrating it, and checking its schema before use.

SQLite (the embedded default, in WAL mode) and PostgreSQL (through psycopg 3) share one schema,
built only by the alembic migrations in ``migrations/``. The engine refuses a database whose
schema is missing or behind, and says which command fixes it.
"""

from __future__ import annotations

import sqlite3
import threading
from functools import cache
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.pool import StaticPool

from billing.domain.errors import InvalidArgument, SchemaNotReady


def normalize_url(url: str | URL) -> URL:
    """The URL with a driver SQLAlchemy can use: ``postgresql://`` means psycopg 3."""
    try:
        parsed = make_url(url)
    except Exception as exc:  # SQLAlchemy raises ArgumentError with varied messages
        rule = "must be a database URL such as sqlite:///billing.db"
        raise InvalidArgument("database_url", rule, str(url)) from exc
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    if parsed.get_backend_name() not in ("sqlite", "postgresql"):
        raise InvalidArgument("database_url", "must be a SQLite or PostgreSQL URL", shown(parsed))
    return parsed


def shown(url: str | URL) -> str:
    """The URL with its password hidden, for messages and logs."""
    return make_url(url).render_as_string(hide_password=True)


def is_memory(engine: Engine | URL) -> bool:
    """Whether the database is an in-memory SQLite one (``sqlite://``, ``sqlite:///:memory:``)."""
    url = engine.url if isinstance(engine, Engine) else engine
    return url.get_backend_name() == "sqlite" and (
        url.database in (None, "", ":memory:") or url.query.get("mode") == "memory"
    )


def connect(url: str | URL, *, durable: bool = True) -> Engine:
    """A SQLAlchemy engine for ``url``; SQLite gets WAL, foreign keys and a busy timeout
    (``durable=False``: a journal in memory and no waiting for the disk, for scratch files; see
    :attr:`billing.config.Settings.durable`).

    An in-memory SQLite database exists only inside its connection, so its engine keeps exactly
    one (``StaticPool``) and every thread uses it, taking turns (:class:`~billing.store.
    unit_of_work.Store` serialises the transactions): otherwise each worker thread would see
    an empty database of its own.
    """
    parsed = normalize_url(url)
    if parsed.get_backend_name() == "sqlite":
        pool = {"poolclass": StaticPool} if is_memory(parsed) else {}
        engine = create_engine(parsed, connect_args={"check_same_thread": False}, **pool)
        event.listen(engine, "connect", _sqlite_pragmas if durable else _sqlite_scratch_pragmas)
        event.listen(engine, "begin", _sqlite_begin_immediate)
        return engine
    return create_engine(parsed, pool_pre_ping=True, pool_size=10, max_overflow=20)


def _sqlite_begin_immediate(connection: Any) -> None:
    """Take SQLite's write lock when a transaction begins, not when it first writes.

    A transaction that reads and then writes would otherwise fail at once with "database is
    locked" if another connection wrote in between; with BEGIN IMMEDIATE it waits its turn
    (``busy_timeout``). SQLite has one writer at a time either way.
    """
    connection.exec_driver_sql("BEGIN IMMEDIATE")


def _sqlite_pragmas(dbapi_connection: Any, _record: Any, *, durable: bool = True) -> None:
    dbapi_connection.isolation_level = None  # the "begin" listener issues BEGIN itself
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    if cursor.execute("PRAGMA journal_mode").fetchone()[0] != "memory":  # a file, not :memory:
        cursor.execute("PRAGMA journal_mode=WAL" if durable else "PRAGMA journal_mode=MEMORY")
        cursor.execute("PRAGMA synchronous=NORMAL" if durable else "PRAGMA synchronous=OFF")
    cursor.close()


def _sqlite_scratch_pragmas(dbapi_connection: Any, record: Any) -> None:
    _sqlite_pragmas(dbapi_connection, record, durable=False)


def migrations_directory() -> Path:
    """Where the alembic scripts are: inside the installed package, or in the source tree."""
    package = Path(__file__).resolve().parents[1]
    for candidate in (package / "migrations", package.parent / "migrations"):
        if (candidate / "env.py").is_file():
            return candidate
    raise FileNotFoundError("the billing migrations are missing from this installation")


def _config(engine: Engine) -> Config:
    config = Config()
    config.set_main_option("script_location", str(migrations_directory()))
    config.attributes["engine"] = engine
    return config


def head_revision() -> str:
    """The newest migration: the schema this version of the engine needs."""
    head = ScriptDirectory.from_config(_config(create_engine("sqlite://"))).get_current_head()
    assert head is not None
    return head


def current_revision(engine: Engine) -> str | None:
    """The revision the database is at, or ``None`` for a database never migrated."""
    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Upgrade the database's schema to ``revision`` (the newest by default).

    An empty in-memory SQLite database is brought to the newest schema by copying one the
    migrations built once in this process (SQLite's backup): simulations and tests open many.
    """
    if revision == "head" and is_memory(engine) and current_revision(engine) is None:
        with _COPYING, _migrated_in_memory().connect() as source, engine.connect() as target:
            origin, copy = source.connection.driver_connection, target.connection.driver_connection
            assert isinstance(origin, sqlite3.Connection)
            assert isinstance(copy, sqlite3.Connection)
            origin.backup(copy)
        return
    command.upgrade(_config(engine), revision)


_COPYING = threading.Lock()


@cache
def _migrated_in_memory() -> Engine:
    """An in-memory SQLite database at the newest schema, built by the migrations (kept for
    the life of the process: its one connection is the database)."""
    engine = connect("sqlite://")
    command.upgrade(_config(engine), "head")
    return engine


def downgrade(engine: Engine, revision: str) -> None:
    """Downgrade the database's schema to ``revision`` (``-1`` for one step back)."""
    command.downgrade(_config(engine), revision)


def require_schema(engine: Engine) -> None:
    """Refuse a database whose schema is missing or not at the head revision."""
    expected = head_revision()
    found = current_revision(engine)
    if found != expected:
        raise SchemaNotReady(shown(engine.url), found, expected)
