import datetime

from google.protobuf import any_pb2 as _any_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class StreamKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    STREAM_KIND_UNSPECIFIED: _ClassVar[StreamKind]
    STREAM_KIND_SOTW: _ClassVar[StreamKind]
    STREAM_KIND_DELTA: _ClassVar[StreamKind]
STREAM_KIND_UNSPECIFIED: StreamKind
STREAM_KIND_SOTW: StreamKind
STREAM_KIND_DELTA: StreamKind

class ListNodesRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListNodesResponse(_message.Message):
    __slots__ = ("nodes",)
    NODES_FIELD_NUMBER: _ClassVar[int]
    nodes: _containers.RepeatedCompositeFieldContainer[Node]
    def __init__(self, nodes: _Optional[_Iterable[_Union[Node, _Mapping]]] = ...) -> None: ...

class Node(_message.Message):
    __slots__ = ("node_id", "node_cluster", "peer", "stream_kind", "connected_at", "types", "stream_id")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    NODE_CLUSTER_FIELD_NUMBER: _ClassVar[int]
    PEER_FIELD_NUMBER: _ClassVar[int]
    STREAM_KIND_FIELD_NUMBER: _ClassVar[int]
    CONNECTED_AT_FIELD_NUMBER: _ClassVar[int]
    TYPES_FIELD_NUMBER: _ClassVar[int]
    STREAM_ID_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    node_cluster: str
    peer: str
    stream_kind: StreamKind
    connected_at: _timestamp_pb2.Timestamp
    types: _containers.RepeatedCompositeFieldContainer[TypeStatus]
    stream_id: int
    def __init__(self, node_id: _Optional[str] = ..., node_cluster: _Optional[str] = ..., peer: _Optional[str] = ..., stream_kind: _Optional[_Union[StreamKind, str]] = ..., connected_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., types: _Optional[_Iterable[_Union[TypeStatus, _Mapping]]] = ..., stream_id: _Optional[int] = ...) -> None: ...

class TypeStatus(_message.Message):
    __slots__ = ("type_url", "sent_version", "acked_version", "last_nack", "wildcard", "resources_sent", "resources_acked", "held_back", "sent_at", "acked_at")
    TYPE_URL_FIELD_NUMBER: _ClassVar[int]
    SENT_VERSION_FIELD_NUMBER: _ClassVar[int]
    ACKED_VERSION_FIELD_NUMBER: _ClassVar[int]
    LAST_NACK_FIELD_NUMBER: _ClassVar[int]
    WILDCARD_FIELD_NUMBER: _ClassVar[int]
    RESOURCES_SENT_FIELD_NUMBER: _ClassVar[int]
    RESOURCES_ACKED_FIELD_NUMBER: _ClassVar[int]
    HELD_BACK_FIELD_NUMBER: _ClassVar[int]
    SENT_AT_FIELD_NUMBER: _ClassVar[int]
    ACKED_AT_FIELD_NUMBER: _ClassVar[int]
    type_url: str
    sent_version: str
    acked_version: str
    last_nack: Nack
    wildcard: bool
    resources_sent: int
    resources_acked: int
    held_back: _containers.RepeatedScalarFieldContainer[str]
    sent_at: _timestamp_pb2.Timestamp
    acked_at: _timestamp_pb2.Timestamp
    def __init__(self, type_url: _Optional[str] = ..., sent_version: _Optional[str] = ..., acked_version: _Optional[str] = ..., last_nack: _Optional[_Union[Nack, _Mapping]] = ..., wildcard: _Optional[bool] = ..., resources_sent: _Optional[int] = ..., resources_acked: _Optional[int] = ..., held_back: _Optional[_Iterable[str]] = ..., sent_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., acked_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class Nack(_message.Message):
    __slots__ = ("version", "error", "at", "resource_names")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    AT_FIELD_NUMBER: _ClassVar[int]
    RESOURCE_NAMES_FIELD_NUMBER: _ClassVar[int]
    version: str
    error: str
    at: _timestamp_pb2.Timestamp
    resource_names: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, version: _Optional[str] = ..., error: _Optional[str] = ..., at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., resource_names: _Optional[_Iterable[str]] = ...) -> None: ...

class GetSnapshotRequest(_message.Message):
    __slots__ = ("node_group", "node_id", "type_urls")
    NODE_GROUP_FIELD_NUMBER: _ClassVar[int]
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    TYPE_URLS_FIELD_NUMBER: _ClassVar[int]
    node_group: str
    node_id: str
    type_urls: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, node_group: _Optional[str] = ..., node_id: _Optional[str] = ..., type_urls: _Optional[_Iterable[str]] = ...) -> None: ...

class GetSnapshotResponse(_message.Message):
    __slots__ = ("node_group", "version", "types")
    NODE_GROUP_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    TYPES_FIELD_NUMBER: _ClassVar[int]
    node_group: str
    version: str
    types: _containers.RepeatedCompositeFieldContainer[TypeResources]
    def __init__(self, node_group: _Optional[str] = ..., version: _Optional[str] = ..., types: _Optional[_Iterable[_Union[TypeResources, _Mapping]]] = ...) -> None: ...

