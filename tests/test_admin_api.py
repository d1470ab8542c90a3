"""Inspection as an operator does it: the real grpcurl against a control plane with a real Envoy.

One control plane and one Envoy (delta xDS) serve the whole module, to keep
it fast; the tests that change the configuration restore it before they end
and run last. grpcurl gets no .proto file: everything it prints it learnt
through server reflection, Envoy resources inside google.protobuf.Any too.
"""

from __future__ import annotations

import asyncio
import json
import urllib.request
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio
from envoy.config.cluster.v3 import cluster_pb2
from ingress_harness import Ingress, endpoint_slice, ingress, rule, service
from peers import free_port, grpcurl_path, run_grpcurl, wait_until

from xds_ingress.cache import DEFAULT_GROUP, make_resource, snapshot_from_resources
from xds_ingress.resources import types

pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.timeout(60)]

ADMIN = "xds_ingress.admin.v1.Admin"
CSDS = "envoy.service.status.v3.ClientStatusDiscoveryService"
CLUSTER_NAME = "demo/greeter-a:50051"


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def live(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Ingress]:
    under_test = Ingress(
        workdir=tmp_path_factory.mktemp("admin"),
        delta=True,
        inspection_port=free_port(),
        metrics_port=free_port(),
    )
    under_test.config.write(
        "services.yaml", service("greeter-a"), endpoint_slice("greeter-a", free_port())
    )
    under_test.config.write(
        "ingress.yaml", ingress("main", [rule("a.example.com", ("/", "Prefix", "greeter-a"))])
    )
    try:
        await under_test.start_control_plane()
        await (await under_test.start_envoy()).wait_live()
        await wait_until(lambda: _all_acked(under_test), message="Envoy ACKs every type")
        yield under_test
    finally:
        await under_test.stop()


def _xds(live: Ingress) -> str:
    return f"127.0.0.1:{live.xds_port}"


async def grpcurl_json(target: str, method: str, data: str | None = None) -> Any:
    args = ["-plaintext"] + (["-d", data] if data is not None else []) + [target, method]
    code, out, err = await run_grpcurl(args)
    assert code == 0, f"grpcurl {' '.join(args)} failed ({code}): {err}"
    return json.loads(out)


async def grpcurl_error(target: str, method: str, data: str) -> str:
    code, out, err = await run_grpcurl(["-plaintext", "-d", data, target, method])
    assert code != 0, f"expected an error, got: {out}"
    return err


async def _all_acked(live: Ingress) -> bool:
    nodes = (await grpcurl_json(_xds(live), f"{ADMIN}/ListNodes")).get("nodes", [])
    return bool(nodes) and all(
        len(node["types"]) == 5
        and all(t.get("acked_version") == t.get("sent_version") for t in node["types"])
        for node in nodes
    )


class GrpcurlStream:
    """A streaming grpcurl call whose JSON messages are read one at a time."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self._buffer = ""
        self._decoder = json.JSONDecoder()

    @classmethod
    async def start(cls, *args: str) -> GrpcurlStream:
        process = await asyncio.create_subprocess_exec(
            str(grpcurl_path()),
            *args,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        return cls(process)

    async def next(self) -> Any:
        """The next message; a test's wait is bounded by the caller or pytest-timeout."""
        assert self.process.stdout is not None
        async with asyncio.timeout(10):
            while True:
                text = self._buffer.lstrip()
                try:
                    message, end = self._decoder.raw_decode(text)
                except json.JSONDecodeError:
                    chunk = await self.process.stdout.read(65536)
                    if not chunk:
                        assert self.process.stderr is not None
                        raise AssertionError(
                            f"grpcurl ended: {(await self.process.stderr.read()).decode()}"
                        ) from None
                    self._buffer = text + chunk.decode()
                    continue
                self._buffer = text[end:]
                return message

    async def close(self) -> None:
        if self.process.returncode is None:
            self.process.kill()
        await self.process.wait()


