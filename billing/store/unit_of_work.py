"""Transactions over the billing tables: load domain values, save them, record their events.

Everything a use case changes happens inside one :meth:`Store.transaction`, together with the
events that describe the change (an outbox the host reads in order) and, for a call with an
idempotency key, the record that makes a repeat of the call return the first result.
"""

from __future__ import annotations

import threading
import uuid
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from functools import cache
from typing import TYPE_CHECKING, Any, TypeVar

from sqlalchemy import (
    ColumnElement,
    Connection,
    Engine,
    Table,
    Update,
    and_,
    bindparam,
    func,
    insert,
    literal_column,
    or_,
    update,
)
from sqlalchemy import select as core_select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError, OperationalError, SQLAlchemyError
from sqlalchemy.orm import aliased
from sqlmodel import Session, SQLModel, col, select

from billing.domain.catalog import Plan
from billing.domain.customers import CardEnrollment, Customer, EnrollmentStatus, PaymentMethod
from billing.domain.errors import AlreadyExists, ConcurrentUpdate, NotFound, StorageError
from billing.domain.events import CreditGranted, CreditWithdrawn, Event
from billing.domain.invoices import Invoice, InvoiceStatus, invoice_number
from billing.domain.ledger import CreditBalance
from billing.domain.money import Currency, Money
from billing.domain.payments import ErrorCode, PaymentAttempt, PaymentStatus, RefundStatus
from billing.domain.subscriptions import Subscription
from billing.store import currencies, mapping
from billing.store.database import is_memory
from billing.store.tables import (
    CreditBalanceRow,
    CustomerRow,
    DebtRow,
    EnrollmentRow,
    EventRow,
    GatewayCustomerRow,
    IdempotencyRow,
    InboxRow,
    InvoiceLineRow,
    InvoiceRow,
    NotificationRow,
    PaymentMethodRow,
    PaymentRow,
    PlanRow,
    RefundRow,
    SequenceRow,
    SubscriptionRow,
)
from billing.store.tables import metadata as schema

if TYPE_CHECKING:
    from billing.store.batch import BatchTx

T = TypeVar("T", bound="Tx")
R = TypeVar("R", bound=SQLModel)
UNSETTLED_REFUNDS = (
    RefundStatus.CREATED.value,
    RefundStatus.PENDING.value,
    RefundStatus.UNKNOWN.value,
)
"""Refunds without a final answer: the reconcile job asks their gateway again."""
_REFUND_ORDER = (  # keys end in the refund's number: -refund-2 before -refund-10
    col(RefundRow.created_at),
    func.length(RefundRow.idempotency_key),
    col(RefundRow.idempotency_key),
)
"""Refunds in the order they were asked for."""
INBOX_RECEIVED = "received"
"""The status of a notification kept in the inbox and not processed yet."""

SETTLED_INVOICES = (InvoiceStatus.PAID.value, InvoiceStatus.VOID.value)
"""Invoices settled for good: a payment that arrives for one is the customer's credit (an
uncollectible invoice can still be paid)."""
_LIVE_LINK: ColumnElement[str] = literal_column(f"'{PaymentStatus.REQUIRES_ACTION.value}'")

UNSETTLED = (
    PaymentStatus.CREATED.value,
    PaymentStatus.PENDING.value,
    PaymentStatus.REQUIRES_ACTION.value,
    PaymentStatus.UNKNOWN.value,
)

# The statements an API call runs most, built once (building a statement costs more than
# running it): each takes its values as named parameters.
_SUBSCRIPTIONS: Table = schema.tables["subscriptions"]
_DEBTS: Table = schema.tables["subscription_debts"]
_PAYMENTS: Table = schema.tables["payments"]
_CREDIT: Table = schema.tables["credit_balances"]
_EVENTS: Table = schema.tables["events"]
_SELECT_SUBSCRIPTION = core_select(_SUBSCRIPTIONS).where(_SUBSCRIPTIONS.c.id == bindparam("id"))
_SELECT_DEBTS_OF = core_select(_DEBTS).where(_DEBTS.c.subscription_id == bindparam("id"))
_NEXT_CHECK = core_select(func.min(_PAYMENTS.c.check_at)).where(
    _PAYMENTS.c.subscription_id == bindparam("id"), _PAYMENTS.c.status.in_(UNSETTLED)
)
_SET_NEXT_RUN = (
    update(_SUBSCRIPTIONS)
    .where(_SUBSCRIPTIONS.c.id == bindparam("b_id"))
    .values(next_run_at=bindparam("next_run_at"))
)
_CREDIT_OF = core_select(_CREDIT.c.amount_minor).where(
    _CREDIT.c.customer_id == bindparam("customer_id"), _CREDIT.c.currency == bindparam("currency")
)
_LOCK_CREDIT_OF = _CREDIT_OF.with_for_update()
_INSERT_EVENTS = insert(_EVENTS)
_DUE_CHECKS = (
    select(PaymentRow)
    .where(col(PaymentRow.subscription_id) == bindparam("id"))
    .where(col(PaymentRow.status).in_(UNSETTLED))
    .where(col(PaymentRow.check_at) <= bindparam("now"))
    .order_by(col(PaymentRow.check_at), col(PaymentRow.created_at), col(PaymentRow.number))
)


@cache
def updating(table: Table, names: tuple[str, ...], keys: tuple[str, ...]) -> Update:
    """``UPDATE table SET names WHERE`` each of ``keys`` (``b_<column>``) matches, built once
    per shape: the values are the parameters of the same names."""
    statement = update(table).values({name: bindparam(name) for name in names})
    for key in keys:
        statement = statement.where(table.c[key[2:]] == bindparam(key))
    return statement


@dataclass(frozen=True, slots=True, kw_only=True)
class StoredEvent:
    """An event as the host reads it from the outbox: ``seq`` gives the order."""

    seq: int
    id: str
    name: str
    at: datetime
    payload: dict[str, Any]
    subscription_id: str | None
    customer_id: str | None
    invoice_id: str | None
    acknowledged_at: datetime | None
    deliveries: int = 0
    """How many times the worker's dispatcher tried to deliver it before this one."""


@dataclass(frozen=True, slots=True)
class Loaded:
    """A subscription and the version its row had when read (for optimistic saves)."""

    subscription: Subscription
    version: int
    next_run_at: datetime | None = None


