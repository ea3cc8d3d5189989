"""``billing demo``, the README's run command, run as a process in an empty directory (and,
for a directory it must refuse, in process).

The demo bills a year through the four gateways' real adapters and fake servers on loopback.
Each run's dates follow the day it runs (the test clock starts on the first day of next month),
so prorated amounts vary with the months' lengths; the invoice counts and the link gateways'
totals do not, and those are checked exactly.

The command is run through a small wrapper around ``billing.cli:main`` (what the ``billing``
script calls) that, once the command has returned, lists the threads still running and whether
a development-only package (hypothesis, fastapi, django) was imported: the demo must leave
nothing running and must work with the main dependencies alone.
"""

from __future__ import annotations

import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from typer.testing import CliRunner

from billing.cli import app

WRAPPER = """
import sys, threading
from billing.cli import main
try:
    main()
except SystemExit:
    left = [t.name for t in threading.enumerate() if t is not threading.main_thread()]
    dev = sorted(m for m in ("hypothesis", "fastapi", "django") if m in sys.modules)
    print(f"threads left: {left}; dev modules: {dev}", file=sys.stderr, flush=True)
    raise
"""


def _env() -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("BILLING_")}
    env["COLUMNS"] = "200"  # wide enough that no table cell wraps
    return env


def _demo(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", WRAPPER, "demo", *args],
        cwd=cwd,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=180,
    )


def _row(*cells: str) -> re.Pattern[str]:
    """A table row holding these cells, in order, each alone in its cell."""
    return re.compile(r"│\s*" + r"\s*│\s*".join(re.escape(cell) for cell in cells) + r"\s*│")


def test_the_demo_bills_a_year_through_four_gateways_and_leaves_nothing_running(tmp_path: Path):
    began = time.monotonic()
    ran = _demo(cwd=tmp_path)  # --dir defaults to the current directory
    took = time.monotonic() - began

    assert ran.returncode == 0, ran.stderr
    assert "Traceback" not in ran.stderr
    assert "threads left: []; dev modules: []" in ran.stderr
    assert took < 60, f"the demo took {took:.1f} s"
    out = ran.stdout

    # the timeline: each turn of the story, and the engine's events it caused
    for line in (
        "trial over: active, first charge paid",
        "plan pro-clp -> empresa-clp; debt",
        "debt of",
        "attempt 1 declined: insufficient_funds (soft)",
        "recovered: active again",
        "plan plus-mxn -> basico-mxn; credit",
        "granted (plan_change)",
        "attempt 4 declined: card_declined (soft)",
        "written off (uncollectible)",
        "refunded: 599.00 MXN",
        "its notification settles it",
        "lets the link for",
        "attempt 1 declined: payer_abandoned (soft)",
        "no notification came: the worker's check settles it",
        "cancels at the period's end",
    ):
        assert line in out, line
    assert out.count("recovered: active again") == 2  # bruno's card, hugo's expired link
    assert "subscribes to Pro UF (pro-uf): 0.5 UF (charged in CLP) a month, IVA 19%" in out
    assert "subscribes to Plus (plus-mxn): 599.00 MXN a month, IVA 16% included" in out

    # a table per gateway
    for title in (
        "QVO (Chile, stored cards)",
        "Openpay (Mexico, stored cards)",
        "Khipu (Chile, payment links)",
        "Payvalida (Colombia, payment links)",
    ):
        assert title in out, title
    assert _row("ana", "empresa-clp, active", "12/12 paid").search(out)
    assert _row("bruno", "pro-uf, active", "12/12 paid").search(out)
    assert _row("diego", "basico-mxn, active", "12/12 paid").search(out)
    assert _row("elena", "plus-mxn, canceled", "6/7 paid").search(out)
    # 12 links of 49,990 + 19 % IVA, and 11 and 12 of 45,000 + 19 %: whatever the dates
    assert _row("fernanda", "empresa-clp, active", "12/12 paid", "713,856 CLP").search(out)
    assert _row("gabriel", "estandar-cop, canceled", "11/11 paid", "589,050 COP").search(out)
    assert _row("hugo", "estandar-cop, active", "12/12 paid", "642,600 COP").search(out)

    # the notifications, over HTTP to billing.web's endpoint: Khipu's 12 (one held a day, so
    # the worker's check settled that payment), Payvalida's 23 payments and hugo's expiry
    assert _row("khipu", "12", "12", "12 processed", "12", "11").search(out)
    assert _row("payvalida", "24", "24", "24 processed", "23", "23").search(out)

    # the report and the audit
    index = tmp_path / "billing-report" / "index.html"
    assert f"Report: {index}" in out
    assert index.is_file()
    assert "<html" in index.read_text(encoding="utf-8").lower()
    assert list((tmp_path / "billing-report").glob("*.png"))
    assert "Audit: balanced" in out
    done = re.search(r"Done in ([\d.]+) s \((\d+) stops of the test clock\)", out)
    assert done is not None
    assert float(done.group(1)) < 60

    # the database is the engine's, with every invoice of the year
    with sqlite3.connect(tmp_path / "billing-demo.db") as db:
        [(invoices,)] = db.execute("SELECT count(*) FROM invoices").fetchall()
    assert invoices == 12 + 12 + 12 + 7 + 12 + 11 + 12


