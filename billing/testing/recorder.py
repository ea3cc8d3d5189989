"""Billing histories written down as scenario files (``billing scenario run`` replays them).

A :class:`ScenarioRecorder` is told, step by step, what a history did in scenario-file terms
(docs/scenarios.md): the engine settings and the fake gateway's waiting time, the plans and
exchange rates, each customer and how their payments go (or that they have no payment method),
each subscription (those made later in the history as ``subscribe`` events), and the events on
the way (plan changes, cancellations, pauses, resumes, credit, refunds of any attempt, lost
refund answers, reconciliations, expired links paid late, payment behaviour changes).
:meth:`ScenarioRecorder.text` writes it as YAML that :func:`billing.scenarios.load_scenario`
parses and :func:`billing.scenarios.run_scenario` replays.
:class:`~billing.testing.machine.BillingMachine` records every history this way, and prints the
one hypothesis shrank a failure to.

This module writes plain YAML and dictionaries: it does not import :mod:`billing.scenarios`
(which sits above :mod:`billing.testing`). The tests prove that what it writes parses and
replays.

What the format cannot say is written as comments, never dropped silently:

* an operation that has no event (``# not replayed: ...``), in its place among the events;
* an event replayed only approximately (``# approximately: ...``), just above it;
* something about the whole history the format has no field for, in the header.

Nothing here needs hypothesis.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any, Final, Protocol

import yaml

from billing.domain.catalog import Plan
from billing.domain.exchange import ExchangeRate
from billing.domain.invoices import Invoice
from billing.domain.ledger import CreditBalance
from billing.domain.money import Money
from billing.domain.payments import PaymentAttempt, PaymentStatus, Refund
from billing.domain.subscriptions import Subscription
from billing.domain.taxes import TaxRate

__all__ = [
    "DIFFERS",
    "REPLAY_COMMAND",
    "Books",
    "ScenarioRecorder",
    "dump_scenario",
    "observed",
    "plan_entry",
    "rate_entry",
    "tax_entry",
]

REPLAY_COMMAND: Final = "billing scenario run"
"""The command that replays a scenario file."""

DIFFERS: Final = (
    "Part of this history is outside what a scenario file can say (see the notes): the replay "
    "may differ from it there."
)
"""The header line of a file whose replay may differ from the history it records."""

_DAY: Final = timedelta(days=1)
_SECOND: Final = timedelta(seconds=1)
_MARGIN: Final = timedelta(days=2)
"""Rates are kept from this long before the start to this long after the end: a customer's local
date (which prices a UF plan) can be a day away from the UTC one."""


def _instant(value: datetime) -> str:
    return value.isoformat()


def _days(delay: timedelta) -> tuple[int, bool]:
    """``delay`` in whole days (rounded up), and whether that was exact."""
    whole = -(-delay // _DAY)
    return whole, delay == whole * _DAY


def _seconds(delay: timedelta) -> tuple[int, bool]:
    """``delay`` in whole seconds (rounded up), and whether that was exact."""
    whole = -(-delay // _SECOND)
    return whole, delay == whole * _SECOND


def _retry_entry(delays: Sequence[timedelta]) -> dict[str, list[int]]:
    """A retry schedule in whole days when it is one, in whole seconds otherwise."""
    if all(_days(delay)[1] for delay in delays):
        return {"delays_days": [_days(delay)[0] for delay in delays]}
    return {"delays_seconds": [_seconds(delay)[0] for delay in delays]}


def plan_entry(plan: Plan) -> dict[str, Any]:
    """A plan as a scenario file's ``plans`` item (every field written out).

    Retry delays are written in days (``delays_days``) when they all are whole days, else in
    seconds (``delays_seconds``); a delay with a fraction of a second is rounded up to a whole
    one, which :meth:`ScenarioRecorder.add_plan` notes.
    """
    policy = plan.retry_policy
    entry: dict[str, Any] = {
        "code": plan.code,
        "name": plan.name,
        "price": plan.price.to_decimal_string(),
        "currency": plan.price.currency.code,
        "interval": plan.interval.unit.value,
        "interval_count": plan.interval.count,
        "trial_days": plan.trial_days,
    }
    if plan.cycles is not None:
        entry["cycles"] = plan.cycles
    if plan.status.value != "active":
        entry["status"] = plan.status.value
    if plan.charge_currency is not None:
        entry["charge_currency"] = plan.charge_currency.code
    entry["retry"] = {
        **_retry_entry(policy.delays),
        "then": policy.then.value,
        "max_attempts": policy.max_attempts,
    }
    return entry


def tax_entry(tax: TaxRate) -> dict[str, Any]:
    """A tax as a scenario file's subscription ``tax``."""
    return {
        "name": tax.name,
        "percent": str(tax.percent),
        "inclusive": tax.inclusive,
        "rounding": tax.rounding.value,
        "mode": tax.mode.value,
    }