async def test_reflection_lists_and_describes_every_service(live: Ingress) -> None:
    code, out, err = await run_grpcurl(["-plaintext", _xds(live), "list"])
    assert code == 0, err
    listed = set(out.split())
    assert {
        ADMIN,
        CSDS,
        "envoy.service.discovery.v3.AggregatedDiscoveryService",
        "grpc.health.v1.Health",
        "grpc.reflection.v1alpha.ServerReflection",
    } <= listed
    code, out, err = await run_grpcurl(["-plaintext", _xds(live), "describe", ADMIN])
    assert code == 0, err
    assert (
        "rpc WatchSnapshots ( .xds_ingress.admin.v1.WatchSnapshotsRequest ) returns ( stream" in out
    )
    code, out, err = await run_grpcurl(
        ["-plaintext", _xds(live), "describe", "xds_ingress.admin.v1.SnapshotEvent"]
    )
    assert code == 0 and "versions_skipped" in out, err
    code, out, err = await run_grpcurl(["-plaintext", _xds(live), "describe", CSDS])
    assert code == 0 and "rpc FetchClientStatus" in out, err

    # The admin port serves inspection only: no xDS there.
    admin_target = f"127.0.0.1:{live.inspection_port}"
    code, out, err = await run_grpcurl(["-plaintext", admin_target, "list"])
    assert code == 0, err
    assert {ADMIN, CSDS, "grpc.health.v1.Health"} <= set(out.split())
    assert "envoy.service.discovery.v3.AggregatedDiscoveryService" not in out
    health = await grpcurl_json(
        admin_target, "grpc.health.v1.Health/Check", json.dumps({"service": ADMIN})
    )
    assert health == {"status": "SERVING"}
    nodes = await grpcurl_json(admin_target, f"{ADMIN}/ListNodes")
    assert [node["node_id"] for node in nodes["nodes"]] == ["test-envoy"]


async def test_list_nodes_shows_what_the_envoy_was_sent_and_accepted(live: Ingress) -> None:
    (node,) = (await grpcurl_json(_xds(live), f"{ADMIN}/ListNodes"))["nodes"]
    assert node["node_id"] == "test-envoy"
    assert node["node_cluster"] == "test"
    assert node["stream_kind"] == "STREAM_KIND_DELTA"
    assert node["peer"].startswith("ipv4:127.0.0.1:")
    assert node["connected_at"].endswith("Z")
    by_type = {status["type_url"]: status for status in node["types"]}
    # In ADS order: clusters, endpoints, extension configs (ECDS), listeners, routes.
    assert list(by_type) == [
        types.CLUSTER,
        types.ENDPOINT,
        types.EXTENSION_CONFIG,
        types.LISTENER,
        types.ROUTE,
    ]
    cluster = by_type[types.CLUSTER]
    assert cluster["wildcard"] is True
    assert cluster["resources_sent"] == cluster["resources_acked"] == 1
    assert cluster["sent_version"] == cluster["acked_version"]
    assert "last_nack" not in cluster


async def test_get_snapshot_prints_envoy_resources_as_json(live: Ingress) -> None:
    clusters = await grpcurl_json(
        _xds(live),
        f"{ADMIN}/GetSnapshot",
        json.dumps({"node_id": "test-envoy", "type_urls": [types.CLUSTER]}),
    )
    (of_type,) = clusters["types"]
    assert of_type["type_url"] == types.CLUSTER
    (resource,) = of_type["resources"]
    assert resource["name"] == CLUSTER_NAME
    # Decoded by grpcurl through reflection, Anys nested in the Any included.
    assert resource["resource"]["@type"] == types.CLUSTER
    assert resource["resource"]["name"] == CLUSTER_NAME
    assert resource["resource"]["type"] == "EDS"
    options = resource["resource"]["typed_extension_protocol_options"]
    (protocol_options,) = options.values()
    assert protocol_options["@type"].endswith(
        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
    )

    # The whole snapshot by group: the Envoy's group is served the default one.
    by_group = await grpcurl_json(
        _xds(live), f"{ADMIN}/GetSnapshot", json.dumps({"node_group": "test"})
    )
    default = await grpcurl_json(_xds(live), f"{ADMIN}/GetSnapshot", "{}")
    assert by_group == default
    assert "node_group" not in default  # the default group is ""
    assert by_group["version"] == clusters["version"]
    listeners = next(t for t in default["types"] if t["type_url"] == types.LISTENER)
    hcm = listeners["resources"][0]["resource"]["filter_chains"][0]["filters"][0]["typed_config"]
    assert hcm["@type"].endswith("HttpConnectionManager")
    assert hcm["rds"]["route_config_name"]


