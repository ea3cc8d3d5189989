"""``billing simulate``: months of a customer base billed by the real engine on a test clock.

The simulation opens an engine (:func:`billing.open_engine`, on a fresh SQLite file by default)
with a :class:`~billing.clock.ManualClock` and the in-process
:class:`~billing.testing.FakeGateway`, and then:

1. creates the plans of :data:`CATALOG`: Chilean pesos monthly and yearly, a UF plan charged in
   pesos (with a daily UF series in :class:`~billing.domain.exchange.TableExchangeRates`),
   Mexican and Colombian pesos, each with its country's VAT;
2. signs up ``subscriptions`` customers through the API (:meth:`~billing.Engine.sign_up_many`:
   customer, card, subscription), each on a plan drawn from the mix, starting at an instant
   spread over the first month;
3. moves the clock a day at a time to the end of ``months`` UTC months, calling
   :meth:`~billing.Engine.run_due` (the batched billing run) at every step. At each month's
   start every customer's card may start declining (``decline_rate``), as a decline
   *episode* drawn from :data:`EPISODES` and scripted on the fake gateway; customers whose
   subscription went ``unpaid`` may give a new card (:data:`CARD_UPDATE_RATE`); and each
   subscription may be canceled (``churn_rate``), upgraded (``upgrade_rate``) or downgraded
   (``downgrade_rate``) on a day of the month, through the API;
4. checks the books with :meth:`~billing.Engine.audit` and builds the report
   (:func:`billing.reports.build_report`).

Every random choice is drawn from a ``random.Random`` seeded with the seed, the customer's
number and what is drawn, in a fixed order, and the engine runs with one thread, so the same
options give the same history and the same report. Customers share nothing the report counts,
so a simulation can run in parts (:func:`simulate` given several databases): each part's
customers in a process of their own, on a database of their own, the report built over all the
databases at once; the report is the same for any number of parts.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import random
import signal
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager, nullcontext
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
import yaml
from rich import box
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from sqlalchemy import func, select

from billing.bootstrap import open_engine
from billing.clock import ManualClock
from billing.config import Settings
from billing.domain.catalog import Plan
from billing.domain.dunning import RetryPolicy
from billing.domain.errors import (
    BillingError,
    CurrencyExponentChanged,
    InvalidArgument,
    SchemaNotReady,
    StorageError,
)
from billing.domain.exchange import ExchangeRate, TableExchangeRates
from billing.domain.taxes import TaxRate
from billing.engine import Engine
from billing.reports import Report, build_report, print_report, write_report
from billing.services.audit import AuditReport
from billing.services.sign_ups import SignUp
from billing.store.tables import metadata
from billing.testing.fake_gateway import Behavior, FakeGateway

if TYPE_CHECKING:
    from multiprocessing.process import BaseProcess
    from multiprocessing.queues import Queue

START = datetime(2026, 1, 1, tzinfo=UTC)
"""When every simulation starts: its first month is January 2026 (UTC)."""


@dataclass(frozen=True, slots=True)
class PlanSpec:
    """A plan of the simulation's catalog."""

    code: str
    name: str
    price: str
    currency: str
    interval: str
    family: str
    """Plans of one family share interval and currency; changes go up and down a family."""
    tier: int
    charge_currency: str | None = None


CATALOG: tuple[PlanSpec, ...] = (
    PlanSpec("cl_basico", "Básico", "9990", "CLP", "month", "cl", 0),
    PlanSpec("cl_pro", "Pro", "29990", "CLP", "month", "cl", 1),
    PlanSpec("cl_empresa", "Empresa", "79990", "CLP", "month", "cl", 2),
    PlanSpec("cl_anual", "Pro anual", "299900", "CLP", "year", "cl_anual", 0),
    PlanSpec("uf_pyme", "Pyme UF", "1", "CLF", "month", "uf", 0, "CLP"),
    PlanSpec("uf_corporativo", "Corporativo UF", "2.5", "CLF", "month", "uf", 1, "CLP"),
    PlanSpec("mx_basico", "Básico MX", "199.00", "MXN", "month", "mx", 0),
    PlanSpec("mx_pro", "Pro MX", "499.00", "MXN", "month", "mx", 1),
    PlanSpec("co_basico", "Básico CO", "39900", "COP", "month", "co", 0),
    PlanSpec("co_pro", "Pro CO", "99900", "COP", "month", "co", 1),
)
PLANS = {spec.code: spec for spec in CATALOG}
DEFAULT_MIX: Mapping[str, int] = {
    "cl_basico": 25,
    "cl_pro": 15,
    "cl_empresa": 5,
    "cl_anual": 5,
    "uf_pyme": 10,
    "uf_corporativo": 5,
    "mx_basico": 15,
    "mx_pro": 5,
    "co_basico": 10,
    "co_pro": 5,
}
"""Plan weights: a subscription's plan is drawn with these odds."""

_COUNTRY = {
    "CLP": ("America/Santiago", TaxRate.of("IVA", "19")),
    "CLF": ("America/Santiago", TaxRate.of("IVA", "19")),
    "MXN": ("America/Mexico_City", TaxRate.of("IVA", "16")),
    "COP": ("America/Bogota", TaxRate.of("IVA", "19")),
}
"""Each price currency's customers' timezone, and their VAT."""
_RETRY = {
    "cl": RetryPolicy.of([3, 5, 7], then="canceled"),
    "cl_anual": RetryPolicy.of([3, 5, 7], then="canceled"),
    "uf": RetryPolicy.of([3, 5, 7], then="canceled"),
    "mx": RetryPolicy.of([2, 3, 4], then="unpaid"),
    "co": RetryPolicy.of([2, 3, 4], then="unpaid"),
}
"""Dunning per family: Chilean plans cancel when the retries run out, the others go unpaid
(their invoice waits for a new card)."""

