"""Running a scenario on the test clock, and reporting what happened.

The runner puts the scenario's plans, customers and subscriptions on an engine whose clock starts
at ``start`` (with the file's ``settings``), moves the clock from one due instant to the next (so
everything due on the way is billed in time order, across all subscriptions), applies each event
at its instant, and bills everything due up to ``until``. Customers pay through their gateway's
simulation (:mod:`billing.testing.simulation`), scripted with their ``payment`` behavior (or with
no payment method at all): the in-process fake, or a real adapter talking to its gateway's fake
server over loopback HTTP. Besides the engine's calls, events act on the simulations: a customer
pays an expired link late (``pay_expired_link``), a gateway loses a refund's answer
(``lose_answer``, ``lose_refund_answer``).

Customers of gateways that collect through payment links (Khipu, Payvalida) are on the other side
of each link (:class:`LinkPayers`): they pay it at once, never, or late, through the gateway's fake;
every notification the gateway sends is handed to the engine
(:meth:`~billing.engine.Engine.receive_notification`) after each step, in process, as the host's
webhook endpoint would.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any, Final

from billing.bootstrap import open_engine
from billing.clock import ManualClock
from billing.config import Settings
from billing.domain.errors import BillingError, IllegalTransition
from billing.domain.exchange import TableExchangeRates
from billing.domain.invoices import Invoice, InvoiceStatus, LineKind
from billing.domain.money import Currency, Money
from billing.domain.payments import PaymentAttempt, PaymentStatus
from billing.domain.proration import ProrationBehavior
from billing.domain.taxes import TaxRate
from billing.engine import Engine
from billing.ports import Capability, Notification
from billing.scenarios.file import EventSpec, Scenario, ScenarioError
from billing.services.notifications import NotificationReceipt
from billing.testing import Behavior, FakeGateway, simulation
from billing.testing.simulation import (
    FakeSimulation,
    GatewaySimulation,
    LinkSimulation,
    link_simulation,
)

Report = dict[str, Any]

NO_PAYMENT_METHOD: Final = "none"
"""A customer's ``payment`` when it has no payment method."""

NATIVE_PAY_LATE: Final = "pay_late_native"
"""A customer's ``payment`` that scripts the gateway's own ``pay_late`` (no late payer of
:class:`LinkPayers`)."""

LATE_PAYMENT_AFTER: Final = timedelta(days=2)
"""How long after the engine recorded that a payment link expired unpaid a ``pay_late`` customer
of a pay-by-link gateway pays it anyway."""

_MAX_ROUNDS: Final = 100
"""Rounds of payer actions and notifications at one instant before the runner gives up."""


def advance(
    engine: Engine, clock: ManualClock, until: datetime, *, payers: LinkPayers | None = None
) -> None:
    """Move ``clock`` to ``until``, stopping at every instant work falls due on the way.

    With ``payers``, it also stops where a scripted payer acts (a late payment), and after every
    step the payers act and the gateways' notifications reach the engine
    (:meth:`LinkPayers.settle`).
    """
    while True:
        due = engine.next_run_at()
        acts = None if payers is None else payers.next_at()
        stop = min((when for when in (due, acts) if when is not None), default=None)
        if stop is None or stop > until:
            break
        clock.set(max(stop, clock.now()))
        _run_due(engine)
        if payers is not None:
            payers.settle()
    clock.set(until)
    _run_due(engine)
    if payers is not None:
        payers.settle()


def _run_due(engine: Engine) -> None:
    """Bill what is due now; work that cannot be done (a UF plan billed before its first
    exchange rate, say) stays due forever, so the replay stops there with an error."""
    report = engine.run_due()
    if report.failed:
        subscriptions = ", ".join(sorted(set(report.failed)))
        raise BillingError(
            f"the work due at {engine.clock.now().isoformat()} for {subscriptions} cannot be "
            "done (the log says why: a UF plan billed before its first exchange rate, say); "
            "the scenario cannot go on"
        )


