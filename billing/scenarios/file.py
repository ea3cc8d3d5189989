"""Scenario files: parsing and validation of a declarative billing history into frozen values.

A scenario file is YAML (a JSON document is YAML too). It names a clock window (``start`` to
``until``), the engine settings it runs with, the plans, customers and subscriptions that exist,
and the events that happen on the way (subscriptions made later, plan changes, cancellations,
refunds, reconciliations, expired links paid late, payment behaviour changes...).
:func:`load_scenario` turns its text into a :class:`Scenario`; :func:`read_scenario` reads it
from a file first. Nothing is run here: the values are checked, built through the domain's
constructors (so a plan, a tax or an exchange rate is refused exactly as the engine would refuse
it) and returned.

Every problem is one :class:`ScenarioError`, which names the file, the line, the field and the
rule::

    scenario.yaml:12: plans[0].price: must be >= 0 (got '-1')

Decimals (prices, rates, credits, amounts) are written quoted (``"15000.5"``) or as integers:
YAML reads an unquoted ``15000.5`` as a float, and the engine never takes money as a float.
"""

from __future__ import annotations

import os
from collections.abc import Hashable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from types import MappingProxyType
from typing import Final

import yaml
from yaml.constructor import ConstructorError
from yaml.reader import ReaderError

from billing.config import Settings
from billing.domain import _checks
from billing.domain.catalog import Plan
from billing.domain.dunning import AfterRetries, RetryPolicy
from billing.domain.errors import FloatNotAllowed, InvalidArgument, NaiveDatetime
from billing.domain.exchange import ExchangeRate
from billing.domain.money import Currency, Rounding, exact
from billing.domain.proration import ProrationBehavior, ProrationUnit
from billing.domain.taxes import TaxRate, TaxRounding
from billing.testing import simulation

__all__ = [
    "ACTIONS",
    "CUSTOMER_PAYMENTS",
    "DELIVERIES",
    "LOST_ANSWERS",
    "PAYMENT_BEHAVIORS",
    "SETTINGS",
    "CustomerSpec",
    "EventSpec",
    "Scenario",
    "ScenarioError",
    "SubscriptionSpec",
    "load_scenario",
    "read_scenario",
]

PAYMENT_BEHAVIORS: Final[tuple[str, ...]] = (
    "approve",
    "decline_soft",
    "decline_hard",
    "timeout",
    "pay_late",
    "never_pay",
    "pay_by_link",
    "link_expires",
    "pay_late_native",
)
"""How a customer's payments go (on each gateway, as ``docs/scenarios.md`` tabulates). The
gateways a scenario can run on are those with a simulation
(:func:`billing.testing.simulation.names`). ``pay_late_native`` is ``pay_late`` as the gateway's
own fake does it (on a pay-by-link gateway: paid when the link expires, not two days after the
engine recorded the expiry)."""

CUSTOMER_PAYMENTS: Final[tuple[str, ...]] = (*PAYMENT_BEHAVIORS, "none")
"""A customer's ``payment``: a behavior, or ``none`` (no payment method at all)."""

DELIVERIES: Final[tuple[str, ...]] = ("once", "twice", "lost")
"""How the gateway's notification of a late payment reaches the engine (``pay_expired_link``)."""

LOST_ANSWERS: Final[tuple[str, ...]] = ("after", "before")
"""When a gateway loses a refund's answer: ``after`` it refunded, or ``before`` (the request never
arrived; the in-process fake only)."""

SETTINGS: Final[tuple[str, ...]] = (
    "final_debt",
    "refunds_return_credit",
    "late_payment_days",
    "invoice_prefix",
    "lease_seconds",
    "reconcile_after_seconds",
    "gateway_timeout_seconds",
    "batch_size",
)
"""The engine :class:`~billing.config.Settings` fields a scenario's ``settings`` may set: those
that change what is billed or when (and ``batch_size``, which changes the order of the events
of one instant). ``proration`` is the top-level key; the others (threads, the worker's ticks,
the database) change how the work is done, not its outcome: a scenario runs one thread."""

_NUMBER_SETTINGS: Final = frozenset(
    {"late_payment_days", "lease_seconds", "reconcile_after_seconds", "gateway_timeout_seconds"}
)

