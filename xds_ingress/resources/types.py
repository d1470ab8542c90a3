"""xDS type URLs, and the order ADS sends them in."""

from __future__ import annotations

LISTENER = "type.googleapis.com/envoy.config.listener.v3.Listener"
ROUTE = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"
CLUSTER = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
ENDPOINT = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"
SECRET = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"

# Clusters before their endpoints, listeners before their routes (xDS spec,
# "Eventual consistency considerations").
ADS_ORDER = (CLUSTER, ENDPOINT, SECRET, LISTENER, ROUTE)
