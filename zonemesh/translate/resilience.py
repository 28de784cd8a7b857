"""Resilience defaults for service clusters: how a crashed instance stops getting traffic.

Three mechanisms work together so that a crashed local instance costs at most a few requests:

- Retries (HTTP): a request that fails to connect, is reset, is refused as an HTTP/2 stream,
  or gets a gateway error (502/503/504: typically a sidecar whose app just went away, in the
  moment before the CP takes it out of EDS) is retried, on a host other than the ones
  already tried (`previous_hosts`). A dead instance's failures are thus absorbed before the
  caller sees them. Kuma's default retry policy retries gateway errors too.
- Outlier detection: a host that fails to connect a couple of times in a row (local-origin
  failures) or returns gateway errors is ejected at once, not at the next interval, so later
  requests stop picking it. Up to 100 % of hosts may be ejected: with a single local instance,
  ejecting it is exactly what moves traffic to the other zones.
- The control plane removes an instance from EDS as soon as its ADS stream ends or it reports
  not ready; the two above only cover the gap until then.

Priorities (by default the local zone at 0, other zones at 1; a MeshLoadBalancingStrategy
may change that, see `policies.mlbs`) are tuned as follows:

- Overprovisioning factor 200 (Envoy's default is 140). A priority keeps all its traffic
  while at least 1/2 of its hosts are healthy (with 140: 71.4 %), and spills proportionally
  below that. Losing one of three local instances should not send a share of requests to
  another zone (cross-zone latency and cost for no benefit: two healthy instances can carry
  the load), but losing most of them should.
- Health changes take effect at once (`update_merge_window` 0; Envoy's default merges them
  for 1 s): a zone whose ingress just failed its check, or just passed its first one, is
  left out, or used, from the next request on, not a second later.
- Panic threshold 0 (Envoy's default is 50 %). Panic mode would send traffic to every host of
  a priority, unhealthy ones included, once too few are healthy. For a multi-zone service that
  is the wrong trade: dead local instances would get requests although healthy instances in
  another zone are a priority away. With 0, ejected hosts never get traffic; when nothing is
  healthy anywhere, Envoy answers 503 at once instead of dialing dead hosts.

Zone health (`apply_zone_health_checks`): the control plane tells a sidecar *which* zones
serve a service; whether a zone's data path works right now the sidecar finds out itself.

- A zone whose control plane is offline is still routed to: global passes on what the zone
  last reported (`federation.mapping.pass_on`), because a CP outage says nothing about the
  data path (Kuma's "zone CP offline = freeze" promise). Its ingress may well serve.
- A zone whose data path is dead (its ingress blackholed — packets dropped, no RST — or
  gone) is found by active health checks of the cross-zone endpoints, in every sidecar: a TCP
  connect to the remote ingress every `ZONE_HC_INTERVAL_S` (`ZONE_HC_NO_TRAFFIC_INTERVAL_S`
  while the cluster has never carried traffic), failed after `ZONE_HC_TIMEOUT_S` without an
  answer. One failed check takes the zone out (`ZONE_HC_UNHEALTHY_THRESHOLD`), so a
  blackholed zone stops getting new requests within interval + timeout (about 3 s); the
  timeout outlives one lost SYN (Linux resends it after 1 s), so a single lost packet does not
  take a zone out. Two good checks bring it back (no flapping into a half-dead zone). When
  the check fails, the connections to that ingress are closed
  (`close_connections_on_host_health_failure`), but Envoy lets the requests already on them
  finish, and on a blackholed connection they never do. So HTTP/2 connections are pinged
  (`apply_http2_keepalive`: every `H2_PING_INTERVAL_S`, dead after `H2_PING_TIMEOUT_S`
  without an answer, which comes from the remote sidecar, end to end): a dead one is
  aborted, its requests are reset, and the retry policy sends them to another host; without
  that they would hang until the route timeout. They are reset together, so the retry
  circuit breaker lets as many retries run at once as requests may be in flight
  (`MAX_CONCURRENT_RETRIES`, Envoy's default `max_requests`), not Envoy's default of 3,
  which answered most of them 503 instead of retrying them (a percentage budget shrinks as
  the reset requests leave the active count, and refused them too). Each request is still
  retried at most `NUM_RETRIES` times.
- The check is a plain TCP connect to the ingress (a transport socket match selects raw
  TCP for it): cheap for everyone (no handshake on the remote sidecars), and exactly the
  question "is the zone's door reachable from here". Instances dead behind a live ingress are
  the zone CP's to report (its MeshService goes Unavailable), and, while that CP is offline,
  outlier detection's to catch (the ingress resets the connection: a local-origin failure).
- Local endpoints are never actively checked (`disable_active_health_check`): their health
  is the ADS stream and the readiness reports, and EDS stays authoritative on removal
  (`ignore_health_on_host_removal`: an instance the CP removed is gone, checked or not).

Why in the sidecars and not by each zone CP probing the others' ingresses and publishing the
result in EDS: a probe from the CP answers for the CP's network path, not for the sidecar's;
it would add a round trip through the CP (probe, recompute, push to every sidecar) to every
verdict; and a zone CP that is itself cut off would withdraw healthy zones from its sidecars.
The price is one TCP connect per (sidecar, cluster, remote ingress) per second on busy
clusters, every 5 s on idle ones; the constants below are the knobs.
"""

