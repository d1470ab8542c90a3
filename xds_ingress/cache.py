"""Immutable, versioned snapshots of Envoy resources, per node group.

A snapshot is built once from a set of protobuf messages and never changes.
Each resource is serialised once, as a `google.protobuf.Any`, and its version
is a hash of those bytes; a type's version and the snapshot's version hash
the resource versions. So a rebuild that changes nothing produces the same
versions, and the server sends nothing.

A push must cost in proportion to what it changes, not to what the snapshot
holds (an EndpointSlice change at 10k Services touches one of 10k
ClusterLoadAssignments). So a type's version is a sum of per-resource
hashes, which a successor updates for its changed names only, and a
TypeSnapshot derived from an earlier one remembers which names differ from
its recent ancestors: a stream that holds an ancestor compares those names,
not all of them.

The server reads snapshots through `SnapshotWatcher` (a narrow seam, like
go-control-plane's ConfigWatcher): the current snapshot of a group, and a
callback when it changes. Nothing here knows about gRPC.

Serialisation is the control plane's hot path (a thousand Envoys asking for
the same thing), so each resource also keeps its bytes pre-encoded as a
`resources` field of a DiscoveryResponse and of a DeltaDiscoveryResponse.
Protobuf lets a message be assembled by concatenating encoded fields, so a
response is a join of cached pieces plus a small header, never a
re-serialisation of every resource for every stream.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from functools import cached_property
from typing import Any, Protocol

from envoy.config.cluster.v3 import cluster_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2,
)
from envoy.extensions.transport_sockets.tls.v3 import tls_pb2
from google.protobuf import any_pb2
from google.protobuf.message import Message

from xds_ingress.resources import types
from xds_ingress.resources.encoded import Encoded, length_delimited, message_of

log = logging.getLogger(__name__)

DEFAULT_GROUP = ""
"""Snapshots set for this group serve every node group without one of its own."""

_DOWNSTREAM_TLS_TYPE_URL = (
    "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext"
)
_HCM_TYPE_URL = (
    "type.googleapis.com/envoy.extensions.filters.network."
    "http_connection_manager.v3.HttpConnectionManager"
)


def _hash(parts: Iterable[bytes]) -> str:
    digest = hashlib.blake2b(digest_size=10)
    for part in parts:
        digest.update(part)
        digest.update(b"\0")
    return digest.hexdigest()


# Field numbers from envoy/service/discovery/v3/discovery.proto.
_RESPONSE_RESOURCES = 2  # DiscoveryResponse.resources and DeltaDiscoveryResponse.resources
_DELTA_RESOURCE_VERSION = 1  # Resource.version
_DELTA_RESOURCE_BODY = 2  # Resource.resource
_DELTA_RESOURCE_NAME = 3  # Resource.name


# A type's version is the sum of its resources' entries modulo this: an
# order-free hash that a successor updates in O(changed names). 80 bits, as
# many as the resource versions have.
_ENTRY_BITS = 80
_ENTRY_MODULUS = 1 << _ENTRY_BITS

# How many ancestors a TypeSnapshot remembers its differences from: a stream
# a few publishes behind (it was busy sending) still compares only names.
_HISTORY_KEPT = 8


def _entry(name: str, version: str) -> int:
    digest = hashlib.blake2b(digest_size=_ENTRY_BITS // 8)
    digest.update(name.encode())
    digest.update(b"\0")
    digest.update(version.encode())
    return int.from_bytes(digest.digest(), "big")


@dataclass(frozen=True, slots=True)
class Resource:
    """One Envoy resource, serialised once."""

    name: str
    type_url: str
    version: str
    any_bytes: bytes = field(repr=False)
    # What it was made from: a message, or one held as its bytes (read with `message`).
    source: Message | Encoded[Message] = field(repr=False, compare=False)
    # This resource's share of its type's version (see TypeSnapshot.version).
    entry: int = field(init=False, repr=False, compare=False)
    # The encoded pieces, made on first use and then shared by every stream
    # that sends this resource (a resource is sent to every Envoy).
    _sotw_piece: bytes | None = field(default=None, init=False, repr=False, compare=False)
    _delta_piece: bytes | None = field(default=None, init=False, repr=False, compare=False)
    # A cluster's `eds_name`, worked out once: every publish checks them all.
    _eds_name: str | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "entry", _entry(self.name, self.version))

    @property
    def message(self) -> Message:
        """The resource as a message; shared: treat it as read-only."""
        return message_of(self.source)

    @property
    def sotw_piece(self) -> bytes:
        piece = self._sotw_piece
        if piece is None:
            piece = length_delimited(_RESPONSE_RESOURCES, self.any_bytes)
            object.__setattr__(self, "_sotw_piece", piece)
        return piece

    @property
    def delta_piece(self) -> bytes:
        piece = self._delta_piece
        if piece is None:
            body = (
                length_delimited(_DELTA_RESOURCE_VERSION, self.version.encode())
                + length_delimited(_DELTA_RESOURCE_BODY, self.any_bytes)
                + length_delimited(_DELTA_RESOURCE_NAME, self.name.encode())
            )
            piece = length_delimited(_RESPONSE_RESOURCES, body)
            object.__setattr__(self, "_delta_piece", piece)
        return piece

    @property
    def eds_name(self) -> str:
        """Of a cluster: the ClusterLoadAssignment it is fed by ("": none, not EDS)."""
        name = self._eds_name
        if name is None:
            cluster: Any = self.message
            name = ""
            if cluster.type == cluster_pb2.Cluster.EDS:
                name = cluster.eds_cluster_config.service_name or cluster.name
            object.__setattr__(self, "_eds_name", name)
        return name

    def to_any(self) -> any_pb2.Any:
        return any_pb2.Any.FromString(self.any_bytes)


def make_resource(name: str, type_url: str, message: Message | Encoded[Message]) -> Resource:
    if isinstance(message, Encoded):
        value = message.data
    else:
        value = message.SerializeToString(deterministic=True)
    packed = any_pb2.Any(type_url=type_url, value=value).SerializeToString(deterministic=True)
    return Resource(
        name=name, type_url=type_url, version=_hash([value]), any_bytes=packed, source=message
    )


Ancestry = tuple[tuple[str, frozenset[str]], ...]


@dataclass(frozen=True)
class TypeSnapshot:
    """All resources of one type in a snapshot, with the type's version."""

    type_url: str
    resources: Mapping[str, Resource]
    # (an ancestor's version, the names added, changed or removed since it),
    # newest ancestor first; empty when not derived (see `derive`).
    ancestry: Ancestry = field(default=(), repr=False, compare=False)
    # The sum of the entries, when the deriving ancestor worked it out.
    entry_sum: int | None = field(default=None, repr=False, compare=False)

    @cached_property
    def _sum(self) -> int:
        if self.entry_sum is not None:
            return self.entry_sum
        return sum(resource.entry for resource in self.resources.values()) % _ENTRY_MODULUS

    @cached_property
    def versions(self) -> dict[str, str]:
        """Name -> version; built once and shared by every reader: do not change it."""
        return {name: resource.version for name, resource in self.resources.items()}

    @cached_property
    def version(self) -> str:
        """A content hash of the names and versions, whatever their order."""
        return f"{self._sum:0{_ENTRY_BITS // 4}x}"

    def changed_since(self, version: str) -> frozenset[str] | None:
        """Names that may differ from the TypeSnapshot of `version`; None: unknown.

        Known for this version and a few ancestors it was derived from.
        """
        if version == self.version:
            return frozenset()
        for ancestor, names in self.ancestry:
            if ancestor == version:
                return names
        return None

    def derive(self, resources: Mapping[str, Resource], changed: Iterable[str]) -> TypeSnapshot:
        """A successor holding `resources`, which differ from ours at most in `changed`.

        Costs O(changed): the version is updated from ours, not recomputed.
        """
        names = frozenset(
            name
            for name in changed
            if (
                (old := self.resources.get(name)) is None
                or (new := resources.get(name)) is None
                or old.version != new.version
            )
            and (name in self.resources or name in resources)
        )
        total = self._sum
        for name in names:
            if (old := self.resources.get(name)) is not None:
                total -= old.entry
            if (new := resources.get(name)) is not None:
                total += new.entry
        # Unions over long histories would cost more than the full
        # comparison they save: keep only the small ones.
        limit = len(resources) // 4 + 16
        ancestry: Ancestry = (
            (self.version, names),
            *(
                (ancestor, merged)
                for ancestor, earlier in self.ancestry[: _HISTORY_KEPT - 1]
                if len(merged := earlier | names) <= limit
            ),
        )
        return TypeSnapshot(
            type_url=self.type_url,
            resources=resources,
            ancestry=ancestry,
            entry_sum=total % _ENTRY_MODULUS,
        )

    @cached_property
    def sotw_pieces(self) -> bytes:
        """Every resource, encoded for a DiscoveryResponse; built at most once."""
        return b"".join(self.resources[name].sotw_piece for name in sorted(self.resources))


