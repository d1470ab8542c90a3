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
from envoy.config.endpoint.v3 import endpoint_pb2

from xds_ingress import ir

_HEALTH = {
    ir.EndpointHealth.HEALTHY: health_check_pb2.HEALTHY,
    ir.EndpointHealth.DRAINING: health_check_pb2.DRAINING,
}


def build_load_assignment(backend: ir.Backend) -> endpoint_pb2.ClusterLoadAssignment:
    assignment = endpoint_pb2.ClusterLoadAssignment(cluster_name=backend.name)
    if not backend.endpoints:
        return assignment
    # Filled in place rather than built from nested constructors: a third of
    # the cost at 10 endpoints, and at 10k Services the load assignments
    # were the largest part of a build (100k endpoints).
    lb_endpoints = assignment.endpoints.add().lb_endpoints
    for endpoint in backend.endpoints:
        lb_endpoint = lb_endpoints.add()
        address = lb_endpoint.endpoint.address.socket_address
        address.address = endpoint.address
        address.port_value = endpoint.port
        lb_endpoint.health_status = _HEALTH[endpoint.health]
    return assignment
