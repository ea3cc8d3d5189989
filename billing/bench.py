"""``billing bench``: how many renewals a second real worker processes bill, each one checked.

Every case seeds N subscriptions on a fresh database, all due at one instant (one plan of
10.000 CLP a month at 19 % IVA; one customer with a default card per subscription, whose first
period is over), then times a complete billing run by separate worker processes: claim, invoice
with its lines and tax, credit and debt, the payment attempt with its idempotency key, the gateway
call, the outcome, the next period and the outbox events, all committed. Afterwards the case is
checked, not assumed: exactly N renewal invoices exist and are paid, the gateway took exactly N
charges, no subscription's work failed and none is left due. The rates themselves are reported,
never asserted.

The cases, on a SQLite file and (given a server) on PostgreSQL:

* ``limit``: the rows a renewal writes (copied from a real renewal made when the benchmark
  starts: its invoice, lines, payment attempt and events, and the update of its subscription),
  inserted with SQLAlchemy Core ``executemany``, :data:`LIMIT_BATCH` renewals per transaction,
  with no engine logic: what the database allows, against which each rate is a fraction;
* ``baseline``: the naive engine, one subscription per transaction and one gateway call at a
  time (``batch_size=1``, ``threads=1``), on fewer subscriptions: each rate is a speed-up over it;
* ``engine``: the engine with the chosen batch size and threads, with 1 and 2 worker processes
  (or the counts chosen);
* ``memory``: one worker at N/4, whose peak resident memory is set beside the one at N;
* with ``http``, the baseline and engine cases again against the fake gateway served over HTTP on
  loopback (:func:`billing.testing.fake_server.serve`), which answers each charge after a delay;
  those workers run more threads so that the calls overlap;
* ``api``: the writes of a host app, in one process, one call after another: a customer, its
  card and a subscription per new customer, each call with an idempotency key, the subscription's
  first period invoiced and charged at once (its rate is new subscriptions per second).

Each worker process (``python -m billing.bench worker INSTANT``) is configured like a real one,
from ``BILLING_*`` variables, opens its engine on a :class:`~billing.clock.ManualClock` stopped at
the due instant, reports that it is ready, and waits for the start signal on its standard input;
it then runs :meth:`billing.worker.Worker.billing` once and prints its start and end times, its
run's counts, the charges its in-process fake gateway took and its peak RSS. A case's time runs
from the earliest start to the latest end, so start-up and imports are not counted.

:func:`run` returns the results as a JSON-ready dict, :func:`render` shows them, and
:func:`failures` lists the cases whose checks failed.
"""

from __future__ import annotations

import json
import math
import os
import platform
import secrets
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol
from zoneinfo import ZoneInfo

from rich import box
from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text
from sqlalchemy import Engine, bindparam, create_engine, func, insert, select, text, update
from sqlalchemy import inspect as sa_inspect
from sqlalchemy.engine import URL
from sqlalchemy.exc import SQLAlchemyError
from sqlmodel import SQLModel

from billing import __version__
from billing.bootstrap import open_engine
from billing.clock import ManualClock
from billing.config import Settings
from billing.domain.catalog import Plan
from billing.domain.customers import Customer, PaymentMethod
from billing.domain.errors import BillingError, InvalidArgument, StorageError
from billing.domain.invoices import InvoiceReason, InvoiceStatus
from billing.domain.subscriptions import Subscription, SubscriptionStatus
from billing.domain.taxes import TaxRate
from billing.engine import Engine as BillingEngine
from billing.services.billing_run import RunReport
from billing.services.sign_ups import SignUp
from billing.store import mapping
from billing.store.batch import bulk_insert
from billing.store.database import connect, normalize_url, shown, upgrade
from billing.store.tables import metadata
from billing.testing.fake_gateway import FakeGateway
from billing.testing.fake_server import books, from_environment, serve
from billing.worker import Worker, configure_logging, freeze_startup_objects

TIMEZONES = tuple(
    ZoneInfo(name) for name in ("America/Santiago", "America/Mexico_City", "America/Bogota")
)
"""The customers' timezones, in turn."""
PLAN = Plan.of(code="bench", name="Plan Bench", price="10000", currency="CLP")
TAX = TaxRate.of("IVA", "19")
STARTED = datetime(2026, 1, 1, 12, tzinfo=TIMEZONES[0])
"""When the last seeded subscription's first period began (it was billed and paid before)."""
SPREAD = 1_440
"""The subscriptions began a minute apart over the day before :data:`STARTED` (then again), so
each has its own billing calendar, as in production, where subscriptions start at any time."""

DEFAULT_SIZE = 20_000
DEFAULT_BASELINE_SIZE = 2_000
QUICK_SIZE = 200
QUICK_BASELINE_SIZE = 50
DEFAULT_HTTP_DELAY_MS = 200
LIMIT_BATCH = 1_000
"""Renewals written per transaction by the ``limit`` case."""
SEED_CHUNK = 5_000
"""Rows per ``executemany`` when seeding."""
BULK_CHUNK = 1_000
"""Sign-ups per ``sign_up_many`` call in the ``bulk`` case."""

Progress = Callable[[str], None]


def _subscription_id(index: int) -> str:
    return f"sub_bench_{index:08d}"


def _customer_id(index: int) -> str:
    return f"cus_bench_{index:08d}"


def _method_id(index: int) -> str:
    return f"pm_bench_{index:08d}"