@dataclass
class LinkPayers:
    """The customers of pay-by-link gateways (:class:`~billing.testing.simulation.LinkSimulation`),
    on the other side of their links, and the gateways' webhooks to the engine.

    A customer's links go as their behavior says, through the gateway's fake: ``approve`` and
    ``pay_by_link`` pay each link as soon as it exists, ``never_pay``, ``link_expires`` and
    ``decline_soft`` let it expire unpaid (a soft decline, so dunning sends a new link per retry).
    ``pay_late`` lets each link expire too, and pays it anyway :data:`LATE_PAYMENT_AFTER` after
    the engine recorded the expiry: the engine records the late payment, which pays the invoice
    if it is still open and becomes the customer's credit otherwise. Whether a link is paid late
    is decided when it is sent: a customer who changes their behavior still pays the links they
    had already decided to pay late.

    :meth:`settle`, after every step, makes the payers' due payments and hands every
    notification the gateways sent to :meth:`~billing.engine.Engine.receive_notification`.
    """

    engine: Engine
    links: Mapping[str, LinkSimulation]
    """The simulation of each pay-by-link gateway, by gateway name."""
    receipts: list[NotificationReceipt] = field(default_factory=list)
    """The engine's receipt of every notification delivered, in order."""
    _late_payers: set[str] = field(default_factory=set, init=False, repr=False)
    """Customers who pay the links sent to them from now on late."""
    _seen: set[str] = field(default_factory=set, init=False, repr=False)
    _late: set[str] = field(default_factory=set, init=False, repr=False)
    """Attempts whose link is to be paid late, until it is."""
    _due: dict[str, tuple[datetime, PaymentAttempt]] = field(
        default_factory=dict, init=False, repr=False
    )
    """When each expired link of :attr:`_late` is to be paid, and its attempt."""

    @classmethod
    def of(cls, engine: Engine, sims: Mapping[str, GatewaySimulation]) -> LinkPayers:
        """The payers of every pay-by-link gateway among ``sims``."""
        links = {
            name: link for name, sim in sims.items() if (link := link_simulation(sim)) is not None
        }
        return cls(engine=engine, links=links)

    def scripted(self, customer_id: str, gateway: str, payment: str) -> Behavior:
        """What to script ``gateway``'s simulation with for a customer who, from now on, pays
        as ``payment`` says: a ``pay_late`` customer of a pay-by-link gateway lets the links
        expire (``never_pay``), and :meth:`settle` pays them late; ``pay_late_native`` is the
        gateway's own ``pay_late`` (its fake pays each link when it expires)."""
        if payment == NATIVE_PAY_LATE:
            self._late_payers.discard(customer_id)
            return Behavior.PAY_LATE
        behavior = Behavior(payment)
        if gateway not in self.links:
            return behavior
        if behavior is Behavior.PAY_LATE:
            self._late_payers.add(customer_id)
            return Behavior.NEVER_PAY
        self._late_payers.discard(customer_id)
        return behavior

    def forget(self, attempt_id: str) -> None:
        """Stop tracking an attempt whose expired link a ``pay_expired_link`` event paid: no
        late payer pays it again."""
        self._seen.add(attempt_id)
        self._late.discard(attempt_id)
        self._due.pop(attempt_id, None)

    def deliver(self, gateway: str, notifications: Sequence[Notification], times: int) -> None:
        """Hand each of ``notifications`` from ``gateway`` to the engine ``times`` times (a
        redelivery is a duplicate the engine recognises)."""
        for notification in notifications:
            for _ in range(times):
                receipt = self.engine.receive_notification(
                    gateway, headers=notification.headers, body=notification.body
                )
                self.receipts.append(receipt)

    def next_at(self) -> datetime | None:
        """The next instant a payer acts (a late payment), if any."""
        return min((due for due, _ in self._due.values()), default=None)

    def settle(self) -> None:
        """Make the payers' payments due by now, and deliver every notification the gateways
        sent to the engine, until nothing more happens at this instant."""
        if not self.links:
            return
        for _ in range(_MAX_ROUNDS):
            self._track()
            acted = self._pay_due()
            delivered = self._deliver()
            if not acted and not delivered:
                return
        raise RuntimeError(f"payers and notifications still active after {_MAX_ROUNDS} rounds")

    def _track(self) -> None:
        """Note new links of late payers, and when each expired one is to be paid."""
        for attempt in self.engine.payments():
            if attempt.gateway not in self.links or attempt.customer_id is None:
                continue
            if attempt.id not in self._seen:
                self._seen.add(attempt.id)
                if attempt.customer_id in self._late_payers:
                    self._late.add(attempt.id)
            if attempt.id not in self._late:
                continue
            if attempt.may_be_paid_late() and attempt.reference is not None:
                expired = attempt.updated_at or attempt.created_at
                self._due[attempt.id] = (expired + LATE_PAYMENT_AFTER, attempt)
            elif attempt.is_settled():  # paid after all, or declined for good: nothing to pay
                self._late.discard(attempt.id)
                self._due.pop(attempt.id, None)

    def _pay_due(self) -> int:
        now = self.engine.clock.now()
        due = [attempt for when, attempt in self._due.values() if when <= now]
        for attempt in due:
            assert attempt.gateway is not None
            assert attempt.reference is not None
            self.links[attempt.gateway].pay_link(attempt.reference, late=True)
            self._late.discard(attempt.id)
            del self._due[attempt.id]
        return len(due)

    def _deliver(self) -> int:
        delivered = 0
        for name, link in self.links.items():
            for notification in link.take_notifications():
                receipt = self.engine.receive_notification(
                    name, headers=notification.headers, body=notification.body
                )
                self.receipts.append(receipt)
                delivered += 1
        return delivered


