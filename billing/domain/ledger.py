"""Customer credit and subscription debt.

* **Credit** belongs to a customer, per currency; :class:`~billing.domain.events.CreditSource`
  says where it comes from. It is consumed before any charge, and it never goes negative. Credit
  for the unused part of a period comes only from time that was paid: a downgrade while an invoice
  of the subscription is unpaid holds its credit back (:class:`HeldCredit`) until those invoices
  are paid, and forfeits it if one of them is written off or voided.
* **Debt** belongs to a subscription. It is carried to the next invoice: an upgrade's prorated
  difference (net of tax, so it is taxed when invoiced) and the balance of an invoice that dunning
  gave up on while the subscription stays past due (already taxed, so it is not taxed again). A
  subscription that stops never keeps its debt: it is invoiced on a final invoice, or written off
  with an event where the host asks for that (:class:`FinalDebt`).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from billing.domain import _checks
from billing.domain.errors import InvalidArgument
from billing.domain.events import CreditSource as CreditSource
from billing.domain.invoices import InvoiceLine, LineKind
from billing.domain.money import Currency, Money
from billing.domain.periods import Period


@dataclass(frozen=True, slots=True)
class CreditBalance:
    """A customer's credit in one currency; never negative."""

    amount: Money

    def __post_init__(self) -> None:
        if not isinstance(self.amount, Money) or self.amount.is_negative():
            raise InvalidArgument("credit", "must be a non-negative amount", self.amount)

    @classmethod
    def empty(cls, currency: str | Currency) -> CreditBalance:
        return cls(Money.zero(currency))

    def grant(self, amount: Money) -> CreditBalance:
        """The balance with ``amount`` (> 0) more."""
        if amount.currency != self.amount.currency or not amount.is_positive():
            raise InvalidArgument(
                "amount", f"must be a positive amount in {self.amount.currency}", amount
            )
        return CreditBalance(self.amount + amount)

    def consume(self, wanted: Money) -> tuple[Money, CreditBalance]:
        """Use up to ``wanted``: returns what was used and the balance left."""
        if wanted.is_negative():
            raise InvalidArgument("amount", "must not be negative", wanted)
        used = min(wanted, self.amount)
        return used, CreditBalance(self.amount - used)

    def apply(self, change: Money) -> CreditBalance:
        """The balance after a change: negative for credit used, positive for credit granted."""
        if change.currency != self.amount.currency:
            raise InvalidArgument("change", f"must be in {self.amount.currency}", change)
        if (self.amount + change).is_negative():
            raise InvalidArgument("change", "would make the credit balance negative", change)
        return CreditBalance(self.amount + change)


@dataclass(frozen=True, slots=True, kw_only=True)
class HeldCredit:
    """Credit a downgrade earned for time that is not paid yet: it is granted when every invoice
    in ``waiting_on`` is paid, and forfeited if one of them is written off or voided."""

    amount: Money
    waiting_on: tuple[str, ...]
    """The subscription's invoices still unpaid when the credit was earned."""
    description: str

    def __post_init__(self) -> None:
        _checks.text("description", self.description)
        if not isinstance(self.amount, Money) or not self.amount.is_positive():
            raise InvalidArgument("credit", "must be a positive amount", self.amount)
        if not self.waiting_on:
            raise InvalidArgument("waiting_on", "must name at least one unpaid invoice")


class FinalDebt(StrEnum):
    """What becomes of a subscription's debt when it stops (canceled, ended)."""

    INVOICE = "invoice"
    """It is invoiced on a final invoice and collected like any other (the default; QVO charges
    debt at the end of the billing cycle, and Stripe invoices pending prorations at a cancel)."""
    WRITE_OFF = "write_off"
    """It is written off, visibly: a ``subscription.debt_written_off`` event says how much."""


class DebtKind(StrEnum):
    """Where a subscription's debt came from."""

    PRORATION = "proration"
    """An upgrade's prorated difference, net of tax; taxed when invoiced."""
    UNPAID = "unpaid"
    """The balance of an invoice dunning gave up on; already taxed."""


@dataclass(frozen=True, slots=True, kw_only=True)
class DebtItem:
    """An amount a subscription owes, carried to its next invoice."""

    kind: DebtKind
    amount: Money
    description: str
    period: Period | None = None
    source: str | None = None
    """The invoice it came from, for unpaid balances."""

    def __post_init__(self) -> None:
        DebtKind(self.kind)
        _checks.text("description", self.description)
        if not isinstance(self.amount, Money) or not self.amount.is_positive():
            raise InvalidArgument("debt", "must be a positive amount", self.amount)

    def as_line(self) -> InvoiceLine:
        """The invoice line that collects this debt."""
        return InvoiceLine(
            kind=LineKind.DEBT,
            description=self.description,
            amount=self.amount,
            period=self.period,
            taxable=self.kind is DebtKind.PRORATION,
        )
