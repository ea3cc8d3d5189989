"""Build a :class:`~billing.reports.model.Report` from an engine's database.

The figures are read with a handful of read-only, set-based SQL queries over the store's tables
(``billing/store/tables.py``), through the engine's own SQLAlchemy engine, so a report of
hundreds of thousands of invoices takes about a second; the engine's API would load every
invoice as a domain object. The books are checked with :meth:`billing.Engine.audit`.

Months are UTC calendar months, cut to the window: a report from January 15 has a first month
of January 15 to February 1. Each instant a figure is dated by:

* invoiced: the invoice's ``finalized_at``;
* collected: a succeeded payment's ``updated_at`` (when its answer was recorded, at the billing
  instant for a charge that succeeded at once), net of the succeeded refunds dated by theirs;
* new, churned, MRR, paying: the subscriptions' events (``subscription.created``,
  ``canceled``, ``ended``, and every status change and ``plan_changed``), replayed in order;
* invoices by status: the invoice's ``created_at``; dunning: the invoice's first failed attempt.

Balances (credit, debt, open invoices) and the audit are the database's state when the report is
built, which for a simulation is its end.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import UTC, datetime
from fractions import Fraction
from typing import Any

from sqlalchemy import ColumnElement, Connection, case, func, select

from billing.domain import _checks
from billing.domain.errors import InvalidArgument
from billing.engine import Engine
from billing.reports.model import (
    BOOK_FIELDS,
    INVOICE_STATUSES,
    Audit,
    Balance,
    Churn,
    Dunning,
    InvoiceCount,
    Month,
    Report,
)
from billing.services.audit import AuditReport
from billing.store.tables import metadata

_LIFECYCLE = {
    "subscription.created": "scheduled",
    "subscription.trial_started": "trialing",
    "subscription.activated": "active",
    "subscription.past_due": "past_due",
    "subscription.unpaid": "unpaid",
    "subscription.paused": "paused",
    "subscription.resumed": "active",
    "subscription.canceled": "canceled",
    "subscription.ended": "ended",
    "subscription.plan_changed": None,
}
"""The events that change a subscription's status (to the one named) or its plan."""
_PAYING = frozenset({"active", "past_due"})
_STOPPED = frozenset({"canceled", "ended"})
_MONTHS_PER = {
    "day": Fraction(365, 12),
    "week": Fraction(52, 12),
    "month": Fraction(1),
    "year": Fraction(1, 12),
}
"""How many of each interval unit a month holds, for normalising prices to a month."""


def build_report(
    engine: Engine | Sequence[Engine],
    *,
    start: datetime,
    end: datetime,
    title: str,
    audit: AuditReport | None = None,
    parameters: Sequence[tuple[str, str]] | Mapping[str, str] = (),
) -> Report:
    """The report of ``engine``'s history from ``start`` to ``end`` (aware instants).

    Given several engines, whose databases hold distinct customers (the parts of one
    simulation), the report is over all of them, as if they were one database.
    ``audit`` is a result of :meth:`~billing.Engine.audit` already at hand (the audit is run
    otherwise); ``parameters`` are shown with the report as given (what made the history).
    Raises :class:`~billing.domain.errors.InvalidArgument` for a window that ends before it
    starts, and :class:`~billing.domain.errors.NaiveDatetime` for a naive instant.
    """
    start = _checks.aware("start", start).astimezone(UTC)
    end = _checks.aware("end", end).astimezone(UTC)
    if end <= start:
        raise InvalidArgument("end", "must be later than start", end)
    if not isinstance(title, str):
        raise InvalidArgument("title", "must be a string", title)
    pairs = tuple(parameters.items()) if isinstance(parameters, Mapping) else tuple(parameters)
    engines = [engine] if isinstance(engine, Engine) else list(engine)
    bounds = month_bounds(start, end)
    checked = AuditReport.combined(e.audit() for e in engines) if audit is None else audit
    with ExitStack() as stack:
        connections = [stack.enter_context(e.store.engine.connect()) for e in engines]
        reader = _Reader(connections, bounds)
        invoiced = reader.invoiced()
        captured = reader.captured()
        refunded = reader.refunded()
        lifecycle = reader.lifecycle(reader.plans())
        invoices = reader.invoices_by_status()
        dunning = reader.dunning()
        balances = reader.balances()
    months = tuple(
        Month(
            label=f"{bounds[i]:%Y-%m}",
            start=bounds[i],
            end=bounds[i + 1],
            invoiced=_clean(invoiced[i]),
            collected=_clean(_minus(captured[i], refunded[i])),
            refunded=_clean(refunded[i]),
            mrr=_clean(lifecycle.mrr[i]),
            new=lifecycle.new[i],
            churned=lifecycle.churned[i],
            live_at_start=lifecycle.live[i],
            paying=lifecycle.paying[i],
        )
        for i in range(len(bounds) - 1)
    )
    churn = Churn(
        live_at_start=lifecycle.live[0],
        new=sum(lifecycle.new),
        churned=sum(lifecycle.churned),
        live_at_end=lifecycle.live[-1],
    )
    return Report(
        title=title,
        start=start,
        end=end,
        months=months,
        invoices=invoices,
        dunning=dunning,
        churn=churn,
        balances=balances,
        audit=_audit(checked),
        parameters=tuple((str(key), str(value)) for key, value in pairs),
    )