class TypeResources(_message.Message):
    __slots__ = ("type_url", "version", "resources")
    TYPE_URL_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    RESOURCES_FIELD_NUMBER: _ClassVar[int]
    type_url: str
    version: str
    resources: _containers.RepeatedCompositeFieldContainer[SnapshotResource]
    def __init__(self, type_url: _Optional[str] = ..., version: _Optional[str] = ..., resources: _Optional[_Iterable[_Union[SnapshotResource, _Mapping]]] = ...) -> None: ...

class SnapshotResource(_message.Message):
    __slots__ = ("name", "version", "resource")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    RESOURCE_FIELD_NUMBER: _ClassVar[int]
    name: str
    version: str
    resource: _any_pb2.Any
    def __init__(self, name: _Optional[str] = ..., version: _Optional[str] = ..., resource: _Optional[_Union[_any_pb2.Any, _Mapping]] = ...) -> None: ...

class WatchSnapshotsRequest(_message.Message):
    __slots__ = ("node_group",)
    NODE_GROUP_FIELD_NUMBER: _ClassVar[int]
    node_group: str
    def __init__(self, node_group: _Optional[str] = ...) -> None: ...

class SnapshotEvent(_message.Message):
    __slots__ = ("node_group", "version", "previous_version", "seen_at", "versions_skipped", "changes")
    NODE_GROUP_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    PREVIOUS_VERSION_FIELD_NUMBER: _ClassVar[int]
    SEEN_AT_FIELD_NUMBER: _ClassVar[int]
    VERSIONS_SKIPPED_FIELD_NUMBER: _ClassVar[int]
    CHANGES_FIELD_NUMBER: _ClassVar[int]
    node_group: str
    version: str
    previous_version: str
    seen_at: _timestamp_pb2.Timestamp
    versions_skipped: int
    changes: _containers.RepeatedCompositeFieldContainer[TypeChange]
    def __init__(self, node_group: _Optional[str] = ..., version: _Optional[str] = ..., previous_version: _Optional[str] = ..., seen_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., versions_skipped: _Optional[int] = ..., changes: _Optional[_Iterable[_Union[TypeChange, _Mapping]]] = ...) -> None: ...

class TypeChange(_message.Message):
    __slots__ = ("type_url", "version", "added", "changed", "removed")
    TYPE_URL_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    ADDED_FIELD_NUMBER: _ClassVar[int]
    CHANGED_FIELD_NUMBER: _ClassVar[int]
    REMOVED_FIELD_NUMBER: _ClassVar[int]
    type_url: str
    version: str
    added: _containers.RepeatedScalarFieldContainer[str]
    changed: _containers.RepeatedScalarFieldContainer[str]
    removed: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, type_url: _Optional[str] = ..., version: _Optional[str] = ..., added: _Optional[_Iterable[str]] = ..., changed: _Optional[_Iterable[str]] = ..., removed: _Optional[_Iterable[str]] = ...) -> None: ...

class ListConditionsRequest(_message.Message):
    __slots__ = ("kind", "namespace", "problems_only")
    KIND_FIELD_NUMBER: _ClassVar[int]
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    PROBLEMS_ONLY_FIELD_NUMBER: _ClassVar[int]
    kind: str
    namespace: str
    problems_only: bool
    def __init__(self, kind: _Optional[str] = ..., namespace: _Optional[str] = ..., problems_only: _Optional[bool] = ...) -> None: ...

class ListConditionsResponse(_message.Message):
    __slots__ = ("conditions",)
    CONDITIONS_FIELD_NUMBER: _ClassVar[int]
    conditions: _containers.RepeatedCompositeFieldContainer[Condition]
    def __init__(self, conditions: _Optional[_Iterable[_Union[Condition, _Mapping]]] = ...) -> None: ...

class ObjectRef(_message.Message):
    __slots__ = ("kind", "namespace", "name", "source")
    KIND_FIELD_NUMBER: _ClassVar[int]
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    kind: str
    namespace: str
    name: str
    source: str
    def __init__(self, kind: _Optional[str] = ..., namespace: _Optional[str] = ..., name: _Optional[str] = ..., source: _Optional[str] = ...) -> None: ...

class Condition(_message.Message):
    __slots__ = ("object", "type", "status", "reason", "message", "rejections")
    OBJECT_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    REJECTIONS_FIELD_NUMBER: _ClassVar[int]
    object: ObjectRef
    type: str
    status: str
    reason: str
    message: str
    rejections: _containers.RepeatedCompositeFieldContainer[Rejection]
    def __init__(self, object: _Optional[_Union[ObjectRef, _Mapping]] = ..., type: _Optional[str] = ..., status: _Optional[str] = ..., reason: _Optional[str] = ..., message: _Optional[str] = ..., rejections: _Optional[_Iterable[_Union[Rejection, _Mapping]]] = ...) -> None: ...

class Rejection(_message.Message):
    __slots__ = ("node_id", "node_group", "type_url", "resource_name", "version", "error")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    NODE_GROUP_FIELD_NUMBER: _ClassVar[int]
    TYPE_URL_FIELD_NUMBER: _ClassVar[int]
    RESOURCE_NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    node_group: str
    type_url: str
    resource_name: str
    version: str
    error: str
    def __init__(self, node_id: _Optional[str] = ..., node_group: _Optional[str] = ..., type_url: _Optional[str] = ..., resource_name: _Optional[str] = ..., version: _Optional[str] = ..., error: _Optional[str] = ...) -> None: ...