class Store:
    """The database behind one engine.

    ``recorded`` are the currencies whose exponent the database is known to record (checked when
    the engine opened, by :func:`billing.store.currencies.verify`).
    """

    def __init__(
        self, engine: Engine, *, invoice_prefix: str = "INV", recorded: Iterable[str] = ()
    ) -> None:
        self.engine = engine
        self.invoice_prefix = invoice_prefix
        self.recorded = set(recorded)
        # one in-memory SQLite database is one connection: its transactions take turns
        self._turns: AbstractContextManager[Any] = (
            threading.RLock() if is_memory(engine) else nullcontext()
        )

    def transaction(self) -> AbstractContextManager[Tx]:
        """One transaction: committed when the block ends, rolled back if it raises.

        A database error never leaves as a SQLAlchemy exception: a unique key another
        transaction took first, a deadlock or a lock timeout is :class:`ConcurrentUpdate` (try
        again), anything else :class:`StorageError`; either way nothing was written.
        """
        return self._open(Tx)

    def batch(self) -> AbstractContextManager[BatchTx]:
        """One transaction over many subscriptions, written in bulk when the block ends
        (:class:`~billing.store.batch.BatchTx`); otherwise as :meth:`transaction`."""
        from billing.store.batch import BatchTx  # it extends Tx

        return self._open(BatchTx)

    @contextmanager
    def _open(self, kind: type[T]) -> Iterator[T]:
        with self._turns:
            try:
                with (
                    Session(self.engine, expire_on_commit=False, autoflush=True) as session,
                    session.begin(),
                ):
                    tx = kind(session, self)
                    yield tx
                    tx.flush()
            except SQLAlchemyError as exc:
                raise _translated(exc) from exc
            self.recorded.update(tx.recorded)


def _translated(exc: SQLAlchemyError) -> Exception:
    """The billing error a database error means (see :meth:`Store.transaction`)."""
    original = getattr(exc, "orig", None)
    message = str(original or exc).strip().splitlines()[0][:300]
    code = getattr(original, "sqlstate", None)
    concurrent = code in ("23505", "40001", "40P01", "55P03") or any(
        words in message.lower() for words in ("unique constraint", "database is locked")
    )
    if isinstance(exc, IntegrityError | OperationalError) and concurrent:
        diagnosis = getattr(original, "diag", None)
        taken = getattr(diagnosis, "constraint_name", None) or message.rpartition(": ")[2]
        return ConcurrentUpdate("row", taken)
    return StorageError(message)


