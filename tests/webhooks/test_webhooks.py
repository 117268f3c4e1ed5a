"""Webhooks against a live server and a receiver on loopback: signed deliveries of published exports and
upload status changes, retries with backoff logged per attempt, admins only, one organization's events
never sent to another's webhooks."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from contextlib import closing
from datetime import datetime
from itertools import pairwise
from pathlib import Path
from typing import Any

import httpx2
import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import select, update

from datalab.accounts.models import Organization
from datalab.audit.models import AuditEvent
from datalab.db import make_engine, make_session_factory, transaction, utcnow
from datalab.scoping import OrgContext
from datalab.settings import Settings
from datalab.webhooks import service
from datalab.webhooks.models import EVENT_TYPES, Webhook, WebhookDelivery
from datalab.webhooks.sealing import SecretBox, seal_plaintext_secrets
from tests.conftest import ServerFactory
from tests.support.accounts import login_as
from tests.support.checks import assert_envelope, wait_for
from tests.support.databases import postgres_url
from tests.support.exports import publish, sample_rows, write_csv
from tests.support.factories import add_account, add_organization
from tests.support.receivers import Received, Receiver, running_receiver, verified
from tests.support.server import LiveServer, LoggedIn
from tests.support.uploads import send_file
from tests.web.pages import PageClient, sign_in

# Growing waits, short enough that a delivery runs out of them within seconds.
RETRY_SECONDS = [0.2, 0.4, 0.8]
ROSTER = b"UniqueID,EntryYear,Applied\r\n00777,2026,2025-10-01\r\n"


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    with running_receiver() as running:
        yield running


@pytest.fixture(scope="module")
def live(make_server: ServerFactory) -> LiveServer:
    # Its own process: the test reads its log and its /metrics, which no other server may share.
    return make_server(
        own_process=True,
        pipeline_workers="1",
        webhook_allow_private_targets="1",
        webhook_retry_seconds=json.dumps(RETRY_SECONDS),
        webhook_poll_seconds="0.1",
        webhook_timeout_seconds="3",
    )


@pytest.fixture(scope="module")
def admin(live: LiveServer) -> LoggedIn:
    return live.login()


def create(live: LiveServer, admin: LoggedIn, url: str, events: list[str]) -> dict[str, Any]:
    response = httpx2.post(
        live.base_url + "/webhooks", headers=admin.headers, json={"url": url, "events": events}
    )
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


def deliveries(live: LiveServer, admin: LoggedIn, uid: str) -> list[dict[str, Any]]:
    response = httpx2.get(f"{live.base_url}/webhooks/{uid}/deliveries", headers=admin.headers)
    assert response.status_code == 200, response.text
    listed: list[dict[str, Any]] = response.json()
    return listed


def box_of(server: LiveServer) -> SecretBox:
    """The key the server encrypts webhook secrets with."""
    return SecretBox(Settings(secret_key=server.env["DATALAB_SECRET_KEY"]).encryption_key)


def other_organization_webhook(live: LiveServer, url: str) -> str:
    """A webhook of a second organization subscribed to everything (made as an operator would)."""
    other = add_organization(live)
    engine = make_engine(live.database_url)
    try:
        with transaction(make_session_factory(engine)) as db:
            organization = db.scalars(select(Organization).where(Organization.uid == other.uid)).one()
            created = service.create_webhook(
                db=db,
                org=OrgContext(user=None, organization=organization),
                url=url,
                events=list(EVENT_TYPES),
                active=True,
                description="",
                box=box_of(live),
                allow_private=True,
                now=utcnow(),
            )
            return created.webhook.uid
    finally:
        engine.dispose()


def test_signed_export_published_and_upload_status_changed_reach_only_their_organization(
    live: LiveServer, admin: LoggedIn, receiver: Receiver, tmp_path: Path
) -> None:
    created = create(live, admin, receiver.url("/ok"), ["export.published", "upload.status_changed"])
    other = other_organization_webhook(live, receiver.url("/other"))
    published = publish(
        live, write_csv(tmp_path / "list.csv", ["ID", "Name"], sample_rows(3)), product="prospect"
    )
    with httpx2.Client(timeout=30) as client:
        upload_uid = send_file(client, live, admin, ROSTER)

    assert wait_for(lambda: len(receiver.on("/ok", "export.published")) == 1, timeout=15)
    export_event = receiver.on("/ok", "export.published")[0]
    assert verified(export_event, created["secret"])
    assert not verified(export_event, "whsec_not-the-secret")
    document = export_event.json()
    assert document["type"] == "export.published"
    assert document["organization"] == admin.organization_uid
    assert document["data"]["export"]["uid"] == published["uid"]
    assert document["data"]["export"]["quantity"] == 3
    assert datetime.fromisoformat(document["createdAt"]).tzinfo is not None
    assert abs(int(export_event.headers["x-datalab-timestamp"]) - time.time()) < 60

    def arrived() -> bool:
        return any(
            request.json()["data"]["upload"]["uid"] == upload_uid
            and request.json()["data"]["status"] == "analyzing"
            for request in receiver.on("/ok", "upload.status_changed")
        )

    assert wait_for(arrived, timeout=15)
    changes = [
        request
        for request in receiver.on("/ok", "upload.status_changed")
        if request.json()["data"]["upload"]["uid"] == upload_uid
    ]
    assert all(verified(request, created["secret"]) for request in changes)
    assert changes[0].json()["data"]["previousStatus"] == "uploading"
    assert len({request.headers["x-datalab-delivery"] for request in changes}) == len(changes)

    log = deliveries(live, admin, created["uid"])
    assert {entry["eventType"] for entry in log} == {"export.published", "upload.status_changed"}
    delivered = [entry for entry in log if entry["state"] == "delivered"]
    assert delivered and all(entry["attempts"][0]["responseStatus"] == 204 for entry in delivered)
    # The other organization's webhook got nothing of this organization's, nor will it: an event's
    # deliveries are stored with the event, and none was stored for it.
    with live.db() as db:
        queued = db.scalars(select(WebhookDelivery).join(Webhook).where(Webhook.uid == other)).all()
    assert queued == []
    assert receiver.on("/other") == []


def test_a_failing_receiver_is_retried_with_backoff_then_the_delivery_fails(
    live: LiveServer, admin: LoggedIn, receiver: Receiver, tmp_path: Path
) -> None:
    created = create(live, admin, receiver.url("/fail"), ["export.published"])
    publish(live, write_csv(tmp_path / "list.csv", ["ID", "Name"], sample_rows(2)), product="inquiry")
    attempts = 1 + len(RETRY_SECONDS)

    def failed() -> bool:
        log = deliveries(live, admin, created["uid"])
        return len(log) == 1 and log[0]["state"] == "failed"

    assert wait_for(failed, timeout=30)
    (delivery,) = deliveries(live, admin, created["uid"])
    assert [attempt["responseStatus"] for attempt in delivery["attempts"]] == [500] * attempts
    assert all(
        attempt["error"] == "HTTP 500" and attempt["durationMs"] >= 0 for attempt in delivery["attempts"]
    )
    assert delivery["nextAttemptAt"] is None and delivery["finishedAt"] is not None
    sent = receiver.on("/fail")
    assert len(sent) == attempts
    assert {request.headers["x-datalab-delivery"] for request in sent} == {delivery["uid"]}
    assert all(verified(request, created["secret"]) for request in sent)
    gaps = [later.at - earlier.at for earlier, later in pairwise(sent)]
    assert all(gap >= wait * 0.9 for gap, wait in zip(gaps, RETRY_SECONDS, strict=True)), gaps
    assert gaps[2] > gaps[0]
    outcomes = {
        sample.labels["outcome"]: sample.value
        for family in text_string_to_metric_families(httpx2.get(live.root + "/metrics").text)
        for sample in family.samples
        if sample.name == "datalab_webhook_attempts_total" and sample.labels["event"] == "export.published"
    }
    assert outcomes["retrying"] == len(RETRY_SECONDS) and outcomes["failed"] == 1
    server_log = (live.home / "server.log").read_text()
    assert f"webhook delivery {delivery['uid']} (export.published) attempt {attempts}: 500" in server_log
    assert created["secret"] not in server_log
    assert receiver.url("/fail") not in server_log


def send_test_event(live: LiveServer, admin: LoggedIn, receiver: Receiver, created: dict[str, Any]) -> str:
    """Send the webhook its test event and check it arrives signed with its secret: the delivery's uid."""
    response = httpx2.post(f"{live.base_url}/webhooks/{created['uid']}/test", headers=admin.headers)
    assert response.status_code == 202, response.text
    delivery_uid: str = response.json()["uid"]
    assert wait_for(
        lambda: any(
            r.headers["x-datalab-delivery"] == delivery_uid for r in receiver.on("/ok", "webhook.test")
        ),
        timeout=15,
    )
    test_event = next(
        r for r in receiver.on("/ok", "webhook.test") if r.headers["x-datalab-delivery"] == delivery_uid
    )
    assert verified(test_event, created["secret"])
    return delivery_uid