@dataclass(frozen=True)
class Snapshot:
    """Everything one node group is given, at one version."""

    types: Mapping[str, TypeSnapshot]
    # time.monotonic() of the first source change this snapshot was built
    # for (None: not built for a change, e.g. the first one), so the server
    # can measure change-to-push latency. Not part of the content.
    changed_at: float | None = field(default=None, compare=False)

    @cached_property
    def version(self) -> str:
        return _hash(f"{url}={self.types[url].version}".encode() for url in sorted(self.types))

    def of_type(self, type_url: str) -> TypeSnapshot:
        found = self.types.get(type_url)
        return found if found is not None else TypeSnapshot(type_url=type_url, resources={})


def build_snapshot(
    resources: Mapping[str, Mapping[str, Message | Encoded[Message]]],
    *,
    previous: Snapshot | None = None,
) -> Snapshot:
    """Serialise and version a `{type_url: {name: message}}` set.

    With `previous`, a message that is the very object `previous` serialised
    (the resource builder memoises unchanged ones) keeps its Resource, bytes
    and version, and each type is derived from its predecessor, so streams
    compare only what changed.
    """
    types_: dict[str, TypeSnapshot] = {}
    for type_url, by_name in resources.items():
        before = previous.types.get(type_url) if previous is not None else None
        if before is None:
            types_[type_url] = TypeSnapshot(
                type_url=type_url,
                resources={
                    name: make_resource(name, type_url, message)
                    for name, message in by_name.items()
                },
            )
            continue
        old = before.resources
        built: dict[str, Resource] = {}
        changed: list[str] = []
        for name, message in by_name.items():
            found = old.get(name)
            if found is None or found.source is not message:
                found = make_resource(name, type_url, message)
                changed.append(name)
            built[name] = found
        changed += [name for name in old if name not in built]
        if not changed and len(built) == len(old):
            # Nothing new: the predecessor, with the response it may have
            # serialised already.
            types_[type_url] = before
        else:
            types_[type_url] = before.derive(built, changed)
    return Snapshot(types=types_)


