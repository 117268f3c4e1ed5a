"""Tests for datalab.storage.sigv4 against the vectors and errors of docs/reference/s3-presigned.md."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta, timezone
from urllib.parse import parse_qsl, unquote, urlsplit

import pytest
from botocore.auth import S3SigV4QueryAuth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials as BotoCredentials

from datalab.storage.sigv4 import (
    Credentials,
    S3Error,
    VerifiedGet,
    expired_error,
    presign_get_url,
    signing_key,
    uri_encode,
    verify_presigned_get,
)
from tests.support.checks import ONE_AUTH_MECHANISM, SIGNATURE_MISMATCH

AKID = "AKIAIOSFODNN7EXAMPLE"
SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
TOKEN = "TOKEN/123+="
CREDS = Credentials(access_key_id=AKID, secret_access_key=SECRET)
CREDS_TOKEN = Credentials(access_key_id=AKID, secret_access_key=SECRET, session_token=TOKEN)
REGION = "us-east-1"
VHOST = "https://examplebucket.s3.amazonaws.com"
CLOCK_2013 = datetime(2013, 5, 24, tzinfo=UTC)
CLOCK_2015 = datetime(2015, 12, 29, tzinfo=UTC)
DISPOSITION = 'attachment; filename="a b.txt"'


def lookup(access_key_id: str) -> str | None:
    return SECRET if access_key_id == AKID else None


def split_url(url: str) -> tuple[str, str, list[tuple[str, str]]]:
    """Return (Host header, decoded path, decoded query pairs) the way the server would receive them."""
    parts = urlsplit(url)
    return parts.netloc, unquote(parts.path), parse_qsl(parts.query, keep_blank_values=True)


def verify(
    url: str,
    *,
    now: datetime,
    method: str = "GET",
    headers: Mapping[str, str] | None = None,
    path: str | None = None,
    host: str | None = None,
    query: Sequence[tuple[str, str]] | None = None,
    region: str = REGION,
) -> VerifiedGet:
    url_host, url_path, url_query = split_url(url)
    return verify_presigned_get(
        method=method,
        host=url_host if host is None else host,
        path=url_path if path is None else path,
        query=url_query if query is None else query,
        headers=headers or {},
        lookup_secret=lookup,
        region=region,
        now=now,
    )


def replace_param(query: Sequence[tuple[str, str]], name: str, value: str) -> list[tuple[str, str]]:
    assert any(n == name for n, _ in query)
    return [(n, value if n == name else v) for n, v in query]


def drop_param(query: Sequence[tuple[str, str]], name: str) -> list[tuple[str, str]]:
    return [(n, v) for n, v in query if n != name]


def v4_canonical(url: str, *, now: datetime) -> tuple[str, str]:
    """Get the verifier's canonical request and StringToSign by presenting a wrong signature."""
    _, _, query = split_url(url)
    bad = replace_param(query, "X-Amz-Signature", "0" * 64)
    with pytest.raises(S3Error) as info:
        verify(url, now=now, query=bad)
    extras = dict(info.value.extras)
    return extras["CanonicalRequest"], extras["StringToSign"]


def v7a_url() -> str:
    return presign_get_url(
        endpoint=VHOST, path="/test.txt", credentials=CREDS, region=REGION, expires_in=86400, now=CLOCK_2015
    )


def v7b_url() -> str:
    return presign_get_url(
        endpoint=VHOST,
        path="/dir/a b+c.txt",
        credentials=CREDS,
        region=REGION,
        expires_in=3600,
        now=CLOCK_2015,
        extra_query={"response-content-disposition": DISPOSITION},
    )


def raises_s3(excinfo: pytest.ExceptionInfo[S3Error], status: int, code: str, message: str) -> dict[str, str]:
    err = excinfo.value
    assert (err.status, err.code, err.message) == (status, code, message)
    return dict(err.extras)


# --- uri_encode and signing key ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "keep_slash", "expected"),
    [
        ("AZaz09-._~", False, "AZaz09-._~"),
        ("a b", False, "a%20b"),
        ("a+b=c&d", False, "a%2Bb%3Dc%26d"),
        ("/dir/a b+c.txt", True, "/dir/a%20b%2Bc.txt"),
        ("/dir/x", False, "%2Fdir%2Fx"),
        ("é/ü", True, "%C3%A9/%C3%BC"),
        ("*!'()", False, "%2A%21%27%28%29"),
    ],
)
def test_uri_encode(raw: str, keep_slash: bool, expected: str) -> None:
    assert uri_encode(raw, keep_slash=keep_slash) == expected