@contextmanager
def _engine(scenario: Scenario, clock: ManualClock, url: str | None) -> Iterator[_Run]:
    # one thread: subscriptions due at one instant are billed in a fixed order (invoice numbers)
    settings = Settings(
        proration=scenario.proration.value,
        threads=1,
        **scenario.settings,  # type: ignore[arg-type]  # checked by the file's parser
    )
    rates = TableExchangeRates(scenario.exchange_rates)
    with ExitStack() as stack:
        sims: dict[str, GatewaySimulation] = {}
        for name in dict.fromkeys(customer.gateway for customer in scenario.customers):
            if name == "fake" and scenario.fake_pending_for is not None:
                sims[name] = FakeSimulation(FakeGateway(pending_for=scenario.fake_pending_for))
            else:
                sims[name] = simulation.simulation(name, clock=clock.now)
            stack.callback(sims[name].close)
        if url is None:
            directory = stack.enter_context(tempfile.TemporaryDirectory(prefix="billing-scenario-"))
            url = f"sqlite:///{Path(directory) / 'scenario.db'}"
        gateways = [sim.gateway for sim in sims.values()]
        engine = stack.enter_context(
            open_engine(
                url, clock=clock, gateways=gateways, rates=rates, settings=settings, migrate=True
            )
        )
        payers = LinkPayers.of(engine, sims)
        yield _Run(engine, sims, {c.ref: c.gateway for c in scenario.customers}, payers)


@dataclass
class _Run:
    """A scenario's engine, its gateways' simulations, each customer's gateway, and the payers
    of pay-by-link gateways."""

    engine: Engine
    sims: Mapping[str, GatewaySimulation]
    gateway_of: Mapping[str, str]
    payers: LinkPayers

    def give_card(
        self, customer: str, payment: str, *, replace: bool, idempotency_key: str | None = None
    ) -> None:
        name = self.gateway_of[customer]
        give_card(
            self.engine,
            self.sims[name],
            customer,
            self.payers.scripted(customer, name, payment),
            replace=replace,
            idempotency_key=idempotency_key,
        )

    def script(self, customer: str, payment: str) -> None:
        name = self.gateway_of[customer]
        self.sims[name].script(customer, self.payers.scripted(customer, name, payment))