from __future__ import annotations

from envoy.config.cluster.v3 import cluster_pb2, outlier_detection_pb2
from envoy.config.core.v3 import base_pb2, health_check_pb2
from envoy.config.endpoint.v3 import endpoint_components_pb2, endpoint_pb2
from envoy.config.route.v3 import route_components_pb2
from envoy.extensions.retry.host.previous_hosts.v3 import previous_hosts_pb2
from envoy.extensions.transport_sockets.raw_buffer.v3 import raw_buffer_pb2
from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2
from envoy.type.v3 import percent_pb2
from google.protobuf import duration_pb2, struct_pb2

from zonemesh.translate.builders import packed

OVERPROVISIONING_FACTOR = 200
PANIC_THRESHOLD_PERCENT = 0.0
RETRY_ON = "connect-failure,reset,refused-stream,gateway-error"
NUM_RETRIES = 3
HOST_SELECTION_ATTEMPTS = 5
TCP_CONNECT_ATTEMPTS = 3
CONSECUTIVE_LOCAL_FAILURES = 2
CONSECUTIVE_GATEWAY_FAILURES = 3
CONSECUTIVE_5XX = 5
EJECTION_S = 10
INTERVAL_S = 5

ZONE_HC_INTERVAL_S = 1.0
ZONE_HC_TIMEOUT_S = 2.0
ZONE_HC_NO_TRAFFIC_INTERVAL_S = 5.0
ZONE_HC_UNHEALTHY_THRESHOLD = 1
ZONE_HC_HEALTHY_THRESHOLD = 2
MAX_CONCURRENT_RETRIES = 1024
H2_PING_INTERVAL_S = 1.0
H2_PING_TIMEOUT_S = 2.0
HTTP_OPTIONS_KEY = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
# The health check's transport socket: raw TCP, whatever the cluster's endpoints speak.
HEALTH_CHECK_KEY = "zonemesh.io/health-check"
HEALTH_CHECK_MATCH = "zone-health-check-tcp"
RAW_BUFFER_SOCKET = "envoy.transport_sockets.raw_buffer"


def apply_cluster_defaults(cluster: cluster_pb2.Cluster) -> None:
    """Outlier detection, a panic threshold of 0, no merge window, room for retries (module
    docstring)."""
    cluster.common_lb_config.healthy_panic_threshold.CopyFrom(
        percent_pb2.Percent(value=PANIC_THRESHOLD_PERCENT)
    )
    cluster.common_lb_config.update_merge_window.CopyFrom(duration_pb2.Duration(seconds=0))
    thresholds = cluster.circuit_breakers.thresholds.add()
    thresholds.max_retries.value = MAX_CONCURRENT_RETRIES
    detection = outlier_detection_pb2.OutlierDetection(
        split_external_local_origin_errors=True,
        interval=duration_pb2.Duration(seconds=INTERVAL_S),
        base_ejection_time=duration_pb2.Duration(seconds=EJECTION_S),
    )
    detection.consecutive_local_origin_failure.value = CONSECUTIVE_LOCAL_FAILURES
    detection.enforcing_consecutive_local_origin_failure.value = 100
    detection.consecutive_gateway_failure.value = CONSECUTIVE_GATEWAY_FAILURES
    detection.enforcing_consecutive_gateway_failure.value = 100
    detection.consecutive_5xx.value = CONSECUTIVE_5XX
    detection.max_ejection_percent.value = 100
    cluster.outlier_detection.CopyFrom(detection)


