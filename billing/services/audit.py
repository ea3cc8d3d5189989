"""The books, checked: every peso accounted for, from the database alone.

:func:`audit` reads every invoice, payment, refund, credit balance, subscription and event in one
transaction (only the columns its checks need: invoice lines summed by the database, events
streamed for their order and read in full only where a check needs their payload) and checks the
money rules the engine promises (``docs/concepts.md``, "The money rules"). It changes nothing, so
a host can run it against production as well as a test can run it after every step of a simulated
history (:mod:`billing.testing.machine` does). Each broken rule is a :class:`Finding` naming the
rule and what breaks it.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Table, case, func, select
from sqlmodel import SQLModel

from billing.domain.invoices import InvoiceReason, InvoiceStatus
from billing.domain.subscriptions import Subscription, SubscriptionStatus
from billing.services.context import Context
from billing.store.tables import (
    CreditBalanceRow,
    EventRow,
    InvoiceLineRow,
    InvoiceRow,
    PaymentRow,
    RefundRow,
)
from billing.store.unit_of_work import UNSETTLED, Tx

_PERIODS = (
    InvoiceReason.SUBSCRIPTION_START.value,
    InvoiceReason.RENEWAL.value,
    InvoiceReason.RESUME.value,
)
_S = SubscriptionStatus
_STOPPED_COLLECTING = ("subscription.unpaid", "invoice.awaiting_payment_method")
"""Events that leave an open invoice explicitly to the host (until a new payment method)."""


@dataclass(frozen=True, slots=True)
class Finding:
    """One broken money rule."""

    rule: str
    """``conservation``, ``payments``, ``credit``, ``credit_from_unpaid_time``, ``debt``,
    ``final_debt``, ``orphan``, ``periods``, ``event_order`` or ``refunds``."""
    subject: str
    """What breaks it: an invoice number, a subscription id, ``customer/currency``..."""
    detail: str

    def __str__(self) -> str:
        return f"{self.rule}: {self.subject}: {self.detail}"


@dataclass(frozen=True, slots=True)
class Books:
    """One customer's money in one currency, in minor units."""

    invoiced: int = 0
    """Invoice totals before credit (void invoices left out: their balance is carried)."""
    captured: int = 0
    """Taken by gateways for those invoices."""
    credit_applied: int = 0
    open: int = 0
    """Still owed on open invoices."""
    written_off: int = 0
    """Owed on uncollectible invoices."""
    refunded: int = 0
    """Given back by refunds the gateways confirmed."""
    credit_balance: int = 0


@dataclass(frozen=True, slots=True)
class AuditReport:
    """What :func:`audit` found: the books per customer and currency, and any broken rule."""

    books: dict[tuple[str, str], Books] = field(default_factory=dict)
    findings: tuple[Finding, ...] = ()

    @property
    def balanced(self) -> bool:
        return not self.findings

    @classmethod
    def combined(cls, reports: Iterable[AuditReport]) -> AuditReport:
        """The audits of databases whose customers are distinct, as one."""
        books: dict[tuple[str, str], Books] = {}
        findings: list[Finding] = []
        for report in reports:
            books.update(report.books)
            findings.extend(report.findings)
        return cls(books=books, findings=tuple(findings))


_NAMED = (
    "credit.granted",
    "credit.withdrawn",
    "subscription.plan_changed",
    "subscription.debt_invoiced",
    "subscription.debt_written_off",
    *_STOPPED_COLLECTING,
)
"""The events whose payloads the checks read; the others are read for their order only."""
_STREAMED = 5000
"""Events fetched at a time: the audit's memory does not grow with the events' number."""


def _rows(tx: Tx, row: type[SQLModel], *names: str) -> list[Any]:
    """Every row of a table: the columns ``names`` (all without)."""
    table: Table = row.__table__  # type: ignore[attr-defined]
    columns = [table.c[name] for name in names] if names else [table]
    return list(tx.session.execute(select(*columns)).all())


