"""A small REST client of the control plane's API for the client commands.

Every failure becomes a `CliError` whose lines are what the user sees on stderr: the
`field: reason` lines of a validation error, the detail of any other error, or a note that
the control plane could not be reached. Never a traceback.
"""

from __future__ import annotations

import json
from typing import IO, Any

import click
import httpx

from zonemesh import __version__
from zonemesh.resources.base import ResourceType

DEFAULT_CP_URL = "http://127.0.0.1:5681"
CP_URL_ENV = "ZONEMESH_CP_URL"

cp_option = click.option(
    "--cp",
    "cp_url",
    envvar=CP_URL_ENV,
    default=DEFAULT_CP_URL,
    show_default=True,
    metavar="URL",
    help=f"The control plane's API [env {CP_URL_ENV}]",
)


class CliError(click.ClickException):
    """Printed as `Error: <headline>` followed by one line per field; exit code 1."""

    def __init__(self, headline: str, lines: list[str] | None = None) -> None:
        super().__init__(headline)
        self.lines = lines or []

    def show(self, file: IO[Any] | None = None) -> None:
        click.echo(f"Error: {self.message}", err=True)
        for line in self.lines:
            click.echo(line, err=True)


class ApiError(CliError):
    """The control plane answered with an error."""

    def __init__(self, status: int, headline: str, lines: list[str]) -> None:
        super().__init__(headline, lines)
        self.status = status


def resource_path(rtype: ResourceType, mesh: str, name: str | None = None) -> str:
    """Kuma's path of a type (and of one resource when `name` is given)."""
    base = f"/meshes/{mesh}/{rtype.plural}" if rtype.mesh_scoped else f"/{rtype.plural}"
    return f"{base}/{name}" if name else base


class ApiClient:
    def __init__(self, base_url: str, timeout: float = 60.0) -> None:
        self.base_url = base_url.rstrip("/")
        self._http = httpx.Client(
            base_url=self.base_url,
            timeout=timeout,
            headers={
                "Accept": "application/json",
                "User-Agent": f"zonemesh/{__version__}",
            },
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> ApiClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def request(
        self,
        method: str,
        url: str,
        *,
        params: dict[str, Any] | None = None,
        body: Any = None,
        context: str = "",
    ) -> httpx.Response:
        """Send, and turn connection problems and error statuses into `CliError`s."""
        content = None
        headers = {}
        if body is not None:
            content = json.dumps(body, default=str).encode()
            headers["Content-Type"] = "application/json"
        try:
            response = self._http.request(
                method, url, params=params, content=content, headers=headers
            )
        except httpx.TransportError as e:
            reason = str(e) or type(e).__name__
            raise CliError(
                f"could not reach the control plane at {self.base_url}: {reason}",
                [f"is it running? Set --cp or {CP_URL_ENV} to its API address."],
            ) from None
        if response.status_code >= 400:
            raise _api_error(response, context)
        return response

    def get(self, url: str, params: dict[str, Any] | None = None, context: str = "") -> Any:
        return _json(self.request("GET", url, params=params, context=context))

    def put(self, url: str, body: Any, context: str = "") -> tuple[int, Any]:
        response = self.request("PUT", url, body=body, context=context)
        return response.status_code, _json(response)

    def delete(self, url: str, context: str = "") -> Any:
        return _json(self.request("DELETE", url, context=context))

    def get_all(self, url: str, params: dict[str, Any] | None = None) -> list[Any]:
        """Every item of a list, following `next` from page to page."""
        items: list[Any] = []
        page = self.get(url, params={**(params or {}), "size": 1000})
        items.extend(page.get("items", []))
        while page.get("next"):
            page = self.get(page["next"])
            items.extend(page.get("items", []))
        return items


def _json(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        raise CliError(
            f"the control plane answered {response.status_code} with a body that is not JSON"
        ) from None


def _api_error(response: httpx.Response, context: str) -> ApiError:
    prefix = f"{context}: " if context else ""
    try:
        body = response.json()
    except ValueError:
        body = None
    if not isinstance(body, dict):
        text = " ".join(response.text.split())[:300]
        return ApiError(response.status_code, f"{prefix}HTTP {response.status_code}: {text}", [])
    params = body.get("invalid_parameters") or []
    lines = [
        f"{p.get('field')}: {p.get('reason')}" if p.get("field") else str(p.get("reason"))
        for p in params
        if isinstance(p, dict)
    ]
    headline = body.get("title") if lines else body.get("detail") or body.get("title")
    return ApiError(response.status_code, f"{prefix}{headline or response.status_code}", lines)
