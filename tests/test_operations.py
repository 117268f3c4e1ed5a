"""Operating the server: /metrics, request ids in JSON logs, /readyz, through real server processes."""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import select

from datalab.errors import ApiError, install_error_handlers
from datalab.limits import route_policy
from datalab.logs import RequestIdFilter
from datalab.operations.requests import RequestObserver
from datalab.operations.routes import check_metrics_access
from datalab.pipeline.models import PipelineJob
from datalab.settings import Settings
from tests.conftest import ServerFactory
from tests.support.checks import assert_envelope, wait_for
from tests.support.databases import postgres_url
from tests.support.exports import download_url
from tests.support.moto import MotoServer, running_moto
from tests.support.server import LiveServer, free_port
from tests.support.uploads import SETTLED, create_upload, form_parts, post_parts, send_file, wait_for_status
from tests.web.pages import SIGNIN_COOKIE, PageClient, form_token, sign_in

METRICS_TOKEN = "a-metrics-token-of-some-length"

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(server: LiveServer, headers: dict[str, str] | None = None) -> Samples:
    """Every sample of /metrics, parsed by prometheus-client's own parser, by (name, labels)."""
    response = httpx2.get(server.root + "/metrics", headers=headers)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def sample(samples: Samples, name: str, **labels: str) -> float:
    """A sample's value; 0 when the series does not exist yet (a counter nobody touched)."""
    return samples.get((name, frozenset(labels.items())), 0.0)


def request_count(samples: Samples, route: str, status: str, method: str = "GET") -> float:
    return sample(
        samples, "datalab_http_request_duration_seconds_count", method=method, route=route, status=status
    )


@pytest.fixture(scope="module")
def observed(make_server: ServerFactory) -> LiveServer:
    return make_server(own_process=True)


def test_metrics_parse_and_count_requests_by_route_template_and_status(observed: LiveServer) -> None:
    demo = observed.login()
    before = scrape(observed)
    lengths = []
    for _ in range(3):
        answer = httpx2.get(observed.base_url + "/files/no-such-upload", headers=demo.headers)
        assert answer.status_code == 404
        lengths.append(len(answer.content))
    listed = httpx2.get(observed.base_url + "/datacenter/exports", headers=demo.headers)
    assert listed.status_code == 200
    after = scrape(observed)

    assert (
        request_count(after, "/v1/files/{uid}", "404") == request_count(before, "/v1/files/{uid}", "404") + 3
    )
    assert request_count(after, "/v1/datacenter/exports", "200") >= 1
    # Templates only: no id a client sent is ever a label.
    assert not any("no-such-upload" in str(labels) for _name, labels in after)
    sent = ("datalab_http_sent_bytes_total", {"method": "GET", "route": "/v1/files/{uid}"})
    assert sample(after, sent[0], **sent[1]) - sample(before, sent[0], **sent[1]) == sum(lengths)
    latency = sample(
        after,
        "datalab_http_request_duration_seconds_sum",
        method="GET",
        route="/v1/files/{uid}",
        status="404",
    )
    assert latency > 0


def test_logins_and_received_bytes_are_counted(observed: LiveServer) -> None:
    account = observed.demo
    assert account is not None
    before = scrape(observed)
    observed.login()
    refused = httpx2.post(
        observed.base_url + "/login",
        headers={"x-api-key": account.api_key},
        json={"userName": account.user_name, "password": "not the password", "acceptedTerms": True},
    )
    assert_envelope(refused, 401, "invalid_credentials")
    after = scrape(observed)

    def logins(result: str) -> float:
        return sample(after, "datalab_logins_total", channel="api", result=result) - sample(
            before, "datalab_logins_total", channel="api", result=result
        )

    assert (logins("success"), logins("invalid_credentials")) == (1, 1)
    received = ("datalab_http_received_bytes_total", {"method": "POST", "route": "/v1/login"})
    assert sample(after, received[0], **received[1]) - sample(before, received[0], **received[1]) > 100


def test_data_center_sign_ins_are_counted(observed: LiveServer) -> None:
    account = observed.demo
    assert account is not None
    before = scrape(observed)
    sign_in(observed, account.user_name, account.password).close()
    page = PageClient(observed)
    form = page.get("/datacenter/signin")
    refused = page.client.post(
        "/datacenter/signin",
        data={"csrf_token": form_token(form.text), "next": "/", "userName": "nobody", "password": "wrong"},
        headers={"Cookie": f"{SIGNIN_COOKIE}={form.cookies[SIGNIN_COOKIE]}"},
    )
    page.close()
    assert refused.status_code == 401
    after = scrape(observed)
    for result in ("success", "invalid_credentials"):
        counted = sample(after, "datalab_logins_total", channel="datacenter", result=result)
        assert counted == sample(before, "datalab_logins_total", channel="datacenter", result=result) + 1


