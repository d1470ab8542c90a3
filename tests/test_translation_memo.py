"""The translation memo: what an unchanged object gave is reused, and nothing else.

The memo is only an optimisation, so its one property is that it cannot be
seen: after any sequence of changes, a translation made with the memo kept
from the translations before must equal a fresh translation of the same
store, conditions included. The other tests say that it does save the work
(the same objects come back) and forgets what the store no longer holds.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import pytest
import test_endpoint_fast_path as fast_path_bodies
from hypothesis import given
from hypothesis import strategies as st
from test_translate_properties import (
    BOUNDED,
    FIXED,
    SETTINGS,
    Document,
    Draw,
    any_object,
    documents,
)

from xds_ingress import ir
from xds_ingress.sources.objects import ObjectError, ObjectKey, parse_object
from xds_ingress.store import Store
from xds_ingress.translate import translate, translator
from xds_ingress.translate.backends import BackendResolver, ResolvedBackends
from xds_ingress.translate.findings import Findings
from xds_ingress.translate.memo import HostMemo, HostPart, TranslationMemo
from xds_ingress.translate.precedence import resolve_conflicts
from xds_ingress.translate.rules import Candidate, ServiceRef

NAMESPACE = "shop"


def _apply_all(store: Store, bodies: list[Document]) -> None:
    for body in bodies:
        try:
            obj = parse_object(body)
        except ObjectError:
            continue
        store.apply(obj, origin="test")


# Plausible objects that refer to each other: two Services, their slices,
# three Ingresses over two hosts, with good and bad values, so that routes
# resolve, conflict and fail in many ways.
names = st.sampled_from(["a", "b"])
port_names = st.sampled_from(["grpc", "http", ""])


@st.composite
def a_service(draw: Draw) -> Document:
    annotations = draw(
        st.sampled_from(
            [{}, {"xds-ingress.io/health-check": "grpc"}, {"xds-ingress.io/health-check": "?"}]
        )
    )
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": draw(names), "namespace": NAMESPACE, "annotations": annotations},
        "spec": {"ports": [{"name": draw(port_names), "port": 50051}]},
    }


@st.composite
def a_slice(draw: Draw) -> Document:
    service = draw(names)
    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": f"{service}-{draw(st.sampled_from(['1', '2']))}",
            "namespace": NAMESPACE,
            "labels": {"kubernetes.io/service-name": service},
        },
        "addressType": "IPv4",
        "ports": [{"name": draw(port_names), "port": draw(st.sampled_from([9000, 9001]))}],
        "endpoints": [
            {
                "addresses": [draw(st.sampled_from(["10.0.0.1", "10.0.0.2", "junk"]))],
                "conditions": {"ready": draw(st.booleans())},
            }
        ],
    }


@st.composite
def an_ingress(draw: Draw) -> Document:
    port = draw(st.sampled_from([{"number": 50051}, {"number": 8080}, {"name": "grpc"}]))
    rule: dict[str, Any] = {
        "http": {
            "paths": [
                {
                    "path": draw(st.sampled_from(["/", "/a"])),
                    "pathType": "Prefix",
                    "backend": {
                        "service": {"name": draw(st.sampled_from(["a", "b", "gone"])), "port": port}
                    },
                }
            ]
        }
    }
    host = draw(st.sampled_from(["x.example.com", "y.example.com", None]))
    if host is not None:
        rule["host"] = host
    spec: dict[str, Any] = {"rules": [rule]}
    class_name = draw(st.sampled_from([None, "ours", "theirs"]))
    if class_name is not None:
        spec["ingressClassName"] = class_name
    annotations = draw(
        st.dictionaries(
            st.sampled_from(
                [
                    "xds-ingress.io/retries",
                    "xds-ingress.io/load-balancer",
                    "nginx.ingress.kubernetes.io/backend-protocol",
                ]
            ),
            st.sampled_from(["2", "least-request", "GRPC", "junk"]),
            max_size=2,
        )
    )
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "Ingress",
        "metadata": {
            "name": draw(st.sampled_from(["i", "j", "k"])),
            "namespace": NAMESPACE,
            "annotations": annotations,
            "creationTimestamp": draw(
                st.sampled_from(["2026-01-01T00:00:00Z", "2026-02-01T00:00:00Z"])
            ),
        },
        "spec": spec,
    }


@st.composite
def an_ingress_class(draw: Draw) -> Document:
    # Whether it is ours changes which Ingresses are, without writing them.
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "IngressClass",
        "metadata": {"name": draw(st.sampled_from(["ours", "theirs"]))},
        "spec": {"controller": draw(st.sampled_from([SETTINGS.controller_name, "example.com/x"]))},
    }


an_object = st.one_of(a_service(), a_slice(), an_ingress(), an_ingress_class())
# A first set, then small changes, so that most objects outlive each change
# and the memo is used: each step writes an object, or deletes one written
# before (by index). Then the same with the generic generators, junk included.
plausible_steps = st.tuples(
    st.lists(an_object, min_size=3, max_size=10),
    st.lists(
        st.tuples(st.lists(an_object, max_size=1), st.lists(st.integers(0, 50), max_size=1)),
        min_size=1,
        max_size=6,
    ),
).map(lambda parts: [(parts[0], []), *parts[1]])
generic_steps = st.tuples(
    documents,
    st.lists(
        st.tuples(st.lists(any_object, max_size=2), st.lists(st.integers(0, 50), max_size=1)),
        min_size=1,
        max_size=5,
    ),
).map(lambda parts: [(parts[0], []), *parts[1]])


@BOUNDED
@given(plausible_steps)
def test_a_kept_memo_translates_exactly_as_a_fresh_translation(
    changes: list[tuple[list[Document], list[int]]],
) -> None:
    _check_steps(changes)


@BOUNDED
@given(generic_steps)
def test_so_it_does_with_generated_junk(changes: list[tuple[list[Document], list[int]]]) -> None:
    _check_steps(changes)


def _check_steps(changes: list[tuple[list[Document], list[int]]]) -> None:
    store = Store()
    _apply_all(store, FIXED)
    memo = TranslationMemo()
    written: list[ObjectKey] = []
    for bodies, deletions in changes:
        _apply_all(store, bodies)
        written.extend(parse_object(b).key for b in bodies if _parses(b))
        for index in deletions:
            if written:
                store.delete(written[index % len(written)], origin="test")
        view = store.view()
        kept = translate(view, settings=SETTINGS, memo=memo)
        fresh = translate(view, settings=SETTINGS)
        assert kept.conditions == fresh.conditions
        assert kept.config == fresh.config


def _parses(body: Document) -> bool:
    try:
        parse_object(body)
    except ObjectError:
        return False
    return True


def routed_service(name: str, *, port_name: str = "grpc") -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {"ports": [{"name": port_name, "port": 50051}]},
    }


def routed_slice(service: str, address: str) -> dict[str, Any]:
    return fast_path_bodies.endpoint_slice(f"{service}-1", service=service, addresses=[address])


def routed_ingress(
    name: str, *, host: str, annotations: dict[str, str] | None = None
) -> dict[str, Any]:
    body = fast_path_bodies.ingress(name, host=host, service=name)
    body["metadata"]["annotations"] = annotations or {}
    return body


def _store_with(names: list[str]) -> Store:
    store = Store()
    for index, name in enumerate(names):
        for body in (
            routed_service(name),
            routed_slice(name, f"10.0.0.{index + 1}"),
            routed_ingress(name, host=f"{name}.example.com"),
        ):
            store.apply(parse_object(body), origin="test")
    return store


def _vhost(translation: ir.Translation, host: str) -> ir.VirtualHost:
    (http,) = [rc for rc in translation.config.route_configs if rc.name == "http"]
    return next(vhost for vhost in http.virtual_hosts if vhost.name == host)


def _backend(translation: ir.Translation, service: str) -> ir.Backend:
    return next(
        b for b in translation.config.backends if b.name.startswith(f"{NAMESPACE}/{service}:")
    )


def test_an_unchanged_ingress_gives_the_very_same_virtual_host_and_backend() -> None:
    """What makes the resource builder's identity lookups hit: reuse, not equal copies."""
    store = _store_with(["a", "b"])
    memo = TranslationMemo()
    before = translate(store.view(), settings=SETTINGS, memo=memo)
    store.apply(parse_object(routed_ingress("b", host="b2.example.com")), origin="test")
    after = translate(store.view(), settings=SETTINGS, memo=memo)
    assert _vhost(after, "a.example.com") is _vhost(before, "a.example.com")
    assert _backend(after, "a") is _backend(before, "a")
    assert [vh.name for vh in after.config.route_configs[0].virtual_hosts] == [
        "a.example.com",
        "b2.example.com",
    ]


