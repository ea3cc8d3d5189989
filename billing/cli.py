"""The ``billing`` command."""

from __future__ import annotations

import errno
import importlib
import json
import logging
import os
import shlex
import socket
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from sqlalchemy import Engine

from billing import __version__
from billing.bootstrap import open_engine
from billing.clock import ManualClock
from billing.config import Settings
from billing.domain import _checks
from billing.domain.currencies import EXPONENTS
from billing.domain.errors import BillingError, InvalidArgument, SchemaNotReady
from billing.domain.periods import BillingCalendar, Interval
from billing.scenarios import ScenarioError, mismatches, read_scenario, run_scenario
from billing.services.dispatch import Handlers
from billing.store import currencies
from billing.store.database import connect, current_revision, head_revision, shown, upgrade
from billing.worker import Worker, configure_logging, freeze_startup_objects

app = typer.Typer(
    name="billing",
    help="A subscription billing engine: plans, periods, proration, taxes, credit, debt, dunning.",
    no_args_is_help=True,
    add_completion=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"billing {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version."),
    ] = False,
) -> None:
    """A subscription billing engine for Python."""


@app.command()
def calendar(
    anchor: Annotated[
        str, typer.Option(help="The first period's start, ISO 8601 with an offset.")
    ] = "2026-01-31T12:00:00-03:00",
    interval: Annotated[str, typer.Option(help="day, week, month or year.")] = "month",
    count: Annotated[int, typer.Option(help="Intervals per period.")] = 1,
    timezone: Annotated[
        str, typer.Option(help="The customer's IANA timezone.")
    ] = "America/Santiago",
    periods: Annotated[int, typer.Option(help="How many periods to show.")] = 12,
) -> None:
    """Print the billing periods of an anchor: month ends, leap years and DST included."""
    console = Console()
    try:
        start = _checks.aware("anchor", datetime.fromisoformat(anchor))
        cal = BillingCalendar(start, Interval.of(interval, count), _checks.timezone(timezone))
        _checks.integer("periods", periods, minimum=1)
    except ValueError as exc:
        message = str(exc) if isinstance(exc, BillingError) else f"anchor: {exc}"
        console.print(f"[red]error:[/red] {message}")
        raise typer.Exit(code=2) from None
    table = Table(title=f"Every {cal.interval} from {start.isoformat()} in {timezone}")
    for column in ("#", "start (local)", "end (local)", "days", "hours"):
        table.add_column(column, justify="right" if column in ("#", "days", "hours") else "left")
    for k in range(periods):
        period = cal.period(k)
        local_start, local_end = (
            period.start.astimezone(cal.timezone),
            period.end.astimezone(cal.timezone),
        )
        table.add_row(
            str(k),
            local_start.isoformat(),
            local_end.isoformat(),
            str((local_end.date() - local_start.date()).days),
            f"{period.duration.total_seconds() / 3600:g}",
        )
    console.print(table)


DatabaseUrl = Annotated[
    str | None,
    typer.Option(
        "--database-url",
        help="SQLAlchemy URL (sqlite:///billing.db, postgresql://...); "
        "default: $BILLING_DATABASE_URL or the SQLite file billing.db.",
    ),
]


@app.command()
def migrate(database_url: DatabaseUrl = None) -> None:
    """Create or upgrade the billing tables of a database to this version's schema."""
    console = Console()
    url = database_url or Settings.from_env().database_url
    try:
        engine = connect(url)
    except BillingError as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(code=2) from None
    try:
        before = current_revision(engine)
        upgrade(engine)
        after = current_revision(engine)
    finally:
        engine.dispose()
    if before == after:
        typer.echo(f"{shown(url)} is up to date (revision {after})")
    else:
        typer.echo(f"{shown(url)} migrated from {before or 'an empty schema'} to {after}")


