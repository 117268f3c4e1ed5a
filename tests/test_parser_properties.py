"""Property tests of the parsers every request goes through: whatever the input, a value or a 4xx.

JSON bodies (login, upload record, mapping), query integers (paging), the store's POST form fields and
multipart bodies on the wire: none may raise anything but the error its caller turns into a 4xx.
"""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime
from typing import Any

import httpx2
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from datalab.accounts.schemas import parse_login_body
from datalab.bodies import MAX_INTEGER_DIGITS, MAX_JSON_DEPTH, parse_json_object
from datalab.domain_errors import DomainError
from datalab.errors import ApiError, api_error
from datalab.pagination import MAX_LIMIT, MAX_OFFSET, non_negative, parse_paging
from datalab.storage.post_policy import check_post_fields, sign_policy
from datalab.storage.sigv4 import S3Error
from datalab.uploads.schemas import parse_mapping_body, parse_upload_request
from tests.conftest import ServerFactory
from tests.support.server import LiveServer, LoggedIn
from tests.support.uploads import create_upload, encode_multipart, field, file_part

FAST = settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True
)

# Text including lone surrogates, and JSON trees including them.
any_text = st.text(alphabet=st.characters(codec=None), max_size=40)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | any_text,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(any_text, children, max_size=4),
    max_leaves=30,
)


def _encode(value: Any) -> bytes:
    # json.dumps escapes lone surrogates as \\udXXX, exactly what a hostile client sends.
    return json.dumps(value).encode()


def _client_error(failure: ApiError | DomainError, *statuses: int) -> None:
    error = api_error(failure) if isinstance(failure, DomainError) else failure
    assert error.status in statuses, (error.status, error.code, error.message)
    assert error.code
    assert error.message


def _s3_client_error(error: S3Error) -> None:
    assert 400 <= error.status < 500, (error.status, error.code)


