"""The cold-start workload: N Services as a folder of Kubernetes YAML.

Each Service gets an EndpointSlice of `endpoints` ready pods and an Ingress
with one host routed to it, in a file of its own (what `kubectl get -o yaml`
of one app would look like). Pod addresses are on loopback (127.1.x.y): the
clusters are never called in this scenario, and no address off this
machine is ever named.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

NAMESPACE = "bench"
SERVICE_PORT = 50051
# Nothing listens here: the endpoints exist to be configured, not called.
POD_PORT = 9

# libyaml's emitter when PyYAML was built with it: 10k files in seconds, not a minute.
_Dumper: type[yaml.SafeDumper] = getattr(yaml, "CSafeDumper", yaml.SafeDumper)


def service_name(index: int) -> str:
    return f"svc-{index:05d}"


def host_name(index: int) -> str:
    return f"{service_name(index)}.bench.local"


def pod_address(service_index: int, endpoint_index: int, endpoints: int) -> str:
    flat = service_index * endpoints + endpoint_index
    return f"127.{1 + flat // 65536}.{flat // 256 % 256}.{flat % 256}"


def documents(index: int, *, endpoints: int) -> list[dict[str, Any]]:
    name = service_name(index)
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {
            "selector": {"app": name},
            "ports": [
                {
                    "name": "grpc",
                    "port": SERVICE_PORT,
                    "targetPort": "grpc",
                    "protocol": "TCP",
                    "appProtocol": "kubernetes.io/h2c",
                }
            ],
        },
    }
    endpoint_slice = {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": f"{name}-abcde",
            "namespace": NAMESPACE,
            "labels": {"kubernetes.io/service-name": name},
        },
        "addressType": "IPv4",
        "ports": [{"name": "grpc", "port": POD_PORT, "protocol": "TCP"}],
        "endpoints": [
            {
                "addresses": [pod_address(index, pod, endpoints)],
                "conditions": {"ready": True},
            }
            for pod in range(endpoints)
        ],
    }
    ingress = {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "Ingress",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {
            "rules": [
                {
                    "host": host_name(index),
                    "http": {
                        "paths": [
                            {
                                "path": "/",
                                "pathType": "Prefix",
                                "backend": {"service": {"name": name, "port": {"name": "grpc"}}},
                            }
                        ]
                    },
                }
            ]
        },
    }
    return [service, endpoint_slice, ingress]


def write_folder(folder: Path, *, services: int, endpoints: int) -> Path:
    """Write the workload into `folder` (created; must not hold other YAML)."""
    folder.mkdir(parents=True, exist_ok=True)
    for index in range(services):
        text = yaml.dump_all(documents(index, endpoints=endpoints), Dumper=_Dumper, sort_keys=False)
        (folder / f"{service_name(index)}.yaml").write_text(text)
    return folder
