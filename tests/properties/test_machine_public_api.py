"""BillingMachine as public API: a failing history is printed as a scenario file that
``billing scenario run`` replays; the machine runs on a gateway simulation and on a configured
database; ``configure`` refuses a bad option by name.

Each test runs a few short histories (small ``max_examples``, ``derandomize``): seconds.
"""

from __future__ import annotations

import json
from collections import Counter
from datetime import timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, Phase, settings
from hypothesis.stateful import invariant, rule, run_state_machine_as_test
from typer.testing import CliRunner

from billing.cli import app
from billing.domain.catalog import Plan
from billing.domain.errors import InvalidArgument
from billing.domain.invoices import InvoiceStatus
from billing.scenarios import load_scenario
from billing.testing import Behavior
from billing.testing.machine import BillingMachine
from billing.testing.recorder import DIFFERS

MARKER = "The failing history as a scenario file:\n"


def _few(examples: int, steps: int, *, shrink: bool = True) -> settings:
    """A few histories, the same ones every run; no explain phase (it traces every line a
    failing history runs: minutes on a real engine)."""
    phases = [Phase.explicit, Phase.reuse, Phase.generate] + [Phase.shrink] * shrink
    return settings(
        max_examples=examples,
        stateful_step_count=steps,
        derandomize=True,
        database=None,
        deadline=None,
        phases=phases,
        suppress_health_check=list(HealthCheck),
    )


class PaidTwiceIsABug(BillingMachine):
    """A deliberately broken money rule: no subscription may have two paid invoices (a renewal
    paid on time is exactly that), with an extra rule that lets a month pass.

    Hypothesis tries its simplest history first: the three customers paying at once, then the
    first rule (``a_month_passes``, first by name), which renews them. That history already
    fails, so the tests skip shrinking, which would spend a minute of histories finding nothing
    simpler; hypothesis replays the failing history to report it either way, and that final
    replay is what prints the scenario file.
    """

    @rule()
    def a_month_passes(self) -> None:
        self.time_passes(timedelta(days=31))

    @invariant()
    def no_subscription_has_two_paid_invoices(self) -> None:
        if not self.started:
            return
        paid = Counter(
            invoice.subscription_id
            for invoice in self.engine.invoices()
            if invoice.status is InvoiceStatus.PAID
        )
        twice = sorted(subscription for subscription, count in paid.items() if count > 1)
        assert not twice, f"paid twice: {twice}"


def test_a_failing_history_is_printed_as_a_scenario_file_that_replays_it(tmp_path: Path):
    saved = tmp_path / "saved.yaml"
    broken = PaidTwiceIsABug.configure(failure_file=saved)
    with pytest.raises(AssertionError, match="paid twice") as failure:
        run_state_machine_as_test(broken, settings=_few(examples=5, steps=4, shrink=False))

    # hypothesis prints the shrunk history with the failure, as a scenario file
    [printed] = [note for note in failure.value.__notes__ if note.startswith(MARKER)]
    text = printed.removeprefix(MARKER)
    assert "#     billing scenario run failure.yaml" in text
    assert saved.read_text(encoding="utf-8") == text
    scenario = load_scenario(text, source="failure.yaml")
    assert scenario.expect is not None
    assert "approximately" not in text  # all of it replays as it happened
    assert "not replayed" not in text
    assert DIFFERS not in text

    # pasted into a file, `billing scenario run` replays it: the expectations (what the
    # engine held when the invariant failed) are met, and the report shows the rejected state
    path = tmp_path / "failure.yaml"
    path.write_text(text, encoding="utf-8")
    result = CliRunner().invoke(app, ["scenario", "run", str(path), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    paid = Counter(i["subscription"] for i in report["invoices"] if i["status"] == "paid")
    assert max(paid.values()) == 2


def test_a_replay_that_differs_from_the_history_is_told_apart(tmp_path: Path):
    """The expect section is what makes a replay checkable: change what the engine held, and
    the replay says where it differs (exit 1)."""
    saved = tmp_path / "failure.yaml"
    with pytest.raises(AssertionError):
        run_state_machine_as_test(
            PaidTwiceIsABug.configure(failure_file=saved),
            settings=_few(examples=5, steps=4, shrink=False),
        )
    text = saved.read_text(encoding="utf-8")
    assert "status: paid" in text
    saved.write_text(text.replace("status: paid", "status: open", 1), encoding="utf-8")
    result = CliRunner().invoke(app, ["scenario", "run", str(saved)])
    assert result.exit_code == 1
    assert "unexpected" in result.output


def test_the_machine_runs_on_a_pay_by_link_gateway_simulation():
    """Khipu's real adapter on its fake server (in process), with every payer behaviour, its
    notifications handed to the engine after every step: the money laws hold."""
    on_khipu = BillingMachine.configure(gateway="khipu")
    run_state_machine_as_test(on_khipu, settings=_few(examples=3, steps=10))


def test_the_machine_runs_on_a_configured_database_emptied_before_each_history(sqlite_url: str):
    """Each history starts from the emptied database: the second would collide with the
    first's customers otherwise."""
    oro = Plan.of(code="oro", name="Oro", price="15000", currency="CLP")
    on_file = BillingMachine.configure(
        database_url=sqlite_url,
        plans=[oro],
        behaviors=[Behavior.APPROVE, Behavior.LINK_EXPIRES],
        pending_for=timedelta(hours=6),
        settings={"final_debt": "write_off"},
    )
    run_state_machine_as_test(on_file, settings=_few(examples=3, steps=6))


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"gateway": "paypal"}, "gateway"),
        ({"plans": []}, "plans"),
        ({"behaviors": ["pays_twice"]}, "behaviors"),
        ({"timezones": ["Mars/Olympus"]}, "timezones"),
        ({"pending_for": timedelta(hours=-1)}, "pending_for"),
        ({"settings": {"final_debt": "forgive"}}, "final_debt"),
        ({"settings": {"colour": "red"}}, "settings"),
    ],
)
def test_configure_refuses_a_bad_option_naming_it(options: dict[str, object], field: str):
    with pytest.raises(InvalidArgument) as refused:
        BillingMachine.configure(**options)  # type: ignore[arg-type]
    assert refused.value.field == field
