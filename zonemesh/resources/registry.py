"""Every resource type zonemesh knows, and lookup by Kuma's names (kind, plural, alias)."""

from __future__ import annotations

from zonemesh.resources.base import ResourceType, Scope, SyncFlags
from zonemesh.resources.types.dataplane import DataplaneSpec
from zonemesh.resources.types.hostnamegenerator import HostnameGeneratorSpec
from zonemesh.resources.types.insight import ProxyInsightSpec
from zonemesh.resources.types.mesh import MeshSpec
from zonemesh.resources.types.meshgateway import MeshGatewaySpec
from zonemesh.resources.types.meshhttproute import MeshHTTPRouteSpec
from zonemesh.resources.types.meshservice import MeshServiceSpec, MeshServiceStatus
from zonemesh.resources.types.mlbs import MeshLoadBalancingStrategySpec
from zonemesh.resources.types.mmzs import MeshMultiZoneServiceSpec, MeshMultiZoneServiceStatus
from zonemesh.resources.types.secret import SecretSpec
from zonemesh.resources.types.zone import ZoneSpec, ZoneStatus
from zonemesh.resources.types.zone_proxies import ZoneEgressSpec, ZoneIngressSpec

_DOWN = SyncFlags(global_to_zones=True)
_UP_AND_ACROSS = SyncFlags(zone_to_global=True, zone_to_zones=True)
_UP_ONLY = SyncFlags(zone_to_global=True)

MESH = ResourceType(
    "Mesh", "meshes", "mesh", Scope.GLOBAL, MeshSpec, flat=True, sync=_DOWN, global_owned=True
)
ZONE = ResourceType(
    "Zone",
    "zones",
    "zone",
    Scope.GLOBAL,
    ZoneSpec,
    ZoneStatus,
    flat=True,
    sync=_DOWN,
    global_owned=True,
)
DATAPLANE = ResourceType(
    "Dataplane",
    "dataplanes",
    "dataplane",
    Scope.MESH,
    DataplaneSpec,
    flat=True,
    sync=_UP_ONLY,
    zone_owned=True,
)
ZONE_INGRESS = ResourceType(
    "ZoneIngress",
    "zoneingresses",
    "zoneingress",
    Scope.GLOBAL,
    ZoneIngressSpec,
    flat=True,
    aliases=("zone-ingresses",),
    sync=_UP_AND_ACROSS,
    zone_owned=True,
)
ZONE_EGRESS = ResourceType(
    "ZoneEgress",
    "zoneegresses",
    "zoneegress",
    Scope.GLOBAL,
    ZoneEgressSpec,
    flat=True,
    aliases=("zone-egresses",),
    sync=_UP_AND_ACROSS,
    zone_owned=True,
)
MESH_SERVICE = ResourceType(
    "MeshService",
    "meshservices",
    "meshservice",
    Scope.MESH,
    MeshServiceSpec,
    MeshServiceStatus,
    aliases=("msvc",),
    sync=_UP_AND_ACROSS,
    zone_owned=True,
)
MESH_MULTI_ZONE_SERVICE = ResourceType(
    "MeshMultiZoneService",
    "meshmultizoneservices",
    "meshmultizoneservice",
    Scope.MESH,
    MeshMultiZoneServiceSpec,
    MeshMultiZoneServiceStatus,
    aliases=("mzsvc",),
    sync=_DOWN,
    global_owned=True,
)
HOSTNAME_GENERATOR = ResourceType(
    "HostnameGenerator",
    "hostnamegenerators",
    "hostnamegenerator",
    Scope.GLOBAL,
    HostnameGeneratorSpec,
    sync=_DOWN,
    global_owned=True,
)
MESH_LOAD_BALANCING_STRATEGY = ResourceType(
    "MeshLoadBalancingStrategy",
    "meshloadbalancingstrategies",
    "meshloadbalancingstrategy",
    Scope.MESH,
    MeshLoadBalancingStrategySpec,
    aliases=("mlbs",),
    sync=_DOWN,
    global_owned=True,
)
# Kuma's builtin gateway (v2.x). Kuma syncs it global -> zones and zone -> global; here it is
# written on global (or in a standalone zone, or a zone for its own gateways) and synced down.
MESH_GATEWAY = ResourceType(
    "MeshGateway",
    "meshgateways",
    "meshgateway",
    Scope.MESH,
    MeshGatewaySpec,
    flat=True,
    sync=_DOWN,
)
MESH_HTTP_ROUTE = ResourceType(
    "MeshHTTPRoute",
    "meshhttproutes",
    "meshhttproute",
    Scope.MESH,
    MeshHTTPRouteSpec,
    sync=_DOWN,
    global_owned=True,
)