ACTIONS: Final[Mapping[str, tuple[tuple[str, ...], tuple[str, ...]]]] = MappingProxyType(
    {
        "change_plan": (("subscription", "plan"), ("behavior",)),
        "set_payment": (("customer", "payment"), ()),
        "cancel": (("subscription",), ("at_period_end",)),
        "pause": (("subscription",), ("resume_at",)),
        "resume": (("subscription",), ()),
        "grant_credit": (("customer", "amount"), ("currency",)),
        "refund": (("invoice",), ("attempt", "amount", "lose_answer")),
        "replace_payment_method": (("customer", "payment"), ()),
        "subscribe": (
            ("ref", "customer", "plan"),
            ("start", "trial_end", "tax", "prorate", "cycles"),
        ),
        "reconcile": ((), ()),
        "pay_expired_link": (("invoice",), ("attempt", "delivery")),
        "lose_refund_answer": (("gateway",), ("when",)),
    }
)
"""Each event action, with its required and its optional argument keys."""


class ScenarioError(InvalidArgument):
    """A scenario file breaks a rule: ``source:line: field: rule (got value)``.

    ``line`` is 1-based: the line of the offending key or list item (of the enclosing item for a
    missing key). ``field`` is a path such as ``plans[0].price`` or ``events[2].change_plan.plan``.
    """

    def __init__(self, source: str, line: int, field: str, rule: str, value: object = None) -> None:
        super().__init__(field, rule, value)
        self.source = source
        self.line = line
        self.args = (f"{source}:{line}: {self.args[0]}",)

    def __reduce__(self) -> tuple[type[ScenarioError], tuple[object, ...]]:
        return type(self), (self.source, self.line, self.field, self.rule, self.value)


@dataclass(frozen=True, slots=True, kw_only=True)
class CustomerSpec:
    """A customer of the scenario and how its payments go."""

    ref: str
    timezone: str
    """An IANA timezone name, already checked."""
    gateway: str
    payment: str
    """One of :data:`CUSTOMER_PAYMENTS` (``none``: the customer has no payment method)."""
    credit: Decimal
    """Credit granted at the start, in the currency of the customer's subscriptions."""
    line: int


@dataclass(frozen=True, slots=True, kw_only=True)
class SubscriptionSpec:
    """A subscription of the scenario: ``customer`` and ``plan`` are refs that resolve."""

    ref: str
    customer: str
    plan: str
    start: datetime
    trial_end: datetime | None
    tax: TaxRate | None
    prorate: bool
    cycles: int | None
    """Overrides the plan's cycle count when set."""
    line: int


@dataclass(frozen=True, slots=True, kw_only=True)
class EventSpec:
    """One event: an action (a key of :data:`ACTIONS`) at an instant, with typed arguments.

    ``args`` holds only the keys the file wrote: refs (and other names) as ``str``, instants as
    aware UTC datetimes, amounts as ``Decimal``, attempt numbers and cycles as ``int``, flags as
    ``bool``, ``behavior`` as a :class:`ProrationBehavior`, a ``subscribe``'s ``tax`` as a
    :class:`TaxRate`.
    """

    at: datetime
    action: str
    args: Mapping[str, object]
    idempotency_key: str | None
    line: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Scenario:
    """A parsed, validated scenario file: instants aware and in UTC, events in time order."""

    name: str
    start: datetime
    until: datetime
    proration: ProrationUnit
    exchange_rates: tuple[ExchangeRate, ...]
    plans: tuple[Plan, ...]
    customers: tuple[CustomerSpec, ...]
    subscriptions: tuple[SubscriptionSpec, ...]
    events: tuple[EventSpec, ...]
    expect: Mapping[str, object] | None = None
    """Expected parts of the report (``invoices``, ``payments``, ``subscriptions``...), if any."""
    source: str = "<scenario>"
    """Where the scenario was read from, for error messages."""
    settings: Mapping[str, object] = field(default_factory=lambda: MappingProxyType({}))
    """Engine :class:`~billing.config.Settings` fields the file sets (names in
    :data:`SETTINGS`), already checked; the others keep their defaults."""
    fake_pending_for: timedelta | None = None
    """How long the in-process fake gateway's waiting charges wait (its default, two days, when
    ``None``)."""


