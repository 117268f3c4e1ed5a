"""Data Center's operator pages (/datacenter/admin) over plain HTTP against the in-process app: operators
only, organizations, users, API keys and exports, every action in the audit trail, CSRF tokens required.
An export published through the page's form in a real browser is in test_browser."""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from datalab.accounts.models import ApiKey, Membership, Organization, User
from datalab.accounts.security import hash_api_key
from datalab.audit.models import AuditEvent
from datalab.exports.models import Export
from tests.support.accounts import unique, unique_fice
from tests.support.admin import PageOperator, make_page_operator
from tests.support.exports import SAMPLE_HEADER, sample_rows, write_csv
from tests.support.factories import add_export, add_organization
from tests.support.inprocess import InProcessApp
from tests.support.uploads import form_parts, post_parts
from tests.web.pages import (
    SESSION_COOKIE,
    PageClient,
    form_token,
    post_sign_in,
    sign_in,
    signin_next,
    stored_state,
)

CSV = b"ID,FIRSTNAME,LASTNAME\r\n00000001,Ana,O'Brien\r\n00000002,Jos\xc3\xa9,N\xc3\xba\xc3\xb1ez\r\n"
_NEW_KEY = re.compile(r'<code id="new-key">([^<]+)</code>')


@pytest.fixture(scope="module")
def operator(api: InProcessApp) -> PageOperator:
    return make_page_operator(api)


@pytest.fixture(scope="module")
def operator_page(api: InProcessApp, operator: PageOperator) -> Iterator[PageClient]:
    page = sign_in(api, operator.user_name, operator.password)
    yield page
    page.close()


@pytest.fixture(scope="module")
def campus_page(api: InProcessApp) -> Iterator[PageClient]:
    assert api.demo is not None
    page = sign_in(api, api.demo.user_name, api.demo.password)
    yield page
    page.close()


def _organization(api: InProcessApp, uid: str) -> Organization:
    with api.db() as db:
        return db.scalars(select(Organization).where(Organization.uid == uid)).one()


def _actions(api: InProcessApp, actor_uid: str, target_id: str) -> list[tuple[str, str]]:
    with api.db() as db:
        events = db.scalars(
            select(AuditEvent)
            .where(AuditEvent.actor_uid == actor_uid, AuditEvent.target_id == target_id)
            .order_by(AuditEvent.id)
        )
        return [(event.action, event.channel) for event in events]


def _create_organization(page: PageClient, name: str, fice: str) -> str:
    created = page.post("/datacenter/admin/organizations", {"name": name, "fice": fice, "stateCode": "ks"})
    assert created.status_code == 303, created.text
    location: str = created.headers["location"]
    assert location.startswith("/datacenter/admin/organizations/")
    return location.rsplit("/", 1)[-1]


def _add_user(page: PageClient, organization_uid: str, role: str = "member") -> tuple[str, str]:
    user_name, password = unique("staff") + "@example.edu", secrets.token_urlsafe(12)
    added = page.post(
        f"/datacenter/admin/organizations/{organization_uid}/users",
        {"userName": user_name, "password": password, "firstName": "Ada", "lastName": "Byron", "role": role},
    )
    assert added.status_code == 303, added.text
    assert added.headers["location"] == f"/datacenter/admin/organizations/{organization_uid}"
    return user_name, password


def _user(api: InProcessApp, user_name: str) -> User:
    with api.db() as db:
        return db.scalars(select(User).where(User.user_name == user_name)).one()


