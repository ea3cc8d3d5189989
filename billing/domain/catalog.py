"""Plans: what a subscription costs, how often it bills, its trial, its length and its dunning."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import date
from enum import StrEnum

from billing.domain import _checks
from billing.domain.currencies import UNITS_OF_ACCOUNT
from billing.domain.dunning import RetryPolicy
from billing.domain.errors import InvalidArgument
from billing.domain.exchange import ExchangeRates, convert
from billing.domain.money import Currency, Exact, Money
from billing.domain.periods import Interval


class PlanStatus(StrEnum):
    """Whether a plan takes new subscriptions."""

    ACTIVE = "active"
    """Open to new subscriptions."""
    INACTIVE = "inactive"
    """Closed to new subscriptions; existing ones keep billing."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Plan:
    """A price per interval, with an optional trial, cycle count and dunning policy.

    ``price`` is in the currency the plan is priced in; ``charge_currency`` is the one invoices and
    charges use. They differ for a plan priced in UF (``CLF``) and charged in pesos (``CLP``): each
    invoice converts the price at the rate of its date. A plan priced in a unit of account (UF and
    the other ISO 4217 fund codes, :data:`~billing.domain.currencies.UNITS_OF_ACCOUNT`) charges in
    the currency that unit is paid in unless ``charge_currency`` says otherwise: no gateway takes
    UF.
    """

    code: str
    name: str
    price: Money
    interval: Interval
    trial_days: int = 0
    cycles: int | None = None
    """Default number of periods a subscription lasts; ``None`` runs until canceled."""
    status: PlanStatus = PlanStatus.ACTIVE
    retry_policy: RetryPolicy = field(default_factory=RetryPolicy.killbill)
    charge_currency: Currency | None = None

    def __post_init__(self) -> None:
        _checks.identifier("code", self.code)
        _checks.text("name", self.name, max_length=_checks.NAME_LENGTH)
        if not isinstance(self.price, Money):
            raise InvalidArgument("price", "must be Money", self.price)
        if self.price.is_negative():
            raise InvalidArgument("price", "must be >= 0", self.price.to_decimal_string())
        if not isinstance(self.interval, Interval):
            raise InvalidArgument("interval", "must be an Interval", self.interval)
        _checks.integer("trial_days", self.trial_days, minimum=0)
        if self.cycles is not None:
            _checks.integer("cycles", self.cycles, minimum=1)
        PlanStatus(self.status)
        if not isinstance(self.retry_policy, RetryPolicy):
            raise InvalidArgument("retry", "must be a RetryPolicy", self.retry_policy)
        if self.charge_currency is not None and not isinstance(self.charge_currency, Currency):
            raise InvalidArgument("charge_currency", "must be a Currency", self.charge_currency)
        paid_in = UNITS_OF_ACCOUNT.get(self.price.currency.code)
        if self.charge_currency is None and paid_in is not None:
            object.__setattr__(self, "charge_currency", Currency.of(paid_in))
        elif self.charge_currency == self.price.currency and paid_in is None:
            object.__setattr__(self, "charge_currency", None)

    @classmethod
    def of(
        cls,
        *,
        code: str,
        name: str,
        price: Exact,
        currency: str,
        interval: str = "month",
        interval_count: int = 1,
        trial_days: int = 0,
        cycles: int | None = None,
        status: str = PlanStatus.ACTIVE,
        retry: RetryPolicy | None = None,
        charge_currency: str | None = None,
    ) -> Plan:
        """Build a plan from plain values, validating each (the price must be exact)."""
        return cls(
            code=code,
            name=name,
            price=Money.of(price, currency),
            interval=Interval.of(interval, interval_count),
            trial_days=trial_days,
            cycles=cycles,
            status=_checks.member(PlanStatus, status, "status"),
            retry_policy=retry or RetryPolicy.killbill(),
            charge_currency=None if charge_currency is None else Currency.of(charge_currency),
        )

    @property
    def billing_currency(self) -> Currency:
        """The currency of this plan's invoices and charges."""
        return self.charge_currency or self.price.currency

    @property
    def is_active(self) -> bool:
        return self.status is PlanStatus.ACTIVE

    @property
    def is_free(self) -> bool:
        return self.price.is_zero()

    def deactivated(self) -> Plan:
        """The same plan closed to new subscriptions."""
        return replace(self, status=PlanStatus.INACTIVE)

    def price_on(self, day: date, rates: ExchangeRates | None) -> Money:
        """The price in the charge currency on ``day`` (converted at that day's rate if needed)."""
        if self.billing_currency == self.price.currency:
            return self.price
        if rates is None:
            raise InvalidArgument(
                "rates",
                f"are needed to charge a {self.price.currency} plan in {self.billing_currency}",
            )
        return convert(self.price, self.billing_currency, rates, day)