def assert_invalid_url_and_events_refused(live: LiveServer, admin: LoggedIn, uid: str) -> None:
    assert_envelope(
        httpx2.post(
            live.base_url + "/webhooks",
            headers=admin.headers,
            json={"url": "ftp://example.edu/", "events": ["export.published"]},
        ),
        422,
        "invalid_url",
    )
    assert_envelope(
        httpx2.patch(
            f"{live.base_url}/webhooks/{uid}",
            headers=admin.headers,
            json={"events": ["export.deleted"]},
        ),
        422,
        "invalid_events",
    )


def assert_members_refused(live: LiveServer, receiver: Receiver, uid: str) -> None:
    """A member who is not an admin may not list, create, read the deliveries of or test a webhook."""
    member = login_as(live, add_account(live))
    for method, path in (
        ("GET", ""),
        ("POST", ""),
        ("GET", f"/{uid}/deliveries"),
        ("POST", f"/{uid}/test"),
    ):
        body = (
            {"url": receiver.url("/ok"), "events": ["export.published"]}
            if method == "POST" and not path
            else None
        )
        answered = httpx2.request(
            method, live.base_url + "/webhooks" + path, headers=member.headers, json=body
        )
        assert_envelope(answered, 403, "admin_required")


def test_test_event_and_management_by_admins_only(
    live: LiveServer, admin: LoggedIn, receiver: Receiver
) -> None:
    created = create(live, admin, receiver.url("/ok"), ["upload.status_changed"])
    assert (
        "secret" not in httpx2.get(f"{live.base_url}/webhooks/{created['uid']}", headers=admin.headers).json()
    )
    listed = httpx2.get(live.base_url + "/webhooks", headers=admin.headers).json()
    assert created["uid"] in {entry["uid"] for entry in listed}
    assert all("secret" not in entry for entry in listed)

    delivery_uid = send_test_event(live, admin, receiver, created)

    updated = httpx2.patch(
        f"{live.base_url}/webhooks/{created['uid']}", headers=admin.headers, json={"active": False}
    )
    assert updated.status_code == 200 and updated.json()["active"] is False
    assert_invalid_url_and_events_refused(live, admin, created["uid"])
    assert_members_refused(live, receiver, created["uid"])
    deleted = httpx2.delete(f"{live.base_url}/webhooks/{created['uid']}", headers=admin.headers)
    assert deleted.status_code == 204
    assert_envelope(
        httpx2.get(f"{live.base_url}/webhooks/{created['uid']}", headers=admin.headers), 404, "not_found"
    )

    with live.db() as db:
        recorded = db.scalars(select(AuditEvent).where(AuditEvent.target_id == created["uid"])).all()
        assert db.scalars(select(WebhookDelivery).where(WebhookDelivery.uid == delivery_uid)).first() is None
    assert [event.action for event in recorded] == [
        "webhook.created",
        "webhook.test_sent",
        "webhook.updated",
        "webhook.deleted",
    ]
    assert created["secret"] not in json.dumps([event.detail for event in recorded])


