"""GRPCRoute IR → Envoy routes, judged field by field and by `envoy --mode validate`."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

from envoy.config.core.v3 import base_pb2
from test_grpcroute_translate import (
    BASE,
    GREETER,
    backend_ref,
    grpc_route,
    grpc_rule,
    method,
    run,
)

from xds_ingress import ir
from xds_ingress.bootstrap import to_json
from xds_ingress.resources.builder import ResourceBuilder
from xds_ingress.resources.route import build_route
from xds_ingress.resources.static import render_static_bootstrap

ENVOY = Path(sys.executable).parent / "envoy"


def every_kind_of_match() -> ir.Translation:
    modifier = {
        "type": "RequestHeaderModifier",
        "requestHeaderModifier": {
            "set": [{"name": "x-env", "value": "prod"}],
            "add": [{"name": "x-tag", "value": "t"}],
            "remove": ["x-debug"],
        },
    }
    headers: dict[str, Any] = {
        "headers": [
            {"name": "x-canary", "value": "yes"},
            {"name": "x-user", "value": "[a-z]+", "type": "RegularExpression"},
        ]
    }
    return run(
        *BASE,
        grpc_route(
            "r",
            grpc_rule(
                {**method(GREETER, "SayHello"), **headers},
                backends=[backend_ref("b")],
                filters=[modifier],
            ),
            grpc_rule(method(GREETER), backends=[backend_ref("a", weight=1), backend_ref("b")]),
            grpc_rule(method(name="Check"), backends=[backend_ref("a")]),
            grpc_rule(
                method("pkg\\.v[0-9]+\\.Svc", "Get.*", type="RegularExpression"),
                backends=[backend_ref("a")],
            ),
            grpc_rule(backends=[backend_ref("missing")]),
        ),
    )


def test_envoy_accepts_every_kind_of_grpc_route(tmp_path: Path) -> None:
    translation = every_kind_of_match()
    bootstrap = render_static_bootstrap(
        ResourceBuilder().build(translation.config),
        node_id="validate",
        node_cluster="xds-ingress",
        admin_address=None,
    )
    path = tmp_path / "bootstrap.json"
    path.write_text(to_json(bootstrap))
    result = subprocess.run(
        [str(ENVOY), "--mode", "validate", "-c", str(path), "--log-level", "warn"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_routes_carry_headers_regexes_weights_and_header_changes() -> None:
    (http,) = [rc for rc in every_kind_of_match().config.route_configs if rc.name == "http"]
    (vhost,) = http.virtual_hosts
    built = [build_route(route) for route in vhost.routes]
    exact, weighted, method_only, regex, missing = built

    assert exact.match.path == f"/{GREETER}/SayHello"
    assert [
        (h.name, h.string_match.exact, h.string_match.safe_regex.regex) for h in exact.match.headers
    ] == [
        ("x-canary", "yes", ""),
        ("x-user", "", "[a-z]+"),
    ]
    assert [
        (o.header.key, o.header.value, o.append_action) for o in exact.request_headers_to_add
    ] == [
        ("x-env", "prod", base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD),
        ("x-tag", "t", base_pb2.HeaderValueOption.APPEND_IF_EXISTS_OR_ADD),
    ]
    assert list(exact.request_headers_to_remove) == ["x-debug"]

    assert weighted.match.prefix == f"/{GREETER}/"
    assert [(c.name, c.weight.value) for c in weighted.route.weighted_clusters.clusters] == [
        ("default/a:50051/h2c", 1),
        ("default/b:50051/h2c", 1),
    ]
    assert weighted.route.WhichOneof("cluster_specifier") == "weighted_clusters"
    # Streams never time out by the route, as for Ingress routes.
    assert weighted.route.timeout.ToMilliseconds() == 0

    assert method_only.match.safe_regex.regex == "/[^/]+/Check"
    assert regex.match.safe_regex.regex == "/(?:pkg\\.v[0-9]+\\.Svc)/(?:Get.*)"
    assert missing.direct_response.status == 503
