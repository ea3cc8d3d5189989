"""A stateful simulation of a customer base over the real engine, checking the books every step.

:class:`BillingMachine` is a hypothesis ``RuleBasedStateMachine``, and public API: run it as is,
configure it (:meth:`BillingMachine.configure`), or subclass it with your own plans, gateway,
settings, rules and invariants (docs/simulations.md). It opens a real engine (an in-memory
SQLite database unless configured with another), with a gateway (the scriptable in-process
:class:`~billing.testing.FakeGateway` unless configured with a gateway simulation, see
:mod:`billing.testing.simulation`) and a test clock, and applies random operations: customers
with cards that approve, decline softly or hardly, lose answers, pay late, never pay, or send the
customer a link that is paid or expires; subscriptions with and without trials, with cycle
counts, on UF plans and with taxes of every kind; plan changes both ways with every proration
option; pauses, resumes and cancellations (now and at period end); credit; refunds (whole and
partial, with lost answers); new payment methods; time passing through every due instant; and
reconciliation.

After every step it checks, from the database (:meth:`billing.Engine.audit`) and from the
gateway's own books, that every peso is accounted for: conservation per customer and currency,
credit that matches its grants and never comes from unpaid time, no debt left on a stopped
subscription, no open invoice that nothing collects, periods invoiced once each and never empty,
events in time order, and that what the gateway took equals what the engine recorded. Every call
the engine refuses must leave every table exactly as it was.

Every history is recorded as a scenario file (:class:`~billing.testing.recorder.
ScenarioRecorder`). When one fails, hypothesis shrinks it, and the machine prints the shrunk
history as a scenario file with the failure (and writes it to :attr:`BillingMachine.
failure_file` when set), so ``billing scenario run failure.yaml`` replays it.

Run it in your own tests::

    from billing.testing.machine import BillingMachine

    TestBilling = BillingMachine.TestCase
    TestOnPostgres = BillingMachine.configure(database_url="postgresql://...").TestCase

It needs ``hypothesis`` (``pip install billing[testing]``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any, ClassVar, TypeVar, cast

from hypothesis import event, note, target
from hypothesis import strategies as st
from hypothesis.control import current_build_context
from hypothesis.errors import InvalidArgument as HypothesisInvalidArgument
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    initialize,
    invariant,
    multiple,
    precondition,
    rule,
)
from sqlalchemy import func, inspect, select, text
from sqlmodel import col

from billing.bootstrap import open_engine
from billing.clock import ManualClock
from billing.config import Settings
from billing.domain import _checks
from billing.domain.catalog import Plan
from billing.domain.dunning import RetryPolicy
from billing.domain.errors import (
    AlreadyExists,
    BillingError,
    ConcurrentUpdate,
    InvalidArgument,
    StorageError,
)
from billing.domain.exchange import ExchangeRate, TableExchangeRates
from billing.domain.invoices import Invoice, InvoiceStatus, LineKind
from billing.domain.money import Money
from billing.domain.payments import PaymentAttempt, PaymentStatus, RefundStatus
from billing.domain.periods import IntervalUnit
from billing.domain.proration import ProrationBehavior
from billing.domain.subscriptions import SubscriptionStatus
from billing.domain.taxes import TaxRate
from billing.engine import Engine
from billing.ports import Capability, PaymentGateway
from billing.store.database import connect
from billing.store.tables import EventRow, InvoiceRow, RefundRow, metadata
from billing.testing.fake_gateway import Behavior, FakeGateway
from billing.testing.recorder import REPLAY_COMMAND, ScenarioRecorder, observed
from billing.testing.simulation import (
    FakeSimulation,
    GatewaySimulation,
    LinkSimulation,
    link_simulation,
    names,
    simulation,
)

__all__ = ["BillingMachine", "empty_database"]

T = TypeVar("T")

FAMILIES: dict[str, tuple[tuple[str, str, str, str], ...]] = {
    "monthly": (
        ("bronce", "5000", "CLP", "month"),
        ("oro", "15000", "CLP", "month"),
        ("platino", "50000", "CLP", "month"),
    ),
    "uf": (("uf_basico", "0.5", "CLF", "month"), ("uf_pro", "1.2", "CLF", "month")),
    "daily": (("diario", "990", "CLP", "day"), ("diario_plus", "1990", "CLP", "day")),
}
"""The default catalog, by family: a plan changes only within its family (same interval and
currency). Prices in ``CLP`` are in the gateway's currency when it charges another."""
STARTS = (
    datetime(2026, 1, 31, 15, 0, tzinfo=UTC),  # a month-end anchor
    datetime(2026, 3, 30, 23, 30, tzinfo=UTC),  # Chile leaves DST on Apr 5
    datetime(2011, 12, 28, 20, 0, tzinfo=UTC),  # Samoa skips Dec 30, 2011
)
"""The default instants a history starts at. The 2011 one runs daily plans for customers in
Samoa, around the day it skipped."""
TIMEZONES = ("America/Santiago", "America/Mexico_City", "America/Bogota", "Pacific/Apia", "UTC")
"""The default customers' timezones."""
CARDS = (Behavior.APPROVE, Behavior.DECLINE_SOFT, *Behavior)
"""The default card behaviors: every one, approvals and soft declines twice as often."""
WAITING = (
    Behavior.PAY_LATE,
    Behavior.NEVER_PAY,
    Behavior.PAY_BY_LINK,
    Behavior.LINK_EXPIRES,
    Behavior.TIMEOUT,
)
"""Cards whose charges are not settled at once."""
STEPS = (
    timedelta(minutes=2),
    timedelta(hours=7),
    timedelta(days=1),
    timedelta(days=3),
    timedelta(days=9),
    timedelta(days=32),
)

