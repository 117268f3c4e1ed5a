"""Data Center's operator pages (/datacenter/admin) against a live server: over plain HTTP, operators only,
organizations, users, API keys and exports, every action in the audit trail, CSRF tokens required; in a
real browser (headless Chromium through Playwright), an export published through the page's form."""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx2
import pytest
from playwright.sync_api import Browser, FilePayload, Page, expect
from sqlalchemy import func, select

from datalab.accounts.models import ApiKey, Membership, Organization, User
from datalab.accounts.security import hash_api_key
from datalab.audit.models import AuditEvent
from datalab.exports.models import Export
from tests.support.accounts import unique, unique_fice
from tests.support.exports import SAMPLE_HEADER, sample_rows, write_csv
from tests.support.factories import add_account, add_export, add_organization
from tests.support.server import LiveServer
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
from tests.web.test_browser import VIEWPORT

ServerFactory = Callable[..., LiveServer]
CSV = b"ID,FIRSTNAME,LASTNAME\r\n00000001,Ana,O'Brien\r\n00000002,Jos\xc3\xa9,N\xc3\xba\xc3\xb1ez\r\n"
_NEW_KEY = re.compile(r'<code id="new-key">([^<]+)</code>')


@dataclass(frozen=True)
class Operator:
    uid: str
    user_name: str
    password: str


@pytest.fixture(scope="module")
def server(make_server: ServerFactory) -> LiveServer:
    return make_server()


@pytest.fixture(scope="module")
def operator(server: LiveServer) -> Operator:
    """An operator made on the command line; a member of the demo organization, to sign in to Data Center."""
    assert server.demo is not None
    user_name, password = unique("operator") + "@example.org", secrets.token_urlsafe(12)
    created = server.admin_json(
        "admin",
        "user",
        "create",
        "--user-name",
        user_name,
        "--password",
        password,
        "--operator",
        "--org",
        server.demo.organization_uid,
    )
    assert created["operator"] is True
    return Operator(created["uid"], user_name, password)


@pytest.fixture(scope="module")
def operator_page(server: LiveServer, operator: Operator) -> Iterator[PageClient]:
    page = sign_in(server, operator.user_name, operator.password)
    yield page
    page.close()


@pytest.fixture(scope="module")
def campus_page(server: LiveServer) -> Iterator[PageClient]:
    assert server.demo is not None
    page = sign_in(server, server.demo.user_name, server.demo.password)
    yield page
    page.close()


def _organization(server: LiveServer, uid: str) -> Organization:
    with server.db() as db:
        return db.scalars(select(Organization).where(Organization.uid == uid)).one()


def _actions(server: LiveServer, actor_uid: str, target_id: str) -> list[tuple[str, str]]:
    with server.db() as db:
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


def _user(server: LiveServer, user_name: str) -> User:
    with server.db() as db:
        return db.scalars(select(User).where(User.user_name == user_name)).one()


def test_an_operator_of_no_organization_signs_in_to_the_operator_pages(server: LiveServer) -> None:
    user_name, password = unique("operator") + "@example.org", secrets.token_urlsafe(12)
    server.admin_json(
        "admin", "user", "create", "--user-name", user_name, "--password", password, "--operator"
    )
    page = PageClient(server)
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
    server.admin_json("admin", "user", "set-operator", user_name, "--off")
    page = PageClient(server)
    try:
        assert post_sign_in(page, user_name, password).status_code == 403
    finally:
        page.close()


def test_signed_out_browsers_are_sent_to_sign_in(server: LiveServer) -> None:
    page = PageClient(server)
    try:
        assert signin_next(page.get("/datacenter/admin")) == "/datacenter/admin"
        organization = server.demo.organization_uid if server.demo else ""
        path = f"/datacenter/admin/organizations/{organization}"
        assert signin_next(page.get(path)) == path
        posted = page.post("/datacenter/admin/organizations", {"name": "X", "fice": unique_fice()})
        assert signin_next(posted) == "/datacenter/exports"
    finally:
        page.close()


