"""docs/simulations.md's example test file runs as written: its machine on our plans, and its
property over generated scenario files (a few short examples each)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, Phase, settings
from hypothesis.stateful import run_state_machine_as_test

ROOT = Path(__file__).resolve().parents[2]
FEW = settings(
    max_examples=3,
    stateful_step_count=8,
    derandomize=True,
    database=None,
    deadline=None,
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=list(HealthCheck),
)


def _example() -> dict[str, Any]:
    page = (ROOT / "docs" / "simulations.md").read_text(encoding="utf-8")
    found = re.search(r"<!-- example-test-file -->\n```python\n(.*?)```", page, re.DOTALL)
    assert found, "docs/simulations.md has no python block after <!-- example-test-file -->"
    namespace: dict[str, Any] = {"__name__": "test_billing_simulations"}
    exec(compile(found[1], "docs/simulations.md", "exec"), namespace)
    return namespace


def test_the_example_machine_runs_on_its_plans(tmp_path: Path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # where its failure_file would go
    example = _example()
    machine = example["OurBilling"]
    assert [plan.code for plan in machine.catalog] == ["starter", "growth", "uf_team"]
    assert example["TestOurBilling"] is not None
    run_state_machine_as_test(machine, settings=FEW)
    assert not (tmp_path / "failure.yaml").exists()


def test_the_example_property_holds_on_a_few_generated_scenarios():
    test = _example()["test_every_generated_history_replays_and_leaves_paid_invoices_settled"]
    settings(FEW, max_examples=2)(test)()
