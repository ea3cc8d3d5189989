"""``billing bench``: a tiny benchmark runs every case on SQLite and PostgreSQL, and checks them."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from billing.bench import DUE, seed, verify, verify_api
from billing.cli import app

KINDS = [
    ("limit", "none", None),
    ("baseline", "in-process", 1),
    ("engine", "in-process", 1),
    ("memory", "in-process", 1),
    ("api", "in-process", 1),
    ("bulk", "in-process", 1),
    ("baseline", "http", 1),
    ("engine", "http", 1),
]
"""Every case with one worker process: several workers are proven by the worker tests, and each
case's processes cost seconds."""


def billing(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "billing", *args], capture_output=True, text=True, timeout=300
    )


@pytest.mark.slow
def test_bench_times_and_checks_every_case_on_sqlite_and_postgresql(postgres_server, tmp_path):
    path = tmp_path / "results" / "bench.json"
    result = billing(
        "bench",
        *("--size", "20", "--baseline-size", "8", "--http-delay-ms", "50", "--workers", "1"),
        *("--postgres-url", postgres_server, "--json", str(path)),
    )
    assert result.returncode == 0, result.stderr
    assert "SQLite" in result.stdout
    assert "PostgreSQL" in result.stdout
    assert "renewals" in result.stdout

    results = json.loads(path.read_text())
    assert results["ok"] is True
    assert results["databases"]["sqlite"]["version"]
    assert results["databases"]["postgresql"]["measured"] is True
    assert results["databases"]["postgresql"]["version"]
    assert results["environment"]["cpu_count"] >= 1
    assert results["environment"]["python"]
    assert results["date"]
    assert results["options"]["size"] == 20
    assert results["options"]["baseline_size"] == 8
    assert results["options"]["http_baseline_size"] == 1
    assert results["renewal"]["rows_added"]["invoices"] == 1
    assert results["renewal"]["rows_added"]["payments"] == 1

    for database in ("sqlite", "postgresql"):
        cases = [case for case in results["cases"] if case["database"] == database]
        assert [(c["case"], c["gateway"], c["workers"]) for c in cases] == KINDS
        for case in cases:
            assert case["ok"] is True, case
            assert case["seconds"] > 0
            assert case["renewals_per_second"] > 0
            checks = case["checks"]
            if case["case"] == "api":  # new subscriptions, each paid at once
                assert checks == {"active": 8, "paid": 8, "charges": 8}
                assert case["fraction_of_limit"] is case["speedup_over_baseline"] is None
                continue
            if case["case"] == "bulk":  # the same, with sign_up_many: a speed-up over the API's
                size = case["size"]
                assert checks == {"active": size, "paid": size, "charges": size}
                assert case["fraction_of_limit"] is None
                assert case["speedup_over_baseline"] > 0
                continue
            assert checks["renewal_invoices"] == checks["paid"] == case["size"]
            assert checks["left_due"] == checks["failed"] == 0
            if case["case"] == "limit":
                assert checks["charges"] is None
                assert case["fraction_of_limit"] is None
            else:
                assert checks["charges"] == case["size"]
                assert case["report"]["claimed"] == case["size"]
                assert case["peak_rss_kib"] > 0
                assert case["fraction_of_limit"] > 0
                assert case["speedup_over_baseline"] > 0
        sizes = {(c["case"], c["gateway"]): c["size"] for c in cases}
        assert sizes[("baseline", "in-process")] == 8
        assert sizes[("baseline", "http")] == 1
        assert sizes[("memory", "in-process")] == 5

    memory = {entry["database"]: entry for entry in results["memory"]}
    assert memory.keys() == {"sqlite", "postgresql"}
    assert all(entry["sizes"] == [20, 5] for entry in memory.values())


def test_verify_reports_renewals_that_were_not_billed(sqlite_url):
    seed(sqlite_url, 3)  # due at DUE, and nobody billed them
    checks, problem = verify(sqlite_url, 3, charges=2, failed=1)
    assert checks == {
        "renewal_invoices": 0,
        "paid": 0,
        "charges": 2,
        "failed": 1,
        "left_due": 3,
    }
    assert problem == "0 renewal invoices, 0 paid, 2 charges, 1 failed, 3 left due (expected 3)"
    assert DUE.tzinfo is not None


def test_verify_api_reports_sign_ups_that_were_not_paid(sqlite_url):
    seed(sqlite_url, 2)  # active subscriptions whose first invoices are not in this database
    checks, problem = verify_api(sqlite_url, 2, charges=1)
    assert checks == {"active": 2, "paid": 0, "charges": 1}
    assert problem == "0 paid, 1 charges (expected 2)"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--workers", "one"], "--workers: must be worker process counts"),
        (["--size", "0"], "--size: must be an integer >= 1"),
        (["--postgres-url", "mysql://root@localhost/db"], "--postgres-url: must be a PostgreSQL"),
    ],
)
def test_bench_refuses_a_bad_option_with_one_line(args, message):
    result = CliRunner().invoke(app, ["bench", *args])
    assert result.exit_code == 2
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert result.stderr.startswith(f"error: {message}")
    assert len(result.stderr.strip().splitlines()) == 1
