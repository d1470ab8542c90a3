"""The routed gRPC methods → the grpc_stats filter's config, served over ECDS.

Envoy's grpc_stats filter counts calls per cluster, and per method for the
methods in its allowlist. The allowlist is exactly the gRPC methods our
routes match exactly (a GRPCRoute `Exact` method match, an Ingress `Exact`
path "/pkg.Service/Method"), so its size is bounded by what users route, not
by what clients send. A service matched only by prefix ("/pkg.Service/") has
no per-method stats: its methods are whatever clients invent.

The allowlist changes with the routes, so it is not inlined in the listener
(a changed listener drains every client connection): the HTTP connection
manager names it by `GRPC_STATS`, and Envoy fetches it as a
TypedExtensionConfig (Extension Config Discovery, ECDS) on the ADS stream.
A new allowlist then updates that one resource and no listener.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from itertools import groupby

from envoy.config.core.v3 import extension_pb2, grpc_method_list_pb2
from envoy.extensions.filters.http.grpc_stats.v3 import config_pb2 as grpc_stats_pb2
from google.protobuf import wrappers_pb2

from xds_ingress import ir
from xds_ingress.resources.core import typed

# The HTTP filter's name in every connection manager, which Envoy also uses
# as the ECDS resource name it subscribes to.
GRPC_STATS = "grpc_stats"
GRPC_STATS_TYPE_URL = "type.googleapis.com/" + grpc_stats_pb2.FilterConfig.DESCRIPTOR.full_name

GrpcMethod = tuple[str, str]
"""(fully qualified service, method), e.g. ("helloworld.Greeter", "SayHello")."""

_IDENTIFIER = r"[A-Za-z_][A-Za-z0-9_]*"
# "/<package.Service>/<Method>" as protoc names them; a package is optional.
_GRPC_METHOD_PATH = re.compile(rf"/({_IDENTIFIER}(?:\.{_IDENTIFIER})*)/({_IDENTIFIER})")


def grpc_method(route: ir.Route) -> GrpcMethod | None:
    """The one gRPC method `route` forwards, or None (a prefix, a regex, no upstream)."""
    if route.path.type is not ir.PathMatchType.EXACT:
        return None
    # A direct response reaches no cluster, so it has no cluster stats to split.
    if isinstance(route.action, ir.DirectResponse):
        return None
    found = _GRPC_METHOD_PATH.fullmatch(route.path.value)
    if found is None:
        return None
    return found.group(1), found.group(2)


def virtual_host_methods(vhost: ir.VirtualHost) -> frozenset[GrpcMethod]:
    return frozenset(method for route in vhost.routes if (method := grpc_method(route)) is not None)


def grpc_stats_config(methods: Iterable[GrpcMethod]) -> grpc_stats_pb2.FilterConfig:
    """The filter's config: per-method stats for `methods` only, per cluster for the rest.

    With no methods it is the per-cluster config every connection manager
    carries as its default (see http_filters.py).
    """
    # emit_filter_state is left off: it copies each call's message counts
    # into a per-call object that only an access log reads, and no listener
    # has one (~2 us of Envoy's CPU per call, bench/README.md, data plane).
    # The message-count stats do not depend on it.
    # (replace_dots_in_grpc_service_name is left off too: Envoy 1.40 keeps
    # the dots of allowlisted services anyway, so it would only mislead.)
    config = grpc_stats_pb2.FilterConfig()
    ordered = sorted(set(methods))
    if not ordered:
        # Never stats_for_all_methods: Envoy would make stats for any method
        # name a client sends, growing its memory without bound.
        config.stats_for_all_methods.CopyFrom(wrappers_pb2.BoolValue(value=False))
        return config
    allowlist = config.individual_method_stats_allowlist
    for service, of_service in groupby(ordered, key=lambda method: method[0]):
        allowlist.services.append(
            grpc_method_list_pb2.GrpcMethodList.Service(
                name=service, method_names=[method for _, method in of_service]
            )
        )
    return config


def build_grpc_stats_extension(
    methods: frozenset[GrpcMethod],
) -> extension_pb2.TypedExtensionConfig:
    return extension_pb2.TypedExtensionConfig(
        name=GRPC_STATS, typed_config=typed(grpc_stats_config(methods))
    )