@pytest.mark.parametrize("left", ["billing-demo.db", "billing-report", "a file"])
def test_a_directory_it_must_not_use_is_one_line_and_exit_2(tmp_path: Path, left: str):
    if left == "a file":
        target = tmp_path / "notes.txt"
        target.write_text("mine")
    else:
        target = tmp_path
        if left.endswith(".db"):
            (tmp_path / left).write_text("an earlier demo")
        else:
            (tmp_path / left).mkdir()
            (tmp_path / left / "index.html").write_text("an earlier report")
    ran = CliRunner().invoke(app, ["demo", "--dir", str(target)])
    assert ran.exit_code == 2, ran.output
    assert ran.stdout == ""
    [line] = ran.stderr.strip().splitlines()
    assert line.startswith("error: --dir: "), line
    assert str(target) in line
    if left == "a file":
        assert "is not a directory" in line
        assert target.read_text() == "mine"
    else:
        assert "add --force to replace it" in line
        assert sorted(p.name for p in tmp_path.iterdir()) == [left]  # nothing touched


def test_ctrl_c_stops_everything_it_started(tmp_path: Path):
    demo = subprocess.Popen(
        [sys.executable, "-c", WRAPPER, "demo", "--dir", str(tmp_path)],
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert demo.stderr is not None
        lines = []
        for line in demo.stderr:  # the servers are up, and the year's billing has begun
            lines.append(line)
            if "customers subscribed; billing 12 months" in line:
                break
        else:
            pytest.fail("".join(lines))
        interrupted = time.monotonic()
        demo.send_signal(signal.SIGINT)
        out, err = demo.communicate(timeout=60)
        stopped = time.monotonic() - interrupted
    finally:
        if demo.poll() is None:
            demo.kill()
            demo.wait()
    assert demo.returncode == 130, err
    assert "error: interrupted; everything the demo started is stopped" in err
    assert "threads left: []" in err
    assert "Traceback" not in err
    assert stopped < 15
    assert out == ""


def test_the_json_document_holds_the_same_figures_as_decimal_strings(tmp_path: Path):
    from billing.demo.play import Entry, Line, Notifications, Outcome
    from billing.demo.show import document
    from billing.services.audit import AuditReport, Books

    at = datetime(2027, 1, 1, 12, tzinfo=UTC)
    outcome = Outcome(
        directory=tmp_path,
        database=tmp_path / "billing-demo.db",
        start=at,
        end=at + timedelta(days=364),
        timeline=[Entry(at, "diego", "openpay", "credit 154.44 MXN granted (plan_change)")],
        gateways={
            "openpay": [
                Line("diego", "basico-mxn", "active", 12, 12, Books(invoiced=508800), "MXN")
            ]
        },
        notifications=[Notifications("khipu", 12, 12, {"processed": 12}, 12, 11)],
        audit=AuditReport(),
        index=tmp_path / "billing-report" / "index.html",
        stops=92,
        seconds=9.8761,
    )
    shown = json.loads(json.dumps(document(outcome)))
    assert shown["audit"] == {"balanced": True, "findings": []}
    [diego] = shown["gateways"]["openpay"]
    assert diego["invoiced"] == "5088.00"  # minor units shown in major, never a float
    assert diego["captured"] == "0.00"
    assert (diego["invoices"], diego["paid"], diego["currency"]) == (12, 12, "MXN")
    assert shown["notifications"][0]["settled_by_notification"] == 11
    assert shown["timeline"][0]["at"] == "2027-01-01T12:00:00+00:00"
    assert shown["report"] == str(tmp_path / "billing-report" / "index.html")
    assert (shown["stops"], shown["seconds"]) == (92, 9.876)