LATE_FOUND_WITHIN = timedelta(days=1, hours=1)
"""A late payment of an expired link whose notification was lost is found by reconciliation
within this (its questions are at most a day apart)."""
LATER = (None, None, timedelta(hours=1), timedelta(days=2), timedelta(days=12))
"""How long after the previous step an operation comes (often at once)."""
SIGN_UP = timedelta(seconds=1)
"""How long a customer takes to subscribe after the previous operation: a subscription starts
strictly after everything before it, as it does in a scenario file (which bills the work due at
an instant before that instant's events)."""
_FINAL = (SubscriptionStatus.CANCELED, SubscriptionStatus.ENDED)
_UNPAID = (InvoiceStatus.OPEN, InvoiceStatus.UNCOLLECTIBLE)
_RUNNING = (SubscriptionStatus.ACTIVE, SubscriptionStatus.PAST_DUE, SubscriptionStatus.UNPAID)
_UNSETTLED = (
    PaymentStatus.CREATED,
    PaymentStatus.PENDING,
    PaymentStatus.REQUIRES_ACTION,
    PaymentStatus.UNKNOWN,
)
_RETURN_URL = "https://machine.invalid/cards/return"
_DELIVERY_ROUNDS = 20
_REPLAY_NEUTRAL = frozenset(
    {"database_url", "durable", "proration", "threads", "tick_seconds", "dispatch_seconds"}
)
"""Settings a scenario's replay need not share with the history: the file carries the proration
at its top level, and the others change how the work is done, not what is billed (a replay runs
one thread, as a history does). Every other setting that differs from the default is written in
the failure's file (its ``settings``): the batch size too, which orders the events of an
instant."""
_FAKE_PENDING_FOR = timedelta(days=2)
"""How long the fake gateway's waiting charges wait in a scenario file's replay."""

taxes = st.none() | st.builds(
    TaxRate.of,
    st.just("IVA"),
    st.sampled_from(["16", "19", "19.5"]),
    inclusive=st.booleans(),
    rounding=st.sampled_from(["per_invoice", "per_line"]),
    mode=st.sampled_from(["half_up", "half_even", "down", "up"]),
)
afterwards = st.sampled_from(["unpaid", "canceled", "past_due"])
policies = st.builds(
    RetryPolicy.of,
    st.lists(st.sampled_from([1, 3, 8, 15]), min_size=0, max_size=3),  # may outlast a period
    then=afterwards,
)
short_policies = st.builds(
    RetryPolicy.of, st.lists(st.sampled_from([1, 2]), max_size=2), then=afterwards
)
"""For daily plans: dunning that outlasts several periods and still ends within a history."""


def _configured(name: str) -> st.SearchStrategy[Any]:
    """One of the running machine's configured choices (the class attribute ``name``)."""
    return st.runner().flatmap(lambda machine: st.sampled_from(getattr(machine, name)))


def _family(plan: Plan) -> tuple[str, int, str, str]:
    """Plans a subscription can change between: same interval and currencies."""
    return (
        plan.interval.unit.value,
        plan.interval.count,
        plan.price.currency.code,
        plan.billing_currency.code,
    )


def _final_run() -> bool:
    """Whether hypothesis is replaying the (shrunk) failing example to report it."""
    try:
        return bool(current_build_context().is_final)
    except HypothesisInvalidArgument:  # not inside a hypothesis test
        return False


def empty_database(url: str) -> None:
    """Empty every table of the billing database at ``url``, as a fresh migrated one is (a
    database not migrated yet is left alone: the engine migrates it). Each history of a
    :class:`BillingMachine` configured with a database starts this way: give it a database of
    its own."""
    engine = connect(url)
    try:
        with engine.begin() as connection:
            existing = set(inspect(connection).get_table_names())
            tables = [table for table in metadata.sorted_tables if table.name in existing]
            if not tables:
                return
            if connection.dialect.name == "postgresql":
                names_ = ", ".join(table.name for table in tables)
                connection.execute(text(f"TRUNCATE {names_} RESTART IDENTITY CASCADE"))
            else:
                for table in reversed(tables):
                    connection.execute(table.delete())
                if "sqlite_sequence" in existing:
                    connection.execute(text("DELETE FROM sqlite_sequence"))
            sequences = metadata.tables["sequences"]
            connection.execute(sequences.insert().values(name="invoice", value=0))
    finally:
        engine.dispose()


