"""Per-method gRPC statistics for the methods routes name, delivered over ECDS.

The grpc_stats filter's allowlist is the set of gRPC methods the routes match
exactly; Envoy fetches it as a TypedExtensionConfig on the ADS stream, so a
change of the routed methods updates that resource and never a listener
(which would drain every client connection).
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import grpc
import pytest
from envoy.extensions.filters.http.grpc_stats.v3 import config_pb2 as grpc_stats_pb2
from ingress_harness import (
    GREETER_SAY_HELLO,
    NAMESPACE,
    Ingress,
    TlsClient,
    endpoint_slice,
    ingress,
    routes_to,
    rule,
    say_hello_tls,
    service,
)
from peers import wait_until
from tls_certs import CertificateAuthority, tls_secret

from xds_ingress import ir
from xds_ingress.cache import build_snapshot, consistency_errors, diff
from xds_ingress.demo.backend import GreeterBackend
from xds_ingress.demo.v1 import greeter_pb2, greeter_pb2_grpc
from xds_ingress.resources import types
from xds_ingress.resources.builder import ResourceBuilder
from xds_ingress.resources.extension_config import GRPC_STATS

pytestmark = pytest.mark.timeout(120)

GREETER = GREETER_SAY_HELLO.split("/")[1]
HOST = "stats.example.com"
ORIGIN = ir.ObjectRef(kind="Ingress", namespace="demo", name="site")


# ---------------------------------------------------------------- resources


def route(path_type: ir.PathMatchType, path: str, action: ir.RouteAction | None = None) -> ir.Route:
    return ir.Route(
        name=f"{path_type}:{path}",
        path=ir.PathMatch(type=path_type, value=path),
        action=action if action is not None else ir.Forward(backend="greeter"),
        origin=ORIGIN,
    )


def config(*routes: ir.Route) -> ir.Config:
    return ir.Config(
        listeners=(ir.Listener(name="http", address="127.0.0.1", port=8080, route_config="http"),),
        route_configs=(
            ir.RouteConfig(
                name="http",
                virtual_hosts=(ir.VirtualHost(name="site", domains=(HOST,), routes=routes),),
            ),
        ),
        backends=(
            ir.Backend(
                name="greeter",
                protocol=ir.UpstreamProtocol.H2C,
                endpoints=(ir.Endpoint("127.0.0.1", 50051),),
            ),
        ),
    )


def allowlist(resources: dict[str, dict[str, Any]]) -> dict[str, list[str]]:
    extension = resources[types.EXTENSION_CONFIG][GRPC_STATS]
    stats = grpc_stats_pb2.FilterConfig()
    assert extension.typed_config.Unpack(stats)
    # No access log reads the per-call filter state: not paid for.
    assert not stats.emit_filter_state
    # Never stats for every method a client names.
    assert not stats.stats_for_all_methods.value
    return {
        entry.name: list(entry.method_names)
        for entry in stats.individual_method_stats_allowlist.services
    }


def test_only_exactly_routed_grpc_methods_are_allowlisted() -> None:
    routes = (
        route(ir.PathMatchType.EXACT, GREETER_SAY_HELLO),
        route(ir.PathMatchType.EXACT, "/Unpackaged/Call"),
        # A GRPCRoute matching a service only, or a method by regex: its
        # methods are whatever clients send, so none is allowlisted.
        route(ir.PathMatchType.STRING_PREFIX, "/other.Service/"),
        route(ir.PathMatchType.PREFIX, "/prefix.Service/Method"),
        route(ir.PathMatchType.REGEX, "/[^/]+/Method"),
        # Not gRPC method paths, and a route that reaches no cluster.
        route(ir.PathMatchType.EXACT, "/healthz"),
        route(ir.PathMatchType.EXACT, "/a.B/c/d"),
        route(ir.PathMatchType.EXACT, "/gone.Service/Call", ir.DirectResponse(status=503)),
    )
    built = ResourceBuilder().build(config(*routes))
    assert allowlist(built) == {GREETER: ["SayHello"], "Unpackaged": ["Call"]}
    assert consistency_errors(build_snapshot(built)) == []


def test_no_exact_method_gives_per_cluster_stats_only() -> None:
    built = ResourceBuilder().build(config(route(ir.PathMatchType.STRING_PREFIX, "/")))
    assert allowlist(built) == {}
    # No listener, no connection manager: nothing names the filter config.
    assert ResourceBuilder().build(ir.Config())[types.EXTENSION_CONFIG] == {}


def test_a_changed_method_set_changes_the_extension_config_and_no_listener() -> None:
    builder = ResourceBuilder()
    before = build_snapshot(builder.build(config(route(ir.PathMatchType.EXACT, GREETER_SAY_HELLO))))
    after = build_snapshot(
        builder.build(
            config(
                route(ir.PathMatchType.EXACT, GREETER_SAY_HELLO),
                route(ir.PathMatchType.EXACT, f"/{GREETER}/SayHelloBidi"),
            )
        )
    )
    changed = {(d.type_url, name) for d in diff(before, after) for name in d.changed}
    assert changed == {(types.ROUTE, "http"), (types.EXTENSION_CONFIG, GRPC_STATS)}
    # A route change that names no new method leaves the allowlist as it was.
    again = build_snapshot(
        builder.build(
            config(
                route(ir.PathMatchType.EXACT, f"/{GREETER}/SayHelloBidi"),
                route(ir.PathMatchType.EXACT, GREETER_SAY_HELLO),
                route(ir.PathMatchType.STRING_PREFIX, "/"),
            )
        )
    )
    changed = {(d.type_url, name) for d in diff(after, again) for name in d.changed}
    assert changed == {(types.ROUTE, "http")}


def test_a_snapshot_missing_the_named_extension_config_is_inconsistent() -> None:
    built = ResourceBuilder().build(config(route(ir.PathMatchType.EXACT, GREETER_SAY_HELLO)))
    built[types.EXTENSION_CONFIG] = {}
    assert consistency_errors(build_snapshot(built)) == [
        f"listener extension config {GRPC_STATS!r} is missing"
    ]


def test_the_allowlist_sorts_the_routed_methods_out_per_service() -> None:
    built = ResourceBuilder().build(
        config(
            route(ir.PathMatchType.EXACT, f"/{GREETER}/SayHelloBidi"),
            route(ir.PathMatchType.EXACT, GREETER_SAY_HELLO),
        )
    )
    assert allowlist(built) == {GREETER: ["SayHello", "SayHelloBidi"]}


# ---------------------------------------------------------------- real Envoy


def site(*exact_methods: str) -> dict[str, Any]:
    """Exact routes for `exact_methods`, and the rest of the Greeter by prefix."""
    return ingress(
        "site",
        [
            rule(
                HOST,
                *((f"/{GREETER}/{method}", "Exact", "greeter") for method in exact_methods),
                (f"/{GREETER}/", "Prefix", "greeter"),
            )
        ],
    )


async def envoy_stats(under_test: Ingress) -> dict[str, int]:
    assert under_test.envoy is not None
    text = await asyncio.to_thread(under_test.envoy.admin_get, "/stats?format=json", timeout=5)
    return {
        stat["name"]: stat["value"]
        for stat in json.loads(text)["stats"]
        if "name" in stat and isinstance(stat.get("value"), int)
    }


def per_method(stats: dict[str, int]) -> dict[str, int]:
    """`<method>.<stat>` → value, for the Greeter's per-method counters of any cluster."""
    marker = f".grpc.{GREETER}."
    return {
        name.split(marker, 1)[1]: value
        for name, value in stats.items()
        if name.startswith("cluster.") and marker in name
    }