def give_card(
    engine: Engine,
    sim: GatewaySimulation,
    customer_id: str,
    behavior: Behavior,
    *,
    replace: bool = False,
    idempotency_key: str | None = None,
) -> None:
    """Give a customer a new default payment method that pays as ``behavior`` says, the way the
    gateway stores it: a card from a token of its card form, or through its enrollment page;
    for a gateway that collects through payment links, the payer's e-mail address the links are
    sent to. With ``replace``, invoices in dunning are retried with it at once."""
    name = sim.gateway.name
    capabilities = sim.gateway.capabilities
    if Capability.CARD_TOKENS in capabilities or Capability.PAY_BY_LINK in capabilities:
        token = sim.card_token(customer_id, behavior)  # a pay-by-link gateway's is an e-mail
        add = engine.replace_payment_method if replace else engine.add_payment_method
        add(customer_id, gateway=name, token=token, idempotency_key=idempotency_key)
        return
    enrollment = engine.start_payment_method_enrollment(
        customer_id, gateway=name, return_url=_RETURN_URL, idempotency_key=idempotency_key
    )
    sim.fill_enrollment(customer_id, enrollment.redirect_url, behavior)
    engine.complete_payment_method_enrollment(name, enrollment.reference)


_RETURN_URL = "https://scenario.invalid/cards/return"
"""Where an enrollment page would send a scenario's customer back to."""


def run_scenario(scenario: Scenario, *, database_url: str | None = None) -> Report:
    """Replay ``scenario`` and return its report (see :func:`report`).

    It runs on a temporary SQLite database unless ``database_url`` names one. The work due by
    an event's instant is billed before it; the events of one instant are made one after the
    other, as calls made together (the work they make due is billed after the last of them).

    :raises ScenarioError: when the engine refuses a subscription or an event, naming its line.
    """
    clock = ManualClock(scenario.start)
    currencies = _customer_currencies(scenario)
    with _engine(scenario, clock, database_url) as run:
        engine = run.engine
        for plan in scenario.plans:
            engine.create_plan(plan)
        for customer in scenario.customers:
            with _refusals(scenario, customer.line, "customers"):
                engine.create_customer(
                    customer_id=customer.ref,
                    timezone=customer.timezone,
                    metadata={"name": customer.ref, "email": f"{customer.ref}@scenario.invalid"},
                )
                if customer.payment != NO_PAYMENT_METHOD:
                    run.give_card(customer.ref, customer.payment, replace=False)
                if customer.credit > 0:
                    credit = Money.of(customer.credit, currencies[customer.ref])
                    engine.grant_credit(customer.ref, credit, reason="scenario")
        for spec in scenario.subscriptions:
            with _refusals(scenario, spec.line, "subscriptions"):
                engine.subscribe(
                    spec.customer,
                    spec.plan,
                    subscription_id=spec.ref,
                    start=spec.start,
                    trial_end=spec.trial_end,
                    cycles=spec.cycles,
                    tax=spec.tax,
                    prorate=spec.prorate,
                )
                run.payers.settle()
        for event in scenario.events:
            # the events of one instant are made together: the work they make due waits
            if event.at > clock.now():
                advance(engine, clock, event.at, payers=run.payers)
            with _refusals(scenario, event.line, f"events.{event.action}"):
                _apply(run, currencies, event, scenario.source)
                run.payers.settle()
        advance(engine, clock, scenario.until, payers=run.payers)
        return report(engine, scenario)


@contextmanager
def _refusals(scenario: Scenario, line: int, field: str) -> Iterator[None]:
    """Turn the engine's refusal of a scenario step into an error naming the step's line."""
    try:
        yield
    except ScenarioError:
        raise
    except BillingError as exc:
        raise ScenarioError(scenario.source, line, field, f"refused by the engine: {exc}") from exc


