"""A transaction over a batch of subscriptions, written with a handful of bulk statements.

A :class:`BatchTx` is a :class:`~billing.store.unit_of_work.Tx` whose reads of a batch are made
set-based (:meth:`BatchTx.load`) and whose writes are kept in memory until :meth:`BatchTx.flush`,
which writes them all at once: ``UPDATE ... WHERE id = ? AND version = ?`` and ``INSERT`` with
``executemany``, one statement per table. The use cases run unchanged on it (it answers the same
calls as ``Tx``, from what it loaded and what they changed), so the billing rules cannot differ
between a batch and a single subscription.

Invoice numbers stay gap-free without holding the engine's counter while the batch is computed:
invoices get a placeholder while the batch is worked out, and :meth:`flush` takes a block of real
numbers as its first statement, so the counter row is locked only while the batch is written.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import replace
from datetime import datetime
from json import dumps
from typing import Any, cast

from sqlalchemy import (
    JSON,
    BindParameter,
    Connection,
    Integer,
    Select,
    Table,
    bindparam,
    delete,
    insert,
    select,
    update,
)
from sqlmodel import col

from billing.domain.catalog import Plan
from billing.domain.customers import PaymentMethod
from billing.domain.errors import ConcurrentUpdate, NotFound, StorageError
from billing.domain.events import Event
from billing.domain.invoices import Invoice, invoice_number
from billing.domain.ledger import CreditBalance
from billing.domain.money import Currency, Money
from billing.domain.payments import PaymentAttempt
from billing.domain.subscriptions import Subscription
from billing.ports import ChargeRequest
from billing.store import mapping
from billing.store.tables import (
    CreditBalanceRow,
    GatewayCustomerRow,
    InvoiceRow,
    PaymentMethodRow,
    PaymentRow,
    PlanRow,
    SequenceRow,
)
from billing.store.tables import metadata as schema
from billing.store.unit_of_work import (
    _DEBTS,
    _EVENTS,
    _PAYMENTS,
    _SUBSCRIPTIONS,
    UNSETTLED,
    Loaded,
    Tx,
    _payment_method,
    _stream,
    event_rows,
    updating,
)

_INVOICES = schema.tables["invoices"]
_LINES = schema.tables["invoice_lines"]
_METHODS = schema.tables["payment_methods"]
_PLACEHOLDER = re.compile("\ue000([0-9]+)\ue001")
_PAYMENT_COLUMNS = [column.name for column in _PAYMENTS.columns]
_PAYMENT_OUTCOME = (
    *("status", "decline", "code", "message", "reference", "error", "action_url"),
    *("updated_at", "sent_at", "check_at"),
)
"""The columns an attempt's outcome changes."""
_COPY_FROM = 20
"""Rows from which PostgreSQL gets them with ``COPY``."""
_CHUNK = 500
"""Ids per ``IN (...)`` list (SQLite allows 32,766 parameters; PostgreSQL 65,535)."""


def _chunks(values: Sequence[str]) -> Iterable[list[str]]:
    for start in range(0, len(values), _CHUNK):
        yield list(values[start : start + _CHUNK])


# The statements a batch runs, built once: each takes its ``IN`` list as the parameter ``ids``.
# Building a statement and its cache key costs more than running it on a small batch.
def _ids() -> BindParameter[Any]:
    return bindparam("ids", expanding=True)