def listener_versions(under_test: Ingress) -> dict[str, str]:
    assert under_test.envoy is not None
    dump = json.loads(under_test.envoy.admin_get("/config_dump?resource=dynamic_listeners"))
    return {
        entry["name"]: entry["active_state"]["version_info"]
        for entry in dump["configs"]
        if "active_state" in entry
    }


async def calls(under_test: Ingress, *, count: int = 3) -> None:
    """`count` SayHello and SayHelloServerStream calls, and one invented method."""
    options = [("grpc.default_authority", HOST), ("grpc.enable_retries", 0)]
    async with grpc.aio.insecure_channel(under_test.target, options=options) as channel:
        stub = greeter_pb2_grpc.GreeterStub(channel)
        for _ in range(count):
            await stub.SayHello(greeter_pb2.HelloRequest(name="stats"), timeout=3)
            async for _reply in stub.SayHelloServerStream(
                greeter_pb2.HelloRequest(name="stats"), timeout=3
            ):
                pass
        # On the prefix route: the backend answers UNIMPLEMENTED, and the
        # made-up name must not become a stat.
        invented = channel.unary_unary(
            f"/{GREETER}/MadeUpMethod", request_serializer=None, response_deserializer=None
        )
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await invented(b"", timeout=3)
        assert raised.value.code() is grpc.StatusCode.UNIMPLEMENTED


