"""A subscription billing engine: plans, periods, proration, taxes, credit, debt and dunning.

The names below are the public API; anything else may change without notice.
"""

from billing.domain.catalog import Plan as Plan
from billing.domain.catalog import PlanStatus as PlanStatus
from billing.domain.customers import Customer as Customer
from billing.domain.dunning import AfterRetries as AfterRetries
from billing.domain.dunning import RetryDecision as RetryDecision
from billing.domain.dunning import RetryPolicy as RetryPolicy
from billing.domain.errors import BillingError as BillingError
from billing.domain.errors import CurrencyMismatch as CurrencyMismatch
from billing.domain.errors import ExchangeRateNotFound as ExchangeRateNotFound
from billing.domain.errors import FloatNotAllowed as FloatNotAllowed
from billing.domain.errors import IllegalTransition as IllegalTransition
from billing.domain.errors import InvalidArgument as InvalidArgument
from billing.domain.errors import InvoiceImmutable as InvoiceImmutable
from billing.domain.errors import NaiveDatetime as NaiveDatetime
from billing.domain.errors import PlanChangeNotAllowed as PlanChangeNotAllowed
from billing.domain.errors import PlanUnavailable as PlanUnavailable
from billing.domain.errors import UnknownCurrency as UnknownCurrency
from billing.domain.errors import UnknownTimezone as UnknownTimezone
from billing.domain.exchange import ExchangeRate as ExchangeRate
from billing.domain.exchange import ExchangeRates as ExchangeRates
from billing.domain.exchange import TableExchangeRates as TableExchangeRates
from billing.domain.invoices import Invoice as Invoice
from billing.domain.invoices import InvoiceDraft as InvoiceDraft
from billing.domain.invoices import InvoiceLine as InvoiceLine
from billing.domain.invoices import InvoiceReason as InvoiceReason
from billing.domain.invoices import InvoiceStatus as InvoiceStatus
from billing.domain.invoices import LineKind as LineKind
from billing.domain.ledger import CreditBalance as CreditBalance
from billing.domain.ledger import DebtItem as DebtItem
from billing.domain.ledger import DebtKind as DebtKind
from billing.domain.money import Currency as Currency
from billing.domain.money import Money as Money
from billing.domain.money import Rounding as Rounding
from billing.domain.payments import DeclineKind as DeclineKind
from billing.domain.payments import PaymentAttempt as PaymentAttempt
from billing.domain.payments import PaymentResult as PaymentResult
from billing.domain.payments import PaymentStatus as PaymentStatus
from billing.domain.periods import BillingCalendar as BillingCalendar
from billing.domain.periods import Interval as Interval
from billing.domain.periods import IntervalUnit as IntervalUnit
from billing.domain.periods import Period as Period
from billing.domain.plan_changes import PlanChange as PlanChange
from billing.domain.proration import ProrationBehavior as ProrationBehavior
from billing.domain.proration import ProrationUnit as ProrationUnit
from billing.domain.subscriptions import Outcome as Outcome
from billing.domain.subscriptions import Subscription as Subscription
from billing.domain.subscriptions import SubscriptionStatus as SubscriptionStatus
from billing.domain.taxes import TaxRate as TaxRate
from billing.domain.taxes import TaxRounding as TaxRounding

__all__ = [
    "AfterRetries",
    "BillingCalendar",
    "BillingError",
    "CreditBalance",
    "Currency",
    "CurrencyMismatch",
    "Customer",
    "DebtItem",
    "DebtKind",
    "DeclineKind",
    "ExchangeRate",
    "ExchangeRateNotFound",
    "ExchangeRates",
    "FloatNotAllowed",
    "IllegalTransition",
    "Interval",
    "IntervalUnit",
    "InvalidArgument",
    "Invoice",
    "InvoiceDraft",
    "InvoiceImmutable",
    "InvoiceLine",
    "InvoiceReason",
    "InvoiceStatus",
    "LineKind",
    "Money",
    "NaiveDatetime",
    "Outcome",
    "PaymentAttempt",
    "PaymentResult",
    "PaymentStatus",
    "Period",
    "Plan",
    "PlanChange",
    "PlanChangeNotAllowed",
    "PlanStatus",
    "PlanUnavailable",
    "ProrationBehavior",
    "ProrationUnit",
    "RetryDecision",
    "RetryPolicy",
    "Rounding",
    "Subscription",
    "SubscriptionStatus",
    "TableExchangeRates",
    "TaxRate",
    "TaxRounding",
    "UnknownCurrency",
    "UnknownTimezone",
    "__version__",
]

__version__ = "0.1.0"
