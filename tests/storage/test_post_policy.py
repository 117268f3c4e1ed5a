"""Tests for datalab.storage.post_policy against docs/reference/s3-presigned.md §1 (POST), vectors V1-V4."""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta

import pytest

from datalab.storage.post_policy import (
    MAX_PRE_FILE_BYTES,
    AcceptedPost,
    check_post_fields,
    entity_too_large,
    entity_too_small,
    malformed_post_error,
    missing_file_error,
    not_multipart_error,
    object_location,
    post_response_xml,
    presigned_post,
    redirect_location,
    sign_policy,
    too_large_fields_error,
)
from datalab.storage.sigv4 import Credentials, S3Error, signing_key
from tests.support.checks import SIGNATURE_MISMATCH

AKID = "AKIAIOSFODNN7EXAMPLE"
SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
TOKEN = "TOKEN/123+="
REGION = "us-east-1"
ALGORITHM = "AWS4-HMAC-SHA256"
CREDENTIAL = f"{AKID}/20151229/{REGION}/s3/aws4_request"
AMZ_DATE = "20151229T000000Z"
CLOCK = datetime(2015, 12, 29, tzinfo=UTC)
BUCKET = "sigv4examplebucket"
VHOST_URL = "https://sigv4examplebucket.s3.amazonaws.com/"
EXPIRATION = "2015-12-29T01:00:00Z"
CREDS = Credentials(access_key_id=AKID, secret_access_key=SECRET)
CREDS_TOKEN = Credentials(access_key_id=AKID, secret_access_key=SECRET, session_token=TOKEN)
CONDITION_FAILED = "Invalid according to Policy: Policy Condition failed: "
SIMPLE_PROPERTIES = (
    "Invalid Policy: Invalid Simple-Condition: Simple-Conditions must have exactly one property specified."
)

V1_LINES = (
    '{ "expiration": "2015-12-30T12:00:00.000Z",',
    '  "conditions": [',
    '    {"bucket": "sigv4examplebucket"},',
    '    ["starts-with", "$key", "user/user1/"],',
    '    {"acl": "public-read"},',
    '    {"success_action_redirect": "http://sigv4examplebucket.s3.amazonaws.com/successful_upload.html"},',
    '    ["starts-with", "$Content-Type", "image/"],',
    '    {"x-amz-meta-uuid": "14365123651274"},',
    '    {"x-amz-server-side-encryption": "AES256"},',
    '    ["starts-with", "$x-amz-meta-tag", ""],',
    "",
    '    {"x-amz-credential": "AKIAIOSFODNN7EXAMPLE/20151229/us-east-1/s3/aws4_request"},',
    '    {"x-amz-algorithm": "AWS4-HMAC-SHA256"},',
    '    {"x-amz-date": "20151229T000000Z" }',
    "  ]",
    "}",
)
V1_POLICY = "\r\n".join(V1_LINES)
V1_B64 = (
    "eyAiZXhwaXJhdGlvbiI6ICIyMDE1LTEyLTMwVDEyOjAwOjAwLjAwMFoiLA0KICAiY29uZGl0aW9ucyI6IFsNCiAgICB7ImJ1Y2tldCI6"
    "ICJzaWd2NGV4YW1wbGVidWNrZXQifSwNCiAgICBbInN0YXJ0cy13aXRoIiwgIiRrZXkiLCAidXNlci91c2VyMS8iXSwNCiAgICB7ImFj"
    "bCI6ICJwdWJsaWMtcmVhZCJ9LA0KICAgIHsic3VjY2Vzc19hY3Rpb25fcmVkaXJlY3QiOiAiaHR0cDovL3NpZ3Y0ZXhhbXBsZWJ1Y2tl"
    "dC5zMy5hbWF6b25hd3MuY29tL3N1Y2Nlc3NmdWxfdXBsb2FkLmh0bWwifSwNCiAgICBbInN0YXJ0cy13aXRoIiwgIiRDb250ZW50LVR5"
    "cGUiLCAiaW1hZ2UvIl0sDQogICAgeyJ4LWFtei1tZXRhLXV1aWQiOiAiMTQzNjUxMjM2NTEyNzQifSwNCiAgICB7IngtYW16LXNlcnZl"
    "ci1zaWRlLWVuY3J5cHRpb24iOiAiQUVTMjU2In0sDQogICAgWyJzdGFydHMtd2l0aCIsICIkeC1hbXotbWV0YS10YWciLCAiIl0sDQoN"
    "CiAgICB7IngtYW16LWNyZWRlbnRpYWwiOiAiQUtJQUlPU0ZPRE5ON0VYQU1QTEUvMjAxNTEyMjkvdXMtZWFzdC0xL3MzL2F3czRfcmVx"
    "dWVzdCJ9LA0KICAgIHsieC1hbXotYWxnb3JpdGhtIjogIkFXUzQtSE1BQy1TSEEyNTYifSwNCiAgICB7IngtYW16LWRhdGUiOiAiMjAx"
    "NTEyMjlUMDAwMDAwWiIgfQ0KICBdDQp9"
)
V1_SIGNATURE = "8afdbf4008c03f22c2cd3cdb72e4afbb1f6a588f3255ac628749a66d7f09699e"
V1_REDIRECT = "http://sigv4examplebucket.s3.amazonaws.com/successful_upload.html"