@app.command()
def worker(
    database_url: DatabaseUrl = None,
    once: Annotated[
        bool, typer.Option("--once", help="Run one pass and exit (cron, tests).")
    ] = False,
    tick: Annotated[float | None, typer.Option(help="Seconds between billing runs.")] = None,
    threads: Annotated[int | None, typer.Option(help="Subscriptions billed at once.")] = None,
    batch: Annotated[int | None, typer.Option(help="Subscriptions claimed at a time.")] = None,
    lease: Annotated[float | None, typer.Option(help="Seconds a claim lasts.")] = None,
    handlers: Annotated[
        str | None,
        typer.Option(
            help="module:attribute of a mapping from event names (or '*') to lists of "
            "handlers, each called with every such event."
        ),
    ] = None,
    log_level: Annotated[str, typer.Option(help="debug, info, warning or error.")] = "info",
    now: Annotated[
        str | None,
        typer.Option(
            help="With --once: run as if it were this instant (ISO 8601 with a UTC offset), "
            "a test clock for rehearsing months of billing with real workers."
        ),
    ] = None,
) -> None:
    """Bill what is due, reconcile unsettled payments and deliver events, on a schedule.

    Run as many as you like, on as many machines: they coordinate through the database. Gateways
    come from the installed packages' `billing.gateways` entry points, configured by the
    environment. SIGTERM or SIGINT stops a worker gracefully.
    """
    configure_logging(log_level)
    try:
        settings = Settings.from_env(
            database_url=database_url,
            tick_seconds=tick,
            threads=threads,
            batch_size=batch,
            lease_seconds=lease,
        )
        registry = _load(handlers) if handlers else None
        clock = None if now is None else ManualClock(_instant("--now", now, once=once))
        engine = open_engine(settings=settings, clock=clock)
    except (BillingError, ImportError, AttributeError) as exc:
        _error(str(exc))
        raise typer.Exit(code=2) from None
    freeze_startup_objects()
    with engine:
        runner = Worker(engine, handlers=registry)
        if once:
            report = runner.run_once()
            failed = len(report.billing.failed) + len(report.reconcile.failed)
            raise typer.Exit(code=1 if failed else 0)
        runner.run()


def _instant(option: str, value: str, *, once: bool) -> datetime:
    if not once:
        raise InvalidArgument(option, "needs --once (a continuous worker reads the real clock)")
    try:
        instant = datetime.fromisoformat(value)
    except ValueError:
        raise InvalidArgument(option, "must be an ISO 8601 instant", value) from None
    return _checks.aware(option, instant)


def _error(message: str) -> None:
    """One line on stderr, never wrapped, so a path or a field name stays whole."""
    Console(stderr=True, soft_wrap=True).print(f"[red]error:[/red] {escape(message)}")


def _load(spec: str) -> Handlers:
    module_name, _, attribute = spec.partition(":")
    if not attribute:
        raise ImportError(f"--handlers must look like module:attribute, got {spec!r}")
    value = getattr(importlib.import_module(module_name), attribute)
    if not isinstance(value, Mapping):
        raise AttributeError(f"{spec} must be a mapping of event names to handler lists")
    return value


currencies_app = typer.Typer(
    help="The exponent a database stores each currency's amounts with.", no_args_is_help=True
)
app.add_typer(currencies_app, name="currencies")


@currencies_app.command("show")
def currencies_show(database_url: DatabaseUrl = None) -> None:
    """List each currency the database holds: the exponent it was stored with, and this engine's.

    A difference makes the engine refuse the database until `billing currencies rescale` converts
    that currency's amounts.
    """
    url = database_url or Settings.from_env().database_url
    with _database(url) as engine:
        stored = currencies.recorded(engine)
    table = Table(title=f"Currencies stored in {shown(url)}")
    for column in ("currency", "stored with", "this engine", ""):
        table.add_column(column)
    for code, exponent in stored.items():
        ours = EXPONENTS.get(code)
        status = "ok" if ours == exponent else "[red]needs `billing currencies rescale`[/red]"
        table.add_row(code, str(exponent), str(ours), status)
    Console().print(table)


@currencies_app.command("rescale")
def currencies_rescale(
    code: Annotated[str, typer.Argument(help="The currency to convert, such as COP.")],
    database_url: DatabaseUrl = None,
) -> None:
    """Convert every stored amount of a currency to this engine's exponent, in one transaction.

    COP stored with 2 decimals becomes whole pesos (divided by 100). Refused, changing nothing,
    if an amount has digits the new exponent cannot hold.
    """
    url = database_url or Settings.from_env().database_url
    with _database(url) as engine:
        try:
            done = currencies.rescale(engine, code.strip().upper())
        except BillingError as exc:
            _error(str(exc))
            raise typer.Exit(code=2) from None
    if done.stored == done.exponent:
        typer.echo(f"{done.code} is already stored with {done.exponent} decimals: nothing to do")
    else:
        typer.echo(
            f"{done.code}: {done.amounts} amount(s) converted from {done.stored} to "
            f"{done.exponent} decimals"
        )


