"""The zone token a federated zone presents to global's KDS, as gRPC metadata `authorization`.

Read from `multizone.zone.kdsAuth` (`KUMA_MULTIZONE_ZONE_KDS_AUTH_TOKEN_PATH` / `_INLINE`, or
Kong Mesh 2's `..._CP_TOKEN_PATH` / `_INLINE`). A file is read again on every connection
attempt: an operator who replaces an expired or revoked token in the file sees the zone
reconnect at its next retry, without restarting it.
"""

from __future__ import annotations

from pathlib import Path

from zonemesh.config import ZoneKdsAuth

METADATA_KEY = "authorization"
# A JWT is a few hundred bytes; a file far larger than that is not a token (a wrong path).
MAX_TOKEN_BYTES = 64 << 10


class ZoneTokenError(OSError):
    """The configured token cannot be read or is empty; the message names the setting.

    An OSError, like any other file `cp run` cannot open at start, so it is reported as a
    start failure rather than a traceback."""


def read_zone_token(auth: ZoneKdsAuth) -> str | None:
    """The token to present; None when `kdsAuth.type` is `none`."""
    if auth.type == "none":
        return None
    if auth.token_inline:
        token = auth.token_inline.strip()
    elif auth.token_path:
        try:
            with Path(auth.token_path).expanduser().open("rb") as file:
                data = file.read(MAX_TOKEN_BYTES + 1)
        except OSError as e:
            raise ZoneTokenError(
                f"zone token {auth.setting}: cannot read it: {e.strerror or e}"
            ) from None
        if len(data) > MAX_TOKEN_BYTES:
            raise ZoneTokenError(
                f"zone token {auth.setting}: larger than {MAX_TOKEN_BYTES} bytes, not a token"
            )
        token = data.decode("utf-8", errors="replace").strip()
    else:
        raise ZoneTokenError(
            "no zone token configured (KUMA_MULTIZONE_ZONE_KDS_AUTH_TOKEN_PATH or "
            "KUMA_MULTIZONE_ZONE_KDS_AUTH_TOKEN_INLINE)"
        )
    if not token:
        raise ZoneTokenError(f"zone token {auth.setting}: is empty")
    # gRPC metadata carries printable ASCII only; a JWT is that, without spaces.
    if not token.isascii() or not all(c.isprintable() and not c.isspace() for c in token):
        raise ZoneTokenError(
            f"zone token {auth.setting}: not a token (a JWT is one line of printable ASCII)"
        )
    return token
