"""Argument checks shared by the domain's constructors: each raises a typed, field-naming error."""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import TypeVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from billing.domain.errors import InvalidArgument, NaiveDatetime, UnknownTimezone


def aware(field: str, value: object) -> datetime:
    """``value`` as a UTC instant if it is timezone-aware; a naive datetime is refused.

    The domain keeps every instant in UTC: Python compares and subtracts two datetimes that share
    a tzinfo by their wall-clock values, which is wrong across a DST change.
    """
    if not isinstance(value, datetime):
        raise InvalidArgument(field, "must be a timezone-aware datetime", value)
    if value.tzinfo is None or value.utcoffset() is None:
        raise NaiveDatetime(field, value)
    return value.astimezone(UTC)


def optional_aware(field: str, value: object) -> datetime | None:
    return None if value is None else aware(field, value)


def timezone(value: object, field: str = "timezone") -> ZoneInfo:
    """The IANA timezone named by ``value`` (a ``ZoneInfo`` passes through)."""
    if isinstance(value, ZoneInfo):
        return value
    if not isinstance(value, str) or not value or value.startswith(("/", ".")):
        raise UnknownTimezone(value, field)
    try:
        return ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise UnknownTimezone(value, field) from None


def integer(field: str, value: object, *, minimum: int) -> int:
    """``value`` if it is an int (not a bool) of at least ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidArgument(field, f"must be an integer >= {minimum}", value)
    if value < minimum:
        raise InvalidArgument(field, f"must be an integer >= {minimum}", value)
    return value


E = TypeVar("E", bound=StrEnum)


def member(kind: type[E], value: object, field: str) -> E:
    """The member of ``kind`` whose value is ``value``; the error lists the allowed values."""
    if isinstance(value, str):
        try:
            return kind(value)
        except ValueError:
            pass
    allowed = ", ".join(item.value for item in kind)
    raise InvalidArgument(field, f"must be one of {allowed}", value)


ID_LENGTH = 64
"""The longest id or code the engine stores (customers, plans, subscriptions...)."""
NAME_LENGTH = 255
"""The longest name or label the engine stores."""


def text(field: str, value: object, *, max_length: int | None = None) -> str:
    """``value`` if it is a non-blank string of at most ``max_length`` characters."""
    if not isinstance(value, str) or not value.strip():
        raise InvalidArgument(field, "must be a non-empty string", value)
    if max_length is not None and len(value) > max_length:
        raise InvalidArgument(field, f"must be at most {max_length} characters", value)
    return value


def identifier(field: str, value: object) -> str:
    """``value`` if it can be an id or a code: a non-blank string of at most 64 characters."""
    return text(field, value, max_length=ID_LENGTH)


def flag(field: str, value: object) -> bool:
    """``value`` if it is ``True`` or ``False``."""
    if not isinstance(value, bool):
        raise InvalidArgument(field, "must be true or false", value)
    return value
