"""billing.reports: every figure of a small history built by hand, checked exactly.

The history (UTC customers, no taxes, so each figure can be worked out on paper), from
2026-01-10 on a test clock, reported from January 1 to April 1 (three UTC months):

* c1: ``basic`` (10000 CLP a month), every charge approved; 4000 of its March payment is
  refunded on March 15;
* c2: ``basic``, its first charge declined softly, paid by the retry three days later (a dunning
  recovery); upgraded to ``pro`` (30000) on March 20: 21 of the period's 31 days remain, so
  30000 x 21/31 = 20322.58 -> 20323 charged and 10000 x 21/31 = 6774.19 -> 6774 credited, and
  the 13549 of difference is carried as debt;
* c3: ``basic``, every charge declined softly: both attempts fail, and its plan's policy cancels
  it on January 13 and writes the invoice off;
* c4: ``mx`` (100.00 MXN a month), canceled on February 20 at the end of its period (March 10);
* c5: ``annual`` (120000 CLP a year): 10000 of MRR.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from rich.console import Console

from billing import Money, Plan, RetryPolicy, open_engine
from billing.clock import ManualClock
from billing.config import Settings
from billing.domain.errors import InvalidArgument, NaiveDatetime
from billing.engine import Engine
from billing.reports import Report, build_report, print_report, write_report
from billing.reports.files import CHARTS, render_html
from billing.reports.model import Balance, InvoiceCount, money, percent
from billing.testing import FakeGateway

START = datetime(2026, 1, 1, tzinfo=UTC)
END = datetime(2026, 4, 1, tzinfo=UTC)
FIRST = datetime(2026, 1, 10, tzinfo=UTC)


def _history(url: str) -> Engine:
    clock = ManualClock(FIRST)
    fake = FakeGateway()
    engine = open_engine(
        url, clock=clock, gateways=[fake], settings=Settings(threads=1), migrate=True
    )
    retry = RetryPolicy.of([3], then="canceled")
    for code, price, currency, interval in (
        ("basic", "10000", "CLP", "month"),
        ("pro", "30000", "CLP", "month"),
        ("mx", "100.00", "MXN", "month"),
        ("annual", "120000", "CLP", "year"),
    ):
        engine.create_plan(
            Plan.of(
                code=code,
                name=code,
                price=price,
                currency=currency,
                interval=interval,
                retry=retry,
            )
        )
    cards = {
        "c1": "approve",
        "c2": ["decline_soft", "approve"],
        "c3": "decline_soft",
        "c4": "approve",
        "c5": "approve",
    }
    plans = {"c1": "basic", "c2": "basic", "c3": "basic", "c4": "mx", "c5": "annual"}
    for customer, card in cards.items():
        engine.create_customer(customer_id=customer, timezone="UTC")
        engine.add_payment_method(customer, gateway="fake", token=f"tok_{customer}")
        fake.script(customer, card)
        engine.subscribe(customer, plans[customer], subscription_id=f"s_{customer}")

    def at(when: datetime) -> None:
        clock.set(when)
        engine.run_due()

    at(datetime(2026, 2, 20, tzinfo=UTC))
    engine.cancel("s_c4")  # at the end of its period: March 10
    at(datetime(2026, 3, 15, tzinfo=UTC))
    march = engine.payments(subscription_id="s_c1")[-1]
    engine.refund(march.id, amount=Money.of("4000", "CLP"))
    at(datetime(2026, 3, 20, tzinfo=UTC))
    engine.change_plan("s_c2", "pro")
    at(END)
    return engine


@pytest.fixture
def engine(database_url: str) -> Engine:
    return _history(database_url)


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> Report:
    """The history once, on a SQLite file, for the tests that only read its report."""
    path = tmp_path_factory.mktemp("report") / "billing.db"
    with _history(f"sqlite:///{path}") as history:
        return build_report(history, start=START, end=END, title="Three months")


def test_every_figure_of_a_hand_built_history(engine: Engine) -> None:
    with engine:
        report = build_report(engine, start=START, end=END, title="Three months")
    assert [month.label for month in report.months] == ["2026-01", "2026-02", "2026-03"]
    jan, feb, mar = report.months
    assert (jan.start, jan.end, mar.end) == (START, datetime(2026, 2, 1, tzinfo=UTC), END)

    # invoiced: c1, c2, c3 (written off, still invoiced) and c5 in January; c4 in pesos mexicanos
    assert jan.invoiced == {"CLP": 150000, "MXN": 10000}
    assert feb.invoiced == {"CLP": 20000, "MXN": 10000}
    assert mar.invoiced == {"CLP": 20000}
    # collected: c2's January invoice paid by its retry on January 13; c3 never paid
    assert jan.collected == {"CLP": 140000, "MXN": 10000}
    assert feb.collected == {"CLP": 20000, "MXN": 10000}
    assert mar.collected == {"CLP": 16000}  # 20000 captured, 4000 refunded
    assert (jan.refunded, feb.refunded, mar.refunded) == ({}, {}, {"CLP": 4000})

    # MRR: c1 + c2 + c5's 120000 a year; c4 until its cancellation on March 10; c2 on pro
    assert jan.mrr == {"CLP": 30000, "MXN": 10000}
    assert feb.mrr == {"CLP": 30000, "MXN": 10000}
    assert mar.mrr == {"CLP": 50000}
    assert [(m.new, m.churned, m.live_at_start, m.paying) for m in report.months] == [
        (5, 1, 0, 4),
        (0, 0, 4, 4),
        (0, 1, 4, 3),
    ]
    assert [percent(m.churn_rate) for m in report.months] == ["20.0 %", "0.0 %", "25.0 %"]
    churn = report.churn
    assert (churn.live_at_start, churn.new, churn.churned, churn.live_at_end) == (0, 5, 2, 3)
    assert percent(churn.rate) == "40.0 %"

    assert report.invoices == (
        InvoiceCount(status="paid", currency="CLP", count=7, total=180000),
        InvoiceCount(status="paid", currency="MXN", count=2, total=20000),
        InvoiceCount(status="uncollectible", currency="CLP", count=1, total=10000),
    )
    dunning = report.dunning
    assert (dunning.entered, dunning.recovered, dunning.collecting) == (2, 1, 0)
    assert (dunning.written_off, dunning.voided) == (1, 0)
    assert dict(dunning.entered_amounts) == {"CLP": 20000}
    assert dict(dunning.recovered_amounts) == {"CLP": 10000}
    assert percent(dunning.recovery_rate) == "50.0 %"

    assert report.balances == (Balance(currency="CLP", credit=0, debt=13549, open_invoices=0),)
    assert report.audit.balanced
    assert report.audit.findings == ()
    assert dict(report.audit.books["CLP"]) == {
        "invoiced": 190000,
        "captured": 180000,
        "credit_applied": 0,
        "open": 0,
        "written_off": 10000,
        "refunded": 4000,
        "credit_balance": 0,
    }
    assert report.audit.books["MXN"]["captured"] == 20000
    assert report.currencies == ("CLP", "MXN")


def test_a_window_cut_mid_month_counts_only_what_falls_in_it() -> None:
    with _history("sqlite://") as history:
        cut = build_report(
            history,
            start=datetime(2026, 1, 12, tzinfo=UTC),
            end=datetime(2026, 2, 15, tzinfo=UTC),
            title="cut",
        )
    first, second = cut.months
    assert (first.label, first.start, first.end) == (
        "2026-01",
        datetime(2026, 1, 12, tzinfo=UTC),
        datetime(2026, 2, 1, tzinfo=UTC),
    )
    assert first.collected == {"CLP": 10000}  # only c2's retry on January 13
    assert first.invoiced == {}  # every January invoice was finalized on the 10th
    assert second.invoiced == {"CLP": 20000, "MXN": 10000}
    assert (first.new, first.live_at_start, first.churned) == (0, 5, 1)  # c3 on January 13
    assert cut.dunning.entered == 0  # both declined invoices first failed on January 10
    assert cut.churn.live_at_end == 4


def test_the_tables_fit_80_columns_and_show_the_figures(report: Report) -> None:
    console = Console(width=80, record=True, color_system=None)
    print_report(report, console)
    text = console.export_text()
    assert max(len(line) for line in text.splitlines()) <= 80
    for expected in (
        "CLP by month",
        "MXN by month",
        "150,000",
        "16,000",
        "50,000",
        "100.00",
        "dunning recovery rate",
        "50.0 %",
        "13,549",
        "Audit: balanced",
    ):
        assert expected in text, expected


def test_the_files_are_the_same_bytes_for_the_same_report(report: Report, tmp_path: Path) -> None:
    first = write_report(report, tmp_path / "one")
    second = write_report(report, tmp_path / "two" / "nested")
    assert first == tmp_path / "one" / "index.html"
    for name in ["index.html", *(f"{chart}.png" for chart in CHARTS)]:
        one, two = (first.parent / name).read_bytes(), (second.parent / name).read_bytes()
        assert one == two, name
        assert one
    assert (first.parent / "revenue.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert b"Software" not in (first.parent / "mrr.png").read_bytes()
    page = first.read_text(encoding="utf-8")
    for chart in CHARTS:
        assert f'src="{chart}.png"' in page
    assert '<td class="n">13,549</td>' in page
    assert page == render_html(report)


def test_an_empty_database_makes_an_empty_report(tmp_path: Path) -> None:
    with open_engine("sqlite://", clock=ManualClock(START), gateways=[], migrate=True) as empty:
        report = build_report(empty, start=START, end=END, title="nothing")
    assert [m.collected for m in report.months] == [{}, {}, {}]
    assert report.dunning.recovery_rate is None
    assert percent(report.churn.rate) == "-"
    assert report.audit.balanced
    page = write_report(report, tmp_path)
    assert "no data" not in page.read_text()  # the charts say so, not the page
    assert all((tmp_path / f"{chart}.png").exists() for chart in CHARTS)


def test_a_window_must_end_after_it_starts_and_be_aware() -> None:
    with open_engine("sqlite://", clock=ManualClock(START), gateways=[], migrate=True) as empty:
        with pytest.raises(InvalidArgument, match="end"):
            build_report(empty, start=END, end=START, title="backwards")
        with pytest.raises(NaiveDatetime):
            build_report(empty, start=START.replace(tzinfo=None), end=END, title="naive")
        later = build_report(empty, start=START, end=START + timedelta(hours=1), title="hour")
    assert [m.label for m in later.months] == ["2026-01"]


def test_money_is_shown_with_its_currency_exponent() -> None:
    assert money(1234550, "MXN") == "12,345.50"
    assert money(-6774, "CLP") == "-6,774"
    assert money(25000, "CLF") == "2.5000"
    assert money(0, "COP") == "0"