def rate_entry(rate: ExchangeRate) -> dict[str, Any]:
    """An exchange rate as a scenario file's ``exchange_rates`` item."""
    return {
        "date": rate.valid_from.isoformat(),
        "from": rate.source.code,
        "to": rate.target.code,
        "rate": str(rate.rate),
    }


def _flow(value: object) -> str:
    """One value on one line, in YAML's flow style (strings that look like numbers, dates or
    booleans are quoted, so they read back as strings)."""
    text = yaml.safe_dump(
        value, default_flow_style=True, sort_keys=False, width=1 << 20, allow_unicode=True
    )
    return text.strip().removesuffix("...").strip()


def dump_scenario(
    document: Mapping[str, Any],
    *,
    header: Sequence[str] = (),
    comments: Mapping[tuple[str, int], Sequence[str]] | None = None,
    trailing: Mapping[str, Sequence[str]] | None = None,
) -> str:
    """A scenario document as YAML: top-level keys in the file's order, one line per list item.

    ``header`` lines become comments at the top; ``comments[(section, index)]`` lines are
    written as comments just above that item of that section, and ``trailing[section]`` lines
    after its last item.
    """
    comments = comments or {}
    trailing = trailing or {}
    lines = [f"# {line}".rstrip() for line in header]
    for key, value in document.items():
        if key == "expect":
            lines.append(
                yaml.safe_dump(
                    {key: value},
                    sort_keys=False,
                    default_flow_style=None,
                    width=100,
                    allow_unicode=True,
                ).rstrip()
            )
        elif isinstance(value, list):
            lines.append(f"{key}:" if value or trailing.get(key) else f"{key}: []")
            for index, item in enumerate(value):
                lines.extend(f"  # {line}" for line in comments.get((key, index), ()))
                lines.append(f"  - {_flow(item)}")
            lines.extend(f"  # {line}" for line in trailing.get(key, ()))
        else:
            lines.append(f"{key}: {_flow(value)}")
    return "\n".join(lines) + "\n"


@dataclass
class _Recorded:
    """A subscription or an event, with the comments that go above it."""

    at: datetime
    entry: dict[str, Any] | None
    """``None`` for an operation the format cannot express (a comment only)."""
    notes: list[str] = field(default_factory=list)