def snapshot_from_resources(resources: Mapping[str, Mapping[str, Resource]]) -> Snapshot:
    """Assemble a snapshot from already-serialised resources (reuses their bytes)."""
    return Snapshot(
        types={
            type_url: TypeSnapshot(type_url=type_url, resources=dict(by_name))
            for type_url, by_name in resources.items()
        }
    )


def _eds_names(snapshot: Snapshot) -> set[str]:
    names = {resource.eds_name for resource in snapshot.of_type(types.CLUSTER).resources.values()}
    names.discard("")
    return names


def _filter_chains(snapshot: Snapshot) -> list[Any]:
    chains: list[Any] = []
    for resource in snapshot.of_type(types.LISTENER).resources.values():
        listener: Any = resource.message
        chains += listener.filter_chains
        if listener.HasField("default_filter_chain"):
            chains.append(listener.default_filter_chain)
    return chains


def _sds_names(snapshot: Snapshot) -> set[str]:
    names: set[str] = set()
    for chain in _filter_chains(snapshot):
        if chain.transport_socket.typed_config.type_url != _DOWNSTREAM_TLS_TYPE_URL:
            continue
        context = tls_pb2.DownstreamTlsContext()
        chain.transport_socket.typed_config.Unpack(context)
        common = context.common_tls_context
        names.update(config.name for config in common.tls_certificate_sds_secret_configs)
        if common.HasField("validation_context_sds_secret_config"):
            names.add(common.validation_context_sds_secret_config.name)
    return names