def _seeded(index: int) -> Subscription:
    """Subscription ``index`` as seeded: active, its first period (index 0) billed."""
    start = (STARTED - timedelta(minutes=index % SPREAD)).astimezone(UTC)
    return Subscription(
        id=_subscription_id(index),
        customer_id=_customer_id(index),
        plan=PLAN,
        timezone=TIMEZONES[index % len(TIMEZONES)],
        status=SubscriptionStatus.ACTIVE,
        created_at=start,
        start=start,
        trial_end=None,
        cycles=None,
        tax=TAX,
        current_index=0,
        period_price=PLAN.price,
    )


def _due() -> datetime:
    due = _seeded(0).due_at
    assert due is not None
    return due


DUE = _due()
"""The instant by which every seeded subscription's renewal has fallen due: the end of the
latest first period."""
FIRST_DUE = DUE - timedelta(minutes=SPREAD)
"""No seeded renewal falls due before this."""


class BenchError(BillingError):
    """The benchmark could not run (a case whose checks fail is a result, not this error)."""


# -- options --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Options:
    """What to measure. ``batch`` and ``threads`` default to the engine's :class:`Settings`."""

    size: int = DEFAULT_SIZE
    baseline_size: int | None = None
    """The naive baseline's N; by default ``min(size, 2000)``."""
    workers: tuple[int, ...] = (1, 2)
    postgres_url: str | None = None
    """A PostgreSQL server (its maintenance database): each case creates a database there and
    drops it afterwards. Without it only SQLite is measured."""
    http: bool = True
    http_delay_ms: int = DEFAULT_HTTP_DELAY_MS
    http_threads: int | None = None
    """Threads per worker in the HTTP cases; by default the larger of 32 and :attr:`threads`."""
    batch: int | None = None
    threads: int | None = None

    def __post_init__(self) -> None:
        for name, value in (
            ("--size", self.size),
            ("--baseline-size", self.baseline_size),
            ("--http-threads", self.http_threads),
            ("--batch", self.batch),
            ("--threads", self.threads),
        ):
            if value is not None and (not isinstance(value, int) or value < 1):
                raise InvalidArgument(name, "must be an integer >= 1", value)
        if not isinstance(self.http_delay_ms, int) or self.http_delay_ms < 0:
            raise InvalidArgument("--http-delay-ms", "must be an integer >= 0", self.http_delay_ms)
        if not self.workers or any(not isinstance(w, int) or w < 1 for w in self.workers):
            rule = "must be worker process counts >= 1, such as 1,2"
            raise InvalidArgument("--workers", rule, self.workers)
        if self.postgres_url is not None:
            rule = "must be a PostgreSQL URL such as postgresql://postgres@127.0.0.1/postgres"
            try:
                url = normalize_url(self.postgres_url)
            except InvalidArgument as exc:
                raise InvalidArgument("--postgres-url", rule, exc.value) from None
            if url.get_backend_name() != "postgresql":
                raise InvalidArgument("--postgres-url", rule, shown(url))

    @classmethod
    def parse(
        cls,
        *,
        size: int | None,
        baseline_size: int | None,
        workers: str,
        quick: bool,
        **rest: Any,
    ) -> Options:
        """Options from the command line: ``workers`` as ``"1,2"``; ``quick`` makes the sizes
        tiny (N=200, baseline 50) unless they are given; ``None`` in ``rest`` is the default."""
        try:
            counts = tuple(dict.fromkeys(int(part) for part in workers.split(",") if part.strip()))
        except ValueError:
            rule = "must be worker process counts separated by commas, such as 1,2"
            raise InvalidArgument("--workers", rule, workers) from None
        given = {name: value for name, value in rest.items() if value is not None}
        return cls(
            size=size if size is not None else QUICK_SIZE if quick else DEFAULT_SIZE,
            baseline_size=baseline_size
            if baseline_size is not None
            else QUICK_BASELINE_SIZE
            if quick
            else None,
            workers=counts,
            **given,
        )

    @property
    def baseline(self) -> int:
        return self.baseline_size or min(self.size, DEFAULT_BASELINE_SIZE)

    @property
    def api(self) -> int:
        """The ``api`` case's N: as many new subscriptions as the naive baseline renews."""
        return self.baseline

    @property
    def http_baseline(self) -> int:
        """The naive baseline's N over HTTP: a tenth of :attr:`baseline` (at least 1), as it
        makes one call at a time and each waits the whole delay."""
        return max(1, math.ceil(self.baseline / 10))

    @property
    def engine_batch(self) -> int:
        return self.batch or Settings().batch_size

    @property
    def engine_threads(self) -> int:
        return self.threads or Settings().threads

    @property
    def engine_http_threads(self) -> int:
        """The engine's threads: more calls in flight cost more CPU than they save (see
        docs/performance.md)."""
        return self.http_threads or self.engine_threads


# -- databases ------------------------------------------------------------------------------


class _Databases(Protocol):
    name: str
    version: str

    def fresh(self) -> AbstractContextManager[str]: ...

    def close(self) -> None: ...


class _SQLiteFiles:
    """Fresh SQLite files, each a copy of one migrated template."""

    name = "sqlite"

    def __init__(self, directory: Path) -> None:
        self.version = sqlite3.sqlite_version
        self._directory = directory
        self._template = directory / "template.db"
        self._count = 0
        engine = connect(self._url(self._template))
        try:
            upgrade(engine)
        finally:
            engine.dispose()

    @staticmethod
    def _url(path: Path) -> str:
        return f"sqlite:///{path}"

    @contextmanager
    def fresh(self) -> Iterator[str]:
        self._count += 1
        path = self._directory / f"case-{self._count}.db"
        shutil.copy(self._template, path)
        try:
            yield self._url(path)
        finally:
            for leftover in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
                leftover.unlink(missing_ok=True)

    def close(self) -> None:
        self._template.unlink(missing_ok=True)