def read_scenario(path: str | os.PathLike[str]) -> Scenario:
    """Read and validate the scenario file at ``path`` (UTF-8); errors name the path."""
    return load_scenario(Path(path).read_text(encoding="utf-8"), source=os.fspath(path))


def load_scenario(text: str, source: str = "<scenario>") -> Scenario:
    """Parse and validate a scenario document (YAML or JSON).

    :raises ScenarioError: naming ``source``, the line, the field and the rule broken.
    """
    document = _parse(text, source)
    if not isinstance(document, _Map):
        line = document.line if isinstance(document, _Seq) else 1
        raise ScenarioError(
            source,
            line,
            "scenario",
            "must be a mapping with name, start, until, plans, customers and subscriptions",
            None if document is None else type(document).__name__,
        )
    return _scenario(_Obj(source, document, "", document.line))


# --- YAML with line numbers -------------------------------------------------------------------


class _Map(dict[Hashable, object]):
    """A YAML mapping that remembers its line and the line of each of its keys."""

    def __init__(self, line: int) -> None:
        super().__init__()
        self.line = line
        self.key_lines: dict[Hashable, int] = {}


class _Seq(list[object]):
    """A YAML sequence that remembers its line and the line of each of its items."""

    def __init__(self, line: int) -> None:
        super().__init__()
        self.line = line
        self.item_lines: list[int] = []


def _line(node: yaml.Node) -> int:
    return int(node.start_mark.line) + 1


class _Loader(yaml.SafeLoader):
    """PyYAML's safe loader, building :class:`_Map` and :class:`_Seq` with their lines."""

    def construct_object(self, node: yaml.Node, deep: bool = False) -> object:
        try:
            return super().construct_object(node, deep)
        except ValueError as exc:  # an unquoted 2026-02-30 is a timestamp with no such day
            raise ConstructorError(None, None, str(exc), node.start_mark) from exc


def _construct_map(loader: _Loader, node: yaml.MappingNode) -> Iterator[_Map]:
    data = _Map(_line(node))
    yield data
    own = {id(key_node) for key_node, _ in node.value}
    loader.flatten_mapping(node)  # merge keys (<<) first, then the mapping's own keys
    written: set[Hashable] = set()
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        if not isinstance(key, Hashable):
            raise ConstructorError(
                "while constructing a mapping",
                node.start_mark,
                "found an unhashable key",
                key_node.start_mark,
            )
        if id(key_node) in own:
            if key in written:
                raise ConstructorError(
                    "while constructing a mapping",
                    node.start_mark,
                    f"found duplicate key {key!r} (first on line {data.key_lines[key]})",
                    key_node.start_mark,
                )
            written.add(key)
        data[key] = loader.construct_object(value_node, deep=True)
        data.key_lines[key] = _line(key_node)


def _construct_seq(loader: _Loader, node: yaml.SequenceNode) -> Iterator[_Seq]:
    data = _Seq(_line(node))
    yield data
    for item in node.value:
        data.append(loader.construct_object(item, deep=True))
        data.item_lines.append(_line(item))


_Loader.add_constructor("tag:yaml.org,2002:map", _construct_map)
_Loader.add_constructor("tag:yaml.org,2002:seq", _construct_seq)


def _parse(text: str, source: str) -> object:
    try:
        return yaml.load(text, Loader=_Loader)  # a SafeLoader: no arbitrary objects
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else 1
        problem = exc.problem or exc.context or "malformed document"
        raise ScenarioError(source, line, "yaml", f"cannot be parsed: {problem}") from exc
    except ReaderError as exc:
        line = text.count("\n", 0, exc.position) + 1
        raise ScenarioError(source, line, "yaml", f"cannot be parsed: {exc.reason}") from exc
    except yaml.YAMLError as exc:
        raise ScenarioError(source, 1, "yaml", f"cannot be parsed: {exc}") from exc


# --- one mapping of the file, with typed accessors ---------------------------------------------

_INSTANT = "must be a timezone-aware ISO 8601 datetime such as '2026-01-31T12:00:00+00:00'"
_HINTS: Final[Mapping[type[InvalidArgument], str]] = {
    FloatNotAllowed: '; decimals must be quoted in scenario files ("15000.5", not 15000.5)',
    NaiveDatetime: "; write an offset such as +00:00 or -03:00",
}


def _one_of(names: Sequence[str]) -> str:
    return "one of " + ", ".join(names)


