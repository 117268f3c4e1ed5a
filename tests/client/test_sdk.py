"""The SDK against a real server: login, listing and downloading exports, uploading files, its errors."""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path

import pytest
from sqlalchemy import func, select

from datalab.client import (
    AuthenticationError,
    Client,
    ConfigurationError,
    ConnectionFailed,
    DownloadError,
    NotFound,
    ProcessingFailed,
)
from datalab.exports.models import Delivery, Export
from datalab.uploads.models import Upload
from tests.conftest import ServerFactory
from tests.support.checks import wait_for
from tests.support.client import (
    BROKEN_ENROLLMENT_CSV,
    GOOD_ENROLLMENT_CSV,
    StoredExport,
    files_under,
    stored_exports,
)
from tests.support.exports import PRODUCT_KEYS, file_name_of
from tests.support.factories import add_account, add_organization
from tests.support.server import LiveServer, free_port


def _export_of(server: LiveServer, product_key: str, index: int = 0) -> StoredExport:
    """One of the demo's exports of a product (they are seeded two per product)."""
    chosen = sorted(
        (export for export in stored_exports(server).values() if export.product_key == product_key),
        key=lambda export: export.uid,
    )
    return chosen[index]


def _deliveries(server: LiveServer, uid: str) -> int:
    with server.db() as db:
        count = db.scalar(
            select(func.count(Delivery.id))
            .join(Export, Delivery.export_id == Export.id)
            .where(Export.uid == uid)
        )
        return int(count or 0)


def test_login_picks_the_first_organization_of_the_account(api: LiveServer) -> None:
    assert api.demo is not None
    other = add_organization(api)
    account = add_account(api, organization_uids=[other.uid, api.demo.organization_uid])
    with Client(api.base_url, account.api_key, account.user_name, account.password, environ={}) as client:
        assert client.organization is None
        user = client.login()
        assert [org["uid"] for org in user["organizations"]] == [other.uid, api.demo.organization_uid]
        assert client.organization == other.uid
        # It acts in that organization: the new one has no exports, the demo's 16 are not its own.
        assert list(client.exports()) == []
    with Client(
        api.base_url,
        account.api_key,
        account.user_name,
        account.password,
        api.demo.organization_uid,
        environ={},
    ) as client:
        assert len(list(client.exports())) == 16
        assert client.organization == api.demo.organization_uid


def test_credentials_come_from_the_environment_mapping(api: LiveServer) -> None:
    assert api.demo is not None
    environ = {
        "ENCOURA_BASE_URL": api.root,  # without /v1: the client adds it
        "ENCOURA_API_KEY": api.demo.api_key,
        "ENCOURA_USERNAME": api.demo.user_name,
        "ENCOURA_PASSWORD": api.demo.password,
        "ENCOURA_ORGANIZATION_UID": api.demo.organization_uid,
    }
    with Client(environ=environ) as client:
        assert client.base_url == api.base_url
        assert client.login()["userName"] == api.demo.user_name
        assert client.organization == api.demo.organization_uid


@pytest.fixture(scope="module")
def untouched(make_server: ServerFactory) -> LiveServer:
    """A demo server none of whose exports was delivered yet (the shared one's are, by the sync tests)."""
    return make_server()


def test_exports_lists_every_export_and_filters_by_status_and_product(
    untouched: LiveServer, tmp_path: Path
) -> None:
    assert untouched.demo is not None
    demo = untouched.demo
    with Client(untouched.base_url, demo.api_key, demo.user_name, demo.password, environ={}) as client:
        listed = list(client.exports())
        assert len(listed) == 16
        assert {export.uid for export in listed} == set(stored_exports(untouched))
        assert Counter(export.product_key for export in listed) == dict.fromkeys(PRODUCT_KEYS, 2)
        assert {export.status for export in listed} == {"NotDelivered"}
        created = []
        for export in listed:
            assert export.quantity > 0
            assert export.created_at is not None
            created.append(export.created_at)
        assert created == sorted(created, reverse=True)  # newest first
        assert list(client.exports(status="Delivered")) == []

        delivered = _export_of(untouched, "aos").uid
        client.download(delivered, tmp_path)
        # The server records a delivery once the last byte went out, a moment after the client has it.
        assert wait_for(lambda: stored_exports(untouched)[delivered].status == "Delivered", timeout=10)

        assert [export.uid for export in client.exports(status="Delivered")] == [delivered]
        assert next(client.exports(status="Delivered")).delivered
        not_delivered = list(client.exports(status="NotDelivered"))
        assert {export.uid for export in not_delivered} == {e.uid for e in listed} - {delivered}
        assert not any(export.delivered for export in not_delivered)
        prospects = list(client.exports(product_key="prospect"))
        assert {e.uid for e in prospects} == {e.uid for e in listed if e.product_key == "prospect"}
        assert len(prospects) == 2
        assert [e.uid for e in client.exports(status="Delivered", product_key="aos")] == [delivered]
        assert list(client.exports(status="Delivered", product_key="inquiry")) == []


