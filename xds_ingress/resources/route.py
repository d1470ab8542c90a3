"""ir.RouteConfig → envoy.config.route.v3.RouteConfiguration.

Routes keep the order the IR gives them: Envoy takes the first route that
matches, and translate/ has already sorted them by precedence.

A forwarded route never times out by itself (a gRPC stream may live for
hours); the client's grpc-timeout is its deadline, optionally capped. Calls
are retried when the backend answers one of the route's gRPC codes before
sending anything (Envoy retries nothing that has started to answer), within
the cluster's retry budget (see cluster.py). When every forwarding route of
a host retries alike, the policy is said once, on the virtual host.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import assert_never

from envoy.config.core.v3 import base_pb2
from envoy.config.route.v3 import route_components_pb2, route_pb2
from envoy.extensions.retry.host.previous_hosts.v3 import previous_hosts_pb2
from envoy.type.matcher.v3 import regex_pb2, string_pb2
from google.protobuf import duration_pb2, wrappers_pb2

from xds_ingress import ir
from xds_ingress.resources.core import typed
from xds_ingress.resources.encoded import Encoded, length_delimited

PREVIOUS_HOSTS = "envoy.retry_host_predicates.previous_hosts"
# Retried whatever the route says: the backend never saw the call, so a
# retry cannot run it twice. This is what turns a pod that just went away
# (a rollout) into a retry on another pod instead of a failed call.
ALWAYS_RETRY_ON = ("connect-failure", "refused-stream")
# How often Envoy re-picks a host to avoid the ones a call already failed on.
_HOST_SELECTION_ATTEMPTS = 3

GRPC_CONTENT_TYPE = "application/grpc"
UNSUPPORTED_MEDIA_TYPE = 415
FORBIDDEN = 403
_NOT_GRPC_BODY = (
    "xds-ingress: this route serves gRPC only "
    "(content-type application/grpc, or application/grpc-web from a browser)\n"
)
_CLIENT_CERTIFICATE_BODY = "xds-ingress: this route needs a valid client certificate, over HTTPS\n"

# RouteConfiguration's field numbers (envoy/config/route/v3/route.proto).
_NAME_FIELD = 1
_VIRTUAL_HOSTS_FIELD = 2


def build_route_configuration(route_config: ir.RouteConfig) -> route_pb2.RouteConfiguration:
    return route_pb2.RouteConfiguration(
        name=route_config.name,
        virtual_hosts=[build_virtual_host(vhost) for vhost in route_config.virtual_hosts],
    )


def encode_route_configuration(
    route_config: ir.RouteConfig, *, virtual_host_pieces: Sequence[bytes] | None = None
) -> Encoded[route_pb2.RouteConfiguration]:
    """build_route_configuration's message, serialised, joined from its hosts' pieces.

    `virtual_host_pieces`: each host's `virtual_host_piece`, in order, from
    a caller that keeps the pieces of hosts encoded before (see
    builder.py). The fields are the only two the message sets, in field
    order, as protobuf's own deterministic serialisation writes them.
    """
    pieces = virtual_host_pieces
    if pieces is None:
        pieces = [virtual_host_piece(vhost) for vhost in route_config.virtual_hosts]
    name = length_delimited(_NAME_FIELD, route_config.name.encode()) if route_config.name else b""
    return Encoded(route_pb2.RouteConfiguration, b"".join([name, *pieces]))


def virtual_host_piece(vhost: ir.VirtualHost) -> bytes:
    """`vhost` encoded as one `virtual_hosts` field of a RouteConfiguration."""
    encoded = build_virtual_host(vhost).SerializeToString(deterministic=True)
    return length_delimited(_VIRTUAL_HOSTS_FIELD, encoded)


def build_virtual_host(vhost: ir.VirtualHost) -> route_components_pb2.VirtualHost:
    shared = _shared_retries(vhost)
    built = route_components_pb2.VirtualHost(
        name=vhost.name,
        domains=vhost.domains,
        routes=[
            built for route in vhost.routes for built in build_routes(route, retries=shared is None)
        ],
    )
    if shared is not None:
        built.retry_policy.CopyFrom(retry_policy(shared))
    return built


def _shared_retries(vhost: ir.VirtualHost) -> ir.RoutePolicy | None:
    """The retry policy every forwarding route of `vhost` has, if they all have the same one.

    Said once on the virtual host rather than on each route: Envoy then
    builds one retry policy for the host instead of one per route, which
    was ~35% of its time applying a table of 300 hosts with 10 routes each
    (bench/README.md). A route with a retry policy of its own does not
    inherit the host's, so this is only done when no route differs, and
    not when a route retries nothing (it would inherit the host's).
    """
    shared: ir.RoutePolicy | None = None
    for route in vhost.routes:
        action = route.action
        if isinstance(action, ir.DirectResponse):
            continue
        policy = action.policy
        if policy.num_retries <= 0:
            return None
        if shared is None:
            shared = policy
        elif (policy.num_retries, policy.retry_on) != (shared.num_retries, shared.retry_on):
            return None
    return shared


def build_routes(route: ir.Route, *, retries: bool = True) -> list[route_components_pb2.Route]:
    """The route, preceded by the guards its policy asks for.

    A guard matches what the route matches, plus what must not be let
    through, and answers it directly. Placed right before the route, it
    keeps the route's precedence among the others. `retries` False leaves
    the route's retry policy to its virtual host.
    """
    action = route.action
    if isinstance(action, ir.DirectResponse):
        return [build_route(route)]
    guards = []
    if action.policy.client_certificate_required:
        guards.append(_client_certificate_guard(route))
    grpc_only = action.policy.grpc_only
    if grpc_only is None:
        grpc_only = ir.names_grpc_service(route.path)
    if grpc_only:
        guards.append(_not_grpc_guard(route))
    return [*guards, build_route(route, retries=retries)]


def _client_certificate_guard(route: ir.Route) -> route_components_pb2.Route:
    # Over plain HTTP, or TLS without a validated client certificate (no
    # CA could be loaded, say), the route is closed rather than open.
    guard = _guard(route, suffix="client-certificate-required")
    guard.match.tls_context.validated.value = False
    guard.direct_response.CopyFrom(
        _direct_response(ir.DirectResponse(status=FORBIDDEN, body=_CLIENT_CERTIFICATE_BODY))
    )
    return guard


def _not_grpc_guard(route: ir.Route) -> route_components_pb2.Route:
    # Every gRPC and gRPC-Web content type starts with "application/grpc"
    # (application/grpc+proto, application/grpc-web-text, ...). A request
    # without a content-type counts as empty, so it is answered too.
    guard = _guard(route, suffix="not-grpc")
    # A browser's CORS preflight for gRPC-Web carries no content-type.
    guard.match.headers.append(
        route_components_pb2.HeaderMatcher(
            name=":method",
            string_match=string_pb2.StringMatcher(exact="OPTIONS"),
            invert_match=True,
        )
    )
    guard.match.headers.append(
        route_components_pb2.HeaderMatcher(
            name="content-type",
            string_match=string_pb2.StringMatcher(prefix=GRPC_CONTENT_TYPE, ignore_case=True),
            invert_match=True,
            treat_missing_header_as_empty=True,
        )
    )
    guard.direct_response.CopyFrom(
        _direct_response(ir.DirectResponse(status=UNSUPPORTED_MEDIA_TYPE, body=_NOT_GRPC_BODY))
    )
    return guard


def _guard(route: ir.Route, *, suffix: str) -> route_components_pb2.Route:
    match = path_match(route.path)
    match.headers.extend(header_matcher(header) for header in route.headers)
    return route_components_pb2.Route(name=f"{route.name}/{suffix}", match=match)


def build_route(route: ir.Route, *, retries: bool = True) -> route_components_pb2.Route:
    match = path_match(route.path)
    match.headers.extend(header_matcher(header) for header in route.headers)
    built = route_components_pb2.Route(name=route.name, match=match)
    action = route.action
    if isinstance(action, ir.Forward):
        built.route.CopyFrom(_forward(action, retries=retries))
    elif isinstance(action, ir.WeightedForward):
        built.route.CopyFrom(_weighted_forward(action, retries=retries))
    elif isinstance(action, ir.DirectResponse):
        built.direct_response.CopyFrom(_direct_response(action))
    else:
        assert_never(action)
    if route.request_headers is not None:
        _mutate_request_headers(built, route.request_headers)
    return built


def header_matcher(header: ir.HeaderMatch) -> route_components_pb2.HeaderMatcher:
    if header.regex:
        matcher = string_pb2.StringMatcher(safe_regex=_regex(header.value))
    else:
        matcher = string_pb2.StringMatcher(exact=header.value)
    return route_components_pb2.HeaderMatcher(name=header.name, string_match=matcher)


def _regex(value: str) -> regex_pb2.RegexMatcher:
    # No engine_type: RE2 is Envoy's only (and default) engine.
    return regex_pb2.RegexMatcher(regex=value)


def _mutate_request_headers(built: route_components_pb2.Route, mutation: ir.HeaderMutation) -> None:
    overwrite = base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD
    append = base_pb2.HeaderValueOption.APPEND_IF_EXISTS_OR_ADD
    for headers, action in ((mutation.set, overwrite), (mutation.add, append)):
        built.request_headers_to_add.extend(
            base_pb2.HeaderValueOption(
                header=base_pb2.HeaderValue(key=name, value=value), append_action=action
            )
            for name, value in headers
        )
    built.request_headers_to_remove.extend(mutation.remove)


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
        case ir.PathMatchType.REGEX:
            return route_components_pb2.RouteMatch(safe_regex=_regex(path.value))
        case _:
            assert_never(path.type)


def _weighted_forward(
    action: ir.WeightedForward, *, retries: bool
) -> route_components_pb2.RouteAction:
    forward = _forward(ir.Forward(backend="", policy=action.policy), retries=retries)
    forward.ClearField("cluster")
    forward.weighted_clusters.CopyFrom(
        route_components_pb2.WeightedCluster(
            clusters=[
                route_components_pb2.WeightedCluster.ClusterWeight(
                    name=weighted.backend, weight=_uint32(weighted.weight)
                )
                for weighted in action.backends
            ]
        )
    )
    return forward


def _forward(action: ir.Forward, *, retries: bool) -> route_components_pb2.RouteAction:
    policy = action.policy
    forward = route_components_pb2.RouteAction(
        cluster=action.backend,
        # Zero turns off Envoy's 15 s route timeout, which would cut every
        # gRPC stream that lives longer than that.
        timeout=duration_pb2.Duration(),
        # Zero means "no cap": the client's grpc-timeout header is the deadline.
        max_stream_duration=route_components_pb2.RouteAction.MaxStreamDuration(
            grpc_timeout_header_max=_milliseconds(policy.grpc_timeout_max_ms)
        ),
    )
    if policy.stream_idle_timeout_ms is not None:
        # Overrides the listener's stream_idle_timeout for this route; 0 is none.
        forward.idle_timeout.CopyFrom(_milliseconds(policy.stream_idle_timeout_ms))
    if retries and policy.num_retries > 0:
        forward.retry_policy.CopyFrom(retry_policy(policy))
    if policy.hash_header is not None:
        # Only a ring-hash cluster reads it; translate/ sets it only then.
        forward.hash_policy.append(
            route_components_pb2.RouteAction.HashPolicy(
                header=route_components_pb2.RouteAction.HashPolicy.Header(
                    header_name=policy.hash_header
                )
            )
        )
    return forward


def retry_policy(policy: ir.RoutePolicy) -> route_components_pb2.RetryPolicy:
    # No per_try_timeout: a try of a stream lasts as long as the stream.
    return route_components_pb2.RetryPolicy(
        retry_on=",".join((*ALWAYS_RETRY_ON, *policy.retry_on)),
        num_retries=_uint32(policy.num_retries),
        # A retry goes to another endpoint when there is one.
        retry_host_predicate=[
            route_components_pb2.RetryPolicy.RetryHostPredicate(
                name=PREVIOUS_HOSTS,
                typed_config=typed(previous_hosts_pb2.PreviousHostsPredicate()),
            )
        ],
        host_selection_retry_max_attempts=_HOST_SELECTION_ATTEMPTS,
    )


def _milliseconds(value: int) -> duration_pb2.Duration:
    duration = duration_pb2.Duration()
    duration.FromMilliseconds(value)
    return duration


def _direct_response(action: ir.DirectResponse) -> route_components_pb2.DirectResponseAction:
    if not action.body:
        return route_components_pb2.DirectResponseAction(status=action.status)
    return route_components_pb2.DirectResponseAction(
        status=action.status, body=base_pb2.DataSource(inline_string=action.body)
    )


def _uint32(value: int) -> wrappers_pb2.UInt32Value:
    return wrappers_pb2.UInt32Value(value=value)