def test_an_operator_of_no_organization_signs_in_to_the_operator_pages(api: InProcessApp) -> None:
    user_name, password = unique("operator") + "@example.org", secrets.token_urlsafe(12)
    api.admin_json("admin", "user", "create", "--user-name", user_name, "--password", password, "--operator")
    page = PageClient(api)
    try:
        signed_in = post_sign_in(page, user_name, password)
        assert signed_in.status_code == 303, signed_in.text
        assert signed_in.headers["location"] == "/datacenter/admin"
        page.cookie = signed_in.cookies[SESSION_COOKIE]
        overview = page.get("/datacenter/admin")
        assert overview.status_code == 200, overview.text
        page.csrf = form_token(overview.text)
        assert _create_organization(page, "College of No Members", unique_fice())
        refused = page.get("/datacenter/exports")
        assert refused.status_code == 403, refused.text
        assert "This account belongs to no active organization." in refused.text
    finally:
        page.close()
    # Without the operator role, an account of no organization is refused at sign-in, as before.
    api.admin_json("admin", "user", "set-operator", user_name, "--off")
    page = PageClient(api)
    try:
        assert post_sign_in(page, user_name, password).status_code == 403
    finally:
        page.close()


def test_signed_out_browsers_are_sent_to_sign_in(api: InProcessApp) -> None:
    page = PageClient(api)
    try:
        assert signin_next(page.get("/datacenter/admin")) == "/datacenter/admin"
        organization = api.demo.organization_uid if api.demo else ""
        path = f"/datacenter/admin/organizations/{organization}"
        assert signin_next(page.get(path)) == path
        posted = page.post("/datacenter/admin/organizations", {"name": "X", "fice": unique_fice()})
        assert signin_next(posted) == "/datacenter/exports"
    finally:
        page.close()


def test_campus_users_get_the_403_page_and_no_link(api: InProcessApp, campus_page: PageClient) -> None:
    assert api.demo is not None
    before = stored_state(api)
    with api.db() as db:
        organizations = db.scalar(select(func.count()).select_from(Organization))
    for path in ("/datacenter/admin", f"/datacenter/admin/organizations/{api.demo.organization_uid}"):
        refused = campus_page.get(path)
        assert refused.status_code == 403, refused.text
        assert refused.headers["content-type"].startswith("text/html")
        assert "Not allowed" in refused.text
        assert "Only operators can open the operator pages." in refused.text
    posted = campus_page.post("/datacenter/admin/organizations", {"name": "Sneaky", "fice": unique_fice()})
    assert posted.status_code == 403, posted.text
    deactivate = campus_page.post(f"/datacenter/admin/organizations/{api.demo.organization_uid}/deactivate")
    assert deactivate.status_code == 403, deactivate.text
    with api.db() as db:
        assert db.scalar(select(func.count()).select_from(Organization)) == organizations
    assert stored_state(api) == before
    exports = campus_page.get("/datacenter/exports")
    assert exports.status_code == 200
    assert 'href="/datacenter/admin"' not in exports.text


def test_operators_see_the_link_and_the_organizations(api: InProcessApp, operator_page: PageClient) -> None:
    assert api.demo is not None
    exports = operator_page.get("/datacenter/exports")
    assert 'href="/datacenter/admin"' in exports.text
    overview = operator_page.get("/datacenter/admin")
    assert overview.status_code == 200, overview.text
    assert f'href="/datacenter/admin/organizations/{api.demo.organization_uid}"' in overview.text
    assert 'aria-current="page">Operators</a>' in overview.text


def test_the_organizations_are_paged_and_unknown_ones_get_the_404_page(
    api: InProcessApp, operator_page: PageClient
) -> None:
    assert api.demo is not None
    _create_organization(operator_page, unique("Paged College"), unique_fice())
    first = operator_page.get("/datacenter/admin")
    counted = re.search(r"<caption>(\d+) organizations?</caption>", first.text)
    assert counted is not None, first.text
    total = int(counted.group(1))
    second = operator_page.get("/datacenter/admin?offset=1")
    assert second.status_code == 200, second.text
    assert f"<caption>{total} organization" in second.text
    assert 'href="/datacenter/admin?offset=0">Previous</a>' in second.text
    past_the_end = operator_page.get(f"/datacenter/admin?offset={total}")
    assert f'href="/datacenter/admin?offset={max(total - 50, 0)}">Previous</a>' in past_the_end.text
    # The demo's organization is the oldest: on the first page only.
    demo_link = f'href="/datacenter/admin/organizations/{api.demo.organization_uid}"'
    assert demo_link in first.text and demo_link not in second.text
    missing = operator_page.get("/datacenter/admin/organizations/no-such-organization")
    assert missing.status_code == 404, missing.text
    assert "Not found" in missing.text
    export = operator_page.get(f"/datacenter/admin/organizations/{api.demo.organization_uid}/exports/nope")
    assert export.status_code == 404, export.text


