"""Data Center in a real browser (headless Chromium through Playwright) against a live server with a
running pipeline: signing in, downloading exports, uploading and mapping a file, saved mappings and API
keys. Each page is also saved as a screenshot under docs/screenshots/."""

from __future__ import annotations

import io
import json
import re
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx2
import pytest
from playwright.sync_api import (
    Browser,
    BrowserContext,
    Download,
    FilePayload,
    Locator,
    Page,
    Response,
    ViewportSize,
    expect,
)
from sqlalchemy import func, select

from datalab.accounts.models import User
from datalab.digests.models import DigestOptOut
from datalab.digests.service import unsubscribe_token
from datalab.exports.models import Delivery, Export
from datalab.records.models import EnrollmentRecord
from datalab.settings import Settings
from datalab.uploads.models import FieldMapping
from tests.support.accounts import DEMO_DISPLAY_NAME, unique
from tests.support.admin import PageOperator, make_page_operator
from tests.support.checks import wait_for
from tests.support.client import stored_exports
from tests.support.factories import add_account, add_organization
from tests.support.server import LiveServer
from tests.support.uploads import upload_and_wait, upload_row

ServerFactory = Callable[..., LiveServer]

SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"
VIEWPORT: ViewportSize = {"width": 1280, "height": 900}
# How long the page may take to follow an upload through the pipeline by itself.
PIPELINE_TIMEOUT_MS = 60_000

# Headers no layout field matches: the page's upload waits for its columns to be mapped.
UNMAPPED_HEADER = "Student Number,Year,Term,App Date,Sex"
FIRST_FILE = (
    f"{UNMAPPED_HEADER}\r\n00123,2026,Fall,2025-11-02,Man\r\n00124,2026,Fall,2025-11-03,Woman\r\n"
).encode()
SECOND_FILE = (
    f"{UNMAPPED_HEADER}\r\n00200,2027,Spring,2026-01-15,Woman\r\n00201,2027,Spring,2026-01-16,Man\r\n"
).encode()
FIELDS = {
    "UniqueID": "Student Number",
    "EntryYear": "Year",
    "EntryTerm": "Term",
    "Applied": "App Date",
    "Gender": "Sex",
}
GENDER_VALUES = {"Man": "M", "Woman": "F"}