def _customer_currencies(scenario: Scenario) -> dict[str, Currency]:
    """The currency of each customer's credit: that of its first subscription's plan (those of
    the ``subscriptions`` section first, then those ``subscribe`` events make, in time order)."""
    plans = {plan.code: plan for plan in scenario.plans}
    currencies: dict[str, Currency] = {}
    made = [(spec.customer, spec.plan) for spec in scenario.subscriptions]
    made += [
        (str(event.args["customer"]), str(event.args["plan"]))
        for event in scenario.events
        if event.action == "subscribe"
    ]
    for customer, plan in made:
        currencies.setdefault(customer, plans[plan].billing_currency)
    default = scenario.plans[0].billing_currency
    return {customer.ref: currencies.get(customer.ref, default) for customer in scenario.customers}


def _apply(run: _Run, currencies: Mapping[str, Currency], event: EventSpec, source: str) -> None:
    engine, args, key = run.engine, event.args, event.idempotency_key
    match event.action:
        case "change_plan":
            engine.change_plan(
                str(args["subscription"]),
                str(args["plan"]),
                behavior=str(args.get("behavior", ProrationBehavior.CARRY_DEBT)),
                idempotency_key=key,
            )
        case "set_payment":
            run.script(str(args["customer"]), str(args["payment"]))
        case "cancel":
            at_period_end = args.get("at_period_end", True)
            engine.cancel(
                str(args["subscription"]), at_period_end=bool(at_period_end), idempotency_key=key
            )
        case "pause":
            resume_at = args.get("resume_at")
            assert resume_at is None or isinstance(resume_at, datetime)
            engine.pause(str(args["subscription"]), resume_at=resume_at, idempotency_key=key)
        case "resume":
            engine.resume(str(args["subscription"]), idempotency_key=key)
        case "grant_credit":
            customer = str(args["customer"])
            given = args.get("currency")
            currency = currencies[customer] if given is None else Currency.of(str(given))
            amount = Money.of(_decimal(args["amount"]), currency)
            engine.grant_credit(customer, amount, reason="scenario", idempotency_key=key)
        case "refund":
            _refund(run, event, source)
        case "replace_payment_method":
            run.give_card(
                str(args["customer"]), str(args["payment"]), replace=True, idempotency_key=key
            )
        case "subscribe":
            _subscribe(engine, args, key)
        case "reconcile":
            engine.reconcile()
        case "pay_expired_link":
            _pay_expired_link(run, event, source)
        case "lose_refund_answer":
            name = str(args["gateway"])
            sim = run.sims.get(name)
            if sim is None:
                rule = f"must be the gateway of a customer ({', '.join(run.sims)})"
                raise _step_error(source, event, "gateway", rule, name)
            _lose_refund_answer(sim, str(args.get("when", "after")), source, event)


def _step_error(
    source: str, event: EventSpec, key: str, rule: str, value: object = None
) -> ScenarioError:
    """An event the run cannot make, at its line and argument."""
    return ScenarioError(source, event.line, f"events.{event.action}.{key}", rule, value)


def _subscribe(engine: Engine, args: Mapping[str, object], key: str | None) -> None:
    """A ``subscribe`` event: the subscription made at the event's instant, starting then (billed
    at once) unless it names a later ``start``."""
    start, trial_end, tax, cycles = (
        args.get(name) for name in ("start", "trial_end", "tax", "cycles")
    )
    assert start is None or isinstance(start, datetime)
    assert trial_end is None or isinstance(trial_end, datetime)
    assert tax is None or isinstance(tax, TaxRate)
    assert cycles is None or isinstance(cycles, int)
    engine.subscribe(
        str(args["customer"]),
        str(args["plan"]),
        subscription_id=str(args["ref"]),
        start=start,
        trial_end=trial_end,
        cycles=cycles,
        tax=tax,
        prorate=bool(args.get("prorate", True)),
        idempotency_key=key,
    )


