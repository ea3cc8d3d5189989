"""The batched billing run: a batch is read and written with a few statements whatever its size,
its invoice numbers stay gap-free, a subscription whose step raises is set aside without losing
the rest of its batch, a write another process beat falls back to one subscription at a time,
and a release that fails is logged without ending the run."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta

from sqlalchemy import event, text

from billing.config import Settings
from billing.domain.errors import StorageError
from billing.domain.invoices import InvoiceStatus
from billing.engine import Engine
from billing.services import billing_run
from billing.store.batch import BatchTx
from billing.store.unit_of_work import Tx
from tests.integration.test_claims import ORO, due, open_pair, reader


@contextmanager
def statements(engine: Engine) -> Iterator[list[str]]:
    """The SQL statements the engine sends meanwhile (an ``executemany`` counts once)."""
    seen: list[str] = []

    def count(conn: object, cursor: object, statement: str, *args: object) -> None:
        seen.append(statement)

    database = engine.store.engine
    event.listen(database, "before_cursor_execute", count)
    try:
        yield seen
    finally:
        event.remove(database, "before_cursor_execute", count)


def renewals(engine: Engine) -> list[str]:
    return sorted(
        invoice.number or ""
        for invoice in engine.invoices()
        if invoice.status is InvoiceStatus.PAID
    )


def test_a_batch_takes_the_same_few_statements_whatever_its_size(database_url):
    pair = open_pair(database_url, settings=Settings(batch_size=100, threads=4))
    try:
        counts = {}
        for size, prefix in ((10, "s"), (40, "m")):
            ids = populate(pair.a, size, prefix=prefix, plan=size == 10)
            pair.clock.advance(timedelta(minutes=2))
            with statements(pair.a) as seen:
                report = pair.a.run_due()
            assert report.payments == len(ids)
            counts[size] = len(seen)
        # four times the subscriptions, not four times the statements: a batch is set-based
        assert counts[40] <= counts[10] + 4, counts
    finally:
        pair.a.close()
        pair.b.close()


def populate(engine: Engine, count: int, *, prefix: str, plan: bool) -> list[str]:
    """``count`` subscriptions of four customers, starting a minute from now."""
    if plan:
        engine.create_plan(ORO)
        for c in range(4):
            engine.create_customer(customer_id=f"c{c}", timezone="America/Santiago")
            engine.add_payment_method(f"c{c}", gateway="fake", token=f"tok_c{c}")
    start = engine.clock.now() + timedelta(minutes=1)
    ids = [f"{prefix}{n}" for n in range(count)]
    for n, subscription_id in enumerate(ids):
        engine.subscribe(f"c{n % 4}", "oro", subscription_id=subscription_id, start=start)
    return ids


def test_invoice_numbers_stay_gap_free_when_two_workers_bill_batches_at_once(database_url):
    pair = open_pair(database_url, settings=Settings(batch_size=7, threads=4))
    try:
        due(pair, 60)
        pair.clock.advance(timedelta(days=62))  # the first invoices and two renewals each
        errors: list[BaseException] = []

        def run(engine: Engine) -> None:
            try:
                engine.run_due()
            except BaseException as exc:  # reported below
                errors.append(exc)

        threads = [threading.Thread(target=run, args=(e,)) for e in (pair.a, pair.b)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert not errors
        invoices = pair.a.invoices()
        assert len(invoices) == 60 * 3
        numbers = sorted(invoice.number or "" for invoice in invoices)
        assert numbers == [f"INV-{n:06d}" for n in range(1, len(invoices) + 1)]
        assert {invoice.status for invoice in invoices} == {InvoiceStatus.PAID}
        assert sorted(pair.fake.calls.values()) == [1] * len(invoices)  # one charge each
    finally:
        pair.a.close()
        pair.b.close()


def test_a_step_that_raises_is_set_aside_and_the_rest_of_its_batch_is_billed(
    database_url, monkeypatch
):
    pair = open_pair(database_url, settings=Settings(batch_size=50, threads=2))
    try:
        ids = due(pair, 8)
        real = billing_run.advance

        def advance(subscription, **kwargs):  # type: ignore[no-untyped-def]
            if subscription.id == ids[3]:
                raise RuntimeError("a broken step")
            return real(subscription, **kwargs)

        monkeypatch.setattr(billing_run, "advance", advance)
        report = pair.a.run_due()
        assert report.failed == [ids[3]]
        assert report.payments == len(ids) - 1
        billed = {invoice.subscription_id for invoice in pair.a.invoices()}
        assert billed == set(ids) - {ids[3]}
        with pair.a.store.transaction() as tx:  # all released
            assert {worker for _, worker, _ in tx.claims()} == {None}
    finally:
        pair.a.close()
        pair.b.close()


def test_a_batch_whose_write_another_process_beat_is_billed_one_at_a_time(
    postgres_url, monkeypatch, caplog
):
    """Worker A reads its batch; before it writes, another process saves the subscriptions
    (PostgreSQL runs READ COMMITTED): A's bulk write matches no version it read, so nothing of
    the batch is written, and A bills the subscriptions one by one, afresh, each once."""
    pair = open_pair(postgres_url, settings=Settings(batch_size=50, threads=1))
    database = reader(postgres_url)
    try:
        ids = due(pair, 5)
        real = BatchTx.load

        def load(self: BatchTx, subscription_ids, **kwargs):  # type: ignore[no-untyped-def]
            loaded = real(self, subscription_ids, **kwargs)
            if not bumped:
                bumped.append(True)
                with database.begin() as other:
                    other.execute(text("UPDATE subscriptions SET version = version + 1"))
            return loaded

        bumped: list[bool] = []
        monkeypatch.setattr(BatchTx, "load", load)
        with caplog.at_level(logging.INFO, logger="billing"):
            report = pair.a.run_due()
        assert bumped
        assert any("billing.batch_fallback" in r.message for r in caplog.records)
        assert report.payments == len(ids)
        assert not report.failed
        assert len(renewals(pair.a)) == len(ids)
        assert sorted(pair.fake.calls.values()) == [1] * len(ids)
        numbers = sorted(invoice.number or "" for invoice in pair.a.invoices())
        assert numbers == [f"INV-{n:06d}" for n in range(1, len(ids) + 1)]  # none lost
    finally:
        database.dispose()
        pair.a.close()
        pair.b.close()


def test_a_release_that_fails_is_logged_and_the_run_goes_on(database_url, monkeypatch, caplog):
    pair = open_pair(database_url, settings=Settings(batch_size=3, threads=1))
    try:
        ids = due(pair, 7)

        def release(self: Tx, worker: str, subscription_ids: list[str]) -> None:
            raise StorageError("the database went away")

        monkeypatch.setattr(Tx, "release", release)
        with caplog.at_level(logging.ERROR, logger="billing"):
            report = pair.a.run_due()
        assert report.payments == len(ids)  # every batch after a failed release was billed
        failures = [r.message for r in caplog.records if "billing.release_failed" in r.message]
        assert len(failures) == 3  # three batches of at most three, each release failed
    finally:
        pair.a.close()
        pair.b.close()