def test_campus_users_get_the_403_page_and_no_link(server: LiveServer, campus_page: PageClient) -> None:
    assert server.demo is not None
    before = stored_state(server)
    with server.db() as db:
        organizations = db.scalar(select(func.count()).select_from(Organization))
    for path in ("/datacenter/admin", f"/datacenter/admin/organizations/{server.demo.organization_uid}"):
        refused = campus_page.get(path)
        assert refused.status_code == 403, refused.text
        assert refused.headers["content-type"].startswith("text/html")
        assert "Not allowed" in refused.text
        assert "Only operators can open the operator pages." in refused.text
    posted = campus_page.post("/datacenter/admin/organizations", {"name": "Sneaky", "fice": unique_fice()})
    assert posted.status_code == 403, posted.text
    deactivate = campus_page.post(
        f"/datacenter/admin/organizations/{server.demo.organization_uid}/deactivate"
    )
    assert deactivate.status_code == 403, deactivate.text
    with server.db() as db:
        assert db.scalar(select(func.count()).select_from(Organization)) == organizations
    assert stored_state(server) == before
    exports = campus_page.get("/datacenter/exports")
    assert exports.status_code == 200
    assert 'href="/datacenter/admin"' not in exports.text


def test_operators_see_the_link_and_the_organizations(server: LiveServer, operator_page: PageClient) -> None:
    assert server.demo is not None
    exports = operator_page.get("/datacenter/exports")
    assert 'href="/datacenter/admin"' in exports.text
    overview = operator_page.get("/datacenter/admin")
    assert overview.status_code == 200, overview.text
    assert f'href="/datacenter/admin/organizations/{server.demo.organization_uid}"' in overview.text
    assert 'aria-current="page">Operators</a>' in overview.text


def test_the_organizations_are_paged_and_unknown_ones_get_the_404_page(
    server: LiveServer, operator_page: PageClient
) -> None:
    assert server.demo is not None
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
    demo_link = f'href="/datacenter/admin/organizations/{server.demo.organization_uid}"'
    assert demo_link in first.text and demo_link not in second.text
    missing = operator_page.get("/datacenter/admin/organizations/no-such-organization")
    assert missing.status_code == 404, missing.text
    assert "Not found" in missing.text
    export = operator_page.get(f"/datacenter/admin/organizations/{server.demo.organization_uid}/exports/nope")
    assert export.status_code == 404, export.text


def test_an_operator_creates_deactivates_and_reactivates_an_organization(
    server: LiveServer, operator: Operator, operator_page: PageClient
) -> None:
    name, fice = unique("Page College"), unique_fice()
    uid = _create_organization(operator_page, name, fice)
    stored = _organization(server, uid)
    assert (stored.name, stored.fice, stored.state_code, stored.deactivated_at) == (name, fice, "KS", None)
    shown = operator_page.get(f"/datacenter/admin/organizations/{uid}")
    assert shown.status_code == 200, shown.text
    assert name in shown.text and fice in shown.text

    deactivated = operator_page.post(f"/datacenter/admin/organizations/{uid}/deactivate")
    assert deactivated.status_code == 303, deactivated.text
    assert _organization(server, uid).deactivated_at is not None
    listed = operator_page.get("/datacenter/admin?offset=0")
    row = listed.text.split(f'/datacenter/admin/organizations/{uid}"', 1)[1].split("</tr>", 1)[0]
    assert "deactivated" in row and f"Reactivate {name}" in row

    reactivated = operator_page.post(f"/datacenter/admin/organizations/{uid}/reactivate")
    assert reactivated.status_code == 303, reactivated.text
    assert _organization(server, uid).deactivated_at is None
    assert _actions(server, operator.uid, uid) == [
        ("organization.created", "DataCenter"),
        ("organization.deactivated", "DataCenter"),
        ("organization.reactivated", "DataCenter"),
    ]


def test_a_duplicate_fice_gets_the_error_page(server: LiveServer, operator_page: PageClient) -> None:
    fice = unique_fice()
    _create_organization(operator_page, unique("First"), fice)
    again = operator_page.post("/datacenter/admin/organizations", {"name": unique("Second"), "fice": fice})
    assert again.status_code == 400, again.text
    assert f"an organization with FICE {fice} already exists" in again.text
    with server.db() as db:
        assert db.scalar(select(func.count()).where(Organization.fice == fice)) == 1


