"""Kubernetes objects as every source hands them to the store.

An object is kept as the dict Kubernetes would serve (its `body`), frozen on
construction so that nothing downstream (the store, translate) can change
what a source read. Only the few kinds the ingress understands are accepted;
a kind is identified by its API group and kind, not its version.
"""

from __future__ import annotations

import types
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from xds_ingress import ir

INGRESS = "Ingress"
INGRESS_CLASS = "IngressClass"
SERVICE = "Service"
ENDPOINT_SLICE = "EndpointSlice"
SECRET = "Secret"
GATEWAY_CLASS = "GatewayClass"
GATEWAY = "Gateway"
GRPC_ROUTE = "GRPCRoute"
HTTP_ROUTE = "HTTPRoute"
REFERENCE_GRANT = "ReferenceGrant"
NAMESPACE = "Namespace"

GATEWAY_GROUP = "gateway.networking.k8s.io"

DEFAULT_NAMESPACE = "default"


@dataclass(frozen=True, slots=True)
class KindInfo:
    group: str
    kind: str
    namespaced: bool


# Keyed by (API group, kind); the core group is "".
SUPPORTED_KINDS: Mapping[tuple[str, str], KindInfo] = types.MappingProxyType(
    {
        (info.group, info.kind): info
        for info in (
            KindInfo(group="networking.k8s.io", kind=INGRESS, namespaced=True),
            KindInfo(group="networking.k8s.io", kind=INGRESS_CLASS, namespaced=False),
            KindInfo(group="", kind=SERVICE, namespaced=True),
            KindInfo(group="discovery.k8s.io", kind=ENDPOINT_SLICE, namespaced=True),
            KindInfo(group="", kind=SECRET, namespaced=True),
            # Only their labels are read: allowedRoutes.namespaces.selector.
            KindInfo(group="", kind=NAMESPACE, namespaced=False),
            # Gateway API (v1; ReferenceGrant is still v1beta1 in most clusters).
            KindInfo(group=GATEWAY_GROUP, kind=GATEWAY_CLASS, namespaced=False),
            KindInfo(group=GATEWAY_GROUP, kind=GATEWAY, namespaced=True),
            KindInfo(group=GATEWAY_GROUP, kind=GRPC_ROUTE, namespaced=True),
            KindInfo(group=GATEWAY_GROUP, kind=HTTP_ROUTE, namespaced=True),
            KindInfo(group=GATEWAY_GROUP, kind=REFERENCE_GRANT, namespaced=True),
        )
    }
)


class ObjectKey(NamedTuple):
    """Identity of an object in the store. Cluster-scoped kinds use namespace ""."""

    kind: str
    namespace: str
    name: str

    def __str__(self) -> str:
        if not self.namespace:
            return f"{self.kind} {self.name}"
        return f"{self.kind} {self.namespace}/{self.name}"


class ObjectError(ValueError):
    """A document is not an object we can use; the message says why, for a log line."""


def api_group(api_version: str) -> str:
    """The API group of an apiVersion: "" (the core group) for "v1"."""
    group, _, _ = api_version.rpartition("/")
    return group


def freeze(value: Any) -> Any:
    """A read-only deep copy: mappings become MappingProxyType, lists tuples."""
    # Exact types first: parsed YAML and JSON hold nothing else, and a cold
    # start freezes millions of values (an ABC isinstance costs 10x more).
    cls = type(value)
    if cls is str or cls is int or cls is bool:
        return value
    if cls is dict:
        return types.MappingProxyType({key: freeze(item) for key, item in value.items()})
    if cls is list:
        return tuple([freeze(item) for item in value])
    if isinstance(value, Mapping):
        return types.MappingProxyType({key: freeze(item) for key, item in value.items()})
    if isinstance(value, list | tuple):
        return tuple([freeze(item) for item in value])
    return value


