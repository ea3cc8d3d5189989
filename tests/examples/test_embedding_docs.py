"""``docs/embedding.md`` quotes the examples: each snippet marked ``<!-- excerpt: PATH -->`` must
still be in that file, line for line (indentation and blank lines aside; a ``...`` line stands
for lines left out)."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PAGE = ROOT / "docs" / "embedding.md"
EXCERPT = re.compile(r"<!-- excerpt: (\S+) -->\n```python\n(.*?)```", re.DOTALL)


def lines(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if line.strip()]


def missing_parts(snippet: str, source: str) -> list[str]:
    """The parts of ``snippet`` (between ``...`` lines) not found in ``source``, in order."""
    have = lines(source)
    start = 0
    missing = []
    for part in re.split(r"^\.\.\.$", snippet, flags=re.MULTILINE):
        wanted = lines(part)
        found = next(
            (i for i in range(start, len(have)) if have[i : i + len(wanted)] == wanted), None
        )
        if found is None:
            missing.append(part)
        else:
            start = found + len(wanted)
    return missing


def test_every_snippet_of_the_embedding_page_is_the_examples_code():
    excerpts = EXCERPT.findall(PAGE.read_text(encoding="utf-8"))
    assert len(excerpts) >= 8
    for path, snippet in excerpts:
        source = (ROOT / path).read_text(encoding="utf-8")
        assert missing_parts(snippet, source) == [], path


def test_a_changed_line_is_caught():
    source = "def f():\n    a = 1\n    b = 2\n    return a + b\n"
    assert missing_parts("a = 1\n...\nreturn a + b\n", source) == []
    assert missing_parts("a = 1\nreturn a + b\n", source) != []  # not consecutive
    assert missing_parts("return a + b\n...\na = 1\n", source) != []  # out of order
