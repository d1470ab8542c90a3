"""A folder of YAML, `xds-ingress serve` reading it, and an Envoy it configures.

The data-plane, coalescing and TLS scenarios all put their backend behind
the same three pieces; only what the folder holds and where each process
runs differ.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bench import control_plane, envoy
from bench.procs import LOOPBACK, Child, free_port, wait_until_accepting
from xds_ingress.bootstrap import render_bootstrap


@dataclass(frozen=True, slots=True)
class FolderStack:
    envoy: Child
    envoy_admin: int
    ports: control_plane.Ports  # the control plane's, and Envoy's listener ports


def start(
    workdir: Path,
    *,
    objects_yaml: str,
    node_id: str,
    expected: envoy.Expected,
    register: Callable[[Child], Child],
    control_plane_cpus: tuple[int, ...] = (),
    envoy_cpus: tuple[int, ...] = (),
    envoy_concurrency: int = 1,
) -> FolderStack:
    """Both processes started and Envoy LIVE with `expected`.

    `register` gets each child as soon as it is spawned, so the caller's
    cleanup stops it even when a later step fails.
    """
    folder = workdir / "objects"
    folder.mkdir(parents=True)
    (folder / "objects.yaml").write_text(objects_yaml)
    ports = control_plane.Ports.pick()
    server = register(
        control_plane.start(source=folder, ports=ports, workdir=workdir, cpus=control_plane_cpus)
    )
    wait_until_accepting(server, ports.xds, within_seconds=60)
    admin = free_port()
    config = envoy.write_bootstrap(
        render_bootstrap(
            xds_address=f"{LOOPBACK}:{ports.xds}",
            node_id=node_id,
            node_cluster="bench",
            admin_address=f"{LOOPBACK}:{admin}",
        ),
        workdir / "bootstrap.json",
    )
    proxy = register(
        envoy.start(
            name="xDS Envoy",
            config=config,
            workdir=workdir,
            cpus=envoy_cpus,
            concurrency=envoy_concurrency,
        )
    )
    try:
        envoy.wait_live(proxy, admin, expected, within_seconds=60)
    except TimeoutError as error:
        # Which side was stuck: the control plane's log says.
        raise TimeoutError(
            f"{error}; control plane log ends:\n{server.log_tail(1500)}"
            f"\nEnvoy log ends:\n{proxy.log_tail(1500)}"
        ) from error
    return FolderStack(envoy=proxy, envoy_admin=admin, ports=ports)
