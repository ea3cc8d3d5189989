"""The ``billing`` command as a new user meets it, in process (typer's CliRunner): the scenario
view, the read-only inspection commands, and one clear line with a distinct exit code for each
kind of mistake."""

from __future__ import annotations

import io
import json
import re
import sqlite3
import time
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console
from sqlalchemy.engine import make_url
from typer.testing import CliRunner

from billing.cli import ExitCode, app
from billing.cli_render import ScenarioProgress
from billing.cli_support import describe_database_error, exit_code_for, unwrap
from billing.domain.errors import (
    GatewayError,
    IllegalTransition,
    InvalidArgument,
    SchemaNotReady,
    StorageError,
)
from billing.scenarios import ScenarioError, read_scenario

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "docs" / "examples" / "upgrade_mid_period.yaml"
WIDTH = 80


def run(*args: str, columns: int = WIDTH) -> Any:
    """``billing *args`` in process, on an 80-column terminal unless told otherwise."""
    return CliRunner().invoke(app, list(args), env={"COLUMNS": str(columns)})


def widest(text: str) -> int:
    return max((len(line) for line in text.splitlines()), default=0)


def one_line_error(result: Any, code: ExitCode, *fragments: str) -> str:
    """The result failed with ``code`` and one ``error:`` line holding every fragment."""
    assert result.exit_code == code, (result.exit_code, result.stdout, result.stderr)
    assert "Traceback" not in result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: "), lines[0]
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return str(lines[0])