class _PostgresDatabases:
    """Fresh databases on a PostgreSQL server, each created from one migrated template."""

    name = "postgresql"

    def __init__(self, server_url: str) -> None:
        self._server = normalize_url(server_url)
        self._admin = create_engine(self._server, isolation_level="AUTOCOMMIT")
        self._template = f"bench_template_{uuid.uuid4().hex[:12]}"
        try:
            with self._admin.connect() as connection:
                self.version = str(connection.execute(text("SHOW server_version")).scalar_one())
                connection.execute(text(f"CREATE DATABASE {self._template}"))
        except BaseException:
            self._admin.dispose()
            raise
        try:
            engine = connect(self._url(self._template))
            try:
                upgrade(engine)
            finally:
                engine.dispose()
        except BaseException:
            self.close()
            raise

    def _url(self, database: str) -> str:
        url: URL = self._server.set(database=database)
        return url.render_as_string(hide_password=False)

    @contextmanager
    def fresh(self) -> Iterator[str]:
        name = f"bench_{uuid.uuid4().hex[:12]}"
        with self._admin.connect() as connection:
            connection.execute(text(f"CREATE DATABASE {name} TEMPLATE {self._template}"))
        try:
            yield self._url(name)
        finally:
            with self._admin.connect() as connection:
                connection.execute(text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))

    def close(self) -> None:
        try:
            with self._admin.connect() as connection:
                connection.execute(text(f"DROP DATABASE IF EXISTS {self._template} WITH (FORCE)"))
        finally:
            self._admin.dispose()


# -- seeding --------------------------------------------------------------------------------


def _columns(row: SQLModel) -> dict[str, Any]:
    """A table row's values by column name (an attribute may be named otherwise)."""
    mapper = sa_inspect(type(row))
    return {attr.columns[0].name: getattr(row, attr.key) for attr in mapper.column_attrs}


def seed(url: str, size: int) -> None:
    """``size`` customers, each with a default card and an active subscription due at
    :data:`DUE`, written with ``executemany`` in chunks (the plan through the engine).

    The rows come from the domain objects through the store's mapping, with the ids changed.
    """
    settings = Settings(database_url=url)
    with open_engine(url, clock=ManualClock(STARTED), gateways=[], settings=settings) as engine:
        engine.create_plan(PLAN)
    at = STARTED.astimezone(UTC)
    customer = _columns(mapping.customer_row(Customer.of(_customer_id(0), "UTC"), at))
    card = PaymentMethod(
        id=_method_id(0),
        customer_id=_customer_id(0),
        gateway="fake",
        token="tok_bench",
        label="fake card",
        is_default=True,
        created_at=at,
    )
    method = _columns(mapping.payment_method_row(card))

    def subscription(index: int) -> dict[str, Any]:
        seeded = _seeded(index)
        return {
            **mapping.subscription_fields(seeded),
            "version": 1,
            "next_run_at": seeded.due_at,
        }

    tables = metadata.tables
    database = connect(url)
    try:
        with database.begin() as connection:
            for first in range(0, size, SEED_CHUNK):
                chunk = range(first, min(first + SEED_CHUNK, size))
                connection.execute(
                    insert(tables["customers"]),
                    [
                        {
                            **customer,
                            "id": _customer_id(i),
                            "timezone": TIMEZONES[i % len(TIMEZONES)].key,
                        }
                        for i in chunk
                    ],
                )
                connection.execute(
                    insert(tables["payment_methods"]),
                    [
                        {**method, "id": _method_id(i), "customer_id": _customer_id(i)}
                        for i in chunk
                    ],
                )
                connection.execute(
                    insert(tables["subscriptions"]),
                    [subscription(i) for i in chunk],
                )
            if database.dialect.name == "postgresql":
                connection.execute(text("ANALYZE"))  # as autovacuum would have, in production
    finally:
        database.dispose()


# -- one renewal's rows, for the limit ------------------------------------------------------


class _Pattern:
    """A row the calibration renewal wrote, with its ids turned into placeholders."""

    def __init__(
        self,
        row: Mapping[str, Any],
        ids: Mapping[str, str],
        *,
        drop: Sequence[str] = (),
        fresh: Sequence[str] = (),
    ) -> None:
        self.fixed: dict[str, Any] = {}
        self.text: dict[str, str] = {}
        self.json: dict[str, str] = {}
        self.fresh = {name: str(row[name]).partition("_")[0] for name in fresh}
        olds = sorted(ids.items(), key=lambda item: -len(item[1]))
        for name, value in row.items():
            if name in drop or name in self.fresh:
                continue
            if isinstance(value, str) and any(old in value for _, old in olds):
                self.text[name] = _placeholders(value, olds)
            elif isinstance(value, dict | list):
                self.json[name] = _placeholders(json.dumps(value), olds)
            else:
                self.fixed[name] = value

    def fill(self, ids: Mapping[str, str]) -> dict[str, Any]:
        row = dict(self.fixed)
        for name, pattern in self.text.items():
            row[name] = pattern.format_map(ids)
        for name, pattern in self.json.items():
            row[name] = json.loads(pattern.format_map(ids))
        for name, prefix in self.fresh.items():
            row[name] = f"{prefix}_{uuid.uuid4().hex}"
        return row


