"""The cold-start stage report (bench/phases.py) on the builder's real output."""

from __future__ import annotations

from bench.phases import virtual_host_count
from xds_ingress import ir
from xds_ingress.resources.builder import ResourceBuilder


def _host(name: str) -> ir.VirtualHost:
    return ir.VirtualHost(name=name, domains=(name,), routes=())


def test_virtual_hosts_of_encoded_route_configs_are_counted() -> None:
    config = ir.Config(
        route_configs=(
            ir.RouteConfig(name="http", virtual_hosts=(_host("a.example"), _host("b.example"))),
            ir.RouteConfig(name="https/x", virtual_hosts=(_host("c.example"),)),
        )
    )
    assert virtual_host_count(ResourceBuilder().build(config)) == 3