def test_the_queue_depth_and_age_come_from_the_jobs_table(observed: LiveServer) -> None:
    demo = observed.login()
    # This server runs no pipeline worker: the file's first stage waits in the queue.
    with httpx2.Client() as client:
        send_file(client, observed, demo, b"UniqueID\n1\n", file_name="queued.csv")
    time.sleep(0.2)
    samples = scrape(observed)
    assert sample(samples, "datalab_pipeline_jobs", state="ready") >= 1
    assert sample(samples, "datalab_pipeline_jobs", state="running") == 0
    assert sample(samples, "datalab_pipeline_oldest_ready_job_age_seconds") > 0


@pytest.mark.skipif(
    postgres_url() is None, reason="procrastinate needs PostgreSQL (DATALAB_TEST_DATABASE_URL)"
)
def test_the_queue_depth_and_age_come_from_procrastinate_with_that_engine(make_server: ServerFactory) -> None:
    server = make_server(pipeline_queue="procrastinate")
    demo = server.login()
    # No worker runs: the file's first stage waits in procrastinate's queue.
    with httpx2.Client() as client:
        send_file(client, server, demo, b"UniqueID\n1\n", file_name="queued.csv")
    time.sleep(0.2)
    samples = scrape(server)
    assert sample(samples, "datalab_pipeline_jobs", state="ready") == 1
    assert sample(samples, "datalab_pipeline_jobs", state="running") == 0
    assert sample(samples, "datalab_pipeline_jobs", state="scheduled") == 0
    assert sample(samples, "datalab_pipeline_oldest_ready_job_age_seconds") > 0
    with server.db() as db:
        assert db.scalars(select(PipelineJob)).all() == []


@pytest.mark.skipif(
    postgres_url() is None, reason="procrastinate needs PostgreSQL (DATALAB_TEST_DATABASE_URL)"
)
def test_a_worker_serves_its_stage_metrics_on_its_own_port(make_server: ServerFactory) -> None:
    port = free_port()
    server = make_server(pipeline_queue="procrastinate", worker_metrics_port=str(port))
    server.start_worker()
    demo = server.login()
    with httpx2.Client() as client:
        uid = send_file(client, server, demo, b"UniqueID,EntryYear,Applied\n1,2026,2025-11-02\n")
        assert wait_for_status(client, server, demo, uid, until=SETTLED)["status"] == "done"
    families = {
        family.name: family
        for family in text_string_to_metric_families(httpx2.get(f"http://127.0.0.1:{port}/metrics").text)
    }
    runs = {
        sample.labels["stage"]: sample.value
        for sample in families["datalab_pipeline_stage_duration_seconds"].samples
        if sample.name.endswith("_count") and sample.labels["outcome"] == "success"
    }
    assert runs == {"analyze": 1, "cleanse": 1, "ingest": 1, "process": 1}


def _log_lines(server: LiveServer) -> list[dict[str, Any]]:
    lines = (server.home / "server.log").read_text().splitlines()
    return [json.loads(line) for line in lines]


def test_request_ids_are_returned_and_on_every_log_line_of_their_request(observed: LiveServer) -> None:
    echoed = httpx2.get(observed.root + "/healthz", headers={"X-Request-ID": "trace-42.a:b_c"})
    assert echoed.headers["x-request-id"] == "trace-42.a:b_c"
    generated = {
        httpx2.get(observed.root + "/healthz", headers=headers).headers["x-request-id"]
        for headers in ({}, {"X-Request-ID": "x" * 65}, {"X-Request-ID": "a b"}, {"X-Request-ID": "<script>"})
    }
    assert len(generated) == 4
    assert all(len(value) == 32 and int(value, 16) >= 0 for value in generated)
    refused = httpx2.get(observed.base_url + "/files/x", headers={"X-Request-ID": "refused-1"})
    assert refused.status_code == 401 and refused.headers["x-request-id"] == "refused-1"

    time.sleep(0.2)
    lines = _log_lines(observed)  # every line is one JSON object
    by_id = {line["request_id"]: line for line in lines if line.get("logger") == "uvicorn.access"}
    assert by_id["trace-42.a:b_c"]["path"] == "/healthz"
    assert by_id["refused-1"]["status"] == 401
    assert generated <= set(by_id)
    assert {"time", "level", "logger", "message", "request_id"} <= set(lines[0])


