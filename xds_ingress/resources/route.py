"""ir.RouteConfig → envoy.config.route.v3.RouteConfiguration.

Routes keep the order the IR gives them: Envoy takes the first route that
matches, and translate/ has already sorted them by precedence.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import assert_never

from envoy.config.core.v3 import base_pb2
from envoy.config.route.v3 import route_components_pb2, route_pb2
from google.protobuf import duration_pb2

from xds_ingress import ir

VirtualHostBuilder = Callable[[ir.VirtualHost], route_components_pb2.VirtualHost]


def build_route_configuration(
    route_config: ir.RouteConfig, *, virtual_host: VirtualHostBuilder | None = None
) -> route_pb2.RouteConfiguration:
    """`virtual_host` lets a caller reuse virtual hosts built before (see builder.py)."""
    build = virtual_host if virtual_host is not None else build_virtual_host
    return route_pb2.RouteConfiguration(
        name=route_config.name,
        virtual_hosts=[build(vhost) for vhost in route_config.virtual_hosts],
    )


def build_virtual_host(vhost: ir.VirtualHost) -> route_components_pb2.VirtualHost:
    return route_components_pb2.VirtualHost(
        name=vhost.name,
        domains=vhost.domains,
        routes=[build_route(route) for route in vhost.routes],
    )


def build_route(route: ir.Route) -> route_components_pb2.Route:
    match = path_match(route.path)
    action = route.action
    if isinstance(action, ir.Forward):
        return route_components_pb2.Route(name=route.name, match=match, route=_forward(action))
    if isinstance(action, ir.DirectResponse):
        return route_components_pb2.Route(
            name=route.name, match=match, direct_response=_direct_response(action)
        )
    assert_never(action)


def path_match(path: ir.PathMatch) -> route_components_pb2.RouteMatch:
    match path.type:
        case ir.PathMatchType.EXACT:
            return route_components_pb2.RouteMatch(path=path.value)
        case ir.PathMatchType.PREFIX:
            # path_separated_prefix matches whole path elements, as Kubernetes'
            # Prefix does, but Envoy refuses a value ending in "/" (so "/" too):
            # "/foo/" means "/foo", and "/" matches every path anyway.
            element = path.value.rstrip("/")
            if not element:
                return route_components_pb2.RouteMatch(prefix="/")
            return route_components_pb2.RouteMatch(path_separated_prefix=element)
        case ir.PathMatchType.STRING_PREFIX:
            return route_components_pb2.RouteMatch(prefix=path.value)
        case _:
            assert_never(path.type)


def _forward(action: ir.Forward) -> route_components_pb2.RouteAction:
    return route_components_pb2.RouteAction(
        cluster=action.backend,
        # Zero turns off Envoy's 15 s route timeout, which would cut every
        # gRPC stream that lives longer than that.
        timeout=duration_pb2.Duration(),
        # Zero means "no cap": the client's grpc-timeout header is the deadline.
        max_stream_duration=route_components_pb2.RouteAction.MaxStreamDuration(
            grpc_timeout_header_max=duration_pb2.Duration()
        ),
    )


def _direct_response(action: ir.DirectResponse) -> route_components_pb2.DirectResponseAction:
    if not action.body:
        return route_components_pb2.DirectResponseAction(status=action.status)
    return route_components_pb2.DirectResponseAction(
        status=action.status, body=base_pb2.DataSource(inline_string=action.body)
    )
