"""Pieces shared by the resource modules and the bootstrap renderers.

Kept in one place so every xDS type spells them the same way: a listener's
RDS source and a cluster's EDS source must both say "over the ADS stream, in
v3", or Envoy would fetch that type outside ADS and lose the ordering ADS
gives.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from envoy.config.bootstrap.v3 import bootstrap_pb2
from envoy.config.core.v3 import address_pb2, base_pb2, config_source_pb2
from google.protobuf import any_pb2, duration_pb2, json_format
from google.protobuf.message import Message


def parse_host_port(text: str) -> tuple[str, int]:
    """Split HOST:PORT ("[::1]:18000" for IPv6); raise ValueError when it is not one."""
    host, _, port_text = text.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    port = int(port_text) if port_text.isascii() and port_text.isdigit() else -1
    if not host or not 0 <= port <= 65535:
        raise ValueError(f"expected HOST:PORT, got {text!r}")
    return host, port


def socket_address(host: str, port: int) -> address_pb2.Address:
    return address_pb2.Address(
        socket_address=address_pb2.SocketAddress(address=host, port_value=port)
    )


def ads_config_source() -> config_source_pb2.ConfigSource:
    """Fetch the resource over the ADS stream the bootstrap opened."""
    return config_source_pb2.ConfigSource(
        ads=config_source_pb2.AggregatedConfigSource(),
        resource_api_version=config_source_pb2.V3,
    )


def seconds(value: int) -> duration_pb2.Duration:
    return duration_pb2.Duration(seconds=value)


def typed(message: Message) -> any_pb2.Any:
    """Pack an extension config; deterministic so equal configs give equal bytes."""
    packed = any_pb2.Any()
    packed.Pack(message, deterministic=True)
    return packed


def bootstrap_shell(
    *, node_id: str, node_cluster: str, admin_address: str | None
) -> bootstrap_pb2.Bootstrap:
    """What every bootstrap of ours starts with: who the Envoy is, and its admin port."""
    bootstrap = bootstrap_pb2.Bootstrap(node=base_pb2.Node(id=node_id, cluster=node_cluster))
    if admin_address is not None:
        bootstrap.admin.address.CopyFrom(socket_address(*parse_host_port(admin_address)))
    return bootstrap


def to_document(message: Message) -> dict[str, Any]:
    """The message as Envoy's JSON/YAML config form, in plain dicts and lists.

    MessageToDict returns OrderedDicts for `Any` fields, which yaml.safe_dump
    refuses.
    """
    document = json_format.MessageToDict(message, preserving_proto_field_name=True)
    return {key: _plain(item) for key, item in document.items()}


def _plain(value: object) -> Any:
    if isinstance(value, Mapping):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_plain(item) for item in value]
    return value