class _Obj:
    """A mapping of the file with its path (``plans[0]``) and line, and typed accessors.

    Each accessor raises a :class:`ScenarioError` naming the key's line and path.
    """

    def __init__(self, source: str, data: _Map, path: str, line: int) -> None:
        self.source = source
        self.data = data
        self.path = path
        self.line = line

    def field(self, key: str) -> str:
        return f"{self.path}.{key}" if self.path else key

    def line_of(self, key: str) -> int:
        return self.data.key_lines.get(key, self.line)

    def error(self, key: str | None, rule: str, value: object = None) -> ScenarioError:
        """An error at ``key`` (at this mapping itself when ``key`` is None)."""
        if key is None:
            return ScenarioError(self.source, self.line, self.path or "scenario", rule, value)
        return ScenarioError(self.source, self.line_of(key), self.field(key), rule, value)

    def keys(
        self, required: Sequence[str], optional: Sequence[str] = (), expected: str = ""
    ) -> None:
        """Refuse unknown keys (naming them), then missing required ones."""
        allowed = (*required, *optional)
        for key, line in self.data.key_lines.items():
            if not isinstance(key, str) or key not in allowed:
                rule = f"unknown key; expected {expected or _one_of(allowed)}"
                raise ScenarioError(self.source, line, self.field(str(key)), rule)
        for key in required:
            if key not in self.data:
                raise ScenarioError(
                    self.source, self.line, self.field(key), "required key is missing"
                )

    def has(self, key: str) -> bool:
        """Whether ``key`` is given a value (a null counts as not given)."""
        return self.data.get(key) is not None

    def value(self, key: str) -> object:
        if key not in self.data:
            raise ScenarioError(self.source, self.line, self.field(key), "required key is missing")
        value = self.data[key]
        if value is None:
            raise self.error(key, "must not be null")
        return value

    @contextmanager
    def checks(self, key: str | Mapping[str, str]) -> Iterator[None]:
        """Turn a domain error into a ScenarioError at ``key``.

        ``key`` may map the domain's field names to this mapping's keys (``{"amount": "price"}``);
        an unmapped field is reported at this mapping's line.
        """
        try:
            yield
        except ScenarioError:
            raise
        except InvalidArgument as exc:
            name = key if isinstance(key, str) else key.get(exc.field)
            rule = exc.rule + next((h for t, h in _HINTS.items() if isinstance(exc, t)), "")
            if name is None:
                field = self.field(exc.field)
                raise ScenarioError(self.source, self.line, field, rule, exc.value) from exc
            shown = self.data.get(name, exc.value)
            raise self.error(name, rule, shown) from exc

    def text(self, key: str) -> str:
        value = self.value(key)
        with self.checks(key):
            return _checks.text(key, value)

    def choice(self, key: str, options: Sequence[str]) -> str:
        value = self.value(key)
        if not isinstance(value, str) or value not in options:
            raise self.error(key, f"must be {_one_of(options)}", value)
        return value

    def integer(self, key: str, minimum: int) -> int:
        value = self.value(key)
        with self.checks(key):
            return _checks.integer(key, value, minimum=minimum)

    def boolean(self, key: str) -> bool:
        value = self.value(key)
        if not isinstance(value, bool):
            raise self.error(key, "must be true or false", value)
        return value

    def decimal(self, key: str, *, minimum: int | None = None, positive: bool = False) -> Decimal:
        """An exact decimal, from a string or an int (a float is refused, and told to quote)."""
        value = self.value(key)
        with self.checks(key):
            result = exact(value, key)
        if minimum is not None and result < minimum:
            raise self.error(key, f"must be >= {minimum}", value)
        if positive and result <= 0:
            raise self.error(key, "must be > 0", value)
        return result

    def number(self, key: str) -> int | float:
        """A plain number (an int, or a float: settings are not money)."""
        value = self.value(key)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self.error(key, "must be a number", value)
        return value

    def currency(self, key: str) -> str:
        code = self.text(key)
        with self.checks(key):
            Currency.of(code)
        return code

    def instant(self, key: str) -> datetime:
        """An aware instant, in UTC: an ISO 8601 string, or a datetime YAML read unquoted."""
        value = self.value(key)
        parsed: object = value
        if isinstance(value, str):
            try:
                parsed = datetime.fromisoformat(value.strip())
            except ValueError:
                raise self.error(key, _INSTANT, value) from None
        if not isinstance(parsed, datetime):
            raise self.error(key, _INSTANT, value)
        with self.checks(key):
            return _checks.aware(key, parsed)

    def day(self, key: str) -> date:
        value = self.value(key)
        rule = "must be a date such as '2026-01-01'"
        if isinstance(value, datetime):
            raise self.error(key, rule, value)
        if isinstance(value, date):
            return value
        if isinstance(value, str):
            try:
                return date.fromisoformat(value.strip())
            except ValueError:
                pass
        raise self.error(key, rule, value)

    def ref(self, key: str, known: Mapping[str, int], kind: str) -> str:
        """A ref that must name one of ``known`` (refs to their lines)."""
        value = self.text(key)
        if value not in known:
            names = ", ".join(known) or "none"
            raise self.error(key, f"must name a {kind} of this scenario (known: {names})", value)
        return value

    def mapping(self, key: str) -> _Obj:
        value = self.value(key)
        if not isinstance(value, _Map):
            raise self.error(key, "must be a mapping", value)
        return _Obj(self.source, value, self.field(key), self.line_of(key))

    def items(self, key: str) -> list[_Obj]:
        """A list of mappings; an absent or null key is an empty list."""
        if not self.has(key):
            return []
        value = self.value(key)
        if not isinstance(value, _Seq):
            raise self.error(key, "must be a list", value)
        out = []
        for index, (item, line) in enumerate(zip(value, value.item_lines, strict=True)):
            path = f"{self.field(key)}[{index}]"
            if not isinstance(item, _Map):
                raise ScenarioError(self.source, line, path, "must be a mapping", item)
            out.append(_Obj(self.source, item, path, line))
        return out

    def integers(self, key: str, minimum: int) -> list[int]:
        value = self.value(key)
        if not isinstance(value, _Seq):
            raise self.error(key, f"must be a list of integers >= {minimum}", value)
        out = []
        for index, (item, line) in enumerate(zip(value, value.item_lines, strict=True)):
            try:
                out.append(_checks.integer(key, item, minimum=minimum))
            except InvalidArgument as exc:
                path = f"{self.field(key)}[{index}]"
                raise ScenarioError(self.source, line, path, exc.rule, item) from exc
        return out


