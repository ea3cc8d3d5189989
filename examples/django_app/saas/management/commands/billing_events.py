"""``python manage.py billing_events [--follow] [--every SECONDS]``: take the billing engine's
events and hand them to the project's code (:mod:`saas.events`), acknowledging each."""

import time
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from billing import BillingError


class Command(BaseCommand):
    help = (
        "Hand the billing engine's unacknowledged events to the project's code, in order, and "
        "acknowledge each one handled. Run it from cron, or keep it running with --follow."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--follow", action="store_true", help="keep polling for new events")
        parser.add_argument(
            "--every", type=float, default=2.0, help="seconds between polls with --follow (2)"
        )

    def handle(self, *args: Any, follow: bool, every: float, **options: Any) -> None:
        if not 0 < every <= 3600:
            rule = "must be a number of seconds above 0, at most 3600"
            raise CommandError(f"--every: {rule} (got {every:g})")
        try:
            self.consume(follow=follow, every=every)
        except KeyboardInterrupt:  # Ctrl-C with --follow: what was handled is acknowledged
            self.stdout.write("stopped")

    def consume(self, *, follow: bool, every: float) -> None:
        from saas.billing_engine import engine  # opened once, on first use
        from saas.events import consume_events

        while True:
            failure = None
            try:
                handled = consume_events(engine)
            except BillingError as exc:  # the engine's database: the event in hand stays
                failure = f"billing is unavailable: {exc}"
            except Exception as exc:  # the host's code failed on an event
                failure = (
                    f"an event could not be handled ({type(exc).__name__}: {exc}); it stays "
                    "unacknowledged and is handed over again on the next run"
                )
            if failure is None:
                if handled or not follow:
                    self.stdout.write(f"{handled} billing events handled")
            elif follow:
                self.stderr.write(failure)
            else:
                raise CommandError(failure)
            if not follow:
                return
            time.sleep(every)
