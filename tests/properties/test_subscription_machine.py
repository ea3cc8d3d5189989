"""A stateful property test: any sequence of operations, declines and time keeps the money laws.

Hypothesis drives one subscription through random histories (time passing, payment methods that
approve or decline softly or hardly, plan changes, cancellations, pauses, resumes, new payment
methods, granted credit) and checks after every step that:

* only documented status transitions happen (:data:`TRANSITIONS`), and final statuses stay final;
* every invoice's lines sum to its total, and no total is negative;
* no invoice is paid twice, and no payment is attempted on an invoice with nothing to pay;
* at most one invoice bills any period start;
* the customer's credit balance never goes negative;
* all billing due by now has been run.
"""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta

from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from billing.domain.catalog import Plan
from billing.domain.customers import Customer
from billing.domain.dunning import RetryPolicy
from billing.domain.errors import IllegalTransition
from billing.domain.invoices import InvoiceReason, InvoiceStatus
from billing.domain.money import Money
from billing.domain.payments import DeclineKind, PaymentResult, PaymentStatus
from billing.domain.proration import ProrationBehavior, ProrationUnit
from billing.domain.subscriptions import TRANSITIONS, SubscriptionStatus
from billing.domain.taxes import TaxRate
from tests.world import Payer, World

S = SubscriptionStatus
TIMEZONES = ["America/Santiago", "America/Mexico_City", "America/Bogota", "UTC", "Pacific/Chatham"]
PAYERS: dict[str, Payer] = {
    "approve": lambda invoice, attempt: PaymentResult.succeeded(),
    "soft": lambda invoice, attempt: PaymentResult.failed(DeclineKind.SOFT),
    "hard": lambda invoice, attempt: PaymentResult.failed(DeclineKind.HARD),
    "flaky": lambda invoice, attempt: (
        PaymentResult.succeeded() if attempt % 2 == 0 else PaymentResult.failed(DeclineKind.SOFT)
    ),
}
payers = st.sampled_from(sorted(PAYERS))
prices = st.integers(min_value=0, max_value=200_000)
policies = st.builds(
    RetryPolicy.of,
    st.lists(st.integers(min_value=1, max_value=10), min_size=0, max_size=4),
    then=st.sampled_from(["unpaid", "canceled", "past_due"]),
)
taxes = st.none() | st.builds(
    TaxRate.of,
    st.just("IVA"),
    st.sampled_from(["0", "16", "19", "19.5", "100"]),
    inclusive=st.booleans(),
    rounding=st.sampled_from(["per_invoice", "per_line"]),
)