def _unique(obj: _Obj, key: str, seen: dict[str, int], kind: str) -> str:
    value = obj.text(key)
    if value in seen:
        raise obj.error(key, f"duplicate {kind}; first defined on line {seen[value]}", value)
    seen[value] = obj.line_of(key)
    return value


# --- the sections ------------------------------------------------------------------------------


def _scenario(top: _Obj) -> Scenario:
    top.keys(
        ("name", "start", "until", "plans", "customers", "subscriptions"),
        ("proration", "settings", "fake_gateway", "exchange_rates", "events", "expect"),
    )
    name = top.text("name")
    start = top.instant("start")
    until = top.instant("until")
    if until <= start:
        raise top.error("until", "must be after start", top.data["until"])
    proration = ProrationUnit.SECOND
    if top.has("proration"):
        with top.checks("proration"):
            proration = _checks.member(ProrationUnit, top.data["proration"], "proration")
    settings = _settings(top.mapping("settings")) if top.has("settings") else {}
    pending = _fake_gateway(top.mapping("fake_gateway")) if top.has("fake_gateway") else None
    rates = _exchange_rates(top)
    plans, plan_lines = _plans(top, rates)
    customers, customer_lines = _customers(top)
    subscriptions, subscription_lines = _subscriptions(
        top, start, until, plan_lines, customer_lines
    )
    items = top.items("events")
    _subscribed_refs(items, subscription_lines)
    refs = {"plan": plan_lines, "customer": customer_lines, "subscription": subscription_lines}
    events = [_event(event, start, until, refs) for event in items]
    return Scenario(
        name=name,
        start=start,
        until=until,
        proration=proration,
        exchange_rates=rates,
        plans=plans,
        customers=customers,
        subscriptions=subscriptions,
        events=tuple(sorted(events, key=lambda event: event.at)),
        expect=_expectations(top),
        source=top.source,
        settings=MappingProxyType(settings),
        fake_pending_for=pending,
    )


