"""No API response carries a private key, to anyone: the one rule and where it cuts.

Secrets hold key material next to what users need to see (a CA's certificate beside its key, a
signing key's public half beside its private half). The API shows the public parts and removes
every PEM block whose type names a private key (`PRIVATE KEY`, `RSA PRIVATE KEY`,
`EC PRIVATE KEY`, `ENCRYPTED PRIVATE KEY` …), and drops a value that is a DER private key.
Admins included: a CA key that never travels cannot leak from a terminal, a log or a backup of
`zonemesh get -o yaml`. The control plane reads keys from its store, never through the API.
"""

from __future__ import annotations

import base64
import binascii
import re
from typing import Any

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization

# A complete block, or (if its END line is missing) everything from its BEGIN line on.
_PRIVATE_BLOCK = re.compile(
    rb"-----BEGIN ([A-Z0-9 ]*PRIVATE KEY[A-Z0-9 ]*)-----"
    rb"(?:.*?-----END \1-----[ \t]*(?:\r?\n)?|.*\Z)",
    re.DOTALL | re.IGNORECASE,
)
_MARKER = re.compile(rb"PRIVATE KEY", re.IGNORECASE)
_BASE64 = re.compile(r"^[A-Za-z0-9+/=\s]{64,}$")
# Field names under which Envoy resources carry a key (protobuf JSON and snake case).
_KEY_FIELDS = frozenset({"privateKey", "private_key"})
REDACTED = "[redacted]"


def without_private_keys(data: bytes) -> bytes:
    """`data` with every private-key PEM block removed; empty if `data` is a DER private key."""
    if _MARKER.search(data):
        return _PRIVATE_BLOCK.sub(b"", data)
    if _is_der_private_key(data):
        return b""
    return data


def public_secret_data(encoded: str) -> str:
    """A Secret's base64 `data` as the API shows it (the same base64 when nothing is private)."""
    try:
        raw = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        return encoded  # not base64: validation refuses such data, so nothing stored is like it
    public = without_private_keys(raw)
    return encoded if public == raw else base64.b64encode(public).decode()


def scrub(value: Any) -> Any:
    """A JSON value (e.g. an Envoy config dump) with every private key removed, recursively."""
    if isinstance(value, dict):
        return {k: REDACTED if k in _KEY_FIELDS else scrub(v) for k, v in value.items()}
    if isinstance(value, list):
        return [scrub(v) for v in value]
    if isinstance(value, str):
        return _scrub_string(value)
    return value


def _scrub_string(text: str) -> str:
    raw = text.encode()
    if _MARKER.search(raw):
        return without_private_keys(raw).decode(errors="replace")
    if _BASE64.match(text):  # protobuf JSON carries bytes (inline_bytes) as base64
        return public_secret_data("".join(text.split()))
    return text


def _is_der_private_key(data: bytes) -> bool:
    if not data.startswith(b"\x30"):  # a DER SEQUENCE; anything else is not a key
        return False
    try:
        serialization.load_der_private_key(data, password=None)
    except (TypeError, UnsupportedAlgorithm):
        return True  # encrypted, or of a kind this library cannot load: still a private key
    except ValueError:
        return False
    return True