def screenshot(page: Page, name: str) -> None:
    """Save what the viewport shows as docs/screenshots/<name>.png."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=SCREENSHOTS / f"{name}.png", full_page=False)


@pytest.fixture(scope="module")
def site(make_server: ServerFactory) -> LiveServer:
    """A server of its own (the page tests deliver exports), with pipeline workers running."""
    return make_server(pipeline_workers="2")


def new_context(browser: Browser, site: LiveServer) -> BrowserContext:
    context = browser.new_context(base_url=site.root, viewport=VIEWPORT, accept_downloads=True)
    context.set_default_timeout(15_000)
    return context


def sign_in(page: Page, site: LiveServer) -> None:
    """Fill and send the sign-in form the page shows."""
    assert site.demo is not None
    page.fill("#userName", site.demo.user_name)
    page.fill("#password", site.demo.password)
    page.get_by_role("button", name="Sign in").click()


@pytest.fixture(scope="module")
def signed_in(browser: Browser, site: LiveServer) -> Iterator[BrowserContext]:
    """A browser signed in as the demo user for the whole module."""
    context = new_context(browser, site)
    page = context.new_page()
    page.goto("/datacenter/signin")
    sign_in(page, site)
    page.wait_for_url("**/datacenter/exports")
    page.close()
    yield context
    context.close()


@pytest.fixture
def page(signed_in: BrowserContext) -> Iterator[Page]:
    opened = signed_in.new_page()
    yield opened
    opened.close()


def test_sign_in(browser: Browser, site: LiveServer) -> None:
    context = new_context(browser, site)
    try:
        page = context.new_page()
        page.goto("/datacenter/uploads")
        # Sent to sign in, and brought back afterwards.
        expect(page).to_have_url(re.compile(r"/datacenter/signin\?next=/datacenter/uploads$"))
        expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
        screenshot(page, "signin")

        assert site.demo is not None
        page.fill("#userName", site.demo.user_name)
        page.fill("#password", "not the password")
        page.get_by_role("button", name="Sign in").click()
        expect(page.get_by_role("alert")).to_have_text("Invalid userName or password")

        sign_in(page, site)
        page.wait_for_url("**/datacenter/uploads")
        expect(page.locator("header .user")).to_have_text(DEMO_DISPLAY_NAME)
        session = next(cookie for cookie in context.cookies() if cookie.get("name") == "datalab_session")
        assert session.get("httpOnly") is True
        assert session.get("sameSite") == "Lax"
        assert session.get("path") == "/datacenter"
    finally:
        context.close()


def test_the_digest_unsubscribe_link_works_without_signing_in(browser: Browser, site: LiveServer) -> None:
    person = add_account(site)
    token = unsubscribe_token(Settings(secret_key=site.env["DATALAB_SECRET_KEY"]).unsubscribe_key, person.uid)
    context = new_context(browser, site)
    try:
        page = context.new_page()
        page.goto(f"/datacenter/unsubscribe/{person.uid}/{token}")
        expect(page.locator("#unsubscribe-state")).to_contain_text(
            "gets an e-mail listing the new export files"
        )
        page.get_by_role("button", name="Stop the e-mails").click()
        expect(page.get_by_role("status")).to_have_text(
            f"{person.user_name} gets no more e-mail digests of new export files."
        )
        with site.db() as db:
            user_id = db.scalars(select(User.id).where(User.uid == person.uid)).one()
            assert db.get(DigestOptOut, user_id) is not None
        assert not any(cookie.get("name") == "datalab_session" for cookie in context.cookies())
    finally:
        context.close()


# --- export files -----------------------------------------------------------------------------------


def row_of(page: Page, uid: str) -> Locator:
    """The exports table's row of one export."""
    return page.get_by_role("row").filter(has=page.locator(f"#pick-{uid}"))


def delivered(site: LiveServer, uids: list[str]) -> bool:
    """Whether every one of these exports has a delivery recorded."""
    with site.db() as db:
        counted = db.scalar(
            select(func.count(func.distinct(Delivery.export_id)))
            .join(Export, Delivery.export_id == Export.id)
            .where(Export.uid.in_(uids))
        )
    return counted == len(uids)


def download_from(page: Page, click: Callable[[], None], *, status: int) -> Download:
    """Click, check the answer to the download form's POST, and return the download it started."""

    def is_download_post(response: Response) -> bool:
        return response.request.method == "POST" and response.url.endswith("/datacenter/exports/download")

    with page.expect_download() as started:
        with page.expect_response(is_download_post) as posted:
            click()
        answer = posted.value
        assert answer.status == status, f"{answer.status}: {answer.text()}"
    download = started.value
    assert download.failure() is None
    return download


def test_exports_lists_the_demo_files(page: Page, site: LiveServer) -> None:
    exports = stored_exports(site)
    assert len(exports) == 16
    page.goto("/datacenter/exports")
    expect(page.locator("table caption")).to_have_text("16 files")
    expect(page.locator("tbody tr")).to_have_count(16)
    for export in exports.values():
        expect(row_of(page, export.uid)).to_contain_text(export.file_name)
    screenshot(page, "exports")


def test_download_one_export(page: Page, site: LiveServer) -> None:
    export = sorted(stored_exports(site).values(), key=lambda item: item.file_name)[0]
    assert export.status == "NotDelivered"
    page.goto("/datacenter/exports")
    row = row_of(page, export.uid)
    expect(row.locator(".badge")).to_have_text("Not delivered")

    download = download_from(page, row.get_by_role("button", name="Download").click, status=303)
    assert Path(download.path()).read_bytes() == export.content
    assert download.suggested_filename == export.file_name

    assert wait_for(lambda: delivered(site, [export.uid]), timeout=10)
    page.reload()
    row = row_of(page, export.uid)
    expect(row.locator(".badge")).to_have_text("Delivered")
    expect(row).to_contain_text(DEMO_DISPLAY_NAME)


