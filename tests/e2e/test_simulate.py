"""``billing simulate``: a small simulation run twice as real processes, and bad options.

The two runs go at once (one with flags in a process of its own, split in two parts each
simulated in a process of its own; one from a YAML file with --json in the test's process, in
one part), on their own report folders: both must exit 0 with a balanced audit and write
byte-identical charts and pages, since they have the same seed.
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
from contextlib import closing
from pathlib import Path

import pytest
from typer.testing import CliRunner

from billing.cli import app
from billing.reports.files import CHARTS
from billing.simulate import PartFailed, SimulationConfig, simulate

SETTINGS = {
    "subscriptions": "40",
    "months": "2",
    "seed": "7",
    "decline-rate": "0.3",
    "churn-rate": "0.1",
    "upgrade-rate": "0.1",
    "downgrade-rate": "0.1",
}


def _start(*args: str) -> subprocess.Popen[str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("BILLING_")}
    return subprocess.Popen(
        [sys.executable, "-m", "billing", "simulate", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**env, "COLUMNS": "100"},
    )


def test_the_same_seed_writes_the_same_report_twice(tmp_path: Path) -> None:
    flags = [item for key, value in SETTINGS.items() for item in (f"--{key}", value)]
    config = tmp_path / "simulation.yaml"
    lines = [f"{key.replace('-', '_')}: {value}" for key, value in SETTINGS.items()]
    config.write_text("\n".join([*lines[:2], "seed: 99", *lines[3:]]) + "\n")
    tables = _start(*flags, "--jobs", "2", "--report-dir", str(tmp_path / "tables"))
    try:  # the second run, in this process, while the first one runs
        as_json = CliRunner().invoke(
            app,
            [
                "simulate",
                *("--config", str(config), "--seed", "7", "--json", "--jobs", "1"),
                *("--report-dir", str(tmp_path / "json")),
            ],
        )
    finally:
        out, err = tables.communicate(timeout=120)
    assert tables.returncode == 0, err
    assert as_json.exit_code == 0, as_json.output
    json_out, json_err = as_json.stdout, as_json.stderr

    for name in ["index.html", *(f"{chart}.png" for chart in CHARTS)]:
        one = (tmp_path / "tables" / name).read_bytes()
        two = (tmp_path / "json" / name).read_bytes()
        assert one == two, f"{name} differs between two runs with seed 7"
    assert sorted(path.name for path in (tmp_path / "tables").glob("*.db")) == [
        "simulation-1.db",
        "simulation-2.db",
    ]

    assert "Audit: balanced" in out
    assert "Subscriptions by month" in out
    assert "renewals billed" in out  # the run's figures, after the report
    assert "billing" in err  # the progress bar, on standard error

    document = json.loads(json_out)  # nothing else on standard output: no progress, no tables
    assert json_err == ""
    report = document["report"]
    assert report["parameters"]["seed"] == "7"  # the flag overrode the file's 99
    assert report["audit"]["balanced"] is True
    assert [month["month"] for month in report["months"]] == ["2026-01", "2026-02"]
    assert sum(month["new"] for month in report["months"]) == 40
    assert report["dunning"]["entered"] > 0  # a card in three starts declining each month
    assert document["run"]["renewals"] > 0
    assert document["run"]["failed"] == 0
    assert document["database_urls"] == [
        f"sqlite:///{(tmp_path / 'json' / 'simulation.db').resolve()}"
    ]
    page = (tmp_path / "json" / "index.html").read_text()
    assert "Simulation: 40 subscriptions, 2 months, seed 7" in page
    # the file the run made was written as scratch: the journal in memory, never WAL
    assert _journal_mode(tmp_path / "json" / "simulation.db") == "delete"


def _journal_mode(path: Path) -> str:
    """The journal mode a SQLite file keeps (WAL is recorded in the file; memory is not)."""
    with closing(sqlite3.connect(path)) as connection:
        return str(connection.execute("PRAGMA journal_mode").fetchone()[0])


def test_a_bad_flag_is_one_line_and_exit_2_in_a_real_process(tmp_path: Path) -> None:
    process = _start("--decline-rate", "1.5", "--report-dir", str(tmp_path))
    out, err = process.communicate(timeout=60)
    assert process.returncode == 2
    assert err.strip().splitlines() == [
        "error: --decline-rate: must be a number between 0 and 1 (got '1.5')"
    ]
    assert out == ""


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--months", "0"], "--months: must be between 1 and 120 (got 0)"),
        (["--subscriptions", "many"], "--subscriptions: must be a whole number (got 'many')"),
        (["--plans", "cl_basico=3,gold=1"], "--plans: unknown plan 'gold'"),
        (["--plans", "cl_basico"], "--plans: must look like code=weight"),
        (["--plans", "cl_basico=0"], "--plans: must give at least one plan a weight above 0"),
        (
            ["--churn-rate", "0.6", "--upgrade-rate", "0.5"],
            "--churn-rate, --upgrade-rate, --downgrade-rate: must add up to at most 1",
        ),
        (["--bogus", "3"], "--bogus: no such option"),
        (["--jobs", "0"], "--jobs: must be between 1 and 64 (got 0)"),
        (["--jobs", "2", "--database-url", "sqlite://"], "--jobs: must be 1 with --database-url"),
    ],
)
def test_bad_options_are_one_line_and_exit_2(tmp_path: Path, args: list[str], message: str) -> None:
    result = CliRunner().invoke(app, ["simulate", *args, "--report-dir", str(tmp_path)])
    assert result.exit_code == 2, result.output
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("error: ")
    assert message in line
    assert not (tmp_path / "index.html").exists()


def test_a_bad_configuration_file_is_one_line_and_exit_2(tmp_path: Path) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text("months: 2\nchurn: 0.1\n")
    result = CliRunner().invoke(app, ["simulate", "--config", str(config)])
    assert result.exit_code == 2
    assert result.stderr.strip() == f"error: {config}: churn: unknown setting " + (
        "(known: churn_rate, decline_rate, downgrade_rate, months, plans, seed, subscriptions, "
        "upgrade_rate)"
    )
    missing = CliRunner().invoke(app, ["simulate", "--config", str(tmp_path / "none.yaml")])
    assert missing.exit_code == 2
    assert "none.yaml: No such file or directory" in missing.stderr


def test_a_database_that_holds_customers_is_refused_even_by_a_part(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'used.db'}"
    args = ["simulate", "--subscriptions", "2", "--months", "1", "--database-url", url]
    first = CliRunner().invoke(app, [*args, "--json", "--report-dir", str(tmp_path / "a")])
    assert first.exit_code == 0, first.output
    assert _journal_mode(tmp_path / "used.db") == "wal"  # a database given is written durably
    again = CliRunner().invoke(app, [*args, "--report-dir", str(tmp_path / "b")])
    assert again.exit_code == 3
    assert again.stderr.strip() == (
        "error: --database-url: must be an empty database (it holds 2 customers)"
    )

    # a simulation in parts: the part given that database fails in its process, and says so
    fresh = f"sqlite:///{tmp_path / 'fresh.db'}"
    with pytest.raises(PartFailed) as failed:
        simulate(SimulationConfig(subscriptions=4, months=1), database_url=[fresh, url])
    assert str(failed.value) == "--database-url: must be an empty database (it holds 2 customers)"
    assert failed.value.exit_code == 3


def _parts(pid: int) -> list[int]:
    """The processes simulating parts for the ``billing simulate`` process ``pid``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            command = (entry / "cmdline").read_bytes()
        except OSError:  # it ended meanwhile
            continue
        parent = int(stat.rsplit(")", 1)[1].split()[1])
        if parent == pid and b"spawn_main" in command:
            found.append(int(entry.name))
    return found


