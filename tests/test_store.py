"""The store: what it holds, what it announces, and what a view shows."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from xds_ingress.sources.objects import KubeObject, ObjectKey, parse_object
from xds_ingress.store import SECRET_ANNOTATIONS, Change, Store
from xds_ingress.translate.annotations import BACKEND_CA_SECRET, CLIENT_CA_SECRET


def service(name: str, *, ns: str = "default", port: int = 80) -> KubeObject:
    return parse_object(
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": name, "namespace": ns},
            "spec": {"ports": [{"port": port}]},
        }
    )


def endpoint_slice(
    name: str, *, service: str | None, ns: str = "default", address: str = "10.0.0.1"
) -> KubeObject:
    labels = {} if service is None else {"kubernetes.io/service-name": service}
    return parse_object(
        {
            "apiVersion": "discovery.k8s.io/v1",
            "kind": "EndpointSlice",
            "metadata": {"name": name, "namespace": ns, "labels": labels},
            "addressType": "IPv4",
            "endpoints": [{"addresses": [address]}],
        }
    )


def tls_ingress(name: str, *secrets: str) -> KubeObject:
    return parse_object(
        {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "Ingress",
            "metadata": {"name": name},
            "spec": {"tls": [{"secretName": s} for s in secrets]},
        }
    )


class Recorder:
    def __init__(self, store: Store) -> None:
        self.changes: list[Change] = []
        store.subscribe(self.changes.append)

    def kinds(self) -> list[set[str]]:
        return [set(change.kinds) for change in self.changes]


def names(objects: Any) -> list[str]:
    return [obj.name for obj in objects]


def test_apply_get_and_delete() -> None:
    store = Store()
    changes = Recorder(store)
    store.apply(service("b"), origin="k8s")
    store.apply(service("a"), origin="k8s")
    assert names(store.view().objects("Service")) == ["a", "b"]
    assert store.view().get("Service", "default", "a") == service("a")

    store.delete(ObjectKey("Service", "default", "a"), origin="k8s")
    store.delete(ObjectKey("Service", "default", "never"), origin="k8s")
    assert store.view().get("Service", "default", "a") is None
    assert changes.kinds() == [{"Service"}, {"Service"}, {"Service"}]


def test_an_update_equal_to_what_is_stored_announces_nothing() -> None:
    store = Store()
    store.apply(service("a"), origin="k8s")
    changes = Recorder(store)
    store.apply(service("a"), origin="k8s")
    store.replace_all([service("a")], origin="k8s")
    assert changes.changes == []
    store.apply(service("a", port=81), origin="k8s")
    assert len(changes.changes) == 1


def ingress_with(
    *, status: str, resource_version: str, generation: int = 1, host: str = "a.example.com"
) -> KubeObject:
    return parse_object(
        {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "Ingress",
            "metadata": {
                "name": "web",
                "generation": generation,
                "resourceVersion": resource_version,
                "managedFields": [{"manager": f"writer-{resource_version}"}],
            },
            "spec": {"rules": [{"host": host}]},
            "status": {"loadBalancer": {"ingress": [{"ip": status}]}},
        }
    )


def test_a_status_write_coming_back_costs_no_rebuild_but_is_seen() -> None:
    """Our own status writes return through the watch: no change, a fresh copy."""
    store = Store()
    store.apply(ingress_with(status="10.0.0.1", resource_version="1"), origin="k8s")
    changes = Recorder(store)
    written = ingress_with(status="10.0.0.2", resource_version="2")
    store.apply(written, origin="k8s")
    assert changes.changes == []
    found = store.view().get("Ingress", "default", "web")
    # The status writer compares against this copy and patches with its resourceVersion.
    assert found is not None and found.body == written.body

    store.apply(ingress_with(status="10.0.0.2", resource_version="3", generation=2), origin="k8s")
    store.apply(
        ingress_with(status="10.0.0.2", resource_version="4", generation=2, host="b.example.com"),
        origin="k8s",
    )
    assert changes.kinds() == [{"Ingress"}, {"Ingress"}]


def test_a_status_change_of_a_kind_translation_reads_is_a_change() -> None:
    """The publish Service's status.loadBalancer gives the Ingresses their addresses."""
    store = Store()
    store.apply(service("envoy"), origin="k8s")
    changes = Recorder(store)
    with_address = parse_object(
        {**service("envoy").body, "status": {"loadBalancer": {"ingress": [{"ip": "1.2.3.4"}]}}}
    )
    store.apply(with_address, origin="k8s")
    assert changes.kinds() == [{"Service"}]