class Tx:
    """What a use case can read and write inside one transaction."""

    def flush(self) -> None:
        """Send what is pending to the database (done before every commit)."""
        self.session.flush()

    def __init__(self, session: Session, store: Store) -> None:
        self.session = session
        self.store = store
        self.recorded: set[str] = set()
        """Currencies this transaction recorded (known to the store once it commits)."""
        # what this transaction read or wrote, so a use case that asks again (a subscribe reads
        # its subscription, plan and invoice several times) costs no statement: every write of
        # these rows goes through this class, which keeps the copies current
        self._read_plans: dict[str, Plan] = {}
        self._read_subscriptions: dict[str, Loaded] = {}
        self._read_invoices: dict[str, Invoice] = {}

    @property
    def _db(self) -> Connection:
        """The transaction's connection, with the session's pending changes written first (as
        the session would before a statement), for plain SQL over tables: it skips the ORM
        session's handling of each statement and row, which costs more than the statement."""
        self.session.flush()
        return self.session.connection()

    def _forget(self, kind: type[SQLModel], key: str) -> None:
        """Expire the session's copy of a row written with plain SQL, if it holds one: read
        again, it is read afresh."""
        held = self.session.identity_map.get(Session.identity_key(kind, key))
        if held is not None:
            self.session.expire(held)

    def record_currency(self, currency: Currency) -> None:
        """Make sure the database records ``currency``'s exponent before money in it is stored."""
        if currency.code not in self.store.recorded and currency.code not in self.recorded:
            currencies.record(self.session, currency)
            self.recorded.add(currency.code)

    # -- customers, payment methods, credit -----------------------------------------------
    def add_customer(self, customer: Customer, at: datetime) -> None:
        if self.session.get(CustomerRow, customer.id) is not None:
            raise AlreadyExists("customer", customer.id)
        self.session.add(mapping.customer_row(customer, at))

    def customer(self, customer_id: str) -> Customer:
        row = self.session.get(CustomerRow, customer_id)
        if row is None:
            raise NotFound("customer", customer_id)
        return mapping.customer(row)

    def add_payment_method(self, method: PaymentMethod) -> None:
        if method.is_default:
            self.session.execute(
                update(PaymentMethodRow)
                .where(col(PaymentMethodRow.customer_id) == method.customer_id)
                .values(is_default=False)
            )
        self.session.add(mapping.payment_method_row(method))

    def default_payment_method(self, customer_id: str) -> PaymentMethod | None:
        row = self.session.exec(
            select(PaymentMethodRow)
            .where(col(PaymentMethodRow.customer_id) == customer_id)
            .where(col(PaymentMethodRow.is_default))
            .where(col(PaymentMethodRow.detached_at).is_(None))
        ).first()
        return None if row is None else _payment_method(row)

    def payment_methods(self, customer_id: str) -> list[PaymentMethod]:
        rows = self.session.exec(
            select(PaymentMethodRow)
            .where(col(PaymentMethodRow.customer_id) == customer_id)
            .order_by(col(PaymentMethodRow.created_at))
        ).all()
        return [_payment_method(row) for row in rows]

    def credit(self, customer_id: str, currency: Currency, *, lock: bool = False) -> CreditBalance:
        """A customer's credit. Read it with ``lock`` before an invoice consumes it: the row is
        then held until commit, so no other transaction spends or changes it meanwhile."""
        key = {"customer_id": customer_id, "currency": currency.code}
        amount = self._db.execute(_LOCK_CREDIT_OF if lock else _CREDIT_OF, key).scalar()
        return CreditBalance(Money(amount or 0, currency))

    def credits(self, customer_id: str) -> list[CreditBalance]:
        rows = self.session.exec(
            select(CreditBalanceRow).where(col(CreditBalanceRow.customer_id) == customer_id)
        ).all()
        return [CreditBalance(Money(r.amount_minor, Currency.of(r.currency))) for r in rows]

    def change_credit(self, customer_id: str, change: Money, at: datetime) -> CreditBalance:
        """Add ``change`` to a customer's credit in one statement, and return the balance.

        The database adds it to the value it holds (``amount = amount + change``), whatever this
        transaction read before, so concurrent changes never overwrite each other. Credit used
        (a negative change) is taken only if the balance still covers it; otherwise someone spent
        it meanwhile, and :class:`ConcurrentUpdate` rolls the whole transaction back.
        """
        self.record_currency(change.currency)
        row = CreditBalanceRow.__table__  # type: ignore[attr-defined]
        balance = row.c.amount_minor
        if change.is_negative():
            statement: Any = (
                update(row)
                .where(row.c.customer_id == customer_id)
                .where(row.c.currency == change.currency.code)
                .where(balance >= -change.minor)
                .values(amount_minor=balance + change.minor, updated_at=at)
                .returning(balance)
            )
        else:
            dialect = postgresql if self.session.get_bind().dialect.name == "postgresql" else sqlite
            statement = (
                dialect.insert(row)
                .values(
                    customer_id=customer_id,
                    currency=change.currency.code,
                    amount_minor=change.minor,
                    updated_at=at,
                )
                .on_conflict_do_update(
                    index_elements=["customer_id", "currency"],
                    set_={"amount_minor": balance + change.minor, "updated_at": at},
                )
                .returning(balance)
            )
        amount = self.session.execute(statement).scalar()
        if amount is None:
            raise ConcurrentUpdate("credit balance", customer_id)
        return CreditBalance(Money(amount, change.currency))

    def grant(self, granted: CreditGranted) -> CreditBalance:
        """Add credit to a customer's balance, recording the event that says why."""
        balance = self.change_credit(granted.customer_id, granted.amount, granted.at)
        self.record([granted])
        return balance

    def withdraw(self, withdrawn: CreditWithdrawn) -> CreditBalance:
        """Take credit back from a customer's balance, recording the event that says why
        (:class:`ConcurrentUpdate` if the balance no longer covers it)."""
        balance = self.change_credit(withdrawn.customer_id, -withdrawn.amount, withdrawn.at)
        self.record([withdrawn])
        return balance

    def gateway_customer(self, customer_id: str, gateway: str) -> str | None:
        """The customer's id at a gateway, if it was registered there."""
        row = self.session.get(GatewayCustomerRow, (customer_id, gateway))
        return None if row is None else row.reference

    def add_gateway_customer(
        self, customer_id: str, gateway: str, reference: str, at: datetime
    ) -> None:
        self.session.add(
            GatewayCustomerRow(
                customer_id=customer_id, gateway=gateway, reference=reference, created_at=at
            )
        )
        try:
            self.session.flush()
        except IntegrityError as exc:
            raise ConcurrentUpdate("gateway customer", customer_id) from exc

    def add_enrollment(self, enrollment: CardEnrollment) -> None:
        self.session.add(mapping.enrollment_row(enrollment))
        try:
            self.session.flush()
        except IntegrityError as exc:
            raise AlreadyExists("enrollment", enrollment.reference) from exc

    def enrollment(self, gateway: str, reference: str) -> CardEnrollment:
        row = self.session.get(EnrollmentRow, (gateway, reference))
        if row is None:
            raise NotFound("enrollment", reference)
        return mapping.enrollment(row)

    def finish_enrollment(
        self,
        gateway: str,
        reference: str,
        status: EnrollmentStatus,
        at: datetime,
        payment_method_id: str | None = None,
    ) -> bool:
        """Settle a pending enrollment; ``False`` when it was settled already (a concurrent
        completion won), and then nothing changes."""
        result = self.session.execute(
            update(EnrollmentRow)
            .where(col(EnrollmentRow.gateway) == gateway)
            .where(col(EnrollmentRow.reference) == reference)
            .where(col(EnrollmentRow.status) == EnrollmentStatus.PENDING.value)
            .values(status=status.value, completed_at=at, payment_method_id=payment_method_id)
            .execution_options(synchronize_session="evaluate")
        )
        return int(result.rowcount) == 1  # type: ignore[attr-defined]

    def notification_seen(self, gateway: str, event_id: str) -> bool:
        return self.session.get(NotificationRow, (gateway, event_id)) is not None

    def add_notification(self, row: NotificationRow) -> None:
        """Record a notification; :class:`AlreadyExists` when it was recorded before (the
        transaction is then spoilt: roll it back)."""
        self._add_once(row, row.event_id, self.notification_seen(row.gateway, row.event_id))

    def add_to_inbox(self, row: InboxRow) -> None:
        """Keep a notification as it arrived; :class:`AlreadyExists` when that body was kept
        before (the transaction is then spoilt: roll it back)."""
        self._add_once(row, row.digest, self.inbox_row_for(row.gateway, row.digest) is not None)

    def _add_once(self, row: NotificationRow | InboxRow, key: str, seen: bool) -> None:
        """Insert a notification's row unless ``seen``; :class:`AlreadyExists` when it was there
        already, or is inserted concurrently (its unique key refuses the second)."""
        if seen:
            raise AlreadyExists("notification", key)
        self.session.add(row)
        try:
            self.session.flush()
        except IntegrityError as exc:
            raise AlreadyExists("notification", key) from exc

    def inbox_row(self, inbox_id: str) -> InboxRow:
        row = self.session.get(InboxRow, inbox_id)
        if row is None:
            raise NotFound("notification", inbox_id)
        return row

    def inbox_row_for(self, gateway: str, digest: str) -> InboxRow | None:
        return self.session.exec(
            select(InboxRow)
            .where(col(InboxRow.gateway) == gateway)
            .where(col(InboxRow.digest) == digest)
        ).first()

    def due_in_inbox(self, now: datetime, limit: int, *, gateways: Sequence[str]) -> list[str]:
        """The ids of up to ``limit`` notifications of ``gateways`` waiting to be processed,
        oldest first."""
        return list(
            self.session.exec(
                select(InboxRow.id)
                .where(col(InboxRow.status) == INBOX_RECEIVED)
                .where(col(InboxRow.gateway).in_(gateways))
                .where(col(InboxRow.next_attempt_at) <= now)
                .where(
                    or_(col(InboxRow.claimed_until).is_(None), col(InboxRow.claimed_until) < now)
                )
                .order_by(col(InboxRow.received_at), col(InboxRow.id))
                .limit(limit)
            )
        )

    def claim_inbox(self, inbox_id: str, worker: str, *, now: datetime, until: datetime) -> bool:
        """Take a waiting notification for processing, unless another engine holds it; the
        ``WHERE`` is re-checked after any lock wait, so two engines never both take it."""
        result = self.session.execute(
            update(InboxRow)
            .where(col(InboxRow.id) == inbox_id)
            .where(col(InboxRow.status) == INBOX_RECEIVED)
            .where(or_(col(InboxRow.claimed_until).is_(None), col(InboxRow.claimed_until) < now))
            .values(claimed_by=worker, claimed_until=until, attempts=InboxRow.attempts + 1)
            .execution_options(synchronize_session=False)
        )
        return int(result.rowcount) == 1  # type: ignore[attr-defined]

    def settle_inbox(self, inbox_id: str, worker: str, **values: object) -> None:
        """Write what processing did to a notification this engine holds, and release it;
        :class:`ConcurrentUpdate` when the claim was lost meanwhile (its lease lapsed and
        another engine took it)."""
        result = self.session.execute(
            update(InboxRow)
            .where(col(InboxRow.id) == inbox_id)
            .where(col(InboxRow.claimed_by) == worker)
            .values(claimed_by=None, claimed_until=None, **values)
            .execution_options(synchronize_session=False)
        )
        if int(result.rowcount) != 1:  # type: ignore[attr-defined]
            raise ConcurrentUpdate("notification", inbox_id)

    def payment_for(
        self, gateway: str, *, idempotency_key: str | None, reference: str | None
    ) -> PaymentRow | None:
        """The attempt a gateway's notification is about, found by our key or its reference."""
        query = select(PaymentRow).where(col(PaymentRow.gateway) == gateway)
        if idempotency_key is not None:
            found = self.session.exec(
                query.where(col(PaymentRow.idempotency_key) == idempotency_key)
            ).first()
            if found is not None:
                return found
        if reference is not None:
            return self.session.exec(query.where(col(PaymentRow.reference) == reference)).first()
        return None

    # -- plans ----------------------------------------------------------------------------
    def add_plan(self, plan: Plan, at: datetime) -> None:
        if self.session.get(PlanRow, plan.code) is not None:
            raise AlreadyExists("plan", plan.code)
        self.record_currency(plan.price.currency)
        self.record_currency(plan.billing_currency)
        self.session.add(mapping.plan_row(plan, at))

    def plan(self, code: str) -> Plan:
        plan = self._read_plans.get(code)
        if plan is None:
            row = self.session.get(PlanRow, code)
            if row is None:
                raise NotFound("plan", code)
            plan = self._read_plans[code] = mapping.plan(row)
        return plan

    def plans(self) -> list[Plan]:
        rows = self.session.exec(select(PlanRow).order_by(col(PlanRow.created_at))).all()
        return [mapping.plan(row) for row in rows]

    def save_plan_status(self, plan: Plan) -> None:
        row = self.session.get(PlanRow, plan.code)
        if row is None:
            raise NotFound("plan", plan.code)
        row.status = plan.status.value
        self._read_plans.pop(plan.code, None)

    # -- subscriptions --------------------------------------------------------------------
    def add_subscription(self, subscription: Subscription) -> None:
        if self.session.get(SubscriptionRow, subscription.id) is not None:
            raise AlreadyExists("subscription", subscription.id)
        fields = mapping.subscription_fields(subscription)
        self.session.add(SubscriptionRow(**fields, version=1, next_run_at=subscription.due_at))
        self.session.flush()  # no ORM relationships: flush parents before their children
        self.session.add_all(mapping.debt_rows(subscription))
        self.session.flush()
        self._read_subscriptions[subscription.id] = Loaded(subscription, 1, subscription.due_at)

    def subscription(self, subscription_id: str) -> Loaded:
        loaded = self._read_subscriptions.get(subscription_id)
        if loaded is None:
            db, key = self._db, {"id": subscription_id}
            row: Any = db.execute(_SELECT_SUBSCRIPTION, key).first()
            if row is None:
                raise NotFound("subscription", subscription_id)
            debts: list[Any] = list(db.execute(_SELECT_DEBTS_OF, key))
            subscription = mapping.subscription(row, self.plan(row.plan_code), debts)
            loaded = Loaded(subscription, row.version, row.next_run_at)
            self._read_subscriptions[subscription_id] = loaded
        return loaded

    def subscriptions(self, customer_id: str | None = None) -> list[Subscription]:
        """Subscriptions (with their debts: one query for all of them), oldest first."""
        wanted = []
        if customer_id is not None:
            wanted.append(col(SubscriptionRow.customer_id) == customer_id)
        rows = self.session.exec(
            select(SubscriptionRow)
            .where(*wanted)
            .order_by(col(SubscriptionRow.created_at), col(SubscriptionRow.id))
        ).all()
        debts = self._children(
            DebtRow, "subscription_id", select(SubscriptionRow.id).where(*wanted)
        )
        return [mapping.subscription(row, self.plan(row.plan_code), debts[row.id]) for row in rows]

    def _children(self, kind: type[R], parent: str, parents: Any) -> dict[str, list[R]]:
        """The ``kind`` rows whose column ``parent`` is among ``parents`` (ids, or a query of
        them), by that parent: one query however many parents."""
        grouped: dict[str, list[R]] = defaultdict(list)
        column = col(getattr(kind, parent))
        for child in self.session.exec(select(kind).where(column.in_(parents))):
            grouped[getattr(child, parent)].append(child)
        return grouped

    def save_subscription(
        self, loaded: Loaded, subscription: Subscription, *, refresh: bool = True
    ) -> Loaded:
        """Write ``subscription`` over the row read as ``loaded``; refuse if it changed since.

        ``refresh`` recomputes its next run at once; without it, the caller does so
        (:meth:`refresh_next_run`) once it has written the attempts the change opened.
        """
        fields = mapping.subscription_fields(subscription)
        names = (*(name for name in fields if name != "id"), "version")
        values = {**fields, "version": loaded.version + 1}
        values.update(b_id=subscription.id, b_version=loaded.version)
        result = self._db.execute(updating(_SUBSCRIPTIONS, names, ("b_id", "b_version")), values)
        if result.rowcount != 1:
            raise ConcurrentUpdate("subscription", subscription.id)
        self._forget(SubscriptionRow, subscription.id)
        if subscription.debt != loaded.subscription.debt:
            for debt in self.session.exec(
                select(DebtRow).where(col(DebtRow.subscription_id) == subscription.id)
            ).all():
                self.session.delete(debt)
            self.session.flush()
            self.session.add_all(mapping.debt_rows(subscription))
        saved = Loaded(subscription, loaded.version + 1)
        self._read_subscriptions[subscription.id] = saved
        if refresh:
            self.refresh_next_run(subscription.id, subscription)
        return saved

    def refresh_next_run(
        self, subscription_id: str, subscription: Subscription | None = None
    ) -> None:
        """Recompute when the engine next has work for a subscription."""
        if subscription is None:
            subscription = self.subscription(subscription_id).subscription
        check = self._db.execute(_NEXT_CHECK, {"id": subscription_id}).scalar()
        times = [t for t in (subscription.due_at, _utc(check)) if t is not None]
        next_run_at = min(times) if times else None
        self._db.execute(_SET_NEXT_RUN, {"b_id": subscription_id, "next_run_at": next_run_at})
        self._forget(SubscriptionRow, subscription_id)
        loaded = self._read_subscriptions.get(subscription_id)
        if loaded is not None:
            self._read_subscriptions[subscription_id] = replace(loaded, next_run_at=next_run_at)

    def due_subscriptions(self, now: datetime, limit: int, skip: Sequence[str] = ()) -> list[str]:
        query = (
            select(SubscriptionRow.id)
            .where(col(SubscriptionRow.next_run_at) <= now)
            .order_by(col(SubscriptionRow.next_run_at))
            .limit(limit)
        )
        if skip:
            query = query.where(col(SubscriptionRow.id).not_in(list(skip)))
        return list(self.session.exec(query).all())

    # -- claims ---------------------------------------------------------------------------
    def claim_due(
        self,
        worker: str,
        *,
        now: datetime,
        wall_now: datetime,
        lease_until: datetime,
        limit: int,
        skip: Sequence[str] = (),
        checks_only: bool = False,
    ) -> list[str]:
        """Claim up to ``limit`` subscriptions with work due by ``now`` that nobody holds.

        PostgreSQL locks the candidates with ``FOR UPDATE SKIP LOCKED``, so concurrent workers
        pass over each other's rows instead of waiting; SQLite (which ignores that clause, and
        has one writer at a time) relies on the compare-and-set in the UPDATE's own WHERE: a row
        someone claimed meanwhile no longer matches. ``checks_only`` claims only subscriptions
        with an unsettled payment to ask the gateway about. The claimed ids come in due order,
        ties broken by id.
        """
        free = or_(
            col(SubscriptionRow.claimed_until).is_(None),
            col(SubscriptionRow.claimed_until) < wall_now,
        )
        candidates = select(SubscriptionRow.id).where(free).limit(limit)
        if checks_only:
            due_checks = (
                select(PaymentRow.subscription_id)
                .where(col(PaymentRow.status).in_(UNSETTLED))
                .where(col(PaymentRow.check_at) <= now)
            )
            candidates = candidates.where(col(SubscriptionRow.id).in_(due_checks))
        else:
            candidates = candidates.where(col(SubscriptionRow.next_run_at) <= now).order_by(
                col(SubscriptionRow.next_run_at), col(SubscriptionRow.id)
            )
        if skip:
            candidates = candidates.where(col(SubscriptionRow.id).not_in(list(skip)))
        claimed = self.session.execute(
            update(SubscriptionRow)
            .where(col(SubscriptionRow.id).in_(candidates.with_for_update(skip_locked=True)))
            .where(free)
            .values(claimed_by=worker, claimed_until=lease_until)
            .returning(col(SubscriptionRow.id), col(SubscriptionRow.next_run_at))
            .execution_options(synchronize_session=False)
        )
        # RETURNING comes in no particular order: work on them by due instant, then by id, so a
        # run (and a simulation) numbers the invoices of one instant the same way every time.
        due = sorted(claimed, key=lambda row: (row[1] is None, row[1] or now, row[0]))
        return [row[0] for row in due]

    def holds_claim(self, subscription_id: str, worker: str, wall_now: datetime) -> bool:
        row = self.session.get(SubscriptionRow, subscription_id)
        return (
            row is not None
            and row.claimed_by == worker
            and row.claimed_until is not None
            and row.claimed_until > wall_now
        )

    def release(self, worker: str, subscription_ids: Sequence[str]) -> None:
        """Give up this worker's claims on the subscriptions (see :meth:`_unclaim`)."""
        if subscription_ids:
            self._unclaim(
                col(SubscriptionRow.id).in_(list(subscription_ids)),
                col(SubscriptionRow.claimed_by) == worker,
            )

    def release_expired(self, wall_now: datetime) -> int:
        """Clear claims whose lease lapsed (their workers died or hung); returns how many."""
        return self._unclaim(col(SubscriptionRow.claimed_until) < wall_now)

    def _unclaim(self, *conditions: ColumnElement[bool]) -> int:
        """Clear the claims of the matching rows, locked in id order and skipping any another
        transaction holds: a release never waits, so it is never part of a deadlock (a row it
        skips is released later, or its lease lapses)."""
        rows = (
            select(SubscriptionRow.id)
            .where(*conditions)
            .order_by(col(SubscriptionRow.id))
            .with_for_update(skip_locked=True)
        )
        result = self.session.execute(
            update(SubscriptionRow)
            .where(col(SubscriptionRow.id).in_(rows))
            .values(claimed_by=None, claimed_until=None)
            .execution_options(synchronize_session=False)
        )
        return int(result.rowcount)  # type: ignore[attr-defined]

    def claims(self) -> list[tuple[str, str | None, datetime | None]]:
        """Every subscription's claim: (id, worker, until)."""
        rows = self.session.exec(
            select(SubscriptionRow.id, SubscriptionRow.claimed_by, SubscriptionRow.claimed_until)
        ).all()
        return [(row[0], row[1], row[2]) for row in rows]

    def next_run_at(self) -> datetime | None:
        """The earliest instant at which any subscription has work."""
        return _utc(self.session.exec(select(func.min(SubscriptionRow.next_run_at))).first())

    # -- invoices -------------------------------------------------------------------------
    def next_invoice_number(self) -> str:
        """The next number of the engine's gap-free invoice sequence.

        The counter row is locked until commit, so concurrent transactions take numbers one
        after the other and a rolled-back one gives its number back.
        """
        value = self.session.execute(
            update(SequenceRow)
            .where(col(SequenceRow.name) == "invoice")
            .values(value=SequenceRow.value + 1)
            .returning(col(SequenceRow.value))
            .execution_options(synchronize_session=False)
        ).scalar()
        if value is None:
            raise RuntimeError("the invoice sequence is missing: run `billing migrate`")
        return invoice_number(self.store.invoice_prefix, int(value))

    def add_invoice(self, invoice: Invoice) -> None:
        self.session.add(mapping.invoice_row(invoice))
        try:
            self.session.flush()  # no ORM relationships: flush parents before their children
        except IntegrityError as exc:
            raise AlreadyExists("invoice for the period", invoice.period) from exc
        self.session.add_all(mapping.line_rows(invoice))
        self.session.flush()
        self._read_invoices[invoice.id] = invoice

    def save_invoice(self, invoice: Invoice) -> None:
        result = self.session.execute(
            update(InvoiceRow)
            .where(col(InvoiceRow.id) == invoice.id)
            .values(
                status=invoice.status.value, paid_at=invoice.paid_at, closed_at=invoice.closed_at
            )
            .execution_options(synchronize_session="evaluate")
        )
        if result.rowcount != 1:  # type: ignore[attr-defined]
            raise NotFound("invoice", invoice.id)
        self._read_invoices[invoice.id] = invoice

    def invoice(self, invoice_id: str) -> Invoice:
        invoice = self._read_invoices.get(invoice_id)
        if invoice is None:
            row = self.session.get(InvoiceRow, invoice_id)
            if row is None:
                raise NotFound("invoice", invoice_id)
            invoice = self._read_invoices[invoice_id] = self._invoice(row)
        return invoice

    def invoice_by_number(self, number: str) -> Invoice:
        row = self.session.exec(select(InvoiceRow).where(col(InvoiceRow.number) == number)).first()
        if row is None:
            raise NotFound("invoice", number)
        return self._invoice(row)

    def unpaid_invoices(self, subscription_id: str) -> list[str]:
        """The ids of a subscription's invoices not paid (open, or written off), oldest first."""
        return list(
            self.session.exec(
                select(InvoiceRow.id)
                .where(col(InvoiceRow.subscription_id) == subscription_id)
                .where(col(InvoiceRow.status).in_(("open", "uncollectible")))
                .order_by(col(InvoiceRow.created_at), col(InvoiceRow.number))
            ).all()
        )

    def invoices(
        self, *, customer_id: str | None = None, subscription_id: str | None = None
    ) -> list[Invoice]:
        """Invoices (with their lines: one query for all of them), oldest first."""
        wanted = []
        if customer_id is not None:
            wanted.append(col(InvoiceRow.customer_id) == customer_id)
        if subscription_id is not None:
            wanted.append(col(InvoiceRow.subscription_id) == subscription_id)
        rows = self.session.exec(
            select(InvoiceRow)
            .where(*wanted)
            .order_by(col(InvoiceRow.created_at), col(InvoiceRow.number))
        ).all()
        lines = self._children(InvoiceLineRow, "invoice_id", select(InvoiceRow.id).where(*wanted))
        return [mapping.invoice(row, lines[row.id]) for row in rows]

    def _invoice(self, row: InvoiceRow) -> Invoice:
        return mapping.invoice(row, self._children(InvoiceLineRow, "invoice_id", [row.id])[row.id])

    # -- payments and refunds -------------------------------------------------------------
    def add_payment(self, **columns: Any) -> PaymentRow:
        """Add an attempt and return its row; another process adding the same attempt first
        makes this one fail."""
        row = PaymentRow(**columns)
        self.session.add(row)
        try:
            self.session.flush()
        except IntegrityError as exc:
            raise ConcurrentUpdate("payment", row.idempotency_key) from exc
        return row

    def payment_row(self, payment_id: str, *, lock: bool = False) -> PaymentRow:
        """A payment attempt's row; ``lock`` holds it until commit and reads it afresh (one
        attempt's outcome is recorded once, and its refunds one after the other)."""
        row = self.session.get(
            PaymentRow, payment_id, with_for_update=lock or None, populate_existing=lock
        )
        if row is None:
            raise NotFound("payment", payment_id)
        return row

    def lock_invoice_payments(self, invoice_id: str) -> list[PaymentRow]:
        """Every attempt of an invoice, read afresh and locked until commit, in id order: the
        refunds of one invoice are made and settled one at a time (their credit depends on all
        of its payments)."""
        return list(
            self.session.exec(
                select(PaymentRow)
                .where(col(PaymentRow.invoice_id) == invoice_id)
                .order_by(col(PaymentRow.id))
                .with_for_update()
                .execution_options(populate_existing=True)
            ).all()
        )

    def payment_rows(
        self,
        *,
        invoice_id: str | None = None,
        customer_id: str | None = None,
        subscription_id: str | None = None,
    ) -> list[PaymentRow]:
        # in the order they were made: by billing instant, then attempt number, then invoice
        # number (a batch makes many at one instant)
        query = (
            select(PaymentRow)
            .join(InvoiceRow, col(InvoiceRow.id) == col(PaymentRow.invoice_id))
            .order_by(col(PaymentRow.created_at), col(PaymentRow.number), col(InvoiceRow.number))
        )
        if invoice_id is not None:
            query = query.where(col(PaymentRow.invoice_id) == invoice_id)
        if customer_id is not None:
            query = query.where(col(PaymentRow.customer_id) == customer_id)
        if subscription_id is not None:
            query = query.where(col(PaymentRow.subscription_id) == subscription_id)
        return list(self.session.exec(query).all())

    def _in_billing_order(self, payment_ids: Sequence[str]) -> list[str]:
        """Attempts in the order they were made (billing instant, attempt number, invoice
        number), never by their random ids: work taken together is then done in the same order
        on every run of one history, and a replay numbers and dates what it records the same."""
        if not payment_ids:
            return []
        query = (
            select(PaymentRow.id)
            .join(InvoiceRow, col(InvoiceRow.id) == col(PaymentRow.invoice_id))
            .where(col(PaymentRow.id).in_(list(payment_ids)))
            .order_by(col(PaymentRow.created_at), col(PaymentRow.number), col(InvoiceRow.number))
        )
        return list(self.session.exec(query).all())

    def payments_to_check(self, subscription_id: str, now: datetime) -> list[PaymentRow]:
        found = self.session.execute(_DUE_CHECKS, {"id": subscription_id, "now": now})
        return list(found.scalars().all())

    def save_payment(
        self,
        row: PaymentRow,
        attempt: PaymentAttempt,
        check_at: datetime | None,
        *,
        refresh: bool = True,
    ) -> None:
        """Save an attempt's outcome; ``refresh`` recomputes its subscription's next run."""
        mapping.apply_payment(row, attempt)
        row.check_at = check_at if attempt.status.value in UNSETTLED else None
        if refresh and row.subscription_id is not None:
            self.refresh_next_run(row.subscription_id)

    def refunded(self, payment_id: str) -> int:
        """Minor units already refunded (or on their way back) from a payment."""
        query = (
            select(func.coalesce(func.sum(RefundRow.amount_minor), 0))
            .where(col(RefundRow.payment_id) == payment_id)
            .where(col(RefundRow.status) != RefundStatus.FAILED.value)
        )
        return int(self.session.exec(query).first() or 0)

    def refund_row(self, refund_id: str, *, fresh: bool = False) -> RefundRow:
        """A refund's row (``fresh``: read again, after taking its payment's lock)."""
        row = self.session.get(RefundRow, refund_id, populate_existing=fresh)
        if row is None:
            raise NotFound("refund", refund_id)
        return row

    def claim_late_payment_checks(
        self, *, now: datetime, since: datetime, first: timedelta, until: datetime, limit: int
    ) -> list[str]:
        """Take up to ``limit`` payment links that expired unpaid after ``since`` and are due a
        question about a late payment (the first ``first`` after the expiry), by moving their
        ``late_check_at`` to ``until``; as :meth:`claim_refund_checks`, another process passes
        over them until then."""
        expired_link = and_(
            col(PaymentRow.error) == ErrorCode.PAYER_ABANDONED.value,
            col(PaymentRow.updated_at) >= since,
            col(PaymentRow.status) == PaymentStatus.FAILED.value,
        )
        due_now = or_(
            and_(
                col(PaymentRow.late_check_at).is_(None), col(PaymentRow.updated_at) <= now - first
            ),
            col(PaymentRow.late_check_at) <= now,
        )
        return self._claim_payments(
            and_(expired_link, due_now),
            first=col(PaymentRow.updated_at),
            values={"late_check_at": until},
            limit=limit,
        )

    def claim_superseded_links(
        self, *, now: datetime, until: datetime, gateways: Sequence[str], limit: int
    ) -> list[str]:
        """Take up to ``limit`` live payment links of ``gateways`` whose invoice was settled
        another way (paid or voided), by moving their ``link_cancel_at`` to ``until``: a live
        link is an attempt still waiting for the customer (``requires_action``) with the
        gateway's reference. As :meth:`claim_refund_checks`, another process passes over them
        until then; nothing else changes, so a claim whose worker died simply lapses."""
        if not gateways:
            return []
        invoice_settled = (
            select(InvoiceRow.id)
            .where(col(InvoiceRow.id) == col(PaymentRow.invoice_id))
            .where(col(InvoiceRow.status).in_(SETTLED_INVOICES))
            .exists()
        )
        superseded = and_(
            col(PaymentRow.status) == _LIVE_LINK,  # a literal: the partial index's own predicate
            col(PaymentRow.gateway).in_(list(gateways)),
            func.coalesce(col(PaymentRow.reference), "") != "",  # not an index range on it
            invoice_settled,
        )
        free = or_(col(PaymentRow.link_cancel_at).is_(None), col(PaymentRow.link_cancel_at) <= now)
        return self._claim_payments(
            and_(superseded, free),
            first=col(PaymentRow.created_at),
            values={"link_cancel_at": until},
            limit=limit,
        )

    def _claim_payments(
        self,
        wanted: ColumnElement[bool],
        *,
        first: Any,
        values: dict[str, object],
        limit: int,
    ) -> list[str]:
        """Take up to ``limit`` attempts matching ``wanted`` (the earliest by ``first``) by
        setting ``values`` on them, passing over rows another transaction holds (PostgreSQL's
        ``SKIP LOCKED``; on SQLite the update's own condition); returns them in billing order."""
        due = (
            select(PaymentRow.id)
            .where(wanted)
            .order_by(first, col(PaymentRow.id))
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        taken = self.session.execute(
            update(PaymentRow)
            .where(col(PaymentRow.id).in_(due))
            .where(wanted)
            .values(**values)
            .returning(col(PaymentRow.id))
            .execution_options(synchronize_session=False)
        )
        return self._in_billing_order([row[0] for row in taken])

    def claim_refund_checks(self, *, now: datetime, until: datetime, limit: int) -> list[str]:
        """Take up to ``limit`` unsettled refunds due for a check by moving their ``check_at``
        to ``until``: another process passes over them until then (PostgreSQL skips the rows
        locked meanwhile; on SQLite the ``WHERE`` re-checks ``check_at``)."""
        due = (
            select(RefundRow.id)
            .where(col(RefundRow.status).in_(UNSETTLED_REFUNDS))
            .where(col(RefundRow.check_at) <= now)
            .order_by(col(RefundRow.check_at), *_REFUND_ORDER)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        taken = self.session.execute(
            update(RefundRow)
            .where(col(RefundRow.id).in_(due))
            .where(col(RefundRow.check_at) <= now)
            .values(check_at=until)
            .returning(col(RefundRow.id))
            .execution_options(synchronize_session=False)
        )
        ids = [row[0] for row in taken]
        if not ids:
            return []
        in_order = (  # the order they were asked for, never their random ids (as attempts)
            select(RefundRow.id).where(col(RefundRow.id).in_(ids)).order_by(*_REFUND_ORDER)
        )
        return list(self.session.exec(in_order).all())

    def refund_rows(self, payment_id: str) -> list[RefundRow]:
        return list(
            self.session.exec(
                select(RefundRow)
                .where(col(RefundRow.payment_id) == payment_id)
                .order_by(*_REFUND_ORDER)
            ).all()
        )

    # -- events and idempotency -----------------------------------------------------------
    def record(self, events: Iterable[Event]) -> None:
        """Add events to the outbox, in order, in this transaction."""
        rows = event_rows(events)
        if rows:
            self._db.execute(_INSERT_EVENTS, rows)

    def last_event_at(self, subscription_id: str) -> datetime | None:
        """The instant of the subscription's latest event: how far its history has gone."""
        return _utc(
            self.session.exec(
                select(EventRow.at)
                .where(col(EventRow.stream) == _stream(subscription_id, None))
                .order_by(col(EventRow.seq).desc())
                .limit(1)
            ).first()
        )

    def events(self, *, after: int, limit: int, pending_only: bool) -> list[StoredEvent]:
        query = select(EventRow).where(col(EventRow.seq) > after).order_by(col(EventRow.seq))
        if pending_only:
            query = query.where(col(EventRow.acknowledged_at).is_(None))
        return [_stored(row) for row in self.session.exec(query.limit(limit)).all()]

    def acknowledge(self, event_ids: Sequence[str], at: datetime) -> int:
        result = self.session.execute(
            update(EventRow)
            .where(col(EventRow.id).in_(list(event_ids)))
            .where(col(EventRow.acknowledged_at).is_(None))
            .values(acknowledged_at=at)
            .execution_options(synchronize_session=False)
        )
        return int(result.rowcount)  # type: ignore[attr-defined]

    def claim_event_heads(
        self, worker: str, *, wall_now: datetime, lease_until: datetime, limit: int
    ) -> list[StoredEvent]:
        """Claim the first undelivered event of up to ``limit`` streams, oldest first.

        Only a stream's first undelivered event can be claimed, so a stream's events are
        delivered one at a time, in order; a stream whose first event keeps failing holds back
        only its own later events.
        """
        older = aliased(EventRow)
        earlier_pending = (
            select(older.seq)
            .where(col(older.stream) == col(EventRow.stream))
            .where(col(older.seq) < col(EventRow.seq))
            .where(col(older.acknowledged_at).is_(None))
            .exists()
        )
        free = or_(col(EventRow.claimed_until).is_(None), col(EventRow.claimed_until) < wall_now)
        heads = (
            select(EventRow.seq)
            .where(col(EventRow.acknowledged_at).is_(None))
            .where(
                or_(col(EventRow.deliver_after).is_(None), col(EventRow.deliver_after) <= wall_now)
            )
            .where(free)
            .where(~earlier_pending)
            .order_by(col(EventRow.seq))
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        claimed = self.session.execute(
            update(EventRow)
            .where(col(EventRow.seq).in_(heads))
            .where(free)
            .values(claimed_by=worker, claimed_until=lease_until)
            .returning(col(EventRow.seq))
            .execution_options(synchronize_session=False)
        )
        sequence = [row[0] for row in claimed]
        if not sequence:
            return []
        rows = self.session.exec(
            select(EventRow).where(col(EventRow.seq).in_(sequence)).order_by(col(EventRow.seq))
        ).all()
        return [_stored(row) for row in rows]

    def delivered(self, seq: int, worker: str, at: datetime) -> None:
        """Mark an event delivered (acknowledged) by the worker that claimed it."""
        self.session.execute(
            update(EventRow)
            .where(col(EventRow.seq) == seq)
            .where(col(EventRow.claimed_by) == worker)
            .values(
                acknowledged_at=at,
                deliveries=EventRow.deliveries + 1,
                claimed_by=None,
                claimed_until=None,
            )
            .execution_options(synchronize_session=False)
        )

    def delivery_failed(self, seq: int, worker: str, error: str, retry_at: datetime) -> None:
        """Note a failed delivery; the event is retried at ``retry_at``."""
        self.session.execute(
            update(EventRow)
            .where(col(EventRow.seq) == seq)
            .where(col(EventRow.claimed_by) == worker)
            .values(
                deliveries=EventRow.deliveries + 1,
                deliver_after=retry_at,
                last_error=error,
                claimed_by=None,
                claimed_until=None,
            )
            .execution_options(synchronize_session=False)
        )

    def idempotency(self, key: str) -> IdempotencyRow | None:
        return self.session.get(IdempotencyRow, key)

    def remember(
        self, key: str, operation: str, fingerprint: str, result: Any, at: datetime
    ) -> None:
        """Take an idempotency key; a concurrent call that took it first wins."""
        self.session.add(
            IdempotencyRow(
                key=key, operation=operation, fingerprint=fingerprint, result=result, created_at=at
            )
        )
        try:
            self.session.flush()
        except IntegrityError as exc:
            raise ConcurrentUpdate("idempotency key", key) from exc

    def update_remembered(self, key: str, result: Any) -> None:
        self.session.execute(
            update(IdempotencyRow)
            .where(col(IdempotencyRow.key) == key)
            .values(result=result)
            .execution_options(synchronize_session=False)
        )


def _stored(row: EventRow) -> StoredEvent:
    return StoredEvent(
        seq=row.seq or 0,
        id=row.id,
        name=row.name,
        at=row.at,
        payload=row.payload,
        subscription_id=row.subscription_id,
        customer_id=row.customer_id,
        invoice_id=row.invoice_id,
        acknowledged_at=row.acknowledged_at,
        deliveries=row.deliveries,
    )


def _payment_method(row: PaymentMethodRow) -> PaymentMethod:
    return PaymentMethod(
        id=row.id,
        customer_id=row.customer_id,
        gateway=row.gateway,
        token=row.token,
        label=row.label,
        is_default=row.is_default,
        created_at=row.created_at,
    )


def _utc(value: datetime | None) -> datetime | None:
    """Aggregates bypass the column type: SQLite hands back naive UTC text, PostgreSQL aware."""
    if value is None:
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def event_rows(events: Iterable[Event]) -> list[dict[str, Any]]:
    """The outbox rows of events, in order, recorded now."""
    recorded_at = datetime.now(UTC)
    rows = []
    for event in events:
        payload = event.payload()
        subscription_id = _str_or_none(payload.get("subscription_id"))
        customer_id = _str_or_none(payload.get("customer_id"))
        rows.append(
            {
                "id": f"evt_{uuid.uuid4().hex}",
                "name": event.name,
                "at": event.at,
                "subscription_id": subscription_id,
                "customer_id": customer_id,
                "invoice_id": _str_or_none(payload.get("invoice_id")),
                "payload": payload,
                "recorded_at": recorded_at,
                "stream": _stream(subscription_id, customer_id),
                "deliveries": 0,
            }
        )
    return rows


def _stream(subscription_id: str | None, customer_id: str | None) -> str:
    if subscription_id is not None:
        return f"subscription:{subscription_id}"
    if customer_id is not None:
        return f"customer:{customer_id}"
    return "engine"


def _str_or_none(value: object) -> str | None:
    return value if isinstance(value, str) else None
