"""The Django example (``examples/django_app``), run as its README runs it.

Django's settings can be configured only once per process, and ``test_notifications_app.py``
configures them its own way in whichever pytest-xdist worker runs it. So the example runs in
processes of its own, whatever else this worker did: ``django_driver.py`` (the system checks and
migrations, then requests through ``django.test.Client``, with a test clock and a scripted fake
gateway), then ``manage.py billing_events``. This test asserts on their answers and on both
databases.
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

from billing import Plan, open_engine
from billing.testing import FakeGateway

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "django_app"


def floats_in(value: object) -> list[float]:
    if isinstance(value, float):
        return [value]
    if isinstance(value, dict):
        return [found for item in value.values() for found in floats_in(item)]
    if isinstance(value, list):
        return [found for item in value for found in floats_in(item)]
    return []


class Project:
    """The example project with the fake gateway, on two SQLite files: billing's (migrated
    already) and the project's own, in ``tmp_path``."""

    def __init__(self, tmp_path: Path, billing_url: str) -> None:
        self.billing_url = billing_url
        self.host_db = tmp_path / "host.sqlite3"
        environ = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
        self.env = environ | {
            "BILLING_DATABASE_URL": self.billing_url,
            "EXAMPLE_DJANGO_DB": str(self.host_db),
            "BILLING_EXAMPLE_FAKE": "1",
            "PYTHONPATH": str(EXAMPLE),
        }

    def manage(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "manage.py", *args],
            cwd=EXAMPLE,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=60,
        )

    def drive(self) -> dict[str, Any]:
        result = subprocess.run(
            [sys.executable, "-m", "tests.examples.django_driver"],
            cwd=ROOT,
            env=self.env | {"DJANGO_SETTINGS_MODULE": "tests.examples.django_settings"},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 0, result.stderr
        answers: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
        return answers

    def welcome_emails(self) -> list[tuple[str, str, str]]:
        with sqlite3.connect(self.host_db) as connection:
            query = "SELECT customer_id, plan_code, event_id FROM saas_welcomeemail ORDER BY id"
            return [tuple(row) for row in connection.execute(query)]


def test_subscribe_webhook_and_events_through_the_django_example(tmp_path: Path, sqlite_url: str):
    project = Project(tmp_path, sqlite_url)
    answers = project.drive()

    def answer(name: str) -> tuple[int, Any]:
        return answers[name]["status"], answers[name]["body"]

    # a customer, a card token, the catalog, a subscription with 19 % IVA paid at once
    assert answer("customer")[0] == answer("card")[0] == 201
    assert [(p["code"], p["price"]) for p in answer("plans")[1]] == [
        ("basico", {"amount": "9990", "currency": "CLP"}),
        ("pro", {"amount": "19990", "currency": "CLP"}),
    ]
    status, subscription = answer("subscribe")
    assert (status, subscription["status"]) == (201, "active")
    assert subscription["latest_payment"]["status"] == "succeeded"
    assert subscription["latest_payment"]["amount"] == {"amount": "11888", "currency": "CLP"}

    # the retried request: the same subscription, one charge; the key reused: 409
    assert answer("retry") == (201, subscription)
    assert (answers["c1_subscriptions_in_engine"], answers["charges"]) == (1, 1)
    assert answer("conflict")[0] == 409
    assert answer("conflict")[1]["error"] == "idempotency_conflict"

    # bad requests name the field (and the rule)
    for name, field in [
        ("bad_timezone", "timezone"),
        ("float_tax", "tax.percent"),
        ("tax_not_object", "tax"),
        ("unknown_field", "coupon"),
        ("card_number", "token"),
    ]:
        status, body = answer(name)
        assert (status, body["field"]) == (422, field), name
        assert body["rule"], name
    assert (answer("no_customer")[0], answer("no_customer")[1]["entity"]) == (404, "customer")
    assert answer("wrong_method")[0] == 405

    # upgrade and cancel at the period's end; the invoices, money as strings
    assert answer("upgrade")[1]["plan"] == "pro"
    assert answer("cancel")[1]["cancel_at_period_end"] is True
    assert [(i["status"], i["total"]) for i in answer("c1_invoices")[1]] == [
        ("paid", {"amount": "11888", "currency": "CLP"})
    ]

    # the payment link, paid: its webhook (posted twice) settles the invoice
    link = answer("subscribe_link")[1]["latest_payment"]
    assert (link["status"], link["action_url"][:8]) == ("requires_action", "https://")
    assert answer("webhook") == answer("webhook_again") == (200, "OK")
    assert [i["status"] for i in answer("c2_invoices")[1]] == ["paid"]
    assert floats_in(answers) == []

    # events to the host: every event handed over once, one welcome e-mail per subscription
    with open_engine(project.billing_url, gateways=[]) as engine:
        events = engine.events(limit=1000)
        created = sorted(e.id for e in events if e.name == "subscription.created")
    first = project.manage("billing_events")
    assert first.returncode == 0, first.stderr
    assert first.stdout.strip() == f"{len(events)} billing events handled"
    emails = project.welcome_emails()
    assert sorted((customer, plan) for customer, plan, _ in emails) == [
        ("c1", "basico"),
        ("c2", "pro"),
    ]
    assert sorted(event_id for _, _, event_id in emails) == created
    with open_engine(project.billing_url, gateways=[]) as engine:
        assert engine.events() == []


def test_an_event_the_host_cannot_handle_stays_unacknowledged(tmp_path: Path, sqlite_url: str):
    project = Project(tmp_path, sqlite_url)  # never migrated: the host's table is missing
    with open_engine(project.billing_url, gateways=[FakeGateway()]) as engine:
        engine.create_plan(Plan.of(code="mes", name="Mes", price="5000", currency="CLP"))
        engine.create_customer(customer_id="c1", timezone="America/Santiago")
        engine.add_payment_method("c1", gateway="fake", token="tok_c1")
        engine.subscribe("c1", "mes")
        pending = [event.id for event in engine.events()]

    failed = project.manage("billing_events")

    assert failed.returncode == 1
    assert "Traceback" not in failed.stderr
    [line] = failed.stderr.strip().splitlines()
    assert line.startswith("CommandError: an event could not be handled")
    with open_engine(project.billing_url, gateways=[]) as engine:
        still = engine.events()
    assert [event.id for event in still] == pending  # nothing acknowledged, the order kept
    assert still[0].name == "subscription.created"


def test_the_webhook_view_is_the_one_docs_notifications_md_shows():
    docs = (ROOT / "docs" / "notifications.md").read_text(encoding="utf-8")
    match = re.search(r"<!-- django-view -->\n```python\n(.*?)```", docs, re.DOTALL)
    assert match, "docs/notifications.md shows the Django view"
    shown = match.group(1).replace("myproject.billing_engine", "saas.billing_engine")
    copied = (EXAMPLE / "saas" / "webhooks.py").read_text(encoding="utf-8")

    def code(text: str) -> str:
        return "\n".join(line for line in text.splitlines() if line.strip())

    assert code(shown) in code(copied)