def _settings(item: _Obj) -> dict[str, object]:
    """The ``settings`` section: engine settings by name, each checked as the engine checks it."""
    if "proration" in item.data:
        rule = "is the top-level proration key, not a setting"
        raise ScenarioError(item.source, item.line_of("proration"), item.field("proration"), rule)
    item.keys((), SETTINGS)
    values: dict[str, object] = {}
    for name in SETTINGS:
        if not item.has(name):
            continue
        if name in _NUMBER_SETTINGS:
            values[name] = item.number(name)
        elif name == "refunds_return_credit":
            values[name] = item.boolean(name)
        elif name == "batch_size":
            values[name] = item.integer(name, 1)
        else:
            values[name] = item.text(name)
    with item.checks({name: name for name in SETTINGS}):
        Settings(**values)  # type: ignore[arg-type]  # each value checked, naming its field
    return values


def _fake_gateway(item: _Obj) -> timedelta | None:
    """The ``fake_gateway`` section: how long the in-process fake's waiting charges wait."""
    item.keys((), ("pending_seconds",))
    if not item.has("pending_seconds"):
        return None
    seconds = item.number("pending_seconds")
    if seconds < 0:
        raise item.error("pending_seconds", "must be >= 0", seconds)
    return timedelta(seconds=seconds)


def _subscribed_refs(items: Sequence[_Obj], subscriptions: dict[str, int]) -> None:
    """Add the refs of the subscriptions ``subscribe`` events create to ``subscriptions``, so
    that other events can name them (each must be new)."""
    for item in items:
        body = item.data.get("subscribe")
        if isinstance(body, _Map) and body.get("ref") is not None:
            obj = _Obj(item.source, body, item.field("subscribe"), item.line_of("subscribe"))
            _unique(obj, "ref", subscriptions, "subscription ref")


def _expectations(top: _Obj) -> Mapping[str, object] | None:
    """The optional ``expect`` section, as plain data: checked against the report after a run."""
    if not top.has("expect"):
        return None
    expect = top.data["expect"]
    if not isinstance(expect, _Map):
        raise top.error("expect", "must be a mapping of report sections to expected values")
    plain = _plain(expect)
    assert isinstance(plain, dict)
    return MappingProxyType(plain)


def _plain(value: object) -> object:
    if isinstance(value, _Map):
        return {str(key): _plain(item) for key, item in value.items()}
    if isinstance(value, _Seq):
        return [_plain(item) for item in value]
    if isinstance(value, datetime):
        return value.isoformat()
    return value


def _exchange_rates(top: _Obj) -> tuple[ExchangeRate, ...]:
    rates: list[ExchangeRate] = []
    seen: dict[tuple[str, str, date], int] = {}
    for item in top.items("exchange_rates"):
        item.keys(("date", "from", "to", "rate"))
        day = item.day("date")
        source = item.currency("from")
        target = item.currency("to")
        value = item.decimal("rate")
        with item.checks({"date": "date", "rate": "rate", "target": "to"}):
            rate = ExchangeRate.of(day, source, target, value)
        key = (source, target, day)
        if key in seen:
            rule = f"duplicate {source}->{target} rate for this date; first on line {seen[key]}"
            raise item.error("date", rule, item.data["date"])
        seen[key] = item.line
        rates.append(rate)
    return tuple(rates)


_PLAN_FIELDS: Final = {
    "code": "code",
    "name": "name",
    "amount": "price",
    "price": "price",
    "currency": "currency",
    "interval": "interval",
    "interval_count": "interval_count",
    "trial_days": "trial_days",
    "cycles": "cycles",
    "status": "status",
}

_PLAN_OPTIONAL: Final = (
    "interval",
    "interval_count",
    "trial_days",
    "cycles",
    "status",
    "retry",
    "charge_currency",
)

_RETRY_FIELDS: Final = {
    "retry.delays_days": "delays_days",
    "retry.delays": "delays_days",
    "retry.then": "then",
    "retry.max_attempts": "max_attempts",
}


