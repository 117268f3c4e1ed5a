"""Retention: exports and upload files are deleted at the end of their retention period, records kept."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import httpx2
import pytest
from sqlalchemy import select, update

from datalab.audit.models import AuditEvent
from datalab.db import utcnow
from datalab.exports.models import Export
from datalab.pipeline.keys import report_key
from datalab.uploads.models import Upload
from tests.conftest import AppFactory
from tests.support.accounts import DEMO_FICE
from tests.support.checks import wait_for
from tests.support.client import EXPORTS_BUCKET
from tests.support.exports import admin_json, publish
from tests.support.inprocess import InProcessApp
from tests.support.server import LoggedIn
from tests.support.uploads import UPLOADS_BUCKET, row_report, upload_and_wait

ROSTER = b"UniqueID,EntryYear,EntryTerm,Applied\r\n00001,2027,Fall,2026/10/01\r\n"


@pytest.fixture(scope="module")
def retaining(make_app: AppFactory) -> InProcessApp:
    """An app keeping exports and ended uploads one day, sweeping every second (in its lifespan)."""
    return make_app(
        pipeline_workers="2",
        pipeline_poll_seconds="0.1",
        export_retention_days="1",
        upload_retention_days="1",
        upload_sweep_interval_seconds="1",
    )


@pytest.fixture(scope="module")
def demo(retaining: InProcessApp) -> LoggedIn:
    return retaining.login()


@pytest.fixture
def client(retaining: InProcessApp) -> httpx2.Client:
    return retaining.client


def _age(server: InProcessApp, model: type[Export] | type[Upload], uid: str, column: str) -> None:
    """Move a record's time back two days, past the one-day retention."""
    with server.db() as db:
        db.execute(update(model).where(model.uid == uid).values({column: utcnow() - timedelta(days=2)}))
        db.commit()


def _events(server: InProcessApp, action: str, uid: str) -> list[AuditEvent]:
    with server.db() as db:
        return list(
            db.scalars(select(AuditEvent).where(AuditEvent.action == action, AuditEvent.target_id == uid))
        )


def _listed(client: httpx2.Client, server: InProcessApp, demo: LoggedIn) -> set[str]:
    response = client.get(f"{server.base_url}/datacenter/exports", headers=demo.headers)
    assert response.status_code == 200, response.text
    return {export["uid"] for export in response.json()}


def test_an_export_past_retention_loses_its_file_and_leaves_the_campus_listing(
    client: httpx2.Client, retaining: InProcessApp, demo: LoggedIn, tmp_path: Path
) -> None:
    source = tmp_path / "prospects.csv"
    source.write_bytes(b"ID,FIRSTNAME\r\n1,Ann\r\n")
    kept = publish(retaining, source, product="prospect")
    old = publish(retaining, source, product="prospect")
    assert {kept["uid"], old["uid"]} <= _listed(client, retaining, demo)
    with retaining.db() as db:
        key = db.scalar(select(Export.object_key).where(Export.uid == old["uid"]))
    stored = retaining.home / "objects" / EXPORTS_BUCKET / str(key)
    assert stored.is_file()

    _age(retaining, Export, old["uid"], "created_at")
    assert wait_for(lambda: not stored.exists(), timeout=30)
    assert wait_for(lambda: bool(_events(retaining, "export.expired", old["uid"])), timeout=10)

    listed = _listed(client, retaining, demo)
    assert kept["uid"] in listed and old["uid"] not in listed
    download = client.get(
        f"{retaining.base_url}/datacenter/exports/{old['uid']}/download", headers=demo.headers
    )
    assert download.status_code == 404
    assert download.json()["code"] == "export_not_found"
    with retaining.db() as db:
        expired = db.scalar(select(Export).where(Export.uid == old["uid"]))
    assert expired is not None and expired.expired_at is not None
    # operators still see it, as expired
    statuses = {
        row["uid"]: row["status"]
        for row in admin_json(retaining, "admin", "export", "list", "--org", DEMO_FICE)
    }
    assert statuses[old["uid"]] == "Expired" and statuses[kept["uid"]] != "Expired"
    (event,) = _events(retaining, "export.expired", old["uid"])
    assert event.actor_name == "retention"


def test_an_ended_upload_past_retention_loses_its_file_and_row_report(
    client: httpx2.Client, retaining: InProcessApp, demo: LoggedIn
) -> None:
    record = upload_and_wait(client, retaining, demo, ROSTER)
    assert record["status"] == "done", record
    assert row_report(client, retaining, demo, record["id"]).status_code == 200
    with retaining.db() as db:
        key = db.scalar(select(Upload.object_key).where(Upload.uid == record["id"]))
    uploads = retaining.home / "objects" / UPLOADS_BUCKET
    assert (uploads / str(key)).is_file() and (uploads / report_key(record["id"])).is_file()

    _age(retaining, Upload, record["id"], "updated_at")
    assert wait_for(lambda: not (uploads / str(key)).exists(), timeout=30)
    assert wait_for(lambda: bool(_events(retaining, "upload.files_removed", record["id"])), timeout=10)

    assert not (uploads / report_key(record["id"])).exists()
    report = row_report(client, retaining, demo, record["id"])
    assert report.status_code == 404
    assert report.json()["code"] == "report_not_found"
    assert "retention" in report.json()["message"]
    # the record itself stays
    still = client.get(f"{retaining.base_url}/files/{record['id']}", headers=demo.headers)
    assert (still.status_code, still.json()["status"]) == (200, "done")