_SOFT, _HARD, _OK = Behavior.DECLINE_SOFT, Behavior.DECLINE_HARD, Behavior.APPROVE
EPISODES: tuple[tuple[str, int, tuple[Behavior, ...]], ...] = (
    ("recovers on the first retry", 50, (_SOFT, _OK)),
    ("recovers on the second retry", 20, (_SOFT, _SOFT, _OK)),
    ("recovers on the third retry", 10, (_SOFT, _SOFT, _SOFT, _OK)),
    ("keeps declining softly", 10, (_SOFT,)),
    ("declines hard", 10, (_HARD,)),
)
"""What a card that starts declining does: (what, weight, the fake gateway's script for the
customer's next charges, the last one repeating). The last two never pay again until the
customer gives a new card."""
CARD_UPDATE_RATE = 0.5
"""The chance, each month, that a customer whose subscription is ``unpaid`` gives a new card
(which retries the waiting invoice at once)."""
CANCEL_NOW_SHARE = 0.25
"""The share of cancellations made at once; the rest cancel at the end of the period."""

SIGN_UPS_AT_ONCE = 1000
"""Customers signed up per :meth:`~billing.Engine.sign_up_many` call."""
MAX_SUBSCRIPTIONS = 1_000_000
MAX_MONTHS = 120


# -- options ----------------------------------------------------------------------------------


class OptionError(ValueError):
    """A bad option or configuration value: one line naming where it came from."""


class DatabaseInUse(Exception):
    """The database given already holds customers: a simulation needs an empty one."""


@dataclass(frozen=True, slots=True, kw_only=True)
class SimulationConfig:
    """What to simulate; see the module docstring and ``docs/simulate.md``."""

    subscriptions: int = 1000
    months: int = 12
    seed: int = 0
    plans: Mapping[str, int] = field(default_factory=lambda: dict(DEFAULT_MIX))
    decline_rate: Decimal = Decimal("0.05")
    """Each month, the chance that a customer's card starts declining."""
    churn_rate: Decimal = Decimal("0.02")
    """Each month, the chance that a subscription is canceled."""
    upgrade_rate: Decimal = Decimal("0.02")
    downgrade_rate: Decimal = Decimal("0.01")

    @classmethod
    def parse(
        cls, values: Mapping[str, object], *, names: Callable[[str], str] = lambda key: key
    ) -> SimulationConfig:
        """Validate raw values (strings from flags, or YAML values) by field name; ``names``
        says how to call a field in an error (``--decline-rate``, ``sim.yaml: decline_rate``).

        Raises :class:`OptionError`.
        """
        known = set(cls.__dataclass_fields__)
        for key in values:
            if key not in known:
                allowed = ", ".join(sorted(known))
                raise OptionError(f"{names(key)}: unknown setting (known: {allowed})")
        parsed: dict[str, Any] = {}
        for key, value in values.items():
            if key in ("subscriptions", "months", "seed"):
                limits = {
                    "subscriptions": (1, MAX_SUBSCRIPTIONS),
                    "months": (1, MAX_MONTHS),
                    "seed": (0, 2**63 - 1),
                }[key]
                parsed[key] = _integer(names(key), value, *limits)
            elif key == "plans":
                parsed[key] = _mix(names(key), value)
            else:
                parsed[key] = _rate(names(key), value)
        config = cls(**parsed)
        total = config.churn_rate + config.upgrade_rate + config.downgrade_rate
        if total > 1:
            names_ = ", ".join(names(k) for k in ("churn_rate", "upgrade_rate", "downgrade_rate"))
            raise OptionError(f"{names_}: must add up to at most 1 (they add up to {total})")
        return config

    def merged(self, other: Mapping[str, object], names: Callable[[str], str]) -> SimulationConfig:
        """This configuration with ``other``'s raw values parsed over it."""
        mine: dict[str, object] = {
            "subscriptions": self.subscriptions,
            "months": self.months,
            "seed": self.seed,
            "plans": dict(self.plans),
            "decline_rate": self.decline_rate,
            "churn_rate": self.churn_rate,
            "upgrade_rate": self.upgrade_rate,
            "downgrade_rate": self.downgrade_rate,
        }
        given = {key: value for key, value in other.items() if value is not None}
        return SimulationConfig.parse({**mine, **given}, names=names)

    def describe(self) -> list[tuple[str, str]]:
        """The settings as shown in the report."""
        mix = ", ".join(f"{code} {weight}" for code, weight in self.plans.items() if weight)
        return [
            ("subscriptions", f"{self.subscriptions:,}"),
            ("months", str(self.months)),
            ("seed", str(self.seed)),
            ("plan mix", mix),
            ("decline rate", f"{self.decline_rate} (a card, each month)"),
            ("churn rate", f"{self.churn_rate} (a subscription, each month)"),
            ("upgrade rate", f"{self.upgrade_rate} (a subscription, each month)"),
            ("downgrade rate", f"{self.downgrade_rate} (a subscription, each month)"),
        ]

    @property
    def end(self) -> datetime:
        return _add_months(START, self.months)


def _integer(name: str, value: object, low: int, high: int) -> int:
    if isinstance(value, bool):
        raise OptionError(f"{name}: must be a whole number (got {value!r})")
    if isinstance(value, str):
        try:
            value = int(value.strip().replace("_", ""))
        except ValueError:
            raise OptionError(f"{name}: must be a whole number (got {value!r})") from None
    if not isinstance(value, int):
        raise OptionError(f"{name}: must be a whole number (got {value!r})")
    if not low <= value <= high:
        raise OptionError(f"{name}: must be between {low:,} and {high:,} (got {value:,})")
    return value


