"""Requests to the Django example, made in a process of its own by ``test_django_example.py``
(``python -m tests.examples.django_driver``, with ``DJANGO_SETTINGS_MODULE`` set to
``tests.examples.django_settings`` and the example on ``PYTHONPATH``).

Django's settings can be configured once per process, and other tests configure them their own
way, so the example runs here, in a fresh interpreter, exactly as the project would. The driver
runs the system checks and the project's migrations (``call_command``), makes requests with
``django.test.Client`` (enforcing CSRF, as a browser would meet it),
plays the gateway's part (scripts the fake's payers, moves the test clock, makes the webhook's
body), and prints every answer as JSON; the test asserts on them.
"""

import json
from datetime import timedelta
from typing import Any


def main() -> None:
    import django

    django.setup()
    from django.conf import settings
    from django.core.management import call_command
    from django.test import Client
    from saas.billing_engine import engine

    from billing.testing import Behavior

    call_command("check")  # the system checks load the URLconf, which opens the engine
    call_command("migrate", "--no-input", verbosity=0)
    client = Client(enforce_csrf_checks=True)
    answers: dict[str, Any] = {}

    def record(name: str, response: Any) -> None:
        is_json = response.headers.get("Content-Type") == "application/json"
        body = response.json() if is_json else response.content.decode()
        answers[name] = {"status": response.status_code, "body": body}

    def post(name: str, path: str, body: Any, key: str | None = None) -> None:
        headers = {} if key is None else {"Idempotency-Key": key}
        data = json.dumps(body)
        record(name, client.post(path, data, content_type="application/json", headers=headers))

    def get(name: str, path: str) -> None:
        record(name, client.get(path))

    customer = {"customer_id": "c1", "timezone": "America/Santiago", "email": "ana@example.cl"}
    post("customer", "/customers", customer)
    post("card", "/customers/c1/payment-methods", {"gateway": "fake", "token": "tok_c1"})
    get("plans", "/plans")
    order = {"customer_id": "c1", "plan_code": "basico", "tax": {"name": "IVA", "percent": "19"}}
    post("subscribe", "/subscriptions", order, key="order-1")
    post("retry", "/subscriptions", order, key="order-1")
    post("conflict", "/subscriptions", {**order, "plan_code": "pro"}, key="order-1")
    answers["c1_subscriptions_in_engine"] = len(engine.subscriptions("c1"))
    fake = settings.FAKE
    answers["charges"] = sum(fake.calls.values())

    post("bad_timezone", "/customers", {"customer_id": "c9", "timezone": "Mars/Olympus"})
    post("float_tax", "/subscriptions", {**order, "tax": {"name": "IVA", "percent": 19.5}})
    post("tax_not_object", "/subscriptions", {**order, "tax": "19"})
    post("unknown_field", "/subscriptions", {**order, "coupon": "FREE"})
    post(
        "card_number",
        "/customers/c1/payment-methods",
        {"gateway": "fake", "token": "4111111111111111"},
    )
    post("no_customer", "/subscriptions", {"customer_id": "nobody", "plan_code": "basico"})
    get("wrong_method", "/subscriptions")

    subscription_id = answers["subscribe"]["body"]["id"]
    post("upgrade", f"/subscriptions/{subscription_id}/change-plan", {"plan_code": "pro"})
    post("cancel", f"/subscriptions/{subscription_id}/cancel", {})
    get("c1_invoices", "/customers/c1/invoices")

    # a payment link, paid an hour later; the gateway's webhook tells the project
    post("customer2", "/customers", {"customer_id": "c2", "timezone": "America/Santiago"})
    post("card2", "/customers/c2/payment-methods", {"gateway": "fake", "token": "tok_c2"})
    fake.script("c2", Behavior.PAY_BY_LINK)
    post("subscribe_link", "/subscriptions", {"customer_id": "c2", "plan_code": "pro"}, key="o-2")
    settings.CLOCK.advance(timedelta(hours=2))
    [payment] = engine.payments(customer_id="c2")
    assert payment.reference is not None
    webhook = fake.notification(payment.reference)
    path = "/billing/notifications/fake"
    record("webhook", client.post(path, webhook.body, content_type="application/json"))
    record("webhook_again", client.post(path, webhook.body, content_type="application/json"))
    get("c2_invoices", "/customers/c2/invoices")

    print(json.dumps(answers))


if __name__ == "__main__":
    main()
