"""Helpers for the operator API tests: an operator made on the command line, colleges made through the API."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Any

import httpx2

from tests.support.accounts import unique, unique_fice
from tests.support.server import Deployment, LoggedIn


@dataclass(frozen=True)
class Operator:
    uid: str
    user_name: str
    password: str
    api_key: str
    token: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}", "x-api-key": self.api_key}


@dataclass(frozen=True)
class College:
    organization: dict[str, Any]
    user: dict[str, Any]
    logged_in: LoggedIn


def login_json(server: Deployment, user_name: str, password: str, api_key: str) -> dict[str, Any]:
    response = server.request(
        "POST",
        "/v1/login",
        headers={"x-api-key": api_key},
        json={"userName": user_name, "password": password, "acceptedTerms": True},
    )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def make_operator(server: Deployment) -> Operator:
    """An operator made with the command line, signed in through the API like any user."""
    user_name, password = unique("operator") + "@example.org", secrets.token_urlsafe(12)
    created = server.admin_json(
        "admin", "user", "create", "--user-name", user_name, "--password", password, "--operator"
    )
    assert created["operator"] is True
    assert created["organizations"] == []
    key = server.admin_json("admin", "apikey", "create", "--user", user_name)
    body = login_json(server, user_name, password, key["apiKey"])
    return Operator(created["uid"], user_name, password, key["apiKey"], body["sessionToken"])


def call(server: Deployment, operator: Operator, method: str, path: str, **options: Any) -> httpx2.Response:
    """The operator's request for path (from the root, e.g. /v1/admin/users)."""
    return server.request(method, path, headers=operator.headers, **options)


def make_college(server: Deployment, operator: Operator) -> College:
    """An organization, a member with a password and an API key, all made through the admin API."""
    organization = call(
        server,
        operator,
        "POST",
        "/v1/admin/organizations",
        json={"name": unique("College"), "fice": unique_fice()},
    )
    assert organization.status_code == 201, organization.text
    password = secrets.token_urlsafe(12)
    user = call(
        server,
        operator,
        "POST",
        "/v1/admin/users",
        json={
            "userName": unique("staff") + "@example.edu",
            "password": password,
            "organizations": [organization.json()["uid"]],
        },
    )
    assert user.status_code == 201, user.text
    key = call(
        server, operator, "POST", f"/v1/admin/users/{user.json()['uid']}/api-keys", json={"name": "sync"}
    )
    assert key.status_code == 201, key.text
    logged_in = server.login(
        user_name=user.json()["userName"], password=password, api_key=key.json()["apiKey"]
    )
    return College(organization.json(), user.json(), logged_in)


def campus_exports(server: Deployment, college: College) -> list[str]:
    response = server.request("GET", "/v1/datacenter/exports", headers=college.logged_in.headers)
    assert response.status_code == 200, response.text
    return [item["uid"] for item in response.json()]


def publish_form(server: Deployment, operator: Operator, college: College) -> dict[str, Any]:
    response = call(
        server,
        operator,
        "POST",
        f"/v1/admin/organizations/{college.organization['uid']}/exports",
        json={"productKey": "prospect", "orderName": "Fall Search"},
    )
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body