@contextmanager
def _database(url: str) -> Iterator[Engine]:
    """A connection to a migrated database, or a message and exit 2."""
    try:
        engine = connect(url)
        if current_revision(engine) != head_revision():
            engine.dispose()
            raise SchemaNotReady(shown(url), current_revision(engine), head_revision())
    except BillingError as exc:
        _error(str(exc))
        raise typer.Exit(code=2) from None
    try:
        yield engine
    finally:
        engine.dispose()


scenario_app = typer.Typer(help="Replay declarative billing histories.", no_args_is_help=True)
app.add_typer(scenario_app, name="scenario")


@scenario_app.command("run")
def scenario_run(
    file: Annotated[Path, typer.Argument(help="A scenario file (YAML or JSON).")],
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON document.")] = False,
    database_url: Annotated[
        str | None,
        typer.Option("--database-url", help="Run on this database instead of a temporary one."),
    ] = None,
) -> None:
    """Replay a scenario on the test clock and report every invoice, payment and balance.

    Exits 2 for a malformed file (naming the line and the field), 1 when the report differs from
    the file's `expect` section.
    """
    logging.getLogger("billing").setLevel(logging.WARNING)
    logging.getLogger("adapters").setLevel(logging.ERROR)  # lost answers are the scenario's
    err = Console(stderr=True, soft_wrap=True)
    try:
        scenario = read_scenario(file)
        report = run_scenario(scenario, database_url=database_url)
    except OSError as exc:
        _error(f"{file}: {exc.strerror or exc}")
        raise typer.Exit(code=2) from None
    except (ScenarioError, BillingError) as exc:
        _error(str(exc))
        raise typer.Exit(code=2) from None
    if as_json:
        typer.echo(json.dumps(report, indent=2, ensure_ascii=False))
    else:
        _print_report(report)
    failed = mismatches(report, scenario.expect) if scenario.expect else []
    for problem in failed:
        err.print(f"[red]unexpected:[/red] {escape(problem)}")
    if failed:
        raise typer.Exit(code=1)
    if scenario.expect and not as_json:
        Console().print("[green]all expectations met[/green]")


FAKE_GATEWAYS = "billing.fake_gateways"
"""The entry-point group of the gateways' fake servers: ``name = "module:factory"``, where
``factory()`` returns the fake's ASGI app."""

FAKE_WORKER_ENVIRONMENT = "fake_worker_environment"
"""The optional function, in the module of a ``billing.fake_gateways`` entry point, that says
what a worker needs to use that fake: ``fake_worker_environment(base_url)`` returns
``{"BILLING_<GATEWAY>_...": value}``, the adapter's own variables with the credentials the fake
accepts. ``billing fake-gateways serve`` prints them."""

_MAX_PORT = 65535

fakes_app = typer.Typer(
    help="The gateways' fake servers: tests, demos and benchmarks without the internet.",
    no_args_is_help=True,
)
app.add_typer(fakes_app, name="fake-gateways")


@fakes_app.command("serve")
def fake_gateways_serve(
    host: Annotated[str, typer.Option(help="The address to listen on.")] = "127.0.0.1",
    port: Annotated[
        int, typer.Option(help="The port to listen on; 0 takes a free one (the banner says it).")
    ] = 8765,
    gateway: Annotated[
        list[str] | None,
        typer.Option("--gateway", help="Serve only this gateway's fake (repeatable)."),
    ] = None,
) -> None:
    """Serve every installed gateway's fake server on one port, each under /<name>.

    Once the port is bound, prints on standard output each fake's base URL and the variables a
    worker needs to charge through it, as shell lines to copy. The fakes' credentials come from
    their BILLING_<GATEWAY>_FAKE_... variables, else their defaults. Stop with Ctrl-C.
    """
    from billing.testing.asgi import mounted, run  # starlette and uvicorn load only here

    if not 0 <= port <= _MAX_PORT:
        _error(f"--port: must be between 0 and {_MAX_PORT} (got {port})")
        raise typer.Exit(code=2)
    installed = {entry.name: entry for entry in entry_points(group=FAKE_GATEWAYS)}
    chosen = gateway or sorted(installed)
    unknown = [name for name in chosen if name not in installed]
    if unknown or not chosen:
        known = ", ".join(sorted(installed)) or "none"
        _error(f"--gateway: must be one of {known} (got {unknown})")
        raise typer.Exit(code=2)
    apps = {name: installed[name].load()() for name in chosen}
    try:
        listener = _listen(host, port)
    except OSError as exc:
        _error(_listen_error(host, port, exc))
        raise typer.Exit(code=2) from None
    bound = int(listener.getsockname()[1])
    base = f"http://{f'[{host}]' if ':' in host else host}:{bound}"
    variables = {name: _fake_worker_environment(installed[name], f"{base}/{name}") for name in apps}
    typer.echo(_banner(base, variables))  # echo flushes: a pipe reads it before any request
    run(mounted(apps), listener)


