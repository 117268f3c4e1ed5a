"""Session tokens and the organization context (in process): refresh, refusals, Organization, x-api-key."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx2
import jwt
import pytest
from sqlalchemy import update

from datalab.accounts.models import ApiKey
from datalab.accounts.security import issue_token, read_token
from tests.support.accounts import Account, login, session_token, unique, unique_fice
from tests.support.checks import assert_envelope
from tests.support.factories import add_account, add_organization
from tests.support.inprocess import InProcessApp
from tests.support.server import MovableClock

TTL = timedelta(seconds=1200)


def demo_token(api: InProcessApp) -> str:
    return api.login().token


def exports(
    api: InProcessApp, *, token: str | None, organization: str | None = None, api_key: str | None = None
) -> httpx2.Response:
    """GET /v1/datacenter/exports with the given credentials."""
    headers = {}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    if organization is not None:
        headers["Organization"] = organization
    if api_key is not None:
        headers["x-api-key"] = api_key
    return api.client.get("/v1/datacenter/exports", headers=headers)


def refresh(api: InProcessApp, authorization: str | None, *, method: str = "GET") -> httpx2.Response:
    headers = {} if authorization is None else {"Authorization": authorization}
    return api.client.request(method, "/v1/refresh-token", headers=headers)


def demo_org(api: InProcessApp) -> str:
    assert api.demo is not None
    return api.demo.organization_uid


def secret(api: InProcessApp) -> str:
    return api.env["DATALAB_SECRET_KEY"]


def user_uid_of(api: InProcessApp, token: str) -> str:
    return read_token(secret_key=secret(api), token=token, now=datetime.now(UTC)).user_uid


def demo_claims(api: InProcessApp) -> dict[str, Any]:
    """The claims of a current token of the demo user, as the api would issue them."""
    user_uid = user_uid_of(api, demo_token(api))
    now = datetime.now(UTC)
    return {
        "iss": "datalab",
        "sub": user_uid,
        "iat": int(now.timestamp()),
        "exp": int((now + TTL).timestamp()),
    }


# --- refresh ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "scheme"),
    [
        ("GET", "Bearer"),
        ("POST", "Bearer"),
        ("GET", "JWT"),
        ("POST", "JWT"),
        ("GET", "bearer"),
        ("GET", "jwt"),
    ],
)
def test_refresh_returns_a_new_working_token(api: InProcessApp, method: str, scheme: str) -> None:
    old = demo_token(api)
    started = datetime.now(UTC).replace(microsecond=0)
    response = refresh(api, f"{scheme} {old}", method=method)
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"sessionToken"}
    new = body["sessionToken"]
    assert new != old
    claims = read_token(secret_key=secret(api), token=new, now=datetime.now(UTC))
    assert claims.user_uid == user_uid_of(api, old)
    assert claims.issued_at >= started
    assert claims.expires_at - claims.issued_at == TTL
    listed = exports(api, token=new, organization=demo_org(api))
    assert listed.status_code == 200, listed.text
    assert isinstance(listed.json(), list)


def test_refreshed_token_can_be_refreshed_again(api: InProcessApp) -> None:
    token = demo_token(api)
    for _ in range(3):
        response = refresh(api, f"Bearer {token}")
        assert response.status_code == 200, response.text
        token = response.json()["sessionToken"]
    assert exports(api, token=token, organization=demo_org(api)).status_code == 200


def test_org_scoped_call_accepts_jwt_scheme(api: InProcessApp) -> None:
    response = api.client.get(
        "/v1/datacenter/exports",
        headers={"Authorization": f"JWT {demo_token(api)}", "Organization": demo_org(api)},
    )
    assert response.status_code == 200, response.text


def test_refresh_with_a_valid_api_key(api: InProcessApp) -> None:
    assert api.demo is not None
    response = api.client.get(
        "/v1/refresh-token",
        headers={"Authorization": f"Bearer {demo_token(api)}", "x-api-key": api.demo.api_key},
    )
    assert response.status_code == 200, response.text


def test_refresh_with_an_invalid_api_key_is_401(api: InProcessApp) -> None:
    response = api.client.get(
        "/v1/refresh-token",
        headers={"Authorization": f"Bearer {demo_token(api)}", "x-api-key": "not-a-key"},
    )
    assert_envelope(response, 401, "invalid_api_key")


def test_refresh_with_another_users_api_key_is_401(api: InProcessApp) -> None:
    other = add_account(api)
    response = api.client.get(
        "/v1/refresh-token",
        headers={"Authorization": f"Bearer {demo_token(api)}", "x-api-key": other.api_key},
    )
    assert_envelope(response, 401, "invalid_api_key")


# --- refused tokens -----------------------------------------------------------------------------------


def test_missing_authorization_is_401(api: InProcessApp) -> None:
    error = assert_envelope(refresh(api, None), 401, "missing_token")
    assert "Authorization" in error["message"]
    error = assert_envelope(exports(api, token=None, organization=demo_org(api)), 401, "missing_token")
    assert "Authorization" in error["message"]


@pytest.mark.parametrize(
    ("authorization", "code"),
    [
        ("", "missing_token"),
        ("Bearer", "invalid_token"),
        ("JWT", "invalid_token"),
        ("Basic dXNlcjpwYXNz", "invalid_token"),
        ("Token abc.def.ghi", "invalid_token"),
    ],
)
def test_unusable_authorization_header_is_401(api: InProcessApp, authorization: str, code: str) -> None:
    assert_envelope(refresh(api, authorization), 401, code)


def test_wrong_scheme_names_the_accepted_ones(api: InProcessApp) -> None:
    error = assert_envelope(refresh(api, f"Token {demo_token(api)}"), 401, "invalid_token")
    assert "Bearer" in error["message"]
    assert "JWT" in error["message"]


def test_expired_token_is_401(api: InProcessApp) -> None:
    user_uid = user_uid_of(api, demo_token(api))
    expired = issue_token(
        secret_key=secret(api), user_uid=user_uid, now=datetime.now(UTC) - timedelta(hours=1), ttl=TTL
    )
    error = assert_envelope(refresh(api, f"Bearer {expired}"), 401, "invalid_token")
    assert "expired" in error["message"]
    error = assert_envelope(exports(api, token=expired, organization=demo_org(api)), 401, "invalid_token")
    assert "expired" in error["message"]


def test_token_just_past_its_expiry_is_401(api: InProcessApp) -> None:
    user_uid = user_uid_of(api, demo_token(api))
    now = datetime.now(UTC)
    expired = issue_token(
        secret_key=secret(api),
        user_uid=user_uid,
        now=now - timedelta(seconds=40),
        ttl=timedelta(seconds=30),
    )
    assert "expired" in assert_envelope(refresh(api, f"Bearer {expired}"), 401, "invalid_token")["message"]
    valid = issue_token(secret_key=secret(api), user_uid=user_uid, now=now, ttl=timedelta(seconds=30))
    assert refresh(api, f"Bearer {valid}").status_code == 200


def test_token_expires_when_the_clock_passes_its_lifetime(
    api: InProcessApp, server_clock: MovableClock
) -> None:
    token = demo_token(api)
    server_clock.advance(TTL.total_seconds() - 5)
    assert refresh(api, f"Bearer {token}").status_code == 200
    server_clock.advance(10)
    assert "expired" in assert_envelope(refresh(api, f"Bearer {token}"), 401, "invalid_token")["message"]
    assert_envelope(exports(api, token=token, organization=demo_org(api)), 401, "invalid_token")


@pytest.mark.parametrize("token", ["not-a-token", "a.b.c", "Bearer"])
def test_malformed_token_is_401(api: InProcessApp, token: str) -> None:
    error = assert_envelope(refresh(api, f"Bearer {token}"), 401, "invalid_token")
    assert "malformed" in error["message"]


def test_foreign_signed_token_is_401(api: InProcessApp) -> None:
    user_uid = user_uid_of(api, demo_token(api))
    foreign = issue_token(
        secret_key="another-deployment-" + "x" * 40, user_uid=user_uid, now=datetime.now(UTC), ttl=TTL
    )
    error = assert_envelope(refresh(api, f"Bearer {foreign}"), 401, "invalid_token")
    assert "signature" in error["message"]
    assert_envelope(exports(api, token=foreign, organization=demo_org(api)), 401, "invalid_token")


def test_token_signed_with_the_raw_secret_is_401(api: InProcessApp) -> None:
    """The signing key is derived from the secret; a token signed with the secret itself is foreign."""
    forged = jwt.encode(demo_claims(api), secret(api), algorithm="HS256")
    assert_envelope(refresh(api, f"Bearer {forged}"), 401, "invalid_token")


def test_unsigned_token_is_401(api: InProcessApp) -> None:
    unsigned = jwt.encode(demo_claims(api), "", algorithm="none")
    assert_envelope(refresh(api, f"Bearer {unsigned}"), 401, "invalid_token")
    assert_envelope(exports(api, token=unsigned, organization=demo_org(api)), 401, "invalid_token")


def test_token_of_an_unknown_user_is_401(api: InProcessApp) -> None:
    token = issue_token(secret_key=secret(api), user_uid=str(uuid.uuid4()), now=datetime.now(UTC), ttl=TTL)
    assert_envelope(refresh(api, f"Bearer {token}"), 401, "invalid_token")


def test_token_of_a_deactivated_user_is_401_and_stays_revoked(api: InProcessApp) -> None:
    account = add_account(api)
    token = session_token(api, account)
    assert exports(api, token=token, organization=account.organization_uids[0]).status_code == 200

    # In this process and right after the login: the revocation often falls in the token's second.
    api.admin_json("admin", "user", "set-status", account.user_name, "Inactive")
    assert_envelope(refresh(api, f"Bearer {token}"), 401, "invalid_token")
    assert_envelope(
        exports(api, token=token, organization=account.organization_uids[0]), 401, "invalid_token"
    )

    # Reactivation does not bring the old sessions back; a new login does.
    api.admin_json("admin", "user", "set-status", account.user_name, "Active")
    error = assert_envelope(refresh(api, f"Bearer {token}"), 401, "invalid_token")
    assert "revoked" in error["message"]
    fresh = session_token(api, account)
    assert refresh(api, f"Bearer {fresh}").status_code == 200


# --- organization context -----------------------------------------------------------------------------


def test_missing_organization_header_is_400(api: InProcessApp) -> None:
    error = assert_envelope(exports(api, token=demo_token(api)), 400, "missing_organization")
    assert "Organization" in error["message"]
    assert "/v1/login" in error["message"]


def test_blank_organization_header_is_400(api: InProcessApp) -> None:
    assert_envelope(exports(api, token=demo_token(api), organization=""), 400, "missing_organization")


def test_token_is_checked_before_the_organization(api: InProcessApp) -> None:
    assert_envelope(exports(api, token="garbage"), 401, "invalid_token")


def test_organization_of_someone_else_is_403(api: InProcessApp) -> None:
    created = api.admin_json(
        "admin", "org", "create", "--name", unique("Other College"), "--fice", unique_fice(), "--state", "IA"
    )
    error = assert_envelope(
        exports(api, token=demo_token(api), organization=created["uid"]), 403, "organization_forbidden"
    )
    assert created["uid"] in error["message"]


def test_unknown_organization_is_403_like_a_foreign_one(api: InProcessApp) -> None:
    unknown = str(uuid.uuid4())
    error = assert_envelope(
        exports(api, token=demo_token(api), organization=unknown), 403, "organization_forbidden"
    )
    assert unknown in error["message"]


def test_user_in_two_organizations(api: InProcessApp, tmp_path: Path) -> None:
    first = add_organization(api, name=unique("First College"), state_code="NE")
    second = add_organization(api, name=unique("Second College"), state_code="IA")
    user_name = unique("two-orgs") + "@example.edu"
    password = "two organizations!"
    created = api.admin_json(
        "admin",
        "user",
        "create",
        "--user-name",
        user_name,
        "--org",
        first.fice,
        "--org",
        second.uid,
        "--password",
        password,
    )
    expected = [
        {"uid": org.uid, "name": org.name, "fice": org.fice, "stateCode": org.state_code}
        for org in (first, second)
    ]
    assert created["organizations"] == expected
    issued = api.admin_json("admin", "apikey", "create", "--user", user_name)
    account = Account(
        uid=created["uid"],
        user_name=user_name,
        password=password,
        api_key=issued["apiKey"],
        api_key_uid=issued["uid"],
        organization_uids=(first.uid, second.uid),
    )
    response = login(api, account)
    assert response.status_code == 200, response.text
    assert response.json()["user"]["organizations"] == expected

    csv = tmp_path / "second.csv"
    csv.write_text("FIRSTNAME,LASTNAME\nAda,Lovelace\n")
    published = api.admin_json(
        "admin", "export", "publish", "--org", second.uid, "--product", "prospect", str(csv)
    )

    token = response.json()["sessionToken"]
    in_first = exports(api, token=token, organization=first.uid, api_key=account.api_key)
    assert in_first.status_code == 200, in_first.text
    assert in_first.json() == []
    in_second = exports(api, token=token, organization=second.uid, api_key=account.api_key)
    assert in_second.status_code == 200, in_second.text
    assert [(e["uid"], e["organizationUid"], e["fice"]) for e in in_second.json()] == [
        (published["uid"], second.uid, second.fice)
    ]
    assert_envelope(exports(api, token=token, organization=demo_org(api)), 403, "organization_forbidden")


def test_api_key_of_another_user_on_org_scoped_call_is_401(api: InProcessApp) -> None:
    other = add_account(api)
    response = exports(api, token=demo_token(api), organization=demo_org(api), api_key=other.api_key)
    assert_envelope(response, 401, "invalid_api_key")


def test_invalid_api_key_on_org_scoped_call_is_401(api: InProcessApp) -> None:
    response = exports(api, token=demo_token(api), organization=demo_org(api), api_key="nope")
    assert_envelope(response, 401, "invalid_api_key")


def test_api_key_last_used_time_is_recorded(api: InProcessApp) -> None:
    account = add_account(api)
    (before,) = api.admin_json("admin", "apikey", "list", "--user", account.user_name)
    assert before["uid"] == account.api_key_uid
    assert before["lastUsedAt"] is None
    assert before["revokedAt"] is None

    started = datetime.now(UTC)
    assert login(api, account).status_code == 200
    finished = datetime.now(UTC)

    (after,) = api.admin_json("admin", "apikey", "list", "--user", account.user_name)
    last_used = datetime.fromisoformat(after["lastUsedAt"])
    assert started - timedelta(seconds=1) <= last_used <= finished + timedelta(seconds=1)
    assert after["prefix"] == account.api_key[:8]


def test_api_key_on_org_scoped_call_is_checked_and_its_use_recorded(api: InProcessApp) -> None:
    account = add_account(api)
    token = session_token(api, account)
    organization = account.organization_uids[0]
    with api.db() as db:
        db.execute(update(ApiKey).where(ApiKey.uid == account.api_key_uid).values(last_used_at=None))
        db.commit()

    started = datetime.now(UTC)
    response = exports(api, token=token, organization=organization, api_key=account.api_key)
    assert response.status_code == 200, response.text
    finished = datetime.now(UTC)
    (used,) = api.admin_json("admin", "apikey", "list", "--user", account.user_name)
    last_used = datetime.fromisoformat(used["lastUsedAt"])
    assert started - timedelta(seconds=1) <= last_used <= finished + timedelta(seconds=1)

    # The token is checked before the key: a deactivated user's call is invalid_token, whatever the key.
    other = add_account(api)
    api.cli_json("admin", "user", "set-status", other.user_name, "Inactive")
    other_token = issue_token(secret_key=secret(api), user_uid=other.uid, now=datetime.now(UTC), ttl=TTL)
    for key in (other.api_key, account.api_key, "nope"):
        assert_envelope(
            exports(api, token=other_token, organization=other.organization_uids[0], api_key=key),
            401,
            "invalid_token",
        )

    # A revoked key is refused on an org-scoped call, with a valid token of its own user.
    api.cli_json("admin", "apikey", "revoke", account.api_key_uid)
    assert_envelope(
        exports(api, token=token, organization=organization, api_key=account.api_key),
        401,
        "invalid_api_key",
    )
    assert exports(api, token=token, organization=organization).status_code == 200