def test_logs_hold_no_secret(observed: LiveServer) -> None:
    demo = observed.login()
    account = observed.demo
    assert account is not None
    with httpx2.Client() as client:
        uid = client.get(observed.base_url + "/datacenter/exports", headers=demo.headers).json()[0]["uid"]
        url = download_url(client, observed, demo, uid)
        assert client.get(url).status_code == 200
    time.sleep(0.2)
    log = (observed.home / "server.log").read_text()
    signature = url.split("X-Amz-Signature=")[1]
    for secret in (account.password, account.api_key, demo.token, signature):
        assert secret not in log
    assert "X-Amz-Signature=***" in log


def test_downloaded_bytes_are_counted_under_the_bucket_route(observed: LiveServer) -> None:
    demo = observed.login()
    with httpx2.Client() as client:
        uid = client.get(observed.base_url + "/datacenter/exports", headers=demo.headers).json()[1]["uid"]
        url = download_url(client, observed, demo, uid)
        before = scrape(observed)
        downloaded = client.get(url)
        assert downloaded.status_code == 200
    labels = {"method": "GET", "route": "/datalab-exports/{key}"}

    def served() -> float:
        after = sample(scrape(observed), "datalab_http_sent_bytes_total", **labels)
        return after - sample(before, "datalab_http_sent_bytes_total", **labels)

    # A response is counted once its handler returns: after the last byte went out and the delivery
    # was recorded, which a scrape sent as soon as the client has the bytes can overtake.
    assert wait_for(lambda: served() == len(downloaded.content)), served()


def test_metrics_and_readiness_never_wait_in_the_request_queue() -> None:
    for path in ("/metrics", "/readyz", "/healthz"):
        assert not route_policy("GET", path, store_prefixes=("/datalab-exports",)).gated
    assert route_policy("GET", "/metrics/x", store_prefixes=("/metrics",)).gated


def test_metrics_answer_loopback_clients_only_without_a_token(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path, dev_mode=True)
    check_metrics_access(settings=settings, authorization=None, client_host="127.0.0.1")
    check_metrics_access(settings=settings, authorization=None, client_host="::1")
    for host in ("203.0.113.9", "10.0.0.1", "", "testclient"):
        with pytest.raises(ApiError) as refused:
            check_metrics_access(settings=settings, authorization=None, client_host=host)
        assert (refused.value.status, refused.value.code) == (403, "metrics_forbidden")


def test_a_metrics_token_shorter_than_16_characters_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="DATALAB_METRICS_TOKEN"):
        Settings(home=tmp_path, dev_mode=True, metrics_token="short")


@pytest.fixture(scope="module")
def guarded(make_server: ServerFactory) -> LiveServer:
    return make_server(own_process=True, metrics_token=METRICS_TOKEN, log_format="text")


def test_with_a_token_metrics_need_it_as_a_bearer_token(guarded: LiveServer) -> None:
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": METRICS_TOKEN}):
        assert_envelope(httpx2.get(guarded.root + "/metrics", headers=headers), 401, "invalid_metrics_token")
    samples = scrape(guarded, headers={"Authorization": f"Bearer {METRICS_TOKEN}"})
    assert request_count(samples, "/metrics", "401") == 3
    assert METRICS_TOKEN not in (guarded.home / "server.log").read_text()


def test_text_log_lines_carry_the_request_id_too(guarded: LiveServer) -> None:
    answer = httpx2.get(guarded.root + "/healthz", headers={"X-Request-ID": "text-line-1"})
    assert answer.headers["x-request-id"] == "text-line-1"
    time.sleep(0.2)
    lines = (guarded.home / "server.log").read_text().splitlines()
    [line] = [line for line in lines if "[text-line-1]" in line]
    assert " INFO uvicorn.access [text-line-1] " in line and '"GET /healthz HTTP/1.1" 200' in line


def test_readyz_reports_ready(observed: LiveServer) -> None:
    answer = httpx2.get(observed.root + "/readyz")
    assert (answer.status_code, answer.json()) == (200, {"status": "ready"})


def test_readyz_is_503_naming_the_store_when_its_directory_is_broken(make_server: ServerFactory) -> None:
    broken = make_server()
    assert httpx2.get(broken.root + "/readyz").status_code == 200
    objects = broken.home / "objects"
    shutil.rmtree(objects)
    objects.write_text("not a directory")  # unusable even by root, unlike a chmod
    answer = httpx2.get(broken.root + "/readyz")
    body = answer.json()
    assert answer.status_code == 503, body
    assert body["code"] == "not_ready" and "store" in body["message"]
    assert body["detail"][0] == {"check": "database", "status": "ok"}
    assert body["detail"][1]["check"] == "store" and body["detail"][1]["status"] == "failed"
    assert body["detail"][1]["error"].startswith("failed (")  # the error's type, never a server path
    assert str(broken.home) not in answer.text
    assert httpx2.get(broken.root + "/healthz").status_code == 200