def test_download_writes_the_exact_bytes_under_the_url_s_file_name(
    api: LiveServer, client: Client, tmp_path: Path
) -> None:
    export = _export_of(api, "score-reporter")
    seen: list[tuple[int, int | None]] = []

    path = client.download(export.uid, tmp_path / "new" / "folder", progress=lambda d, t: seen.append((d, t)))

    assert path == tmp_path / "new" / "folder" / export.file_name
    assert path.read_bytes() == export.content
    assert files_under(path.parent) == [export.file_name]
    assert seen[-1] == (export.size, export.size)
    # The name is the last segment of the one-time URL (an unused URL costs nothing).
    assert file_name_of(client.download_url(export.uid)) == export.file_name
    # A complete transfer counts as a delivery.
    assert wait_for(lambda: stored_exports(api)[export.uid].status == "Delivered", timeout=10)


def test_a_second_download_keeps_the_single_file(api: LiveServer, client: Client, tmp_path: Path) -> None:
    export = _export_of(api, "prospect")
    deliveries = _deliveries(api, export.uid)

    first = client.download(export.uid, tmp_path)
    modified = first.stat().st_mtime_ns
    assert wait_for(lambda: _deliveries(api, export.uid) == deliveries + 1, timeout=10)
    second = client.download(export.uid, tmp_path)

    assert second == first
    assert first.read_bytes() == export.content
    assert files_under(tmp_path) == [export.file_name]
    assert first.stat().st_mtime_ns == modified
    # Both were real transfers, each with its own one-time URL.
    assert wait_for(lambda: _deliveries(api, export.uid) == deliveries + 2, timeout=10)


def test_a_different_existing_file_is_an_error_and_left_untouched(
    api: LiveServer, client: Client, tmp_path: Path
) -> None:
    export = _export_of(api, "ematch")
    existing = tmp_path / export.file_name
    existing.write_bytes(b"our own edited copy\r\n")

    with pytest.raises(DownloadError, match="exists with different content"):
        client.download(export.uid, tmp_path, on_conflict="error")

    assert existing.read_bytes() == b"our own edited copy\r\n"
    assert files_under(tmp_path) == [export.file_name]


def test_rename_saves_a_numbered_copy_beside_a_different_file(
    api: LiveServer, client: Client, tmp_path: Path
) -> None:
    export = _export_of(api, "inquiry")
    (tmp_path / export.file_name).write_bytes(b"something else\r\n")

    path = client.download(export.uid, tmp_path, on_conflict="rename")

    stem, suffix = export.file_name.rsplit(".", 1)
    assert path == tmp_path / f"{stem}-1.{suffix}"
    assert path.read_bytes() == export.content
    assert (tmp_path / export.file_name).read_bytes() == b"something else\r\n"
    assert files_under(tmp_path) == sorted([export.file_name, path.name])


def test_overwrite_replaces_a_different_file(api: LiveServer, client: Client, tmp_path: Path) -> None:
    export = _export_of(api, "declared")
    (tmp_path / export.file_name).write_bytes(b"stale\r\n")

    path = client.download(export.uid, tmp_path, on_conflict="overwrite")

    assert path == tmp_path / export.file_name
    assert path.read_bytes() == export.content
    assert files_under(tmp_path) == [export.file_name]


