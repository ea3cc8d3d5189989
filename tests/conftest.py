"""Test settings shared by every test.

Hypothesis profiles: ``ci`` (the default: enough examples to matter, within CI's time budget) and
``thorough`` (many more), chosen with ``pytest --hypothesis-profile thorough``.
"""

from __future__ import annotations

from hypothesis import HealthCheck, settings

settings.register_profile(
    "ci",
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    print_blob=True,
)
settings.register_profile(
    "thorough",
    max_examples=5000,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    print_blob=True,
)
settings.load_profile("ci")