def _attempt(
    engine: Engine, event: EventSpec, source: str, fits: Callable[[PaymentAttempt], bool], why: str
) -> PaymentAttempt:
    """The payment attempt an event names: its ``attempt`` of its ``invoice``, or the invoice's
    latest attempt that ``fits``."""
    invoice = engine.invoice_by_number(str(event.args["invoice"]))
    payments = engine.payments(invoice_id=invoice.id)
    number = event.args.get("attempt")
    if number is None:
        fitting = [payment for payment in payments if fits(payment)]
        if not fitting:
            raise IllegalTransition("invoice", invoice.number or invoice.id, invoice.status, why)
        return fitting[-1]
    for payment in payments:
        if payment.number == number:
            return payment
    known = ", ".join(str(payment.number) for payment in payments) or "none"
    rule = f"must be an attempt of {invoice.number} (it has: {known})"
    raise _step_error(source, event, "attempt", rule, number)


def _refund(run: _Run, event: EventSpec, source: str) -> None:
    """A ``refund`` event: the named attempt (the invoice's latest succeeded one by default),
    with the gateway told first to lose the answer when ``lose_answer`` says so."""
    engine, args = run.engine, event.args
    payment = _attempt(
        engine,
        event,
        source,
        lambda p: p.status is PaymentStatus.SUCCEEDED,
        "be refunded (it has no succeeded payment)",
    )
    lose = args.get("lose_answer")
    if lose is not None:
        sim = run.sims.get(payment.gateway or "")
        if sim is None:
            raise _step_error(source, event, "lose_answer", "needs a gateway of the scenario")
        _lose_refund_answer(sim, str(lose), source, event, key="lose_answer")
    given = args.get("amount")
    engine.refund(
        payment.id,
        amount=None if given is None else Money.of(_decimal(given), payment.amount.currency),
        idempotency_key=event.idempotency_key,
    )


def _lose_refund_answer(
    sim: GatewaySimulation, when: str, source: str, event: EventSpec, key: str = "when"
) -> None:
    """Tell the gateway to lose the answer of its next refund call: ``after`` refunding, or
    ``before`` (the request never arrives: the in-process fake only)."""
    if isinstance(sim, FakeSimulation):
        sim.fake.lose_refund_answers(before_refunding=when == "before")
        return
    if when == "before":
        rule = "before is the in-process fake's only; other gateways lose answers after"
        raise _step_error(source, event, key, rule, when)
    sim.lose_next_refund_answer()


def _pay_expired_link(run: _Run, event: EventSpec, source: str) -> None:
    """A ``pay_expired_link`` event: the customer pays a link that expired unpaid after all (a
    transfer confirmed late), on the fake or a pay-by-link gateway, and the gateway's
    notification reaches the engine ``once``, ``twice`` (a redelivery), or is ``lost`` (then
    only a reconciliation finds the payment)."""
    payment = _attempt(
        run.engine,
        event,
        source,
        lambda p: p.may_be_paid_late(),
        "have an expired link paid late (it has no payment link that expired unpaid)",
    )
    if not payment.may_be_paid_late() or payment.reference is None:
        rule = f"must be a payment link that expired unpaid (it is {payment.status.value})"
        raise _step_error(source, event, "attempt", rule, payment.number)
    name = payment.gateway or ""
    sim = run.sims[name]
    delivery = str(event.args.get("delivery", "once"))
    notifications: list[Notification]
    if isinstance(sim, FakeSimulation):
        sim.fake.pay_expired_link(payment.reference, run.engine.clock.now())
        notifications = [sim.fake.notification(payment.reference)]
    elif (link := link_simulation(sim)) is not None:
        link.pay_link(payment.reference, late=True)
        notifications = link.take_notifications()
    else:
        rule = f"must be on the fake or a pay-by-link gateway ({name} sends no links)"
        raise _step_error(source, event, "invoice", rule, event.args["invoice"])
    run.payers.forget(payment.id)
    if delivery != "lost":
        run.payers.deliver(name, notifications, 2 if delivery == "twice" else 1)


def _decimal(value: object) -> Decimal:
    assert isinstance(value, Decimal | int | str)
    return Decimal(value)


