"""S3 presigned GET URLs: SigV4 query signing, and SigV4 and SigV2 query verification with S3's errors.

The server signs only SigV4 URLs. SigV2 query verification stays because the Data Lab documentation's
download example is a SigV2 URL (`?AWSAccessKeyId=…&Expires=…&Signature=…`): a URL of that form signed
with the store's credentials is answered as S3 answers it.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal
from urllib.parse import quote, urlsplit

from datalab.storage.s3_auth import (
    ALGORITHM,
    AMZ_DATE_FORMAT,
    SERVICE,
    TERMINATOR,
    CredentialError,
    CredentialScope,
    S3Error,
    access_denied,
    credential,
    expired_error,
    invalid_argument,
    parse_credential_scope,
    require_aware,
    signature_mismatch,
    signatures_equal,
    unknown_access_key,
)

__all__ = [
    "Credentials",
    "S3Error",
    "VerifiedGet",
    "expired_error",
    "presign_get_url",
    "signing_key",
    "uri_encode",
    "verify_presigned_get",
]

_UNSIGNED_PAYLOAD = "UNSIGNED-PAYLOAD"
_MAX_EXPIRES = 604800
_DEFAULT_PORTS = {"http": 80, "https": 443}

_P_ALGORITHM = "X-Amz-Algorithm"
_P_CREDENTIAL = "X-Amz-Credential"
_P_DATE = "X-Amz-Date"
_P_EXPIRES = "X-Amz-Expires"
_P_SIGNED_HEADERS = "X-Amz-SignedHeaders"
_P_SECURITY_TOKEN = "X-Amz-Security-Token"  # noqa: S105 (a parameter name, not a secret)
_P_SIGNATURE = "X-Amz-Signature"
_P_CONTENT_SHA256 = "X-Amz-Content-Sha256"
_V4_REQUIRED = (_P_ALGORITHM, _P_CREDENTIAL, _P_SIGNATURE, _P_DATE, _P_SIGNED_HEADERS, _P_EXPIRES)
_V4_RESERVED = frozenset((*_V4_REQUIRED, _P_SECURITY_TOKEN))

_V2_ACCESS_KEY = "AWSAccessKeyId"
_V2_EXPIRES = "Expires"
_V2_SIGNATURE = "Signature"
_V2_REQUIRED = (_V2_ACCESS_KEY, _V2_EXPIRES, _V2_SIGNATURE)
_V2_TOKEN = "x-amz-security-token"  # noqa: S105 (a parameter name, not a secret)
# SigV2 signs these query parameters as part of the resource (AWS RESTAuthentication, CanonicalizedResource).
_V2_SUBRESOURCES = frozenset(
    {
        "acl",
        "delete",
        "lifecycle",
        "location",
        "logging",
        "notification",
        "partNumber",
        "policy",
        "requestPayment",
        "response-cache-control",
        "response-content-disposition",
        "response-content-encoding",
        "response-content-language",
        "response-content-type",
        "response-expires",
        "torrent",
        "uploadId",
        "uploads",
        "versionId",
        "versioning",
        "versions",
        "website",
    }
)

_MSG_ONE_AUTH = (
    "Only one auth mechanism allowed; only the X-Amz-Algorithm query parameter, Signature query string "
    "parameter or the Authorization header should be specified"
)
_MSG_V4_PARAMS = (
    "Query-string authentication version 4 requires the X-Amz-Algorithm, X-Amz-Credential, X-Amz-Signature, "
    "X-Amz-Date, X-Amz-SignedHeaders, and X-Amz-Expires parameters."
)
_MSG_V2_PARAMS = "Query-string authentication requires the Signature, Expires and AWSAccessKeyId parameters"
_MSG_EXPIRES_WEEK = (
    "X-Amz-Expires must be less than a week (in seconds); that is, the given X-Amz-Expires must be less "
    "than 604800 seconds"
)


@dataclass(frozen=True)
class Credentials:
    """An access key pair, with the session token of temporary credentials."""

    access_key_id: str
    secret_access_key: str
    session_token: str | None = None


@dataclass(frozen=True)
class VerifiedGet:
    """What a successfully verified presigned GET was signed with."""

    version: Literal["v4", "v2"]
    access_key_id: str
    session_token: str | None
    expires_at: datetime


def uri_encode(value: str, *, keep_slash: bool = False) -> str:
    """Percent-encode like AWS UriEncode: only A-Za-z0-9-._~ (and optionally /) stay literal."""
    return quote(value, safe="/" if keep_slash else "", encoding="utf-8", errors="strict")


def _hmac_sha256(key: bytes, message: str) -> bytes:
    return hmac.new(key, message.encode("utf-8"), hashlib.sha256).digest()


def signing_key(*, secret_access_key: str, date: str, region: str, service: str = "s3") -> bytes:
    """Derive the SigV4 signing key for a yyyymmdd date, region and service."""
    k_date = _hmac_sha256(("AWS4" + secret_access_key).encode("utf-8"), date)
    k_region = _hmac_sha256(k_date, region)
    k_service = _hmac_sha256(k_region, service)
    return _hmac_sha256(k_service, TERMINATOR)


def _trim_header_value(value: str) -> str:
    return " ".join(value.split())


# ---------------------------------------------------------------------------------------------------------
# SigV4 canonicalization, shared by the signer and the verifier so the two can never disagree.


@dataclass(frozen=True)
class _V4Signed:
    canonical_request: str
    string_to_sign: str
    signature: str


def _canonical_query(query: Iterable[tuple[str, str]]) -> str:
    pairs = sorted((uri_encode(name), uri_encode(value)) for name, value in query if name != _P_SIGNATURE)
    return "&".join(f"{name}={value}" for name, value in pairs)


def _sign_v4(
    *,
    method: str,
    path: str,
    query: Iterable[tuple[str, str]],
    signed_headers: str,
    header_values: Mapping[str, str],
    payload_hash: str,
    amz_date: str,
    scope_date: str,
    region: str,
    secret_access_key: str,
) -> _V4Signed:
    # S3 does not normalise the path (no collapsing of "//" or "."), so the decoded path is encoded as is.
    names = [name for name in signed_headers.split(";") if name]
    canonical_headers = "".join(
        f"{name}:{_trim_header_value(header_values.get(name, ''))}\n"
        for name in sorted(n.lower() for n in names)
    )
    canonical_request = "\n".join(
        (
            method,
            uri_encode(path, keep_slash=True),
            _canonical_query(query),
            canonical_headers,
            signed_headers,
            payload_hash,
        )
    )
    scope = f"{scope_date}/{region}/{SERVICE}/{TERMINATOR}"
    digest = hashlib.sha256(canonical_request.encode("utf-8")).hexdigest()
    string_to_sign = "\n".join((ALGORITHM, amz_date, scope, digest))
    key = signing_key(secret_access_key=secret_access_key, date=scope_date, region=region, service=SERVICE)
    signature = hmac.new(key, string_to_sign.encode("utf-8"), hashlib.sha256).hexdigest()
    return _V4Signed(canonical_request, string_to_sign, signature)


def _payload_hash(query: Iterable[tuple[str, str]]) -> str:
    # The JS SDK v3 puts the payload hash in the query; when present it replaces UNSIGNED-PAYLOAD.
    return next((value for name, value in query if name == _P_CONTENT_SHA256), _UNSIGNED_PAYLOAD)


def _host_for_signing(scheme: str, hostname: str, port: int | None) -> str:
    host = f"[{hostname}]" if ":" in hostname else hostname
    if port is not None and port != _DEFAULT_PORTS.get(scheme):
        host = f"{host}:{port}"
    return host


def presign_get_url(
    *,
    endpoint: str,
    path: str,
    credentials: Credentials,
    region: str,
    expires_in: int,
    now: datetime,
    extra_query: Mapping[str, str] | None = None,
) -> str:
    """Return a SigV4 query-signed GET URL for the decoded path, laid out as botocore lays it out."""
    parts = urlsplit(endpoint)
    if parts.scheme not in _DEFAULT_PORTS or not parts.hostname or parts.path not in ("", "/"):
        raise ValueError(f"endpoint must be 'http(s)://host[:port]', got {endpoint!r}")
    if parts.query or parts.fragment:
        raise ValueError(f"endpoint must not carry a query or fragment, got {endpoint!r}")
    if not path.startswith("/"):
        raise ValueError(f"path must be absolute, got {path!r}")
    if not 1 <= expires_in <= _MAX_EXPIRES:
        # S3 rejects anything outside this range, so such a URL could never be used.
        raise ValueError(f"expires_in must be between 1 and {_MAX_EXPIRES} seconds, got {expires_in}")
    extra = dict(extra_query or {})
    clashing = sorted(_V4_RESERVED.intersection(extra))
    if clashing:
        raise ValueError(f"extra_query must not set the auth parameters {clashing}")

    signed_at = require_aware(now, "now")
    amz_date = signed_at.strftime(AMZ_DATE_FORMAT)
    scope_date = signed_at.strftime("%Y%m%d")
    host = _host_for_signing(parts.scheme, parts.hostname, parts.port)

    query: list[tuple[str, str]] = list(extra.items())
    query += [
        (_P_ALGORITHM, ALGORITHM),
        (_P_CREDENTIAL, credential(access_key_id=credentials.access_key_id, date=scope_date, region=region)),
        (_P_DATE, amz_date),
        (_P_EXPIRES, str(expires_in)),
        (_P_SIGNED_HEADERS, "host"),
    ]
    if credentials.session_token is not None:
        query.append((_P_SECURITY_TOKEN, credentials.session_token))
    signed = _sign_v4(
        method="GET",
        path=path,
        query=query,
        signed_headers="host",
        header_values={"host": host},
        payload_hash=_payload_hash(query),
        amz_date=amz_date,
        scope_date=scope_date,
        region=region,
        secret_access_key=credentials.secret_access_key,
    )
    query.append((_P_SIGNATURE, signed.signature))
    query_string = "&".join(f"{uri_encode(name)}={uri_encode(value)}" for name, value in query)
    return f"{parts.scheme}://{parts.netloc}{uri_encode(path, keep_slash=True)}?{query_string}"


# ---------------------------------------------------------------------------------------------------------
# Verification.


def _query_params_error(message: str, extras: Sequence[tuple[str, str]] = ()) -> S3Error:
    return S3Error(status=400, code="AuthorizationQueryParametersError", message=message, extras=extras)


def _parse_int(value: str) -> int | None:
    digits = value[1:] if value.startswith("-") else value
    # int() would also take "+5", " 5", "1_0" and non-ASCII digits, which S3 does not.
    if not digits or not digits.isascii() or not digits.isdigit():
        return None
    return int(value)


@dataclass(frozen=True)
class _QueryRequest:
    """A GET as the verifiers see it: the first value of each query parameter, header names lowercased."""

    method: str
    host: str
    path: str
    query: Sequence[tuple[str, str]]
    params: Mapping[str, str]
    headers: Mapping[str, str]


def verify_presigned_get(
    *,
    method: str,
    host: str,
    path: str,
    query: Sequence[tuple[str, str]],
    headers: Mapping[str, str],
    lookup_secret: Callable[[str], str | None],
    region: str,
    now: datetime,
) -> VerifiedGet:
    """Verify a SigV4 or SigV2 query-authenticated GET, raising S3Error exactly as S3 would reject it."""
    server_now = require_aware(now, "now")
    first: dict[str, str] = {}
    for name, value in query:
        first.setdefault(name, value)
    lowered = {name.lower(): value for name, value in headers.items()}
    request = _QueryRequest(method, host, path, query, params=first, headers=lowered)

    is_v4 = any(name in first for name in _V4_REQUIRED)
    is_v2 = not is_v4 and any(name in first for name in _V2_REQUIRED)
    authorization = request.headers.get("authorization")
    if authorization is not None and (is_v4 or is_v2):
        raise invalid_argument(_MSG_ONE_AUTH, "Authorization", authorization)
    if is_v4:
        return _verify_v4(request, lookup_secret=lookup_secret, region=region, now=server_now)
    if is_v2:
        return _verify_v2(request, lookup_secret=lookup_secret, now=server_now)
    raise access_denied("Access Denied")


def _parse_v4_expires(raw: str) -> int:
    expires = _parse_int(raw)
    if expires is None:
        raise _query_params_error("X-Amz-Expires should be a number")
    if expires < 0:
        raise _query_params_error("X-Amz-Expires must be non-negative")
    if expires == 0:
        # S3's behaviour for 0 is unrecorded; a zero-lifetime URL is useless, so it is refused up front.
        raise _query_params_error("X-Amz-Expires must be greater than 0")
    if expires > _MAX_EXPIRES:
        raise _query_params_error(_MSG_EXPIRES_WEEK)
    return expires


def _parse_amz_date(raw: str) -> datetime | None:
    # strptime alone accepts single-digit fields, so the exact basic ISO 8601 shape is checked first.
    shaped = (
        len(raw) == 16
        and raw[8] == "T"
        and raw[15] == "Z"
        and raw[:8].isascii()
        and raw[:8].isdigit()
        and raw[9:15].isascii()
        and raw[9:15].isdigit()
    )
    if not shaped:
        return None
    try:
        return datetime.strptime(raw, AMZ_DATE_FORMAT).replace(tzinfo=UTC)
    except ValueError:
        return None


@dataclass(frozen=True)
class _V4Params:
    """The SigV4 query parameters, each checked as S3 checks it before looking at the signature."""

    scope: CredentialScope
    expires_in: int
    amz_date: str
    signed_at: datetime


def _parse_v4_params(params: Mapping[str, str], region: str) -> _V4Params:
    if not all(name in params for name in _V4_REQUIRED):
        raise _query_params_error(_MSG_V4_PARAMS)
    expires_in = _parse_v4_expires(params[_P_EXPIRES])
    try:
        scope = parse_credential_scope(params[_P_CREDENTIAL], region=region)
    except CredentialError as error:
        raise _query_params_error(error.message, error.extras) from None
    if params[_P_ALGORITHM] != ALGORITHM:
        raise _query_params_error('X-Amz-Algorithm only supports "AWS4-HMAC-SHA256"')
    amz_date = params[_P_DATE]
    signed_at = _parse_amz_date(amz_date)
    if signed_at is None:
        raise _query_params_error("X-Amz-Date must be in the ISO8601 Long Format \"yyyyMMdd'T'HHmmss'Z'\"")
    if amz_date[:8] != scope.date:
        # The signing key is scoped to the credential's day, which must be the day the URL was signed.
        raise _query_params_error(
            "Invalid credential date. Date in Credential scope does not match YYYYMMDD from ISO-8601 version "
            f"of date from HTTP: '{scope.date}' != '{amz_date[:8]}', from '{amz_date}'."
        )
    return _V4Params(scope=scope, expires_in=expires_in, amz_date=amz_date, signed_at=signed_at)


def _refuse_unsigned_amz_headers(headers: Mapping[str, str], signed_headers: str) -> None:
    signed_names = {name.lower() for name in signed_headers.split(";")}
    unsigned = sorted(name for name in headers if name.startswith("x-amz-") and name not in signed_names)
    if unsigned:
        raise S3Error(
            status=403,
            code="AccessDenied",
            message="There were headers present in the request which were not signed",
            extras=[("HeadersNotSigned", ", ".join(unsigned))],
        )


def _verify_v4(
    request: _QueryRequest, *, lookup_secret: Callable[[str], str | None], region: str, now: datetime
) -> VerifiedGet:
    checked = _parse_v4_params(request.params, region)
    access_key_id = checked.scope.access_key_id
    secret = lookup_secret(access_key_id)
    if secret is None:
        raise unknown_access_key(access_key_id)
    signed_headers = request.params[_P_SIGNED_HEADERS]
    _refuse_unsigned_amz_headers(request.headers, signed_headers)

    signed = _sign_v4(
        method=request.method,
        path=request.path,
        query=request.query,
        signed_headers=signed_headers,
        header_values={**request.headers, "host": request.host},
        payload_hash=_payload_hash(request.query),
        amz_date=checked.amz_date,
        scope_date=checked.scope.date,
        region=checked.scope.region,
        secret_access_key=secret,
    )
    provided = request.params[_P_SIGNATURE]
    if not signatures_equal(signed.signature, provided):
        raise signature_mismatch(
            access_key_id=access_key_id,
            string_to_sign=signed.string_to_sign,
            provided=provided,
            canonical_request=signed.canonical_request,
        )

    expires_at = checked.signed_at + timedelta(seconds=checked.expires_in)
    if now > expires_at:
        raise expired_error(expires_at=expires_at, now=now, expires_in=checked.expires_in)
    return VerifiedGet(
        version="v4",
        access_key_id=access_key_id,
        session_token=request.params.get(_P_SECURITY_TOKEN),
        expires_at=expires_at,
    )


def _v2_string_to_sign(request: _QueryRequest, expires: str) -> str:
    amz_headers: dict[str, list[str]] = {}
    for name, value in request.headers.items():
        if name.startswith("x-amz-"):
            amz_headers.setdefault(name, []).append(value.strip())
    # botocore carries the session token in the query but signs it as if it were an x-amz header.
    for name, value in request.query:
        if name == _V2_TOKEN:
            amz_headers.setdefault(name, []).append(value.strip())
    canonical_amz = "".join(f"{name}:{','.join(amz_headers[name])}\n" for name in sorted(amz_headers))

    # The resource keeps the path encoded but the subresource values raw, as AWS specifies for SigV2.
    subresources = sorted(
        ((name, value) for name, value in request.query if name in _V2_SUBRESOURCES), key=lambda pair: pair[0]
    )
    resource = uri_encode(request.path, keep_slash=True)
    if subresources:
        resource += "?" + "&".join(f"{name}={value}" if value else name for name, value in subresources)
    return "\n".join(
        (
            request.method,
            request.headers.get("content-md5", ""),
            request.headers.get("content-type", ""),
            expires,
            canonical_amz + resource,
        )
    )


def _parse_v2_expires(raw: str) -> datetime:
    expires = _parse_int(raw)
    if expires is None:
        raise access_denied(f"Invalid date (should be seconds since epoch): {raw}")
    try:
        return datetime.fromtimestamp(expires, tz=UTC)
    except (OverflowError, OSError, ValueError):
        # Beyond datetime's range: far enough in the future that it never expires.
        return datetime.max.replace(tzinfo=UTC)


def _verify_v2(
    request: _QueryRequest, *, lookup_secret: Callable[[str], str | None], now: datetime
) -> VerifiedGet:
    params = request.params
    if not all(name in params for name in _V2_REQUIRED):
        raise access_denied(_MSG_V2_PARAMS)
    raw_expires = params[_V2_EXPIRES]
    expires_at = _parse_v2_expires(raw_expires)

    access_key_id = params[_V2_ACCESS_KEY]
    secret = lookup_secret(access_key_id)
    if secret is None:
        raise unknown_access_key(access_key_id)

    string_to_sign = _v2_string_to_sign(request, raw_expires)
    digest = hmac.new(secret.encode("utf-8"), string_to_sign.encode("utf-8"), hashlib.sha1).digest()
    expected = base64.b64encode(digest).decode("ascii")
    provided = params[_V2_SIGNATURE]
    if not signatures_equal(expected, provided):
        raise signature_mismatch(
            access_key_id=access_key_id, string_to_sign=string_to_sign, provided=provided
        )

    if now > expires_at:
        raise expired_error(expires_at=expires_at, now=now, expires_in=None)
    token = next(
        (value for name, value in request.query if name == _V2_TOKEN), request.headers.get(_V2_TOKEN)
    )
    return VerifiedGet(version="v2", access_key_id=access_key_id, session_token=token, expires_at=expires_at)
