"""The money laws over whole histories on the real engine: :class:`BillingMachine` on SQLite in
memory and on PostgreSQL (configured with the database's URL: each history on it, emptied).

The number of histories follows the hypothesis profile: an eighth of its examples on SQLite and a
sixteenth on PostgreSQL (24 and 12 with ``ci``, 624 and 312 with ``thorough``), 40 steps each,
in independent shards that pytest-xdist runs in parallel.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from hypothesis import Phase, settings
from hypothesis.stateful import run_state_machine_as_test

from billing.testing.machine import BillingMachine

STEPS = 40
SHARDS = 2


def shards(test: Callable[..., None]) -> Callable[..., None]:
    return pytest.mark.slow(pytest.mark.parametrize("shard", range(SHARDS))(test))


def _settings(share: int) -> settings:
    base = settings()
    examples = max(10, base.max_examples // share) // SHARDS
    # no explain phase: it traces every line a failing history runs, which takes minutes on a
    # real engine; the failure is reported with its history as a scenario file instead
    phases = [phase for phase in base.phases if phase is not Phase.explain]
    return settings(base, max_examples=examples, stateful_step_count=STEPS, phases=phases)


@shards
def test_money_is_conserved_over_random_histories_on_sqlite(shard: int) -> None:
    run_state_machine_as_test(BillingMachine, settings=_settings(8))


@shards
def test_money_is_conserved_over_random_histories_on_postgres(
    shard: int, postgres_url: str
) -> None:
    on_postgres = BillingMachine.configure(name="OnPostgres", database_url=postgres_url)
    run_state_machine_as_test(on_postgres, settings=_settings(16))  # each history emptied first
