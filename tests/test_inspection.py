"""Inspection in-process: redaction, per-resource CSDS status, slow WatchSnapshots clients.

A grpc.aio client plays Envoy (as in test_xds_protocol.py) so NACKs and
stalls can be driven exactly; the real Envoy and grpcurl are in
test_admin_api.py.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
from envoy.admin.v3 import config_dump_shared_pb2
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import base_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.extensions.transport_sockets.tls.v3 import common_pb2, secret_pb2, tls_pb2
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2
from envoy.service.status.v3 import csds_pb2, csds_pb2_grpc
from google.protobuf import descriptor
from google.protobuf.message import Message
from google.rpc import status_pb2
from peers import run_grpcurl, wait_until
from udpa.annotations import sensitive_pb2

from xds_ingress.admin.v1 import admin_pb2, admin_pb2_grpc
from xds_ingress.cache import DEFAULT_GROUP, Snapshot, SnapshotCache, build_snapshot
from xds_ingress.resources import types
from xds_ingress.server.blame import blamed, mentions
from xds_ingress.server.conditions import ObjectCondition, RejectedBy
from xds_ingress.server.grpc_server import inspection_services, start_grpc_server
from xds_ingress.server.redact import REDACTED, SENSITIVE_TEXT_FIELDS, Redactor, redact_text
from xds_ingress.server.services import XdsServer
from xds_ingress.server.snapshot_feed import SnapshotFeed

pytestmark = pytest.mark.timeout(30)

NODE = base_pb2.Node(id="envoy-1", cluster="edge")
ADMIN = "/xds_ingress.admin.v1.Admin"
CSDS = "/envoy.service.status.v3.ClientStatusDiscoveryService"


class Conditions:
    """A ConditionSource whose conditions the test sets."""

    def __init__(self) -> None:
        self.held: list[ObjectCondition] = []

    def object_conditions(self) -> list[ObjectCondition]:
        return self.held


@dataclass
class Served:
    cache: SnapshotCache
    xds: XdsServer
    channel: grpc.aio.Channel
    target: str
    conditions: Conditions


@pytest.fixture
async def served() -> AsyncIterator[Served]:
    cache = SnapshotCache()
    xds = XdsServer(cache=cache)
    conditions = Conditions()
    server, port = await start_grpc_server(
        services=(
            xds,
            *inspection_services(cache=cache, registry=xds.registry, conditions=conditions),
        ),
        address="127.0.0.1:0",
    )
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    yield Served(
        cache=cache,
        xds=xds,
        channel=channel,
        target=f"127.0.0.1:{port}",
        conditions=conditions,
    )
    await channel.close(None)
    await server.stop(grace=None)


class FakeEnvoy:
    """One ADS stream; reads in a task of its own (see test_xds_protocol.Client)."""

    def __init__(self, call: grpc.aio.StreamStreamCall) -> None:  # type: ignore[type-arg]
        self.call = call
        self.received: asyncio.Queue[object] = asyncio.Queue()
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        async for response in self.call:
            await self.received.put(response)

    async def recv(self) -> object:
        return await asyncio.wait_for(self.received.get(), 5)

    def close(self) -> None:
        self.call.cancel()
        self._reader.cancel()


def cluster(name: str, *, timeout_seconds: int = 1) -> cluster_pb2.Cluster:
    made = cluster_pb2.Cluster(name=name, type=cluster_pb2.Cluster.STATIC)
    made.connect_timeout.seconds = timeout_seconds
    return made


# ------------------------------------------------------------------ redaction


@dataclass(frozen=True)
class KeyMaterial:
    """Secret values, each unique to one test run, so a find is a real leak."""

    private_key: str
    password: str
    ticket_key: bytes
    generic: str
    listener_key: str
    certificate: str

    @classmethod
    def fresh(cls) -> KeyMaterial:
        tag = uuid.uuid4().hex
        return cls(
            private_key=(
                f"-----BEGIN PRIVATE KEY-----\nMIIEvPRIVATEKEY{tag}\n-----END PRIVATE KEY-----\n"
            ),
            password=f"PASSWORD{tag}",
            ticket_key=f"TICKETKEY{tag}".encode() * 3,
            generic=f"GENERICSECRET{tag}",
            listener_key=f"INLINELISTENERKEY{tag}",
            certificate=f"CERTIFICATECHAIN{tag}",
        )

    def secrets(self) -> list[bytes]:
        """What must never be found: a distinctive piece of each value."""
        return [
            self.private_key.splitlines()[1].encode(),
            self.password.encode(),
            self.ticket_key[:20],
            self.generic.encode(),
            self.listener_key.encode(),
        ]


def secret_resources(keys: KeyMaterial) -> dict[str, dict[str, Message]]:
    certificate = secret_pb2.Secret(name="demo/tls")
    certificate.tls_certificate.certificate_chain.inline_string = keys.certificate
    certificate.tls_certificate.private_key.inline_string = keys.private_key
    certificate.tls_certificate.password.inline_string = keys.password
    tickets = secret_pb2.Secret(name="demo/tickets")
    tickets.session_ticket_keys.keys.add().inline_bytes = keys.ticket_key
    generic = secret_pb2.Secret(name="demo/generic")
    generic.generic_secret.secret.inline_string = keys.generic
    generic.generic_secret.secrets["token"].inline_string = keys.generic
    # A private key inline in a listener, two Anys deep (transport_socket).
    context = tls_pb2.DownstreamTlsContext()
    inline = context.common_tls_context.tls_certificates.add()
    inline.certificate_chain.inline_string = keys.certificate
    inline.private_key.inline_string = keys.listener_key
    listener = listener_pb2.Listener(name="https")
    listener.filter_chains.add().transport_socket.typed_config.Pack(context)
    return {
        types.SECRET: {s.name: s for s in (certificate, tickets, generic)},
        types.LISTENER: {"https": listener},
        types.CLUSTER: {"a": cluster("a")},
    }


async def unary_bytes(channel: grpc.aio.Channel, method: str, request: object) -> bytes:
    """The raw response bytes, so nothing is lost to decoding."""
    call = channel.unary_unary(
        method,
        request_serializer=lambda message: message.SerializeToString(),
        response_deserializer=None,
    )
    reply: bytes = await call(request, timeout=5)
    return reply


async def dump_everything(served: Served) -> list[bytes]:
    """Every response inspection can give about this server, as bytes."""
    dumps: list[bytes] = []
    channel = served.channel
    dumps.append(await unary_bytes(channel, f"{ADMIN}/ListNodes", admin_pb2.ListNodesRequest()))
    dumps.append(
        await unary_bytes(channel, f"{ADMIN}/ListConditions", admin_pb2.ListConditionsRequest())
    )
    for request in (
        admin_pb2.GetSnapshotRequest(),
        admin_pb2.GetSnapshotRequest(node_id=NODE.id),
        admin_pb2.GetSnapshotRequest(node_group="edge", type_urls=[types.SECRET]),
        admin_pb2.GetSnapshotRequest(type_urls=[types.LISTENER]),
    ):
        dumps.append(await unary_bytes(channel, f"{ADMIN}/GetSnapshot", request))
    for request in (
        csds_pb2.ClientStatusRequest(),
        csds_pb2.ClientStatusRequest(exclude_resource_contents=True),
    ):
        dumps.append(await unary_bytes(channel, f"{CSDS}/FetchClientStatus", request))
    stream = csds_pb2_grpc.ClientStatusDiscoveryServiceStub(channel).StreamClientStatus(
        iter([csds_pb2.ClientStatusRequest()])
    )
    dumps += [response.SerializeToString() async for response in stream]
    for watch in (
        admin_pb2.WatchSnapshotsRequest(),
        admin_pb2.WatchSnapshotsRequest(node_group=""),
    ):
        call = admin_pb2_grpc.AdminStub(channel).WatchSnapshots(watch)
        dumps.append((await call.read()).SerializeToString())
        call.cancel()
    # And what grpcurl prints, Anys decoded through reflection.
    for method, data in (
        ("xds_ingress.admin.v1.Admin/GetSnapshot", "{}"),
        ("envoy.service.status.v3.ClientStatusDiscoveryService/FetchClientStatus", "{}"),
        ("xds_ingress.admin.v1.Admin/ListNodes", "{}"),
        ("xds_ingress.admin.v1.Admin/ListConditions", "{}"),
    ):
        code, out, err = await run_grpcurl(["-plaintext", "-d", data, served.target, method])
        assert code == 0, err
        dumps.append(out.encode())
    return dumps


async def test_no_key_material_leaves_through_inspection_or_logs(
    served: Served, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="xds_ingress")
    keys = KeyMaterial.fresh()
    resources = secret_resources(keys)
    served.cache.set_snapshot(DEFAULT_GROUP, build_snapshot(resources))
    envoy = FakeEnvoy(
        ads_pb2_grpc.AggregatedDiscoveryServiceStub(served.channel).DeltaAggregatedResources()
    )
    await envoy.call.write(
        discovery_pb2.DeltaDiscoveryRequest(
            node=NODE,
            type_url=types.SECRET,
            resource_names_subscribe=sorted(resources[types.SECRET]),
        )
    )
    sent = await envoy.recv()
    assert isinstance(sent, discovery_pb2.DeltaDiscoveryResponse)
    # The Envoy really was sent the keys (this is no test of an empty dump)...
    assert keys.password.encode() in sent.SerializeToString()
    # ...and rejects them quoting the Secret whole, as Envoy's proto
    # validation errors do ("Proto constraint validation failed (...): <message>").
    quoted = str(resources[types.SECRET]["demo/tls"])
    await envoy.call.write(
        discovery_pb2.DeltaDiscoveryRequest(
            type_url=types.SECRET,
            response_nonce=sent.nonce,
            error_detail=status_pb2.Status(
                code=3, message=f"Proto constraint validation failed (bad): {quoted}"
            ),
        )
    )
    await envoy.call.write(discovery_pb2.DeltaDiscoveryRequest(type_url=types.LISTENER))
    await envoy.recv()

    async def nacked() -> bool:
        return served.xds.metrics.nack_count(types.SECRET) == 1

    await wait_until(nacked, message="the NACK recorded")
    # Condition texts carry what translation and Envoy said, quotes included.
    served.conditions.held.append(
        ObjectCondition(
            kind="Secret",
            namespace="demo",
            name="tls",
            source="",
            type="Programmed",
            status="False",
            reason="Rejected",
            message=f"Envoy rejected secret demo/tls: {quoted}",
            rejections=(
                RejectedBy(
                    node_id=NODE.id,
                    group=NODE.cluster,
                    type_url=types.SECRET,
                    resource_name="demo/tls",
                    version="v1",
                    message=quoted,
                ),
            ),
        )
    )
    dumps = await dump_everything(served)
    logs = "\n".join(record.getMessage() for record in caplog.records).encode()
    for secret in keys.secrets():
        for index, dump in enumerate(dumps):
            assert secret not in dump, f"dump {index} holds {secret!r}"
        assert secret not in logs, f"the log holds {secret!r}"
    everything = b"".join(dumps)
    # Redacted, not dropped: what is not secret is still there to inspect.
    assert keys.certificate.encode() in everything
    assert REDACTED.encode() in everything
    assert b"Proto constraint validation failed" in everything
    envoy.close()


def test_redact_text_removes_keys_and_sensitive_fields() -> None:
    keys = KeyMaterial.fresh()
    message = secret_pb2.Secret(name="x")
    message.tls_certificate.private_key.inline_bytes = keys.private_key.encode()
    message.tls_certificate.password.inline_string = keys.password
    message.tls_certificate.certificate_chain.inline_string = keys.certificate
    for text in (str(message), " ".join(str(message).split()), keys.private_key):
        redacted = redact_text(f"rejected: {text} (end)")
        assert keys.password not in redacted
        assert "PRIVATEKEY" not in redacted
        assert redacted.endswith("(end)") or "(end)" in redacted
    assert keys.certificate in redact_text(str(message))
    # A key cut off mid-way (a truncated error text) goes too.
    assert "PRIVATEKEY" not in redact_text(keys.private_key[:40])


def test_the_text_field_list_covers_every_sensitive_tls_field() -> None:
    found: set[str] = set()
    seen: set[str] = set()
    stack = [
        secret_pb2.Secret.DESCRIPTOR,
        tls_pb2.DownstreamTlsContext.DESCRIPTOR,
        tls_pb2.UpstreamTlsContext.DESCRIPTOR,
        common_pb2.TlsCertificate.DESCRIPTOR,
    ]
    while stack:
        current = stack.pop()
        if current.full_name in seen:
            continue
        seen.add(current.full_name)
        for field in current.fields:
            if field.GetOptions().Extensions[sensitive_pb2.sensitive]:
                found.add(field.name)
            if field.type == descriptor.FieldDescriptor.TYPE_MESSAGE:
                stack.append(field.message_type)
    # typed_config (a private key provider's) is printed as escaped bytes, in
    # which a PEM key is still caught by its BEGIN/END lines.
    assert found - {"typed_config"} <= set(SENSITIVE_TEXT_FIELDS)


def test_a_resource_without_secrets_is_returned_as_sent() -> None:
    redactor = Redactor()
    plain = cluster("a")
    assert redactor.redact(plain) is plain


# ------------------------------------------------------------------ CSDS


async def sotw_response(envoy: FakeEnvoy) -> discovery_pb2.DiscoveryResponse:
    response = await envoy.recv()
    assert isinstance(response, discovery_pb2.DiscoveryResponse)
    return response


def timeouts(response: discovery_pb2.DiscoveryResponse) -> dict[str, int]:
    """Cluster name -> connect_timeout seconds: which version of each was sent."""
    found = {}
    for packed in response.resources:
        message = cluster_pb2.Cluster()
        packed.Unpack(message)
        found[message.name] = message.connect_timeout.seconds
    return found


async def ack(envoy: FakeEnvoy, response: discovery_pb2.DiscoveryResponse) -> None:
    await envoy.call.write(
        discovery_pb2.DiscoveryRequest(
            type_url=types.CLUSTER,
            version_info=response.version_info,
            response_nonce=response.nonce,
        )
    )


async def nack(
    envoy: FakeEnvoy, response: discovery_pb2.DiscoveryResponse, *, keeps: str, message: str
) -> None:
    await envoy.call.write(
        discovery_pb2.DiscoveryRequest(
            type_url=types.CLUSTER,
            version_info=keeps,
            response_nonce=response.nonce,
            error_detail=status_pb2.Status(code=3, message=message),
        )
    )


async def csds_clusters(served: Served) -> dict[str, Any]:
    stub = csds_pb2_grpc.ClientStatusDiscoveryServiceStub(served.channel)
    response = await stub.FetchClientStatus(csds_pb2.ClientStatusRequest(), timeout=5)
    (client,) = response.config
    return {config.name: config for config in client.generic_xds_configs}


def clusters(**timeouts: int) -> Snapshot:
    return build_snapshot(
        {types.CLUSTER: {name: cluster(name, timeout_seconds=t) for name, t in timeouts.items()}}
    )


async def test_sotw_nack_holds_back_only_the_named_resource_until_it_changes(
    served: Served,
) -> None:
    served.cache.set_snapshot("edge", clusters(a=1, b=1))
    envoy = FakeEnvoy(
        ads_pb2_grpc.AggregatedDiscoveryServiceStub(served.channel).StreamAggregatedResources()
    )
    await envoy.call.write(discovery_pb2.DiscoveryRequest(node=NODE, type_url=types.CLUSTER))
    first = await sotw_response(envoy)
    await ack(envoy, first)

    async def acked(response: discovery_pb2.DiscoveryResponse) -> bool:
        (status,) = list(served.xds.registry)
        return bool(status.of_type(types.CLUSTER).acked_version == response.version_info)

    # An ACK that crosses a newer response has a stale nonce and is ignored.
    await wait_until(lambda: acked(first), message="the first response ACKed")
    # b changes and c appears; the Envoy rejects that response, naming b
    # (and a word, "cluster", that contains the name "c").
    served.cache.set_snapshot("edge", clusters(a=1, b=2, c=1))
    second = await sotw_response(envoy)
    assert timeouts(second) == {"a": 1, "b": 2, "c": 1}
    await nack(envoy, second, keeps=first.version_info, message="cluster b: no")
    # At once, the rest of that response again, with b as the Envoy accepted it.
    third = await sotw_response(envoy)
    assert timeouts(third) == {"a": 1, "b": 1, "c": 1}
    assert third.version_info not in (first.version_info, second.version_info)
    await ack(envoy, third)
    await wait_until(lambda: acked(third), message="the held-back response ACKed")

    by_name = await csds_clusters(served)
    for name in ("a", "c"):
        assert by_name[name].client_status == config_dump_shared_pb2.ACKED, name
        assert by_name[name].config_status == csds_pb2.SYNCED, name
    rejected = by_name["b"]
    # NACKED against the snapshot's version, though the Envoy ACKed the old one.
    assert rejected.client_status == config_dump_shared_pb2.NACKED
    assert rejected.config_status == csds_pb2.ERROR
    assert rejected.error_state.details == "cluster b: no"
    snapshot = served.cache.current("edge")
    assert snapshot is not None
    assert (
        rejected.error_state.version_info == snapshot.of_type(types.CLUSTER).resources["b"].version
    )
    failed = cluster_pb2.Cluster()
    rejected.error_state.failed_configuration.Unpack(failed)
    assert failed.connect_timeout.seconds == 2
    # It runs the version it accepted, which the snapshot no longer holds.
    assert rejected.version_info and not rejected.HasField("xds_config")

    # ListNodes says what this Envoy is held back on.
    nodes = await admin_pb2_grpc.AdminStub(served.channel).ListNodes(
        admin_pb2.ListNodesRequest(), timeout=5
    )
    (cluster_status,) = nodes.nodes[0].types
    assert list(cluster_status.held_back) == ["b"]
    assert list(cluster_status.last_nack.resource_names) == ["b"]

    # Other changes keep flowing, b still held back.
    served.cache.set_snapshot("edge", clusters(a=1, b=2, c=1, d=1))
    fourth = await sotw_response(envoy)
    assert timeouts(fourth) == {"a": 1, "b": 1, "c": 1, "d": 1}
    await ack(envoy, fourth)
    await wait_until(lambda: acked(fourth), message="the fourth response ACKed")
    assert (await csds_clusters(served))["b"].client_status == config_dump_shared_pb2.NACKED

    # The fix: b changes, is sent, is accepted.
    served.cache.set_snapshot("edge", clusters(a=1, b=3, c=1, d=1))
    fifth = await sotw_response(envoy)
    assert timeouts(fifth) == {"a": 1, "b": 3, "c": 1, "d": 1}
    await ack(envoy, fifth)
    await wait_until(lambda: acked(fifth), message="the fix ACKed")
    by_name = await csds_clusters(served)
    assert all(c.client_status == config_dump_shared_pb2.ACKED for c in by_name.values())
    nodes = await admin_pb2_grpc.AdminStub(served.channel).ListNodes(
        admin_pb2.ListNodesRequest(), timeout=5
    )
    assert not nodes.nodes[0].types[0].held_back
    assert all(c.config_status == csds_pb2.SYNCED for c in by_name.values())
    # Healthy again: back on the body every stream shares.
    assert fifth.version_info == served.cache.current("edge").of_type(types.CLUSTER).version  # type: ignore[union-attr]
    envoy.close()


async def test_sotw_nack_naming_nothing_holds_back_everything_it_changed(
    served: Served,
) -> None:
    served.cache.set_snapshot("edge", clusters(a=1, b=1))
    envoy = FakeEnvoy(
        ads_pb2_grpc.AggregatedDiscoveryServiceStub(served.channel).StreamAggregatedResources()
    )
    await envoy.call.write(discovery_pb2.DiscoveryRequest(node=NODE, type_url=types.CLUSTER))
    first = await sotw_response(envoy)
    await ack(envoy, first)

    async def first_acked() -> bool:
        (status,) = list(served.xds.registry)
        return bool(status.of_type(types.CLUSTER).acked_version == first.version_info)

    await wait_until(first_acked, message="the first response ACKed")
    served.cache.set_snapshot("edge", clusters(a=1, b=2, c=1))
    second = await sotw_response(envoy)
    await nack(envoy, second, keeps=first.version_info, message="something went wrong")
    # b back to what was accepted; c, never accepted, left out.
    third = await sotw_response(envoy)
    assert timeouts(third) == {"a": 1, "b": 1}
    await ack(envoy, third)

    async def reported() -> bool:
        by_name = await csds_clusters(served)
        return by_name["a"].client_status == config_dump_shared_pb2.ACKED and all(
            by_name[name].client_status == config_dump_shared_pb2.NACKED for name in ("b", "c")
        )

    await wait_until(reported, message="b and c NACKED, a ACKED")
    # Nothing more to say until something changes: no resend loop.
    await asyncio.sleep(0.3)
    assert envoy.received.empty()
    assert served.xds.metrics.nack_count(types.CLUSTER) == 1
    envoy.close()


def test_blame_matches_names_on_their_boundaries() -> None:
    assert mentions("Error adding/updating cluster(s) demo/a:50051: bad", "demo/a:50051")
    assert mentions('name: "c"\nconnect_timeout', "c")
    assert mentions("cluster c.", "c")
    assert not mentions("cluster", "c")
    assert not mentions("cluster(s) demo/a:50051: bad", "demo/a:5005")
    assert not mentions("cluster(s) demo/a:50051: bad", "a:50051")
    assert not mentions("cluster(s) x.c.y", "c")
    assert blamed("cluster b: no", ["a", "b", "c"]) == {"b"}
    assert blamed("cluster: no", ["b", "c"]) == {"b", "c"}


# ------------------------------------------------------------------ slow watchers


def many_clusters(prefix: str, count: int) -> Snapshot:
    return build_snapshot(
        {types.CLUSTER: {f"{prefix}-{i:05d}-{'x' * 40}": cluster("n") for i in range(count)}}
    )


async def test_an_unread_watch_keeps_one_pending_version_per_group() -> None:
    cache = SnapshotCache()
    cache.set_snapshot("g", build_snapshot({types.CLUSTER: {"start": cluster("start")}}))
    with SnapshotFeed(cache=cache, group=None) as feed:
        (initial,) = await feed.next()
        assert initial.previous is None and initial.changes[0].added == ("start",)
        started = time.perf_counter()
        for index in range(1000):
            cache.set_snapshot(
                "g", build_snapshot({types.CLUSTER: {f"c{index}": cluster(f"c{index}")}})
            )
            assert feed.pending == 1
        publishing = time.perf_counter() - started
        (change,) = await feed.next()
    assert change.skipped == 999
    assert change.previous is initial.snapshot
    (cluster_diff,) = change.changes
    assert cluster_diff.added == ("c999",) and cluster_diff.removed == ("start",)
    # Publishing did not wait for the reader (1000 builds, not 1000 waits).
    assert publishing < 5


async def test_a_stalled_watch_client_neither_blocks_xds_nor_queues_versions(
    served: Served,
) -> None:
    # Events of ~0.5 MB each (every name added and removed): a client that
    # does not read fills gRPC's flow-control window after one or two.
    big = [many_clusters(prefix, 6000) for prefix in ("a", "b")]
    served.cache.set_snapshot("edge", big[0])
    watch = admin_pb2_grpc.AdminStub(served.channel).WatchSnapshots(
        admin_pb2.WatchSnapshotsRequest(node_group="edge")
    )
    first = await watch.read()
    assert first.version == big[0].version

    envoy = FakeEnvoy(
        ads_pb2_grpc.AggregatedDiscoveryServiceStub(served.channel).DeltaAggregatedResources()
    )
    await envoy.call.write(discovery_pb2.DeltaDiscoveryRequest(node=NODE, type_url=types.CLUSTER))
    await envoy.recv()
    publishes = 60
    for index in range(publishes):
        served.cache.set_snapshot("edge", big[(index + 1) % 2])
        await asyncio.sleep(0.005)
    final = build_snapshot({types.CLUSTER: {"final": cluster("final")}})
    served.cache.set_snapshot("edge", final)
    publishes += 1

    # The xDS stream got the final version while the watcher read nothing.
    async def envoy_has_final() -> bool:
        while not envoy.received.empty():
            response = envoy.received.get_nowait()
            assert isinstance(response, discovery_pb2.DeltaDiscoveryResponse)
            if [r.name for r in response.resources] == ["final"]:
                return True
            await envoy.call.write(
                discovery_pb2.DeltaDiscoveryRequest(
                    type_url=types.CLUSTER, response_nonce=response.nonce
                )
            )
        return False

    await wait_until(envoy_has_final, message="the xDS stream got the final version")

    events: list[admin_pb2.SnapshotEvent] = []
    while not events or events[-1].version != final.version:
        events.append(await asyncio.wait_for(watch.read(), 10))
    # Every version is accounted for, but most were coalesced, not queued.
    assert sum(1 + event.versions_skipped for event in events) == publishes
    assert len(events) < publishes // 2, [e.versions_skipped for e in events]
    assert events[-1].changes[0].added == ["final"]
    watch.cancel()
    envoy.close()
