"""The current Kubernetes objects, indexed, and a "changed" signal.

Sources write through the ObjectSink methods (`apply`, `delete`,
`replace_all`); translate reads an immutable StoreView, so a rebuild sees one
consistent state and can never change the store. Updates that change
nothing (an object equal to the stored one) are dropped here, before they
cost a rebuild. Subscribers learn which kinds changed, so that an
EndpointSlice-only change can take the fast path that skips route rebuilding.
"""

from __future__ import annotations

import logging
import types
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

from xds_ingress.sources.objects import ENDPOINT_SLICE, INGRESS, KubeObject, ObjectKey

log = logging.getLogger(__name__)

SERVICE_NAME_LABEL = "kubernetes.io/service-name"

# (namespace, name) of the object an index entry points at.
NamespacedName = tuple[str, str]


@dataclass(frozen=True, slots=True)
class Change:
    """One batch of changes, as told to subscribers."""

    keys: frozenset[ObjectKey]

    @property
    def kinds(self) -> frozenset[str]:
        return frozenset(key.kind for key in self.keys)

    @property
    def endpoints_only(self) -> bool:
        """True when only EndpointSlices changed: routes need no rebuild."""
        return self.kinds == {ENDPOINT_SLICE}


Subscriber = Callable[[Change], None]


class StoreView:
    """A read-only snapshot of the store, taken at one moment."""

    __slots__ = ("_by_key", "_by_kind", "_secret_users", "_slices")

    def __init__(
        self,
        *,
        objects: Iterable[KubeObject],
        slices: Mapping[NamespacedName, Iterable[ObjectKey]],
        secret_users: Mapping[NamespacedName, Iterable[ObjectKey]],
    ) -> None:
        by_key = {obj.key: obj for obj in objects}
        by_kind: dict[str, list[KubeObject]] = defaultdict(list)
        for key in sorted(by_key):
            by_kind[key.kind].append(by_key[key])
        self._by_key: Mapping[ObjectKey, KubeObject] = types.MappingProxyType(by_key)
        self._by_kind = types.MappingProxyType({k: tuple(v) for k, v in by_kind.items()})
        self._slices = types.MappingProxyType(
            {
                service: tuple(by_key[key] for key in sorted(keys))
                for service, keys in slices.items()
            }
        )
        self._secret_users = types.MappingProxyType(
            {secret: tuple(sorted(keys)) for secret, keys in secret_users.items()}
        )

    def __len__(self) -> int:
        return len(self._by_key)

    def get(self, kind: str, namespace: str, name: str) -> KubeObject | None:
        return self._by_key.get(ObjectKey(kind, namespace, name))

    def objects(self, kind: str) -> tuple[KubeObject, ...]:
        """Every object of `kind`, sorted by namespace and name."""
        return self._by_kind.get(kind, ())

    def endpoint_slices(self, namespace: str, service: str) -> tuple[KubeObject, ...]:
        """The EndpointSlices labelled for Service `namespace/service`, sorted by name."""
        return self._slices.get((namespace, service), ())

    def secret_users(self, namespace: str, secret: str) -> tuple[ObjectKey, ...]:
        """The objects that name Secret `namespace/secret`."""
        return self._secret_users.get((namespace, secret), ())