def test_an_operator_creates_deactivates_and_reactivates_an_organization(
    api: InProcessApp, operator: PageOperator, operator_page: PageClient
) -> None:
    name, fice = unique("Page College"), unique_fice()
    uid = _create_organization(operator_page, name, fice)
    stored = _organization(api, uid)
    assert (stored.name, stored.fice, stored.state_code, stored.deactivated_at) == (name, fice, "KS", None)
    shown = operator_page.get(f"/datacenter/admin/organizations/{uid}")
    assert shown.status_code == 200, shown.text
    assert name in shown.text and fice in shown.text

    deactivated = operator_page.post(f"/datacenter/admin/organizations/{uid}/deactivate")
    assert deactivated.status_code == 303, deactivated.text
    assert _organization(api, uid).deactivated_at is not None
    listed = operator_page.get("/datacenter/admin?offset=0")
    row = listed.text.split(f'/datacenter/admin/organizations/{uid}"', 1)[1].split("</tr>", 1)[0]
    assert "deactivated" in row and f"Reactivate {name}" in row

    reactivated = operator_page.post(f"/datacenter/admin/organizations/{uid}/reactivate")
    assert reactivated.status_code == 303, reactivated.text
    assert _organization(api, uid).deactivated_at is None
    assert _actions(api, operator.uid, uid) == [
        ("organization.created", "DataCenter"),
        ("organization.deactivated", "DataCenter"),
        ("organization.reactivated", "DataCenter"),
    ]


def test_a_duplicate_fice_gets_the_error_page(api: InProcessApp, operator_page: PageClient) -> None:
    fice = unique_fice()
    _create_organization(operator_page, unique("First"), fice)
    again = operator_page.post("/datacenter/admin/organizations", {"name": unique("Second"), "fice": fice})
    assert again.status_code == 400, again.text
    assert f"an organization with FICE {fice} already exists" in again.text
    with api.db() as db:
        assert db.scalar(select(func.count()).where(Organization.fice == fice)) == 1


def test_an_operator_adds_a_user_who_signs_in_and_changes_their_status(
    api: InProcessApp, operator: PageOperator, operator_page: PageClient
) -> None:
    organization_uid = _create_organization(operator_page, unique("Users College"), unique_fice())
    user_name, password = _add_user(operator_page, organization_uid, role="admin")
    user = _user(api, user_name)
    with api.db() as db:
        membership = db.scalars(select(Membership).where(Membership.user_id == user.id)).one()
        assert membership.organization.uid == organization_uid
        assert membership.role == "admin"
    assert (user.first_name, user.last_name, user.status, user.is_operator) == (
        "Ada",
        "Byron",
        "Active",
        False,
    )
    shown = operator_page.get(f"/datacenter/admin/organizations/{organization_uid}")
    assert user_name in shown.text and "Ada Byron" in shown.text

    member = sign_in(api, user_name, password)
    try:
        deactivated = operator_page.post(
            f"/datacenter/admin/organizations/{organization_uid}/users/{user.uid}/status",
            {"status": "Inactive"},
        )
        assert deactivated.status_code == 303, deactivated.text
        assert _user(api, user_name).status == "Inactive"
        assert signin_next(member.get("/datacenter/exports")) == "/datacenter/exports"
    finally:
        member.close()
    reactivated = operator_page.post(
        f"/datacenter/admin/organizations/{organization_uid}/users/{user.uid}/status", {"status": "Active"}
    )
    assert reactivated.status_code == 303, reactivated.text
    assert _user(api, user_name).status == "Active"
    assert _actions(api, operator.uid, user.uid) == [
        ("user.created", "DataCenter"),
        ("user.status_changed", "DataCenter"),
        ("user.status_changed", "DataCenter"),
    ]