def _placeholders(value: str, olds: Sequence[tuple[str, str]]) -> str:
    pattern = value.replace("{", "{{").replace("}", "}}")
    for name, old in olds:
        pattern = pattern.replace(old, "{" + name + "}")
    return pattern


@dataclass(frozen=True, slots=True)
class Renewal:
    """What one renewal writes, as the engine wrote it when the benchmark started."""

    invoices: list[_Pattern]
    lines: list[_Pattern]
    payments: list[_Pattern]
    events: list[_Pattern]
    subscription: dict[str, Any]
    """The subscription's columns the renewal changed, with their new values."""
    rows: dict[str, int]
    """Rows the renewal added, per table."""

    def ids(self, index: int) -> dict[str, str]:
        ids = {
            "subscription": _subscription_id(index),
            "customer": _customer_id(index),
            "method": _method_id(index),
        }
        for k in range(len(self.invoices)):
            ids[f"invoice{k}"] = f"in_{secrets.token_urlsafe(16)}"
            ids[f"number{k}"] = f"LIMIT-{index:09d}-{k}"
        for k in range(len(self.payments)):
            ids[f"payment{k}"] = f"pay_{secrets.token_urlsafe(16)}"
        return ids


def _count_rows(engine: Engine) -> dict[str, int]:
    with engine.connect() as connection:
        return {
            name: int(connection.execute(select(func.count()).select_from(table)).scalar_one())
            for name, table in metadata.tables.items()
        }


def calibrate(url: str) -> Renewal:
    """Renew one seeded subscription on ``url`` with the engine, and read back what it wrote.

    Raises :class:`BenchError` if the engine did not renew and charge it.
    """
    seed(url, 1)
    database = connect(url)
    try:
        before = _count_rows(database)
        settings = Settings(database_url=url)
        gateway = FakeGateway()
        with open_engine(url, clock=ManualClock(DUE), gateways=[gateway], settings=settings) as e:
            report = Worker(e).billing()
        if report.failed or len(gateway.charges_taken()) != 1:
            raise BenchError(f"the engine did not renew the calibration subscription: {report}")
        after = _count_rows(database)
        tables = metadata.tables
        with database.connect() as connection:

            def rows(name: str) -> list[dict[str, Any]]:
                return [dict(r._mapping) for r in connection.execute(select(tables[name]))]

            invoices, lines = rows("invoices"), rows("invoice_lines")
            payments, events = rows("payments"), rows("events")
            [subscription] = rows("subscriptions")
    finally:
        database.dispose()
    ids = {
        "subscription": _subscription_id(0),
        "customer": _customer_id(0),
        "method": _method_id(0),
    }
    for k, invoice in enumerate(invoices):
        ids[f"invoice{k}"], ids[f"number{k}"] = invoice["id"], invoice["number"]
    for k, payment in enumerate(payments):
        ids[f"payment{k}"] = payment["id"]
    seeded = {**mapping.subscription_fields(_seeded(0)), "next_run_at": _seeded(0).due_at}
    changed = {
        name: value
        for name, value in subscription.items()
        if name not in ("id", "version") and seeded.get(name) != value
    }
    return Renewal(
        invoices=[_Pattern(row, ids) for row in invoices],
        lines=[_Pattern(row, ids, drop=["id"]) for row in lines],
        payments=[_Pattern(row, ids) for row in payments],
        events=[_Pattern(row, ids, drop=["seq"], fresh=["id"]) for row in events],
        subscription=changed,
        rows={name: after[name] - before[name] for name in after if after[name] != before[name]},
    )


def _limit(url: str, size: int, renewal: Renewal) -> float:
    """Write ``size`` renewals' rows with bare batched statements; returns the seconds taken."""
    tables = metadata.tables
    subscriptions = tables["subscriptions"]
    advance = (
        update(subscriptions)
        .where(subscriptions.c.id == bindparam("renewed_id"))
        .values(**renewal.subscription, version=subscriptions.c.version + 1)
    )
    database = connect(url)
    try:
        started = time.perf_counter()
        for first in range(0, size, LIMIT_BATCH):
            chunk = range(first, min(first + LIMIT_BATCH, size))
            filled = [renewal.ids(i) for i in chunk]
            with database.begin() as connection:
                for name, patterns in (
                    ("invoices", renewal.invoices),
                    ("invoice_lines", renewal.lines),
                    ("payments", renewal.payments),
                    ("events", renewal.events),
                ):
                    if patterns:
                        rows = [p.fill(ids) for ids in filled for p in patterns]
                        bulk_insert(connection, tables[name], rows)
                connection.execute(advance, [{"renewed_id": _subscription_id(i)} for i in chunk])
        return time.perf_counter() - started
    finally:
        database.dispose()


# -- checks ---------------------------------------------------------------------------------


