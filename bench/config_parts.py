"""The parts of the config xds-ingress renders that the data-plane ablation takes out.

Each part is a function that removes it from a static bootstrap (the JSON
form `render_static_bootstrap` writes) and fails loudly when the part is
not there: a part the product stopped rendering must not be "measured" as
a config identical to the whole.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

Bootstrap = dict[str, Any]

_HCM_TYPE: Final = "envoy.extensions.filters.network.http_connection_manager.v3"
_GRPC_STATS_TYPE: Final = "envoy.extensions.filters.http.grpc_stats.v3.FilterConfig"
_GRPC_WEB_TYPE: Final = "envoy.extensions.filters.http.grpc_web.v3.GrpcWeb"
_UPSTREAM_HTTP: Final = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"


class NotRendered(LookupError):
    """A variant's part is not in the rendered config: the product changed, so must VARIANTS."""


def _connection_managers(bootstrap: Bootstrap) -> Iterator[dict[str, Any]]:
    for listener in bootstrap["static_resources"]["listeners"]:
        for chain in listener.get("filter_chains", []):
            for network_filter in chain.get("filters", []):
                typed_config = network_filter.get("typed_config", {})
                if typed_config.get("@type", "").startswith(f"type.googleapis.com/{_HCM_TYPE}."):
                    yield typed_config


def _virtual_hosts(bootstrap: Bootstrap) -> Iterator[dict[str, Any]]:
    for manager in _connection_managers(bootstrap):
        yield from manager["route_config"]["virtual_hosts"]


def _routes(bootstrap: Bootstrap) -> Iterator[dict[str, Any]]:
    for virtual_host in _virtual_hosts(bootstrap):
        yield from virtual_host["routes"]


def _clusters(bootstrap: Bootstrap) -> list[dict[str, Any]]:
    clusters: list[dict[str, Any]] = bootstrap["static_resources"]["clusters"]
    return clusters


def _pop_from_each(items: Iterator[dict[str, Any]], key: str, *, what: str) -> None:
    """Remove `key` from every item; at least one must have had it."""
    found = [item.pop(key) for item in items if key in item]
    if not found:
        raise NotRendered(f"no {what} ({key}) in the rendered config")


def _without_http_filter(type_name: str) -> Callable[[Bootstrap], None]:
    def remove(bootstrap: Bootstrap) -> None:
        removed = 0
        for manager in _connection_managers(bootstrap):
            kept = [
                http_filter
                for http_filter in manager["http_filters"]
                if not http_filter.get("typed_config", {}).get("@type", "").endswith(type_name)
            ]
            removed += len(manager["http_filters"]) - len(kept)
            manager["http_filters"] = kept
        if not removed:
            raise NotRendered(f"no {type_name} filter in the rendered config")

    return remove


def _without_retry_policy(bootstrap: Bootstrap) -> None:
    route_actions = (route["route"] for route in _routes(bootstrap) if "route" in route)
    hosts = list(_virtual_hosts(bootstrap))
    had = any("retry_policy" in host for host in hosts)
    for host in hosts:
        host.pop("retry_policy", None)
    for action in route_actions:
        had = action.pop("retry_policy", None) is not None or had
    if not had:
        raise NotRendered("no retry_policy in the rendered config")


def _without_max_stream_duration(bootstrap: Bootstrap) -> None:
    actions = (route["route"] for route in _routes(bootstrap) if "route" in route)
    _pop_from_each(actions, "max_stream_duration", what="gRPC timeout (max_stream_duration)")


def _without_route_names(bootstrap: Bootstrap) -> None:
    _pop_from_each(_routes(bootstrap), "name", what="route names")


def _without_remote_address(bootstrap: Bootstrap) -> None:
    _pop_from_each(_connection_managers(bootstrap), "use_remote_address", what="edge mode")