def test_signing_key_v5() -> None:
    key = signing_key(secret_access_key=SECRET, date="20130524", region=REGION)
    assert key.hex() == "dbb893acc010964918f1fd433add87c70e8b0db6be30c1fbeafefa5ec6ba8378"


def test_signing_key_v1_post_example() -> None:
    key = signing_key(secret_access_key=SECRET, date="20151229", region=REGION, service="s3")
    assert key.hex() == "cbcef1ebeaefc82cce6530b9f0a9ae598846065f5c5bae0674bd5ebc4ba52d28"


# --- V5: the AWS SigV4 presigned GET example -------------------------------------------------------------


def test_v5_aws_example() -> None:
    url = presign_get_url(
        endpoint=VHOST, path="/test.txt", credentials=CREDS, region=REGION, expires_in=86400, now=CLOCK_2013
    )
    assert url == (
        "https://examplebucket.s3.amazonaws.com/test.txt?X-Amz-Algorithm=AWS4-HMAC-SHA256"
        "&X-Amz-Credential=AKIAIOSFODNN7EXAMPLE%2F20130524%2Fus-east-1%2Fs3%2Faws4_request"
        "&X-Amz-Date=20130524T000000Z&X-Amz-Expires=86400&X-Amz-SignedHeaders=host"
        "&X-Amz-Signature=aeeed9bbccd4d02ee5c0109b86d86835f995330da4c265957d157751f604d404"
    )
    canonical, string_to_sign = v4_canonical(url, now=CLOCK_2013)
    assert canonical == (
        "GET\n/test.txt\n"
        "X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIAIOSFODNN7EXAMPLE%2F20130524%2Fus-east-1%2Fs3"
        "%2Faws4_request&X-Amz-Date=20130524T000000Z&X-Amz-Expires=86400&X-Amz-SignedHeaders=host\n"
        "host:examplebucket.s3.amazonaws.com\n\nhost\nUNSIGNED-PAYLOAD"
    )
    digest = "3bfa292879f6447bbcda7001decf97f4a54dc650c8942174ae0a9121cf58ad04"
    assert hashlib.sha256(canonical.encode()).hexdigest() == digest
    assert (
        string_to_sign == f"AWS4-HMAC-SHA256\n20130524T000000Z\n20130524/us-east-1/s3/aws4_request\n{digest}"
    )
    assert verify(url, now=CLOCK_2013).version == "v4"