def _connection_managers(snapshot: Snapshot) -> list[Any]:
    managers: list[Any] = []
    for chain in _filter_chains(snapshot):
        for network_filter in chain.filters:
            if network_filter.typed_config.type_url != _HCM_TYPE_URL:
                continue
            hcm = http_connection_manager_pb2.HttpConnectionManager()
            network_filter.typed_config.Unpack(hcm)
            managers.append(hcm)
    return managers


def _rds_names(managers: list[Any]) -> set[str]:
    return {hcm.rds.route_config_name for hcm in managers if hcm.HasField("rds")}


def _ecds_names(managers: list[Any]) -> set[str]:
    # An HTTP filter fetched over ECDS is subscribed to by its filter name.
    return {
        http_filter.name
        for hcm in managers
        for http_filter in hcm.http_filters
        if http_filter.HasField("config_discovery")
    }


def consistency_errors(snapshot: Snapshot) -> list[str]:
    """Why Envoy would warm forever on this snapshot (empty when consistent).

    Every EDS cluster needs its ClusterLoadAssignment and every listener's
    RDS name its RouteConfiguration; an endpoint or route set nobody
    references is dead weight that hints at a translation bug.
    """
    errors: list[str] = []
    eds_wanted = _eds_names(snapshot)
    eds_have = set(snapshot.of_type(types.ENDPOINT).resources)
    errors += [
        f"cluster {name!r} has no ClusterLoadAssignment" for name in sorted(eds_wanted - eds_have)
    ]
    errors += [
        f"ClusterLoadAssignment {name!r} has no cluster" for name in sorted(eds_have - eds_wanted)
    ]
    managers = _connection_managers(snapshot)
    rds_wanted = _rds_names(managers)
    rds_have = set(snapshot.of_type(types.ROUTE).resources)
    errors += [
        f"listener route config {name!r} is missing" for name in sorted(rds_wanted - rds_have)
    ]
    errors += [
        f"route config {name!r} is named by no listener" for name in sorted(rds_have - rds_wanted)
    ]
    # A listener naming a Secret that is not served never finishes warming.
    # (A Secret nobody names is not checked: clusters will name some too.)
    sds_wanted = _sds_names(snapshot)
    sds_have = set(snapshot.of_type(types.SECRET).resources)
    errors += [f"listener secret {name!r} is missing" for name in sorted(sds_wanted - sds_have)]
    # Without its extension config a listener warms until the initial fetch
    # times out, then runs the filter on its default config. (One nobody
    # names is not checked: Envoy just never asks for it.)
    ecds_wanted = _ecds_names(managers)
    ecds_have = set(snapshot.of_type(types.EXTENSION_CONFIG).resources)
    errors += [
        f"listener extension config {name!r} is missing" for name in sorted(ecds_wanted - ecds_have)
    ]
    return errors


class InconsistentSnapshotError(ValueError):
    pass


Wake = Callable[[], None]
Cancel = Callable[[], None]


class SnapshotWatcher(Protocol):
    """What the server sees of the cache."""

    def current(self, group: str) -> Snapshot | None: ...

    def watch(self, group: str, wake: Wake) -> Cancel: ...


class SnapshotInspector(SnapshotWatcher, Protocol):
    """What inspection (the admin API, CSDS) sees of the cache: every group too."""

    def groups(self) -> list[str]: ...

    def watch_all(self, wake: Wake) -> Cancel: ...


