"""Scenario files: declarative billing histories replayed on a test clock."""

from billing.scenarios.expectations import mismatches as mismatches
from billing.scenarios.file import Scenario as Scenario
from billing.scenarios.file import ScenarioError as ScenarioError
from billing.scenarios.file import load_scenario as load_scenario
from billing.scenarios.file import read_scenario as read_scenario
from billing.scenarios.runner import advance as advance
from billing.scenarios.runner import run_scenario as run_scenario

__all__ = [
    "Scenario",
    "ScenarioError",
    "advance",
    "load_scenario",
    "mismatches",
    "read_scenario",
    "run_scenario",
]
