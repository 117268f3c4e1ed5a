"""S3 browser POST uploads: SigV4 POST policies signed as botocore signs them and checked as S3 does."""

from __future__ import annotations

import base64
import hashlib
import hmac
import html
import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote, quote_plus, urlsplit

from datalab.storage import s3_auth
from datalab.storage.s3_auth import S3Error
from datalab.storage.sigv4 import Credentials, signing_key

__all__ = [
    "MAX_PRE_FILE_BYTES",
    "AcceptedPost",
    "check_post_fields",
    "entity_too_large",
    "entity_too_small",
    "malformed_post_error",
    "missing_file_error",
    "not_multipart_error",
    "object_location",
    "post_response_xml",
    "presigned_post",
    "redirect_location",
    "sign_policy",
    "too_large_fields_error",
]

MAX_PRE_FILE_BYTES = 20480

_FILENAME = "${filename}"
_EXPIRATION_FORMAT = "%Y-%m-%dT%H:%M:%SZ"
_META_PREFIX = "x-amz-meta-"

# The order in which S3 names the first missing field when a form carries only some of them.
_REQUIRED_AUTH_FIELDS = (
    ("x-amz-algorithm", "X-Amz-Algorithm"),
    ("x-amz-credential", "X-Amz-Credential"),
    ("x-amz-date", "X-Amz-Date"),
    ("x-amz-signature", "X-Amz-Signature"),
    ("policy", "Policy"),
)
_SIGV4_MARKERS = frozenset(name for name, _ in _REQUIRED_AUTH_FIELDS[:4])
_SIGV2_MARKERS = frozenset({"awsaccesskeyid", "signature"})
_GENERATED_FIELDS = frozenset(
    {
        "key",
        "policy",
        "x-amz-algorithm",
        "x-amz-credential",
        "x-amz-date",
        "x-amz-security-token",
        "x-amz-signature",
    }
)
_UNCOVERED_FIELDS = frozenset({"x-amz-signature", "file", "policy"})
_POLICY_MEMBERS = ("expiration", "conditions")
_EXPIRATION_RE = re.compile(r"(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?Z", re.ASCII)

_MSG_SIMPLE_PROPERTIES = (
    "Invalid Simple-Condition: Simple-Conditions must have exactly one property specified."
)


def sign_policy(*, policy_b64: str, secret_access_key: str, date: str, region: str) -> str:
    """Return the SigV4 POST signature: lowercase hex HMAC-SHA256 of the base64 policy as sent."""
    key = signing_key(secret_access_key=secret_access_key, date=date, region=region, service=s3_auth.SERVICE)
    return hmac.new(key, policy_b64.encode("utf-8"), hashlib.sha256).hexdigest()


def presigned_post(
    *,
    url: str,
    bucket: str,
    key: str,
    credentials: Credentials,
    region: str,
    expires_in: int,
    now: datetime,
    fields: Mapping[str, str] | None = None,
    conditions: Sequence[Mapping[str, str] | Sequence[str | int]] | None = None,
) -> dict[str, Any]:
    """Build {"url", "fields"} for a SigV4 browser POST exactly as botocore's generate_presigned_post does."""
    if expires_in < 1:
        raise ValueError(f"expires_in must be positive, got {expires_in}")
    form: dict[str, str] = dict(fields or {})
    clashing = sorted(name for name in form if name.lower() in _GENERATED_FIELDS)
    if clashing:
        # botocore would silently overwrite some of these and duplicate others under another case.
        raise ValueError(f"fields must not set the generated fields {clashing}")
    policy_conditions: list[object] = []
    for condition in conditions or ():
        if isinstance(condition, str | bytes):
            raise TypeError(f"a condition must be a mapping or a list, got {condition!r}")
        policy_conditions.append(dict(condition) if isinstance(condition, Mapping) else list(condition))

    signed_at = s3_auth.require_aware(now, "now")
    scope_date = signed_at.strftime("%Y%m%d")
    auth = {
        "x-amz-algorithm": s3_auth.ALGORITHM,
        "x-amz-credential": s3_auth.credential(
            access_key_id=credentials.access_key_id, date=scope_date, region=region
        ),
        "x-amz-date": signed_at.strftime(s3_auth.AMZ_DATE_FORMAT),
    }
    if credentials.session_token is not None:
        auth["x-amz-security-token"] = credentials.session_token

    policy_conditions.append({"bucket": bucket})
    if key.endswith(_FILENAME):
        policy_conditions.append(["starts-with", "$key", key[: -len(_FILENAME)]])
    else:
        policy_conditions.append({"key": key})
    policy_conditions += [{name: value} for name, value in auth.items()]
    policy = {
        "expiration": (signed_at + timedelta(seconds=expires_in)).strftime(_EXPIRATION_FORMAT),
        "conditions": policy_conditions,
    }
    policy_b64 = base64.b64encode(json.dumps(policy).encode("utf-8")).decode("ascii")

    form["key"] = key
    form.update(auth)
    form["policy"] = policy_b64
    form["x-amz-signature"] = sign_policy(
        policy_b64=policy_b64,
        secret_access_key=credentials.secret_access_key,
        date=scope_date,
        region=region,
    )
    return {"url": url, "fields": form}


