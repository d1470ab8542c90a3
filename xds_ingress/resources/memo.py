"""A per-build memo: reuse what the last build made, forget what it did not use."""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class Memo(Generic[K, V]):
    """Values of `build(key)`, kept until a build finishes without using them.

    Bounded without a size to tune: after `rotate()` the memo holds exactly
    what the build just finished used, so a deleted Ingress costs memory for
    one build at most.
    """

    def __init__(self) -> None:
        self._previous: dict[_Hashed[K], V] = {}
        self._current: dict[_Hashed[K], V] = {}

    def get(self, key: K, build: Callable[[K], V]) -> V:
        hashed = _Hashed(key)
        found = self._current.get(hashed)
        if found is None:
            found = self._previous.get(hashed)
            if found is None:
                found = build(key)
            self._current[hashed] = found
        return found

    def rotate(self) -> None:
        """End a build: keep what it used, drop the rest."""
        self._previous = self._current
        self._current = {}

    def __len__(self) -> int:
        return len(self._previous.keys() | self._current.keys())


class _Hashed(Generic[K]):
    """A key with its hash computed once.

    IR dataclasses hash their whole tree on every call (a frozen slotted
    dataclass cannot cache it), and a memo lookup touches up to three dicts.
    """

    __slots__ = ("_hash", "value")

    def __init__(self, value: K) -> None:
        self.value = value
        self._hash = hash(value)

    def __hash__(self) -> int:
        return self._hash

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, _Hashed)
            and self._hash == other._hash
            and (self.value is other.value or bool(self.value == other.value))
        )
