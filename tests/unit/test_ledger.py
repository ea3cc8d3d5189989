from __future__ import annotations

from datetime import UTC, datetime

import pytest

from billing.domain.errors import InvalidArgument
from billing.domain.invoices import InvoiceLine, LineKind
from billing.domain.ledger import CreditBalance, DebtItem, DebtKind
from billing.domain.money import Money
from billing.domain.periods import Period


def clp(minor: int) -> Money:
    return Money.from_minor(minor, "CLP")


def balance(minor: int) -> CreditBalance:
    return CreditBalance(clp(minor))


def test_an_empty_balance_holds_zero_in_its_currency() -> None:
    assert CreditBalance.empty("MXN").amount == Money.zero("MXN")


def test_a_balance_is_never_negative() -> None:
    with pytest.raises(InvalidArgument) as raised:
        CreditBalance(clp(-1))
    assert raised.value.field == "credit"


def test_a_balance_must_hold_money() -> None:
    with pytest.raises(InvalidArgument) as raised:
        CreditBalance(5000)  # type: ignore[arg-type]
    assert raised.value.field == "credit"


def test_granting_credit_adds_to_the_balance() -> None:
    assert balance(5000).grant(clp(2500)) == balance(7500)
    assert CreditBalance.empty("CLP").grant(clp(1)) == balance(1)


@pytest.mark.parametrize(
    "amount", [clp(0), clp(-100), Money.from_minor(100, "MXN")], ids=["zero", "negative", "mxn"]
)
def test_granting_needs_a_positive_amount_in_the_balance_currency(amount: Money) -> None:
    with pytest.raises(InvalidArgument) as raised:
        balance(5000).grant(amount)
    assert raised.value.field == "amount"


@pytest.mark.parametrize(
    ("wanted", "used", "rest"),
    [(3000, 3000, 2000), (5000, 5000, 0), (8000, 5000, 0), (0, 0, 5000)],
)
def test_consuming_uses_at_most_the_balance_and_returns_what_is_left(
    wanted: int, used: int, rest: int
) -> None:
    assert balance(5000).consume(clp(wanted)) == (clp(used), balance(rest))


def test_consuming_a_negative_amount_is_refused() -> None:
    with pytest.raises(InvalidArgument) as raised:
        balance(5000).consume(clp(-1))
    assert raised.value.field == "amount"


@pytest.mark.parametrize(("change", "after"), [(-2000, 3000), (-5000, 0), (1000, 6000), (0, 5000)])
def test_applying_a_change_moves_the_balance(change: int, after: int) -> None:
    assert balance(5000).apply(clp(change)) == balance(after)


def test_applying_a_change_that_would_go_negative_is_refused() -> None:
    with pytest.raises(InvalidArgument) as raised:
        balance(5000).apply(clp(-5001))
    assert raised.value.field == "change"
    assert "negative" in raised.value.rule


def test_applying_a_change_in_another_currency_is_refused() -> None:
    with pytest.raises(InvalidArgument) as raised:
        balance(5000).apply(Money.from_minor(-100, "MXN"))
    assert raised.value.field == "change"


def test_a_proration_debt_becomes_a_taxable_debt_line() -> None:
    period = Period(datetime(2024, 1, 15, tzinfo=UTC), datetime(2024, 2, 1, tzinfo=UTC))
    debt = DebtItem(
        kind=DebtKind.PRORATION, amount=clp(4500), description="Upgrade to Pro", period=period
    )
    assert debt.as_line() == InvoiceLine(
        kind=LineKind.DEBT,
        description="Upgrade to Pro",
        amount=clp(4500),
        period=period,
        taxable=True,
    )


def test_an_unpaid_debt_becomes_a_debt_line_that_is_not_taxed_again() -> None:
    debt = DebtItem(
        kind=DebtKind.UNPAID, amount=clp(11900), description="Unpaid INV-000003", source="inv-3"
    )
    assert debt.as_line() == InvoiceLine(
        kind=LineKind.DEBT,
        description="Unpaid INV-000003",
        amount=clp(11900),
        period=None,
        taxable=False,
    )


@pytest.mark.parametrize("minor", [0, -1])
def test_a_debt_must_be_positive(minor: int) -> None:
    with pytest.raises(InvalidArgument) as raised:
        DebtItem(kind=DebtKind.UNPAID, amount=clp(minor), description="Unpaid")
    assert raised.value.field == "debt"


def test_a_debt_needs_a_description() -> None:
    with pytest.raises(InvalidArgument) as raised:
        DebtItem(kind=DebtKind.UNPAID, amount=clp(1), description="")
    assert raised.value.field == "description"