@dataclass(frozen=True)
class TypeDiff:
    """The resources of one type that differ between two snapshots, by name."""

    type_url: str
    added: tuple[str, ...]
    changed: tuple[str, ...]
    removed: tuple[str, ...]


def diff(old: Snapshot | None, new: Snapshot) -> list[TypeDiff]:
    """What changed from `old` (None: nothing) to `new`, for each type that changed."""
    found: list[TypeDiff] = []
    old_types = old.types if old is not None else {}
    for type_url in sorted(set(old_types) | set(new.types)):
        before_type = old_types.get(type_url)
        after_type = new.of_type(type_url)
        if before_type is after_type:
            continue
        before = before_type.resources if before_type is not None else {}
        after = after_type.resources
        # A type derived from the old one names its differences: compare only those.
        names = after_type.changed_since(before_type.version) if before_type is not None else None
        candidates = set(before) | set(after) if names is None else names
        added = tuple(sorted(name for name in candidates if name in after and name not in before))
        removed = tuple(sorted(name for name in candidates if name in before and name not in after))
        changed = tuple(
            sorted(
                name
                for name in candidates
                if name in before and name in after and before[name].version != after[name].version
            )
        )
        if added or changed or removed:
            found.append(TypeDiff(type_url, added=added, changed=changed, removed=removed))
    return found


class SnapshotCache:
    """The latest consistent snapshot per node group, and who to wake on change."""

    def __init__(self) -> None:
        self._snapshots: dict[str, Snapshot] = {}
        self._watchers: dict[str, set[Wake]] = {}
        self._all_watchers: set[Wake] = set()

    def current(self, group: str) -> Snapshot | None:
        found = self._snapshots.get(group)
        return found if found is not None else self._snapshots.get(DEFAULT_GROUP)

    def published(self, group: str) -> Snapshot | None:
        """The snapshot set for `group` itself (no fallback to the default group)."""
        return self._snapshots.get(group)

    def groups(self) -> list[str]:
        return sorted(self._snapshots)

    def set_snapshot(
        self,
        group: str,
        snapshot: Snapshot,
        *,
        check: bool = True,
        changed_at: float | None = None,
    ) -> bool:
        """Publish `snapshot` for `group`; False when nothing changed.

        `changed_at` is when the source change it was built for was seen
        (time.monotonic()), for the server's change-to-push latency.
        Raises InconsistentSnapshotError (and publishes nothing) when the
        snapshot would leave Envoy warming forever.
        """
        if check:
            errors = consistency_errors(snapshot)
            if errors:
                raise InconsistentSnapshotError("; ".join(errors))
        previous = self._snapshots.get(group)
        if previous is not None and previous.version == snapshot.version:
            return False
        if changed_at is not None and snapshot.changed_at is None:
            snapshot = replace(snapshot, changed_at=changed_at)
        self._snapshots[group] = snapshot
        log.debug("snapshot %s published for group %r", snapshot.version, group)
        woken = self._watchers.get(group, set())
        if group == DEFAULT_GROUP:
            # Streams of groups without a snapshot of their own follow the default.
            woken = set().union(
                *(
                    wakes
                    for name, wakes in self._watchers.items()
                    if name not in self._snapshots or name == DEFAULT_GROUP
                )
            )
        for wake in [*woken, *self._all_watchers]:
            wake()
        return True

    def watch(self, group: str, wake: Wake) -> Cancel:
        self._watchers.setdefault(group, set()).add(wake)

        def cancel() -> None:
            wakes = self._watchers.get(group)
            if wakes is not None:
                wakes.discard(wake)
                if not wakes:
                    del self._watchers[group]

        return cancel

    def watch_all(self, wake: Wake) -> Cancel:
        """Wake on every publish, of any group (for inspection, not for streams)."""
        self._all_watchers.add(wake)
        return lambda: self._all_watchers.discard(wake)
