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

import bisect
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from xds_ingress import ir
from xds_ingress.sources.objects import KubeObject, ObjectKey
from xds_ingress.store import StoreView
from xds_ingress.translate.annotations import IngressOptions
from xds_ingress.translate.backends import Resolution, ResolvedBackends
from xds_ingress.translate.classes import ClassPolicy
from xds_ingress.translate.findings import Findings
from xds_ingress.translate.precedence import host_order
from xds_ingress.translate.rules import Candidate, ServiceRef
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
class _Claim:
    obj: KubeObject
    claimed: bool
    # Read only when claimed: an Ingress of another controller is not ours to judge.
    reading: IngressReading | None
    findings: Findings | None


class IngressMemo:
    """Which Ingresses are ours, and what each of ours says, kept per object.

    One lookup by identity per Ingress: at 3000 Ingresses, asking the class
    policy about each one again (a walk into its spec and annotations) cost
    more than reading the changed one. The claim holds while the policy is
    equal (an IngressClass change asks again); the reading holds for as
    long as the object does, whatever the policy.
    """

    def __init__(self) -> None:
        self._previous: dict[int, _Claim] = {}
        self._current: dict[int, _Claim] = {}
        self._policy: ClassPolicy | None = None
        # This translation's new entries, and the previous ones they replace.
        self._made: list[_Claim] = []
        self._replaced: list[_Claim] = []

    def readings(
        self,
        ingresses: Iterable[KubeObject],
        *,
        policy: ClassPolicy,
        read: Callable[[KubeObject, Findings], IngressReading],
        findings: Findings,
    ) -> list[IngressReading]:
        """The readings of the Ingresses `policy` claims, in order; their findings to `findings`."""
        same_policy = policy == self._policy
        self._policy = policy
        previous, current = self._previous, self._current
        readings = []
        for ingress in ingresses:
            key = id(ingress)
            entry = current.get(key)
            if entry is None:
                entry = previous.get(key)
                if entry is None or entry.obj is not ingress:
                    if entry is not None:
                        self._replaced.append(entry)
                    entry = _claim(ingress, policy.claims(ingress), read)
                    self._made.append(entry)
                elif not same_policy and policy.claims(ingress) != entry.claimed:
                    self._replaced.append(entry)
                    entry = _claim(ingress, not entry.claimed, read)
                    self._made.append(entry)
                current[key] = entry
            if entry.reading is not None:
                readings.append(entry.reading)
                if entry.findings is not None:
                    findings.extend(entry.findings)
        return readings

    def changes(self) -> tuple[list[IngressReading], list[IngressReading]]:
        """The readings this translation has that the last did not, and those it no longer has."""
        gone = [self._previous[key] for key in self._previous.keys() - self._current.keys()]
        added = [entry.reading for entry in self._made if entry.reading is not None]
        dropped = [entry.reading for entry in (*self._replaced, *gone) if entry.reading is not None]
        return added, dropped

    def rotate(self) -> None:
        """End a translation: keep what it used, drop the rest."""
        self._previous = self._current
        self._current = {}
        self._made = []
        self._replaced = []

    def __len__(self) -> int:
        return len(self._previous.keys() | self._current.keys())