def _rate(name: str, value: object) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, str | int | float | Decimal):
        raise OptionError(f"{name}: must be a number between 0 and 1 (got {value!r})")
    try:
        rate = Decimal(str(value).strip())
    except InvalidOperation:
        raise OptionError(f"{name}: must be a number between 0 and 1 (got {value!r})") from None
    if not rate.is_finite() or not 0 <= rate <= 1:
        raise OptionError(f"{name}: must be a number between 0 and 1 (got {value!r})")
    return rate


def _mix(name: str, value: object) -> dict[str, int]:
    """``code=weight,...`` (or a mapping): weights of the catalog's plans, in catalog order."""
    pairs: list[tuple[str, object]]
    if isinstance(value, Mapping):
        pairs = [(str(code), weight) for code, weight in value.items()]
    elif isinstance(value, str):
        pairs = []
        for part in value.split(","):
            plan, sep, given = part.strip().partition("=")
            if not sep:
                raise OptionError(f"{name}: must look like code=weight,code=weight (got {part!r})")
            pairs.append((plan.strip(), given))
    else:
        raise OptionError(f"{name}: must map plan codes to weights (got {value!r})")
    weights: dict[str, int] = {}
    for code, weight in pairs:
        if code not in PLANS:
            known = ", ".join(PLANS)
            raise OptionError(f"{name}: unknown plan {code!r} (known: {known})")
        weights[code] = _integer(f"{name}: {code}", weight, 0, 1_000_000)
    if not any(weights.values()):
        raise OptionError(f"{name}: must give at least one plan a weight above 0")
    return {spec.code: weights[spec.code] for spec in CATALOG if weights.get(spec.code)}