def test_v6_signed_range_header_canonicalized_as_botocore_signs_it() -> None:
    """A GET that signs a header besides host (botocore signs every header it is given): the header is
    canonicalized as AWS specifies (lower-case name, value trimmed) and the signature holds."""
    request = AWSRequest(method="GET", url=VHOST + "/test.txt", headers={"Range": "  bytes=0-9 "})
    S3SigV4QueryAuth(BotoCredentials(AKID, SECRET), "s3", REGION, expires=3600).add_auth(request)
    url = request.url
    assert url is not None
    signed_at = datetime.strptime(dict(split_url(url)[2])["X-Amz-Date"], "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
    headers = {"Range": "  bytes=0-9 "}
    assert verify(url, now=signed_at, headers=headers).access_key_id == AKID
    _, _, query = split_url(url)
    with pytest.raises(S3Error) as info:
        verify(url, now=signed_at, headers=headers, query=replace_param(query, "X-Amz-Signature", "0" * 64))
    canonical = dict(info.value.extras)["CanonicalRequest"]
    assert (
        "\nhost:examplebucket.s3.amazonaws.com\nrange:bytes=0-9\n\nhost;range\nUNSIGNED-PAYLOAD" in canonical
    )
    with pytest.raises(S3Error) as changed:
        verify(url, now=signed_at, headers={"Range": "bytes=0-10"})
    assert changed.value.code == "SignatureDoesNotMatch"


# --- V7: botocore SigV4 GET vectors ----------------------------------------------------------------------


def test_v7a_plain_get() -> None:
    url = v7a_url()
    assert url.endswith("&X-Amz-Signature=2553db71d1c949ca0bcfd4980768c76b6f4f0b9f7baad2c994f6f58dfdef686f")
    assert verify(url, now=CLOCK_2015).access_key_id == AKID


def test_v7b_encoded_key_and_override_full_url() -> None:
    url = v7b_url()
    assert url == (
        "https://examplebucket.s3.amazonaws.com/dir/a%20b%2Bc.txt"
        "?response-content-disposition=attachment%3B%20filename%3D%22a%20b.txt%22"
        "&X-Amz-Algorithm=AWS4-HMAC-SHA256"
        "&X-Amz-Credential=AKIAIOSFODNN7EXAMPLE%2F20151229%2Fus-east-1%2Fs3%2Faws4_request"
        "&X-Amz-Date=20151229T000000Z&X-Amz-Expires=3600&X-Amz-SignedHeaders=host"
        "&X-Amz-Signature=ea5c94b5abbb3b46d368d5f0c91af0eec0c7ae90d8c8dff831db4675840b0dbc"
    )
    canonical, _ = v4_canonical(url, now=CLOCK_2015)
    lines = canonical.split("\n")
    assert lines[1] == "/dir/a%20b%2Bc.txt"
    assert lines[2].endswith(
        "&X-Amz-SignedHeaders=host&response-content-disposition=attachment%3B%20filename%3D%22a%20b.txt%22"
    )
    digest = "f95ef424e72642e21df5d71d59500c36d128c35d3b4e8184e878ab01fc1c6973"
    assert hashlib.sha256(canonical.encode()).hexdigest() == digest
    assert verify(url, now=CLOCK_2015).expires_at == CLOCK_2015 + timedelta(hours=1)


def test_v7c_session_token() -> None:
    url = presign_get_url(
        endpoint=VHOST,
        path="/test.txt",
        credentials=CREDS_TOKEN,
        region=REGION,
        expires_in=86400,
        now=CLOCK_2015,
    )
    assert "&X-Amz-SignedHeaders=host&X-Amz-Security-Token=TOKEN%2F123%2B%3D&X-Amz-Signature=" in url
    assert url.endswith("&X-Amz-Signature=56a9441e3a14670c8f579861aa5a4d951e15c31c5e031ef1c3519f90ada1bf75")
    canonical, _ = v4_canonical(url, now=CLOCK_2015)
    assert "&X-Amz-Security-Token=TOKEN%2F123%2B%3D&X-Amz-SignedHeaders=host\n" in canonical
    result = verify(url, now=CLOCK_2015)
    assert result.session_token == TOKEN


def test_v7d_path_style_with_port() -> None:
    url = presign_get_url(
        endpoint="http://127.0.0.1:5000",
        path="/examplebucket/test.txt",
        credentials=CREDS,
        region=REGION,
        expires_in=86400,
        now=CLOCK_2015,
    )
    assert url.startswith("http://127.0.0.1:5000/examplebucket/test.txt?X-Amz-Algorithm=")
    assert url.endswith("&X-Amz-Signature=9c3b1ac51fd7cc663e0ced4aec69cefefb496f46eefececd19253f1a0ffa589b")
    canonical, _ = v4_canonical(url, now=CLOCK_2015)
    assert canonical.split("\n")[1] == "/examplebucket/test.txt"
    assert "\nhost:127.0.0.1:5000\n" in canonical
    assert verify(url, now=CLOCK_2015).version == "v4"


def test_default_port_is_not_signed() -> None:
    with_port = presign_get_url(
        endpoint="https://examplebucket.s3.amazonaws.com:443",
        path="/test.txt",
        credentials=CREDS,
        region=REGION,
        expires_in=86400,
        now=CLOCK_2015,
    )
    assert with_port.split("X-Amz-Signature=")[1] == v7a_url().split("X-Amz-Signature=")[1]


# --- V8: SigV2 query vectors -----------------------------------------------------------------------------


def test_v8a_aws_docs_example() -> None:
    result = verify_presigned_get(
        method="GET",
        host="johnsmith.s3.amazonaws.com",
        path="/johnsmith/photos/puppy.jpg",
        query=[
            ("AWSAccessKeyId", AKID),
            ("Expires", "1175139620"),
            ("Signature", "NpgCjnDzrM+WFzoENXmpNDUsSn8="),
        ],
        headers={},
        lookup_secret=lookup,
        region=REGION,
        now=datetime(2007, 3, 27, 19, 36, 42, tzinfo=UTC),
    )
    assert result == VerifiedGet(
        version="v2",
        access_key_id=AKID,
        session_token=None,
        expires_at=datetime.fromtimestamp(1175139620, tz=UTC),
    )


V8B = (
    "https://examplebucket.s3.amazonaws.com/test.txt?AWSAccessKeyId=AKIAIOSFODNN7EXAMPLE"
    "&Signature=edCcj8qo4kh3Sgc6jqkNT%2Fjg2w4%3D&Expires=1451433600"
)
V8C = (
    "https://examplebucket.s3.amazonaws.com/test.txt?AWSAccessKeyId=AKIAIOSFODNN7EXAMPLE"
    "&Signature=2syH0X9C9l%2FQGn9kLFCteHpfRhU%3D&x-amz-security-token=TOKEN%2F123%2B%3D&Expires=1451433600"
)
V8D = (
    "https://examplebucket.s3.amazonaws.com/dir/a%20b%2Bc.txt"
    "?response-content-disposition=attachment%3B%20filename%3D%22a%20b.txt%22"
    "&AWSAccessKeyId=AKIAIOSFODNN7EXAMPLE&Signature=Ts4rUcy8YmE5n6BT8w1mi4ZikIM%3D&Expires=1451350800"
)


def v2_path(url: str) -> str:
    # The server is path style: the bucket from the virtual host moves into the path.
    return "/examplebucket" + unquote(urlsplit(url).path)


@pytest.mark.parametrize(
    ("url", "token", "expires"),
    [(V8B, None, 1451433600), (V8C, TOKEN, 1451433600), (V8D, None, 1451350800)],
    ids=["V8b", "V8c", "V8d"],
)
def test_v8_botocore_sigv2_urls(url: str, token: str | None, expires: int) -> None:
    result = verify(url, path=v2_path(url), now=CLOCK_2015)
    assert result == VerifiedGet(
        version="v2",
        access_key_id=AKID,
        session_token=token,
        expires_at=datetime.fromtimestamp(expires, tz=UTC),
    )


def test_v8_string_to_sign_shapes() -> None:
    expected = {
        V8C: "GET\n\n\n1451433600\nx-amz-security-token:TOKEN/123+=\n/examplebucket/test.txt",
        V8D: (
            "GET\n\n\n1451350800\n/examplebucket/dir/a%20b%2Bc.txt"
            '?response-content-disposition=attachment; filename="a b.txt"'
        ),
    }
    for url, string_to_sign in expected.items():
        _, _, query = split_url(url)
        bad = replace_param(query, "Signature", "AAAA")
        with pytest.raises(S3Error) as info:
            verify(url, path=v2_path(url), query=bad, now=CLOCK_2015)
        extras = raises_s3(info, 403, "SignatureDoesNotMatch", SIGNATURE_MISMATCH)
        assert list(extras) == ["AWSAccessKeyId", "StringToSign", "SignatureProvided", "StringToSignBytes"]
        assert extras["StringToSign"] == string_to_sign
        assert extras["SignatureProvided"] == "AAAA"
        assert extras["StringToSignBytes"] == " ".join(f"{b:02x}" for b in string_to_sign.encode())


def test_v2_content_type_header_is_signed() -> None:
    with pytest.raises(S3Error) as info:
        verify(V8B, path=v2_path(V8B), now=CLOCK_2015, headers={"content-type": "text/plain"})
    extras = raises_s3(info, 403, "SignatureDoesNotMatch", SIGNATURE_MISMATCH)
    assert extras["StringToSign"] == "GET\n\ntext/plain\n1451433600\n/examplebucket/test.txt"


# --- round trips -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "extra"),
    [
        ("/bucket/plain.txt", None),
        ("/bucket/dir/é ü ~/x?y#z&=+.txt", None),
        ("/bucket//double//slash/./x", None),
        ("/bucket/a", {"response-content-type": "text/plain; charset=utf-8", "response-cache-control": ""}),
    ],
)
def test_round_trip(path: str, extra: dict[str, str] | None) -> None:
    url = presign_get_url(
        endpoint="http://localhost:8000",
        path=path,
        credentials=CREDS_TOKEN,
        region="eu-west-1",
        expires_in=300,
        now=CLOCK_2015,
        extra_query=extra,
    )
    _, got_path, _ = split_url(url)
    assert got_path == path
    result = verify(
        url, now=CLOCK_2015 + timedelta(seconds=300), region="eu-west-1", headers={"range": "bytes=0-1"}
    )
    assert result == VerifiedGet(
        version="v4", access_key_id=AKID, session_token=TOKEN, expires_at=CLOCK_2015 + timedelta(seconds=300)
    )


