"""Invoices: lines with a kind and a period, a total, and a status that only moves forward.

Lifecycle::

    draft ──finalize──> open ──pay──> paid           (a total of 0 is paid when finalized)
    open ──mark_uncollectible──> uncollectible ──pay──> paid
    draft, open, uncollectible ──void──> void

A draft can still change; once finalized an invoice is immutable (corrections are new documents).
Its number is given when it is finalized, from the engine's sequence (:func:`invoice_number`),
so numbers are gap-free and deterministic per engine. The lines always sum to the total, and the
total is never negative: money owed back to the customer becomes credit
(:func:`compose` moves any excess to the credit balance with a ``credit`` line).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from enum import StrEnum
from typing import TYPE_CHECKING

from billing.domain import _checks
from billing.domain.errors import InvalidArgument, InvoiceImmutable
from billing.domain.events import (
    Event,
    InvoiceCreated,
    InvoicePaid,
    InvoiceUncollectible,
    InvoiceVoided,
)
from billing.domain.money import Currency, Money
from billing.domain.periods import Period

if TYPE_CHECKING:
    from billing.domain.taxes import TaxRate


class InvoiceStatus(StrEnum):
    """Where an invoice is in its life."""

    DRAFT = "draft"
    """Being assembled; lines may still be added."""
    OPEN = "open"
    """Finalized and numbered; awaiting payment."""
    PAID = "paid"
    """Settled, by a payment or because nothing was due."""
    UNCOLLECTIBLE = "uncollectible"
    """Dunning gave up on it; it may still be paid later."""
    VOID = "void"
    """Cancelled; nothing is owed on it."""


class LineKind(StrEnum):
    """What an invoice line is for."""

    PLAN = "plan"
    """The plan's price for a period (or the prorated part of one, after a resume)."""
    PRORATION_CHARGE = "proration_charge"
    """The new plan's price for the rest of a period after a plan change."""
    PRORATION_CREDIT = "proration_credit"
    """The old plan's unused part of a period after a plan change (negative)."""
    DEBT = "debt"
    """An amount carried from earlier: a plan change's difference, or an unpaid invoice."""
    TAX = "tax"
    """The tax of the taxable lines."""
    CREDIT = "credit"
    """Customer credit applied (negative), or an excess moved to the credit balance (positive)."""


class InvoiceReason(StrEnum):
    """Why an invoice was made."""

    SUBSCRIPTION_START = "subscription_start"
    """The first period of a subscription (at its start or at the end of its trial)."""
    RENEWAL = "renewal"
    """A period after the first."""
    RESUME = "resume"
    """The rest of a period after a pause or a reactivation."""
    PLAN_CHANGE = "plan_change"
    """A plan change invoiced at once."""
    FINAL = "final"
    """What a subscription still owed (its debt) when it stopped."""


@dataclass(frozen=True, slots=True, kw_only=True)
class InvoiceLine:
    """One line: its kind, words for the customer, an amount, and the period it covers."""

    kind: LineKind
    description: str
    amount: Money
    period: Period | None = None
    taxable: bool = False

    def __post_init__(self) -> None:
        LineKind(self.kind)
        _checks.text("description", self.description)
        if not isinstance(self.amount, Money):
            raise InvalidArgument("amount", "must be Money", self.amount)


@dataclass(frozen=True, slots=True, kw_only=True)
class InvoiceDraft:
    """What the domain decided to bill; the engine gives it an id and a number."""

    customer_id: str
    subscription_id: str | None
    currency: Currency
    reason: InvoiceReason
    period: Period | None
    lines: tuple[InvoiceLine, ...]

    @property
    def total(self) -> Money:
        # every line is in the invoice's currency (checked when it was made): add minor units
        return Money(sum(line.amount.minor for line in self.lines), self.currency)


def compose(
    charges: Sequence[InvoiceLine],
    *,
    currency: Currency,
    tax: TaxRate | None,
    credit: Money,
) -> tuple[tuple[InvoiceLine, ...], Money]:
    """Turn charges into an invoice's lines; returns them and the change to the credit balance.

    Taxable charges are taxed (:meth:`TaxRate.apply`); untaxed ones (an unpaid balance carried,
    which was taxed when first invoiced) follow; then the customer's ``credit`` is consumed before
    anything is charged. The change returned is negative for credit used and positive when the
    charges come to less than zero (the excess goes to the credit balance, and the total is 0).
    """
    for line in charges:
        if line.amount.currency != currency:
            raise InvalidArgument("lines", f"must all be in {currency.code}", line.amount.currency)
    if credit.currency != currency or credit.is_negative():
        raise InvalidArgument("credit", f"must be a non-negative amount in {currency.code}", credit)
    lines, tax_lines = tax.apply(charges) if tax is not None else (list(charges), [])
    lines += tax_lines
    subtotal = sum((line.amount for line in lines), Money.zero(currency))
    if subtotal.is_negative():
        change = -subtotal
        lines.append(_credit_line(change, "Excess moved to the customer's credit balance"))
    else:
        change = -min(credit, subtotal)
        if change.is_negative():
            lines.append(_credit_line(change, "Customer credit applied"))
    return tuple(lines), change


def _credit_line(amount: Money, description: str) -> InvoiceLine:
    return InvoiceLine(kind=LineKind.CREDIT, description=description, amount=amount)