async def test_bad_requests_say_what_was_wrong(live: Ingress) -> None:
    target = _xds(live)
    error = await grpcurl_error(target, f"{ADMIN}/GetSnapshot", '{"node_id": "no-such-envoy"}')
    assert "NotFound" in error
    assert "'no-such-envoy'" in error and "'test-envoy'" in error

    error = await grpcurl_error(target, f"{ADMIN}/GetSnapshot", '{"node_group": "nowhere"}')
    assert "NotFound" in error and "'nowhere'" in error and "'test'" in error

    error = await grpcurl_error(
        target, f"{ADMIN}/GetSnapshot", '{"type_urls": ["type.googleapis.com/envoy.Cluster"]}'
    )
    assert "InvalidArgument" in error
    assert "'type.googleapis.com/envoy.Cluster'" in error
    assert types.CLUSTER in error and types.SECRET in error

    error = await grpcurl_error(target, f"{ADMIN}/WatchSnapshots", '{"node_group": "nowhere"}')
    assert "NotFound" in error and "'nowhere'" in error

    error = await grpcurl_error(
        target,
        f"{CSDS}/FetchClientStatus",
        '{"node_matchers": [{"node_metadatas": [{"path": [{"key": "a"}]}]}]}',
    )
    assert "InvalidArgument" in error and "node_metadatas" in error


async def test_csds_reports_every_resource_of_the_connected_envoy(live: Ingress) -> None:
    target = _xds(live)
    response = await grpcurl_json(
        target,
        f"{CSDS}/FetchClientStatus",
        json.dumps({"node_matchers": [{"node_id": {"exact": "test-envoy"}}]}),
    )
    (client,) = response["config"]
    assert client["node"] == {"id": "test-envoy", "cluster": "test"}
    configs = client["generic_xds_configs"]
    assert {c["type_url"] for c in configs} == {
        types.CLUSTER,
        types.ENDPOINT,
        types.EXTENSION_CONFIG,
        types.LISTENER,
        types.ROUTE,
    }
    for config in configs:
        assert config["client_status"] == "ACKED", config
        assert config["config_status"] == "SYNCED", config
        assert config["version_info"]
        assert config["xds_config"]["@type"] == config["type_url"]
    cluster = next(c for c in configs if c["type_url"] == types.CLUSTER)
    assert cluster["name"] == CLUSTER_NAME
    assert cluster["xds_config"]["name"] == CLUSTER_NAME

    # Matchers pick clients: none here matches; a regex does; and streaming works.
    other = await grpcurl_json(
        target,
        f"{CSDS}/FetchClientStatus",
        json.dumps({"node_matchers": [{"node_id": {"prefix": "other-"}}]}),
    )
    assert other == {}
    streamed = await GrpcurlStream.start(
        "-plaintext",
        "-d",
        json.dumps({"node_matchers": [{"node_id": {"safe_regex": {"regex": "test-.*"}}}]})
        + json.dumps({"exclude_resource_contents": True}),
        target,
        f"{CSDS}/StreamClientStatus",
    )
    try:
        first, second = await streamed.next(), await streamed.next()
    finally:
        await streamed.close()
    assert first == response
    assert [c["name"] for c in second["config"][0]["generic_xds_configs"]] == [
        c["name"] for c in configs
    ]
    assert all("xds_config" not in c for c in second["config"][0]["generic_xds_configs"])


async def test_watch_snapshots_streams_new_versions_with_what_changed(live: Ingress) -> None:
    target = _xds(live)
    watch = await GrpcurlStream.start(
        "-plaintext", "-d", '{"node_group": "test"}', target, f"{ADMIN}/WatchSnapshots"
    )
    try:
        first = await watch.next()
        assert first["node_group"] == "test"
        assert "previous_version" not in first
        added = {change["type_url"]: change.get("added", []) for change in first["changes"]}
        assert added[types.CLUSTER] == [CLUSTER_NAME]

        live.config.write(
            "more.yaml", ingress("more", [rule("b.example.com", ("/", "Prefix", "greeter-a"))])
        )
        second = await watch.next()
        assert second["previous_version"] == first["version"]
        assert second["version"] != first["version"]
        (change,) = second["changes"]  # a new host: only the routes change
        assert change["type_url"] == types.ROUTE
        assert change["changed"] and "added" not in change and "removed" not in change

        live.config.remove("more.yaml")
        third = await watch.next()
        assert third["previous_version"] == second["version"]
        assert third["version"] == first["version"]
    finally:
        await watch.close()


