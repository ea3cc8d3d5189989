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
from billing.scenarios import mismatches, read_scenario, run_scenario

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
