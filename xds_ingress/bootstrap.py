"""The Envoy bootstrap that points an Envoy at this control plane.

Everything but the control plane's own cluster arrives over one ADS stream
(incremental by default), so the bootstrap is small and the same for every
Envoy of a node cluster apart from its node id.

With `ClientTls` the connection to the control plane is mTLS: Envoy presents
its client certificate and checks the control plane's against a CA and the
name it dialled. The files are read from Envoy's filesystem (a mounted
Secret in manifests/), not from the machine rendering the bootstrap.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import yaml
from envoy.config.bootstrap.v3 import bootstrap_pb2
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import (
    backoff_pb2,
    base_pb2,
    config_source_pb2,
    grpc_service_pb2,
    protocol_pb2,
)
from envoy.config.endpoint.v3 import endpoint_components_pb2, endpoint_pb2
from envoy.extensions.transport_sockets.tls.v3 import common_pb2, tls_pb2
from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2 as upstream_http_pb2
from envoy.type.matcher.v3 import string_pb2
from google.protobuf import duration_pb2, wrappers_pb2

from xds_ingress.resources.cluster import TLS_TRANSPORT_SOCKET, UPSTREAM_HTTP_PROTOCOL_OPTIONS
from xds_ingress.resources.core import (
    ads_config_source,
    bootstrap_shell,
    parse_host_port,
    seconds,
    socket_address,
    to_document,
    typed,
)

XDS_CLUSTER = "xds_cluster"

# The xDS server accepts messages this large (server/grpc_server.py,
# MAX_MESSAGE_BYTES); the snapshot of a big cluster exceeds gRPC's 4 MiB.
MAX_XDS_MESSAGE_BYTES = 64 * 1024 * 1024
# Pings find a control plane that vanished without closing the connection
# (a node lost, a partition) within ~20 s, so Envoy reconnects elsewhere. Our
# xDS server permits pings every 5 s; a stock gRPC server only every 5 min.
_KEEPALIVE_INTERVAL_SECONDS = 15
_KEEPALIVE_TIMEOUT_SECONDS = 5
_CONNECT_TIMEOUT_SECONDS = 1
# How soon Envoy opens a new ADS stream after losing one (jittered,
# doubling up to the maximum). Envoy's default maximum is 30 s: a control
# plane back after a restart would wait that long for its Envoys; capped at
# 5 s a thousand Envoys still spread their reconnects over seconds.
_RECONNECT_BASE_MILLISECONDS = 250
_RECONNECT_MAX_SECONDS = 5


@dataclass(frozen=True, slots=True)
class ClientTls:
    """mTLS to the control plane, as paths in Envoy's filesystem.

    `server_name` is the name the control plane's certificate must carry
    (a DNS or IP subject alternative name) and the SNI Envoy sends; None
    means the host of the xDS address.
    """

    cert_file: str
    key_file: str
    ca_file: str
    server_name: str | None = None


def render_bootstrap(
    *,
    xds_address: str | Sequence[str],
    node_id: str,
    node_cluster: str,
    admin_address: str | None = "127.0.0.1:9901",
    delta: bool = True,
    tls: ClientTls | None = None,
) -> dict[str, Any]:
    """A JSON-able Envoy bootstrap; `xds_address` and `admin_address` are HOST:PORT.

    Several xDS addresses (control-plane replicas outside a Service) become
    endpoints of the one xDS cluster: when the stream to one fails, Envoy's
    next attempt goes to another. Without `tls` Envoy speaks plaintext to
    the control plane (`serve --insecure`).

    Raises ValueError when an address is not HOST:PORT.
    """
    bootstrap = bootstrap_shell(
        node_id=node_id, node_cluster=node_cluster, admin_address=admin_address
    )
    api_type = (
        config_source_pb2.ApiConfigSource.DELTA_GRPC
        if delta
        else config_source_pb2.ApiConfigSource.GRPC
    )
    bootstrap.dynamic_resources.CopyFrom(
        bootstrap_pb2.Bootstrap.DynamicResources(
            ads_config=config_source_pb2.ApiConfigSource(
                api_type=api_type,
                transport_api_version=config_source_pb2.V3,
                grpc_services=[
                    grpc_service_pb2.GrpcService(
                        envoy_grpc=grpc_service_pb2.GrpcService.EnvoyGrpc(
                            cluster_name=XDS_CLUSTER,
                            max_receive_message_length=wrappers_pb2.UInt32Value(
                                value=MAX_XDS_MESSAGE_BYTES
                            ),
                            retry_policy=base_pb2.RetryPolicy(
                                retry_back_off=backoff_pb2.BackoffStrategy(
                                    base_interval=duration_pb2.Duration(
                                        nanos=_RECONNECT_BASE_MILLISECONDS * 1_000_000
                                    ),
                                    max_interval=seconds(_RECONNECT_MAX_SECONDS),
                                )
                            ),
                        )
                    )
                ],
                # The node is the same on every request; say it once per stream.
                set_node_on_first_message_only=True,
            ),
            lds_config=ads_config_source(),
            cds_config=ads_config_source(),
        )
    )
    addresses = [xds_address] if isinstance(xds_address, str) else list(xds_address)
    if not addresses:
        raise ValueError("expected at least one xDS address")
    cluster = _xds_cluster([parse_host_port(address) for address in addresses])
    if tls is not None:
        server_name = tls.server_name or parse_host_port(addresses[0])[0]
        cluster.transport_socket.CopyFrom(
            base_pb2.TransportSocket(
                name=TLS_TRANSPORT_SOCKET, typed_config=typed(_client_tls(tls, server_name))
            )
        )
    bootstrap.static_resources.clusters.append(cluster)
    return to_document(bootstrap)


def _client_tls(tls: ClientTls, server_name: str) -> tls_pb2.UpstreamTlsContext:
    """Present Envoy's certificate; accept only the CA's certificate for `server_name`."""
    san_type = (
        common_pb2.SubjectAltNameMatcher.IP_ADDRESS
        if _is_ip(server_name)
        else common_pb2.SubjectAltNameMatcher.DNS
    )
    return tls_pb2.UpstreamTlsContext(
        # SNI must be a host name; an IP literal is not sent.
        sni="" if _is_ip(server_name) else server_name,
        common_tls_context=tls_pb2.CommonTlsContext(
            # gRPC servers expect ALPN h2 on TLS.
            alpn_protocols=["h2"],
            tls_certificates=[
                common_pb2.TlsCertificate(
                    certificate_chain=base_pb2.DataSource(filename=tls.cert_file),
                    private_key=base_pb2.DataSource(filename=tls.key_file),
                )
            ],
            validation_context=common_pb2.CertificateValidationContext(
                trusted_ca=base_pb2.DataSource(filename=tls.ca_file),
                match_typed_subject_alt_names=[
                    common_pb2.SubjectAltNameMatcher(
                        san_type=san_type,
                        matcher=string_pb2.StringMatcher(exact=server_name),
                    )
                ],
            ),
        ),
    )


def _xds_cluster(addresses: Sequence[tuple[str, int]]) -> cluster_pb2.Cluster:
    return cluster_pb2.Cluster(
        name=XDS_CLUSTER,
        # A Kubernetes Service name needs resolving; an IP literal does not.
        type=(
            cluster_pb2.Cluster.STATIC
            if all(_is_ip(host) for host, _port in addresses)
            else cluster_pb2.Cluster.STRICT_DNS
        ),
        connect_timeout=seconds(_CONNECT_TIMEOUT_SECONDS),
        load_assignment=endpoint_pb2.ClusterLoadAssignment(
            cluster_name=XDS_CLUSTER,
            endpoints=[
                endpoint_components_pb2.LocalityLbEndpoints(
                    lb_endpoints=[
                        endpoint_components_pb2.LbEndpoint(
                            endpoint=endpoint_components_pb2.Endpoint(
                                address=socket_address(host, port)
                            )
                        )
                        for host, port in addresses
                    ]
                )
            ],
        ),
        typed_extension_protocol_options={
            # gRPC needs HTTP/2, said outright: with TLS ALPN would agree on it,
            # in plaintext (--insecure) nothing else would.
            UPSTREAM_HTTP_PROTOCOL_OPTIONS: typed(
                upstream_http_pb2.HttpProtocolOptions(
                    explicit_http_config=upstream_http_pb2.HttpProtocolOptions.ExplicitHttpConfig(
                        http2_protocol_options=protocol_pb2.Http2ProtocolOptions(
                            connection_keepalive=protocol_pb2.KeepaliveSettings(
                                interval=seconds(_KEEPALIVE_INTERVAL_SECONDS),
                                timeout=seconds(_KEEPALIVE_TIMEOUT_SECONDS),
                            )
                        )
                    )
                )
            )
        },
    )


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def to_yaml(document: Mapping[str, Any], *, comment: str = "") -> str:
    """YAML for a bootstrap file, with `comment` as a leading `#` block."""
    header = "".join(f"# {line}".rstrip() + "\n" for line in comment.splitlines())
    return header + yaml.safe_dump(dict(document), sort_keys=False, default_flow_style=False)


def to_json(document: Mapping[str, Any]) -> str:
    return json.dumps(document, indent=2) + "\n"
