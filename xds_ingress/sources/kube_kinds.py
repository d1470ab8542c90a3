"""The Kubernetes resource types the source lists and watches, and where they live.

A kind is addressed by group, version and plural, as the REST API spells
its paths, so one list+watch loop serves every kind, built-in or CRD.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import quote

from xds_ingress.sources import objects


@dataclass(frozen=True, slots=True, kw_only=True)
class WatchedKind:
    group: str  # "" for the core group
    version: str
    kind: str
    plural: str
    namespaced: bool
    # Filters the API server applies, so objects we would ignore are never
    # sent (nor held in memory): Secrets of other types are most Secrets.
    field_selector: str = ""

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def origin(self) -> str:
        """The store origin of this kind's objects: a relist replaces exactly these."""
        return f"kubernetes:{self.kind}"

    def path(self, *, namespace: str | None) -> str:
        """The collection URL path: one namespace when given, else the whole cluster."""
        prefix = f"/apis/{self.group}/{self.version}" if self.group else f"/api/{self.version}"
        if self.namespaced and namespace:
            return f"{prefix}/namespaces/{quote(namespace, safe='')}/{self.plural}"
        return f"{prefix}/{self.plural}"


INGRESS = WatchedKind(
    group="networking.k8s.io",
    version="v1",
    kind=objects.INGRESS,
    plural="ingresses",
    namespaced=True,
)
INGRESS_CLASS = WatchedKind(
    group="networking.k8s.io",
    version="v1",
    kind=objects.INGRESS_CLASS,
    plural="ingressclasses",
    namespaced=False,
)
SERVICE = WatchedKind(
    group="", version="v1", kind=objects.SERVICE, plural="services", namespaced=True
)
ENDPOINT_SLICE = WatchedKind(
    group="discovery.k8s.io",
    version="v1",
    kind=objects.ENDPOINT_SLICE,
    plural="endpointslices",
    namespaced=True,
)
TLS_SECRET = WatchedKind(
    group="",
    version="v1",
    kind=objects.SECRET,
    plural="secrets",
    namespaced=True,
    field_selector="type=kubernetes.io/tls",
)

# What the Ingress translation reads. Gateway API kinds (Gateway, GRPCRoute,
# HTTPRoute, ReferenceGrant under gateway.networking.k8s.io) will be a second
# tuple beside this one, added to objects.SUPPORTED_KINDS at the same time.
# Their CRDs may be missing or installed later, so their watches must treat
# a 404 on list as "no objects yet, look again later" instead of an error
# that holds the startup barrier shut; that is the one thing KindWatch does
# not do yet.
INGRESS_KINDS: tuple[WatchedKind, ...] = (
    INGRESS_CLASS,
    INGRESS,
    SERVICE,
    ENDPOINT_SLICE,
    TLS_SECRET,
)