_SELECT_SUBSCRIPTIONS = select(_SUBSCRIPTIONS).where(_SUBSCRIPTIONS.c.id.in_(_ids()))
_SELECT_DEBTS = select(_DEBTS).where(_DEBTS.c.subscription_id.in_(_ids()))
_DELETE_DEBTS = delete(_DEBTS).where(_DEBTS.c.subscription_id.in_(_ids()))
_SELECT_PLANS = select(PlanRow).where(col(PlanRow.code).in_(_ids()))
_SELECT_METHODS = (
    select(_METHODS)
    .where(_METHODS.c.customer_id.in_(_ids()))
    .where(_METHODS.c.is_default)
    .where(_METHODS.c.detached_at.is_(None))
)
_SELECT_GATEWAY_CUSTOMERS = select(
    col(GatewayCustomerRow.customer_id),
    col(GatewayCustomerRow.gateway),
    col(GatewayCustomerRow.reference),
).where(col(GatewayCustomerRow.customer_id).in_(_ids()))
_SELECT_CREDIT = (
    select(
        col(CreditBalanceRow.customer_id),
        col(CreditBalanceRow.currency),
        col(CreditBalanceRow.amount_minor),
    )
    .where(col(CreditBalanceRow.customer_id).in_(_ids()))
    .order_by(col(CreditBalanceRow.customer_id), col(CreditBalanceRow.currency))
)
_LOCK_CREDIT = _SELECT_CREDIT.with_for_update()
_SELECT_LINES = select(_LINES).where(_LINES.c.invoice_id.in_(_ids()))
_SELECT_INVOICES = select(_INVOICES).where(_INVOICES.c.id.in_(_ids()))
_SELECT_UNSETTLED = (
    select(_PAYMENTS)
    .where(_PAYMENTS.c.subscription_id.in_(_ids()), _PAYMENTS.c.status.in_(UNSETTLED))
    .order_by(_PAYMENTS.c.id)
)
_SELECT_INVOICE_PAYMENTS = (
    select(_PAYMENTS).where(_PAYMENTS.c.invoice_id.in_(_ids())).order_by(_PAYMENTS.c.id)
)
_LOCK_PAYMENTS = (
    select(_PAYMENTS).where(_PAYMENTS.c.id.in_(_ids())).order_by(_PAYMENTS.c.id).with_for_update()
)
_TAKE_NUMBERS = (
    update(SequenceRow)
    .where(col(SequenceRow.name) == "invoice")
    .values(value=SequenceRow.value + bindparam("count", type_=Integer))
    .returning(col(SequenceRow.value))
    .execution_options(synchronize_session=False)
)


