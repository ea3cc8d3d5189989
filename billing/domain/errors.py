"""The one error tree of the billing engine.

Every error the engine raises on purpose is a :class:`BillingError`. Errors about a caller's
input also derive from the built-in exception a Python programmer would expect (``ValueError``,
``TypeError``, ``LookupError``), so ``except ValueError`` keeps working::

    BillingError
    ├── InvalidArgument (ValueError)          an argument breaks a rule: names the field and rule
    │   ├── FloatNotAllowed (TypeError)       money or a rate given as a float
    │   ├── UnknownCurrency                   not an ISO 4217 code the engine knows
    │   ├── NaiveDatetime                     an instant without a timezone
    │   ├── UnknownTimezone                   not an IANA timezone name
    │   ├── PlanUnavailable                   an inactive plan asked to take a new subscription
    │   └── PlanChangeNotAllowed              the new plan bills on another interval or currency
    ├── CurrencyMismatch (TypeError)          arithmetic or comparison across two currencies
    ├── ExchangeRateNotFound (LookupError)    no rate for a currency pair on or before a date
    ├── IllegalTransition                     an operation the current status does not allow
    │   └── InvoiceImmutable                  a change to an invoice that is already finalized
    ├── NotFound (LookupError)                no customer, plan, subscription... with that id
    ├── AlreadyExists                         an id or code that is taken
    ├── IdempotencyConflict                   a reused idempotency key with different arguments
    ├── ConcurrentUpdate                      someone else changed the record first; retry
    ├── SchemaNotReady                        the database is missing tables or migrations
    ├── CurrencyExponentChanged               stored money was written with another exponent
    ├── StorageError                          the database failed (unreachable, a broken rule)
    └── GatewayError                          a gateway refused or failed an operation
        └── GatewayAuthenticationFailed       the gateway refused our credentials

A gateway decline is not an error: it is a payment result (see :mod:`billing.domain.payments`).
"""

from __future__ import annotations

from typing import Any


class BillingError(Exception):
    """Root of every error the billing engine raises on purpose."""


class InvalidArgument(BillingError, ValueError):
    """An argument breaks a rule. ``field`` names the argument, ``rule`` says what it must be."""

    def __init__(self, field: str, rule: str, value: Any = None) -> None:
        self.field = field
        self.rule = rule
        self.value = value
        shown = "" if value is None else f" (got {value!r})"
        super().__init__(f"{field}: {rule}{shown}")


class FloatNotAllowed(InvalidArgument, TypeError):
    """A float was given where money or an exact rate is needed; floats cannot hold 0.1 exactly."""

    def __init__(self, field: str, value: float) -> None:
        super().__init__(
            field, "must be a Decimal, an int or a decimal string, never a float", value
        )


class UnknownCurrency(InvalidArgument):
    """The code is not an ISO 4217 currency the engine knows (:mod:`billing.domain.currencies`)."""

    def __init__(self, code: object, field: str = "currency") -> None:
        super().__init__(field, "must be an ISO 4217 currency code such as CLP, CLF or MXN", code)


class NaiveDatetime(InvalidArgument):
    """A datetime without tzinfo was given where an instant is needed."""

    def __init__(self, field: str, value: object) -> None:
        super().__init__(
            field, "must be a timezone-aware datetime (naive datetimes are refused)", value
        )


class UnknownTimezone(InvalidArgument):
    """The name is not an IANA timezone such as ``America/Santiago``."""

    def __init__(self, name: object, field: str = "timezone") -> None:
        super().__init__(field, "must be an IANA timezone name such as America/Santiago", name)


class PlanUnavailable(InvalidArgument):
    """An inactive plan takes no new subscriptions (existing ones keep billing)."""

    def __init__(self, code: str) -> None:
        super().__init__("plan", "must be active to take a new subscription", code)


class PlanChangeNotAllowed(InvalidArgument):
    """A plan change that the engine cannot prorate, such as a change of interval or currency."""


class CurrencyMismatch(BillingError, TypeError):
    """Money in two different currencies met in one operation."""

    def __init__(self, left: str, right: str, operation: str) -> None:
        self.left = left
        self.right = right
        super().__init__(f"cannot {operation} {left} and {right}: amounts must share one currency")


