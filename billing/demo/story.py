"""What the demo bills: its plans, its customers on each gateway, and the year's turns of events.

Everything here is data; :mod:`billing.demo.world` plays it on a test clock. Instants are given
relative to the demo's start (the first day of the next month, 09:00 in Santiago), so that the
story reads the same whatever the day it is run.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal
from enum import StrEnum
from zoneinfo import ZoneInfo

from dateutil.relativedelta import relativedelta

from billing.domain.catalog import Plan
from billing.domain.dunning import RetryPolicy
from billing.domain.exchange import ExchangeRate, TableExchangeRates
from billing.domain.taxes import TaxRate

SANTIAGO = ZoneInfo("America/Santiago")

MONTHS = 12
"""How long the story lasts on the test clock."""

GATEWAYS = ("qvo", "openpay", "khipu", "payvalida")
"""The gateways the demo bills through, in the order it shows them."""

TITLES = {
    "qvo": "QVO (Chile, stored cards)",
    "openpay": "Openpay (Mexico, stored cards)",
    "khipu": "Khipu (Chile, payment links)",
    "payvalida": "Payvalida (Colombia, payment links)",
}

CHILE_IVA = TaxRate.of("IVA", "19")
"""Chilean IVA, added on top of the price."""
MEXICO_IVA = TaxRate.of("IVA", "16", inclusive=True)
"""Mexican IVA, included in the price (Mexican prices are shown with tax)."""
COLOMBIA_IVA = TaxRate.of("IVA", "19")
"""Colombian IVA, added on top of the price."""

PLANS = (
    Plan.of(
        code="pro-clp",
        name="Pro",
        price="19990",
        currency="CLP",
        trial_days=14,
        retry=RetryPolicy.of([3, 5, 7]),
    ),
    Plan.of(
        code="empresa-clp",
        name="Empresa",
        price="49990",
        currency="CLP",
        retry=RetryPolicy.of([3, 5, 7]),
    ),
    Plan.of(
        code="pro-uf",
        name="Pro UF",
        price="0.5",
        currency="CLF",  # priced in UF, charged in pesos at the UF of each invoice's day
        retry=RetryPolicy.of([2, 3, 5]),
    ),
    Plan.of(
        code="plus-mxn",
        name="Plus",
        price="599.00",
        currency="MXN",
        retry=RetryPolicy.openpay(3, "cancelled"),
    ),
    Plan.of(
        code="basico-mxn",
        name="Basico",
        price="299.00",
        currency="MXN",
        retry=RetryPolicy.openpay(3, "cancelled"),
    ),
    Plan.of(
        code="estandar-cop",
        name="Estandar",
        price="45000",
        currency="COP",
        retry=RetryPolicy.of([2, 3, 5]),
    ),
)


@dataclass(frozen=True, slots=True)
class Habit:
    """How a payer of a pay-by-link gateway treats the links the engine sends: each is paid
    ``delay`` after it was sent, except the ones numbered in ``ignores`` (0 is the first link),
    which are left to expire."""

    delay: timedelta
    ignores: frozenset[int] = frozenset()


@dataclass(frozen=True, slots=True)
class Customer:
    id: str
    name: str
    gateway: str
    timezone: str
    plan: str
    tax: TaxRate
    habit: Habit | None = None
    """For a pay-by-link gateway: how this payer treats links (the demo acts as the payer)."""

    @property
    def email(self) -> str:
        return f"{self.id}@payers.example.com"


CUSTOMERS = (
    Customer("ana", "Ana Rojas", "qvo", "America/Santiago", "pro-clp", CHILE_IVA),
    Customer("bruno", "Bruno Diaz", "qvo", "America/Santiago", "pro-uf", CHILE_IVA),
    Customer("diego", "Diego Hernandez", "openpay", "America/Mexico_City", "plus-mxn", MEXICO_IVA),
    Customer("elena", "Elena Torres", "openpay", "America/Mexico_City", "plus-mxn", MEXICO_IVA),
    Customer(
        "fernanda",
        "Fernanda Soto",
        "khipu",
        "America/Santiago",
        "empresa-clp",
        CHILE_IVA,
        Habit(timedelta(minutes=40)),
    ),
    Customer(
        "gabriel",
        "Gabriel Rios",
        "payvalida",
        "America/Bogota",
        "estandar-cop",
        COLOMBIA_IVA,
        Habit(timedelta(minutes=20)),
    ),
    Customer(
        "hugo",
        "Hugo Perez",
        "payvalida",
        "America/Bogota",
        "estandar-cop",
        COLOMBIA_IVA,
        Habit(timedelta(minutes=30), ignores=frozenset({2})),
    ),
)


class Turn(StrEnum):
    """A kind of thing that happens to a customer during the year."""

    UPGRADE = "upgrade"
    DOWNGRADE = "downgrade"
    DECLINES = "declines"
    """The customer's card declines the next ``times`` charges, then pays again."""
    DECLINES_FOR_GOOD = "declines_for_good"
    """The customer's card declines every charge from now on."""
    REFUND = "refund"
    """The payment of the customer's invoice number ``invoice`` (0 is the first) is refunded."""
    CANCEL = "cancel"
    """The customer cancels at the end of the period."""
    HOLD_NOTIFICATIONS = "hold_notifications"
    """The customer's gateway holds its notifications back (they are late, as if lost)."""
    RELEASE_NOTIFICATIONS = "release_notifications"
    """The gateway delivers the notifications it held, late."""