def test_download_selected_as_zip(page: Page, site: LiveServer) -> None:
    chosen = sorted(stored_exports(site).values(), key=lambda item: item.file_name)[-2:]
    page.goto("/datacenter/exports")
    for export in chosen:
        page.check(f"#pick-{export.uid}")

    download = download_from(page, page.locator("#download-selected").click, status=200)
    assert re.fullmatch(r"datalab-exports-\d{8}-\d{6}\.zip", download.suggested_filename)
    with zipfile.ZipFile(io.BytesIO(Path(download.path()).read_bytes())) as archive:
        members = {name: archive.read(name) for name in archive.namelist()}
    assert members == {f"{export.product_key}/{export.file_name}": export.content for export in chosen}

    uids = [export.uid for export in chosen]
    assert wait_for(lambda: delivered(site, uids), timeout=10)
    page.reload()
    for uid in uids:
        expect(row_of(page, uid).locator(".badge")).to_have_text("Delivered")
        expect(row_of(page, uid)).to_contain_text(DEMO_DISPLAY_NAME)


# --- uploading and mapping --------------------------------------------------------------------------


@dataclass(frozen=True)
class MappedUpload:
    """A file uploaded through the uploads page and mapped through the mapping page."""

    uid: str


@pytest.fixture(scope="module")
def mapped_upload(signed_in: BrowserContext) -> Iterator[MappedUpload]:
    """Upload FIRST_FILE on the uploads page, map its columns and values, and follow it to `done`."""
    page = signed_in.new_page()
    try:
        page.goto("/datacenter/uploads")
        screenshot(page, "uploads")
        page.select_option("#productType", "enrollment")
        page.set_input_files(
            "#file", files=FilePayload(name="registrar.csv", mimeType="text/csv", buffer=FIRST_FILE)
        )
        page.fill("#fileDescription", "Fall roster from the registrar")
        page.get_by_role("button", name="Upload").click()
        page.wait_for_url(re.compile(r"/datacenter/uploads/[0-9a-f-]{36}$"))
        uid = page.url.rsplit("/", 1)[-1]

        # The page follows the pipeline by itself until the file needs its columns mapped.
        badge = page.locator("#status-badge")
        expect(badge).to_have_text("fields mapping required", timeout=PIPELINE_TIMEOUT_MS)
        page.get_by_role("link", name="Map fields").click()
        page.wait_for_url(f"**/datacenter/uploads/{uid}/mapping")

        for field, column in FIELDS.items():
            page.select_option(f"#field-{field}", column)
        # Choosing the column lists its values (in the order the file has them) to map one by one.
        for index, (source, target) in enumerate(GENDER_VALUES.items()):
            expect(page.locator(f"label[for='value-Gender-{index}']")).to_have_text(f"{source} →")
            page.fill(f"#value-Gender-{index}", target)
        page.evaluate("window.scrollTo(0, 0)")
        screenshot(page, "mapping")
        page.get_by_role("button", name="Save mapping and process the file").click()

        page.wait_for_url(f"**/datacenter/uploads/{uid}")
        expect(page.locator("#status-badge")).to_have_text("done", timeout=PIPELINE_TIMEOUT_MS)
        screenshot(page, "upload-detail")
        yield MappedUpload(uid=uid)
    finally:
        page.close()


def stored_records(site: LiveServer, upload_uid: str) -> list[dict[str, str]]:
    """The cleansed records the upload put in enrollment_records, in file order."""
    upload_id = upload_row(site, upload_uid).id
    with site.db() as db:
        rows = db.scalars(
            select(EnrollmentRecord)
            .where(EnrollmentRecord.upload_id == upload_id)
            .order_by(EnrollmentRecord.row_number)
        ).all()
        return [json.loads(row.record) for row in rows]


