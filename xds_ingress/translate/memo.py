"""What translation made of each object, kept for the next translation while the object is.

A change usually touches one object of thousands, and a stored object is
immutable: a change replaces it with a new one. So whatever translation
reads off one object alone (an Ingress's annotations, its rules, its
spec.tls), and the findings that reading made, holds for as long as the very
same object is in the store. At 3000 Ingresses, reading them all again was
most of the translation that followed a one-Ingress change.

Entries are keyed by identity, never by equality: equality would compare
whole bodies, and an equal object that is not the stored one cannot come
from the store anyway (the store keeps the object it has when an equal one
arrives). Like the resource memo, each translation keeps exactly what it
used (`rotate`), so a deleted object is forgotten one translation later.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Generic, TypeVar

from xds_ingress import ir
from xds_ingress.sources.objects import KubeObject
from xds_ingress.translate.annotations import IngressOptions
from xds_ingress.translate.backends import ResolvedBackends
from xds_ingress.translate.findings import Findings
from xds_ingress.translate.rules import Candidate
from xds_ingress.translate.tls_rules import TlsRequest
from xds_ingress.translate.validation import Invalid

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class IngressReading:
    """What one Ingress says on its own: one memo entry, one lookup per translation."""

    options: IngressOptions
    candidates: tuple[Candidate, ...]
    tls_requests: tuple[TlsRequest, ...]
    # Given unless some part of it is rejected, by this reading or later steps.
    accepted: ir.Condition


@dataclass(frozen=True, slots=True)
class _Entry(Generic[T]):
    # Held so that its id cannot be reused while the entry lives.
    obj: KubeObject
    value: T
    # None when reading it found nothing wrong (the usual case): three empty
    # sets per object per memo would cost ~20 MB at 10k Ingresses.
    findings: Findings | None


class ObjectMemo(Generic[T]):
    """Values of `read(obj, findings)` for objects whose values depend on nothing else."""

    def __init__(self) -> None:
        self._previous: dict[int, _Entry[T]] = {}
        self._current: dict[int, _Entry[T]] = {}

    def get(
        self, obj: KubeObject, read: Callable[[KubeObject, Findings], T], *, findings: Findings
    ) -> T:
        """`read(obj, ...)`, or what it returned for `obj` before; its findings go to `findings`."""
        key = id(obj)
        entry = self._current.get(key)
        if entry is None:
            entry = self._previous.get(key)
            if entry is None or entry.obj is not obj:
                found = Findings()
                value = read(obj, found)
                entry = _Entry(obj, value, found if found else None)
            self._current[key] = entry
        if entry.findings is not None:
            findings.extend(entry.findings)
        return entry.value

    def rotate(self) -> None:
        """End a translation: keep what it used, drop the rest."""
        self._previous = self._current
        self._current = {}

    def __len__(self) -> int:
        return len(self._previous.keys() | self._current.keys())


K = TypeVar("K", bound=Hashable)
I = TypeVar("I", bound=tuple[object, ...])  # noqa: E741 (the inputs)


class DerivedMemo(Generic[K, I, T]):
    """Values made from a few inputs, reused while the inputs are equal.

    The inputs are compared with `==` on a tuple, which takes identical
    elements as equal without looking into them: the usual case, since
    unchanged inputs come from the other memos as the very same objects.
    """

    def __init__(self) -> None:
        self._previous: dict[K, tuple[I, T]] = {}
        self._current: dict[K, tuple[I, T]] = {}

    def get(self, key: K, inputs: I, make: Callable[[I], T]) -> T:
        """What `make(inputs)` gave for `key` last time, if the inputs are the same."""
        entry = self._current.get(key)
        if entry is None:
            entry = self._previous.get(key)
        if entry is None or entry[0] != inputs:
            entry = (inputs, make(inputs))
        self._current[key] = entry
        return entry[1]

    def rotate(self) -> None:
        """End a translation: keep what it used, drop the rest."""
        self._previous = self._current
        self._current = {}


# A route's inputs: the candidate, what its backend resolved to, its policy.
RouteInputs = tuple[Candidate, "ir.Backend | Invalid", ir.RoutePolicy]
# A virtual host's inputs: its host and its routes in order.
VirtualHostInputs = tuple[str, tuple[ir.Route, ...]]


class TranslationMemo:
    """Every memo one translator keeps between translations; pass the same one each time."""

    def __init__(self) -> None:
        self.ingresses: ObjectMemo[IngressReading] = ObjectMemo()
        self.backends = ResolvedBackends()
        # By the id of the Candidate (held in the inputs): its route.
        self.routes: DerivedMemo[int, RouteInputs, ir.Route] = DerivedMemo()
        # By host: its virtual host, made from its routes in order.
        self.virtual_hosts: DerivedMemo[str, VirtualHostInputs, ir.VirtualHost] = DerivedMemo()

    def rotate(self) -> None:
        """End a translation: each memo keeps what it used and drops the rest."""
        for memo in (
            self.ingresses,
            self.backends,
            self.routes,
            self.virtual_hosts,
        ):
            memo.rotate()
