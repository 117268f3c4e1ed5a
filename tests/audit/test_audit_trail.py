"""The audit trail over a scripted session against the in-process app: every action is recorded, once,
with its actor, target and origin; nothing secret is; admins read it, members cannot; rows cannot change."""

from __future__ import annotations

import csv
import io
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx2
import pytest
from sqlalchemy import select, text
from sqlalchemy.exc import DBAPIError

from datalab.accounts.service import create_organization
from datalab.audit.models import AuditEvent
from datalab.db import make_session_factory, transaction
from tests.conftest import AppFactory
from tests.support.checks import assert_envelope
from tests.support.exports import admin_json, download_url, publish, sample_rows, write_csv
from tests.support.inprocess import InProcessApp
from tests.support.server import LoggedIn
from tests.support.uploads import create_upload, send_file, wait_for_status
from tests.web.pages import sign_in

ALICE = "alice@audit.example.edu"
ALICE_PASSWORD = "alice-password-1234"
WRONG_PASSWORD = "not-alices-password-9876"
UNMAPPED_CSV = b"Learner,Cohort,Applied On\r\n00777,2026,2025-10-01\r\n00778,2026,2025-10-02\r\n"
FIELDS_MAP = {"UniqueID": "Learner", "EntryYear": "Cohort", "Applied": "Applied On"}


@dataclass
class Session:
    """What the scripted session did and every secret it handled."""

    server: InProcessApp
    demo: LoggedIn
    alice: LoggedIn
    export_uid: str
    downloaded_bytes: int
    upload_uid: str
    canceled_uid: str
    alice_key_uid: str
    published_uid: str
    secrets: list[str] = field(default_factory=list)


def _events(server: InProcessApp) -> list[AuditEvent]:
    with server.db() as db:
        return list(db.scalars(select(AuditEvent).order_by(AuditEvent.id)))


def _login(server: InProcessApp, user_name: str, password: str, api_key: str) -> httpx2.Response:
    return server.request(
        "POST",
        "/v1/login",
        headers={"x-api-key": api_key},
        json={"userName": user_name, "password": password, "acceptedTerms": True},
    )


def _operator_setup(server: InProcessApp) -> tuple[str, str]:
    """An operator creates an organization member and a key for them; the key's uid and value."""
    assert server.demo is not None
    admin_json(
        server, "admin", "user", "create", "--user-name", ALICE, "--org", server.demo.organization_uid,
        "--password", ALICE_PASSWORD,
    )  # fmt: skip
    issued = admin_json(server, "admin", "apikey", "create", "--user", ALICE, "--name", "alice laptop")
    return str(issued["uid"]), str(issued["apiKey"])


def _download(client: httpx2.Client, server: InProcessApp, demo: LoggedIn) -> tuple[str, int, str]:
    exports = client.get(server.base_url + "/datacenter/exports", headers=demo.headers).json()
    uid = exports[0]["uid"]
    url = download_url(client, server, demo, uid)
    response = client.get(url)
    assert response.status_code == 200
    return uid, len(response.content), url


def _uploads(client: httpx2.Client, server: InProcessApp, demo: LoggedIn) -> tuple[str, str, list[str]]:
    """One upload mapped by hand and processed by the pipeline, one canceled (and its form's secrets)."""
    uid = send_file(client, server, demo, UNMAPPED_CSV, file_name="unmapped.csv")
    # An API upload whose headers match no saved mapping fails analysis and waits to be mapped by hand.
    wait_for_status(client, server, demo, uid, until=frozenset({"failure"}))
    processed = client.post(
        f"{server.base_url}/files/{uid}/process", headers=demo.headers, json={"fieldsMap": FIELDS_MAP}
    )
    assert processed.status_code == 200, processed.text
    wait_for_status(client, server, demo, uid, until=frozenset({"done", "failure"}))
    canceled = create_upload(client, server, demo.headers, file_name="later.csv")
    response = client.post(f"{server.base_url}/files/{canceled.id}/cancel", headers=demo.headers)
    assert response.status_code == 200, response.text
    form_secrets = [canceled.fields["x-amz-signature"], canceled.fields["x-amz-security-token"]]
    return uid, canceled.id, form_secrets


