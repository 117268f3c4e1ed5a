"""Helpers of the Data Center page tests: signing in over plain HTTP, form tokens, uploads through the
pages' JSON endpoint, and the stored state a refused POST must leave as it was."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Mapping, Sequence
from contextlib import ExitStack
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx2
from sqlalchemy import func, select

from datalab.accounts.models import ApiKey
from datalab.exports.models import Delivery, DownloadTicket, Export
from datalab.uploads.models import FieldMapping, Upload
from datalab.web.models import WebSession
from tests.support.server import Deployment
from tests.support.uploads import form_parts, post_parts

SESSION_COOKIE = "datalab_session"
SIGNIN_COOKIE = "datalab_signin"
_CSRF_INPUT = re.compile(r'<input type="hidden" name="csrf_token" value="([^"]+)">')


def form_token(html: str) -> str:
    """The CSRF token of the (first) form of a page."""
    found = _CSRF_INPUT.search(html)
    assert found is not None, html
    return found.group(1)


def signin_next(response: httpx2.Response) -> str:
    """Where a redirect to the sign-in page brings the browser back to; fails on any other answer."""
    assert response.status_code == 303, response.text
    location = urlsplit(response.headers["location"])
    assert location.path == "/datacenter/signin", response.headers["location"]
    assert not location.netloc, response.headers["location"]
    return parse_qs(location.query)["next"][0]


def set_cookies(response: httpx2.Response) -> dict[str, str]:
    """The Set-Cookie headers of a response, by cookie name (the whole header as the value)."""
    return {header.split("=", 1)[0].strip(): header for header in response.headers.get_list("set-cookie")}


def cookie_attributes(header: str) -> dict[str, str]:
    """The attributes of one Set-Cookie header, names lowercased (flags map to "")."""
    attributes = {}
    for part in header.split(";")[1:]:
        name, _, value = part.strip().partition("=")
        attributes[name.lower()] = value
    return attributes


class PageClient:
    """One browser's requests to Data Center: its session cookie (or none) sent explicitly, nothing kept.

    The cookie jar is emptied after every response, so a request carries exactly the cookie chosen here.
    """

    def __init__(self, server: Deployment, cookie: str | None = None, csrf: str = "") -> None:
        self.server = server
        self.cookie = cookie
        self.csrf = csrf
        self._closing = ExitStack()
        self.client = self._closing.enter_context(server.open_client())

    def close(self) -> None:
        self._closing.close()

    def _headers(self) -> dict[str, str]:
        return {"Cookie": f"{SESSION_COOKIE}={self.cookie}"} if self.cookie else {}

    def get(self, path: str) -> httpx2.Response:
        try:
            return self.client.get(path, headers=self._headers())
        finally:
            self.client.cookies.clear()

    def post(
        self,
        path: str,
        data: Mapping[str, str | Sequence[str]] | None = None,
        *,
        csrf: str | None = None,
        with_csrf: bool = True,
    ) -> httpx2.Response:
        """POST a URL-encoded form with the session's CSRF token (or `csrf`, or none at all)."""
        form: dict[str, str | list[str]] = {
            name: value if isinstance(value, str) else list(value) for name, value in (data or {}).items()
        }
        if with_csrf:
            form["csrf_token"] = self.csrf if csrf is None else csrf
        try:
            return self.client.post(path, data=form, headers=self._headers())
        finally:
            self.client.cookies.clear()


def post_sign_in(
    page: PageClient, user_name: str, password: str, back_to: str = "/datacenter/exports"
) -> Any:
    """Post the sign-in form as a browser would (the form's token and cookie first); the answer."""
    form = page.get("/datacenter/signin")
    assert form.status_code == 200, form.text
    try:
        return page.client.post(
            "/datacenter/signin",
            data={
                "csrf_token": form_token(form.text),
                "next": back_to,
                "userName": user_name,
                "password": password,
            },
            headers={"Cookie": f"{SIGNIN_COOKIE}={form.cookies[SIGNIN_COOKIE]}"},
        )
    finally:
        page.client.cookies.clear()


def sign_in(server: Deployment, user_name: str, password: str) -> PageClient:
    """Sign in through the form as a browser would; a client with the session cookie and CSRF token."""
    page = PageClient(server)
    response = post_sign_in(page, user_name, password)
    assert response.status_code == 303, response.text
    assert response.headers["location"] == "/datacenter/exports"
    page.cookie = response.cookies[SESSION_COOKIE]
    exports = page.get("/datacenter/exports")
    assert exports.status_code == 200, exports.text
    page.csrf = form_token(exports.text)
    return page


def start_upload(
    page: PageClient, content: bytes, *, file_name: str, product_type: str = "enrollment"
) -> str:
    """Upload a file the way the uploads page's script does: create the record, post the file; its uid."""
    created = page.post("/datacenter/uploads", {"fileName": file_name, "productType": product_type})
    assert created.status_code == 200, created.text
    body: dict[str, Any] = created.json()
    assert body["next"] == f"/datacenter/uploads/{body['id']}"
    # The store answers on the pages' origin, so the page's client reaches it; the form, not a cookie,
    # authorizes the post.
    try:
        posted = post_parts(page.client, body["url"], form_parts(body["fields"], content, filename=file_name))
    finally:
        page.client.cookies.clear()
    assert posted.status_code == 204, posted.text
    uid: str = body["id"]
    return uid


def wait_for_upload(page: PageClient, uid: str, status: str, *, timeout: float = 60) -> None:
    """Poll the upload's status endpoint (as its page does) until it reaches `status`."""
    deadline = time.monotonic() + timeout
    while True:
        response = page.get(f"/datacenter/uploads/{uid}/status")
        assert response.status_code == 200, response.text
        current = response.json()["status"]
        if current == status:
            return
        assert current not in {"done", "failure", "canceled"} - {status}, (uid, current)
        if time.monotonic() >= deadline:
            raise AssertionError(f"upload {uid} stayed in {current}, not {status}")
        time.sleep(0.1)


def _json(value: Any) -> str:
    return json.dumps(value, sort_keys=True)


def stored_state(server: Deployment) -> dict[str, Any]:
    """What the pages' POSTs can change, for every organization: compare before and after a refused POST."""
    with server.db() as db:
        return {
            "uploads": sorted(
                (
                    row.uid,
                    row.status,
                    _json(row.fields_map),
                    _json(row.values_map),
                    row.updated_at.isoformat(),
                )
                for row in db.scalars(select(Upload))
            ),
            "mappings": sorted(
                (row.uid, row.name, _json(row.fields_map), _json(row.values_map), row.updated_at.isoformat())
                for row in db.scalars(select(FieldMapping))
            ),
            "api_keys": sorted(
                (row.uid, row.name, row.revoked_at.isoformat() if row.revoked_at else "")
                for row in db.scalars(select(ApiKey))
            ),
            "exports": sorted((row.uid, row.status) for row in db.scalars(select(Export))),
            "deliveries": db.scalar(select(func.count()).select_from(Delivery)),
            "download_tickets": db.scalar(select(func.count()).select_from(DownloadTicket)),
            "web_sessions": sorted(
                (row.id, row.organization_id, row.csrf_token) for row in db.scalars(select(WebSession))
            ),
        }
