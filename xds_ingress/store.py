"""The current Kubernetes objects, indexed, and a "changed" signal.

Sources write through the ObjectSink methods (`apply`, `delete`,
`replace_all`); translate reads an immutable StoreView, so a rebuild sees one
consistent state and can never change the store. Updates that change
nothing (an object equal to the stored one) are dropped here, before they
cost a rebuild. Subscribers learn which kinds changed, so that an
EndpointSlice-only change can take the fast path that skips route rebuilding.

Of a Namespace only the name and labels are kept: they are all translation
reads (Gateway listeners' allowedRoutes selectors), a cluster may have
thousands, and a Namespace whose status or annotations change is then equal
to the stored one, so it costs no rebuild.

The kinds whose status we write (Ingress and the Gateway API kinds) come
back from the watch after every status write. Translation reads none of
their status, so an update that differs only in status (and the
resourceVersion and managedFields that come with it) replaces the stored
copy, which the status writer compares against, but tells no subscriber:
otherwise every status write would cost a full rebuild, and hold the next
real change back by the holdoff.
"""

from __future__ import annotations

import bisect
import logging
import types
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

from xds_ingress.sources.objects import (
    ENDPOINT_SLICE,
    GATEWAY,
    GATEWAY_CLASS,
    GRPC_ROUTE,
    HTTP_ROUTE,
    INGRESS,
    NAMESPACE,
    SECRET,
    KubeObject,
    ObjectKey,
)

log = logging.getLogger(__name__)

SERVICE_NAME_LABEL = "kubernetes.io/service-name"

# The kinds whose status we write, and translation never reads.
STATUS_WRITTEN_KINDS = frozenset({INGRESS, GATEWAY_CLASS, GATEWAY, GRPC_ROUTE, HTTP_ROUTE})
# What a status write changes besides `status`.
_WRITE_METADATA = frozenset({"resourceVersion", "managedFields"})

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
# A store's identity and its count of replaced objects per kind.
Generations = tuple[object, Mapping[str, int]]


class StoreView:
    """A read-only snapshot of the store, taken at one moment.

    Taking one costs a few shallow copies: the store keeps each kind's keys
    sorted, and the per-kind object lists and per-Service slice lists are
    made on first use. A full translation reads everything anyway, but the
    EndpointSlice fast path reads a few slices, and at 10k Services sorting
    every object for it would cost more than the fast path saves.
    """

    __slots__ = (
        "_by_key",
        "_by_kind",
        "_generations",
        "_kind_keys",
        "_secret_users",
        "_slice_keys",
        "_slices",
    )

    def __init__(
        self,
        *,
        objects: Mapping[ObjectKey, KubeObject],
        slices: Mapping[NamespacedName, frozenset[ObjectKey]],
        secret_users: Mapping[NamespacedName, frozenset[ObjectKey]],
        kind_keys: Mapping[str, tuple[ObjectKey, ...]] | None = None,
        generations: Generations | None = None,
    ) -> None:
        """The mappings are copied; their values must be immutable.

        `kind_keys`: every key of `objects` by kind, sorted (default: sorted here).
        `generations`: the store's count of replacements per kind (see `generations`).
        """
        self._by_key: Mapping[ObjectKey, KubeObject] = types.MappingProxyType(dict(objects))
        self._slice_keys = dict(slices)
        self._secret_users = dict(secret_users)
        self._kind_keys = dict(kind_keys) if kind_keys is not None else _keys_by_kind(objects)
        self._generations = generations
        self._by_kind: dict[str, tuple[KubeObject, ...]] = {}
        self._slices: dict[NamespacedName, tuple[KubeObject, ...]] = {}

    def __len__(self) -> int:
        return len(self._by_key)

    def get(self, kind: str, namespace: str, name: str) -> KubeObject | None:
        # A plain tuple finds what the ObjectKey of the same fields does (a
        # NamedTuple hashes and compares as one), without its slow __new__:
        # translation looks up thousands of Services per build.
        by_tuple = cast("Mapping[tuple[str, str, str], KubeObject]", self._by_key)
        return by_tuple.get((kind, namespace, name))

    def objects(self, kind: str) -> tuple[KubeObject, ...]:
        """Every object of `kind`, sorted by namespace and name."""
        found = self._by_kind.get(kind)
        if found is None:
            by_key = self._by_key
            found = tuple([by_key[key] for key in self._kind_keys.get(kind, ())])
            self._by_kind[kind] = found
        return found

    def endpoint_slices(self, namespace: str, service: str) -> tuple[KubeObject, ...]:
        """The EndpointSlices labelled for Service `namespace/service`, sorted by name."""
        found = self._slices.get((namespace, service))
        if found is None:
            keys = self._slice_keys.get((namespace, service), frozenset())
            found = tuple(self._by_key[key] for key in sorted(keys))
            self._slices[(namespace, service)] = found
        return found

    def generations(self, kinds: Iterable[str]) -> tuple[object, ...] | None:
        """Equal for two views only if each holds the very same objects of `kinds`.

        None when unknown (a view made without a store).
        """
        if self._generations is None:
            return None
        lineage, counts = self._generations
        return (lineage, *(counts.get(kind, 0) for kind in kinds))

    def secret_users(self, namespace: str, secret: str) -> tuple[ObjectKey, ...]:
        """The objects that name Secret `namespace/secret`."""
        return tuple(sorted(self._secret_users.get((namespace, secret), ())))

    def namespace_labels(self, namespace: str) -> Mapping[str, str]:
        """The labels of Namespace `namespace`; empty if the source has not seen it."""
        found = self._by_key.get(ObjectKey(NAMESPACE, "", namespace))
        return found.labels if found is not None else {}