class BillingMachine(RuleBasedStateMachine):
    """Random histories over the real engine; see the module docstring and docs/simulations.md.

    **Configuration.** The class attributes below; set them in a subclass, or get a subclass
    with them set from :meth:`configure`. **Hooks** (override in a subclass):
    :meth:`database_url` and :meth:`release_database`, :meth:`plans`, :meth:`exchange_rates`,
    :meth:`engine_settings` and :meth:`gateway_simulation`. Add rules and invariants with
    hypothesis's own decorators (``@rule``, ``@invariant``, ``@precondition``); use
    :meth:`refused_or` to call the engine from a rule, and :attr:`recorder` to record what a new
    rule did in the failure's scenario file.
    """

    customers = Bundle("customers")

    # -- configuration -------------------------------------------------------------------------
    database: ClassVar[str | None] = None
    """``None``: each history on a fresh in-memory SQLite database. A URL (SQLite file or
    PostgreSQL): each history on that database, emptied first (:func:`empty_database`)."""
    gateway: ClassVar[str] = "fake"
    """``fake``: the in-process :class:`~billing.testing.FakeGateway`. Any other name: that
    gateway's simulation (:func:`billing.testing.simulation.simulation`: its real adapter on its
    fake server), e.g. ``qvo``, ``openpay``, ``khipu``, ``payvalida``."""
    loopback: ClassVar[bool] = False
    """For a simulation: talk to its fake server over HTTP on loopback (``True``), or in process
    without sockets (``False``, faster; the same adapter code)."""
    pending_for: ClassVar[timedelta] = _FAKE_PENDING_FOR
    """For the fake gateway: how long a waiting charge (``pay_late``, ``never_pay``,
    ``pay_by_link``, ``link_expires``) waits before it is paid or expires."""
    behaviors: ClassVar[tuple[Behavior, ...]] = CARDS
    """The card behaviors customers are drawn with (a repeated one is drawn more often). One the
    gateway's simulation cannot show is skipped when drawn."""
    timezones: ClassVar[tuple[str, ...]] = TIMEZONES
    """The customers' IANA timezones."""
    starts: ClassVar[tuple[datetime, ...]] = STARTS
    """The instants a history may start at."""
    catalog: ClassVar[tuple[Plan, ...] | None] = None
    """The plans (:meth:`plans` returns them); ``None``: the built-in families."""
    setting_overrides: ClassVar[Mapping[str, object]] = {}
    """Engine :class:`~billing.config.Settings` fields fixed for every history (the others are
    drawn: batch size, final debt, refunds and credit, proration)."""
    failure_file: ClassVar[str | None] = None
    """Also write the failing history's scenario file here (it is always printed)."""
    wrote_nothing_when_refused: ClassVar[bool] = True

    # -- state of one history -------------------------------------------------------------------
    engine: Engine
    clock: ManualClock
    sim: GatewaySimulation
    fake: FakeGateway | None = None
    """The in-process fake gateway, when the history runs on it (``gateway = "fake"``)."""
    link: LinkSimulation | None = None
    """The simulation, when its gateway collects through payment links."""
    recorder: ScenarioRecorder
    """The history so far, in scenario-file terms."""
    url: str
    start: datetime
    started: bool = False
    zone: str | None = None
    """Every customer's timezone, when the history is about one (Samoa's skipped day)."""
    richness: int = 0
    """How far a history got into the states where money got lost before (hypothesis aims high)."""
    risky: int = 0
    """Operations made on a subscription with an unpaid invoice, or refunds of credit."""

    # -- configuring ---------------------------------------------------------------------------
    @classmethod
    def configure(
        cls,
        *,
        name: str | None = None,
        database_url: str | None = None,
        plans: Sequence[Plan] | None = None,
        gateway: str | None = None,
        loopback: bool | None = None,
        pending_for: timedelta | None = None,
        behaviors: Sequence[Behavior | str] | None = None,
        timezones: Sequence[str] | None = None,
        starts: Sequence[datetime] | None = None,
        settings: Mapping[str, object] | None = None,
        failure_file: str | Path | None = None,
    ) -> type[BillingMachine]:
        """A subclass with the given configuration (the class attributes of the same names;
        ``plans`` sets :attr:`catalog`, ``settings`` :attr:`setting_overrides`); what is not
        given is inherited. Use its ``TestCase``, or run it with
        ``hypothesis.stateful.run_state_machine_as_test``.

        :raises InvalidArgument: naming the option and the rule it breaks.
        """
        attributes: dict[str, Any] = {}
        if database_url is not None:
            attributes["database"] = _checks.text("database_url", database_url)
        if plans is not None:
            attributes["catalog"] = _catalog(plans)
        if gateway is not None:
            if gateway not in names():
                known = ", ".join(names())
                raise InvalidArgument("gateway", f"must be a gateway with a simulation ({known})")
            attributes["gateway"] = gateway
        if loopback is not None:
            attributes["loopback"] = _checks.flag("loopback", loopback)
        if pending_for is not None:
            if not isinstance(pending_for, timedelta) or pending_for < timedelta(0):
                raise InvalidArgument("pending_for", "must be a timedelta >= 0", pending_for)
            attributes["pending_for"] = pending_for
        if behaviors is not None:
            chosen = tuple(_checks.member(Behavior, b, "behaviors") for b in behaviors)
            if not chosen:
                raise InvalidArgument("behaviors", "must name at least one behavior", behaviors)
            attributes["behaviors"] = chosen
        if timezones is not None:
            zones = tuple(timezones)
            for zone in zones:
                _checks.timezone(zone, "timezones")
            if not zones:
                raise InvalidArgument("timezones", "must name at least one timezone", timezones)
            attributes["timezones"] = zones
        if starts is not None:
            instants = tuple(_checks.aware("starts", start) for start in starts)
            if not instants:
                raise InvalidArgument("starts", "must hold at least one instant", starts)
            attributes["starts"] = instants
        if settings is not None:
            attributes["setting_overrides"] = _setting_overrides(settings)
        if failure_file is not None:
            attributes["failure_file"] = str(failure_file)
        configured = type(name or f"Configured{cls.__name__}", (cls,), attributes)
        return cast("type[BillingMachine]", configured)

    # -- hooks ---------------------------------------------------------------------------------
    def database_url(self) -> str:
        """A fresh, empty or migrated database for one history: in-memory SQLite, or
        :attr:`database` emptied (:func:`empty_database`)."""
        if self.database is None:
            return "sqlite://"
        empty_database(self.database)
        return self.database

    def release_database(self, url: str) -> None:
        """Give back the database of a history that ended (nothing to do by default)."""

    def plans(self) -> Sequence[Plan]:
        """The plans of one history (called once the clock is set: :attr:`start` is known).

        :attr:`catalog` when configured; otherwise the built-in families in the gateway's
        currency (monthly plans, and UF plans when it charges pesos; daily plans for the
        history in Samoa), with the retry policy drawn for the history. Subscriptions change
        plan only between plans of the same interval and currencies.
        """
        if self.catalog is not None:
            return self.catalog
        daily = self.start.year == 2011
        families = ("daily",) if daily else ("monthly", "uf")
        currency = self.sim.currency
        plans = []
        for family in families:
            for code, price, priced_in, interval in FAMILIES[family]:
                if priced_in == "CLF" and currency != "CLP":
                    continue  # UF plans are charged in pesos
                plans.append(
                    Plan.of(
                        code=code,
                        name=code.replace("_", " ").title(),
                        price=price,
                        currency=priced_in if priced_in == "CLF" else currency,
                        interval=interval,
                        retry=self.daily_retry if daily else self.retry,
                    )
                )
        return plans

    def exchange_rates(self) -> Sequence[ExchangeRate]:
        """The exchange rates of one history: by default a UF value for every day from a few
        days after the start (the start itself may have none yet, drawn), climbing a little
        every day, as the real one does."""
        rates_from = self.start.date() + timedelta(days=self.rates_after)
        return [
            ExchangeRate.of(rates_from + timedelta(days=n), "CLF", "CLP", _uf(n))
            for n in range(500)
        ]

    def engine_settings(self, drawn: Settings) -> Settings:
        """The engine's settings for one history: ``drawn`` (what hypothesis chose for the
        batch size, the final debt, refunds and credit, and proration, with
        :attr:`setting_overrides` applied). Override to change more."""
        return drawn

    def gateway_simulation(self) -> GatewaySimulation:
        """The gateway of one history, with its scripted customers: the fake gateway (waiting
        :attr:`pending_for`), or the simulation named by :attr:`gateway`, on this history's
        clock."""
        if self.gateway == "fake":
            return FakeSimulation(FakeGateway(pending_for=self.pending_for))
        return simulation(self.gateway, loopback=self.loopback, clock=self.clock.now)

    # -- setting up ---------------------------------------------------------------------------
    @initialize(
        target=customers,
        start=_configured("starts"),
        first=st.lists(
            st.tuples(_configured("timezones"), _configured("behaviors"), st.integers(0, 4)),
            min_size=3,
            max_size=3,
        ),
        rates_after=st.sampled_from([0, 0, 20]),
        retry=policies,
        daily_retry=short_policies,
        final_debt=st.sampled_from(["invoice", "invoice", "write_off"]),
        refunds_return_credit=st.sampled_from([True, False]),
        proration=st.sampled_from(["second", "day"]),
        batch=st.sampled_from([1, 200]),
    )
    def open(
        self,
        start: datetime,
        first: list[tuple[str, Behavior, int]],
        rates_after: int,
        retry: RetryPolicy,
        daily_retry: RetryPolicy,
        final_debt: str,
        refunds_return_credit: bool,
        proration: str,
        batch: int,
    ) -> Any:
        """The engine, its plans, and three customers, each with a card and a subscription.

        Billing runs claim ``batch`` subscriptions at a time: one (each alone) or all of them
        (the batched path, every step of a round written together)."""
        self.start = start
        self.clock = ManualClock(start)
        self.rates_after = rates_after
        self.retry = retry
        self.daily_retry = daily_retry
        drawn = Settings(
            threads=1,
            batch_size=batch,
            final_debt=final_debt,
            refunds_return_credit=refunds_return_credit,
            proration=proration,
            late_payment_days=60,  # most expired links of a history can be found paid late
        )
        overrides: dict[str, Any] = dict(self.setting_overrides)
        settings = self.engine_settings(replace(drawn, **overrides))
        self.sim = self.gateway_simulation()
        try:
            self.fake = self.sim.fake if isinstance(self.sim, FakeSimulation) else None
            self.link = link_simulation(self.sim)
            catalog = list(self.plans())
            rates = list(self.exchange_rates())
            self.url = self.database_url()
            self.engine = open_engine(
                self.url,
                clock=self.clock,
                gateways=[self.sim.gateway],
                rates=TableExchangeRates(rates),
                settings=settings,
                migrate=True,
            )
        except BaseException:
            self.sim.close()  # a simulation's server, when it has one
            raise
        self.started = True
        self.recorder = ScenarioRecorder(
            f"{type(self).__name__} history", start, proration=settings.proration
        )
        self._note_settings(settings)
        for plan in catalog:
            self.engine.create_plan(plan)
            self.recorder.add_plan(plan)
        if any(plan.billing_currency != plan.price.currency for plan in catalog):
            self.recorder.add_rates(rates)
        self.family = {plan.code: _family(plan) for plan in catalog}
        self.cards = 0
        self.customers_made = 0
        self.customer_ids: list[str] = []
        self.taxes: dict[str, TaxRate | None] = {}
        self.live: list[str] = []
        """Subscriptions not known to be final, for the rules that act on one."""
        # daily plans for customers in Samoa around the day it skipped (with time passing twenty
        # times slower, so that a history sees days of them); monthly and UF ones otherwise
        daily = all(plan.interval.unit is IntervalUnit.DAY for plan in catalog)
        self.pace = 20 if daily else 1
        self.zone = "Pacific/Apia" if daily and self.catalog is None else None
        self.plan_codes = [plan.code for plan in catalog]
        customers = []
        for zone, card, index in first:
            customers.append(self._new_customer(zone, card))
            self._subscribe(customers[-1], self.plan_codes[index % len(self.plan_codes)])
        return multiple(*customers)

    def _note_settings(self, settings: Settings) -> None:
        """Tell the recorder the settings of this history a scenario file must carry: the
        engine's (its ``settings`` section) and the fake gateway's waiting time."""
        defaults = Settings()
        for field in dataclasses.fields(Settings):
            if field.name in _REPLAY_NEUTRAL:
                continue
            value, default = getattr(settings, field.name), getattr(defaults, field.name)
            if value != default:
                self.recorder.setting(field.name, value)
        if self.fake is not None and self.pending_for != _FAKE_PENDING_FOR:
            self.recorder.fake_pending_for(self.pending_for)

    def teardown(self) -> None:
        if not self.started:
            return
        try:
            if _final_run():
                self.report_failure()
        finally:
            target(float(self.richness), label="richness")
            self.engine.close()
            self.sim.close()
            self.release_database(self.url)

    # -- the counterexample ---------------------------------------------------------------------
    def failure_scenario(self) -> str:
        """This history so far as a scenario file, with a header saying how to replay it, and
        an ``expect`` section holding what the engine holds now (a faithful replay meets it)."""
        header = [
            f"A history {type(self).__name__} ran on the real engine, shrunk by hypothesis to",
            "one that fails (hypothesis reports the failure with it). Replay it with:",
            "",
            f"    {REPLAY_COMMAND} failure.yaml",
            "",
            "`expect` holds what the engine held when the history failed: a replay that",
            "does what the history did meets it (exit 0). Once the bug is fixed, change it to",
            "what should happen, and keep the file as a regression test.",
        ]
        header.append("")
        try:
            expect: dict[str, Any] | None = observed(self.engine, self.customer_ids)
        except Exception as exc:  # the engine may be what failed
            header.append(f"(no expect section: reading the engine failed: {exc!r})")
            expect = None
        return self.recorder.text(self.clock.now(), expect=expect, header=header)

    def report_failure(self) -> None:
        """Print the failing history as a scenario file (hypothesis shows it with the failure),
        and write it to :attr:`failure_file` when set."""
        try:
            scenario = self.failure_scenario()
        except Exception as exc:  # never hide the failure itself
            note(f"(could not write the failing history as a scenario file: {exc!r})")
            return
        note(f"The failing history as a scenario file:\n{scenario}")
        if self.failure_file is not None:
            Path(self.failure_file).write_text(scenario, encoding="utf-8")

    # -- customers and cards ------------------------------------------------------------------
    @rule(
        target=customers,
        timezone=_configured("timezones"),
        card=_configured("behaviors") | st.none(),
    )
    def new_customer(self, timezone: str, card: Behavior | None) -> str:
        """A customer, with a card that behaves as ``card`` says (or none)."""
        return self._new_customer(timezone, card)

    def _new_customer(self, timezone: str, card: Behavior | None) -> str:
        self.customers_made += 1
        customer_id = f"c{self.customers_made}"
        zone = self.zone or timezone
        self.engine.create_customer(customer_id=customer_id, timezone=zone)
        self.customer_ids.append(customer_id)
        has_card = card is not None and self._give_card(customer_id, card, replace=False)
        self.recorder.add_customer(
            customer_id,
            zone,
            gateway=self.sim.gateway.name,
            payment=self._payment(card) if has_card and card is not None else "none",
        )
        return customer_id

    def _give_card(self, customer_id: str, card: Behavior, *, replace: bool) -> bool:
        """Give the customer a new default payment method that pays as ``card`` says, the way
        the gateway stores one; ``False`` if the engine refused it, or the gateway's simulation
        cannot pay that way (:attr:`_card_scripted` then says whether the simulation was
        scripted with ``card`` all the same, for the recorder)."""
        self.cards += 1
        self._card_scripted = False
        gateway = self.sim.gateway
        capabilities = gateway.capabilities
        try:
            if Capability.CARD_TOKENS in capabilities or Capability.PAY_BY_LINK in capabilities:
                token = self.sim.card_token(customer_id, card)
                self._card_scripted = True
                add = (
                    self.engine.replace_payment_method
                    if replace
                    else self.engine.add_payment_method
                )
                return (
                    self.refused_or(add, customer_id, gateway=gateway.name, token=token) is not None
                )
            enrollment = self.refused_or(
                self.engine.start_payment_method_enrollment,
                customer_id,
                gateway=gateway.name,
                return_url=_RETURN_URL,
            )
            if enrollment is None:
                return False
            self.sim.fill_enrollment(customer_id, enrollment.redirect_url, card)
            self._card_scripted = True
        except InvalidArgument:  # the simulation cannot pay that way
            event(f"{gateway.name} cannot show {card.value}")
            return False
        done = self.refused_or(
            self.engine.complete_payment_method_enrollment, gateway.name, enrollment.reference
        )
        return done is not None

    @rule(customer=customers, card=_configured("behaviors"), later=st.sampled_from(LATER))
    def replace_card(self, customer: str, card: Behavior, later: timedelta | None) -> None:
        self._wait(later)
        if self._give_card(customer, card, replace=True):
            self.recorder.add_event(
                self.clock.now(),
                "replace_payment_method",
                {"customer": customer, "payment": self._payment(card)},
            )
        elif self._card_scripted:  # the customer's payments were scripted anew all the same
            self._record_payment(customer, card)

    @rule(customer=customers, card=_configured("behaviors"), later=st.sampled_from(LATER))
    def card_starts_to(self, customer: str, card: Behavior, later: timedelta | None) -> None:
        """The customer's card behaves differently from now on (funds run out, come back...)."""
        self._wait(later)
        self._script(customer, card)

    def _script(self, customer: str, card: Behavior) -> None:
        try:
            self.sim.script(customer, card)
        except InvalidArgument:  # the simulation cannot pay that way
            event(f"{self.sim.gateway.name} cannot show {card.value}")
            return
        self._record_payment(customer, card)

    def _record_payment(self, customer: str, card: Behavior) -> None:
        self.recorder.add_event(
            self.clock.now(), "set_payment", {"customer": customer, "payment": self._payment(card)}
        )

    def _payment(self, card: Behavior) -> str:
        """``card`` as a scenario file's ``payment``: a pay-by-link simulation's ``pay_late`` is
        its fake's own (``pay_late_native``), not a scenario's late payer."""
        return (
            "pay_late_native" if self.link is not None and card is Behavior.PAY_LATE else card.value
        )

    @rule(customer=customers, amount=st.sampled_from([500, 4000, 20000]))
    def grant_credit(self, customer: str, amount: int) -> None:
        credit = Money.of(amount, self.sim.currency)
        if self.refused_or(self.engine.grant_credit, customer, credit) is not None:
            self.recorder.add_event(
                self.clock.now(),
                "grant_credit",
                {"customer": customer, "amount": credit.to_decimal_string()},
                currency=credit.currency.code,
            )

    # -- subscriptions -------------------------------------------------------------------------
    @rule(
        customer=customers,
        plan=st.integers(0, 4),
        trial=st.sampled_from([None, None, None, timedelta(days=3), timedelta(days=40)]),
        cycles=st.none() | st.integers(min_value=1, max_value=4),
        tax=taxes,
        start_in=st.sampled_from(
            [None, None, None, timedelta(hours=5), timedelta(days=12), -timedelta(days=1)]
        ),
        prorate=st.booleans(),
    )
    def subscribe(
        self,
        customer: str,
        plan: int,
        trial: timedelta | None,
        cycles: int | None,
        tax: TaxRate | None,
        start_in: timedelta | None,
        prorate: bool,
    ) -> None:
        self._advance_to(self.clock.now() + SIGN_UP)
        now = self.clock.now()
        start = None if start_in is None else now + start_in
        trial_end = None if trial is None else (start or now) + trial
        self._subscribe(
            customer,
            self.plan_codes[plan % len(self.plan_codes)],
            start=start,
            trial_end=trial_end,
            cycles=cycles,
            tax=tax,
            prorate=prorate,
        )

    def _subscribe(self, customer: str, plan: str, **options: Any) -> str | None:
        # ids chosen here, so that the same steps make the same history (hypothesis replays it)
        subscription_id = f"s{len(self.taxes) + 1}"
        self.taxes[subscription_id] = options.get("tax")
        subscription = self.refused_or(
            self.engine.subscribe, customer, plan, subscription_id=subscription_id, **options
        )
        if subscription is None:
            return None
        self.live.append(subscription.id)
        self.recorder.add_subscription(
            subscription.id,
            customer,
            plan,
            start=options.get("start") or self.clock.now(),
            trial_end=options.get("trial_end"),
            cycles=options.get("cycles"),
            tax=options.get("tax"),
            prorate=options.get("prorate", True),
            created_at=self.clock.now(),
        )
        return subscription.id

    @rule(
        customer=customers,
        card=st.sampled_from(WAITING),
        plan=st.integers(0, 4),
        tax=taxes,
        data=st.data(),
        behavior=st.sampled_from(list(ProrationBehavior)),
        then=st.sampled_from(["change", "change", "cancel", "pause"]),
    )
    def act_before_paying(
        self,
        customer: str,
        card: Behavior,
        plan: int,
        tax: TaxRate | None,
        data: st.DataObject,
        behavior: str,
        then: str,
    ) -> None:
        """An adversarial customer: subscribe with a payment that waits (pending, a link, a lost
        answer), then change plan, cancel or pause before it settles."""
        self._script(customer, card)
        self._advance_to(self.clock.now() + SIGN_UP)
        subscription = self._subscribe(
            customer, self.plan_codes[plan % len(self.plan_codes)], tax=tax
        )
        if subscription is None:
            return
        self.risky += 1
        if then == "cancel":
            self._cancel(subscription, at_period_end=data.draw(st.booleans()))
        elif then == "pause":
            self._pause(subscription, resume_at=None)
        else:
            self._change(data, subscription, behavior)

    def _change(self, data: st.DataObject, subscription: str, behavior: str) -> None:
        current = self.engine.subscription(subscription).plan.code
        choices = [
            code
            for code in self.plan_codes
            if code != current and self.family.get(code) == self.family.get(current)
        ]
        if not choices:
            return
        plan = data.draw(st.sampled_from(choices), label="plan")
        if (
            self.refused_or(self.engine.change_plan, subscription, plan, behavior=behavior)
            is not None
        ):
            self.recorder.add_event(
                self.clock.now(),
                "change_plan",
                {"subscription": subscription, "plan": plan, "behavior": str(behavior)},
            )

    def _pick(self, data: st.DataObject, *statuses: SubscriptionStatus) -> str | None:
        """A subscription that is not final: sometimes any (to try a refusal), mostly one in
        one of ``statuses`` (those the operation is allowed in), and often, as an adversarial
        customer would, one with an invoice not paid yet (a payment pending, a link out, a
        retry scheduled), where money got lost before."""
        known = {s.id: s.status for s in self.engine.subscriptions()}
        self.live = [s for s in self.live if s in known and known[s] not in _FINAL]
        fitting = [s for s in self.live if known[s] in statuses] if statuses else self.live
        open_ = {i.subscription_id for i in self.engine.invoices() if i.status in _UNPAID}
        unpaid = [s for s in fitting if s in open_]
        aim = data.draw(st.integers(0, 4), label="aim")
        choices = (unpaid if aim > 2 else []) or (fitting if aim else []) or self.live
        if not choices:
            return None
        return data.draw(st.sampled_from(choices), label="subscription")

    @rule(
        data=st.data(),
        behaviors=st.sampled_from(list(ProrationBehavior)).flatmap(
            lambda behavior: st.lists(st.just(behavior), min_size=1, max_size=2)
        ),
        later=st.sampled_from(LATER),
    )
    def change_plan(
        self, data: st.DataObject, behaviors: list[str], later: timedelta | None
    ) -> None:
        """One plan change, or two at the same instant with the same proration behaviour (two
        upgrades invoiced at once, say)."""
        self._wait(later)
        subscription = self._pick(data, SubscriptionStatus.ACTIVE)
        if subscription is None:
            return
        for behavior in behaviors:
            self._note_unpaid(subscription)
            self._change(data, subscription, behavior)

    @rule(data=st.data(), at_period_end=st.booleans(), later=st.sampled_from(LATER))
    def cancel(self, data: st.DataObject, at_period_end: bool, later: timedelta | None) -> None:
        self._wait(later)
        subscription = self._pick(data, *_RUNNING)
        if subscription is not None:
            self._note_unpaid(subscription)
            self._cancel(subscription, at_period_end=at_period_end)

    def _cancel(self, subscription: str, *, at_period_end: bool) -> None:
        if (
            self.refused_or(self.engine.cancel, subscription, at_period_end=at_period_end)
            is not None
        ):
            self.recorder.add_event(
                self.clock.now(),
                "cancel",
                {"subscription": subscription, "at_period_end": at_period_end},
            )

    @rule(
        data=st.data(),
        resume_in=st.none() | st.sampled_from(STEPS[2:]),
        later=st.sampled_from(LATER),
    )
    def pause(
        self, data: st.DataObject, resume_in: timedelta | None, later: timedelta | None
    ) -> None:
        self._wait(later)
        subscription = self._pick(data, SubscriptionStatus.ACTIVE)
        if subscription is not None:
            self._note_unpaid(subscription)
            resume_at = None if resume_in is None else self.clock.now() + resume_in
            self._pause(subscription, resume_at=resume_at)

    def _pause(self, subscription: str, *, resume_at: datetime | None) -> None:
        if self.refused_or(self.engine.pause, subscription, resume_at=resume_at) is not None:
            args: dict[str, Any] = {"subscription": subscription}
            if resume_at is not None:
                args["resume_at"] = resume_at.isoformat()
            self.recorder.add_event(self.clock.now(), "pause", args)

    @rule(data=st.data(), later=st.sampled_from(LATER))
    def resume(self, data: st.DataObject, later: timedelta | None) -> None:
        self._wait(later)
        subscription = self._pick(data, SubscriptionStatus.PAUSED)
        if (
            subscription is not None
            and self.refused_or(self.engine.resume, subscription) is not None
        ):
            self.recorder.add_event(self.clock.now(), "resume", {"subscription": subscription})

    # -- refunds -------------------------------------------------------------------------------
    @precondition(lambda self: self.started)
    @rule(
        data=st.data(), whole=st.booleans(), lose_answer=st.sampled_from([None, "after", "before"])
    )
    def refund(self, data: st.DataObject, whole: bool, lose_answer: str | None) -> None:
        """Refund a payment, often (as an adversarial customer would ask) one whose invoice was
        paid partly with credit."""
        invoices = {invoice.id: invoice for invoice in self.engine.invoices()}
        paid = sorted(
            (p for p in self.engine.payments() if p.status is PaymentStatus.SUCCEEDED),
            key=lambda p: (invoices[p.invoice_id].number or "", p.number),
        )
        with_credit = [p for p in paid if invoices[p.invoice_id].credit_applied.is_positive()]
        aim = data.draw(st.booleans(), label="with credit")
        choices = (with_credit if aim else []) or paid
        if not choices:
            return
        payment = data.draw(st.sampled_from(choices), label="payment")
        amount = None
        if not whole:
            minor = data.draw(
                st.integers(min_value=1, max_value=payment.amount.minor), label="minor"
            )
            amount = Money(minor, payment.amount.currency)
        lost = None  # when the gateway was told to lose the answer of its next refund call
        if lose_answer is not None:
            if self.fake is not None:
                self.fake.lose_refund_answers(before_refunding=lose_answer == "before")
                lost = lose_answer
            else:
                try:
                    self.sim.lose_next_refund_answer()
                    lost = "after"
                except InvalidArgument:  # a gateway without refunds: the engine refuses them
                    pass
        invoice = invoices[payment.invoice_id]
        self.risky += invoice.credit_applied.is_positive()
        if self.refused_or(self.engine.refund, payment.id, amount=amount) is None:
            if lost is not None:  # no refund call was made: the next one loses its answer
                self.recorder.add_event(
                    self.clock.now(),
                    "lose_refund_answer",
                    {"gateway": self.sim.gateway.name, "when": lost},
                )
            return
        args: dict[str, Any] = {"invoice": invoice.number, "attempt": payment.number}
        if amount is not None:
            args["amount"] = amount.to_decimal_string()
        if lost is not None:
            args["lose_answer"] = lost
        self.recorder.add_event(self.clock.now(), "refund", args)

    @precondition(lambda self: self.started)
    @rule(data=st.data(), delivery=st.sampled_from(["once", "twice", "lost"]))
    def an_expired_link_is_paid_late(self, data: st.DataObject, delivery: str) -> None:
        """A customer's transfer for a link that expired is confirmed after all: the money is
        taken, and the gateway's notification arrives (``twice``: delivered again), or is lost
        (then the worker's reconciliation finds the payment within a day). On the fake gateway,
        and on a simulation of a pay-by-link gateway."""
        if self.fake is None and self.link is None:
            return
        now = self.clock.now()
        recent = now - self.engine.settings.late_payment + LATE_FOUND_WITHIN
        expired = [
            p
            for p in self.engine.payments()
            if p.may_be_paid_late()
            and p.reference
            and p.gateway == self.sim.gateway.name
            and (delivery != "lost" or (p.updated_at is not None and p.updated_at > recent))
        ]
        if not expired:
            return
        payment = data.draw(st.sampled_from(expired), label="expired link")
        assert payment.reference is not None
        event(f"an expired link paid late, its notification {delivery}")
        notifications = []
        if self.fake is not None:
            self.fake.pay_expired_link(payment.reference, now)
            if delivery != "lost":
                notifications = [self.fake.notification(payment.reference)]
        else:
            assert self.link is not None
            try:
                self.link.pay_link(payment.reference, late=True)
            except InvalidArgument:  # the gateway's fake will not take this payment
                event("the simulation refused to pay an expired link late")
                return
            notifications = self.link.take_notifications()
        number = self.engine.invoice(payment.invoice_id).number
        self.recorder.add_event(
            now,
            "pay_expired_link",
            {"invoice": number, "attempt": payment.number, "delivery": delivery},
        )
        if delivery == "lost":
            self._advance_to(now + LATE_FOUND_WITHIN)
            self.engine.reconcile()
            self._deliver()
            self.recorder.add_event(self.clock.now(), "reconcile", {})
            return
        for notification in notifications:
            for _ in range(1 + (delivery == "twice")):
                self.engine.receive_notification(
                    self.sim.gateway.name, headers=notification.headers, body=notification.body
                )

    # -- time ----------------------------------------------------------------------------------
    @precondition(lambda self: self.started)
    @rule(step=st.sampled_from(STEPS))
    def time_passes(self, step: timedelta) -> None:
        """Move the clock, billing everything that falls due on the way, in time order."""
        self._advance_to(self.clock.now() + step / self.pace)

    def _advance_to(self, until: datetime) -> None:
        stuck = None
        while (due := self.engine.next_run_at()) is not None and due <= until:
            if due == stuck:  # work that cannot be done (no UF rate yet) stays due: pass it by
                self.recorder.note(
                    f"work due at {due.isoformat()} could not be done (no exchange rate yet?) "
                    "and stayed due; the machine passed it by, a scenario's replay waits on it"
                )
                break
            stuck = due
            self.clock.set(max(due, self.clock.now()))
            self.engine.run_due()
            self._deliver()
        self.clock.set(until)
        self.engine.run_due()
        self._deliver()

    @precondition(lambda self: self.started)
    @rule(months=st.integers(min_value=1, max_value=2))
    def months_pass(self, months: int) -> None:
        """Time passes in bigger strides (one history sees renewals, dunning, cycle ends)."""
        for _ in range(months):
            self.time_passes(timedelta(days=31))

    def _note_unpaid(self, subscription: str) -> None:
        """Count an operation on a subscription with an unpaid invoice: where money got lost."""
        invoices = self.engine.invoices(subscription_id=subscription)
        self.risky += any(invoice.status in _UNPAID for invoice in invoices)

    def _wait(self, later: timedelta | None) -> None:
        """Some operations come a while after the last one: time passes first."""
        if later is not None:
            self.time_passes(later)

    @precondition(lambda self: self.started)
    @rule()
    def reconcile(self) -> None:
        self.engine.reconcile()
        self._deliver()
        self.recorder.add_event(self.clock.now(), "reconcile", {})

    def _deliver(self) -> None:
        """Hand every notification a pay-by-link gateway sent to the engine, as the host's
        webhook endpoint would, until none is left."""
        if self.link is None:
            return
        for _ in range(_DELIVERY_ROUNDS):
            notifications = self.link.take_notifications()
            if not notifications:
                return
            for notification in notifications:
                self.engine.receive_notification(
                    self.sim.gateway.name, headers=notification.headers, body=notification.body
                )
        raise AssertionError(f"the gateway still notifies after {_DELIVERY_ROUNDS} rounds")

    # -- the checks ------------------------------------------------------------------------------
    @invariant()
    def the_books_balance(self) -> None:
        if not self.started:
            return
        report = self.engine.audit()
        assert report.balanced, "\n".join(str(finding) for finding in report.findings)
        self._aim_for_rich_histories()

    def _aim_for_rich_histories(self) -> None:
        """Steer hypothesis towards histories that reach the states where money got lost before:
        invoices collected outside dunning, credit held back or forfeited, stopped debt."""
        subscriptions = self.engine.subscriptions()
        with self.engine.store.engine.connect() as connection:
            kinds = set(connection.execute(select(col(EventRow.name)).distinct()).scalars())
            final = connection.execute(
                select(func.count()).where(col(InvoiceRow.reason) == "final")
            ).scalar_one()
            changes = connection.execute(
                select(col(EventRow.payload)).where(
                    col(EventRow.name) == "subscription.plan_changed"
                )
            ).scalars()
            held = sum(1 for change in changes if change["credit_held"]["minor"])
        collected = sum(len(s.collections) + len(s.debt) for s in subscriptions)
        richness = len(kinds) + 5 * (final + held + self.risky) + 3 * collected
        self.richness = max(self.richness, richness)

    @invariant()
    def the_gateway_took_exactly_what_the_engine_recorded(self) -> None:
        if not self.started:
            return
        if self.fake is None:
            self._check_simulated_gateway()
            return
        attempts = {p.idempotency_key: p for p in self.engine.payments()}
        taken = {charge.idempotency_key: charge for charge in self.fake.charges_taken()}
        confirmed: dict[str, int] = {}
        unsure: dict[str, int] = {}
        with self.engine.store.engine.connect() as connection:
            for payment_id, amount, status in connection.execute(
                select(
                    col(RefundRow.payment_id), col(RefundRow.amount_minor), col(RefundRow.status)
                )
            ):
                if status == RefundStatus.SUCCEEDED:
                    confirmed[payment_id] = confirmed.get(payment_id, 0) + amount
                elif status != RefundStatus.FAILED:  # created, pending or unknown
                    unsure[payment_id] = unsure.get(payment_id, 0) + amount
        for key, charge in taken.items():
            attempt = attempts.get(key)
            assert attempt is not None, (
                f"the gateway took {charge.amount} ({key}) the engine never wrote"
            )
            assert attempt.amount == charge.amount, (
                f"{key}: took {charge.amount}, wrote {attempt.amount}"
            )
            assert attempt.status is not PaymentStatus.FAILED, (
                f"{key}: took money the engine says failed"
            )
            back = confirmed.get(attempt.id, 0)
            assert back <= charge.refunded.minor <= back + unsure.get(attempt.id, 0), (
                f"{key}: the gateway gave back {charge.refunded}, the engine says {back}"
            )
        for key, attempt in attempts.items():
            if attempt.status is PaymentStatus.SUCCEEDED:
                assert key in taken, (
                    f"{key}: the engine says {attempt.amount} was taken; it was not"
                )

    def _check_simulated_gateway(self) -> None:
        """On a gateway simulation, which counts the charges that took each customer's money:
        every one the engine says succeeded was taken, and the gateway took no more than those
        and the ones whose outcome the engine does not know yet (or that may still be paid
        late)."""
        mine: dict[str, list[PaymentAttempt]] = {customer: [] for customer in self.customer_ids}
        for attempt in self.engine.payments():
            if attempt.customer_id in mine and attempt.gateway == self.sim.gateway.name:
                mine[attempt.customer_id].append(attempt)
        for customer, attempts in mine.items():
            succeeded = sum(a.status is PaymentStatus.SUCCEEDED for a in attempts)
            unsure = sum(a.status in _UNSETTLED or a.may_be_paid_late() for a in attempts)
            taken = self.sim.charges_taken(customer)
            assert succeeded <= taken <= succeeded + unsure, (
                f"{customer}: the gateway took {taken} charges; the engine says {succeeded} "
                f"succeeded and {unsure} are not settled"
            )

    @invariant()
    def every_invoice_is_taxed_as_subscribed_and_charged_in_a_currency_the_gateway_takes(
        self,
    ) -> None:
        if not self.started:
            return
        gateway: PaymentGateway = self.sim.gateway
        for invoice in self.engine.invoices():
            assert invoice.currency.code in gateway.currencies, (
                f"{invoice.number} is in {invoice.currency}, which no gateway takes"
            )
            tax = self.taxes.get(invoice.subscription_id or "")
            if tax is not None:
                _check_tax(invoice, tax)

    # -- plumbing --------------------------------------------------------------------------------
    def refused_or(self, call: Callable[..., T], *args: Any, **kwargs: Any) -> T | None:
        """Make an engine call; ``None`` if the engine refused it, and then every table must be
        as it was before. Then hand the engine what a pay-by-link gateway notified.

        One history runs in one thread, so a refusal that only concurrency explains (a key taken,
        a concurrent update) or a database failure is a bug, not a refusal: it is raised.
        """
        before = self._tables()
        try:
            result = call(*args, **kwargs)
        except (AlreadyExists, ConcurrentUpdate, StorageError):
            raise
        except BillingError as refused:
            reason = repr(refused)
        else:
            self._deliver()
            return result
        after = self._tables()
        changed = sorted(name for name in before if before[name] != after[name])
        assert not changed, f"{call.__name__} raised {reason} but changed {changed}"
        return None

    def _tables(self) -> dict[str, list[tuple[Any, ...]]]:
        with self.engine.store.engine.connect() as connection:
            return {
                table.name: sorted(map(tuple, connection.execute(select(table)).all()), key=repr)
                for table in metadata.sorted_tables
            }