class BatchTx(Tx):
    """One transaction over many subscriptions; its writes go out in :meth:`flush`."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._plans: dict[str, Plan] = {}
        self._subscriptions: dict[str, Loaded] = {}
        self._read: dict[str, Loaded] = {}
        """Each subscription as read: what its row holds."""
        self._debts_changed: set[str] = set()
        self._invoices: dict[str, Invoice] = {}
        self._new_invoices: dict[str, Invoice] = {}
        self._changed_invoices: set[str] = set()
        self._invoice_status: dict[str, str] = {}
        """Each stored invoice's status as read: it is updated only if still that."""
        self._new_payments: list[PaymentRow] = []
        self._payments: dict[str, PaymentRow] = {}
        """The attempts read, by id: plain objects, written back by :meth:`flush`."""
        self._changed_payments: dict[str, None] = {}
        """Attempts whose outcome was recorded, in the order it was (rows are updated in it)."""
        self._unsettled: dict[str, list[PaymentRow]] = {}
        """Each loaded subscription's unsettled attempts (read, or new)."""
        self._attempts: dict[str, list[PaymentRow]] = {}
        """Every attempt of an invoice, once asked for (read, and new ones)."""
        self._methods: dict[str, PaymentMethod | None] = {}
        self._gateway_customers: dict[tuple[str, str], str | None] = {}
        self._credit: dict[tuple[str, str], int] = {}
        self._credit_read: dict[str, bool] = {}
        """Customers whose balances were read with the batch: whether locked."""
        self._stale: set[str] = set()
        """Subscriptions whose next run changed."""
        self._credit_changes: dict[tuple[str, str], tuple[Money, datetime]] = {}
        self._events: list[dict[str, Any]] = []
        self._numbers = 0
        """Invoice numbers handed out as placeholders."""
        self._numbers_taken: dict[int, str] = {}
        """The real number of each placeholder, once :meth:`flush` took them."""

    # -- loading a batch ------------------------------------------------------------------
    def load(self, subscription_ids: Sequence[str], *, lock_credit: bool = True) -> list[Loaded]:
        """Read the subscriptions and what their steps need, a few statements for them all:
        their rows, debts and plans, their unsettled attempts, their customers' default payment
        methods, gateway ids and credit (locked, in key order, with ``lock_credit``)."""
        wanted = [sid for sid in dict.fromkeys(subscription_ids) if sid not in self._subscriptions]
        rows: list[Any] = []
        debts: dict[str, list[Any]] = defaultdict(list)
        for chunk in _chunks(wanted):
            rows.extend(self._db.execute(_SELECT_SUBSCRIPTIONS, {"ids": chunk}))
            for debt in self._db.execute(_SELECT_DEBTS, {"ids": chunk}):
                debts[debt.subscription_id].append(debt)
            for payment in self._read_payments(_SELECT_UNSETTLED, chunk):
                assert payment.subscription_id is not None
                self._unsettled.setdefault(payment.subscription_id, []).append(payment)
        self._load_plans({row.plan_code for row in rows})
        for row in rows:
            subscription = mapping.subscription(row, self._plans[row.plan_code], debts[row.id])
            self._subscriptions[row.id] = Loaded(subscription, row.version, row.next_run_at)
            self._read[row.id] = self._subscriptions[row.id]
            self._unsettled.setdefault(row.id, [])
        self.load_customers({row.customer_id for row in rows}, lock_credit=lock_credit)
        self._load_collected(wanted)
        return [self._subscriptions[sid] for sid in subscription_ids if sid in self._subscriptions]

    def _load_collected(self, subscription_ids: Sequence[str]) -> None:
        """Read the invoices the loaded subscriptions are collecting (in dunning, or waiting for
        a retry), with their attempts: a retry needs both, and they are few."""
        collected = {
            collection.invoice_id
            for sid in subscription_ids
            if sid in self._subscriptions
            for subscription in (self._subscriptions[sid].subscription,)
            for collection in (
                *((subscription.dunning,) if subscription.dunning else ()),
                *subscription.collections,
            )
        }
        wanted = sorted(collected - self._attempts.keys())
        if not wanted:
            return
        self.load_invoices(wanted)
        attempts: dict[str, list[PaymentRow]] = {invoice_id: [] for invoice_id in wanted}
        for chunk in _chunks(wanted):
            for row in self._read_payments(_SELECT_INVOICE_PAYMENTS, chunk):
                attempts[row.invoice_id].append(row)
        for invoice_id, rows in attempts.items():
            self._attempts[invoice_id] = sorted(rows, key=lambda row: (row.created_at, row.number))

    def _load_plans(self, codes: set[str]) -> None:
        missing = sorted(codes - self._plans.keys())
        if missing:
            for plan in self.session.scalars(_SELECT_PLANS, {"ids": missing}):
                self._plans[plan.code] = mapping.plan(plan)

    def carry(self, before: BatchTx) -> None:
        """Start from what an earlier batch transaction, committed since, read and wrote: its
        plans, subscriptions, invoices and attempts, so that recording the answers to its
        attempts need not read them again. Customers (credit above all) are read afresh.

        That is safe because every write of a batch is conditional on what it read: a
        subscription on its version, an invoice on its status, and attempts are read again,
        locked (:meth:`lock_payments`). A row another process changed in between makes
        :meth:`flush` raise :class:`ConcurrentUpdate`, and nothing is written.
        """
        self._plans.update(before._plans)
        self._subscriptions.update(before._subscriptions)
        self._read.update(before._subscriptions)
        self._invoices.update(before._invoices)
        self._invoice_status.update(
            (invoice_id, invoice.status.value) for invoice_id, invoice in before._invoices.items()
        )
        self._payments.update(before._payments)
        self._payments.update((row.id, row) for row in before._new_payments)
        self._unsettled.update(before._unsettled)
        self._attempts.update(before._attempts)

    def load_customers(self, customer_ids: Iterable[str], *, lock_credit: bool) -> None:
        """Read customers' default payment methods, gateway ids and credit balances."""
        wanted = sorted(set(customer_ids) - self._methods.keys())
        for chunk in _chunks(wanted):
            for customer_id in chunk:
                self._methods[customer_id] = None
            ids = {"ids": chunk}
            for method in self._db.execute(_SELECT_METHODS, ids):
                self._methods[method.customer_id] = _payment_method(cast(PaymentMethodRow, method))
            for known in self._db.execute(_SELECT_GATEWAY_CUSTOMERS, ids):
                self._gateway_customers[(known[0], known[1])] = known[2]
            credit = _LOCK_CREDIT if lock_credit else _SELECT_CREDIT
            for balance in self._db.execute(credit, ids):
                self._credit[(balance[0], balance[1])] = balance[2]
            for customer_id in chunk:
                self._credit_read[customer_id] = lock_credit

    def load_invoices(self, invoice_ids: Iterable[str]) -> None:
        """Read invoices with their lines."""
        wanted = sorted(set(invoice_ids) - self._invoices.keys())
        for chunk in _chunks(wanted):
            lines: dict[str, list[Any]] = defaultdict(list)
            for line in self._db.execute(_SELECT_LINES, {"ids": chunk}):
                lines[line.invoice_id].append(line)
            for row in self._db.execute(_SELECT_INVOICES, {"ids": chunk}):
                self._invoices[row.id] = mapping.invoice(cast(InvoiceRow, row), lines[row.id])
                self._invoice_status[row.id] = row.status

    def lock_payments(self, payment_ids: Sequence[str]) -> dict[str, PaymentRow]:
        """Payment rows, locked until commit and read afresh, taken in id order."""
        found: dict[str, PaymentRow] = {}
        for chunk in _chunks(sorted(set(payment_ids))):
            for row in self._read_payments(_LOCK_PAYMENTS, chunk, lock=True):
                found[row.id] = row
        return found

    def _read_payments(
        self, query: Select[Any], ids: list[str], *, lock: bool = False
    ) -> list[PaymentRow]:
        """The payment rows ``query`` finds for ``ids``, as plain objects, one per attempt in
        this transaction (a row read twice is the same object; ``lock``: the query locks them,
        and they are read afresh)."""
        found = []
        for stored in self._db.execute(query, {"ids": ids}):
            row = self._payments.get(stored.id)
            if row is None or lock:
                row = row or cast(PaymentRow, _Payment())
                row.__dict__.update(stored._mapping)
                self._payments[stored.id] = row
            found.append(row)
        return found

    def has_work(self, subscription_id: str, now: datetime) -> bool:
        """Whether a subscription this transaction wrote may still have work due by ``now``, as
        far as it knows (a subscription it did not load: yes)."""
        loaded = self._subscriptions.get(subscription_id)
        if loaded is None:
            return True
        return loaded.next_run_at is not None and loaded.next_run_at <= now

    def due_check(self, subscription_id: str, now: datetime) -> tuple[str, datetime] | None:
        """The loaded subscription's first unsettled attempt due for a check by ``now``."""
        due = [
            (row.check_at, row.created_at, row.number, row.id)
            for row in self._unsettled.get(subscription_id, ())
            if row.status in UNSETTLED and row.check_at is not None and row.check_at <= now
        ]
        if not due:
            return None
        check_at, _, _, payment_id = min(due)  # as Tx.payments_to_check orders them
        return payment_id, check_at

    # -- what the use cases read ----------------------------------------------------------
    def subscription(self, subscription_id: str) -> Loaded:
        if subscription_id not in self._subscriptions:
            self.load([subscription_id])
            if subscription_id not in self._subscriptions:
                raise NotFound("subscription", subscription_id)
        return self._subscriptions[subscription_id]

    def plan(self, code: str) -> Plan:
        self._load_plans({code})
        if code not in self._plans:
            raise NotFound("plan", code)
        return self._plans[code]

    def invoice(self, invoice_id: str) -> Invoice:
        if invoice_id not in self._invoices:
            self.load_invoices([invoice_id])
            if invoice_id not in self._invoices:
                raise NotFound("invoice", invoice_id)
        return self._invoices[invoice_id]

    def payment_rows(
        self,
        *,
        invoice_id: str | None = None,
        customer_id: str | None = None,
        subscription_id: str | None = None,
    ) -> list[PaymentRow]:
        if invoice_id is None or customer_id is not None or subscription_id is not None:
            stored = super().payment_rows(
                invoice_id=invoice_id, customer_id=customer_id, subscription_id=subscription_id
            )
            new = [
                row
                for row in self._new_payments
                if invoice_id in (None, row.invoice_id)
                and customer_id in (None, row.customer_id)
                and subscription_id in (None, row.subscription_id)
            ]
            return stored + new
        if invoice_id not in self._attempts:  # before any new attempt on it (add_payment)
            fresh = invoice_id in self._new_invoices
            self._attempts[invoice_id] = (
                []
                if fresh
                else sorted(
                    self._read_payments(_SELECT_INVOICE_PAYMENTS, [invoice_id]),
                    key=lambda row: (row.created_at, row.number),
                )
            )
        return list(self._attempts[invoice_id])

    def default_payment_method(self, customer_id: str) -> PaymentMethod | None:
        if customer_id not in self._methods:
            self.load_customers([customer_id], lock_credit=False)
        return self._methods[customer_id]

    def gateway_customer(self, customer_id: str, gateway: str) -> str | None:
        if customer_id not in self._methods:
            self.load_customers([customer_id], lock_credit=False)
        return self._gateway_customers.get((customer_id, gateway))

    def credit(self, customer_id: str, currency: Currency, *, lock: bool = False) -> CreditBalance:
        key = (customer_id, currency.code)
        read = self._credit_read.get(customer_id)
        if read is None or (lock and not read and key not in self._credit):
            # not read with the batch (or read without its lock): read it, locked, now
            self._credit[key] = super().credit(customer_id, currency, lock=True).amount.minor
        return CreditBalance(Money(self._credit.get(key, 0), currency))

    def last_event_at(self, subscription_id: str) -> datetime | None:
        stream = _stream(subscription_id, None)
        for event in reversed(self._events):
            if event["stream"] == stream:
                return cast(datetime, event["at"])
        return super().last_event_at(subscription_id)

    # -- what the use cases write ---------------------------------------------------------
    def save_subscription(
        self, loaded: Loaded, subscription: Subscription, *, refresh: bool = True
    ) -> Loaded:
        current = self.subscription(subscription.id)
        if current.version != loaded.version:
            raise ConcurrentUpdate("subscription", subscription.id)
        if subscription.debt != current.subscription.debt:
            self._debts_changed.add(subscription.id)
        saved = Loaded(subscription, loaded.version + 1, current.next_run_at)
        self._subscriptions[subscription.id] = saved
        if refresh:
            self.refresh_next_run(subscription.id, subscription)
        return Loaded(subscription, saved.version)

    def refresh_next_run(
        self, subscription_id: str, subscription: Subscription | None = None
    ) -> None:
        loaded = self.subscription(subscription_id)
        subscription = subscription or loaded.subscription
        times = [
            row.check_at
            for row in self._unsettled[subscription_id]
            if row.status in UNSETTLED and row.check_at is not None
        ]
        if subscription.due_at is not None:
            times.append(subscription.due_at)
        next_run_at = min(times) if times else None
        if next_run_at != loaded.next_run_at:
            self._stale.add(subscription_id)
        self._subscriptions[subscription_id] = Loaded(
            loaded.subscription, loaded.version, next_run_at
        )

    def change_credit(self, customer_id: str, change: Money, at: datetime) -> CreditBalance:
        key = (customer_id, change.currency.code)
        balance = self.credit(customer_id, change.currency, lock=True).amount + change
        if balance.is_negative():
            raise ConcurrentUpdate("credit balance", customer_id)
        self._credit[key] = balance.minor
        before = self._credit_changes.get(key)
        self._credit_changes[key] = (change if before is None else before[0] + change, at)
        return CreditBalance(balance)

    def next_invoice_number(self) -> str:
        self._numbers += 1
        return f"\ue000{self._numbers}\ue001"

    def add_invoice(self, invoice: Invoice) -> None:
        self._invoices[invoice.id] = invoice
        self._new_invoices[invoice.id] = invoice

    def save_invoice(self, invoice: Invoice) -> None:
        self._invoices[invoice.id] = invoice
        if invoice.id in self._new_invoices:
            self._new_invoices[invoice.id] = invoice
        else:
            self._changed_invoices.add(invoice.id)

    def add_payment(self, **columns: Any) -> PaymentRow:
        row = cast(PaymentRow, _Payment())
        row.__dict__.update(dict.fromkeys(_PAYMENT_COLUMNS), **columns)
        self.payment_rows(invoice_id=row.invoice_id)  # the invoice's stored attempts, first
        self._new_payments.append(row)
        self._attempts[row.invoice_id].append(row)
        if row.subscription_id is not None:
            self._unsettled.setdefault(row.subscription_id, []).append(row)
        return row

    def save_payment(
        self,
        row: PaymentRow,
        attempt: PaymentAttempt,
        check_at: datetime | None,
        *,
        refresh: bool = True,
    ) -> None:
        sid = row.subscription_id
        if sid is not None and sid not in self._subscriptions:
            self.load([sid], lock_credit=False)
        super().save_payment(row, attempt, check_at, refresh=refresh)
        if row.id in self._payments:
            self._changed_payments[row.id] = None

    def record(self, events: Iterable[Event]) -> None:
        self._events.extend(event_rows(events))

    # -- writing it all -------------------------------------------------------------------
    def flush(self) -> None:
        """Write everything the batch changed: a statement or two per table.

        Every row is built first; the block of invoice numbers is taken next, so the engine's
        counter is locked only while the statements run, not while Python builds their rows.
        """
        subscriptions = self._subscription_updates()
        debts = sorted(self._debts_changed)
        debt_rows = [
            row
            for sid in debts
            for row in mapping.debt_fields(self._subscriptions[sid].subscription)
        ]
        invoices = [mapping.invoice_fields(invoice) for invoice in self._new_invoices.values()]
        lines = [line for i in self._new_invoices.values() for line in mapping.line_fields(i)]
        changed_invoices = [
            {
                "b_id": invoice.id,
                "b_status": self._invoice_status[invoice.id],
                "status": invoice.status.value,
                "paid_at": invoice.paid_at,
                "closed_at": invoice.closed_at,
            }
            for invoice in map(self._invoices.__getitem__, sorted(self._changed_invoices))
        ]
        new_payments = [
            {name: getattr(row, name) for name in _PAYMENT_COLUMNS} for row in self._new_payments
        ]
        changed_payments = [
            {"b_id": pid, **{name: getattr(self._payments[pid], name) for name in _PAYMENT_OUTCOME}}
            for pid in self._changed_payments
        ]
        numbers = self._take_numbers()
        if numbers:
            for row in invoices:
                row["number"] = _renumber(row["number"], numbers)
            for event in self._events:
                event["payload"] = _renumber_value(event["payload"], numbers)
            self._invoices.update(
                (invoice.id, _renumbered(invoice, numbers))
                for invoice in self._new_invoices.values()
            )
        self._numbers_taken = numbers
        for names, rows in subscriptions.items():
            self._update(_SUBSCRIPTIONS, names, rows, "subscription")
        for chunk in _chunks(debts):
            self._db.execute(_DELETE_DEBTS, {"ids": chunk})
        self._insert(_DEBTS, debt_rows)
        self._insert(_INVOICES, invoices)
        self._insert(_LINES, lines)
        if changed_invoices:
            self._update(_INVOICES, ("status", "paid_at", "closed_at"), changed_invoices, "invoice")
        self._insert(_PAYMENTS, new_payments)
        if changed_payments:
            self._update(_PAYMENTS, _PAYMENT_OUTCOME, changed_payments, None)
        for (customer_id, _code), (change, at) in sorted(self._credit_changes.items()):
            if not change.is_zero():
                Tx.change_credit(self, customer_id, change, at)
        self._insert(_EVENTS, self._events)

    def _update(
        self,
        table: Table,
        names: Sequence[str],
        rows: list[dict[str, Any]],
        conditional: str | None,
    ) -> None:
        """``UPDATE table SET names WHERE id = :b_id`` (and each other ``b_`` key) for every row;
        raises :class:`ConcurrentUpdate` naming ``conditional`` if a row no longer matched."""
        keys = tuple(key for key in rows[0] if key.startswith("b_"))
        result = self._db.execute(updating(table, tuple(names), keys), rows)
        if conditional is not None and result.rowcount != len(rows):
            raise ConcurrentUpdate(conditional, ",".join(row["b_id"] for row in rows[:3]))

    def resolve(self, request: ChargeRequest) -> ChargeRequest:
        """A charge request written during the batch, with its invoice's real number."""
        numbers = self._numbers_taken
        if not numbers or "\ue000" not in request.description + "".join(request.metadata.values()):
            return request
        return replace(
            request,
            description=_renumber(request.description, numbers),
            metadata={key: _renumber(value, numbers) for key, value in request.metadata.items()},
        )

    def _take_numbers(self) -> dict[int, str]:
        if not self._numbers:
            return {}
        last = self._db.execute(_TAKE_NUMBERS, {"count": self._numbers}).scalar()
        if last is None:
            raise StorageError("the invoice sequence is missing: run `billing migrate`")
        first = int(last) - self._numbers + 1
        prefix = self.store.invoice_prefix
        return {k: invoice_number(prefix, first + k - 1) for k in range(1, self._numbers + 1)}

    def _subscription_updates(self) -> dict[tuple[str, ...], list[dict[str, Any]]]:
        """The changed subscriptions' rows, only their changed columns, grouped by the columns
        changed (one ``executemany`` each), each conditional on the version read."""
        groups: dict[tuple[str, ...], list[dict[str, Any]]] = defaultdict(list)
        for sid, loaded in self._subscriptions.items():
            read = self._read[sid]
            if loaded.version == read.version and sid not in self._stale:
                continue
            before = mapping.subscription_fields(read.subscription)
            after = mapping.subscription_fields(loaded.subscription)
            values = {name: value for name, value in after.items() if before[name] != value}
            values.update(version=loaded.version, next_run_at=loaded.next_run_at)
            groups[tuple(values)].append({**values, "b_id": sid, "b_version": read.version})
        return groups

    def _insert(self, table: Table, rows: list[dict[str, Any]]) -> None:
        bulk_insert(self._db, table, rows)