V2_POLICY = (
    '{"expiration": "2015-12-29T01:00:00Z", "conditions": [{"bucket": "sigv4examplebucket"}, '
    '{"key": "user/user1/photo.jpg"}, {"x-amz-algorithm": "AWS4-HMAC-SHA256"}, '
    '{"x-amz-credential": "AKIAIOSFODNN7EXAMPLE/20151229/us-east-1/s3/aws4_request"}, '
    '{"x-amz-date": "20151229T000000Z"}]}'
)
V2_B64 = (
    "eyJleHBpcmF0aW9uIjogIjIwMTUtMTItMjlUMDE6MDA6MDBaIiwgImNvbmRpdGlvbnMiOiBbeyJidWNrZXQiOiAic2lndjRleGFtcGxl"
    "YnVja2V0In0sIHsia2V5IjogInVzZXIvdXNlcjEvcGhvdG8uanBnIn0sIHsieC1hbXotYWxnb3JpdGhtIjogIkFXUzQtSE1BQy1TSEEy"
    "NTYifSwgeyJ4LWFtei1jcmVkZW50aWFsIjogIkFLSUFJT1NGT0ROTjdFWEFNUExFLzIwMTUxMjI5L3VzLWVhc3QtMS9zMy9hd3M0X3Jl"
    "cXVlc3QifSwgeyJ4LWFtei1kYXRlIjogIjIwMTUxMjI5VDAwMDAwMFoifV19"
)
V2_SIGNATURE = "3364624b39010d9b06f5d9b8c9a18a6e478d261c048159c92f2fd6fa885f14e6"
V3_B64 = (
    "eyJleHBpcmF0aW9uIjogIjIwMTUtMTItMjlUMDE6MDA6MDBaIiwgImNvbmRpdGlvbnMiOiBbeyJidWNrZXQiOiAic2lndjRleGFtcGxl"
    "YnVja2V0In0sIHsia2V5IjogInVzZXIvdXNlcjEvcGhvdG8uanBnIn0sIHsieC1hbXotYWxnb3JpdGhtIjogIkFXUzQtSE1BQy1TSEEy"
    "NTYifSwgeyJ4LWFtei1jcmVkZW50aWFsIjogIkFLSUFJT1NGT0ROTjdFWEFNUExFLzIwMTUxMjI5L3VzLWVhc3QtMS9zMy9hd3M0X3Jl"
    "cXVlc3QifSwgeyJ4LWFtei1kYXRlIjogIjIwMTUxMjI5VDAwMDAwMFoifSwgeyJ4LWFtei1zZWN1cml0eS10b2tlbiI6ICJUT0tFTi8x"
    "MjMrPSJ9XX0="
)
V3_SIGNATURE = "1ba68e0499ebdbc734809f91a571b87e8cd7138a95b064649baff38a4d4ff8d1"
V4_POLICY = (
    '{"expiration": "2015-12-29T00:10:00Z", "conditions": [{"success_action_status": "201"}, '
    '["content-length-range", 1, 1048576], ["starts-with", "$Content-Type", "image/"], {"bucket": "b"}, '
    '["starts-with", "$key", "uploads/"], {"x-amz-algorithm": "AWS4-HMAC-SHA256"}, '
    '{"x-amz-credential": "AKIAIOSFODNN7EXAMPLE/20151229/us-east-1/s3/aws4_request"}, '
    '{"x-amz-date": "20151229T000000Z"}]}'
)
V4_SIGNATURE = "5c23c466e7495db42702842d3582201ecf1fe5da69a86f05d31af4ec0630c937"

APPENDED = "bucket=sigv4examplebucket&key=user%2Fuser1%2Fmy+photo.jpg&etag=%22abc%22"
AUTH_CONDITIONS = ({"x-amz-algorithm": ALGORITHM}, {"x-amz-credential": CREDENTIAL}, {"x-amz-date": AMZ_DATE})

Form = list[tuple[str, str]]


def lookup(access_key_id: str) -> str | None:
    return SECRET if access_key_id == AKID else None


def check(
    fields: Sequence[tuple[str, str]],
    *,
    bucket: str = BUCKET,
    filename: str | None = None,
    now: datetime = CLOCK + timedelta(minutes=5),
    region: str = REGION,
    max_size_allowed: int | None = None,
) -> AcceptedPost:
    return check_post_fields(
        fields=fields,
        filename=filename,
        bucket=bucket,
        lookup_secret=lookup,
        region=region,
        now=now,
        max_size_allowed=max_size_allowed,
    )


def rejected(
    fields: Sequence[tuple[str, str]],
    *,
    bucket: str = BUCKET,
    filename: str | None = None,
    now: datetime = CLOCK + timedelta(minutes=5),
) -> S3Error:
    with pytest.raises(S3Error) as info:
        check(fields, bucket=bucket, filename=filename, now=now)
    return info.value


def missing_message(spelling: str) -> str:
    return (
        f"Bucket POST must contain a field named '{spelling}'.  "
        "If it is specified, please check the order of the fields."
    )


def assert_error(
    error: S3Error, status: int, code: str, message: str, extras: Sequence[tuple[str, str]] = ()
) -> None:
    assert (error.status, error.code, error.message, error.extras) == (status, code, message, list(extras))


def v3_form() -> Form:
    post = presigned_post(
        url=VHOST_URL,
        bucket=BUCKET,
        key="user/user1/photo.jpg",
        credentials=CREDS_TOKEN,
        region=REGION,
        expires_in=3600,
        now=CLOCK,
    )
    return list(post["fields"].items())


def v4_form() -> Form:
    post = presigned_post(
        url="https://s3.amazonaws.com/b",
        bucket="b",
        key="uploads/${filename}",
        credentials=CREDS,
        region=REGION,
        expires_in=600,
        now=CLOCK,
        fields={"success_action_status": "201", "Content-Type": "image/png"},
        conditions=[
            {"success_action_status": "201"},
            ["content-length-range", 1, 1048576],
            ["starts-with", "$Content-Type", "image/"],
        ],
    )
    return list(post["fields"].items())


def v1_form() -> Form:
    return [
        ("key", "user/user1/${filename}"),
        ("acl", "public-read"),
        ("success_action_redirect", V1_REDIRECT),
        ("Content-Type", "image/jpeg"),
        ("x-amz-meta-uuid", "14365123651274"),
        ("x-amz-server-side-encryption", "AES256"),
        ("X-Amz-Credential", CREDENTIAL),
        ("X-Amz-Algorithm", ALGORITHM),
        ("X-Amz-Date", AMZ_DATE),
        ("x-amz-meta-tag", ""),
        ("Policy", V1_B64),
        ("X-Amz-Signature", V1_SIGNATURE),
    ]


def replaced(form: Sequence[tuple[str, str]], name: str, value: str) -> Form:
    assert any(n == name for n, _ in form)
    return [(n, value if n == name else v) for n, v in form]


def without(form: Sequence[tuple[str, str]], *names: str) -> Form:
    return [(n, v) for n, v in form if n not in names]