@dataclass(frozen=True)
class AcceptedPost:
    """What a browser POST form that passed every check before the file asks to store."""

    key: str
    access_key_id: str
    session_token: str | None
    expires_at: datetime
    min_size: int
    max_size: int | None
    success_action_status: int
    success_action_redirect: str | None
    content_type: str | None
    metadata: dict[str, str]
    fields: dict[str, str]


# ---------------------------------------------------------------------------------------------------------
# Errors.


def _missing_field(spelling: str) -> S3Error:
    return s3_auth.invalid_argument(
        f"Bucket POST must contain a field named '{spelling}'.  If it is specified, please check the order "
        "of the fields.",
        spelling,
        "",
    )


def _invalid_policy(detail: str) -> S3Error:
    return S3Error(status=400, code="InvalidPolicyDocument", message=f"Invalid Policy: {detail}")


def too_large_fields_error() -> S3Error:
    """Build S3's error for more than MAX_PRE_FILE_BYTES of form data before the file."""
    return S3Error(
        status=400,
        code="MaxPostPreDataLengthExceeded",
        # "preceeding" is S3's own spelling.
        message="Your POST request fields preceeding the upload file was too large.",
        extras=[("MaxPostPreDataLengthBytes", str(MAX_PRE_FILE_BYTES))],
    )


def entity_too_large(*, proposed_size: int, max_size: int) -> S3Error:
    """Build S3's error for a file above the allowed maximum size."""
    return S3Error(
        status=400,
        code="EntityTooLarge",
        message="Your proposed upload exceeds the maximum allowed size",
        extras=[("ProposedSize", str(proposed_size)), ("MaxSizeAllowed", str(max_size))],
    )


def entity_too_small(*, proposed_size: int, min_size: int) -> S3Error:
    """Build S3's error for a file below the policy's minimum size."""
    return S3Error(
        status=400,
        code="EntityTooSmall",
        message="Your proposed upload is smaller than the minimum allowed size",
        extras=[("ProposedSize", str(proposed_size)), ("MinSizeAllowed", str(min_size))],
    )


def missing_file_error() -> S3Error:
    """Build S3's error for a POST without a file part."""
    return s3_auth.invalid_argument("POST requires exactly one file upload per request.", "file", "0")


def not_multipart_error() -> S3Error:
    """Build S3's error for a POST body that is not multipart/form-data."""
    return S3Error(
        status=412,
        code="PreconditionFailed",
        message="At least one of the pre-conditions you specified did not hold",
        extras=[("Condition", "Bucket POST must be of the enclosure-type multipart/form-data")],
    )


def malformed_post_error() -> S3Error:
    """Build S3's error for a multipart body that cannot be parsed."""
    return S3Error(
        status=400,
        code="MalformedPOSTRequest",
        message="The body of your POST request is not well-formed multipart/form-data.",
    )


# ---------------------------------------------------------------------------------------------------------
# Checking a received form.


def _field_values(fields: Sequence[tuple[str, str]], filename: str | None) -> dict[str, str]:
    # Browsers may send a full client path; only the part after the last separator is the file's name.
    basename = None if filename is None else filename.replace("\\", "/").rpartition("/")[2]
    grouped: dict[str, list[str]] = {}
    for name, value in fields:
        expanded = value if basename is None else value.replace(_FILENAME, basename)
        grouped.setdefault(name.lower(), []).append(expanded)
    return {name: ",".join(values) for name, values in grouped.items()}