class ScenarioRecorder:
    """A billing history, recorded as it happens, written as a scenario file.

    Refs are the engine's ids: a customer's ref is its customer id, a subscription's its
    subscription id, so the replay gives every object the id the history gave it. Record only
    what the engine accepted: a refused call changed nothing, and the replay would refuse it too
    (exit 2).
    """

    def __init__(self, name: str, start: datetime, *, proration: str = "second") -> None:
        self.name = name
        self.start = start
        self.proration = proration
        self.notes: list[str] = []
        """Header lines: what the format cannot say about the whole history."""
        self._settings: dict[str, Any] = {}
        self._fake_pending: timedelta | None = None
        self._plans: list[Plan] = []
        self._plan_notes: dict[str, list[str]] = {}
        self._rates: list[ExchangeRate] = []
        self._customers: list[dict[str, Any]] = []
        self._customer_notes: dict[int, list[str]] = {}
        self._subscriptions: list[_Recorded] = []
        self._events: list[_Recorded] = []

    # -- recording ---------------------------------------------------------------------------

    def note(self, text: str) -> None:
        """A header note: something about the whole history the format cannot carry."""
        if text not in self.notes:
            self.notes.append(text)

    def setting(self, name: str, value: bool | int | float | str) -> None:
        """An engine setting the history ran with (a field of :class:`~billing.config.Settings`
        a scenario's ``settings`` section takes), written when it is not the default."""
        self._settings[name] = value

    def fake_pending_for(self, delay: timedelta) -> None:
        """How long the in-process fake gateway's waiting charges waited (written as the file's
        ``fake_gateway.pending_seconds``; a fraction of a second is rounded up, and noted)."""
        seconds, exact = _seconds(delay)
        if not exact:
            self.note(
                f"the fake gateway's waiting charges waited {delay}; rounded up to {seconds} s"
            )
        self._fake_pending = timedelta(seconds=seconds)

    def add_plan(self, plan: Plan) -> None:
        exact = all(_seconds(delay)[1] for delay in plan.retry_policy.delays)
        if not exact:
            self._plan_notes.setdefault(plan.code, []).append(
                f"approximately: {plan.code}'s retry delays are not whole seconds; rounded up"
            )
        self._plans.append(plan)

    def add_rates(self, rates: Iterable[ExchangeRate]) -> None:
        self._rates.extend(rates)

    def add_customer(
        self,
        ref: str,
        timezone: str,
        *,
        gateway: str = "fake",
        payment: str = "approve",
        note: str | None = None,
    ) -> None:
        """A customer and how its payments go from the start (``none``: it has no payment
        method). The file creates every customer at the start; one created later is simply not
        used before."""
        entry: dict[str, Any] = {"ref": ref, "timezone": timezone}
        if gateway != "fake":
            entry["gateway"] = gateway
        entry["payment"] = payment
        if note:
            self._customer_notes.setdefault(len(self._customers), []).append(note)
        self._customers.append(entry)

    def add_subscription(
        self,
        ref: str,
        customer: str,
        plan: str,
        *,
        start: datetime,
        trial_end: datetime | None = None,
        cycles: int | None = None,
        tax: TaxRate | None = None,
        prorate: bool = True,
        note: str | None = None,
        created_at: datetime | None = None,
    ) -> None:
        """A subscription the engine accepted, starting at ``start``.

        Made at the history's start (or ``created_at`` not given), it is an item of the file's
        ``subscriptions``, which the file creates at the scenario's start, scheduled to begin at
        ``start``. Made later (``created_at``), it is a ``subscribe`` event at that instant, as
        the history made it (its ``start`` written only when it is not ``created_at``).
        """
        entry: dict[str, Any] = {"ref": ref, "customer": customer, "plan": plan}
        later = created_at is not None and created_at > self.start
        if not later or start != created_at:
            entry["start"] = _instant(start)
        if trial_end is not None:
            entry["trial_end"] = _instant(trial_end)
        if cycles is not None:
            entry["cycles"] = cycles
        if tax is not None:
            entry["tax"] = tax_entry(tax)
        entry["prorate"] = prorate
        notes = [note] if note else []
        if later:
            assert created_at is not None
            made = {"at": _instant(created_at), "subscribe": entry}
            self._events.append(_Recorded(created_at, made, notes))
        else:
            self._subscriptions.append(_Recorded(start, entry, notes))

    def add_event(
        self,
        at: datetime,
        action: str,
        args: Mapping[str, Any],
        *,
        note: str | None = None,
        currency: str | None = None,
    ) -> None:
        """An event the engine accepted: ``action`` is a key of the file's actions table, and
        ``args`` its arguments in file terms (refs, ISO instants, decimal strings).
        ``note`` says how the replay differs from what happened, if it does; ``currency`` is
        that of a ``grant_credit``, written as its ``currency``."""
        body = dict(args)
        if currency is not None:
            body["currency"] = currency
        entry = {"at": _instant(at), action: body}
        notes = [f"approximately: {note}"] if note else []
        self._events.append(_Recorded(at, entry, notes))

    def add_omitted(self, at: datetime, what: str) -> None:
        """Something the history did that no event expresses: a comment in its place."""
        self._events.append(_Recorded(at, None, [f"not replayed: {what} ({_instant(at)})"]))

    # -- writing ------------------------------------------------------------------------------

    def _kept(self, until: datetime) -> tuple[set[str], list[str]]:
        """The subscriptions to write (those of the ``subscriptions`` section that began by
        ``until``, and every one a ``subscribe`` event made), and comments on the others: a
        subscription still scheduled when the history ended never billed anything."""
        kept: set[str] = set()
        dropped: list[str] = []
        for item in self._subscriptions:
            assert item.entry is not None
            if item.at <= until:
                kept.add(item.entry["ref"])
            else:
                dropped.append(
                    f"left out: {item.entry['ref']}, to start at {item.entry['start']}, after "
                    "the history ended"
                )
        for item in self._events:
            made = None if item.entry is None else item.entry.get("subscribe")
            if made is not None:
                kept.add(made["ref"])
        return kept, dropped

    def _used_plans(
        self, subscriptions: Sequence[Mapping[str, Any]], kept: Collection[str]
    ) -> list[Plan]:
        """The plans the written subscriptions, ``subscribe`` events and plan changes use (the
        first plan if none)."""
        used = {entry["plan"] for entry in subscriptions}
        for item in self._events:
            if item.entry is None:
                continue
            made = item.entry.get("subscribe")
            if made is not None:
                used.add(made["plan"])
            change = item.entry.get("change_plan")
            if change is not None and change["subscription"] in kept:
                used.add(change["plan"])
        return [plan for plan in self._plans if plan.code in used] or self._plans[:1]

    def _rates_between(self, start: date, until: date) -> list[ExchangeRate]:
        latest_before: dict[tuple[str, str], ExchangeRate] = {}
        inside: list[ExchangeRate] = []
        for rate in sorted(self._rates, key=lambda r: r.valid_from):
            pair = (rate.source.code, rate.target.code)
            if rate.valid_from < start:
                latest_before[pair] = rate
            elif rate.valid_from <= until:
                inside.append(rate)
        return [*latest_before.values(), *inside]

    def document(
        self, until: datetime, *, expect: Mapping[str, Any] | None = None
    ) -> dict[str, Any]:
        """The scenario as plain data (what :meth:`text` writes, without the comments)."""
        return self._build(until, expect)[0]

    def _build(
        self, until: datetime, expect: Mapping[str, Any] | None
    ) -> tuple[dict[str, Any], dict[tuple[str, int], list[str]], dict[str, list[str]]]:
        until = max(until, self.start + timedelta(seconds=1))
        kept, dropped = self._kept(until)
        comments: dict[tuple[str, int], list[str]] = {}
        trailing: dict[str, list[str]] = {}
        for index, notes in self._customer_notes.items():
            comments[("customers", index)] = list(notes)
        subscriptions: list[dict[str, Any]] = []
        for item in self._subscriptions:
            assert item.entry is not None
            if item.entry["ref"] in kept:
                if item.notes:
                    comments[("subscriptions", len(subscriptions))] = list(item.notes)
                subscriptions.append(item.entry)
        if dropped:
            trailing["subscriptions"] = dropped
        plans = self._used_plans(subscriptions, kept)
        for index, plan in enumerate(plans):
            if self._plan_notes.get(plan.code):
                comments[("plans", index)] = list(self._plan_notes[plan.code])
        events: list[dict[str, Any]] = []
        pending: list[str] = []
        for item in self._events:
            if item.entry is None:
                pending.extend(item.notes)
                continue
            (action,) = (key for key in item.entry if key != "at")
            ref = item.entry[action].get("subscription")
            if ref is not None and ref not in kept:
                pending.append(f"left out: {action} of {ref}, which never started")
                continue
            notes = pending + item.notes
            pending = []
            if notes:
                comments[("events", len(events))] = notes
            events.append(item.entry)
        if pending:
            trailing["events"] = pending
        rates = []
        if any(plan.billing_currency != plan.price.currency for plan in plans):
            rates = self._rates_between((self.start - _MARGIN).date(), (until + _MARGIN).date())
        document: dict[str, Any] = {
            "name": self.name,
            "start": _instant(self.start),
            "until": _instant(until),
            "proration": self.proration,
        }
        if self._settings:
            document["settings"] = dict(self._settings)
        if self._fake_pending is not None:
            document["fake_gateway"] = {"pending_seconds": _seconds(self._fake_pending)[0]}
        if rates:
            document["exchange_rates"] = [rate_entry(rate) for rate in rates]
        document["plans"] = [plan_entry(plan) for plan in plans]
        document["customers"] = list(self._customers)
        document["subscriptions"] = subscriptions
        document["events"] = events
        if expect is not None:
            document["expect"] = _only(expect, kept)
        return document, comments, trailing

    def text(
        self,
        until: datetime,
        *,
        expect: Mapping[str, Any] | None = None,
        header: Sequence[str] = (),
    ) -> str:
        """The scenario file: ``header`` lines, then the notes, as comments at the top."""
        document, comments, trailing = self._build(until, expect)
        lines = list(header)
        marked = [
            note
            for notes in (*comments.values(), *trailing.values())
            for note in notes
            if note.startswith(("approximately:", "not replayed:"))
        ]
        if self.notes or marked:
            lines.append(DIFFERS)
        if self.notes:
            lines.append("The format cannot carry these parts of the history:")
            lines.extend(f"  - {note}" for note in self.notes)
        return dump_scenario(document, header=lines, comments=comments, trailing=trailing)