def test_secrets_are_stored_encrypted_and_a_rotated_secret_signs_from_then_on(
    live: LiveServer, admin: LoggedIn, receiver: Receiver
) -> None:
    created = create(live, admin, receiver.url("/ok"), ["upload.status_changed"])
    with live.db() as db:
        stored = db.scalars(select(Webhook.secret).where(Webhook.uid == created["uid"])).one()
    assert created["secret"] not in stored and box_of(live).open(stored) == created["secret"]

    rotated = httpx2.post(f"{live.base_url}/webhooks/{created['uid']}/rotate-secret", headers=admin.headers)
    assert rotated.status_code == 200, rotated.text
    new_secret = rotated.json()["secret"]
    assert new_secret.startswith("whsec_") and new_secret != created["secret"]
    assert rotated.json()["uid"] == created["uid"]
    sent = httpx2.post(f"{live.base_url}/webhooks/{created['uid']}/test", headers=admin.headers).json()

    def received() -> list[Received]:
        return [r for r in receiver.on("/ok") if r.headers["x-datalab-delivery"] == sent["uid"]]

    assert wait_for(lambda: bool(received()), timeout=15)
    assert verified(received()[0], new_secret) and not verified(received()[0], created["secret"])
    member = login_as(live, add_account(live))
    assert_envelope(
        httpx2.post(f"{live.base_url}/webhooks/{created['uid']}/rotate-secret", headers=member.headers),
        403,
        "admin_required",
    )
    with live.db() as db:
        recorded = db.scalars(select(AuditEvent).where(AuditEvent.target_id == created["uid"])).all()
    assert "webhook.secret_rotated" in [event.action for event in recorded]
    assert new_secret not in json.dumps([event.detail for event in recorded])