def _duration(seconds: float) -> duration_pb2.Duration:
    duration = duration_pb2.Duration()
    duration.FromMilliseconds(int(seconds * 1000))
    return duration


def apply_zone_health_checks(cluster: cluster_pb2.Cluster) -> None:
    """Actively check the cluster's cross-zone endpoints (see the module docstring); the
    local ones opt out with `exclude_from_health_checks`. Call after the transport socket
    is set: the health check's raw-TCP match goes last, after the cross-zone TLS match."""
    check = health_check_pb2.HealthCheck(
        timeout=_duration(ZONE_HC_TIMEOUT_S),
        interval=_duration(ZONE_HC_INTERVAL_S),
        no_traffic_interval=_duration(ZONE_HC_NO_TRAFFIC_INTERVAL_S),
        tcp_health_check=health_check_pb2.HealthCheck.TcpHealthCheck(),
    )
    check.unhealthy_threshold.value = ZONE_HC_UNHEALTHY_THRESHOLD
    check.healthy_threshold.value = ZONE_HC_HEALTHY_THRESHOLD
    check.transport_socket_match_criteria.update({HEALTH_CHECK_KEY: "tcp"})
    cluster.health_checks.append(check)
    cluster.close_connections_on_host_health_failure = True
    cluster.ignore_health_on_host_removal = True
    match = struct_pb2.Struct()
    match.update({HEALTH_CHECK_KEY: "tcp"})
    raw = raw_buffer_pb2.RawBuffer()
    cluster.transport_socket_matches.append(
        cluster_pb2.Cluster.TransportSocketMatch(
            name=HEALTH_CHECK_MATCH,
            match=match,
            transport_socket=base_pb2.TransportSocket(
                name=RAW_BUFFER_SOCKET, typed_config=packed(raw)
            ),
        )
    )


def apply_http2_keepalive(cluster: cluster_pb2.Cluster) -> None:
    """Ping the cluster's HTTP/2 connections (module docstring); a cluster that does not
    speak HTTP/2 upstream is left alone."""
    packed_options = cluster.typed_extension_protocol_options.get(HTTP_OPTIONS_KEY)
    if packed_options is None:
        return
    options = http_protocol_options_pb2.HttpProtocolOptions()
    packed_options.Unpack(options)
    if not options.explicit_http_config.HasField("http2_protocol_options"):
        return
    keepalive = options.explicit_http_config.http2_protocol_options.connection_keepalive
    keepalive.interval.CopyFrom(_duration(H2_PING_INTERVAL_S))
    keepalive.timeout.CopyFrom(_duration(H2_PING_TIMEOUT_S))
    cluster.typed_extension_protocol_options[HTTP_OPTIONS_KEY].CopyFrom(packed(options))


def exclude_from_health_checks(endpoint: endpoint_components_pb2.LbEndpoint) -> None:
    """A local endpoint: its health is the CP's (ADS stream, readiness), never probed."""
    endpoint.endpoint.health_check_config.disable_active_health_check = True


def load_assignment_policy(
    overprovisioning_factor: int = OVERPROVISIONING_FACTOR,
) -> endpoint_pb2.ClusterLoadAssignment.Policy:
    """200 unless a MeshLoadBalancingStrategy's `failoverThreshold` says otherwise."""
    policy = endpoint_pb2.ClusterLoadAssignment.Policy()
    policy.overprovisioning_factor.value = overprovisioning_factor
    return policy


def retry_policy() -> route_components_pb2.RetryPolicy:
    """Retry what never reached the app (or was refused by it) on another host."""
    policy = route_components_pb2.RetryPolicy(
        retry_on=RETRY_ON,
        retry_host_predicate=[
            route_components_pb2.RetryPolicy.RetryHostPredicate(
                name="envoy.retry_host_predicates.previous_hosts",
                typed_config=packed(previous_hosts_pb2.PreviousHostsPredicate()),
            )
        ],
        host_selection_retry_max_attempts=HOST_SELECTION_ATTEMPTS,
    )
    policy.num_retries.value = NUM_RETRIES
    return policy
