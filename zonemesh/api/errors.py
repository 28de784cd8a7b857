"""Kong AIP-193 error bodies, for every error the API returns (also 404s of unknown paths).

Clients such as `zonemesh apply` print `invalid_parameters` as `field: reason` lines, so every
error names the field it is about whenever there is one.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from zonemesh.resources.errors import ValidationError, Violation
from zonemesh.store.base import StoreUnavailableError

log = logging.getLogger("zonemesh.api")

ERROR_TYPE = "/std-errors"


class ApiError(Exception):
    """An error response; raise it anywhere in a handler."""

    def __init__(
        self,
        status: int,
        detail: str,
        *,
        title: str | None = None,
        invalid_parameters: Iterable[Violation] = (),
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.title = title or _default_title(status)
        self.invalid_parameters = list(invalid_parameters)
        self.headers = headers

    @classmethod
    def invalid(cls, field: str, reason: str, *, title: str | None = None) -> ApiError:
        """A 400 about one field."""
        return cls(
            400,
            f"{field}: {reason}" if field else reason,
            title=title or "Bad Request",
            invalid_parameters=[Violation(field, reason)],
        )

    @classmethod
    def from_validation(cls, error: ValidationError) -> ApiError:
        return cls(
            400,
            "; ".join(str(v) for v in error.violations) or error.title,
            title=error.title,
            invalid_parameters=error.violations,
        )

    def body(self) -> dict[str, Any]:
        return error_body(self.status, self.title, self.detail, self.invalid_parameters)


def error_body(
    status: int, title: str, detail: str, invalid_parameters: Iterable[Violation] = ()
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "type": ERROR_TYPE,
        "status": status,
        "title": title,
        "detail": detail,
    }
    params = [{"field": v.field, "reason": v.reason} for v in invalid_parameters]
    if params:
        body["invalid_parameters"] = params
    return body


def error_response(error: ApiError) -> JSONResponse:
    return JSONResponse(error.body(), status_code=error.status, headers=error.headers)


def _default_title(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def install_error_handlers(app: FastAPI) -> None:
    """Make FastAPI's and Starlette's own errors (404, 405, 422, 500) AIP-193 shaped too."""

    async def on_api_error(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, ApiError)
        return error_response(exc)

    async def on_http_error(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        if exc.status_code == 404:
            detail = "no such path; GET /openapi.json lists the paths of this API"
        elif exc.status_code == 405:
            detail = "this method is not allowed on this path"
        else:
            detail = str(exc.detail)
        return error_response(ApiError(exc.status_code, detail, headers=exc.headers))

    async def on_request_validation(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        violations = []
        for err in exc.errors():
            loc = [str(p) for p in err.get("loc", ()) if p not in ("query", "path", "body")]
            violations.append(Violation(".".join(loc), str(err.get("msg", "invalid"))))
        error = ApiError(
            400,
            "; ".join(str(v) for v in violations) or "invalid request",
            title="Bad Request",
            invalid_parameters=violations,
        )
        return error_response(error)

    async def on_unexpected(_: Request, exc: Exception) -> JSONResponse:
        log.error("unexpected error in the API", exc_info=exc)
        return error_response(
            ApiError(500, f"internal error: {type(exc).__name__}", title="Internal Server Error")
        )

    async def on_store_unavailable(_: Request, exc: Exception) -> JSONResponse:
        log.warning("a request failed: %s", exc)  # e.g. the database is unreachable
        return error_response(ApiError(503, str(exc)))

    app.add_exception_handler(ApiError, on_api_error)
    app.add_exception_handler(StoreUnavailableError, on_store_unavailable)
    app.add_exception_handler(StarletteHTTPException, on_http_error)
    app.add_exception_handler(RequestValidationError, on_request_validation)
    app.add_exception_handler(Exception, on_unexpected)
