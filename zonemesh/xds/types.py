"""What the xDS layer alone knows about the types it serves: push order and message classes."""

from __future__ import annotations

from collections.abc import Mapping

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.config.route.v3 import route_pb2
from envoy.extensions.transport_sockets.tls.v3 import secret_pb2
from google.protobuf.message import Message

from zonemesh.envoy_types import CLUSTER, ENDPOINT, LISTENER, ROUTE, SECRET

# The order every push follows (make-before-break): a cluster before its endpoints, both
# before the listeners that use them, listeners before their routes.
TYPE_ORDER: tuple[str, ...] = (CLUSTER, ENDPOINT, LISTENER, ROUTE, SECRET)

# What each type URL's bytes decode into (the cache re-reads what it interned).
MESSAGE_CLASSES: Mapping[str, type[Message]] = {
    CLUSTER: cluster_pb2.Cluster,
    ENDPOINT: endpoint_pb2.ClusterLoadAssignment,
    LISTENER: listener_pb2.Listener,
    ROUTE: route_pb2.RouteConfiguration,
    SECRET: secret_pb2.Secret,
}
