"""What translate needs to know that is not in the cluster."""

from __future__ import annotations

from dataclasses import dataclass, field

from xds_ingress import ir

DEFAULT_INGRESS_CLASS = "xds-ingress"
DEFAULT_CONTROLLER_NAME = "xds-ingress.io/controller"


@dataclass(frozen=True, slots=True, kw_only=True)
class ListenerSettings:
    """Where Envoy listens and which Ingresses are ours.

    An Ingress is ours when its spec.ingressClassName names an IngressClass
    whose spec.controller is `controller_name`; or, without that field, when
    its legacy `kubernetes.io/ingress.class` annotation equals
    `ingress_class`; or, with neither, when one of our IngressClasses is
    annotated `ingressclass.kubernetes.io/is-default-class: "true"`.

    `min_tls_version` is the oldest TLS version the HTTPS listener accepts.

    `downstream` bounds client connections on every listener (the maximum
    connection age that makes long-lived clients rebalance, and the drain
    grace).

    `claim_classless` also claims every Ingress that names no class at all.
    It is off by default, as an Ingress without a class belongs to no
    controller in a shared cluster; turn it on for the file source, where
    every object in the folder is meant for us and an IngressClass would be
    boilerplate.
    """

    listen_address: str
    http_port: int
    https_port: int
    ingress_class: str = DEFAULT_INGRESS_CLASS
    controller_name: str = DEFAULT_CONTROLLER_NAME
    claim_classless: bool = False
    min_tls_version: ir.TlsVersion = ir.TlsVersion.TLS1_2
    downstream: ir.DownstreamLimits = field(default_factory=ir.DownstreamLimits)
