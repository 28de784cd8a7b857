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
- Panic threshold 0 (Envoy's default is 50 %). Panic mode would send traffic to every host of
  a priority, unhealthy ones included, once too few are healthy. For a multi-zone service that
  is the wrong trade: dead local instances would get requests although healthy instances in
  another zone are a priority away. With 0, ejected hosts never get traffic; when nothing is
  healthy anywhere, Envoy answers 503 at once instead of dialing dead hosts.
"""

from __future__ import annotations

from envoy.config.cluster.v3 import cluster_pb2, outlier_detection_pb2
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.config.route.v3 import route_components_pb2
from envoy.extensions.retry.host.previous_hosts.v3 import previous_hosts_pb2
from envoy.type.v3 import percent_pb2
from google.protobuf import duration_pb2

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


def apply_cluster_defaults(cluster: cluster_pb2.Cluster) -> None:
    """Outlier detection and a panic threshold of 0 (see the module docstring)."""
    cluster.common_lb_config.healthy_panic_threshold.CopyFrom(
        percent_pb2.Percent(value=PANIC_THRESHOLD_PERCENT)
    )
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