def test_a_bad_password_or_status_changes_nothing(api: InProcessApp, operator_page: PageClient) -> None:
    organization_uid = _create_organization(operator_page, unique("Strict College"), unique_fice())
    user_name = unique("short") + "@example.edu"
    refused = operator_page.post(
        f"/datacenter/admin/organizations/{organization_uid}/users",
        {"userName": user_name, "password": "short", "role": "member"},
    )
    assert refused.status_code == 400, refused.text
    assert "passwords must be at least 8 characters" in refused.text
    with api.db() as db:
        assert db.scalar(select(func.count()).where(User.user_name == user_name)) == 0
    added, _password = _add_user(operator_page, organization_uid)
    uid = _user(api, added).uid
    bad_status = operator_page.post(
        f"/datacenter/admin/organizations/{organization_uid}/users/{uid}/status", {"status": "Gone"}
    )
    assert bad_status.status_code == 400, bad_status.text
    assert _user(api, added).status == "Active"


def test_an_unknown_role_is_refused_and_adds_no_user(api: InProcessApp, operator_page: PageClient) -> None:
    organization_uid = _create_organization(operator_page, unique("Roles College"), unique_fice())
    user_name = unique("owner") + "@example.edu"
    refused = operator_page.post(
        f"/datacenter/admin/organizations/{organization_uid}/users",
        {"userName": user_name, "password": secrets.token_urlsafe(12), "role": "owner"},
    )
    assert refused.status_code == 400, refused.text
    assert "role must be one of member, admin" in refused.text
    with api.db() as db:
        assert db.scalar(select(func.count()).where(User.user_name == user_name)) == 0


def test_user_and_key_actions_reach_only_members_of_the_organization_in_the_address(
    api: InProcessApp, operator_page: PageClient
) -> None:
    home_uid = _create_organization(operator_page, unique("Home College"), unique_fice())
    other_uid = _create_organization(operator_page, unique("Other College"), unique_fice())
    user_name, _password = _add_user(operator_page, home_uid)
    user = _user(api, user_name)
    created = operator_page.post(
        f"/datacenter/admin/organizations/{home_uid}/users/{user.uid}/api-keys", {"name": "CRM"}
    )
    assert created.status_code == 200, created.text
    with api.db() as db:
        key_uid = db.scalars(select(ApiKey.uid).where(ApiKey.user_id == user.id)).one()

    elsewhere = f"/datacenter/admin/organizations/{other_uid}"
    status = operator_page.post(f"{elsewhere}/users/{user.uid}/status", {"status": "Inactive"})
    new_key = operator_page.post(f"{elsewhere}/users/{user.uid}/api-keys", {"name": "stray"})
    revoke = operator_page.post(f"{elsewhere}/api-keys/{key_uid}/revoke")
    for answer in (status, new_key, revoke):
        assert answer.status_code == 404, answer.text
    assert _user(api, user_name).status == "Active"
    with api.db() as db:
        keys = db.execute(select(ApiKey.name, ApiKey.revoked_at).where(ApiKey.user_id == user.id)).all()
    assert [tuple(key) for key in keys] == [("CRM", None)]


def _memberships(api: InProcessApp, user_name: str) -> dict[str, str]:
    """The organizations (by uid) the user belongs to, with their role in each."""
    with api.db() as db:
        rows = db.execute(
            select(Organization.uid, Membership.role)
            .join(Membership, Membership.organization_id == Organization.id)
            .join(User, User.id == Membership.user_id)
            .where(User.user_name == user_name)
        ).all()
    return {row.uid: row.role for row in rows}


