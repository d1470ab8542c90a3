"""Reading untyped Kubernetes dicts without trusting their shape.

Objects come from users' YAML, so any field may be missing or of the wrong
type. These accessors answer "absent" for a wrong type instead of raising,
so translate can report the problem as a condition and move on.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import Any

_EMPTY: Mapping[str, Any] = MappingProxyType({})


# The types objects actually hold once frozen (sources/objects.freeze), tested
# first: an isinstance check against an ABC costs ten times more, and a
# 10k-Service translation makes over a million of these checks.
_MAPPINGS = (MappingProxyType, dict)
_LISTS = (tuple, list)


def mapping(value: object) -> Mapping[str, Any]:
    if type(value) in _MAPPINGS:
        return value  # type: ignore[return-value]
    return value if isinstance(value, Mapping) else _EMPTY


def items(value: object) -> Sequence[object]:
    """A list's elements; () for anything else (a string is not a list here)."""
    if type(value) in _LISTS:
        return value  # type: ignore[return-value]
    if isinstance(value, Sequence) and not isinstance(value, str | bytes):
        return value
    return ()


def text(value: object) -> str | None:
    return value if isinstance(value, str) else None


def integer(value: object) -> int | None:
    # bool is an int subclass, but `port: true` is a mistake, not port 1.
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def port_number(value: object) -> int | None:
    number = integer(value)
    return number if number is not None and 0 < number < 65536 else None
