"""The alembic migrations: upgrade from empty, down one step and back, equal to the models."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Engine, inspect, text

from billing.bootstrap import open_engine
from billing.domain.errors import BillingError, SchemaNotReady, StorageError
from billing.store.database import connect, current_revision, downgrade, head_revision, upgrade
from billing.store.tables import metadata


@pytest.fixture(params=["sqlite", "postgres"])
def empty(request: pytest.FixtureRequest, tmp_path, postgres_server: str) -> Iterator[Engine]:  # type: ignore[no-untyped-def]
    """An empty database (no tables at all) on each backend."""
    if request.param == "sqlite":
        engine = connect(f"sqlite:///{tmp_path / 'empty.db'}")
        yield engine
        engine.dispose()
        return
    url = request.getfixturevalue("postgres_url")
    engine = connect(url)
    downgrade(engine, "base")  # the per-test database is a migrated copy: take it back to empty
    assert inspect(engine).get_table_names() == ["alembic_version"]
    yield engine
    engine.dispose()


def _differences(engine: Engine) -> list[object]:
    with engine.connect() as connection:
        return list(compare_metadata(MigrationContext.configure(connection), metadata))


def test_upgrading_an_empty_database_builds_exactly_the_models(empty: Engine):
    upgrade(empty)
    assert current_revision(empty) == head_revision()
    assert _differences(empty) == []


def test_downgrading_one_step_and_upgrading_again_comes_back_to_the_same_schema(empty: Engine):
    upgrade(empty)
    downgrade(empty, "-1")
    assert current_revision(empty) != head_revision()
    upgrade(empty)
    assert current_revision(empty) == head_revision()
    assert _differences(empty) == []


def test_in_memory_databases_get_the_schema_each_a_copy_of_its_own():
    first, second = connect("sqlite://"), connect("sqlite://")
    for engine in (first, second):
        upgrade(engine)  # from one database the migrations built once in this process
        assert current_revision(engine) == head_revision()
        assert _differences(engine) == []
    with first.begin() as connection:
        connection.execute(text("UPDATE sequences SET value = 7 WHERE name = 'invoice'"))
    with second.connect() as connection:
        assert connection.execute(text("SELECT name, value FROM sequences")).all() == [
            ("invoice", 0)
        ]
    third = connect("sqlite://")
    upgrade(third)
    with third.connect() as connection:
        assert connection.execute(text("SELECT value FROM sequences")).scalar_one() == 0


def test_the_engine_refuses_a_database_without_the_schema_and_names_the_command(empty: Engine):
    with pytest.raises(SchemaNotReady) as error:
        open_engine(empty.url.render_as_string(hide_password=False))
    assert "billing migrate --database-url" in str(error.value)
    assert error.value.found is None


def test_the_engine_refuses_an_outdated_schema(empty: Engine):
    upgrade(empty)
    downgrade(empty, "-1")
    with pytest.raises(SchemaNotReady):
        open_engine(empty.url.render_as_string(hide_password=False))


def test_open_engine_can_migrate_first(empty: Engine):
    engine = open_engine(empty.url.render_as_string(hide_password=False), migrate=True)
    engine.close()
    assert current_revision(empty) == head_revision()


def test_a_password_never_appears_in_the_schema_message():
    error = SchemaNotReady(
        connect("postgresql://billing:s3cret@127.0.0.1:1/db").url.render_as_string(
            hide_password=True
        ),
        None,
        "0001",
    )
    assert "s3cret" not in str(error)


def test_revision_0002_gives_existing_events_their_delivery_stream(empty: Engine):
    upgrade(empty, "0001")
    rows = [
        ("evt_1", "subscription.renewed", "s1", "c1"),
        ("evt_2", "credit.granted", None, "c1"),
        ("evt_3", "engine.note", None, None),
    ]
    with empty.begin() as connection:
        for event_id, name, subscription_id, customer_id in rows:
            connection.execute(
                text(
                    "INSERT INTO events (id, name, at, subscription_id, customer_id, payload, "
                    "recorded_at) VALUES (:id, :name, :at, :sub, :cus, '{}', :at)"
                ),
                {
                    "id": event_id,
                    "name": name,
                    "at": "2026-01-31 12:00:00+00:00",
                    "sub": subscription_id,
                    "cus": customer_id,
                },
            )
    upgrade(empty)
    with empty.connect() as connection:
        streams = dict(connection.execute(text("SELECT id, stream FROM events")).all())
        deliveries = set(connection.execute(text("SELECT deliveries FROM events")).scalars())
    assert streams == {"evt_1": "subscription:s1", "evt_2": "customer:c1", "evt_3": "engine"}
    assert deliveries == {0}


def test_an_unreachable_database_is_a_storage_error_that_hides_the_password():
    with pytest.raises(StorageError) as refused:
        open_engine("postgresql://billing:s3cret@127.0.0.1:1/db", gateways=[])
    assert isinstance(refused.value, BillingError)
    assert "s3cret" not in str(refused.value)