def _claim(
    ingress: KubeObject, claimed: bool, read: Callable[[KubeObject, Findings], IngressReading]
) -> _Claim:
    if not claimed:
        return _Claim(ingress, False, None, None)
    found = Findings()
    return _Claim(ingress, True, read(ingress, found), found if found else None)


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

    Made from `readings` (each Ingress's, in Ingress order) and what the
    ServiceRefs of its winning rules resolved to (`resolved`: None where
    the Service was missing), so it holds while both are the same.
    """

    readings: tuple[IngressReading, ...]
    resolved: tuple[tuple[ServiceRef, Resolution | None], ...]
    virtual_host: ir.VirtualHost | None  # None: every rule for it lost
    backends: Mapping[str, ir.Backend]
    # Conflicts and unresolved backends found on this host (None: none).
    findings: Findings | None
    # The route and virtual host memo entries it was made from. A part
    # reused leaves them out of those memos (nothing looks them up); a
    # part made again puts them back first, so that unchanged routes are
    # still found by identity instead of made anew.
    route_entries: tuple[tuple[int, tuple[RouteInputs, ir.Route]], ...]
    virtual_host_entry: tuple[VirtualHostInputs, ir.VirtualHost] | None

    def holds(self, view: StoreView) -> bool:
        """True while every Backend it forwards to would resolve as before."""
        return all(
            resolution is not None and resolution.holds_in(view) for _, resolution in self.resolved
        )


class HostMemo:
    """Each host's part of the Ingress translation, reused while its Ingresses are unchanged.

    Contests between Ingresses, route order and the virtual host never
    look past one host, so a change to one Ingress leaves every other
    host's part as it was: at 3000 Ingresses, working them all out again
    was most of the translation after a one-Ingress change. Which readings
    name each host, the parts and the virtual hosts in host order are kept
    from one translation to the next and updated in place: a translation
    after a change to Ingresses visits only the hosts those name. One after
    something resolving reads was replaced (a Service, a slice, a Secret)
    visits every host, and checks each part against the store.
    """

    def __init__(self) -> None:
        # host -> its part, and the store generations it was last found good in.
        self._parts: dict[str, tuple[HostPart, tuple[object, ...] | None]] = {}
        # host -> the readings naming it, in Ingress order.
        self._by_host: dict[str, list[IngressReading]] = {}
        # The hosts with a virtual host, in host order, and those virtual hosts.
        self._order: list[tuple[bool, str]] = []
        self._virtual_hosts: list[ir.VirtualHost] = []
        # The generations the last translation ran in, and whether everything
        # above is what it left (not after the first, or one that failed).
        self._generations: tuple[object, ...] | None = None
        self._complete = False
        self._translated = False
        # Visiting every host: the order is sorted once at the end, not kept.
        self._visiting_all = False

    def first_translation(self) -> bool:
        """True the first time it is asked: that translation works its hosts out in one go.

        Worked out host by host, each host costs more (at 10k Services,
        ~0.15 s of a cold start) and there is no part to reuse yet; parts
        are kept from the next translation on.
        """
        first = not self._translated
        self._translated = True
        return first

    def hosts_to_visit(
        self,
        readings: Sequence[IngressReading],
        *,
        added: Sequence[IngressReading],
        dropped: Sequence[IngressReading],
        generations: tuple[object, ...] | None,
    ) -> Iterable[str]:
        """Regroup the readings by host; the hosts whose parts may have changed.

        `readings`: every reading of this translation, in Ingress order;
        `added`, `dropped`: how they differ from the last translation's.
        """
        incremental = self._complete and generations is not None
        incremental = incremental and generations == self._generations
        self._complete = False
        self._generations = generations
        self._visiting_all = not incremental
        if incremental:
            return self._regroup(added, dropped)
        by_host: dict[str, list[IngressReading]] = {}
        for reading in readings:
            for candidate in reading.candidates:
                listed = by_host.get(candidate.host)
                if listed is None:
                    by_host[candidate.host] = [reading]
                elif listed[-1] is not reading:
                    listed.append(reading)
        gone = self._parts.keys() - by_host.keys()
        self._by_host = by_host
        return [*by_host, *gone]

    def _regroup(
        self, added: Sequence[IngressReading], dropped: Sequence[IngressReading]
    ) -> set[str]:
        changed: set[str] = set()
        by_host = self._by_host
        dropped_ids = {id(reading) for reading in dropped}
        for reading in dropped:
            for host in _hosts_named(reading):
                listed = by_host.get(host)
                if listed is not None:
                    by_host[host] = [each for each in listed if id(each) not in dropped_ids]
                    changed.add(host)
        for reading in added:
            for host in _hosts_named(reading):
                listed = by_host.setdefault(host, [])
                listed.append(reading)
                if len(listed) > 1:
                    listed.sort(key=ingress_key)
                changed.add(host)
        return changed

    def readings_of(self, host: str) -> list[IngressReading]:
        """The readings naming `host` (empty: none, the host is gone)."""
        return self._by_host.get(host) or []

    def find(
        self,
        host: str,
        readings: Sequence[IngressReading],
        *,
        view: StoreView,
        generations: tuple[object, ...] | None,
    ) -> HostPart | None:
        """The part made for `host` from these very readings, if it still holds in `view`."""
        found = self._parts.get(host)
        if found is None:
            return None
        part, good_in = found
        if len(part.readings) != len(readings):
            return None
        for kept, reading in zip(part.readings, readings, strict=True):
            if kept is not reading:
                return None
        if generations is None or generations != good_in:
            if not part.holds(view):
                return None
        return part

    def previous(self, host: str) -> HostPart | None:
        """The part made for `host` last time, whatever it was made from."""
        found = self._parts.get(host)
        return None if found is None else found[0]

    def keep(self, host: str, part: HostPart, generations: tuple[object, ...] | None) -> None:
        """Keep `part`, found good in `generations`."""
        self._parts[host] = (part, generations)
        self._place(host, part.virtual_host)

    def forget(self, host: str) -> None:
        """`host` is named by no Ingress any more."""
        self._parts.pop(host, None)
        self._by_host.pop(host, None)
        self._place(host, None)

    def _place(self, host: str, virtual_host: ir.VirtualHost | None) -> None:
        if self._visiting_all:
            return
        key = host_order(host)
        index = bisect.bisect_left(self._order, key)
        present = index < len(self._order) and self._order[index] == key
        if virtual_host is None:
            if present:
                del self._order[index]
                del self._virtual_hosts[index]
        elif present:
            self._virtual_hosts[index] = virtual_host
        else:
            self._order.insert(index, key)
            self._virtual_hosts.insert(index, virtual_host)

    def invalidate(self) -> None:
        """A translation failed: what is kept may not be what the last one left."""
        self._complete = False

    def finish(self) -> None:
        """The translation kept every host's part: the next may visit only what changes."""
        if self._visiting_all:
            placed = sorted(
                (host_order(host), part.virtual_host)
                for host, (part, _) in self._parts.items()
                if part.virtual_host is not None
            )
            self._order = [key for key, _ in placed]
            self._virtual_hosts = [vhost for _, vhost in placed]
            self._visiting_all = False
        self._complete = True

    def parts(self) -> Iterable[HostPart]:
        return (part for part, _ in self._parts.values())

    def virtual_hosts(self) -> tuple[ir.VirtualHost, ...]:
        """Every kept part's virtual host, in host order."""
        return tuple(self._virtual_hosts)

    def __len__(self) -> int:
        return len(self._parts)


def _hosts_named(reading: IngressReading) -> Iterable[str]:
    return dict.fromkeys(candidate.host for candidate in reading.candidates)


def ingress_key(reading: IngressReading) -> ObjectKey:
    """The key of the Ingress a reading with candidates comes from (all of them do)."""
    return reading.candidates[0].origin.key


# A route's inputs: the candidate, what its backend resolved to, its policy.
RouteInputs = tuple[Candidate, "ir.Backend | Invalid", ir.RoutePolicy]
# A virtual host's inputs: its host and its routes in order.
VirtualHostInputs = tuple[str, tuple[ir.Route, ...]]


class TranslationMemo:
    """Every memo one translator keeps between translations; pass the same one each time."""

    def __init__(self) -> None:
        self.ingresses = IngressMemo()
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
        ):
            memo.rotate()
