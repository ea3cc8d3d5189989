"""The wheel ships the migrations, so `billing migrate` works from an installed package."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

from billing.store.database import head_revision

ROOT = Path(__file__).resolve().parents[2]
PIP_WHEEL = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q"]


def test_the_wheel_holds_the_migrations_and_the_installed_package_finds_them(tmp_path):
    subprocess.run(
        [*PIP_WHEEL, "-w", str(tmp_path), str(ROOT)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    [wheel] = tmp_path.glob("billing-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "billing/migrations/env.py" in names
    assert any(name.startswith("billing/migrations/versions/0001") for name in names)
    assert "billing/py.typed" in names

    installed = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(installed)
    database = tmp_path / "installed.db"
    script = "\n".join(
        [
            "from billing.store.database import connect, current_revision, migrations_directory",
            "from billing.store.database import upgrade",
            "print(migrations_directory())",
            f"engine = connect('sqlite:///{database}')",
            "upgrade(engine)",
            "print(current_revision(engine))",
        ]
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(installed)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    directory, revision = result.stdout.split()
    assert Path(directory) == installed / "billing" / "migrations"
    assert revision == head_revision()