def test_an_operator_adds_a_user_who_signs_in_and_changes_their_status(
    server: LiveServer, operator: Operator, operator_page: PageClient
) -> None:
    organization_uid = _create_organization(operator_page, unique("Users College"), unique_fice())
    user_name, password = _add_user(operator_page, organization_uid, role="admin")
    user = _user(server, user_name)
    with server.db() as db:
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

    member = sign_in(server, user_name, password)
    try:
        deactivated = operator_page.post(
            f"/datacenter/admin/organizations/{organization_uid}/users/{user.uid}/status",
            {"status": "Inactive"},
        )
        assert deactivated.status_code == 303, deactivated.text
        assert _user(server, user_name).status == "Inactive"
        assert signin_next(member.get("/datacenter/exports")) == "/datacenter/exports"
    finally:
        member.close()
    reactivated = operator_page.post(
        f"/datacenter/admin/organizations/{organization_uid}/users/{user.uid}/status", {"status": "Active"}
    )
    assert reactivated.status_code == 303, reactivated.text
    assert _user(server, user_name).status == "Active"
    assert _actions(server, operator.uid, user.uid) == [
        ("user.created", "DataCenter"),
        ("user.status_changed", "DataCenter"),
        ("user.status_changed", "DataCenter"),
    ]


def test_a_bad_password_or_status_changes_nothing(server: LiveServer, operator_page: PageClient) -> None:
    organization_uid = _create_organization(operator_page, unique("Strict College"), unique_fice())
    user_name = unique("short") + "@example.edu"
    refused = operator_page.post(
        f"/datacenter/admin/organizations/{organization_uid}/users",
        {"userName": user_name, "password": "short", "role": "member"},
    )
    assert refused.status_code == 400, refused.text
    assert "passwords must be at least 8 characters" in refused.text
    with server.db() as db:
        assert db.scalar(select(func.count()).where(User.user_name == user_name)) == 0
    added, _password = _add_user(operator_page, organization_uid)
    uid = _user(server, added).uid
    bad_status = operator_page.post(
        f"/datacenter/admin/organizations/{organization_uid}/users/{uid}/status", {"status": "Gone"}
    )
    assert bad_status.status_code == 400, bad_status.text
    assert _user(server, added).status == "Active"


def test_an_unknown_role_is_refused_and_adds_no_user(server: LiveServer, operator_page: PageClient) -> None:
    organization_uid = _create_organization(operator_page, unique("Roles College"), unique_fice())
    user_name = unique("owner") + "@example.edu"
    refused = operator_page.post(
        f"/datacenter/admin/organizations/{organization_uid}/users",
        {"userName": user_name, "password": secrets.token_urlsafe(12), "role": "owner"},
    )
    assert refused.status_code == 400, refused.text
    assert "role must be one of member, admin" in refused.text
    with server.db() as db:
        assert db.scalar(select(func.count()).where(User.user_name == user_name)) == 0


def test_user_and_key_actions_reach_only_members_of_the_organization_in_the_address(
    server: LiveServer, operator_page: PageClient
) -> None:
    home_uid = _create_organization(operator_page, unique("Home College"), unique_fice())
    other_uid = _create_organization(operator_page, unique("Other College"), unique_fice())
    user_name, _password = _add_user(operator_page, home_uid)
    user = _user(server, user_name)
    created = operator_page.post(
        f"/datacenter/admin/organizations/{home_uid}/users/{user.uid}/api-keys", {"name": "CRM"}
    )
    assert created.status_code == 200, created.text
    with server.db() as db:
        key_uid = db.scalars(select(ApiKey.uid).where(ApiKey.user_id == user.id)).one()

    elsewhere = f"/datacenter/admin/organizations/{other_uid}"
    status = operator_page.post(f"{elsewhere}/users/{user.uid}/status", {"status": "Inactive"})
    new_key = operator_page.post(f"{elsewhere}/users/{user.uid}/api-keys", {"name": "stray"})
    revoke = operator_page.post(f"{elsewhere}/api-keys/{key_uid}/revoke")
    for answer in (status, new_key, revoke):
        assert answer.status_code == 404, answer.text
    assert _user(server, user_name).status == "Active"
    with server.db() as db:
        keys = db.execute(select(ApiKey.name, ApiKey.revoked_at).where(ApiKey.user_id == user.id)).all()
    assert [tuple(key) for key in keys] == [("CRM", None)]