def test_upload_mapped_through_the_pages(mapped_upload: MappedUpload, site: LiveServer, page: Page) -> None:
    upload = upload_row(site, mapped_upload.uid)
    assert upload.status == "done"
    assert upload.data_source == "DataCenter"
    assert upload.file_description == "Fall roster from the registrar"
    assert upload.fields_map == FIELDS
    assert upload.values_map == {"Gender": GENDER_VALUES}
    records = stored_records(site, mapped_upload.uid)
    assert [(r["UniqueID"], r["Gender"], r["EntryYear"], r["EntryTerm"]) for r in records] == [
        ("00123", "M", "2026", "FALL"),
        ("00124", "F", "2026", "FALL"),
    ]
    # The counts show on the upload's page; the history lists the file as done.
    page.goto(f"/datacenter/uploads/{mapped_upload.uid}")
    expect(page.locator("dl.facts")).to_contain_text("Accepted")
    page.goto("/datacenter/uploads")
    row = page.get_by_role("row").filter(has=page.get_by_role("link", name="registrar.csv"))
    expect(row.locator(".badge")).to_have_text("done")


def test_api_upload_with_the_same_headers_needs_no_mapping(
    mapped_upload: MappedUpload, site: LiveServer
) -> None:
    with httpx2.Client(timeout=30) as client:
        record = upload_and_wait(client, site, site.login(), SECOND_FILE, file_name="api.csv")
    assert record["status"] == "done", record
    assert record["dataSource"] == "API"
    assert record["fieldsMap"] == FIELDS
    records = stored_records(site, record["id"])
    assert [(r["UniqueID"], r["Gender"], r["EntryTerm"]) for r in records] == [
        ("00200", "F", "SPRING"),
        ("00201", "M", "SPRING"),
    ]


def test_saved_mapping_rename_and_view(mapped_upload: MappedUpload, site: LiveServer, page: Page) -> None:
    with site.db() as db:
        mapping_uid = db.scalars(select(FieldMapping.uid)).one()
    page.goto("/datacenter/mappings")
    row = page.locator("tbody tr")
    expect(row).to_have_count(1)
    expect(row).to_contain_text("Unnamed mapping")
    expect(row.locator("td")).to_have_text(["Unnamed mapping", "enrollment", "5", "5", re.compile(r"\d{4}-")])
    screenshot(page, "mappings")

    row.get_by_role("link", name="Unnamed mapping").click()
    page.wait_for_url(f"**/datacenter/mappings/{mapping_uid}")
    page.fill("#name", "  Registrar   roster ")
    page.get_by_role("button", name="Rename").click()
    page.wait_for_url(f"**/datacenter/mappings/{mapping_uid}")
    expect(page.get_by_role("heading", level=1)).to_have_text("Registrar roster (enrollment)")
    for field, column in FIELDS.items():
        expect(page.get_by_role("row").filter(has_text=field).first).to_contain_text(column)
    gender = page.locator("tbody tr").filter(has=page.get_by_text("Gender", exact=True))
    expect(gender.locator("td").nth(2)).to_have_text("Man → MWoman → F")
    expect(page.locator("main")).to_contain_text(UNMAPPED_HEADER.replace(",", ", "))
    screenshot(page, "mapping-detail")

    page.get_by_role("link", name="← Saved Mappings").click()
    expect(page.locator("tbody tr")).to_contain_text("Registrar roster")
    with site.db() as db:
        assert db.scalars(select(FieldMapping.name)).one() == "Registrar roster"


# --- API keys ---------------------------------------------------------------------------------------


def api_login(site: LiveServer, api_key: str) -> httpx2.Response:
    assert site.demo is not None
    return httpx2.post(
        site.base_url + "/login",
        headers={"x-api-key": api_key},
        json={"userName": site.demo.user_name, "password": site.demo.password, "acceptedTerms": True},
    )


def test_api_key_create_and_revoke(page: Page, site: LiveServer) -> None:
    page.goto("/datacenter/api-keys")
    page.fill("#key-name", "Browser test key")
    page.get_by_role("button", name="Create key").click()
    key = page.locator("#new-key").inner_text().strip()
    assert re.fullmatch(r"\S{20,}", key), key
    row = page.get_by_role("row").filter(has_text="Browser test key")
    expect(row).to_contain_text(key[:8])
    expect(row).to_contain_text("active")
    assert api_login(site, key).status_code == 200

    # Shown once: opening the page again shows only its prefix.
    page.goto("/datacenter/api-keys")
    expect(page.locator("#new-key")).to_have_count(0)
    assert key not in page.content()

    page.get_by_role("button", name="Revoke Browser test key").click()
    page.wait_for_url("**/datacenter/api-keys")
    row = page.get_by_role("row").filter(has_text="Browser test key")
    expect(row).to_contain_text("revoked")
    expect(row.get_by_role("button", name="Revoke Browser test key")).to_have_count(0)
    refused = api_login(site, key)
    assert refused.status_code == 401, refused.text
    screenshot(page, "api-keys")


