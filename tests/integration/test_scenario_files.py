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

from billing.bootstrap import open_engine
from billing.cli import app
from billing.clock import ManualClock
from billing.config import Settings
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
    settings = Settings(database_url=database_url, **scenario.settings)  # type: ignore[arg-type]
    with open_engine(database_url, clock=ManualClock(scenario.until), settings=settings) as engine:
        audit = engine.audit()  # and the books it left balance
    assert audit.balanced, "\n".join(map(str, audit.findings))


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


# --- the forms a recorded history needs: what the run does with them ---------------------------

LATE = (SCENARIOS / "expired_link_paid_late.yaml").read_text(encoding="utf-8")


def _events(report: dict[str, object], name: str) -> list[tuple[str, str]]:
    events = report["events"]
    assert isinstance(events, list)
    return [(e["at"], e["subscription"]) for e in events if e["name"] == name]


def test_the_settings_section_sets_the_engines_settings():
    """With late_payment_days 0 the engine no longer asks about expired links: the late payment
    whose notification was lost is never found, and INV-3 stays open."""
    text = LATE.replace("settings: {late_payment_days: 3}", "settings: {late_payment_days: 0}")
    report = run_scenario(load_scenario(text))
    assert [i["status"] for i in report["invoices"]] == ["paid", "paid", "open"]


def test_the_invoice_prefix_setting_names_the_invoices_events_refer_to():
    text = (SCENARIOS / "refund_of_an_earlier_attempt.yaml").read_text(encoding="utf-8")
    text = text.replace("fake_gateway:", "settings: {invoice_prefix: FAC}\nfake_gateway:")
    report = run_scenario(load_scenario(text.replace("INV-", "FAC-").split("expect:")[0]))
    assert [i["number"] for i in report["invoices"]] == ["FAC-000001", "FAC-000002"]
    assert [r["status"] for r in report["refunds"]] == ["succeeded"]


def test_the_fake_gateways_waiting_time_is_the_files():
    """pay_late on the fake: paid when the charge stops waiting, an hour here (seen at the
    engine's check 64 minutes after it was sent), two days by default."""
    text = """\
name: waiting
start: "2026-03-02T13:00:00Z"
until: "2026-03-10T00:00:00Z"
fake_gateway: {pending_seconds: 3600}
plans:
  - {code: oro, name: Oro, price: 15000, currency: CLP}
customers:
  - {ref: c1, timezone: UTC, payment: pay_late}
subscriptions:
  - {ref: s1, customer: c1, plan: oro}
"""
    report = run_scenario(load_scenario(text))
    assert _events(report, "payment.succeeded") == [("2026-03-02T14:04:00+00:00", "s1")]
    default = run_scenario(
        load_scenario(text.replace("fake_gateway: {pending_seconds: 3600}\n", ""))
    )
    assert _events(default, "payment.succeeded") == [("2026-03-04T23:08:00+00:00", "s1")]


REFUSED = """\
name: refusals
start: "2026-03-02T10:00:00-03:00"
until: "2026-03-20T10:00:00-03:00"
plans:
  - {code: oro, name: Oro, price: 15000, currency: CLP}
customers:
  - {ref: c1, timezone: America/Santiago, gateway: GATEWAY, payment: approve}
subscriptions:
  - {ref: s1, customer: c1, plan: oro}
events:
  - at: "2026-03-05T12:00:00Z"
    EVENT
"""


@pytest.mark.parametrize(
    ("gateway", "event", "field", "rule"),
    [
        (
            "fake",
            "refund: {invoice: INV-000001, attempt: 2}",
            "events.refund.attempt",
            "must be an attempt of INV-000001 (it has: 1)",
        ),
        (
            "fake",
            "pay_expired_link: {invoice: INV-000001, attempt: 1}",
            "events.pay_expired_link.attempt",
            "must be a payment link that expired unpaid (it is succeeded)",
        ),
        (
            "fake",
            "pay_expired_link: {invoice: INV-000001}",
            "events.pay_expired_link",
            "refused by the engine: invoice 'INV-000001' is paid: cannot have an expired link",
        ),
        (
            "khipu",
            "refund: {invoice: INV-000001, lose_answer: before}",
            "events.refund.lose_answer",
            "before is the in-process fake's only",
        ),
        (
            "fake",
            "lose_refund_answer: {gateway: khipu}",
            "events.lose_refund_answer.gateway",
            "must be the gateway of a customer (fake)",
        ),
    ],
    ids=["no such attempt", "not expired", "no expired link", "lost before", "unused gateway"],
)
def test_an_event_the_run_cannot_make_names_its_line_and_argument(
    gateway: str, event: str, field: str, rule: str
):
    text = REFUSED.replace("GATEWAY", gateway).replace("EVENT", event)
    with pytest.raises(ScenarioError) as refused:
        run_scenario(load_scenario(text, source="refused.yaml"))
    assert (refused.value.line, refused.value.field) == (11, field), str(refused.value)
    assert rule in str(refused.value)


def test_a_lost_refund_answer_on_a_pay_by_link_gateway_is_reconciled():
    """Khipu takes a whole refund and its answer is lost (after refunding): unknown until a
    reconciliation asks again, and finds the payment reversed."""
    text = REFUSED.replace("GATEWAY", "khipu").replace(
        "EVENT", "refund: {invoice: INV-000001, lose_answer: after}"
    )
    unknown = run_scenario(load_scenario(text))
    assert [(r["amount"], r["status"]) for r in unknown["refunds"]] == [("15000", "unknown")]
    text += '  - {at: "2026-03-06T12:00:00Z", reconcile: {}}\n'
    settled = run_scenario(load_scenario(text))
    assert [(r["amount"], r["status"]) for r in settled["refunds"]] == [("15000", "succeeded")]


def test_a_late_payment_bills_the_period_it_reactivates_before_the_next_event_of_its_instant():
    """A late payment reactivates an unpaid subscription: the rest of its period is invoiced
    and charged as the payment is recorded (an active subscription is never left with its
    current period unbilled), so credit granted next, at the same instant, stays credit."""
    text = """\
name: one instant
start: "2026-03-02T13:00:00Z"
until: "2026-04-10T00:00:00Z"
fake_gateway: {pending_seconds: 86400}
plans:
  - {code: oro, name: Oro, price: 15000, currency: CLP, retry: {delays_days: [], then: unpaid}}
customers:
  - {ref: c1, timezone: UTC, payment: link_expires}
subscriptions:
  - {ref: s1, customer: c1, plan: oro}
events:
  - {at: "2026-04-05T12:00:00Z", pay_expired_link: {invoice: INV-000001}}
  - {at: "2026-04-05T12:00:00Z", grant_credit: {customer: c1, amount: 15000}}
"""
    report = run_scenario(load_scenario(text))
    resumed = report["invoices"][1]
    assert (resumed["reason"], resumed["status"], resumed["credit"]) == ("resume", "open", "0")
    assert report["customers"][0]["credit_balance"] == "15000"
    names = [e["name"] for e in report["events"] if e["at"] == "2026-04-05T12:00:00+00:00"]
    assert names == [
        "payment.succeeded",
        "invoice.paid",
        "subscription.activated",
        "invoice.created",
        "payment.requires_action",
        "credit.granted",
    ]
