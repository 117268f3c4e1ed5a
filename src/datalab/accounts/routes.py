"""HTTP handlers for login and token refresh."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Header, Request

from datalab.accounts import service
from datalab.accounts.schemas import LOGIN_BODY_SCHEMA, LoginOut, TokenOut, parse_login_body, user_out
from datalab.deps import DbDep, NowDep, ReadDbDep, SettingsDep, raw_body
from datalab.errors import error_responses
from datalab.operations.metrics import login_attempt

router = APIRouter(tags=["Authorization"])


@router.post(
    "/login",
    operation_id="login",
    response_model=LoginOut,
    summary="Authenticates user",
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": LOGIN_BODY_SCHEMA},
                "application/x-www-form-urlencoded": {"schema": LOGIN_BODY_SCHEMA},
            },
        }
    },
    responses=error_responses(
        400, 401, 408, 413, 422, 429, 503, s400="Body missing, not valid JSON, or credentials too long"
    ),
)
def login(
    request: Request,
    body: Annotated[bytes, Depends(raw_body)],
    db: DbDep,
    settings: SettingsDep,
    now: NowDep,
    x_api_key: Annotated[str | None, Header()] = None,
) -> LoginOut:
    """Exchange userName + password (+ x-api-key) for a session token."""
    form = parse_login_body(body, request.headers.get("content-type", ""))
    with login_attempt("api"):
        result = service.login(
            db=db,
            settings=settings,
            user_name=form.userName,
            password=form.password,
            api_key=x_api_key,
            client_address=request.client.host if request.client else "unknown",
            now=now,
        )
    return LoginOut(user=user_out(result.user), sessionToken=result.session_token)


@router.get(
    "/refresh-token",
    operation_id="refresh-token",
    response_model=TokenOut,
    summary="Refresh session token",
    responses=error_responses(401, 422, 503),
)
@router.post(
    "/refresh-token",
    operation_id="refresh-token-post",
    response_model=TokenOut,
    summary="Refresh session token (POST)",
    responses=error_responses(401, 413, 422, 503),
)
def refresh_token(
    db: ReadDbDep,
    settings: SettingsDep,
    now: NowDep,
    authorization: Annotated[str | None, Header()] = None,
    x_api_key: Annotated[str | None, Header()] = None,
) -> TokenOut:
    """A new session token for a still-valid one."""
    token = service.bearer_token(authorization)
    return TokenOut(
        sessionToken=service.refresh_token(db=db, settings=settings, token=token, api_key=x_api_key, now=now)
    )
