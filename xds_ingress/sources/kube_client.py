"""Where the Kubernetes client finds its cluster and credentials.

The order kubectl and client-go use: an explicit kubeconfig file; else the
pod's service account when running in a cluster; else the default
kubeconfig ($KUBECONFIG, or ~/.kube/config). The `kubernetes` package reads
those environment variables and files itself; we only choose the order.
"""

from __future__ import annotations

from kubernetes import config as kube_config
from kubernetes.client import Configuration
from kubernetes.config.config_exception import ConfigException


class KubeConfigError(ValueError):
    """No usable cluster configuration; the message says what was tried."""


def load_configuration(*, kubeconfig: str | None) -> Configuration:
    configuration = Configuration()
    try:
        if kubeconfig is not None:
            kube_config.load_kube_config(
                config_file=kubeconfig, client_configuration=configuration, persist_config=False
            )
            return configuration
        try:
            # Refreshes the projected token as the kubelet rotates it.
            kube_config.load_incluster_config(client_configuration=configuration)
            return configuration
        except ConfigException:
            pass  # not in a pod: KUBERNETES_SERVICE_HOST or the token is missing
        kube_config.load_kube_config(client_configuration=configuration, persist_config=False)
    except (ConfigException, OSError) as error:
        where = kubeconfig or "the pod's service account or the default kubeconfig"
        raise KubeConfigError(
            f"cannot load a Kubernetes configuration from {where}: {error}"
        ) from None
    return configuration
