"""The Django example's settings for its test (``test_django_example.py``): the example's own,
with the engine on a clock the test moves and a fake gateway whose payers it scripts."""

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from example_project.settings import *  # noqa: F403

from billing.clock import ManualClock
from billing.testing import FakeGateway

CLOCK = ManualClock(datetime.now(ZoneInfo("America/Santiago")))
FAKE = FakeGateway(pending_for=timedelta(hours=1))  # payment links are paid an hour later
BILLING_ENGINE_OPTIONS = {"clock": CLOCK, "gateways": [FAKE]}