def verify(url: str, size: int, charges: int | None, failed: int) -> tuple[dict[str, Any], str]:
    """Check a case on its database: ``size`` renewal invoices made since :data:`FIRST_DUE`,
    all paid, ``charges`` taken by the gateway (``None``: no gateway), no subscription's work
    ``failed`` and none left due. Returns the counts, and what is wrong ("" when nothing is)."""
    invoices, subscriptions = metadata.tables["invoices"], metadata.tables["subscriptions"]
    renewals = (
        select(func.count())
        .select_from(invoices)
        .where(invoices.c.reason == InvoiceReason.RENEWAL.value)
        .where(invoices.c.created_at >= FIRST_DUE)
    )
    database = connect(url)
    try:
        with database.connect() as connection:
            renewal_invoices = int(connection.execute(renewals).scalar_one())
            paid = int(
                connection.execute(
                    renewals.where(invoices.c.status == InvoiceStatus.PAID.value)
                ).scalar_one()
            )
            left_due = int(
                connection.execute(
                    select(func.count())
                    .select_from(subscriptions)
                    .where(subscriptions.c.next_run_at <= DUE)
                ).scalar_one()
            )
    finally:
        database.dispose()
    checks = {
        "renewal_invoices": renewal_invoices,
        "paid": paid,
        "charges": charges,
        "failed": failed,
        "left_due": left_due,
    }
    wrong = [f"{renewal_invoices} renewal invoices"] if renewal_invoices != size else []
    wrong += [f"{paid} paid"] if paid != size else []
    wrong += [f"{charges} charges"] if charges is not None and charges != size else []
    wrong += [f"{failed} failed"] if failed else []
    wrong += [f"{left_due} left due"] if left_due else []
    return checks, (", ".join(wrong) + f" (expected {size})") if wrong else ""


def verify_api(url: str, size: int, charges: int) -> tuple[dict[str, Any], str]:
    """Check the ``api`` case: ``size`` subscriptions, all active, each with its first invoice
    paid, and ``size`` charges taken by the gateway."""
    invoices, subscriptions = metadata.tables["invoices"], metadata.tables["subscriptions"]
    first = (
        select(func.count())
        .select_from(invoices)
        .where(invoices.c.reason == InvoiceReason.SUBSCRIPTION_START.value)
        .where(invoices.c.status == InvoiceStatus.PAID.value)
    )
    active = (
        select(func.count())
        .select_from(subscriptions)
        .where(subscriptions.c.status == SubscriptionStatus.ACTIVE.value)
    )
    database = connect(url)
    try:
        with database.connect() as connection:
            paid = int(connection.execute(first).scalar_one())
            live = int(connection.execute(active).scalar_one())
    finally:
        database.dispose()
    checks = {"active": live, "paid": paid, "charges": charges}
    wrong = [f"{value} {name}" for name, value in checks.items() if value != size]
    return checks, (", ".join(wrong) + f" (expected {size})") if wrong else ""


# -- worker processes -----------------------------------------------------------------------


class _WorkerFailed(Exception):
    pass


def _run_workers(
    url: str, case: _Case, gateway: Mapping[str, str], scratch: Path
) -> list[dict[str, Any]]:
    """Start the case's worker processes, configured only by ``BILLING_*`` variables (the
    database, batch size, threads and ``gateway``), start them together once all are ready, and
    return what each printed."""
    env = {name: value for name, value in os.environ.items() if not name.startswith("BILLING_")}
    env.update(BILLING_DATABASE_URL=url, **gateway)
    if case.batch is not None and case.threads is not None:
        env.update(BILLING_BATCH_SIZE=str(case.batch), BILLING_THREADS=str(case.threads))
    role = case.kind if case.kind in _SIGN_UPS else "worker"
    command = [sys.executable, "-m", "billing.bench", role, DUE.isoformat(), str(case.size)]
    logs = [scratch / f"worker-{uuid.uuid4().hex[:8]}.log" for _ in range(case.workers)]
    processes: list[subprocess.Popen[str]] = []
    try:
        for log in logs:
            with log.open("w") as stderr:
                processes.append(
                    subprocess.Popen(
                        command,
                        env=env,
                        stdin=subprocess.PIPE,
                        stdout=subprocess.PIPE,
                        stderr=stderr,
                        text=True,
                    )
                )
        for process, log in zip(processes, logs, strict=True):
            _answer(process, log, "ready")
        for process in processes:
            assert process.stdin is not None
            process.stdin.write("go\n")
            process.stdin.flush()
        results = [_answer(p, log, "result") for p, log in zip(processes, logs, strict=True)]
        for process, log in zip(processes, logs, strict=True):
            if process.wait() != 0:
                raise _WorkerFailed(f"a worker exited with {process.returncode}: {_tail(log)}")
        return results
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait()
        for log in logs:
            log.unlink(missing_ok=True)


def _answer(process: subprocess.Popen[str], log: Path, key: str) -> dict[str, Any]:
    """The worker's next JSON line holding ``key`` (other output is passed over)."""
    assert process.stdout is not None
    for line in process.stdout:
        try:
            answer = json.loads(line)
        except ValueError:
            continue
        if isinstance(answer, dict) and key in answer:
            return answer
    process.wait()
    raise _WorkerFailed(f"a worker exited with {process.returncode}: {_tail(log)}")


def _tail(log: Path) -> str:
    lines = [line for line in log.read_text(errors="replace").splitlines() if line.strip()]
    return lines[-1][:300] if lines else "no output"


