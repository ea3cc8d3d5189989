"""Events to the host: the billing engine's events outbox, read and acknowledged by this
project (the ``billing_events`` management command runs :func:`consume_events`).

The engine writes every state change's events in the same transaction as the change. The host
reads the ones it has not acknowledged yet, in order, does its part for each (here: a welcome
e-mail per new subscription), and acknowledges it. A crash between the two hands the event over
again on the next run (at least once), so :func:`handle_billing_event` is idempotent: the
event's id is unique in the host's table.
"""

import logging

from django.db import transaction

from billing import Engine
from billing.store.unit_of_work import StoredEvent
from saas.models import WelcomeEmail

log = logging.getLogger("saas")


def handle_billing_event(event: StoredEvent) -> None:
    """The host's code for one billing event."""
    if event.name == "subscription.created":
        _, queued = WelcomeEmail.objects.get_or_create(
            event_id=event.id,
            defaults={
                "customer_id": event.payload["customer_id"],
                "subscription_id": event.payload["subscription_id"],
                "plan_code": event.payload["plan_code"],
                "queued_at": event.at,
            },
        )
        if queued:
            log.info("welcome_email.queued customer=%s", event.payload["customer_id"])


def consume_events(engine: Engine, *, batch: int = 100) -> int:
    """Hand every unacknowledged event to :func:`handle_billing_event`, oldest first, and
    acknowledge each once the host's transaction for it committed; returns how many.

    An event whose handling raises is not acknowledged, and the exception propagates: it and the
    events after it are handed over again on the next call, in order.
    """
    handled = 0
    while events := engine.events(limit=batch):
        for event in events:
            with transaction.atomic():
                handle_billing_event(event)
            engine.acknowledge([event.id])
            handled += 1
    return handled
