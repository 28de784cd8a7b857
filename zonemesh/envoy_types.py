"""The Envoy resource types zonemesh serves: their type URLs, and how a message names itself.

The vocabulary both sides of the xDS hand-off share: translation keys what it generates by
type URL (`translate.generator.ProxyResources`), the xDS layer versions and streams it by the
same keys (`xds.protocol`, `xds.cache`). A neutral module, not `translate` nor `xds`, because
data flows one way (translate -> xds), so neither may own what both need; and top level,
because importing anything under `zonemesh.translate` loads the translation package. Only
protobuf descriptors are imported here. What only the protocol needs (the push order, the
message class to decode each type into) lives in `zonemesh.xds.types`.
"""

from __future__ import annotations

from envoy.config.endpoint.v3 import endpoint_pb2
from google.protobuf.message import Message

TYPE_PREFIX = "type.googleapis.com/"
CLUSTER = TYPE_PREFIX + "envoy.config.cluster.v3.Cluster"
ENDPOINT = TYPE_PREFIX + "envoy.config.endpoint.v3.ClusterLoadAssignment"
LISTENER = TYPE_PREFIX + "envoy.config.listener.v3.Listener"
ROUTE = TYPE_PREFIX + "envoy.config.route.v3.RouteConfiguration"
SECRET = TYPE_PREFIX + "envoy.extensions.transport_sockets.tls.v3.Secret"


def type_url_of(message: Message) -> str:
    return TYPE_PREFIX + message.DESCRIPTOR.full_name


def name_of(message: Message) -> str:
    """The xDS resource name: `cluster_name` for a ClusterLoadAssignment, else `name`."""
    if isinstance(message, endpoint_pb2.ClusterLoadAssignment):
        return message.cluster_name
    return message.name  # type: ignore[attr-defined, no-any-return]