def test_round_trip_with_content_sha256_query_param() -> None:
    url = presign_get_url(
        endpoint=VHOST,
        path="/test.txt",
        credentials=CREDS,
        region=REGION,
        expires_in=60,
        now=CLOCK_2015,
        extra_query={"X-Amz-Content-Sha256": "UNSIGNED-PAYLOAD"},
    )
    assert verify(url, now=CLOCK_2015).version == "v4"
    _, _, query = split_url(url)
    with pytest.raises(S3Error) as info:
        verify(url, now=CLOCK_2015, query=replace_param(query, "X-Amz-Content-Sha256", "abc"))
    canonical = dict(info.value.extras)["CanonicalRequest"]
    assert canonical.endswith("\nhost\nabc")


# --- presign argument validation -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs",
    [
        {"endpoint": "ftp://host"},
        {"endpoint": "https://host/prefix"},
        {"endpoint": "https://host?x=1"},
        {"path": "relative/key"},
        {"expires_in": 0},
        {"expires_in": 604801},
        {"now": datetime(2015, 12, 29)},
        {"extra_query": {"X-Amz-Signature": "x"}},
    ],
)
def test_presign_rejects_bad_arguments(kwargs: dict[str, object]) -> None:
    args: dict[str, object] = {
        "endpoint": VHOST,
        "path": "/k",
        "credentials": CREDS,
        "region": REGION,
        "expires_in": 60,
        "now": CLOCK_2015,
    }
    args.update(kwargs)
    with pytest.raises(ValueError, match=r"."):
        presign_get_url(**args)  # type: ignore[arg-type]


