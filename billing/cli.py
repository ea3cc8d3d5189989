"""The ``billing`` command.

Every command exits with a code of :class:`ExitCode` (docs/operations.md, "Exit codes"); a user
mistake is one line on standard error, never a traceback (:class:`~billing.cli_support.
BillingGroup`).
"""

from __future__ import annotations

import errno
import importlib
import json
import logging
import os
import shlex
import socket
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime
from enum import StrEnum
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from sqlalchemy import Engine

from billing import __version__, cli_inspect, cli_support, demo, simulate
from billing.bootstrap import open_engine
from billing.cli_render import ScenarioProgress, all_events, render_scenario
from billing.cli_support import (
    DATABASE_URL_HELP,
    BillingGroup,
    ExitCode,
    check_sqlite_file,
    database_errors,
    fail,
    instant,
    reading,
)
from billing.clock import ManualClock
from billing.config import Settings
from billing.domain import _checks
from billing.domain.currencies import EXPONENTS
from billing.domain.errors import BillingError, InvalidArgument, SchemaNotReady
from billing.domain.periods import BillingCalendar, Interval
from billing.engine import Engine as EngineApi
from billing.scenarios import Scenario, mismatches, read_scenario, run_scenario
from billing.services.dispatch import Handlers
from billing.store import currencies
from billing.store.database import connect, current_revision, head_revision, shown, upgrade
from billing.worker import PassReport, Worker, configure_logging, freeze_startup_objects

if TYPE_CHECKING:
    from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["ExitCode", "app", "main"]

app = typer.Typer(
    name="billing",
    cls=BillingGroup,
    help="A subscription billing engine: plans, periods, proration, taxes, credit, debt, dunning.",
    no_args_is_help=True,
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},
    epilog="Exit codes: 0 done; 1 a result differs from what was expected; 2 a usage error; "
    "3 the database cannot be used; 4 a billing failure (docs/operations.md, Exit codes).",
    pretty_exceptions_show_locals=False,  # a traceback must never show a URL's password
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"billing {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option(
            "--version", "-V", callback=_version, is_eager=True, help="Print the version and exit."
        ),
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
        fail(ExitCode.USAGE, str(exc) if isinstance(exc, BillingError) else f"--anchor: {exc}")
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


DatabaseUrl = Annotated[str | None, typer.Option("--database-url", help=DATABASE_URL_HELP)]


@app.command()
def migrate(database_url: DatabaseUrl = None) -> None:
    """Create or upgrade the billing tables of a database to this version's schema.

    Safe to repeat: a database already at this version is left as it is. A SQLite file is
    created if it does not exist (its folder must).
    """
    url = database_url or Settings.from_env().database_url
    check_sqlite_file(url, must_exist=False)
    engine = connect(url)
    try:
        with database_errors(url):
            before = current_revision(engine)
            upgrade(engine)
            after = current_revision(engine)
    finally:
        engine.dispose()
    if before == after:
        typer.echo(f"{shown(url)} is up to date (revision {after})")
    else:
        typer.echo(f"{shown(url)} migrated from {before or 'an empty schema'} to {after}")


class LogLevel(StrEnum):
    """What a worker logs: ``debug`` shows every billing step."""

    DEBUG = "debug"
    INFO = "info"
    WARNING = "warning"
    ERROR = "error"


_DEFAULTS = Settings()