def value_of(form: Sequence[tuple[str, str]], name: str) -> str:
    return next(v for n, v in form if n == name)


def encode(document: Mapping[str, object] | str) -> str:
    text = document if isinstance(document, str) else json.dumps(document)
    return base64.b64encode(text.encode("utf-8")).decode("ascii")


def policy(*conditions: object, expiration: object = EXPIRATION) -> dict[str, object]:
    """A policy for BUCKET with the given conditions and the auth conditions of the default credential."""
    return {"expiration": expiration, "conditions": [{"bucket": BUCKET}, *conditions, *AUTH_CONDITIONS]}


def signed_form(
    policy_b64: str,
    *fields: tuple[str, str],
    date: str = "20151229",
    credential: str = CREDENTIAL,
) -> Form:
    """fields, then the auth fields, with policy_b64 correctly signed for date in REGION."""
    signature = sign_policy(policy_b64=policy_b64, secret_access_key=SECRET, date=date, region=REGION)
    return [
        *fields,
        ("x-amz-algorithm", ALGORITHM),
        ("x-amz-credential", credential),
        ("x-amz-date", AMZ_DATE),
        ("policy", policy_b64),
        ("x-amz-signature", signature),
    ]


def keyed(*conditions: object, expiration: object = EXPIRATION) -> str:
    """The base64 of a policy that also allows the key 'k'."""
    return encode(policy({"key": "k"}, *conditions, expiration=expiration))


# ---------------------------------------------------------------------------------------------------------
# Signing: vectors V1 to V4.


def test_v1_policy_text_base64_and_digest() -> None:
    raw = V1_POLICY.encode("utf-8")
    assert len(raw) == 648
    assert (
        hashlib.sha256(raw).hexdigest() == "bdbc873103bd66b82f3a98478e5938ca1c7d8204563309232bdd4b1bbdcf74fb"
    )
    assert encode(V1_POLICY) == V1_B64
    assert len(V1_B64) == 864


def test_v1_signing_key_and_signature() -> None:
    key = signing_key(secret_access_key=SECRET, date="20151229", region=REGION)
    assert key.hex() == "cbcef1ebeaefc82cce6530b9f0a9ae598846065f5c5bae0674bd5ebc4ba52d28"
    signature = sign_policy(policy_b64=V1_B64, secret_access_key=SECRET, date="20151229", region=REGION)
    assert signature == V1_SIGNATURE


def test_v2_presigned_post_matches_botocore() -> None:
    post = presigned_post(
        url=VHOST_URL,
        bucket=BUCKET,
        key="user/user1/photo.jpg",
        credentials=CREDS,
        region=REGION,
        expires_in=3600,
        now=CLOCK,
    )
    assert post["url"] == VHOST_URL
    assert list(post["fields"].items()) == [
        ("key", "user/user1/photo.jpg"),
        ("x-amz-algorithm", ALGORITHM),
        ("x-amz-credential", CREDENTIAL),
        ("x-amz-date", AMZ_DATE),
        ("policy", V2_B64),
        ("x-amz-signature", V2_SIGNATURE),
    ]
    decoded = base64.b64decode(V2_B64)
    assert decoded == V2_POLICY.encode()
    assert len(decoded) == 279


def test_v3_presigned_post_with_session_token() -> None:
    fields = v3_form()
    assert fields == [
        ("key", "user/user1/photo.jpg"),
        ("x-amz-algorithm", ALGORITHM),
        ("x-amz-credential", CREDENTIAL),
        ("x-amz-date", AMZ_DATE),
        ("x-amz-security-token", TOKEN),
        ("policy", V3_B64),
        ("x-amz-signature", V3_SIGNATURE),
    ]
    decoded = base64.b64decode(V3_B64)
    assert decoded == V2_POLICY[:-2].encode() + b', {"x-amz-security-token": "TOKEN/123+="}]}'
    assert len(decoded) == 320


def test_v4_presigned_post_with_fields_and_conditions() -> None:
    fields = v4_form()
    assert [name for name, _ in fields] == [
        "success_action_status",
        "Content-Type",
        "key",
        "x-amz-algorithm",
        "x-amz-credential",
        "x-amz-date",
        "policy",
        "x-amz-signature",
    ]
    assert value_of(fields, "key") == "uploads/${filename}"
    assert value_of(fields, "policy") == encode(V4_POLICY)
    assert value_of(fields, "x-amz-signature") == V4_SIGNATURE


def test_presigned_post_copies_its_inputs() -> None:
    fields = {"acl": "private"}
    conditions: list[Mapping[str, str] | Sequence[str | int]] = [{"acl": "private"}]
    presign(fields=fields, conditions=conditions)
    assert fields == {"acl": "private"}
    assert conditions == [{"acl": "private"}]


def presign(
    *,
    fields: Mapping[str, str] | None = None,
    conditions: Sequence[Mapping[str, str] | Sequence[str | int]] | None = None,
    expires_in: int = 60,
    now: datetime = CLOCK,
) -> dict[str, object]:
    return presigned_post(
        url=VHOST_URL,
        bucket=BUCKET,
        key="k",
        credentials=CREDS,
        region=REGION,
        expires_in=expires_in,
        now=now,
        fields=fields,
        conditions=conditions,
    )


@pytest.mark.parametrize("name", ["Policy", "KEY", "x-amz-security-token", "X-Amz-Signature"])
def test_presigned_post_refuses_fields_it_generates(name: str) -> None:
    with pytest.raises(ValueError, match="generated fields"):
        presign(fields={name: "x"})


def test_presigned_post_refuses_a_string_condition() -> None:
    with pytest.raises(TypeError, match="mapping or a list"):
        presign(conditions=["starts-with"])


def test_presigned_post_refuses_a_useless_lifetime_or_a_naive_clock() -> None:
    with pytest.raises(ValueError, match="positive"):
        presign(expires_in=0)
    with pytest.raises(ValueError, match="timezone-aware"):
        presign(now=datetime(2015, 12, 29))


# ---------------------------------------------------------------------------------------------------------
# Accepted forms.


