"""ListConditions as an operator calls it: the real grpcurl, a real Envoy rejecting a resource.

The admin API is called on the control plane's own xDS port, as wired in
app.py (plaintext: the harness's control plane runs --insecure).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from envoy.config.route.v3 import route_pb2
from ingress_harness import NAMESPACE, Ingress, endpoint_slice, ingress, routes_to, rule, service
from peers import run_grpcurl, wait_until

from xds_ingress.cache import DEFAULT_GROUP, make_resource, snapshot_from_resources
from xds_ingress.demo.backend import GreeterBackend
from xds_ingress.resources import types

pytestmark = pytest.mark.timeout(60)

METHOD = "xds_ingress.admin.v1.Admin/ListConditions"


@pytest.fixture
async def live(tmp_path: Path, backend_factory: Any) -> AsyncIterator[tuple[Ingress, str]]:
    """A state-of-the-world Envoy on an ingress, and the admin API's address."""
    backend: GreeterBackend = await backend_factory("a")
    under_test = Ingress(workdir=tmp_path, delta=False)
    under_test.config.write(
        "services.yaml", service("greeter-a"), endpoint_slice("greeter-a", backend.port)
    )
    under_test.config.write(
        "ingress.yaml", ingress("main", [rule("a.example.com", ("/", "Prefix", "greeter-a"))])
    )
    try:
        control_plane = await under_test.start_control_plane()
        await (await under_test.start_envoy()).wait_live()
        await routes_to(under_test, "a.example.com", "a")
        yield under_test, f"127.0.0.1:{control_plane.port}"
    finally:
        await under_test.stop()


async def list_conditions(target: str, request: dict[str, Any] | None = None) -> Any:
    args = ["-plaintext", "-d", json.dumps(request or {}), target, METHOD]
    code, out, err = await run_grpcurl(args)
    assert code == 0, f"grpcurl {' '.join(args)} failed ({code}): {err}"
    return json.loads(out)


async def test_list_conditions_shows_translation_and_envoy_rejections(
    live: tuple[Ingress, str],
) -> None:
    under_test, target = live
    control_plane = under_test.control_plane
    assert control_plane is not None
    ingress_file = str(under_test.config.path / "ingress.yaml")

    listed = (await list_conditions(target))["conditions"]
    # Exactly what the status stage holds, in the API's form.
    assert len(listed) == len(control_plane.status.conditions())
    accepted = next(
        c
        for c in listed
        if c["object"]["kind"] == "Ingress" and c["object"]["name"] == "main"
        if c["type"] == "Accepted"
    )
    assert accepted["object"] == {
        "kind": "Ingress",
        "namespace": NAMESPACE,
        "name": "main",
        "source": ingress_file,
    }
    assert accepted["status"] == "True"
    assert "rejections" not in accepted
    # Nothing is wrong yet.
    assert await list_conditions(target, {"problems_only": True}) == {}

    # Envoy rejects the route config built from ingress.yaml (a status code
    # its validation refuses stands in for a mistake that got through).
    good = control_plane.cache.current(DEFAULT_GROUP)
    assert good is not None
    resources = {url: dict(good.of_type(url).resources) for url in good.types}
    bad = route_pb2.RouteConfiguration()
    bad.CopyFrom(resources[types.ROUTE]["http"].message)
    bad.virtual_hosts[0].routes[0].ClearField("route")
    bad.virtual_hosts[0].routes[0].direct_response.status = 99
    rejected_route = make_resource("http", types.ROUTE, bad)
    resources[types.ROUTE]["http"] = rejected_route
    control_plane.cache.set_snapshot(DEFAULT_GROUP, snapshot_from_resources(resources))

    async def problems() -> Any:
        # The README's recipe.
        request = {"problems_only": True, "kind": "Ingress", "namespace": NAMESPACE}
        return (await list_conditions(target, request)).get("conditions", [])

    await wait_until(problems, timeout=15, message="a problem listed")
    (programmed,) = await problems()
    assert programmed["object"]["name"] == "main"
    assert (programmed["type"], programmed["status"], programmed["reason"]) == (
        "Programmed",
        "False",
        "Rejected",
    )
    assert programmed["message"].startswith("Envoy rejected route config http: ")
    (rejection,) = programmed["rejections"]
    assert rejection["node_id"] == "test-envoy"
    assert rejection["node_group"] == "test"
    assert rejection["type_url"] == types.ROUTE
    assert rejection["resource_name"] == "http"
    assert rejection["version"] == rejected_route.version
    assert "value must be inside range [200, 600)" in rejection["error"]

    # Filters: by kind (any case) and namespace.
    by_kind = (await list_conditions(target, {"kind": "ingress"}))["conditions"]
    assert by_kind and all(c["object"]["kind"] == "Ingress" for c in by_kind)
    assert programmed in by_kind
    assert await list_conditions(target, {"namespace": "elsewhere"}) == {}

    # Fixed: the good route config again, accepted; the problem is gone.
    control_plane.cache.set_snapshot(DEFAULT_GROUP, good)

    async def fixed() -> bool:
        return not await problems()

    await wait_until(fixed, timeout=15, message="no problem listed")


async def test_list_conditions_is_described_through_reflection(
    live: tuple[Ingress, str],
) -> None:
    _, target = live
    code, out, err = await run_grpcurl(
        ["-plaintext", target, "describe", "xds_ingress.admin.v1.Admin"]
    )
    assert code == 0, err
    assert (
        "rpc ListConditions ( .xds_ingress.admin.v1.ListConditionsRequest ) returns "
        "( .xds_ingress.admin.v1.ListConditionsResponse )" in out
    )
    code, out, err = await run_grpcurl(
        ["-plaintext", target, "describe", "xds_ingress.admin.v1.Rejection"]
    )
    assert code == 0 and "resource_name" in out, err