def _plans(top: _Obj, rates: Sequence[ExchangeRate]) -> tuple[tuple[Plan, ...], dict[str, int]]:
    plans: list[Plan] = []
    codes: dict[str, int] = {}
    pairs = {(rate.source, rate.target) for rate in rates}
    for item in top.items("plans"):
        item.keys(
            ("code", "name", "price", "currency"),
            _PLAN_OPTIONAL,
        )
        code = _unique(item, "code", codes, "plan code")
        name = item.text("name")
        price = item.decimal("price")
        currency = item.currency("currency")
        charge = item.currency("charge_currency") if item.has("charge_currency") else None
        retry = _retry(item.mapping("retry")) if item.has("retry") else None
        with item.checks(_PLAN_FIELDS):
            plan = Plan.of(
                code=code,
                name=name,
                price=price,
                currency=currency,
                interval=item.text("interval") if item.has("interval") else "month",
                interval_count=item.integer("interval_count", 1)
                if item.has("interval_count")
                else 1,
                trial_days=item.integer("trial_days", 0) if item.has("trial_days") else 0,
                cycles=item.integer("cycles", 1) if item.has("cycles") else None,
                status=item.text("status") if item.has("status") else "active",
                retry=retry,
                charge_currency=charge,
            )
        if plan.billing_currency != plan.price.currency:
            pair = (plan.price.currency, plan.billing_currency)
            if pair not in pairs:
                rule = f"needs {pair[0]}->{pair[1]} rates in exchange_rates"
                raise item.error("charge_currency", rule, charge)
        plans.append(plan)
    return tuple(plans), codes


def _retry(item: _Obj) -> RetryPolicy:
    item.keys((), ("delays_days", "delays_seconds", "then", "max_attempts"))
    if item.has("delays_days") == item.has("delays_seconds"):
        given = "delays_seconds" if item.has("delays_seconds") else None
        if given is None:
            raise ScenarioError(
                item.source, item.line, item.field("delays_days"), "required key is missing"
            )
        rule = "is a second schedule; give delays_days or delays_seconds, not both"
        raise item.error(given, rule)
    in_days = item.has("delays_days")
    delays = item.integers("delays_days" if in_days else "delays_seconds", 1)
    then = item.text("then") if item.has("then") else "unpaid"
    attempts = item.integer("max_attempts", 1) if item.has("max_attempts") else None
    if in_days:
        with item.checks(_RETRY_FIELDS):
            return RetryPolicy.of(delays, then=then, max_attempts=attempts)
    fields = {**_RETRY_FIELDS, "retry.delays": "delays_seconds"}
    with item.checks(fields):
        return RetryPolicy(
            delays=tuple(timedelta(seconds=second) for second in delays),
            max_attempts=len(delays) + 1 if attempts is None else attempts,
            then=AfterRetries.parse(then),
        )


def _customers(top: _Obj) -> tuple[tuple[CustomerSpec, ...], dict[str, int]]:
    customers: list[CustomerSpec] = []
    refs: dict[str, int] = {}
    for item in top.items("customers"):
        item.keys(("ref", "timezone"), ("gateway", "payment", "credit"))
        ref = _unique(item, "ref", refs, "customer ref")
        timezone = item.text("timezone")
        with item.checks("timezone"):
            _checks.timezone(timezone)
        customers.append(
            CustomerSpec(
                ref=ref,
                timezone=timezone,
                gateway=_gateway(item) if item.has("gateway") else "fake",
                payment=item.choice("payment", CUSTOMER_PAYMENTS)
                if item.has("payment")
                else "approve",
                credit=item.decimal("credit", minimum=0) if item.has("credit") else Decimal(0),
                line=item.line,
            )
        )
    return tuple(customers), refs


def _gateway(item: _Obj) -> str:
    gateway = item.text("gateway")
    available = tuple(simulation.names())
    if gateway not in available:
        rule = f"must be {_one_of(available)}"
        raise item.error("gateway", rule, gateway)
    return gateway


