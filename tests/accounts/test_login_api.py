"""POST /v1/login (in process): every body format clients send, the response shape, keys and refusals."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from typing import Any

import httpx2
import pytest

from tests.support.accounts import USER_KEYS, Account, login, login_body
from tests.support.checks import assert_envelope
from tests.support.factories import add_account, add_organization
from tests.support.inprocess import InProcessApp

AppFactory = Callable[..., InProcessApp]

ORGANIZATION_KEYS = {"uid", "name", "fice", "stateCode"}
DOC_API_KEY = "aNgKsb3PSB4bx9c68iRWeaGfufzj2Vuz6qenwor1"
# The --data body of the documentation's login example, byte for byte: trailing blanks, the missing comma
# after "password", the `//` comment and the missing closing brace.
DOC_BROKEN_BODY = (
    "{  \n"
    '  "userName": "your-service-account@your-school.edu",  \n'
    '  "password": "your-password"  \n'
    '  "acceptedTerms": true // this should always be true  \n'
)


@pytest.fixture(scope="module")
def own_api(make_app: AppFactory) -> InProcessApp:
    """This module's own app for tests that record failed logins (the shared one stays below its limits).

    It does not require x-api-key on login (DATALAB_REQUIRE_API_KEY_ON_LOGIN=false); a key that is sent must
    still be valid and still be the user's own, so the tests sending keys hold under either setting.
    """
    return make_app(require_api_key_on_login="false")


def demo(api: InProcessApp) -> tuple[str, str, str]:
    """The demo account's userName, password and API key."""
    assert api.demo is not None
    return api.demo.user_name, api.demo.password, api.demo.api_key


def assert_logged_in(api: InProcessApp, response: httpx2.Response, user_name: str) -> dict[str, Any]:
    """A 200 login whose token works on an org-scoped call; returns the body."""
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    assert body["user"]["userName"].lower() == user_name.lower()
    organization_uid = body["user"]["organizations"][0]["uid"]
    listed = api.client.get(
        "/v1/datacenter/exports",
        headers={"Authorization": f"Bearer {body['sessionToken']}", "Organization": organization_uid},
    )
    assert listed.status_code == 200, listed.text
    return body


# --- body formats -------------------------------------------------------------------------------------


def test_json_body_with_content_type(api: InProcessApp) -> None:
    user_name, password, key = demo(api)
    response = api.client.post(
        "/v1/login",
        headers={"x-api-key": key, "Content-Type": "application/json"},
        content=json.dumps(login_body(user_name, password)).encode(),
    )
    assert_logged_in(api, response, user_name)


def test_json_body_without_content_type(api: InProcessApp) -> None:
    user_name, password, key = demo(api)
    request = api.client.build_request(
        "POST",
        "/v1/login",
        headers={"x-api-key": key},
        content=json.dumps(login_body(user_name, password)).encode(),
    )
    assert "content-type" not in request.headers
    response = api.client.send(request)
    assert_logged_in(api, response, user_name)


@pytest.mark.parametrize("accepted", ["True", "true"])
def test_form_urlencoded_body(api: InProcessApp, accepted: str) -> None:
    user_name, password, key = demo(api)
    request = api.client.build_request(
        "POST",
        "/v1/login",
        headers={"x-api-key": key},
        data={"userName": user_name, "password": password, "acceptedTerms": accepted},
    )
    assert request.headers["content-type"] == "application/x-www-form-urlencoded"
    assert request.content.decode().endswith(f"&acceptedTerms={accepted}")
    response = api.client.send(request)
    assert_logged_in(api, response, user_name)


def test_form_body_is_url_decoded(api: InProcessApp) -> None:
    account = add_account(api, password="p&ss=w+rd %41 é")
    response = api.client.post(
        "/v1/login",
        headers={"x-api-key": account.api_key},
        data={"userName": account.user_name, "password": account.password, "acceptedTerms": "True"},
    )
    assert_logged_in(api, response, account.user_name)


def test_json_body_sent_with_a_form_content_type(api: InProcessApp) -> None:
    """What `curl --data '{...}'` sends when the Content-Type header is left out."""
    user_name, password, key = demo(api)
    response = api.client.post(
        "/v1/login",
        headers={"x-api-key": key, "Content-Type": "application/x-www-form-urlencoded"},
        content=json.dumps(login_body(user_name, password)).encode(),
    )
    assert_logged_in(api, response, user_name)


def test_lower_case_username_key(api: InProcessApp) -> None:
    user_name, password, key = demo(api)
    response = api.client.post(
        "/v1/login",
        headers={"x-api-key": key},
        json={"username": user_name, "password": password, "acceptedTerms": True},
    )
    assert_logged_in(api, response, user_name)


def test_user_name_is_case_insensitive(api: InProcessApp) -> None:
    user_name, password, key = demo(api)
    response = api.client.post(
        "/v1/login", headers={"x-api-key": key}, json=login_body(user_name.upper(), password)
    )
    body = assert_logged_in(api, response, user_name)
    assert body["user"]["userName"] == user_name