# --- error paths, in the order the verifier checks them ---------------------------------------------------


@pytest.mark.parametrize(
    "authorization",
    [
        "Bearer eyJhbGciOiJIUzI1NiJ9.e30.x",
        "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20151229/us-east-1/s3/aws4_request, "
        "SignedHeaders=host, Signature=abc",
    ],
    ids=["bearer", "aws4"],
)
@pytest.mark.parametrize("url_kind", ["v4", "v2"])
def test_authorization_header_with_query_auth(authorization: str, url_kind: str) -> None:
    url, path = (v7a_url(), None) if url_kind == "v4" else (V8B, v2_path(V8B))
    with pytest.raises(S3Error) as info:
        verify(url, path=path, now=CLOCK_2015, headers={"authorization": authorization})
    extras = raises_s3(info, 400, "InvalidArgument", ONE_AUTH_MECHANISM)
    assert info.value.extras == [("ArgumentName", "Authorization"), ("ArgumentValue", authorization)]
    assert extras["ArgumentValue"] == authorization


@pytest.mark.parametrize("headers", [{}, {"authorization": "Bearer x"}])
def test_no_query_auth_is_access_denied(headers: dict[str, str]) -> None:
    with pytest.raises(S3Error) as info:
        verify("https://h/b/k?response-content-type=x", now=CLOCK_2015, headers=headers)
    assert raises_s3(info, 403, "AccessDenied", "Access Denied") == {}


V4_PARAMS = [
    "X-Amz-Algorithm",
    "X-Amz-Credential",
    "X-Amz-Signature",
    "X-Amz-Date",
    "X-Amz-SignedHeaders",
    "X-Amz-Expires",
]
V4_PARAMS_MESSAGE = (
    "Query-string authentication version 4 requires the X-Amz-Algorithm, X-Amz-Credential, X-Amz-Signature, "
    "X-Amz-Date, X-Amz-SignedHeaders, and X-Amz-Expires parameters."
)


@pytest.mark.parametrize("missing", V4_PARAMS)
def test_partial_v4_params(missing: str) -> None:
    _, _, query = split_url(v7a_url())
    with pytest.raises(S3Error) as info:
        verify(v7a_url(), now=CLOCK_2015, query=drop_param(query, missing))
    raises_s3(info, 400, "AuthorizationQueryParametersError", V4_PARAMS_MESSAGE)


@pytest.mark.parametrize("missing", ["AWSAccessKeyId", "Expires", "Signature"])
def test_partial_v2_params(missing: str) -> None:
    _, _, query = split_url(V8B)
    with pytest.raises(S3Error) as info:
        verify(V8B, path=v2_path(V8B), now=CLOCK_2015, query=drop_param(query, missing))
    raises_s3(
        info,
        403,
        "AccessDenied",
        "Query-string authentication requires the Signature, Expires and AWSAccessKeyId parameters",
    )


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (
            "604801",
            "X-Amz-Expires must be less than a week (in seconds); that is, the given X-Amz-Expires must be "
            "less than 604800 seconds",
        ),
        ("abc", "X-Amz-Expires should be a number"),
        ("+5", "X-Amz-Expires should be a number"),
        ("", "X-Amz-Expires should be a number"),
        ("-1", "X-Amz-Expires must be non-negative"),
        ("0", "X-Amz-Expires must be greater than 0"),
    ],
)
def test_bad_x_amz_expires(value: str, message: str) -> None:
    _, _, query = split_url(v7a_url())
    with pytest.raises(S3Error) as info:
        verify(v7a_url(), now=CLOCK_2015, query=replace_param(query, "X-Amz-Expires", value))
    raises_s3(info, 400, "AuthorizationQueryParametersError", message)


def test_x_amz_expires_of_exactly_a_week_is_accepted() -> None:
    url = presign_get_url(
        endpoint=VHOST, path="/test.txt", credentials=CREDS, region=REGION, expires_in=604800, now=CLOCK_2015
    )
    assert verify(url, now=CLOCK_2015 + timedelta(days=7)).expires_at == CLOCK_2015 + timedelta(days=7)


