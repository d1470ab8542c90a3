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

from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from xds_ingress import ir
from xds_ingress.sources.objects import KubeObject
from xds_ingress.translate.annotations import IngressOptions
from xds_ingress.translate.backends import Resolution, ResolvedBackends
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

    def entry(self, key: K) -> tuple[I, T] | None:
        """`key`'s inputs and value, if remembered (for `restore`)."""
        entry = self._current.get(key)
        return entry if entry is not None else self._previous.get(key)

    def restore(self, key: K, entry: tuple[I, T]) -> None:
        """Remember `entry` again, unless something newer for `key` is remembered."""
        if key not in self._current and key not in self._previous:
            self._previous[key] = entry

    def rotate(self) -> None:
        """End a translation: keep what it used, drop the rest."""
        self._previous = self._current
        self._current = {}


@dataclass(frozen=True, slots=True)
class HostPart:
    """What the Ingresses that name one host translate to on it.

    Made from `readings` (each Ingress's, in Ingress order) and the
    Backends their rules resolved to, which hold while the store's
    `generations` of what resolving reads stand still.
    """

    readings: tuple[IngressReading, ...]
    generations: tuple[object, ...] | None
    virtual_host: ir.VirtualHost | None  # None: every rule for it lost
    backends: Mapping[str, ir.Backend]
    # Conflicts and unresolved backends found on this host (None: none).
    findings: Findings | None
    # The other memos' entries it was made from. A part reused leaves them
    # out of those memos (nothing looks them up); a part made again puts
    # them back first, so that a change to what resolving reads (a
    # Service, a slice) still finds unchanged routes and Backends by
    # identity instead of resolving and building them anew.
    route_entries: tuple[tuple[int, tuple[RouteInputs, ir.Route]], ...]
    virtual_host_entry: tuple[VirtualHostInputs, ir.VirtualHost] | None
    resolutions: tuple[Resolution, ...]


class HostMemo:
    """Each host's part of the Ingress translation, reused while its Ingresses are unchanged.

    Contests between Ingresses, route order and the virtual host never
    look past one host, so a change to one Ingress leaves every other
    host's part as it was: at 3000 Ingresses, working them all out again
    was most of the translation after a one-Ingress change.
    """

    def __init__(self) -> None:
        self._previous: dict[str, HostPart] = {}
        self._current: dict[str, HostPart] = {}

    def find(
        self,
        host: str,
        readings: Sequence[IngressReading],
        generations: tuple[object, ...] | None,
    ) -> HostPart | None:
        """The part made for `host` last time from these very readings, in the same generations."""
        if generations is None:
            return None
        part = self._previous.get(host)
        if part is None or part.generations != generations:
            return None
        if len(part.readings) != len(readings):
            return None
        for kept, reading in zip(part.readings, readings, strict=True):
            if kept is not reading:
                return None
        return part

    def previous(self, host: str) -> HostPart | None:
        """The part made for `host` last time, whatever it was made from."""
        return self._previous.get(host)

    def keep(self, host: str, part: HostPart) -> None:
        self._current[host] = part

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
        # By host: everything the Ingresses naming it translate to there.
        self.hosts = HostMemo()

    def rotate(self) -> None:
        """End a translation: each memo keeps what it used and drops the rest."""
        for memo in (
            self.ingresses,
            self.backends,
            self.routes,
            self.virtual_hosts,
            self.hosts,
        ):
            memo.rotate()
