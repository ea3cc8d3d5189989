"""The documentation site builds with warnings as errors, and no page is left out of it.

`mkdocs build --strict` (as CI runs it) fails on a broken link or anchor, a page missing from the
nav, or a docstring the API reference cannot render; these tests make that a test failure too,
and check what a clean build alone would not: every page is in the nav, the API reference really
rendered the code's docstrings (with their reStructuredText roles turned into links), and the
home page's quickstart is the README's two commands.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"


def _nav_pages(entries: list[object]) -> list[str]:
    pages: list[str] = []
    for entry in entries:
        if isinstance(entry, str):
            pages.append(entry)
        elif isinstance(entry, dict):
            for value in entry.values():
                pages.extend(_nav_pages(value) if isinstance(value, list) else [value])
    return pages


def _readme_command(marker: str) -> str:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    found = re.search(rf"<!-- {marker} -->\n```sh\n(.*?)\n```", readme, re.DOTALL)
    assert found, f"README.md has no sh block after <!-- {marker} -->"
    return found[1]


def test_the_site_builds_strict_with_the_api_reference(tmp_path):
    site = tmp_path / "site"
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
        cwd=ROOT,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr

    engine = (site / "reference" / "engine" / "index.html").read_text(encoding="utf-8")
    assert 'id="billing.engine.Engine.subscribe"' in engine
    # A role in a docstring became a link to the object's own page:
    # `:func:`billing.open_engine`` in billing.engine's docstring.
    assert re.search(r'<a [^>]*href="\.\./billing/#billing\.bootstrap\.open_engine"', engine)
    for page in (site / "reference").rglob("*.html"):
        text = page.read_text(encoding="utf-8")
        assert not re.search(r":(class|meth|func|attr|data|mod|exc):<code>", text), page
        assert "<autoref" not in text, page
    assert (site / "examples" / "upgrade_mid_period.yaml").is_file()


def test_every_page_is_in_the_nav():
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text(encoding="utf-8"))
    in_nav = _nav_pages(config["nav"])
    assert len(in_nav) == len(set(in_nav)), "a page is in the nav twice"
    pages = {
        path.relative_to(DOCS).as_posix()
        for path in DOCS.rglob("*.md")
        if path.relative_to(DOCS).parts[0] != "examples"
    }
    assert sorted(pages - set(in_nav)) == [], "pages missing from mkdocs.yml's nav"
    assert sorted(set(in_nav) - pages) == [], "nav entries without a page"


def test_the_quickstart_is_the_readmes_two_commands():
    home = (DOCS / "index.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```sh\n(.*?)\n```", home, re.DOTALL)
    assert _readme_command("run-command") in blocks
    assert _readme_command("test-command") in blocks