@pytest.fixture(scope="module")
def kept(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The example scenario run once on a kept SQLite file: its URL and the table view."""
    url = f"sqlite:///{tmp_path_factory.mktemp('kept') / 'billing.db'}"
    result = run("scenario", "run", str(EXAMPLE), "--database-url", url)
    assert result.exit_code == ExitCode.OK, result.output
    return {"url": url, "view": result.stdout}


# -- billing scenario run -----------------------------------------------------------------------


def test_the_scenario_view_tells_the_story_in_time_order_within_80_columns(kept):
    view = kept["view"]
    assert widest(view) <= WIDTH, view
    # instants with their zone: the customers' (America/Santiago), its offset on each instant
    assert "times in America/Santiago" in view
    story = [
        "2026-01-31 09:00 -03",
        "subscribed to oro",
        "plan oro -> platino: debt +16875 CLP",
        "debt 16875 CLP moved to the new invoice",
        "INV-000003 attempt 1: 59500 CLP declined (soft):",
        "past due: INV-000003 unpaid, next retry",
        "cancellation scheduled for 2026-04-30 09:00 -04",  # DST ended: -04
        "unpaid: retries of INV-000003 ran out",
        "canceled",
    ]
    positions = [view.index(step) for step in story]
    assert positions == sorted(positions), "the timeline is in time order"
    assert "insufficient_funds" in view  # the error code whole, never cut to "insufficient…"
    assert "…" not in view


def test_the_scenario_view_labels_what_is_still_owed(kept):
    view = kept["view"]
    assert "owed on open" in view
    assert "debt for next" in view
    [row] = [line for line in view.splitlines() if line.strip().startswith("s1 ")]
    assert "canceled" in row
    assert "59500 CLP" in row  # INV-000003 is still open: s1 does owe
    assert "due 59500" in view  # and the invoice says so too


def test_running_a_scenario_twice_on_one_kept_database_says_why_and_what_to_do(kept):
    again = run("scenario", "run", str(EXAMPLE), "--database-url", kept["url"])
    one_line_error(
        again,
        ExitCode.DATABASE,
        "already holds 2 plan(s) (oro, platino) and 1 subscription(s)",
        "run it on a new database",
        "leave out --database-url",
    )


def test_a_scenario_runs_on_an_empty_postgresql_database_once(postgres_url):
    first = run("scenario", "run", str(EXAMPLE), "--json", "--database-url", postgres_url)
    assert first.exit_code == ExitCode.OK, first.output
    assert len(json.loads(first.stdout)["invoices"]) == 3
    # the database was kept: it can be inspected, and is not run on twice
    listed = run("invoices", "--status", "open", "--database-url", postgres_url)
    assert listed.exit_code == ExitCode.OK, listed.output
    assert "INV-000003" in listed.stdout
    assert "INV-000001" not in listed.stdout
    again = run("scenario", "run", str(EXAMPLE), "--database-url", postgres_url)
    one_line_error(again, ExitCode.DATABASE, "already holds")


def test_a_step_the_engine_refuses_is_a_billing_failure_naming_its_line(tmp_path):
    text = EXAMPLE.read_text(encoding="utf-8").replace(
        "at_period_end: true}}",
        'at_period_end: true}}\n  - {at: "2026-04-03T00:00:00+00:00", resume: {subscription: s1}}',
    )
    path = tmp_path / "refused.yaml"
    path.write_text(text, encoding="utf-8")
    result = run("scenario", "run", str(path))
    one_line_error(
        result, ExitCode.BILLING, "refused.yaml:24: events.resume: refused by the engine"
    )


def test_a_malformed_scenario_is_a_usage_error(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(EXAMPLE.read_text(encoding="utf-8").replace('price: "15000"', 'price: "x"'))
    one_line_error(run("scenario", "run", str(path)), ExitCode.USAGE, "bad.yaml:9: plans[0].price")


def test_a_long_run_shows_how_far_its_clock_has_come(kept):
    scenario = read_scenario(EXAMPLE)
    progress = ScenarioProgress(kept["url"], scenario.start, scenario.until, Console())
    try:
        progress.poll()
    finally:
        progress.close()
    # the last event (the cancellation, on 2026-04-30) is 89 of the run's 121 days in
    assert progress.position.events > 20
    assert progress.fraction() == pytest.approx(89 / 121, abs=0.01)
    screen = io.StringIO()
    terminal = Console(file=screen, force_terminal=True, width=WIDTH)
    shown = ScenarioProgress(kept["url"], scenario.start, scenario.until, terminal, every=0.05)
    with shown.showing():
        time.sleep(0.5)
    assert "billing" in screen.getvalue()
    assert "events" in screen.getvalue()
    quiet = io.StringIO()  # not a terminal (a pipe, CI): nothing is shown
    with ScenarioProgress(
        kept["url"], scenario.start, scenario.until, Console(file=quiet)
    ).showing():
        pass
    assert quiet.getvalue() == ""


# -- billing subscriptions / invoices / payments / events ---------------------------------------


def test_the_inspection_tables_show_what_happened_within_80_columns(kept):
    url = kept["url"]
    subscriptions = run("subscriptions", "--database-url", url)
    invoices = run("invoices", "--database-url", url, "--timezone", "America/Santiago")
    payments = run("payments", "--database-url", url)
    events = run("events", "--database-url", url, "--limit", "0")
    for result in (subscriptions, invoices, payments, events):
        assert result.exit_code == ExitCode.OK, result.output
        assert widest(result.stdout) <= WIDTH, result.stdout
        assert "…" not in result.stdout
    [row, *_] = [line for line in subscriptions.stdout.splitlines() if line.startswith(" s1 ")]
    assert row.split()[:5] == ["s1", "canceled", "2026-04-30", "13:00", "UTC"]
    for words in ("open invoices:", "59500 CLP", "(INV-000003)", "debt not yet", "invoiced: 0 CLP"):
        assert words in subscriptions.stdout  # canceled, and still owing
    assert "times in America/Santiago" in invoices.stdout
    assert "2026-02-28 09:00 -03" in invoices.stdout
    assert [n for n in ("INV-000001", "INV-000002", "INV-000003") if n in invoices.stdout] == [
        "INV-000001",
        "INV-000002",
        "INV-000003",
    ]
    assert payments.stdout.count("insufficient_funds") == 4
    assert "2026-03-31 12:00 UTC" in payments.stdout
    assert "plan oro -> platino: debt +16875 CLP" in " ".join(events.stdout.split())


def test_the_inspection_filters(kept):
    url = kept["url"]
    failed = run("payments", "--subscription", "s1", "--status", "FAILED", "--database-url", url)
    assert failed.exit_code == ExitCode.OK, failed.output
    assert failed.stdout.count("INV-000003 #") == 4
    assert "INV-000001" not in failed.stdout
    by_invoice = run("payments", "--invoice", "INV-000002", "--json", "--database-url", url)
    assert [p["invoice"] for p in json.loads(by_invoice.stdout)["payments"]] == ["INV-000002"]
    named = run("events", "--name", "payment.failed", "--json", "--database-url", url)
    assert [e["name"] for e in json.loads(named.stdout)["events"]] == ["payment.failed"] * 4
    latest = run("events", "--limit", "2", "--customer", "c1", "--database-url", url)
    assert latest.exit_code == ExitCode.OK
    assert "the latest 2 of" in latest.stderr
    assert "--limit 0 shows them all" in latest.stderr
    assert "canceled" in latest.stdout  # the latest: the end of the story
    nothing = run("subscriptions", "--status", "trialing", "--database-url", url)
    assert nothing.exit_code == ExitCode.OK
    assert "no subscriptions match" in nothing.stdout


def test_the_inspection_json_gives_money_with_its_currency_and_instants_with_offsets(kept):
    url = kept["url"]
    documents = {
        name: json.loads(run(name, "--json", "--database-url", url).stdout)[name]
        for name in ("subscriptions", "invoices", "payments", "events")
    }
    [sub] = documents["subscriptions"]
    assert (sub["status"], sub["owed"], sub["currency"], sub["owed_invoices"]) == (
        "canceled",
        "59500",
        "CLP",
        ["INV-000003"],
    )
    assert [(i["total"], i["amount_due"], i["currency"]) for i in documents["invoices"]] == [
        ("17850", "0", "CLP"),
        ("79581", "0", "CLP"),
        ("59500", "59500", "CLP"),
    ]
    assert {(p["amount"], p["currency"]) for p in documents["payments"]} >= {("17850", "CLP")}
    [change] = [e for e in documents["events"] if e["name"] == "subscription.plan_changed"]
    assert change["payload"]["debt_added"] == {"amount": "16875", "currency": "CLP"}
    instants = [sub["current_period_end"], documents["payments"][0]["created_at"], change["at"]]
    for value in instants:
        assert datetime.fromisoformat(value).utcoffset() is not None, value


def test_the_inspection_refuses_a_filter_that_names_nobody(kept):
    url = kept["url"]
    one_line_error(
        run("invoices", "--customer", "c9", "--database-url", url),
        ExitCode.USAGE,
        "--customer: no customer 'c9'",
    )
    one_line_error(
        run("events", "--invoice", "INV-999999", "--database-url", url),
        ExitCode.USAGE,
        "--invoice: no invoice",
    )
    one_line_error(
        run("payments", "--status", "lost", "--database-url", url),
        ExitCode.USAGE,
        "'--status'",
        "billing payments --help",
    )
    one_line_error(run("events", "--limit", "-1", "--database-url", url), ExitCode.USAGE, "--limit")
    one_line_error(
        run("invoices", "--timezone", "Mars/Olympus", "--database-url", url),
        ExitCode.USAGE,
        "--timezone",
    )


# -- databases that cannot be used: exit 3, one line saying why and what to do -------------------


def test_a_database_that_cannot_be_used_is_one_line_and_exit_3(tmp_path, postgres_server):
    missing = f"sqlite:///{tmp_path / 'nothing-here.db'}"
    one_line_error(
        run("subscriptions", "--database-url", missing),
        ExitCode.DATABASE,
        "there is no SQLite database at",
        "billing migrate --database-url",
    )
    assert not (tmp_path / "nothing-here.db").exists()  # reading never creates one
    one_line_error(
        run("invoices", "--database-url", "sqlite:////no/such/dir/x.db"),
        ExitCode.DATABASE,
        "the folder /no/such/dir does not exist",
    )
    sqlite3.connect(tmp_path / "empty.db").close()
    empty = f"sqlite:///{tmp_path / 'empty.db'}"
    for command in ("events", "currencies"):
        args = ["currencies", "show"] if command == "currencies" else [command]
        one_line_error(
            run(*args, "--database-url", empty),
            ExitCode.DATABASE,
            "has no billing schema",
            f"billing migrate --database-url {empty}",
        )
    one_line_error(
        run("payments", "--database-url", "postgresql://nobody@127.0.0.1:1/x"),
        ExitCode.DATABASE,
        "cannot reach PostgreSQL at 127.0.0.1:1 (connection refused)",
    )
    name = f"billing_no_such_{uuid.uuid4().hex[:8]}"
    absent = make_url(postgres_server).set(database=name).render_as_string(hide_password=False)
    line = one_line_error(
        run("migrate", "--database-url", absent),
        ExitCode.DATABASE,
        f"the database '{name}' does not exist",
        "createdb",
    )
    password = make_url(postgres_server).password
    assert not password or password not in line
    one_line_error(
        run("migrate", "--database-url", "mysql://root@localhost/billing"),
        ExitCode.USAGE,
        "database_url: must be a SQLite or PostgreSQL URL",
    )


def test_the_exit_codes_of_errors():
    refused = ScenarioError("s.yaml", 3, "events.cancel", "refused by the engine")
    refused.__cause__ = IllegalTransition("subscription", "s1", "canceled", "cancel")
    cases = {
        ExitCode.USAGE: [InvalidArgument("x", "must be y"), ScenarioError("s.yaml", 1, "a", "b")],
        ExitCode.DATABASE: [SchemaNotReady("db", None, "0007"), StorageError("down")],
        ExitCode.BILLING: [refused, GatewayError("qvo", "server_error", "503")],
        ExitCode.INTERNAL: [RuntimeError("a bug")],
    }
    for code, errors in cases.items():
        assert [exit_code_for(error) for error in errors] == [code] * len(errors)
    assert len({int(code) for code in ExitCode}) == len(ExitCode)
    operations = (ROOT / "docs" / "operations.md").read_text(encoding="utf-8")
    documented = operations.split("## Exit codes", 1)[1].split("\n## ", 1)[0]
    for code in ExitCode:
        assert f"\n| {int(code)} |" in documented, code
    message = describe_database_error("sqlite:///x.db", StorageError("file is not a database"))
    assert message == "x.db is not a SQLite database (sqlite:///x.db)"


# -- help and usage -----------------------------------------------------------------------------


def test_help_is_short_flags_too_with_defaults_and_whole_sentences():
    wide = run("worker", "-h", columns=200)
    assert wide.exit_code == ExitCode.OK
    # a docstring paragraph is one line on a wide terminal: never cut where the source wraps
    assert (
        "Run as many as you like, on as many machines: they coordinate through the database. "
        "Gateways come from" in wide.stdout
    )
    assert "Default: $BILLING_TICK_SECONDS, else 10." in wide.stdout
    assert "[default: info]" in wide.stdout
    narrow = run("events", "--help")
    assert narrow.exit_code == ExitCode.OK
    assert "[default: 50]" in narrow.stdout
    assert widest(narrow.stdout) <= WIDTH
    for command in (["scenario", "run"], ["fake-gateways", "serve"], ["subscriptions"]):
        assert run(*command, "-h").exit_code == ExitCode.OK, command
    assert unwrap("One\n    two.\n\n- a\n  b\n- c") == "One two.\n\n- a b\n- c"


def test_a_usage_mistake_is_one_line_naming_the_option():
    one_line_error(
        run("worker", "--once", "--log-level", "LOUD"),
        ExitCode.USAGE,
        "'LOUD' is not one of 'debug', 'info', 'warning', 'error'",
        "(see `billing worker --help`)",
    )
    suggestion = one_line_error(run("subscriptionz"), ExitCode.USAGE, "subscriptionz")
    assert re.search(r"did you mean 'subscriptions'", suggestion, re.IGNORECASE)
