from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ZoneMessage(_message.Message):
    __slots__ = ("hello", "changes", "ack")
    HELLO_FIELD_NUMBER: _ClassVar[int]
    CHANGES_FIELD_NUMBER: _ClassVar[int]
    ACK_FIELD_NUMBER: _ClassVar[int]
    hello: Hello
    changes: Changes
    ack: Ack
    def __init__(self, hello: _Optional[_Union[Hello, _Mapping]] = ..., changes: _Optional[_Union[Changes, _Mapping]] = ..., ack: _Optional[_Union[Ack, _Mapping]] = ...) -> None: ...

class GlobalMessage(_message.Message):
    __slots__ = ("welcome", "changes", "ack")
    WELCOME_FIELD_NUMBER: _ClassVar[int]
    CHANGES_FIELD_NUMBER: _ClassVar[int]
    ACK_FIELD_NUMBER: _ClassVar[int]
    welcome: Welcome
    changes: Changes
    ack: Ack
    def __init__(self, welcome: _Optional[_Union[Welcome, _Mapping]] = ..., changes: _Optional[_Union[Changes, _Mapping]] = ..., ack: _Optional[_Union[Ack, _Mapping]] = ...) -> None: ...

class Hello(_message.Message):
    __slots__ = ("protocol", "protocol_version", "zone", "instance_id", "cp_version")
    PROTOCOL_FIELD_NUMBER: _ClassVar[int]
    PROTOCOL_VERSION_FIELD_NUMBER: _ClassVar[int]
    ZONE_FIELD_NUMBER: _ClassVar[int]
    INSTANCE_ID_FIELD_NUMBER: _ClassVar[int]
    CP_VERSION_FIELD_NUMBER: _ClassVar[int]
    protocol: str
    protocol_version: int
    zone: str
    instance_id: str
    cp_version: str
    def __init__(self, protocol: _Optional[str] = ..., protocol_version: _Optional[int] = ..., zone: _Optional[str] = ..., instance_id: _Optional[str] = ..., cp_version: _Optional[str] = ...) -> None: ...

class Welcome(_message.Message):
    __slots__ = ("protocol", "protocol_version", "instance_id", "cp_version")
    PROTOCOL_FIELD_NUMBER: _ClassVar[int]
    PROTOCOL_VERSION_FIELD_NUMBER: _ClassVar[int]
    INSTANCE_ID_FIELD_NUMBER: _ClassVar[int]
    CP_VERSION_FIELD_NUMBER: _ClassVar[int]
    protocol: str
    protocol_version: int
    instance_id: str
    cp_version: str
    def __init__(self, protocol: _Optional[str] = ..., protocol_version: _Optional[int] = ..., instance_id: _Optional[str] = ..., cp_version: _Optional[str] = ...) -> None: ...

class Resource(_message.Message):
    __slots__ = ("type", "mesh", "name", "json", "hash")
    TYPE_FIELD_NUMBER: _ClassVar[int]
    MESH_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    JSON_FIELD_NUMBER: _ClassVar[int]
    HASH_FIELD_NUMBER: _ClassVar[int]
    type: str
    mesh: str
    name: str
    json: bytes
    hash: str
    def __init__(self, type: _Optional[str] = ..., mesh: _Optional[str] = ..., name: _Optional[str] = ..., json: _Optional[bytes] = ..., hash: _Optional[str] = ...) -> None: ...

class ResourceRef(_message.Message):
    __slots__ = ("type", "mesh", "name")
    TYPE_FIELD_NUMBER: _ClassVar[int]
    MESH_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    type: str
    mesh: str
    name: str
    def __init__(self, type: _Optional[str] = ..., mesh: _Optional[str] = ..., name: _Optional[str] = ...) -> None: ...

class Changes(_message.Message):
    __slots__ = ("batch", "upserts", "deletes", "snapshot", "snapshot_complete")
    BATCH_FIELD_NUMBER: _ClassVar[int]
    UPSERTS_FIELD_NUMBER: _ClassVar[int]
    DELETES_FIELD_NUMBER: _ClassVar[int]
    SNAPSHOT_FIELD_NUMBER: _ClassVar[int]
    SNAPSHOT_COMPLETE_FIELD_NUMBER: _ClassVar[int]
    batch: int
    upserts: _containers.RepeatedCompositeFieldContainer[Resource]
    deletes: _containers.RepeatedCompositeFieldContainer[ResourceRef]
    snapshot: bool
    snapshot_complete: bool
    def __init__(self, batch: _Optional[int] = ..., upserts: _Optional[_Iterable[_Union[Resource, _Mapping]]] = ..., deletes: _Optional[_Iterable[_Union[ResourceRef, _Mapping]]] = ..., snapshot: _Optional[bool] = ..., snapshot_complete: _Optional[bool] = ...) -> None: ...

class Rejection(_message.Message):
    __slots__ = ("ref", "reason")
    REF_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    ref: ResourceRef
    reason: str
    def __init__(self, ref: _Optional[_Union[ResourceRef, _Mapping]] = ..., reason: _Optional[str] = ...) -> None: ...

class Ack(_message.Message):
    __slots__ = ("batch", "rejected")
    BATCH_FIELD_NUMBER: _ClassVar[int]
    REJECTED_FIELD_NUMBER: _ClassVar[int]
    batch: int
    rejected: _containers.RepeatedCompositeFieldContainer[Rejection]
    def __init__(self, batch: _Optional[int] = ..., rejected: _Optional[_Iterable[_Union[Rejection, _Mapping]]] = ...) -> None: ...