@pytest.mark.parametrize("accepted", [True, "true", "True"])
def test_accepted_terms_values(api: InProcessApp, accepted: object) -> None:
    user_name, password, key = demo(api)
    response = api.client.post(
        "/v1/login",
        headers={"x-api-key": key},
        json={"userName": user_name, "password": password, "acceptedTerms": accepted},
    )
    assert_logged_in(api, response, user_name)


@pytest.mark.parametrize("accepted", [False, "false", "False", None])
def test_terms_not_accepted_is_400(api: InProcessApp, accepted: object) -> None:
    user_name, password, key = demo(api)
    body: dict[str, object] = {"userName": user_name, "password": password}
    if accepted is not None:
        body["acceptedTerms"] = accepted
    response = api.client.post("/v1/login", headers={"x-api-key": key}, json=body)
    error = assert_envelope(response, 400, "terms_not_accepted")
    assert "acceptedTerms" in error["message"]


def test_terms_not_accepted_in_a_form_is_400(api: InProcessApp) -> None:
    user_name, password, key = demo(api)
    response = api.client.post(
        "/v1/login",
        headers={"x-api-key": key},
        data={"userName": user_name, "password": password, "acceptedTerms": "False"},
    )
    assert_envelope(response, 400, "terms_not_accepted")


def test_organization_header_is_ignored_on_login(api: InProcessApp) -> None:
    user_name, password, key = demo(api)
    assert api.demo is not None
    for organization in (str(uuid.uuid4()), "not-a-uid", api.demo.organization_uid):
        response = api.client.post(
            "/v1/login",
            headers={"x-api-key": key, "Organization": organization},
            json=login_body(user_name, password),
        )
        body = assert_logged_in(api, response, user_name)
        assert [o["uid"] for o in body["user"]["organizations"]] == [api.demo.organization_uid]


# --- response shape -----------------------------------------------------------------------------------


def test_response_shape_is_exactly_the_documented_one(api: InProcessApp) -> None:
    user_name, password, key = demo(api)
    assert api.demo is not None
    response = api.client.post("/v1/login", headers={"x-api-key": key}, json=login_body(user_name, password))
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert set(body) == {"user", "sessionToken"}
    user = body["user"]
    assert set(user) == USER_KEYS
    assert user["type"] == "User"
    assert user["status"] == "Active"
    assert user["userName"] == user_name
    assert user["email"] == user_name
    assert (user["firstName"], user["lastName"]) == ("API", "Service Account")
    uuid.UUID(user["uid"])
    assert len(user["organizations"]) == 1
    organization = user["organizations"][0]
    assert set(organization) == ORGANIZATION_KEYS
    assert organization == {
        "uid": api.demo.organization_uid,
        "name": "Sample University",
        "fice": "001024",
        "stateCode": "MO",
    }
    assert user["attributes"] == [{"key": "serviceAccount", "value": True}]
    token = body["sessionToken"]
    assert isinstance(token, str)
    assert token.count(".") == 2


def test_each_login_issues_a_new_token(api: InProcessApp) -> None:
    user_name, password, key = demo(api)
    tokens = {
        api.client.post("/v1/login", headers={"x-api-key": key}, json=login_body(user_name, password)).json()[
            "sessionToken"
        ]
        for _ in range(2)
    }
    assert len(tokens) == 2


# --- bad bodies ---------------------------------------------------------------------------------------


def test_documentation_example_body_is_400_not_valid_json(api: InProcessApp) -> None:
    response = api.client.post(
        "/v1/login",
        headers={"Content-Type": "application/json", "x-api-key": DOC_API_KEY},
        content=DOC_BROKEN_BODY.encode(),
    )
    error = assert_envelope(response, 400, "invalid_json")
    assert "not valid JSON" in error["message"]
    assert "line 4" in error["message"]


def test_documentation_example_body_is_400_even_with_a_valid_key(api: InProcessApp) -> None:
    _, _, key = demo(api)
    response = api.client.post(
        "/v1/login",
        headers={"Content-Type": "application/json", "x-api-key": key},
        content=DOC_BROKEN_BODY.encode(),
    )
    assert "not valid JSON" in assert_envelope(response, 400, "invalid_json")["message"]


@pytest.mark.parametrize(
    ("content", "code"),
    [
        (b"", "invalid_body"),
        (b"   ", "invalid_body"),
        (b"[1, 2]", "invalid_body"),
        (b'"userName"', "invalid_body"),
        (b'{"password": "x", "acceptedTerms": true}', "missing_credentials"),
        (b'{"userName": "a@b.edu", "acceptedTerms": true}', "missing_credentials"),
        (b'{"userName": 5, "password": "x", "acceptedTerms": true}', "missing_credentials"),
        (b'{"userName": "a@b.edu", "password": "", "acceptedTerms": true}', "missing_credentials"),
    ],
)
def test_malformed_bodies_are_400(api: InProcessApp, content: bytes, code: str) -> None:
    _, _, key = demo(api)
    response = api.client.post(
        "/v1/login", headers={"x-api-key": key, "Content-Type": "application/json"}, content=content
    )
    assert_envelope(response, 400, code)


