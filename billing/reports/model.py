"""What a report holds: plain, frozen values, every amount in integer minor units per currency.

A :class:`Report` is built from an engine's database by :func:`billing.reports.build_report`,
printed by :func:`~billing.reports.print_report` and written by
:func:`~billing.reports.write_report`. Amounts are ``{currency code: minor units}`` mappings, so
currencies are never added together; rates are exact fractions of two counts.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from decimal import ROUND_HALF_UP, Decimal
from fractions import Fraction
from typing import Any

from billing.domain.currencies import EXPONENTS

Amounts = Mapping[str, int]
"""Minor units per currency code."""

INVOICE_STATUSES = ("draft", "open", "paid", "uncollectible", "void")
"""Invoice statuses in the order reports list them."""


def ratio(part: int, whole: int) -> Fraction | None:
    """``part / whole``, or ``None`` when there is nothing to divide by."""
    return None if whole == 0 else Fraction(part, whole)


def percent(value: Fraction | None) -> str:
    """A rate as a percentage with one decimal, rounded half-up (``"12.5 %"``), or ``"-"``."""
    if value is None:
        return "-"
    shown = (Decimal(value.numerator) * 100 / Decimal(value.denominator)).quantize(
        Decimal("0.1"), rounding=ROUND_HALF_UP
    )
    return f"{shown} %"


def rate_text(value: Fraction | None) -> str | None:
    """A rate for JSON: a decimal string with four places (``"0.1250"``), or ``None``."""
    if value is None:
        return None
    exact = Decimal(value.numerator) / Decimal(value.denominator)
    return str(exact.quantize(Decimal("0.0001"), rounding=ROUND_HALF_UP))


def money(minor: int, currency: str) -> str:
    """Minor units shown in major units with the currency's exponent and thousands separators:
    ``money(1234550, "MXN") == "12,345.50"``."""
    exponent = EXPONENTS.get(currency, 0)
    value = Decimal(minor).scaleb(-exponent)
    return f"{value:,.{exponent}f}"


def major(minor: int, currency: str) -> Decimal:
    """Minor units as an exact amount in major units (``12345.50`` for 1234550 MXN)."""
    return Decimal(minor).scaleb(-EXPONENTS.get(currency, 0))


@dataclass(frozen=True, slots=True, kw_only=True)
class Month:
    """One month of the report's window (a UTC calendar month, cut to the window)."""

    label: str
    """``YYYY-MM``."""
    start: datetime
    end: datetime
    invoiced: Amounts
    """Totals of the invoices finalized in the month, void ones left out (their balance is
    carried onto another invoice)."""
    collected: Amounts
    """Captured by gateways in the month, net of the refunds made in it."""
    refunded: Amounts
    """Refunds the gateways confirmed in the month (already taken off ``collected``)."""
    mrr: Amounts
    """Monthly recurring revenue at the month's end: the plan prices of the subscriptions then
    active or past due, each normalised to a month, in the plans' price currencies."""
    new: int
    """Subscriptions created in the month."""
    churned: int
    """Subscriptions canceled or ended in the month."""
    live_at_start: int
    """Subscriptions created before the month and not canceled or ended by its start."""
    paying: int
    """Subscriptions active or past due at the month's end (those counted in the MRR)."""

    @property
    def churn_rate(self) -> Fraction | None:
        """Churned over the subscriptions at risk in the month (live at its start, or new)."""
        return ratio(self.churned, self.live_at_start + self.new)