def test_an_equal_object_from_another_file_keeps_the_new_source() -> None:
    store = Store()
    first = parse_object(service("a").body, source="one.yaml")
    moved = parse_object(service("a").body, source="two.yaml")
    store.apply(first, origin="files")
    changes = Recorder(store)
    store.apply(moved, origin="files")
    assert changes.changes == []
    found = store.view().get("Service", "default", "a")
    assert found is not None and found.source == "two.yaml"


def test_replace_all_is_one_change_and_only_touches_its_origin() -> None:
    store = Store()
    store.apply(service("from-k8s"), origin="k8s")
    store.replace_all([service("a"), service("b")], origin="files")
    changes = Recorder(store)

    store.replace_all([service("b", port=81), endpoint_slice("c-1", service="c")], origin="files")
    assert names(store.view().objects("Service")) == ["b", "from-k8s"]
    assert len(changes.changes) == 1
    assert changes.changes[0].keys == {
        ObjectKey("Service", "default", "a"),
        ObjectKey("Service", "default", "b"),
        ObjectKey("EndpointSlice", "default", "c-1"),
    }

    store.replace_all([], origin="files")
    assert names(store.view().objects("Service")) == ["from-k8s"]


def test_changes_say_when_only_endpoints_moved() -> None:
    store = Store()
    changes = Recorder(store)
    store.apply(endpoint_slice("s-1", service="s"), origin="k8s")
    store.apply(endpoint_slice("s-1", service="s", address="10.0.0.2"), origin="k8s")
    store.replace_all([service("s"), endpoint_slice("s-2", service="s")], origin="files")
    assert [change.endpoints_only for change in changes.changes] == [True, True, False]


def test_endpoint_slices_are_indexed_by_their_service_label() -> None:
    store = Store()
    store.replace_all(
        [
            endpoint_slice("s-2", service="s"),
            endpoint_slice("s-1", service="s"),
            endpoint_slice("s-x", service="s", ns="other"),
            endpoint_slice("t-1", service="t"),
            endpoint_slice("orphan", service=None),
        ],
        origin="files",
    )
    assert names(store.view().endpoint_slices("default", "s")) == ["s-1", "s-2"]
    assert names(store.view().endpoint_slices("other", "s")) == ["s-x"]

    # Relabelled to another Service, then deleted.
    store.apply(endpoint_slice("s-1", service="t"), origin="files")
    assert names(store.view().endpoint_slices("default", "s")) == ["s-2"]
    assert names(store.view().endpoint_slices("default", "t")) == ["s-1", "t-1"]
    store.delete(ObjectKey("EndpointSlice", "default", "s-2"), origin="files")
    assert store.view().endpoint_slices("default", "s") == ()


def test_secrets_are_indexed_by_the_ingresses_that_use_them() -> None:
    store = Store()
    store.apply(tls_ingress("web", "cert", "other-cert"), origin="k8s")
    store.apply(tls_ingress("api", "cert"), origin="k8s")
    assert store.view().secret_users("default", "cert") == (
        ObjectKey("Ingress", "default", "api"),
        ObjectKey("Ingress", "default", "web"),
    )
    store.apply(tls_ingress("web"), origin="k8s")
    assert store.view().secret_users("default", "other-cert") == ()


def test_a_view_is_a_frozen_snapshot() -> None:
    store = Store()
    store.apply(service("a"), origin="k8s")
    view = store.view()
    assert store.view() is view  # unchanged store, same snapshot
    store.apply(service("b"), origin="k8s")
    assert names(view.objects("Service")) == ["a"]
    assert names(store.view().objects("Service")) == ["a", "b"]

    stored = view.get("Service", "default", "a")
    assert stored is not None
    with pytest.raises(TypeError):
        stored.body["spec"]["ports"][0]["port"] = 1


def test_objects_do_not_share_state_with_the_dict_they_came_from() -> None:
    body: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "a"},
        "spec": {},
    }
    store = Store()
    store.apply(parse_object(body), origin="k8s")
    body["spec"]["ports"] = [{"port": 1}]
    stored = store.view().get("Service", "default", "a")
    assert stored is not None and dict(stored.body["spec"]) == {}


def test_a_failing_subscriber_does_not_stop_the_others(caplog: pytest.LogCaptureFixture) -> None:
    store = Store()

    def broken(change: Change) -> None:
        raise RuntimeError("boom")

    store.subscribe(broken)
    changes = Recorder(store)
    with caplog.at_level(logging.ERROR, logger="xds_ingress.store"):
        store.apply(service("a"), origin="k8s")
    assert len(changes.changes) == 1
    assert "store subscriber" in caplog.text