def bulk_insert(connection: Connection, table: Table, rows: list[dict[str, Any]]) -> None:
    """Insert rows that all have the same keys: ``COPY`` on PostgreSQL (several times faster
    than an ``INSERT`` per row or per page of rows), ``executemany`` elsewhere."""
    if not rows:
        return
    if connection.dialect.name != "postgresql" or len(rows) < _COPY_FROM:
        connection.execute(insert(table), rows)
        return
    names = list(rows[0])
    json = {name for name in names if isinstance(table.c[name].type, JSON)}
    columns = ", ".join(f'"{name}"' for name in names)
    raw = connection.connection.driver_connection
    assert raw is not None
    with raw.cursor() as cursor, cursor.copy(f'COPY "{table.name}" ({columns}) FROM STDIN') as copy:
        for row in rows:
            copy.write_row([dumps(row[name]) if name in json else row[name] for name in names])


class _Payment:
    """An attempt in a batch: the columns of its payment row, as plain attributes (a mapped
    row costs more to build than the rest of a renewal)."""


def _renumber(text: str, numbers: dict[int, str]) -> str:
    return _PLACEHOLDER.sub(lambda match: numbers[int(match.group(1))], text)


def _renumber_value(value: Any, numbers: dict[int, str]) -> Any:
    if isinstance(value, str):
        return _renumber(value, numbers) if "\ue000" in value else value
    if isinstance(value, dict):
        return {key: _renumber_value(item, numbers) for key, item in value.items()}
    if isinstance(value, list):
        return [_renumber_value(item, numbers) for item in value]
    return value


def _renumbered(invoice: Invoice, numbers: dict[int, str]) -> Invoice:
    assert invoice.number is not None
    return replace(invoice, number=_renumber(invoice.number, numbers))
