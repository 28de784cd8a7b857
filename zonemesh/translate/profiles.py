"""Profiles: which generators a proxy gets, chosen once by what the proxy is.

A sidecar, a zone ingress and a zone egress are configured by different generators; rather
than every generator checking the proxy's type first, `ProfileGenerator` looks the proxy's
profile up and runs only that profile's generators. A new kind of proxy (a builtin gateway)
is a new `Profile` and a new row in the composition (`translate.default`), with no change to
the generators of the others.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from enum import StrEnum

from zonemesh.resources.gateway_binding import gateway_spec
from zonemesh.resources.proxy_types import ProxyType
from zonemesh.translate.generator import (
    CompositeGenerator,
    Generator,
    Proxy,
    ProxyResources,
    own_output_is_local,
)
from zonemesh.translate.state import MeshState


class Profile(StrEnum):
    SIDECAR = "sidecar"  # a Dataplane next to an application
    ZONE_INGRESS = "zone-ingress"
    ZONE_EGRESS = "zone-egress"
    BUILTIN_GATEWAY = "builtin-gateway"  # a Dataplane with `networking.gateway.type: BUILTIN`


_BY_PROXY_TYPE = {
    ProxyType.DATAPLANE: Profile.SIDECAR,
    ProxyType.INGRESS: Profile.ZONE_INGRESS,
    ProxyType.EGRESS: Profile.ZONE_EGRESS,
}


def profile_of(proxy: Proxy) -> Profile:
    """The one place deciding what a proxy is, for generation. A delegated gateway is a
    sidecar here: its Envoy is the user's, configured like one through its outbounds."""
    if proxy.proxy_type is ProxyType.DATAPLANE and gateway_spec(proxy.resource) is not None:
        return Profile.BUILTIN_GATEWAY
    return _BY_PROXY_TYPE[proxy.proxy_type]


class ProfileGenerator:
    """Runs the generators of the proxy's profile (composed in order); a profile without
    generators gets an empty, valid configuration."""

    def __init__(self, profiles: Mapping[Profile, Sequence[Generator]]) -> None:
        self.profiles: Mapping[Profile, CompositeGenerator] = {
            profile: CompositeGenerator(*generators) for profile, generators in profiles.items()
        }
        # The promise of `generator.own_output_is_local` is about proxies that hold shared
        # parts, which only sidecars do: a gateway's or zone proxy's output is all its own,
        # and the engine regenerates those on every change (`refreshed_through_parts`).
        sidecar = self.profiles.get(Profile.SIDECAR)
        self.OWN_OUTPUT_IS_LOCAL = sidecar is not None and own_output_is_local(sidecar)

    def generate(self, state: MeshState, proxy: Proxy) -> ProxyResources:
        composite = self.profiles.get(profile_of(proxy))
        if composite is None:
            return ProxyResources()
        return composite.generate(state, proxy)


def refreshed_through_parts(generator: Generator, proxy: Proxy) -> bool:
    """Whether a change to part-only inputs (other Dataplanes, zone proxies, health) reaches
    `proxy` through its shared parts alone, so that the engine need not regenerate it: only
    sidecars, under their generator's `own_output_is_local` promise. A builtin gateway's
    clusters and endpoints are its own and read exactly those inputs; zone proxies likewise."""
    return profile_of(proxy) is Profile.SIDECAR and own_output_is_local(generator)
