"""How old an object is, for "the older one wins" between objects that contest something."""

from __future__ import annotations

from datetime import UTC, datetime

from xds_ingress.sources.objects import KubeObject
from xds_ingress.translate import fields

# Sorts oldest first: (no readable creationTimestamp, timestamp, namespace, name).
AgeKey = tuple[bool, float, str, str]


def age(obj: KubeObject) -> AgeKey:
    """Oldest first; objects without a readable creationTimestamp after all others."""
    stamp = fields.text(obj.metadata.get("creationTimestamp"))
    try:
        created = datetime.fromisoformat(stamp) if stamp else None
    except ValueError:
        created = None
    if created is None:
        return (True, 0.0, obj.namespace, obj.name)
    if created.tzinfo is None:
        created = created.replace(tzinfo=UTC)
    return (False, created.timestamp(), obj.namespace, obj.name)