class Store:
    """Implements sources.sink.ObjectSink. Call it from the event loop's thread only."""

    def __init__(self) -> None:
        self._objects: dict[ObjectKey, KubeObject] = {}
        self._origins: dict[ObjectKey, str] = {}
        # Frozen values, replaced on change, so a view can share them.
        self._slices: dict[NamespacedName, frozenset[ObjectKey]] = {}
        self._secret_users: dict[NamespacedName, frozenset[ObjectKey]] = {}
        # Secrets that nothing references: kept (a reference may come) but
        # not in any view, so translation never reads and churn never
        # rebuilds. `_moved`: keys shown or hidden by the write under way.
        self._parked: dict[ObjectKey, KubeObject] = {}
        self._moved: set[ObjectKey] = set()
        self._subscribers: list[Subscriber] = []
        self._view: StoreView | None = None
        # The keys of `_objects` by kind, kept sorted for views: a kind's
        # new keys are appended and the list re-sorted when a view is taken
        # (a sorted run plus a few keys sorts in linear time), so one new
        # Ingress costs no sort of every object, and a first read of
        # thousands costs one sort.
        self._kind_keys: dict[str, list[ObjectKey]] = {}
        self._unsorted_kinds: set[str] = set()
        self._kind_key_tuples: dict[str, tuple[ObjectKey, ...]] = {}
        # How many times an object of each kind was put in or taken out of
        # the visible objects (even for an equal one): while a kind's count
        # stands still, its objects are the very same ones, so what was
        # worked out from them still holds. `_lineage` tells stores apart.
        self._lineage = object()
        self._replaced: dict[str, int] = {}

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
                objects=self._objects,
                slices=self._slices,
                secret_users=self._secret_users,
                kind_keys=self._sorted_kind_keys(),
                generations=(self._lineage, dict(self._replaced)),
            )
        return self._view

    def _count_replaced(self, kind: str) -> None:
        self._replaced[kind] = self._replaced.get(kind, 0) + 1

    def _sorted_kind_keys(self) -> dict[str, tuple[ObjectKey, ...]]:
        for kind in self._unsorted_kinds:
            self._kind_keys[kind].sort()
        self._unsorted_kinds.clear()
        tuples = self._kind_key_tuples
        for kind, keys in self._kind_keys.items():
            if kind not in tuples:
                tuples[kind] = tuple(keys)
        return tuples

    def _key_added(self, key: ObjectKey) -> None:
        keys = self._kind_keys.setdefault(key.kind, [])
        if keys and key < keys[-1]:
            self._unsorted_kinds.add(key.kind)
        keys.append(key)
        self._kind_key_tuples.pop(key.kind, None)

    def _key_removed(self, key: ObjectKey) -> None:
        keys = self._kind_keys[key.kind]
        if key.kind in self._unsorted_kinds:
            keys.remove(key)
        else:
            del keys[bisect.bisect_left(keys, key)]
        if not keys:
            del self._kind_keys[key.kind]
            self._unsorted_kinds.discard(key.kind)
        self._kind_key_tuples.pop(key.kind, None)

    def apply(self, obj: KubeObject, *, origin: str) -> None:
        changed = {obj.key} if self._put(obj, origin=origin) else set()
        self._notify(changed | self._take_moved())

    def delete(self, key: ObjectKey, *, origin: str) -> None:
        changed = {key} if self._remove(key) else set()
        self._notify(changed | self._take_moved())

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
        self._notify(changed | self._take_moved())

    def _take_moved(self) -> set[ObjectKey]:
        moved, self._moved = self._moved, set()
        return moved

    def _put(self, obj: KubeObject, *, origin: str) -> bool:
        self._origins[obj.key] = origin
        if obj.kind == NAMESPACE:
            obj = _name_and_labels(obj)
        if obj.kind == SECRET and (obj.namespace, obj.name) not in self._secret_users:
            # Nothing names it: held out of sight, so its churn costs no
            # rebuild; it is shown the moment something references it.
            self._parked[obj.key] = obj
            return False
        self._parked.pop(obj.key, None)
        old = self._objects.get(obj.key)
        self._count_replaced(obj.kind)
        if old == obj:
            # Keep the newer copy: its `source` (not part of equality) may
            # have moved to another file, and log lines should name that one.
            self._objects[obj.key] = obj
            if old.source != obj.source:
                self._view = None
            return False
        if old is not None and _differ_in_status_only(old, obj):
            self._objects[obj.key] = obj
            self._view = None
            return False
        if old is not None:
            self._unindex(old)
        else:
            self._key_added(obj.key)
        self._objects[obj.key] = obj
        self._index(obj)
        self._view = None
        return True

    def _remove(self, key: ObjectKey) -> bool:
        if self._parked.pop(key, None) is not None:
            self._origins.pop(key, None)
            return False
        old = self._objects.pop(key, None)
        self._origins.pop(key, None)
        if old is None:
            return False
        self._count_replaced(key.kind)
        self._key_removed(key)
        self._unindex(old)
        self._view = None
        return True

    def _index(self, obj: KubeObject) -> None:
        service = _slice_service(obj)
        if service is not None:
            _add(self._slices, service, obj.key)
        for secret in _secret_refs(obj):
            if secret not in self._secret_users:
                self._show(ObjectKey(SECRET, *secret))
            _add(self._secret_users, secret, obj.key)

    def _unindex(self, obj: KubeObject) -> None:
        service = _slice_service(obj)
        if service is not None:
            _discard(self._slices, service, obj.key)
        for secret in _secret_refs(obj):
            _discard(self._secret_users, secret, obj.key)
            if secret not in self._secret_users:
                self._hide(ObjectKey(SECRET, *secret))

    def _show(self, key: ObjectKey) -> None:
        """A Secret something now references joins the visible objects."""
        parked = self._parked.pop(key, None)
        if parked is not None:
            self._objects[key] = parked
            self._count_replaced(key.kind)
            self._key_added(key)
            self._view = None
            self._moved.add(key)

    def _hide(self, key: ObjectKey) -> None:
        """A Secret nothing references any more leaves the visible objects."""
        shown = self._objects.pop(key, None)
        if shown is not None:
            self._parked[key] = shown
            self._count_replaced(key.kind)
            self._key_removed(key)
            self._view = None
            self._moved.add(key)

    def _notify(self, keys: set[ObjectKey]) -> None:
        if not keys:
            return
        change = Change(keys=frozenset(keys))
        for subscriber in list(self._subscribers):
            try:
                subscriber(change)
            except Exception:
                # One broken subscriber must not stop a source from writing
                # or starve the other subscribers.
                log.exception("store subscriber %r failed", subscriber)