def _catalog(plans: Iterable[Plan]) -> tuple[Plan, ...]:
    catalog = tuple(plans)
    if not catalog:
        raise InvalidArgument("plans", "must hold at least one plan", catalog)
    codes: set[str] = set()
    for plan in catalog:
        if not isinstance(plan, Plan):
            raise InvalidArgument("plans", "must all be Plan values", plan)
        if plan.code in codes:
            raise InvalidArgument("plans", "must have distinct codes", plan.code)
        codes.add(plan.code)
    return catalog


def _setting_overrides(settings: Mapping[str, object]) -> Mapping[str, object]:
    known = {field.name for field in dataclasses.fields(Settings)}
    for name in settings:
        if name not in known:
            raise InvalidArgument("settings", f"must name Settings fields ({name} is none)", name)
    Settings(**settings)  # type: ignore[arg-type]  # validates each value, naming the field
    return dict(settings)


def _check_tax(invoice: Invoice, tax: TaxRate) -> None:
    """The invoice's tax lines are what ``tax`` makes of its taxable lines, with its rounding."""
    taxable = [line for line in invoice.lines if line.taxable]
    charged = [line.amount for line in invoice.lines if line.kind is LineKind.TAX]
    if tax.inclusive:  # the lines are stated net of tax: rebuild the prices the customer saw
        if tax.rounding.value == "per_line":
            quoted = [line.amount + levy for line, levy in zip(taxable, charged, strict=True)]
        else:
            net = sum((line.amount for line in taxable), Money.zero(invoice.currency))
            quoted = [net + sum(charged, Money.zero(invoice.currency))] if taxable else []
        taxable = [replace(taxable[0], amount=amount) for amount in quoted]
    expected = [line.amount for line in tax.apply(taxable)[1]]
    assert charged == expected, (
        f"{invoice.number}: tax {charged}, but {tax.label()} rounded {tax.mode} makes {expected}"
    )


def _uf(day: int) -> Decimal:
    """A UF value that climbs a little every day, as the real one does."""
    return Decimal("39000.00") + Decimal(day) * Decimal("3.17")
