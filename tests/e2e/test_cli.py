"""The ``billing`` command, run as a real process."""

from __future__ import annotations

import subprocess
import sys


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


def test_calendar_shows_month_ends_from_an_anchor_on_the_31st():
    result = billing("calendar", "--anchor", "2024-01-31T09:00:00-03:00", "--periods", "4")
    assert result.returncode == 0, result.stderr
    for start in ("2024-01-31T09:00", "2024-02-29T09:00", "2024-03-31T09:00", "2024-04-30T09:00"):
        assert start in result.stdout


def test_calendar_refuses_a_naive_anchor_with_a_clear_error():
    result = billing("calendar", "--anchor", "2026-01-31T12:00:00")
    assert result.returncode == 2
    assert "anchor" in result.stdout
    assert "timezone-aware" in result.stdout


def test_calendar_refuses_an_unknown_interval():
    result = billing("calendar", "--interval", "fortnight")
    assert result.returncode == 2
    assert "interval" in result.stdout