class SubscriptionMachine(RuleBasedStateMachine):
    world: World

    @initialize(
        price=prices,
        interval=st.sampled_from(["day", "week", "month", "year"]),
        count=st.integers(min_value=1, max_value=3),
        trial_days=st.integers(min_value=0, max_value=20),
        cycles=st.none() | st.integers(min_value=1, max_value=6),
        retry=policies,
        tax=taxes,
        timezone=st.sampled_from(TIMEZONES),
        start_in=st.sampled_from([timedelta(0), timedelta(hours=5), timedelta(days=40)]),
        payer=payers,
        credit=st.integers(min_value=0, max_value=50_000),
        prorate=st.booleans(),
        unit=st.sampled_from(list(ProrationUnit)),
        first=st.datetimes(
            min_value=datetime(2020, 1, 1), max_value=datetime(2035, 12, 31), timezones=st.just(UTC)
        ),
    )
    def start(
        self,
        price: int,
        interval: str,
        count: int,
        trial_days: int,
        cycles: int | None,
        retry: RetryPolicy,
        tax: TaxRate | None,
        timezone: str,
        start_in: timedelta,
        payer: str,
        credit: int,
        prorate: bool,
        unit: ProrationUnit,
        first: datetime,
    ) -> None:
        self.interval = (interval, count)
        plan = self._plan("base", price, trial_days=trial_days, cycles=cycles, retry=retry)
        self.world = World(
            customer=Customer.of("c1", timezone), plan=plan, now=first, pay=PAYERS[payer], unit=unit
        )
        if credit:
            self.world.grant_credit(Money.of(credit, "CLP"))
        self.world.subscribe(start=first + start_in, tax=tax, prorate=prorate)

    def _plan(self, code: str, price: int, **kwargs: object) -> Plan:
        interval, count = self.interval
        return Plan.of(
            code=code,
            name=f"Plan {code}",
            price=price,
            currency="CLP",
            interval=interval,
            interval_count=count,
            **kwargs,  # type: ignore[arg-type]
        )

    @rule(hours=st.integers(min_value=1, max_value=24 * 90))
    def time_passes(self, hours: int) -> None:
        self.world.run_until(self.world.now + timedelta(hours=hours))

    @rule(payer=payers)
    def payment_method_behaves(self, payer: str) -> None:
        self.world.pay = PAYERS[payer]

    @rule(payer=payers)
    def payment_method_is_replaced(self, payer: str) -> None:
        self.world.replace_payment_method(PAYERS[payer])

    @rule(price=prices, behavior=st.sampled_from(list(ProrationBehavior)))
    def plan_changes(self, price: int, behavior: ProrationBehavior) -> None:
        self._guarded(lambda: self.world.change_plan(self._plan(f"p{price}", price), behavior))

    @rule(at_period_end=st.booleans())
    def customer_cancels(self, at_period_end: bool) -> None:
        self._guarded(lambda: self.world.cancel(at_period_end))

    @rule(resume_in=st.none() | st.integers(min_value=1, max_value=24 * 60))
    def customer_pauses(self, resume_in: int | None) -> None:
        resume_at = None if resume_in is None else self.world.now + timedelta(hours=resume_in)
        self._guarded(lambda: self.world.pause(resume_at))

    @rule()
    def customer_resumes(self) -> None:
        self._guarded(self.world.resume)

    @rule(amount=st.integers(min_value=1, max_value=100_000))
    def credit_is_granted(self, amount: int) -> None:
        self.world.grant_credit(Money.of(amount, "CLP"))

    def _guarded(self, operation: object) -> None:
        before = self.world.sub
        try:
            operation()  # type: ignore[operator]
        except IllegalTransition:
            assert self.world.sub is before  # a refused operation changes nothing

    # -- invariants ------------------------------------------------------------------------
    @invariant()
    def only_documented_transitions_happen(self) -> None:
        for before, after in self.world.statuses:
            assert after in TRANSITIONS[before], (before, after)

    @invariant()
    def invoices_sum_their_lines_and_are_never_negative(self) -> None:
        for invoice in self.world.invoices.values():
            assert invoice.total == sum((line.amount for line in invoice.lines), Money.zero("CLP"))
            assert not invoice.total.is_negative()
            assert invoice.status is not InvoiceStatus.DRAFT

    @invariant()
    def nothing_is_paid_twice_and_nothing_free_is_charged(self) -> None:
        succeeded = Counter(
            a.invoice_id for a in self.world.attempts if a.status is PaymentStatus.SUCCEEDED
        )
        assert all(count == 1 for count in succeeded.values())
        for attempt in self.world.attempts:
            assert self.world.invoices[attempt.invoice_id].total.is_positive()
        for invoice_id, count in succeeded.items():
            assert self.world.invoices[invoice_id].status is InvoiceStatus.PAID, count

    @invariant()
    def a_period_is_billed_once(self) -> None:
        starts = Counter(
            invoice.period.start
            for invoice in self.world.invoices.values()
            if invoice.period is not None and invoice.reason is not InvoiceReason.PLAN_CHANGE
        )
        assert all(count == 1 for count in starts.values()), starts

    @invariant()
    def credit_never_goes_negative(self) -> None:
        assert self.world.credit is not None
        assert not self.world.credit.amount.is_negative()

    @invariant()
    def everything_due_has_been_billed(self) -> None:
        due = self.world.sub.due_at
        assert due is None or due > self.world.now

    @invariant()
    def final_statuses_stay_final(self) -> None:
        seen_final = False
        for before, _after in self.world.statuses:
            assert not seen_final or before not in (S.CANCELED, S.ENDED)
            seen_final = seen_final or before in (S.CANCELED, S.ENDED)

    @invariant()
    def no_invoice_is_issued_after_the_end(self) -> None:
        sub = self.world.sub
        stop = sub.canceled_at or sub.ended_at
        if stop is not None:
            assert all(invoice.created_at <= stop for invoice in self.world.invoices.values())

    @invariant()
    def an_invoice_with_something_to_pay_is_paid_only_by_a_payment(self) -> None:
        paid = {a.invoice_id for a in self.world.attempts if a.status is PaymentStatus.SUCCEEDED}
        for invoice in self.world.invoices.values():
            if invoice.status is InvoiceStatus.PAID and invoice.total.is_positive():
                assert invoice.id in paid


TestSubscriptionMachine = SubscriptionMachine.TestCase
