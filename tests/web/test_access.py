"""Who may see and do what on the Data Center pages, over plain HTTP against the in-process app:
signed-out browsers, the sign-in form, the session cookie, CSRF tokens, organizations and signing out."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass

import httpx2
import pytest
from sqlalchemy import select

from datalab.accounts.models import ApiKey, User
from datalab.uploads.models import FieldMapping
from datalab.web.models import WebSession
from tests.conftest import AppFactory
from tests.support.accounts import Account, Organization, unique
from tests.support.client import stored_exports
from tests.support.exports import SAMPLE_HEADER, sample_rows, write_csv
from tests.support.factories import add_account, add_export, add_organization
from tests.support.inprocess import InProcessApp
from tests.web.pages import (
    SESSION_COOKIE,
    SIGNIN_COOKIE,
    PageClient,
    cookie_attributes,
    form_token,
    set_cookies,
    sign_in,
    signin_next,
    start_upload,
    stored_state,
    wait_for_upload,
)

# An enrollment file whose headers match no layout field: a Data Center upload of it waits for a mapping.
WAITING_CSV = b"Student Number,Year,Term,App Date\r\n00123,2026,Fall,2025-11-02\r\n"
# Another header set, mapped through the mapping form in the setup.
MAPPED_CSV = b"Learner,Cohort,Applied On\r\n00777,2026,2025-10-01\r\n00778,2026,2025-10-02\r\n"
MAPPED_FIELDS = {"field:UniqueID": "Learner", "field:EntryYear": "Cohort", "field:Applied": "Applied On"}
WAITING_FIELDS: dict[str, str | list[str]] = {
    "field:UniqueID": "Student Number",
    "field:EntryYear": "Year",
    "field:EntryTerm": "Term",
    "field:Applied": "App Date",
}
_PICKED_EXPORT = re.compile(r'<input type="checkbox" name="uid" value="([^"]+)"')


@dataclass(frozen=True)
class World:
    """An app where organization A (the demo's) has uploads, a saved mapping and exports, and
    organization B has one export; `other` belongs to B only, `both` to A and B."""

    server: InProcessApp
    organization_a: str
    organization_b: Organization
    other: Account
    both: Account
    waiting_upload: str
    done_upload: str
    mapping: str
    exports_a: tuple[str, ...]
    export_b: str
    demo_key: str


@pytest.fixture(scope="module")
def world(make_app: AppFactory, tmp_path_factory: pytest.TempPathFactory) -> World:
    server = make_app(pipeline_workers="2")
    assert server.demo is not None
    organization_b = add_organization(server, name=unique("College B"))
    other = add_account(server, organization_uids=[organization_b.uid])
    both = add_account(server, organization_uids=[server.demo.organization_uid, organization_b.uid])
    source = write_csv(tmp_path_factory.mktemp("b") / "b.csv", SAMPLE_HEADER, sample_rows(3))
    export_b = add_export(server, source, product="prospect", organization_uid=organization_b.uid)

    page = sign_in(server, server.demo.user_name, server.demo.password)
    try:
        waiting = start_upload(page, WAITING_CSV, file_name="waiting.csv")
        mapped = start_upload(page, MAPPED_CSV, file_name="mapped.csv")
        wait_for_upload(page, waiting, "fields_mapping_required")
        wait_for_upload(page, mapped, "fields_mapping_required")
        submitted = page.post(f"/datacenter/uploads/{mapped}/mapping", MAPPED_FIELDS)
        assert submitted.status_code == 303, submitted.text
        assert submitted.headers["location"] == f"/datacenter/uploads/{mapped}"
        wait_for_upload(page, mapped, "done")
    finally:
        page.close()
    with server.db() as db:
        mapping = db.scalars(select(FieldMapping.uid)).one()
        demo_key = db.scalars(
            select(ApiKey.uid)
            .join(User, ApiKey.user_id == User.id)
            .where(User.user_name == server.demo.user_name)
        ).one()
    return World(
        server=server,
        organization_a=server.demo.organization_uid,
        organization_b=organization_b,
        other=other,
        both=both,
        waiting_upload=waiting,
        done_upload=mapped,
        mapping=mapping,
        exports_a=tuple(stored_exports(server)),
        export_b=export_b,
        demo_key=demo_key,
    )


def _signed_in(server: InProcessApp, user_name: str, password: str) -> Iterator[PageClient]:
    page = sign_in(server, user_name, password)
    yield page
    page.close()


@pytest.fixture(scope="module")
def demo_page(world: World) -> Iterator[PageClient]:
    """The demo user (organization A), signed in for the whole module."""
    assert world.server.demo is not None
    yield from _signed_in(world.server, world.server.demo.user_name, world.server.demo.password)


@pytest.fixture(scope="module")
def other_page(world: World) -> Iterator[PageClient]:
    """A user of organization B only, signed in for the whole module."""
    yield from _signed_in(world.server, world.other.user_name, world.other.password)


@pytest.fixture(scope="module")
def both_page(world: World) -> Iterator[PageClient]:
    """A member of A and B, signed in for the whole module (acting in A, its first organization)."""
    yield from _signed_in(world.server, world.both.user_name, world.both.password)


@pytest.fixture
def anonymous(world: World) -> Iterator[PageClient]:
    page = PageClient(world.server)
    yield page
    page.close()


def assert_error_page(response: httpx2.Response, status: int) -> None:
    """The HTML error page with this status."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("text/html")
    heading = {403: "Not allowed", 404: "Not found"}[status]
    assert f"<h1>{heading}</h1>" in response.text, response.text


def listed_exports(response: httpx2.Response) -> set[str]:
    """The export uids an exports page lists."""
    assert response.status_code == 200, response.text
    return set(_PICKED_EXPORT.findall(response.text))


# --- signed out -------------------------------------------------------------------------------------

SIGNED_OUT_PAGES = [
    "/datacenter/exports",
    "/datacenter/exports?product=aos&status=Delivered",
    "/datacenter/uploads",
    "/datacenter/uploads?offset=50",
    "/datacenter/uploads/{waiting_upload}",
    "/datacenter/uploads/{waiting_upload}/status",
    "/datacenter/uploads/{waiting_upload}/mapping",
    "/datacenter/uploads/{done_upload}/errors",
    "/datacenter/mappings",
    "/datacenter/mappings/{mapping}",
    "/datacenter/api-keys",
]


@pytest.mark.parametrize("template", SIGNED_OUT_PAGES)
def test_signed_out_page_redirects_to_signin_and_back(
    world: World, anonymous: PageClient, template: str
) -> None:
    path = template.format(**vars(world))
    assert signin_next(anonymous.get(path)) == path


def test_home_opens_the_exports(anonymous: PageClient) -> None:
    response = anonymous.get("/datacenter")
    assert response.status_code == 303
    assert response.headers["location"] == "/datacenter/exports"
    assert signin_next(anonymous.get("/datacenter/exports")) == "/datacenter/exports"


# Every state-changing POST of the pages, with a body that would change something if it were accepted.
ACTIONS: dict[str, tuple[str, dict[str, str | list[str]]]] = {
    "sign-out": ("/datacenter/signout", {}),
    "organization switch": ("/datacenter/organization", {"organization": "{organization_b.uid}"}),
    "exports download": ("/datacenter/exports/download", {"uid": ["{export_a}"]}),
    "exports zip": ("/datacenter/exports/download", {"uid": ["{export_a}", "{export_a2}"]}),
    "uploads create": ("/datacenter/uploads", {"fileName": "new.csv", "productType": "enrollment"}),
    "upload cancel": ("/datacenter/uploads/{waiting_upload}/cancel", {}),
    "mapping submit": ("/datacenter/uploads/{waiting_upload}/mapping", WAITING_FIELDS),
    "mapping rename": ("/datacenter/mappings/{mapping}/rename", {"name": "Renamed"}),
    "mapping delete": ("/datacenter/mappings/{mapping}/delete", {}),
    "api-key create": ("/datacenter/api-keys", {"name": "sneaky"}),
    "api-key revoke": ("/datacenter/api-keys/{demo_key}/revoke", {}),
}


def action(world: World, name: str) -> tuple[str, dict[str, str | list[str]]]:
    """The path and form of an action, filled in with the world's uids."""
    path, form = ACTIONS[name]
    names = {**vars(world), "export_a": world.exports_a[0], "export_a2": world.exports_a[1]}

    def filled(value: str) -> str:
        return value.format(**names)

    return filled(path), {
        key: filled(value) if isinstance(value, str) else [filled(item) for item in value]
        for key, value in form.items()
    }


@pytest.mark.parametrize("name", list(ACTIONS))
def test_signed_out_post_is_sent_to_signin_and_changes_nothing(
    world: World, anonymous: PageClient, demo_page: PageClient, name: str
) -> None:
    path, form = action(world, name)
    before = stored_state(world.server)
    # Even with a token that is valid for some session: without the session cookie it means nothing.
    response = anonymous.post(path, form, csrf=demo_page.csrf)
    assert signin_next(response) == "/datacenter/exports"
    assert stored_state(world.server) == before


# --- signing in ---------------------------------------------------------------------------------------


def test_wrong_password_shows_the_error_without_a_session(world: World, anonymous: PageClient) -> None:
    account = add_account(world.server)
    form = anonymous.get("/datacenter/signin?next=/datacenter/mappings")
    assert form.status_code == 200
    token = form_token(form.text)
    signin_cookie = form.cookies[SIGNIN_COOKIE]
    with world.server.db() as db:
        sessions_before = len(db.scalars(select(WebSession.id)).all())

    response = anonymous.client.post(
        "/datacenter/signin",
        data={
            "csrf_token": token,
            "next": "/datacenter/mappings",
            "userName": account.user_name,
            "password": account.password + "-wrong",
        },
        headers={"Cookie": f"{SIGNIN_COOKIE}={signin_cookie}"},
    )
    anonymous.client.cookies.clear()

    assert response.status_code == 401, response.text
    assert '<p class="error" role="alert">Invalid userName or password</p>' in response.text
    assert SESSION_COOKIE not in set_cookies(response)
    # The form comes back ready for another try, to the same page.
    assert form_token(response.text) == token
    assert '<input type="hidden" name="next" value="/datacenter/mappings">' in response.text
    with world.server.db() as db:
        assert len(db.scalars(select(WebSession.id)).all()) == sessions_before


def test_signin_form_token_is_required(world: World, anonymous: PageClient) -> None:
    assert world.server.demo is not None
    form = anonymous.get("/datacenter/signin")
    credentials = {"userName": world.server.demo.user_name, "password": world.server.demo.password}
    cookie = {"Cookie": f"{SIGNIN_COOKIE}={form.cookies[SIGNIN_COOKIE]}"}
    refused = [
        # No sign-in cookie: a post from another site.
        anonymous.client.post(
            "/datacenter/signin", data={**credentials, "csrf_token": form_token(form.text)}
        ),
        # The cookie but another token.
        anonymous.client.post("/datacenter/signin", data={**credentials, "csrf_token": "x"}, headers=cookie),
        anonymous.client.post("/datacenter/signin", data=credentials, headers=cookie),
    ]
    anonymous.client.cookies.clear()
    for response in refused:
        assert_error_page(response, 403)
        assert SESSION_COOKIE not in set_cookies(response)


def test_cookie_flags(world: World, anonymous: PageClient) -> None:
    account = add_account(world.server)
    form = anonymous.get("/datacenter/signin")
    signin_cookie = cookie_attributes(set_cookies(form)[SIGNIN_COOKIE])
    response = anonymous.client.post(
        "/datacenter/signin",
        data={
            "csrf_token": form_token(form.text),
            "next": "/datacenter/uploads",
            "userName": account.user_name,
            "password": account.password,
        },
        headers={"Cookie": f"{SIGNIN_COOKIE}={form.cookies[SIGNIN_COOKIE]}"},
    )
    anonymous.client.cookies.clear()
    assert response.status_code == 303, response.text
    assert response.headers["location"] == "/datacenter/uploads"
    session_cookie = cookie_attributes(set_cookies(response)[SESSION_COOKIE])
    for attributes in (session_cookie, signin_cookie):
        assert "httponly" in attributes
        assert attributes["samesite"].lower() == "lax"
        assert attributes["path"] == "/datacenter"
        # Plain HTTP here: a Secure cookie would never come back.
        assert "secure" not in attributes
    assert int(session_cookie["max-age"]) > 0


# --- CSRF -------------------------------------------------------------------------------------------

BAD_TOKENS = ["missing", "forged", "another session's"]


@pytest.mark.parametrize("token", BAD_TOKENS)
@pytest.mark.parametrize("name", list(ACTIONS))
def test_post_without_the_session_token_is_refused(
    world: World, demo_page: PageClient, both_page: PageClient, name: str, token: str
) -> None:
    # The organization switch is tried by the member of both organizations, everything else by the demo.
    actor, bystander = (both_page, demo_page) if name == "organization switch" else (demo_page, both_page)
    path, form = action(world, name)
    before = stored_state(world.server)

    if token == "missing":
        response = actor.post(path, form, with_csrf=False)
    else:
        response = actor.post(
            path, form, csrf="forged-" + actor.csrf if token == "forged" else bystander.csrf
        )

    assert_error_page(response, 403)
    assert "did not come from this site" in response.text
    assert stored_state(world.server) == before
    # The session is still signed in, acting where it did.
    still = actor.get("/datacenter/exports")
    assert listed_exports(still) == set(world.exports_a)


# --- organizations ----------------------------------------------------------------------------------

OWN_PAGES = [
    "/datacenter/uploads/{done_upload}",
    "/datacenter/uploads/{done_upload}/status",
    "/datacenter/uploads/{done_upload}/mapping",
    "/datacenter/uploads/{done_upload}/errors",
    "/datacenter/uploads/{waiting_upload}",
    "/datacenter/uploads/{waiting_upload}/mapping",
    "/datacenter/mappings/{mapping}",
]


@pytest.mark.parametrize("template", OWN_PAGES)
def test_other_organization_gets_not_found(
    world: World, demo_page: PageClient, other_page: PageClient, template: str
) -> None:
    path = template.format(**vars(world))
    assert demo_page.get(path).status_code == 200
    assert_error_page(other_page.get(path), 404)


@pytest.mark.parametrize(
    "name",
    [
        "exports download",
        "exports zip",
        "upload cancel",
        "mapping submit",
        "mapping rename",
        "mapping delete",
        "api-key revoke",
    ],
)
def test_other_organization_cannot_act(world: World, other_page: PageClient, name: str) -> None:
    path, form = action(world, name)
    before = stored_state(world.server)
    assert_error_page(other_page.post(path, form), 404)
    assert stored_state(world.server) == before


def test_other_organization_lists_none_of_it(
    world: World, demo_page: PageClient, other_page: PageClient
) -> None:
    own = [world.done_upload, world.waiting_upload, world.mapping, *world.exports_a]
    pages = ["/datacenter/uploads", "/datacenter/mappings", "/datacenter/exports"]
    seen_by_owner = "".join(demo_page.get(path).text for path in pages)
    seen_by_other = "".join(other_page.get(path).text for path in pages)
    for uid in own:
        assert uid in seen_by_owner
        assert uid not in seen_by_other
    assert listed_exports(other_page.get("/datacenter/exports")) == {world.export_b}


def test_another_users_api_key_cannot_be_revoked(world: World) -> None:
    # A colleague in the same organization: the key is still not theirs.
    colleague = add_account(world.server)
    page = sign_in(world.server, colleague.user_name, colleague.password)
    try:
        assert world.demo_key not in page.get("/datacenter/api-keys").text
        before = stored_state(world.server)
        assert_error_page(page.post(f"/datacenter/api-keys/{world.demo_key}/revoke"), 404)
        assert stored_state(world.server) == before
        # Their own key they can revoke.
        revoked = page.post(f"/datacenter/api-keys/{colleague.api_key_uid}/revoke")
        assert revoked.status_code == 303
    finally:
        page.close()
    world.server.login()  # the demo's key still works


def test_switch_to_a_foreign_organization_is_forbidden(world: World, other_page: PageClient) -> None:
    before = stored_state(world.server)
    response = other_page.post(
        "/datacenter/organization", {"organization": world.organization_a, "next": "/datacenter/exports"}
    )
    assert_error_page(response, 403)
    assert "not a member" in response.text
    assert stored_state(world.server) == before
    assert listed_exports(other_page.get("/datacenter/exports")) == {world.export_b}


def test_switcher_changes_the_listed_exports(world: World) -> None:
    page = sign_in(world.server, world.both.user_name, world.both.password)
    try:
        first = page.get("/datacenter/exports")
        assert listed_exports(first) == set(world.exports_a)
        assert '<select id="organization" name="organization">' in first.text
        assert world.organization_b.name in first.text

        switched = page.post(
            "/datacenter/organization",
            {"organization": world.organization_b.uid, "next": "/datacenter/exports"},
        )
        assert switched.status_code == 303, switched.text
        assert switched.headers["location"] == "/datacenter/exports"
        assert listed_exports(page.get("/datacenter/exports")) == {world.export_b}
        # Pages now act in B: A's upload is not found there.
        assert_error_page(page.get(f"/datacenter/uploads/{world.done_upload}"), 404)

        # Back to A; a `next` off the site is not followed.
        back = page.post(
            "/datacenter/organization", {"organization": world.organization_a, "next": "https://example.com/"}
        )
        assert back.status_code == 303, back.text
        assert back.headers["location"] == "/datacenter/exports"
        assert listed_exports(page.get("/datacenter/exports")) == set(world.exports_a)
    finally:
        page.close()


# --- signing out ------------------------------------------------------------------------------------


def test_sign_out_ends_the_session(world: World) -> None:
    assert world.server.demo is not None
    page = sign_in(world.server, world.server.demo.user_name, world.server.demo.password)
    try:
        with world.server.db() as db:
            sessions_before = len(db.scalars(select(WebSession.id)).all())
        response = page.post("/datacenter/signout")
        assert response.status_code == 303, response.text
        assert response.headers["location"] == "/datacenter/signin"
        cleared = cookie_attributes(set_cookies(response)[SESSION_COOKIE])
        assert cleared["max-age"] == "0"
        assert cleared["path"] == "/datacenter"
        with world.server.db() as db:
            assert len(db.scalars(select(WebSession.id)).all()) == sessions_before - 1

        # A copy of the old cookie (and its form token) opens nothing any more.
        assert signin_next(page.get("/datacenter/api-keys")) == "/datacenter/api-keys"
        before = stored_state(world.server)
        assert (
            signin_next(page.post("/datacenter/api-keys", {"name": "after sign-out"}))
            == "/datacenter/exports"
        )
        assert stored_state(world.server) == before
    finally:
        page.close()