def _started(run: subprocess.Popen[str], folder: Path) -> list[int]:
    """Wait until both parts of ``run`` write their databases; their process ids."""
    while True:
        assert run.poll() is None, run.communicate()
        parts = _parts(run.pid)
        files = [folder / f"simulation-{number}.db" for number in (1, 2)]
        if len(parts) == 2 and all(path.exists() for path in files):
            return parts
        time.sleep(0.05)


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


@pytest.mark.parametrize(
    ("stop", "exit_code", "message"),
    [
        pytest.param(
            "kill_a_part",
            4,
            r"error: a part of the simulation \(process billing-simulate-[12]\) ended with exit "
            r"code -9 before it was done; the others were stopped \(an error it printed is "
            r"above\)",
            id="a-part-killed",
        ),
        pytest.param("interrupt", 130, "", id="ctrl-c"),  # as typer ends any command on Ctrl-C
    ],
)
def test_a_part_killed_or_an_interrupt_stops_every_part(
    tmp_path: Path, stop: str, exit_code: int, message: str
) -> None:
    folder = tmp_path / "report"
    run = _start("--subscriptions", "3000", "--jobs", "2", "--json", "--report-dir", str(folder))
    parts: list[int] = []
    try:
        parts = _started(run, folder)
        if stop == "kill_a_part":
            os.kill(parts[0], signal.SIGKILL)
        else:
            run.send_signal(signal.SIGINT)  # what Ctrl-C sends the foreground process
        out, err = run.communicate(timeout=60)
        stopped = [_gone(pid) for pid in parts]
    finally:  # whatever happened, leave nothing running
        for pid in [run.pid, *parts]:
            if not _gone(pid):
                os.kill(pid, signal.SIGKILL)
        run.wait()
    assert run.returncode == exit_code, err
    assert re.fullmatch(message, err.strip()), err  # one line, no traceback
    assert out == ""
    assert all(stopped)
