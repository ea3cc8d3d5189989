"""``Engine.sign_up_many``: many customers, cards and subscriptions at once, on both databases.

It must do what ``create_customer`` + ``add_payment_method`` + ``subscribe`` do one by one (the
same invoices, charges and events), refuse bad input before anything is sent or written, and
leave nothing behind when a gateway call fails.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import func, select

from billing import (
    AlreadyExists,
    GatewayError,
    InvalidArgument,
    Plan,
    SignUp,
    SubscriptionStatus,
    TaxRate,
)
from billing.engine import Engine
from billing.ports import AttachRequest, Capability, CustomerRequest, StoredMethod
from billing.store.tables import metadata
from billing.testing import FakeGateway

from .conftest import START, Billing

IVA = TaxRate.of("IVA", "19")


class Registering(FakeGateway):
    """The fake, keeping customers (as Openpay and QVO do), failing the card ``tok_broken``."""

    capabilities = FakeGateway.capabilities | {Capability.CUSTOMERS}

    def __init__(self) -> None:
        super().__init__()
        self.registered: list[str] = []
        self.attached: list[tuple[str | None, str]] = []

    def register_customer(self, request: CustomerRequest) -> str:
        self.registered.append(request.customer_id)
        return f"gw_{request.customer_id}"

    def attach_payment_method(self, request: AttachRequest) -> StoredMethod:
        if request.token == "tok_broken":
            raise GatewayError(self.name, "invalid_request", "the token was used already")
        self.attached.append((request.customer_reference, request.token))
        return StoredMethod(reference=f"card_{request.token}", label="VISA ****4242")


@pytest.fixture
def plans(billing: Billing) -> Billing:
    billing.engine.create_plan(Plan.of(code="oro", name="Oro", price="10000", currency="CLP"))
    billing.engine.create_plan(
        Plan.of(code="prueba", name="Prueba", price="5000", currency="CLP", trial_days=14)
    )
    return billing


def _rows(billing: Billing, table: str) -> int:
    """How many rows ``table`` holds."""
    with billing.engine.store.engine.connect() as connection:
        return int(
            connection.execute(
                select(func.count()).select_from(metadata.tables[table])
            ).scalar_one()
        )


def _customers(engine: Engine) -> list[str]:
    with engine.store.engine.connect() as connection:
        customers = metadata.tables["customers"]
        return sorted(connection.execute(select(customers.c.id)).scalars())


def test_sign_ups_bill_like_one_call_at_a_time(plans: Billing) -> None:
    engine, clock = plans.engine, plans.clock
    later = START + timedelta(days=3)
    # one by one: the reference
    plans.customer("one_now")
    engine.subscribe("one_now", "oro", subscription_id="s_one_now", tax=IVA)
    plans.customer("one_later")
    engine.subscribe("one_later", "oro", subscription_id="s_one_later", start=later, tax=IVA)
    report = engine.sign_up_many(
        [
            SignUp(customer_id="many_now", timezone="America/Santiago", plan="oro", tax=IVA,
                   gateway="fake", token="tok_many_now", subscription_id="s_many_now"),
            SignUp(customer_id="many_later", timezone="America/Santiago", plan="oro", tax=IVA,
                   gateway="fake", token="tok_many_later", subscription_id="s_many_later",
                   start=later),
            SignUp(customer_id="many_trial", timezone="America/Santiago", plan="prueba",
                   subscription_id="s_many_trial"),
        ]
    )  # fmt: skip
    assert report.customers == ("many_now", "many_later", "many_trial")
    assert report.subscriptions == ("s_many_now", "s_many_later", "s_many_trial")
    assert report.billed.claimed == 2  # the one due now, and the trial starting now
    assert report.billed.payments == 1
    assert engine.subscription("s_many_trial").status is SubscriptionStatus.TRIALING
    assert engine.payment_methods("many_trial") == []
    method = engine.payment_methods("many_now")[0]
    assert (method.gateway, method.token, method.is_default) == ("fake", "tok_many_now", True)
    plans.run_until(START + timedelta(days=40))

    def history(customer: str) -> list[tuple[str, str, str]]:
        return [
            (invoice.reason.value, str(invoice.total), invoice.status.value)
            for invoice in engine.invoices(customer_id=customer)
        ]

    assert history("many_now") == history("one_now")
    assert len(history("many_now")) == 2
    assert history("many_later") == history("one_later")
    assert engine.subscription("s_many_now").status is SubscriptionStatus.ACTIVE
    assert len(plans.fake.charges_taken("many_now")) == 2
    events = engine.events(limit=1000)
    names = [e.name for e in events if e.subscription_id == "s_many_now"]
    assert names == [e.name for e in events if e.subscription_id == "s_one_now"]
    with engine.store.transaction() as tx:  # no claim left behind
        assert all(worker is None for _, worker, _ in tx.claims())
    assert clock.now() == START + timedelta(days=40)
    assert engine.audit().balanced


def test_customers_are_registered_at_gateways_that_keep_them(database_url: str) -> None:
    from billing.bootstrap import open_engine
    from billing.clock import ManualClock
    from billing.config import Settings

    gateway = Registering()
    with open_engine(
        database_url,
        clock=ManualClock(START),
        gateways=[gateway],
        settings=Settings(threads=4),
    ) as engine:
        engine.create_plan(Plan.of(code="oro", name="Oro", price="10000", currency="CLP"))
        sign_ups = [
            SignUp(
                customer_id=f"c{n}",
                timezone="America/Santiago",
                metadata={"name": f"Cliente {n}", "email": f"c{n}@example.cl"},
                plan="oro",
                gateway="fake",
                token=f"tok_{n}",
            )
            for n in range(30)
        ]
        report = engine.sign_up_many(sign_ups)
        assert report.billed.payments == 30
        assert sorted(gateway.registered) == sorted(f"c{n}" for n in range(30))
        assert ("gw_c7", "tok_7") in gateway.attached
        assert engine.payment_methods("c7")[0].token == "card_tok_7"
        assert engine.payment_methods("c7")[0].label == "VISA ****4242"
        with engine.store.transaction() as tx:
            assert tx.gateway_customer("c7", "fake") == "gw_c7"
        assert all(invoice.status.value == "paid" for invoice in engine.invoices(customer_id="c29"))
        # a later card for the same customer reuses the gateway's customer
        engine.add_payment_method("c7", gateway="fake", token="tok_7b")
        assert gateway.registered.count("c7") == 1

        # a failed gateway call: nothing written, whatever came before it
        before = len(engine.payment_methods("c7"))
        with pytest.raises(GatewayError):
            engine.sign_up_many(
                [
                    SignUp(customer_id="d1", timezone="UTC", plan="oro", gateway="fake",
                           token="tok_d1"),
                    SignUp(customer_id="d2", timezone="UTC", plan="oro", gateway="fake",
                           token="tok_broken"),
                ]
            )  # fmt: skip
        assert _customers(engine) == sorted(f"c{n}" for n in range(30))
        assert len(engine.payment_methods("c7")) == before


@pytest.mark.parametrize(
    ("sign_up", "field"),
    [
        (SignUp(timezone="America/Santiago", plan="plata"), "sign_ups[1].plan"),
        (SignUp(timezone="Mars/Olympus", plan="oro", gateway="fake", token="t"),
         "sign_ups[1].timezone"),
        (SignUp(timezone="UTC", plan="oro"), "sign_ups[1].token"),
        (SignUp(timezone="UTC", plan="oro", token="t"), "sign_ups[1].gateway"),
        (SignUp(timezone="UTC", plan="oro", gateway="nope", token="t"), "sign_ups[1].gateway"),
        (SignUp(timezone="UTC", plan="oro", gateway="fake", token="4242424242424242"),
         "sign_ups[1].token"),
        (SignUp(timezone="UTC", plan="oro", gateway="fake", token="t", customer_id=" "),
         "sign_ups[1].customer_id"),
        (SignUp(timezone="UTC", plan="oro", gateway="fake", token="t",
                start=START - timedelta(days=1)), "sign_ups[1].start"),
        (SignUp(timezone="UTC", plan="oro", gateway="fake", token="t", customer_id="ok"),
         "sign_ups[1].customer_id"),
    ],
)  # fmt: skip
def test_a_bad_sign_up_refuses_the_call_before_anything_happens(
    plans: Billing, sign_up: SignUp, field: str
) -> None:
    good = SignUp(customer_id="ok", timezone="UTC", plan="oro", gateway="fake", token="tok_ok")
    with pytest.raises(InvalidArgument) as raised:
        plans.engine.sign_up_many([good, sign_up])
    assert raised.value.field == field
    assert str(raised.value).startswith(f"{field}: ")
    assert plans.fake.calls == {}
    for table in ("customers", "payment_methods", "subscriptions", "events"):
        assert _rows(plans, table) == 0, table


def test_ids_the_database_holds_refuse_the_call(plans: Billing) -> None:
    plans.customer("c1")
    with pytest.raises(AlreadyExists, match="customer 'c1'"):
        plans.engine.sign_up_many(
            [
                SignUp(customer_id="c0", timezone="UTC", plan="oro", gateway="fake", token="t0"),
                SignUp(customer_id="c1", timezone="UTC", plan="oro", gateway="fake", token="t1"),
            ]
        )
    assert _customers(plans.engine) == ["c1"]
    with pytest.raises(InvalidArgument, match=r"sign_ups\[0\]: must be a SignUp"):
        plans.engine.sign_up_many([{"plan": "oro"}])  # type: ignore[list-item]
    assert plans.engine.sign_up_many([]).subscriptions == ()
