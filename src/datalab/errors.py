"""The one JSON error envelope of the API and the handlers that produce it.

Every API error body is ``{"code": str, "message": str, "detail": str | list}``. Upstream clients read
``message`` (401s) or ``detail`` (404s and 422 validation lists), so both are always present.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from datalab import domain_errors
from datalab.logs import REQUEST_ID

log = logging.getLogger(__name__)


class ErrorOut(BaseModel):
    """The error envelope, as the OpenAPI document declares it."""

    code: str = Field(description="Stable machine-readable error code")
    message: str = Field(description="A sentence for people")
    detail: str | list[dict[str, Any]] = Field(
        description="The message again, or for request validation errors (422) the list of problems"
    )


_STATUS_DESCRIPTIONS = {
    400: "Invalid request: a parameter, header or body that is missing or not valid",
    401: "Missing, invalid or expired session token, or an invalid API key",
    403: "organization_forbidden: the user does not belong to the Organization sent",
    404: "Not found in this organization",
    408: "The request body was not received in time",
    409: "The thing is not in a state that allows this",
    413: "The request body is larger than this operation accepts",
    422: "Request validation error (detail lists the problems)",
    429: "Too many failed logins (see Retry-After)",
    503: "The server is busy: retry after the number of seconds in Retry-After",
}
_RETRY_AFTER = {
    "Retry-After": {"description": "Seconds to wait before retrying", "schema": {"type": "integer"}}
}
# What every operation that needs a session and an Organization can answer before its own work.
ORG_SCOPED_ERRORS = (400, 401, 403, 422, 503)


def error_responses(*statuses: int, **descriptions: str) -> dict[int | str, dict[str, Any]]:
    """OpenAPI responses for these statuses, each with the error envelope (descriptions by "s404"...)."""
    responses: dict[int | str, dict[str, Any]] = {}
    for status in sorted(set(statuses)):
        response: dict[str, Any] = {
            "model": ErrorOut,
            "description": descriptions.get(f"s{status}", _STATUS_DESCRIPTIONS[status]),
        }
        if status in (429, 503):
            response["headers"] = _RETRY_AFTER
        responses[status] = response
    return responses


class ApiError(Exception):
    """An error answered with the JSON envelope."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        detail: Any = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.detail = message if detail is None else detail
        self.headers = headers


def bad_request(message: str, *, code: str = "bad_request") -> ApiError:
    """A 400 with the given message."""
    return ApiError(400, code, message)


def unauthorized(message: str, *, code: str = "unauthorized") -> ApiError:
    """A 401 with the given message."""
    return ApiError(401, code, message, headers={"WWW-Authenticate": "Bearer"})


def forbidden(message: str, *, code: str = "forbidden") -> ApiError:
    """A 403 with the given message."""
    return ApiError(403, code, message)


def envelope(
    status: int, code: str, message: str, detail: Any = None, headers: dict[str, str] | None = None
) -> JSONResponse:
    """The envelope as a response."""
    body = {"code": code, "message": message, "detail": message if detail is None else detail}
    return JSONResponse(body, status_code=status, headers=headers)


def _validation_detail(exc: RequestValidationError) -> list[dict[str, Any]]:
    return [
        {
            "loc": list(error.get("loc", ())),
            "msg": str(error.get("msg", "")),
            "type": str(error.get("type", "")),
        }
        for error in exc.errors()
    ]


# The API's status for each kind of domain failure (the most specific kind listed first wins).
_DOMAIN_STATUSES: tuple[tuple[type[domain_errors.DomainError], int], ...] = (
    (domain_errors.InvalidInput, 400),
    (domain_errors.Unprocessable, 422),
    (domain_errors.Unauthenticated, 401),
    (domain_errors.Forbidden, 403),
    (domain_errors.NotFound, 404),
    (domain_errors.InvalidState, 409),
    (domain_errors.Expired, 410),
    (domain_errors.TooLarge, 413),
    (domain_errors.Throttled, 429),
    (domain_errors.Unavailable, 503),
)


def domain_status(exc: domain_errors.DomainError) -> int:
    """The HTTP status the API answers a domain failure with."""
    for kind, status in _DOMAIN_STATUSES:
        if isinstance(exc, kind):
            return status
    return 400


def api_error(exc: domain_errors.DomainError) -> ApiError:
    """A domain failure as the API answers it: its status, its code, the envelope."""
    headers: dict[str, str] | None = None
    if isinstance(exc, domain_errors.Unauthenticated):
        headers = {"WWW-Authenticate": "Bearer"}
    elif isinstance(exc, domain_errors.Throttled | domain_errors.Unavailable):
        headers = {"Retry-After": str(exc.retry_after)}
    return ApiError(domain_status(exc), exc.code, exc.message, detail=exc.detail, headers=headers)


def install_error_handlers(app: FastAPI) -> None:
    """Make every error the app can raise answer with the envelope."""

    @app.exception_handler(domain_errors.DomainError)
    async def _domain_error(_request: Request, exc: domain_errors.DomainError) -> JSONResponse:
        error = api_error(exc)
        return envelope(error.status, error.code, error.message, error.detail, error.headers)

    @app.exception_handler(ApiError)
    async def _api_error(_request: Request, exc: ApiError) -> JSONResponse:
        return envelope(exc.status, exc.code, exc.message, exc.detail, exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_request: Request, exc: RequestValidationError) -> JSONResponse:
        detail = _validation_detail(exc)
        first = detail[0] if detail else {"loc": [], "msg": "invalid request"}
        where = ".".join(str(part) for part in first["loc"])
        message = str(first["msg"])
        return envelope(422, "validation_error", f"{where}: {message}" if where else message, detail)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return envelope(exc.status_code, code, str(exc.detail), headers=dict(exc.headers or {}))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
        # Answered outside the request middleware, which would otherwise add the request's id.
        request_id = REQUEST_ID.get()
        headers = {"X-Request-ID": request_id} if request_id else None
        return envelope(500, "internal_error", "Internal server error", headers=headers)
