"""What the admin API shows of object conditions, and where it gets them.

The server knows nothing of translation or status: app.py hands it a
`ConditionSource` (the status stage) that reports conditions in these plain
values, Envoy rejections included, and the admin API only formats them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True, kw_only=True)
class RejectedBy:
    """One Envoy's rejection of one resource behind a condition."""

    node_id: str
    group: str
    type_url: str
    resource_name: str
    version: str
    message: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ObjectCondition:
    """One condition on one source object, as Kubernetes status would hold it."""

    kind: str
    namespace: str
    name: str
    # Where the object was read (a file), or "" (Kubernetes).
    source: str
    type: str
    status: str  # "True", "False" or "Unknown"
    reason: str
    message: str
    rejections: tuple[RejectedBy, ...] = ()


class ConditionSource(Protocol):
    def object_conditions(self) -> Sequence[ObjectCondition]:
        """Every condition now; cheap enough to call per request."""
        ...


class NoConditions:
    """The source when nothing tracks status (e.g. inspection in tests)."""

    def object_conditions(self) -> Sequence[ObjectCondition]:
        return ()