def test_an_operator_adds_an_existing_user_changes_their_role_and_removes_them(
    api: InProcessApp, operator: PageOperator, operator_page: PageClient
) -> None:
    home_uid = _create_organization(operator_page, unique("First College"), unique_fice())
    second_uid = _create_organization(operator_page, unique("Second College"), unique_fice())
    user_name, password = _add_user(operator_page, home_uid)
    user = _user(api, user_name)
    second = f"/datacenter/admin/organizations/{second_uid}"

    added = operator_page.post(f"{second}/members", {"user": user_name, "role": "member"})
    assert added.status_code == 303 and added.headers["location"] == second
    assert _memberships(api, user_name) == {home_uid: "member", second_uid: "member"}
    assert user_name in operator_page.get(second).text
    promoted = operator_page.post(f"{second}/members", {"user": user.uid, "role": "admin"})
    assert promoted.status_code == 303
    assert _memberships(api, user_name) == {home_uid: "member", second_uid: "admin"}

    member = sign_in(api, user_name, password)
    try:
        assert member.get("/datacenter/exports").status_code == 200
        removed = operator_page.post(f"{second}/users/{user.uid}/remove")
        assert removed.status_code == 303 and removed.headers["location"] == second
        assert _memberships(api, user_name) == {home_uid: "member"}
        assert user_name not in operator_page.get(second).text
        again = operator_page.post(f"{second}/users/{user.uid}/remove")
        assert again.status_code == 404, again.text
    finally:
        member.close()
    assert _actions(api, operator.uid, user.uid) == [
        ("user.created", "DataCenter"),
        ("membership.added", "DataCenter"),
        ("membership.role_changed", "DataCenter"),
        ("membership.removed", "DataCenter"),
    ]


def test_adding_an_unknown_user_or_role_changes_nothing(api: InProcessApp, operator_page: PageClient) -> None:
    organization_uid = _create_organization(operator_page, unique("Careful College"), unique_fice())
    user_name, _password = _add_user(operator_page, organization_uid)
    other_uid = _create_organization(operator_page, unique("Elsewhere College"), unique_fice())
    path = f"/datacenter/admin/organizations/{other_uid}/members"
    unknown = operator_page.post(path, {"user": unique("nobody"), "role": "member"})
    assert unknown.status_code == 404, unknown.text
    bad_role = operator_page.post(path, {"user": user_name, "role": "owner"})
    assert bad_role.status_code == 400, bad_role.text
    assert "role must be one of member, admin" in bad_role.text
    assert _memberships(api, user_name) == {organization_uid: "member"}


def test_an_operator_grants_and_revokes_the_operator_role_of_a_member(
    api: InProcessApp, operator: PageOperator, operator_page: PageClient
) -> None:
    organization_uid = _create_organization(operator_page, unique("Trusted College"), unique_fice())
    user_name, password = _add_user(operator_page, organization_uid)
    user = _user(api, user_name)
    path = f"/datacenter/admin/organizations/{organization_uid}/users/{user.uid}/operator"

    granted = operator_page.post(path, {"operator": "grant"})
    assert granted.status_code == 303, granted.text
    assert _user(api, user_name).is_operator
    promoted = sign_in(api, user_name, password)
    try:
        assert promoted.get("/datacenter/admin").status_code == 200
        revoked = operator_page.post(path, {"operator": "revoke"})
        assert revoked.status_code == 303, revoked.text
        assert not _user(api, user_name).is_operator
        # revoking the role ends the user's sessions at once
        assert signin_next(promoted.get("/datacenter/admin")) == "/datacenter/admin"
    finally:
        promoted.close()
    refused = operator_page.post(path, {"operator": "maybe"})
    assert refused.status_code == 400, refused.text
    assert "The operator role is granted or revoked, not &#39;maybe&#39;" in refused.text
    assert not _user(api, user_name).is_operator
    assert _actions(api, operator.uid, user.uid)[-2:] == [
        ("user.operator_granted", "DataCenter"),
        ("user.operator_revoked", "DataCenter"),
    ]


