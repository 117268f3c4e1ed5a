"""The operator API (/v1/admin): operators only, every action audited, exports published through a
presigned POST form and downloaded by the college, withdrawn, through the in-process app."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import select

from datalab.audit.models import AuditEvent
from datalab.exports.models import Export
from tests.support.accounts import unique, unique_fice
from tests.support.admin import (
    Operator,
    call,
    campus_exports,
    make_college,
    make_operator,
    publish_form,
)
from tests.support.checks import assert_envelope, s3_error
from tests.support.exports import download_url
from tests.support.inprocess import InProcessApp
from tests.support.server import MovableClock
from tests.support.uploads import form_parts, post_parts

AppFactory = Callable[..., InProcessApp]
CSV = b"ID,FIRSTNAME,LASTNAME\r\n00000001,Ana,O'Brien\r\n00000002,Jos\xc3\xa9,N\xc3\xba\xc3\xb1ez\r\n"


@pytest.fixture(scope="module")
def operator(api: InProcessApp) -> Operator:
    return make_operator(api)


def test_operator_publishes_an_export_with_a_presigned_form_and_the_college_downloads_it(
    api: InProcessApp, operator: Operator
) -> None:
    college = make_college(api, operator)
    form = publish_form(api, operator, college)
    uid = form["export"]["uid"]
    assert form["export"]["state"] == "awaiting_file"
    assert form["url"] == api.root + "/datalab-exports"
    assert campus_exports(api, college) == []

    posted = post_parts(api.client, form["url"], form_parts(form["fields"], CSV, filename="list.csv"))
    assert posted.status_code == 204, posted.text
    assert campus_exports(api, college) == [uid]
    url = download_url(api.client, api, college.logged_in, uid)
    downloaded = api.client.get(url)
    assert downloaded.status_code == 200, downloaded.text
    assert downloaded.content == CSV

    shown = call(api, operator, "GET", f"/v1/admin/organizations/{college.organization['uid']}/exports/{uid}")
    assert shown.status_code == 200, shown.text
    assert shown.json()["state"] == "published"
    assert shown.json()["quantity"] == 2
    assert shown.json()["status"] == "Delivered"
    with api.db() as db:
        export = db.scalars(select(Export).where(Export.uid == uid)).one()
        assert export.form_token is None
        assert export.size_bytes == len(CSV)


def test_a_form_is_spent_once_its_file_arrived(api: InProcessApp, operator: Operator) -> None:
    college = make_college(api, operator)
    form = publish_form(api, operator, college)
    assert post_parts(api.client, form["url"], form_parts(form["fields"], CSV)).status_code == 204
    again = post_parts(api.client, form["url"], form_parts(form["fields"], b"A\r\n1\r\n"))
    s3_error(
        again,
        status=400,
        code="InvalidToken",
        message="The provided token is malformed or otherwise invalid.",
    )


def test_withdrawn_export_leaves_the_list_and_its_downloads_are_refused(
    api: InProcessApp, operator: Operator
) -> None:
    college = make_college(api, operator)
    form = publish_form(api, operator, college)
    uid = form["export"]["uid"]
    withdraw = f"/v1/admin/organizations/{college.organization['fice']}/exports/{uid}/withdraw"
    assert post_parts(api.client, form["url"], form_parts(form["fields"], CSV)).status_code == 204
    issued = download_url(api.client, api, college.logged_in, uid)
    withdrawn = call(api, operator, "POST", withdraw)
    assert withdrawn.status_code == 200, withdrawn.text
    assert withdrawn.json()["state"] == "withdrawn"
    assert campus_exports(api, college) == []
    refused = api.client.get(f"/v1/datacenter/exports/{uid}/download", headers=college.logged_in.headers)
    assert_envelope(refused, 404, "export_not_found")
    s3_error(api.client.get(issued), status=403, code="AccessDenied", message="Access Denied")
    assert_envelope(call(api, operator, "POST", withdraw), 409, "export_withdrawn")


def _admin_operations(api: InProcessApp) -> list[tuple[str, str]]:
    """Every operation under /v1/admin in the app's OpenAPI document, path parameters filled in."""
    document = api.client.get("/v1/openapi.json").json()
    operations = [
        (method.upper(), re.sub(r"\{[^}]+\}", "x", path))
        for path, item in document["paths"].items()
        if path.startswith("/v1/admin/")
        for method in item
    ]
    assert len(operations) >= 15, operations
    return operations


def test_every_admin_route_refuses_campus_users_and_anonymous_callers(
    api: InProcessApp, operator: Operator
) -> None:
    college = make_college(api, operator)
    for method, path in _admin_operations(api):
        campus = api.client.request(method, path, headers=college.logged_in.headers)
        body = assert_envelope(campus, 403, "operator_required")
        assert body["message"] == "Only operators can use the admin API"
        assert_envelope(api.client.request(method, path), 401, "missing_token")


