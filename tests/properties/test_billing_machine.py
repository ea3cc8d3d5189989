"""The money laws over whole histories on the real engine: :class:`BillingMachine` on SQLite in
memory and on PostgreSQL (each history on an emptied database).

The number of histories follows the hypothesis profile: an eighth of its examples on SQLite and a
sixteenth on PostgreSQL (24 and 12 with ``ci``, 624 and 312 with ``thorough``), 40 steps each,
in independent shards that pytest-xdist runs in parallel.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from hypothesis import settings
from hypothesis.stateful import run_state_machine_as_test
from sqlalchemy import create_engine, text

from billing.store.tables import metadata
from billing.testing.machine import BillingMachine

STEPS = 40
SHARDS = 2


def shards(test: Callable[..., None]) -> Callable[..., None]:
    return pytest.mark.slow(pytest.mark.parametrize("shard", range(SHARDS))(test))


def _settings(share: int) -> settings:
    base = settings()
    examples = max(10, base.max_examples // share) // SHARDS
    return settings(base, max_examples=examples, stateful_step_count=STEPS)


@shards
def test_money_is_conserved_over_random_histories_on_sqlite(shard: int) -> None:
    run_state_machine_as_test(BillingMachine, settings=_settings(8))


@shards
def test_money_is_conserved_over_random_histories_on_postgres(
    shard: int, postgres_url: str
) -> None:
    admin = create_engine(postgres_url)
    tables = ", ".join(table.name for table in metadata.sorted_tables)

    class OnPostgres(BillingMachine):
        def database_url(self) -> str:
            with admin.begin() as connection:  # every history starts from an empty, migrated one
                connection.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))
                connection.execute(
                    text("INSERT INTO sequences (name, value) VALUES ('invoice', 0)")
                )
            return postgres_url

    try:
        run_state_machine_as_test(OnPostgres, settings=_settings(16))
    finally:
        admin.dispose()
