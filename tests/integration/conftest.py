"""An engine on a real database (SQLite and PostgreSQL), a test clock and the fake gateway."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from billing.bootstrap import open_engine
from billing.clock import ManualClock
from billing.config import Settings
from billing.engine import Engine
from billing.testing import FakeGateway

SCL = ZoneInfo("America/Santiago")
START = datetime(2026, 1, 31, 12, tzinfo=SCL)


@dataclass
class Billing:
    """An engine, the clock it reads, and the gateway it charges through."""

    engine: Engine
    clock: ManualClock
    fake: FakeGateway
    url: str

    def run_until(self, when: datetime) -> None:
        """Move the test clock to ``when``, billing everything due on the way."""
        self.clock.set(when)
        self.engine.run_due()

    def customer(
        self, ref: str = "c1", payment: str = "approve", timezone: str = "America/Santiago"
    ) -> str:
        self.engine.create_customer(customer_id=ref, timezone=timezone)
        self.engine.add_payment_method(ref, gateway="fake", token=f"tok_{ref}")
        self.fake.script(ref, payment)
        return ref


@pytest.fixture
def billing(database_url: str) -> Iterator[Billing]:
    clock = ManualClock(START)
    fake = FakeGateway()
    settings = Settings(threads=1)  # a fixed order of invoice numbers at one instant
    engine = open_engine(database_url, clock=clock, gateways=[fake], settings=settings)
    yield Billing(engine=engine, clock=clock, fake=fake, url=database_url)
    engine.close()
