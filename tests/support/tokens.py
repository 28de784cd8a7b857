"""Dataplane tokens for tests that run real control planes: issued as an admin would, with
`POST /tokens/dataplane` on the zone CP's API from loopback (contract §Trust)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx


def issue_dataplane_token(
    api_url: str,
    *,
    mesh: str = "default",
    name: str | None = None,
    tags: dict[str, list[str]] | None = None,
    proxy_type: str = "dataplane",
    valid_for: str = "1h",
    headers: dict[str, str] | None = None,
) -> str:
    body: dict[str, Any] = {"mesh": mesh, "type": proxy_type, "validFor": valid_for}
    if name is not None:
        body["name"] = name
    if tags is not None:
        body["tags"] = tags
    response = httpx.post(f"{api_url}/tokens/dataplane", json=body, headers=headers, timeout=10)
    response.raise_for_status()
    return response.text.strip()


def token_file(directory: Path, name: str, token: str) -> Path:
    """The token written where `dp run --dataplane-token-file` reads it (mode 0600)."""
    path = directory / f"{name}.token"
    path.write_text(token)
    path.chmod(0o600)
    return path