def test_admin_routes_are_documented_with_the_error_envelope(api: InProcessApp) -> None:
    document = api.client.get("/v1/openapi.json").json()
    for path, item in document["paths"].items():
        if not path.startswith("/v1/admin/"):
            continue
        for operation in item.values():
            for status in ("401", "403", "422"):
                schema = operation["responses"][status]["content"]["application/json"]["schema"]
                assert schema == {"$ref": "#/components/schemas/ErrorOut"}, (path, status)
            assert "200" in operation["responses"] or "201" in operation["responses"], path


def test_invalid_bodies_answer_the_validation_envelope(api: InProcessApp, operator: Operator) -> None:
    url = "/v1/admin/organizations"
    body = assert_envelope(
        call(api, operator, "POST", url, json={"name": "", "fice": "001"}), 422, "validation_error"
    )
    assert body["detail"][0]["loc"] == ["body", "name"]
    unknown = call(api, operator, "POST", url, json={"name": "A", "fice": unique_fice(), "colour": "red"})
    assert assert_envelope(unknown, 422, "validation_error")["detail"][0]["loc"] == ["body", "colour"]
    short = call(api, operator, "POST", "/v1/admin/users", json={"userName": "a@b.c", "password": "x"})
    assert assert_envelope(short, 422, "validation_error")["detail"][0]["loc"] == ["body", "password"]
    assert_envelope(call(api, operator, "GET", url, params={"limit": "many"}), 400, "invalid_limit")
    assert_envelope(call(api, operator, "GET", url + "/nope"), 404, "organization_not_found")


def test_organizations_are_listed_in_pages_and_deactivation_locks_their_users_out(
    api: InProcessApp, operator: Operator
) -> None:
    college = make_college(api, operator)
    url = "/v1/admin/organizations"
    page = call(api, operator, "GET", url, params={"limit": "1", "offset": "0"})
    assert page.status_code == 200, page.text
    assert len(page.json()) == 1
    assert int(page.headers["total-count"]) >= 2
    renamed = call(
        api,
        operator,
        "PATCH",
        f"{url}/{college.organization['uid']}",
        json={"name": "Renamed", "stateCode": "ia"},
    )
    assert renamed.json()["name"] == "Renamed"
    assert renamed.json()["stateCode"] == "IA"
    assert campus_exports(api, college) == []
    deactivated = call(api, operator, "POST", f"{url}/{college.organization['uid']}/deactivate")
    assert deactivated.json()["active"] is False
    refused = api.client.get("/v1/datacenter/exports", headers=college.logged_in.headers)
    assert_envelope(refused, 403, "organization_inactive")
    inactive = call(api, operator, "GET", url, params={"active": "false"})
    assert college.organization["uid"] in [item["uid"] for item in inactive.json()]


def test_memberships_status_and_keys(api: InProcessApp, operator: Operator) -> None:
    college = make_college(api, operator)
    other = make_college(api, operator)
    users = f"/v1/admin/users/{college.user['uid']}"
    added = call(
        api,
        operator,
        "PUT",
        users + "/memberships",
        json={"organization": other.organization["fice"], "role": "admin"},
    )
    assert added.status_code == 200, added.text
    assert [(m["organizationUid"], m["role"]) for m in added.json()["memberships"]] == [
        (college.organization["uid"], "member"),
        (other.organization["uid"], "admin"),
    ]
    removed = call(api, operator, "DELETE", f"{users}/memberships/{other.organization['uid']}")
    assert [m["organizationUid"] for m in removed.json()["memberships"]] == [college.organization["uid"]]
    assert_envelope(
        call(api, operator, "DELETE", f"{users}/memberships/{other.organization['uid']}"),
        404,
        "membership_not_found",
    )

    keys = call(api, operator, "GET", users + "/api-keys").json()
    assert [set(key) for key in keys] == [{"uid", "name", "prefix", "createdAt", "lastUsedAt", "revokedAt"}]
    revoked = call(api, operator, "DELETE", f"/v1/admin/api-keys/{keys[0]['uid']}")
    assert revoked.json()["revokedAt"] is not None
    assert_envelope(call(api, operator, "DELETE", "/v1/admin/api-keys/nope"), 404, "api_key_not_found")

    inactive = call(api, operator, "PATCH", users, json={"status": "Inactive"})
    assert inactive.json()["status"] == "Inactive"
    refused = api.client.get("/v1/datacenter/exports", headers=college.logged_in.headers)
    assert refused.status_code == 401


def test_every_operator_action_is_audited_with_the_operator_and_nothing_secret(
    api: InProcessApp, operator: Operator
) -> None:
    college = make_college(api, operator)
    form = publish_form(api, operator, college)
    assert post_parts(api.client, form["url"], form_parts(form["fields"], CSV)).status_code == 204
    uid = form["export"]["uid"]
    call(
        api,
        operator,
        "POST",
        f"/v1/admin/organizations/{college.organization['uid']}/exports/{uid}/withdraw",
    )
    with api.db() as db:
        events = db.scalars(
            select(AuditEvent).where(AuditEvent.actor_uid == operator.uid).order_by(AuditEvent.id)
        ).all()
        mine = [
            (event.action, event.channel)
            for event in events
            if event.target_id in {college.organization["uid"], college.user["uid"], uid}
        ]
        texts = [f"{event.detail} {event.target_id}" for event in events]
    assert mine == [
        ("organization.created", "API"),
        ("user.created", "API"),
        ("export.form_created", "API"),
        ("export.published", "store"),
        ("export.withdrawn", "API"),
    ]
    assert {"apikey.created", "signin.succeeded"} <= {event.action for event in events}
    for text in texts:
        assert operator.password not in text
        assert operator.api_key not in text
        assert operator.token not in text
        assert form["fields"]["x-amz-security-token"] not in text