def month_bounds(start: datetime, end: datetime) -> list[datetime]:
    """``start``, every UTC month start strictly between ``start`` and ``end``, and ``end``."""
    bounds = [start]
    year, month = start.year, start.month
    while True:
        year, month = (year + 1, 1) if month == 12 else (year, month + 1)
        boundary = datetime(year, month, 1, tzinfo=UTC)
        if boundary >= end:
            break
        bounds.append(boundary)
    bounds.append(end)
    return bounds


def _clean(amounts: Mapping[str, int]) -> dict[str, int]:
    """Sorted by currency."""
    return {code: amounts[code] for code in sorted(amounts)}


def _minus(left: Mapping[str, int], right: Mapping[str, int]) -> dict[str, int]:
    return {code: left.get(code, 0) - right.get(code, 0) for code in set(left) | set(right)}


def _audit(report: AuditReport) -> Audit:
    books: defaultdict[str, dict[str, int]] = defaultdict(lambda: dict.fromkeys(BOOK_FIELDS, 0))
    for (_, currency), book in report.books.items():
        for name in BOOK_FIELDS:
            books[currency][name] += getattr(book, name)
    return Audit(
        balanced=report.balanced,
        findings=tuple(str(finding) for finding in report.findings),
        books={code: books[code] for code in sorted(books)},
    )


@dataclass(slots=True)
class _Lifecycle:
    new: list[int]
    churned: list[int]
    live: list[int]
    """Per boundary (one more than months): subscriptions created and not stopped before it."""
    paying: list[int]
    mrr: list[dict[str, int]]


@dataclass(frozen=True, slots=True)
class _Plan:
    currency: str
    monthly: Fraction
    """The price normalised to a month, in minor units."""