def invoice_number(prefix: str, sequence: int, width: int = 6) -> str:
    """The number of the ``sequence``-th invoice of an engine: ``invoice_number("INV", 7)`` is
    ``INV-000007``."""
    _checks.text("prefix", prefix)
    _checks.integer("sequence", sequence, minimum=1)
    return f"{prefix}-{sequence:0{width}d}"


_NEXT: dict[InvoiceStatus, frozenset[InvoiceStatus]] = {
    InvoiceStatus.DRAFT: frozenset({InvoiceStatus.OPEN, InvoiceStatus.VOID}),
    InvoiceStatus.OPEN: frozenset(
        {InvoiceStatus.PAID, InvoiceStatus.UNCOLLECTIBLE, InvoiceStatus.VOID}
    ),
    InvoiceStatus.UNCOLLECTIBLE: frozenset({InvoiceStatus.PAID, InvoiceStatus.VOID}),
    InvoiceStatus.PAID: frozenset(),
    InvoiceStatus.VOID: frozenset(),
}
"""The invoice lifecycle: every allowed move, and no other."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Invoice:
    """An invoice of one customer in one currency; see the module docstring for its lifecycle."""

    id: str
    customer_id: str
    subscription_id: str | None
    currency: Currency
    reason: InvoiceReason
    period: Period | None
    lines: tuple[InvoiceLine, ...]
    created_at: datetime
    status: InvoiceStatus = InvoiceStatus.DRAFT
    number: str | None = None
    finalized_at: datetime | None = None
    paid_at: datetime | None = None
    closed_at: datetime | None = None
    """When it became uncollectible or void."""

    def __post_init__(self) -> None:
        _checks.text("id", self.id)
        object.__setattr__(self, "created_at", _checks.aware("created_at", self.created_at))
        for line in self.lines:
            if line.amount.currency != self.currency:
                raise InvalidArgument("lines", f"must all be in {self.currency.code}")

    @classmethod
    def from_draft(cls, draft: InvoiceDraft, *, id: str, at: datetime) -> Invoice:
        """A draft invoice with the id the engine chose."""
        return cls(
            id=id,
            customer_id=draft.customer_id,
            subscription_id=draft.subscription_id,
            currency=draft.currency,
            reason=draft.reason,
            period=draft.period,
            lines=draft.lines,
            created_at=at,
        )

    @property
    def total(self) -> Money:
        # every line is in the invoice's currency (checked when it was made): add minor units
        return Money(sum(line.amount.minor for line in self.lines), self.currency)

    @property
    def credit_applied(self) -> Money:
        """Customer credit this invoice consumed (a positive amount, or zero)."""
        used = sum(
            (line.amount for line in self.lines if line.kind is LineKind.CREDIT),
            Money.zero(self.currency),
        )
        return -used if used.is_negative() else Money.zero(self.currency)

    def is_final(self) -> bool:
        return self.status is not InvoiceStatus.DRAFT

    def _move(self, to: InvoiceStatus, action: str) -> None:
        if to not in _NEXT[self.status]:
            raise InvoiceImmutable(self.id, self.status, action)

    def with_line(self, line: InvoiceLine) -> Invoice:
        """The draft with one more line; finalized invoices refuse."""
        if self.is_final():
            raise InvoiceImmutable(self.id, self.status, "add a line")
        if line.amount.currency != self.currency:
            raise InvalidArgument("amount", f"must be in {self.currency.code}", line.amount)
        return replace(self, lines=(*self.lines, line))

    def finalize(self, *, number: str, at: datetime) -> tuple[Invoice, list[Event]]:
        """Number and freeze the invoice; one with nothing to pay is paid at once."""
        self._move(InvoiceStatus.OPEN, "finalize")
        _checks.text("number", number)
        at = _checks.aware("at", at)
        if self.total.is_negative():
            raise InvalidArgument("lines", "must not sum to a negative total", self.total)
        opened = replace(self, status=InvoiceStatus.OPEN, number=number, finalized_at=at)
        events: list[Event] = [
            InvoiceCreated(
                at=at,
                invoice_id=self.id,
                number=number,
                customer_id=self.customer_id,
                subscription_id=self.subscription_id,
                total=self.total,
            )
        ]
        if self.total.is_zero():
            paid, paid_events = opened.pay(at=at)
            return paid, events + paid_events
        return opened, events

    def pay(self, *, at: datetime) -> tuple[Invoice, list[Event]]:
        """Record the invoice as settled."""
        self._move(InvoiceStatus.PAID, "be paid")
        at = _checks.aware("at", at)
        return replace(self, status=InvoiceStatus.PAID, paid_at=at), [
            InvoicePaid(at=at, invoice_id=self.id, subscription_id=self.subscription_id)
        ]

    def mark_uncollectible(self, *, at: datetime) -> tuple[Invoice, list[Event]]:
        """Write the invoice off: dunning gave up (it may still be paid later)."""
        self._move(InvoiceStatus.UNCOLLECTIBLE, "be marked uncollectible")
        at = _checks.aware("at", at)
        return replace(self, status=InvoiceStatus.UNCOLLECTIBLE, closed_at=at), [
            InvoiceUncollectible(at=at, invoice_id=self.id, subscription_id=self.subscription_id)
        ]

    def void(self, *, at: datetime) -> tuple[Invoice, list[Event]]:
        """Cancel the invoice: nothing is owed on it."""
        self._move(InvoiceStatus.VOID, "be voided")
        at = _checks.aware("at", at)
        return replace(self, status=InvoiceStatus.VOID, closed_at=at), [
            InvoiceVoided(at=at, invoice_id=self.id, subscription_id=self.subscription_id)
        ]