def test_an_operator_creates_a_key_shown_once_and_revokes_it(
    server: LiveServer, operator: Operator, operator_page: PageClient
) -> None:
    organization_uid = _create_organization(operator_page, unique("Keys College"), unique_fice())
    user_name, _password = _add_user(operator_page, organization_uid)
    user = _user(server, user_name)
    created = operator_page.post(
        f"/datacenter/admin/organizations/{organization_uid}/users/{user.uid}/api-keys", {"name": "CRM sync"}
    )
    assert created.status_code == 200, created.text
    assert created.headers["cache-control"] == "no-store"
    found = _NEW_KEY.search(created.text)
    assert found is not None, created.text
    plain_key = found.group(1)
    with server.db() as db:
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
    with server.db() as db:
        assert db.scalars(select(ApiKey.revoked_at).where(ApiKey.uid == key_uid)).one() is not None
    listed = operator_page.get(f"/datacenter/admin/organizations/{organization_uid}")
    assert f"/api-keys/{key_uid}/revoke" not in listed.text
    assert _actions(server, operator.uid, key_uid) == [
        ("apikey.created", "DataCenter"),
        ("apikey.revoked", "DataCenter"),
    ]
    unknown = operator_page.post(f"/datacenter/admin/organizations/{organization_uid}/api-keys/nope/revoke")
    assert unknown.status_code == 404, unknown.text


def test_an_operator_withdraws_an_export(
    server: LiveServer, operator: Operator, operator_page: PageClient, tmp_path: Path
) -> None:
    organization = add_organization(server, name=unique("Withdraw College"))
    source = write_csv(tmp_path / "list.csv", SAMPLE_HEADER, sample_rows(3))
    uid = add_export(server, source, product="prospect", organization_uid=organization.uid)
    path = f"/datacenter/admin/organizations/{organization.uid}"
    listed = operator_page.get(path)
    assert f'{path}/exports/{uid}"' in listed.text
    assert f"{path}/exports/{uid}/withdraw" in listed.text

    withdrawn = operator_page.post(f"{path}/exports/{uid}/withdraw")
    assert withdrawn.status_code == 303, withdrawn.text
    assert withdrawn.headers["location"] == path
    with server.db() as db:
        assert db.scalars(select(Export.withdrawn_at).where(Export.uid == uid)).one() is not None
    after = operator_page.get(path)
    assert f"{path}/exports/{uid}/withdraw" not in after.text
    shown = operator_page.get(f"{path}/exports/{uid}")
    assert shown.status_code == 200, shown.text
    assert '<dd id="export-state">withdrawn</dd>' in shown.text
    assert _actions(server, operator.uid, uid) == [("export.withdrawn", "DataCenter")]
    twice = operator_page.post(f"{path}/exports/{uid}/withdraw")
    assert twice.status_code == 409, twice.text


def test_the_publish_form_gives_a_presigned_form_and_the_export_page_shows_it_published(
    server: LiveServer, operator: Operator, operator_page: PageClient
) -> None:
    organization = add_organization(server, name=unique("Publish College"))
    path = f"/datacenter/admin/organizations/{organization.uid}"
    created = operator_page.post(
        f"{path}/exports", {"productKey": "prospect", "orderName": "Fall Search", "fileName": "list.csv"}
    )
    assert created.status_code == 200, created.text
    body: dict[str, Any] = created.json()
    assert body["url"] == server.root + "/datalab-exports"
    assert body["next"] == f"{path}/exports/{body['id']}"
    awaiting = operator_page.get(body["next"])
    assert '<dd id="export-state">awaiting file</dd>' in awaiting.text

    with httpx2.Client(timeout=30) as store:
        posted = post_parts(store, body["url"], form_parts(body["fields"], CSV, filename="list.csv"))
    assert posted.status_code == 204, posted.text
    shown = operator_page.get(body["next"])
    assert shown.status_code == 200, shown.text
    assert '<dd id="export-state">published</dd>' in shown.text
    assert "<dt>Records</dt><dd>2</dd>" in shown.text
    assert _actions(server, operator.uid, body["id"])[0] == ("export.form_created", "DataCenter")

    unknown = operator_page.post(f"{path}/exports", {"productKey": "nonsense", "fileName": "x.csv"})
    assert unknown.status_code == 400, unknown.text
    assert "productKey must be one of" in unknown.json()["message"]