def test_unsubscribe() -> None:
    store = Store()
    seen: list[Change] = []
    unsubscribe = store.subscribe(seen.append)
    unsubscribe()
    store.apply(service("a"), origin="k8s")
    assert seen == []


def secret(name: str, *, ns: str = "default", data: str = "a") -> KubeObject:
    return parse_object(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": name, "namespace": ns},
            "type": "kubernetes.io/tls",
            "data": {"tls.crt": data, "tls.key": data},
        }
    )


def test_a_secret_nothing_references_is_out_of_sight_and_costs_no_rebuild() -> None:
    store = Store()
    changes = Recorder(store)
    store.apply(secret("unused"), origin="k8s")
    store.apply(secret("unused", data="b"), origin="k8s")
    assert changes.changes == []
    assert store.view().get("Secret", "default", "unused") is None
    # Referenced: shown, in the same change as the Ingress that names it.
    store.apply(tls_ingress("web", "unused"), origin="k8s")
    assert changes.changes[-1].keys == {
        ObjectKey("Ingress", "default", "web"),
        ObjectKey("Secret", "default", "unused"),
    }
    shown = store.view().get("Secret", "default", "unused")
    assert shown is not None and shown.body["data"]["tls.crt"] == "b"
    # Its changes count now; when the last reference goes, it is hidden again.
    store.apply(secret("unused", data="c"), origin="k8s")
    assert changes.kinds()[-1] == {"Secret"}
    store.apply(tls_ingress("web"), origin="k8s")
    assert ObjectKey("Secret", "default", "unused") in changes.changes[-1].keys
    assert store.view().get("Secret", "default", "unused") is None
    # Deleted while hidden: gone, and a later reference finds nothing.
    store.delete(ObjectKey("Secret", "default", "unused"), origin="k8s")
    store.apply(tls_ingress("web", "unused"), origin="k8s")
    assert store.view().get("Secret", "default", "unused") is None


def test_secret_references_from_annotations_and_gateway_listeners() -> None:
    store = Store()
    for name in ("client-ca", "backend-ca", "gw-cert", "shared-cert"):
        store.apply(secret(name), origin="k8s")
    store.apply(secret("shared-cert", ns="certs"), origin="k8s")
    store.apply(
        parse_object(
            {
                "apiVersion": "networking.k8s.io/v1",
                "kind": "Ingress",
                "metadata": {
                    "name": "api",
                    "annotations": {
                        "xds-ingress.io/client-ca-secret": "client-ca",
                        "xds-ingress.io/backend-ca-secret": " backend-ca ",
                    },
                },
            }
        ),
        origin="k8s",
    )
    store.apply(
        parse_object(
            {
                "apiVersion": "gateway.networking.k8s.io/v1",
                "kind": "Gateway",
                "metadata": {"name": "gw", "namespace": "default"},
                "spec": {
                    "listeners": [
                        {"name": "a", "tls": {"certificateRefs": [{"name": "gw-cert"}]}},
                        {
                            "name": "b",
                            "tls": {
                                "certificateRefs": [
                                    {"kind": "Secret", "name": "shared-cert", "namespace": "certs"},
                                    {"kind": "ConfigMap", "name": "shared-cert"},
                                ]
                            },
                        },
                    ]
                },
            }
        ),
        origin="k8s",
    )
    view = store.view()
    for namespace, name in (
        ("default", "client-ca"),
        ("default", "backend-ca"),
        ("default", "gw-cert"),
        ("certs", "shared-cert"),
    ):
        assert view.get("Secret", namespace, name) is not None, (namespace, name)
    # A ConfigMap ref names no Secret.
    assert view.get("Secret", "default", "shared-cert") is None


def test_the_store_knows_every_secret_annotation_translate_reads() -> None:
    assert set(SECRET_ANNOTATIONS) == {BACKEND_CA_SECRET, CLIENT_CA_SECRET}


def test_an_objects_repr_never_shows_its_body() -> None:
    """A Secret's private key must not reach a log line through repr()."""
    key = parse_object(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "tls", "namespace": "default"},
            "type": "kubernetes.io/tls",
            "data": {"tls.key": "LS0tLS1CRUdJTiBQUklWQVRFIEtFWS0tLS0t"},
        }
    )
    shown = repr(key)
    assert "Secret" in shown and "tls" in shown
    assert "LS0tLS1CRUdJTiBQUklWQVRFIEtFWS0tLS0t" not in shown
    assert "data" not in shown