def _parse_credential(credential: str, region: str) -> s3_auth.CredentialScope:
    # No S3 recording shows these errors for POST but the wrong region; they reuse the query-auth texts as
    # InvalidArgument, which is what S3 answers for every other malformed POST auth field.
    try:
        return s3_auth.parse_credential_scope(credential, region=region)
    except s3_auth.WrongRegion as error:
        raise s3_auth.invalid_argument(error.clause, "X-Amz-Credential", credential, error.extras) from None
    except s3_auth.CredentialError as error:
        raise s3_auth.invalid_argument(error.message, "X-Amz-Credential", credential, error.extras) from None


def _check_signature(*, policy_b64: str, provided: str, scope: s3_auth.CredentialScope, secret: str) -> None:
    expected = sign_policy(
        policy_b64=policy_b64, secret_access_key=secret, date=scope.date, region=scope.region
    )
    if not s3_auth.signatures_equal(expected, provided):
        raise s3_auth.signature_mismatch(
            access_key_id=scope.access_key_id, string_to_sign=policy_b64, provided=provided
        )


def _reject_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # S3's tolerance of duplicate members is unrecorded; accepting one of two values would be a guess.
    names = [name for name, _ in pairs]
    if len(set(names)) != len(names):
        raise ValueError("duplicate member")
    return dict(pairs)


def _reject_number(text: str) -> Any:
    raise ValueError(f"unsupported number {text}")


def _contains_null(document: object) -> bool:
    pending = [document]
    while pending:
        item = pending.pop()
        if item is None:
            return True
        if isinstance(item, dict):
            pending += item.values()
        elif isinstance(item, list):
            pending += item
    return False


def _parse_expiration(value: object) -> datetime:
    match = _EXPIRATION_RE.fullmatch(value) if isinstance(value, str) else None
    if match is not None:
        year, month, day, hour, minute, second, fraction = match.groups()
        try:
            return datetime(
                int(year),
                int(month),
                int(day),
                int(hour),
                int(minute),
                int(second),
                int((fraction or "0")[:6].ljust(6, "0")),
                tzinfo=UTC,
            )
        except ValueError:
            pass
    shown = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    raise _invalid_policy(f"Invalid 'expiration' value: '{shown}'")


def _parse_policy(policy_b64: str) -> tuple[datetime, list[object]]:
    try:
        text = base64.b64decode(policy_b64, validate=True).decode("utf-8")
        # Floats, NaN and Infinity are refused: S3 calls a policy with a float bound invalid JSON.
        document = json.loads(
            text,
            object_pairs_hook=_reject_duplicates,
            parse_float=_reject_number,
            parse_constant=_reject_number,
        )
    except (ValueError, RecursionError):
        raise _invalid_policy("Invalid JSON.") from None
    if not isinstance(document, dict) or _contains_null(document):
        raise _invalid_policy("Invalid JSON.")
    for name in document:
        if name not in _POLICY_MEMBERS:
            raise _invalid_policy(f"Unexpected: '{name.lower()}'")
    # S3's texts for these three are unrecorded; these follow the wording of its recorded ones.
    if "expiration" not in document:
        raise _invalid_policy("Policy missing expiration.")
    if "conditions" not in document:
        raise _invalid_policy("Policy missing conditions.")
    expires_at = _parse_expiration(document["expiration"])
    conditions = document["conditions"]
    if not isinstance(conditions, list):
        raise _invalid_policy("Invalid 'conditions' value: must be an array.")
    for condition in conditions:
        if isinstance(condition, dict):
            if len(condition) != 1:
                raise _invalid_policy(_MSG_SIMPLE_PROPERTIES)
            if not isinstance(next(iter(condition.values())), str):
                raise _invalid_policy("Invalid Simple-Condition: value must be a string.")
        elif not isinstance(condition, list):
            raise _invalid_policy("Invalid Condition: a condition must be an object or an array.")
    return expires_at, conditions


def _exact_only(field: str) -> bool:
    # The fields AWS documents as supporting exact matches only (sigv4-HTTPPOSTConstructPolicy).
    if field in ("bucket", "success_action_status"):
        return True
    return field.startswith("x-amz-") and not field.startswith(_META_PREFIX)


