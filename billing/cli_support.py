"""What every ``billing`` command shares: exit codes, one-line errors, database checks, and the
formatting of instants and money in tables.

Every user mistake ends in one line on standard error (``error: ...``) and an exit code of
:class:`ExitCode`, never a traceback: :class:`BillingGroup`, the root command's class, turns
click's usage errors and any error of the engine a command let through into such a line.
"""

from __future__ import annotations

import inspect
import re
import sys
import traceback
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta, tzinfo
from enum import IntEnum
from pathlib import Path
from typing import Any, NoReturn

import typer
from rich.console import Console
from rich.markup import escape
from sqlalchemy.exc import SQLAlchemyError
from typer.core import TyperGroup

from billing.bootstrap import open_engine
from billing.clock import SystemClock
from billing.config import Settings
from billing.domain.errors import (
    BillingError,
    CurrencyExponentChanged,
    InvalidArgument,
    NotFound,
    SchemaNotReady,
    StorageError,
)
from billing.domain.money import Currency, Money
from billing.engine import Engine
from billing.scenarios import ScenarioError
from billing.store.database import is_memory, normalize_url, shown


class ExitCode(IntEnum):
    """The exit status of every ``billing`` command (docs/operations.md, "Exit codes")."""

    OK = 0
    """It did what was asked."""
    DIFFERS = 1
    """It ran, and the result is not the one promised: a scenario's report differs from its
    ``expect`` section, a benchmark case failed its checks."""
    USAGE = 2
    """A mistake in the command line or its input: an unknown option or value, a malformed
    scenario file, a bad URL, a port out of range or in use, a filter naming nothing."""
    DATABASE = 3
    """The database cannot be used: unreachable, missing, refusing the credentials, not
    migrated (``billing migrate``), storing a currency with another exponent, or a scenario's
    kept database that already holds data."""
    BILLING = 4
    """The engine refused or failed billing work: a scenario step it refused, a worker pass in
    which a subscription's work failed, a gateway error."""
    INTERNAL = 70
    """A bug in billing (the traceback is printed): please report it."""


_DATABASE_ERRORS = (SchemaNotReady, CurrencyExponentChanged, StorageError)


def exit_code_for(exc: BaseException) -> ExitCode:
    """The exit code for an error a command ends with."""
    if isinstance(exc, ScenarioError):
        cause = exc.__cause__
        return exit_code_for(cause) if isinstance(cause, BillingError) else ExitCode.USAGE
    if isinstance(exc, (*_DATABASE_ERRORS, SQLAlchemyError)):
        return ExitCode.DATABASE
    if isinstance(exc, InvalidArgument | NotFound):
        return ExitCode.USAGE
    if isinstance(exc, BillingError):
        return ExitCode.BILLING
    return ExitCode.INTERNAL


def error(message: str) -> None:
    """One line on standard error, never wrapped, so that a path or a field name stays whole."""
    line = " ".join(message.split())
    Console(stderr=True, soft_wrap=True, highlight=False).print(
        f"[bold red]error:[/bold red] {escape(line)}"
    )


def fail(code: ExitCode, message: str) -> NoReturn:
    """Print ``message`` as one error line and exit with ``code``."""
    error(message)
    raise typer.Exit(code=int(code))