def _worker_main(argv: Sequence[str]) -> int:
    """A benchmark worker: ``python -m billing.bench worker INSTANT`` (see the module)."""
    import resource

    configure_logging("warning")
    if len(argv) != 3 or argv[0] not in ("worker", *_SIGN_UPS):
        print("usage: python -m billing.bench worker|api|bulk INSTANT N", file=sys.stderr)
        return 2
    gateway = from_environment(os.environ)
    if gateway is None:
        print("set BILLING_FAKE_GATEWAY or BILLING_FAKE_GATEWAY_URL", file=sys.stderr)
        return 2
    clock = ManualClock(datetime.fromisoformat(argv[1]))
    with open_engine(settings=Settings.from_env(), clock=clock, gateways=[gateway]) as engine:
        worker = Worker(engine)
        freeze_startup_objects()  # as `billing worker` does
        _say({"ready": True})
        if sys.stdin.readline().strip() != "go":
            return 2
        started = time.time()
        if argv[0] in _SIGN_UPS:
            _SIGN_UPS[argv[0]](engine, gateway.name, int(argv[2]))
            report = RunReport()
        else:
            report = worker.billing()
        ended = time.time()
    charges = len(gateway.charges_taken()) if isinstance(gateway, FakeGateway) else None
    gateway.close()
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    _say(
        {
            "result": True,
            "started": started,
            "ended": ended,
            "report": {
                "claimed": report.claimed,
                "steps": report.steps,
                "payments": report.payments,
                "checks": report.checks,
                "contended": len(report.contended),
                "failed": len(report.failed),
            },
            "charges": charges,
            "peak_rss_kib": rss // 1024 if sys.platform == "darwin" else rss,
        }
    )
    return 0


def _subscribe_customers(engine: BillingEngine, gateway: str, size: int) -> None:
    """What a host app's sign-up does, ``size`` times: a customer, its card, a subscription
    paid at once, each call with its own idempotency key (see the module)."""
    for index in range(size):
        customer = engine.create_customer(
            timezone=TIMEZONES[index % len(TIMEZONES)].key, idempotency_key=f"customer-{index}"
        )
        engine.add_payment_method(
            customer.id, gateway=gateway, token="tok_bench", idempotency_key=f"card-{index}"
        )
        engine.subscribe(customer.id, PLAN.code, tax=TAX, idempotency_key=f"subscribe-{index}")


def _sign_up_customers(engine: BillingEngine, gateway: str, size: int) -> None:
    """The same sign-ups as :func:`_subscribe_customers`, made with ``sign_up_many``, a
    thousand at a time."""
    for first in range(0, size, BULK_CHUNK):
        engine.sign_up_many(
            [
                SignUp(
                    customer_id=f"cus_bulk_{index:08d}",
                    timezone=TIMEZONES[index % len(TIMEZONES)].key,
                    gateway=gateway,
                    token="tok_bench",
                    plan=PLAN.code,
                    tax=TAX,
                )
                for index in range(first, min(first + BULK_CHUNK, size))
            ]
        )


_SIGN_UPS: dict[str, Callable[[BillingEngine, str, int], None]] = {
    "api": _subscribe_customers,
    "bulk": _sign_up_customers,
}
"""The cases that sign customers up rather than renew them, and what each does."""


def _say(message: Mapping[str, Any]) -> None:
    print(json.dumps(message), flush=True)


# -- the cases ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Case:
    kind: str
    """``limit``, ``baseline``, ``engine``, ``memory``, ``api`` or ``bulk``."""
    gateway: str
    """``none`` (limit), ``in-process`` or ``http``."""
    size: int
    workers: int = 1
    batch: int | None = None
    threads: int | None = None


