"""Hand-assembled protobuf encoding of discovery responses from pre-encoded resources.

Protobuf messages are concatenations of fields, so a response can be assembled from bytes
encoded once per resource (shared by every proxy that gets it) plus a small per-stream header
(version, nonce). That keeps a fan-out to N proxies at one serialization per resource.
Field numbers are read from the generated descriptors, not hard-coded.
"""

from __future__ import annotations

from collections.abc import Iterable

from envoy.config.core.v3 import base_pb2
from envoy.service.discovery.v3 import discovery_pb2
from google.protobuf import any_pb2


def _num(message: type, field: str) -> int:
    return message.DESCRIPTOR.fields_by_name[field].number  # type: ignore[attr-defined, no-any-return]


_ANY_TYPE_URL = _num(any_pb2.Any, "type_url")
_ANY_VALUE = _num(any_pb2.Any, "value")
_RES_NAME = _num(discovery_pb2.Resource, "name")
_RES_VERSION = _num(discovery_pb2.Resource, "version")
_RES_RESOURCE = _num(discovery_pb2.Resource, "resource")
_SOTW_VERSION = _num(discovery_pb2.DiscoveryResponse, "version_info")
_SOTW_RESOURCES = _num(discovery_pb2.DiscoveryResponse, "resources")
_SOTW_TYPE_URL = _num(discovery_pb2.DiscoveryResponse, "type_url")
_SOTW_NONCE = _num(discovery_pb2.DiscoveryResponse, "nonce")
_SOTW_CONTROL_PLANE = _num(discovery_pb2.DiscoveryResponse, "control_plane")
_DELTA_VERSION = _num(discovery_pb2.DeltaDiscoveryResponse, "system_version_info")
_DELTA_RESOURCES = _num(discovery_pb2.DeltaDiscoveryResponse, "resources")
_DELTA_TYPE_URL = _num(discovery_pb2.DeltaDiscoveryResponse, "type_url")
_DELTA_REMOVED = _num(discovery_pb2.DeltaDiscoveryResponse, "removed_resources")
_DELTA_NONCE = _num(discovery_pb2.DeltaDiscoveryResponse, "nonce")
_DELTA_CONTROL_PLANE = _num(discovery_pb2.DeltaDiscoveryResponse, "control_plane")
_CP_IDENTIFIER = _num(base_pb2.ControlPlane, "identifier")


def varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def length_delimited(field: int, data: bytes) -> bytes:
    """One length-delimited field (string, bytes or embedded message)."""
    return varint((field << 3) | 2) + varint(len(data)) + data


def _string(field: int, value: str) -> bytes:
    return length_delimited(field, value.encode()) if value else b""


def encode_any(type_url: str, value: bytes) -> bytes:
    return _string(_ANY_TYPE_URL, type_url) + length_delimited(_ANY_VALUE, value)


def sotw_entry(any_bytes: bytes) -> bytes:
    """The `resources` field of a DiscoveryResponse carrying one resource."""
    return length_delimited(_SOTW_RESOURCES, any_bytes)


def delta_entry(name: str, version: str, any_bytes: bytes) -> bytes:
    """The `resources` field of a DeltaDiscoveryResponse carrying one named, versioned resource."""
    resource = (
        _string(_RES_VERSION, version)
        + length_delimited(_RES_RESOURCE, any_bytes)
        + _string(_RES_NAME, name)
    )
    return length_delimited(_DELTA_RESOURCES, resource)


def control_plane(identifier: str) -> bytes:
    return _string(_CP_IDENTIFIER, identifier)


def sotw_response(
    *, version_info: str, type_url: str, nonce: str, entries: Iterable[bytes], cp: bytes = b""
) -> bytes:
    head = (
        _string(_SOTW_VERSION, version_info)
        + _string(_SOTW_TYPE_URL, type_url)
        + _string(_SOTW_NONCE, nonce)
        + (length_delimited(_SOTW_CONTROL_PLANE, cp) if cp else b"")
    )
    return b"".join((head, *entries))


def delta_response(
    *,
    system_version_info: str,
    type_url: str,
    nonce: str,
    entries: Iterable[bytes],
    removed: Iterable[str],
    cp: bytes = b"",
) -> bytes:
    head = (
        _string(_DELTA_VERSION, system_version_info)
        + _string(_DELTA_TYPE_URL, type_url)
        + _string(_DELTA_NONCE, nonce)
        + (length_delimited(_DELTA_CONTROL_PLANE, cp) if cp else b"")
    )
    removed_bytes = b"".join(length_delimited(_DELTA_REMOVED, n.encode()) for n in removed)
    return b"".join((head, *entries, removed_bytes))