def _only(expect: Mapping[str, Any], subscriptions: Collection[str]) -> dict[str, Any]:
    """The expectations about the subscriptions written (and everything not about one)."""
    kept: dict[str, Any] = {}
    for section, items in expect.items():
        if section == "subscriptions":
            kept[section] = [item for item in items if item["ref"] in subscriptions]
        else:
            kept[section] = items
    return kept


class Books(Protocol):
    """What :func:`observed` reads: an :class:`~billing.Engine` (this module stays below the
    engine, so that the package imports without it)."""

    def invoices(self) -> list[Invoice]: ...

    def payments(self) -> list[PaymentAttempt]: ...

    def refunds(self, payment_id: str) -> list[Refund]: ...

    def subscriptions(self) -> list[Subscription]: ...

    def credit_balances(self, customer_id: str) -> list[CreditBalance]: ...


def observed(engine: Books, customers: Sequence[str]) -> dict[str, Any]:
    """What the engine holds now, as a scenario file's ``expect`` section: every invoice,
    payment attempt and refund, each subscription, and each of ``customers``' credit, in the
    order (and with the fields) of the report ``billing scenario run`` prints.

    A replay that did exactly what the history did meets it.
    """
    invoices = engine.invoices()
    numbers = {invoice.id: invoice.number for invoice in invoices}
    payments = engine.payments()
    refunds = [
        {
            "invoice": numbers[r.invoice_id],
            "attempt": p.number,
            "amount": r.amount.to_decimal_string(),
            "status": r.status.value,
        }
        for p in payments
        if p.status is PaymentStatus.SUCCEEDED
        for r in engine.refunds(p.id)
    ]
    credit = []
    for ref in customers:
        balances = engine.credit_balances(ref)
        if not balances:
            credit.append({"ref": ref, "credit_balance": "0"})
        for balance in balances:
            credit.append(
                {
                    "ref": ref,
                    "credit_balance": balance.amount.to_decimal_string(),
                    "currency": balance.amount.currency.code,
                }
            )
    return {
        "invoices": [_invoice(invoice) for invoice in invoices],
        "payments": [
            {
                "invoice": numbers[p.invoice_id],
                "attempt": p.number,
                "amount": p.amount.to_decimal_string(),
                "status": p.status.value,
            }
            for p in payments
        ],
        "refunds": refunds,
        "subscriptions": [
            {
                "ref": s.id,
                "status": s.status.value,
                "plan": s.plan.code,
                "debt": s.debt_total.to_decimal_string(),
            }
            for s in engine.subscriptions()
        ],
        "customers": credit,
    }


def _invoice(invoice: Invoice) -> dict[str, Any]:
    return {
        "number": invoice.number,
        "subscription": invoice.subscription_id,
        "status": invoice.status.value,
        "reason": invoice.reason.value,
        "total": invoice.total.to_decimal_string(),
        "credit": sum(
            (line.amount for line in invoice.lines if line.kind.value == "credit"),
            Money.zero(invoice.currency),
        ).to_decimal_string(),
    }