class _Reader:
    """The report's queries on the connections to its databases (their rows are added up);
    ``bounds`` are the months' boundaries."""

    def __init__(self, connections: Sequence[Connection], bounds: list[datetime]) -> None:
        self.connections = connections
        self.bounds = bounds
        self.tables = metadata.tables

    def _rows(self, query: Any) -> Iterator[Any]:
        """The query's rows from every database, one database after the other."""
        for connection in self.connections:
            yield from connection.execute(query)

    def _month(self, instant: Any) -> ColumnElement[Any]:
        """The month (0-based) an instant falls in; only for rows within the window."""
        return case(
            *((instant < boundary, index) for index, boundary in enumerate(self.bounds[1:])),
            else_=-1,
        )

    def _in_window(self, instant: Any) -> ColumnElement[bool]:
        within: ColumnElement[bool] = (instant >= self.bounds[0]) & (instant < self.bounds[-1])
        return within

    def _by_month(self, query: Any) -> list[dict[str, int]]:
        months: list[dict[str, int]] = [{} for _ in self.bounds[1:]]
        for month, currency, amount in self._rows(query):
            if month >= 0 and amount:
                months[month][currency] = months[month].get(currency, 0) + int(amount)
        return months

    def invoiced(self) -> list[dict[str, int]]:
        invoices = self.tables["invoices"]
        month = self._month(invoices.c.finalized_at)
        return self._by_month(
            select(month, invoices.c.currency, func.sum(invoices.c.total_minor))
            .where(invoices.c.status.not_in(["void", "draft"]))
            .where(self._in_window(invoices.c.finalized_at))
            .group_by(month, invoices.c.currency)
        )

    def captured(self) -> list[dict[str, int]]:
        return self._succeeded_by_month("payments")

    def refunded(self) -> list[dict[str, int]]:
        return self._succeeded_by_month("refunds")

    def _succeeded_by_month(self, name: str) -> list[dict[str, int]]:
        """The amounts of a table's succeeded rows (payments, refunds) by the month they
        settled in, per currency."""
        table = self.tables[name]
        at = func.coalesce(table.c.updated_at, table.c.created_at)
        month = self._month(at)
        return self._by_month(
            select(month, table.c.currency, func.sum(table.c.amount_minor))
            .where(table.c.status == "succeeded")
            .where(self._in_window(at))
            .group_by(month, table.c.currency)
        )

    def plans(self) -> dict[str, _Plan]:
        plans = self.tables["plans"]
        query = select(
            plans.c.code,
            plans.c.price_minor,
            plans.c.price_currency,
            plans.c.interval,
            plans.c.interval_count,
        )
        return {
            code: _Plan(currency, Fraction(int(price)) * _MONTHS_PER[unit] / int(count))
            for code, price, currency, unit, count in self._rows(query)
        }

    def lifecycle(self, plans: Mapping[str, _Plan]) -> _Lifecycle:
        """Replay every subscription's status and plan changes up to the window's end."""
        events = self.tables["events"]
        query = (
            select(events.c.subscription_id, events.c.name, events.c.at, events.c.payload)
            .where(events.c.name.in_(sorted(_LIFECYCLE)))
            .where(events.c.subscription_id.is_not(None))
            .where(events.c.at < self.bounds[-1])
            .order_by(events.c.seq)
        )
        histories: defaultdict[str, list[tuple[str, datetime, Any]]] = defaultdict(list)
        for subscription_id, name, at, payload in self._rows(query):
            histories[subscription_id].append((name, _utc(at), payload))
        months = len(self.bounds) - 1
        result = _Lifecycle(
            new=[0] * months,
            churned=[0] * months,
            live=[0] * (months + 1),
            paying=[0] * months,
            mrr=[{} for _ in range(months)],
        )
        mrr: list[defaultdict[str, Fraction]] = [defaultdict(Fraction) for _ in range(months)]
        for history in histories.values():
            self._replay(history, plans, result, mrr)
        for index, sums in enumerate(mrr):
            result.mrr[index] = {code: _half_up(value) for code, value in sums.items() if value}
        return result

    def _replay(
        self,
        history: Iterable[tuple[str, datetime, Any]],
        plans: Mapping[str, _Plan],
        result: _Lifecycle,
        mrr: list[defaultdict[str, Fraction]],
    ) -> None:
        status: str | None = None
        plan: str | None = None
        boundary = 0
        bounds = self.bounds

        def reached(until: datetime | None) -> None:
            """Record the state at every boundary before ``until`` (all, for ``None``)."""
            nonlocal boundary
            while boundary < len(bounds) and (until is None or bounds[boundary] <= until):
                if status is not None and status not in _STOPPED:
                    result.live[boundary] += 1
                priced = None if plan is None else plans.get(plan)
                if boundary > 0 and status in _PAYING and priced is not None:
                    result.paying[boundary - 1] += 1
                    mrr[boundary - 1][priced.currency] += priced.monthly
                boundary += 1

        for name, at, payload in history:
            reached(at)
            month = _month_of(bounds, at)
            if name == "subscription.created":
                plan = str(payload.get("plan_code"))
                if month is not None:
                    result.new[month] += 1
            elif name == "subscription.plan_changed":
                plan = str(payload.get("to_plan"))
            elif (
                name in ("subscription.canceled", "subscription.ended")
                and month is not None
                and status not in _STOPPED
            ):
                result.churned[month] += 1
            new_status = _LIFECYCLE[name]
            if new_status is not None:
                status = new_status
        reached(None)

    def invoices_by_status(self) -> tuple[InvoiceCount, ...]:
        invoices = self.tables["invoices"]
        query = (
            select(
                invoices.c.status,
                invoices.c.currency,
                func.count(),
                func.sum(invoices.c.total_minor),
            )
            .where(self._in_window(invoices.c.created_at))
            .group_by(invoices.c.status, invoices.c.currency)
        )
        counts: defaultdict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0])
        for status, currency, count, total in self._rows(query):
            counts[status, currency][0] += int(count)
            counts[status, currency][1] += int(total or 0)
        rows = [
            InvoiceCount(status=status, currency=currency, count=count, total=total)
            for (status, currency), (count, total) in counts.items()
        ]
        order = {status: index for index, status in enumerate(INVOICE_STATUSES)}
        rows.sort(key=lambda r: (order.get(r.status, len(order)), r.status, r.currency))
        return tuple(rows)

    def dunning(self) -> Dunning:
        invoices, payments = self.tables["invoices"], self.tables["payments"]
        first_failed = (
            select(
                payments.c.invoice_id,
                func.min(func.coalesce(payments.c.updated_at, payments.c.created_at)).label(
                    "failed_at"
                ),
            )
            .where(payments.c.status == "failed")
            .group_by(payments.c.invoice_id)
            .subquery()
        )
        failed_at = first_failed.c.failed_at
        query = (
            select(
                invoices.c.status,
                invoices.c.currency,
                func.count(),
                func.sum(invoices.c.total_minor),
            )
            .join(first_failed, first_failed.c.invoice_id == invoices.c.id)
            .where(failed_at >= self.bounds[0])
            .where(failed_at < self.bounds[-1])
            .group_by(invoices.c.status, invoices.c.currency)
        )
        counts: defaultdict[str, int] = defaultdict(int)
        entered: defaultdict[str, int] = defaultdict(int)
        recovered: defaultdict[str, int] = defaultdict(int)
        for status, currency, count, total in self._rows(query):
            counts[status] += int(count)
            entered[currency] += int(total or 0)
            if status == "paid":
                recovered[currency] += int(total or 0)
        return Dunning(
            entered=sum(counts.values()),
            recovered=counts["paid"],
            collecting=counts["open"] + counts["draft"],
            written_off=counts["uncollectible"],
            voided=counts["void"],
            entered_amounts=_clean(entered),
            recovered_amounts=_clean(recovered),
        )

    def balances(self) -> tuple[Balance, ...]:
        tables = self.tables
        credit = self._sums(
            select(
                tables["credit_balances"].c.currency,
                func.sum(tables["credit_balances"].c.amount_minor),
            ).group_by(tables["credit_balances"].c.currency)
        )
        debts = tables["subscription_debts"]
        debt = self._sums(
            select(debts.c.currency, func.sum(debts.c.amount_minor)).group_by(debts.c.currency)
        )
        invoices = tables["invoices"]
        owed = self._sums(
            select(invoices.c.currency, func.sum(invoices.c.total_minor))
            .where(invoices.c.status == "open")
            .group_by(invoices.c.currency)
        )
        return tuple(
            Balance(
                currency=code,
                credit=credit.get(code, 0),
                debt=debt.get(code, 0),
                open_invoices=owed.get(code, 0),
            )
            for code in sorted(set(credit) | set(debt) | set(owed))
        )

    def _sums(self, query: Any) -> dict[str, int]:
        sums: defaultdict[str, int] = defaultdict(int)
        for currency, total in self._rows(query):
            sums[currency] += int(total or 0)
        return sums


def _utc(instant: datetime) -> datetime:
    return instant.replace(tzinfo=UTC) if instant.tzinfo is None else instant.astimezone(UTC)


def _month_of(bounds: Sequence[datetime], at: datetime) -> int | None:
    """The index of the month ``at`` falls in, or ``None`` outside the window."""
    if at < bounds[0] or at >= bounds[-1]:
        return None
    for index in range(len(bounds) - 1):
        if at < bounds[index + 1]:
            return index
    return None  # pragma: no cover - the window's end was checked above


def _half_up(value: Fraction) -> int:
    """Round a non-negative amount of minor units half-up, once, at the end."""
    return math.floor(value + Fraction(1, 2))