def _depth(value: Any) -> int:
    if isinstance(value, dict):
        return 1 + max((_depth(item) for item in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((_depth(item) for item in value), default=0)
    return 0


def _has_surrogate(value: Any) -> bool:
    if isinstance(value, str):
        return any(0xD800 <= ord(char) <= 0xDFFF for char in value)
    if isinstance(value, dict):
        return any(_has_surrogate(key) or _has_surrogate(item) for key, item in value.items())
    if isinstance(value, list):
        return any(_has_surrogate(item) for item in value)
    return False


def _has_long_integer(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return len(str(abs(value))) > MAX_INTEGER_DIGITS
    if isinstance(value, dict):
        return any(_has_long_integer(item) for item in value.values())
    if isinstance(value, list):
        return any(_has_long_integer(item) for item in value)
    return False


@FAST
@given(st.binary(max_size=200))
def test_any_bytes_are_a_json_object_or_a_400(raw: bytes) -> None:
    try:
        parsed = parse_json_object(raw, wanted="anything")
    except ApiError as error:
        _client_error(error, 400)
    else:
        assert isinstance(parsed, dict)


@FAST
@given(json_values)
@example({"": 10**MAX_INTEGER_DIGITS})
def test_json_documents_are_accepted_exactly_when_they_are_storable(value: Any) -> None:
    try:
        parsed = parse_json_object(_encode(value), wanted="anything")
    except ApiError as error:
        _client_error(error, 400)
        assert (
            not isinstance(value, dict)
            or _has_surrogate(value)
            or _depth(value) > MAX_JSON_DEPTH
            or _has_long_integer(value)
        )
    else:
        assert parsed == value
        assert not _has_surrogate(value)
        assert not _has_long_integer(value)


@FAST
@given(st.integers(min_value=1, max_value=3000))
def test_nesting_is_refused_past_the_limit_never_with_a_crash(depth: int) -> None:
    raw = '{"a": ' + "[" * depth + "]" * depth + "}"
    try:
        parse_json_object(raw.encode(), wanted="anything")
    except ApiError as error:
        _client_error(error, 400)
        assert depth + 1 > MAX_JSON_DEPTH
    else:
        assert depth + 1 <= MAX_JSON_DEPTH


@FAST
@given(
    st.one_of(st.binary(max_size=200), json_values.map(_encode)),
    st.sampled_from(["", "application/json", "application/x-www-form-urlencoded"]),
)
def test_login_bodies_are_credentials_or_a_400(raw: bytes, content_type: str) -> None:
    try:
        form = parse_login_body(raw, content_type)
    except ApiError as error:
        _client_error(error, 400)
    else:
        assert form.userName.strip()
        assert form.password
        assert len(form.userName) <= 254
        assert len(form.password) <= 1024
        form.userName.encode()
        form.password.encode()


login_like = st.fixed_dictionaries(
    {"userName": any_text, "password": any_text, "acceptedTerms": st.sampled_from([True, "true", False, 1])}
)


@FAST
@given(login_like)
def test_login_fields_with_any_text_are_credentials_or_a_400(body: dict[str, Any]) -> None:
    try:
        parse_login_body(_encode(body), "application/json")
    except ApiError as error:
        _client_error(error, 400)


upload_like = st.dictionaries(
    st.sampled_from(["fileName", "productType", "dataSource", "datasource", "fileDescription", "other"]),
    json_values,
    max_size=5,
)


@FAST
@given(upload_like)
def test_upload_bodies_are_a_request_or_a_4xx(body: dict[str, Any]) -> None:
    try:
        request = parse_upload_request(_encode(body))
    except (ApiError, DomainError) as error:
        _client_error(error, 400, 422)
    else:
        for text in (request.file_name, request.product_type, request.data_source, request.file_description):
            text.encode()


mapping_like = st.one_of(
    st.dictionaries(any_text, json_values, max_size=5),
    st.fixed_dictionaries(
        {"fieldsMap": st.dictionaries(any_text, json_values, max_size=4), "valuesMap": json_values}
    ),
)


@FAST
@given(mapping_like)
def test_mapping_bodies_are_a_mapping_or_a_4xx(body: dict[str, Any]) -> None:
    try:
        parsed = parse_mapping_body(_encode(body))
    except (ApiError, DomainError) as error:
        _client_error(error, 400, 422)
    else:
        values_map = parsed.get("valuesMap") if isinstance(parsed.get("fieldsMap"), dict) else None
        assert values_map is None or all(isinstance(values, dict) for values in values_map.values())


query_text = st.one_of(
    st.text(max_size=40),
    st.integers().map(str),
    st.integers(min_value=2**62, max_value=2**80).map(str),
    st.just("9" * 5000),
)


@FAST
@given(st.one_of(st.none(), query_text), st.one_of(st.none(), query_text))
def test_paging_values_are_in_range_or_a_400(limit: str | None, offset: str | None) -> None:
    try:
        parsed_limit, parsed_offset = parse_paging(limit=limit, offset=offset)
    except ApiError as error:
        _client_error(error, 400)
    else:
        assert parsed_limit is None or 0 <= parsed_limit <= MAX_LIMIT
        assert 0 <= parsed_offset <= MAX_OFFSET


@FAST
@given(query_text)
def test_integer_query_values_fit_a_database_integer_or_are_a_400(raw: str) -> None:
    try:
        value = non_negative("skip", raw)
    except ApiError as error:
        _client_error(error, 400)
    else:
        assert value is None or 0 <= value < 2**63


# --- the store's POST form ------------------------------------------------------------------------------

SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
AKID = "AKIAIOSFODNN7EXAMPLE"
NOW = datetime(2015, 12, 29, tzinfo=UTC)
field_names = (
    st.sampled_from(
        [
            "key",
            "policy",
            "x-amz-algorithm",
            "x-amz-credential",
            "x-amz-date",
            "x-amz-signature",
            "Content-Type",
            "acl",
        ]
    )
    | any_text
)


@FAST
@given(
    st.lists(st.tuples(field_names, any_text), max_size=8),
    st.one_of(st.none(), json_values),
    st.one_of(st.none(), any_text),
)
def test_post_form_fields_are_accepted_or_an_s3_error(
    fields: list[tuple[str, str]], policy: Any, filename: str | None
) -> None:
    signed: list[tuple[str, str]] = list(fields)
    if policy is not None:
        # A policy signed with the right key: the checks get past the signature to the document.
        policy_b64 = base64.b64encode(json.dumps(policy).encode()).decode()
        signature = sign_policy(
            policy_b64=policy_b64, secret_access_key=SECRET, date="20151229", region="us-east-1"
        )
        signed += [
            ("key", "user/file.csv"),
            ("policy", policy_b64),
            ("x-amz-algorithm", "AWS4-HMAC-SHA256"),
            ("x-amz-credential", f"{AKID}/20151229/us-east-1/s3/aws4_request"),
            ("x-amz-date", "20151229T000000Z"),
            ("x-amz-signature", signature),
        ]
    try:
        check_post_fields(
            fields=signed,
            filename=filename,
            bucket="bucket",
            lookup_secret=lambda akid: SECRET if akid == AKID else None,
            region="us-east-1",
            now=NOW,
        )
    except S3Error as error:
        _s3_client_error(error)


@pytest.fixture(scope="module")
def store_server(make_server: ServerFactory) -> LiveServer:
    return make_server()


@pytest.fixture(scope="module")
def store_demo(store_server: LiveServer) -> LoggedIn:
    return store_server.login()


part_bytes = st.binary(max_size=64)


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
@given(
    fields=st.lists(
        st.tuples(st.sampled_from(["key", "policy", "x-amz-signature", "junk"]), any_text), max_size=4
    ),
    content=part_bytes,
    noise=st.binary(max_size=64),
    cut=st.integers(min_value=0, max_value=400),
)
def test_multipart_bodies_on_the_wire_never_get_a_server_error(
    store_server: LiveServer,
    store_demo: LoggedIn,
    fields: list[tuple[str, str]],
    content: bytes,
    noise: bytes,
    cut: int,
) -> None:
    with httpx2.Client(timeout=30) as client:
        form = create_upload(client, store_server, store_demo.headers)
        parts = [
            field(name, value.encode("utf-8", "surrogatepass").decode("utf-8", "replace"))
            for name, value in fields
        ]
        genuine = [field(name, value) for name, value in form.fields.items()]
        body, content_type = encode_multipart(
            [*genuine[: cut % (len(genuine) + 1)], *parts, file_part(content)]
        )
        # Cut and garble the body too: a client that breaks off or sends junk mid-stream.
        mangled = body[: len(body) - cut] + noise if cut else body
        response = client.post(form.url, content=mangled, headers={"Content-Type": content_type})
    assert response.status_code < 500, response.text