def test_secrets_stored_in_plain_text_are_encrypted_in_place(
    live: LiveServer, admin: LoggedIn, receiver: Receiver
) -> None:
    created = create(live, admin, receiver.url("/ok"), ["upload.status_changed"])
    engine = make_engine(live.database_url)
    try:
        factory = make_session_factory(engine)
        with transaction(factory) as db:
            db.execute(update(Webhook).where(Webhook.uid == created["uid"]).values(secret="whsec_plain"))
        assert seal_plaintext_secrets(session_factory=factory, box=box_of(live)) == 1
        assert seal_plaintext_secrets(session_factory=factory, box=box_of(live)) == 0
    finally:
        engine.dispose()
    with live.db() as db:
        stored = db.scalars(select(Webhook.secret).where(Webhook.uid == created["uid"])).one()
    assert stored != "whsec_plain" and box_of(live).open(stored) == "whsec_plain"


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:9/hook",
        "http://localhost/hook",
        "http://10.1.2.3/hook",
        "http://192.168.0.10/hook",
        "http://169.254.169.254/latest/meta-data",
        "http://[::1]/hook",
        "http://[fe80::1%25eth0]/hook",
        "http://[::ffff:127.0.0.1]/hook",
        "http://0.0.0.0/hook",
    ],
)
def test_non_public_targets_are_refused_unless_allowed(server: LiveServer, url: str) -> None:
    admin = server.login()
    refused = httpx2.post(
        server.base_url + "/webhooks",
        headers=admin.headers,
        json={"url": url, "events": ["export.published"]},
    )
    body = assert_envelope(refused, 422, "private_address")
    assert "public addresses only" in body["message"]