def read_config(path: Path) -> dict[str, object]:
    """The settings of a YAML file: a mapping of setting names (``decline_rate`` or
    ``decline-rate``) to values. Raises :class:`OptionError`."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise OptionError(f"--config: {path}: {exc.strerror or exc}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f":{mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or "not valid YAML"
        raise OptionError(f"{path}{where}: {problem}") from None
    if data is None:
        return {}
    if not isinstance(data, Mapping):
        raise OptionError(f"{path}: must be a mapping of settings (such as 'months: 12')")
    return {str(key).replace("-", "_"): value for key, value in data.items()}


# -- the simulation -----------------------------------------------------------------------------


ProgressCallback = Callable[[str, int, int], None]
"""Called with a phase (``signing up``, ``billing``, ``auditing``, ``reporting``), the steps
done and the steps in all."""


@dataclass(slots=True)
class Figures:
    """What the run did and how long it took (not part of the report: it varies run to run)."""

    subscriptions: int = 0
    months: int = 0
    renewals: int = 0
    """Renewal invoices billed."""
    invoices: int = 0
    charges: int = 0
    """Payment attempts sent to the gateway."""
    operations: int = 0
    """Cancellations, plan changes and new cards made through the API."""
    refused: int = 0
    """Operations the engine refused (a subscription its dunning had canceled, say)."""
    failed: int = 0
    """Subscriptions whose billing raised (reported by ``run_due``); 0 in a sound run."""
    seconds: dict[str, float] = field(default_factory=dict)
    """Wall-clock seconds per phase: ``setup``, ``billing``, ``operations``, ``audit``,
    ``report``, and ``total`` (for a run in parts, each phase is its slowest part's)."""
    cpu_seconds: float = 0.0
    """Processor seconds, of every process the run took."""

    @classmethod
    def combined(cls, parts: Sequence[Figures]) -> Figures:
        """The figures of a simulation run in parts: counts summed, each phase's time the
        slowest part's, processor time summed."""
        first = parts[0]
        figures = cls(subscriptions=sum(p.subscriptions for p in parts), months=first.months)
        for name in ("renewals", "invoices", "charges", "operations", "refused", "failed"):
            setattr(figures, name, sum(getattr(p, name) for p in parts))
        figures.seconds = {phase: max(p.seconds[phase] for p in parts) for phase in first.seconds}
        figures.cpu_seconds = sum(p.cpu_seconds for p in parts)
        return figures

    def to_dict(self) -> dict[str, Any]:
        billing = self.seconds.get("billing", 0.0)
        total = self.seconds.get("total", 0.0)
        return {
            "subscriptions": self.subscriptions,
            "months": self.months,
            "renewals": self.renewals,
            "invoices": self.invoices,
            "charges": self.charges,
            "operations": self.operations,
            "refused": self.refused,
            "failed": self.failed,
            "seconds": {name: round(value, 3) for name, value in self.seconds.items()},
            "cpu_seconds": round(self.cpu_seconds, 3),
            "renewals_per_second_billing": round(self.renewals / billing, 1) if billing else None,
            "renewals_per_second_total": round(self.renewals / total, 1) if total else None,
        }


@dataclass(frozen=True, slots=True)
class Simulation:
    report: Report
    audit: AuditReport
    figures: Figures


@dataclass(slots=True)
class _Member:
    """A simulated customer and their one subscription, as the simulation knows them."""

    index: int
    plan: str
    start: datetime
    stopped: bool = False
    """Canceled (now or at the end of its period) by the simulation: no more operations."""
    card_dead: bool = False
    """Scripted to decline every charge until a new card."""

    @property
    def customer(self) -> str:
        return f"cus_{self.index:07d}"

    @property
    def subscription(self) -> str:
        return f"sub_{self.index:07d}"


@dataclass(frozen=True, slots=True)
class _Operation:
    kind: str
    """``cancel``, ``cancel_now``, ``upgrade`` or ``downgrade``."""
    member: _Member
    plan: str | None = None


def _add_months(instant: datetime, months: int) -> datetime:
    total = instant.month - 1 + months
    return instant.replace(year=instant.year + total // 12, month=total % 12 + 1)


def exchange_rates(months: int) -> TableExchangeRates:
    """A daily UF series covering the simulation (it climbs a little every day)."""
    first = START.date() - timedelta(days=10)
    days = (_add_months(START, months).date() - first).days + 60
    return TableExchangeRates(
        ExchangeRate.of(first + timedelta(days=n), "CLF", "CLP", _uf(n)) for n in range(days)
    )


def _uf(day: int) -> Decimal:
    return Decimal("39000.00") + Decimal(day) * Decimal("3.17")


def _plan(spec: PlanSpec) -> Plan:
    return Plan.of(
        code=spec.code,
        name=spec.name,
        price=spec.price,
        currency=spec.currency,
        interval=spec.interval,
        retry=_RETRY[spec.family],
        charge_currency=spec.charge_currency,
    )


def _neighbour(code: str, step: int) -> str | None:
    """The plan one tier up (``step`` 1) or down (-1) in ``code``'s family, if any."""
    spec = PLANS[code]
    for other in CATALOG:
        if other.family == spec.family and other.tier == spec.tier + step:
            return other.code
    return None


class _Run:
    """One simulation on an open engine."""

    def __init__(
        self,
        config: SimulationConfig,
        engine: Engine,
        clock: ManualClock,
        fake: FakeGateway,
        progress: ProgressCallback,
        indices: range,
    ) -> None:
        self.config = config
        self.engine = engine
        self.clock = clock
        self.fake = fake
        self.progress = progress
        self.indices = indices
        """The customers this run simulates (1 to ``subscriptions``, or a part of them)."""
        self._random = random.Random()
        self.members: list[_Member] = []
        self.figures = Figures(subscriptions=len(indices), months=config.months)
        self.seconds = {"setup": 0.0, "billing": 0.0, "operations": 0.0}
        self.operations: dict[datetime, list[_Operation]] = {}
        """The cancellations and plan changes drawn, by the instant they are made at."""
        self.episodes = [behaviors for _, _, behaviors in EPISODES]
        self.episode_weights = [weight for _, weight, _ in EPISODES]

    @contextmanager
    def _timed(self, phase: str) -> Iterator[None]:
        began = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[phase] += time.perf_counter() - began

    def _draws(self, member: int, what: str) -> random.Random:
        """The random draws of one customer for one purpose (``sign-up``, ``3`` for the fourth
        month, ``3:card``): seeded by the seed, the customer and the purpose alone, so a
        customer's history is the same whichever part of the customers a run simulates."""
        self._random.seed(f"{self.config.seed}:{member}:{what}")
        return self._random

    def sign_up(self) -> None:
        """Create the plans, then every customer, card and subscription through the API."""
        config = self.config
        codes = list(config.plans)
        weights = [config.plans[code] for code in codes]
        first_month = (_add_months(START, 1) - START).total_seconds()
        with self._timed("setup"):
            for spec in CATALOG:
                self.engine.create_plan(_plan(spec))
            for index in self.indices:
                draw = self._draws(index, "sign-up")
                plan = draw.choices(codes, weights)[0]
                offset = draw.randrange(60, int(first_month))
                self.members.append(_Member(index, plan, START + timedelta(seconds=offset)))
            self._start_month(0)
            for first in range(0, len(self.members), SIGN_UPS_AT_ONCE):
                chunk = self.members[first : first + SIGN_UPS_AT_ONCE]
                self.engine.sign_up_many([self._sign_up(member) for member in chunk])
                self.progress("signing up", first + len(chunk), len(self.members))

    def _sign_up(self, member: _Member) -> SignUp:
        zone, tax = _COUNTRY[PLANS[member.plan].currency]
        return SignUp(
            customer_id=member.customer,
            timezone=zone,
            metadata={"name": f"Customer {member.index}"},
            gateway=self.fake.name,
            token=f"tok_{member.index}",
            plan=member.plan,
            subscription_id=member.subscription,
            start=member.start,
            tax=tax,
        )

    def _start_month(self, month: int) -> None:
        """Script this month's failing cards, and draw the month's cancellations and plan
        changes (into :attr:`operations`), each on a day of the month, for the subscriptions
        started by then."""
        config = self.config
        decline = float(config.decline_rate)
        began = _add_months(START, month)
        days = (_add_months(began, 1) - began).days
        churn, up, down = (
            float(config.churn_rate),
            float(config.upgrade_rate),
            float(config.downgrade_rate),
        )
        for member in self.members:
            if member.card_dead and member.stopped:
                continue
            draw = self._draws(member.index, str(month))
            if not member.card_dead and draw.random() < decline:
                episode = draw.choices(self.episodes, self.episode_weights)[0]
                self.fake.script(member.customer, list(episode))
                member.card_dead = episode[-1] is not Behavior.APPROVE
            if member.stopped:
                continue
            roll = draw.random()
            if roll < churn:
                kind = "cancel_now" if draw.random() < CANCEL_NOW_SHARE else "cancel"
                plan = None
            elif roll < churn + up:
                kind, plan = "upgrade", _neighbour(member.plan, 1)
            elif roll < churn + up + down:
                kind, plan = "downgrade", _neighbour(member.plan, -1)
            else:
                continue
            at = began + timedelta(days=draw.randrange(1, days))
            if kind in ("upgrade", "downgrade") and plan is None:
                continue  # already on the family's top (or bottom) plan
            if member.start >= at:
                continue  # not started yet
            self.operations.setdefault(at, []).append(_Operation(kind, member, plan))

    def _new_cards(self, month: int) -> None:
        """Customers whose subscription went unpaid give a new card, with some luck."""
        subscriptions = metadata.tables["subscriptions"]
        query = (
            select(subscriptions.c.id)
            .where(subscriptions.c.status == "unpaid")
            .order_by(subscriptions.c.id)
        )
        with self.engine.store.engine.connect() as connection:
            unpaid = set(connection.execute(query).scalars())
        for member in self.members:
            if member.subscription not in unpaid:
                continue
            if self._draws(member.index, f"{month}:card").random() >= CARD_UPDATE_RATE:
                continue
            self.fake.script(member.customer, Behavior.APPROVE)
            member.card_dead = False
            self._operate(partial(self._new_card, member))

    def _new_card(self, member: _Member) -> None:
        self.engine.replace_payment_method(
            member.customer, gateway=self.fake.name, token=f"tok_{member.index}_new"
        )

    def _operate(self, call: Callable[[], object]) -> bool:
        try:
            call()
        except BillingError:
            self.figures.refused += 1
            return False
        self.figures.operations += 1
        return True

    def _apply(self, operation: _Operation) -> None:
        member = operation.member
        if member.stopped:
            return
        if operation.kind in ("cancel", "cancel_now"):
            at_end = operation.kind == "cancel"
            self._operate(lambda: self.engine.cancel(member.subscription, at_period_end=at_end))
            member.stopped = True  # or it was already stopped by its dunning
            return
        assert operation.plan is not None
        plan = operation.plan
        if self._operate(lambda: self.engine.change_plan(member.subscription, plan)):
            member.plan = plan

    def bill(self) -> None:
        """Move the clock a day at a time to the end, billing and operating on the way."""
        end = self.config.end
        days = (end - START).days
        month = 0
        for day in range(1, days + 1):
            now = START + timedelta(days=day)
            self.clock.set(now)
            with self._timed("billing"):
                report = self.engine.run_due()
            self.figures.failed += len(report.failed)
            if now < end and now == _add_months(START, month + 1):
                month += 1
                with self._timed("operations"):
                    self._new_cards(month)
                    self._start_month(month)
            with self._timed("operations"):
                for operation in self.operations.pop(now, []):
                    self._apply(operation)
            self.progress("billing", day, days)

    def count(self) -> None:
        invoices, payments = metadata.tables["invoices"], metadata.tables["payments"]
        with self.engine.store.engine.connect() as connection:
            self.figures.renewals = int(
                connection.execute(
                    select(func.count()).select_from(invoices).where(invoices.c.reason == "renewal")
                ).scalar_one()
            )
            self.figures.invoices = int(
                connection.execute(select(func.count()).select_from(invoices)).scalar_one()
            )
            self.figures.charges = int(
                connection.execute(select(func.count()).select_from(payments)).scalar_one()
            )


def simulate(
    config: SimulationConfig,
    *,
    database_url: str | Sequence[str],
    progress: ProgressCallback | None = None,
    title: str | None = None,
    durable: bool = True,
) -> Simulation:
    """Run ``config`` on fresh databases; see the module docstring.

    ``durable=False`` writes SQLite files as scratch (:attr:`billing.config.Settings.durable`):
    about a quarter faster, for files nothing else reads while the simulation runs.

    With one database URL the simulation runs in this process. With several, the customers are
    split into as many parts, in order, and each part is simulated in a process of its own on
    its own database; the audits are combined and the report is built over all the databases.
    A customer's random draws depend on the seed and the customer alone, and customers do not
    share anything the report counts, so the report is the same however many parts run it.

    Raises :class:`DatabaseInUse` if a database already holds customers, and lets the engine's
    :class:`~billing.domain.errors.BillingError` through (a database that cannot be opened);
    a part run in another process that fails so raises :class:`PartFailed` with its message.
    """
    urls = [database_url] if isinstance(database_url, str) else list(database_url)
    if not urls:
        raise ValueError("simulate needs at least one database URL")
    began, cpu = time.perf_counter(), time.process_time()
    say = progress or (lambda *_: None)
    parts = _split(config.subscriptions, len(urls))
    with _quiet():
        if len(urls) == 1:
            with _simulated(config, urls[0], parts[0], say, durable) as (engine, part):
                done, audit = [part], part.audit
                reporting = time.perf_counter()
                report = _report(config, [engine], audit, title, say)
        else:
            done = _in_processes(config, urls, parts, say, durable)
            audit = AuditReport.combined(part.audit for part in done)
            reporting = time.perf_counter()
            with ExitStack() as stack:
                engines = [stack.enter_context(_reopened(url)) for url in urls]
                report = _report(config, engines, audit, title, say)
    finished = time.perf_counter()
    figures = Figures.combined([part.figures for part in done])
    figures.seconds.update(report=finished - reporting, total=finished - began)
    own = time.process_time() - cpu
    figures.cpu_seconds = own if len(urls) == 1 else own + figures.cpu_seconds
    return Simulation(report=report, audit=audit, figures=figures)


@dataclass(frozen=True, slots=True)
class _Part:
    """What the simulation of one part of the customers hands back."""

    figures: Figures
    audit: AuditReport


def _split(subscriptions: int, parts: int) -> list[range]:
    """The customers' numbers (1 to ``subscriptions``) in ``parts`` runs of about one size."""
    return [
        range(1 + subscriptions * part // parts, 1 + subscriptions * (part + 1) // parts)
        for part in range(parts)
    ]


@contextmanager
def _simulated(
    config: SimulationConfig, url: str, indices: range, say: ProgressCallback, durable: bool
) -> Iterator[tuple[Engine, _Part]]:
    """Simulate the customers ``indices`` on a fresh engine at ``url`` and audit it; yields the
    engine (still open, for the report) and what the part did."""
    cpu = time.process_time()
    clock = ManualClock(START)
    fake = FakeGateway()
    engine = open_engine(
        url,
        clock=clock,
        gateways=[fake],
        rates=exchange_rates(config.months),
        settings=Settings(database_url=url, threads=1, durable=durable),
        migrate=True,
    )
    with engine:
        _require_empty(engine)
        run = _Run(config, engine, clock, fake, say, indices)
        run.sign_up()
        run.bill()
        run.count()
        audited = time.perf_counter()
        say("auditing", 0, 1)
        audit = engine.audit()
        say("auditing", 1, 1)
        run.figures.seconds = {**run.seconds, "audit": time.perf_counter() - audited}
        run.figures.cpu_seconds = time.process_time() - cpu
        yield engine, _Part(run.figures, audit)


def _report(
    config: SimulationConfig,
    engines: Sequence[Engine],
    audit: AuditReport,
    title: str | None,
    say: ProgressCallback,
) -> Report:
    say("reporting", 0, 1)
    report = build_report(
        engines,
        start=START,
        end=config.end,
        title=title or default_title(config),
        audit=audit,
        parameters=config.describe(),
    )
    say("reporting", 1, 1)
    return report


@contextmanager
def _reopened(url: str) -> Iterator[Engine]:
    """An engine on a part's database, to read it."""
    settings = Settings(database_url=url, threads=1)
    with open_engine(url, gateways=[], settings=settings) as engine:
        yield engine


class PartFailed(Exception):
    """A part of a simulation, run in another process, failed as a user error would: its
    message, and the exit code ``billing simulate`` gives that error."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def _in_processes(
    config: SimulationConfig,
    urls: Sequence[str],
    parts: Sequence[range],
    say: ProgressCallback,
    durable: bool,
) -> list[_Part]:
    """Simulate each part in a process of its own (started fresh: ``spawn``), passing their
    progress on: the customers signed up, summed; for the other phases, the slowest part's."""
    import multiprocessing  # only here: most runs are one part, in this process

    context = multiprocessing.get_context("spawn")
    messages = context.Queue()
    processes = [
        context.Process(
            target=_part_main,
            args=(config, url, indices, number, messages, durable),
            name=f"billing-simulate-{number + 1}",
            daemon=True,
        )
        for number, (url, indices) in enumerate(zip(urls, parts, strict=True))
    ]
    results: dict[int, _Part] = {}
    progress: dict[str, list[tuple[int, int]]] = {}
    try:
        for process in processes:
            process.start()
        while len(results) < len(processes):
            try:
                kind, number, *rest = messages.get(timeout=0.5)
            except queue.Empty:
                kind = None
            if kind == "done":
                results[number] = rest[0]
            elif kind == "failed":
                raise PartFailed(*rest)
            elif kind == "progress":
                phase, done, total = rest
                known = progress.setdefault(phase, [(0, total)] * len(processes))
                known[number] = (done, total)
                if phase == "signing up":
                    say(phase, sum(d for d, _ in known), sum(t for _, t in known))
                else:
                    say(phase, min(d for d, _ in known), total)
            _require_alive(processes, results)  # the others' progress must not hide a death
    finally:
        for process in processes:
            if process.is_alive():
                process.terminate()
            process.join()
    return [results[number] for number in range(len(processes))]


def _require_alive(processes: Sequence[BaseProcess], results: Mapping[int, _Part]) -> None:
    """Raise :class:`PartFailed` if a part's process ended without handing its part back."""
    for number, process in enumerate(processes):
        if number not in results and process.exitcode not in (None, 0):
            raise PartFailed(  # killed (out of memory, say), or crashed
                f"a part of the simulation (process {process.name}) ended with exit code "
                f"{process.exitcode} before it was done; the others were stopped (an error it "
                "printed is above)",
                EXIT_BILLING,
            )


def _part_main(
    config: SimulationConfig,
    url: str,
    indices: range,
    number: int,
    messages: Queue[tuple[Any, ...]],
    durable: bool,
) -> None:
    """A part's process: simulate, then send the part back (or the error that stopped it).
    Interrupts are the parent's to handle: it stops every part."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)

    def say(phase: str, done: int, total: int) -> None:
        messages.put(("progress", number, phase, done, total))

    try:
        with _quiet(), _simulated(config, url, indices, say, durable) as (_, part):
            pass
    except (BillingError, DatabaseInUse) as exc:
        messages.put(("failed", number, str(exc), _exit_code(exc)))
        return
    messages.put(("done", number, part))


def default_title(config: SimulationConfig) -> str:
    return (
        f"Simulation: {config.subscriptions:,} subscriptions, {config.months} months, "
        f"seed {config.seed}"
    )


def _require_empty(engine: Engine) -> None:
    customers = metadata.tables["customers"]
    with engine.store.engine.connect() as connection:
        held = int(connection.execute(select(func.count()).select_from(customers)).scalar_one())
    if held:
        raise DatabaseInUse(
            f"--database-url: must be an empty database (it holds {held} customers)"
        )


@contextmanager
def _quiet() -> Iterator[None]:
    """The engine's routine warnings (a refused operation logs one) stay out of the output."""
    logger = logging.getLogger("billing")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


# -- the command ----------------------------------------------------------------------------------

CONTEXT_SETTINGS: dict[str, Any] = {"ignore_unknown_options": True, "allow_extra_args": True}
"""The command reads unknown options itself, to refuse them in one line."""

_FLAGS = {
    "subscriptions": "--subscriptions",
    "months": "--months",
    "seed": "--seed",
    "plans": "--plans",
    "decline_rate": "--decline-rate",
    "churn_rate": "--churn-rate",
    "upgrade_rate": "--upgrade-rate",
    "downgrade_rate": "--downgrade-rate",
}
DATABASE_FILE = "simulation.db"
CUSTOMERS_PER_JOB = 500
"""By default, a process simulates at least this many customers."""
MAX_JOBS = 64
EXIT_UNBALANCED = 1
"""The audit found a broken money rule (the findings are printed, one a line)."""
EXIT_USAGE = 2
"""A bad option, configuration file or report folder."""
EXIT_DATABASE = 3
"""The database cannot be used (unreachable, not migratable, already holding customers)."""
EXIT_BILLING = 4
"""The engine refused a step of the simulation."""


def _error(message: str) -> None:
    Console(stderr=True, soft_wrap=True).print(f"[red]error:[/red] {escape(message)}")


def register(app: typer.Typer) -> None:
    """Add the ``simulate`` command to ``app`` (the ``billing`` command)."""
    app.command("simulate", context_settings=CONTEXT_SETTINGS)(command)


def command(
    ctx: typer.Context,
    subscriptions: Annotated[
        str | None,
        typer.Option(
            metavar="N", help="Customers, each with one subscription.", show_default="1000"
        ),
    ] = None,
    months: Annotated[
        str | None,
        typer.Option(metavar="M", help="UTC months to bill, from January 2026.", show_default="12"),
    ] = None,
    seed: Annotated[
        str | None,
        typer.Option(
            metavar="S", help="The random seed: the same seed, the same report.", show_default="0"
        ),
    ] = None,
    plans: Annotated[
        str | None,
        typer.Option(
            metavar="CODE=WEIGHT,...",
            help="The plan mix: each plan's weight.",
            show_default=",".join(f"{c}={w}" for c, w in DEFAULT_MIX.items()),
        ),
    ] = None,
    decline_rate: Annotated[
        str | None,
        typer.Option(
            metavar="R",
            help="Each month, the chance that a customer's card starts declining.",
            show_default="0.05",
        ),
    ] = None,
    churn_rate: Annotated[
        str | None,
        typer.Option(
            metavar="R",
            help="Each month, the chance that a subscription is canceled.",
            show_default="0.02",
        ),
    ] = None,
    upgrade_rate: Annotated[
        str | None,
        typer.Option(
            metavar="R",
            help="Each month, the chance that a subscription moves a tier up.",
            show_default="0.02",
        ),
    ] = None,
    downgrade_rate: Annotated[
        str | None,
        typer.Option(
            metavar="R",
            help="Each month, the chance that a subscription moves a tier down.",
            show_default="0.01",
        ),
    ] = None,
    config: Annotated[
        Path | None,
        typer.Option(
            "--config", metavar="FILE", help="A YAML file of these settings; flags override it."
        ),
    ] = None,
    database_url: Annotated[
        str | None,
        typer.Option(
            "--database-url",
            metavar="URL",
            help="An empty database to run on.",
            show_default=f"a fresh SQLite file, {DATABASE_FILE}, in the report folder",
        ),
    ] = None,
    report_dir: Annotated[
        Path,
        typer.Option(
            "--report-dir", metavar="DIR", help="Where to write the charts and index.html."
        ),
    ] = Path("billing-report"),
    jobs: Annotated[
        str | None,
        typer.Option(
            "--jobs",
            "-j",
            metavar="J",
            help=(
                "Processes to simulate in, each on its share of the customers and its own "
                "SQLite file in the report folder; the report is the same for any number."
            ),
            show_default="the CPUs, at most one per 500 customers; 1 with --database-url",
        ),
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print one JSON document; no tables, no progress.")
    ] = False,
) -> None:
    """Simulate months of subscriptions on the real engine and a test clock, then report.

    Checks every money rule at the end (exit 1 if one is broken), prints revenue and MRR by
    month, invoices by status, dunning recovery, churn and what is outstanding, and writes
    PNG charts and index.html to the report folder. See docs/simulate.md.
    """
    if ctx.args:
        _error(f"{ctx.args[0]}: no such option (see billing simulate --help)")
        raise typer.Exit(code=EXIT_USAGE)
    flags = {
        "subscriptions": subscriptions,
        "months": months,
        "seed": seed,
        "plans": plans,
        "decline_rate": decline_rate,
        "churn_rate": churn_rate,
        "upgrade_rate": upgrade_rate,
        "downgrade_rate": downgrade_rate,
    }
    try:
        settings = SimulationConfig()
        if config is not None:
            settings = settings.merged(read_config(config), lambda key: f"{config}: {key}")
        settings = settings.merged(flags, lambda key: _FLAGS.get(key, key))
        parts = _jobs(jobs, settings, database_url)
        _make(report_dir)
        urls = [database_url] if database_url else _fresh_databases(report_dir, parts)
    except OptionError as exc:
        _error(str(exc))
        raise typer.Exit(code=EXIT_USAGE) from None
    err = Console(stderr=True)
    bar = _progress_bar(err) if not as_json else None
    try:
        with bar or nullcontext():
            # files it made itself are scratch; a database the user gave is kept durable
            result = simulate(
                settings,
                database_url=urls,
                progress=_reporter(bar),
                durable=database_url is not None,
            )
        page = write_report(result.report, report_dir)
    except PartFailed as exc:
        _error(str(exc))
        raise typer.Exit(code=exc.exit_code) from None
    except (OptionError, DatabaseInUse, BillingError) as exc:
        _error(str(exc))
        raise typer.Exit(code=_exit_code(exc)) from None
    except OSError as exc:
        _error(f"--report-dir: {report_dir}: {exc.strerror or exc}")
        raise typer.Exit(code=EXIT_USAGE) from None
    if as_json:
        document = {
            "report": result.report.to_dict(),
            "run": result.figures.to_dict(),
            "report_path": str(page),
            "database_urls": urls,
        }
        typer.echo(json.dumps(document, indent=2, ensure_ascii=False))
    else:
        console = Console()
        print_report(result.report, console)
        console.print(f"Report written to {escape(str(page))}")
        console.print(_run_table(result.figures))
    if not result.audit.balanced:
        for finding in result.audit.findings:
            _error(f"audit: {finding}")
        raise typer.Exit(code=EXIT_UNBALANCED)


def _make(folder: Path) -> None:
    """Create the report folder now, so that a folder that cannot be is said before the run."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OptionError(f"--report-dir: {folder}: {exc.strerror or exc}") from None
    if not os.access(folder, os.W_OK):
        raise OptionError(f"--report-dir: {folder}: cannot write there")


def _exit_code(exc: Exception) -> int:
    """The exit code of a run stopped by ``exc``."""
    if isinstance(exc, OptionError):
        return EXIT_USAGE
    if isinstance(exc, DatabaseInUse | SchemaNotReady | CurrencyExponentChanged | StorageError):
        return EXIT_DATABASE
    if isinstance(exc, InvalidArgument):  # a database URL the engine cannot use
        return EXIT_USAGE
    return EXIT_BILLING


def _jobs(given: str | None, config: SimulationConfig, database_url: str | None) -> int:
    """The processes to simulate in: ``--jobs``, or by default one per CPU this process may
    use, at most one per :data:`CUSTOMERS_PER_JOB` customers (a process takes about a second
    to start); 1 on a database given by URL."""
    if given is None:
        if database_url:
            return 1
        cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
        return max(1, min(cpus or 1, config.subscriptions // CUSTOMERS_PER_JOB))
    jobs = _integer("--jobs", given, 1, MAX_JOBS)
    if jobs > 1 and database_url:
        raise OptionError(
            "--jobs: must be 1 with --database-url (a simulation in several processes runs "
            "each on a SQLite file of its own in the report folder)"
        )
    return min(jobs, config.subscriptions)


def _fresh_databases(folder: Path, parts: int) -> list[str]:
    """The default databases in the report folder, emptied first: ``simulation.db``, or
    ``simulation-1.db`` and on for a run in parts. Those of an earlier run go too."""
    stem = Path(DATABASE_FILE).stem
    names = [DATABASE_FILE] if parts == 1 else [f"{stem}-{n}.db" for n in range(1, parts + 1)]
    try:
        for old in [folder / DATABASE_FILE, *folder.glob(f"{stem}-[0-9]*.db")]:
            for suffix in ("", "-wal", "-shm", "-journal"):
                old.with_name(old.name + suffix).unlink(missing_ok=True)
    except OSError as exc:
        raise OptionError(f"--report-dir: {folder}: {exc.strerror or exc}") from None
    return [f"sqlite:///{(folder / name).resolve()}" for name in names]


def _progress_bar(console: Console) -> Progress:
    return Progress(
        TextColumn("{task.description:<11}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    )


def _reporter(bar: Progress | None) -> ProgressCallback | None:
    if bar is None:
        return None
    tasks: dict[str, Any] = {}

    def report(phase: str, done: int, total: int) -> None:
        if phase not in tasks:
            tasks[phase] = bar.add_task(phase, total=total)
        bar.update(tasks[phase], completed=done, total=total)

    return report


def _run_table(figures: Figures) -> Table:
    data = figures.to_dict()
    seconds = data["seconds"]
    table = Table(
        title="Run (wall-clock seconds: they vary from run to run)",
        title_justify="left",
        title_style="bold",
        box=box.SIMPLE_HEAD,
    )
    table.add_column("figure")
    table.add_column("value", justify="right")
    rows: Sequence[tuple[str, str]] = (
        ("subscriptions x months", f"{figures.subscriptions:,} x {figures.months}"),
        ("renewals billed", f"{figures.renewals:,}"),
        ("invoices / charges", f"{figures.invoices:,} / {figures.charges:,}"),
        ("API operations (refused)", f"{figures.operations:,} ({figures.refused:,})"),
        ("sign-ups (sign_up_many)", f"{seconds['setup']:.1f} s"),
        ("billing runs (run_due)", f"{seconds['billing']:.1f} s"),
        ("cancellations, plan changes, cards", f"{seconds['operations']:.1f} s"),
        ("audit", f"{seconds['audit']:.1f} s"),
        ("report", f"{seconds['report']:.1f} s"),
        ("total", f"{seconds['total']:.1f} s ({figures.cpu_seconds:.1f} s CPU)"),
        ("renewals/s in billing runs", str(data["renewals_per_second_billing"] or "-")),
        ("renewals/s overall", str(data["renewals_per_second_total"] or "-")),
    )
    for name, value in rows:
        table.add_row(name, value)
    return table
