"""Hypothesis strategies for billing: plans, taxes, customers, subscriptions, timelines of
operations, and whole scenario files.

Use them in your own test suites (``pip install billing[testing]``)::

    from hypothesis import given
    from billing.testing import strategies as bst

    @given(bst.plans(currencies=["CLP", "CLF"]))
    def test_every_plan_can_be_sold(plan): ...

    @given(bst.scenarios())
    def test_every_history_balances(document): ...

The values are the engine's own (:class:`~billing.Plan`, :class:`~billing.TaxRate`) or small
frozen drafts in scenario-file terms (:class:`CustomerDraft`, :class:`SubscriptionDraft`,
:class:`Operation`); :func:`scenarios` puts them together into a whole scenario file, as the
plain mapping :func:`billing.scenarios.load_scenario` reads (write it with
:func:`billing.testing.recorder.dump_scenario`), which ``billing scenario run`` replays.

Bounds are chosen to keep examples quick to replay: a few customers and subscriptions, a
handful of operations, histories of weeks to months. Timelines are built so that the engine
accepts every operation: plan changes, pauses, resumes and cancellations only touch
subscriptions whose customers always pay at once, once any trial is over, while they can take
them; customers whose payments go otherwise get payment changes and credit instead.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any, Final

from hypothesis import strategies as st

from billing.domain import _checks
from billing.domain.catalog import Plan
from billing.domain.currencies import EXPONENTS, UNITS_OF_ACCOUNT
from billing.domain.dunning import AfterRetries, RetryPolicy
from billing.domain.errors import UnknownTimezone
from billing.domain.money import Money, Rounding
from billing.domain.periods import IntervalUnit
from billing.domain.proration import ProrationBehavior
from billing.domain.taxes import TaxRate, TaxRounding
from billing.testing.fake_gateway import Behavior
from billing.testing.recorder import plan_entry, tax_entry

__all__ = [
    "CustomerDraft",
    "Operation",
    "SubscriptionDraft",
    "customers",
    "plans",
    "retry_policies",
    "scenarios",
    "subscriptions",
    "taxes",
    "timelines",
    "timezones",
]

CURRENCIES: Final = ("CLP", "MXN", "COP", "CLF")
"""The currencies plans are priced in by default: the gateways' pesos, and the UF (``CLF``,
charged in ``CLP``)."""

_MINUTE: Final = timedelta(minutes=1)
_MARGIN: Final = timedelta(days=2)
"""How long after a trial's end (counted in days, in the customer's zone) a timeline waits before
acting on a subscription."""


@dataclass(frozen=True, slots=True, kw_only=True)
class CustomerDraft:
    """A customer to create: a scenario file's ``customers`` item."""

    ref: str
    """Its id (a scenario's ``ref``)."""
    timezone: str
    """An IANA timezone name."""
    payment: Behavior
    """How its payments go (:class:`~billing.testing.Behavior`)."""
    gateway: str = "fake"
    """The gateway it pays through (a name with a simulation)."""
    credit: Decimal = Decimal(0)
    """Credit granted at the start, in major units of its first subscription's currency."""

    def entry(self) -> dict[str, Any]:
        """The scenario file's ``customers`` item."""
        entry: dict[str, Any] = {"ref": self.ref, "timezone": self.timezone}
        if self.gateway != "fake":
            entry["gateway"] = self.gateway
        entry["payment"] = self.payment.value
        if self.credit:
            entry["credit"] = str(self.credit)
        return entry


@dataclass(frozen=True, slots=True, kw_only=True)
class SubscriptionDraft:
    """A subscription to create: a scenario file's ``subscriptions`` item."""

    ref: str
    customer: str
    plan: str
    start: datetime
    trial_end: datetime | None = None
    """``None``: the plan's trial days."""
    cycles: int | None = None
    """``None``: the plan's cycle count."""
    tax: TaxRate | None = None
    prorate: bool = True

    def entry(self) -> dict[str, Any]:
        """The scenario file's ``subscriptions`` item."""
        entry: dict[str, Any] = {
            "ref": self.ref,
            "customer": self.customer,
            "plan": self.plan,
            "start": self.start.isoformat(),
        }
        if self.trial_end is not None:
            entry["trial_end"] = self.trial_end.isoformat()
        if self.cycles is not None:
            entry["cycles"] = self.cycles
        if self.tax is not None:
            entry["tax"] = tax_entry(self.tax)
        entry["prorate"] = self.prorate
        return entry