def test_membership_and_operator_actions_reach_only_members_of_the_organization_in_the_address(
    api: InProcessApp, operator_page: PageClient
) -> None:
    home_uid = _create_organization(operator_page, unique("Own College"), unique_fice())
    other_uid = _create_organization(operator_page, unique("Foreign College"), unique_fice())
    user_name, _password = _add_user(operator_page, home_uid)
    user = _user(api, user_name)
    elsewhere = f"/datacenter/admin/organizations/{other_uid}/users/{user.uid}"
    for answer in (
        operator_page.post(f"{elsewhere}/remove"),
        operator_page.post(f"{elsewhere}/operator", {"operator": "grant"}),
    ):
        assert answer.status_code == 404, answer.text
    assert _memberships(api, user_name) == {home_uid: "member"}
    assert not _user(api, user_name).is_operator


def test_an_operator_creates_a_key_shown_once_and_revokes_it(
    api: InProcessApp, operator: PageOperator, operator_page: PageClient
) -> None:
    organization_uid = _create_organization(operator_page, unique("Keys College"), unique_fice())
    user_name, _password = _add_user(operator_page, organization_uid)
    user = _user(api, user_name)
    created = operator_page.post(
        f"/datacenter/admin/organizations/{organization_uid}/users/{user.uid}/api-keys", {"name": "CRM sync"}
    )
    assert created.status_code == 200, created.text
    assert created.headers["cache-control"] == "no-store"
    found = _NEW_KEY.search(created.text)
    assert found is not None, created.text
    plain_key = found.group(1)
    with api.db() as db:
        key = db.scalars(select(ApiKey).where(ApiKey.user_id == user.id)).one()
        assert key.key_hash == hash_api_key(plain_key)
        assert (key.name, key.revoked_at) == ("CRM sync", None)
        key_uid = key.uid
    again = operator_page.get(f"/datacenter/admin/organizations/{organization_uid}")
    assert plain_key not in again.text
    assert f"{plain_key[:8]}…" in again.text

    revoked = operator_page.post(
        f"/datacenter/admin/organizations/{organization_uid}/api-keys/{key_uid}/revoke"
    )
    assert revoked.status_code == 303, revoked.text
    with api.db() as db:
        assert db.scalars(select(ApiKey.revoked_at).where(ApiKey.uid == key_uid)).one() is not None
    listed = operator_page.get(f"/datacenter/admin/organizations/{organization_uid}")
    assert f"/api-keys/{key_uid}/revoke" not in listed.text
    assert _actions(api, operator.uid, key_uid) == [
        ("apikey.created", "DataCenter"),
        ("apikey.revoked", "DataCenter"),
    ]
    unknown = operator_page.post(f"/datacenter/admin/organizations/{organization_uid}/api-keys/nope/revoke")
    assert unknown.status_code == 404, unknown.text


def test_an_operator_withdraws_an_export(
    api: InProcessApp, operator: PageOperator, operator_page: PageClient, tmp_path: Path
) -> None:
    organization = add_organization(api, name=unique("Withdraw College"))
    source = write_csv(tmp_path / "list.csv", SAMPLE_HEADER, sample_rows(3))
    uid = add_export(api, source, product="prospect", organization_uid=organization.uid)
    path = f"/datacenter/admin/organizations/{organization.uid}"
    listed = operator_page.get(path)
    assert f'{path}/exports/{uid}"' in listed.text
    assert f"{path}/exports/{uid}/withdraw" in listed.text

    withdrawn = operator_page.post(f"{path}/exports/{uid}/withdraw")
    assert withdrawn.status_code == 303, withdrawn.text
    assert withdrawn.headers["location"] == path
    with api.db() as db:
        assert db.scalars(select(Export.withdrawn_at).where(Export.uid == uid)).one() is not None
    after = operator_page.get(path)
    assert f"{path}/exports/{uid}/withdraw" not in after.text
    shown = operator_page.get(f"{path}/exports/{uid}")
    assert shown.status_code == 200, shown.text
    assert '<dd id="export-state">withdrawn</dd>' in shown.text
    assert _actions(api, operator.uid, uid) == [("export.withdrawn", "DataCenter")]
    twice = operator_page.post(f"{path}/exports/{uid}/withdraw")
    assert twice.status_code == 409, twice.text


