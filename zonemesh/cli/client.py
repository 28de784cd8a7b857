"""A small REST client of the control plane's API for the client commands.

Every failure becomes a `CliError` whose lines are what the user sees on stderr: the
`field: reason` lines of a validation error, the detail of any other error, or a note that
the control plane could not be reached. Never a traceback.
"""

from __future__ import annotations

import functools
import json
import ssl
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import IO, Any

import click
import httpx

from zonemesh import __version__
from zonemesh.resources.base import ResourceType

DEFAULT_CP_URL = "http://127.0.0.1:5681"
CP_URL_ENV = "ZONEMESH_CP_URL"
TOKEN_ENV = "ZONEMESH_CP_TOKEN"
CA_CERT_ENV = "ZONEMESH_CP_CA_CERT_FILE"
_TOKEN_HINT = (
    f"pass --token (env {TOKEN_ENV}) with an admin user token; the control plane writes one "
    "to admin-user-token in its data directory"
)


@dataclass(frozen=True)
class Connection:
    """Where the control plane's API is and how to talk to it (from the common options)."""

    url: str
    token: str | None = None
    ca_cert_file: str | None = None

    def client(self) -> ApiClient:
        return ApiClient(self.url, token=self.token, ca_cert_file=self.ca_cert_file)


def client_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """`--cp`, `--token` and `--ca-cert-file` (each with its env var); the command receives
    them as one `connection: Connection` argument."""

    @functools.wraps(command)
    def with_connection(
        *args: Any, cp_url: str, token: str | None, ca_cert_file: str | None, **kwargs: Any
    ) -> Any:
        connection = Connection(cp_url, (token or "").strip() or None, ca_cert_file or None)
        return command(*args, connection=connection, **kwargs)

    options = [
        click.option(
            "--cp",
            "cp_url",
            envvar=CP_URL_ENV,
            default=DEFAULT_CP_URL,
            show_default=True,
            metavar="URL",
            help=f"The control plane's API (http://…:5681 or https://…:5682) [env {CP_URL_ENV}]",
        ),
        click.option(
            "--token",
            envvar=TOKEN_ENV,
            metavar="TOKEN",
            help=f"A user token, sent as Authorization: Bearer [env {TOKEN_ENV}]",
        ),
        click.option(
            "--ca-cert-file",
            envvar=CA_CERT_ENV,
            metavar="FILE",
            help="CA certificate to verify an https:// --cp with (a generated one is "
            f"<data-dir>/tls/ca.crt) [env {CA_CERT_ENV}]",
        ),
    ]
    wrapped: Callable[..., Any] = with_connection
    for option in reversed(options):
        wrapped = option(wrapped)
    return wrapped


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
    def __init__(
        self,
        base_url: str,
        timeout: float = 60.0,
        *,
        token: str | None = None,
        ca_cert_file: str | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        headers = {"Accept": "application/json", "User-Agent": f"zonemesh/{__version__}"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self._http = httpx.Client(
            base_url=self.base_url,
            timeout=timeout,
            headers=headers,
            verify=_verification(self.base_url, ca_cert_file),
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
        headers: dict[str, str] | None = None,
        allow: Collection[int] = (),
    ) -> httpx.Response:
        """Send, and turn connection problems and error statuses (other than those in
        `allow`) into `CliError`s."""
        content = None
        headers = dict(headers or {})
        if body is not None:
            content = json.dumps(body, default=str).encode()
            headers["Content-Type"] = "application/json"
        try:
            response = self._http.request(
                method, url, params=params, content=content, headers=headers
            )
        except httpx.TransportError as e:
            raise _transport_error(self.base_url, e) from None
        if response.status_code >= 400 and response.status_code not in allow:
            raise _api_error(response, context)
        return response

    def post(self, url: str, body: Any, context: str = "") -> Any:
        return _json(self.request("POST", url, body=body, context=context))

    def post_text(self, url: str, body: Any, context: str = "") -> str:
        """POST a JSON body; the answer's text (the token endpoints answer text/plain)."""
        return self.request("POST", url, body=body, context=context).text

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


def _verification(base_url: str, ca_cert_file: str | None) -> ssl.SSLContext | bool:
    """How to verify the CP's certificate: with the given CA, else the system's roots."""
    if not base_url.lower().startswith("https://") or not ca_cert_file:
        return True
    try:
        return ssl.create_default_context(cafile=ca_cert_file)
    except (OSError, ssl.SSLError) as e:
        reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
        raise CliError(f"--ca-cert-file {ca_cert_file}: cannot use it as a CA: {reason}") from None


def _transport_error(base_url: str, error: httpx.TransportError) -> CliError:
    reason = str(error) or type(error).__name__
    if "CERTIFICATE_VERIFY_FAILED" in reason or "certificate verify failed" in reason:
        return CliError(
            f"the TLS certificate of the control plane at {base_url} does not verify: {reason}",
            [
                f"pass --ca-cert-file (env {CA_CERT_ENV}) with the CA that signed it; a "
                "generated one is <data-dir>/tls/ca.crt on the control plane's host."
            ],
        )
    if isinstance(error, httpx.RemoteProtocolError) or "WRONG_VERSION_NUMBER" in reason:
        return CliError(
            f"the control plane at {base_url} does not speak this protocol: {reason}",
            ["https:// is served on the TLS port (5682), http:// on 5681."],
        )
    return CliError(
        f"could not reach the control plane at {base_url}: {reason}",
        [f"is it running? Set --cp or {CP_URL_ENV} to its API address."],
    )


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
    if response.status_code == 401:
        lines.append(_TOKEN_HINT)
    return ApiError(response.status_code, f"{prefix}{headline or response.status_code}", lines)