@dataclass(frozen=True, slots=True, kw_only=True)
class Operation:
    """One timed operation of a timeline: a scenario file's ``events`` item.

    ``action`` is one of ``change_plan``, ``cancel``, ``pause``, ``resume``, ``grant_credit``,
    ``refund``, ``set_payment`` and ``replace_payment_method``; ``args`` are its arguments in
    file terms (refs, ISO 8601 instants, decimal strings). Time passes between operations: the
    engine bills everything due on the way.
    """

    at: datetime
    action: str
    args: Mapping[str, Any] = field(default_factory=dict)

    def entry(self) -> dict[str, Any]:
        """The scenario file's ``events`` item."""
        return {"at": self.at.isoformat(), self.action: dict(self.args)}


# -- values -----------------------------------------------------------------------------------


def _mostly(usual: st.SearchStrategy[Any], other: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """``usual`` three times in four (and when shrinking), ``other`` otherwise."""
    return st.integers(0, 3).flatmap(lambda draw: other if draw == 3 else usual)


def _valid_zone(name: str) -> bool:
    try:
        _checks.timezone(name)
    except UnknownTimezone:
        return False
    return True


def timezones() -> st.SearchStrategy[str]:
    """Any IANA timezone name the engine accepts (those of the system's or ``tzdata``'s
    database), Latin America's most often."""
    common = st.sampled_from(
        ["America/Santiago", "America/Mexico_City", "America/Bogota", "America/Lima", "UTC"]
    )
    return common | st.timezone_keys().filter(_valid_zone)


def retry_policies(*, max_retries: int = 4, max_days: int = 15) -> st.SearchStrategy[RetryPolicy]:
    """Dunning schedules: up to ``max_retries`` retries, each 1 to ``max_days`` days after the
    previous attempt, then any :class:`~billing.domain.dunning.AfterRetries`."""
    return st.builds(
        RetryPolicy.of,
        st.lists(st.integers(1, max_days), max_size=max_retries),
        then=st.sampled_from([after.value for after in AfterRetries]),
    )


def taxes() -> st.SearchStrategy[TaxRate]:
    """Tax rates: Latin America's VATs and any percentage to two decimals, stated on top of the
    price or included in it, rounded per invoice or per line, in every rounding mode."""
    percents = st.sampled_from(["19", "16", "8", "0", "19.5"]) | st.decimals(
        min_value=0, max_value=30, places=2
    ).map(str)
    return st.builds(
        TaxRate.of,
        st.sampled_from(["IVA", "VAT"]),
        percents,
        inclusive=st.booleans(),
        rounding=st.sampled_from([rounding.value for rounding in TaxRounding]),
        mode=st.sampled_from([mode.value for mode in Rounding]),
    )


def _price(currency: str, free: bool) -> st.SearchStrategy[Money]:
    """A price in ``currency``: whole pesos up to 200,000, cents for currencies that have them;
    a unit of account (UF) from 0.1 to 10 in its four decimals."""
    exponent = EXPONENTS[currency]
    low = 0 if free else 1
    if currency in UNITS_OF_ACCOUNT:
        minor = st.integers(low and 10 ** (exponent - 1), 10 * 10**exponent)
    else:
        minor = st.integers(low * 10**exponent, 200_000 * 10**exponent)
    return minor.map(lambda amount: Money.from_minor(amount, currency))


@st.composite
def plans(
    draw: st.DrawFn,
    *,
    code: str | None = None,
    currencies: Sequence[str] = CURRENCIES,
    intervals: Sequence[str] = tuple(unit.value for unit in IntervalUnit),
    max_interval_count: int = 3,
    trials: bool = True,
    cycles: bool = True,
    free: bool = False,
) -> Plan:
    """Plans: every interval (``day``, ``week``, ``month``, ``year``, mostly one at a time), a
    trial or none, a cycle count or none, a retry policy, in any of ``currencies`` (a ``CLF``
    plan is charged in ``CLP``: it needs UF rates). ``code`` names it (drawn if not given);
    ``free`` allows a price of zero.
    """
    currency = draw(st.sampled_from(list(currencies)))
    count = draw(st.integers(1, max_interval_count) | st.just(1))
    return Plan.of(
        code=code or draw(st.from_regex(r"[a-z][a-z0-9_]{0,15}", fullmatch=True)),
        name=draw(st.sampled_from(["Básico", "Pro", "Plan Oro", "Empresa"])),
        price=draw(_price(currency, free)).amount,
        currency=currency,
        interval=draw(st.sampled_from(list(intervals))),
        interval_count=count,
        trial_days=draw(_mostly(st.just(0), st.integers(1, 30))) if trials else 0,
        cycles=draw(_mostly(st.none(), st.integers(1, 12))) if cycles else None,
        retry=draw(retry_policies()),
    )


def customers(
    *,
    ref: str = "c1",
    timezones: st.SearchStrategy[str] | None = None,
    behaviors: Sequence[Behavior | str] = tuple(Behavior),
    gateway: str = "fake",
    credit: bool = True,
) -> st.SearchStrategy[CustomerDraft]:
    """Customers called ``ref``, in any IANA timezone (or one of ``timezones``), paying as one
    of ``behaviors`` (every :class:`~billing.testing.Behavior` by default, ``approve`` most
    often) through ``gateway``, with some credit at the start unless ``credit`` is false."""
    payments = [Behavior(b) for b in behaviors]
    payment = st.sampled_from(payments)
    if Behavior.APPROVE in payments:
        payment = _mostly(st.just(Behavior.APPROVE), payment)
    amounts = st.sampled_from([Decimal(0), Decimal(0), Decimal(1000), Decimal(25000)])
    return st.builds(
        CustomerDraft,
        ref=st.just(ref),
        timezone=timezones if timezones is not None else _zones(),
        payment=payment,
        gateway=st.just(gateway),
        credit=amounts if credit else st.just(Decimal(0)),
    )


def _zones() -> st.SearchStrategy[str]:
    return timezones()


@st.composite
def subscriptions(
    draw: st.DrawFn,
    *,
    ref: str = "s1",
    customer: str = "c1",
    plans: Sequence[Plan],
    start: datetime,
    until: datetime,
) -> SubscriptionDraft:
    """Subscriptions called ``ref`` of ``customer`` to one of ``plans``: starting at ``start``
    (mostly) or later, before ``until``; with the plan's trial, one of their own or none; the
    plan's cycle count or their own; taxed or not; prorated or not."""
    plan = draw(st.sampled_from(list(plans)))
    span = max(int((until - start) / timedelta(hours=1)) // 2, 1)
    begins = start + draw(st.just(0) | st.integers(1, span)) * timedelta(hours=1)
    trial_end = draw(
        _mostly(st.none(), st.integers(1, 40).map(lambda days: begins + timedelta(days=days)))
    )
    return SubscriptionDraft(
        ref=ref,
        customer=customer,
        plan=plan.code,
        start=begins,
        trial_end=trial_end,
        cycles=draw(_mostly(st.none(), st.integers(1, 6))),
        tax=draw(st.none() | taxes()),
        prorate=draw(st.booleans()),
    )


# -- timelines --------------------------------------------------------------------------------


@dataclass
class _Model:
    """What a timeline knows of a subscription it may act on (one whose customer pays at once)."""

    draft: SubscriptionDraft
    plan: Plan
    ready: datetime
    """No operation before this: its start, and the end of any trial (with a margin)."""
    paused_until: datetime | None = None
    paused: bool = False
    done: bool = False

    def active(self, at: datetime) -> bool:
        if self.paused and self.paused_until is not None and at > self.paused_until + _MINUTE:
            self.paused = False  # it resumed by itself
        return not self.done and not self.paused and at >= self.ready

    def resumable(self, at: datetime) -> bool:
        return (
            not self.done
            and self.paused
            and (self.paused_until is None or at < self.paused_until - _MINUTE)
        )


def _steady(
    draft: SubscriptionDraft, plan: Plan, customer: CustomerDraft, start: datetime
) -> _Model | None:
    """The model of a subscription a timeline can act on, or ``None``: its customer must pay at
    once, and it must run until canceled."""
    if customer.payment is not Behavior.APPROVE or plan.cycles or draft.cycles or plan.is_free:
        return None
    trial_end = draft.trial_end or draft.start + timedelta(days=plan.trial_days)
    ready = max(draft.start, start) + _MINUTE
    if trial_end > draft.start:
        ready = max(ready, trial_end + _MARGIN)
    return _Model(draft=draft, plan=plan, ready=ready)


@st.composite
def timelines(
    draw: st.DrawFn,
    *,
    start: datetime,
    until: datetime,
    customers: Sequence[CustomerDraft],
    subscriptions: Sequence[SubscriptionDraft],
    plans: Sequence[Plan],
    behaviors: Sequence[Behavior | str] = tuple(Behavior),
    refundable: Sequence[str] = (),
    max_operations: int = 8,
) -> list[Operation]:
    """Timed operations between ``start`` and ``until``, at least an hour apart, that the engine
    accepts: plan changes (within a plan's interval and currency, every proration behaviour),
    pauses (with or without a date to resume), resumes and cancellations (now or at the period's
    end) of subscriptions whose customers pay at once (``approve``), once any trial is over;
    payment behaviour changes (to one of ``behaviors``) and new payment methods for the other
    customers; credit for anyone; and whole refunds of ``refundable`` invoices (numbers of
    invoices known to be paid by a payment at the start). Time passing is the gap between two
    operations."""
    by_ref = {customer.ref: customer for customer in customers}
    catalog = {plan.code: plan for plan in plans}
    models = [
        model
        for draft in subscriptions
        if (model := _steady(draft, catalog[draft.plan], by_ref[draft.customer], start))
    ]
    steady_customers = {model.draft.customer for model in models}
    others = [c.ref for c in customers if c.payment is not Behavior.APPROVE]
    others += [c.ref for c in customers if c.ref not in steady_customers and c.ref not in others]
    payments = [Behavior(b).value for b in behaviors]
    refunds = list(refundable)
    operations: list[Operation] = []
    at = start
    for _ in range(draw(st.integers(0, max_operations))):
        hours = draw(st.integers(1, 24 * 20))
        at = at + timedelta(hours=hours)
        if at >= until:
            break
        kinds = ["grant_credit"]
        if others:
            kinds += ["set_payment", "replace_payment_method"]
        if any(model.active(at) for model in models):
            kinds += ["change_plan", "change_plan", "pause", "cancel"]
        if any(model.resumable(at) for model in models):
            kinds += ["resume", "resume"]
        if refunds:
            kinds.append("refund")
        kind = draw(st.sampled_from(kinds))
        operation = _operation(draw, kind, at, models, customers, others, payments, plans, refunds)
        if operation is not None:
            operations.append(operation)
    return operations


def _operation(
    draw: st.DrawFn,
    kind: str,
    at: datetime,
    models: Sequence[_Model],
    customers: Sequence[CustomerDraft],
    others: Sequence[str],
    payments: Sequence[str],
    plans: Sequence[Plan],
    refunds: list[str],
) -> Operation | None:
    match kind:
        case "grant_credit":
            customer = draw(st.sampled_from([c.ref for c in customers]))
            amount = draw(st.sampled_from(["100", "1000", "5000"]))
            return Operation(at=at, action=kind, args={"customer": customer, "amount": amount})
        case "set_payment" | "replace_payment_method":
            customer = draw(st.sampled_from(list(others)))
            payment = draw(st.sampled_from(list(payments)))
            return Operation(at=at, action=kind, args={"customer": customer, "payment": payment})
        case "refund":
            invoice = refunds.pop(draw(st.integers(0, len(refunds) - 1)))
            return Operation(at=at, action=kind, args={"invoice": invoice})
        case "resume":
            model = draw(st.sampled_from([m for m in models if m.resumable(at)]))
            model.paused = False
            return Operation(at=at, action=kind, args={"subscription": model.draft.ref})
    model = draw(st.sampled_from([m for m in models if m.active(at)]))
    ref = model.draft.ref
    if kind == "change_plan":
        choices = [
            plan
            for plan in plans
            if plan.code != model.plan.code
            and plan.interval == model.plan.interval
            and plan.billing_currency == model.plan.billing_currency
            and plan.price.currency == model.plan.price.currency
            and plan.cycles is None
            and not plan.is_free
        ]
        if not choices:
            return None
        plan = draw(st.sampled_from(choices))
        model.plan = plan
        behavior = draw(st.sampled_from([b.value for b in ProrationBehavior]))
        args = {"subscription": ref, "plan": plan.code, "behavior": behavior}
        return Operation(at=at, action=kind, args=args)
    if kind == "pause":
        resume_in = draw(st.none() | st.integers(1, 20))
        model.paused = True
        model.paused_until = None if resume_in is None else at + timedelta(days=resume_in)
        pause: dict[str, Any] = {"subscription": ref}
        if model.paused_until is not None:
            pause["resume_at"] = model.paused_until.isoformat()
        return Operation(at=at, action=kind, args=pause)
    at_period_end = draw(st.booleans())
    model.done = True
    return Operation(
        at=at, action="cancel", args={"subscription": ref, "at_period_end": at_period_end}
    )


# -- scenarios --------------------------------------------------------------------------------


def _instants() -> st.SearchStrategy[datetime]:
    """Instants from 2015 to 2035, to the minute, in UTC."""
    first = datetime(2015, 1, 1, tzinfo=UTC)
    minutes = int((datetime(2036, 1, 1, tzinfo=UTC) - first) / _MINUTE)
    return st.integers(0, minutes - 1).map(lambda minute: first + minute * _MINUTE)


@st.composite
def scenarios(
    draw: st.DrawFn,
    *,
    gateway: str = "fake",
    currencies: Sequence[str] = CURRENCIES,
    behaviors: Sequence[Behavior | str] = tuple(Behavior),
    timezones: st.SearchStrategy[str] | None = None,
    max_customers: int = 3,
    max_subscriptions: int = 4,
    max_operations: int = 8,
    days: tuple[int, int] = (20, 120),
) -> dict[str, Any]:
    """Whole scenario files, as the plain mapping :func:`billing.scenarios.load_scenario`
    reads: a start and an end ``days`` apart, one or two families of plans (plans a
    subscription can change between: one interval, one currency) priced in ``currencies``
    (UF plans with their rates), up to ``max_customers`` customers paying through ``gateway``
    as one of ``behaviors``, up to ``max_subscriptions`` subscriptions, and a timeline of up to
    ``max_operations`` operations (:func:`timelines`) the engine accepts.

    For a gateway other than the fake, give the ``currencies`` it charges in and the
    ``behaviors`` its simulation can show (docs/scenarios.md tabulates them).
    """
    start = draw(_instants())
    until = start + timedelta(days=draw(st.integers(*days)))
    families = draw(
        st.lists(
            st.tuples(
                st.sampled_from(list(currencies)),
                st.sampled_from([unit.value for unit in IntervalUnit]),
                st.integers(1, 2),
            ),
            min_size=1,
            max_size=2,
        )
    )
    catalog: list[Plan] = []
    for currency, unit, count in families:
        for _ in range(draw(st.integers(1, 3))):
            plan = draw(plans(code=f"p{len(catalog) + 1}", currencies=[currency]))
            plan = Plan.of(
                code=plan.code,
                name=plan.name,
                price=plan.price.amount,
                currency=currency,
                interval=unit,
                interval_count=count,
                trial_days=plan.trial_days,
                cycles=plan.cycles,
                retry=plan.retry_policy,
            )
            catalog.append(plan)
    people = [
        draw(customers(ref=f"c{n}", timezones=timezones, behaviors=behaviors, gateway=gateway))
        for n in range(1, draw(st.integers(1, max_customers)) + 1)
    ]
    drafts = [
        draw(
            subscriptions(
                ref=f"s{n}",
                customer=draw(st.sampled_from([c.ref for c in people])),
                plans=catalog,
                start=start,
                until=until,
            )
        )
        for n in range(1, draw(st.integers(1, max_subscriptions)) + 1)
    ]
    refundable = _refundable(drafts, people, catalog, start)
    operations = draw(
        timelines(
            start=start,
            until=until,
            customers=people,
            subscriptions=drafts,
            plans=catalog,
            behaviors=behaviors,
            refundable=refundable,
            max_operations=max_operations,
        )
    )
    document: dict[str, Any] = {
        "name": "generated scenario",
        "start": start.isoformat(),
        "until": until.isoformat(),
        "proration": draw(st.sampled_from(["second", "day"])),
    }
    if any(plan.billing_currency != plan.price.currency for plan in catalog):
        document["exchange_rates"] = draw(_uf_rates(start.date(), until.date()))
    document["plans"] = [plan_entry(plan) for plan in catalog]
    document["customers"] = [customer.entry() for customer in people]
    document["subscriptions"] = [draft.entry() for draft in drafts]
    document["events"] = [operation.entry() for operation in operations]
    return document


def _refundable(
    drafts: Sequence[SubscriptionDraft],
    people: Sequence[CustomerDraft],
    catalog: Sequence[Plan],
    start: datetime,
) -> list[str]:
    """``INV-000001`` when it is surely paid by a payment at the start: the first subscription
    starts then, without a trial, for a customer who pays at once and has no credit."""
    first = drafts[0]
    plan = next(plan for plan in catalog if plan.code == first.plan)
    customer = next(c for c in people if c.ref == first.customer)
    if (
        first.start == start
        and first.trial_end is None
        and plan.trial_days == 0
        and not plan.is_free
        and customer.payment is Behavior.APPROVE
        and not customer.credit
    ):
        return ["INV-000001"]
    return []


@st.composite
def _uf_rates(draw: st.DrawFn, start: date, until: date) -> list[dict[str, str]]:
    """UF rates: one published before the start (so every day has one), and a few later."""
    first = start - timedelta(days=3)
    later = draw(st.lists(st.integers(1, (until - first).days), max_size=4, unique=True))
    rates = []
    for day in [first, *(first + timedelta(days=n) for n in sorted(later))]:
        value = draw(st.decimals(min_value=30000, max_value=45000, places=2))
        rates.append({"date": day.isoformat(), "from": "CLF", "to": "CLP", "rate": str(value)})
    return rates
