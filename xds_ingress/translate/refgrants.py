"""ReferenceGrants: may an object in one namespace use an object in another?

Without a grant in the target's namespace, no: otherwise anyone who can
write a route could send traffic to (and read the answers of) any Service
in the cluster, and anyone who can write a Gateway could serve any
namespace's certificate and key.
"""

from __future__ import annotations

from xds_ingress.sources.objects import GATEWAY_GROUP, REFERENCE_GRANT, SECRET, SERVICE, KubeObject
from xds_ingress.store import StoreView
from xds_ingress.translate import fields


def reference_granted(view: StoreView, *, source: KubeObject, namespace: str, service: str) -> bool:
    """True if `source` (a route) may name Service `namespace`/`service`."""
    return granted(view, source=source, namespace=namespace, kind=SERVICE, name=service)


def secret_granted(view: StoreView, *, source: KubeObject, namespace: str, secret: str) -> bool:
    """True if `source` (a Gateway) may name Secret `namespace`/`secret`."""
    return granted(view, source=source, namespace=namespace, kind=SECRET, name=secret)


def granted(view: StoreView, *, source: KubeObject, namespace: str, kind: str, name: str) -> bool:
    """True if `source` may name the core-group object `kind` `namespace`/`name`."""
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
            and fields.text(entry.get("kind")) == kind
            and (fields.text(entry.get("name")) or name) == name
            for entry in map(fields.mapping, fields.items(spec.get("to")))
        )
        if granted_from and granted_to:
            return True
    return False
