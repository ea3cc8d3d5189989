"""The engine: the one object a host application calls.

Build it with :func:`billing.open_engine`. Every state-changing method accepts an optional
``idempotency_key``: a repeated call with the same key returns the first call's result and changes
nothing; the same key with other arguments raises
:class:`~billing.domain.errors.IdempotencyConflict`. Errors are the core's typed errors
(:mod:`billing.domain.errors`). The engine never reads the system clock itself: it asks its clock.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime

from billing.config import Settings
from billing.domain import _checks
from billing.domain.catalog import Plan
from billing.domain.customers import CardEnrollment, Customer, PaymentMethod
from billing.domain.errors import BillingError, InvalidArgument
from billing.domain.exchange import ExchangeRates
from billing.domain.invoices import Invoice
from billing.domain.ledger import CreditBalance
from billing.domain.money import Currency, Money
from billing.domain.payments import PaymentAttempt, Refund
from billing.domain.plan_changes import PlanChange
from billing.domain.proration import ProrationBehavior, ProrationUnit
from billing.domain.subscriptions import Subscription, pause, resume
from billing.domain.taxes import TaxRate
from billing.ports import Clock, PaymentGateway
from billing.services import (
    customers,
    links,
    notifications,
    payment_methods,
    refunds,
    subscriptions,
)
from billing.services import sign_ups as sign_ups_service
from billing.services.audit import AuditReport, audit
from billing.services.batch_run import run_due
from billing.services.billing_run import RunReport, check_late_payments
from billing.services.context import Context, log, once
from billing.services.dispatch import DispatchReport, Handlers, dispatch
from billing.services.hooks import Hooks
from billing.services.notifications import NotificationReceipt
from billing.services.sign_ups import SignUp, SignUpReport
from billing.store import mapping
from billing.store.unit_of_work import Store, StoredEvent


def _never() -> bool:
    return False


class Engine:
    """Customers, plans, subscriptions, invoices and payments on one database."""

    def __init__(
        self,
        store: Store,
        *,
        clock: Clock,
        gateways: Iterable[PaymentGateway] = (),
        rates: ExchangeRates | None = None,
        settings: Settings | None = None,
        hooks: Hooks | None = None,
        owns_gateways: bool = False,
    ) -> None:
        settings = settings or Settings()
        self._owns_gateways = owns_gateways
        _checks.member(ProrationUnit, settings.proration, "proration")
        self._ctx = Context(
            store=store,
            clock=clock,
            gateways={gateway.name: gateway for gateway in gateways},
            rates=rates,
            settings=settings,
            hooks=hooks or Hooks(),
        )

    def close(self) -> None:
        """Release the engine's database connections, and the connections of the gateways it
        owns (``owns_gateways``: those :func:`~billing.open_engine` discovered itself)."""
        self._ctx.store.engine.dispose()
        if self._owns_gateways:
            for gateway in self._ctx.gateways.values():
                gateway.close()

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @property
    def clock(self) -> Clock:
        return self._ctx.clock

    @property
    def gateways(self) -> Mapping[str, PaymentGateway]:
        return self._ctx.gateways

    @property
    def settings(self) -> Settings:
        return self._ctx.settings

    @property
    def store(self) -> Store:
        """The engine's database; ``store.engine`` is its SQLAlchemy engine, for reading the
        tables directly (in tests, reports). Change them only through the engine."""
        return self._ctx.store

    @property
    def worker(self) -> str:
        """This engine's name in claims and logs."""
        return self._ctx.worker

    # -- customers and payment methods ----------------------------------------------------
    def create_customer(
        self,
        *,
        timezone: str,
        customer_id: str | None = None,
        metadata: Mapping[str, str] | None = None,
        idempotency_key: str | None = None,
    ) -> Customer:
        """A new customer billed in ``timezone`` (an IANA name such as ``America/Santiago``)."""
        arguments = {"customer_id": customer_id, "timezone": timezone, "metadata": metadata}
        return once(
            self._ctx,
            idempotency_key,
            "create_customer",
            arguments,
            Customer,
            lambda claim: customers.create_customer(
                self._ctx, claim, customer_id=customer_id, timezone=timezone, metadata=metadata
            ),
        )

    def customer(self, customer_id: str) -> Customer:
        with self._ctx.store.transaction() as tx:
            return tx.customer(customer_id)

    def add_payment_method(
        self,
        customer_id: str,
        *,
        gateway: str,
        token: str,
        label: str | None = None,
        default: bool = True,
        idempotency_key: str | None = None,
    ) -> PaymentMethod:
        """Store the card a gateway token stands for (from the gateway's own card form).

        The customer is registered at the gateway first if it keeps customers; the engine keeps
        only the gateway's reference for the stored card. Card numbers and CVVs are refused. For
        a gateway that stores cards only on its own page (QVO), use
        :meth:`start_payment_method_enrollment`.
        """
        arguments = {
            "customer_id": customer_id,
            "gateway": gateway,
            "token": token,
            "label": label,
            "default": default,
        }
        return once(
            self._ctx,
            idempotency_key,
            "add_payment_method",
            arguments,
            PaymentMethod,
            lambda claim: payment_methods.add_payment_method(
                self._ctx,
                claim,
                customer_id=customer_id,
                gateway_name=gateway,
                token=token,
                label=label,
                default=default,
            ),
        )

    def replace_payment_method(
        self,
        customer_id: str,
        *,
        gateway: str,
        token: str,
        label: str | None = None,
        idempotency_key: str | None = None,
    ) -> PaymentMethod:
        """Make a new payment method the default and retry any invoice in dunning with it.

        This is how an ``unpaid`` subscription is reactivated: once the retried invoice is paid.
        """
        arguments = {"customer_id": customer_id, "gateway": gateway, "token": token, "label": label}
        return once(
            self._ctx,
            idempotency_key,
            "replace_payment_method",
            arguments,
            PaymentMethod,
            lambda claim: payment_methods.replace_default_payment_method(
                self._ctx,
                claim,
                customer_id=customer_id,
                gateway_name=gateway,
                token=token,
                label=label,
            ),
        )

    def start_payment_method_enrollment(
        self,
        customer_id: str,
        *,
        gateway: str,
        return_url: str,
        idempotency_key: str | None = None,
    ) -> CardEnrollment:
        """Begin storing a card on the gateway's own page (QVO's card inscription).

        Send the customer to the result's ``redirect_url``; the gateway sends them back to
        ``return_url``, and then :meth:`complete_payment_method_enrollment` collects the card.
        """
        arguments = {"customer_id": customer_id, "gateway": gateway, "return_url": return_url}
        return once(
            self._ctx,
            idempotency_key,
            "start_payment_method_enrollment",
            arguments,
            CardEnrollment,
            lambda claim: payment_methods.start_enrollment(
                self._ctx,
                claim,
                customer_id=customer_id,
                gateway_name=gateway,
                return_url=return_url,
            ),
        )

    def complete_payment_method_enrollment(
        self, gateway: str, reference: str, *, idempotency_key: str | None = None
    ) -> CardEnrollment:
        """Ask the gateway how an enrollment ended. A stored card becomes the customer's default
        payment method, and invoices in dunning are retried with it at once (as
        :meth:`replace_payment_method` does); a pending one stays pending. Safe to call again."""
        return once(
            self._ctx,
            idempotency_key,
            "complete_payment_method_enrollment",
            {"gateway": gateway, "reference": reference},
            CardEnrollment,
            lambda claim: payment_methods.complete_enrollment(
                self._ctx, claim, gateway_name=gateway, reference=reference
            ),
        )

    def enrollment(self, gateway: str, reference: str) -> CardEnrollment:
        with self._ctx.store.transaction() as tx:
            return tx.enrollment(gateway, reference)

    def payment_methods(self, customer_id: str) -> list[PaymentMethod]:
        with self._ctx.store.transaction() as tx:
            tx.customer(customer_id)
            return tx.payment_methods(customer_id)

    def grant_credit(
        self,
        customer_id: str,
        amount: Money,
        *,
        reason: str = "granted",
        idempotency_key: str | None = None,
    ) -> CreditBalance:
        """Add credit to a customer's balance in ``amount``'s currency."""
        arguments = {"customer_id": customer_id, "amount": amount, "reason": reason}
        return once(
            self._ctx,
            idempotency_key,
            "grant_credit",
            arguments,
            CreditBalance,
            lambda claim: customers.grant_credit(
                self._ctx, claim, customer_id=customer_id, amount=amount, reason=reason
            ),
        )

    def credit_balance(self, customer_id: str, currency: str) -> CreditBalance:
        with self._ctx.store.transaction() as tx:
            tx.customer(customer_id)
            return tx.credit(customer_id, Currency.of(currency))

    def credit_balances(self, customer_id: str) -> list[CreditBalance]:
        with self._ctx.store.transaction() as tx:
            tx.customer(customer_id)
            return tx.credits(customer_id)

    # -- plans ----------------------------------------------------------------------------
    def create_plan(self, plan: Plan, *, idempotency_key: str | None = None) -> Plan:
        """Add a plan (build it with :meth:`Plan.of <billing.domain.catalog.Plan.of>`)."""
        if not isinstance(plan, Plan):
            raise InvalidArgument("plan", "must be a Plan; build one with Plan.of(...)", plan)
        return once(
            self._ctx,
            idempotency_key,
            "create_plan",
            {"plan": plan},
            Plan,
            lambda claim: customers.create_plan(self._ctx, claim, plan),
        )

    def deactivate_plan(self, code: str, *, idempotency_key: str | None = None) -> Plan:
        """Close a plan to new subscriptions; existing ones keep billing."""
        return once(
            self._ctx,
            idempotency_key,
            "deactivate_plan",
            {"code": code},
            Plan,
            lambda claim: customers.deactivate_plan(self._ctx, claim, code),
        )

    def plan(self, code: str) -> Plan:
        with self._ctx.store.transaction() as tx:
            return tx.plan(code)

    def plans(self) -> list[Plan]:
        with self._ctx.store.transaction() as tx:
            return tx.plans()

    # -- subscriptions --------------------------------------------------------------------
    def subscribe(
        self,
        customer_id: str,
        plan_code: str,
        *,
        subscription_id: str | None = None,
        start: datetime | None = None,
        trial_end: datetime | None = None,
        cycles: int | None = None,
        tax: TaxRate | None = None,
        prorate: bool = True,
        idempotency_key: str | None = None,
    ) -> Subscription:
        """Subscribe a customer to a plan, billing the first period at once if it is due now."""
        arguments = {
            "customer_id": customer_id,
            "plan_code": plan_code,
            "subscription_id": subscription_id,
            "start": start,
            "trial_end": trial_end,
            "cycles": cycles,
            "tax": tax,
            "prorate": prorate,
        }
        return once(
            self._ctx,
            idempotency_key,
            "subscribe",
            arguments,
            Subscription,
            lambda claim: subscriptions.subscribe(
                self._ctx,
                claim,
                customer_id=customer_id,
                plan_code=plan_code,
                subscription_id=subscription_id,
                start=start,
                trial_end=trial_end,
                cycles=cycles,
                tax=tax,
                prorate=prorate,
            ),
        )

    def sign_up_many(self, sign_ups: Sequence[SignUp]) -> SignUpReport:
        """Create many customers, each with a card and a subscription, at once: the bulk form
        of :meth:`create_customer`, :meth:`add_payment_method` and :meth:`subscribe` (an
        import, a launch), written with bulk statements and billed by the batched run.

        Every sign-up is checked first: one that breaks a rule, or an id that exists, refuses
        the whole call (``sign_ups[3].plan: ...``) before the gateways are called. Then the
        customers are registered and the cards stored at the gateways, every row is written in
        one transaction, and the first periods due now are billed. Ids make a retry safe: a
        call that wrote is refused if made again. See :mod:`billing.services.sign_ups`.
        """
        return sign_ups_service.sign_up_many(self._ctx, sign_ups)

    def preview_change(
        self,
        subscription_id: str,
        plan_code: str,
        *,
        behavior: ProrationBehavior | str = ProrationBehavior.CARRY_DEBT,
    ) -> PlanChange:
        """The exact lines, debt and credit a plan change would make now; changes nothing."""
        parsed = _checks.member(ProrationBehavior, behavior, "behavior")
        return subscriptions.preview_change(self._ctx, subscription_id, plan_code, parsed)

    def change_plan(
        self,
        subscription_id: str,
        plan_code: str,
        *,
        behavior: ProrationBehavior | str = ProrationBehavior.CARRY_DEBT,
        idempotency_key: str | None = None,
    ) -> Subscription:
        """Move a subscription to another plan now, prorating as :meth:`preview_change` shows."""
        parsed = _checks.member(ProrationBehavior, behavior, "behavior")
        arguments = {"subscription_id": subscription_id, "plan_code": plan_code, "behavior": parsed}
        return once(
            self._ctx,
            idempotency_key,
            "change_plan",
            arguments,
            Subscription,
            lambda claim: subscriptions.command(
                self._ctx,
                claim,
                subscription_id,
                lambda tx, subscription, at: (
                    subscriptions.plan_change(
                        self._ctx, tx, subscription, plan_code, parsed, at
                    ).outcome
                ),
            ),
        )

    def cancel(
        self,
        subscription_id: str,
        *,
        at_period_end: bool = True,
        idempotency_key: str | None = None,
    ) -> Subscription:
        """Cancel at the end of the current period (the default) or now.

        Open invoices go on being collected; the subscription's debt is invoiced on a final
        invoice (or written off, with ``Settings.final_debt = "write_off"``). A subscription can
        always be canceled, even when what is due cannot be billed.
        """
        arguments = {"subscription_id": subscription_id, "at_period_end": at_period_end}
        return once(
            self._ctx,
            idempotency_key,
            "cancel",
            arguments,
            Subscription,
            lambda claim: subscriptions.cancel(
                self._ctx, claim, subscription_id, at_period_end=at_period_end
            ),
        )

    def pause(
        self,
        subscription_id: str,
        *,
        resume_at: datetime | None = None,
        idempotency_key: str | None = None,
    ) -> Subscription:
        """Stop billing an active subscription, until :meth:`resume` or ``resume_at``."""
        arguments = {"subscription_id": subscription_id, "resume_at": resume_at}
        return once(
            self._ctx,
            idempotency_key,
            "pause",
            arguments,
            Subscription,
            lambda claim: subscriptions.command(
                self._ctx,
                claim,
                subscription_id,
                lambda tx, subscription, at: pause(subscription, at=at, resume_at=resume_at),
            ),
        )

    def resume(self, subscription_id: str, *, idempotency_key: str | None = None) -> Subscription:
        """Resume a paused subscription now."""
        return once(
            self._ctx,
            idempotency_key,
            "resume",
            {"subscription_id": subscription_id},
            Subscription,
            lambda claim: subscriptions.command(
                self._ctx,
                claim,
                subscription_id,
                lambda tx, subscription, at: resume(subscription, at=at),
            ),
        )

    def subscription(self, subscription_id: str) -> Subscription:
        return subscriptions.read(self._ctx, subscription_id)

    def subscriptions(self, customer_id: str | None = None) -> list[Subscription]:
        with self._ctx.store.transaction() as tx:
            return tx.subscriptions(customer_id)

    # -- invoices, payments, refunds ------------------------------------------------------
    def invoice(self, invoice_id: str) -> Invoice:
        with self._ctx.store.transaction() as tx:
            return tx.invoice(invoice_id)

    def invoice_by_number(self, number: str) -> Invoice:
        with self._ctx.store.transaction() as tx:
            return tx.invoice_by_number(number)

    def invoices(
        self, *, customer_id: str | None = None, subscription_id: str | None = None
    ) -> list[Invoice]:
        """Invoices in the order they were issued."""
        with self._ctx.store.transaction() as tx:
            return tx.invoices(customer_id=customer_id, subscription_id=subscription_id)

    def payments(
        self,
        *,
        invoice_id: str | None = None,
        customer_id: str | None = None,
        subscription_id: str | None = None,
    ) -> list[PaymentAttempt]:
        """Payment attempts, failed ones included, in the order they were made."""
        with self._ctx.store.transaction() as tx:
            rows = tx.payment_rows(
                invoice_id=invoice_id, customer_id=customer_id, subscription_id=subscription_id
            )
            return [mapping.payment(row) for row in rows]

    def refunds(self, payment_id: str) -> list[Refund]:
        """A payment's refunds, oldest first, each with its current status."""
        return refunds.refunds_of(self._ctx, payment_id)

    def refund(
        self,
        payment_id: str,
        *,
        amount: Money | None = None,
        idempotency_key: str | None = None,
    ) -> Refund:
        """Refund part (``amount``) or all of what is left of a succeeded payment."""
        return once(
            self._ctx,
            idempotency_key,
            "refund",
            {"payment_id": payment_id, "amount": amount},
            Refund,
            lambda claim: refunds.refund(self._ctx, claim, payment_id=payment_id, amount=amount),
        )

    def receive_notification(
        self,
        gateway: str,
        *,
        headers: Mapping[str, str],
        body: bytes,
        process_now: bool = True,
    ) -> NotificationReceipt:
        """Take in a gateway's webhook as the host's endpoint received it.

        The notification is kept in the inbox first (headers and body, committed), then, with
        ``process_now``, processed at once: the adapter reads it (checking the signature of
        gateways that sign) and the engine asks the gateway what became of the payment it names
        and records that, once per notification: a redelivery is a ``duplicate``, a forged or
        unreadable one changes nothing. What the payment's news makes due by now is billed then
        too (a late payment reactivating an unpaid subscription bills the rest of its period).
        With ``process_now=False`` (an endpoint that must answer
        fast) it is only kept, and :meth:`process_notifications` (the worker) processes it. A
        notification the gateway could not confirm stays ``received`` and is retried.

        Answer the gateway 2xx unless the receipt is ``rejected``.
        """
        return notifications.receive(
            self._ctx,
            gateway_name=gateway,
            headers=headers,
            body=body,
            process_now=process_now,
        )

    def process_notification(self, notification_id: str) -> NotificationReceipt:
        """Process one notification kept in the inbox (see :meth:`receive_notification`), unless
        it was processed before or another engine is on it."""
        return notifications.process(self._ctx, notification_id)

    def process_notifications(self, *, stop: Callable[[], bool] | None = None) -> int:
        """Process every notification waiting in the inbox for a gateway this engine has (the
        worker's ``notifications`` job); returns how many were settled."""
        return notifications.process_due(self._ctx, self._ctx.clock.now(), stop=stop or _never)

    # -- billing and events ---------------------------------------------------------------
    def run_due(
        self, now: datetime | None = None, *, stop: Callable[[], bool] | None = None
    ) -> RunReport:
        """Bill everything due up to ``now`` (the clock's time by default), in time order.

        Due subscriptions are claimed a batch at a time, so several engines (several worker
        processes, on several machines) can run this on one database at once: each piece of
        work is done by one of them, once. ``stop`` ends the run early: work already started
        finishes and the rest is released for others.
        """
        return run_due(self._ctx, self._when(now), stop=stop or _never)

    def reconcile(
        self, now: datetime | None = None, *, stop: Callable[[], bool] | None = None
    ) -> RunReport:
        """Ask the gateways about every unsettled payment and refund due for a check, and about
        payment links that expired unpaid lately (paid after all? see
        ``Settings.late_payment_days``); withdraw the live payment links of invoices settled
        another way (:mod:`billing.services.links`); and clear lapsed claims. The billing steps
        are left to :meth:`run_due`, but for those of a subscription a late payment found here
        reactivated: the rest of its period is billed at once."""
        when = self._when(now)
        stop = stop or _never
        try:
            with self._ctx.store.transaction() as tx:
                released = tx.release_expired(self._ctx.clock.now())
        except BillingError:  # lapsed claims are cleared by the next reconcile, or by claiming
            log.exception("claims.release_lapsed_failed")
        else:
            if released:
                log.warning("claims.released_lapsed count=%s", released)
        report = run_due(self._ctx, when, stop=stop, checks_only=True)
        asked = refunds.reconcile(self._ctx, when, stop=stop, batch=self.settings.batch_size)
        report.count("refund_checks", asked)
        late = check_late_payments(self._ctx, when, stop=stop, batch=self.settings.batch_size)
        report.count("late_payment_checks", late)
        withdrawn = links.withdraw_superseded(
            self._ctx, when, stop=stop, batch=self.settings.batch_size
        )
        report.count("link_cancellations", withdrawn)
        return report

    def dispatch(self, handlers: Handlers, *, limit: int = 100) -> DispatchReport:
        """Deliver undelivered events to ``handlers``: in order within each subscription, at
        least once, a failing event retried later without holding back other subscriptions."""
        return dispatch(self._ctx, handlers, limit=limit)

    def _when(self, now: datetime | None) -> datetime:
        current = self._ctx.clock.now()
        when = current if now is None else _checks.aware("now", now)
        if when > current:
            raise InvalidArgument("now", "must not be later than the engine's clock", when)
        return when

    def audit(self) -> AuditReport:
        """Check the books against every money rule, from the database alone; changes nothing.

        The report has each customer's totals per currency and a finding per broken rule (see
        :mod:`billing.services.audit`); ``report.balanced`` is true when there is none.
        """
        return audit(self._ctx)

    def next_run_at(self) -> datetime | None:
        """The earliest instant at which the engine has work, or ``None``."""
        with self._ctx.store.transaction() as tx:
            return tx.next_run_at()

    def events(
        self, *, after: int = 0, limit: int = 100, pending_only: bool = True
    ) -> list[StoredEvent]:
        """Recorded events in order after sequence number ``after`` (unacknowledged by default)."""
        _checks.integer("after", after, minimum=0)
        _checks.integer("limit", limit, minimum=1)
        with self._ctx.store.transaction() as tx:
            return tx.events(after=after, limit=limit, pending_only=pending_only)

    def acknowledge(self, event_ids: Sequence[str]) -> int:
        """Mark events as handled by the host; returns how many were newly acknowledged."""
        if isinstance(event_ids, str) or not isinstance(event_ids, Sequence | set | frozenset):
            raise InvalidArgument("event_ids", "must be a list of event ids", event_ids)
        for event_id in event_ids:
            _checks.identifier("event_ids", event_id)
        with self._ctx.store.transaction() as tx:
            return tx.acknowledge(event_ids, self._ctx.clock.now())
