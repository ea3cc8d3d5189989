"""The ``billing`` command, run as a real process."""

from __future__ import annotations

import subprocess
import sys


def billing(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "billing", *args], capture_output=True, text=True, timeout=60
    )


def test_help_shows_the_usage():
    result = billing("--help")
    assert result.returncode == 0
    assert "Usage" in result.stdout


def test_version_prints_the_package_version():
    from billing import __version__

    result = billing("--version")
    assert result.stdout.strip() == f"billing {__version__}"