def test_v3_form_is_accepted() -> None:
    accepted = check(v3_form())
    assert accepted == AcceptedPost(
        key="user/user1/photo.jpg",
        access_key_id=AKID,
        session_token=TOKEN,
        expires_at=datetime(2015, 12, 29, 1, tzinfo=UTC),
        min_size=0,
        max_size=None,
        success_action_status=204,
        success_action_redirect=None,
        content_type=None,
        metadata={},
        fields=dict(v3_form()),
    )


def test_aws_example_form_is_accepted_with_its_case_variants() -> None:
    accepted = check(
        v1_form(), filename="C:\\Users\\me\\photo.jpg", now=datetime(2015, 12, 29, 12, tzinfo=UTC)
    )
    assert accepted.key == "user/user1/photo.jpg"
    assert accepted.access_key_id == AKID
    assert accepted.session_token is None
    assert accepted.expires_at == datetime(2015, 12, 30, 12, tzinfo=UTC)
    assert (accepted.min_size, accepted.max_size) == (0, None)
    assert accepted.success_action_status == 204
    assert accepted.success_action_redirect == V1_REDIRECT
    assert accepted.content_type == "image/jpeg"
    assert accepted.metadata == {"uuid": "14365123651274", "tag": ""}
    assert list(accepted.fields) == [
        "key",
        "acl",
        "success_action_redirect",
        "content-type",
        "x-amz-meta-uuid",
        "x-amz-server-side-encryption",
        "x-amz-credential",
        "x-amz-algorithm",
        "x-amz-date",
        "x-amz-meta-tag",
        "policy",
        "x-amz-signature",
    ]
    assert accepted.fields["key"] == "user/user1/photo.jpg"


def test_aws_example_form_expires_at_its_expiration_instant() -> None:
    error = rejected(v1_form(), filename="a.jpg", now=datetime(2015, 12, 30, 12, tzinfo=UTC))
    assert_error(error, 403, "AccessDenied", "Invalid according to Policy: Policy expired.")


def test_v4_form_reports_its_size_range_and_status() -> None:
    accepted = check(v4_form(), bucket="b", filename="pic.png")
    assert accepted.key == "uploads/pic.png"
    assert (accepted.min_size, accepted.max_size) == (1, 1048576)
    assert accepted.success_action_status == 201
    assert accepted.content_type == "image/png"
    assert accepted.expires_at == datetime(2015, 12, 29, 0, 10, tzinfo=UTC)


@pytest.mark.parametrize(
    ("filename", "key"),
    [
        ("photo.jpg", "uploads/photo.jpg"),
        ("/home/me/photo.jpg", "uploads/photo.jpg"),
        ("C:\\Users\\me\\photo.jpg", "uploads/photo.jpg"),
        ("dir/", "uploads/"),
        ("", "uploads/"),
        (None, "uploads/${filename}"),
    ],
)
def test_filename_variable_is_expanded_to_the_base_name(filename: str | None, key: str) -> None:
    form = signed_form(encode(policy(["starts-with", "$key", "uploads/"])), ("key", "uploads/${filename}"))
    assert check(form, filename=filename).key == key


def test_filename_variable_is_expanded_in_every_field() -> None:
    form = signed_form(
        keyed({"x-amz-meta-name": "photo.jpg"}), ("key", "k"), ("x-amz-meta-name", "${filename}")
    )
    assert check(form, filename="photo.jpg").metadata == {"name": "photo.jpg"}


@pytest.mark.parametrize(
    ("status", "expected"),
    [("200", 200), ("201", 201), ("204", 204), ("404", 204), ("", 204), (" 201", 204)],
)
def test_success_action_status(status: str, expected: int) -> None:
    form = signed_form(
        keyed({"success_action_status": status}), ("key", "k"), ("success_action_status", status)
    )
    assert check(form).success_action_status == expected


def test_deprecated_redirect_field_is_the_success_redirect() -> None:
    form = signed_form(keyed({"redirect": "https://a.test/"}), ("key", "k"), ("redirect", "https://a.test/"))
    assert check(form).success_action_redirect == "https://a.test/"


def test_condition_names_are_case_insensitive_and_values_exact() -> None:
    conditions = (["eq", "$success_Action_REDIRECT", "http://a.test/"], ["EQ", "$X-Amz-Meta-Test-2", "v"])
    fields = (("key", "k"), ("success_action_redirect", "http://a.test/"), ("x-amz-meta-TEST-2", "v"))
    accepted = check(signed_form(keyed(*conditions), *fields))
    assert accepted.metadata == {"test-2": "v"}

    upper = (("key", "k"), ("success_action_redirect", "HTTP://a.test/"), ("x-amz-meta-TEST-2", "v"))
    error = rejected(signed_form(keyed(*conditions), *upper))
    expected = '["eq", "$success_Action_REDIRECT", "http://a.test/"]'
    assert_error(error, 403, "AccessDenied", CONDITION_FAILED + expected)


def test_string_bounds_of_content_length_range_are_accepted() -> None:
    form = signed_form(keyed(["content-length-range", "5", "10"]), ("key", "k"))
    accepted = check(form)
    assert (accepted.min_size, accepted.max_size) == (5, 10)


def test_several_content_length_ranges_intersect() -> None:
    form = signed_form(
        keyed(["content-length-range", 1, 100], ["content-length-range", 10, 1000]), ("key", "k")
    )
    accepted = check(form)
    assert (accepted.min_size, accepted.max_size) == (10, 100)


@pytest.mark.parametrize(
    ("conditions", "cap", "expected"),
    [
        ((["content-length-range", 1, 1048576],), 1000, 1000),
        ((["content-length-range", 1, 1048576],), 2_000_000, 1048576),
        ((), 1000, 1000),
        ((), None, None),
    ],
)
def test_server_cap_lowers_the_policy_maximum(
    conditions: tuple[object, ...], cap: int | None, expected: int | None
) -> None:
    accepted = check(signed_form(keyed(*conditions), ("key", "k")), max_size_allowed=cap)
    assert accepted.max_size == expected


def test_x_ignore_fields_need_no_condition() -> None:
    form = signed_form(keyed(), ("key", "k"), ("X-Ignore-Flash", "1"), ("x-ignore-filename", "a.jpg"))
    assert check(form).fields["x-ignore-flash"] == "1"


