"""The one error envelope: every error the app raises answers {code, message, detail}."""

from __future__ import annotations

import httpx2
from fastapi import FastAPI
from fastapi.testclient import TestClient
from pydantic import BaseModel

from datalab.errors import ApiError, install_error_handlers
from tests.support.checks import ENVELOPE_KEYS
from tests.support.server import LiveServer


class Body(BaseModel):
    count: int


def _app() -> FastAPI:
    app = FastAPI()
    install_error_handlers(app)

    @app.get("/api-error")
    def api_error() -> None:
        raise ApiError(409, "conflict_here", "Something conflicts", headers={"X-Why": "test"})

    @app.post("/validated")
    def validated(body: Body) -> int:
        return body.count

    @app.get("/crash")
    def crash() -> None:
        raise RuntimeError("secret internals")

    return app


def test_api_error_envelope_is_pinned() -> None:
    with TestClient(_app()) as client:
        response = client.get("/api-error")
    assert response.status_code == 409
    assert response.json() == {
        "code": "conflict_here",
        "message": "Something conflicts",
        "detail": "Something conflicts",
    }
    assert response.headers["x-why"] == "test"


def test_validation_errors_keep_the_upstream_detail_list() -> None:
    with TestClient(_app()) as client:
        response = client.post("/validated", json={"count": "many"})
    assert response.status_code == 422
    body = response.json()
    assert set(body) == ENVELOPE_KEYS
    assert body["code"] == "validation_error"
    assert body["message"].startswith("body.count: ")
    assert body["detail"][0]["loc"] == ["body", "count"]
    assert set(body["detail"][0]) == {"loc", "msg", "type"}


def test_unexpected_errors_are_500_without_internals() -> None:
    with TestClient(_app(), raise_server_exceptions=False) as client:
        response = client.get("/crash")
    assert response.status_code == 500
    assert response.json() == {
        "code": "internal_error",
        "message": "Internal server error",
        "detail": "Internal server error",
    }


def test_unknown_route_and_method_on_the_live_server(server: LiveServer) -> None:
    missing = httpx2.get(server.base_url + "/no-such-thing")
    assert missing.status_code == 404
    assert missing.json() == {"code": "not_found", "message": "Not Found", "detail": "Not Found"}
    wrong_method = httpx2.delete(server.base_url + "/login")
    assert wrong_method.status_code == 405
    assert wrong_method.json()["code"] == "method_not_allowed"
    assert set(wrong_method.json()) == ENVELOPE_KEYS


def test_openapi_and_offline_swagger_ui(server: LiveServer) -> None:
    spec = httpx2.get(server.base_url + "/openapi.json").json()
    operation_ids = {op["operationId"] for path in spec["paths"].values() for op in path.values()}
    assert {"login", "refresh-token", "readExports", "downloadExport"} <= operation_ids
    page = httpx2.get(server.root + "/docs")
    assert page.status_code == 200
    assert "/docs/assets/swagger-ui-bundle.js" in page.text
    assert "cdn" not in page.text.lower()
    asset = httpx2.get(server.root + "/docs/assets/swagger-ui-bundle.js")
    assert asset.status_code == 200
    assert len(asset.content) > 100_000
