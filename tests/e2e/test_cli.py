"""The ``billing`` command, run as a real process."""

from __future__ import annotations

import json
import os
import re
import select
import shlex
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from billing.bootstrap import discover_gateways

ROOT = Path(__file__).resolve().parents[2]


def billing(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "billing", *args], capture_output=True, text=True, timeout=60
    )


def test_help_lists_the_calendar_command():
    result = billing("--help")
    assert result.returncode == 0
    assert "calendar" in result.stdout


def test_version_prints_the_package_version():
    from billing import __version__

    result = billing("--version")
    assert result.stdout.strip() == f"billing {__version__}"
    short = billing("-V")
    assert short.returncode == 0
    assert short.stdout == result.stdout


def test_a_database_that_cannot_be_reached_is_one_line_and_exit_3_from_the_console_script():
    result = billing("subscriptions", "--database-url", "postgresql://nobody@127.0.0.1:1/x")
    assert result.returncode == 3, result.stderr
    assert result.stdout == ""
    assert result.stderr.splitlines() == [
        "error: cannot reach PostgreSQL at 127.0.0.1:1 (connection refused): is the server "
        "running, and are the host and port of postgresql://nobody@127.0.0.1:1/x right?"
    ]


def test_worker_once_says_what_it_loaded_and_did_even_when_nothing_was_due(sqlite_url):
    env = _clean_environment({"BILLING_QVO_BASE_URL": "http://127.0.0.1:9/qvo"})  # no token
    result = subprocess.run(
        [sys.executable, "-m", "billing", "worker", "--once", "--database-url", sqlite_url],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith(f"worker pass on {sqlite_url} at ")
    assert lines[1] == "gateways: none (not configured: fake, khipu, openpay, payvalida, qvo)"
    assert "nothing was due" in lines
    assert lines[-1] == "no work is scheduled"
    # the log: the gateway whose credentials are incomplete, and no gateway at all, are warnings
    warnings = [line for line in result.stderr.splitlines() if "level=warning" in line]
    assert any(
        "gateway.skipped gateway=qvo reason=missing_credentials set=BILLING_QVO_BASE_URL" in line
        for line in warnings
    ), result.stderr
    assert any("gateway.none_configured" in line for line in warnings), result.stderr
    assert "level=info logger=billing.bootstrap event=gateway.not_configured gateway=openpay" in (
        result.stderr
    )
    assert "event=worker.pass" in result.stderr
    assert "nothing_due=True" in result.stderr


def test_calendar_shows_month_ends_from_an_anchor_on_the_31st():
    result = billing("calendar", "--anchor", "2024-01-31T09:00:00-03:00", "--periods", "4")
    assert result.returncode == 0, result.stderr
    for start in ("2024-01-31T09:00", "2024-02-29T09:00", "2024-03-31T09:00", "2024-04-30T09:00"):
        assert start in result.stdout


def test_calendar_refuses_a_naive_anchor_with_a_clear_error():
    result = billing("calendar", "--anchor", "2026-01-31T12:00:00")
    assert result.returncode == 2
    assert "anchor" in result.stderr
    assert "timezone-aware" in result.stderr


def test_calendar_refuses_an_unknown_interval():
    result = billing("calendar", "--interval", "fortnight")
    assert result.returncode == 2
    assert "interval" in result.stderr


def test_migrate_creates_the_schema_and_then_reports_it_up_to_date(tmp_path):
    url = f"sqlite:///{tmp_path / 'billing.db'}"
    first = billing("migrate", "--database-url", url)
    assert first.returncode == 0, first.stderr
    assert "migrated from an empty schema to" in first.stdout
    second = billing("migrate", "--database-url", url)
    assert "is up to date" in second.stdout


def test_migrate_refuses_an_unsupported_database_url():
    result = billing("migrate", "--database-url", "mysql://root@localhost/billing")
    assert result.returncode == 2
    assert "database_url" in result.stderr


SCENARIO = """\
name: one month of Plan Oro
start: "2026-01-31T12:00:00+00:00"
until: "2026-03-01T00:00:00+00:00"
plans:
  - {code: oro, name: Plan Oro, price: "10000", currency: CLP}
customers:
  - {ref: c1, timezone: America/Santiago}
subscriptions:
  - {ref: s1, customer: c1, plan: oro, tax: {name: IVA, percent: "19"}}
"""


def test_scenario_run_prints_one_json_document(tmp_path):
    path = tmp_path / "oro.yaml"
    path.write_text(SCENARIO)
    result = billing("scenario", "run", str(path), "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert set(report) >= {"scenario", "invoices", "payments", "subscriptions", "customers"}
    assert [invoice["total"] for invoice in report["invoices"]] == ["11900", "11900"]


def test_scenario_run_prints_tables_without_json(tmp_path):
    path = tmp_path / "oro.yaml"
    path.write_text(SCENARIO)
    result = billing("scenario", "run", str(path))
    assert result.returncode == 0, result.stderr
    assert "INV-000002" in result.stdout
    assert "Subscriptions" in result.stdout


def test_a_malformed_scenario_names_the_line_and_the_field_and_fails(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(SCENARIO.replace('price: "10000"', 'price: "-5"'))
    result = billing("scenario", "run", str(path))
    assert result.returncode == 2
    assert f"{path}:5: plans[0].price: must be >= 0" in " ".join(result.stderr.split())


def test_a_missing_scenario_file_is_a_clear_error(tmp_path):
    result = billing("scenario", "run", str(tmp_path / "nowhere.yaml"))
    assert result.returncode == 2
    assert "nowhere.yaml" in result.stderr


# -- billing fake-gateways serve ----------------------------------------------------------------

BANNER_END = "# Serving until Ctrl-C."
GATEWAYS = ("khipu", "openpay", "payvalida", "qvo")
CUSTOM_CREDENTIALS = {
    "BILLING_QVO_FAKE_TOKEN": "qvo-token-from-the-environment",
    "BILLING_OPENPAY_FAKE_MERCHANT_ID": "mfromtheenvironment1",
    "BILLING_OPENPAY_FAKE_PRIVATE_KEY": "sk_from_the_environment_0123456789",
    "BILLING_KHIPU_FAKE_RECEIVER_ID": "424242",
    "BILLING_KHIPU_FAKE_SECRET": "a khipu secret & $HOME",  # printed shell-quoted
    "BILLING_PAYVALIDA_FAKE_MERCHANT": "cuatro",
    "BILLING_PAYVALIDA_FAKE_FIXED_HASH": "fixed_hash_from_the_environment_0123456789",
}
"""Not the fakes' defaults: the banner must carry these to the worker."""


@dataclass
class Banner:
    """What ``billing fake-gateways serve`` printed once its port was bound."""

    text: str
    base: str
    urls: dict[str, str]
    variables: dict[str, dict[str, str]]

    @property
    def environment(self) -> dict[str, str]:
        """Every gateway's variables: what a worker needs to use all the fakes."""
        return {key: value for each in self.variables.values() for key, value in each.items()}


def parse_banner(text: str) -> Banner:
    """The banner's lines: shell comments and ``export`` lines, read as a shell would."""
    found = re.search(r"serving on (http://\S+), each", text)
    assert found, text
    urls: dict[str, str] = {}
    variables: dict[str, dict[str, str]] = {}
    current = ""
    for line in text.splitlines():
        if match := re.fullmatch(r"# ([a-z0-9_-]+): (http://\S+)", line):
            current = match[1]
            urls[current], variables[current] = match[2], {}
        elif line.startswith("export "):
            words = shlex.split(line)
            assert len(words) == 2, line
            key, _, value = words[1].partition("=")
            variables[current][key] = value
        else:
            assert line.startswith("#"), f"not a shell comment: {line!r}"
    return Banner(text, found[1], urls, variables)


def _clean_environment(extra: Mapping[str, str]) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("BILLING_")}
    return {**env, **extra}


@contextmanager
def fake_gateways(
    log: Path, *args: str, env: Mapping[str, str] | None = None, timeout: float = 60
) -> Iterator[tuple[Banner, subprocess.Popen[bytes]]]:
    """``billing fake-gateways serve --port 0 *args`` as a process, once its banner is out (the
    banner is printed only after the port is bound, so no polling for readiness); interrupted
    (Ctrl-C) when the block ends. Its standard error goes to ``log``."""
    with log.open("wb") as errors:
        server = subprocess.Popen(
            [sys.executable, "-m", "billing", "fake-gateways", "serve", "--port", "0", *args],
            cwd=ROOT,
            env=_clean_environment(env or {}),
            stdout=subprocess.PIPE,
            stderr=errors,
        )
    try:
        assert server.stdout is not None
        output = b""
        deadline = time.monotonic() + timeout
        while BANNER_END.encode() not in output:
            left = deadline - time.monotonic()
            ready, _, _ = select.select([server.stdout], [], [], max(left, 0))
            chunk = os.read(server.stdout.fileno(), 65536) if ready else b""
            if not chunk:
                state = "timed out" if not ready else f"exited {server.wait(timeout=10)}"
                raise AssertionError(f"serve {state}: {output!r} {log.read_text()}")
            output += chunk
        yield parse_banner(output.decode()), server
    finally:
        if server.poll() is None:
            server.send_signal(signal.SIGINT)
            try:
                server.wait(timeout=20)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()
        if server.stdout is not None:
            server.stdout.close()


def test_fake_gateways_serve_prints_what_a_worker_needs_once_the_port_is_bound(tmp_path):
    log = tmp_path / "serve.err"
    with fake_gateways(log, env=CUSTOM_CREDENTIALS) as (banner, server):
        # bound before the banner: the first request needs no retry
        assert httpx.get(f"{banner.base}/qvo/_fake/faults", timeout=10).status_code == 200
        assert sorted(banner.urls) == sorted(GATEWAYS)
        assert banner.urls == {name: f"{banner.base}/{name}" for name in GATEWAYS}
        assert banner.variables == {
            "khipu": {
                "BILLING_KHIPU_RECEIVER_ID": "424242",
                "BILLING_KHIPU_SECRET": "a khipu secret & $HOME",
                "BILLING_KHIPU_URL": f"{banner.base}/khipu/api/2.0",
            },
            "openpay": {
                "BILLING_OPENPAY_MERCHANT_ID": "mfromtheenvironment1",
                "BILLING_OPENPAY_PRIVATE_KEY": "sk_from_the_environment_0123456789",
                "BILLING_OPENPAY_BASE_URL": f"{banner.base}/openpay",
            },
            "payvalida": {
                "BILLING_PAYVALIDA_MERCHANT": "cuatro",
                "BILLING_PAYVALIDA_FIXED_HASH": "fixed_hash_from_the_environment_0123456789",
                "BILLING_PAYVALIDA_URL": f"{banner.base}/payvalida",
            },
            "qvo": {
                "BILLING_QVO_API_TOKEN": "qvo-token-from-the-environment",
                "BILLING_QVO_BASE_URL": f"{banner.base}/qvo",
            },
        }
        # the banner is shell: pasted into one, it sets the variables as printed
        shell = subprocess.run(
            ["sh", "-c", f'{banner.text}\nprintf %s "$BILLING_KHIPU_SECRET"'],
            capture_output=True,
            text=True,
            timeout=10,
        )
        assert shell.stdout == "a khipu secret & $HOME", shell.stderr
        # the fakes accept what the banner says, and only that
        openpay = f"{banner.base}/openpay/v1/mfromtheenvironment1"
        key = "sk_from_the_environment_0123456789"
        assert httpx.get(openpay, auth=(key, ""), timeout=10).status_code == 200
        assert httpx.get(openpay, auth=("sk_wrong", ""), timeout=10).status_code == 401
        qvo = f"{banner.base}/qvo/transactions"
        bearer = {"Authorization": "Bearer qvo-token-from-the-environment"}
        assert httpx.get(qvo, headers=bearer, timeout=10).status_code == 200
        # the variables configure every adapter (the worker discovers them the same way)
        gateways = discover_gateways(banner.environment)
        try:
            assert sorted(gateway.name for gateway in gateways) == sorted(GATEWAYS)
        finally:
            for gateway in gateways:
                gateway.close()
        server.send_signal(signal.SIGINT)  # Ctrl-C: uvicorn stops gracefully, then exits 130
        assert server.wait(timeout=20) == 128 + signal.SIGINT
    served = log.read_text()
    assert "Traceback" not in served
    # one access line per request: method, path, status, milliseconds
    assert re.search(r"^\d\d:\d\d:\d\d GET /qvo/_fake/faults 200 \d+\.\d ms$", served, re.M)
    assert re.search(r"GET /openpay/v1/mfromtheenvironment1 401 \d+\.\d ms$", served, re.M)
    assert len(re.findall(r" ms$", served, re.M)) == 4, served  # the four requests above


def test_fake_gateways_serve_one_gateway_shows_only_its_own(tmp_path):
    with fake_gateways(tmp_path / "serve.err", "--gateway", "payvalida") as (banner, _):
        assert list(banner.variables) == ["payvalida"]
        assert banner.variables["payvalida"]["BILLING_PAYVALIDA_MERCHANT"] == "kuanto"
        assert httpx.get(f"{banner.base}/qvo/_fake/faults", timeout=10).status_code == 404


def _refused(*args: str) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [sys.executable, "-m", "billing", "fake-gateways", "serve", *args],
        env=_clean_environment({}),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2, result.stderr
    assert result.stdout == ""  # no banner
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    return result


def test_fake_gateways_serve_refuses_a_port_out_of_range_in_one_line():
    result = _refused("--port", "70000")
    assert result.stderr.startswith("error: --port: must be between 0 and 65535 (got 70000)")


def test_fake_gateways_serve_refuses_a_port_in_use_in_one_line():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = _refused("--port", str(port))
    assert f"--port: 127.0.0.1:{port} is already in use" in result.stderr