def test_repeated_fields_are_compared_comma_joined() -> None:
    fields = (("key", "k"), ("x-amz-meta-tag", "a"), ("X-Amz-Meta-Tag", "b"))
    accepted = check(signed_form(keyed({"x-amz-meta-tag": "a,b"}), *fields))
    assert accepted.metadata == {"tag": "a,b"}

    error = rejected(signed_form(keyed({"x-amz-meta-tag": "a"}), *fields))
    assert_error(error, 403, "AccessDenied", CONDITION_FAILED + '["eq", "$x-amz-meta-tag", "a"]')


@pytest.mark.parametrize("content_type", ["image/jpg", "image/jpg,image/png"])
def test_content_type_starts_with_applies_to_each_listed_type(content_type: str) -> None:
    form = signed_form(
        keyed(["starts-with", "$Content-Type", "image/"]), ("key", "k"), ("content-type", content_type)
    )
    assert check(form).content_type == content_type


@pytest.mark.parametrize("content_type", ["text/plain", "image/jpg,text/plain", "image/jpg, image/png"])
def test_content_type_starts_with_fails_when_one_listed_type_differs(content_type: str) -> None:
    form = signed_form(
        keyed(["starts-with", "$Content-Type", "image/"]), ("key", "k"), ("Content-Type", content_type)
    )
    error = rejected(form)
    assert_error(error, 403, "AccessDenied", CONDITION_FAILED + '["starts-with", "$Content-Type", "image/"]')


def test_starts_with_on_other_fields_compares_the_whole_value() -> None:
    form = signed_form(keyed(["starts-with", "$acl", "public"]), ("key", "k"), ("acl", "private,public-read"))
    assert_error(rejected(form), 403, "AccessDenied", CONDITION_FAILED + '["starts-with", "$acl", "public"]')


def test_bucket_form_field_is_covered_by_the_bucket_condition() -> None:
    form = signed_form(keyed(), ("key", "k"), ("bucket", BUCKET))
    assert check(form).fields["bucket"] == BUCKET


def test_bucket_condition_is_checked_against_the_posted_bucket() -> None:
    form = signed_form(keyed(), ("key", "k"), ("bucket", "other"))
    assert check(form).key == "k"
    error = rejected(form, bucket="other")
    assert_error(error, 403, "AccessDenied", CONDITION_FAILED + '["eq", "$bucket", "sigv4examplebucket"]')


# ---------------------------------------------------------------------------------------------------------
# Tampering and malformed forms.


def test_changed_signature() -> None:
    form = replaced(v3_form(), "x-amz-signature", "0" * 64)
    error = rejected(form)
    assert_error(
        error,
        403,
        "SignatureDoesNotMatch",
        SIGNATURE_MISMATCH,
        [
            ("AWSAccessKeyId", AKID),
            ("StringToSign", V3_B64),
            ("SignatureProvided", "0" * 64),
            ("StringToSignBytes", V3_B64.encode().hex(" ")),
        ],
    )


def test_non_ascii_signature_is_a_mismatch() -> None:
    error = rejected(replaced(v3_form(), "x-amz-signature", "é"))
    assert error.code == "SignatureDoesNotMatch"


def test_edited_policy_without_resigning() -> None:
    edited = encode(base64.b64decode(V3_B64).decode().replace("user/user1/photo.jpg", "user/user1/other.jpg"))
    form = replaced(replaced(v3_form(), "policy", edited), "key", "user/user1/other.jpg")
    error = rejected(form)
    assert error.code == "SignatureDoesNotMatch"
    assert error.extras[1] == ("StringToSign", edited)
    assert error.extras[2] == ("SignatureProvided", V3_SIGNATURE)


def test_truncated_policy() -> None:
    error = rejected(replaced(v3_form(), "policy", V3_B64[:-2]))
    assert error.status == 403
    assert error.code == "SignatureDoesNotMatch"
    assert error.extras[1] == ("StringToSign", V3_B64[:-2])
    assert error.extras[3] == ("StringToSignBytes", V3_B64[:-2].encode().hex(" "))


@pytest.mark.parametrize(
    "now", [datetime(2015, 12, 29, 1, tzinfo=UTC), datetime(2015, 12, 29, 2, 0, tzinfo=UTC)]
)
def test_expired_policy(now: datetime) -> None:
    assert_error(
        rejected(v3_form(), now=now), 403, "AccessDenied", "Invalid according to Policy: Policy expired."
    )


def test_expired_policy_just_before_expiration_is_accepted() -> None:
    assert check(v3_form(), now=datetime(2015, 12, 29, 0, 59, 59, tzinfo=UTC)).key == "user/user1/photo.jpg"


def test_changed_key_fails_the_eq_condition() -> None:
    error = rejected(replaced(v3_form(), "key", "user/user1/other.jpg"))
    assert_error(error, 403, "AccessDenied", CONDITION_FAILED + '["eq", "$key", "user/user1/photo.jpg"]')


def test_changed_key_fails_the_starts_with_condition() -> None:
    error = rejected(replaced(v4_form(), "key", "elsewhere/${filename}"), bucket="b", filename="a.png")
    assert_error(error, 403, "AccessDenied", CONDITION_FAILED + '["starts-with", "$key", "uploads/"]')


@pytest.mark.parametrize("name", ["x-requested-with", "X-Requested-With"])
def test_extra_field(name: str) -> None:
    form = [*v3_form(), (name, "XMLHttpRequest")]
    error = rejected(form)
    assert_error(
        error, 403, "AccessDenied", "Invalid according to Policy: Extra input fields: x-requested-with"
    )


def test_bucket_field_without_a_bucket_condition_is_extra() -> None:
    document = {"expiration": EXPIRATION, "conditions": [{"key": "k"}, *AUTH_CONDITIONS]}
    form = signed_form(encode(document), ("key", "k"), ("bucket", BUCKET))
    assert_error(
        rejected(form), 403, "AccessDenied", "Invalid according to Policy: Extra input fields: bucket"
    )


def test_generated_field_the_policy_does_not_name_is_extra() -> None:
    form = signed_form(encode({"expiration": EXPIRATION, "conditions": [{"key": "k"}]}), ("key", "k"))
    error = rejected(form)
    assert_error(
        error, 403, "AccessDenied", "Invalid according to Policy: Extra input fields: x-amz-algorithm"
    )