def _instant(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def report(engine: Engine, scenario: Scenario) -> Report:
    """What happened: every invoice, payment attempt and refund, and each subscription and
    customer now.

    Amounts are decimal strings in major units; instants are ISO 8601 in UTC.
    """
    invoices = engine.invoices()
    numbers = {invoice.id: invoice.number for invoice in invoices}
    payments = engine.payments()
    return {
        "scenario": scenario.name,
        "invoices": [_invoice(invoice) for invoice in invoices],
        "payments": [
            {
                "at": _instant(p.created_at),
                "invoice": numbers[p.invoice_id],
                "subscription": p.subscription_id,
                "attempt": p.number,
                "amount": p.amount.to_decimal_string(),
                "currency": p.amount.currency.code,
                "status": p.status.value,
                "error_code": p.code,
                "error": None if p.error is None else p.error.value,
            }
            for p in payments
        ],
        "refunds": [
            {
                "at": _instant(r.created_at),
                "invoice": numbers[r.invoice_id],
                "attempt": p.number,
                "amount": r.amount.to_decimal_string(),
                "currency": r.amount.currency.code,
                "status": r.status.value,
            }
            for p in payments
            if p.status is PaymentStatus.SUCCEEDED
            for r in engine.refunds(p.id)
        ],
        "subscriptions": [
            {
                "ref": s.id,
                "status": s.status.value,
                "plan": s.plan.code,
                "current_period_start": _instant(
                    s.current_period.start if s.current_period else None
                ),
                "current_period_end": _instant(s.current_period.end if s.current_period else None),
                "cancel_at_period_end": s.cancel_at_period_end,
                "debt": s.debt_total.to_decimal_string(),
            }
            for s in engine.subscriptions()
        ],
        "customers": [
            {
                "ref": c.ref,
                "credit_balance": balance.amount.to_decimal_string(),
                "currency": balance.amount.currency.code,
            }
            for c in scenario.customers
            for balance in (
                engine.credit_balances(c.ref)
                or [engine.credit_balance(c.ref, _customer_currencies(scenario)[c.ref].code)]
            )
        ],
        "events": [
            {"at": _instant(e.at), "name": e.name, "subscription": e.subscription_id}
            for e in _all_events(engine)
        ],
    }


def _all_events(engine: Engine) -> Iterator[Any]:
    after = 0
    while batch := engine.events(after=after, limit=500, pending_only=False):
        yield from batch
        after = batch[-1].seq


def _invoice(invoice: Invoice) -> dict[str, Any]:
    zero = Money.zero(invoice.currency)

    def total(*kinds: LineKind) -> str:
        return sum(
            (line.amount for line in invoice.lines if line.kind in kinds), zero
        ).to_decimal_string()

    open_ = invoice.status in (InvoiceStatus.OPEN, InvoiceStatus.UNCOLLECTIBLE)
    return {
        "number": invoice.number,
        "subscription": invoice.subscription_id,
        "customer": invoice.customer_id,
        "currency": invoice.currency.code,
        "status": invoice.status.value,
        "reason": invoice.reason.value,
        "period_start": _instant(invoice.period.start if invoice.period else None),
        "period_end": _instant(invoice.period.end if invoice.period else None),
        "issued_at": _instant(invoice.finalized_at),
        "lines": [
            {
                "kind": line.kind.value,
                "description": line.description,
                "amount": line.amount.to_decimal_string(),
                "period_start": _instant(line.period.start if line.period else None),
                "period_end": _instant(line.period.end if line.period else None),
            }
            for line in invoice.lines
        ],
        "subtotal": total(
            LineKind.PLAN, LineKind.PRORATION_CHARGE, LineKind.PRORATION_CREDIT, LineKind.DEBT
        ),
        "tax": total(LineKind.TAX),
        "credit": total(LineKind.CREDIT),
        "total": invoice.total.to_decimal_string(),
        "amount_due": invoice.total.to_decimal_string() if open_ else zero.to_decimal_string(),
    }
