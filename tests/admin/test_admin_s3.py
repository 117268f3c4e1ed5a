"""An operator's export published through the presigned form on S3: the sweeper finds its file."""

from __future__ import annotations

import httpx2

from tests.conftest import ServerFactory
from tests.support.admin import call, campus_exports, make_college, make_operator, publish_form
from tests.support.checks import wait_for
from tests.support.moto import MotoServer
from tests.support.server import LiveServer

CSV = b"ID,FIRSTNAME\r\n00000001,Ana\r\n"


def test_the_export_is_listed_once_the_sweeper_finds_its_file(
    make_server: ServerFactory, moto: MotoServer
) -> None:
    server: LiveServer = make_server(
        storage_backend="s3",
        s3_endpoint_url=moto.endpoint,
        **moto.new_buckets(),
        upload_sweep_interval_seconds="1",
    )
    operator = make_operator(server)
    college = make_college(server, operator)
    form = publish_form(server, operator, college)
    assert form["url"] == f"{moto.endpoint}/{server.settings.exports_bucket}"
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
