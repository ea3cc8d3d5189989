"""The host's own data. Billing's data stays in the engine's tables; the host keeps what it
does about billing's events."""

from django.db import models


class WelcomeEmail(models.Model):
    """A welcome e-mail queued for a new subscription (one per ``subscription.created`` event:
    events arrive at least once, so the event's id is unique here)."""

    event_id = models.CharField(max_length=64, unique=True)
    customer_id = models.CharField(max_length=64)
    subscription_id = models.CharField(max_length=64)
    plan_code = models.CharField(max_length=64)
    queued_at = models.DateTimeField()

    def __str__(self) -> str:
        return f"welcome e-mail to {self.customer_id} ({self.plan_code})"