def test_the_sdk_logs_no_signed_url(
    api: LiveServer, client: Client, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    assert api.demo is not None
    export = _export_of(api, "affinity")
    with caplog.at_level(logging.DEBUG, logger="datalab.client"):
        (tmp_path / export.file_name).write_bytes(b"other\r\n")
        client.download(export.uid, tmp_path, on_conflict="rename")
    messages = [r.getMessage() for r in caplog.records if r.name.startswith("datalab.client")]
    assert messages  # the rename is logged
    assert not [m for m in messages if "X-Amz-" in m or api.demo.api_key in m or api.demo.password in m]


def test_upload_and_wait_returns_the_processed_record(
    api: LiveServer, client: Client, tmp_path: Path
) -> None:
    source = tmp_path / "enrollment-2026.csv"
    source.write_bytes(GOOD_ENROLLMENT_CSV)
    sent: list[tuple[int, int | None]] = []

    record = client.upload(
        source,
        "enrollment",
        "nightly",
        wait=True,
        wait_timeout=120,
        progress=lambda d, t: sent.append((d, t)),
    )

    assert record.status == "done"
    assert record.finished
    assert record.file_name == "enrollment-2026.csv"
    assert record.product_type == "enrollment"
    assert record.record_volume == 1
    assert record.error is None
    assert sent[-1] == (len(GOOD_ENROLLMENT_CSV), len(GOOD_ENROLLMENT_CSV))
    assert client.file(record.id).status == "done"
    assert record.id in {listed.id for listed in client.files(status="done", product_type="enrollment")}
    with api.db() as db:
        row = db.scalars(select(Upload).where(Upload.uid == record.id)).one()
        assert (row.status, row.data_source, row.file_description) == ("done", "API", "nightly")
        assert row.size_bytes == len(GOOD_ENROLLMENT_CSV)


def test_upload_of_a_file_that_maps_nothing_raises_processing_failed(client: Client, tmp_path: Path) -> None:
    source = tmp_path / "broken.csv"
    source.write_bytes(BROKEN_ENROLLMENT_CSV)

    with pytest.raises(ProcessingFailed) as raised:
        client.upload(source, "enrollment", wait=True, wait_timeout=120)

    record = raised.value.record
    assert record.status == "failure"
    assert raised.value.code == "failure"
    assert record.error is not None
    assert record.error.startswith("Required fields are not mapped to any column of the file: UniqueID, ")
    assert "EntryYear" in record.error
    assert record.error in str(raised.value)
    assert client.file(record.id).error == record.error


def test_upload_without_wait_returns_at_once(client: Client, tmp_path: Path) -> None:
    source = tmp_path / "later.csv"
    source.write_bytes(GOOD_ENROLLMENT_CSV)
    record = client.upload(source, "enrollment")
    assert record.file_name == "later.csv"
    assert client.wait(record.id, timeout=120).status == "done"


def test_missing_credentials_are_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError) as raised:
        Client(environ={})
    message = str(raised.value)
    for variable in ("ENCOURA_API_KEY", "ENCOURA_USERNAME", "ENCOURA_PASSWORD"):
        assert variable in message
    with pytest.raises(ConfigurationError, match="ENCOURA_PASSWORD"):
        Client(environ={"ENCOURA_API_KEY": "k", "ENCOURA_USERNAME": "u"})
    with pytest.raises(ConfigurationError, match="http"):
        Client("ftp://example.edu", "k", "u", "p", environ={})


@pytest.mark.parametrize(("setting", "retries"), [(None, 4), ("2", 2), ("0", 0)])
def test_an_unreachable_server_is_tried_encoura_retries_times_more(setting: str | None, retries: int) -> None:
    waits: list[float] = []
    environ = {"ENCOURA_API_KEY": "k", "ENCOURA_USERNAME": "u", "ENCOURA_PASSWORD": "p"}
    if setting is not None:
        environ["ENCOURA_RETRIES"] = setting
    unreachable = f"http://127.0.0.1:{free_port()}/v1"
    with Client(unreachable, environ=environ, sleep=waits.append) as client, pytest.raises(ConnectionFailed):
        client.login()
    assert len(waits) == retries
    # exponential backoff from half a second, with jitter of half the delay either way
    assert all(0.25 * 2**attempt <= wait <= 0.75 * 2**attempt for attempt, wait in enumerate(waits))


@pytest.mark.parametrize("setting", ["many", "-1", "1.5"])
def test_a_retry_count_that_is_not_a_whole_number_is_a_configuration_error(setting: str) -> None:
    environ = {"ENCOURA_API_KEY": "k", "ENCOURA_USERNAME": "u", "ENCOURA_PASSWORD": "p"}
    with pytest.raises(ConfigurationError, match="ENCOURA_RETRIES"):
        Client(environ=environ | {"ENCOURA_RETRIES": setting})


def test_a_wrong_password_is_an_authentication_error(api: LiveServer) -> None:
    assert api.demo is not None
    with (
        Client(api.base_url, api.demo.api_key, api.demo.user_name, "not-the-password", environ={}) as client,
        pytest.raises(AuthenticationError) as raised,
    ):
        list(client.exports())
    assert raised.value.status == 401
    assert "not-the-password" not in str(raised.value)
    assert client.organization is None


def test_an_unknown_export_is_not_found(client: Client, tmp_path: Path) -> None:
    with pytest.raises(NotFound) as raised:
        client.download("00000000-0000-0000-0000-000000000000", tmp_path)
    assert raised.value.status == 404
    assert files_under(tmp_path) == []
