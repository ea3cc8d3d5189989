"""A subscription billing engine: plans, periods, proration, taxes, credit, debt and dunning.

The names below are the public API; anything else may change without notice.
"""

from billing.bootstrap import open_engine as open_engine
from billing.clock import ManualClock as ManualClock
from billing.clock import SystemClock as SystemClock
from billing.domain.catalog import Plan as Plan
from billing.domain.catalog import PlanStatus as PlanStatus
from billing.domain.customers import CardEnrollment as CardEnrollment
from billing.domain.customers import Customer as Customer
from billing.domain.customers import EnrollmentStatus as EnrollmentStatus
from billing.domain.customers import PaymentMethod as PaymentMethod
from billing.domain.dunning import AfterRetries as AfterRetries
from billing.domain.dunning import RetryDecision as RetryDecision
from billing.domain.dunning import RetryPolicy as RetryPolicy
from billing.domain.errors import AlreadyExists as AlreadyExists
from billing.domain.errors import BillingError as BillingError
from billing.domain.errors import ConcurrentUpdate as ConcurrentUpdate
from billing.domain.errors import CurrencyExponentChanged as CurrencyExponentChanged
from billing.domain.errors import CurrencyMismatch as CurrencyMismatch
from billing.domain.errors import ExchangeRateNotFound as ExchangeRateNotFound
from billing.domain.errors import FloatNotAllowed as FloatNotAllowed
from billing.domain.errors import GatewayAuthenticationFailed as GatewayAuthenticationFailed
from billing.domain.errors import GatewayError as GatewayError
from billing.domain.errors import IdempotencyConflict as IdempotencyConflict
from billing.domain.errors import IllegalTransition as IllegalTransition
from billing.domain.errors import InvalidArgument as InvalidArgument
from billing.domain.errors import InvoiceImmutable as InvoiceImmutable
from billing.domain.errors import NaiveDatetime as NaiveDatetime
from billing.domain.errors import NotFound as NotFound
from billing.domain.errors import PlanChangeNotAllowed as PlanChangeNotAllowed
from billing.domain.errors import PlanUnavailable as PlanUnavailable
from billing.domain.errors import SchemaNotReady as SchemaNotReady
from billing.domain.errors import StorageError as StorageError
from billing.domain.errors import UnknownCurrency as UnknownCurrency
from billing.domain.errors import UnknownTimezone as UnknownTimezone
from billing.domain.events import CreditSource as CreditSource
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
from billing.domain.ledger import FinalDebt as FinalDebt
from billing.domain.ledger import HeldCredit as HeldCredit
from billing.domain.money import Currency as Currency
from billing.domain.money import Money as Money
from billing.domain.money import Rounding as Rounding
from billing.domain.payments import DeclineKind as DeclineKind
from billing.domain.payments import ErrorCode as ErrorCode
from billing.domain.payments import PaymentAttempt as PaymentAttempt
from billing.domain.payments import PaymentResult as PaymentResult
from billing.domain.payments import PaymentStatus as PaymentStatus
from billing.domain.payments import Refund as Refund
from billing.domain.payments import RefundStatus as RefundStatus
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
from billing.engine import Engine as Engine
from billing.ports import Capability as Capability
from billing.ports import Clock as Clock
from billing.ports import PaymentGateway as PaymentGateway
from billing.services.audit import AuditReport as AuditReport
from billing.services.audit import Books as Books
from billing.services.audit import Finding as Finding
from billing.services.notifications import NotificationReceipt as NotificationReceipt
from billing.services.notifications import NotificationStatus as NotificationStatus
from billing.services.sign_ups import SignUp as SignUp
from billing.services.sign_ups import SignUpReport as SignUpReport

__all__ = [
    "AfterRetries",
    "AlreadyExists",
    "AuditReport",
    "BillingCalendar",
    "BillingError",
    "Books",
    "Capability",
    "CardEnrollment",
    "Clock",
    "ConcurrentUpdate",
    "CreditBalance",
    "CreditSource",
    "Currency",
    "CurrencyExponentChanged",
    "CurrencyMismatch",
    "Customer",
    "DebtItem",
    "DebtKind",
    "DeclineKind",
    "Engine",
    "EnrollmentStatus",
    "ErrorCode",
    "ExchangeRate",
    "ExchangeRateNotFound",
    "ExchangeRates",
    "FinalDebt",
    "Finding",
    "FloatNotAllowed",
    "GatewayAuthenticationFailed",
    "GatewayError",
    "HeldCredit",
    "IdempotencyConflict",
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
    "ManualClock",
    "Money",
    "NaiveDatetime",
    "NotFound",
    "NotificationReceipt",
    "NotificationStatus",
    "Outcome",
    "PaymentAttempt",
    "PaymentGateway",
    "PaymentMethod",
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
    "Refund",
    "RefundStatus",
    "RetryDecision",
    "RetryPolicy",
    "Rounding",
    "SchemaNotReady",
    "SignUp",
    "SignUpReport",
    "StorageError",
    "Subscription",
    "SubscriptionStatus",
    "SystemClock",
    "TableExchangeRates",
    "TaxRate",
    "TaxRounding",
    "UnknownCurrency",
    "UnknownTimezone",
    "__version__",
    "open_engine",
]

__version__ = "0.1.0"
