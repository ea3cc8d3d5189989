"""The project's billing engine: opened once per process, when this module is first imported
(by the URLconf, a management command...), and closed when the process exits.

Import it where it is needed: ``from saas.billing_engine import engine``. An engine is safe to
share between threads (it holds a connection pool), so every request of the process uses it.
"""

import atexit

from django.conf import settings

from billing import Engine, Plan, open_engine

CATALOG = (
    Plan.of(code="basico", name="Básico", price="9990", currency="CLP"),
    Plan.of(code="pro", name="Pro", price="19990", currency="CLP"),
)
"""The plans this SaaS sells."""


def open_billing_engine() -> Engine:
    """An engine on ``settings.BILLING_DATABASE_URL`` with the catalog's plans in it."""
    opened = open_engine(
        settings.BILLING_DATABASE_URL,
        migrate=settings.BILLING_MIGRATE,
        **settings.BILLING_ENGINE_OPTIONS,
    )
    for plan in CATALOG:  # a key per plan: every later start finds it done, changes nothing
        opened.create_plan(plan, idempotency_key=f"example-catalog-{plan.code}")
    return opened


engine = open_billing_engine()
atexit.register(engine.close)
