"""Which source objects produced each Envoy resource: the map a NACK is read through.

Built from the IR the pipeline published, never inside translate, so that a
rejected resource can be reported on the objects a user can fix:

- a cluster and its endpoints (both named after the Backend, "ns/svc:port")
  come from that Service and from every Ingress whose routes forward to it;
- a route config comes from the Ingresses whose routes are in it (and, for an
  HTTPS route config, from the Secret it is named after);
- a secret ("ns/secret") comes from that Secret and the Ingresses routed
  through the filter chain that serves it;
- a listener comes from everything in its route configs and certificates:
  a rejected listener leaves all of them unprogrammed.
"""

from __future__ import annotations

import types as pytypes
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping

from xds_ingress import ir
from xds_ingress.resources import types

ResourceKey = tuple[str, str]  # (type_url, resource name)
Origins = Mapping[ResourceKey, frozenset[ir.ObjectRef]]
# Gives back the object as a source knows it (with its file), or None.
Locate = Callable[[ir.ObjectRef], ir.ObjectRef | None]

SERVICE = "Service"
SECRET = "Secret"


def origins(config: ir.Config, *, locate: Locate | None = None) -> Origins:
    """(type_url, name) → the objects behind that resource in `config`.

    Objects known only by name in the IR (a Backend's Service, a certificate's
    Secret) carry no source file; `locate` fills it in when given.
    """

    def named(kind: str, namespaced_name: str) -> ir.ObjectRef:
        namespace, _, name = namespaced_name.partition("/")
        ref = ir.ObjectRef(kind=kind, namespace=namespace, name=name)
        found = locate(ref) if locate is not None else None
        return found if found is not None else ref

    found: dict[ResourceKey, set[ir.ObjectRef]] = defaultdict(set)
    for route_config in config.route_configs:
        key = (types.ROUTE, route_config.name)
        for vhost in route_config.virtual_hosts:
            for route in vhost.routes:
                found[key].add(route.origin)
                if isinstance(route.action, ir.Forward):
                    for type_url in (types.CLUSTER, types.ENDPOINT):
                        found[(type_url, route.action.backend)].add(route.origin)
    for backend in config.backends:
        service = named(SERVICE, backend.name.rpartition(":")[0])
        for type_url in (types.CLUSTER, types.ENDPOINT):
            found[(type_url, backend.name)].add(service)
    for listener in config.https_listeners:
        for chain in listener.filter_chains:
            secret_key = (types.SECRET, chain.certificate)
            found[secret_key].add(named(SECRET, chain.certificate))
            found[secret_key].update(
                ref for ref in found[(types.ROUTE, chain.route_config)] if ref.kind != SECRET
            )
        found[(types.LISTENER, listener.name)] = _union(
            found,
            [(types.ROUTE, chain.route_config) for chain in listener.filter_chains]
            + [(types.SECRET, chain.certificate) for chain in listener.filter_chains],
        )
    for plain in config.listeners:
        found[(types.LISTENER, plain.name)] = _union(found, [(types.ROUTE, plain.route_config)])
    return pytypes.MappingProxyType({key: frozenset(refs) for key, refs in found.items() if refs})


class LazyOrigins(Mapping[ResourceKey, frozenset[ir.ObjectRef]]):
    """`origins(config)`, worked out the first time anything reads it.

    Only a rejected resource needs its origins, and most builds have none:
    at 3000 Ingresses, working them out after every build cost the event
    loop nearly half as much as the translation itself, between the pushes
    of one change. Objects are located when first read, in the store as it
    is then.
    """

    def __init__(self, config: ir.Config, *, locate: Locate | None = None) -> None:
        self._config = config
        self._locate = locate
        self._found: Origins | None = None

    def _origins(self) -> Origins:
        if self._found is None:
            self._found = origins(self._config, locate=self._locate)
        return self._found

    def __getitem__(self, key: ResourceKey) -> frozenset[ir.ObjectRef]:
        return self._origins()[key]

    def __iter__(self) -> Iterator[ResourceKey]:
        return iter(self._origins())

    def __len__(self) -> int:
        return len(self._origins())


def _union(
    found: Mapping[ResourceKey, Iterable[ir.ObjectRef]], keys: Iterable[ResourceKey]
) -> set[ir.ObjectRef]:
    return {ref for key in keys for ref in found.get(key, ())}


# How a log line or a condition names a resource type.
TYPE_NAMES: Mapping[str, str] = pytypes.MappingProxyType(
    {
        types.LISTENER: "listener",
        types.ROUTE: "route config",
        types.CLUSTER: "cluster",
        types.ENDPOINT: "endpoints",
        types.SECRET: "secret",
    }
)


def type_name(type_url: str) -> str:
    return TYPE_NAMES.get(type_url, type_url.rsplit(".", 1)[-1])
