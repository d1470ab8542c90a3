"""ReferenceGrants: may a route in one namespace use a Service in another?

Without a grant in the Service's namespace, no: otherwise anyone who can
write a route could send traffic to (and read the answers of) any Service
in the cluster.
"""

from __future__ import annotations

from xds_ingress.sources.objects import GATEWAY_GROUP, REFERENCE_GRANT, SERVICE, KubeObject
from xds_ingress.store import StoreView
from xds_ingress.translate import fields


def reference_granted(view: StoreView, *, source: KubeObject, namespace: str, service: str) -> bool:
    """True if `source` (a route) may name Service `namespace`/`service`."""
    if source.namespace == namespace:
        return True
    for grant in view.objects(REFERENCE_GRANT):
        if grant.namespace != namespace:
            continue
        spec = fields.mapping(grant.body.get("spec"))
        granted_from = any(
            fields.text(entry.get("group")) == GATEWAY_GROUP
            and fields.text(entry.get("kind")) == source.kind
            and fields.text(entry.get("namespace")) == source.namespace
            for entry in map(fields.mapping, fields.items(spec.get("from")))
        )
        granted_to = any(
            (fields.text(entry.get("group")) or "") == ""
            and fields.text(entry.get("kind")) == SERVICE
            and (fields.text(entry.get("name")) or service) == service
            for entry in map(fields.mapping, fields.items(spec.get("to")))
        )
        if granted_from and granted_to:
            return True
    return False
