"""CSDS (envoy.service.status.v3.ClientStatusDiscoveryService) from the server's side.

For every connected Envoy (optionally only those the request's node matchers
pick), one `generic_xds_configs` entry per resource it asked for, in the
standard form tools such as istioctl and grpcdebug read:

- client_status: NACKED (it rejected the version the snapshot holds now;
  error_state has its reason: a state-of-the-world stream then keeps sending
  the version it accepted before, which is no fix), ACKED (it holds the
  version we sent), REQUESTED (asked for, not yet answered), DOES_NOT_EXIST
  (asked for by name, but we have none);
- config_status: SYNCED (it ACKed what the snapshot holds now), STALE (sent,
  no answer yet), ERROR (NACKed), NOT_SENT (the snapshot holds a version
  it was not sent yet, or nothing to send);
- version_info is the resource version the Envoy accepted and xds_config that
  resource, as Envoy's own CSDS does for a NACK ("the attached config is not
  the NACKed version, but the most recent accepted one"); the rejected one
  is error_state.failed_configuration. Either is included only while the
  snapshot still holds that version: the server keeps no history.

Resources are redacted like everything inspection returns.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Callable
from typing import Any, TypeAlias

import grpc
from envoy.admin.v3 import config_dump_shared_pb2
from envoy.config.core.v3 import base_pb2
from envoy.service.status.v3 import csds_pb2, csds_pb2_grpc

from xds_ingress.cache import Snapshot
from xds_ingress.server.lookup import Context, Lookup, abort, timestamp
from xds_ingress.server.redact import Redactor
from xds_ingress.server.registry import StreamStatus, TypeStatus
from xds_ingress.server.stream import in_ads_order

CSDS_SERVICE = csds_pb2.DESCRIPTOR.services_by_name["ClientStatusDiscoveryService"].full_name

# xds-protos ships no type stubs.
ClientStatusRequest: TypeAlias = Any
ClientStatusResponse: TypeAlias = Any
NodeMatcher: TypeAlias = Any


class MatcherError(ValueError):
    """A node matcher this server cannot evaluate; the message says which part."""


def node_id_predicate(matcher: NodeMatcher) -> Callable[[str], bool]:
    """A NodeMatcher as a test of a node id (envoy.type.matcher.v3.StringMatcher)."""
    if matcher.node_metadatas:
        raise MatcherError(
            "node_matchers[].node_metadatas is not supported (the server does not keep "
            "node metadata); match on node_id"
        )
    if not matcher.HasField("node_id"):
        return lambda _node_id: True
    string = matcher.node_id
    fold: Callable[[str], str] = str.lower if string.ignore_case else str
    pattern = string.WhichOneof("match_pattern")
    if pattern == "exact":
        return lambda node_id: fold(node_id) == fold(string.exact)
    if pattern == "prefix":
        return lambda node_id: fold(node_id).startswith(fold(string.prefix))
    if pattern == "suffix":
        return lambda node_id: fold(node_id).endswith(fold(string.suffix))
    if pattern == "contains":
        return lambda node_id: fold(string.contains) in fold(node_id)
    if pattern == "safe_regex":
        try:
            regex = re.compile(string.safe_regex.regex)
        except re.error as error:
            raise MatcherError(
                f"node_matchers[].node_id.safe_regex {string.safe_regex.regex!r}: {error}"
            ) from None
        return lambda node_id: regex.fullmatch(node_id) is not None
    raise MatcherError(f"node_matchers[].node_id: {pattern or 'an empty'} matcher is not supported")


class CsdsService:
    """The CSDS servicer (FetchClientStatus, StreamClientStatus)."""

    service_names = (CSDS_SERVICE,)

    def __init__(self, *, lookup: Lookup, redactor: Redactor) -> None:
        self._lookup = lookup
        self._redactor = redactor

    def register(self, server: grpc.aio.Server) -> None:
        csds_pb2_grpc.add_ClientStatusDiscoveryServiceServicer_to_server(self, server)

    async def FetchClientStatus(
        self, request: ClientStatusRequest, context: Context
    ) -> ClientStatusResponse:
        return await self._respond(request, context)

    async def StreamClientStatus(
        self, requests: AsyncIterator[ClientStatusRequest], context: Context
    ) -> AsyncIterator[ClientStatusResponse]:
        async for request in requests:
            yield await self._respond(request, context)

    async def _respond(
        self, request: ClientStatusRequest, context: Context
    ) -> ClientStatusResponse:
        try:
            # The matchers follow OR semantics; none means every client.
            predicates = [node_id_predicate(matcher) for matcher in request.node_matchers]
        except MatcherError as error:
            await abort(context, grpc.StatusCode.INVALID_ARGUMENT, str(error))
        by_node: dict[str, list[StreamStatus]] = {}
        for status in self._lookup.registry:
            if not status.node_id:
                continue  # its first request has not arrived: nothing to report yet
            if predicates and not any(matches(status.node_id) for matches in predicates):
                continue
            by_node.setdefault(status.node_id, []).append(status)
        response = csds_pb2.ClientStatusResponse()
        for node_id in sorted(by_node):
            # An Envoy on the per-type services has one stream per type: one client.
            streams = sorted(by_node[node_id], key=lambda status: status.stream_id)
            client = response.config.add()
            client.node.CopyFrom(base_pb2.Node(id=node_id, cluster=streams[-1].node_cluster))
            for status in streams:
                snapshot = self._lookup.cache.current(status.node_cluster)
                for type_url in in_ads_order(set(status.types)):
                    client.generic_xds_configs.extend(
                        self._configs(
                            status.types[type_url],
                            snapshot,
                            with_contents=not request.exclude_resource_contents,
                        )
                    )
        return response

    def _configs(
        self, status: TypeStatus, snapshot: Snapshot | None, *, with_contents: bool
    ) -> list[Any]:
        held = snapshot.of_type(status.type_url).resources if snapshot is not None else {}
        names = set(status.sent_resources) | set(status.acked_resources) | status.subscribed
        if status.wildcard:
            names |= set(held)
        configs = []
        for name in sorted(names):
            current = held.get(name)
            sent = status.sent_resources.get(name)
            acked = status.acked_resources.get(name)
            nack = status.nacked_resources.get(name)
            rejected = nack.resources.get(name) if nack is not None else None
            if nack is not None and (current is None or rejected != current.version):
                nack = None  # the snapshot has moved on from the rejected version
            config = csds_pb2.ClientConfig.GenericXdsConfig(
                type_url=status.type_url,
                name=name,
                version_info=acked or "",
                client_status=_client_status(
                    sent=sent, acked=acked, nacked=nack is not None, exists=current is not None
                ),
            )
            config.config_status = _config_status(
                config.client_status, sent=sent, now=current.version if current else None
            )
            if nack is not None and current is not None:
                config.error_state.details = nack.message
                config.error_state.version_info = current.version
                config.error_state.last_update_attempt.CopyFrom(timestamp(nack.at))
                if with_contents:
                    config.error_state.failed_configuration.CopyFrom(
                        self._redactor.resource_any(current)
                    )
            if with_contents and current is not None and current.version == acked:
                config.xds_config.CopyFrom(self._redactor.resource_any(current))
            configs.append(config)
        return configs


def _client_status(*, sent: str | None, acked: str | None, nacked: bool, exists: bool) -> int:
    # NACKED first: a held-back resource was sent (and ACKed) at its old version.
    if nacked:
        return int(config_dump_shared_pb2.NACKED)
    if sent is not None and acked == sent:
        return int(config_dump_shared_pb2.ACKED)
    if not exists and sent is None:
        return int(config_dump_shared_pb2.DOES_NOT_EXIST)
    return int(config_dump_shared_pb2.REQUESTED)


def _config_status(client_status: int, *, sent: str | None, now: str | None) -> int:
    if client_status == config_dump_shared_pb2.NACKED:
        return int(csds_pb2.ERROR)
    if now is None or sent != now:
        # The snapshot holds nothing, or a version this Envoy was not sent yet.
        return int(csds_pb2.NOT_SENT)
    if client_status == config_dump_shared_pb2.ACKED:
        return int(csds_pb2.SYNCED)
    return int(csds_pb2.STALE)