@pytest.mark.parametrize(
    ("field", "spelling"),
    [
        ("x-amz-algorithm", "X-Amz-Algorithm"),
        ("x-amz-credential", "X-Amz-Credential"),
        ("x-amz-date", "X-Amz-Date"),
        ("x-amz-signature", "X-Amz-Signature"),
        ("policy", "Policy"),
    ],
)
def test_missing_auth_field(field: str, spelling: str) -> None:
    error = rejected(without(v3_form(), field))
    extras = [("ArgumentName", spelling), ("ArgumentValue", "")]
    assert_error(error, 400, "InvalidArgument", missing_message(spelling), extras)


def test_missing_algorithm_is_named_before_credential() -> None:
    error = rejected(without(v3_form(), "x-amz-algorithm", "x-amz-credential"))
    assert error.extras[0] == ("ArgumentName", "X-Amz-Algorithm")


@pytest.mark.parametrize("key", [None, ""])
def test_missing_key(key: str | None) -> None:
    form = without(v3_form(), "key") if key is None else replaced(v3_form(), "key", key)
    error = rejected(form)
    extras = [("ArgumentName", "key"), ("ArgumentValue", "")]
    assert_error(error, 400, "InvalidArgument", missing_message("key"), extras)


def test_missing_key_is_reported_before_auth() -> None:
    assert rejected([("acl", "private")]).extras[0] == ("ArgumentName", "key")


@pytest.mark.parametrize(
    "form",
    [[("key", "k")], [("key", "k"), ("policy", V3_B64)], [("key", "k"), ("x-amz-security-token", TOKEN)]],
)
def test_no_auth_fields_is_an_anonymous_write(form: Form) -> None:
    assert_error(rejected(form), 403, "AccessDenied", "Access Denied")


def test_sigv2_form_is_not_supported() -> None:
    form = [("key", "k"), ("AWSAccessKeyId", AKID), ("policy", V3_B64), ("signature", "c2ln")]
    message = "The authorization mechanism you have provided is not supported. Please use AWS4-HMAC-SHA256."
    assert_error(rejected(form), 400, "InvalidRequest", message)


def test_wrong_algorithm() -> None:
    error = rejected(replaced(v3_form(), "x-amz-algorithm", "AWS4-HMAC-SHA1"))
    assert_error(
        error,
        400,
        "InvalidArgument",
        'X-Amz-Algorithm only supports "AWS4-HMAC-SHA256"',
        [("ArgumentName", "X-Amz-Algorithm"), ("ArgumentValue", "AWS4-HMAC-SHA1")],
    )


@pytest.mark.parametrize(
    ("credential", "message"),
    [
        (
            f"{AKID}/20151229/us-east-1/s3",
            "Error parsing the X-Amz-Credential parameter; the Credential is mal-formed; "
            'expecting "<YOUR-AKID>/YYYYMMDD/REGION/SERVICE/aws4_request".',
        ),
        (
            f"/20151229/{REGION}/s3/aws4_request",
            "Error parsing the X-Amz-Credential parameter; the Credential is mal-formed; "
            'expecting "<YOUR-AKID>/YYYYMMDD/REGION/SERVICE/aws4_request".',
        ),
        (
            f"{AKID}/2015-12-29/{REGION}/s3/aws4_request",
            'Error parsing the X-Amz-Credential parameter; incorrect date format "2015-12-29". '
            'This date in the credential must be in the format "yyyyMMdd".',
        ),
        (
            f"{AKID}/20151229/{REGION}/ec2/aws4_request",
            'Error parsing the X-Amz-Credential parameter; incorrect service "ec2". '
            'This endpoint belongs to "s3".',
        ),
        (
            f"{AKID}/20151229/{REGION}/s3/aws5_request",
            'Error parsing the X-Amz-Credential parameter; incorrect terminal "aws5_request". '
            'This endpoint uses "aws4_request".',
        ),
    ],
)
def test_malformed_credential(credential: str, message: str) -> None:
    error = rejected(replaced(v3_form(), "x-amz-credential", credential))
    extras = [("ArgumentName", "X-Amz-Credential"), ("ArgumentValue", credential)]
    assert_error(error, 400, "InvalidArgument", message, extras)


def test_credential_for_another_region() -> None:
    post = presigned_post(
        url=VHOST_URL, bucket=BUCKET, key="k", credentials=CREDS, region="us-west-1", expires_in=60, now=CLOCK
    )
    credential = f"{AKID}/20151229/us-west-1/s3/aws4_request"
    error = rejected(list(post["fields"].items()))
    assert_error(
        error,
        400,
        "InvalidArgument",
        "the region 'us-west-1' is wrong; expecting 'us-east-1'",
        [("ArgumentName", "X-Amz-Credential"), ("ArgumentValue", credential), ("Region", REGION)],
    )


def test_form_for_the_server_region_is_accepted() -> None:
    post = presigned_post(
        url=VHOST_URL,
        bucket=BUCKET,
        key="k",
        credentials=CREDS,
        region="eu-central-1",
        expires_in=3600,
        now=CLOCK,
    )
    assert check(list(post["fields"].items()), region="eu-central-1").key == "k"


def test_changed_session_token_fails_its_condition() -> None:
    error = rejected(replaced(v3_form(), "x-amz-security-token", "OTHER"))
    assert_error(error, 403, "AccessDenied", CONDITION_FAILED + f'["eq", "$x-amz-security-token", "{TOKEN}"]')


def test_credential_date_differing_from_the_policy_fails_its_condition() -> None:
    # Signed for 20151230, so the signature holds, but the policy binds the credential of 20151229.
    credential = f"{AKID}/20151230/{REGION}/s3/aws4_request"
    form = signed_form(keyed(), ("key", "k"), date="20151230", credential=credential)
    error = rejected(form)
    assert_error(
        error, 403, "AccessDenied", CONDITION_FAILED + f'["eq", "$x-amz-credential", "{CREDENTIAL}"]'
    )


def test_credential_date_changed_without_resigning() -> None:
    form = replaced(v3_form(), "x-amz-credential", f"{AKID}/20151230/{REGION}/s3/aws4_request")
    assert rejected(form).code == "SignatureDoesNotMatch"