@app.command()
def worker(
    database_url: DatabaseUrl = None,
    once: Annotated[
        bool,
        typer.Option("--once", help="Run one pass, print what it did, and exit (cron, tests)."),
    ] = False,
    tick: Annotated[
        float | None,
        typer.Option(
            help="Seconds between billing runs. Default: $BILLING_TICK_SECONDS, else "
            f"{_DEFAULTS.tick_seconds:g}.",
        ),
    ] = None,
    threads: Annotated[
        int | None,
        typer.Option(
            help="Gateway calls made at once. Default: $BILLING_THREADS, else "
            f"{_DEFAULTS.threads}.",
        ),
    ] = None,
    batch: Annotated[
        int | None,
        typer.Option(
            help="Subscriptions claimed at a time. Default: $BILLING_BATCH_SIZE, else "
            f"{_DEFAULTS.batch_size}.",
        ),
    ] = None,
    lease: Annotated[
        float | None,
        typer.Option(
            help="Seconds a claim lasts. Default: $BILLING_LEASE_SECONDS, else "
            f"{_DEFAULTS.lease_seconds:g}.",
        ),
    ] = None,
    handlers: Annotated[
        str | None,
        typer.Option(
            metavar="MODULE:ATTR",
            help="A mapping from event names (or '*') to lists of handlers, each called with "
            "every such event. Default: none, events wait in the outbox.",
        ),
    ] = None,
    log_level: Annotated[
        LogLevel,
        typer.Option(
            metavar="LEVEL",
            help="What to log on standard error: debug, info, warning or error.",
            case_sensitive=False,
        ),
    ] = LogLevel.INFO,
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
    environment; the worker logs which it loaded, and warns about one whose credentials are
    incomplete. SIGTERM or SIGINT stops a worker gracefully.

    With --once it prints what it did, even when nothing was due, and exits 4 if a
    subscription's work failed.
    """
    configure_logging(log_level.value)
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
    except (BillingError, ImportError, AttributeError) as exc:
        fail(ExitCode.USAGE, str(exc))
    check_sqlite_file(settings.database_url, must_exist=True)
    with database_errors(settings.database_url):
        try:
            engine = open_engine(settings=settings, clock=clock)
        except ValueError as exc:  # an adapter's variable it cannot read
            if isinstance(exc, BillingError):
                raise
            fail(ExitCode.USAGE, f"gateway configuration: {exc}")
    freeze_startup_objects()
    with engine:
        runner = Worker(engine, handlers=registry)
        if once:
            started = time.monotonic()
            with database_errors(settings.database_url):
                report = runner.run_once()
                next_at = engine.next_run_at()
            _print_pass(engine, report, next_at, time.monotonic() - started)
            failed = len(report.billing.failed) + len(report.reconcile.failed)
            raise typer.Exit(code=ExitCode.BILLING if failed else ExitCode.OK)
        runner.run()


def _print_pass(
    engine: EngineApi, report: PassReport, next_at: datetime | None, seconds: float
) -> None:
    """What one worker pass did, on standard output, even when nothing was due."""
    installed = sorted(entry.name for entry in entry_points(group="billing.gateways"))
    loaded = sorted(engine.gateways)
    skipped = [name for name in installed if name not in loaded]
    gateways = ", ".join(loaded) or "none"
    if skipped:
        gateways += f" (not configured: {', '.join(skipped)})"
    billing, reconcile = report.billing, report.reconcile
    lines = [
        f"worker pass on {shown(engine.settings.database_url)} at "
        f"{instant(engine.clock.now())}, in {seconds:.1f} s",
        f"gateways: {gateways}",
        f"billing: {billing.claimed} subscription(s) due, {billing.steps} step(s), "
        f"{billing.payments} payment(s), {billing.checks} check(s) of unsettled payments",
        f"reconcile: {reconcile.checks} payment check(s), {reconcile.refund_checks} refund "
        f"check(s), {reconcile.late_payment_checks} late-payment check(s), "
        f"{reconcile.link_cancellations} payment link withdrawal(s)",
        f"notifications processed: {report.notifications}",
    ]
    if report.dispatch.delivered or report.dispatch.failed:
        lines.append(
            f"events delivered: {report.dispatch.delivered}, failed: {report.dispatch.failed}"
        )
    if report.did_nothing:
        lines.append("nothing was due")
    failed = [*billing.failed, *reconcile.failed]
    if failed:
        lines.append(f"failed: {len(failed)} subscription(s): {', '.join(failed)} (see the log)")
    contended = [*billing.contended, *reconcile.contended]
    if contended:
        lines.append(f"left to another worker: {len(contended)} subscription(s)")
    lines.append(f"next work due at {instant(next_at)}" if next_at else "no work is scheduled")
    typer.echo("\n".join(lines))


def _instant(option: str, value: str, *, once: bool) -> datetime:
    if not once:
        raise InvalidArgument(option, "needs --once (a continuous worker reads the real clock)")
    try:
        instant = datetime.fromisoformat(value)
    except ValueError:
        raise InvalidArgument(option, "must be an ISO 8601 instant", value) from None
    return _checks.aware(option, instant)


def _load(spec: str) -> Handlers:
    module_name, _, attribute = spec.partition(":")
    if not attribute:
        raise ImportError(f"--handlers must look like module:attribute, got {spec!r}")
    try:
        value = getattr(importlib.import_module(module_name), attribute)
    except ImportError as exc:
        raise ImportError(f"--handlers: cannot import {module_name} ({exc})") from exc
    except AttributeError:
        raise AttributeError(f"--handlers: {module_name} has no {attribute!r}") from None
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
    code: Annotated[
        str, typer.Argument(metavar="CODE", help="The currency to convert, such as COP.")
    ],
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
            fail(ExitCode.USAGE, str(exc))
    if done.stored == done.exponent:
        typer.echo(f"{done.code} is already stored with {done.exponent} decimals: nothing to do")
    else:
        typer.echo(
            f"{done.code}: {done.amounts} amount(s) converted from {done.stored} to "
            f"{done.exponent} decimals"
        )


@contextmanager
def _database(url: str) -> Iterator[Engine]:
    """A connection to a migrated database, or one line saying why not and exit 3."""
    check_sqlite_file(url, must_exist=True)
    engine = connect(url)
    try:
        with database_errors(url):
            found = current_revision(engine)
            if found != head_revision():
                raise SchemaNotReady(shown(url), found, head_revision())
            yield engine
    finally:
        engine.dispose()


scenario_app = typer.Typer(help="Replay declarative billing histories.", no_args_is_help=True)
app.add_typer(scenario_app, name="scenario")


@scenario_app.command("run")
def scenario_run(
    file: Annotated[Path, typer.Argument(metavar="FILE", help="A scenario file (YAML or JSON).")],
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the report as one JSON document.")
    ] = False,
    database_url: Annotated[
        str | None,
        typer.Option(
            "--database-url",
            help="Run on this database, and keep it; it must hold no billing data yet. "
            "Default: a temporary SQLite file.",
        ),
    ] = None,
) -> None:
    """Replay a scenario on the test clock and tell what happened.

    The tables show every event in time order (plan changes, payments and declines, dunning,
    cancellations, refunds, with their amounts), the invoices, what each subscription still
    owes, and each customer's credit; --json prints the report instead. On a terminal, a long
    run shows how far its clock has come.

    Exit codes: 0 it ran and met its expectations; 1 the report differs from the file's
    `expect`; 2 a malformed file (naming the line and the field); 3 the database cannot be used,
    or already holds billing data; 4 the engine refused one of the file's steps.
    """
    logging.getLogger("billing").setLevel(logging.WARNING)
    logging.getLogger("adapters").setLevel(logging.ERROR)  # lost answers are the scenario's
    err = Console(stderr=True, soft_wrap=True)
    try:
        scenario = read_scenario(file)
    except OSError as exc:
        fail(ExitCode.USAGE, f"{file}: {exc.strerror or exc}")
    with tempfile.TemporaryDirectory(prefix="billing-scenario-") as directory:
        if database_url is None:
            url = f"sqlite:///{Path(directory) / 'scenario.db'}"
        else:
            url = database_url
            _require_empty(url)
        report = _run(scenario, url, err)
        events = [] if as_json else _events_of(url)
    if as_json:
        typer.echo(json.dumps(report, indent=2, ensure_ascii=False))
    else:
        Console().print(render_scenario(report, scenario, events))
    failed = mismatches(report, scenario.expect) if scenario.expect else []
    for problem in failed:
        err.print(f"[red]unexpected:[/red] {escape(problem)}")
    if failed:
        raise typer.Exit(code=ExitCode.DIFFERS)
    if scenario.expect and not as_json:
        Console().print("[green]all expectations met[/green]")


def _run(scenario: Scenario, url: str, err: Console) -> dict[str, Any]:
    """Run the scenario on ``url``, showing its progress on a terminal."""
    progress = ScenarioProgress(url, scenario.start, scenario.until, err)
    try:
        with database_errors(url), progress.showing():
            return run_scenario(scenario, database_url=url)
    except BillingError as exc:  # a step the engine refused (a ScenarioError naming its line)
        fail(cli_support.exit_code_for(exc), str(exc))


def _events_of(url: str) -> list[Any]:
    with reading(url) as engine:
        return list(all_events(engine))


def _require_empty(url: str) -> None:
    """Refuse, saying why and what to do, a kept database that holds billing data already: a
    scenario's invoice numbers and report are its own only on an empty database."""
    check_sqlite_file(url, must_exist=False)
    path = cli_support.sqlite_path(url)
    if path is not None and not path.exists():
        return
    where = shown(url)
    advice = (
        "a scenario runs on an empty database, so that its invoice numbers and its report are "
        "its own: run it on a new database (another SQLite file, or a new PostgreSQL "
        "database), or leave out --database-url to use a temporary one"
    )
    engine = connect(url)
    try:
        with database_errors(url):
            found = current_revision(engine)
    finally:
        engine.dispose()
    if found is None:
        return
    if found != head_revision():
        fail(ExitCode.DATABASE, f"the database {where} has billing tables already: {advice}")
    with reading(url) as billing:
        plans = [plan.code for plan in billing.plans()]
        subscriptions = billing.subscriptions()
    if plans or subscriptions:
        held = f"{len(plans)} plan(s) ({', '.join(plans[:5])})" if plans else ""
        if subscriptions:
            held += f"{' and ' if held else ''}{len(subscriptions)} subscription(s)"
        fail(
            ExitCode.DATABASE,
            f"the database {where} already holds {held}, from an earlier run? "
            f"{advice[:1].upper()}{advice[1:]}",
        )


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
    from billing.testing.asgi import DROP_HEADER, mounted, run  # uvicorn loads only here

    if not 0 <= port <= _MAX_PORT:
        fail(ExitCode.USAGE, f"--port: must be between 0 and {_MAX_PORT} (got {port})")
    installed = {entry.name: entry for entry in entry_points(group=FAKE_GATEWAYS)}
    chosen = gateway or sorted(installed)
    unknown = [name for name in chosen if name not in installed]
    if unknown or not chosen:
        known = ", ".join(sorted(installed)) or "none"
        fail(ExitCode.USAGE, f"--gateway: must be one of {known} (got {unknown})")
    apps = {name: installed[name].load()() for name in chosen}
    try:
        listener = _listen(host, port)
    except OSError as exc:
        fail(ExitCode.USAGE, _listen_error(host, port, exc))
    bound = int(listener.getsockname()[1])
    base = f"http://{f'[{host}]' if ':' in host else host}:{bound}"
    variables = {name: _fake_worker_environment(installed[name], f"{base}/{name}") for name in apps}
    typer.echo(_banner(base, variables))  # echo flushes: a pipe reads it before any request
    run(AccessLog(mounted(apps), dropped=DROP_HEADER), listener)


class AccessLog:
    """ASGI middleware: one line on standard error per request served, once it is answered:
    ``12:00:01 POST /qvo/transactions 201 3.2 ms`` (the path only: a query string may carry a
    fake's credentials). A request whose answer a fault drops (its response carries the header
    ``dropped``) says ``dropped``."""

    def __init__(self, app: ASGIApp, *, dropped: str) -> None:
        self.app = app
        self.dropped = dropped.lower().encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = "-"

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                names = {name.lower() for name, _ in message.get("headers", [])}
                status = "dropped" if self.dropped in names else str(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            elapsed = (time.perf_counter() - started) * 1000
            stamp = datetime.now().astimezone().strftime("%H:%M:%S")
            sys.stderr.write(
                f"{stamp} {scope['method']} {scope['path']} {status} {elapsed:.1f} ms\n"
            )
            sys.stderr.flush()


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
        fail(cli_support.exit_code_for(exc), str(exc))
    Console().print(benchmark.render(results))
    if json_path is not None:
        _writable(json_path, json.dumps(results, indent=2) + "\n")
    failed = benchmark.failures(results)
    if failed:
        fail(ExitCode.DIFFERS, f"{len(failed)} case(s) failed their checks: " + "; ".join(failed))


def _writable(path: Path, text: str | None = None) -> None:
    """Make the file's directory and write ``text`` to it, or a message and exit 2."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        if not os.access(path.parent, os.W_OK):
            raise PermissionError(f"cannot write in {path.parent}")
        if text is not None:
            path.write_text(text)
    except OSError as exc:
        fail(ExitCode.USAGE, f"{path}: {exc.strerror or exc}")


cli_inspect.register(app)  # billing subscriptions, invoices, payments, events: read-only


def _notifications_app(
    engine: EngineApi, *, process: Literal["background", "inline"] = "background"
) -> Any:
    """``billing.web.notifications_app``, imported when the demo needs it (starlette)."""
    from billing.web import notifications_app

    return notifications_app(engine, process=process)


demo.register(app, notifications_app=_notifications_app)  # `billing demo`: docs/demo.md
simulate.register(app)  # `billing simulate`: docs/simulate.md


def main() -> None:
    """Entry point of the ``billing`` console script."""
    app()