class BillingGroup(TyperGroup):
    """The ``billing`` command: its subcommands' help unwrapped, and every error one line.

    * Docstrings are wrapped at 100 columns in the source; their paragraphs are joined here so
      that the help wraps at the terminal's width, not in the middle of a sentence.
    * A usage error (an unknown option, a bad value) is one line naming the option, and the
      command whose ``--help`` tells more; exit :attr:`ExitCode.USAGE`.
    * An engine error a command let through is one line and its exit code
      (:func:`exit_code_for`); anything else is a bug: a traceback and
      :attr:`ExitCode.INTERNAL`.
    """

    def __init__(self, **attrs: Any) -> None:
        super().__init__(**attrs)
        _unwrap_help(self)

    def main(  # type: ignore[override]
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        try:
            result = super().main(args, prog_name, complete_var, False, **extra)
        except typer.TyperException as exc:  # click's usage errors
            if not standalone_mode:
                raise
            if type(exc).__name__ != "NoArgsIsHelpError":  # that one printed the help
                context = getattr(exc, "ctx", None)
                where = f" (see `{context.command_path} --help`)" if context else ""
                message = exc.format_message().replace("Value error, ", "")
                error(message[:1].lower() + message[1:] + where)
            sys.exit(getattr(exc, "exit_code", ExitCode.USAGE))
        except typer.Abort:
            if not standalone_mode:
                raise
            error("aborted")
            sys.exit(130)
        if not standalone_mode:
            return result
        sys.exit(result if isinstance(result, int) else ExitCode.OK)

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except (typer.Exit, typer.Abort, typer.TyperException, KeyboardInterrupt):
            raise
        except (BillingError, SQLAlchemyError) as exc:
            fail(exit_code_for(exc), _first_line(exc))
        except Exception:
            traceback.print_exc()
            fail(
                ExitCode.INTERNAL,
                "internal error: this is a bug in billing; please report it with the "
                "traceback above",
            )


def _unwrap_help(command: Any) -> None:
    if command.help:
        command.help = unwrap(command.help)
    for sub in getattr(command, "commands", {}).values():
        _unwrap_help(sub)


def unwrap(text: str) -> str:
    """A docstring's paragraphs each on one line (list items each on their own), so that the
    help wraps them at the terminal's width."""
    paragraphs = []
    for paragraph in inspect.cleandoc(text).split("\n\n"):
        if paragraph.startswith("\b"):
            paragraphs.append(paragraph)
            continue
        lines: list[str] = []
        for line in paragraph.splitlines():
            stripped = line.strip()
            if lines and not re.match(r"[-*] |\d+\. ", stripped):
                lines[-1] += " " + stripped
            else:
                lines.append(stripped)
        paragraphs.append("\n".join(lines))
    return "\n\n".join(paragraphs)


def _first_line(exc: BaseException) -> str:
    orig = getattr(exc, "orig", None)
    text = str(orig if orig is not None else exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


# -- databases -----------------------------------------------------------------------------------


def sqlite_path(url: str) -> Path | None:
    """The file of a SQLite URL (``None`` for PostgreSQL or an in-memory database)."""
    parsed = normalize_url(url)
    if parsed.get_backend_name() != "sqlite" or is_memory(parsed) or not parsed.database:
        return None
    return Path(parsed.database)


def check_sqlite_file(url: str, *, must_exist: bool) -> None:
    """Refuse, in one line, a SQLite URL whose folder is missing, or whose file is missing when
    ``must_exist`` (reading a database that is not there would create an empty one)."""
    path = sqlite_path(url)
    if path is None:
        return
    if not path.parent.is_dir():
        fail(
            ExitCode.DATABASE,
            f"cannot open the SQLite database {path}: the folder {path.parent} does not exist "
            "(create it first, or choose another path)",
        )
    if path.is_dir():
        fail(ExitCode.DATABASE, f"cannot open the SQLite database {path}: it is a folder")
    if must_exist and not path.exists():
        fail(
            ExitCode.DATABASE,
            f"there is no SQLite database at {path}: create one with "
            f"`billing migrate --database-url {shown(url)}`, or name another with "
            "--database-url (or $BILLING_DATABASE_URL)",
        )


@contextmanager
def database_errors(url: str) -> Iterator[None]:
    """Turn a database that cannot be used into one line saying why, and what to do."""
    try:
        yield
    except (SchemaNotReady, CurrencyExponentChanged) as exc:
        fail(ExitCode.DATABASE, str(exc))
    except (StorageError, SQLAlchemyError) as exc:
        fail(ExitCode.DATABASE, describe_database_error(url, exc))


def describe_database_error(url: str, exc: BaseException) -> str:
    """Why the database at ``url`` failed, in words a user can act on."""
    reasons = []
    seen: BaseException | None = exc
    while seen is not None:
        reasons.append(str(getattr(seen, "orig", None) or seen))
        seen = seen.__cause__
    text = " ".join(" ".join(reasons).split())
    parsed = normalize_url(url)
    where = shown(url)
    if parsed.get_backend_name() == "sqlite":
        path = sqlite_path(url)
        if "file is not a database" in text:
            return f"{path} is not a SQLite database ({where})"
        if "unable to open database file" in text or "readonly" in text:
            return f"cannot open the SQLite database {path}: check that it can be read and written"
        return f"the SQLite database {path} failed: {_reason(text)}"
    server = f"{parsed.host or 'localhost'}:{parsed.port or 5432}"
    if match := re.search(r'database "([^"]+)" does not exist', text):
        name = match[1]
        return (
            f"the database {name!r} does not exist on the PostgreSQL server at {server}: create "
            f"it (`createdb -h {parsed.host or 'localhost'} -p {parsed.port or 5432} "
            f"-U {parsed.username or 'postgres'} {name}`), then run "
            f"`billing migrate --database-url {where}`"
        )
    if "Connection refused" in text or "could not connect" in text:
        return (
            f"cannot reach PostgreSQL at {server} (connection refused): is the server running, "
            f"and are the host and port of {where} right?"
        )
    if "password authentication failed" in text or re.search(r'role "[^"]+" does not exist', text):
        return f"the PostgreSQL server at {server} refused the user of {where}: {_reason(text)}"
    if "timeout" in text.lower() or "timed out" in text:
        return f"PostgreSQL at {server} did not answer in time ({where})"
    if "Name or service not known" in text or "could not translate host name" in text:
        return f"cannot find the database host {parsed.host!r} of {where}"
    return f"the database {where} failed: {_reason(text)}"


def _reason(text: str) -> str:
    text = re.sub(r"^\(?[\w.]+\)?\s*", "", text) if text.startswith("(") else text
    text = re.sub(r"\(Background on this error at: \S+\)", "", text)
    return text.replace("the database failed: ", "").strip()


@contextmanager
def reading(url: str) -> Iterator[Engine]:
    """An engine on an existing, migrated database, opened only to read it: no migration, no
    gateways; a database that cannot be used is one line (:func:`database_errors`)."""
    check_sqlite_file(url, must_exist=True)
    with database_errors(url):
        engine = open_engine(url, clock=SystemClock(), gateways=[], settings=Settings())
        with engine:
            yield engine


def database_url(given: str | None) -> str:
    """The URL a command uses: ``--database-url``, else $BILLING_DATABASE_URL, else the
    embedded SQLite file."""
    return given or Settings.from_env().database_url


DATABASE_URL_HELP = (
    "The database, as a URL: sqlite:///billing.db, postgresql://user@host/name. "
    "Default: $BILLING_DATABASE_URL, else sqlite:///billing.db."
)


# -- instants and money --------------------------------------------------------------------------


def zone_label(zone: tzinfo) -> str:
    """How a zone is named in titles: ``UTC`` or ``America/Santiago``."""
    name = getattr(zone, "key", None) or str(zone)
    return "UTC" if name in ("UTC", "Etc/UTC", "UTC+00:00") else name


def instant(value: datetime | None, zone: tzinfo = UTC) -> str:
    """An instant in ``zone`` with its offset, short: ``2026-01-31 09:00 -03`` or
    ``2026-01-31 12:00 UTC`` (seconds only when there are some)."""
    if value is None:
        return ""
    local = value.astimezone(zone)
    text = local.strftime("%Y-%m-%d %H:%M")
    if local.second or local.microsecond:
        text += local.strftime(":%S")
    return f"{text} {offset(local)}"


def offset(value: datetime) -> str:
    """``UTC``, ``-03``, ``+05:30``."""
    delta = value.utcoffset() or timedelta(0)
    if not delta:
        return "UTC"
    sign = "-" if delta < timedelta(0) else "+"
    minutes = abs(int(delta.total_seconds())) // 60
    hours, minutes = divmod(minutes, 60)
    return f"{sign}{hours:02d}" + (f":{minutes:02d}" if minutes else "")


def money(value: Money) -> str:
    """``17850 CLP``: the amount as the reports give it, with its currency."""
    return f"{value.to_decimal_string()} {value.currency.code}"


def payload_money(value: Any) -> str:
    """An amount of an event's payload (``{"minor": ..., "currency": ...}``) as :func:`money`."""
    if isinstance(value, dict) and "minor" in value and "currency" in value:
        return money(Money(int(value["minor"]), Currency.of(str(value["currency"]))))
    return str(value)