def _subscriptions(
    top: _Obj,
    start: datetime,
    until: datetime,
    plans: Mapping[str, int],
    customers: Mapping[str, int],
) -> tuple[tuple[SubscriptionSpec, ...], dict[str, int]]:
    subscriptions: list[SubscriptionSpec] = []
    refs: dict[str, int] = {}
    for item in top.items("subscriptions"):
        item.keys(("ref", "customer", "plan"), ("start", "trial_end", "tax", "prorate", "cycles"))
        ref = _unique(item, "ref", refs, "subscription ref")
        customer = item.ref("customer", customers, "customer")
        plan = item.ref("plan", plans, "plan")
        begins = item.instant("start") if item.has("start") else start
        if not start <= begins <= until:
            rule = "must be within the scenario's start and until"
            raise item.error("start", rule, item.data["start"])
        subscriptions.append(
            SubscriptionSpec(
                ref=ref,
                customer=customer,
                plan=plan,
                start=begins,
                trial_end=item.instant("trial_end") if item.has("trial_end") else None,
                tax=_tax(item.mapping("tax")) if item.has("tax") else None,
                prorate=item.boolean("prorate") if item.has("prorate") else True,
                cycles=item.integer("cycles", 1) if item.has("cycles") else None,
                line=item.line,
            )
        )
    return tuple(subscriptions), refs


_TAX_FIELDS: Final = {
    "tax.name": "name",
    "tax.percent": "percent",
    "tax.inclusive": "inclusive",
    "tax.rounding": "rounding",
    "tax.mode": "mode",
}


def _tax(item: _Obj) -> TaxRate:
    item.keys(("name", "percent"), ("inclusive", "rounding", "mode"))
    name = item.text("name")
    percent = item.decimal("percent")
    inclusive = item.boolean("inclusive") if item.has("inclusive") else False
    rounding = item.text("rounding") if item.has("rounding") else TaxRounding.PER_INVOICE
    mode = item.text("mode") if item.has("mode") else Rounding.HALF_UP
    with item.checks(_TAX_FIELDS):
        return TaxRate.of(name, percent, inclusive=inclusive, rounding=rounding, mode=mode)


def _event(
    item: _Obj, start: datetime, until: datetime, refs: Mapping[str, Mapping[str, int]]
) -> EventSpec:
    expected = "at, idempotency_key and one action: " + ", ".join(ACTIONS)
    item.keys(("at",), ("idempotency_key", *ACTIONS), expected=expected)
    actions = [key for key in item.data if isinstance(key, str) and key in ACTIONS]
    if not actions:
        raise item.error(None, f"must have one action: {_one_of(tuple(ACTIONS))}")
    if len(actions) > 1:
        rule = f"is a second action; an event has exactly one (this one has {actions[0]})"
        raise item.error(actions[1], rule)
    action = actions[0]
    at = item.instant("at")
    if not start <= at <= until:
        rule = f"must be within the scenario's start and until ({start.isoformat()} to "
        raise item.error("at", rule + f"{until.isoformat()})", item.data["at"])
    key = item.text("idempotency_key") if item.has("idempotency_key") else None
    body = item.mapping(action)
    required, optional = ACTIONS[action]
    body.keys(required, optional)
    args = {name: _argument(body, name, at, refs) for name in required}
    args |= {name: _argument(body, name, at, refs) for name in optional if body.has(name)}
    return EventSpec(
        at=at,
        action=action,
        args=MappingProxyType(args),
        idempotency_key=key,
        line=item.line,
    )


def _argument(body: _Obj, name: str, at: datetime, refs: Mapping[str, Mapping[str, int]]) -> object:
    """The typed value of one action argument (refused when missing or null)."""
    match name:
        case "subscription" | "customer" | "plan":
            return body.ref(name, refs[name], name)
        case "behavior":
            with body.checks(name):
                return _checks.member(ProrationBehavior, body.data[name], name)
        case "payment":
            return body.choice(name, PAYMENT_BEHAVIORS)
        case "at_period_end" | "prorate":
            return body.boolean(name)
        case "resume_at":
            resume_at = body.instant(name)
            if resume_at <= at:
                raise body.error(name, "must be after the event's at", body.data[name])
            return resume_at
        case "start":
            begins = body.instant(name)
            if begins < at:
                raise body.error(name, "must not be before the event's at", body.data[name])
            return begins
        case "trial_end":
            return body.instant(name)
        case "amount":
            return body.decimal(name, positive=True)
        case "currency":
            return body.currency(name)
        case "attempt" | "cycles":
            return body.integer(name, 1)
        case "lose_answer" | "when":
            return body.choice(name, LOST_ANSWERS)
        case "delivery":
            return body.choice(name, DELIVERIES)
        case "gateway":
            return _gateway(body)
        case "tax":
            return _tax(body.mapping(name))
        case _:  # invoice, a subscribe's ref (checked new by _subscribed_refs)
            return body.text(name)
