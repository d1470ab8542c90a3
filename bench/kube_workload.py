"""Kubernetes objects for the scenarios that run against the real API server.

Service `i` is named `svc-NNNNN`, routed by an Ingress of the same name for
host `svc-NNNNN.bench.local` (bench/workload.py's names), and its
EndpointSlice names one loopback address and port. Objects carry apiVersion
and kind so they can be written into etcd as well as through the API.
"""

from __future__ import annotations

from typing import Any, Final

from bench.kube import KubeApi
from bench.workload import NAMESPACE, SERVICE_PORT, host_name, service_name
from xds_ingress.translate.settings import DEFAULT_CONTROLLER_NAME

INGRESS_CLASS: Final = "xds-ingress-bench"
# etcd key collections under /registry (what the API server stores them as).
SERVICES: Final = "services/specs"
ENDPOINT_SLICES: Final = "endpointslices"
INGRESSES: Final = "ingress"

INGRESS_PATH: Final = f"/apis/networking.k8s.io/v1/namespaces/{NAMESPACE}/ingresses"
SERVICE_PATH: Final = f"/api/v1/namespaces/{NAMESPACE}/services"


def service(index: int) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": service_name(index), "namespace": NAMESPACE},
        "spec": {
            "type": "ClusterIP",
            "ports": [
                {
                    "name": "grpc",
                    "port": SERVICE_PORT,
                    "protocol": "TCP",
                    "appProtocol": "kubernetes.io/h2c",
                }
            ],
        },
    }


def endpoint_slice(index: int, *, addresses: list[str], port: int) -> dict[str, Any]:
    name = service_name(index)
    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": f"{name}-slice",
            "namespace": NAMESPACE,
            "labels": {"kubernetes.io/service-name": name},
        },
        "addressType": "IPv4",
        "ports": [{"name": "grpc", "port": port, "protocol": "TCP"}],
        "endpoints": [
            {"addresses": [address], "conditions": {"ready": True}} for address in addresses
        ],
    }


def ingress(index: int) -> dict[str, Any]:
    name = service_name(index)
    backend = {"service": {"name": name, "port": {"name": "grpc"}}}
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "Ingress",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {
            "ingressClassName": INGRESS_CLASS,
            "rules": [
                {
                    "host": host_name(index),
                    "http": {"paths": [{"path": "/", "pathType": "Prefix", "backend": backend}]},
                }
            ],
        },
    }


def create_namespace_and_class(api: KubeApi) -> None:
    """The namespace everything lives in, and the IngressClass that makes Ingresses ours."""
    api.create("/api/v1/namespaces", {"metadata": {"name": NAMESPACE}})
    api.create(
        "/apis/networking.k8s.io/v1/ingressclasses",
        {"metadata": {"name": INGRESS_CLASS}, "spec": {"controller": DEFAULT_CONTROLLER_NAME}},
    )