def _listen(host: str, port: int) -> socket.socket:
    """A listening socket on ``host:port``, bound before the server starts, so that bad input
    is one message and the banner is printed only once the port is really ours."""
    listener = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    try:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((host, port))
        listener.listen(2048)  # connections wait in the backlog until uvicorn serves them
    except BaseException:
        listener.close()
        raise
    return listener


def _listen_error(host: str, port: int, exc: OSError) -> str:
    reason = exc.strerror or str(exc)
    if exc.errno == errno.EADDRINUSE:
        return f"--port: {host}:{port} is already in use (try another, or --port 0)"
    if exc.errno == errno.EACCES:
        return f"--port: not allowed to listen on port {port} ({reason})"
    if isinstance(exc, socket.gaierror) or exc.errno == errno.EADDRNOTAVAIL:
        return f"--host: cannot listen on {host!r} ({reason})"
    return f"cannot listen on {host}:{port}: {reason}"


def _fake_worker_environment(entry: EntryPoint, base_url: str) -> dict[str, str]:
    """The variables a worker needs for the fake of ``entry`` served at ``base_url``, from the
    entry point's module (:data:`FAKE_WORKER_ENVIRONMENT`), or none if it has no such function."""
    describe = getattr(importlib.import_module(entry.module), FAKE_WORKER_ENVIRONMENT, None)
    if describe is None:
        return {}
    return {str(key): str(value) for key, value in describe(base_url).items()}


def _banner(base: str, variables: Mapping[str, Mapping[str, str]]) -> str:
    """Shell lines: a comment per fake with its base URL, then an ``export`` per variable."""
    lines = [
        f"# billing fake-gateways: serving on {base}, each fake under /<name>.",
        "# A worker (or the host's engine) charges through them with these variables:",
    ]
    for name, environment in variables.items():
        lines.append(f"# {name}: {base}/{name}")
        if not environment:
            lines.append(f"# ({name}'s package does not say which variables its adapter reads)")
        lines += [f"export {key}={shlex.quote(value)}" for key, value in environment.items()]
    lines.append("# Serving until Ctrl-C.")
    return "\n".join(lines)


def _print_report(report: dict[str, Any]) -> None:
    console = Console()
    console.print(f"[bold]{report['scenario']}[/bold]")
    invoices = Table(title="Invoices")
    for column in ("number", "subscription", "period", "status", "lines", "total"):
        invoices.add_column(column, justify="right" if column == "total" else "left")
    for invoice in report["invoices"]:
        lines = "\n".join(f"{line['kind']} {line['amount']}" for line in invoice["lines"])
        period = f"{(invoice['period_start'] or '')[:10]} to {(invoice['period_end'] or '')[:10]}"
        total = f"{invoice['total']} {invoice['currency']}"
        invoices.add_row(
            invoice["number"], invoice["subscription"], period, invoice["status"], lines, total
        )
    console.print(invoices)
    payments = Table(title="Payments")
    for column in ("at", "invoice", "attempt", "amount", "status", "error"):
        payments.add_column(column)
    for payment in report["payments"]:
        payments.add_row(
            payment["at"][:16],
            payment["invoice"],
            str(payment["attempt"]),
            f"{payment['amount']} {payment['currency']}",
            payment["status"],
            payment["error_code"] or "",
        )
    console.print(payments)
    if report["refunds"]:
        refunds = Table(title="Refunds")
        for column in ("at", "invoice", "attempt", "amount", "status"):
            refunds.add_column(column)
        for refund in report["refunds"]:
            refunds.add_row(
                refund["at"][:16],
                refund["invoice"],
                str(refund["attempt"]),
                f"{refund['amount']} {refund['currency']}",
                refund["status"],
            )
        console.print(refunds)
    subscriptions = Table(title="Subscriptions")
    for column in ("ref", "plan", "status", "current period", "debt"):
        subscriptions.add_column(column)
    for sub in report["subscriptions"]:
        start, end = sub["current_period_start"] or "", sub["current_period_end"] or ""
        subscriptions.add_row(
            sub["ref"], sub["plan"], sub["status"], f"{start[:10]} to {end[:10]}", sub["debt"]
        )
    console.print(subscriptions)
    customers = Table(title="Customers")
    for column in ("ref", "credit balance"):
        customers.add_column(column)
    for customer in report["customers"]:
        customers.add_row(customer["ref"], f"{customer['credit_balance']} {customer['currency']}")
    console.print(customers)