@dataclass(frozen=True, slots=True)
class Beat:
    """One turn of the story, ``months``, ``days`` and ``hours`` after the start."""

    months: int
    days: int
    hours: int
    customer: str
    turn: Turn
    plan: str | None = None
    times: int = 0
    invoice: int = 0
    says: str = ""

    def at(self, start: datetime) -> datetime:
        local = start.astimezone(SANTIAGO)
        return local + relativedelta(months=self.months, days=self.days, hours=self.hours)


BEATS = (
    Beat(
        2,
        10,
        3,
        "ana",
        Turn.UPGRADE,
        plan="empresa-clp",
        says="upgrades Pro to Empresa mid-period: the difference is carried as debt",
    ),
    Beat(
        2,
        27,
        0,
        "bruno",
        Turn.DECLINES,
        times=2,
        says="card will decline its next 2 charges (insufficient funds)",
    ),
    Beat(
        4,
        15,
        0,
        "diego",
        Turn.DOWNGRADE,
        plan="basico-mxn",
        says="downgrades Plus to Basico mid-period: the unused paid time becomes credit",
    ),
    Beat(5, 28, 0, "elena", Turn.DECLINES_FOR_GOOD, says="card declines every charge from now on"),
    Beat(
        7,
        5,
        0,
        "diego",
        Turn.REFUND,
        invoice=1,
        says="asks for his second month back: refunded in full through Openpay",
    ),
    Beat(
        7,
        28,
        0,
        "fernanda",
        Turn.HOLD_NOTIFICATIONS,
        says="Khipu's notifications are held back from now on (as if lost)",
    ),
    Beat(
        8,
        1,
        0,
        "fernanda",
        Turn.RELEASE_NOTIFICATIONS,
        says="Khipu delivers the held notification a day late: it changes nothing",
    ),
    Beat(10, 3, 0, "gabriel", Turn.CANCEL, says="cancels at the end of the period"),
)


def offer(plan_code: str, tax: TaxRate) -> str:
    """``Pro (pro-clp): 19,990 CLP a month + IVA 19%, 14-day trial``."""
    [plan] = [plan for plan in PLANS if plan.code == plan_code]
    price = f"{plan.price.amount:,} {plan.price.currency.code}"
    if plan.price.currency.code == "CLF":
        price = f"{plan.price.amount.normalize():f} UF (charged in {plan.billing_currency.code})"
    tax_shown = tax.label().replace(" (included)", " included")
    text = f"{plan.name} ({plan.code}): {price} a month, {tax_shown}"
    if plan.trial_days:
        text += f", {plan.trial_days}-day trial"
    return text


def start_after(now: datetime) -> datetime:
    """The demo's start: the first day of the month after ``now``, 09:00 in Santiago."""
    local = now.astimezone(SANTIAGO)
    first = (local.replace(day=1) + relativedelta(months=1)).date()
    return datetime(first.year, first.month, 1, 9, tzinfo=SANTIAGO)


def end_of(start: datetime) -> datetime:
    """The demo's end: 20:00 in Santiago on the last day of its twelfth month (still that day
    in UTC, so reports by month end with the twelfth)."""
    last = (start.astimezone(SANTIAGO) + relativedelta(months=MONTHS)).date() - timedelta(days=1)
    return datetime(last.year, last.month, last.day, 20, tzinfo=SANTIAGO)


def uf_rates(start: datetime) -> TableExchangeRates:
    """A UF (CLF) to peso table for the demo's year: one rate per month from the month before
    the start, growing 0.3 % a month as the UF follows inflation (invented, close to 2026's)."""
    first = start.astimezone(SANTIAGO).date().replace(day=1) - relativedelta(months=1)
    rate = Decimal("39250.00")
    rates: list[ExchangeRate] = []
    for k in range(MONTHS + 3):
        day: date = first + relativedelta(months=k)
        rates.append(ExchangeRate.of(day, "CLF", "CLP", rate))
        rate = (rate * Decimal("1.003")).quantize(Decimal("0.01"))
    return TableExchangeRates(rates)
