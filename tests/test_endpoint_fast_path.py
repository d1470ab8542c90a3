"""The EndpointSlice fast path: slice changes reach EDS without a translation.

Each test runs the real pipeline over a real store and compares what the
fast path published with what a full translation of the same store gives:
the two must be the same snapshot, byte for byte (versions are content
hashes), or the fast path is wrong.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

import pytest

from xds_ingress import ir
from xds_ingress.cache import DEFAULT_GROUP, Snapshot, SnapshotCache, build_snapshot
from xds_ingress.pipeline import Debounce, Pipeline
from xds_ingress.resources import types
from xds_ingress.resources.builder import ResourceBuilder
from xds_ingress.sources.objects import ENDPOINT_SLICE, ObjectKey, parse_object
from xds_ingress.store import Store, StoreView
from xds_ingress.translate import translate
from xds_ingress.translate.endpoint_refresh import StoreTranslator
from xds_ingress.translate.settings import ListenerSettings

NAMESPACE = "shop"
ORIGIN = "test"
SETTINGS = ListenerSettings(
    listen_address="127.0.0.1",
    http_port=8080,
    https_port=8443,
    min_tls_version=ir.TlsVersion.TLS1_2,
    claim_classless=True,
)


def service(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {"ports": [{"name": "grpc", "port": 50051, "appProtocol": "kubernetes.io/h2c"}]},
    }


def endpoint_slice(
    name: str, *, service: str, addresses: Sequence[str], ready: bool = True
) -> dict[str, Any]:
    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": name,
            "namespace": NAMESPACE,
            "labels": {"kubernetes.io/service-name": service},
        },
        "addressType": "IPv4",
        "ports": [{"name": "grpc", "port": 9000}],
        "endpoints": [
            {"addresses": [address], "conditions": {"ready": ready}} for address in addresses
        ],
    }


def ingress(name: str, *, host: str, service: str) -> dict[str, Any]:
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "Ingress",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {
            "rules": [
                {
                    "host": host,
                    "http": {
                        "paths": [
                            {
                                "path": "/",
                                "pathType": "Prefix",
                                "backend": {
                                    "service": {"name": service, "port": {"number": 50051}}
                                },
                            }
                        ]
                    },
                }
            ]
        },
    }


@dataclass
class Running:
    store: Store
    cache: SnapshotCache
    pipeline: Pipeline
    translations: list[int]

    def apply(self, document: dict[str, Any]) -> None:
        self.store.apply(parse_object(document), origin=ORIGIN)

    def delete_slice(self, name: str) -> None:
        self.store.delete(ObjectKey(ENDPOINT_SLICE, NAMESPACE, name), origin=ORIGIN)

    def published(self) -> Snapshot:
        snapshot = self.cache.current(DEFAULT_GROUP)
        assert snapshot is not None
        return snapshot

    async def settle(self) -> Snapshot:
        """The snapshot once the pipeline has built everything it was told."""
        builds = -1
        while builds != self.pipeline.report.builds:
            builds = self.pipeline.report.builds
            await asyncio.sleep(0.05)
        return self.published()


def full_translation(view: StoreView) -> Snapshot:
    """What a translation from scratch publishes for `view`."""
    return build_snapshot(ResourceBuilder().build(translate(view, settings=SETTINGS).config))


def endpoint_addresses(snapshot: Snapshot, cluster: str) -> list[str]:
    assignment = snapshot.of_type(types.ENDPOINT).resources[cluster].message
    return sorted(
        lb_endpoint.endpoint.address.socket_address.address
        for locality in assignment.endpoints
        for lb_endpoint in locality.lb_endpoints
    )


@pytest.fixture
async def running() -> AsyncIterator[Running]:
    store = Store()
    for name in ("cart", "pay"):
        store.apply(parse_object(service(name)), origin=ORIGIN)
        store.apply(
            parse_object(ingress(name, host=f"{name}.example.com", service=name)), origin=ORIGIN
        )
    store.apply(
        parse_object(endpoint_slice("cart-a", service="cart", addresses=["10.0.0.1"])),
        origin=ORIGIN,
    )
    store.apply(
        parse_object(endpoint_slice("pay-a", service="pay", addresses=["10.0.1.1"])),
        origin=ORIGIN,
    )
    translations: list[int] = []

    def counted(view: StoreView) -> ir.Translation:
        translations.append(1)
        return translate(view, settings=SETTINGS)

    translator = StoreTranslator(view=store.view, translate=counted)
    cache = SnapshotCache()
    pipeline = Pipeline(
        translate=translator.full,
        refresh_endpoints=translator.endpoints,
        cache=cache,
        group=DEFAULT_GROUP,
        debounce=Debounce(holdoff_seconds=0.01, max_holdoff_seconds=0.05),
    )
    store.subscribe(pipeline.changed)
    synced = asyncio.Event()
    synced.set()
    task = asyncio.create_task(pipeline.run(synced=synced))
    await asyncio.wait_for(pipeline.first_published.wait(), 5)
    try:
        yield Running(store=store, cache=cache, pipeline=pipeline, translations=translations)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


CART = "shop/cart:50051"
PAY = "shop/pay:50051"


async def test_a_scaled_slice_reaches_eds_without_a_translation(running: Running) -> None:
    before = await running.settle()
    running.apply(
        endpoint_slice("cart-a", service="cart", addresses=["10.0.0.1", "10.0.0.2", "10.0.0.3"])
    )
    after = await running.settle()
    assert endpoint_addresses(after, CART) == ["10.0.0.1", "10.0.0.2", "10.0.0.3"]
    assert running.translations == [1], "the slice change was translated in full"
    # Nothing but EDS moved, and only the cart cluster's assignment in it.
    for type_url in (types.CLUSTER, types.LISTENER, types.ROUTE):
        assert after.of_type(type_url) is before.of_type(type_url)
    before_eds, after_eds = before.of_type(types.ENDPOINT), after.of_type(types.ENDPOINT)
    assert after_eds.resources[PAY] is before_eds.resources[PAY]
    assert after_eds.resources[CART].version != before_eds.resources[CART].version
    assert after.version == full_translation(running.store.view()).version


async def test_slices_added_moved_and_deleted_match_a_full_translation(
    running: Running,
) -> None:
    await running.settle()
    # A second slice for cart, then a slice relabelled from cart to pay.
    running.apply(endpoint_slice("cart-b", service="cart", addresses=["10.0.0.9"]))
    snapshot = await running.settle()
    assert endpoint_addresses(snapshot, CART) == ["10.0.0.1", "10.0.0.9"]
    running.apply(endpoint_slice("cart-b", service="pay", addresses=["10.0.0.9"]))
    snapshot = await running.settle()
    assert endpoint_addresses(snapshot, CART) == ["10.0.0.1"]
    assert endpoint_addresses(snapshot, PAY) == ["10.0.0.9", "10.0.1.1"]
    # Deleted: the slice is gone from the store, its Service known only from before.
    running.delete_slice("cart-b")
    running.delete_slice("cart-a")
    snapshot = await running.settle()
    assert endpoint_addresses(snapshot, CART) == []
    assert endpoint_addresses(snapshot, PAY) == ["10.0.1.1"]
    assert running.translations == [1]
    assert snapshot.version == full_translation(running.store.view()).version


async def test_a_bad_address_becomes_a_condition_and_clears_on_the_fast_path(
    running: Running,
) -> None:
    await running.settle()
    running.apply(endpoint_slice("cart-a", service="cart", addresses=["10.0.0.1", "not-an-ip"]))
    await running.settle()
    reasons = {
        (condition.object.name, condition.reason)
        for condition in running.pipeline.report.conditions
    }
    assert ("cart-a", "InvalidAddress") in reasons
    assert endpoint_addresses(running.published(), CART) == ["10.0.0.1"]
    running.apply(endpoint_slice("cart-a", service="cart", addresses=["10.0.0.1"]))
    await running.settle()
    assert not [
        condition
        for condition in running.pipeline.report.conditions
        if condition.reason == "InvalidAddress"
    ]
    assert running.translations == [1]


async def test_any_other_change_translates_in_full(running: Running) -> None:
    await running.settle()
    # A slice and a new Service in one batch: the Service needs routes built.
    running.apply(endpoint_slice("cart-a", service="cart", addresses=["10.0.0.7"]))
    running.apply(service("search"))
    running.apply(ingress("search", host="search.example.com", service="search"))
    snapshot = await running.settle()
    assert running.translations == [1, 1]
    assert "shop/search:50051" in snapshot.of_type(types.CLUSTER).resources
    assert endpoint_addresses(snapshot, CART) == ["10.0.0.7"]
    # And the fast path still works after a full build.
    running.apply(endpoint_slice("pay-a", service="pay", addresses=["10.0.1.2"]))
    snapshot = await running.settle()
    assert running.translations == [1, 1]
    assert endpoint_addresses(snapshot, PAY) == ["10.0.1.2"]
    assert snapshot.version == full_translation(running.store.view()).version


@pytest.mark.parametrize(
    ("address", "served"),
    [
        ("10.0.0.1", "10.0.0.1"),
        ("255.255.255.255", "255.255.255.255"),
        ("0.0.0.0", "0.0.0.0"),
        # Leading zeros read as octal by some resolvers: refused, not guessed.
        ("010.0.0.1", None),
        ("256.0.0.1", None),
        ("10.0.0", None),
        ("10.0.0.1 ", None),
        ("10.0.0.1\n", None),
        ("::1", None),  # an IPv6 address in an IPv4 slice
        ("pod.example.com", None),
    ],
)
def test_slice_addresses_are_served_only_when_they_are_ipv4(
    address: str, served: str | None
) -> None:
    store = Store()
    for document in (
        service("cart"),
        ingress("cart", host="cart.example.com", service="cart"),
        endpoint_slice("cart-a", service="cart", addresses=[address]),
    ):
        store.apply(parse_object(document), origin=ORIGIN)
    translation = translate(store.view(), settings=SETTINGS)
    (backend,) = translation.config.backends
    assert [endpoint.address for endpoint in backend.endpoints] == ([served] if served else [])
    invalid = [c for c in translation.conditions if c.reason == "InvalidAddress"]
    assert bool(invalid) == (served is None)
