"""The public API is small, explicit and sorted; the README's example runs as written."""

from __future__ import annotations

import contextlib
import io
import re
import types
from pathlib import Path

import billing

ROOT = Path(__file__).resolve().parents[2]


def test_all_is_sorted_and_lists_exactly_the_public_names():
    public = {
        name
        for name, value in vars(billing).items()
        if not name.startswith("_") and not isinstance(value, types.ModuleType)
    }
    assert billing.__all__ == sorted(billing.__all__, key=lambda n: (not n[0].isupper(), n))
    assert set(billing.__all__) - {"__version__"} == public


def test_every_error_derives_from_the_one_root():
    errors = [
        getattr(billing, name) for name in billing.__all__ if name.endswith(("Error", "Mismatch"))
    ]
    errors += [billing.FloatNotAllowed, billing.IllegalTransition, billing.InvalidArgument]
    assert all(issubclass(error, billing.BillingError) for error in errors)


def test_the_readme_example_prints_what_it_says_and_bills_a_renewal_in_memory():
    readme = (ROOT / "README.md").read_text()
    [example] = re.findall(r"```python\n(.*?)```", readme, flags=re.S)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(example, "README.md", "exec"), {})
    assert out.getvalue().strip().splitlines() == ["active 11900 CLP", "['paid', 'paid']"]