@pytest.fixture
def stopped_later(aws_credentials: dict[str, str]) -> Iterator[MotoServer]:
    """A moto S3 server of the test's own, which the test stops."""
    with running_moto() as moto:
        yield moto


def test_readyz_is_503_naming_the_store_when_s3_is_down(
    make_server: ServerFactory, stopped_later: MotoServer
) -> None:
    on_s3 = make_server(
        storage_backend="s3",
        s3_endpoint_url=stopped_later.endpoint,
        **stopped_later.new_buckets(),
        readiness_timeout_seconds="1",
    )
    assert httpx2.get(on_s3.root + "/readyz").status_code == 200
    stopped_later.stop()
    started = time.monotonic()
    answer = httpx2.get(on_s3.root + "/readyz", timeout=30)
    body = answer.json()
    assert answer.status_code == 503, body
    assert body["detail"][0] == {"check": "database", "status": "ok"}
    assert body["detail"][1]["check"] == "store" and body["detail"][1]["status"] == "failed"
    assert time.monotonic() - started < 10


@pytest.fixture(scope="module")
def pair(make_server: ServerFactory) -> LiveServer:
    return make_server(serve_args=("--workers", "2"), pipeline_workers="1", pipeline_poll_seconds="0.2")


def test_a_scrape_sees_every_server_process(pair: LiveServer) -> None:
    def processes_with_values() -> set[str]:
        return {path.stem.rsplit("_", 1)[1] for path in (pair.home / "metrics").glob("histogram_*.db")}

    # A readiness probe of the server's start that gave up waiting may still be answered (and counted).
    before = request_count(scrape(pair), "/healthz", "200")
    while (settled := request_count(scrape(pair), "/healthz", "200")) != before:
        before = settled
        time.sleep(0.2)
    sent = 0
    # A new connection each time, until both processes have answered some.
    while sent < 40 or (len(processes_with_values()) < 2 and sent < 400):
        with httpx2.Client() as client:
            assert client.get(pair.root + "/healthz").status_code == 200
        sent += 1
    assert len(processes_with_values()) >= 2
    for _ in range(4):  # whichever process answers the scrape counts every process's requests
        after = scrape(pair)
        assert request_count(after, "/healthz", "200") == before + sent


def test_a_metrics_file_still_being_created_does_not_fail_the_scrape(pair: LiveServer) -> None:
    """A process creates its metrics file and sizes it a moment later: a scrape in between still answers,
    with every other process's values."""
    before = request_count(scrape(pair), "/metrics", "200")
    being_created = pair.home / "metrics" / "counter_4194304.db"
    being_created.touch()
    try:
        assert request_count(scrape(pair), "/metrics", "200") >= before + 1
    finally:
        being_created.unlink()


def test_pipeline_stages_are_timed(pair: LiveServer) -> None:
    demo = pair.login()
    with httpx2.Client(timeout=30) as client:
        form = create_upload(client, pair, demo.headers, file_name="timed.csv")
        posted = post_parts(client, form.url, form_parts(form.fields, b"UniqueID\n1\n", filename="timed.csv"))
        assert posted.status_code == 204
        wait_for_status(client, pair, demo, form.id, until=SETTLED)
    samples = scrape(pair)
    assert (
        sample(samples, "datalab_pipeline_stage_duration_seconds_count", stage="analyze", outcome="success")
        >= 1
    )
    assert sample(samples, "datalab_pipeline_stage_failures_total", stage="analyze") == 0


def test_an_unexpected_error_keeps_its_request_id_in_the_answer_the_log_and_the_metrics(
    caplog: pytest.LogCaptureFixture,
) -> None:
    app = FastAPI()
    install_error_handlers(app)
    app.add_middleware(RequestObserver)

    @app.get("/crash/{uid}")
    def crash(uid: str) -> None:
        raise RuntimeError(f"crashed on {uid}")

    before = REGISTRY.get_sample_value(
        "datalab_http_request_duration_seconds_count",
        {"method": "GET", "route": "/crash/{uid}", "status": "500"},
    )
    caplog.handler.addFilter(RequestIdFilter())
    with TestClient(app, raise_server_exceptions=False) as client:
        answer = client.get("/crash/7", headers={"X-Request-ID": "crash-1"})
    assert_envelope(answer, 500, "internal_error")
    assert answer.headers["x-request-id"] == "crash-1"
    logged = [record for record in caplog.records if record.name == "datalab.errors"]
    assert [getattr(record, "request_id", None) for record in logged] == ["crash-1"]
    after = REGISTRY.get_sample_value(
        "datalab_http_request_duration_seconds_count",
        {"method": "GET", "route": "/crash/{uid}", "status": "500"},
    )
    assert after == (before or 0) + 1