@pytest.mark.skipif(
    postgres_url() is None, reason="procrastinate needs PostgreSQL (set DATALAB_TEST_DATABASE_URL)"
)
def test_procrastinate_workers_deliver_and_retry(
    make_server: ServerFactory, receiver: Receiver, tmp_path: Path
) -> None:
    queued = make_server(
        pipeline_queue="procrastinate",
        pipeline_workers="1",
        webhook_allow_private_targets="1",
        webhook_retry_seconds=json.dumps(RETRY_SECONDS[:2]),
        webhook_timeout_seconds="3",
        # A retry is a job deferred to a later time, which no notification announces: the worker finds
        # it when it next looks.
        pipeline_poll_seconds="0.1",
    )
    queued.start_worker()
    admin = queued.login()
    delivered = create(queued, admin, receiver.url("/ok"), ["export.published"])
    failing = create(queued, admin, receiver.url("/fail"), ["export.published"])
    before = len(receiver.on("/fail"))
    publish(queued, write_csv(tmp_path / "list.csv", ["ID", "Name"], sample_rows(2)), product="declared")

    def settled() -> bool:
        return [entry["state"] for entry in deliveries(queued, admin, delivered["uid"])] == [
            "delivered"
        ] and [entry["state"] for entry in deliveries(queued, admin, failing["uid"])] == ["failed"]

    assert wait_for(settled, timeout=60)
    (failed,) = deliveries(queued, admin, failing["uid"])
    assert [attempt["responseStatus"] for attempt in failed["attempts"]] == [500, 500, 500]
    sent = receiver.on("/fail")[before:]
    assert len(sent) == 3 and all(verified(request, failing["secret"]) for request in sent)
    assert sent[2].at - sent[1].at >= RETRY_SECONDS[1] * 0.9


def test_the_data_center_page_adds_a_webhook_and_sends_it_a_test_event(
    live: LiveServer, receiver: Receiver
) -> None:
    assert live.demo is not None
    with closing(sign_in(live, live.demo.user_name, live.demo.password)) as page:
        admin_page_adds_and_tests(live, receiver, page)


def admin_page_adds_and_tests(live: LiveServer, receiver: Receiver, page: PageClient) -> None:
    assert 'href="/datacenter/webhooks"' in page.get("/datacenter/webhooks").text
    added = page.post(
        "/datacenter/webhooks",
        {"url": receiver.url("/ok"), "events": ["export.published"], "description": "CRM"},
    )
    assert added.status_code == 200, added.text
    assert added.headers["cache-control"] == "no-store"
    secret = re.search(r'<code id="new-secret">([^<]+)</code>', added.text)
    assert secret is not None
    with live.db() as db:
        webhook = db.scalars(select(Webhook).where(Webhook.description == "CRM")).one()
    assert secret.group(1) not in page.get("/datacenter/webhooks").text
    assert page.post(f"/datacenter/webhooks/{webhook.uid}/test").status_code == 303
    assert wait_for(
        lambda: any(verified(request, secret.group(1)) for request in receiver.on("/ok", "webhook.test")),
        timeout=15,
    )
    assert wait_for(lambda: "delivered" in page.get("/datacenter/webhooks").text, timeout=5)
    assert (
        page.post(
            "/datacenter/webhooks", {"url": "file:///etc/passwd", "events": ["export.published"]}
        ).status_code
        == 422
    )
    assert page.post(f"/datacenter/webhooks/{webhook.uid}/test", with_csrf=False).status_code == 403

    member = add_account(live)
    with closing(sign_in(live, member.user_name, member.password)) as member_page:
        assert "/datacenter/webhooks" not in member_page.get("/datacenter/exports").text
        assert member_page.get("/datacenter/webhooks").status_code == 403
    assert page.post(f"/datacenter/webhooks/{webhook.uid}/delete").status_code == 303