def test_forms_without_the_session_token_are_refused(server: LiveServer, operator_page: PageClient) -> None:
    organization_uid = _create_organization(operator_page, unique("Csrf College"), unique_fice())
    user_name, _password = _add_user(operator_page, organization_uid)
    user_uid = _user(server, user_name).uid
    path = f"/datacenter/admin/organizations/{organization_uid}"
    before = stored_state(server)
    with server.db() as db:
        users = db.scalar(select(func.count()).select_from(User))
        organizations = db.scalar(select(func.count()).select_from(Organization))
    attempts: list[tuple[str, dict[str, str]]] = [
        ("/datacenter/admin/organizations", {"name": "Forged", "fice": unique_fice()}),
        (f"{path}/deactivate", {}),
        (f"{path}/users", {"userName": unique("forged"), "password": "long enough password"}),
        (f"{path}/users/{user_uid}/status", {"status": "Inactive"}),
        (f"{path}/users/{user_uid}/api-keys", {"name": "forged"}),
        (f"{path}/exports", {"productKey": "prospect", "fileName": "x.csv"}),
    ]
    for action, data in attempts:
        for refused in (
            operator_page.post(action, data, csrf="not-the-token"),
            operator_page.post(action, data, with_csrf=False),
        ):
            assert refused.status_code == 403, (action, refused.text)
            assert "reload the page" in refused.text
    assert stored_state(server) == before
    with server.db() as db:
        assert db.scalar(select(func.count()).select_from(User)) == users
        assert db.scalar(select(func.count()).select_from(Organization)) == organizations
    assert _organization(server, organization_uid).deactivated_at is None
    assert _user(server, user_name).status == "Active"


def _browser_sign_in(browser: Browser, server: LiveServer, user_name: str, password: str) -> Page:
    context = browser.new_context(base_url=server.root, viewport=VIEWPORT)
    context.set_default_timeout(15_000)
    page = context.new_page()
    page.goto("/datacenter/signin")
    page.fill("#userName", user_name)
    page.fill("#password", password)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url("**/datacenter/exports")
    return page


def test_an_operator_publishes_an_export_in_the_browser_and_the_college_sees_it(
    browser: Browser, server: LiveServer, operator: Operator
) -> None:
    organization = add_organization(server, name=unique("Browser College"))
    college = add_account(server, organization_uids=[organization.uid])
    page = _browser_sign_in(browser, server, operator.user_name, operator.password)
    try:
        page.get_by_role("link", name="Operators").click()
        page.wait_for_url("**/datacenter/admin")
        page.get_by_role("link", name=organization.name).click()
        page.wait_for_url(f"**/datacenter/admin/organizations/{organization.uid}")
        page.select_option("#productKey", "prospect")
        page.fill("#orderName", "Fall Search")
        page.set_input_files("#file", files=FilePayload(name="search.csv", mimeType="text/csv", buffer=CSV))
        page.get_by_role("button", name="Publish").click()
        page.wait_for_url(f"**/datacenter/admin/organizations/{organization.uid}/exports/*")
        expect(page.locator("#export-state")).to_have_text("published")
        file_name = page.locator("h1").inner_text()
        assert "Fall" in file_name and file_name.endswith(".csv")
    finally:
        page.context.close()
    with server.db() as db:
        export = db.scalars(select(Export).where(Export.file_name == file_name)).one()
        assert (export.quantity, export.size_bytes, export.created_by_user_id) == (
            2,
            len(CSV),
            _user_id(server, operator),
        )

    campus = _browser_sign_in(browser, server, college.user_name, college.password)
    try:
        expect(campus.get_by_text(file_name)).to_be_visible()
        expect(campus.get_by_role("link", name="Operators")).to_have_count(0)
    finally:
        campus.context.close()


def _user_id(server: LiveServer, operator: Operator) -> int:
    with server.db() as db:
        return db.scalars(select(User.id).where(User.uid == operator.uid)).one()