@app.command()
def bench(
    size: Annotated[
        int | None, typer.Option(help="Due subscriptions per case; default: 20000.")
    ] = None,
    baseline_size: Annotated[
        int | None, typer.Option(help="The naive baseline's N; default: min(size, 2000).")
    ] = None,
    workers: Annotated[str, typer.Option(help="Worker process counts, comma-separated.")] = "1,2",
    postgres_url: Annotated[
        str | None,
        typer.Option(
            help="A PostgreSQL server's maintenance database; each case creates a bench_* "
            "database there and drops it. Without it only SQLite is measured."
        ),
    ] = None,
    http: Annotated[
        bool, typer.Option(help="Also bill through the fake gateway served over HTTP.")
    ] = True,
    http_delay_ms: Annotated[
        int | None, typer.Option(help="The served gateway's answer delay; default: 200.")
    ] = None,
    http_threads: Annotated[
        int | None,
        typer.Option(
            help="Gateway calls in flight per worker in the HTTP cases; default: --threads."
        ),
    ] = None,
    batch: Annotated[
        int | None, typer.Option(help="Subscriptions claimed at a time; default: the engine's.")
    ] = None,
    threads: Annotated[
        int | None, typer.Option(help="Worker threads; default: the engine's.")
    ] = None,
    json_path: Annotated[
        Path | None, typer.Option("--json", help="Write the results to this JSON file.")
    ] = None,
    quick: Annotated[bool, typer.Option(help="Tiny sizes for CI: N=200, baseline 50.")] = False,
) -> None:
    """Time complete billing runs of N due renewals by real worker processes, each checked.

    On SQLite and PostgreSQL, with 1 and 2 workers, in-process and over HTTP; beside the
    database's limit (bare batched inserts of the same rows) and a naive engine. Exits 1 if a
    case's checks fail. See docs/performance.md.
    """
    from billing import bench as benchmark  # its imports load only here

    err = Console(stderr=True, soft_wrap=True)
    try:
        options = benchmark.Options.parse(
            size=size,
            baseline_size=baseline_size,
            workers=workers,
            quick=quick,
            postgres_url=postgres_url,
            http=http,
            http_delay_ms=http_delay_ms,
            http_threads=http_threads,
            batch=batch,
            threads=threads,
        )
        if json_path is not None:  # a path that cannot be written fails now, not after the run
            _writable(json_path)
        results = benchmark.run(
            options, progress=lambda line: err.print(line, style="dim", markup=False)
        )
    except BillingError as exc:
        _error(str(exc))
        raise typer.Exit(code=2) from None
    Console().print(benchmark.render(results))
    if json_path is not None:
        _writable(json_path, json.dumps(results, indent=2) + "\n")
    failed = benchmark.failures(results)
    if failed:
        _error(f"{len(failed)} case(s) failed their checks: " + "; ".join(failed))
        raise typer.Exit(code=1)


def _writable(path: Path, text: str | None = None) -> None:
    """Make the file's directory and write ``text`` to it, or a message and exit 2."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        if not os.access(path.parent, os.W_OK):
            raise PermissionError(f"cannot write in {path.parent}")
        if text is not None:
            path.write_text(text)
    except OSError as exc:
        _error(f"{path}: {exc.strerror or exc}")
        raise typer.Exit(code=2) from None


def main() -> None:
    """Entry point of the ``billing`` console script."""
    app()
