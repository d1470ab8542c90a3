"""A per-build memo: reuse what the last build made, forget what it did not use."""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")

# A memo entry by identity: the item, its hashed key, its value.
_Entry = tuple[K, "_Hashed[Hashable]", V]


class Memo(Generic[K, V]):
    """Values of `build(item)`, kept until a build finishes without using them.

    Bounded without a size to tune: after `rotate()` the memo holds exactly
    what the build just finished used, so a deleted Ingress costs memory for
    one build at most.

    An item is found by identity first: the translation hands unchanged IR
    over as the very same objects, and hashing and comparing thousands of
    them was most of a build after a one-Ingress change. An equal item that
    is a new object is found by `key(item)` (the item itself by default).
    """

    def __init__(self, *, key: Callable[[K], Hashable] | None = None) -> None:
        self._key = key
        self._previous: dict[_Hashed[Hashable], V] = {}
        self._current: dict[_Hashed[Hashable], V] = {}
        # By id(item): the item (held, so that its id is not reused while
        # the entry lives), its hashed key and its value.
        self._previous_ids: dict[int, _Entry[K, V]] = {}
        self._current_ids: dict[int, _Entry[K, V]] = {}

    def get(self, item: K, build: Callable[[K], V]) -> V:
        ident = id(item)
        entry = self._current_ids.get(ident)
        if entry is not None and entry[0] is item:
            return entry[2]
        entry = self._previous_ids.get(ident)
        if entry is None or entry[0] is not item:
            hashed = _Hashed(item if self._key is None else self._key(item))
            found = self._current.get(hashed)
            if found is None:
                found = self._previous.get(hashed)
                if found is None:
                    found = build(item)
            entry = (item, hashed, found)
        # Kept by key too: the next build may bring an equal new object.
        self._current[entry[1]] = entry[2]
        self._current_ids[ident] = entry
        return entry[2]

    def rotate(self) -> None:
        """End a build: keep what it used, drop the rest."""
        self._previous = self._current
        self._current = {}
        self._previous_ids = self._current_ids
        self._current_ids = {}

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
