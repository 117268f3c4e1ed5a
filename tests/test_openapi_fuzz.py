"""schemathesis against a live server, on the server's own OpenAPI document.

Every operation gets generated requests (a bounded budget: a few seconds per operation), once with
valid credentials (so bodies and parameters reach the handlers) and once with whatever headers the
schema allows (so authentication and the Organization header are fuzzed). Every answer must be no
server error, a status the operation declares, and a body matching the declared schema (the error
envelope for errors).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import Case
from schemathesis.checks import not_a_server_error
from schemathesis.core.result import Ok
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.conftest import ServerFactory
from tests.support.server import LiveServer

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
BUDGET = settings(
    max_examples=20,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=list(HealthCheck),
)


@dataclass(frozen=True)
class Target:
    server: LiveServer
    headers: dict[str, str]
    # One connection pool for every case (a new session per case would also open a new connection), and
    # no proxy lookup in the environment for each request to loopback.
    session: requests.Session


@pytest.fixture(scope="module")
def target(make_server: ServerFactory) -> Iterator[Target]:
    server = make_server(own_process=True)
    with requests.Session() as session:
        session.trust_env = False
        yield Target(server=server, headers=server.login().headers, session=session)


def _fuzz(target: Target, *, headers: dict[str, str] | None, budget: settings) -> list[str]:
    """Run every operation's generated cases; the operations it ran."""
    schema = schemathesis.openapi.from_url(target.server.root + "/v1/openapi.json")
    labels = []
    for result in schema.get_all_operations():
        assert isinstance(result, Ok), result
        operation = result.ok()
        labels.append(operation.label)

        @budget
        @given(case=operation.as_strategy())
        def run(case: Case[Any]) -> None:
            case.call_and_validate(
                base_url=target.server.root,
                session=target.session,
                headers=headers,
                checks=CHECKS,
                timeout=30,
            )

        run()
    return labels


def test_operations_answer_as_documented_with_valid_credentials(target: Target) -> None:
    labels = _fuzz(target, headers=target.headers, budget=BUDGET)
    assert "POST /v1/files/{uid}/process" in labels
    assert len(labels) >= 13


def test_operations_answer_as_documented_with_any_headers(target: Target) -> None:
    _fuzz(target, headers=None, budget=settings(BUDGET, max_examples=8))


def test_no_request_made_the_server_fail(target: Target) -> None:
    log = (target.server.home / "server.log").read_text(errors="replace")
    assert "Traceback" not in log
    assert '" 500' not in log