def _cases(options: Options) -> list[_Case]:
    batch, threads = options.engine_batch, options.engine_threads
    cases = [
        _Case("limit", "none", options.size),
        _Case("baseline", "in-process", options.baseline, 1, 1, 1),
        *(_Case("engine", "in-process", options.size, w, batch, threads) for w in options.workers),
    ]
    if 1 not in options.workers:  # the peak memory at N is read from one worker alone
        cases.append(_Case("engine", "in-process", options.size, 1, batch, threads))
    cases.append(_Case("memory", "in-process", max(1, options.size // 4), 1, batch, threads))
    cases.append(_Case("api", "in-process", options.api, 1))
    cases.append(_Case("bulk", "in-process", options.size, 1))
    if options.http:
        http_threads = options.engine_http_threads
        cases.append(_Case("baseline", "http", options.http_baseline, 1, 1, 1))
        cases += [
            _Case("engine", "http", options.size, w, batch, http_threads) for w in options.workers
        ]
    return cases


def _measure(
    databases: _Databases, case: _Case, options: Options, renewal: Renewal, scratch: Path
) -> dict[str, Any]:
    """Run one case on a fresh database and check it."""
    result: dict[str, Any] = {
        "database": databases.name,
        "case": case.kind,
        "gateway": case.gateway,
        "gateway_delay_ms": options.http_delay_ms if case.gateway == "http" else 0,
        "workers": case.workers if case.kind != "limit" else None,
        "batch": case.batch,
        "threads": case.threads,
        "size": case.size,
        "seed_seconds": None,
        "seconds": None,
        "renewals_per_second": None,
        "peak_rss_kib": None,
        "report": None,
        "per_worker": [],
        "checks": None,
        "ok": False,
        "problem": None,
    }
    with databases.fresh() as url:
        seeding = time.perf_counter()
        seed(url, 0 if case.kind in _SIGN_UPS else case.size)
        result["seed_seconds"] = round(time.perf_counter() - seeding, 3)
        runs: list[dict[str, Any]] = []
        try:
            if case.kind == "limit":
                seconds = _limit(url, case.size, renewal)
                charges: int | None = None
            elif case.gateway == "http":
                fake = FakeGateway(latency=timedelta(milliseconds=options.http_delay_ms))
                with serve(fake) as gateway_url:
                    gateway = {"BILLING_FAKE_GATEWAY_URL": gateway_url}
                    runs = _run_workers(url, case, gateway, scratch)
                    charges = len(books(fake)["charges"])
            else:
                runs = _run_workers(url, case, {"BILLING_FAKE_GATEWAY": "approve"}, scratch)
                charges = sum(int(run["charges"]) for run in runs)
        except _WorkerFailed as exc:
            return {**result, "problem": str(exc)}
        if runs:
            seconds = max(run["ended"] for run in runs) - min(run["started"] for run in runs)
        failed = sum(int(run["report"]["failed"]) for run in runs)
        if case.kind in _SIGN_UPS:
            checks, problem = verify_api(url, case.size, charges or 0)
        else:
            checks, problem = verify(url, case.size, charges, failed)
    if runs:
        result["report"] = {
            key: sum(int(run["report"][key]) for run in runs)
            for key in ("claimed", "steps", "payments", "checks", "contended", "failed")
        }
        result["peak_rss_kib"] = max(int(run["peak_rss_kib"]) for run in runs)
        result["per_worker"] = [
            {
                "seconds": round(run["ended"] - run["started"], 4),
                "claimed": run["report"]["claimed"],
                "peak_rss_kib": run["peak_rss_kib"],
            }
            for run in runs
        ]
    return {
        **result,
        "seconds": round(seconds, 4),
        "renewals_per_second": round(case.size / seconds, 2) if seconds > 0 else None,
        "checks": checks,
        "ok": not problem,
        "problem": problem or None,
    }


def _derive(cases: list[dict[str, Any]]) -> None:
    """Add each rate as a fraction of its database's limit and a speed-up over its baseline."""
    for case in cases:
        same = [c for c in cases if c["database"] == case["database"] and c["ok"]]
        limit = next((c["renewals_per_second"] for c in same if c["case"] == "limit"), None)
        baseline = next(
            (
                c["renewals_per_second"]
                for c in same
                if c["case"] == "baseline" and c["gateway"] == case["gateway"]
            ),
            None,
        )
        rate = case.get("renewals_per_second") if case["ok"] else None
        if case["case"] == "bulk":  # sign-ups: the baseline is the API's one at a time
            baseline = next((c["renewals_per_second"] for c in same if c["case"] == "api"), None)
        renewals = case["case"] not in ("limit", *_SIGN_UPS)  # sign-ups are another kind of work
        case["fraction_of_limit"] = round(rate / limit, 4) if rate and limit and renewals else None
        case["speedup_over_baseline"] = (
            round(rate / baseline, 2)
            if rate and baseline and (renewals or case["case"] == "bulk")
            else None
        )


def _memory(cases: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per database: one in-process worker's peak RSS at N and at N/4."""
    found = []
    for name in dict.fromkeys(c["database"] for c in cases):
        pair = [
            next(
                (
                    c
                    for c in cases
                    if c["database"] == name
                    and c["case"] == kind
                    and c["gateway"] == "in-process"
                    and c["workers"] == 1
                    and c.get("peak_rss_kib")
                ),
                None,
            )
            for kind in ("engine", "memory")
        ]
        if pair[0] is not None and pair[1] is not None:
            found.append(
                {
                    "database": name,
                    "sizes": [pair[0]["size"], pair[1]["size"]],
                    "peak_rss_kib": [pair[0]["peak_rss_kib"], pair[1]["peak_rss_kib"]],
                }
            )
    return found


def run(options: Options, *, progress: Progress | None = None) -> dict[str, Any]:
    """Measure every case (see the module) and return the results, JSON-ready.

    Raises :class:`~billing.domain.errors.StorageError` when a database cannot be reached or
    set up; a case whose checks fail is reported in the results (``ok`` false), not raised.
    """
    say = progress or (lambda _: None)
    started = datetime.now(UTC)
    cases: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="billing-bench-") as directory:
        scratch = Path(directory)
        databases: list[_Databases] = []
        try:
            if options.postgres_url is not None:
                databases.append(_PostgresDatabases(options.postgres_url))
            sqlite = _SQLiteFiles(scratch)
            databases.insert(0, sqlite)
            with sqlite.fresh() as url:
                renewal = calibrate(url)
            for database in databases:
                for case in _cases(options):
                    say(f"{database.name}: {_describe(case)}")
                    measured = _measure(database, case, options, renewal, scratch)
                    cases.append(measured)
                    say(f"  {_outcome(measured)}")
        except SQLAlchemyError as exc:
            message = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
            raise StorageError(message) from exc
        finally:
            for database in databases:
                database.close()
    _derive(cases)
    versions = {database.name: database.version for database in databases}
    return {
        "date": started.isoformat(timespec="seconds"),
        "environment": {
            "cpu_count": os.cpu_count(),
            "python": platform.python_version(),
            "python_implementation": platform.python_implementation(),
            "platform": platform.platform(),
            "billing": __version__,
        },
        "databases": {
            "sqlite": {"measured": True, "version": versions["sqlite"]},
            "postgresql": {"measured": True, "version": versions["postgresql"]}
            if "postgresql" in versions
            else {"measured": False, "version": None, "why": "no --postgres-url"},
        },
        "options": {
            "size": options.size,
            "baseline_size": options.baseline,
            "http_baseline_size": options.http_baseline if options.http else None,
            "workers": list(options.workers),
            "batch": options.engine_batch,
            "threads": options.engine_threads,
            "http": options.http,
            "http_delay_ms": options.http_delay_ms if options.http else None,
            "http_threads": options.engine_http_threads if options.http else None,
            "limit_batch": LIMIT_BATCH,
        },
        "renewal": {
            "due": DUE.isoformat(),
            "plan": f"{PLAN.code}: {PLAN.price} a month, {TAX.name} {TAX.percent} %",
            "rows_added": renewal.rows,
            "subscription_columns_changed": sorted([*renewal.subscription, "version"]),
        },
        "cases": cases,
        "memory": _memory(cases),
        "ok": all(case["ok"] for case in cases),
    }


def _describe(case: _Case) -> str:
    if case.kind == "limit":
        return f"limit, N={case.size}"
    if case.kind == "api":
        return f"api: customer, card and subscription per call of a host, N={case.size}"
    if case.kind == "bulk":
        return f"bulk: the same sign-ups with sign_up_many, {BULK_CHUNK} a call, N={case.size}"
    gateway = "HTTP fake" if case.gateway == "http" else "in-process fake"
    return (
        f"{case.kind}, {case.workers} worker(s), batch {case.batch} x {case.threads} threads, "
        f"{gateway}, N={case.size}"
    )


def _outcome(case: Mapping[str, Any]) -> str:
    if case["seconds"] is None:
        return f"failed: {case['problem']}"
    verdict = "ok" if case["ok"] else f"FAILED: {case['problem']}"
    unit = "subscriptions" if case["case"] in _SIGN_UPS else "renewals"
    return f"{case['seconds']:.2f} s, {case['renewals_per_second']} {unit}/s, {verdict}"


def failures(results: Mapping[str, Any]) -> list[str]:
    """One line per case whose checks failed."""
    return [
        f"{case['database']} {_label(case)}"
        + (f", {case['workers']} worker(s)" if case["workers"] else "")
        + f": {case['problem']}"
        for case in results["cases"]
        if not case["ok"]
    ]


# -- the table ------------------------------------------------------------------------------


def _number(value: float | None, template: str) -> str:
    return "" if value is None else template.format(value)


_NAMES = {
    "limit": "limit",
    "baseline": "naive",
    "engine": "engine",
    "memory": "engine, N/4",
    "api": "API sign-ups",
    "bulk": "bulk sign-ups",
}
_DATABASES = {"sqlite": "SQLite", "postgresql": "PostgreSQL"}


def _label(case: Mapping[str, Any]) -> str:
    return _NAMES[case["case"]] + (", HTTP" if case["gateway"] == "http" else "")


def render(results: Mapping[str, Any]) -> Group:
    """The results as rich tables, one per database, with what they mean underneath."""
    options, environment = results["options"], results["environment"]
    parts: list[RenderableType] = [
        Text(
            f"Billing run benchmark: {options['size']} renewals due at one instant",
            style="bold",
        )
    ]
    for name, database in results["databases"].items():
        title = f"{_DATABASES[name]} {database['version'] or ''}".strip()
        if not database["measured"]:
            parts.append(Text(f"\n{title}: not measured ({database['why']})", style="yellow"))
            continue
        grid = Table(
            title="\n" + title,
            title_justify="left",
            box=box.SIMPLE_HEAD,
            show_edge=False,
            padding=(0, 0),
            pad_edge=False,
        )
        for column in (
            "case",
            "workers",
            "batch\nx threads",
            "N",
            "seconds",
            "renewals\nper s",
            "of\nlimit",
            "vs\nnaive",
            "peak RSS\nMiB",
            "check",
        ):
            grid.add_column(column, justify="left" if column == "case" else "right", no_wrap=True)
        for case in results["cases"]:
            if case["database"] != name:
                continue
            rss = case.get("peak_rss_kib")
            grid.add_row(
                _label(case),
                "" if case["workers"] is None else str(case["workers"]),
                "" if case["batch"] is None else f"{case['batch']} x {case['threads']}",
                str(case["size"]),
                _number(case.get("seconds"), "{:.2f}"),
                _number(case.get("renewals_per_second"), "{:,.1f}"),
                _number(case.get("fraction_of_limit"), "{:.1%}"),
                _number(case.get("speedup_over_baseline"), "{:.1f}x"),
                _number(None if rss is None else rss / 1024, "{:.0f}"),
                "[green]ok[/green]" if case["ok"] else "[red]FAILED[/red]",
            )
        parts.append(grid)
    notes = [
        "limit: the same rows written with bare batched inserts, no engine logic; "
        "naive: the engine with batch 1 and 1 thread; API sign-ups: new subscriptions "
        "(customer, card, subscription paid at once) per second by one process"
        + (
            f"; HTTP: the fake gateway served on loopback, answering after "
            f"{options['http_delay_ms']} ms"
            if options["http"]
            else ""
        )
        + "."
    ]
    for memory in results["memory"]:
        (big, small), (big_rss, small_rss) = memory["sizes"], memory["peak_rss_kib"]
        notes.append(
            f"{_DATABASES[memory['database']]}: one worker's peak RSS {big_rss / 1024:.0f} MiB "
            f"at N={big}, {small_rss / 1024:.0f} MiB at N={small}."
        )
    notes.append(
        f"{environment['cpu_count']} CPUs; {environment['python_implementation']} "
        f"{environment['python']}; {environment['platform']}; billing {environment['billing']}; "
        f"{results['date']}."
    )
    parts.extend(Text(note, style="dim") for note in notes)
    return Group(*parts)


if __name__ == "__main__":
    raise SystemExit(_worker_main(sys.argv[1:]))