def test_x_amz_date_differing_from_the_policy_fails_its_condition() -> None:
    error = rejected(replaced(v3_form(), "x-amz-date", "20151229T000001Z"))
    assert_error(error, 403, "AccessDenied", CONDITION_FAILED + f'["eq", "$x-amz-date", "{AMZ_DATE}"]')


def test_unknown_access_key() -> None:
    credentials = Credentials(access_key_id="AKIDUNKNOWN", secret_access_key=SECRET)
    post = presigned_post(
        url=VHOST_URL,
        bucket=BUCKET,
        key="k",
        credentials=credentials,
        region=REGION,
        expires_in=60,
        now=CLOCK,
    )
    assert_error(
        rejected(list(post["fields"].items())),
        403,
        "InvalidAccessKeyId",
        "The AWS Access Key Id you provided does not exist in our records.",
        [("AWSAccessKeyId", "AKIDUNKNOWN")],
    )


@pytest.mark.parametrize(
    "policy_b64",
    [
        encode("{not json"),
        "!!not base64!!",
        "eyJ",
        base64.b64encode(b"\xff\xfe{}").decode(),
        encode("[]"),
        encode('"text"'),
        encode(policy(["content-length-range", 1.5, 10])),
        encode(policy({"key": None})),
        encode(policy(["eq", "$key", None])),
        encode('{"expiration": "2015-12-29T01:00:00Z", "conditions": [], "conditions": []}'),
        encode('{"expiration": "2015-12-29T01:00:00Z", "conditions": [["content-length-range", 0, NaN]]}'),
        encode("[" * 5000 + "]" * 5000),
    ],
)
def test_invalid_policy_json(policy_b64: str) -> None:
    error = rejected(signed_form(policy_b64, ("key", "k")))
    assert_error(error, 400, "InvalidPolicyDocument", "Invalid Policy: Invalid JSON.")


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ({**policy(), "Statement": []}, "Invalid Policy: Unexpected: 'statement'"),
        ({"EXPIRATION": EXPIRATION, "conditions": []}, "Invalid Policy: Unexpected: 'expiration'"),
        ({"conditions": []}, "Invalid Policy: Policy missing expiration."),
        ({"expiration": EXPIRATION}, "Invalid Policy: Policy missing conditions."),
        (
            {"expiration": EXPIRATION, "conditions": {}},
            "Invalid Policy: Invalid 'conditions' value: must be an array.",
        ),
        (policy("key"), "Invalid Policy: Invalid Condition: a condition must be an object or an array."),
    ],
)
def test_policy_structure(document: dict[str, object], message: str) -> None:
    error = rejected(signed_form(encode(document), ("key", "k")))
    assert_error(error, 400, "InvalidPolicyDocument", message)


@pytest.mark.parametrize(
    ("expiration", "shown"),
    [
        ("2015-12-29 01:00:00Z", "2015-12-29 01:00:00Z"),
        ("2015-12-29T01:00:00+02:00", "2015-12-29T01:00:00+02:00"),
        ("2015-12-29T01:00:00", "2015-12-29T01:00:00"),
        ("2015-13-29T01:00:00Z", "2015-13-29T01:00:00Z"),
        ("2015-12-29t01:00:00z", "2015-12-29t01:00:00z"),
        (1451350800, "1451350800"),
    ],
)
def test_bad_expiration(expiration: object, shown: str) -> None:
    error = rejected(signed_form(keyed(expiration=expiration), ("key", "k")))
    assert_error(
        error, 400, "InvalidPolicyDocument", f"Invalid Policy: Invalid 'expiration' value: '{shown}'"
    )


@pytest.mark.parametrize(
    ("expiration", "expires_at"),
    [
        ("2015-12-29T01:00:00.000Z", datetime(2015, 12, 29, 1, tzinfo=UTC)),
        ("2015-12-29T01:00:00.5Z", datetime(2015, 12, 29, 1, 0, 0, 500000, tzinfo=UTC)),
        ("2015-12-29T01:00:00.123456789Z", datetime(2015, 12, 29, 1, 0, 0, 123456, tzinfo=UTC)),
    ],
)
def test_expiration_with_fractional_seconds(expiration: str, expires_at: datetime) -> None:
    assert check(signed_form(keyed(expiration=expiration), ("key", "k"))).expires_at == expires_at


@pytest.mark.parametrize(
    ("condition", "message"),
    [
        (
            {"bucket": BUCKET, "acl": "private"},
            SIMPLE_PROPERTIES,
        ),
        (
            {},
            SIMPLE_PROPERTIES,
        ),
        ({"success_action_status": 201}, "Invalid Policy: Invalid Simple-Condition: value must be a string."),
    ],
)
def test_bad_simple_condition(condition: dict[str, object], message: str) -> None:
    error = rejected(signed_form(keyed(condition), ("key", "k")))
    assert_error(error, 400, "InvalidPolicyDocument", message)


def test_policy_errors_come_before_condition_failures() -> None:
    form = signed_form(keyed({"acl": "x"}, {"a": "1", "b": "2"}), ("key", "k"))
    assert rejected(form).code == "InvalidPolicyDocument"


@pytest.mark.parametrize(
    "condition",
    [
        ["content-length-range", "test", "10"],
        ["content-length-range", 1, "ten"],
        ["content-length-range", True, 10],
        ["content-length-range", "-1", "10"],
        ["content-length-range", "9" * 5000, "10"],
        ["content-length-range", 1],
    ],
)
def test_bad_content_length_range_fails_as_a_condition(condition: list[object]) -> None:
    error = rejected(signed_form(keyed(condition), ("key", "k")))
    assert_error(error, 403, "AccessDenied", CONDITION_FAILED + json.dumps(condition))