class ExchangeRateNotFound(BillingError, LookupError):
    """No exchange rate is known for the pair on or before the date."""

    def __init__(self, source: str, target: str, on: object) -> None:
        self.source = source
        self.target = target
        self.on = on
        super().__init__(f"no {source}->{target} exchange rate on or before {on}")


class IllegalTransition(BillingError):
    """The operation is not allowed from the entity's current status."""

    def __init__(self, entity: str, entity_id: str, status: str, action: str) -> None:
        self.entity = entity
        self.entity_id = entity_id
        self.status = status
        self.action = action
        super().__init__(f"{entity} {entity_id!r} is {status}: cannot {action}")


class InvoiceImmutable(IllegalTransition):
    """An invoice is immutable once finalized; corrections are new documents, not edits."""

    def __init__(self, invoice_id: str, status: str, action: str) -> None:
        super().__init__("invoice", invoice_id, status, action)


class NotFound(BillingError, LookupError):
    """No record of that kind with that id."""

    def __init__(self, entity: str, entity_id: object) -> None:
        self.entity = entity
        self.entity_id = entity_id
        super().__init__(f"no {entity} {entity_id!r}")


class AlreadyExists(BillingError):
    """A record with that id or code exists already."""

    def __init__(self, entity: str, entity_id: object) -> None:
        self.entity = entity
        self.entity_id = entity_id
        super().__init__(f"{entity} {entity_id!r} exists already")


class IdempotencyConflict(BillingError):
    """An idempotency key was reused for a different operation or different arguments."""

    def __init__(self, key: str, operation: str) -> None:
        self.key = key
        self.operation = operation
        super().__init__(
            f"idempotency key {key!r} was first used for a different {operation} call; "
            "use a new key for a different request"
        )


class ConcurrentUpdate(BillingError):
    """Another process changed the record between our read and our write; nothing was written."""

    def __init__(self, entity: str, entity_id: str) -> None:
        self.entity = entity
        self.entity_id = entity_id
        super().__init__(f"{entity} {entity_id!r} was changed concurrently; retry the operation")


class SchemaNotReady(BillingError):
    """The database has no billing tables, or older ones; it needs ``billing migrate``."""

    def __init__(self, database: str, found: str | None, expected: str) -> None:
        self.database = database
        self.found = found
        self.expected = expected
        state = "has no billing schema" if found is None else f"is at revision {found}"
        super().__init__(
            f"the database {database} {state}, the engine needs revision {expected}: "
            f"run `billing migrate --database-url {database}`"
        )


class CurrencyExponentChanged(BillingError):
    """The database stores a currency's amounts with another exponent than this engine uses:
    reading them would rescale every amount. Nothing is read or written until it is migrated."""

    def __init__(self, database: str, code: str, stored: int, engine: int) -> None:
        self.database = database
        self.code = code
        self.stored = stored
        self.engine = engine
        factor = 10 ** abs(stored - engine)
        way = "larger" if engine < stored else "smaller"
        super().__init__(
            f"the database {database} stores {code} amounts with {stored} decimal places and "
            f"this engine uses {engine}: read as they are, they would come out {factor} times "
            f"{way}. Convert them with `billing currencies rescale {code} --database-url "
            f"{database}` (it refuses if any amount cannot be expressed with {engine} decimals), "
            f"or keep an engine version that uses {stored}"
        )


class StorageError(BillingError):
    """The database failed: it could not be reached, or it refused a write for a reason other
    than a concurrent change. Nothing of the call was written."""

    def __init__(self, message: str) -> None:
        super().__init__(f"the database failed: {message}")


class GatewayError(BillingError):
    """A gateway refused or failed an operation other than a charge (a charge's failure is a
    result, not an error). ``code`` is the normalised error, ``raw_code`` the gateway's own."""

    def __init__(
        self,
        gateway: str,
        code: str,
        message: str,
        *,
        raw_code: str | None = None,
        retryable: bool = False,
    ) -> None:
        self.gateway = gateway
        self.code = code
        self.raw_code = raw_code
        self.retryable = retryable
        super().__init__(f"{gateway}: {code}: {message}")


class GatewayAuthenticationFailed(GatewayError):
    """The gateway refused our credentials: a configuration problem, never a decline."""

    def __init__(self, gateway: str, message: str, *, raw_code: str | None = None) -> None:
        super().__init__(gateway, "authentication_error", message, raw_code=raw_code)