def test_audit_trail_page_and_its_csv(page: Page, site: LiveServer) -> None:
    page.goto("/datacenter/exports")
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Audit Trail").click()
    page.wait_for_url("**/datacenter/audit")
    expect(page.get_by_role("heading", name="Audit Trail")).to_be_visible()
    sign_ins = page.get_by_role("row").filter(has_text="signin.succeeded").filter(has_text="DataCenter")
    expect(sign_ins.first).to_contain_text(site.demo.user_name if site.demo else "")
    page.fill("#since", "2000-01-01")
    page.get_by_role("button", name="Show").click()
    page.wait_for_url("**/datacenter/audit?since=2000-01-01")
    with page.expect_download() as started:
        page.get_by_role("link", name="Download CSV").click()
    exported = Path(started.value.path()).read_text(encoding="utf-8")
    assert exported.startswith("id,occurredAt,organizationUid,actorUid,actorName")
    assert "signin.succeeded" in exported


# An operator's page in the browser: a CSV file published through the form.
OPERATOR_CSV = (
    b"ID,FIRSTNAME,LASTNAME\r\n00000001,Ana,O'Brien\r\n00000002,Jos\xc3\xa9,N\xc3\xba\xc3\xb1ez\r\n"
)


def _browser_sign_in(browser: Browser, site: LiveServer, user_name: str, password: str) -> Page:
    context = browser.new_context(base_url=site.root, viewport=VIEWPORT)
    context.set_default_timeout(15_000)
    page = context.new_page()
    page.goto("/datacenter/signin")
    page.fill("#userName", user_name)
    page.fill("#password", password)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url("**/datacenter/exports")
    return page


@pytest.fixture(scope="module")
def operator(site: LiveServer) -> PageOperator:
    return make_page_operator(site)


def test_an_operator_publishes_an_export_in_the_browser_and_the_college_sees_it(
    browser: Browser, site: LiveServer, operator: PageOperator
) -> None:
    organization = add_organization(site, name=unique("Browser College"))
    college = add_account(site, organization_uids=[organization.uid])
    page = _browser_sign_in(browser, site, operator.user_name, operator.password)
    try:
        page.get_by_role("link", name="Operators").click()
        page.wait_for_url("**/datacenter/admin")
        page.get_by_role("link", name=organization.name).click()
        page.wait_for_url(f"**/datacenter/admin/organizations/{organization.uid}")
        page.select_option("#productKey", "prospect")
        page.fill("#orderName", "Fall Search")
        page.set_input_files(
            "#file", files=FilePayload(name="search.csv", mimeType="text/csv", buffer=OPERATOR_CSV)
        )
        page.get_by_role("button", name="Publish").click()
        page.wait_for_url(f"**/datacenter/admin/organizations/{organization.uid}/exports/*")
        expect(page.locator("#export-state")).to_have_text("published")
        file_name = page.locator("h1").inner_text()
        assert "Fall" in file_name and file_name.endswith(".csv")
    finally:
        page.context.close()
    with site.db() as db:
        export = db.scalars(select(Export).where(Export.file_name == file_name)).one()
        assert (export.quantity, export.size_bytes, export.created_by_user_id) == (
            2,
            len(OPERATOR_CSV),
            _user_id(site, operator),
        )

    campus = _browser_sign_in(browser, site, college.user_name, college.password)
    try:
        expect(campus.get_by_text(file_name)).to_be_visible()
        expect(campus.get_by_role("link", name="Operators")).to_have_count(0)
    finally:
        campus.context.close()


def _user_id(site: LiveServer, operator: PageOperator) -> int:
    with site.db() as db:
        return db.scalars(select(User.id).where(User.uid == operator.uid)).one()
