"""Each kind of domain failure maps once to the API's status, code and headers."""

from __future__ import annotations

import pytest

from datalab import domain_errors as d
from datalab.errors import api_error
from datalab.exports.errors import ExportNotFound


@pytest.mark.parametrize(
    ("failure", "status"),
    [
        (d.InvalidInput("bad"), 400),
        (d.Unauthenticated("who"), 401),
        (d.Forbidden("no"), 403),
        (d.NotFound("gone"), 404),
        (d.InvalidState("not now"), 409),
        (d.Expired("late"), 410),
        (d.TooLarge("big"), 413),
        (d.Throttled("slow down", retry_after=7), 429),
        (d.Unavailable("busy", retry_after=2), 503),
    ],
)
def test_kind_gives_status(failure: d.DomainError, status: int) -> None:
    error = api_error(failure)
    assert (error.status, error.code, error.message, error.detail) == (
        status,
        failure.code,
        failure.message,
        failure.message,
    )


def test_headers_follow_the_kind() -> None:
    assert api_error(d.Unauthenticated("who")).headers == {"WWW-Authenticate": "Bearer"}
    assert api_error(d.Throttled("slow", retry_after=7)).headers == {"Retry-After": "7"}
    assert api_error(d.NotFound("gone")).headers is None


def test_a_domain_failure_keeps_its_code_and_detail() -> None:
    error = api_error(ExportNotFound("abc"))
    assert (error.status, error.code, error.message) == (
        404,
        "export_not_found",
        "Export with uid: abc is NOT found.",
    )
    problems = [{"loc": ["fieldsMap"], "msg": "unknown field", "type": "value_error"}]
    assert api_error(d.InvalidInput("mapping", code="mapping_invalid", detail=problems)).detail == problems
