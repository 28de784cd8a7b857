"""How the redirect rules tell the data plane's own traffic from the app's.

Two ways, both matched by the kernel's `owner` match on the socket's creator:

- `--kuma-dp-user USER|UID` (Kuma's): everything of that user is let through. `dp run` runs
  as that user and the app as another, as with kuma-dp.
- Without it, the group `DP_GROUP` (5678, Kuma's number for its data plane user): the rules
  let through every socket whose creator has that group among its supplementary groups, and
  `dp run`, when it proxies transparently and runs as root, adds the group to itself before
  opening any socket, so it and its Envoy carry it. No user or group needs to exist by that
  number, and the app can run as root alongside, as long as it does not take that group.

A socket mark (SO_MARK) would need CAP_NET_ADMIN and cannot be set on the gRPC channel
`dp run` opens to the CP, so the group is what zonemesh uses.
"""

from __future__ import annotations

import logging
import os

from zonemesh.resources.base import Resource
from zonemesh.resources.types.dataplane import DataplaneSpec

log = logging.getLogger("zonemesh.tproxy")

DP_GROUP = 5678


def wants_transparent_proxy(resource: Resource) -> bool:
    spec = resource.spec
    if not isinstance(spec, DataplaneSpec):
        return False
    tp = spec.networking.transparent_proxying
    return tp is not None and (tp.outbound_enabled or tp.inbound_enabled)


def join_dp_group(resource: Resource) -> bool:
    """Add `DP_GROUP` to this process's supplementary groups (root only), for a transparently
    proxied Dataplane; True if the process now has it. Call before opening any socket."""
    if not wants_transparent_proxy(resource):
        return False
    groups = os.getgroups()
    if DP_GROUP in groups:
        return True
    if os.geteuid() != 0:
        log.info(
            "not root: the redirect rules must exempt this user (install transparent-proxy "
            "--kuma-dp-user %d)",
            os.geteuid(),
        )
        return False
    os.setgroups([*groups, DP_GROUP])
    log.info("joined group %d: the redirect rules let this data plane's traffic through", DP_GROUP)
    return True
