"""The scenario files of tests/scenarios and docs/examples: expectations derived by hand.

Each file replays a billing history on the test clock and compares the report with its own
``expect`` section (the arithmetic is in the file's comments). Every file runs on SQLite and on
PostgreSQL; the ``billing scenario run`` command is checked to exit 0 when the expectations hold
and 1 when one is broken.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from billing.cli import app
from billing.domain.errors import BillingError
from billing.scenarios import (
    ScenarioError,
    load_scenario,
    mismatches,
    read_scenario,
    run_scenario,
)

SCENARIOS = Path(__file__).resolve().parent.parent / "scenarios"
EXAMPLES = Path(__file__).resolve().parents[2] / "docs" / "examples"
FILES = sorted(SCENARIOS.glob("*.yaml")) + sorted(EXAMPLES.glob("*.yaml"))


def _name(path: Path) -> str:
    return path.stem


def test_the_scenario_directory_is_not_empty():
    assert len(list(SCENARIOS.glob("*.yaml"))) >= 15, f"expected the scenario files in {SCENARIOS}"


@pytest.mark.parametrize("path", FILES, ids=_name)
def test_each_scenario_file_has_expectations(path: Path):
    scenario = read_scenario(path)
    assert scenario.expect, f"{path.name} has no expect section"


@pytest.mark.parametrize("path", FILES, ids=_name)
def test_the_scenario_meets_its_expectations(path: Path, database_url: str):
    scenario = read_scenario(path)
    assert scenario.expect, f"{path.name} has no expect section"
    report = run_scenario(scenario, database_url=database_url)
    assert mismatches(report, scenario.expect) == []


def test_the_command_exits_0_when_the_expectations_hold():
    result = CliRunner().invoke(app, ["scenario", "run", str(SCENARIOS / "exclusive_tax.yaml")])
    assert result.exit_code == 0, result.output
    assert "all expectations met" in result.output


def test_the_command_exits_1_when_an_expectation_is_broken(tmp_path: Path):
    text = (SCENARIOS / "exclusive_tax.yaml").read_text(encoding="utf-8")
    broken = text.replace("      total: 11900\n", "      total: 11901\n", 1)
    assert broken != text
    path = tmp_path / "exclusive_tax_broken.yaml"
    path.write_text(broken, encoding="utf-8")
    result = CliRunner().invoke(app, ["scenario", "run", str(path)])
    assert result.exit_code == 1, result.output
    assert "invoices[0].total" in result.output
    assert "all expectations met" not in result.output


LINKS = """\
name: pay-by-link refusals
start: "2026-03-02T10:00:00-05:00"
until: "2026-03-03T10:00:00-05:00"
plans:
  - {code: oro, name: Oro, price: 39900, currency: COP}
customers:
  - {ref: c1, timezone: America/Bogota, gateway: payvalida, payment: approve}
subscriptions:
  - {ref: s1, customer: c1, plan: oro}
events:
  - at: "2026-03-02T12:00:00-05:00"
    refund: {invoice: INV-000001}
"""


def test_a_refund_through_a_gateway_without_refunds_is_refused_naming_its_line():
    with pytest.raises(ScenarioError) as refused:
        run_scenario(load_scenario(LINKS, source="links.yaml"))
    assert (refused.value.line, refused.value.field) == (11, "events.refund")
    assert "lacks refunds" in str(refused.value)


def test_a_link_cannot_be_scripted_to_decline_for_good():
    text = LINKS.replace("payment: approve", "payment: decline_hard")
    with pytest.raises(ScenarioError) as refused:
        run_scenario(load_scenario(text, source="links.yaml"))
    assert (refused.value.line, refused.value.field) == (7, "customers")
    assert "links never hard-decline" in str(refused.value)


def test_work_that_cannot_be_done_stops_the_replay_with_an_error(tmp_path: Path):
    """A UF plan whose subscription starts before the first exchange rate cannot be billed: the
    work stays due, and the replay says so instead of looping forever."""
    path = tmp_path / "stuck.yaml"
    path.write_text(
        """
name: a UF plan billed before its first rate
start: "2026-01-31T12:00:00-03:00"
until: "2026-03-31T12:00:00-03:00"
exchange_rates:
  - {date: "2026-03-01", from: CLF, to: CLP, rate: "39000"}
plans:
  - {code: uf, name: UF, price: "0.5", currency: CLF, charge_currency: CLP}
customers:
  - {ref: c1, timezone: America/Santiago}
subscriptions:
  - {ref: s1, customer: c1, plan: uf, start: "2026-02-10T12:00:00-03:00"}
"""
    )
    with pytest.raises(BillingError, match="cannot be done"):
        run_scenario(read_scenario(path))
