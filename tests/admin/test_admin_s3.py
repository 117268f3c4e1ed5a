"""An operator's export published through the presigned form on S3: the sweeper finds its file."""

from __future__ import annotations

from collections.abc import Iterator

import httpx2
import pytest

from tests.conftest import ServerFactory
from tests.support.admin import call, campus_exports, make_college, make_operator, publish_form
from tests.support.checks import wait_for
from tests.support.moto import running_moto
from tests.support.server import LiveServer

AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",
}
CSV = b"ID,FIRSTNAME\r\n00000001,Ana\r\n"


@pytest.fixture(scope="module")
def moto_endpoint() -> Iterator[str]:
    with running_moto() as (endpoint, _process):
        yield endpoint


def test_the_export_is_listed_once_the_sweeper_finds_its_file(
    make_server: ServerFactory, moto_endpoint: str
) -> None:
    server: LiveServer = make_server(
        environment=AWS_ENV,
        storage_backend="s3",
        s3_endpoint_url=moto_endpoint,
        upload_sweep_interval_seconds="1",
    )
    operator = make_operator(server)
    college = make_college(server, operator)
    form = publish_form(server, operator, college)
    assert form["url"] == f"{moto_endpoint}/datalab-exports"
    assert campus_exports(server, college) == []
    posted = httpx2.post(form["url"], data=form["fields"], files={"file": ("list.csv", CSV, "text/csv")})
    assert posted.status_code == 204, posted.text

    uid = form["export"]["uid"]
    listed = wait_for(lambda: campus_exports(server, college) == [uid], timeout=15)
    assert listed, (server.home / "server.log").read_text()[-4000:]
    shown = call(
        server, operator, "GET", f"/v1/admin/organizations/{college.organization['uid']}/exports/{uid}"
    )
    assert shown.json()["state"] == "published"
    assert shown.json()["quantity"] == 1
    assert shown.json()["sizeBytes"] == len(CSV)