def _keys_by_kind(objects: Mapping[ObjectKey, KubeObject]) -> dict[str, tuple[ObjectKey, ...]]:
    by_kind: dict[str, list[ObjectKey]] = defaultdict(list)
    for key in sorted(objects):
        by_kind[key.kind].append(key)
    return {kind: tuple(keys) for kind, keys in by_kind.items()}


def _add(
    index: dict[NamespacedName, frozenset[ObjectKey]], at: NamespacedName, key: ObjectKey
) -> None:
    index[at] = index.get(at, frozenset()) | {key}


def _discard(
    index: dict[NamespacedName, frozenset[ObjectKey]], at: NamespacedName, key: ObjectKey
) -> None:
    remaining = index.get(at, frozenset()) - {key}
    if remaining:
        index[at] = remaining
    else:
        index.pop(at, None)


def _differ_in_status_only(old: KubeObject, new: KubeObject) -> bool:
    return (
        new.kind in STATUS_WRITTEN_KINDS
        and old.api_version == new.api_version
        and _without_status(old.body) == _without_status(new.body)
    )


def _without_status(body: Mapping[str, Any]) -> dict[str, Any]:
    rest = {key: value for key, value in body.items() if key != "status"}
    metadata = body.get("metadata")
    if isinstance(metadata, Mapping):
        rest["metadata"] = {k: v for k, v in metadata.items() if k not in _WRITE_METADATA}
    return rest