def _without_connection_timeouts(bootstrap: Bootstrap) -> None:
    _pop_from_each(
        _connection_managers(bootstrap),
        "common_http_protocol_options",
        what="connection idle and maximum durations",
    )


def _without_host_port_stripping(bootstrap: Bootstrap) -> None:
    _pop_from_each(_connection_managers(bootstrap), "strip_any_host_port", what="host port strip")


def _with_default_http2_windows(bootstrap: Bootstrap) -> None:
    _pop_from_each(
        _connection_managers(bootstrap), "http2_protocol_options", what="downstream HTTP/2 options"
    )
    upstream = [
        cluster["typed_extension_protocol_options"][_UPSTREAM_HTTP]["explicit_http_config"]
        for cluster in _clusters(bootstrap)
        if _UPSTREAM_HTTP in cluster.get("typed_extension_protocol_options", {})
    ]
    if not upstream:
        raise NotRendered("no upstream HTTP/2 options in the rendered config")
    for explicit in upstream:
        explicit["http2_protocol_options"] = {}


def _without_outlier_detection(bootstrap: Bootstrap) -> None:
    _pop_from_each(iter(_clusters(bootstrap)), "outlier_detection", what="outlier detection")


def _without_circuit_breaker_tracking(bootstrap: Bootstrap) -> None:
    thresholds = [
        threshold
        for cluster in _clusters(bootstrap)
        for threshold in cluster.get("circuit_breakers", {}).get("thresholds", [])
    ]
    _pop_from_each(iter(thresholds), "track_remaining", what="remaining-capacity gauges")
    _pop_from_each(iter(thresholds), "retry_budget", what="retry budget")


@dataclass(frozen=True, slots=True)
class Variant:
    what: str  # the part taken out, as the README names it
    remove: Callable[[Bootstrap], None]


# Every difference between the rendered config and the hand-tuned one that
# could cost per call; together (`all`) they should leave what the tuned
# config costs.
VARIANTS: Final[Mapping[str, Variant]] = {
    "grpc_stats": Variant("the grpc_stats filter", _without_http_filter(_GRPC_STATS_TYPE)),
    "grpc_web": Variant("the gRPC-Web filter", _without_http_filter(_GRPC_WEB_TYPE)),
    "retry_policy": Variant("the retry policy", _without_retry_policy),
    "grpc_timeout": Variant(
        "max_stream_duration (grpc-timeout honoured)", _without_max_stream_duration
    ),
    "route_names": Variant("route names", _without_route_names),
    "remote_address": Variant("use_remote_address (edge X-Forwarded-For)", _without_remote_address),
    "connection_timeouts": Variant(
        "connection idle timeout and maximum duration", _without_connection_timeouts
    ),
    "host_port_strip": Variant("strip_any_host_port", _without_host_port_stripping),
    "http2_windows": Variant("the HTTP/2 window and stream settings", _with_default_http2_windows),
    "outlier_detection": Variant("outlier detection", _without_outlier_detection),
    "breaker_tracking": Variant(
        "track_remaining and the retry budget", _without_circuit_breaker_tracking
    ),
}


# Parts that each cost less than this machine's noise (~2 µs per call over
# 5 runs) can still add up: the groups are measured too.
GROUPS: Final[Mapping[str, tuple[str, ...]]] = {
    "http_filters": ("grpc_stats", "grpc_web"),
    "route_parts": ("retry_policy", "grpc_timeout", "route_names"),
    "connection_manager_parts": (
        "remote_address",
        "connection_timeouts",
        "host_port_strip",
        "http2_windows",
    ),
    "cluster_parts": ("outlier_detection", "breaker_tracking"),
}


def variant_bootstrap(rendered: Bootstrap, names: Sequence[str]) -> Bootstrap:
    """`rendered` with the parts of the named VARIANTS taken out (a copy)."""
    bootstrap = copy.deepcopy(rendered)
    for name in names:
        VARIANTS[name].remove(bootstrap)
    return bootstrap
