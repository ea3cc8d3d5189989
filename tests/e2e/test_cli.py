"""The ``billing`` command, run as a real process."""

from __future__ import annotations

import json
import subprocess
import sys


def billing(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "billing", *args], capture_output=True, text=True, timeout=60
    )


def test_help_lists_the_calendar_command():
    result = billing("--help")
    assert result.returncode == 0
    assert "calendar" in result.stdout


def test_version_prints_the_package_version():
    from billing import __version__

    result = billing("--version")
    assert result.stdout.strip() == f"billing {__version__}"


def test_calendar_shows_month_ends_from_an_anchor_on_the_31st():
    result = billing("calendar", "--anchor", "2024-01-31T09:00:00-03:00", "--periods", "4")
    assert result.returncode == 0, result.stderr
    for start in ("2024-01-31T09:00", "2024-02-29T09:00", "2024-03-31T09:00", "2024-04-30T09:00"):
        assert start in result.stdout


def test_calendar_refuses_a_naive_anchor_with_a_clear_error():
    result = billing("calendar", "--anchor", "2026-01-31T12:00:00")
    assert result.returncode == 2
    assert "anchor" in result.stdout
    assert "timezone-aware" in result.stdout


def test_calendar_refuses_an_unknown_interval():
    result = billing("calendar", "--interval", "fortnight")
    assert result.returncode == 2
    assert "interval" in result.stdout


def test_migrate_creates_the_schema_and_then_reports_it_up_to_date(tmp_path):
    url = f"sqlite:///{tmp_path / 'billing.db'}"
    first = billing("migrate", "--database-url", url)
    assert first.returncode == 0, first.stderr
    assert "migrated from an empty schema to" in first.stdout
    second = billing("migrate", "--database-url", url)
    assert "is up to date" in second.stdout


def test_migrate_refuses_an_unsupported_database_url():
    result = billing("migrate", "--database-url", "mysql://root@localhost/billing")
    assert result.returncode == 2
    assert "database_url" in result.stdout


SCENARIO = """\
name: one month of Plan Oro
start: "2026-01-31T12:00:00+00:00"
until: "2026-03-01T00:00:00+00:00"
plans:
  - {code: oro, name: Plan Oro, price: "10000", currency: CLP}
customers:
  - {ref: c1, timezone: America/Santiago}
subscriptions:
  - {ref: s1, customer: c1, plan: oro, tax: {name: IVA, percent: "19"}}
"""


def test_scenario_run_prints_one_json_document(tmp_path):
    path = tmp_path / "oro.yaml"
    path.write_text(SCENARIO)
    result = billing("scenario", "run", str(path), "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert set(report) >= {"scenario", "invoices", "payments", "subscriptions", "customers"}
    assert [invoice["total"] for invoice in report["invoices"]] == ["11900", "11900"]


def test_scenario_run_prints_tables_without_json(tmp_path):
    path = tmp_path / "oro.yaml"
    path.write_text(SCENARIO)
    result = billing("scenario", "run", str(path))
    assert result.returncode == 0, result.stderr
    assert "INV-000002" in result.stdout
    assert "Subscriptions" in result.stdout


def test_a_malformed_scenario_names_the_line_and_the_field_and_fails(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(SCENARIO.replace('price: "10000"', 'price: "-5"'))
    result = billing("scenario", "run", str(path))
    assert result.returncode == 2
    assert f"{path}:5: plans[0].price: must be >= 0" in " ".join(result.stderr.split())


def test_a_missing_scenario_file_is_a_clear_error(tmp_path):
    result = billing("scenario", "run", str(tmp_path / "nowhere.yaml"))
    assert result.returncode == 2
    assert "nowhere.yaml" in result.stderr
