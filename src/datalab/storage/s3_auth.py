"""What presigned GETs and POST forms share: SigV4's credential scope, and S3's errors in its XML shape.

Hand-written because no maintained library verifies S3 signatures on the server side with S3's own
error texts; botocore only signs.
"""

from __future__ import annotations

import hmac
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

__all__ = [
    "ALGORITHM",
    "AMZ_DATE_FORMAT",
    "SERVICE",
    "TERMINATOR",
    "CredentialError",
    "CredentialScope",
    "S3Error",
    "WrongRegion",
    "access_denied",
    "credential",
    "expired_error",
    "expired_token",
    "invalid_argument",
    "invalid_range",
    "invalid_token",
    "no_such_key",
    "parse_credential_scope",
    "require_aware",
    "signature_mismatch",
    "signatures_equal",
    "unknown_access_key",
]

ALGORITHM = "AWS4-HMAC-SHA256"
SERVICE = "s3"
TERMINATOR = "aws4_request"
AMZ_DATE_FORMAT = "%Y%m%dT%H%M%SZ"
_ISO_FORMAT = "%Y-%m-%dT%H:%M:%SZ"

_CREDENTIAL_PARSE_ERROR = "Error parsing the X-Amz-Credential parameter"
_MSG_SIGNATURE = (
    "The request signature we calculated does not match the signature you provided. "
    "Check your key and signing method."
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


def access_denied(message: str) -> S3Error:
    """S3's 403 AccessDenied with the given message."""
    return S3Error(status=403, code="AccessDenied", message=message)


def invalid_argument(message: str, name: str, value: str, extras: Sequence[tuple[str, str]] = ()) -> S3Error:
    """S3's 400 InvalidArgument naming the argument and its value."""
    return S3Error(
        status=400,
        code="InvalidArgument",
        message=message,
        extras=[("ArgumentName", name), ("ArgumentValue", value), *extras],
    )


def unknown_access_key(access_key_id: str) -> S3Error:
    """S3's 403 InvalidAccessKeyId."""
    return S3Error(
        status=403,
        code="InvalidAccessKeyId",
        message="The AWS Access Key Id you provided does not exist in our records.",
        extras=[("AWSAccessKeyId", access_key_id)],
    )


def no_such_key(key: str) -> S3Error:
    """S3's 404 NoSuchKey."""
    return S3Error(
        status=404, code="NoSuchKey", message="The specified key does not exist.", extras=[("Key", key)]
    )


def invalid_range(*, size: int, requested: str) -> S3Error:
    """S3's 416 InvalidRange for a Range header past the end of the object."""
    return S3Error(
        status=416,
        code="InvalidRange",
        message="The requested range is not satisfiable",
        extras=[("ActualObjectSize", str(size)), ("RangeRequested", requested)],
    )


def invalid_token(token: str) -> S3Error:
    """S3's 400 InvalidToken for a session token it cannot make sense of."""
    return S3Error(
        status=400,
        code="InvalidToken",
        message="The provided token is malformed or otherwise invalid.",
        extras=[("Token-0", token)],
    )


def expired_token(token: str) -> S3Error:
    """S3's 400 ExpiredToken for a session token past its life."""
    return S3Error(
        status=400,
        code="ExpiredToken",
        message="The provided token has expired.",
        extras=[("Token-0", token)],
    )


def signature_mismatch(
    *, access_key_id: str, string_to_sign: str, provided: str, canonical_request: str | None = None
) -> S3Error:
    """S3's 403 SignatureDoesNotMatch, echoing what was signed (and the canonical request, for SigV4 GETs)."""
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


def expired_error(*, expires_at: datetime, now: datetime, expires_in: int | None) -> S3Error:
    """Build S3's 403 "Request has expired" error; pass expires_in only for SigV4 URLs."""
    extras: list[tuple[str, str]] = []
    if expires_in is not None:
        extras.append(("X-Amz-Expires", str(expires_in)))
    extras += [("Expires", _iso(expires_at)), ("ServerTime", _iso(now))]
    return S3Error(status=403, code="AccessDenied", message="Request has expired", extras=extras)


def _iso(value: datetime) -> str:
    return value.astimezone(UTC).strftime(_ISO_FORMAT)


def _hex_bytes(text: str) -> str:
    return text.encode("utf-8").hex(" ")


def signatures_equal(expected: str, provided: str) -> bool:
    """Compare signatures in constant time."""
    # compare_digest refuses non-ASCII str, and the provided value is attacker-controlled.
    return hmac.compare_digest(expected.encode("utf-8"), provided.encode("utf-8"))


def require_aware(value: datetime, name: str) -> datetime:
    """The time in UTC; a naive datetime is a programming error."""
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{name} must be timezone-aware")
    return value.astimezone(UTC)


@dataclass(frozen=True)
class CredentialScope:
    """The parts of a SigV4 credential, `<access key id>/<yyyymmdd>/<region>/s3/aws4_request`."""

    access_key_id: str
    date: str
    region: str


class CredentialError(ValueError):
    """A credential S3 refuses, with S3's sentence for what is wrong."""

    def __init__(self, message: str, extras: Sequence[tuple[str, str]] = ()) -> None:
        super().__init__(message)
        self.message = message
        self.extras: list[tuple[str, str]] = list(extras)


class WrongRegion(CredentialError):
    """A credential scoped to another region; POST forms are answered with the clause alone."""

    def __init__(self, *, given: str, expected: str) -> None:
        self.clause = f"the region '{given}' is wrong; expecting '{expected}'"
        super().__init__(f"{_CREDENTIAL_PARSE_ERROR}; {self.clause}", [("Region", expected)])


def credential(*, access_key_id: str, date: str, region: str) -> str:
    """The X-Amz-Credential value for a key, a yyyymmdd date and a region."""
    return f"{access_key_id}/{date}/{region}/{SERVICE}/{TERMINATOR}"


def parse_credential_scope(credential: str, *, region: str) -> CredentialScope:
    """Split a credential and check its date shape, region, service and terminal, in S3's order."""
    parts = credential.split("/")
    if len(parts) != 5 or not all(parts):
        raise CredentialError(
            f"{_CREDENTIAL_PARSE_ERROR}; the Credential is mal-formed; "
            'expecting "<YOUR-AKID>/YYYYMMDD/REGION/SERVICE/aws4_request".'
        )
    access_key_id, scope_date, scope_region, service, terminator = parts
    if len(scope_date) != 8 or not scope_date.isascii() or not scope_date.isdigit():
        raise CredentialError(
            f'{_CREDENTIAL_PARSE_ERROR}; incorrect date format "{scope_date}". '
            'This date in the credential must be in the format "yyyyMMdd".'
        )
    if scope_region != region:
        raise WrongRegion(given=scope_region, expected=region)
    if service != SERVICE:
        raise CredentialError(
            f'{_CREDENTIAL_PARSE_ERROR}; incorrect service "{service}". This endpoint belongs to "{SERVICE}".'
        )
    if terminator != TERMINATOR:
        raise CredentialError(
            f'{_CREDENTIAL_PARSE_ERROR}; incorrect terminal "{terminator}". '
            f'This endpoint uses "{TERMINATOR}".'
        )
    return CredentialScope(access_key_id=access_key_id, date=scope_date, region=scope_region)