# --- API keys -----------------------------------------------------------------------------------------


def test_missing_api_key_is_401(api: InProcessApp) -> None:
    user_name, password, _ = demo(api)
    response = api.client.post("/v1/login", json=login_body(user_name, password))
    error = assert_envelope(response, 401, "missing_api_key")
    assert "x-api-key" in error["message"]


@pytest.mark.parametrize("key", [DOC_API_KEY, "", "not-a-key"])
def test_wrong_api_key_is_401(api: InProcessApp, key: str) -> None:
    user_name, password, _ = demo(api)
    response = api.client.post("/v1/login", headers={"x-api-key": key}, json=login_body(user_name, password))
    error = assert_envelope(response, 401, "invalid_api_key")
    assert error["message"] == "Invalid API key"


def test_revoked_api_key_is_401(api: InProcessApp) -> None:
    organization = add_organization(api)
    user_name = f"revoked-key-{uuid.uuid4().hex[:8]}@example.edu"
    password = "correct horse battery"
    created = api.admin_json(
        "admin", "user", "create", "--user-name", user_name, "--org", organization.uid, "--password", password
    )
    assert created["userName"] == user_name
    issued = api.admin_json("admin", "apikey", "create", "--user", user_name, "--name", "ci")
    assert len(issued["apiKey"]) == 40
    account = Account(
        uid=created["uid"],
        user_name=user_name,
        password=password,
        api_key=issued["apiKey"],
        api_key_uid=issued["uid"],
        organization_uids=(organization.uid,),
    )
    assert_logged_in(api, login(api, account), user_name)

    revoked = api.cli_json("admin", "apikey", "revoke", issued["uid"])
    assert revoked["uid"] == issued["uid"]
    assert revoked["revokedAt"]

    assert_envelope(login(api, account), 401, "invalid_api_key")


def test_api_key_of_another_user_is_401(own_api: InProcessApp) -> None:
    owner, other = add_account(own_api), add_account(own_api)
    response = login(own_api, owner, api_key=other.api_key)
    assert assert_envelope(response, 401, "invalid_credentials")["message"] == "Invalid userName or password"


# --- credentials --------------------------------------------------------------------------------------


def test_wrong_password_and_unknown_user_get_the_same_401(own_api: InProcessApp) -> None:
    account = add_account(own_api)
    wrong_password = login(own_api, account, password=account.password + "x")
    unknown_user = own_api.client.post(
        "/v1/login",
        headers={"x-api-key": account.api_key},
        json=login_body("nobody-" + account.user_name, account.password),
    )
    first = assert_envelope(wrong_password, 401, "invalid_credentials")
    second = assert_envelope(unknown_user, 401, "invalid_credentials")
    assert first == second
    assert first["message"] == "Invalid userName or password"
    # The account itself still works: two failures are below the lockout limit.
    assert_logged_in(own_api, login(own_api, account), account.user_name)


def test_inactive_user_is_401_until_reactivated(own_api: InProcessApp) -> None:
    account = add_account(own_api)
    deactivated = own_api.cli_json("admin", "user", "set-status", account.user_name, "Inactive")
    assert deactivated == {"uid": account.uid, "userName": account.user_name, "status": "Inactive"}

    error = assert_envelope(login(own_api, account), 401, "inactive_user")
    assert "inactive" in error["message"]
    # A wrong password does not reveal that the account exists and is inactive.
    wrong = login(own_api, account, password="not the password")
    assert assert_envelope(wrong, 401, "invalid_credentials")["message"] == "Invalid userName or password"

    own_api.cli_json("admin", "user", "set-status", account.user_name, "Active")
    assert_logged_in(own_api, login(own_api, account), account.user_name)


# --- API key not required on login --------------------------------------------------------------------


def test_login_without_key_when_not_required(own_api: InProcessApp) -> None:
    user_name, password, _ = demo(own_api)
    response = own_api.client.post("/v1/login", json=login_body(user_name, password))
    assert_logged_in(own_api, response, user_name)


def test_bad_key_still_refused_when_not_required(own_api: InProcessApp) -> None:
    user_name, password, _ = demo(own_api)
    response = own_api.client.post(
        "/v1/login", headers={"x-api-key": "wrong"}, json=login_body(user_name, password)
    )
    assert_envelope(response, 401, "invalid_api_key")


def test_password_still_checked_when_key_not_required(own_api: InProcessApp) -> None:
    user_name, _, _ = demo(own_api)
    response = own_api.client.post("/v1/login", json=login_body(user_name, "wrong password"))
    assert_envelope(response, 401, "invalid_credentials")
