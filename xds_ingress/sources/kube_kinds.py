"""The Kubernetes resource types the source lists and watches, and where they live.

A kind is addressed by group, version and plural, as the REST API spells
its paths, so one list+watch loop serves every kind, built-in or CRD.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
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
    # sent (nor held in memory).
    field_selector: str = ""
    # A filter applied here, to what no field selector can express; an
    # object it refuses is treated as deleted.
    keep: Callable[[Mapping[str, Any]], bool] | None = None
    # A CRD that may not be installed: its absence (404) is "no objects".
    optional: bool = False

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


def serves_tls(secret: Mapping[str, Any]) -> bool:
    """A Secret translation may read: a TLS key pair, or a CA bundle (`ca.crt`).

    CA bundles for client-certificate checks and backend verification are
    usually Opaque Secrets, which a field selector cannot pick out from the
    rest; every other Secret is dropped as it arrives, never stored.
    """
    if secret.get("type") == TLS_SECRET_TYPE:
        return True
    data = secret.get("data")
    return isinstance(data, Mapping) and CA_BUNDLE_KEY in data


TLS_SECRET_TYPE = "kubernetes.io/tls"
CA_BUNDLE_KEY = "ca.crt"

SERVABLE_SECRET = WatchedKind(
    group="",
    version="v1",
    kind=objects.SECRET,
    plural="secrets",
    namespaced=True,
    keep=serves_tls,
)

# What the Ingress translation reads.
INGRESS_KINDS: tuple[WatchedKind, ...] = (
    INGRESS_CLASS,
    INGRESS,
    SERVICE,
    ENDPOINT_SLICE,
    SERVABLE_SECRET,
)

# Gateway API, at the versions the standard channel serves (sigs.k8s.io/
# gateway-api v1.4: v1 for all but ReferenceGrant, which is still v1beta1
# only). Their CRDs may be missing or installed later: `optional` makes a
# 404 on list mean "none yet, look again later" instead of an error that
# holds the startup barrier shut (see KindWatch).
GATEWAY_CLASS = WatchedKind(
    group=objects.GATEWAY_GROUP,
    version="v1",
    kind=objects.GATEWAY_CLASS,
    plural="gatewayclasses",
    namespaced=False,
    optional=True,
)
GATEWAY = WatchedKind(
    group=objects.GATEWAY_GROUP,
    version="v1",
    kind=objects.GATEWAY,
    plural="gateways",
    namespaced=True,
    optional=True,
)
GRPC_ROUTE = WatchedKind(
    group=objects.GATEWAY_GROUP,
    version="v1",
    kind=objects.GRPC_ROUTE,
    plural="grpcroutes",
    namespaced=True,
    optional=True,
)
HTTP_ROUTE = WatchedKind(
    group=objects.GATEWAY_GROUP,
    version="v1",
    kind=objects.HTTP_ROUTE,
    plural="httproutes",
    namespaced=True,
    optional=True,
)
REFERENCE_GRANT = WatchedKind(
    group=objects.GATEWAY_GROUP,
    version="v1beta1",
    kind=objects.REFERENCE_GRANT,
    plural="referencegrants",
    namespaced=True,
    optional=True,
)

GATEWAY_KINDS: tuple[WatchedKind, ...] = (
    GATEWAY_CLASS,
    GATEWAY,
    GRPC_ROUTE,
    HTTP_ROUTE,
    REFERENCE_GRANT,
)

# Namespaces, for the labels a Gateway listener's allowedRoutes.namespaces
# selector matches. Always watched, cluster-wide, even with --watch-namespace:
# like IngressClass and GatewayClass they are cluster-scoped, so the
# ClusterRole the install needs anyway grants them, and watching them only
# once some Gateway asks for a selector would leave that Gateway's routes
# unattached until a second list came in. The store keeps only each one's
# name and labels (store.py), so a large cluster costs little memory and a
# Namespace's status or annotations changing costs no rebuild.
NAMESPACE = WatchedKind(
    group="", version="v1", kind=objects.NAMESPACE, plural="namespaces", namespaced=False
)

# Everything the translation reads, as the Kubernetes source watches it.
ALL_KINDS: tuple[WatchedKind, ...] = INGRESS_KINDS + GATEWAY_KINDS + (NAMESPACE,)
