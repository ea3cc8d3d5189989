"""Checking a scenario's ``expect`` section against its report.

An expectation names only what it cares about: a mapping's keys are a subset of the report's, a
list must have exactly as many items as the report's (each item checked the same way), and values
compare as what they mean: ``"15000"`` equals ``15000`` and ``"15000.0"``, and two instants are
equal when they are the same instant whatever their offsets.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from decimal import Decimal, InvalidOperation


def mismatches(report: Mapping[str, object], expect: Mapping[str, object]) -> list[str]:
    """Every place where ``report`` differs from ``expect``, as ``path: expected X, got Y``."""
    found: list[str] = []
    _walk("", expect, report, found)
    return found


def _walk(path: str, expected: object, actual: object, found: list[str]) -> None:
    if isinstance(expected, Mapping):
        if not isinstance(actual, Mapping):
            found.append(f"{path or 'report'}: expected a mapping, got {actual!r}")
            return
        for key, value in expected.items():
            where = f"{path}.{key}" if path else str(key)
            if key not in actual:
                found.append(f"{where}: expected {value!r}, but the report has no such field")
            else:
                _walk(where, value, actual[key], found)
    elif isinstance(expected, list):
        if not isinstance(actual, list) or len(actual) != len(expected):
            count = len(actual) if isinstance(actual, list) else "no list"
            found.append(f"{path}: expected {len(expected)} items, got {count}")
            return
        for index, (want, got) in enumerate(zip(expected, actual, strict=True)):
            _walk(f"{path}[{index}]", want, got, found)
    elif not _same(expected, actual):
        found.append(f"{path}: expected {expected!r}, got {actual!r}")


def _same(expected: object, actual: object) -> bool:
    if expected == actual:
        return True
    if isinstance(expected, bool) or isinstance(actual, bool) or expected is None or actual is None:
        return False
    first, second = _instant(expected), _instant(actual)
    if first is not None and second is not None:
        return first == second
    try:
        return Decimal(str(expected)) == Decimal(str(actual))
    except InvalidOperation:
        return False


def _instant(value: object) -> datetime | None:
    if not isinstance(value, str) or "T" not in value:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else None
