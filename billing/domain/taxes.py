"""Taxes: named rates added on top of a price (exclusive) or contained in it (inclusive).

The tax is always its own invoice line. Two rounding rules exist, chosen per rate:

* :attr:`TaxRounding.PER_INVOICE` (the default): the tax of all taxable lines is computed on their
  sum and rounded once, half-up, to the currency's unit. This is the Chilean SII rule (IVA on the
  net total, in whole pesos) and the one that never drifts: QVO's 10.000 CLP at 19 % is 11.900.
* :attr:`TaxRounding.PER_LINE`: each taxable line gets its own tax line, rounded on its own (the
  rule of tax engines such as Zuora). Three MXN lines of 0.03 at 16 % give 0.00 this way and 0.01
  per invoice.

For an inclusive rate the taxable lines are restated net of tax, so that an invoice's lines always
sum to its total: a price of 11.900 CLP with 19 % IVA included shows a 10.000 line and a 1.900 tax
line. Per invoice, the single rounded tax is shared back over the lines by largest remainder.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from decimal import Decimal
from enum import StrEnum
from fractions import Fraction

from billing.domain import _checks
from billing.domain.errors import InvalidArgument
from billing.domain.invoices import InvoiceLine, LineKind
from billing.domain.money import Exact, Money, Rounding, apportion, exact, round_fraction
from billing.domain.periods import Period


class TaxRounding(StrEnum):
    """Where the tax of an invoice is rounded to the currency's unit."""

    PER_INVOICE = "per_invoice"
    """Once, on the sum of the taxable lines (the default; the Chilean rule)."""
    PER_LINE = "per_line"
    """Once per taxable line, each with its own tax line."""


@dataclass(frozen=True, slots=True, kw_only=True)
class TaxRate:
    """A named tax percentage between 0 and 100 (``TaxRate.of("IVA", "19")``)."""

    name: str
    percent: Decimal
    inclusive: bool = False
    rounding: TaxRounding = TaxRounding.PER_INVOICE
    mode: Rounding = Rounding.HALF_UP

    def __post_init__(self) -> None:
        _checks.text("tax.name", self.name, max_length=_checks.ID_LENGTH)
        if not isinstance(self.percent, Decimal) or not 0 <= self.percent <= 100:
            raise InvalidArgument("tax.percent", "must be between 0 and 100", self.percent)
        if not isinstance(self.inclusive, bool):
            raise InvalidArgument("tax.inclusive", "must be true or false", self.inclusive)
        TaxRounding(self.rounding)
        Rounding(self.mode)

    @classmethod
    def of(
        cls,
        name: str,
        percent: Exact,
        *,
        inclusive: bool = False,
        rounding: TaxRounding | str = TaxRounding.PER_INVOICE,
        mode: Rounding | str = Rounding.HALF_UP,
    ) -> TaxRate:
        """Build and validate a rate; ``percent`` is exact (``"19"``, ``Decimal("19.0")``), and
        ``mode`` says how a fraction of a minor unit of tax is rounded (half-up by default)."""
        return cls(
            name=name,
            percent=exact(percent, "tax.percent"),
            inclusive=inclusive,
            rounding=_checks.member(TaxRounding, rounding, "tax.rounding"),
            mode=_checks.member(Rounding, mode, "tax.mode"),
        )

    @property
    def _share(self) -> Fraction:
        """The tax as a fraction of a line's amount: p/100 exclusive, p/(100+p) inclusive."""
        p = Fraction(self.percent)
        return p / (100 + p) if self.inclusive else p / 100

    def label(self) -> str:
        shown = f"{self.percent.normalize():f}"
        return f"{self.name} {shown}%" + (" (included)" if self.inclusive else "")

    def gross(self, amount: Money) -> Money:
        """What a customer pays for ``amount`` of service: tax added if exclusive, as is if not."""
        if self.inclusive:
            return amount
        return amount + amount.scaled(Fraction(self.percent) / 100, self.mode)

    def apply(self, lines: Sequence[InvoiceLine]) -> tuple[list[InvoiceLine], list[InvoiceLine]]:
        """Tax the taxable ``lines``: returns them (restated net if inclusive) and the tax lines."""
        taxed = [i for i, line in enumerate(lines) if line.taxable]
        out = list(lines)
        if not taxed:
            return out, []
        currency = lines[taxed[0]].amount.currency
        shares = [lines[i].amount.minor * self._share for i in taxed]
        if self.rounding is TaxRounding.PER_LINE:
            taxes = [round_fraction(share, self.mode) for share in shares]
            tax_lines = [
                self._line(Money(tax, currency), lines[i].period)
                for tax, i in zip(taxes, taxed, strict=True)
            ]
        else:
            total = round_fraction(sum(shares, Fraction(0)), self.mode)
            taxes = apportion(total, shares)  # the one rounded tax, shared back over the lines
            tax_lines = [self._line(Money(total, currency), None)]
        if self.inclusive:
            for i, tax in zip(taxed, taxes, strict=True):
                out[i] = replace(out[i], amount=out[i].amount - Money(tax, currency))
        return out, tax_lines

    def _line(self, amount: Money, period: Period | None) -> InvoiceLine:
        return InvoiceLine(
            kind=LineKind.TAX, description=self.label(), amount=amount, period=period, taxable=False
        )
