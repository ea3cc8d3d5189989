"""Delivering recorded events to the host's handlers.

Each event goes to the handlers registered for its name and to those registered for ``"*"``.
Delivery is at least once: an event is marked delivered only after all its handlers returned, so
a crash in between delivers it again (its id is stable, for deduplication). Events of one stream
(a subscription, or a customer for events without one) are delivered in order, one at a time: a
handler that raises leaves the event to be retried after a back-off, and holds back only the
later events of its own stream. Several workers can dispatch at once; they claim events the same
way they claim subscriptions.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta

from billing.services.context import Context, log
from billing.store.unit_of_work import StoredEvent

Handler = Callable[[StoredEvent], None]
Handlers = Mapping[str, Sequence[Handler]]
"""Event name (or ``"*"`` for every event) to the handlers that receive it."""

_FIRST_RETRY = timedelta(seconds=1)
_LAST_RETRY = timedelta(hours=1)


@dataclass
class DispatchReport:
    """What a dispatch pass did."""

    delivered: int = 0
    failed: int = 0


def retry_delay(deliveries: int) -> timedelta:
    """How long a failed event waits before its next delivery: 1 s, 2 s, 4 s... up to 1 hour."""
    return min(_FIRST_RETRY * (1 << min(deliveries, 20)), _LAST_RETRY)


def dispatch(ctx: Context, handlers: Handlers, *, limit: int = 100) -> DispatchReport:
    """Deliver every event that can be delivered now; see the module docstring."""
    report = DispatchReport()
    while True:
        wall = ctx.clock.now()
        with ctx.store.transaction() as tx:
            heads = tx.claim_event_heads(
                ctx.worker, wall_now=wall, lease_until=wall + ctx.settings.lease, limit=limit
            )
        if not heads:
            return report
        for event in heads:
            _deliver(ctx, handlers, event, report)


def _deliver(ctx: Context, handlers: Handlers, event: StoredEvent, report: DispatchReport) -> None:
    try:
        for handler in (*handlers.get(event.name, ()), *handlers.get("*", ())):
            handler(event)
    except Exception as exc:
        retry_at = ctx.clock.now() + retry_delay(event.deliveries)
        log.warning(
            "dispatch.failed event_id=%s name=%s deliveries=%s error=%s retry_at=%s",
            event.id,
            event.name,
            event.deliveries + 1,
            type(exc).__name__,
            retry_at.isoformat(),
        )
        with ctx.store.transaction() as tx:
            tx.delivery_failed(event.seq, ctx.worker, f"{type(exc).__name__}: {exc}", retry_at)
        report.failed += 1
        return
    with ctx.store.transaction() as tx:
        tx.delivered(event.seq, ctx.worker, ctx.clock.now())
    report.delivered += 1
