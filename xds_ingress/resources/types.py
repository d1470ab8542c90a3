"""xDS type URLs, and the order ADS sends them in."""

from __future__ import annotations

LISTENER = "type.googleapis.com/envoy.config.listener.v3.Listener"
ROUTE = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"
CLUSTER = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
ENDPOINT = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"
SECRET = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"
# ECDS: filter configs a listener names instead of inlining them.
EXTENSION_CONFIG = "type.googleapis.com/envoy.config.core.v3.TypedExtensionConfig"

# Clusters before their endpoints, listeners before their routes (xDS spec,
# "Eventual consistency considerations"). Extension configs, like secrets,
# come before the listeners that name them: a changed listener warms until
# it has them, so it should find them already there.
ADS_ORDER = (CLUSTER, ENDPOINT, SECRET, EXTENSION_CONFIG, LISTENER, ROUTE)