def _name_and_labels(namespace: KubeObject) -> KubeObject:
    """A Namespace reduced to what translation reads of it."""
    return KubeObject(
        api_version=namespace.api_version,
        kind=namespace.kind,
        namespace=namespace.namespace,
        name=namespace.name,
        body={
            "apiVersion": namespace.api_version,
            "kind": namespace.kind,
            "metadata": {"name": namespace.name, "labels": dict(namespace.labels)},
        },
        source=namespace.source,
    )


def _slice_service(obj: KubeObject) -> NamespacedName | None:
    """The Service an EndpointSlice belongs to, by its kubernetes.io/service-name label."""
    if obj.kind != ENDPOINT_SLICE:
        return None
    service = obj.labels.get(SERVICE_NAME_LABEL)
    return (obj.namespace, service) if service else None


# Annotations of ours that name a Secret in the Ingress's namespace
# (translate/annotations.py reads them; tests/test_store.py keeps the two in step).
SECRET_ANNOTATIONS = ("xds-ingress.io/client-ca-secret", "xds-ingress.io/backend-ca-secret")


def _secret_refs(obj: KubeObject) -> set[NamespacedName]:
    """The Secrets an object names: the only ones translation may read.

    An Ingress: spec.tls[].secretName and the CA Secret annotations. A
    Gateway: its listeners' tls.certificateRefs (core Secrets, in the
    Gateway's namespace unless one is given).
    """
    if obj.kind == INGRESS:
        spec = _mapping(obj.body.get("spec"))
        refs = {
            (obj.namespace, entry["secretName"])
            for entry in _items(spec.get("tls"))
            if isinstance(entry, Mapping) and isinstance(entry.get("secretName"), str)
        }
        for annotation in SECRET_ANNOTATIONS:
            named = obj.annotations.get(annotation)
            if named is not None and named.strip():
                refs.add((obj.namespace, named.strip()))
        return refs
    if obj.kind == GATEWAY:
        refs = set()
        for listener in _items(_mapping(obj.body.get("spec")).get("listeners")):
            tls = _mapping(_mapping(listener).get("tls"))
            for ref in _items(tls.get("certificateRefs")):
                ref = _mapping(ref)
                name, namespace = ref.get("name"), ref.get("namespace", obj.namespace)
                if (
                    ref.get("group", "") == ""
                    and ref.get("kind", SECRET) == SECRET
                    and isinstance(name, str)
                    and isinstance(namespace, str)
                ):
                    refs.add((namespace, name))
        return refs
    return set()


def _mapping(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _items(value: object) -> Sequence[object]:
    if isinstance(value, Sequence) and not isinstance(value, str | bytes):
        return value
    return ()