@pytest.fixture(scope="module")
def session(make_app: AppFactory, tmp_path_factory: pytest.TempPathFactory) -> Session:
    # The student load trains the model: what is recorded does not depend on how many pairs it samples.
    server = make_app(pipeline_workers="1", ematch_training_pairs="100000")
    assert server.demo is not None
    secrets = [server.demo.password, server.demo.api_key, ALICE_PASSWORD, WRONG_PASSWORD]
    key_uid, alice_key = _operator_setup(server)
    secrets.append(alice_key)
    assert _login(server, ALICE, WRONG_PASSWORD, alice_key).status_code == 401
    assert _login(server, "nobody@audit.example.edu", WRONG_PASSWORD, alice_key).status_code == 401
    alice = server.login(user_name=ALICE, password=ALICE_PASSWORD, api_key=alice_key)
    demo = server.login()
    secrets += [alice.token, demo.token]
    export_uid, size, url = _download(server.client, server, demo)
    secrets += re.findall(r"X-Amz-(?:Signature|Security-Token|Credential)=([^&]+)", url)
    upload_uid, canceled_uid, form_secrets = _uploads(server.client, server, demo)
    secrets += form_secrets
    page = sign_in(server, server.demo.user_name, server.demo.password)
    secrets += [page.cookie or "", page.csrf]
    page.close()
    admin_json(server, "admin", "apikey", "revoke", key_uid)
    source = write_csv(tmp_path_factory.mktemp("audit") / "list.csv", ["Id", "Name"], sample_rows(3))
    published = publish(server, source, product="prospect")
    students = tmp_path_factory.mktemp("students") / "students.csv"
    students.write_text("StudentKey,FirstName,LastName\n00991,Ann,Audit\n", encoding="utf-8")
    admin_json(server, "admin", "students", "load", str(students))
    return Session(
        server=server,
        demo=demo,
        alice=alice,
        export_uid=export_uid,
        downloaded_bytes=size,
        upload_uid=upload_uid,
        canceled_uid=canceled_uid,
        alice_key_uid=key_uid,
        published_uid=published["uid"],
        secrets=[secret for secret in secrets if secret],
    )


def _one(events: list[AuditEvent], action: str, **where: Any) -> AuditEvent:
    found = [e for e in events if e.action == action and all(getattr(e, k) == v for k, v in where.items())]
    assert len(found) == 1, (action, where, [(e.action, e.target_id, e.actor_name) for e in events])
    return found[0]


def test_every_action_of_the_session_is_recorded_once(session: Session) -> None:
    events = _events(session.server)
    created = [e for e in events if e.action == "user.created" and e.detail["userName"] == ALICE]
    assert [(e.actor_name, e.channel) for e in created] == [("operator", "CLI")]
    _one(events, "apikey.created", target_id=session.alice_key_uid, actor_name="operator")
    _one(events, "apikey.revoked", target_id=session.alice_key_uid, actor_name="operator")
    failed = _one(events, "signin.failed", actor_name=ALICE)
    assert failed.detail == {"reason": "wrong_password"}
    assert failed.client_address == "127.0.0.1"
    unknown = _one(events, "signin.failed", actor_name="unknown user")
    assert unknown.organization_id is None
    assert unknown.actor_uid == ""
    _one(events, "signin.succeeded", actor_name=ALICE, channel="API")
    _one(events, "signin.succeeded", actor_name=session.demo.body["user"]["userName"], channel="DataCenter")
    _one(events, "export.download_url_issued", target_id=session.export_uid)
    downloaded = _one(events, "export.downloaded", target_id=session.export_uid)
    assert downloaded.size_bytes == session.downloaded_bytes
    assert downloaded.client_address == "127.0.0.1"
    assert downloaded.actor_name == session.demo.body["user"]["userName"]
    _one(events, "upload.created", target_id=session.upload_uid)
    received = _one(events, "upload.received", target_id=session.upload_uid, channel="store")
    assert received.size_bytes == len(UNMAPPED_CSV)
    mapping = _one(events, "mapping.saved")
    assert mapping.detail["fields"] == sorted(FIELDS_MAP)
    _one(events, "upload.processing_requested", target_id=session.upload_uid)
    _one(events, "upload.canceled", target_id=session.canceled_uid)
    _one(events, "export.published", target_id=session.published_uid, actor_name="operator")
    loaded = _one(events, "students.loaded", actor_name="operator", organization_id=None)
    assert loaded.detail == {"file": "students.csv", "inserted": 1, "updated": 0}
    _one(events, "students.model_trained", actor_name="operator", channel="CLI")


def test_the_pipeline_records_each_status_change_up_to_the_final_one(session: Session) -> None:
    moves = [
        (e.detail["from"], e.detail["to"])
        for e in _events(session.server)
        if e.action == "upload.status_changed" and e.target_id == session.upload_uid
    ]
    assert moves[0] == ("analyzing", "failure")
    assert ("enqueued", "cleansing") in moves
    assert moves[-1][1] in {"done", "failure"}
    assert all(
        e.actor_name == "pipeline" and e.channel == "pipeline"
        for e in _events(session.server)
        if e.action == "upload.status_changed"
    )


def test_nothing_secret_is_stored(session: Session) -> None:
    assert len(session.secrets) >= 8
    with session.server.engine.connect() as connection:
        rows = connection.execute(text("SELECT * FROM audit_events")).all()
    assert rows
    stored = "\n".join(json.dumps([str(value) for value in row]) for row in rows)
    for secret in session.secrets:
        assert secret not in stored


