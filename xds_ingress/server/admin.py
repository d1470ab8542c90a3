"""The admin API (protos/xds_ingress/admin/v1/admin.proto): Envoys, snapshots, conditions.

Read-only by construction: it sees the cache through `SnapshotInspector`,
the streams through the `StreamRegistry` they write, and conditions through
a `ConditionSource` (the status stage), and changes none of them.
Every resource leaves through the `Redactor`, so no private key does.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc

from xds_ingress.admin.v1 import admin_pb2, admin_pb2_grpc
from xds_ingress.server.conditions import ConditionSource, NoConditions, ObjectCondition
from xds_ingress.server.lookup import Context, Lookup, abort, timestamp
from xds_ingress.server.redact import Redactor, redact_text
from xds_ingress.server.registry import Nack, StreamKind, StreamStatus, TypeStatus
from xds_ingress.server.snapshot_feed import SnapshotChange, SnapshotFeed
from xds_ingress.server.stream import in_ads_order

ADMIN_SERVICE = admin_pb2.DESCRIPTOR.services_by_name["Admin"].full_name

_STREAM_KINDS = {
    StreamKind.SOTW: admin_pb2.STREAM_KIND_SOTW,
    StreamKind.DELTA: admin_pb2.STREAM_KIND_DELTA,
}


def _nack(nack: Nack) -> admin_pb2.Nack:
    return admin_pb2.Nack(
        version=nack.version,
        error=nack.message,
        at=timestamp(nack.at),
        resource_names=sorted(nack.resources),
    )


def _type_status(status: TypeStatus) -> admin_pb2.TypeStatus:
    message = admin_pb2.TypeStatus(
        type_url=status.type_url,
        sent_version=status.sent_version,
        acked_version=status.acked_version,
        wildcard=status.wildcard,
        resources_sent=len(status.sent_resources),
        resources_acked=len(status.acked_resources),
        held_back=sorted(status.held_back),
    )
    if status.last_nack is not None:
        message.last_nack.CopyFrom(_nack(status.last_nack))
    if status.sent_at:
        message.sent_at.CopyFrom(timestamp(status.sent_at))
    if status.acked_at:
        message.acked_at.CopyFrom(timestamp(status.acked_at))
    return message


def node_message(status: StreamStatus) -> admin_pb2.Node:
    return admin_pb2.Node(
        node_id=status.node_id,
        node_cluster=status.node_cluster,
        peer=status.peer,
        stream_kind=_STREAM_KINDS[status.kind],
        connected_at=timestamp(status.connected_at),
        types=[_type_status(status.types[url]) for url in in_ads_order(set(status.types))],
        stream_id=status.stream_id,
    )


def _event(change: SnapshotChange) -> admin_pb2.SnapshotEvent:
    by_type = {type_diff.type_url: type_diff for type_diff in change.changes}
    return admin_pb2.SnapshotEvent(
        node_group=change.group,
        version=change.snapshot.version,
        previous_version=change.previous.version if change.previous is not None else "",
        seen_at=timestamp(change.seen_at),
        versions_skipped=change.skipped,
        changes=[
            admin_pb2.TypeChange(
                type_url=type_url,
                version=change.snapshot.of_type(type_url).version,
                added=by_type[type_url].added,
                changed=by_type[type_url].changed,
                removed=by_type[type_url].removed,
            )
            for type_url in in_ads_order(set(by_type))
        ],
    )


class AdminService:
    """The `xds_ingress.admin.v1.Admin` servicer.

    Not a subclass of the generated AdminServicer, which is untyped and only
    adds UNIMPLEMENTED defaults; every method is here.
    """

    service_names = (ADMIN_SERVICE,)

    def __init__(
        self,
        *,
        lookup: Lookup,
        redactor: Redactor,
        conditions: ConditionSource | None = None,
    ) -> None:
        self._lookup = lookup
        self._redactor = redactor
        self._conditions: ConditionSource = conditions if conditions is not None else NoConditions()

    def register(self, server: grpc.aio.Server) -> None:
        admin_pb2_grpc.add_AdminServicer_to_server(self, server)

    async def ListNodes(
        self, request: admin_pb2.ListNodesRequest, context: Context
    ) -> admin_pb2.ListNodesResponse:
        streams = sorted(self._lookup.registry, key=lambda s: (s.node_id, s.stream_id))
        return admin_pb2.ListNodesResponse(nodes=[node_message(status) for status in streams])

    async def GetSnapshot(
        self, request: admin_pb2.GetSnapshotRequest, context: Context
    ) -> admin_pb2.GetSnapshotResponse:
        if request.node_id:
            stream = self._lookup.stream_of(request.node_id)
            if stream is None:
                await abort(
                    context, grpc.StatusCode.NOT_FOUND, self._lookup.node_error(request.node_id)
                )
            group = stream.node_cluster
        else:
            group = request.node_group
            error = self._lookup.group_error(group)
            if error is not None:
                await abort(context, grpc.StatusCode.NOT_FOUND, error)
        snapshot = self._lookup.cache.current(group)
        type_error = self._lookup.type_error(request.type_urls, snapshot)
        if type_error is not None:
            await abort(context, grpc.StatusCode.INVALID_ARGUMENT, type_error)
        if snapshot is None:
            await abort(
                context,
                grpc.StatusCode.NOT_FOUND,
                f"no snapshot has been published yet for node group {group!r}",
            )
        wanted = set(request.type_urls) or set(snapshot.types)
        response = admin_pb2.GetSnapshotResponse(
            node_group=self._lookup.served_group(group), version=snapshot.version
        )
        for type_url in in_ads_order(wanted):
            of_type = snapshot.of_type(type_url)
            response.types.append(
                admin_pb2.TypeResources(
                    type_url=type_url,
                    version=of_type.version,
                    resources=[
                        admin_pb2.SnapshotResource(
                            name=name,
                            version=resource.version,
                            resource=self._redactor.resource_any(resource),
                        )
                        for name, resource in sorted(of_type.resources.items())
                    ],
                )
            )
        return response

    async def WatchSnapshots(
        self, request: admin_pb2.WatchSnapshotsRequest, context: Context
    ) -> AsyncIterator[admin_pb2.SnapshotEvent]:
        group: str | None = None
        if request.HasField("node_group"):
            group = request.node_group
            error = self._lookup.group_error(group)
            if error is not None:
                await abort(context, grpc.StatusCode.NOT_FOUND, error)
        with SnapshotFeed(cache=self._lookup.cache, group=group) as feed:
            while True:
                for change in await feed.next():
                    yield _event(change)

    async def ListConditions(
        self, request: admin_pb2.ListConditionsRequest, context: Context
    ) -> admin_pb2.ListConditionsResponse:
        kind = request.kind.lower()
        found = [
            condition
            for condition in self._conditions.object_conditions()
            if (not kind or condition.kind.lower() == kind)
            and (not request.namespace or condition.namespace == request.namespace)
            and (not request.problems_only or condition.status != "True")
        ]
        found.sort(key=lambda c: (c.kind, c.namespace, c.name, c.type))
        return admin_pb2.ListConditionsResponse(conditions=[_condition(c) for c in found])


def _condition(condition: ObjectCondition) -> admin_pb2.Condition:
    # Messages come from translation and from Envoy, which quotes resources
    # whole: redacted like every other text inspection returns.
    return admin_pb2.Condition(
        object=admin_pb2.ObjectRef(
            kind=condition.kind,
            namespace=condition.namespace,
            name=condition.name,
            source=condition.source,
        ),
        type=condition.type,
        status=condition.status,
        reason=condition.reason,
        message=redact_text(condition.message),
        rejections=[
            admin_pb2.Rejection(
                node_id=rejected.node_id,
                node_group=rejected.group,
                type_url=rejected.type_url,
                resource_name=rejected.resource_name,
                version=rejected.version,
                error=redact_text(rejected.message),
            )
            for rejected in condition.rejections
        ],
    )