async def test_routed_methods_get_per_method_stats_and_a_new_allowlist_touches_no_listener(
    ingress_under_test: Ingress, backends: dict[str, GreeterBackend]
) -> None:
    under_test = ingress_under_test
    under_test.config.write(
        "services.yaml", service("greeter"), endpoint_slice("greeter", backends["a"].port)
    )
    under_test.config.write("site.yaml", site("SayHello"))
    await under_test.start()
    await routes_to(under_test, HOST, "a")

    await calls(under_test)
    stats = await envoy_stats(under_test)
    methods = per_method(stats)
    # The exact route's method is counted on its own (the routes_to probe
    # calls SayHello too, so at least the 3 calls made here)...
    assert methods.get("SayHello.success", 0) >= 3, methods
    assert methods.get("SayHello.total", 0) >= 3, methods
    assert methods.get("SayHello.response_message_count", 0) >= 3, methods
    # ...the methods reached by prefix only are not, invented or real.
    assert not [name for name in methods if not name.startswith("SayHello.")], methods
    assert not [name for name in stats if "MadeUp" in name], stats
    # Those count per cluster instead: Envoy counts a call under its method
    # or under the cluster, never both.
    totals = [
        value
        for name, value in stats.items()
        if name.startswith("cluster.") and name.endswith(".grpc.total")
    ]
    assert totals and max(totals) >= 4, totals

    # Now route SayHelloServerStream exactly too: only the ECDS resource and
    # the routes change; Envoy's listeners are neither modified nor re-sent.
    reloads = f"extension_config_discovery.http_filter.{GRPC_STATS}.config_reload"
    listeners_before = listener_versions(under_test)
    before = await envoy_stats(under_test)
    assert before.get(reloads, 0) >= 1, {k: v for k, v in before.items() if "extension" in k}
    under_test.config.write("site.yaml", site("SayHello", "SayHelloServerStream"))

    async def reloaded() -> bool:
        return (await envoy_stats(under_test)).get(reloads, 0) > before[reloads]

    await wait_until(reloaded, timeout=15, interval=0.1, message="grpc_stats config reloaded")
    await calls(under_test)
    stats = await envoy_stats(under_test)
    methods = per_method(stats)
    assert methods.get("SayHelloServerStream.success", 0) >= 3, methods
    assert methods.get("SayHelloServerStream.response_message_count", 0) >= 3, methods
    assert not [name for name in stats if "MadeUp" in name], stats
    for counter in (
        "listener_manager.listener_modified",
        "listener_manager.listener_in_place_updated",
        "listener_manager.listener_added",
        "listener_manager.listener_removed",
        "listener_manager.lds.update_success",
        "listener_manager.lds.update_attempt",
    ):
        assert stats[counter] == before[counter], counter
    assert listeners_before and listener_versions(under_test) == listeners_before
    assert stats.get(f"extension_config_discovery.http_filter.{GRPC_STATS}.config_fail", 0) == 0


async def test_a_listener_added_later_gets_the_method_stats_without_waiting(
    ingress_under_test: Ingress, backends: dict[str, GreeterBackend]
) -> None:
    """The HTTPS listener appears with the first certificate, after the plain one.

    It names the same extension config, which Envoy already holds: it must
    warm at once (not wait out the initial fetch timeout) and count per method.
    """
    under_test = ingress_under_test
    under_test.config.write(
        "services.yaml", service("greeter"), endpoint_slice("greeter", backends["a"].port)
    )
    under_test.config.write("site.yaml", site("SayHello"))
    await under_test.start()
    await routes_to(under_test, HOST, "a")

    authority = CertificateAuthority()
    with_tls = site("SayHello")
    with_tls["spec"]["tls"] = [{"hosts": [HOST], "secretName": "site"}]
    under_test.config.write(
        "secret.yaml", tls_secret("site", authority.issue(HOST), namespace=NAMESPACE)
    )
    written = time.monotonic()
    under_test.config.write("site.yaml", with_tls)
    client = TlsClient(ca_pem=authority.pem, server_name=HOST)

    async def served() -> bool:
        return (await say_hello_tls(under_test, client)).backend == "a"

    await wait_until(served, timeout=15, interval=0.1, message="HTTPS listener serves")
    # Envoy's initial fetch timeout is 15 s: far below it means no waiting.
    assert time.monotonic() - written < 8
    before = per_method(await envoy_stats(under_test)).get("SayHello.success", 0)
    for _ in range(3):
        assert (await say_hello_tls(under_test, client)).backend == "a"
    stats = await envoy_stats(under_test)
    assert per_method(stats).get("SayHello.success", 0) >= before + 3
    assert stats["listener_manager.total_listeners_warming"] == 0
    assert stats["listener_manager.total_listeners_active"] == 2
    assert (
        stats.get(f"extension_config_discovery.http_filter.{GRPC_STATS}.init_fetch_timeout", 0) == 0
    )