def _line_sums(tx: Tx) -> dict[str, tuple[int, int]]:
    """Each invoice's lines summed in the database: (all of them, its credit lines)."""
    lines: Table = InvoiceLineRow.__table__  # type: ignore[attr-defined]
    credit = case((lines.c.kind == "credit", lines.c.amount_minor), else_=0)
    query = select(lines.c.invoice_id, func.sum(lines.c.amount_minor), func.sum(credit)).group_by(
        lines.c.invoice_id
    )
    return {row[0]: (int(row[1]), int(row[2])) for row in tx.session.execute(query)}


def audit(ctx: Context) -> AuditReport:
    """Check every money rule against the database; see the module docstring."""
    with ctx.store.transaction() as tx:
        invoices = {
            row.id: row
            for row in _rows(
                tx,
                InvoiceRow,
                *("id", "number", "customer_id", "subscription_id", "currency", "reason"),
                *("status", "total_minor", "period_start", "period_end"),
            )
        }
        lines = _line_sums(tx)
        payments = _rows(
            tx, PaymentRow, "id", "invoice_id", "customer_id", "status", "amount_minor"
        )
        refunds = _rows(
            tx, RefundRow, "payment_id", "status", "amount_minor", "currency", "credit_taken_minor"
        )
        balances = _rows(tx, CreditBalanceRow)
        events: Table = EventRow.__table__  # type: ignore[attr-defined]
        named = list(
            tx.session.execute(
                select(events.c.name, events.c.invoice_id, events.c.payload)
                .where(events.c.name.in_(_NAMED))
                .order_by(events.c.seq)
            )
        )
        order = list(
            _out_of_order(
                tx.session.execute(
                    select(events.c.subscription_id, events.c.at, events.c.name)
                    .where(events.c.subscription_id.is_not(None))
                    .order_by(events.c.seq)
                    .execution_options(yield_per=_STREAMED)
                )
            )
        )
        subscriptions = tx.subscriptions()
    checks = _Checks(invoices, lines, payments, refunds, balances, named, subscriptions)
    checks.refunds_return_credit = ctx.settings.refunds_return_credit
    books = checks.books()
    findings = [
        *_unbalanced(books),
        *checks.invoice_totals(),
        *checks.credit(),
        *checks.credit_from_unpaid_time(),
        *checks.debt(),
        *checks.orphans(),
        *checks.periods(),
        *order,
        *checks.refund_limits(),
    ]
    return AuditReport(books=books, findings=tuple(findings))


def _out_of_order(events: Iterable[Any]) -> Iterator[Finding]:
    """The events of one subscription are recorded in time order (``events`` in the order
    they were recorded: subscription id, instant, name)."""
    last: dict[str, tuple[datetime, str]] = {}
    for subscription_id, at, name in events:
        before = last.get(subscription_id)
        if before is not None and at < before[0]:
            yield Finding(
                "event_order",
                subscription_id,
                f"{name} at {at.isoformat()} recorded after {before[1]} at {before[0].isoformat()}",
            )
        last[subscription_id] = (at, name)


def _unbalanced(books: dict[tuple[str, str], Books]) -> Iterator[Finding]:
    """Per customer and currency: invoiced = captured + credit applied + open + written off."""
    for key, book in sorted(books.items()):
        accounted = book.captured + book.credit_applied + book.open + book.written_off
        if book.invoiced != accounted:
            yield Finding(
                "conservation",
                "/".join(key),
                f"{book.invoiced} invoiced, but {book.captured} captured + "
                f"{book.credit_applied} of credit + {book.open} open + {book.written_off} "
                f"written off = {accounted}",
            )