def test_a_one_ingress_change_works_out_only_the_hosts_it_names(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    store = _store_with(["a", "b", "c"])
    memo = TranslationMemo()
    # The first translation works every host out at once and keeps no
    # parts (memo.HostMemo.first_translation); the second keeps them.
    translate(store.view(), settings=SETTINGS, memo=memo)
    translate(store.view(), settings=SETTINGS, memo=memo)
    contested: list[set[str]] = []

    def counting(candidates: Iterable[Candidate], *, findings: Findings) -> list[Candidate]:
        listed = list(candidates)
        contested.append({candidate.host for candidate in listed})
        return resolve_conflicts(listed, findings=findings)

    monkeypatch.setattr(translator, "resolve_conflicts", counting)
    store.apply(parse_object(routed_ingress("b", host="b2.example.com")), origin="test")
    after = translate(store.view(), settings=SETTINGS, memo=memo)
    assert contested == [{"b2.example.com"}]
    assert [vh.name for vh in after.config.route_configs[0].virtual_hosts] == [
        "a.example.com",
        "b2.example.com",
        "c.example.com",
    ]


def test_an_ingress_change_visits_only_its_hosts_and_a_service_change_every_host(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Unchanged hosts are not even looked up after an Ingress change (at
    thousands of hosts, that walk was most of a translation); after a
    Service change every host's part is checked against the store."""
    store = _store_with(["a", "b", "c"])
    memo = TranslationMemo()
    translate(store.view(), settings=SETTINGS, memo=memo)
    translate(store.view(), settings=SETTINGS, memo=memo)
    visited: list[str] = []
    find = HostMemo.find

    def counting(self: HostMemo, host: str, *args: Any, **kwargs: Any) -> HostPart | None:
        visited.append(host)
        return find(self, host, *args, **kwargs)

    monkeypatch.setattr(HostMemo, "find", counting)
    store.apply(parse_object(routed_ingress("b", host="b2.example.com")), origin="test")
    translate(store.view(), settings=SETTINGS, memo=memo)
    # b.example.com is no longer named: forgotten without a lookup.
    assert visited == ["b2.example.com"]
    visited.clear()
    store.apply(parse_object(routed_service("a", port_name="web")), origin="test")
    translate(store.view(), settings=SETTINGS, memo=memo)
    assert sorted(visited) == ["a.example.com", "b2.example.com", "c.example.com"]


def test_a_translation_that_failed_leaves_the_next_one_exact(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An Ingress first read by a translation that then failed is still served."""
    store = _store_with(["a", "b"])
    memo = TranslationMemo()
    translate(store.view(), settings=SETTINGS, memo=memo)
    translate(store.view(), settings=SETTINGS, memo=memo)
    store.apply(parse_object(routed_ingress("b", host="new.example.com")), origin="test")

    def failing(*args: Any, **kwargs: Any) -> BackendResolver:
        raise RuntimeError("a translator bug")

    with monkeypatch.context() as patched:
        patched.setattr(translator, "BackendResolver", failing)
        with pytest.raises(RuntimeError):
            translate(store.view(), settings=SETTINGS, memo=memo)
    store.apply(parse_object(routed_ingress("a", host="other.example.com")), origin="test")
    view = store.view()
    kept = translate(view, settings=SETTINGS, memo=memo)
    assert kept.config == translate(view, settings=SETTINGS).config
    assert [vhost.name for vhost in kept.config.route_configs[0].virtual_hosts] == [
        "new.example.com",
        "other.example.com",
    ]


def test_hosts_kept_whole_still_reuse_their_routes_once_a_service_changes() -> None:
    """A host reused whole leaves its routes out of the route memo for a while;
    worked out again (a slice changed), it must still find them by identity."""
    store = _store_with(["a", "b", "c"])
    memo = TranslationMemo()
    first = translate(store.view(), settings=SETTINGS, memo=memo)
    translate(store.view(), settings=SETTINGS, memo=memo)
    store.apply(parse_object(routed_ingress("b", host="b2.example.com")), origin="test")
    translate(store.view(), settings=SETTINGS, memo=memo)
    # A changed Service works its own host out again, and only that one.
    store.apply(parse_object(routed_service("c", port_name="http")), origin="test")
    fourth = translate(store.view(), settings=SETTINGS, memo=memo)
    assert _vhost(fourth, "a.example.com") is _vhost(first, "a.example.com")
    assert _backend(fourth, "a") is _backend(first, "a")
    assert _backend(fourth, "c").protocol is ir.UpstreamProtocol.HTTP1


def test_a_host_worked_out_again_keeps_the_routes_of_its_unchanged_ingresses() -> None:
    """Reused whole for a while, a host's routes leave the route memo; when one
    of its Ingresses changes, the others' routes are still the very same."""
    store = _store_with(["a", "b"])
    extra = routed_ingress("a-extra", host="a.example.com")
    extra["spec"]["rules"][0]["http"]["paths"][0]["path"] = "/extra"
    store.apply(parse_object(extra), origin="test")
    memo = TranslationMemo()
    translate(store.view(), settings=SETTINGS, memo=memo)
    first = translate(store.view(), settings=SETTINGS, memo=memo)
    store.apply(parse_object(routed_ingress("b", host="b2.example.com")), origin="test")
    translate(store.view(), settings=SETTINGS, memo=memo)
    extra["spec"]["rules"][0]["http"]["paths"][0]["path"] = "/other"
    store.apply(parse_object(extra), origin="test")
    fourth = translate(store.view(), settings=SETTINGS, memo=memo)

    def route_of(translation: ir.Translation, name: str) -> ir.Route:
        vhost = _vhost(translation, "a.example.com")
        return next(
            route for route in vhost.routes if route.name.startswith(f"{NAMESPACE}/{name}/")
        )

    assert route_of(fourth, "a") is route_of(first, "a")
    assert route_of(fourth, "a-extra").path.value == "/other"


def test_a_route_to_a_missing_service_forwards_once_the_service_appears() -> None:
    store = _store_with(["a"])
    store.apply(parse_object(routed_ingress("late", host="late.example.com")), origin="test")
    memo = TranslationMemo()
    for _ in range(2):
        missing = translate(store.view(), settings=SETTINGS, memo=memo)
        (route,) = _vhost(missing, "late.example.com").routes
        assert isinstance(route.action, ir.DirectResponse)
    store.apply(parse_object(routed_service("late")), origin="test")
    store.apply(parse_object(routed_slice("late", "10.0.0.9")), origin="test")
    found = translate(store.view(), settings=SETTINGS, memo=memo)
    (route,) = _vhost(found, "late.example.com").routes
    assert isinstance(route.action, ir.Forward)
    assert [e.address for e in _backend(found, "late").endpoints] == ["10.0.0.9"]


def test_a_changed_service_or_slice_is_read_again() -> None:
    store = _store_with(["a"])
    memo = TranslationMemo()
    translate(store.view(), settings=SETTINGS, memo=memo)
    store.apply(parse_object(routed_slice("a", "10.9.9.9")), origin="test")
    moved = translate(store.view(), settings=SETTINGS, memo=memo)
    assert [e.address for e in _backend(moved, "a").endpoints] == ["10.9.9.9"]
    # The Ingress names the port by number; renamed "http", the cluster speaks HTTP/1.1.
    store.apply(parse_object(routed_service("a", port_name="http")), origin="test")
    renamed = translate(store.view(), settings=SETTINGS, memo=memo)
    assert _backend(renamed, "a").protocol is ir.UpstreamProtocol.HTTP1


def test_a_remembered_ingress_keeps_its_conditions_after_an_unrelated_change() -> None:
    """A memo hit replays the findings the object made, not only its routes."""
    store = _store_with(["a", "b"])
    store.apply(
        parse_object(
            routed_ingress(
                "a", host="a.example.com", annotations={"xds-ingress.io/retries": "many"}
            )
        ),
        origin="test",
    )
    memo = TranslationMemo()
    first = translate(store.view(), settings=SETTINGS, memo=memo)
    store.apply(parse_object(routed_ingress("b", host="b2.example.com")), origin="test")
    second = translate(store.view(), settings=SETTINGS, memo=memo)
    bad = [c for c in second.conditions if c.object.name == "a" and c.status == "False"]
    assert bad and bad == [
        c for c in first.conditions if c.object.name == "a" and c.status == "False"
    ]
    assert "xds-ingress.io/retries" in bad[0].message


def test_the_memo_forgets_a_deleted_ingress_one_translation_later() -> None:
    store = _store_with(["a", "b"])
    memo = TranslationMemo()
    translate(store.view(), settings=SETTINGS, memo=memo)
    assert len(memo.ingresses) == 2
    store.delete(ObjectKey("Ingress", NAMESPACE, "b"), origin="test")
    translate(store.view(), settings=SETTINGS, memo=memo)
    assert len(memo.ingresses) == 1


def test_an_unchanged_ingress_is_served_or_not_as_its_class_becomes_ours_or_not() -> None:
    store = _store_with(["a"])
    ingress = routed_ingress("a", host="a.example.com")
    ingress["spec"]["ingressClassName"] = "grpc"
    store.apply(parse_object(ingress), origin="test")
    ingress_class = {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "IngressClass",
        "metadata": {"name": "grpc"},
        "spec": {"controller": SETTINGS.controller_name},
    }
    memo = TranslationMemo()

    def hosts() -> list[str]:
        translation = translate(store.view(), settings=SETTINGS, memo=memo)
        (http,) = [rc for rc in translation.config.route_configs if rc.name == "http"]
        return [vhost.name for vhost in http.virtual_hosts]

    assert hosts() == []
    store.apply(parse_object(ingress_class), origin="test")
    assert hosts() == ["a.example.com"]
    store.delete(ObjectKey("IngressClass", "", "grpc"), origin="test")
    assert hosts() == []


def test_one_service_ref_resolved_for_another_protocol_is_not_taken_from_the_memo() -> None:
    store = _store_with(["a"])
    memo = ResolvedBackends()
    ref = ServiceRef(namespace=NAMESPACE, name="a", port=50051)
    view = store.view()
    implied = BackendResolver(view, findings=Findings(), memo=memo).resolve(ref)
    forced = BackendResolver(view, findings=Findings(), memo=memo).resolve(
        ref, protocol=ir.UpstreamProtocol.HTTP1
    )
    assert isinstance(implied, ir.Backend) and isinstance(forced, ir.Backend)
    assert (implied.protocol, forced.protocol) == (
        ir.UpstreamProtocol.H2C,
        ir.UpstreamProtocol.HTTP1,
    )


def test_a_views_generations_stand_still_exactly_while_its_objects_are_the_same() -> None:
    """Trusting remembered Backends rests on this."""
    kinds = ["Service", "EndpointSlice", "Secret"]
    store = _store_with(["a"])
    before = store.view()
    store.apply(parse_object(routed_ingress("a", host="a2.example.com")), origin="test")
    assert store.view().generations(kinds) == before.generations(kinds)
    # An equal copy read from another file replaces the stored object.
    store.apply(parse_object(routed_service("a"), source="moved.yaml"), origin="test")
    after = store.view()
    assert after.get("Service", NAMESPACE, "a") is not before.get("Service", NAMESPACE, "a")
    assert after.generations(kinds) != before.generations(kinds)


def test_one_memo_used_on_two_stores_takes_nothing_from_one_to_the_other() -> None:
    """Stores with the same history of counts still hold different objects."""
    ingress = parse_object(routed_ingress("a", host="a.example.com"))
    stores = []
    for address in ("10.0.0.1", "10.0.0.2"):
        store = Store()
        for body in (routed_service("a"), routed_slice("a", address)):
            store.apply(parse_object(body), origin="test")
        # The very same Ingress object: its rules' ServiceRefs are remembered by identity.
        store.apply(ingress, origin="test")
        stores.append(store)
    memo = TranslationMemo()
    first, second = (translate(s.view(), settings=SETTINGS, memo=memo) for s in stores)
    assert [e.address for e in _backend(first, "a").endpoints] == ["10.0.0.1"]
    assert [e.address for e in _backend(second, "a").endpoints] == ["10.0.0.2"]
