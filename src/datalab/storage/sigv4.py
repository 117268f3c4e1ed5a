"""S3 presigned GET URLs: SigV4 query signing and SigV4/SigV2 query verification with S3-shaped errors."""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal
from urllib.parse import quote, urlsplit

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

_ALGORITHM = "AWS4-HMAC-SHA256"
_UNSIGNED_PAYLOAD = "UNSIGNED-PAYLOAD"
_TERMINATOR = "aws4_request"
_SERVICE = "s3"
_MAX_EXPIRES = 604800
_AMZ_DATE_FORMAT = "%Y%m%dT%H%M%SZ"
_ISO_FORMAT = "%Y-%m-%dT%H:%M:%SZ"
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

_MSG_SIGNATURE = (
    "The request signature we calculated does not match the signature you provided. "
    "Check your key and signing method."
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
_MSG_CREDENTIAL_MALFORMED = (
    "Error parsing the X-Amz-Credential parameter; the Credential is mal-formed; "
    'expecting "<YOUR-AKID>/YYYYMMDD/REGION/SERVICE/aws4_request".'
)


class S3Error(Exception):
    """An error answered in S3's XML shape."""

    def __init__(
        self, *, status: int, code: str, message: str, extras: Sequence[tuple[str, str]] = ()
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.extras: list[tuple[str, str]] = list(extras)

    def __repr__(self) -> str:
        return f"S3Error(status={self.status}, code={self.code!r}, message={self.message!r})"

    def to_xml(self, *, request_id: str, host_id: str) -> bytes:
        """Render the error document S3 sends, with Code, Message, extras, RequestId and HostId."""
        elements = [("Code", self.code), ("Message", self.message), *self.extras]
        elements += [("RequestId", request_id), ("HostId", host_id)]
        body = "".join(f"<{name}>{_xml_text(text)}</{name}>" for name, text in elements)
        return f'<?xml version="1.0" encoding="UTF-8"?>\n<Error>{body}</Error>'.encode()


def _xml_text(text: str) -> str:
    out: list[str] = []
    for char in text:
        point = ord(char)
        if char == "&":
            out.append("&amp;")
        elif char == "<":
            out.append("&lt;")
        elif char == ">":
            out.append("&gt;")
        elif char == "\r":
            # XML parsers turn a literal CR into LF; a reference keeps echoed values (StringToSign) exact.
            out.append("&#13;")
        elif (point < 0x20 and char not in "\t\n") or 0xD800 <= point <= 0xDFFF or point in (0xFFFE, 0xFFFF):
            # XML 1.0 cannot carry these even as references; echoing client input must not break the document.
            out.append("\ufffd")
        else:
            out.append(char)
    return "".join(out)


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
    return _hmac_sha256(k_service, _TERMINATOR)


def _require_aware(value: datetime, name: str) -> datetime:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{name} must be timezone-aware")
    return value.astimezone(UTC)


def _iso(value: datetime) -> str:
    return value.astimezone(UTC).strftime(_ISO_FORMAT)


def _hex_bytes(text: str) -> str:
    return text.encode("utf-8").hex(" ")


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
    scope = f"{scope_date}/{region}/{_SERVICE}/{_TERMINATOR}"
    digest = hashlib.sha256(canonical_request.encode("utf-8")).hexdigest()
    string_to_sign = "\n".join((_ALGORITHM, amz_date, scope, digest))
    key = signing_key(secret_access_key=secret_access_key, date=scope_date, region=region, service=_SERVICE)
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

    signed_at = _require_aware(now, "now")
    amz_date = signed_at.strftime(_AMZ_DATE_FORMAT)
    scope_date = signed_at.strftime("%Y%m%d")
    host = _host_for_signing(parts.scheme, parts.hostname, parts.port)

    query: list[tuple[str, str]] = list(extra.items())
    query += [
        (_P_ALGORITHM, _ALGORITHM),
        (_P_CREDENTIAL, f"{credentials.access_key_id}/{scope_date}/{region}/{_SERVICE}/{_TERMINATOR}"),
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


def expired_error(*, expires_at: datetime, now: datetime, expires_in: int | None) -> S3Error:
    """Build S3's 403 "Request has expired" error; pass expires_in only for SigV4 URLs."""
    extras: list[tuple[str, str]] = []
    if expires_in is not None:
        extras.append(("X-Amz-Expires", str(expires_in)))
    extras += [("Expires", _iso(expires_at)), ("ServerTime", _iso(now))]
    return S3Error(status=403, code="AccessDenied", message="Request has expired", extras=extras)


def _query_params_error(message: str, extras: Sequence[tuple[str, str]] = ()) -> S3Error:
    return S3Error(status=400, code="AuthorizationQueryParametersError", message=message, extras=extras)


def _signature_mismatch(
    *, access_key_id: str, string_to_sign: str, provided: str, canonical_request: str | None
) -> S3Error:
    extras = [
        ("AWSAccessKeyId", access_key_id),
        ("StringToSign", string_to_sign),
        ("SignatureProvided", provided),
        ("StringToSignBytes", _hex_bytes(string_to_sign)),
    ]
    if canonical_request is not None:
        extras += [
            ("CanonicalRequest", canonical_request),
            ("CanonicalRequestBytes", _hex_bytes(canonical_request)),
        ]
    return S3Error(status=403, code="SignatureDoesNotMatch", message=_MSG_SIGNATURE, extras=extras)


def _signatures_equal(expected: str, provided: str) -> bool:
    # compare_digest refuses non-ASCII str, and the provided value is attacker-controlled.
    return hmac.compare_digest(expected.encode("utf-8"), provided.encode("utf-8"))


def _parse_int(value: str) -> int | None:
    digits = value[1:] if value.startswith("-") else value
    # int() would also take "+5", " 5", "1_0" and non-ASCII digits, which S3 does not.
    if not digits or not digits.isascii() or not digits.isdigit():
        return None
    return int(value)


def _unknown_key(access_key_id: str) -> S3Error:
    return S3Error(
        status=403,
        code="InvalidAccessKeyId",
        message="The AWS Access Key Id you provided does not exist in our records.",
        extras=[("AWSAccessKeyId", access_key_id)],
    )


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
    server_now = _require_aware(now, "now")
    lowered = {name.lower(): value for name, value in headers.items()}
    first: dict[str, str] = {}
    for name, value in query:
        first.setdefault(name, value)

    is_v4 = any(name in first for name in _V4_REQUIRED)
    is_v2 = not is_v4 and any(name in first for name in _V2_REQUIRED)
    authorization = lowered.get("authorization")
    if authorization is not None and (is_v4 or is_v2):
        raise S3Error(
            status=400,
            code="InvalidArgument",
            message=_MSG_ONE_AUTH,
            extras=[("ArgumentName", "Authorization"), ("ArgumentValue", authorization)],
        )
    if is_v4:
        return _verify_v4(
            method=method,
            host=host,
            path=path,
            query=query,
            params=first,
            headers=lowered,
            lookup_secret=lookup_secret,
            region=region,
            now=server_now,
        )
    if is_v2:
        return _verify_v2(
            method=method,
            path=path,
            query=query,
            params=first,
            headers=lowered,
            lookup_secret=lookup_secret,
            now=server_now,
        )
    raise S3Error(status=403, code="AccessDenied", message="Access Denied")


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
        return datetime.strptime(raw, _AMZ_DATE_FORMAT).replace(tzinfo=UTC)
    except ValueError:
        return None


def _verify_v4(
    *,
    method: str,
    host: str,
    path: str,
    query: Sequence[tuple[str, str]],
    params: Mapping[str, str],
    headers: Mapping[str, str],
    lookup_secret: Callable[[str], str | None],
    region: str,
    now: datetime,
) -> VerifiedGet:
    if not all(name in params for name in _V4_REQUIRED):
        raise _query_params_error(_MSG_V4_PARAMS)
    expires_in = _parse_v4_expires(params[_P_EXPIRES])

    credential = params[_P_CREDENTIAL].split("/")
    if len(credential) != 5 or not all(credential):
        raise _query_params_error(_MSG_CREDENTIAL_MALFORMED)
    access_key_id, scope_date, scope_region, service, terminator = credential
    if len(scope_date) != 8 or not scope_date.isascii() or not scope_date.isdigit():
        raise _query_params_error(
            f'Error parsing the X-Amz-Credential parameter; incorrect date format "{scope_date}". '
            'This date in the credential must be in the format "yyyyMMdd".'
        )
    if scope_region != region:
        raise _query_params_error(
            f"Error parsing the X-Amz-Credential parameter; the region '{scope_region}' is wrong; "
            f"expecting '{region}'",
            [("Region", region)],
        )
    if service != _SERVICE:
        raise _query_params_error(
            f'Error parsing the X-Amz-Credential parameter; incorrect service "{service}". '
            f'This endpoint belongs to "{_SERVICE}".'
        )
    if terminator != _TERMINATOR:
        raise _query_params_error(
            f'Error parsing the X-Amz-Credential parameter; incorrect terminal "{terminator}". '
            f'This endpoint uses "{_TERMINATOR}".'
        )
    if params[_P_ALGORITHM] != _ALGORITHM:
        raise _query_params_error('X-Amz-Algorithm only supports "AWS4-HMAC-SHA256"')
    amz_date = params[_P_DATE]
    signed_at = _parse_amz_date(amz_date)
    if signed_at is None:
        raise _query_params_error("X-Amz-Date must be in the ISO8601 Long Format \"yyyyMMdd'T'HHmmss'Z'\"")
    if amz_date[:8] != scope_date:
        # The signing key is scoped to the credential's day, which must be the day the URL was signed.
        raise _query_params_error(
            "Invalid credential date. Date in Credential scope does not match YYYYMMDD from ISO-8601 version "
            f"of date from HTTP: '{scope_date}' != '{amz_date[:8]}', from '{amz_date}'."
        )

    secret = lookup_secret(access_key_id)
    if secret is None:
        raise _unknown_key(access_key_id)

    signed_headers = params[_P_SIGNED_HEADERS]
    signed_names = {name.lower() for name in signed_headers.split(";")}
    unsigned = sorted(name for name in headers if name.startswith("x-amz-") and name not in signed_names)
    if unsigned:
        raise S3Error(
            status=403,
            code="AccessDenied",
            message="There were headers present in the request which were not signed",
            extras=[("HeadersNotSigned", ", ".join(unsigned))],
        )

    signed = _sign_v4(
        method=method,
        path=path,
        query=query,
        signed_headers=signed_headers,
        header_values={**headers, "host": host},
        payload_hash=_payload_hash(query),
        amz_date=amz_date,
        scope_date=scope_date,
        region=scope_region,
        secret_access_key=secret,
    )
    provided = params[_P_SIGNATURE]
    if not _signatures_equal(signed.signature, provided):
        raise _signature_mismatch(
            access_key_id=access_key_id,
            string_to_sign=signed.string_to_sign,
            provided=provided,
            canonical_request=signed.canonical_request,
        )

    expires_at = signed_at + timedelta(seconds=expires_in)
    if now > expires_at:
        raise expired_error(expires_at=expires_at, now=now, expires_in=expires_in)
    return VerifiedGet(
        version="v4",
        access_key_id=access_key_id,
        session_token=params.get(_P_SECURITY_TOKEN),
        expires_at=expires_at,
    )


def _v2_string_to_sign(
    *, method: str, path: str, query: Sequence[tuple[str, str]], headers: Mapping[str, str], expires: str
) -> str:
    amz_headers: dict[str, list[str]] = {}
    for name, value in headers.items():
        if name.startswith("x-amz-"):
            amz_headers.setdefault(name, []).append(value.strip())
    # botocore carries the session token in the query but signs it as if it were an x-amz header.
    for name, value in query:
        if name == _V2_TOKEN:
            amz_headers.setdefault(name, []).append(value.strip())
    canonical_amz = "".join(f"{name}:{','.join(amz_headers[name])}\n" for name in sorted(amz_headers))

    # The resource keeps the path encoded but the subresource values raw, as AWS specifies for SigV2.
    subresources = sorted(
        ((name, value) for name, value in query if name in _V2_SUBRESOURCES), key=lambda pair: pair[0]
    )
    resource = uri_encode(path, keep_slash=True)
    if subresources:
        resource += "?" + "&".join(f"{name}={value}" if value else name for name, value in subresources)
    return "\n".join(
        (
            method,
            headers.get("content-md5", ""),
            headers.get("content-type", ""),
            expires,
            canonical_amz + resource,
        )
    )


def _verify_v2(
    *,
    method: str,
    path: str,
    query: Sequence[tuple[str, str]],
    params: Mapping[str, str],
    headers: Mapping[str, str],
    lookup_secret: Callable[[str], str | None],
    now: datetime,
) -> VerifiedGet:
    if not all(name in params for name in _V2_REQUIRED):
        raise S3Error(status=403, code="AccessDenied", message=_MSG_V2_PARAMS)
    raw_expires = params[_V2_EXPIRES]
    expires = _parse_int(raw_expires)
    if expires is None:
        raise S3Error(
            status=403,
            code="AccessDenied",
            message=f"Invalid date (should be seconds since epoch): {raw_expires}",
        )
    try:
        expires_at = datetime.fromtimestamp(expires, tz=UTC)
    except (OverflowError, OSError, ValueError):
        # Beyond datetime's range: far enough in the future that it never expires.
        expires_at = datetime.max.replace(tzinfo=UTC)

    access_key_id = params[_V2_ACCESS_KEY]
    secret = lookup_secret(access_key_id)
    if secret is None:
        raise _unknown_key(access_key_id)

    string_to_sign = _v2_string_to_sign(
        method=method, path=path, query=query, headers=headers, expires=raw_expires
    )
    digest = hmac.new(secret.encode("utf-8"), string_to_sign.encode("utf-8"), hashlib.sha1).digest()
    expected = base64.b64encode(digest).decode("ascii")
    provided = params[_V2_SIGNATURE]
    if not _signatures_equal(expected, provided):
        raise _signature_mismatch(
            access_key_id=access_key_id,
            string_to_sign=string_to_sign,
            provided=provided,
            canonical_request=None,
        )

    if now > expires_at:
        raise expired_error(expires_at=expires_at, now=now, expires_in=None)
    token = next((value for name, value in query if name == _V2_TOKEN), headers.get(_V2_TOKEN))
    return VerifiedGet(version="v2", access_key_id=access_key_id, session_token=token, expires_at=expires_at)