@dataclass(frozen=True, slots=True, kw_only=True)
class InvoiceCount:
    """The invoices of one status in one currency."""

    status: str
    currency: str
    count: int
    total: int
    """The sum of their totals, in minor units."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Dunning:
    """Invoices that entered dunning (had a failed payment attempt), and what became of them."""

    entered: int = 0
    recovered: int = 0
    """Paid after all."""
    collecting: int = 0
    """Still open: retries scheduled, or waiting for a new payment method."""
    written_off: int = 0
    """Uncollectible."""
    voided: int = 0
    """Voided, their balance carried as debt."""
    entered_amounts: Amounts = field(default_factory=dict)
    recovered_amounts: Amounts = field(default_factory=dict)

    @property
    def recovery_rate(self) -> Fraction | None:
        """Recovered over entered."""
        return ratio(self.recovered, self.entered)


@dataclass(frozen=True, slots=True, kw_only=True)
class Churn:
    """Churn over the whole window."""

    live_at_start: int = 0
    new: int = 0
    churned: int = 0
    live_at_end: int = 0

    @property
    def rate(self) -> Fraction | None:
        """Churned over the subscriptions at risk in the window (live at its start, or new)."""
        return ratio(self.churned, self.live_at_start + self.new)


@dataclass(frozen=True, slots=True, kw_only=True)
class Balance:
    """What is outstanding in one currency when the report is built."""

    currency: str
    credit: int = 0
    """Customers' credit balances."""
    debt: int = 0
    """Debt carried by subscriptions to their next invoice."""
    open_invoices: int = 0
    """Still owed on open invoices."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Audit:
    """The result of :meth:`billing.Engine.audit`, summed per currency."""

    balanced: bool
    findings: tuple[str, ...] = ()
    books: Mapping[str, Mapping[str, int]] = field(default_factory=dict)
    """Per currency: ``invoiced``, ``captured``, ``credit_applied``, ``open``, ``written_off``,
    ``refunded``, ``credit_balance`` (see :class:`billing.Books`), in minor units."""


BOOK_FIELDS = (
    "invoiced",
    "captured",
    "credit_applied",
    "open",
    "written_off",
    "refunded",
    "credit_balance",
)
"""The audit's books, in the order reports list them."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Report:
    """Revenue, MRR, invoices, dunning, churn and balances of one window of an engine's history."""

    title: str
    start: datetime
    end: datetime
    months: tuple[Month, ...]
    invoices: tuple[InvoiceCount, ...]
    """Invoices created in the window, by status (in :data:`INVOICE_STATUSES` order) and
    currency."""
    dunning: Dunning
    """Invoices whose first failed attempt was in the window."""
    churn: Churn
    balances: tuple[Balance, ...]
    audit: Audit
    parameters: tuple[tuple[str, str], ...] = ()
    """What produced the history (a simulation's options), shown as given."""

    @property
    def currencies(self) -> tuple[str, ...]:
        """Every currency the report has a figure in, sorted."""
        found: set[str] = set()
        for month in self.months:
            found.update(month.invoiced, month.collected, month.refunded, month.mrr)
        found.update(row.currency for row in self.invoices)
        found.update(balance.currency for balance in self.balances)
        found.update(self.audit.books)
        return tuple(sorted(found))

    def to_dict(self) -> dict[str, Any]:
        """The report as JSON-ready values (amounts in minor units, rates as decimal strings)."""
        return {
            "title": self.title,
            "start": self.start.isoformat(),
            "end": self.end.isoformat(),
            "parameters": dict(self.parameters),
            "currencies": list(self.currencies),
            "months": [
                {
                    "month": month.label,
                    "start": month.start.isoformat(),
                    "end": month.end.isoformat(),
                    "invoiced": dict(month.invoiced),
                    "collected": dict(month.collected),
                    "refunded": dict(month.refunded),
                    "mrr": dict(month.mrr),
                    "new": month.new,
                    "churned": month.churned,
                    "live_at_start": month.live_at_start,
                    "paying": month.paying,
                    "churn_rate": rate_text(month.churn_rate),
                }
                for month in self.months
            ],
            "invoices": [
                {"status": r.status, "currency": r.currency, "count": r.count, "total": r.total}
                for r in self.invoices
            ],
            "dunning": {
                "entered": self.dunning.entered,
                "recovered": self.dunning.recovered,
                "collecting": self.dunning.collecting,
                "written_off": self.dunning.written_off,
                "voided": self.dunning.voided,
                "entered_amounts": dict(self.dunning.entered_amounts),
                "recovered_amounts": dict(self.dunning.recovered_amounts),
                "recovery_rate": rate_text(self.dunning.recovery_rate),
            },
            "churn": {
                "live_at_start": self.churn.live_at_start,
                "new": self.churn.new,
                "churned": self.churn.churned,
                "live_at_end": self.churn.live_at_end,
                "rate": rate_text(self.churn.rate),
            },
            "balances": [
                {
                    "currency": b.currency,
                    "credit": b.credit,
                    "debt": b.debt,
                    "open_invoices": b.open_invoices,
                }
                for b in self.balances
            ],
            "audit": {
                "balanced": self.audit.balanced,
                "findings": list(self.audit.findings),
                "books": {code: dict(book) for code, book in self.audit.books.items()},
            },
        }
