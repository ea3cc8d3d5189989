"""Domain values to JSON and back, for idempotent replays of an operation's first result.

Works on the frozen dataclasses of :mod:`billing.domain` through their type hints; a decoded value
goes through its class's validation again.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from enum import Enum
from functools import cache
from typing import Any, TypeVar, cast
from zoneinfo import ZoneInfo

from billing.domain import _checks
from billing.domain.money import Currency, Money

T = TypeVar("T")


def encode(value: object) -> Any:
    """A JSON-ready form of a domain value."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, Money):
        return {"minor": value.minor, "currency": value.currency.code}
    if isinstance(value, Currency | ZoneInfo):
        return str(value)
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat() if value.tzinfo else value.isoformat()
    if isinstance(value, timedelta):
        return value // timedelta(microseconds=1)
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, Enum):
        return value.value
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        # a field the constructor does not take is worked out from the others (a memo)
        return {f.name: encode(getattr(value, f.name)) for f in dataclasses.fields(value) if f.init}
    if isinstance(value, Mapping):
        return {str(k): encode(v) for k, v in value.items()}
    if isinstance(value, tuple | list):
        return [encode(item) for item in value]
    raise TypeError(f"cannot encode {type(value).__name__}")


def decode(kind: type[T], data: Any) -> T:
    """The domain value of type ``kind`` that :func:`encode` turned into ``data``."""
    return cast(T, _decode(kind, data))


@cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _decode(kind: Any, data: Any) -> Any:
    origin = typing.get_origin(kind)
    if origin in (typing.Union, types.UnionType):
        options = [arg for arg in typing.get_args(kind) if arg is not type(None)]
        if data is None:
            return None
        assert len(options) == 1, f"ambiguous union {kind}"
        return _decode(options[0], data)
    if origin is tuple:
        item = typing.get_args(kind)[0]
        return tuple(_decode(item, element) for element in data)
    if origin in (Mapping, dict) or kind is Mapping:
        return types.MappingProxyType(dict(data))
    if kind is Money:
        return Money(data["minor"], Currency.of(data["currency"]))
    if kind is Currency:
        return Currency.of(data)
    if kind is ZoneInfo:
        return _checks.timezone(data)
    if kind is datetime:
        return datetime.fromisoformat(data)
    if kind is timedelta:
        return timedelta(microseconds=data)
    if kind is Decimal:
        return Decimal(data)
    if isinstance(kind, type) and issubclass(kind, Enum):
        return kind(data)
    if dataclasses.is_dataclass(kind):
        hints = _hints(kind)  # type: ignore[arg-type]
        values = {
            f.name: _decode(hints[f.name], data[f.name])
            for f in dataclasses.fields(kind)
            if f.init and f.name in data
        }
        return cast(Any, kind)(**values)
    if kind in (int, str, bool):
        return data
    raise TypeError(f"cannot decode {kind}")
