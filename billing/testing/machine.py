"""A stateful simulation of a customer base over the real engine, checking the books every step.

:class:`BillingMachine` is a hypothesis ``RuleBasedStateMachine``. It opens a real engine (an
in-memory SQLite database unless a subclass gives another), with the scriptable
:class:`~billing.testing.FakeGateway` and a test clock, and applies random operations:
customers with cards that approve, decline softly or hardly, lose answers, pay late, never pay,
or send the customer a link that is paid or expires; subscriptions with and without trials, with
cycle counts, on UF plans and with taxes of every kind; plan changes both ways with every
proration option; pauses, resumes and cancellations (now and at period end); credit; refunds
(whole and partial, with lost answers); new payment methods; time passing through every due
instant; and reconciliation.

After every step it checks, from the database (:meth:`billing.Engine.audit`) and from the fake
gateway's own books, that every peso is accounted for: conservation per customer and currency,
credit that matches its grants and never comes from unpaid time, no debt left on a stopped
subscription, no open invoice that nothing collects, periods invoiced once each and never empty,
events in time order, and that what the gateway took equals what the engine recorded. Every call
the engine refuses must leave every table exactly as it was.

Run it in your own tests::

    from billing.testing.machine import BillingMachine

    TestBilling = BillingMachine.TestCase

and give a subclass another database by overriding :meth:`BillingMachine.database_url` (and
:meth:`BillingMachine.release_database`). It needs ``hypothesis`` (``pip install
billing[testing]``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, ClassVar, TypeVar

from hypothesis import event, target
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    initialize,
    invariant,
    multiple,
    precondition,
    rule,
)
from sqlalchemy import func, select
from sqlmodel import col

from billing.bootstrap import open_engine
from billing.clock import ManualClock
from billing.config import Settings
from billing.domain.catalog import Plan
from billing.domain.dunning import RetryPolicy
from billing.domain.errors import (
    AlreadyExists,
    BillingError,
    ConcurrentUpdate,
    StorageError,
)
from billing.domain.exchange import ExchangeRate, TableExchangeRates
from billing.domain.invoices import Invoice, InvoiceStatus, LineKind
from billing.domain.money import Money
from billing.domain.payments import PaymentStatus, RefundStatus
from billing.domain.proration import ProrationBehavior
from billing.domain.subscriptions import SubscriptionStatus
from billing.domain.taxes import TaxRate
from billing.engine import Engine
from billing.store.tables import EventRow, InvoiceRow, RefundRow, metadata
from billing.testing.fake_gateway import Behavior, FakeGateway

T = TypeVar("T")

FAMILIES: dict[str, tuple[tuple[str, str, str, str], ...]] = {
    "monthly": (
        ("bronce", "5000", "CLP", "month"),
        ("oro", "15000", "CLP", "month"),
        ("platino", "50000", "CLP", "month"),
    ),
    "uf": (("uf_basico", "0.5", "CLF", "month"), ("uf_pro", "1.2", "CLF", "month")),
    "daily": (("diario", "990", "CLP", "day"), ("diario_plus", "1990", "CLP", "day")),
}
"""Plans by family: a plan changes only within its family (same interval and currency)."""
FAMILY_OF = {code: family for family, plans in FAMILIES.items() for code, *_ in plans}
STARTS = (
    datetime(2026, 1, 31, 15, 0, tzinfo=UTC),  # a month-end anchor
    datetime(2026, 3, 30, 23, 30, tzinfo=UTC),  # Chile leaves DST on Apr 5
    datetime(2011, 12, 28, 20, 0, tzinfo=UTC),  # Samoa skips Dec 30, 2011
)
TIMEZONES = ("America/Santiago", "America/Mexico_City", "America/Bogota", "Pacific/Apia", "UTC")
CARDS = (Behavior.APPROVE, Behavior.DECLINE_SOFT, *Behavior)
WAITING = (
    Behavior.PAY_LATE,
    Behavior.NEVER_PAY,
    Behavior.PAY_BY_LINK,
    Behavior.LINK_EXPIRES,
    Behavior.TIMEOUT,
)
"""Cards whose charges are not settled at once."""
"""Card behaviors: every one, approvals and soft declines twice as often."""
STEPS = (
    timedelta(minutes=2),
    timedelta(hours=7),
    timedelta(days=1),
    timedelta(days=3),
    timedelta(days=9),
    timedelta(days=32),
)

LATE_FOUND_WITHIN = timedelta(days=1, hours=1)
"""A late payment of an expired link whose notification was lost is found by reconciliation
within this (its questions are at most a day apart)."""
LATER = (None, None, timedelta(hours=1), timedelta(days=2), timedelta(days=12))
"""How long after the previous step an operation comes (often at once)."""
_FINAL = (SubscriptionStatus.CANCELED, SubscriptionStatus.ENDED)
_UNPAID = (InvoiceStatus.OPEN, InvoiceStatus.UNCOLLECTIBLE)
_RUNNING = (SubscriptionStatus.ACTIVE, SubscriptionStatus.PAST_DUE, SubscriptionStatus.UNPAID)
taxes = st.none() | st.builds(
    TaxRate.of,
    st.just("IVA"),
    st.sampled_from(["16", "19", "19.5"]),
    inclusive=st.booleans(),
    rounding=st.sampled_from(["per_invoice", "per_line"]),
    mode=st.sampled_from(["half_up", "half_even", "down", "up"]),
)
afterwards = st.sampled_from(["unpaid", "canceled", "past_due"])
policies = st.builds(
    RetryPolicy.of,
    st.lists(st.sampled_from([1, 3, 8, 15]), min_size=0, max_size=3),  # may outlast a period
    then=afterwards,
)
short_policies = st.builds(
    RetryPolicy.of, st.lists(st.sampled_from([1, 2]), max_size=2), then=afterwards
)
"""For daily plans: dunning that outlasts several periods and still ends within a history."""


class BillingMachine(RuleBasedStateMachine):
    """Random histories over the real engine; see the module docstring."""

    customers = Bundle("customers")

    engine: Engine
    clock: ManualClock
    fake: FakeGateway
    url: str
    started: bool = False
    zone: str | None = None
    """Every customer's timezone, when the history is about one (Samoa's skipped day)."""
    richness: int = 0
    """How far a history got into the states where money got lost before (hypothesis aims high)."""
    risky: int = 0
    """Operations made on a subscription with an unpaid invoice, or refunds of credit."""
    wrote_nothing_when_refused: ClassVar[bool] = True

    # -- the database: override both for another one ------------------------------------------
    def database_url(self) -> str:
        """A fresh, empty or migrated database for one history (in-memory SQLite here)."""
        return "sqlite://"

    def release_database(self, url: str) -> None:
        """Give back the database of a history that ended (nothing to do for memory)."""

    # -- setting up ---------------------------------------------------------------------------
    @initialize(
        target=customers,
        start=st.sampled_from(STARTS),
        first=st.lists(
            st.tuples(st.sampled_from(TIMEZONES), st.sampled_from(CARDS), st.integers(0, 4)),
            min_size=3,
            max_size=3,
        ),
        rates_after=st.sampled_from([0, 0, 20]),
        retry=policies,
        daily_retry=short_policies,
        final_debt=st.sampled_from(["invoice", "invoice", "write_off"]),
        refunds_return_credit=st.booleans(),
        proration=st.sampled_from(["second", "day"]),
        batch=st.sampled_from([1, 200]),
    )
    def open(
        self,
        start: datetime,
        first: list[tuple[str, Behavior, int]],
        rates_after: int,
        retry: RetryPolicy,
        daily_retry: RetryPolicy,
        final_debt: str,
        refunds_return_credit: bool,
        proration: str,
        batch: int,
    ) -> Any:
        """The engine, its plans, and three customers, each with a card and a subscription.

        Billing runs claim ``batch`` subscriptions at a time: one (each alone) or all of them
        (the batched path, every step of a round written together)."""
        self.clock = ManualClock(start)
        self.fake = FakeGateway(pending_for=timedelta(days=2))
        rates_from = start.date() + timedelta(days=rates_after)  # no UF billing before it
        rates = TableExchangeRates(
            ExchangeRate.of(rates_from + timedelta(days=n), "CLF", "CLP", _uf(n))
            for n in range(500)
        )
        settings = Settings(
            threads=1,
            batch_size=batch,
            final_debt=final_debt,
            refunds_return_credit=refunds_return_credit,
            proration=proration,
            late_payment_days=60,  # most expired links of a history can be found paid late
        )
        self.url = self.database_url()
        self.engine = open_engine(
            self.url,
            clock=self.clock,
            gateways=[self.fake],
            rates=rates,
            settings=settings,
            migrate=True,
        )
        daily = start.year == 2011
        for plans in FAMILIES.values():
            for code, price, currency, interval in plans:
                self.engine.create_plan(
                    Plan.of(
                        code=code,
                        name=code.replace("_", " ").title(),
                        price=price,
                        currency=currency,
                        interval=interval,
                        retry=daily_retry if daily else retry,
                    )
                )
        self.cards = 0
        self.customers_made = 0
        self.taxes: dict[str, TaxRate | None] = {}
        self.live: list[str] = []
        """Subscriptions not known to be final, for the rules that act on one."""
        # daily plans for customers in Samoa around the day it skipped (with time passing twenty
        # times slower, so that a history sees days of them); monthly and UF ones otherwise
        self.pace = 20 if daily else 1
        self.zone = "Pacific/Apia" if daily else None
        families = ("daily",) if daily else ("monthly", "uf")
        self.plans = [code for family in families for code, *_ in FAMILIES[family]]
        self.started = True
        customers = []
        for zone, card, plan in first:
            customers.append(self._new_customer(zone, card))
            self._subscribe(customers[-1], self.plans[plan % len(self.plans)])
        return multiple(*customers)

    def teardown(self) -> None:
        if self.started:
            target(float(self.richness), label="richness")
            self.engine.close()
            self.release_database(self.url)

    # -- customers and cards ------------------------------------------------------------------
    @rule(
        target=customers,
        timezone=st.sampled_from(TIMEZONES),
        card=st.none() | st.sampled_from(CARDS),
    )
    def new_customer(self, timezone: str, card: Behavior | None) -> str:
        """A customer, with a card that behaves as ``card`` says (or none)."""
        return self._new_customer(timezone, card)

    def _new_customer(self, timezone: str, card: Behavior | None) -> str:
        self.customers_made += 1
        customer_id = f"c{self.customers_made}"
        self.engine.create_customer(customer_id=customer_id, timezone=self.zone or timezone)
        if card is not None:
            self._give_card(customer_id, card, replace=False)
        return customer_id

    def _give_card(self, customer_id: str, card: Behavior, *, replace: bool) -> None:
        self.cards += 1
        self.fake.script(customer_id, card)
        add = self.engine.replace_payment_method if replace else self.engine.add_payment_method
        self._refused_or(add, customer_id, gateway="fake", token=f"tok_{self.cards}")

    @rule(customer=customers, card=st.sampled_from(CARDS), later=st.sampled_from(LATER))
    def replace_card(self, customer: str, card: Behavior, later: timedelta | None) -> None:
        self._wait(later)
        self._give_card(customer, card, replace=True)

    @rule(customer=customers, card=st.sampled_from(CARDS), later=st.sampled_from(LATER))
    def card_starts_to(self, customer: str, card: Behavior, later: timedelta | None) -> None:
        """The customer's card behaves differently from now on (funds run out, come back...)."""
        self._wait(later)
        self.fake.script(customer, card)

    @rule(customer=customers, amount=st.sampled_from([500, 4000, 20000]))
    def grant_credit(self, customer: str, amount: int) -> None:
        self._refused_or(self.engine.grant_credit, customer, Money.of(amount, "CLP"))

    # -- subscriptions -------------------------------------------------------------------------
    @rule(
        customer=customers,
        plan=st.integers(0, 4),
        trial=st.sampled_from([None, None, None, timedelta(days=3), timedelta(days=40)]),
        cycles=st.none() | st.integers(min_value=1, max_value=4),
        tax=taxes,
        start_in=st.sampled_from(
            [None, None, None, timedelta(hours=5), timedelta(days=12), -timedelta(days=1)]
        ),
        prorate=st.booleans(),
    )
    def subscribe(
        self,
        customer: str,
        plan: int,
        trial: timedelta | None,
        cycles: int | None,
        tax: TaxRate | None,
        start_in: timedelta | None,
        prorate: bool,
    ) -> None:
        now = self.clock.now()
        start = None if start_in is None else now + start_in
        trial_end = None if trial is None else (start or now) + trial
        self._subscribe(
            customer,
            self.plans[plan % len(self.plans)],
            start=start,
            trial_end=trial_end,
            cycles=cycles,
            tax=tax,
            prorate=prorate,
        )

    def _subscribe(self, customer: str, plan: str, **options: Any) -> str | None:
        # ids chosen here, so that the same steps make the same history (hypothesis replays it)
        subscription_id = f"s{len(self.taxes) + 1}"
        self.taxes[subscription_id] = options.get("tax")
        subscription = self._refused_or(
            self.engine.subscribe, customer, plan, subscription_id=subscription_id, **options
        )
        if subscription is None:
            return None
        self.live.append(subscription.id)
        return subscription.id

    @rule(
        customer=customers,
        card=st.sampled_from(WAITING),
        plan=st.integers(0, 4),
        tax=taxes,
        data=st.data(),
        behavior=st.sampled_from(list(ProrationBehavior)),
        then=st.sampled_from(["change", "change", "cancel", "pause"]),
    )
    def act_before_paying(
        self,
        customer: str,
        card: Behavior,
        plan: int,
        tax: TaxRate | None,
        data: st.DataObject,
        behavior: str,
        then: str,
    ) -> None:
        """An adversarial customer: subscribe with a payment that waits (pending, a link, a lost
        answer), then change plan, cancel or pause before it settles."""
        self.fake.script(customer, card)
        subscription = self._subscribe(customer, self.plans[plan % len(self.plans)], tax=tax)
        if subscription is None:
            return
        self.risky += 1
        if then == "cancel":
            self._refused_or(
                self.engine.cancel, subscription, at_period_end=data.draw(st.booleans())
            )
        elif then == "pause":
            self._refused_or(self.engine.pause, subscription)
        else:
            current = self.engine.subscription(subscription).plan.code
            choices = [code for code, *_ in FAMILIES[FAMILY_OF[current]] if code != current]
            to = data.draw(st.sampled_from(choices), label="plan")
            self._refused_or(self.engine.change_plan, subscription, to, behavior=behavior)

    def _pick(self, data: st.DataObject, *statuses: SubscriptionStatus) -> str | None:
        """A subscription that is not final: sometimes any (to try a refusal), mostly one in
        one of ``statuses`` (those the operation is allowed in), and often, as an adversarial
        customer would, one with an invoice not paid yet (a payment pending, a link out, a
        retry scheduled), where money got lost before."""
        known = {s.id: s.status for s in self.engine.subscriptions()}
        self.live = [s for s in self.live if s in known and known[s] not in _FINAL]
        fitting = [s for s in self.live if known[s] in statuses] if statuses else self.live
        open_ = {i.subscription_id for i in self.engine.invoices() if i.status in _UNPAID}
        unpaid = [s for s in fitting if s in open_]
        aim = data.draw(st.integers(0, 4), label="aim")
        choices = (unpaid if aim > 2 else []) or (fitting if aim else []) or self.live
        if not choices:
            return None
        return data.draw(st.sampled_from(choices), label="subscription")

    @rule(
        data=st.data(),
        behaviors=st.sampled_from(list(ProrationBehavior)).flatmap(
            lambda behavior: st.lists(st.just(behavior), min_size=1, max_size=2)
        ),
        later=st.sampled_from(LATER),
    )
    def change_plan(
        self, data: st.DataObject, behaviors: list[str], later: timedelta | None
    ) -> None:
        """One plan change, or two at the same instant with the same proration behaviour (two
        upgrades invoiced at once, say)."""
        self._wait(later)
        subscription = self._pick(data, SubscriptionStatus.ACTIVE)
        if subscription is None:
            return
        for behavior in behaviors:
            current = self.engine.subscription(subscription).plan.code
            choices = [code for code, *_ in FAMILIES[FAMILY_OF[current]] if code != current]
            plan = data.draw(st.sampled_from(choices), label="plan")
            self._note_unpaid(subscription)
            self._refused_or(self.engine.change_plan, subscription, plan, behavior=behavior)

    @rule(data=st.data(), at_period_end=st.booleans(), later=st.sampled_from(LATER))
    def cancel(self, data: st.DataObject, at_period_end: bool, later: timedelta | None) -> None:
        self._wait(later)
        subscription = self._pick(data, *_RUNNING)
        if subscription is not None:
            self._note_unpaid(subscription)
            self._refused_or(self.engine.cancel, subscription, at_period_end=at_period_end)

    @rule(
        data=st.data(),
        resume_in=st.none() | st.sampled_from(STEPS[2:]),
        later=st.sampled_from(LATER),
    )
    def pause(
        self, data: st.DataObject, resume_in: timedelta | None, later: timedelta | None
    ) -> None:
        self._wait(later)
        subscription = self._pick(data, SubscriptionStatus.ACTIVE)
        if subscription is not None:
            self._note_unpaid(subscription)
            resume_at = None if resume_in is None else self.clock.now() + resume_in
            self._refused_or(self.engine.pause, subscription, resume_at=resume_at)

    @rule(data=st.data(), later=st.sampled_from(LATER))
    def resume(self, data: st.DataObject, later: timedelta | None) -> None:
        self._wait(later)
        subscription = self._pick(data, SubscriptionStatus.PAUSED)
        if subscription is not None:
            self._refused_or(self.engine.resume, subscription)

    # -- refunds -------------------------------------------------------------------------------
    @precondition(lambda self: self.started)
    @rule(
        data=st.data(), whole=st.booleans(), lose_answer=st.sampled_from([None, "after", "before"])
    )
    def refund(self, data: st.DataObject, whole: bool, lose_answer: str | None) -> None:
        """Refund a payment, often (as an adversarial customer would ask) one whose invoice was
        paid partly with credit."""
        invoices = {invoice.id: invoice for invoice in self.engine.invoices()}
        paid = sorted(
            (p for p in self.engine.payments() if p.status is PaymentStatus.SUCCEEDED),
            key=lambda p: (invoices[p.invoice_id].number or "", p.number),
        )
        with_credit = [p for p in paid if invoices[p.invoice_id].credit_applied.is_positive()]
        aim = data.draw(st.booleans(), label="with credit")
        choices = (with_credit if aim else []) or paid
        if not choices:
            return
        payment = data.draw(st.sampled_from(choices), label="payment")
        amount = None
        if not whole:
            minor = data.draw(
                st.integers(min_value=1, max_value=payment.amount.minor), label="minor"
            )
            amount = Money(minor, payment.amount.currency)
        if lose_answer is not None:
            self.fake.lose_refund_answers(before_refunding=lose_answer == "before")
        self.risky += invoices[payment.invoice_id].credit_applied.is_positive()
        self._refused_or(self.engine.refund, payment.id, amount=amount)

    @precondition(lambda self: self.started)
    @rule(data=st.data(), delivery=st.sampled_from(["once", "twice", "lost"]))
    def an_expired_link_is_paid_late(self, data: st.DataObject, delivery: str) -> None:
        """A customer's transfer for a link that expired is confirmed after all: the money is
        taken, and the gateway's notification arrives (``twice``: delivered again), or is lost
        (then the worker's reconciliation finds the payment within a day)."""
        now = self.clock.now()
        recent = now - self.engine.settings.late_payment + LATE_FOUND_WITHIN
        expired = [
            p
            for p in self.engine.payments()
            if p.may_be_paid_late()
            and p.reference
            and (delivery != "lost" or (p.updated_at is not None and p.updated_at > recent))
        ]
        if not expired:
            return
        payment = data.draw(st.sampled_from(expired), label="expired link")
        assert payment.reference is not None
        event(f"an expired link paid late, its notification {delivery}")
        self.fake.pay_expired_link(payment.reference, now)
        if delivery == "lost":
            self._advance_to(now + LATE_FOUND_WITHIN)
            self.engine.reconcile()
            return
        notification = self.fake.notification(payment.reference)
        for _ in range(1 + (delivery == "twice")):
            self.engine.receive_notification(
                "fake", headers=notification.headers, body=notification.body
            )

    # -- time ----------------------------------------------------------------------------------
    @precondition(lambda self: self.started)
    @rule(step=st.sampled_from(STEPS))
    def time_passes(self, step: timedelta) -> None:
        """Move the clock, billing everything that falls due on the way, in time order."""
        self._advance_to(self.clock.now() + step / self.pace)

    def _advance_to(self, until: datetime) -> None:
        stuck = None
        while (due := self.engine.next_run_at()) is not None and due <= until and due != stuck:
            stuck = due  # work that cannot be done (no UF rate yet) stays due: pass it by
            self.clock.set(max(due, self.clock.now()))
            self.engine.run_due()
        self.clock.set(until)
        self.engine.run_due()

    @precondition(lambda self: self.started)
    @rule(months=st.integers(min_value=1, max_value=2))
    def months_pass(self, months: int) -> None:
        """Time passes in bigger strides (one history sees renewals, dunning, cycle ends)."""
        for _ in range(months):
            self.time_passes(timedelta(days=31))

    def _note_unpaid(self, subscription: str) -> None:
        """Count an operation on a subscription with an unpaid invoice: where money got lost."""
        invoices = self.engine.invoices(subscription_id=subscription)
        self.risky += any(invoice.status in _UNPAID for invoice in invoices)

    def _wait(self, later: timedelta | None) -> None:
        """Some operations come a while after the last one: time passes first."""
        if later is not None:
            self.time_passes(later)

    @precondition(lambda self: self.started)
    @rule()
    def reconcile(self) -> None:
        self.engine.reconcile()

    # -- the checks ------------------------------------------------------------------------------
    @invariant()
    def the_books_balance(self) -> None:
        if not self.started:
            return
        report = self.engine.audit()
        assert report.balanced, "\n".join(str(finding) for finding in report.findings)
        self._aim_for_rich_histories()

    def _aim_for_rich_histories(self) -> None:
        """Steer hypothesis towards histories that reach the states where money got lost before:
        invoices collected outside dunning, credit held back or forfeited, stopped debt."""
        subscriptions = self.engine.subscriptions()
        with self.engine.store.engine.connect() as connection:
            kinds = set(connection.execute(select(col(EventRow.name)).distinct()).scalars())
            final = connection.execute(
                select(func.count()).where(col(InvoiceRow.reason) == "final")
            ).scalar_one()
            changes = connection.execute(
                select(col(EventRow.payload)).where(
                    col(EventRow.name) == "subscription.plan_changed"
                )
            ).scalars()
            held = sum(1 for change in changes if change["credit_held"]["minor"])
        collected = sum(len(s.collections) + len(s.debt) for s in subscriptions)
        richness = len(kinds) + 5 * (final + held + self.risky) + 3 * collected
        self.richness = max(self.richness, richness)

    @invariant()
    def the_gateway_took_exactly_what_the_engine_recorded(self) -> None:
        if not self.started:
            return
        attempts = {p.idempotency_key: p for p in self.engine.payments()}
        taken = {charge.idempotency_key: charge for charge in self.fake.charges_taken()}
        confirmed: dict[str, int] = {}
        unsure: dict[str, int] = {}
        with self.engine.store.engine.connect() as connection:
            for payment_id, amount, status in connection.execute(
                select(
                    col(RefundRow.payment_id), col(RefundRow.amount_minor), col(RefundRow.status)
                )
            ):
                if status == RefundStatus.SUCCEEDED:
                    confirmed[payment_id] = confirmed.get(payment_id, 0) + amount
                elif status != RefundStatus.FAILED:  # created, pending or unknown
                    unsure[payment_id] = unsure.get(payment_id, 0) + amount
        for key, charge in taken.items():
            attempt = attempts.get(key)
            assert attempt is not None, (
                f"the gateway took {charge.amount} ({key}) the engine never wrote"
            )
            assert attempt.amount == charge.amount, (
                f"{key}: took {charge.amount}, wrote {attempt.amount}"
            )
            assert attempt.status is not PaymentStatus.FAILED, (
                f"{key}: took money the engine says failed"
            )
            back = confirmed.get(attempt.id, 0)
            assert back <= charge.refunded.minor <= back + unsure.get(attempt.id, 0), (
                f"{key}: the gateway gave back {charge.refunded}, the engine says {back}"
            )
        for key, attempt in attempts.items():
            if attempt.status is PaymentStatus.SUCCEEDED:
                assert key in taken, (
                    f"{key}: the engine says {attempt.amount} was taken; it was not"
                )

    @invariant()
    def every_invoice_is_taxed_as_subscribed_and_charged_in_a_currency_the_gateway_takes(
        self,
    ) -> None:
        if not self.started:
            return
        for invoice in self.engine.invoices():
            assert invoice.currency.code in self.fake.currencies, (
                f"{invoice.number} is in {invoice.currency}, which no gateway takes"
            )
            tax = self.taxes.get(invoice.subscription_id or "")
            if tax is not None:
                _check_tax(invoice, tax)

    # -- plumbing --------------------------------------------------------------------------------
    def _refused_or(self, call: Callable[..., T], *args: Any, **kwargs: Any) -> T | None:
        """Make the call; if the engine refuses it, every table must be as it was before.

        One history runs in one thread, so a refusal that only concurrency explains (a key taken,
        a concurrent update) or a database failure is a bug, not a refusal.
        """
        before = self._tables()
        try:
            return call(*args, **kwargs)
        except (AlreadyExists, ConcurrentUpdate, StorageError):
            raise
        except BillingError as refused:
            reason = repr(refused)
        after = self._tables()
        changed = sorted(name for name in before if before[name] != after[name])
        assert not changed, f"{call.__name__} raised {reason} but changed {changed}"
        return None

    def _tables(self) -> dict[str, list[tuple[Any, ...]]]:
        with self.engine.store.engine.connect() as connection:
            return {
                table.name: sorted(map(tuple, connection.execute(select(table)).all()), key=repr)
                for table in metadata.sorted_tables
            }


def _check_tax(invoice: Invoice, tax: TaxRate) -> None:
    """The invoice's tax lines are what ``tax`` makes of its taxable lines, with its rounding."""
    taxable = [line for line in invoice.lines if line.taxable]
    charged = [line.amount for line in invoice.lines if line.kind is LineKind.TAX]
    if tax.inclusive:  # the lines are stated net of tax: rebuild the prices the customer saw
        if tax.rounding.value == "per_line":
            quoted = [line.amount + levy for line, levy in zip(taxable, charged, strict=True)]
        else:
            net = sum((line.amount for line in taxable), Money.zero(invoice.currency))
            quoted = [net + sum(charged, Money.zero(invoice.currency))] if taxable else []
        taxable = [replace(taxable[0], amount=amount) for amount in quoted]
    expected = [line.amount for line in tax.apply(taxable)[1]]
    assert charged == expected, (
        f"{invoice.number}: tax {charged}, but {tax.label()} rounded {tax.mode} makes {expected}"
    )


def _uf(day: int) -> Decimal:
    """A UF value that climbs a little every day, as the real one does."""
    return Decimal("39000.00") + Decimal(day) * Decimal("3.17")