def test_the_operator_role_is_granted_and_revoked_on_the_command_line(
    api: InProcessApp, operator: Operator, server_clock: MovableClock
) -> None:
    college = make_college(api, operator)
    user_name = college.user["userName"]
    granted = api.admin_json("admin", "user", "set-operator", user_name, "--on")
    assert granted == {"uid": college.user["uid"], "userName": user_name, "operator": True}
    url = "/v1/admin/organizations"
    token = college.logged_in.headers
    assert api.client.get(url, headers=token).status_code == 200
    # Tokens carry whole seconds: revoking them is seen from the next second on.
    server_clock.advance(2)
    api.admin_json("admin", "user", "set-operator", user_name, "--off")
    assert_envelope(api.client.get(url, headers=token), 401, "invalid_token")


def test_a_small_export_is_published_from_the_request_body(api: InProcessApp, operator: Operator) -> None:
    college = make_college(api, operator)
    url = f"/v1/admin/organizations/{college.organization['uid']}/exports/file"
    published = call(
        api,
        operator,
        "POST",
        url,
        params={"productKey": "score-reporter", "orderName": "Spring"},
        content=CSV,
    )
    assert published.status_code == 201, published.text
    assert published.json()["state"] == "published"
    assert published.json()["quantity"] == 2
    assert campus_exports(api, college) == [published.json()["uid"]]
    not_csv = call(api, operator, "POST", url, params={"productKey": "prospect"}, content=b"\xff\xfe\x00")
    assert "export.csv is not UTF-8 text" in assert_envelope(not_csv, 400, "invalid_export")["message"]
    assert_envelope(
        call(api, operator, "POST", url, params={"productKey": "nope"}, content=CSV), 400, "invalid_export"
    )


def test_a_body_past_the_setting_is_refused(make_app: AppFactory) -> None:
    small = make_app(admin_file_max_bytes="64")
    headers = make_operator(small).headers
    refused = small.client.post("/v1/admin/students", headers=headers, content=b"StudentKey\r\n" * 10)
    assert_envelope(refused, 413, "body_too_large")


def test_students_are_loaded_from_the_request_body(api: InProcessApp, operator: Operator) -> None:
    keys = [unique("S") for _ in range(3)]
    rows = "".join(f"{key},Ana,Lopez\r\n" for key in keys)
    url = "/v1/admin/students"
    body = ("StudentKey,FirstName,LastName\r\n" + rows).encode()
    loaded = call(api, operator, "POST", url, params={"train": "false"}, content=body)
    assert loaded.status_code == 200, loaded.text
    assert loaded.json() == {"inserted": 3, "updated": 0, "model": None}
    again = call(api, operator, "POST", url, params={"train": "false"}, content=body)
    assert again.json() == {"inserted": 0, "updated": 3, "model": None}
    broken = call(api, operator, "POST", url, content=b"StudentKey,FirstName\r\nA,B\r\n")
    assert assert_envelope(broken, 400, "invalid_student_file")["message"].startswith("students.csv")
    with api.db() as db:
        loads = db.scalars(select(AuditEvent).where(AuditEvent.action == "students.loaded")).all()
    assert [(event.actor_uid, event.detail["file"]) for event in loads] == [
        (operator.uid, "students.csv")
    ] * 2


def test_the_commands_withdraw_exports_and_deactivate_organizations_like_the_api(
    api: InProcessApp, operator: Operator, tmp_path: Path
) -> None:
    college = make_college(api, operator)
    fice = college.organization["fice"]
    source = tmp_path / "list.csv"
    source.write_bytes(CSV)
    published = api.admin_json("admin", "export", "publish", "--org", fice, "--product", "aos", str(source))
    assert campus_exports(api, college) == [published["uid"]]
    withdrawn = api.admin_json("admin", "export", "withdraw", "--org", fice, published["uid"])
    assert withdrawn["withdrawnAt"] is not None
    assert campus_exports(api, college) == []

    api.admin_json("admin", "org", "set-active", fice, "--off")
    refused = api.client.get("/v1/datacenter/exports", headers=college.logged_in.headers)
    assert_envelope(refused, 403, "organization_inactive")
    api.admin_json("admin", "org", "set-active", fice, "--on")
    assert campus_exports(api, college) == []
    with api.db() as db:
        actions = db.scalars(
            select(AuditEvent.action)
            .where(
                AuditEvent.channel == "CLI",
                AuditEvent.target_id.in_([published["uid"], college.organization["uid"]]),
            )
            .order_by(AuditEvent.id)
        ).all()
    assert actions == [
        "export.published",
        "export.withdrawn",
        "organization.deactivated",
        "organization.reactivated",
    ]
