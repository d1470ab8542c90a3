"""What inspection requests name, resolved: node groups, node ids, type URLs.

Shared by the admin API and CSDS, so both answer an unknown name the same
way: NOT_FOUND or INVALID_ARGUMENT with a message that names it and lists
what exists.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, NoReturn

import grpc
from google.protobuf import timestamp_pb2

from xds_ingress.cache import DEFAULT_GROUP, Snapshot, SnapshotInspector
from xds_ingress.resources import types
from xds_ingress.server.registry import StreamRegistry, StreamStatus
from xds_ingress.server.stream import in_ads_order

Context = grpc.aio.ServicerContext[Any, Any]

# Enough names in an error message to spot a typo, few enough to read.
_NAMES_IN_ERRORS = 20


def timestamp(seconds: float) -> timestamp_pb2.Timestamp:
    whole = int(seconds)
    return timestamp_pb2.Timestamp(seconds=whole, nanos=int((seconds - whole) * 1e9))


def listing(names: Iterable[str]) -> str:
    shown = [repr(name) for name in sorted(set(names))]
    if not shown:
        return "none"
    more = len(shown) - _NAMES_IN_ERRORS
    return ", ".join(shown[:_NAMES_IN_ERRORS]) + (f" and {more} more" if more > 0 else "")


class Lookup:
    """The cache and the stream registry, as inspection requests name their parts."""

    def __init__(self, *, cache: SnapshotInspector, registry: StreamRegistry) -> None:
        self.cache = cache
        self.registry = registry

    def known_groups(self) -> set[str]:
        """Groups with a snapshot of their own, or with a connected Envoy."""
        groups = set(self.cache.groups())
        groups.update(status.node_cluster for status in self.registry if status.node_id)
        return groups

    def group_error(self, group: str) -> str | None:
        if group in self.known_groups():
            return None
        return (
            f"node group {group!r} not found: it has no snapshot and no connected Envoy "
            f"(known groups: {listing(self.known_groups())})"
        )

    def stream_of(self, node_id: str) -> StreamStatus | None:
        """The newest stream of the Envoy with this node id."""
        found = [status for status in self.registry if status.node_id == node_id]
        return max(found, key=lambda status: status.stream_id) if found else None

    def node_error(self, node_id: str) -> str:
        connected = (status.node_id for status in self.registry if status.node_id)
        return f"no connected Envoy has node id {node_id!r} (connected: {listing(connected)})"

    def served_group(self, group: str) -> str:
        """The group whose snapshot `group` is served: its own, else the default."""
        return group if group in self.cache.groups() else DEFAULT_GROUP

    def type_error(self, type_urls: Iterable[str], snapshot: Snapshot | None) -> str | None:
        valid = set(types.ADS_ORDER) | (set(snapshot.types) if snapshot is not None else set())
        unknown = sorted(set(type_urls) - valid)
        if not unknown:
            return None
        named = ", ".join(map(repr, unknown))
        return f"unknown type URL {named}; valid type URLs: {', '.join(in_ads_order(valid))}"


async def abort(context: Context, code: grpc.StatusCode, message: str) -> NoReturn:
    await context.abort(code, message)
    raise AssertionError("context.abort returned")  # it raises; this satisfies NoReturn