MALFORMED = (
    "Error parsing the X-Amz-Credential parameter; the Credential is mal-formed; "
    'expecting "<YOUR-AKID>/YYYYMMDD/REGION/SERVICE/aws4_request".'
)


@pytest.mark.parametrize(
    "credential",
    [
        "AKIAIOSFODNN7EXAMPLE",
        "AKIAIOSFODNN7EXAMPLE/20151229/us-east-1/s3",
        "AKIAIOSFODNN7EXAMPLE/20151229/us-east-1/s3/aws4_request/extra",
        "/20151229/us-east-1/s3/aws4_request",
        "AKIAIOSFODNN7EXAMPLE//us-east-1/s3/aws4_request",
    ],
)
def test_malformed_credential(credential: str) -> None:
    _, _, query = split_url(v7a_url())
    with pytest.raises(S3Error) as info:
        verify(v7a_url(), now=CLOCK_2015, query=replace_param(query, "X-Amz-Credential", credential))
    raises_s3(info, 400, "AuthorizationQueryParametersError", MALFORMED)


def test_wrong_region() -> None:
    with pytest.raises(S3Error) as info:
        verify(v7a_url(), now=CLOCK_2015, region="eu-west-1")
    extras = raises_s3(
        info,
        400,
        "AuthorizationQueryParametersError",
        "Error parsing the X-Amz-Credential parameter; the region 'us-east-1' is wrong; "
        "expecting 'eu-west-1'",
    )
    assert extras == {"Region": "eu-west-1"}


@pytest.mark.parametrize(
    ("credential", "fragment"),
    [
        ("AKIAIOSFODNN7EXAMPLE/2015122/us-east-1/s3/aws4_request", 'incorrect date format "2015122"'),
        ("AKIAIOSFODNN7EXAMPLE/20151229/us-east-1/ec2/aws4_request", 'incorrect service "ec2"'),
        ("AKIAIOSFODNN7EXAMPLE/20151229/us-east-1/s3/aws4_req", 'incorrect terminal "aws4_req"'),
        ("AKIAIOSFODNN7EXAMPLE/20151230/us-east-1/s3/aws4_request", "'20151230' != '20151229'"),
    ],
)
def test_other_credential_errors(credential: str, fragment: str) -> None:
    _, _, query = split_url(v7a_url())
    with pytest.raises(S3Error) as info:
        verify(v7a_url(), now=CLOCK_2015, query=replace_param(query, "X-Amz-Credential", credential))
    assert (info.value.status, info.value.code) == (400, "AuthorizationQueryParametersError")
    assert fragment in info.value.message


def test_wrong_algorithm() -> None:
    _, _, query = split_url(v7a_url())
    with pytest.raises(S3Error) as info:
        verify(v7a_url(), now=CLOCK_2015, query=replace_param(query, "X-Amz-Algorithm", "AWS4-HMAC-SHA1"))
    raises_s3(
        info, 400, "AuthorizationQueryParametersError", 'X-Amz-Algorithm only supports "AWS4-HMAC-SHA256"'
    )


@pytest.mark.parametrize("value", ["20151229", "20151229T000000", "2015-12-29T00:00:00Z", "20151329T000000Z"])
def test_bad_x_amz_date(value: str) -> None:
    _, _, query = split_url(v7a_url())
    with pytest.raises(S3Error) as info:
        verify(v7a_url(), now=CLOCK_2015, query=replace_param(query, "X-Amz-Date", value))
    raises_s3(
        info,
        400,
        "AuthorizationQueryParametersError",
        "X-Amz-Date must be in the ISO8601 Long Format \"yyyyMMdd'T'HHmmss'Z'\"",
    )


UNKNOWN_KEY = "The AWS Access Key Id you provided does not exist in our records."


def test_unknown_key_v4() -> None:
    url = presign_get_url(
        endpoint=VHOST,
        path="/test.txt",
        credentials=Credentials(access_key_id="AKIDUNKNOWN", secret_access_key="x"),
        region=REGION,
        expires_in=60,
        now=CLOCK_2015,
    )
    with pytest.raises(S3Error) as info:
        verify(url, now=CLOCK_2015)
    assert raises_s3(info, 403, "InvalidAccessKeyId", UNKNOWN_KEY) == {"AWSAccessKeyId": "AKIDUNKNOWN"}


def test_unknown_key_v2() -> None:
    _, _, query = split_url(V8B)
    with pytest.raises(S3Error) as info:
        verify(V8B, path=v2_path(V8B), now=CLOCK_2015, query=replace_param(query, "AWSAccessKeyId", "NOPE"))
    assert raises_s3(info, 403, "InvalidAccessKeyId", UNKNOWN_KEY) == {"AWSAccessKeyId": "NOPE"}