# A proxy as its zone's control plane sees it (`types.insight`): zone -> global only, as Kuma.
DATAPLANE_INSIGHT = ResourceType(
    "DataplaneInsight",
    "dataplaneinsights",
    "dataplaneinsight",
    Scope.MESH,
    ProxyInsightSpec,
    aliases=("dataplane-insights",),
    sync=_UP_ONLY,
    zone_owned=True,
)
ZONE_INGRESS_INSIGHT = ResourceType(
    "ZoneIngressInsight",
    "zoneingressinsights",
    "zoneingressinsight",
    Scope.GLOBAL,
    ProxyInsightSpec,
    aliases=("zone-ingress-insights",),
    sync=_UP_ONLY,
    zone_owned=True,
)
ZONE_EGRESS_INSIGHT = ResourceType(
    "ZoneEgressInsight",
    "zoneegressinsights",
    "zoneegressinsight",
    Scope.GLOBAL,
    ProxyInsightSpec,
    aliases=("zone-egress-insights",),
    sync=_UP_ONLY,
    zone_owned=True,
)
# The insight type of each proxy type.
INSIGHT_OF = {
    "Dataplane": DATAPLANE_INSIGHT,
    "ZoneIngress": ZONE_INGRESS_INSIGHT,
    "ZoneEgress": ZONE_EGRESS_INSIGHT,
}

SECRET = ResourceType(
    "Secret",
    "secrets",
    "secret",
    Scope.MESH,
    SecretSpec,
    flat=True,
    sync=_DOWN,
    global_owned=True,
)

# Control-plane secrets that never leave the CP that wrote them: token signing keys, token
# revocation lists, the bootstrap admin token (Kuma's GlobalSecret, `/global-secrets`).
GLOBAL_SECRET = ResourceType(
    "GlobalSecret",
    "global-secrets",
    "global-secret",
    Scope.GLOBAL,
    SecretSpec,
    flat=True,
    aliases=("globalsecrets", "globalsecret"),
)

ALL_TYPES: tuple[ResourceType, ...] = (
    MESH,
    ZONE,
    DATAPLANE,
    ZONE_INGRESS,
    ZONE_EGRESS,
    MESH_SERVICE,
    MESH_MULTI_ZONE_SERVICE,
    HOSTNAME_GENERATOR,
    MESH_LOAD_BALANCING_STRATEGY,
    MESH_GATEWAY,
    MESH_HTTP_ROUTE,
    DATAPLANE_INSIGHT,
    ZONE_INGRESS_INSIGHT,
    ZONE_EGRESS_INSIGHT,
    SECRET,
    GLOBAL_SECRET,
)

_BY_KIND = {t.name: t for t in ALL_TYPES}
_BY_ANY_NAME = {
    name.lower(): t for t in ALL_TYPES for name in (t.name, t.plural, t.singular, *t.aliases)
}


class UnknownTypeError(KeyError):
    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.name = name

    def __str__(self) -> str:
        known = ", ".join(t.plural for t in ALL_TYPES)
        return f'unknown resource type "{self.name}" (known: {known})'


def by_kind(kind: str) -> ResourceType:
    """`MeshMultiZoneService` -> its type; the `type` field of a resource."""
    try:
        return _BY_KIND[kind]
    except KeyError:
        raise UnknownTypeError(kind) from None


def by_name(name: str) -> ResourceType:
    """Any of Kuma's names for a type: kind, plural, singular or short alias, any case."""
    try:
        return _BY_ANY_NAME[name.lower()]
    except KeyError:
        raise UnknownTypeError(name) from None