class _Checks:
    def __init__(
        self,
        invoices: dict[str, Any],
        lines: dict[str, tuple[int, int]],
        payments: list[Any],
        refunds: list[Any],
        balances: list[Any],
        events: list[Any],
        subscriptions: list[Subscription],
    ) -> None:
        """``lines``: each invoice's line sums (:func:`_line_sums`); ``events``: the events
        named in :data:`_NAMED`, in the order they were recorded."""
        self.invoices = invoices
        self.lines = lines
        self.payments = payments
        self.refunds = refunds
        self.balances = balances
        self.events = events
        self.subscriptions = subscriptions
        self.refunds_return_credit = True
        self.captured: defaultdict[str, int] = defaultdict(int)
        for payment in payments:
            if payment.status == "succeeded":
                self.captured[payment.invoice_id] += payment.amount_minor
        self.overpaid: defaultdict[str, int] = defaultdict(int)
        for event in self._named("credit.granted"):
            if event.payload.get("source") == "overpayment":
                self.overpaid[event.payload["invoice_id"]] += event.payload["amount"]["minor"]

    def _named(self, *names: str) -> Iterator[Any]:
        return (event for event in self.events if event.name in names)

    def _credit_used(self, invoice_id: str) -> int:
        used = self.lines.get(invoice_id, (0, 0))[1]
        return -used if used < 0 else 0

    # -- invoices and payments --------------------------------------------------------------
    def invoice_totals(self) -> Iterator[Finding]:
        """Lines sum to the total; a paid invoice was paid exactly once, an unpaid one never
        (money that came after it was settled became credit, as an overpayment)."""
        for invoice in self.invoices.values():
            total = self.lines.get(invoice.id, (0, 0))[0]
            if total != invoice.total_minor:
                yield Finding(
                    "conservation",
                    invoice.number,
                    f"lines sum to {total}, total says {invoice.total_minor}",
                )
            if invoice.total_minor < 0:
                yield Finding(
                    "conservation", invoice.number, f"negative total {invoice.total_minor}"
                )
            expected = invoice.total_minor if invoice.status == InvoiceStatus.PAID.value else 0
            expected += self.overpaid[invoice.id]
            if self.captured[invoice.id] != expected:
                yield Finding(
                    "payments",
                    invoice.number,
                    f"{invoice.status} with a total of {invoice.total_minor}: gateways took "
                    f"{self.captured[invoice.id]}, {expected} expected",
                )

    def books(self) -> dict[tuple[str, str], Books]:
        totals: defaultdict[tuple[str, str], dict[str, int]] = defaultdict(lambda: defaultdict(int))
        for invoice in self.invoices.values():
            if invoice.status == InvoiceStatus.VOID.value:
                continue
            book = totals[(invoice.customer_id, invoice.currency)]
            used = self._credit_used(invoice.id)
            book["invoiced"] += invoice.total_minor + used
            book["captured"] += self.captured[invoice.id] - self.overpaid[invoice.id]
            book["credit_applied"] += used
            if invoice.status == InvoiceStatus.OPEN.value:
                book["open"] += invoice.total_minor
            if invoice.status == InvoiceStatus.UNCOLLECTIBLE.value:
                book["written_off"] += invoice.total_minor
        by_payment = {payment.id: payment for payment in self.payments}
        for refund in self.refunds:
            if refund.status == "succeeded":
                payment = by_payment[refund.payment_id]
                totals[(payment.customer_id, refund.currency)]["refunded"] += refund.amount_minor
        for balance in self.balances:
            totals[(balance.customer_id, balance.currency)]["credit_balance"] = balance.amount_minor
        return {key: Books(**values) for key, values in totals.items()}

    def credit(self) -> Iterator[Finding]:
        """Balance = credit granted (by every source) - credit taken back by refunds - credit
        invoices used; never negative."""
        expected: defaultdict[tuple[str, str], int] = defaultdict(int)
        for event in self._named("credit.granted"):
            amount = event.payload["amount"]
            expected[(event.payload["customer_id"], amount["currency"])] += amount["minor"]
        for event in self._named("credit.withdrawn"):
            amount = event.payload["amount"]
            expected[(event.payload["customer_id"], amount["currency"])] -= amount["minor"]
        for invoice in self.invoices.values():
            expected[(invoice.customer_id, invoice.currency)] -= self._credit_used(invoice.id)
        held = {(b.customer_id, b.currency): b.amount_minor for b in self.balances}
        for key in sorted(set(expected) | set(held)):
            subject = "/".join(key)
            if held.get(key, 0) < 0:
                yield Finding("credit", subject, f"negative balance {held[key]}")
            if held.get(key, 0) != expected[key]:
                yield Finding(
                    "credit",
                    subject,
                    f"balance {held.get(key, 0)}, but grants minus credit used come to "
                    f"{expected[key]}",
                )

    def credit_from_unpaid_time(self) -> Iterator[Finding]:
        """Credit for unused time never exceeds what the subscription's paid invoices paid."""
        earned: defaultdict[str, int] = defaultdict(int)
        for event in self._named("credit.granted"):
            if event.payload.get("source") == "plan_change":
                earned[event.payload["subscription_id"]] += event.payload["amount"]["minor"]
        paid: defaultdict[str, int] = defaultdict(int)
        for invoice in self.invoices.values():
            if invoice.status == InvoiceStatus.PAID.value and invoice.subscription_id:
                paid[invoice.subscription_id] += invoice.total_minor + self._credit_used(invoice.id)
        for subscription_id, amount in sorted(earned.items()):
            if amount > paid[subscription_id]:
                yield Finding(
                    "credit_from_unpaid_time",
                    subscription_id,
                    f"{amount} of credit for unused time, but its paid invoices paid only "
                    f"{paid[subscription_id]}",
                )

    # -- debt -------------------------------------------------------------------------------
    def debt(self) -> Iterator[Finding]:
        """Debt added (upgrades, voided balances) - debt canceled by downgrades = debt invoiced
        + debt written off + debt held; a stopped subscription holds none."""
        owed: defaultdict[str, int] = defaultdict(int)
        for event in self._named("subscription.plan_changed"):
            payload = event.payload
            owed[payload["subscription_id"]] += (
                payload["debt_added"]["minor"] - payload["debt_canceled"]["minor"]
            )
        for event in self._named("subscription.debt_invoiced", "subscription.debt_written_off"):
            owed[event.payload["subscription_id"]] -= event.payload["amount"]["minor"]
        for invoice in self.invoices.values():
            voided = invoice.status == InvoiceStatus.VOID.value
            if invoice.subscription_id is not None and voided:
                owed[invoice.subscription_id] += invoice.total_minor  # its balance is carried
        for subscription in self.subscriptions:
            held = subscription.debt_total.minor
            if subscription.is_final() and held:
                yield Finding(
                    "final_debt", subscription.id, f"{subscription.status} holding {held}"
                )
            if owed[subscription.id] != held:
                yield Finding(
                    "debt",
                    subscription.id,
                    f"holds {held} of debt, but debt added minus debt invoiced or written off "
                    f"comes to {owed[subscription.id]}",
                )

    # -- collection -------------------------------------------------------------------------
    def orphans(self) -> Iterator[Finding]:
        """Every open invoice has a payment in flight, a scheduled retry, or was explicitly left
        waiting for a new payment method."""
        in_flight = {p.invoice_id for p in self.payments if p.status in UNSETTLED}
        left = {event.invoice_id for event in self._named(*_STOPPED_COLLECTING)}
        scheduled: set[str] = set()
        waiting: set[str] = set()
        for subscription in self.subscriptions:
            dunning = [subscription.dunning] if subscription.dunning else []
            for collection in (*dunning, *subscription.collections):
                target = waiting if collection.retry_at is None else scheduled
                target.add(collection.invoice_id)
        for invoice in self.invoices.values():
            if invoice.status != InvoiceStatus.OPEN.value or invoice.id in in_flight:
                continue
            if invoice.id in scheduled or (invoice.id in waiting and invoice.id in left):
                continue
            yield Finding(
                "orphan",
                invoice.number,
                f"open with {invoice.total_minor} due, and nothing will collect it",
            )

    # -- periods and time -------------------------------------------------------------------
    def periods(self) -> Iterator[Finding]:
        """Each subscription's period invoices: none empty, none overlapping, contiguous except
        after a gap a resume explains, and the current period billed."""
        billed: defaultdict[str, list[Any]] = defaultdict(list)
        for invoice in self.invoices.values():
            if invoice.reason in _PERIODS and invoice.subscription_id:
                billed[invoice.subscription_id].append(invoice)
        for subscription in self.subscriptions:
            invoices = sorted(billed[subscription.id], key=lambda i: i.period_start)
            previous: Any = None
            for invoice in invoices:
                if invoice.period_end <= invoice.period_start:
                    yield Finding("periods", invoice.number, "bills an empty period")
                if previous is not None and invoice.period_start < previous.period_end:
                    yield Finding("periods", invoice.number, f"overlaps {previous.number}")
                if (
                    previous is not None
                    and invoice.reason != InvoiceReason.RESUME.value
                    and invoice.period_start != previous.period_end
                ):
                    yield Finding(
                        "periods", invoice.number, f"leaves a gap after {previous.number}"
                    )
                previous = invoice
            current = subscription.current_period
            running = subscription.status in (
                SubscriptionStatus.ACTIVE,
                SubscriptionStatus.PAST_DUE,
            )
            if (
                running
                and current is not None
                and (previous is None or previous.period_end != current.end)
            ):
                yield Finding("periods", subscription.id, "its current period is not invoiced")

    def refund_limits(self) -> Iterator[Finding]:
        """A payment is never refunded beyond its amount; credit given back by refunds is what
        the invoices whose own money (not money that came after they were settled and became
        credit) was refunded in full used; money refunded is never kept as credit too."""
        given: defaultdict[str, int] = defaultdict(int)
        for refund in self.refunds:
            if refund.status != "failed":
                given[refund.payment_id] += refund.amount_minor
        for payment in self.payments:
            if given[payment.id] > payment.amount_minor:
                yield Finding(
                    "refunds",
                    payment.id,
                    f"{given[payment.id]} refunded of a {payment.amount_minor} payment",
                )
        returned: defaultdict[str, int] = defaultdict(int)
        for event in self._named("credit.granted"):
            if event.payload.get("source") == "refund":
                returned[event.payload["invoice_id"]] += event.payload["amount"]["minor"]
        # per invoice: its own money refunded (not money that had become credit)
        own_refunded: defaultdict[str, int] = defaultdict(int)
        taken: defaultdict[str, int] = defaultdict(int)
        by_payment = {payment.id: payment for payment in self.payments}
        for refund in self.refunds:
            invoice_id = by_payment[refund.payment_id].invoice_id
            if refund.status == "succeeded":
                own_refunded[invoice_id] += refund.amount_minor - refund.credit_taken_minor
            if refund.status != "failed":
                taken[invoice_id] += refund.credit_taken_minor
        whole = {
            invoice_id
            for invoice_id, paid in self.captured.items()
            if (own := paid - self.overpaid[invoice_id]) > 0 and own_refunded[invoice_id] == own
        }
        yield from self._overpayments_refunded(taken)
        for invoice_id in sorted(set(returned) | whole):
            used = self._credit_used(invoice_id)
            due = used if self.refunds_return_credit and invoice_id in whole else 0
            if returned[invoice_id] != due:
                yield Finding(
                    "refunds",
                    self.invoices[invoice_id].number,
                    f"{returned[invoice_id]} of its {used} of credit given back by refunds, "
                    f"{due} expected",
                )

    def _overpayments_refunded(self, taken: dict[str, int]) -> Iterator[Finding]:
        """A refund of money of an invoice that had become credit (it came after the invoice
        was settled) took that credit back, never more of it than there was; ``taken``: per
        invoice, what its refunds (those not refused) say they took."""
        withdrawn: defaultdict[str, int] = defaultdict(int)
        for event in self._named("credit.withdrawn"):
            withdrawn[event.payload["invoice_id"]] += event.payload["amount"]["minor"]
        for event in self._named("credit.granted"):
            if event.payload.get("source") == "refund_failed":
                withdrawn[event.payload["invoice_id"]] -= event.payload["amount"]["minor"]
        for invoice_id in sorted(set(taken) | set(withdrawn)):
            invoice = self.invoices[invoice_id]
            kept = invoice.total_minor if invoice.status == InvoiceStatus.PAID.value else 0
            excess = max(0, self.captured[invoice_id] - kept)
            if withdrawn[invoice_id] != taken.get(invoice_id, 0) or withdrawn[invoice_id] > excess:
                yield Finding(
                    "refunds",
                    invoice.number,
                    f"its refunds took back {taken.get(invoice_id, 0)} of credit and "
                    f"{withdrawn[invoice_id]} was withdrawn, of {excess} paid after it was "
                    "settled",
                )