def _bound(value: object) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.isascii() and value.isdigit():
        try:
            return int(value)
        except ValueError:
            # int() refuses strings longer than sys.get_int_max_str_digits(); no real size is that long.
            return None
    return None


def _matches(condition: object, values: Mapping[str, str], bucket: str) -> bool:
    if isinstance(condition, dict):
        ((name, expected),) = condition.items()
        operator, name = "eq", f"${name}"
    elif isinstance(condition, list) and len(condition) == 3:
        operator, name, expected = condition
    else:
        return False
    if not (isinstance(operator, str) and isinstance(name, str) and isinstance(expected, str)):
        return False
    if not name.startswith("$"):
        return False
    operator, field = operator.lower(), name[1:].lower()
    # The bucket is the one the form was posted to; a bucket form field cannot choose it.
    actual = bucket if field == "bucket" else values.get(field)
    if actual is None:
        return False
    if operator == "eq":
        return actual == expected
    if operator != "starts-with" or _exact_only(field):
        return False
    if field == "content-type":
        # A comma-separated Content-Type is a list and every item must match (AWS policy documentation).
        return all(item.startswith(expected) for item in actual.split(","))
    return actual.startswith(expected)


def _condition_failed(condition: object) -> S3Error:
    if isinstance(condition, dict):
        ((name, value),) = condition.items()
        condition = ["eq", f"${name}", value]
    shown = json.dumps(condition, ensure_ascii=False)
    return s3_auth.access_denied(f"Invalid according to Policy: Policy Condition failed: {shown}")


def _range_bounds(condition: object) -> tuple[int | None, int | None] | None:
    if not (isinstance(condition, list) and len(condition) == 3 and isinstance(condition[0], str)):
        return None
    if condition[0].lower() != "content-length-range":
        return None
    return _bound(condition[1]), _bound(condition[2])


def _check_conditions(
    conditions: Sequence[object], values: Mapping[str, str], bucket: str
) -> tuple[int, int | None]:
    min_size, max_size = 0, None
    for condition in conditions:
        bounds = _range_bounds(condition)
        if bounds is None:
            if not _matches(condition, values, bucket):
                raise _condition_failed(condition)
            continue
        low, high = bounds
        if low is None or high is None:
            raise _condition_failed(condition)
        # Several ranges all apply, so the allowed sizes are their intersection.
        min_size = max(min_size, low)
        max_size = high if max_size is None else min(max_size, high)
    return min_size, max_size


def _check_coverage(conditions: Sequence[object], values: Mapping[str, str]) -> None:
    covered: set[str] = set()
    for condition in conditions:
        if isinstance(condition, dict):
            covered.update(str(name).lower() for name in condition)
        elif isinstance(condition, list) and _range_bounds(condition) is None:
            # Every condition held, so this one is ["eq" or "starts-with", "$name", value].
            covered.add(str(condition[1])[1:].lower())
    for name in values:
        if name in covered or name in _UNCOVERED_FIELDS or name.startswith("x-ignore-"):
            continue
        raise s3_auth.access_denied(f"Invalid according to Policy: Extra input fields: {name}")


def _success_status(value: str | None) -> int:
    # Only 200 and 201 change the answer; S3 sends 204 for any other value.
    return {"200": 200, "201": 201}.get(value or "", 204)


def _check_auth_fields(values: Mapping[str, str], region: str) -> s3_auth.CredentialScope:
    if not _SIGV4_MARKERS.intersection(values):
        if _SIGV2_MARKERS.intersection(values):
            # SigV2 POST is not implemented; this is S3's answer where SigV2 is no longer accepted.
            raise S3Error(
                status=400,
                code="InvalidRequest",
                message="The authorization mechanism you have provided is not supported. "
                "Please use AWS4-HMAC-SHA256.",
            )
        # Buckets here are never publicly writable, so an unsigned form is an anonymous write.
        raise s3_auth.access_denied("Access Denied")
    for name, spelling in _REQUIRED_AUTH_FIELDS:
        if name not in values:
            raise _missing_field(spelling)
    algorithm = values["x-amz-algorithm"]
    if algorithm != s3_auth.ALGORITHM:
        raise s3_auth.invalid_argument(
            'X-Amz-Algorithm only supports "AWS4-HMAC-SHA256"', "X-Amz-Algorithm", algorithm
        )
    return _parse_credential(values["x-amz-credential"], region)


