"""Status: conditions and NACKs mapped back to source objects, and written to Kubernetes.

Downstream of the pipeline and the xDS server, never in their way: the
pipeline and server only report to it (a hook, an observer) and app.py wires
them together. See stage.py for the in-memory part, kube_writer.py for what
reaches the cluster, leader.py for which replica writes.
"""

from xds_ingress.status.origins import origins
from xds_ingress.status.stage import StatusSink, StatusStage

__all__ = ["StatusSink", "StatusStage", "origins"]
