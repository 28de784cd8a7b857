"""What a dataplane token lets a proxy be: the one rule the xDS stream and the CA both apply.

A token allows a proxy when its mesh, type and (if the token names one) name match, and every
tag the token restricts (`kuma.io/service` …) has on the proxy only values the token lists. A
token bound to a service thus serves any number of instances of it, as in Kuma; unlike Kuma,
the proxy type is enforced, so a sidecar's token cannot make a zone ingress.
"""

from __future__ import annotations

from collections.abc import Mapping, Set

from zonemesh.auth.tokens import DataplaneToken


class NotAllowed(Exception):
    """The proxy claims more than its token allows (PERMISSION_DENIED / 403)."""


def authorize_proxy(
    token: DataplaneToken,
    *,
    mesh: str,
    name: str,
    proxy_type: str,
    tag_values: Mapping[str, Set[str]],
) -> None:
    """Raise `NotAllowed` naming the first claim the proxy exceeds.

    `mesh` is the proxy's mesh ("" for zone proxies, which are not mesh-scoped: their token's
    mesh is not compared); `tag_values` every value of every tag over the proxy's inbounds
    (and gateway).
    """
    if token.proxy_type != proxy_type:
        raise NotAllowed(f"the token is for a {token.proxy_type} proxy, not a {proxy_type}")
    if mesh and token.mesh != mesh:
        raise NotAllowed(f'the token is for mesh "{token.mesh}", not "{mesh}"')
    if token.name is not None and token.name != name:
        raise NotAllowed(f'the token is for proxy "{token.name}", not "{name}"')
    for tag, allowed in sorted(token.tags.items()):
        extra = sorted(set(tag_values.get(tag, ())) - set(allowed))
        if extra:
            raise NotAllowed(
                f"the token allows {tag} {', '.join(allowed) or '(none)'}, not {', '.join(extra)}"
            )


def bearer(value: str | None) -> str:
    """The token in an `authorization` value: raw (as Kuma's Envoy sends it) or `Bearer …`."""
    text = (value or "").strip()
    if text[:7].lower() == "bearer ":
        text = text[7:].strip()
    return text
