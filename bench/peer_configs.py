"""The yardsticks' configurations for the data-plane scenario, written by hand.

`tuned_envoy` is the best this Envoy does here for one gRPC backend: the
fewest filters, no request ids, no dynamic stats, no per-request headers,
circuit breakers out of the way. `nginx_grpc` is the usual nginx gRPC proxy:
`grpc_pass` to an upstream with idle keepalive connections, one worker (as
Envoy gets one), no access log.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

_HCM = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3"
_ROUTER = "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"
_UPSTREAM_HTTP = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
_HIGH = 1_000_000


def _address(host: str, port: int) -> dict[str, Any]:
    return {"socket_address": {"address": host, "port_value": port}}


def tuned_envoy(*, listen_port: int, admin_port: int, backend_port: int) -> dict[str, Any]:
    connection_manager = {
        "@type": f"{_HCM}.HttpConnectionManager",
        "stat_prefix": "grpc",
        "codec_type": "HTTP2",
        "generate_request_id": False,
        "route_config": {
            "name": "backend",
            "virtual_hosts": [
                {
                    "name": "backend",
                    "domains": ["*"],
                    "routes": [
                        {"match": {"prefix": "/"}, "route": {"cluster": "backend", "timeout": "0s"}}
                    ],
                }
            ],
        },
        "http_filters": [
            {
                "name": "envoy.filters.http.router",
                "typed_config": {
                    "@type": _ROUTER,
                    "dynamic_stats": False,
                    "suppress_envoy_headers": True,
                },
            }
        ],
    }
    return {
        "node": {"id": "bench-tuned", "cluster": "bench"},
        "admin": {"address": _address("127.0.0.1", admin_port)},
        "static_resources": {
            "listeners": [
                {
                    "name": "grpc",
                    "address": _address("127.0.0.1", listen_port),
                    "filter_chains": [
                        {
                            "filters": [
                                {
                                    "name": "envoy.filters.network.http_connection_manager",
                                    "typed_config": connection_manager,
                                }
                            ]
                        }
                    ],
                }
            ],
            "clusters": [
                {
                    "name": "backend",
                    "type": "STATIC",
                    "connect_timeout": "1s",
                    "load_assignment": {
                        "cluster_name": "backend",
                        "endpoints": [
                            {
                                "lb_endpoints": [
                                    {"endpoint": {"address": _address("127.0.0.1", backend_port)}}
                                ]
                            }
                        ],
                    },
                    "circuit_breakers": {
                        "thresholds": [
                            {
                                "max_connections": _HIGH,
                                "max_pending_requests": _HIGH,
                                "max_requests": _HIGH,
                            }
                        ]
                    },
                    "typed_extension_protocol_options": {
                        _UPSTREAM_HTTP: {
                            "@type": f"type.googleapis.com/{_UPSTREAM_HTTP}",
                            "explicit_http_config": {"http2_protocol_options": {}},
                        }
                    },
                }
            ],
        },
    }


def nginx_grpc(*, workdir: Path, listen_port: int, backend_port: int) -> Path:
    """Write nginx.conf into `workdir` (with its temp folders) and return its path."""
    for folder in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"):
        (workdir / "temp" / folder).mkdir(parents=True, exist_ok=True)
    temp = workdir / "temp"
    config = f"""
daemon off;
master_process on;
worker_processes 1;
pid {workdir}/nginx.pid;
error_log {workdir}/error.log warn;
events {{ worker_connections 16384; }}
http {{
    access_log off;
    client_body_temp_path {temp}/client_body;
    proxy_temp_path {temp}/proxy;
    fastcgi_temp_path {temp}/fastcgi;
    uwsgi_temp_path {temp}/uwsgi;
    scgi_temp_path {temp}/scgi;
    http2_max_requests 1000000;
    keepalive_requests 1000000;
    upstream backend {{
        server 127.0.0.1:{backend_port};
        keepalive 256;
        keepalive_requests 1000000;
    }}
    server {{
        listen 127.0.0.1:{listen_port} http2;
        location / {{
            grpc_pass grpc://backend;
        }}
    }}
}}
"""
    path = workdir / "nginx.conf"
    path.write_text(config.lstrip())
    return path