def test_the_publish_form_gives_a_presigned_form_and_the_export_page_shows_it_published(
    api: InProcessApp, operator: PageOperator, operator_page: PageClient
) -> None:
    organization = add_organization(api, name=unique("Publish College"))
    path = f"/datacenter/admin/organizations/{organization.uid}"
    created = operator_page.post(
        f"{path}/exports", {"productKey": "prospect", "orderName": "Fall Search", "fileName": "list.csv"}
    )
    assert created.status_code == 200, created.text
    body: dict[str, Any] = created.json()
    assert body["url"] == api.root + "/datalab-exports"
    assert body["next"] == f"{path}/exports/{body['id']}"
    awaiting = operator_page.get(body["next"])
    assert '<dd id="export-state">awaiting file</dd>' in awaiting.text

    posted = post_parts(api.client, body["url"], form_parts(body["fields"], CSV, filename="list.csv"))
    assert posted.status_code == 204, posted.text
    shown = operator_page.get(body["next"])
    assert shown.status_code == 200, shown.text
    assert '<dd id="export-state">published</dd>' in shown.text
    assert "<dt>Records</dt><dd>2</dd>" in shown.text
    assert _actions(api, operator.uid, body["id"])[0] == ("export.form_created", "DataCenter")

    unknown = operator_page.post(f"{path}/exports", {"productKey": "nonsense", "fileName": "x.csv"})
    assert unknown.status_code == 400, unknown.text
    assert "productKey must be one of" in unknown.json()["message"]


def test_forms_without_the_session_token_are_refused(api: InProcessApp, operator_page: PageClient) -> None:
    organization_uid = _create_organization(operator_page, unique("Csrf College"), unique_fice())
    user_name, _password = _add_user(operator_page, organization_uid)
    user_uid = _user(api, user_name).uid
    path = f"/datacenter/admin/organizations/{organization_uid}"
    before = stored_state(api)
    with api.db() as db:
        users = db.scalar(select(func.count()).select_from(User))
        organizations = db.scalar(select(func.count()).select_from(Organization))
    attempts: list[tuple[str, dict[str, str]]] = [
        ("/datacenter/admin/organizations", {"name": "Forged", "fice": unique_fice()}),
        (f"{path}/deactivate", {}),
        (f"{path}/users", {"userName": unique("forged"), "password": "long enough password"}),
        (f"{path}/users/{user_uid}/status", {"status": "Inactive"}),
        (f"{path}/users/{user_uid}/api-keys", {"name": "forged"}),
        (f"{path}/members", {"user": user_uid, "role": "admin"}),
        (f"{path}/users/{user_uid}/operator", {"operator": "grant"}),
        (f"{path}/users/{user_uid}/remove", {}),
        (f"{path}/exports", {"productKey": "prospect", "fileName": "x.csv"}),
    ]
    for action, data in attempts:
        for refused in (
            operator_page.post(action, data, csrf="not-the-token"),
            operator_page.post(action, data, with_csrf=False),
        ):
            assert refused.status_code == 403, (action, refused.text)
            assert "reload the page" in refused.text
    assert stored_state(api) == before
    with api.db() as db:
        assert db.scalar(select(func.count()).select_from(User)) == users
        assert db.scalar(select(func.count()).select_from(Organization)) == organizations
    assert _organization(api, organization_uid).deactivated_at is None
    assert _user(api, user_name).status == "Active"
    assert not _user(api, user_name).is_operator
    assert _memberships(api, user_name) == {organization_uid: "member"}
