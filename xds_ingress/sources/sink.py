"""The one seam between sources and the store.

A source that sees individual events (Kubernetes watches) calls `apply` and
`delete`; a source that can only re-read everything it owns (a folder of
files, or a Kubernetes relist after a 410) calls `replace_all`. Every call
names its `origin`, so replacing one source's objects never drops another's.
All methods are called from the event loop's thread.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from xds_ingress.sources.objects import KubeObject, ObjectKey


class ObjectSink(Protocol):
    def apply(self, obj: KubeObject, *, origin: str) -> None:
        """Add or update one object."""

    def delete(self, key: ObjectKey, *, origin: str) -> None:
        """Remove one object; unknown keys are ignored."""

    def replace_all(self, objects: Sequence[KubeObject], *, origin: str) -> None:
        """Make `objects` the complete set held for `origin`, in one change."""
