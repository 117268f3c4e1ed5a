"""The export list and download-URL endpoints: filters, paging, validation, organization isolation and
delivery records, through the in-process app."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx2
import pytest
from sqlalchemy import select

from datalab.accounts.models import Organization as OrganizationRow
from datalab.accounts.models import User
from datalab.db import utcnow
from datalab.exports import service as exports_service
from datalab.exports.models import Delivery, Export
from datalab.exports.schemas import EXPORT_LIST, export_out
from datalab.scoping import OrgContext
from tests.support.accounts import DEMO_DISPLAY_NAME, Organization, login_as, unique
from tests.support.checks import assert_envelope, wait_for
from tests.support.exports import (
    PRODUCT_KEYS,
    SAMPLE_HEADER,
    download_url,
    publish,
    sample_rows,
    write_csv,
)
from tests.support.factories import add_account, add_organization
from tests.support.inprocess import InProcessApp
from tests.support.server import LoggedIn


@dataclass(frozen=True)
class OtherOrganization:
    """A second organization with its own service account and one published export."""

    organization: Organization
    logged_in: LoggedIn
    export_uid: str


@pytest.fixture(scope="module")
def demo(api: InProcessApp) -> LoggedIn:
    return api.login()


@pytest.fixture(scope="module")
def other(api: InProcessApp, tmp_path_factory: pytest.TempPathFactory) -> OtherOrganization:
    organization = add_organization(api, name=unique("Other College"))
    account = add_account(api, organization_uids=[organization.uid])
    source = write_csv(tmp_path_factory.mktemp("other") / "other.csv", SAMPLE_HEADER, sample_rows(4))
    published = publish(api, source, product="prospect", org=organization.fice, order_name="Other Order")
    return OtherOrganization(
        organization=organization, logged_in=login_as(api, account), export_uid=published["uid"]
    )


def list_exports(api: InProcessApp, logged_in: LoggedIn, **params: str) -> httpx2.Response:
    return api.client.get("/v1/datacenter/exports", headers=logged_in.headers, params=params)


def listed(response: httpx2.Response) -> list[dict[str, Any]]:
    """The items of a successful list response."""
    assert response.status_code == 200, response.text
    items: list[dict[str, Any]] = response.json()
    return items


@pytest.mark.parametrize("status", ["Delivered", "NotDelivered"])
def test_status_filter(api: InProcessApp, demo: LoggedIn, status: str) -> None:
    items = listed(list_exports(api, demo, status=status))
    assert all(item["status"] == status for item in items)


def test_status_filters_partition_the_list(api: InProcessApp, demo: LoggedIn) -> None:
    everything = list_exports(api, demo)
    delivered = list_exports(api, demo, status="Delivered")
    not_delivered = list_exports(api, demo, status="NotDelivered")
    all_uids = [item["uid"] for item in listed(everything)]
    parts = [item["uid"] for item in listed(delivered)] + [item["uid"] for item in listed(not_delivered)]
    assert sorted(parts) == sorted(all_uids)
    for response in (everything, delivered, not_delivered):
        assert int(response.headers["total-count"]) == len(response.json())


@pytest.mark.parametrize("product_key", PRODUCT_KEYS)
def test_product_key_filter(api: InProcessApp, demo: LoggedIn, product_key: str) -> None:
    response = list_exports(api, demo, productKey=product_key)
    items = listed(response)
    assert {item["productKey"] for item in items} == {product_key}
    # The demo publishes two files of every product.
    assert len(items) >= 2
    assert int(response.headers["total-count"]) == len(items)


def test_status_and_product_key_combine(api: InProcessApp, demo: LoggedIn, tmp_path: Path) -> None:
    source = write_csv(tmp_path / "declared.csv", SAMPLE_HEADER, sample_rows(2))
    uid = publish(api, source, product="declared")["uid"]
    items = listed(list_exports(api, demo, status="NotDelivered", productKey="declared"))
    assert uid in {item["uid"] for item in items}
    assert all(item["status"] == "NotDelivered" and item["productKey"] == "declared" for item in items)
    assert uid not in {item["uid"] for item in listed(list_exports(api, demo, productKey="inquiry"))}
    assert uid not in {
        item["uid"] for item in listed(list_exports(api, demo, status="Delivered", productKey="declared"))
    }


@pytest.mark.parametrize("status", ["notdelivered", "delivered", "NOTDELIVERED", "Not Delivered", "Complete"])
def test_invalid_status_names_the_valid_values(api: InProcessApp, demo: LoggedIn, status: str) -> None:
    """Query parameters are case-sensitive, as the documentation warns."""
    message = assert_envelope(list_exports(api, demo, status=status), 400, "invalid_status")["message"]
    assert repr(status) in message
    assert "Delivered" in message
    assert "NotDelivered" in message


@pytest.mark.parametrize("product_key", ["Score-Reporter", "act", "score_reporter", "SCORE-REPORTER"])
def test_invalid_product_key_names_the_valid_ones(
    api: InProcessApp, demo: LoggedIn, product_key: str
) -> None:
    response = list_exports(api, demo, productKey=product_key)
    message = assert_envelope(response, 400, "invalid_product_key")["message"]
    assert repr(product_key) in message
    for key in PRODUCT_KEYS:
        assert key in message


def test_paging_covers_the_list_without_overlap(api: InProcessApp, demo: LoggedIn) -> None:
    unpaged = list_exports(api, demo)
    everything = [item["uid"] for item in listed(unpaged)]
    total = len(everything)
    assert unpaged.headers["total-count"] == str(total)
    assert total >= 16
    pages: list[list[str]] = []
    offset = 0
    while offset <= total:
        response = list_exports(api, demo, limit="5", offset=str(offset))
        page = [item["uid"] for item in listed(response)]
        assert response.headers["total-count"] == str(total)
        assert len(page) == min(5, total - offset)
        pages.append(page)
        offset += 5
    flat = [uid for page in pages for uid in page]
    assert flat == everything
    assert len(set(flat)) == len(flat)
    # Newest first.
    dates = [item["date"] for item in unpaged.json()]
    assert dates == sorted(dates, reverse=True)


def test_paging_combines_with_filters(api: InProcessApp, demo: LoggedIn) -> None:
    full = listed(list_exports(api, demo, productKey="aos"))
    first = list_exports(api, demo, productKey="aos", limit="1")
    rest = list_exports(api, demo, productKey="aos", offset="1")
    assert first.headers["total-count"] == rest.headers["total-count"] == str(len(full))
    assert listed(first) + listed(rest) == full
    past_end = list_exports(api, demo, productKey="aos", offset=str(len(full)))
    assert listed(past_end) == []
    assert past_end.headers["total-count"] == str(len(full))


@pytest.mark.parametrize(
    ("params", "code", "mentions"),
    [
        ({"limit": "abc"}, "invalid_limit", "limit"),
        ({"limit": "-1"}, "invalid_limit", "limit"),
        ({"limit": "1.5"}, "invalid_limit", "limit"),
        ({"limit": "1001"}, "invalid_limit", "1000"),
        ({"offset": "abc"}, "invalid_offset", "offset"),
        ({"offset": "-1"}, "invalid_offset", "offset"),
    ],
)
def test_bad_paging_values(
    api: InProcessApp, demo: LoggedIn, params: dict[str, str], code: str, mentions: str
) -> None:
    message = assert_envelope(list_exports(api, demo, **params), 400, code)["message"]
    assert mentions in message


def test_another_organizations_export_is_not_found(
    api: InProcessApp, demo: LoggedIn, other: OtherOrganization
) -> None:
    demo_uid = listed(list_exports(api, demo, productKey="prospect"))[0]["uid"]
    for logged_in, uid in ((demo, other.export_uid), (other.logged_in, demo_uid)):
        for path in (f"/v1/datacenter/exports/{uid}/download", f"/v1/datacenter/{uid}/download"):
            response = api.client.get(path, headers=logged_in.headers)
            assert_envelope(response, 404, "export_not_found")
            assert response.json()["detail"] == f"Export with uid: {uid} is NOT found."


def test_unknown_uid_is_not_found(api: InProcessApp, demo: LoggedIn) -> None:
    uid = "00000000-0000-4000-8000-000000000000"
    response = api.client.get(f"/v1/datacenter/exports/{uid}/download", headers=demo.headers)
    assert_envelope(response, 404, "export_not_found")
    assert response.json()["detail"] == f"Export with uid: {uid} is NOT found."


def test_lists_are_scoped_to_the_organization(
    api: InProcessApp, demo: LoggedIn, other: OtherOrganization
) -> None:
    response = list_exports(api, other.logged_in)
    items = listed(response)
    assert [item["uid"] for item in items] == [other.export_uid]
    assert response.headers["total-count"] == "1"
    (item,) = items
    assert item["organizationUid"] == other.organization.uid
    assert item["fice"] == other.organization.fice
    assert item["fice"].startswith("0")
    assert len(item["fice"]) == 6
    assert item["quantity"] == 4
    assert other.export_uid not in {entry["uid"] for entry in listed(list_exports(api, demo))}


def test_organization_header_must_be_one_of_the_users(
    api: InProcessApp, demo: LoggedIn, other: OtherOrganization
) -> None:
    headers = {**demo.headers, "Organization": other.organization.uid}
    listing = api.client.get("/v1/datacenter/exports", headers=headers)
    download = api.client.get(f"/v1/datacenter/exports/{other.export_uid}/download", headers=headers)
    for response in (listing, download):
        message = assert_envelope(response, 403, "organization_forbidden")["message"]
        assert other.organization.uid in message


def test_download_records_a_delivery(api: InProcessApp, demo: LoggedIn, tmp_path: Path) -> None:
    source = write_csv(tmp_path / "inquiry.csv", SAMPLE_HEADER, sample_rows(9))
    content = source.read_bytes()
    uid = publish(api, source, product="inquiry", order_name="Delivery Check")["uid"]
    before = next(
        item for item in listed(list_exports(api, demo, status="NotDelivered")) if item["uid"] == uid
    )
    assert before["deliveries"] == []

    first = api.client.get(download_url(api.client, api, demo, uid))
    assert first.status_code == 200
    assert first.content == content

    def delivered() -> bool:
        return uid in {item["uid"] for item in listed(list_exports(api, demo, status="Delivered"))}

    assert wait_for(delivered)
    assert uid not in {item["uid"] for item in listed(list_exports(api, demo, status="NotDelivered"))}
    item = next(item for item in listed(list_exports(api, demo, status="Delivered")) if item["uid"] == uid)
    user = demo.body["user"]
    assert item["status"] == "Delivered"
    (delivery,) = item["deliveries"]
    assert delivery["method"] == "API"
    assert delivery["fileType"] == "csv"
    assert delivery["email"] == user["email"]
    assert delivery["download"]["downloadedBy"] == DEMO_DISPLAY_NAME
    assert delivery["created"]["createdBy"] == {
        "uid": user["uid"],
        "name": DEMO_DISPLAY_NAME,
        "type": "User",
    }
    assert delivery["download"]["date"] == delivery["date"] == delivery["created"]["createdAt"]
    assert delivery["date"] >= item["date"]

    # A delivered export stays downloadable: a second URL works and adds a second delivery.
    second = api.client.get(download_url(api.client, api, demo, uid))
    assert second.status_code == 200
    assert second.content == content

    def two_deliveries() -> bool:
        entry = next(item for item in listed(list_exports(api, demo)) if item["uid"] == uid)
        return len(entry["deliveries"]) == 2

    assert wait_for(two_deliveries)
    with api.db() as db:
        export = db.scalars(select(Export).where(Export.uid == uid)).one()
        assert export.status == "Delivered"
        rows = db.scalars(select(Delivery).where(Delivery.export_id == export.id)).all()
        demo_user = db.scalars(select(User).where(User.uid == demo.body["user"]["uid"])).one()
        assert [(row.method, row.user_id, row.bytes_sent, row.file_type) for row in rows] == [
            ("API", demo_user.id, len(content), "csv")
        ] * 2


@pytest.mark.parametrize("params", [{}, {"limit": "2", "offset": "1"}, {"offset": "1000000"}, {"limit": "0"}])
def test_list_body_is_the_models_rendering(
    api: InProcessApp, demo: LoggedIn, tmp_path: Path, params: dict[str, str]
) -> None:
    """The list's body and total-count are exactly what the response models render from the rows."""
    source = write_csv(tmp_path / "rendering.csv", SAMPLE_HEADER, sample_rows(3))
    uid = publish(api, source, product="aos", order_name="Rendering Check")["uid"]
    with api.db() as db:
        export = db.scalars(select(Export).where(Export.uid == uid)).one()
        demo_user = db.scalars(select(User).where(User.uid == demo.body["user"]["uid"])).one()
        # One delivery by a known user, one whose user is gone (user_id set to NULL).
        db.add(Delivery(export_id=export.id, user_id=demo_user.id, bytes_sent=10, method="API"))
        db.add(Delivery(export_id=export.id, user_id=None, bytes_sent=20, method="API", file_type="txt"))
        db.commit()
    response = list_exports(api, demo, **params)
    assert response.status_code == 200, response.text
    with api.db() as db:
        organization = db.scalars(
            select(OrganizationRow).where(OrganizationRow.uid == demo.headers["Organization"])
        ).one()
        page = exports_service.list_exports(
            db=db,
            org=OrgContext(user=None, organization=organization),
            status=None,
            product_key=None,
            limit=int(params["limit"]) if "limit" in params else None,
            offset=int(params.get("offset", "0")),
        )
        expected = EXPORT_LIST.dump_json([export_out(item, now=utcnow()) for item in page.items])
    assert response.content == expected
    assert response.headers["total-count"] == str(page.total)
    assert page.total > 0
