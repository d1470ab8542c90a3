"""ir.Backend → envoy.config.endpoint.v3.ClusterLoadAssignment (EDS).

All endpoints sit in one locality: the IR knows nothing of zones yet. A
backend without endpoints gets an assignment with none, which Envoy needs
to finish warming the cluster (requests then fail fast with 503).

A DRAINING endpoint is excluded from load balancing, new calls and the
panic-threshold arithmetic alike, but its connections stay open, so the
calls in flight to a terminating pod finish.
"""

from __future__ import annotations

from envoy.config.core.v3 import health_check_pb2
from envoy.config.endpoint.v3 import endpoint_components_pb2, endpoint_pb2

from xds_ingress import ir
from xds_ingress.resources.core import socket_address

_HEALTH = {
    ir.EndpointHealth.HEALTHY: health_check_pb2.HEALTHY,
    ir.EndpointHealth.DRAINING: health_check_pb2.DRAINING,
}


def build_load_assignment(backend: ir.Backend) -> endpoint_pb2.ClusterLoadAssignment:
    if not backend.endpoints:
        return endpoint_pb2.ClusterLoadAssignment(cluster_name=backend.name)
    return endpoint_pb2.ClusterLoadAssignment(
        cluster_name=backend.name,
        endpoints=[
            endpoint_components_pb2.LocalityLbEndpoints(
                lb_endpoints=[
                    endpoint_components_pb2.LbEndpoint(
                        endpoint=endpoint_components_pb2.Endpoint(
                            address=socket_address(endpoint.address, endpoint.port)
                        ),
                        health_status=_HEALTH[endpoint.health],
                    )
                    for endpoint in backend.endpoints
                ]
            )
        ],
    )