def test_admins_read_their_organization_trail_and_members_cannot(session: Session) -> None:
    server = session.server
    response = server.request("GET", "/v1/audit", headers=session.demo.headers, params={"limit": "5"})
    assert response.status_code == 200, response.text
    assert len(response.json()) == 5
    assert int(response.headers["total-count"]) > 5
    assert {event["organizationUid"] for event in response.json()} == {session.demo.organization_uid}
    # Alice's key was revoked since: her session token alone still signs her calls.
    member = {
        "Authorization": f"Bearer {session.alice.token}",
        "Organization": session.alice.organization_uid,
    }
    assert_envelope(server.request("GET", "/v1/audit", headers=member), 403, "admin_required")
    exported = server.request("GET", "/v1/audit/export", headers=session.demo.headers)
    assert exported.status_code == 200
    rows = list(csv.DictReader(io.StringIO(exported.text)))
    assert {row["organizationUid"] for row in rows} == {session.demo.organization_uid}
    assert "signin.failed" in {row["action"] for row in rows}
    since = server.request("GET", "/v1/audit", headers=session.demo.headers, params={"since": "yesterday"})
    assert_envelope(since, 400, "invalid_since")


def test_operators_export_every_organization_and_none(session: Session, tmp_path: Path) -> None:
    server = session.server
    everything = server.invoke("admin", "audit", "export").stdout
    rows = list(csv.DictReader(io.StringIO(everything)))
    assert "" in {row["organizationUid"] for row in rows}  # the unknown user's sign-in
    assert len(rows) == len(_events(server))
    target = tmp_path / "audit.csv"
    written = server.invoke("admin", "audit", "export", "--org", session.demo.organization_uid,
                            "--since", "2000-01-01", "--output", str(target))  # fmt: skip
    assert written.exit_code == 0, written.output
    scoped = list(csv.DictReader(io.StringIO(target.read_text(encoding="utf-8"), newline="")))
    assert {row["organizationUid"] for row in scoped} == {session.demo.organization_uid}
    refused = server.invoke("admin", "audit", "export", "--since", "soon")
    assert refused.exit_code != 0
    assert "since must be" in refused.stderr


def _create_organization_then_fail(server: InProcessApp) -> None:
    with transaction(make_session_factory(server.engine)) as db:
        create_organization(db=db, name="Rolled Back College", fice="990099")
        assert any(isinstance(row, AuditEvent) for row in db.new)
        raise RuntimeError("the action fails after it was recorded")


def test_an_action_rolled_back_leaves_no_record(session: Session) -> None:
    with pytest.raises(RuntimeError, match="after it was recorded"):
        _create_organization_then_fail(session.server)
    assert not [e for e in _events(session.server) if e.detail.get("fice") == "990099"]
    before = len(_events(session.server))
    duplicate = session.server.invoke(
        "admin", "user", "create", "--user-name", ALICE, "--org", session.demo.organization_uid,
        "--password", "another-password-1",
    )  # fmt: skip
    assert duplicate.exit_code != 0
    assert len(_events(session.server)) == before


def test_recorded_events_cannot_be_changed_or_deleted(session: Session) -> None:
    for statement in ("UPDATE audit_events SET actor_name = 'someone else'", "DELETE FROM audit_events"):
        with pytest.raises(DBAPIError, match="append-only"), session.server.engine.begin() as connection:
            connection.execute(text(statement))
    assert _events(session.server)


def test_the_data_center_page_lists_the_trail_for_admins_only(session: Session) -> None:
    server = session.server
    assert server.demo is not None
    page = sign_in(server, server.demo.user_name, server.demo.password)
    try:
        listing = page.get("/datacenter/audit")
        assert listing.status_code == 200
        assert 'href="/datacenter/audit"' in listing.text
        assert "signin.failed" in listing.text
        total = int(re.findall(r"<caption>(\d+) events</caption>", listing.text)[0])
        assert total == len([e for e in _events(server) if e.organization_id is not None])
        assert ('href="/datacenter/audit?offset=50"' in listing.text) == (total > 50)
        later = page.get("/datacenter/audit?offset=10")
        assert later.status_code == 200
        assert 'href="/datacenter/audit?offset=0"' in later.text
        assert later.text.count("<tr>") == min(50, total - 10) + 1
        exported = page.get("/datacenter/audit.csv")
        assert exported.status_code == 200
        assert exported.text.startswith("id,occurredAt,organizationUid")
        assert page.cookie and page.cookie not in exported.text
    finally:
        page.close()
    member = sign_in(server, ALICE, ALICE_PASSWORD)
    try:
        assert 'href="/datacenter/audit"' not in member.get("/datacenter/exports").text
        assert member.get("/datacenter/audit").status_code == 403
        assert member.get("/datacenter/audit.csv").status_code == 403
    finally:
        member.close()