async def test_metrics_endpoint_serves_prometheus_text(live: Ingress) -> None:
    url = f"http://127.0.0.1:{live.metrics_port}/metrics"

    def fetch() -> str:
        with urllib.request.urlopen(url, timeout=5) as reply:
            text: str = reply.read().decode()
            return text

    text = await asyncio.to_thread(fetch)
    assert 'xds_ingress_streams{kind="delta"} 1.0' in text
    assert 'xds_ingress_snapshot_resources{group="",type="Cluster"} 1.0' in text
    assert "xds_ingress_snapshot_build_seconds_count" in text
    assert 'xds_ingress_pushes_total{kind="delta",type="Cluster"}' in text


async def test_a_nack_shows_in_list_nodes_and_csds_until_fixed(live: Ingress) -> None:
    """Runs last: it replaces the snapshot, and restores it at the end."""
    control_plane = live.control_plane
    assert control_plane is not None
    target = _xds(live)
    good = control_plane.cache.current(DEFAULT_GROUP)
    assert good is not None
    good_version = good.of_type(types.CLUSTER).resources[CLUSTER_NAME].version
    resources = {url: dict(good.of_type(url).resources) for url in good.types}
    bad_cluster = cluster_pb2.Cluster()
    bad_cluster.CopyFrom(resources[types.CLUSTER][CLUSTER_NAME].message)
    bad_cluster.connect_timeout.seconds = -1  # Envoy's validation rejects it
    bad = make_resource(CLUSTER_NAME, types.CLUSTER, bad_cluster)
    resources[types.CLUSTER][CLUSTER_NAME] = bad
    control_plane.cache.set_snapshot(DEFAULT_GROUP, snapshot_from_resources(resources))

    async def cluster_status() -> Any:
        (node,) = (await grpcurl_json(target, f"{ADMIN}/ListNodes"))["nodes"]
        return next(t for t in node["types"] if t["type_url"] == types.CLUSTER)

    async def nacked() -> bool:
        return "last_nack" in await cluster_status()

    await wait_until(nacked, message="the NACK in ListNodes")
    status = await cluster_status()
    nack = status["last_nack"]
    assert nack["version"] == status["sent_version"] != status["acked_version"]
    assert "Expected positive duration" in nack["error"]
    assert nack["resource_names"] == [CLUSTER_NAME]
    assert nack["at"].endswith("Z")

    response = await grpcurl_json(target, f"{CSDS}/FetchClientStatus")
    configs = response["config"][0]["generic_xds_configs"]
    cluster = next(c for c in configs if c["type_url"] == types.CLUSTER)
    assert cluster["client_status"] == "NACKED"
    assert cluster["config_status"] == "ERROR"
    # Envoy still runs the version it accepted; the rejected one is the error's.
    assert cluster["version_info"] == good_version
    assert "xds_config" not in cluster
    error_state = cluster["error_state"]
    assert "Expected positive duration" in error_state["details"]
    assert error_state["version_info"] == bad.version
    assert error_state["failed_configuration"]["connect_timeout"] == "-1s"
    # The rest of what it holds is unaffected.
    assert all(c["client_status"] == "ACKED" for c in configs if c is not cluster)

    # Fixed: the good cluster again, accepted, and CSDS says so.
    control_plane.cache.set_snapshot(DEFAULT_GROUP, good)

    async def recovered() -> bool:
        response = await grpcurl_json(target, f"{CSDS}/FetchClientStatus")
        configs = response["config"][0]["generic_xds_configs"]
        cluster = next(c for c in configs if c["type_url"] == types.CLUSTER)
        return bool(cluster["client_status"] == "ACKED" and cluster["config_status"] == "SYNCED")

    await wait_until(recovered, message="the fixed cluster ACKed")