@dataclass(frozen=True, slots=True)
class KubeObject:
    """One Kubernetes object. Equal objects are a no-op update, wherever they came from.

    `source` names where it was read (a file path for the file source, empty
    for Kubernetes) so that problems can point at the file to fix; it takes
    no part in equality.
    """

    api_version: str
    kind: str
    namespace: str
    name: str
    # Frozen in __post_init__; unhashable, so kept out of the hash. Out of
    # the repr too: a Secret's body holds its private key, and a repr ends
    # up in log lines and tracebacks.
    body: Mapping[str, Any] = field(hash=False, repr=False)
    source: str = field(default="", compare=False)
    # Made on first use: conditions name their object by it, several times
    # per object in every translation.
    _ref: ir.ObjectRef | None = field(default=None, init=False, repr=False, compare=False)
    # Made on first use too: a NamedTuple's __new__ is Python code, and
    # every translation asks each Ingress for its key.
    _key: ObjectKey | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.body, types.MappingProxyType):
            object.__setattr__(self, "body", freeze(self.body))

    @property
    def key(self) -> ObjectKey:
        key = self._key
        if key is None:
            key = ObjectKey(self.kind, self.namespace, self.name)
            object.__setattr__(self, "_key", key)
        return key

    @property
    def ref(self) -> ir.ObjectRef:
        ref = self._ref
        if ref is None:
            ref = ir.ObjectRef(
                kind=self.kind, namespace=self.namespace, name=self.name, source=self.source
            )
            object.__setattr__(self, "_ref", ref)
        return ref

    @property
    def metadata(self) -> Mapping[str, Any]:
        metadata = self.body.get("metadata")
        # The body is frozen, so its metadata is a MappingProxyType: checked
        # first, as an ABC isinstance costs ten times more.
        if type(metadata) is types.MappingProxyType or isinstance(metadata, Mapping):
            return metadata
        return _EMPTY

    @property
    def labels(self) -> Mapping[str, str]:
        return _strings(self.metadata.get("labels"))

    @property
    def annotations(self) -> Mapping[str, str]:
        return _strings(self.metadata.get("annotations"))

    def annotation(self, name: str) -> str | None:
        """One annotation; cheaper than `annotations`, which copies them all."""
        found = self.metadata.get("annotations")
        value = found.get(name) if isinstance(found, Mapping) else None
        return value if isinstance(value, str) else None


_EMPTY: Mapping[str, Any] = types.MappingProxyType({})


def _strings(value: object) -> Mapping[str, str]:
    if not isinstance(value, Mapping):
        return {}
    return {k: v for k, v in value.items() if isinstance(k, str) and isinstance(v, str)}


def parse_object(document: object, *, source: str = "") -> KubeObject:
    """Check that `document` is an object of a supported kind and wrap it.

    Raises ObjectError with a one-line reason otherwise.
    """
    if not isinstance(document, Mapping):
        raise ObjectError(f"expected a mapping, got {_type_name(document)}")
    kind = document.get("kind")
    if not isinstance(kind, str) or not kind:
        raise ObjectError("object has no kind")
    api_version = document.get("apiVersion")
    if not isinstance(api_version, str) or not api_version:
        raise ObjectError(f"{kind} has no apiVersion")
    metadata = document.get("metadata")
    if not isinstance(metadata, Mapping):
        raise ObjectError(f"{kind} has no metadata")
    name = metadata.get("name")
    if not isinstance(name, str) or not name:
        raise ObjectError(f"{kind} has no metadata.name")
    info = SUPPORTED_KINDS.get((api_group(api_version), kind))
    if info is None:
        raise ObjectError(f"unsupported kind {kind} (apiVersion {api_version}) for {name!r}")
    namespace = metadata.get("namespace", DEFAULT_NAMESPACE)
    if not isinstance(namespace, str):
        raise ObjectError(f"{kind} {name}: metadata.namespace is not a string")
    try:
        return KubeObject(
            api_version=api_version,
            kind=kind,
            namespace=(namespace or DEFAULT_NAMESPACE) if info.namespaced else "",
            name=name,
            body=document,
            source=source,
        )
    except RecursionError:
        # YAML anchors can make a document contain itself; JSON from
        # Kubernetes never does.
        raise ObjectError(f"{kind} {name} refers to itself or is nested too deeply") from None


def _type_name(value: object) -> str:
    if value is None:
        return "nothing"
    # A frozen list (file_parse builds documents frozen): named as written.
    return "list" if isinstance(value, tuple) else type(value).__name__
