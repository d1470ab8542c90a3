"""The yardsticks' configurations for the data-plane scenario, written by hand.

`tuned_envoy` is the best this Envoy does here for one gRPC backend: the
fewest filters, no request ids, no dynamic stats, no per-request headers,
circuit breakers out of the way. `nginx_grpc` is the usual nginx gRPC proxy:
`grpc_pass` to an upstream with idle keepalive connections, one worker (as
Envoy gets one), no access log.
"""

from __future__ import annotations

import os
import pwd
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


def nginx_grpc(
    *, workdir: Path, listen_port: int, backend_port: int, worker_connections: int = 16384
) -> Path:
    """Write nginx.conf into `workdir` (with its temp folders) and return its path.

    `worker_connections` bounds client plus upstream connections of the
    worker; its descriptors are raised to match.
    """
    for folder in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"):
        (workdir / "temp" / folder).mkdir(parents=True, exist_ok=True)
    temp = workdir / "temp"
    config = f"""
daemon off;
master_process on;
worker_processes 1;
pid {workdir}/nginx.pid;
error_log {workdir}/error.log warn;
worker_rlimit_nofile {worker_connections + 100};
events {{ worker_connections {worker_connections}; }}
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


def nginx_empty_grpc(*, workdir: Path, listen_port: int) -> Path:
    """nginx as an h2c gRPC backend that answers every call with an empty message.

    A backend that is not the bottleneck: no Go runtime, no protobuf. The
    reply is a 5-byte gRPC frame (uncompressed, length 0: a valid empty
    message of any type) from a file, and the `grpc-status: 0` trailer.
    nginx serves no POST from a file, so the 405 it would answer is turned
    into that 200.
    """
    for folder in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"):
        (workdir / "temp" / folder).mkdir(parents=True, exist_ok=True)
    root = workdir / "www"
    root.mkdir(parents=True, exist_ok=True)
    (root / "empty.grpc").write_bytes(b"\x00\x00\x00\x00\x00")
    temp = workdir / "temp"
    # Run as root, nginx's worker would drop to `nobody`, which cannot read a
    # file in the benchmark's private (0700) work folder: stay this user.
    user = f"user {pwd.getpwuid(os.geteuid()).pw_name};" if os.geteuid() == 0 else ""
    config = f"""
daemon off;
master_process on;
worker_processes 1;
{user}
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
    server {{
        listen 127.0.0.1:{listen_port} http2;
        root {root};
        location / {{
            default_type application/grpc;
            add_trailer grpc-status 0 always;
            # Read the whole request before answering: answering first makes
            # nginx reset the stream's unread body afterwards, and a proxy
            # (nginx grpc_pass) fails the connection on that late frame.
            mirror /read-body;
            mirror_request_body on;
            try_files /empty.grpc =404;
            error_page 405 =200 /empty.grpc;
        }}
        location = /read-body {{
            internal;
            return 204;
        }}
    }}
}}
"""
    path = workdir / "nginx.conf"
    path.write_text(config.lstrip())
    return path