def test_unsigned_amz_header() -> None:
    with pytest.raises(S3Error) as info:
        verify(v7a_url(), now=CLOCK_2015, headers={"x-amz-expires": "60", "range": "bytes=0-1"})
    extras = raises_s3(
        info, 403, "AccessDenied", "There were headers present in the request which were not signed"
    )
    assert extras == {"HeadersNotSigned": "x-amz-expires"}


def assert_v4_mismatch(info: pytest.ExceptionInfo[S3Error], provided: str) -> dict[str, str]:
    extras = raises_s3(info, 403, "SignatureDoesNotMatch", SIGNATURE_MISMATCH)
    assert list(extras) == [
        "AWSAccessKeyId",
        "StringToSign",
        "SignatureProvided",
        "StringToSignBytes",
        "CanonicalRequest",
        "CanonicalRequestBytes",
    ]
    assert extras["AWSAccessKeyId"] == AKID
    assert extras["SignatureProvided"] == provided
    assert extras["StringToSignBytes"] == extras["StringToSign"].encode().hex(" ")
    assert extras["CanonicalRequestBytes"] == extras["CanonicalRequest"].encode().hex(" ")
    digest = hashlib.sha256(extras["CanonicalRequest"].encode()).hexdigest()
    assert extras["StringToSign"].split("\n")[-1] == digest
    return extras


def test_tampered_signature_v4() -> None:
    _, _, query = split_url(v7a_url())
    forged = "f" * 64
    with pytest.raises(S3Error) as info:
        verify(v7a_url(), now=CLOCK_2015, query=replace_param(query, "X-Amz-Signature", forged))
    assert_v4_mismatch(info, forged)


def test_non_ascii_signature_is_a_mismatch_not_a_crash() -> None:
    _, _, query = split_url(v7a_url())
    with pytest.raises(S3Error) as info:
        verify(v7a_url(), now=CLOCK_2015, query=replace_param(query, "X-Amz-Signature", "é"))
    assert info.value.code == "SignatureDoesNotMatch"


def test_tampered_path_v4() -> None:
    url = v7b_url()
    with pytest.raises(S3Error) as info:
        verify(url, now=CLOCK_2015, path="/dir/other.txt")
    extras = assert_v4_mismatch(info, url.rsplit("=", 1)[1])
    assert extras["CanonicalRequest"].split("\n")[1] == "/dir/other.txt"


def test_tampered_query_param_v4() -> None:
    url = v7b_url()
    _, _, query = split_url(url)
    tampered = replace_param(query, "response-content-disposition", "inline")
    with pytest.raises(S3Error) as info:
        verify(url, now=CLOCK_2015, query=tampered)
    assert_v4_mismatch(info, url.rsplit("=", 1)[1])


def test_added_query_param_v4() -> None:
    url = v7a_url()
    _, _, query = split_url(url)
    with pytest.raises(S3Error) as info:
        verify(url, now=CLOCK_2015, query=[("response-content-type", "text/html"), *query])
    assert info.value.code == "SignatureDoesNotMatch"


def test_tampered_host_and_method_v4() -> None:
    for kwargs in ({"host": "evil.example"}, {"method": "HEAD"}):
        with pytest.raises(S3Error) as info:
            verify(v7a_url(), now=CLOCK_2015, **kwargs)  # type: ignore[arg-type]
        assert info.value.code == "SignatureDoesNotMatch"


def test_tampered_path_v2() -> None:
    with pytest.raises(S3Error) as info:
        verify(V8B, path="/examplebucket/other.txt", now=CLOCK_2015)
    extras = raises_s3(info, 403, "SignatureDoesNotMatch", SIGNATURE_MISMATCH)
    assert extras["StringToSign"] == "GET\n\n\n1451433600\n/examplebucket/other.txt"
    assert extras["SignatureProvided"] == "edCcj8qo4kh3Sgc6jqkNT/jg2w4="


def test_tampered_override_v2() -> None:
    _, _, query = split_url(V8D)
    tampered = replace_param(query, "response-content-disposition", "inline")
    with pytest.raises(S3Error) as info:
        verify(V8D, path=v2_path(V8D), now=CLOCK_2015, query=tampered)
    assert info.value.code == "SignatureDoesNotMatch"


def test_signature_checked_before_expiry() -> None:
    _, _, query = split_url(v7a_url())
    with pytest.raises(S3Error) as info:
        verify(
            v7a_url(), now=CLOCK_2015 + timedelta(days=30), query=replace_param(query, "X-Amz-Signature", "0")
        )
    assert info.value.code == "SignatureDoesNotMatch"


