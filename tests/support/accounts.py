"""Accounts for functional tests: the demo account, unique names, logins and admin commands in a process."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from dataclasses import dataclass
from typing import Any

import httpx2

from tests.support.server import Deployment, LoggedIn

DEMO_FICE = "001024"
DEMO_ORGANIZATION_NAME = "Sample University"
DEMO_DISPLAY_NAME = "API Service Account"
# The user keys of the documentation's login response example, no more, no fewer.
USER_KEYS = {
    "uid",
    "type",
    "userName",
    "firstName",
    "lastName",
    "email",
    "status",
    "organizations",
    "attributes",
}
_used_fices = {DEMO_FICE}


def unique(prefix: str) -> str:
    """A name no other test uses: prefix plus a random suffix."""
    return f"{prefix}-{secrets.token_hex(4)}"


def unique_fice() -> str:
    """A six-digit FICE code with two leading zeros, never handed out twice in one test run."""
    while True:
        fice = f"00{secrets.randbelow(10_000):04d}"
        if fice not in _used_fices:
            _used_fices.add(fice)
            return fice


@dataclass(frozen=True)
class Organization:
    """An organization created for a test."""

    uid: str
    name: str
    fice: str
    state_code: str


@dataclass(frozen=True)
class Account:
    """A user created for a test, with one API key."""

    uid: str
    user_name: str
    password: str
    api_key: str
    api_key_uid: str
    organization_uids: tuple[str, ...]


def login_body(user_name: str, password: str, **extra: Any) -> dict[str, Any]:
    """The documented JSON login body."""
    return {"userName": user_name, "password": password, "acceptedTerms": True, **extra}


def login(
    server: Deployment,
    account: Account,
    *,
    password: str | None = None,
    api_key: str | None = None,
    headers: dict[str, str] | None = None,
) -> httpx2.Response:
    """POST /v1/login as the account (its own key and password unless others are given)."""
    return server.request(
        "POST",
        "/v1/login",
        headers={"x-api-key": api_key or account.api_key, **(headers or {})},
        json=login_body(account.user_name, password or account.password),
    )


def login_as(server: Deployment, account: Account) -> LoggedIn:
    """Log the account in; its headers act in its (first) organization."""
    return server.login(user_name=account.user_name, password=account.password, api_key=account.api_key)


def session_token(server: Deployment, account: Account) -> str:
    """A session token of the account."""
    response = login(server, account)
    assert response.status_code == 200, response.text
    token: str = response.json()["sessionToken"]
    return token


def run_cli(
    server: Deployment, *args: str, env: dict[str, str] | None = None, input_text: str | None = None
) -> subprocess.CompletedProcess[str]:
    """Run `python -m datalab <args>` on the server's data with extra environment variables; never raises."""
    return subprocess.run(
        [sys.executable, "-m", "datalab", *args],
        env={**server.env, **(env or {})},
        capture_output=True,
        text=True,
        input=input_text,
        timeout=120,
        check=False,
        cwd=os.fspath(server.home),
    )