def _accepted(
    *, values: dict[str, str], access_key_id: str, expires_at: datetime, min_size: int, max_size: int | None
) -> AcceptedPost:
    return AcceptedPost(
        key=values["key"],
        access_key_id=access_key_id,
        session_token=values.get("x-amz-security-token"),
        expires_at=expires_at,
        min_size=min_size,
        max_size=max_size,
        success_action_status=_success_status(values.get("success_action_status")),
        # "redirect" is the deprecated name of the same field.
        success_action_redirect=values.get("success_action_redirect", values.get("redirect")),
        content_type=values.get("content-type"),
        metadata={
            name.removeprefix(_META_PREFIX): value
            for name, value in values.items()
            if name.startswith(_META_PREFIX) and name != _META_PREFIX
        },
        fields=values,
    )


def check_post_fields(
    *,
    fields: Sequence[tuple[str, str]],
    filename: str | None,
    bucket: str,
    lookup_secret: Callable[[str], str | None],
    region: str,
    now: datetime,
    max_size_allowed: int | None = None,
) -> AcceptedPost:
    """Check the form fields sent before the file, raising S3Error exactly as S3 would reject them."""
    server_now = s3_auth.require_aware(now, "now")
    values = _field_values(fields, filename)
    if not values.get("key", ""):
        raise _missing_field("key")
    scope = _check_auth_fields(values, region)
    secret = lookup_secret(scope.access_key_id)
    if secret is None:
        raise s3_auth.unknown_access_key(scope.access_key_id)
    _check_signature(
        policy_b64=values["policy"], provided=values["x-amz-signature"], scope=scope, secret=secret
    )

    expires_at, conditions = _parse_policy(values["policy"])
    if server_now >= expires_at:
        raise s3_auth.access_denied("Invalid according to Policy: Policy expired.")
    min_size, max_size = _check_conditions(conditions, values, bucket)
    _check_coverage(conditions, values)
    if max_size_allowed is not None:
        max_size = max_size_allowed if max_size is None else min(max_size, max_size_allowed)
    return _accepted(
        values=values,
        access_key_id=scope.access_key_id,
        expires_at=expires_at,
        min_size=min_size,
        max_size=max_size,
    )


# ---------------------------------------------------------------------------------------------------------
# Success responses.


def object_location(*, bucket_url: str, key: str) -> str:
    """Return the object URL S3 reports after a POST: the key percent-encoded, "/" included."""
    return f"{bucket_url.rstrip('/')}/{quote(key, safe='')}"


def post_response_xml(*, location: str, bucket: str, key: str, etag: str) -> bytes:
    """Render the 201 PostResponse body; location is used as given and etag is the unquoted entity tag."""
    elements = (("Location", location), ("Bucket", bucket), ("Key", key), ("ETag", f'"{etag}"'))
    body = "".join(f"<{name}>{html.escape(text, quote=False)}</{name}>" for name, text in elements)
    return f'<?xml version="1.0" encoding="UTF-8"?>\n<PostResponse>{body}</PostResponse>'.encode()


def redirect_location(*, redirect: str, bucket: str, key: str, etag: str) -> str | None:
    """Return the 303 Location for success_action_redirect, or None when S3 would ignore the URL."""
    # Whitespace, control and non-ASCII characters cannot go into a Location header as they are.
    if not redirect.isascii() or not redirect.isprintable() or " " in redirect:
        return None
    try:
        parts = urlsplit(redirect)
    except ValueError:
        return None
    if parts.scheme.lower() not in ("http", "https") or not parts.netloc:
        return None
    # Appended by hand so the rest of the URL, existing query included, stays byte for byte as given.
    base, hash_mark, fragment = redirect.partition("#")
    separator = "&" if "?" in base else "?"
    if base.endswith(("?", "&")):
        separator = ""
    quoted_etag = f'"{etag}"'
    appended = f"bucket={quote_plus(bucket)}&key={quote_plus(key)}&etag={quote_plus(quoted_etag)}"
    return f"{base}{separator}{appended}{hash_mark}{fragment}"