def test_expired_v4() -> None:
    url = presign_get_url(
        endpoint=VHOST, path="/test.txt", credentials=CREDS, region=REGION, expires_in=60, now=CLOCK_2015
    )
    assert verify(url, now=CLOCK_2015 + timedelta(seconds=60)).version == "v4"
    with pytest.raises(S3Error) as info:
        verify(url, now=CLOCK_2015 + timedelta(seconds=65))
    raises_s3(info, 403, "AccessDenied", "Request has expired")
    assert info.value.extras == [
        ("X-Amz-Expires", "60"),
        ("Expires", "2015-12-29T00:01:00Z"),
        ("ServerTime", "2015-12-29T00:01:05Z"),
    ]


def test_expired_v2() -> None:
    with pytest.raises(S3Error) as info:
        verify(V8B, path=v2_path(V8B), now=datetime(2015, 12, 30, 0, 0, 1, tzinfo=UTC))
    raises_s3(info, 403, "AccessDenied", "Request has expired")
    assert info.value.extras == [("Expires", "2015-12-30T00:00:00Z"), ("ServerTime", "2015-12-30T00:00:01Z")]


def test_v2_non_numeric_expires() -> None:
    _, _, query = split_url(V8B)
    with pytest.raises(S3Error) as info:
        verify(V8B, path=v2_path(V8B), now=CLOCK_2015, query=replace_param(query, "Expires", "tomorrow"))
    raises_s3(info, 403, "AccessDenied", "Invalid date (should be seconds since epoch): tomorrow")


def test_expired_error_helper() -> None:
    err = expired_error(
        expires_at=datetime(2026, 9, 15, 15, 37, 3, tzinfo=timezone(timedelta(hours=2))),
        now=datetime(2026, 9, 15, 13, 37, 8, tzinfo=UTC),
        expires_in=60,
    )
    assert (err.status, err.code, err.message) == (403, "AccessDenied", "Request has expired")
    assert err.extras == [
        ("X-Amz-Expires", "60"),
        ("Expires", "2026-09-15T13:37:03Z"),
        ("ServerTime", "2026-09-15T13:37:08Z"),
    ]
    v2 = expired_error(
        expires_at=datetime(2026, 9, 15, tzinfo=UTC), now=datetime(2026, 9, 16, tzinfo=UTC), expires_in=None
    )
    assert [name for name, _ in v2.extras] == ["Expires", "ServerTime"]


def test_verify_rejects_naive_clock() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        verify(v7a_url(), now=datetime(2015, 12, 29))


# --- XML rendering ---------------------------------------------------------------------------------------


def test_to_xml_shape() -> None:
    err = expired_error(
        expires_at=datetime(2026, 9, 15, 13, 37, 3, tzinfo=UTC),
        now=datetime(2026, 9, 15, 13, 37, 8, tzinfo=UTC),
        expires_in=60,
    )
    assert err.to_xml(request_id="REQ1", host_id="HOST/1=") == (
        b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>AccessDenied</Code>'
        b"<Message>Request has expired</Message><X-Amz-Expires>60</X-Amz-Expires>"
        b"<Expires>2026-09-15T13:37:03Z</Expires><ServerTime>2026-09-15T13:37:08Z</ServerTime>"
        b"<RequestId>REQ1</RequestId><HostId>HOST/1=</HostId></Error>"
    )


def test_to_xml_escapes_text() -> None:
    err = S3Error(
        status=400,
        code="InvalidArgument",
        message='a < b & c > "d"',
        extras=[("ArgumentName", "Authorization"), ("ArgumentValue", "Bearer <x>&y\x01é")],
    )
    xml = err.to_xml(request_id="r&1", host_id="h<1>")
    assert (
        xml
        == (
            '<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>InvalidArgument</Code>'
            '<Message>a &lt; b &amp; c &gt; "d"</Message><ArgumentName>Authorization</ArgumentName>'
            "<ArgumentValue>Bearer &lt;x&gt;&amp;y\ufffdé</ArgumentValue>"
            "<RequestId>r&amp;1</RequestId><HostId>h&lt;1&gt;</HostId></Error>"
        ).encode()
    )


def test_to_xml_is_well_formed_for_a_signature_mismatch() -> None:
    from xml.etree import ElementTree

    bad = replace_param(split_url(V8D)[2], "Signature", "x<&>")
    with pytest.raises(S3Error) as info:
        verify(V8D, path=v2_path(V8D), now=CLOCK_2015, query=bad)
    root = ElementTree.fromstring(info.value.to_xml(request_id="R", host_id="H"))  # noqa: S314 - our own output
    assert root.findtext("SignatureProvided") == "x<&>"
    assert root.findtext("StringToSign") == dict(info.value.extras)["StringToSign"]
    assert [child.tag for child in root][-2:] == ["RequestId", "HostId"]