class Store:
    """Implements sources.sink.ObjectSink. Call it from the event loop's thread only."""

    def __init__(self) -> None:
        self._objects: dict[ObjectKey, KubeObject] = {}
        self._origins: dict[ObjectKey, str] = {}
        self._slices: dict[NamespacedName, set[ObjectKey]] = defaultdict(set)
        self._secret_users: dict[NamespacedName, set[ObjectKey]] = defaultdict(set)
        self._subscribers: list[Subscriber] = []
        self._view: StoreView | None = None

    def subscribe(self, subscriber: Subscriber) -> Callable[[], None]:
        """Call `subscriber` after every change; returns a function that unsubscribes.

        Subscribers run synchronously inside the write, so they must be cheap
        (set an event, note a timestamp) and must not write to the store.
        """
        self._subscribers.append(subscriber)
        return lambda: self._subscribers.remove(subscriber)

    def view(self) -> StoreView:
        if self._view is None:
            self._view = StoreView(
                objects=self._objects.values(),
                slices=self._slices,
                secret_users=self._secret_users,
            )
        return self._view

    def apply(self, obj: KubeObject, *, origin: str) -> None:
        if self._put(obj, origin=origin):
            self._notify({obj.key})

    def delete(self, key: ObjectKey, *, origin: str) -> None:
        if self._remove(key):
            self._notify({key})

    def replace_all(self, objects: Sequence[KubeObject], *, origin: str) -> None:
        """Make `objects` everything `origin` provides; if a key repeats, the first wins."""
        changed: set[ObjectKey] = set()
        seen: set[ObjectKey] = set()
        for obj in objects:
            if obj.key in seen:
                continue
            seen.add(obj.key)
            if self._put(obj, origin=origin):
                changed.add(obj.key)
        gone = [key for key, owner in self._origins.items() if owner == origin and key not in seen]
        for key in gone:
            if self._remove(key):
                changed.add(key)
        if changed:
            self._notify(changed)

    def _put(self, obj: KubeObject, *, origin: str) -> bool:
        old = self._objects.get(obj.key)
        self._origins[obj.key] = origin
        if old == obj:
            # Keep the newer copy: its `source` (not part of equality) may
            # have moved to another file, and log lines should name that one.
            self._objects[obj.key] = obj
            if old.source != obj.source:
                self._view = None
            return False
        if old is not None:
            self._unindex(old)
        self._objects[obj.key] = obj
        self._index(obj)
        self._view = None
        return True

    def _remove(self, key: ObjectKey) -> bool:
        old = self._objects.pop(key, None)
        self._origins.pop(key, None)
        if old is None:
            return False
        self._unindex(old)
        self._view = None
        return True

    def _index(self, obj: KubeObject) -> None:
        service = _slice_service(obj)
        if service is not None:
            self._slices[service].add(obj.key)
        for secret in _secret_refs(obj):
            self._secret_users[secret].add(obj.key)

    def _unindex(self, obj: KubeObject) -> None:
        service = _slice_service(obj)
        if service is not None:
            _discard(self._slices, service, obj.key)
        for secret in _secret_refs(obj):
            _discard(self._secret_users, secret, obj.key)

    def _notify(self, keys: set[ObjectKey]) -> None:
        change = Change(keys=frozenset(keys))
        for subscriber in list(self._subscribers):
            try:
                subscriber(change)
            except Exception:
                # One broken subscriber must not stop a source from writing
                # or starve the other subscribers.
                log.exception("store subscriber %r failed", subscriber)


def _discard(
    index: dict[NamespacedName, set[ObjectKey]], at: NamespacedName, key: ObjectKey
) -> None:
    index[at].discard(key)
    if not index[at]:
        del index[at]


def _slice_service(obj: KubeObject) -> NamespacedName | None:
    """The Service an EndpointSlice belongs to, by its kubernetes.io/service-name label."""
    if obj.kind != ENDPOINT_SLICE:
        return None
    service = obj.labels.get(SERVICE_NAME_LABEL)
    return (obj.namespace, service) if service else None


def _secret_refs(obj: KubeObject) -> set[NamespacedName]:
    """The Secrets an object names (an Ingress's spec.tls[].secretName)."""
    if obj.kind != INGRESS:
        return set()
    spec = obj.body.get("spec")
    tls = spec.get("tls") if isinstance(spec, Mapping) else None
    if not isinstance(tls, Sequence) or isinstance(tls, str):
        return set()
    return {
        (obj.namespace, entry["secretName"])
        for entry in tls
        if isinstance(entry, Mapping) and isinstance(entry.get("secretName"), str)
    }