@pytest.mark.parametrize(
    ("condition", "fields"),
    [
        (["starts-with", "$Content-Type", ""], ()),
        (["eq", "$acl", "private"], ()),
        ({"acl": "private"}, ()),
        (["eq", "acl", "private"], (("acl", "private"),)),
        (["starts-with", "acl", ""], (("acl", "private"),)),
        (["eq", "$acl"], (("acl", "private"),)),
        (["in", "$acl", "private"], (("acl", "private"),)),
        (["eq", "$acl", 5], (("acl", "5"),)),
        (
            ["starts-with", "$x-amz-server-side-encryption", "AES"],
            (("x-amz-server-side-encryption", "AES256"),),
        ),
        (["starts-with", "$bucket", "sigv4"], ()),
    ],
)
def test_conditions_that_fail(condition: object, fields: tuple[tuple[str, str], ...]) -> None:
    error = rejected(signed_form(keyed(condition), ("key", "k"), *fields))
    shown = ["eq", "$acl", "private"] if isinstance(condition, dict) else condition
    assert_error(error, 403, "AccessDenied", CONDITION_FAILED + json.dumps(shown))


def test_starts_with_on_meta_fields_and_any_operator_case() -> None:
    form = signed_form(
        keyed(["Starts-With", "$x-amz-meta-tag", "ab"], ["starts-with", "$acl", ""]),
        ("key", "k"),
        ("x-amz-meta-tag", "abc"),
        ("acl", "private"),
    )
    assert check(form).metadata == {"tag": "abc"}


def test_condition_failure_prints_non_ascii_as_written() -> None:
    form = signed_form(
        keyed({"x-amz-meta-name": "président"}), ("key", "k"), ("x-amz-meta-name", "president")
    )
    error = rejected(form)
    assert error.message == CONDITION_FAILED + '["eq", "$x-amz-meta-name", "président"]'


def test_naive_clock_is_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        check(v3_form(), now=datetime(2015, 12, 29))


# ---------------------------------------------------------------------------------------------------------
# Error helpers and success responses.

XML_HEAD = b'<?xml version="1.0" encoding="UTF-8"?>\n<Error>'
XML_TAIL = b"<RequestId>R</RequestId><HostId>H</HostId></Error>"


@pytest.mark.parametrize(
    ("error", "status", "body"),
    [
        (
            too_large_fields_error(),
            400,
            b"<Code>MaxPostPreDataLengthExceeded</Code>"
            b"<Message>Your POST request fields preceeding the upload file was too large.</Message>"
            b"<MaxPostPreDataLengthBytes>20480</MaxPostPreDataLengthBytes>",
        ),
        (
            entity_too_large(proposed_size=11, max_size=10),
            400,
            b"<Code>EntityTooLarge</Code>"
            b"<Message>Your proposed upload exceeds the maximum allowed size</Message>"
            b"<ProposedSize>11</ProposedSize><MaxSizeAllowed>10</MaxSizeAllowed>",
        ),
        (
            entity_too_small(proposed_size=4, min_size=5),
            400,
            b"<Code>EntityTooSmall</Code>"
            b"<Message>Your proposed upload is smaller than the minimum allowed size</Message>"
            b"<ProposedSize>4</ProposedSize><MinSizeAllowed>5</MinSizeAllowed>",
        ),
        (
            missing_file_error(),
            400,
            b"<Code>InvalidArgument</Code>"
            b"<Message>POST requires exactly one file upload per request.</Message>"
            b"<ArgumentName>file</ArgumentName><ArgumentValue>0</ArgumentValue>",
        ),
        (
            not_multipart_error(),
            412,
            b"<Code>PreconditionFailed</Code>"
            b"<Message>At least one of the pre-conditions you specified did not hold</Message>"
            b"<Condition>Bucket POST must be of the enclosure-type multipart/form-data</Condition>",
        ),
        (
            malformed_post_error(),
            400,
            b"<Code>MalformedPOSTRequest</Code>"
            b"<Message>The body of your POST request is not well-formed multipart/form-data.</Message>",
        ),
    ],
)
def test_error_helpers(error: S3Error, status: int, body: bytes) -> None:
    assert error.status == status
    assert error.to_xml(request_id="R", host_id="H") == XML_HEAD + body + XML_TAIL


def test_pre_file_limit() -> None:
    assert MAX_PRE_FILE_BYTES == 20480


def test_post_response_xml_example() -> None:
    location = object_location(bucket_url="https://b.s3.amazonaws.com/", key="président.jpg")
    assert location == "https://b.s3.amazonaws.com/pr%C3%A9sident.jpg"
    body = post_response_xml(location=location, bucket="b", key="président.jpg", etag="abc")
    assert (
        body
        == (
            '<?xml version="1.0" encoding="UTF-8"?>\n<PostResponse>'
            "<Location>https://b.s3.amazonaws.com/pr%C3%A9sident.jpg</Location><Bucket>b</Bucket>"
            '<Key>président.jpg</Key><ETag>"abc"</ETag></PostResponse>'
        ).encode()
    )


def test_post_response_xml_escapes_the_key() -> None:
    location = object_location(bucket_url="http://localhost:8000/b", key="a/b & <c>.txt")
    assert location == "http://localhost:8000/b/a%2Fb%20%26%20%3Cc%3E.txt"
    body = post_response_xml(location=location, bucket="b", key="a/b & <c>.txt", etag="abc")
    assert b"<Key>a/b &amp; &lt;c&gt;.txt</Key>" in body


@pytest.mark.parametrize(
    ("redirect", "expected"),
    [
        (V1_REDIRECT, f"{V1_REDIRECT}?{APPENDED}"),
        ("https://a.test/done?x=1", f"https://a.test/done?x=1&{APPENDED}"),
        ("https://a.test/done?x=1&", f"https://a.test/done?x=1&{APPENDED}"),
        ("https://a.test/done?", f"https://a.test/done?{APPENDED}"),
        ("HTTPS://a.test/done#top", f"HTTPS://a.test/done?{APPENDED}#top"),
        ("/successful_upload.html", None),
        ("successful_upload.html", None),
        ("ftp://a.test/", None),
        ("http://", None),
        ("http://[::1", None),
        ("https://a.test/\r\nSet-Cookie: a=b", None),
        ("https://a.test/a b", None),
        ("https://exämple.test/", None),
        ("", None),
    ],
)
def test_redirect_location(redirect: str, expected: str | None) -> None:
    assert (
        redirect_location(redirect=redirect, bucket=BUCKET, key="user/user1/my photo.jpg", etag="abc")
        == expected
    )
